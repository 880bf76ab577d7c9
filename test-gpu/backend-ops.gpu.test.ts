// Every op of the backend contract on the CUDA backend against the CPU reference, on fresh random inputs
// at several shapes and dtypes (run on the GPU machine: `npm run test:gpu`). Errors are printed for the record.
import { after, test } from "node:test";
import { code4bit } from "../src/quant/codes.ts";
import type { DType } from "../src/backend/types.ts";
import { floats, gpu, ints, measured, out, parity, randn, record, rng, tolFor, type TensorSpec } from "./parity-harness.ts";

const FLOATS: DType[] = ["f32", "bf16"];

after(() => {
  console.log("\nparity (max |gpu - cpu| / max |cpu|):");
  for (const [label, name, e] of measured) console.log(`  ${label.padEnd(60)} ${name.padEnd(8)} ${e.toExponential(2)}`);
  const stats = gpu().memoryStats();
  console.log(`peak in use ${(stats.peakInUseBytes / 2 ** 20).toFixed(1)} MiB, reserved ${(stats.reservedBytes / 2 ** 20).toFixed(1)} MiB`);
});

void test("embedding forward and backward (ids < 0 skipped in the backward)", async () => {
  for (const dtype of FLOATS) {
    const r = rng(1);
    const V = 50;
    const C = 72;
    const N = 37;
    const ids = Array.from({ length: N }, () => Math.floor(r.uniform() * V));
    const bwdIds = ids.map((id, i) => (i % 7 === 3 ? -100 : id));
    record(
      `embedding ${dtype}`,
      await parity(
        `embedding ${dtype}`,
        { out: out(dtype, [N, C]), ids: ints(ids), bwdIds: ints(bwdIds), table: floats(r, dtype, [V, C]), dtable: floats(r, "f32", [V, C]), dout: floats(r, dtype, [N, C]) },
        ["out", "dtable"],
        (be, t) => {
          be.embeddingForward(t.out!, t.ids!, t.table!);
          be.embeddingBackward(t.dtable!, t.dout!, t.bwdIds!);
        },
        tolFor("f32"),
      ),
    );
  }
});

void test("matmul: every transpose combination, alpha, accumulate, f32/bf16 and mixed operands", async () => {
  const shapes: [number, number, number][] = [
    [1, 1, 1],
    [17, 33, 9],
    [64, 128, 256],
    [300, 70, 513],
  ];
  const combos: [DType, DType, DType][] = [
    ["f32", "f32", "f32"],
    ["bf16", "bf16", "bf16"],
    ["bf16", "bf16", "f32"],
    ["bf16", "f32", "bf16"],
    ["f32", "bf16", "f32"],
  ];
  for (const [M, N, K] of shapes) {
    for (const [da, db, dout] of combos) {
      for (const transA of [false, true]) {
        for (const transB of [false, true]) {
          const r = rng(M * 7 + N + K);
          const label = `matmul ${M}x${N}x${K} ${da}.${db}->${dout} tA=${transA} tB=${transB}`;
          const accumulate = (M + N + K + (transA ? 1 : 0)) % 2 === 0;
          // bf16 inputs: products exact in f32, sums differ only in order; bf16 outputs round once.
          const tol = dout === "f32" && da === "f32" && db === "f32" ? 1e-5 : dout === "f32" && (da !== db) ? 1e-2 : tolFor(dout);
          record(
            label,
            await parity(
              label,
              {
                a: floats(r, da, transA ? [K, M] : [M, K]),
                b: floats(r, db, transB ? [N, K] : [K, N]),
                out: accumulate ? floats(r, dout, [M, N]) : out(dout, [M, N]),
              },
              ["out"],
              (be, t) => {
                be.matmul(t.out!, t.a!, t.b!, { transA, transB, alpha: 0.75, accumulate });
              },
              tol,
            ),
          );
        }
      }
    }
  }
});

void test("bias forward and backward", async () => {
  for (const dtype of FLOATS) {
    const r = rng(2);
    record(
      `bias ${dtype}`,
      await parity(
        `bias ${dtype}`,
        { out: floats(r, dtype, [45, 130]), bias: floats(r, dtype, [130]), dbias: floats(r, "f32", [130]), dout: floats(r, dtype, [45, 130]) },
        ["out", "dbias"],
        (be, t) => {
          be.addBias(t.out!, t.bias!);
          be.biasBackward(t.dbias!, t.dout!);
        },
        tolFor(dtype),
      ),
    );
  }
});

