// Shared by the trainer goldens (test/train/trainer-golden.test.ts, test/train/dpo/trainer-golden.test.ts): run a
// tuna command with a golden's flags, read its metrics.jsonl, and compare two adapter files.
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { openWeightsFile, type WeightSource } from "../../src/io/safetensors/checkpoint.ts";
import { runCli } from "../cli/run-cli.ts";

/** `tuna <command> ...args` into `out`; fails the test on a non-zero exit. Returns the logged training steps. */
export async function runAndReadSteps(command: string, args: string[], out: string): Promise<Record<string, number>[]> {
  const run = await runCli([command, ...args, "--output_dir", out]);
  assert.equal(run.code, 0, run.err);
  return (await readFile(join(out, "metrics.jsonl"), "utf8"))
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as Record<string, number>)
    .filter((e) => "loss" in e);
}

async function floats(w: WeightSource, name: string): Promise<Float32Array> {
  const info = w.info(name);
  assert.equal(info.dtype, "F32", name);
  const bytes = await w.readTensor(name);
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
}

/** max |a - b| / max |b| over every tensor of `want`, which `got` must hold too with the same shapes. */
export async function adapterDistance(gotPath: string, wantPath: string): Promise<number> {
  const [got, want] = await Promise.all([openWeightsFile(gotPath), openWeightsFile(wantPath)]);
  try {
    assert.deepEqual(got.names(), want.names());
    let worst = 0;
    for (const name of want.names()) {
      assert.deepEqual(got.info(name).shape, want.info(name).shape, name);
      const [a, b] = await Promise.all([floats(got, name), floats(want, name)]);
      let diff = 0;
      let scale = 0;
      for (let i = 0; i < b.length; i++) {
        diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
        scale = Math.max(scale, Math.abs(b[i]!));
      }
      worst = Math.max(worst, diff / Math.max(scale, 1e-12));
    }
    return worst;
  } finally {
    await Promise.all([got.close(), want.close()]);
  }
}

/** |a - b| within `rel` of |b| plus `abs`, or the assertion names what and both values. */
export function assertClose(a: number | undefined, b: number, rel: number, abs: number, what: string): void {
  assert.ok(a !== undefined && Math.abs(a - b) <= rel * Math.abs(b) + abs, `${what}: tuna ${a}, TRL ${b}`);
}
