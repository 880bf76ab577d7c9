// Checks that every rank of a job holds the same value of something the ranks must share (the model they
// loaded: its config and tensor layout, so one machine's different download or quantization cannot silently
// mix into the job). The value's SHA-256 is all-gathered as six 20-bit pieces (exact in float32).
import { createHash } from "node:crypto";
import type { Collective } from "./collective.ts";
import { TunaError } from "../util/errors.ts";

const PIECES = 6;

function pieces(value: string): Float32Array {
  const digest = createHash("sha256").update(value).digest();
  const out = new Float32Array(PIECES);
  for (let i = 0; i < PIECES; i++) out[i] = ((digest[3 * i]! << 12) | (digest[3 * i + 1]! << 4) | (digest[3 * i + 2]! >> 4)) >>> 0;
  return out;
}

/** Resolves when every rank passed the same `value`; otherwise every rank fails naming the ranks that differ from rank 0. */
export async function agreeOnEveryRank(collective: Collective, what: string, value: string, hint: string): Promise<void> {
  if (collective.worldSize === 1) return;
  const all = await collective.allGather(pieces(value));
  const differing: number[] = [];
  for (let r = 1; r < collective.worldSize; r++) {
    for (let i = 0; i < PIECES; i++) {
      if (all[r * PIECES + i] !== all[i]) {
        differing.push(r);
        break;
      }
    }
  }
  if (differing.length > 0) {
    throw new TunaError("DIST", `rank${differing.length > 1 ? "s" : ""} ${differing.join(", ")} of ${collective.worldSize} loaded a different ${what} than rank 0. ${hint}`);
  }
}
