// The one error type of tuna: a closed set of codes, a message that says what, where and what to do.
// Library code throws TunaError; only the CLI prints it and turns it into an exit code.

export const ERROR_CODES = [
  "CONFIG_INVALID", // a configuration field has a wrong value or type, or options conflict
  "CONFIG_UNKNOWN", // an unknown flag or config key
  "FILE_NOT_FOUND", // a path the user gave does not exist
  "FILE_FORMAT", // a file exists but its content is malformed (safetensors, json, tokenizer...)
  "MODEL_UNSUPPORTED", // a model_type / architecture tuna does not implement
  "MODEL_INVALID", // a model folder that is not a model, or weights that do not fit the config
  "HUB", // resolving a hub id failed (offline, unreachable, not found, unauthorized)
  "IO", // the system refused a read or write (disk full, I/O error); the message carries its words
  "GPU", // the GPU or a GPU library is missing or failed
  "DIST", // a rank of a distributed job failed, hung, left, or disagrees with the others
  "UNSUPPORTED", // a feature that is accepted but not available yet
  "INTERNAL", // a bug in tuna
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

export class TunaError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "TunaError";
    this.code = code;
  }
}

export function isTunaError(e: unknown): e is TunaError {
  return e instanceof TunaError;
}

/** The message of any thrown value, for wrapping foreign errors. */
export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