void test("DoRA row norms, forward (also into base) and backward (with and without dbase, written into lora and base)", async () => {
  for (const dtype of FLOATS) {
    for (const [N, F, C] of [
      [7, 40, 33],
      [300, 1100, 512],
    ] as const) {
      const r = rng(N + F);
      const label = `dora ${N}x${F} (in ${C}) ${dtype}`;
      record(
        label,
        await parity(
          label,
          {
            w: floats(r, dtype, [F, C]),
            norms: out(dtype, [F]),
            y: floats(r, dtype, [N, F]),
            base: floats(r, dtype, [N, F]),
            lora: floats(r, dtype, [N, F]),
            magnitude: floats(r, "f32", [F]),
            dmagnitude: floats(r, "f32", [F]),
            dmagnitude2: floats(r, "f32", [F]),
            dy: floats(r, dtype, [N, F]),
            dlora: out(dtype, [N, F]),
          },
          ["norms", "y", "base", "lora", "dmagnitude", "dmagnitude2", "dlora"],
          (be, t) => {
            be.rowNorms(t.norms!, t.w!);
            be.doraForward(t.y!, t.base!, t.lora!, t.magnitude!, t.norms!);
            be.doraBackward(t.dmagnitude!, t.dlora!, null, t.dy!, t.base!, t.lora!, t.magnitude!, t.norms!);
            be.doraBackward(t.dmagnitude2!, t.lora!, t.base!, t.dy!, t.base!, t.lora!, t.magnitude!, t.norms!);
            be.doraForward(t.base!, t.base!, t.dlora!, t.magnitude!, t.norms!);
          },
          tolFor(dtype),
        ),
      );
    }
  }
});

void test("RMSNorm forward and backward (with and without dweight, accumulate on and off)", async () => {
  for (const dtype of FLOATS) {
    for (const [N, C] of [
      [5, 8],
      [33, 4096],
      [130, 96],
    ] as [number, number][]) {
      for (const [accumulate, plusOne] of [[false, false], [true, false], [true, true]] as const) {
        const r = rng(N + C);
        const label = `rmsnorm ${dtype} ${N}x${C} acc=${accumulate}${plusOne ? " plusOne (Gemma)" : ""}`;
        record(
          label,
          await parity(
            label,
            {
              out: out(dtype, [N, C]),
              rstd: out("f32", [N]),
              x: floats(r, dtype, [N, C], 3),
              w: floats(r, dtype, [C]),
              dout: floats(r, dtype, [N, C]),
              dx: accumulate ? floats(r, dtype, [N, C]) : out(dtype, [N, C]),
              dw: floats(r, "f32", [C]),
            },
            ["out", "rstd", "dx", "dw"],
            (be, t) => {
              be.rmsnormForward(t.out!, t.rstd!, t.x!, t.w!, 1e-5, { plusOne });
              be.rmsnormBackward(t.dx!, accumulate ? t.dw! : null, t.dout!, t.x!, t.w!, t.rstd!, accumulate, { plusOne });
            },
            tolFor(dtype),
          ),
        );
      }
    }
  }
});

void test("RoPE forward and backward with positions restarting per packed document", async () => {
  for (const dtype of FLOATS) {
    for (const [heads, D] of [
      [4, 16],
      [32, 128],
      [8, 64],
    ] as [number, number][]) {
      const r = rng(heads * D);
      const lengths = [7, 300, 1, 50];
      const positions = lengths.flatMap((n) => Array.from({ length: n }, (_, i) => i));
      const N = positions.length;
      const invFreq = Float32Array.from({ length: D / 2 }, (_, i) => 1 / 10000 ** ((2 * i) / D));
      const label = `rope ${dtype} H=${heads} D=${D}`;
      record(
        label,
        await parity(
          label,
          { x: floats(r, dtype, [N, heads, D]), dx: floats(r, dtype, [N, heads, D]), pos: ints(positions), inv: { dtype: "f32", shape: [D / 2], data: invFreq } },
          ["x", "dx"],
          (be, t) => {
            be.ropeForward(t.x!, t.pos!, t.inv!);
            be.ropeBackward(t.dx!, t.pos!, t.inv!);
          },
          // Angles up to ~300 rad: f32 sin/cos of the f32 product vs the reference's; a few f32 ulps of the angle.
          dtype === "f32" ? 1e-4 : tolFor(dtype),
        ),
      );
    }
  }
});

