// Every rank must have loaded the same model: agreeOnEveryRank passes when the values match and fails on
// every rank, naming the ranks that differ from rank 0, when one does not.
import { test } from "node:test";
import assert from "node:assert/strict";
import { agreeOnEveryRank } from "../../src/dist/agree.ts";
import { isTunaError } from "../../src/util/errors.ts";
import { memoryGroup } from "./memory-group.ts";

void test("the same value on 3 ranks agrees; one rank's different value fails every rank, naming it", async () => {
  const same = memoryGroup(3);
  await Promise.all([0, 1, 2].map((r) => agreeOnEveryRank(same(r), "model", "config A", "Use the same files.")));
  const group = memoryGroup(3);
  const values = ['{"quant":"nf4"}', '{"quant":"nf4"}', '{"quant":"fp4"}'];
  const results = await Promise.allSettled(values.map((v, r) => agreeOnEveryRank(group(r), "model (config.json)", v, "Use the same files.")));
  for (const r of results) {
    assert.equal(r.status, "rejected");
    const e = (r).reason as Error;
    assert.ok(isTunaError(e) && e.code === "DIST");
    assert.equal(e.message, "rank 2 of 3 loaded a different model (config.json) than rank 0. Use the same files.");
  }
});
