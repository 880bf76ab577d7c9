// A tfevents reader for the tests, written apart from the writer: bit-by-bit CRC32C (no table), a
// generic protobuf field decoder, and the Event/Summary/TensorProto fields the writer emits.

/** CRC32C one bit at a time: slow, obviously the definition, and shares no code with the table version. */
export function crc32cBitwise(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (const b of bytes) {
    crc ^= b;
    for (let k = 0; k < 8; k++) crc = (crc & 1) !== 0 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

export function maskBitwise(crc: number): number {
  // rotate right 15 = (crc >> 15) | (crc << 17), computed with arithmetic instead of shifts
  const low15 = crc % 2 ** 15;
  const rotated = Math.floor(crc / 2 ** 15) + low15 * 2 ** 17;
  return (rotated + 0xa282ead8) % 2 ** 32;
}

export interface ProtoField {
  field: number;
  wire: number;
  varint?: bigint;
  bytes?: Uint8Array; // length-delimited payload, or the 8/4 raw bytes of fixed64/fixed32
}

function readVarint(buf: Uint8Array, pos: number): [bigint, number] {
  let result = 0n;
  let shift = 0n;
  for (;;) {
    const b = buf[pos++];
    if (b === undefined) throw new Error("varint runs past the end");
    result |= BigInt(b & 0x7f) << shift;
    if ((b & 0x80) === 0) return [result, pos];
    shift += 7n;
  }
}

export function decodeFields(buf: Uint8Array): ProtoField[] {
  const fields: ProtoField[] = [];
  let pos = 0;
  while (pos < buf.length) {
    const [key, afterKey] = readVarint(buf, pos);
    pos = afterKey;
    const field = Number(key >> 3n);
    const wire = Number(key & 7n);
    if (wire === 0) {
      const [v, next] = readVarint(buf, pos);
      fields.push({ field, wire, varint: v });
      pos = next;
    } else if (wire === 1 || wire === 5) {
      const n = wire === 1 ? 8 : 4;
      fields.push({ field, wire, bytes: buf.subarray(pos, pos + n) });
      pos += n;
    } else if (wire === 2) {
      const [len, next] = readVarint(buf, pos);
      fields.push({ field, wire, bytes: buf.subarray(next, next + Number(len)) });
      pos = next + Number(len);
    } else {
      throw new Error(`unexpected wire type ${wire}`);
    }
  }
  if (pos !== buf.length) throw new Error("message runs past its end");
  return fields;
}

/** Splits a TFRecord stream into record payloads, checking both masked CRCs of each record. */
export function readRecords(file: Uint8Array): Uint8Array[] {
  const records: Uint8Array[] = [];
  const view = new DataView(file.buffer, file.byteOffset, file.byteLength);
  let pos = 0;
  while (pos < file.length) {
    const length = Number(view.getBigUint64(pos, true));
    if (view.getUint32(pos + 8, true) !== maskBitwise(crc32cBitwise(file.subarray(pos, pos + 8)))) throw new Error(`record ${records.length}: bad length crc`);
    const data = file.subarray(pos + 12, pos + 12 + length);
    if (view.getUint32(pos + 12 + length, true) !== maskBitwise(crc32cBitwise(data))) throw new Error(`record ${records.length}: bad data crc`);
    records.push(data);
    pos += 12 + length + 4;
  }
  return records;
}

const text = (b: Uint8Array | undefined): string => new TextDecoder().decode(b);
const f64 = (b: Uint8Array): number => new DataView(b.buffer, b.byteOffset, 8).getFloat64(0, true);
const f32 = (b: Uint8Array): number => new DataView(b.buffer, b.byteOffset, 4).getFloat32(0, true);

export interface DecodedValue {
  tag: string;
  simpleValue?: number;
  tensor?: { dtype: number; shape: number[]; strings: string[] };
  pluginName?: string;
}

export interface DecodedEvent {
  wallTime: number;
  step: bigint;
  fileVersion?: string;
  sourceWriter?: string;
  values: DecodedValue[];
  fieldOrder: number[];
}

function decodeValue(buf: Uint8Array): DecodedValue {
  const value: DecodedValue = { tag: "" };
  for (const f of decodeFields(buf)) {
    if (f.field === 1) value.tag = text(f.bytes);
    else if (f.field === 2 && f.wire === 5) value.simpleValue = f32(f.bytes!);
    else if (f.field === 8) {
      const tensor = { dtype: 0, shape: [] as number[], strings: [] as string[] };
      for (const t of decodeFields(f.bytes!)) {
        if (t.field === 1) tensor.dtype = Number(t.varint);
        else if (t.field === 2) for (const dim of decodeFields(t.bytes!)) tensor.shape.push(Number(decodeFields(dim.bytes!).find((d) => d.field === 1)?.varint ?? 0n));
        else if (t.field === 8) tensor.strings.push(text(t.bytes));
      }
      value.tensor = tensor;
    } else if (f.field === 9) {
      const pluginData = decodeFields(f.bytes!).find((m) => m.field === 1);
      const name = pluginData && decodeFields(pluginData.bytes!).find((p) => p.field === 1);
      if (name) value.pluginName = text(name.bytes);
    }
  }
  return value;
}

export function decodeEvent(buf: Uint8Array): DecodedEvent {
  const event: DecodedEvent = { wallTime: 0, step: 0n, values: [], fieldOrder: [] };
  for (const f of decodeFields(buf)) {
    event.fieldOrder.push(f.field);
    if (f.field === 1 && f.wire === 1) event.wallTime = f64(f.bytes!);
    else if (f.field === 2 && f.wire === 0) event.step = BigInt.asIntN(64, f.varint!);
    else if (f.field === 3) event.fileVersion = text(f.bytes);
    else if (f.field === 5) for (const v of decodeFields(f.bytes!)) event.values.push(decodeValue(v.bytes!));
    else if (f.field === 10) event.sourceWriter = text(decodeFields(f.bytes!).find((w) => w.field === 1)?.bytes);
  }
  return event;
}

export function readEvents(file: Uint8Array): DecodedEvent[] {
  return readRecords(file).map(decodeEvent);
}

export function hex(text: string): Uint8Array {
  return Uint8Array.from(text.trim().split(/\s+/).map((h) => parseInt(h, 16)));
}
