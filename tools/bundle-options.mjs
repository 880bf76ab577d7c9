// The esbuild settings every tuna bundle shares (the CLI, the GPU tests, the GPU benchmarks): one ESM file
// for Node 20 with koffi left external (a native addon) and a require() for bundled CommonJS dependencies.
export const bundleOptions = {
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  sourcemap: true,
  external: ["koffi"],
  banner: { js: "import { createRequire as __tunaCreateRequire } from 'node:module'; const require = __tunaCreateRequire(import.meta.url);" },
  logLevel: "warning",
};
