// PyTorch's CPU generator and randperm against torch 2.13 itself (test/golden/trainer-order/golden.json, written
// by tools/golden/make_trainer_order_golden.py with the machine's local torch wheel).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { TorchCpuGenerator, torchRandperm } from "../../src/util/torch-random.ts";

interface Golden {
  torch: string;
  randperm: { n: number; seed: number; perm?: number[]; head?: number[]; weightedSum?: number }[];
}
const golden = JSON.parse(await readFile(new URL("../golden/trainer-order/golden.json", import.meta.url), "utf8")) as Golden;

void test(`torchRandperm equals torch ${golden.torch}'s randperm for every size and seed of the golden (seeds beyond 2^32 keep their low bits)`, () => {
  assert.equal(golden.randperm.length, 56);
  for (const g of golden.randperm) {
    const perm = torchRandperm(g.n, g.seed);
    const what = `n ${g.n}, seed ${g.seed}`;
    if (g.perm !== undefined) {
      assert.deepEqual(perm, g.perm, what);
    } else {
      assert.deepEqual(perm.slice(0, 20), g.head, what);
      let sum = 0n;
      for (const [i, p] of perm.entries()) sum = (sum + BigInt(i + 1) * BigInt(p)) % (2n ** 61n - 1n);
      assert.equal(sum, BigInt(g.weightedSum!), what);
    }
  }
});

void test("the generator is the standard MT19937 (std::mt19937's published 10000th output for seed 5489) and refuses sizes torch orders another way", () => {
  const g = new TorchCpuGenerator(5489);
  let last = 0;
  for (let i = 0; i < 10000; i++) last = g.random();
  assert.equal(last, 4123659995);
  assert.throws(() => torchRandperm(2 ** 31, 1), RangeError);
  assert.throws(() => torchRandperm(1.5, 1), RangeError);
});
