// The GGUF container and encodings: header bytes as the spec (ggml/include/gguf.h, gguf-py) lays them out,
// read back; damaged files refused with FILE_FORMAT; every quantized type bit-exact with ggml's own code.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gguf, ggmlTensorBytes, type GgufValue } from "../../src/io/gguf/format.ts";
import { buildGgufHeader, writeGguf } from "../../src/io/gguf/writer.ts";
import { openGguf } from "../../src/io/gguf/reader.ts";
import { decodeGgml, encodeGgml } from "../../src/io/gguf/quants.ts";
import { isTunaError } from "../../src/util/errors.ts";
import { createRng } from "../../src/util/random.ts";
import { ggmlDequantize, ggmlQuantize, llamaCppDir } from "./llama-cpp.ts";

const roots: string[] = [];
after(async () => {
  for (const r of roots) await rm(r, { recursive: true, force: true });
});
async function tempRoot(): Promise<string> {
  const r = await mkdtemp(join(tmpdir(), "tuna-gguf-format-"));
  roots.push(r);
  return r;
}

/** Little-endian bytes written out by hand, the way the spec describes each field. */
function le(...parts: (["u32", number] | ["u64", number] | ["f32", number] | ["u8", number] | ["str", string])[]): number[] {
  const out: number[] = [];
  for (const [kind, v] of parts) {
    if (kind === "str") {
      const b = [...new TextEncoder().encode(v)];
      out.push(...le(["u64", b.length]), ...b);
      continue;
    }
    const size = kind === "u8" ? 1 : kind === "u64" ? 8 : 4;
    const view = new DataView(new ArrayBuffer(size));
    if (kind === "u8") view.setUint8(0, v);
    else if (kind === "u32") view.setUint32(0, v, true);
    else if (kind === "u64") view.setBigUint64(0, BigInt(v), true);
    else view.setFloat32(0, v, true);
    out.push(...new Uint8Array(view.buffer));
  }
  return out;
}

test("the header is laid out as the GGUF v3 spec says: magic, version, counts, typed key-values, tensor infos, padding to 32", () => {
  const metadata = new Map<string, GgufValue>([
    ["general.architecture", gguf.str("llama")],
    ["llama.block_count", gguf.u32(2)],
    ["llama.rope.freq_base", gguf.f32(10000)],
    ["tokenizer.ggml.add_bos_token", gguf.bool(true)],
    ["tokenizer.ggml.tokens", gguf.strings(["a", "bc"])],
  ]);
  const { header, offsets } = buildGgufHeader(metadata, [
    { name: "w", type: "F32", ne: [3, 2] },
    { name: "n", type: "F16", ne: [5] },
  ]);
  const expected = [
    ...[0x47, 0x47, 0x55, 0x46], // "GGUF"
    ...le(["u32", 3], ["u64", 2], ["u64", 5]),
    ...le(["str", "general.architecture"], ["u32", 8], ["str", "llama"]),
    ...le(["str", "llama.block_count"], ["u32", 4], ["u32", 2]),
    ...le(["str", "llama.rope.freq_base"], ["u32", 6], ["f32", 10000]),
    ...le(["str", "tokenizer.ggml.add_bos_token"], ["u32", 7], ["u8", 1]),
    ...le(["str", "tokenizer.ggml.tokens"], ["u32", 9], ["u32", 8], ["u64", 2], ["str", "a"], ["str", "bc"]),
    ...le(["str", "w"], ["u32", 2], ["u64", 3], ["u64", 2], ["u32", 0], ["u64", 0]),
    // The second tensor starts at the 24 bytes of the first rounded up to the 32-byte alignment.
    ...le(["str", "n"], ["u32", 1], ["u64", 5], ["u32", 1], ["u64", 32]),
  ];
  while (expected.length % 32 !== 0) expected.push(0);
  assert.deepEqual([...header], expected);
  assert.deepEqual(offsets, [0, 32]);
});

