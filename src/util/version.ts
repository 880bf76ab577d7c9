// tuna's version, as `tuna --version` prints it and as ranks of one job compare it.
export const TUNA_VERSION = "0.1.0";
