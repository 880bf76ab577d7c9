// Causal grouped-query attention over packed documents on tensor cores, forward: bf16 q/k/v/out with head dim
// D = 64 or 128, mma.sync m16n8k16 (bf16 in, f32 accumulate), FlashAttention-2 structure. Backward:
// attention-mma-backward.cu.
//
// Tile tables and conventions as in attention.cu: int32 (docStart, docEnd, rowStart) triples, tiles aligned to
// docStart, exp2 of scores scaled by scaleLog2 = scale * log2(e) (ex2.approx.ftz), lse in natural log.
// Shared tiles are bf16 rows of STR = D + 8 elements: the 16-byte pad puts the 8 rows an ldmatrix reads in
// 8 different bank groups, and rows stay 16-byte aligned for cp.async. Rows past the document are zero-filled.
//
// Forward (attention_forward_bf16_d{64,128}): one block per (BQ-query tile, head), 16 query rows per warp:
// D 64 runs 4 warps (BQ 64) with Q fragments in registers; D 128 runs 8 warps (BQ 128, so each K/V tile
// serves twice the queries) re-reading Q fragments from shared per key tile, at <= 128 registers for two
// blocks per SM. S = Q K^T and O += P V run from registers (P is S's accumulator rounded to bf16, the FA2
// register reuse), online softmax in f32 with quad shuffles. Keys in tiles of 64 up to the query tile's last
// row, double-buffered: tile t+1 is fetched by cp.async while tile t is computed. A warp skips key tiles
// wholly after its rows (the diagonal of a 128-row tile spans two key tiles) and masks only where a key can
// pass a row. Shared: q (BQ, STR) + k, v (2, 64, STR) = (BQ + 256) * STR * 2 bytes: 46080 (D 64),
// 104448 (D 128). Each warp's own q rows are reused to stage its output for 16-byte stores.
// Sliding window (window > 0; 0 = none): query i sees keys j with i - window < j <= i. The key loop starts at
// the tile holding the block's first visible key, a warp skips tiles wholly before its rows' windows, and the
// mask covers both edges; a row may then see no key of a tile (its max stays -inf; exp2 gives 0 there).
// Soft-capping (softcap > 0) caps each score before the mask (attnScoreLog2, common.cuh).
#include "attention-mma.cuh"

