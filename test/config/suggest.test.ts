// Edit distance and the nearest-name suggestion used for unknown flags and keys.
import { test } from "node:test";
import assert from "node:assert/strict";
import { editDistance, nearestName } from "../../src/config/suggest.ts";

void test("editDistance counts insertions, deletions and substitutions", () => {
  assert.equal(editDistance("", ""), 0);
  assert.equal(editDistance("abc", ""), 3);
  assert.equal(editDistance("", "ab"), 2);
  assert.equal(editDistance("kitten", "sitting"), 3);
  assert.equal(editDistance("lora_r", "lora-r"), 1);
  assert.equal(editDistance("flaw", "lawn"), 2);
});

void test("nearestName picks the closest name and gives up when nothing is close", () => {
  const known = ["lora_r", "lora_alpha", "learning_rate", "seed"];
  assert.equal(nearestName("lora_rank", known), "lora_r");
  assert.equal(nearestName("learnign_rate", known), "learning_rate");
  assert.equal(nearestName("sed", known), "seed");
  assert.equal(nearestName("completely_unrelated_option", known), undefined);
});
