import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";

// The real executable: bundle built by tools/build.mjs (as `npm ci` does), run as a child process.
const root = new URL("../..", import.meta.url).pathname;

function tuna(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ["bin/tuna.js", ...args], { cwd: root, encoding: "utf8", env: { ...process.env, HF_HUB_OFFLINE: "1" } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test("the bundled tuna executable runs inspect, train --help and doctor, and exits 1 on a user mistake", () => {
  const build = spawnSync(process.execPath, ["tools/build.mjs"], { cwd: root, encoding: "utf8" });
  assert.equal(build.status, 0, build.stderr);

  const inspect = tuna("inspect", "examples/tiny-llama", "--json");
  assert.equal(inspect.status, 0, inspect.stderr);
  assert.equal((JSON.parse(inspect.stdout) as { model: { layers: number } }).model.layers, 2);

  const help = tuna("train", "--help");
  assert.equal(help.status, 0, help.stderr);
  assert.match(help.stdout, /--lora_r/);

  const doctor = tuna("doctor", "--json");
  assert.equal(doctor.status, 0, doctor.stderr);
  assert.ok(typeof JSON.parse(doctor.stdout) === "object");

  const missing = tuna("inspect", "./no/such/model");
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /FILE_NOT_FOUND/);
  assert.doesNotMatch(missing.stderr, /\n\s+at /);
});
