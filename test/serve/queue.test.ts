// The serve queue: jobs run one at a time in arrival order; beyond the running one and `limit` waiting, a job is
// refused at once with HTTP 429; a failing job does not stop the ones behind it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createWorkQueue } from "../../src/serve/queue.ts";
import { HttpError } from "../../src/serve/requests.ts";

void test("one at a time, in order, a bounded wait, failures contained", async () => {
  const q = createWorkQueue(1);
  const order: string[] = [];
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const first = q.run(async () => {
    order.push("first start");
    await gate;
    order.push("first end");
    throw new Error("first failed");
  });
  const second = q.run(() => {
    order.push("second");
    return Promise.resolve(2);
  });
  await assert.rejects(q.run(() => Promise.resolve(3)), (e: unknown) => e instanceof HttpError && e.status === 429);
  assert.equal(q.waiting, 2);
  release();
  await assert.rejects(first, /first failed/);
  assert.equal(await second, 2);
  assert.deepEqual(order, ["first start", "first end", "second"]);
  assert.equal(q.waiting, 0);
  assert.equal(await q.run(() => Promise.resolve(4)), 4);
});