// WARPS warps of MT m16 row tiles each (BQ = 16 MT WARPS); every K/V fragment a warp loads from shared feeds MT
// mma, so MT 2 would halve the shared traffic per flop (at D 128 it needs more than 255 registers and spills,
// so only MT 1 is built). Q_IN_REGS keeps the warp's Q fragments in registers for the whole loop; otherwise
// they are re-read from shared per key tile, which frees registers for a second block.
template <int D, int WARPS, int MT, bool Q_IN_REGS>
__device__ __forceinline__ void attnForwardMma(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                                               const int* tiles, int heads, int kvHeads, float scaleLog2, int window,
                                               float softcap) {
  constexpr int WR = 16 * MT, BQ = WR * WARPS, BK = 64, THREADS = 32 * WARPS, STR = D + 8, ND = D / 8, KD = D / 16,
                NS = BK / 8;
  extern __shared__ __align__(16) unsigned char smemBytes[];
  bf16* qs = reinterpret_cast<bf16*>(smemBytes);  // (BQ, STR)
  bf16* ks = qs + BQ * STR;                         // (2, BK, STR)
  bf16* vs = ks + 2 * BK * STR;                     // (2, BK, STR)
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
  const int tile = blockIdx.x / heads, h = blockIdx.x - tile * heads;
  const int docStart = tiles[3 * tile], docEnd = tiles[3 * tile + 1], qStart = tiles[3 * tile + 2];
  const int kvh = h / (heads / kvHeads);
  const long long qRow = (long long)heads * D, kRow = (long long)kvHeads * D;
  const bf16* kSrc = k + (long long)kvh * D;
  const bf16* vSrc = v + (long long)kvh * D;
  // Key tiles up to the tile's last row in the document; qStart - docStart is a multiple of BQ, so of BK.
  const int nTiles = (qStart - docStart) / BK + (min(BQ, docEnd - qStart) + BK - 1) / BK;
  // With a window the first tile is the one holding the block's first visible key.
  const int tFirst = window > 0 ? max(0, qStart - window + 1 - docStart) / BK : 0;
  const float inf = attnInf();

  loadRows<D, STR, THREADS>(qs, q + (long long)h * D, qRow, qStart, BQ, docEnd);
  loadRows<D, STR, THREADS>(ks + (tFirst & 1) * BK * STR, kSrc, kRow, docStart + tFirst * BK, BK, docEnd);
  loadRows<D, STR, THREADS>(vs + (tFirst & 1) * BK * STR, vSrc, kRow, docStart + tFirst * BK, BK, docEnd);
  cpAsyncCommit();

  unsigned qf[Q_IN_REGS ? KD : 1][4];
  float o[MT][ND][4];
  float m[MT][2], l[MT][2];  // rows g and g + 8 of each m tile; l per lane
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int n = 0; n < ND; ++n) o[mt][n][0] = o[mt][n][1] = o[mt][n][2] = o[mt][n][3] = 0.0f;
    m[mt][0] = m[mt][1] = -inf;
    l[mt][0] = l[mt][1] = 0.0f;
  }
  const int warpRow = qStart + warp * WR;

  for (int t = tFirst; t < nTiles; ++t) {
    cpAsyncWaitAll();
    __syncthreads();  // tile t landed for everyone; everyone is done with tile t - 1's buffer
    if (Q_IN_REGS && t == tFirst) {
#pragma unroll
      for (int kk = 0; kk < KD; ++kk) ldsm4(qf[kk], fragAddrA(qs, STR, warp * WR, kk * 16, lane));
    }
    if (t + 1 < nTiles) {
      const int nb = (t + 1) & 1, next = docStart + (t + 1) * BK;
      loadRows<D, STR, THREADS>(ks + nb * BK * STR, kSrc, kRow, next, BK, docEnd);
      loadRows<D, STR, THREADS>(vs + nb * BK * STR, vSrc, kRow, next, BK, docEnd);
      cpAsyncCommit();
    }
    const int kStart = docStart + t * BK;
    // Warp-uniform: a warp whose rows all precede the tile (causal), lie past the document, or whose windows all
    // start after the tile has nothing to add. Without a window its first row sees key kStart (both are
    // tile-aligned from docStart), so no row is fully masked.
    if (kStart > warpRow + WR - 1 || warpRow >= docEnd) continue;
    if (window > 0 && kStart + BK - 1 <= warpRow - window) continue;
    const bf16* kt = ks + (t & 1) * BK * STR;
    const bf16* vt = vs + (t & 1) * BK * STR;

    float s[MT][NS][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int n = 0; n < NS; ++n) s[mt][n][0] = s[mt][n][1] = s[mt][n][2] = s[mt][n][3] = 0.0f;
    }
#pragma unroll
    for (int kk = 0; kk < KD; ++kk) {
      unsigned a[MT][4];
      if (!Q_IN_REGS) {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) ldsm4(a[mt], fragAddrA(qs, STR, warp * WR + mt * 16, kk * 16, lane));
      }
#pragma unroll
      for (int np = 0; np < BK / 16; ++np) {
        unsigned b[4];
        ldsm4(b, fragAddrB(kt, STR, np * 16, kk * 16, lane));
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          const unsigned* qa = Q_IN_REGS ? qf[Q_IN_REGS ? kk : 0] : a[mt];
          mma16816(s[mt][2 * np], qa, b[0], b[1]);
          mma16816(s[mt][2 * np + 1], qa, b[2], b[3]);
        }
      }
    }

    unsigned pf[MT][BK / 16][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      const int row0 = warpRow + mt * 16 + g, row1 = row0 + 8;
      const bool needMask = kStart + BK - 1 > warpRow + mt * 16 || (window > 0 && kStart <= warpRow + mt * 16 + 15 - window);
      float mx0 = -inf, mx1 = -inf;
#pragma unroll
      for (int n = 0; n < NS; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          float slope;
          float x = attnScoreLog2(s[mt][n][e], scaleLog2, softcap, slope);
          const int key = kStart + n * 8 + 2 * c + (e & 1), row = e < 2 ? row0 : row1;
          if (needMask && (key > row || (window > 0 && key <= row - window))) x = -inf;
          s[mt][n][e] = x;
        }
        mx0 = fmaxf(mx0, fmaxf(s[mt][n][0], s[mt][n][1]));
        mx1 = fmaxf(mx1, fmaxf(s[mt][n][2], s[mt][n][3]));
      }
      const float mn0 = fmaxf(m[mt][0], quadMax(mx0)), mn1 = fmaxf(m[mt][1], quadMax(mx1));
      const float mu0 = mn0 == -inf ? 0.0f : mn0, mu1 = mn1 == -inf ? 0.0f : mn1;
      const float corr0 = fastExp2(m[mt][0] - mu0), corr1 = fastExp2(m[mt][1] - mu1);
      m[mt][0] = mn0;
      m[mt][1] = mn1;
      float l0 = l[mt][0] * corr0, l1 = l[mt][1] * corr1;
