// Host side of the CUDA attention ops: kernel choice, shared memory against the kernels' documented layouts, tile
// tables from cuSeqlens, the decode split, and the wrappers' launches and checks on a recording device (no GPU).
import { test } from "node:test";
import assert from "node:assert/strict";
import { attentionPath, backwardHeadSplits, backwardKernelPlan, buildTileTable, decodePlan, forwardKernelPlan, MAX_HEAD_DIM } from "../../../src/backend/cuda/ops/attention-plan.ts";
import { attentionBackward, attentionDecode, attentionForward } from "../../../src/backend/cuda/ops/attention.ts";
import type { CudaDevice, DeviceTensor, KernelArg } from "../../../src/backend/cuda/types.ts";
import type { DType } from "../../../src/backend/types.ts";
import { TunaError } from "../../../src/util/errors.ts";
import { createRng } from "../../../src/util/random.ts";

function triples(table: Int32Array): [number, number, number][] {
  const out: [number, number, number][] = [];
  for (let i = 0; i < table.length; i += 3) out.push([table[i]!, table[i + 1]!, table[i + 2]!]);
  return out;
}

test("the tensor-core path takes aligned bf16 at D 64 and 128 on sm_80 or newer only", () => {
  assert.equal(attentionPath("bf16", 128, true, "sm_90"), "mma");
  assert.equal(attentionPath("bf16", 64, true, "sm_90"), "mma");
  assert.equal(attentionPath("bf16", 128, false, "sm_90"), "generic");
  assert.equal(attentionPath("bf16", 32, true, "sm_90"), "generic");
  assert.equal(attentionPath("bf16", 256, true, "sm_90"), "generic");
  assert.equal(attentionPath("f32", 128, true, "sm_90"), "generic");
  assert.equal(attentionPath("f16", 64, true, "sm_90"), "generic");
  assert.equal(attentionPath("bf16", 128, true, "sm_80"), "mma");
  assert.equal(attentionPath("bf16", 128, true, "sm_75"), "generic");
});

test("kernel plans name the kernels and carry the shared memory of their layouts", () => {
  // Header comment of attention-mma.cu: forward (BQ + 256) (D + 8) bf16 with BQ 128 on 8 warps at D 128
  // (104448) and 64 on 4 warps at D 64 (46080); attention-mma-backward.cu: 65536 (D 64) and 75264 (D 128), 4 warps.
  assert.deepEqual(forwardKernelPlan("mma", 128), { file: "attention-mma.cu", kernel: "attention_forward_bf16_d128", tileRows: 128, threads: 256, sharedBytes: 104448 });
  assert.deepEqual(forwardKernelPlan("mma", 64), { file: "attention-mma.cu", kernel: "attention_forward_bf16_d64", tileRows: 64, threads: 128, sharedBytes: 46080 });
  assert.deepEqual(backwardKernelPlan("mma", 64), { file: "attention-mma-backward.cu", kernel: "attention_backward_bf16_d64", tileRows: 64, threads: 128, sharedBytes: 65536 });
  assert.deepEqual(backwardKernelPlan("mma", 128), { file: "attention-mma-backward.cu", kernel: "attention_backward_bf16_d128", tileRows: 64, threads: 128, sharedBytes: 75264 });
  // Two D 128 forward blocks fit an H200's 227 KiB (the kernel is built for two per SM).
  assert.ok(2 * forwardKernelPlan("mma", 128).sharedBytes <= 227 * 1024);
  // attention.cu, D = 64: forward f32 q 16x64 + k 32x65 + v 32x64; backward k, v 32x65, dk, dv 32x64, q, dout 16x64, p, ds 16x33, 32 floats.
  assert.deepEqual(forwardKernelPlan("generic", 64), { file: "attention.cu", kernel: "attention_forward_generic", tileRows: 16, threads: 128, sharedBytes: (1024 + 2080 + 2048) * 4 });
  assert.deepEqual(backwardKernelPlan("generic", 64), {
    file: "attention.cu",
    kernel: "attention_backward_generic",
    tileRows: 32,
    threads: 128,
    sharedBytes: (2 * 2080 + 2 * 2048 + 2 * 1024 + 2 * 528 + 32) * 4,
  });
  // Every head dim the generic kernels accept fits an H200's 227 KiB per block.
  for (let dim = 1; dim <= MAX_HEAD_DIM; dim++) {
    assert.ok(forwardKernelPlan("generic", dim).sharedBytes <= 227 * 1024, `forward D ${dim}`);
    assert.ok(backwardKernelPlan("generic", dim).sharedBytes <= 227 * 1024, `backward D ${dim}`);
  }
});

