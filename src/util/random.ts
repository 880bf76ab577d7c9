// A small seeded random generator (xoshiro128**, seeded through splitmix32) with uniform and normal draws.
// Hand-written: reproducibility across runs and machines needs a generator whose state we own and save.

export interface Rng {
  /** Uniform in [0, 1), 32 bits of randomness. */
  uniform(): number;
  /** Standard normal (Box-Muller, one value per two uniforms). */
  normal(): number;
  /** The four state words, for checkpointing. */
  state(): [number, number, number, number];
}

function splitmix32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

export function createRng(seed: number, state?: readonly [number, number, number, number]): Rng {
  let a: number, b: number, c: number, d: number;
  if (state !== undefined) {
    [a, b, c, d] = state;
  } else {
    const init = splitmix32(seed);
    a = init();
    b = init();
    c = init();
    d = init();
  }
  const next = (): number => {
    const result = Math.imul(rotl(Math.imul(b, 5), 7), 9) >>> 0;
    const t = b << 9;
    c ^= a;
    d ^= b;
    b ^= c;
    a ^= d;
    c ^= t;
    d = rotl(d, 11);
    return result;
  };
  const uniform = (): number => next() / 4294967296;
  return {
    uniform,
    // No cached second value: the four words are then the whole state, so a saved state resumes exactly.
    normal: () => {
      let u = 0;
      while (u === 0) u = uniform();
      const v = uniform();
      return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
    },
    state: () => [a >>> 0, b >>> 0, c >>> 0, d >>> 0],
  };
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/**
 * A generator for a place in a computation (e.g. epoch, step, micro-batch): the same place always gives the
 * same stream, whatever ran before it in this process. Each coordinate is mixed in with murmur3's finalizer.
 */
export function rngAt(seed: number, ...place: number[]): Rng {
  let h = seed >>> 0;
  for (const p of place) {
    h = Math.imul(h ^ (p >>> 0), 0x9e3779b1) >>> 0;
    h ^= h >>> 16;
    h = Math.imul(h, 0x85ebca6b) >>> 0;
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35) >>> 0;
    h ^= h >>> 16;
  }
  return createRng(h);
}
