// Bytes on a TCPStore connection: PyTorch's store sends raw little-endian integers (u8 query codes, u32,
// i64) and byte strings as a u64 length followed by the bytes. SocketReader hands out exactly n bytes at a
// time as they arrive, with an optional bound on the wait; SendBuffer collects one message and writes it
// in one piece. Written by hand: the protocol is PyTorch's own (no library speaks it outside Python).
import type { Socket } from "node:net";

/** The longest key and value tuna accepts on the wire; longer lengths mean a broken or hostile peer. */
export const MAX_KEY_BYTES = 1 << 20;
export const MAX_VALUE_BYTES = 1 << 30;

export class SocketReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private waiter: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | undefined;
  private closedWith: Error | undefined;

  constructor(socket: Socket, private readonly describePeer: string) {
    socket.on("data", (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
      this.serve();
    });
    socket.on("error", (e) => {
      this.fail(new Error(`${describePeer}: ${e.message}`));
    });
    socket.on("close", () => {
      this.fail(new Error(`${describePeer} closed the connection (the process ended or was killed)`));
    });
  }

  get closed(): Error | undefined {
    return this.closedWith;
  }

  /** Puts bytes back in front of what is buffered (read ahead to tell two protocols apart). */
  unread(b: Buffer): void {
    this.chunks.unshift(b);
    this.buffered += b.length;
  }

  /** Exactly n bytes; rejects when the peer closes first or (with a bound) when they take too long. */
  read(n: number, timeoutMs?: number, what?: () => string): Promise<Buffer> {
    if (this.waiter !== undefined) return Promise.reject(new Error(`internal: two reads at once on ${this.describePeer}`));
    if (this.buffered >= n) return Promise.resolve(this.take(n));
    if (this.closedWith !== undefined) return Promise.reject(this.closedWith);
    return new Promise<Buffer>((resolve, reject) => {
      const timer =
        timeoutMs === undefined
          ? undefined
          : setTimeout(() => {
              this.waiter = undefined;
              reject(new ReadTimeout(`no answer from ${this.describePeer} within ${timeoutMs / 1000} s${what === undefined ? "" : ` while waiting for ${what()}`}`));
            }, timeoutMs);
      this.waiter = {
        n,
        resolve: (b) => {
          if (timer !== undefined) clearTimeout(timer);
          resolve(b);
        },
        reject: (e) => {
          if (timer !== undefined) clearTimeout(timer);
          reject(e);
        },
      };
    });
  }

  async u8(timeoutMs?: number, what?: () => string): Promise<number> {
    return (await this.read(1, timeoutMs, what)).readUInt8(0);
  }

  async u32(timeoutMs?: number, what?: () => string): Promise<number> {
    return (await this.read(4, timeoutMs, what)).readUInt32LE(0);
  }

  async i64(timeoutMs?: number, what?: () => string): Promise<bigint> {
    return (await this.read(8, timeoutMs, what)).readBigInt64LE(0);
  }

  /** A u64 count, refused past `max` (a peer that sends more is broken or hostile). */
  async count(max: number, what: string, timeoutMs?: number): Promise<number> {
    const n = (await this.read(8, timeoutMs, () => what)).readBigUInt64LE(0);
    if (n > BigInt(max)) throw new Error(`${this.describePeer} sent a ${what} of ${n}, more than the ${max} tuna accepts`);
    return Number(n);
  }

  /** A length-prefixed byte string. */
  async bytes(max: number, what: string, timeoutMs?: number): Promise<Buffer> {
    const n = await this.count(max, `${what} length`, timeoutMs);
    return n === 0 ? Buffer.alloc(0) : this.read(n, timeoutMs, () => what);
  }

  private take(n: number): Buffer {
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    const out = Buffer.from(all.subarray(0, n));
    const rest = all.subarray(n);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.buffered = rest.length;
    return out;
  }

  private serve(): void {
    const w = this.waiter;
    if (w !== undefined && this.buffered >= w.n) {
      this.waiter = undefined;
      w.resolve(this.take(w.n));
    }
  }

  private fail(e: Error): void {
    this.closedWith ??= e;
    const w = this.waiter;
    this.waiter = undefined;
    w?.reject(this.closedWith);
  }
}

/** A read that ran out of time (the connection is still usable: the bytes may come later). */
export class ReadTimeout extends Error {}

/** One message, built field by field and written at once. */
export class SendBuffer {
  private parts: Buffer[] = [];

  u8(v: number): this {
    const b = Buffer.alloc(1);
    b.writeUInt8(v);
    this.parts.push(b);
    return this;
  }

  u32(v: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v >>> 0);
    this.parts.push(b);
    return this;
  }

  i64(v: bigint): this {
    const b = Buffer.alloc(8);
    b.writeBigInt64LE(v);
    this.parts.push(b);
    return this;
  }

  count(n: number): this {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(n));
    this.parts.push(b);
    return this;
  }

  bytes(data: Uint8Array): this {
    this.count(data.byteLength);
    this.parts.push(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
    return this;
  }

  /** Keys travel as their bytes; latin1 keeps any byte string a peer sent unchanged. */
  key(k: string): this {
    return this.bytes(Buffer.from(k, "latin1"));
  }

  writeTo(socket: Socket): void {
    if (!socket.destroyed) socket.write(Buffer.concat(this.parts));
  }
}