test("query tiles cover each document from its start, longest first", () => {
  const bounds = Int32Array.from([0, 5, 5, 100]);
  // Document [0, 5): one tile seeing 5 keys. Empty [5, 5): none. [5, 100): tiles at 5, 21, ..., 85 whose last
  // rows see 16, 32, 48, 64, 80 and 95 keys.
  assert.deepEqual(triples(buildTileTable(bounds, 16, "query")), [
    [5, 100, 85],
    [5, 100, 69],
    [5, 100, 53],
    [5, 100, 37],
    [5, 100, 21],
    [5, 100, 5],
    [0, 5, 0],
  ]);
});

test("key tiles are ordered by the query rows at or after them", () => {
  const bounds = Int32Array.from([0, 5, 5, 100]);
  assert.deepEqual(triples(buildTileTable(bounds, 16, "key")), [
    [5, 100, 5],
    [5, 100, 21],
    [5, 100, 37],
    [5, 100, 53],
    [5, 100, 69],
    [5, 100, 85],
    [0, 5, 0],
  ]);
});

test("equal work keeps document order", () => {
  const table = triples(buildTileTable(Int32Array.from([0, 64, 128, 192]), 64, "query"));
  assert.deepEqual(table, [
    [0, 64, 0],
    [64, 128, 64],
    [128, 192, 128],
  ]);
  assert.equal(buildTileTable(Int32Array.from([0]), 64, "key").length, 0);
});

test("every row of every document lies in exactly one tile", () => {
  const rng = createRng(7);
  for (let trial = 0; trial < 20; trial++) {
    const bounds = [0];
    const docs = 1 + Math.floor(rng.uniform() * 6);
    for (let s = 0; s < docs; s++) bounds.push(bounds[s]! + Math.floor(rng.uniform() * 300));
    const n = bounds[bounds.length - 1]!;
    for (const tileRows of [16, 32, 64]) {
      for (const kind of ["query", "key"] as const) {
        const seen = new Int32Array(n);
        for (const [docStart, docEnd, rowStart] of triples(buildTileTable(Int32Array.from(bounds), tileRows, kind))) {
          assert.ok(bounds.includes(docStart) && bounds.includes(docEnd) && docStart < docEnd);
          assert.equal((rowStart - docStart) % tileRows, 0);
          for (let r = rowStart; r < Math.min(rowStart + tileRows, docEnd); r++) seen[r] = seen[r]! + 1;
        }
        assert.ok(seen.every((c) => c === 1), `bounds ${bounds.join(",")} tileRows ${tileRows} ${kind}`);
      }
    }
  }
});

