// `tuna serve` as a process: it says where it listens, answers, stops on SIGINT with exit 0; bad flags exit 1.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { join } from "node:path";
import { runCli } from "./run-cli.ts";

const root = new URL("../..", import.meta.url).pathname;

void test("tuna serve listens on 127.0.0.1, answers /v1/models, and stops on Ctrl-C", { timeout: 120_000 }, async () => {
  const build = spawnSync(process.execPath, ["tools/build.mjs"], { cwd: root, encoding: "utf8" });
  assert.equal(build.status, 0, build.stderr);
  const child = spawn(process.execPath, ["bin/tuna.js", "serve", join(root, "examples/tiny-llama"), "--port", "0", "--device", "cpu", "--served_model_name", "tiny"], { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
  let err = "";
  child.stderr.on("data", (d: Buffer) => (err += d.toString()));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setInterval(() => {
      const m = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(err);
      if (m?.[1] !== undefined) {
        clearInterval(timer);
        resolve(m[1]);
      }
    }, 20);
    child.on("exit", () => {
      clearInterval(timer);
      reject(new Error(`tuna serve exited: ${err}`));
    });
  });
  const models = (await (await fetch(`${url}/v1/models`)).json()) as { data: { id: string }[] };
  assert.deepEqual(models.data.map((m) => m.id), ["tiny"]);
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => { resolve(code); }));
  child.kill("SIGINT");
  assert.equal(await exited, 0, err);
  assert.match(err, /tuna serve: stopped/);
});

void test("tuna serve refuses bad flags before loading anything", async () => {
  const r = await runCli(["serve", "m", "--adapter", "nodir", "--port", "-1"]);
  assert.equal(r.code, 1);
  assert.match(r.err, /--adapter takes NAME=DIR, got "nodir"/);
  assert.match(r.err, /--port must be an integer >= 0/);
  const temp = await runCli(["serve", "m", "--temperature", "0.5"]);
  assert.equal(temp.code, 1);
  assert.match(temp.err, /temperature/);
});
