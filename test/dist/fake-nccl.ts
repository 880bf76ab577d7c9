// A stand-in libnccl written in C, built here with the system's cc, so the NCCL collective's koffi marshalling
// (ncclUniqueId by value, the ncclConfig_t bytes, out handles), its non-blocking initialisation, polling,
// async errors and aborts run without a GPU. One-rank communicators copy; the test steers the rest.
import { spawnSync } from "node:child_process";
import { mkdtemp, writeFile } from "node:fs/promises";
import os from "node:os";
import { join } from "node:path";

const FAKE_NCCL = String.raw`
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
typedef struct { unsigned char internal[128]; } ncclUniqueId;
typedef struct { size_t size; unsigned int magic; unsigned int version; int blocking; int cga, minCTAs, maxCTAs; const char *netName; int splitShare; } ncclConfig;
typedef struct { int nranks, rank, pending, asyncErr, aborted; } comm;
static int initPolls = 3, failAfterOps = -1, aborts, destroys, finalizes, lastBlocking = -5, lastSplitShare, idSum;
static unsigned int lastMagic, lastVersion; static size_t lastSize; static int version = 22803;
/* The last all-reduces: count and stream, for the bucket test. */
static size_t reduceCounts[64]; static uintptr_t reduceStreams[64]; static int reduces;
long long fakeNcclReduce(int i, int what) { if (i < 0 || i >= reduces || i >= 64) return -1; return what == 0 ? (long long)reduceCounts[i] : (long long)reduceStreams[i]; }
int fakeNcclReduces(void) { return reduces; }
void fakeNcclResetReduces(void) { reduces = 0; }
int fakeNcclState(int what) {
  switch (what) { case 0: return aborts; case 1: return destroys; case 2: return finalizes; case 3: return lastBlocking;
    case 4: return (int)lastMagic; case 5: return (int)lastVersion; case 6: return (int)lastSize; case 7: return idSum;
    case 8: return lastSplitShare; default: return -1; }
}
void fakeNcclSet(int what, int value) { if (what == 0) initPolls = value; else if (what == 1) failAfterOps = value; else if (what == 2) version = value; }
int ncclGetVersion(int *v) { *v = version; return 0; }
const char *ncclGetErrorString(int r) {
  switch (r) { case 0: return "no error"; case 4: return "invalid argument (run with NCCL_DEBUG=WARN for details)";
    case 6: return "remote process exited or there was a network error"; case 7: return "NCCL operation in progress";
    default: return "unhandled error"; }
}
const char *ncclGetLastError(void *c) { return c ? "fake: peer rank 1 vanished" : ""; }
int ncclGetUniqueId(ncclUniqueId *id) { for (int i = 0; i < 128; i++) id->internal[i] = (unsigned char)(i * 7 + 1); return 0; }
int ncclCommInitRankConfig(comm **out, int nranks, ncclUniqueId id, int rank, ncclConfig *c) {
  lastMagic = c->magic; lastVersion = c->version; lastSize = c->size; lastBlocking = c->blocking; lastSplitShare = c->splitShare;
  idSum = 0; for (int i = 0; i < 128; i++) idSum += id.internal[i];
  if (c->magic != 0xcafebeef || nranks < 1 || rank < 0 || rank >= nranks) return 4;
  comm *m = calloc(1, sizeof *m); m->nranks = nranks; m->rank = rank; m->pending = c->blocking == 0 ? initPolls : 0;
  *out = m; return m->pending ? 7 : 0;
}
int ncclCommGetAsyncError(comm *m, int *e) {
  if (m->aborted) { *e = 3; return 0; }
  if (m->pending > 0) { m->pending--; *e = 7; return 0; }
  *e = m->asyncErr; return 0;
}
static int enqueue(comm *m) {
  if (m->aborted) return 5;
  if (failAfterOps == 0) m->asyncErr = 6;
  if (failAfterOps >= 0) failAfterOps--;
  return 0;
}
static size_t size(int dt) { return dt == 7 ? 4 : dt == 1 ? 1 : 0; }
int ncclAllReduce(uint64_t s, uint64_t r, size_t n, int dt, int op, comm *m, void *st) {
  if (size(dt) == 0 || op != 0) return 4;
  if (reduces < 64) { reduceCounts[reduces] = n; reduceStreams[reduces] = (uintptr_t)st; } reduces++;
  if (m->nranks == 1 && s != r) memmove((void *)r, (void *)s, n * size(dt));
  return enqueue(m);
}
int ncclReduceScatter(uint64_t s, uint64_t r, size_t n, int dt, int op, comm *m, void *st) {
  if (size(dt) == 0 || op != 0) return 4;
  if (m->nranks == 1 && s != r) memmove((void *)r, (void *)s, n * size(dt));
  return enqueue(m);
}
int ncclAllGather(uint64_t s, uint64_t r, size_t n, int dt, comm *m, void *st) {
  if (size(dt) == 0) return 4;
  if (m->nranks == 1 && s != r) memmove((void *)r, (void *)s, n * size(dt));
  return enqueue(m);
}
int ncclBroadcast(uint64_t s, uint64_t r, size_t n, int dt, int root, comm *m, void *st) {
  if (size(dt) == 0 || root < 0 || root >= m->nranks) return 4;
  if (m->nranks == 1 && s != r) memmove((void *)r, (void *)s, n * size(dt));
  return enqueue(m);
}
int ncclCommFinalize(comm *m) { finalizes++; return 0; }
int ncclCommDestroy(comm *m) { destroys++; free(m); return 0; }
int ncclCommAbort(comm *m) { aborts++; m->aborted = 1; return 0; }
`;

/** Builds libnccl.so.2 from the stand-in source into a fresh folder; returns its path. */
export async function buildFakeNccl(): Promise<string> {
  const dir = await mkdtemp(join(os.tmpdir(), "tuna-fake-nccl-"));
  const src = join(dir, "nccl.c");
  const lib = join(dir, "libnccl.so.2");
  await writeFile(src, FAKE_NCCL);
  const result = spawnSync("cc", ["-shared", "-fPIC", "-O1", "-o", lib, src], { encoding: "utf8" });
  if (result.status !== 0) throw new Error(`cc failed for the NCCL stand-in: ${result.stderr}`);
  return lib;
}