test("the GQA backward splits a group's heads over blocks only while the longest block would dominate", () => {
  const keyTiles = (bounds: number[]) => buildTileTable(Int32Array.from(bounds), 64, "key");
  const docs = (count: number, length: number) => Array.from({ length: count + 1 }, (_, i) => i * length);
  // One 2048-token document: 32 key tiles seeing 2048, 1984, ..., 64 query rows, 33792 in all. H 32 on 264
  // resident blocks: an even share is 33792 * 32 / 264 = 4096 rows; the longest tile times 4 / splits heads
  // must be at most half of it: splits 4 (2 * 2048 * 1 = 4096).
  assert.equal(backwardHeadSplits(keyTiles([0, 2048]), 32, 8, 132), 4);
  // 8 x 512: 64 key tiles x 8 kv heads = 512 blocks already fill the 264 resident slots: no split (on the
  // H200 the split took 0.475 ms against 0.404). On 400 SMs (800 slots) the balance rule applies:
  // share 8 * 2304 * 32 / 800 = 737.3; splits 4 gives 2 * 512 * 1 = 1024 > 737.3, so the whole group, 4.
  assert.equal(backwardHeadSplits(keyTiles(docs(8, 512)), 32, 8, 132), 1);
  assert.equal(backwardHeadSplits(keyTiles(docs(8, 512)), 32, 8, 400), 4);
  // 4 x 2048: share 16384 = 2 * 2048 * 4, no split needed.
  assert.equal(backwardHeadSplits(keyTiles(docs(4, 2048)), 32, 8, 132), 1);
  // MHA never splits; a tiny batch on many SMs splits the whole group; splits divide the group.
  assert.equal(backwardHeadSplits(keyTiles([0, 2048]), 32, 32, 132), 1);
  assert.equal(backwardHeadSplits(keyTiles([0, 100]), 8, 1, 132), 8);
  for (const group of [2, 3, 4, 6, 8]) {
    const splits = backwardHeadSplits(keyTiles([0, 300]), 4 * group, 4, 20);
    assert.equal(group % splits, 0, `group ${group}`);
  }
  // No tiles, no work: nothing to split.
  assert.equal(backwardHeadSplits(keyTiles([0]), 8, 2, 132), 1);
});

test("decode splits a long cache when there are few (query, head) rows", () => {
  // 32 heads, one token, 4096 rows on 132 SMs: ceil(264 / 32) = 9 splits of ceil(4096 / 9) = 456 rows.
  assert.deepEqual(decodePlan(32, 4096, 132), { splits: 9, chunk: 456 });
  // Enough rows to fill the GPU: one split.
  assert.deepEqual(decodePlan(1024, 4096, 132), { splits: 1, chunk: 4096 });
  // Short caches are not split below 256 rows per split.
  assert.deepEqual(decodePlan(8, 100, 132), { splits: 1, chunk: 100 });
  assert.deepEqual(decodePlan(8, 600, 132), { splits: 2, chunk: 300 });
  for (const visible of [1, 255, 256, 257, 1000, 5000, 100000]) {
    const { splits, chunk } = decodePlan(4, visible, 132);
    assert.ok(splits * chunk >= visible && (splits - 1) * chunk < visible, `visible ${visible}`);
  }
});

// A device that records what the wrappers ask of it; addresses are 256-aligned like the caching allocator's.
interface Launch {
  kernel: string;
  grid: readonly number[];
  block: readonly number[];
  sharedBytes: number;
  args: readonly KernelArg[];
}

function recordingDevice(): { dev: CudaDevice; launches: Launch[]; uploads: Int32Array[]; live: Set<bigint>; sharedLimits: Map<string, number>; memsets: number } {
  const launches: Launch[] = [];
  const uploads: Int32Array[] = [];
  const live = new Set<bigint>();
  const sharedLimits = new Map<string, number>();
  const state = { memsets: 0 };
  let next = 1n << 20n;
  const unused = (): never => {
    throw new Error("not used by attention");
  };
  const dev: CudaDevice = {
    index: 0,
    name: "recorder",
    arch: "sm_90",
    multiprocessorCount: 132,
    alloc(bytes) {
      const ptr = next;
      next += BigInt(Math.ceil(bytes / 256) * 256 + 256);
      live.add(ptr);
      return ptr;
    },
    free(ptr) {
      assert.ok(live.delete(ptr), "free of a pointer not allocated");
    },
    memoryStats: unused,
    resetPeak: unused,
    upload(_dst, src) {
      assert.ok(src instanceof Int32Array);
      uploads.push(Int32Array.from(src));
    },
    download: unused,
    copy: unused,
    memset() {
      state.memsets++;
    },
    module(file) {
      return {
        fn(name) {
          const kernel = `${file}:${name}`;
          return {
            name,
            launch(grid, block, sharedBytes, args) {
              assert.deepEqual(block.slice(1), [1, 1]);
              assert.ok(sharedBytes <= Math.max(48 * 1024, sharedLimits.get(kernel) ?? 0), `${kernel} shared ${sharedBytes} without opting in`);
              launches.push({ kernel, grid, block, sharedBytes, args });
            },
            setMaxDynamicSharedBytes(bytes) {
              sharedLimits.set(kernel, bytes);
            },
          };
        },
      };
    },
    gemm: unused,
    synchronize: unused,
    timed: unused,
    dispose: unused,
  };
  return {
    dev,
    launches,
    uploads,
    live,
    sharedLimits,
    get memsets() {
      return state.memsets;
    },
  };
}

