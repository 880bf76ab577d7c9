// Bundles what runs on the GPU machine (no tsx there): tools/bench/gpu.ts to dist/bench-gpu.mjs and every
// test-gpu/*.test.ts to dist/test-gpu/<name>.test.mjs (`node --test dist/test-gpu/*.mjs`); koffi stays external.
// Kernel .cu sources are read at run time from the repo (packageRoot), so the tree travels beside dist/.
import { build } from "esbuild";
import { bundleOptions } from "./bundle-options.mjs";
import { readdirSync, rmSync } from "node:fs";
import { join } from "node:path";

const root = new URL("..", import.meta.url).pathname;
const common = bundleOptions;

await build({ ...common, entryPoints: [join(root, "tools/bench/gpu.ts")], outfile: join(root, "dist/bench-gpu.mjs") });
await build({ ...common, entryPoints: [join(root, "tools/bench/attention.ts")], outfile: join(root, "dist/bench-attention.mjs") });
// The Node side of tools/interop/tcpstore-torch.py (TCPStore against the machine's torch 2.x).
await build({ ...common, entryPoints: [join(root, "tools/interop/tcpstore-node.ts")], outfile: join(root, "dist/tcpstore-node.mjs") });

const testDir = join(root, "test-gpu");
const tests = readdirSync(testDir).filter((name) => name.endsWith(".test.ts")).sort();
const outdir = join(root, "dist/test-gpu");
// Bundles of tests that no longer exist must not run.
rmSync(outdir, { recursive: true, force: true });
await build({
  ...common,
  entryPoints: Object.fromEntries(tests.map((name) => [name.slice(0, -".ts".length), join(testDir, name)])),
  outdir,
  outExtension: { ".js": ".mjs" },
});
console.log(`built dist/bench-gpu.mjs and ${tests.length} GPU test bundles in dist/test-gpu/`);
