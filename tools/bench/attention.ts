// Flash attention micro-benchmark on the GPU: tuna's kernels (forward, backward) against PyTorch's
// scaled_dot_product_attention (its flash backend) on the same shapes, in the same run.
// node dist/bench-attention.mjs [--peer python3|none]  (built by tools/build-gpu.mjs)
import { spawnSync } from "node:child_process";
import { parseArgs } from "node:util";
import { createCudaBackend } from "../../src/backend/cuda/index.ts";
import { f32ToBf16Array } from "../../src/util/half.ts";
import { createRng } from "../../src/util/random.ts";

const { values } = parseArgs({ options: { peer: { type: "string", default: "python3" }, iters: { type: "string", default: "20" } } });
const iters = Number(values.iters);

interface Shape {
  name: string;
  T: number; // tokens per sequence
  B: number; // sequences, packed
  H: number;
  KV: number;
  D: number;
}
const SHAPES: Shape[] = [
  { name: "llama2-7b layer", T: 2048, B: 1, H: 32, KV: 32, D: 128 },
  { name: "llama3-8b layer", T: 2048, B: 1, H: 32, KV: 8, D: 128 },
  { name: "llama2-7b, 4 x 2048", T: 2048, B: 4, H: 32, KV: 32, D: 128 },
  { name: "packed 8 x 512", T: 512, B: 8, H: 32, KV: 8, D: 128 },
];

/** Causal attention FLOPs: QK^T and PV over the lower triangle, forward; backward is 2.5x. */
function flops(s: Shape): number {
  return 4 * s.B * ((s.T * (s.T + 1)) / 2) * s.H * s.D;
}

const be = createCudaBackend();
const rng = createRng(0);
const rows: string[] = [];
for (const s of SHAPES) {
  const N = s.T * s.B;
  const rand = (n: number): Uint16Array => f32ToBf16Array(Float32Array.from({ length: n }, () => rng.normal()));
  const t = (shape: number[], data?: Uint16Array) => {
    const x = be.alloc("bf16", shape);
    if (data !== undefined) be.upload(x, data);
    return x;
  };
  const q = t([N, s.H, s.D], rand(N * s.H * s.D));
  const k = t([N, s.KV, s.D], rand(N * s.KV * s.D));
  const v = t([N, s.KV, s.D], rand(N * s.KV * s.D));
  const dout = t([N, s.H, s.D], rand(N * s.H * s.D));
  const out = t([N, s.H, s.D]);
  const dq = t([N, s.H, s.D]);
  const dk = t([N, s.KV, s.D]);
  const dv = t([N, s.KV, s.D]);
  const lse = be.alloc("f32", [N, s.H]);
  const cu = be.alloc("i32", [s.B + 1]);
  be.upload(cu, Int32Array.from({ length: s.B + 1 }, (_, i) => i * s.T));
  const scale = 1 / Math.sqrt(s.D);
  const fwd = (): void => {
    be.attentionForward(out, lse, q, k, v, cu, scale);
  };
  const bwd = (): void => {
    be.attentionBackward(dq, dk, dv, dout, q, k, v, out, lse, cu, scale);
  };
  fwd();
  bwd();
  be.synchronize();
  const time = (body: () => void): number => {
    const ms: number[] = [];
    for (let i = 0; i < iters; i++) ms.push(be.device.timed(body));
    ms.sort((a, b) => a - b);
    return ms[Math.floor(ms.length / 2)]!;
  };
  const f = time(fwd);
  const b = time(bwd);
  const line = `${s.name.padEnd(22)} tuna fwd ${f.toFixed(3)} ms (${((flops(s) / f) * 1e-9).toFixed(0)} TFLOP/s), bwd ${b.toFixed(3)} ms (${((2.5 * flops(s)) / b * 1e-9).toFixed(0)} TFLOP/s)`;
  console.log(line);
  rows.push(JSON.stringify({ ...s, tunaFwdMs: f, tunaBwdMs: b }));
  for (const x of [q, k, v, dout, out, dq, dk, dv, lse, cu]) be.free(x);
}

// The peer: torch SDPA (flash) on (B, H, T, D) tensors, causal, GQA through enable_gqa.
const PEER = `
import json, sys, torch
import torch.nn.functional as F
iters = ${iters}
for line in sys.stdin:
    s = json.loads(line)
    B, T, H, KV, D = s["B"], s["T"], s["H"], s["KV"], s["D"]
    q = torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(B, KV, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(B, KV, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    g = torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16)
    def fwd():
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=(H != KV))
    o = fwd(); o.backward(g)
    def timed(fn):
        ts = []
        for _ in range(iters):
            a = torch.cuda.Event(enable_timing=True); b = torch.cuda.Event(enable_timing=True)
            a.record(); fn(); b.record(); torch.cuda.synchronize(); ts.append(a.elapsed_time(b))
        ts.sort(); return ts[len(ts)//2]
    f = timed(fwd)
    o = fwd()
    def bw():
        torch.autograd.grad(o, (q, k, v), g, retain_graph=True)
    b = timed(bw)
    print(json.dumps({"name": s["name"], "fwd": f, "bwd": b}), flush=True)
`;
if (values.peer !== "none") {
  const r = spawnSync(values.peer, ["-c", PEER], { input: rows.join("\n"), encoding: "utf8" });
  if (r.status !== 0) {
    console.log(`peer failed: ${r.stderr.slice(-800)}`);
  } else {
    for (const line of r.stdout.trim().split("\n")) {
      const p = JSON.parse(line) as { name: string; fwd: number; bwd: number };
      const mine = JSON.parse(rows.find((x) => (JSON.parse(x) as { name: string }).name === p.name)!) as { tunaFwdMs: number; tunaBwdMs: number };
      console.log(
        `${p.name.padEnd(22)} torch SDPA fwd ${p.fwd.toFixed(3)} ms, bwd ${p.bwd.toFixed(3)} ms; tuna / torch time: fwd ${(mine.tunaFwdMs / p.fwd).toFixed(2)}, bwd ${(mine.tunaBwdMs / p.bwd).toFixed(2)}`,
      );
    }
  }
}
be.dispose();
