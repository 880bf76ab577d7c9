// The dropout keep-mask as a pure function of (element index, two 32-bit seeds): every backend computes the
// same mask without drawing one random number per element on the host (a 7B step needs billions).
// Hand-written: two rounds of MurmurHash3's 32-bit finalizer over the index scaled by the golden ratio.

/** MurmurHash3 fmix32: a bijection of 32-bit words with full avalanche. */
export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** The 32-bit hash of element i under seeds (s0, s1); a bijection of i for fixed seeds. */
export function dropoutHash(i: number, s0: number, s1: number): number {
  return fmix32((fmix32((Math.imul(i, 0x9e3779b9) ^ s0) >>> 0) ^ s1) >>> 0);
}

/** Elements whose top 24 hash bits are >= this are kept: P(keep) = 1 - p up to 2^-24. */
export function dropoutThreshold(p: number): number {
  return Math.ceil(p * 2 ** 24);
}