function tensor(dtype: DType, shape: number[], ptr = 1n << 40n): DeviceTensor {
  return { ptr, dtype, shape, size: shape.reduce((a, b) => a * b, 1) };
}

test("forward on bf16 D 128 launches the tensor-core kernel over (tile, head) with its tile table", () => {
  const rec = recordingDevice();
  const bounds = Int32Array.from([0, 100, 164]);
  const q = tensor("bf16", [164, 8, 128]);
  const kv = tensor("bf16", [164, 2, 128]);
  attentionForward(rec.dev, q, tensor("f32", [164, 8]), q, kv, kv, tensor("i32", [3]), bounds, 0.125);
  // 128-row tiles: document [0, 100) at 0 (sees 100 keys), document [100, 164) at 100 (64).
  assert.deepEqual(Array.from(rec.uploads[0]!), [0, 100, 0, 100, 164, 100]);
  assert.equal(rec.launches.length, 1);
  const launch = rec.launches[0]!;
  assert.equal(launch.kernel, "attention-mma.cu:attention_forward_bf16_d128");
  assert.deepEqual(launch.grid, [2 * 8, 1, 1]);
  assert.deepEqual(launch.block, [256, 1, 1]);
  assert.equal(launch.sharedBytes, 104448);
  assert.deepEqual(launch.args.slice(6), [{ i32: 8 }, { i32: 2 }, { f32: 0.125 * Math.LOG2E }, { i32: 0 }, { f32: 0 }]);
  assert.equal(rec.live.size, 0, "the tile table is freed");
});

test("a misaligned bf16 tensor falls back to the generic kernel with the dtype code", () => {
  const rec = recordingDevice();
  const q = tensor("bf16", [10, 2, 64], (1n << 40n) + 8n);
  const kv = tensor("bf16", [10, 1, 64]);
  attentionForward(rec.dev, tensor("bf16", [10, 2, 64]), tensor("f32", [10, 2]), q, kv, kv, tensor("i32", [2]), Int32Array.from([0, 10]), 1);
  const launch = rec.launches[0]!;
  assert.equal(launch.kernel, "attention.cu:attention_forward_generic");
  assert.deepEqual(launch.grid, [2, 1, 1]);
  assert.deepEqual(launch.args.slice(6), [{ i32: 1 }, { i32: 2 }, { i32: 1 }, { i32: 64 }, { f32: Math.LOG2E }, { i32: 0 }, { f32: 0 }]);
});

test("backward runs delta, the key-tile kernel over (tile, kv head) and the dq convert, and frees its scratch", () => {
  const rec = recordingDevice();
  const bounds = Int32Array.from([0, 40, 100]);
  const q = tensor("f32", [100, 4, 32]);
  const kv = tensor("f32", [100, 2, 32]);
  attentionBackward(rec.dev, q, kv, kv, q, q, kv, kv, q, tensor("f32", [100, 4]), tensor("i32", [3]), bounds, 0.5);
  assert.deepEqual(
    rec.launches.map((l) => l.kernel),
    ["attention.cu:attention_backward_delta", "attention.cu:attention_backward_generic", "attention.cu:attention_backward_dq"],
  );
  // 400 (token, head) rows, 4 warps per block; 32-key tiles: [40, 100) at 40, 72 and [0, 40) at 0, 32.
  assert.deepEqual(rec.launches[0]!.grid, [100, 1, 1]);
  assert.deepEqual(Array.from(rec.uploads[0]!), [40, 100, 40, 0, 40, 0, 40, 100, 72, 0, 40, 32]);
  assert.deepEqual(rec.launches[1]!.grid, [4 * 2, 1, 1]);
  assert.equal(rec.launches[1]!.sharedBytes, (160 * 32 + 1152) * 4);
  assert.deepEqual(rec.launches[2]!.args.slice(2), [{ i32: 0 }, { i64: 100 * 4 * 32 }, { f32: 0.5 }]);
  assert.equal(rec.memsets, 1, "the dq accumulator is zeroed");
  assert.equal(rec.live.size, 0, "delta, dq accumulator and tile table are freed");
});

