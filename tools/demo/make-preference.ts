// The DPO demo's preference pairs (examples/demo/preference/), derived from the SFT demo's words: for
// "reverse: <word>" the chosen answer is the reversed word, the rejected one the word copied (what the base
// model, pretrained on copy tasks, leans to). Palindromes are left out (chosen = rejected teaches nothing).
//   npx tsx tools/demo/make-preference.ts
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";

const demo = join(import.meta.dirname, "../../examples/demo");
const out = join(demo, "preference");
await mkdir(out, { recursive: true });
for (const [split, limit] of [["train", 400], ["test", 100]] as const) {
  const lines = (await readFile(join(demo, "data", `${split}.jsonl`), "utf8")).trim().split("\n");
  const rows: string[] = [];
  for (const line of lines) {
    const messages = (JSON.parse(line) as { messages: { role: string; content: string }[] }).messages;
    const word = messages[0]!.content.replace(/^reverse: /, "");
    const reversed = messages[1]!.content;
    if (reversed === word) continue;
    rows.push(JSON.stringify({ prompt: [{ role: "user", content: `reverse: ${word}` }], chosen: [{ role: "assistant", content: reversed }], rejected: [{ role: "assistant", content: word }] }));
    if (rows.length === limit) break;
  }
  await writeFile(join(out, `${split}.jsonl`), rows.join("\n") + "\n");
  console.log(`${split}: ${rows.length} pairs`);
}
