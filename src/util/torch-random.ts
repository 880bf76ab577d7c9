// PyTorch's CPU random generator and torch.randperm, so that tuna visits training examples in the order the
// Hugging Face Trainer does (accelerate's SeedableRandomSampler seeds a torch.Generator with seed + epoch and
// takes torch.randperm). Written by hand from ATen (core/MT19937RNGEngine.h, CPUGeneratorImpl.cpp and
// native/TensorFactories.cpp's randperm_cpu): no npm package reproduces torch's streams. Checked against
// torch 2.13 itself (test/util/torch-random.test.ts, golden made by tools/golden/make_trainer_order_golden.py).

const N = 624;
const M = 397;

/** at::mt19937 as CPUGeneratorImpl holds it: torch.Generator().manual_seed(seed), then random() draws. */
export class TorchCpuGenerator {
  private readonly state = new Uint32Array(N);
  private next = 0;
  private left = 1;

  /** manual_seed(seed): the low 32 bits seed the engine (init_with_uint32). */
  constructor(seed: number | bigint) {
    const s = Number(BigInt.asUintN(32, BigInt(seed)));
    this.state[0] = s;
    for (let j = 1; j < N; j++) {
      const prev = this.state[j - 1]!;
      this.state[j] = (Math.imul(1812433253, (prev ^ (prev >>> 30)) >>> 0) + j) >>> 0;
    }
  }

  /** CPUGeneratorImpl::random(): one 32-bit draw. */
  random(): number {
    if (--this.left === 0) this.twist();
    let y = this.state[this.next++]!;
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  /**
   * CPUGeneratorImpl::random64(): two draws, the first the high half. torch.empty((), dtype=torch.int64).random_()
   * takes this modulo 2^63 — what every DataLoader iterator draws from the global generator for its base seed.
   */
  random64(): bigint {
    const hi = this.random();
    return (BigInt(hi) << 32n) | BigInt(this.random());
  }

  private twist(): void {
    this.left = N;
    this.next = 0;
    const s = this.state;
    const mix = (u: number, v: number): number => ((u & 0x80000000) | (v & 0x7fffffff)) >>> 0;
    const step = (a: number, u: number, v: number): number => (a ^ (mix(u, v) >>> 1) ^ (v & 1 ? 0x9908b0df : 0)) >>> 0;
    for (let j = 0; j < N - M; j++) s[j] = step(s[j + M]!, s[j]!, s[j + 1]!);
    for (let j = N - M; j < N - 1; j++) s[j] = step(s[j + M - N]!, s[j]!, s[j + 1]!);
    s[N - 1] = step(s[M - 1]!, s[N - 1]!, s[0]!);
  }
}

/**
 * torch.randperm(n, generator=g) on the CPU, drawing from `g` (a seed: a fresh torch.Generator().manual_seed(seed)):
 * Fisher-Yates swapping i with i + random() % (n - i). For n >= 2^32 / 20 torch switches to another variant; no
 * dataset of tuna's is that long, and it is refused rather than ordered otherwise.
 */
export function torchRandperm(n: number, g: TorchCpuGenerator | number | bigint): number[] {
  if (!Number.isInteger(n) || n < 0 || n >= Math.floor(0xffffffff / 20)) throw new RangeError(`torchRandperm: n must be an integer in [0, ${Math.floor(0xffffffff / 20)}), got ${n}`);
  const gen = g instanceof TorchCpuGenerator ? g : new TorchCpuGenerator(g);
  const r = Array.from({ length: n }, (_, i) => i);
  for (let i = 0; i < n - 1; i++) {
    const z = gen.random() % (n - i);
    const t = r[i]!;
    r[i] = r[z + i]!;
    r[z + i] = t;
  }
  return r;
}