interface AttentionCase {
  lengths: number[];
  H: number;
  KV: number;
  D: number;
  /** Sliding window (HF sliding_window); absent = full causal. */
  window?: number;
  /** Score soft-capping (Gemma 2's attn_logit_softcapping). */
  softcap?: number;
}

const ATTENTION_CASES: AttentionCase[] = [
  { lengths: [5], H: 2, KV: 1, D: 8 },
  { lengths: [17, 1, 40, 3], H: 4, KV: 2, D: 16 },
  { lengths: [130, 70], H: 8, KV: 1, D: 32 },
  { lengths: [64, 129, 200], H: 4, KV: 4, D: 64 },
  { lengths: [300, 45, 211], H: 8, KV: 2, D: 128 },
  { lengths: [2048], H: 8, KV: 8, D: 128 },
  { lengths: [1000, 1000, 2096], H: 4, KV: 1, D: 128 },
  // Sliding windows: shorter than a tile, not tile-aligned, longer than some documents; generic (D 32) and tensor-core paths.
  { lengths: [17, 1, 40, 3], H: 4, KV: 2, D: 16, window: 5 },
  { lengths: [130, 70], H: 8, KV: 1, D: 32, window: 33 },
  { lengths: [64, 129, 200], H: 4, KV: 4, D: 64, window: 70 },
  { lengths: [300, 45, 211], H: 8, KV: 2, D: 128, window: 100 },
  { lengths: [2048], H: 8, KV: 8, D: 128, window: 1 },
  { lengths: [1000, 1000, 2096], H: 4, KV: 1, D: 128, window: 257 },
  // Soft-capped scores (Gemma 2: cap 50, windows 4096), small caps so the tanh bends the scores.
  { lengths: [17, 1, 40, 3], H: 4, KV: 2, D: 16, softcap: 2 },
  { lengths: [300, 45, 211], H: 8, KV: 2, D: 128, softcap: 3, window: 100 },
  { lengths: [64, 129, 200], H: 4, KV: 4, D: 64, softcap: 5 },
];

void test("flash attention forward and backward: causal, GQA, packed documents of uneven lengths", async () => {
  for (const dtype of FLOATS) {
    for (const c of ATTENTION_CASES) {
      if (dtype === "f32" && c.lengths.reduce((a, b) => a + b) > 1000) continue; // the f64 CPU reference is slow
      const r = rng(c.D + c.H);
      const N = c.lengths.reduce((a, b) => a + b, 0);
      const cu = [0];
      for (const n of c.lengths) cu.push(cu[cu.length - 1]! + n);
      const label = `attention ${dtype} N=${N} docs=${c.lengths.length} H=${c.H} KV=${c.KV} D=${c.D}${c.window === undefined ? "" : ` window=${c.window}`}${c.softcap === undefined ? "" : ` softcap=${c.softcap}`}`;
      const options = { ...(c.window === undefined ? {} : { window: c.window }), ...(c.softcap === undefined ? {} : { softcap: c.softcap }) };
      const specs: Record<string, TensorSpec> = {
        q: floats(r, dtype, [N, c.H, c.D]),
        k: floats(r, dtype, [N, c.KV, c.D]),
        v: floats(r, dtype, [N, c.KV, c.D]),
        dout: floats(r, dtype, [N, c.H, c.D]),
        cu: ints(cu),
        out: out(dtype, [N, c.H, c.D]),
        lse: out("f32", [N, c.H]),
        dq: out(dtype, [N, c.H, c.D]),
        dk: out(dtype, [N, c.KV, c.D]),
        dv: out(dtype, [N, c.KV, c.D]),
      };
      record(
        label,
        await parity(
          label,
          specs,
          ["out", "lse", "dq", "dk", "dv"],
          (be, t) => {
            const scale = 1 / Math.sqrt(c.D);
            be.attentionForward(t.out!, t.lse!, t.q!, t.k!, t.v!, t.cu!, scale, options);
            be.attentionBackward(t.dq!, t.dk!, t.dv!, t.dout!, t.q!, t.k!, t.v!, t.out!, t.lse!, t.cu!, scale, options);
          },
          // bf16 gradients sum many rounded terms in another order than the f64 reference.
          dtype === "f32" ? 1e-4 : 2e-2,
        ),
      );
    }
  }
});