test("a written file reads back: metadata of every type, tensor bytes at their aligned offsets, the file padded to the alignment", async () => {
  const root = await tempRoot();
  const path = join(root, "m.gguf");
  const metadata = new Map<string, GgufValue>([
    ["general.architecture", gguf.str("llama")],
    ["a.u32", gguf.u32(7)],
    ["a.i32", gguf.i32(-7)],
    ["a.f32", gguf.f32(0.5)],
    ["a.bool", gguf.bool(false)],
    ["a.u64", { kind: "uint64", value: 2n ** 40n }],
    ["a.floats", gguf.f32s([1.5, -2])],
    ["a.ints", gguf.i32s([1, -2, 3])],
    ["a.unicode", gguf.str("naïve 🦙")],
  ]);
  const w = Float32Array.from({ length: 64 }, (_, i) => i / 8 - 3);
  const { bytes } = await writeGguf(path, metadata, [
    { name: "blk.0.w", type: "F32", ne: [32, 2], data: () => new Uint8Array(w.buffer) },
    { name: "blk.0.q", type: "Q8_0", ne: [32, 2], data: () => encodeGgml(w, 32, "Q8_0") },
  ]);
  const raw = await readFile(path);
  assert.equal(raw.length, bytes);
  assert.equal(raw.length % 32, 0);
  const f = await openGguf(path);
  try {
    assert.equal(f.version, 3);
    assert.deepEqual([...f.metadata.keys()], [...metadata.keys()]);
    assert.deepEqual(f.metadata.get("a.i32"), { kind: "int32", value: -7 });
    assert.deepEqual(f.metadata.get("a.u64"), { kind: "uint64", value: 2n ** 40n });
    assert.deepEqual(f.metadata.get("a.floats"), { kind: "array", itemKind: "float32", values: [1.5, -2] });
    assert.deepEqual(f.metadata.get("a.unicode"), { kind: "string", value: "naïve 🦙" });
    assert.deepEqual(f.tensors.map((t) => [t.name, t.type, t.ne, t.offset]), [
      ["blk.0.w", "F32", [32, 2], 0],
      ["blk.0.q", "Q8_0", [32, 2], 256],
    ]);
    assert.deepEqual(decodeGgml(await f.readTensor("blk.0.w"), 64, "F32"), w);
    assert.ok(f.dataStart % 32 === 0);
  } finally {
    await f.close();
  }
});

test("Q8_0 by hand: d = max|x| / 127 as f16, q = round(x / d) with halves away from zero", () => {
  const x = new Float32Array(32);
  x[0] = 127;
  x[1] = -63.5; // -63.5 rounds to -64, away from zero
  x[2] = 0.5; // 0.5 rounds to 1
  x[3] = 2.4;
  const bytes = encodeGgml(x, 32, "Q8_0");
  assert.equal(bytes.length, 34);
  assert.deepEqual([...bytes.subarray(0, 2)], [0x00, 0x3c]); // d = 1.0 in f16
  assert.deepEqual([...new Int8Array(bytes.buffer, 2, 4)], [127, -64, 1, 2]);
  assert.deepEqual([...decodeGgml(bytes, 32, "Q8_0").subarray(0, 4)], [127, -64, 1, 2]);
});

const skip = llamaCppDir() === null ? "ggml's library (@node-llama-cpp/linux-x64) is only installed on linux-x64" : false;

test("Q8_0, Q5_0, Q4_K, Q5_K, Q6_K: tuna's bytes equal ggml_quantize_chunk's and its values ggml's dequantize_row_*", { skip }, () => {
  const rng = createRng(42);
  const rows = 6;
  const cols = 512;
  // Normal values, a row of zeros, one of a constant, one with an outlier: the branches of the quantizers.
  const x = Float32Array.from({ length: rows * cols }, () => 0.05 * rng.normal());
  x.fill(0, cols, 2 * cols);
  x.fill(0.37, 2 * cols, 3 * cols);
  x[3 * cols + 17] = 40;
  for (const type of ["Q8_0", "Q5_0", "Q4_K", "Q5_K", "Q6_K"] as const) {
    const ref = ggmlQuantize(type, x, cols, ggmlTensorBytes(type, [cols, rows]));
    const mine = encodeGgml(x, cols, type);
    assert.equal(mine.findIndex((v, i) => v !== ref[i]), -1, `${type}: bytes differ from ggml's`);
    assert.deepEqual(decodeGgml(ref, x.length, type), ggmlDequantize(type, ref, x.length), `${type}: values differ from ggml's`);
  }
});