#pragma unroll
      for (int n = 0; n < ND; ++n) {
        o[mt][n][0] *= corr0;
        o[mt][n][1] *= corr0;
        o[mt][n][2] *= corr1;
        o[mt][n][3] *= corr1;
      }
#pragma unroll
      for (int n = 0; n < NS; ++n) {
        const float p0 = fastExp2(s[mt][n][0] - mu0), p1 = fastExp2(s[mt][n][1] - mu0);
        const float p2 = fastExp2(s[mt][n][2] - mu1), p3 = fastExp2(s[mt][n][3] - mu1);
        l0 += p0 + p1;
        l1 += p2 + p3;
        pf[mt][n >> 1][(n & 1) * 2] = packBf16(p0, p1);
        pf[mt][n >> 1][(n & 1) * 2 + 1] = packBf16(p2, p3);
      }
      l[mt][0] = l0;
      l[mt][1] = l1;
    }
#pragma unroll
    for (int kk = 0; kk < BK / 16; ++kk) {
#pragma unroll
      for (int dp = 0; dp < KD; ++dp) {
        unsigned b[4];
        ldsm4t(b, fragAddrA(vt, STR, kk * 16, dp * 16, lane));
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          mma16816(o[mt][2 * dp], pf[mt][kk], b[0], b[1]);
          mma16816(o[mt][2 * dp + 1], pf[mt][kk], b[2], b[3]);
        }
      }
    }
  }

  if (warpRow >= docEnd) return;  // no rows to write; no barrier follows
  bf16* stage = qs + warp * WR * STR;  // this warp's own q rows, read only by it
  __syncwarp();  // every lane's last Q fragment read is done before the rows are overwritten
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    const float l0 = quadSum(l[mt][0]), l1 = quadSum(l[mt][1]);
    const float inv0 = 1.0f / l0, inv1 = 1.0f / l1;
    bf16* st = stage + mt * 16 * STR;
#pragma unroll
    for (int n = 0; n < ND; ++n) {
      *reinterpret_cast<unsigned*>(st + g * STR + n * 8 + 2 * c) = packBf16(o[mt][n][0] * inv0, o[mt][n][1] * inv0);
      *reinterpret_cast<unsigned*>(st + (g + 8) * STR + n * 8 + 2 * c) =
          packBf16(o[mt][n][2] * inv1, o[mt][n][3] * inv1);
    }
    const int row0 = warpRow + mt * 16 + g, row1 = row0 + 8;
    if (c == 0) {
      if (row0 < docEnd) lse[(long long)row0 * heads + h] = (m[mt][0] + log2f(l0)) * ATTN_LN2;
      if (row1 < docEnd) lse[(long long)row1 * heads + h] = (m[mt][1] + log2f(l1)) * ATTN_LN2;
    }
  }
  __syncwarp();
  for (int idx = lane; idx < WR * ND; idx += 32) {
    const int r = idx / ND, col = (idx - r * ND) * 8, i = warpRow + r;
    if (i < docEnd)
      *reinterpret_cast<uint4*>(out + i * qRow + (long long)h * D + col) =
          *reinterpret_cast<const uint4*>(stage + r * STR + col);
  }
}

#define ATTN_FORWARD(NAME, D, WARPS, MT, Q_IN_REGS, MIN_BLOCKS)                                                    \
  extern "C" __global__ void __launch_bounds__(32 * WARPS, MIN_BLOCKS)                                         \
      NAME(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, const int* tiles, int heads,     \
           int kvHeads, float scaleLog2, int window, float softcap) {                                          \
    attnForwardMma<D, WARPS, MT, Q_IN_REGS>(out, lse, q, k, v, tiles, heads, kvHeads, scaleLog2, window,      \
                                            softcap);                                                          \
  }
ATTN_FORWARD(attention_forward_bf16_d64, 64, 4, 1, true, 1)
ATTN_FORWARD(attention_forward_bf16_d128, 128, 8, 1, false, 2)
