// Writes the logits tuna computes for a model + PEFT adapter on fixed token ids, so a Python check on
// the GPU machine (check_peft_load.py) can load the same adapter with PEFT and compare.
// npx tsx tools/peft-check/tuna-logits.ts <model> <adapter> <out.json>
import { writeFile } from "node:fs/promises";
import { createCpuBackend } from "../../src/backend/cpu/index.ts";
import { batchFromDocuments } from "../../src/data/batch.ts";
import { openModelForUse } from "../../src/train/open-model.ts";
import { createCausalLm, forward, lastLogits, uploadBatch } from "../../src/model/causal-lm/model.ts";

const [modelDir, adapterDir, outPath] = process.argv.slice(2);
if (modelDir === undefined || adapterDir === undefined || outPath === undefined) throw new Error("usage: tuna-logits.ts <model> <adapter> <out.json>");
const backend = createCpuBackend();
const opened = await openModelForUse(backend, modelDir, { adapterDir, baseDtype: "f32" });
const model = createCausalLm(backend, opened.params, { checkpointing: false, seed: 0 });
const V = opened.cfg.vocabSize;
// Ids include the added chat tokens (the last rows) so the trained rows are exercised.
const ids = [V - 8, 5, 9, 14, V - 7, 20, 21, 22, V - 6, 30, 31];
await forward(model, uploadBatch(model, batchFromDocuments([{ inputIds: ids }])));
const logits = await lastLogits(model);
await writeFile(outPath, JSON.stringify({ input_ids: ids, vocab_size: V, logits: Array.from(logits) }));
console.log(`wrote ${outPath}: ${ids.length} x ${V} logits`);