async function expectFormatError(bytes: Uint8Array, pattern: RegExp): Promise<void> {
  const path = join(await tempRoot(), "bad.gguf");
  await writeFile(path, bytes);
  await assert.rejects(openGguf(path), (e: unknown) => isTunaError(e) && e.code === "FILE_FORMAT" && pattern.test(e.message));
}

test("damaged or hostile files fail with FILE_FORMAT saying what is wrong, before any large allocation", async () => {
  const header = (nTensors: number, nKv: number): number[] => [0x47, 0x47, 0x55, 0x46, ...le(["u32", 3], ["u64", nTensors], ["u64", nKv])];
  await expectFormatError(new TextEncoder().encode("not a gguf file at all, really"), /no "GGUF" magic/);
  await expectFormatError(Uint8Array.from([0x47, 0x47, 0x55, 0x46, ...le(["u32", 9], ["u64", 0], ["u64", 0])]), /version 9/);
  await expectFormatError(Uint8Array.from(header(0, 1)), /ends inside the header/);
  // A string length of 2^40 bytes in a tiny file.
  await expectFormatError(Uint8Array.from([...header(0, 1), ...le(["u64", 2 ** 40])]), /exceeds the file/);
  await expectFormatError(Uint8Array.from([...header(0, 1), ...le(["str", "k"], ["u32", 99])]), /unknown value type 99/);
  await expectFormatError(Uint8Array.from([...header(1, 0), ...le(["str", "t"], ["u32", 2], ["u64", 4], ["u64", 4], ["u32", 0], ["u64", 0])]), /runs past the end/);
  await expectFormatError(Uint8Array.from([...header(1, 0), ...le(["str", "t"], ["u32", 1], ["u64", 33], ["u32", 8], ["u64", 0])]), /not whole blocks/);
  await expectFormatError(Uint8Array.from([...header(1, 0), ...le(["str", "t"], ["u32", 1], ["u64", 4], ["u32", 77], ["u64", 0])]), /ggml type 77/);
  await expectFormatError(Uint8Array.from([...header(1, 0), ...le(["str", "t"], ["u32", 1], ["u64", 4], ["u32", 0], ["u64", 7])]), /not aligned/);
  await expectFormatError(Uint8Array.from([...header(0, 2), ...le(["str", "k"], ["u32", 4], ["u32", 1], ["str", "k"], ["u32", 4], ["u32", 1])]), /appears twice/);
});

test("a writer that fails midway leaves no file at the target and no temporary file beside it", async () => {
  const root = await tempRoot();
  const path = join(root, "m.gguf");
  await assert.rejects(
    writeGguf(path, new Map([["general.architecture", gguf.str("llama")]]), [
      { name: "a", type: "F32", ne: [4], data: () => new Uint8Array(16) },
      {
        name: "b",
        type: "F32",
        ne: [4],
        data: () => {
          throw new Error("disk on fire");
        },
      },
    ]),
    /disk on fire/,
  );
  assert.deepEqual(await readdir(root), []);
});

void test("K-quants on worker threads: the same bytes as one thread", async () => {
  const { encodeGgmlParallel } = await import("../../src/gguf/quantize-job.ts");
  const rng = createRng(8);
  const x = Float32Array.from({ length: 820 * 1280 }, () => 0.02 * rng.normal()); // 820 rows of 5 blocks
  for (const type of ["Q4_K", "Q6_K"] as const) {
    const one = encodeGgml(x, 1024 + 256, type);
    const many = await encodeGgmlParallel(x, 1024 + 256, type, 2);
    assert.equal(many.length, one.length);
    assert.equal(many.findIndex((v, i) => v !== one[i]), -1, `${type}: the threads' bytes differ`);
  }
});
