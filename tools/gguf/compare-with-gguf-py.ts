// Compares tuna's reading of a GGUF file with gguf-py's (tools/gguf/dump_with_gguf_py.py): the same keys,
// tensor types, shapes, and dequantized values (sums in float64). Usage:
//   python tools/gguf/dump_with_gguf_py.py F.gguf > dump.json && npx tsx tools/gguf/compare-with-gguf-py.ts F.gguf dump.json
import { readFile } from "node:fs/promises";
import { openGguf } from "../../src/io/gguf/reader.ts";
import { decodeGgml } from "../../src/io/gguf/quants.ts";

const [file, dumpPath] = process.argv.slice(2);
if (file === undefined || dumpPath === undefined) throw new Error("usage: compare-with-gguf-py.ts FILE.gguf DUMP.json");
const dump = JSON.parse(await readFile(dumpPath, "utf8")) as { fields: Record<string, string[]>; tensors: Record<string, { type: string; shape: number[]; sum: number; sumsq: number }> };
const f = await openGguf(file);
const problems: string[] = [];
const keys = [...f.metadata.keys()];
if (keys.join() !== Object.keys(dump.fields).join()) problems.push(`keys differ: ${keys.join()} vs ${Object.keys(dump.fields).join()}`);
let worst = 0;
for (const t of f.tensors) {
  const theirs = dump.tensors[t.name];
  if (theirs === undefined) {
    problems.push(`gguf-py has no ${t.name}`);
    continue;
  }
  if (theirs.type !== t.type) problems.push(`${t.name}: type ${t.type} vs ${theirs.type}`);
  if ([...t.ne].reverse().join() !== theirs.shape.join() && t.ne.join() !== theirs.shape.join()) problems.push(`${t.name}: shape ${t.ne.join("x")} vs ${theirs.shape.join("x")}`);
  const values = decodeGgml(await f.readTensor(t.name), t.ne.reduce((a, b) => a * b, 1), t.type);
  let sum = 0;
  let sumsq = 0;
  for (const v of values) {
    sum += v;
    sumsq += v * v;
  }
  const rel = Math.max(Math.abs(sum - theirs.sum) / Math.max(1e-30, Math.sqrt(theirs.sumsq)), Math.abs(sumsq - theirs.sumsq) / Math.max(1e-30, theirs.sumsq));
  worst = Math.max(worst, rel);
  if (rel > 1e-9) problems.push(`${t.name}: values differ (relative ${rel})`);
}
await f.close();
console.log(`${f.tensors.length} tensors, ${keys.length} keys compared; worst relative difference ${worst}`);
if (problems.length > 0) {
  console.log(problems.join("\n"));
  process.exit(1);
}
