// Length-prefixed messages over a TCP socket, read with a bound on the wait. A frame: magic "TUNA",
// the collective's sequence number, its op code, the payload length (little-endian u32 each), payload.
// Written by hand: Node has no message framing of its own, and this is twenty lines.
import type { Socket } from "node:net";

const MAGIC = 0x414e5554; // "TUNA"
const HEADER_BYTES = 16;

export interface Frame {
  seq: number;
  op: number;
  payload: Buffer;
}

export function encodeFrame(seq: number, op: number, payload: Uint8Array): Buffer {
  const header = Buffer.alloc(HEADER_BYTES);
  header.writeUInt32LE(MAGIC, 0);
  header.writeUInt32LE(seq >>> 0, 4);
  header.writeUInt32LE(op, 8);
  header.writeUInt32LE(payload.byteLength, 12);
  return Buffer.concat([header, Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength)]);
}

/** Reads frames off a socket in order; `next` waits at most `timeoutMs` and names what it waited for. */
export interface FrameReader {
  next(timeoutMs: number, what: () => string): Promise<Frame>;
  /** Set when the socket closed or failed; waiting readers are rejected with it. */
  readonly closed: Error | undefined;
}

export function frameReader(socket: Socket, describePeer: string): FrameReader {
  let pending: Buffer = Buffer.alloc(0);
  const frames: Frame[] = [];
  let waiter: { resolve: (f: Frame) => void; reject: (e: Error) => void } | undefined;
  let closed: Error | undefined;
  const fail = (e: Error): void => {
    closed ??= e;
    waiter?.reject(closed);
    waiter = undefined;
  };
  socket.on("data", (chunk: Buffer) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    while (pending.length >= HEADER_BYTES) {
      if (pending.readUInt32LE(0) !== MAGIC) {
        fail(new Error(`${describePeer} sent bytes that are not a tuna frame (another program on the port?)`));
        socket.destroy();
        return;
      }
      const length = pending.readUInt32LE(12);
      if (pending.length < HEADER_BYTES + length) break;
      const frame = { seq: pending.readUInt32LE(4), op: pending.readUInt32LE(8), payload: Buffer.from(pending.subarray(HEADER_BYTES, HEADER_BYTES + length)) };
      pending = pending.subarray(HEADER_BYTES + length);
      if (waiter !== undefined) {
        const w = waiter;
        waiter = undefined;
        w.resolve(frame);
      } else {
        frames.push(frame);
      }
    }
  });
  socket.on("error", (e) => {
    fail(new Error(`${describePeer}: ${e.message}`));
  });
  socket.on("close", () => {
    fail(new Error(`${describePeer} closed the connection (the process ended or was killed)`));
  });
  return {
    get closed() {
      return closed;
    },
    next(timeoutMs, what) {
      const ready = frames.shift();
      if (ready !== undefined) return Promise.resolve(ready);
      if (closed !== undefined) return Promise.reject(closed);
      return new Promise<Frame>((resolve, reject) => {
        const timer = setTimeout(() => {
          waiter = undefined;
          reject(new Error(`no answer from ${describePeer} within ${timeoutMs / 1000} s while waiting for ${what()}`));
        }, timeoutMs);
        waiter = {
          resolve: (f) => {
            clearTimeout(timer);
            resolve(f);
          },
          reject: (e) => {
            clearTimeout(timer);
            reject(e);
          },
        };
      });
    },
  };
}