test("a split GQA backward sums dk, dv in f32 scratch and converts them with dq", () => {
  const rec = recordingDevice();
  const bounds = Int32Array.from([0, 100]);
  const q = tensor("bf16", [100, 8, 128]);
  const kv = tensor("bf16", [100, 2, 128]);
  attentionBackward(rec.dev, q, kv, kv, q, q, kv, kv, q, tensor("f32", [100, 8]), tensor("i32", [2]), bounds, 0.25);
  assert.deepEqual(
    rec.launches.map((l) => l.kernel),
    [
      "attention.cu:attention_backward_delta",
      "attention-mma-backward.cu:attention_backward_bf16_d128",
      "attention.cu:attention_backward_dq",
      "attention.cu:attention_backward_dq",
      "attention.cu:attention_backward_dq",
    ],
  );
  // Two key tiles (0, 64) x 2 kv heads x 4 splits (a 100-token batch is far below the GPU's share).
  const main = rec.launches[1]!;
  assert.deepEqual(main.grid, [2 * 2 * 4, 1, 1]);
  assert.deepEqual(main.args.slice(12), [{ i32: 8 }, { i32: 2 }, { i32: 4 }, { f32: 0.25 * Math.LOG2E }, { f32: 0.25 }, { i32: 0 }, { f32: 0 }]);
  const dkAcc = main.args[1]!;
  const dvAcc = main.args[2]!;
  assert.ok("ptr" in dkAcc && "ptr" in dvAcc);
  assert.equal(dvAcc.ptr - dkAcc.ptr, BigInt(100 * 2 * 128 * 4), "dv's accumulator follows dk's");
  // dq scaled, dk scaled, dv as is, each from its accumulator.
  const converts = rec.launches.slice(2).map((l) => [l.args[1], l.args[3], l.args[4]]);
  assert.deepEqual(converts, [
    [main.args[0], { i64: 100 * 8 * 128 }, { f32: 0.25 }],
    [dkAcc, { i64: 100 * 2 * 128 }, { f32: 0.25 }],
    [dvAcc, { i64: 100 * 2 * 128 }, { f32: 1 }],
  ]);
  assert.equal(rec.memsets, 2, "dq and the dk, dv accumulators are zeroed");
  assert.equal(rec.live.size, 0);

  // MHA keeps the direct dk, dv writes: null accumulators, one split, one convert.
  const mha = recordingDevice();
  const kvFull = tensor("bf16", [100, 8, 128]);
  attentionBackward(mha.dev, q, kvFull, kvFull, q, q, kvFull, kvFull, q, tensor("f32", [100, 8]), tensor("i32", [2]), bounds, 0.25);
  assert.equal(mha.launches.length, 3);
  assert.deepEqual(mha.launches[1]!.args.slice(1, 3), [{ ptr: 0n }, { ptr: 0n }]);
  assert.deepEqual(mha.launches[1]!.args[14], { i32: 1 });
  assert.equal(mha.memsets, 1);
});

test("decode splits long caches through the combine kernel and frees the partials", () => {
  const rec = recordingDevice();
  const q = tensor("bf16", [1, 4, 64]);
  const cache = tensor("bf16", [5000, 1, 64]);
  attentionDecode(rec.dev, q, q, cache, cache, 4000, 0.125);
  // 4 rows on 132 SMs want 66 splits; 4001 rows allow 15 of >= 256: chunk ceil(4001 / 15) = 267.
  assert.deepEqual(
    rec.launches.map((l) => [l.kernel, l.grid]),
    [
      ["attention-decode.cu:attention_decode", [4, 15, 1]],
      ["attention-decode.cu:attention_decode_combine", [4, 1, 1]],
    ],
  );
  assert.deepEqual(rec.launches[0]!.args.slice(9), [{ i32: 4000 }, { i32: 267 }, { f32: 0.125 * Math.LOG2E }, { i32: 0 }, { i32: 0 }, { f32: 0 }]);
  assert.equal(rec.live.size, 0);

  const short = recordingDevice();
  attentionDecode(short.dev, q, q, cache, cache, 10, 0.125);
  assert.equal(short.launches.length, 1);
  assert.deepEqual(short.launches[0]!.args[1], { ptr: 0n });
});