void test("attention against a KV cache (decode)", async () => {
  for (const dtype of FLOATS) {
    for (const [Q, past, H, KV, D, window] of [
      [1, 0, 4, 2, 16, 0],
      [1, 37, 8, 8, 128, 0],
      [5, 100, 8, 2, 64, 0],
      [1, 3000, 4, 1, 128, 1024],
      [7, 90, 8, 2, 64, 16],
    ] as [number, number, number, number, number, number][]) {
      const r = rng(Q + past);
      const Tmax = past + Q + 3;
      const label = `decode ${dtype} Q=${Q} past=${past} H=${H} KV=${KV} D=${D}${window > 0 ? ` window=${window}` : ""}`;
      record(
        label,
        await parity(
          label,
          { out: out(dtype, [Q, H, D]), q: floats(r, dtype, [Q, H, D]), kc: floats(r, dtype, [Tmax, KV, D]), vc: floats(r, dtype, [Tmax, KV, D]) },
          ["out"],
          (be, t) => {
            be.attentionDecode(t.out!, t.q!, t.kc!, t.vc!, past, 1 / Math.sqrt(D), window > 0 ? { window } : {});
          },
          dtype === "f32" ? 1e-5 : tolFor(dtype),
        ),
      );
    }
  }
});

void test("SwiGLU, add (in place), scale and dropout", async () => {
  for (const dtype of FLOATS) {
    const r = rng(4);
    const shape = [77, 300];
    const n = 77 * 300;
    const mask = Uint8Array.from({ length: n }, () => (r.uniform() >= 0.3 ? 1 : 0));
    const label = `elementwise ${dtype}`;
    record(
      label,
      await parity(
        label,
        {
          gate: floats(r, dtype, shape, 3),
          up: floats(r, dtype, shape),
          h: out(dtype, shape),
          dout: floats(r, dtype, shape),
          dgate: out(dtype, shape),
          dup: out(dtype, shape),
          a: floats(r, dtype, shape),
          b: floats(r, dtype, shape),
          mask: { dtype: "u8", shape, data: mask },
          drop: out(dtype, shape),
          gh: out(dtype, shape),
          gdgate: out(dtype, shape),
          gdup: out(dtype, shape),
          capped: floats(r, dtype, shape, 40),
        },
        ["h", "dgate", "dup", "a", "drop", "gh", "gdgate", "gdup", "capped"],
        (be, t) => {
          be.swigluForward(t.h!, t.gate!, t.up!);
          be.swigluBackward(t.dgate!, t.dup!, t.dout!, t.gate!, t.up!);
          be.swigluForward(t.gh!, t.gate!, t.up!, "gelu_tanh");
          be.swigluBackward(t.gdgate!, t.gdup!, t.dout!, t.gate!, t.up!, "gelu_tanh");
          be.softcap(t.capped!, 30);
          be.add(t.a!, t.a!, t.b!);
          be.scale(t.a!, -0.3);
          be.dropoutApply(t.drop!, t.b!, t.mask!, 0.3);
        },
        tolFor(dtype),
      ),
    );
  }
});

void test("dropout masks from the counter hash are identical on both backends", async () => {
  for (const p of [0, 0.05, 0.5]) {
    record(
      `dropoutMask p=${p}`,
      await parity(`dropoutMask p=${p}`, { mask: { dtype: "u8", shape: [1000, 333] } }, ["mask"], (be, t) => {
        be.dropoutMask(t.mask!, p, [0x12345678, 0xfedcba98]);
      }, 0),
    );
  }
});

void test("cross-entropy forward and in-place backward, ignored targets, large vocabularies", async () => {
  for (const [N, V] of [
    [9, 96],
    [64, 32000],
    [13, 151936],
  ] as [number, number][]) {
    const r = rng(V);
    const targets = Array.from({ length: N }, (_, i) => (i % 5 === 2 ? -100 : Math.floor(r.uniform() * V)));
    const label = `cross-entropy N=${N} V=${V}`;
    record(
      label,
      await parity(
        label,
        { logits: floats(r, "f32", [N, V], 4), capped: floats(r, "f32", [N, V], 40), targets: ints(targets), losses: out("f32", [N]), cappedLosses: out("f32", [N]) },
        ["losses", "logits", "cappedLosses", "capped"],
        (be, t) => {
          be.crossEntropyForward(t.losses!, t.logits!, t.targets!);
          be.crossEntropyBackward(t.logits!, t.logits!, t.targets!, 0.125);
          // Gemma 2's final logit soft-capping: capped logits, then the backward through the cap.
          be.softcap(t.capped!, 30);
          be.crossEntropyForward(t.cappedLosses!, t.capped!, t.targets!);
          be.crossEntropyBackward(t.capped!, t.capped!, t.targets!, 0.125, 30);
        },
        1e-5,
      ),
    );
  }
});

