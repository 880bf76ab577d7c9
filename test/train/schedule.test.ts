import { test } from "node:test";
import assert from "node:assert/strict";
import { learningRate, resolveWarmupSteps, type ScheduleOptions } from "../../src/train/schedule.ts";

const base = { baseLr: 1e-4, warmupSteps: 2, totalSteps: 10 };
const at = (type: ScheduleOptions["type"], s: number, extra: Partial<ScheduleOptions> = {}): number => learningRate(s, { ...base, type, ...extra });
const close = (a: number, b: number): void => { assert.ok(Math.abs(a - b) <= 1e-12 + 1e-9 * Math.abs(b), `${a} vs ${b}`); };

test("warmup is linear from 0 for every warmup schedule", () => {
  for (const type of ["linear", "cosine", "cosine_with_restarts", "polynomial", "constant_with_warmup"] as const) {
    close(at(type, 0), 0);
    close(at(type, 1), 0.5e-4);
    close(at(type, 2), 1e-4);
  }
  close(at("constant", 0), 1e-4);
});

test("linear decays to zero at T", () => {
  close(at("linear", 6), 1e-4 * (4 / 8));
  close(at("linear", 10), 0);
  close(at("linear", 12), 0);
});

test("cosine: half at the midpoint of decay, zero at T", () => {
  close(at("cosine", 6), 0.5e-4);
  close(at("cosine", 4), 1e-4 * 0.5 * (1 + Math.cos(Math.PI * 0.25)));
  close(at("cosine", 10), 0);
});

test("cosine with 2 restarts returns to the peak mid-way", () => {
  close(at("cosine_with_restarts", 6, { numCycles: 2 }), 1e-4);
  close(at("cosine_with_restarts", 4, { numCycles: 2 }), 0.5e-4);
  close(at("cosine_with_restarts", 10, { numCycles: 2 }), 0);
});

test("polynomial (power 1) ends at lr_end", () => {
  close(at("polynomial", 10), 1e-7);
  close(at("polynomial", 6), (1e-4 - 1e-7) * 0.5 + 1e-7);
  close(at("polynomial", 20), 1e-7);
});

test("warmup steps: explicit count wins, else ceil(ratio * T)", () => {
  assert.equal(resolveWarmupSteps(5, 0.5, 100), 5);
  assert.equal(resolveWarmupSteps(0, 0.03, 100), 3);
  assert.equal(resolveWarmupSteps(0, 0.031, 100), 4);
  assert.equal(resolveWarmupSteps(0, 0, 100), 0);
  // transformers 5: warmup_steps below 1 is the ratio (warmup_ratio is gone there).
  assert.equal(resolveWarmupSteps(0.25, 0, 8), 2);
  assert.equal(resolveWarmupSteps(0.031, 0.5, 100), 4);
});
