// Gemma's ops on the CPU reference: GeGLU with tanh GELU (forward against PyTorch's formula, backward against
// central differences), logit soft-capping (forward, and the cross-entropy backward through it), and attention
// score soft-capping (forward against the formula, backward against central differences, decode against forward).
import { test } from "node:test";
import assert from "node:assert/strict";
import type { Tensor } from "../../../src/backend/types.ts";
import { assertClose, assertInternal, assertUlps, backend, checkGradient, intsOf, project, randn, rng, tensorOf } from "./helpers.ts";

const be = backend();
const r = rng(91);

/** PyTorch's gelu(x, approximate="tanh"), as its documentation writes it. */
function geluTanh(x: number): number {
  return 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
}

void test("GeGLU: out = gelu_tanh(gate) * up; its backward matches central differences", async () => {
  const n = 40;
  const gv = randn(r, n, 2);
  const uv = randn(r, n);
  const out = be.alloc("f32", [4, 10]);
  be.swigluForward(out, tensorOf(be, [4, 10], gv), tensorOf(be, [4, 10], uv), "gelu_tanh");
  assertUlps(await be.downloadF32(out), Array.from(gv, (g, i) => geluTanh(g) * uv[i]!), 2, "geglu");
  const R = randn(r, n);
  const loss = async (g: Float32Array, u: Float32Array): Promise<number> => {
    const o = be.alloc("f32", [4, 10]);
    be.swigluForward(o, tensorOf(be, [4, 10], g), tensorOf(be, [4, 10], u), "gelu_tanh");
    return project(await be.downloadF32(o), R);
  };
  const dgate = be.alloc("f32", [4, 10]);
  const dup = be.alloc("f32", [4, 10]);
  be.swigluBackward(dgate, dup, tensorOf(be, [4, 10], R), tensorOf(be, [4, 10], gv), tensorOf(be, [4, 10], uv), "gelu_tanh");
  await checkGradient("gate", gv, await be.downloadF32(dgate), (g) => loss(g, uv), 1e-4, 1e-3);
  await checkGradient("up", uv, await be.downloadF32(dup), (u) => loss(gv, u), 1e-4, 1e-3);
  // The default stays SwiGLU.
  const silu = be.alloc("f32", [4, 10]);
  be.swigluForward(silu, tensorOf(be, [4, 10], gv), tensorOf(be, [4, 10], uv));
  assertUlps(await be.downloadF32(silu), Array.from(gv, (g, i) => (g / (1 + Math.exp(-g))) * uv[i]!), 1, "swiglu");
});

void test("softcap: x = cap * tanh(x / cap); the cross-entropy backward through it matches central differences", async () => {
  const rows = 3;
  const vocab = 7;
  const cap = 2.5;
  const xv = randn(r, rows * vocab, 4);
  const x = tensorOf(be, [rows, vocab], xv);
  be.softcap(x, cap);
  assertUlps(await be.downloadF32(x), Array.from(xv, (v) => cap * Math.tanh(v / cap)), 1, "softcap");
  const targets = [2, -100, 6];
  const loss = async (raw: Float32Array): Promise<number> => {
    const t = tensorOf(be, [rows, vocab], raw);
    be.softcap(t, cap);
    const losses = be.alloc("f32", [rows]);
    be.crossEntropyForward(losses, t, intsOf(be, targets));
    return (await be.downloadF32(losses)).reduce((a, b) => a + b, 0);
  };
  const capped = tensorOf(be, [rows, vocab], xv);
  be.softcap(capped, cap);
  be.crossEntropyBackward(capped, capped, intsOf(be, targets), 1, cap);
  await checkGradient("raw logits", xv, await be.downloadF32(capped), loss, 1e-3, 1e-3);
  assertInternal(() => { be.softcap(x, 0); }, "softcap: softcap is 0, expected a positive number");
  assertInternal(() => { be.crossEntropyBackward(x, x, intsOf(be, targets), 1, -1); }, "crossEntropyBackward: softcap is -1");
});

/** Causal attention of one document with capped scores, in float64 (out only). */
function cappedAttention(q: Float32Array, k: Float32Array, v: Float32Array, T: number, H: number, KV: number, D: number, scale: number, cap: number): Float64Array {
  const out = new Float64Array(T * H * D);
  for (let h = 0; h < H; h++) {
    const g = Math.floor(h / (H / KV));
    for (let i = 0; i < T; i++) {
      const s: number[] = [];
      for (let j = 0; j <= i; j++) {
        let dot = 0;
        for (let d = 0; d < D; d++) dot += q[(i * H + h) * D + d]! * k[(j * KV + g) * D + d]!;
        s.push(cap * Math.tanh((Math.fround(scale) * dot) / cap));
      }
      const max = Math.max(...s);
      const e = s.map((x) => Math.exp(x - max));
      const sum = e.reduce((a, b) => a + b, 0);
      for (let d = 0; d < D; d++) out[(i * H + h) * D + d] = e.reduce((acc, p, j) => acc + (p / sum) * v[(j * KV + g) * D + d]!, 0);
    }
  }
  return out;
}

void test("attention soft-capping: forward against the formula, backward against central differences, decode against forward", async () => {
  const [T, H, KV, D] = [6, 4, 2, 4];
  const cap = 1.5;
  const scale = 0.9;
  const qv = randn(r, T * H * D, 1.5);
  const kv = randn(r, T * KV * D, 1.5);
  const vv = randn(r, T * KV * D);
  const bounds = intsOf(be, [0, T]);
  const run = (qa: Float32Array, ka: Float32Array, va: Float32Array): { out: Tensor; lse: Tensor; q: Tensor; k: Tensor; v: Tensor } => {
    const t = { out: be.alloc("f32", [T, H, D]), lse: be.alloc("f32", [T, H]), q: tensorOf(be, [T, H, D], qa), k: tensorOf(be, [T, KV, D], ka), v: tensorOf(be, [T, KV, D], va) };
    be.attentionForward(t.out, t.lse, t.q, t.k, t.v, bounds, scale, { softcap: cap });
    return t;
  };
  const fwd = run(qv, kv, vv);
  assertClose(await be.downloadF32(fwd.out), cappedAttention(qv, kv, vv, T, H, KV, D, scale, cap), 1e-6, "capped attention");
  const R = randn(r, T * H * D);
  const loss = async (qa: Float32Array, ka: Float32Array, va: Float32Array): Promise<number> => project(await be.downloadF32(run(qa, ka, va).out), R);
  const [dq, dk, dv] = [be.alloc("f32", [T, H, D]), be.alloc("f32", [T, KV, D]), be.alloc("f32", [T, KV, D])];
  be.attentionBackward(dq, dk, dv, tensorOf(be, [T, H, D], R), fwd.q, fwd.k, fwd.v, fwd.out, fwd.lse, bounds, scale, { softcap: cap });
  await checkGradient("q", qv, await be.downloadF32(dq), (x) => loss(x, kv, vv));
  await checkGradient("k", kv, await be.downloadF32(dk), (x) => loss(qv, x, vv));
  await checkGradient("v", vv, await be.downloadF32(dv), (x) => loss(qv, kv, x));
  // Decoding the last two tokens against the cache gives the forward's last two rows.
  const dec = be.alloc("f32", [2, H, D]);
  be.attentionDecode(dec, be.rows(fwd.q, T - 2, 2), fwd.k, fwd.v, T - 2, scale, { softcap: cap });
  const full = await be.downloadF32(fwd.out);
  assertClose(await be.downloadF32(dec), full.subarray((T - 2) * H * D), 1e-7, "decode with soft-capping");
  assert.ok(Math.abs(cap) > 0);
});
