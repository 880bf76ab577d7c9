// Bundles the CLI (src/cli/main.ts) into dist/tuna.mjs with esbuild; koffi stays external (native addon).
// Run by `npm ci` (prepare) and `npm run build`; the bundle is also what travels to the GPU machine.
import { build } from "esbuild";

await build({
  entryPoints: [new URL("../src/cli/main.ts", import.meta.url).pathname],
  outfile: new URL("../dist/tuna.mjs", import.meta.url).pathname,
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  sourcemap: true,
  external: ["koffi"],
  // Some bundled CommonJS dependencies call require(); give the ESM bundle one.
  banner: { js: "import { createRequire as __tunaCreateRequire } from 'node:module'; const require = __tunaCreateRequire(import.meta.url);" },
  logLevel: "warning",
});