test("bad arguments are TunaErrors naming the op", () => {
  const rec = recordingDevice();
  const q = tensor("bf16", [10, 6, 64]);
  const kv = tensor("bf16", [10, 4, 64]);
  const lse = tensor("f32", [10, 6]);
  const cu = tensor("i32", [2]);
  const internal = (op: string, pattern: RegExp) => (e: unknown) => e instanceof TunaError && e.code === "INTERNAL" && e.message.startsWith(op) && pattern.test(e.message);
  assert.throws(() => {
    attentionForward(rec.dev, q, lse, q, kv, kv, cu, Int32Array.from([0, 10]), 1);
  }, internal("attentionForward", /not a multiple of the 4 kv heads/));
  const kv2 = tensor("bf16", [10, 2, 64]);
  assert.throws(() => {
    attentionForward(rec.dev, q, lse, q, kv2, kv2, cu, Int32Array.from([0, 9]), 1);
  }, internal("attentionForward", /end at N = 10/));
  assert.throws(() => {
    attentionForward(rec.dev, q, tensor("bf16", [10, 6]), q, kv2, kv2, cu, Int32Array.from([0, 10]), 1);
  }, internal("attentionForward", /lse bf16/));
  assert.throws(() => {
    attentionBackward(rec.dev, tensor("f32", [10, 6, 64]), kv2, kv2, q, q, kv2, kv2, q, lse, cu, Int32Array.from([0, 10]), 1);
  }, internal("attentionBackward", /dq f32/));
  assert.throws(() => {
    attentionDecode(rec.dev, q, q, kv2, kv2, 5, 1);
  }, internal("attentionDecode", /exceeds the 10 rows/));
  const wide = tensor("f32", [4, 1, 320]);
  assert.throws(() => {
    attentionDecode(rec.dev, wide, wide, wide, wide, 0, 1);
  }, (e: unknown) => e instanceof TunaError && e.code === "UNSUPPORTED");
  assert.equal(rec.launches.length, 0);
});

test("a sliding window reaches every kernel as its window argument; decode splits only the rows inside it", () => {
  const rec = recordingDevice();
  const bounds = Int32Array.from([0, 100, 164]);
  const q = tensor("bf16", [164, 8, 128]);
  const kv = tensor("bf16", [164, 2, 128]);
  attentionForward(rec.dev, q, tensor("f32", [164, 8]), q, kv, kv, tensor("i32", [3]), bounds, 0.125, { window: 33, softcap: 50 });
  assert.deepEqual(rec.launches[0]!.args.slice(-2), [{ i32: 33 }, { f32: 50 }]);
  const cache = tensor("bf16", [5000, 1, 64]);
  const one = tensor("bf16", [1, 4, 64]);
  const dec = recordingDevice();
  attentionDecode(dec.dev, one, one, cache, cache, 4000, 0.125, { window: 512 });
  // Rows 3489..4000 are the 512 the query sees: 2 splits of 256 from row 3489.
  assert.deepEqual(dec.launches[0]!.grid, [4, 2, 1]);
  assert.deepEqual(dec.launches[0]!.args.slice(9), [{ i32: 4000 }, { i32: 256 }, { f32: 0.125 * Math.LOG2E }, { i32: 512 }, { i32: 3489 }, { f32: 0 }]);
  assert.throws(() => { attentionForward(rec.dev, q, tensor("f32", [164, 8]), q, kv, kv, tensor("i32", [3]), bounds, 0.125, { window: 0 }); }, /attentionForward: window is 0, expected a positive integer/);
});
