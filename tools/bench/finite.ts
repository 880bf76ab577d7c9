// How long the load-time NaN/inf scan (src/io/safetensors/finite.ts) takes over 100M bf16 values.
import { firstNonFinite } from "../../src/io/safetensors/finite.ts";
const n = 100_000_000;
const h = new Uint16Array(n);
for (let i = 0; i < n; i++) h[i] = 0x3c00 + ((i * 2654435761) >>> 22);
for (let r = 0; r < 3; r++) {
  const t = performance.now();
  const bad = firstNonFinite(new Uint8Array(h.buffer), "BF16");
  console.log(`bf16 ${n / 1e6}M values: ${((performance.now() - t) / 1000).toFixed(3)} s (first non-finite ${bad})`);
}
