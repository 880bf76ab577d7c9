// Bundles the CLI (src/cli/main.ts) into dist/tuna.mjs with esbuild; koffi stays external (native addon).
// Run by `npm ci` (prepare) and `npm run build`; the bundle is also what travels to the GPU machine.
import { build } from "esbuild";
import { bundleOptions } from "./bundle-options.mjs";

await build({
  ...bundleOptions,
  entryPoints: [new URL("../src/cli/main.ts", import.meta.url).pathname],
  outfile: new URL("../dist/tuna.mjs", import.meta.url).pathname,
});
