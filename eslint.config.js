// Lint: typescript-eslint's strict type-aware rules over src, test and tools, and the direction of imports
// between the folders of src/ (each folder may import only the folders listed for it).
import tseslint from "typescript-eslint";

// The architecture, bottom up: a folder imports itself and what is listed here, nothing else.
const LAYERS = {
  util: [],
  io: ["util"],
  gpu: ["util"],
  hub: ["util"],
  config: ["util"],
  tokenizer: ["util", "io"],
  hf: ["util", "io"],
  quant: ["util", "io", "hf"],
  backend: ["util", "io", "gpu", "quant"],
  lora: ["util", "io", "hf", "quant"],
  data: ["util", "config", "hub", "tokenizer"],
  model: ["util", "io", "hf", "quant", "backend", "lora", "data"],
  gguf: ["util", "io", "hf", "lora", "tokenizer"],
  serve: ["util", "tokenizer", "hf", "data", "model", "train"],
  dist: ["util", "io", "gpu", "config", "backend"],
  train: ["util", "io", "gpu", "hub", "config", "tokenizer", "hf", "quant", "backend", "lora", "data", "model", "dist"],
  cli: ["util", "io", "gpu", "hub", "config", "tokenizer", "hf", "quant", "backend", "lora", "data", "model", "dist", "train", "gguf", "serve"],
};
const FOLDERS = Object.keys(LAYERS);

const layerRules = Object.entries(LAYERS).map(([folder, allowed]) => {
  const forbidden = FOLDERS.filter((f) => f !== folder && !allowed.includes(f));
  return {
    files: [`src/${folder}/**/*.ts`],
    rules: {
      "no-restricted-imports": [
        "error",
        {
          patterns: forbidden.map((f) => ({
            group: [`../${f}/*`, `../../${f}/*`, `../../../${f}/*`, `../${f}/**`, `../../${f}/**`, `../../../${f}/**`],
            message: `src/${folder} must not import src/${f} (imports point down: see LAYERS in eslint.config.js).`,
          })),
        },
      ],
    },
  };
});

export default tseslint.config(
  { ignores: ["dist/**", "node_modules/**", ".device/**", "bin/**", "tools/*.mjs", "eslint.config.js"] },
  ...tseslint.configs.strictTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      "@typescript-eslint/restrict-template-expressions": ["error", { allowNumber: true, allowBoolean: true }],
      "@typescript-eslint/no-non-null-assertion": "off",
      "@typescript-eslint/no-unnecessary-condition": ["error", { allowConstantLoopConditions: true }],
      // node:test's test()/describe() return promises the runner itself awaits.
      "@typescript-eslint/no-floating-promises": [
        "error",
        { allowForKnownSafeCalls: [{ from: "package", package: "node:test", name: ["test", "describe", "it", "suite"] }] },
      ],
    },
  },
  ...layerRules,
);