void test("4-bit dequantization (NF4 and FP4) is bit-exact, to f32 and bf16", async () => {
  for (const quantType of ["nf4", "fp4"] as const) {
    for (const dtype of FLOATS) {
      const r = rng(9);
      // A partial last block (the generic kernel), and whole 32-element groups (the bf16 fast path).
      for (const n of [64 * 1000 + 6, 64 * 4096]) {
      const blocksize = 64;
      const packed = Uint8Array.from({ length: Math.ceil(n / 2) }, () => Math.floor(r.uniform() * 256));
      const absmax = Float32Array.from({ length: Math.ceil(n / blocksize) }, () => 0.01 + r.uniform());
      const label = `dequantize4bit ${quantType} -> ${dtype} n=${n}`;
      record(
        label,
        await parity(
          label,
          {
            out: out(dtype, [n]),
            packed: { dtype: "u8", shape: [packed.length], data: packed },
            absmax: { dtype: "f32", shape: [absmax.length], data: absmax },
            code: { dtype: "f32", shape: [16], data: code4bit(quantType) },
          },
          ["out"],
          (be, t) => {
            be.dequantize4bit(t.out!, { packed: t.packed!, absmax: t.absmax!, code: t.code!, blocksize });
          },
          0,
        ),
      );
      }
    }
  }
});

void test("4-bit quantization (NF4 and FP4, bitsandbytes' quantize_4bit) is bit-exact from f32 and bf16, NaN and partial blocks included", async () => {
  for (const quantType of ["nf4", "fp4"] as const) {
    for (const dtype of FLOATS) {
      for (const [n, blocksize] of [
        [64 * 3000 + 37, 64],
        [128 * 500, 128],
      ] as [number, number][]) {
        const r = rng(n + blocksize);
        const x = randn(r, n, 0.05);
        x[5] = Number.NaN; // skipped by the absmax, coded 0
        for (let i = 64; i < 128; i++) x[i] = 0; // an all-zero block: absmax 0, reciprocal +inf
        const label = `quantize4bit ${quantType} from ${dtype} n=${n} blocksize=${blocksize}`;
        record(
          label,
          await parity(
            label,
            { x: { dtype, shape: [n], data: x }, packed: { dtype: "u8", shape: [Math.ceil(n / 2)] }, absmax: out("f32", [Math.ceil(n / blocksize)]) },
            ["packed", "absmax"],
            (be, t) => {
              be.quantize4bit(t.packed!, t.absmax!, t.x!, quantType, blocksize);
            },
            0,
          ),
        );
      }
    }
  }
});

void test("AdamW update and sum of squares", async () => {
  const r = rng(10);
  const n = 100_003;
  const v = Float32Array.from(randn(r, n, 0.01), (x) => x * x);
  record(
    "adamw",
    await parity(
      "adamw",
      { p: floats(r, "f32", [n]), g: floats(r, "f32", [n], 0.1), m: floats(r, "f32", [n], 0.01), v: { dtype: "f32", shape: [n], data: v } },
      ["p", "m", "v"],
      (be, t) => {
        be.adamwUpdate(t.p!, t.g!, t.m!, t.v!, { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step: 7 });
      },
      1e-6,
    ),
  );
  for (const dtype of FLOATS) {
    record(
      `sumSquares ${dtype}`,
      await parity(`sumSquares ${dtype}`, { x: floats(r, dtype, [n]) }, [], (be, t) => be.sumSquares(t.x!), 1e-6),
    );
  }
});

void test("fill, copy between dtypes, rows and views share storage", async () => {
  const r = rng(11);
  record(
    "memory",
    await parity(
      "memory",
      { a: floats(r, "f32", [40, 8]), b: out("bf16", [40, 8]), c: out("f32", [40, 8]), d: out("f32", [3, 8]) },
      ["b", "c", "d"],
      (be, t) => {
        be.copy(t.b!, t.a!);
        be.fill(t.c!, 0.5);
        be.copy(be.rows(t.c!, 10, 20), be.rows(t.a!, 0, 20));
        be.copy(be.view(t.d!, [24]), be.view(be.rows(t.b!, 5, 3), [24]));
      },
      0,
    ),
  );
});
