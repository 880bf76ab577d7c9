#!/usr/bin/env node
// The tuna executable: loads the bundled CLI built by `npm ci` / `npm run build` (tools/build.mjs).
import { existsSync } from "node:fs";

const bundle = new URL("../dist/tuna.mjs", import.meta.url);
if (!existsSync(bundle)) {
  console.error("tuna: dist/tuna.mjs is missing. Run `npm ci` (or `npm run build`) in the tuna checkout first.");
  process.exit(1);
}
const { main } = await import(bundle.href);
process.exitCode = await main(process.argv.slice(2));
