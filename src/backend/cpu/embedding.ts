// Token embedding lookup and its scatter-add backward for the CPU backend. The backward sums each table
// row's gradients in float64 in token order and adds them to the row once, so duplicates round once.
import type { Tensor } from "../types.ts";
import { describe, fail } from "../checks.ts";
import { checkEmbeddingBackward, checkEmbeddingForward } from "../op-checks.ts";
import { expectSeparate, i32Data, readFloats, readFloatsRange, writeFloatsRange, type TensorStore } from "./store.ts";

/** out (N, C) = table[ids]; ids i32 (N) each in [0, V), table (V, C). */
export function embeddingForward(store: TensorStore, out: Tensor, ids: Tensor, table: Tensor): void {
  const op = "embeddingForward";
  const { vocab, channels } = checkEmbeddingForward(out, ids, table);
  const outSlot = store.get(op, "out", out);
  const tableSlot = store.get(op, "table", table);
  expectSeparate(op, [["out", outSlot]], [["table", tableSlot]]);
  const idv = i32Data(op, "ids", store.get(op, "ids", ids));
  for (let n = 0; n < idv.length; n++) {
    const id = idv[n]!;
    if (id < 0 || id >= vocab) fail(op, `${describe("ids", ids)} element ${n} is ${id}, outside the table's [0, ${vocab})`);
    writeFloatsRange(outSlot, n * channels, readFloatsRange(tableSlot, id * channels, channels));
  }
}

/** dtable (V, C) += scatter of dout (N, C) by ids; rows with id < 0 are skipped, ids >= V are a bug. */
export function embeddingBackward(store: TensorStore, dtable: Tensor, dout: Tensor, ids: Tensor): void {
  const op = "embeddingBackward";
  const { vocab, channels } = checkEmbeddingBackward(dtable, dout, ids);
  const dtableSlot = store.get(op, "dtable", dtable);
  const doutSlot = store.get(op, "dout", dout);
  expectSeparate(op, [["dtable", dtableSlot]], [["dout", doutSlot]]);
  const idv = i32Data(op, "ids", store.get(op, "ids", ids));
  const order: number[] = [];
  for (let n = 0; n < idv.length; n++) {
    const id = idv[n]!;
    if (id >= vocab) fail(op, `${describe("ids", ids)} element ${n} is ${id}, outside the table's [0, ${vocab})`);
    if (id >= 0) order.push(n);
  }
  // Stable sort by id: each table row then gets its tokens' gradients summed in token order.
  order.sort((a, b) => idv[a]! - idv[b]! || a - b);
  const d = readFloats(doutSlot);
  const sum = new Float64Array(channels);
  for (let start = 0; start < order.length; ) {
    const id = idv[order[start]!]!;
    sum.fill(0);
    let end = start;
    for (; end < order.length && idv[order[end]!] === id; end++) {
      const base = order[end]! * channels;
      for (let c = 0; c < channels; c++) sum[c] = sum[c]! + d[base + c]!;
    }
    const row = readFloatsRange(dtableSlot, id * channels, channels).slice();
    for (let c = 0; c < channels; c++) row[c] = row[c]! + sum[c]!;
    writeFloatsRange(dtableSlot, id * channels, row);
    start = end;
  }
}
