// Length-prefixed messages over a TCP socket, read with a bound on the wait. A frame: magic "TUNA",
// the collective's sequence number, its op code, the payload length (little-endian u32 each), payload.
// Written by hand: Node has no message framing of its own, and this is twenty lines.
import type { Socket } from "node:net";
import { SocketReader } from "../store/wire.ts";

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

/** Frames over the store's byte reader (src/dist/store/wire.ts), which buffers, bounds and reports closes. */
export function frameReader(socket: Socket, describePeer: string): FrameReader {
  const reader = new SocketReader(socket, describePeer);
  return {
    get closed() {
      return reader.closed;
    },
    async next(timeoutMs, what) {
      const deadline = Date.now() + timeoutMs;
      const header = await reader.read(HEADER_BYTES, timeoutMs, what);
      if (header.readUInt32LE(0) !== MAGIC) {
        socket.destroy();
        throw new Error(`${describePeer} sent bytes that are not a tuna frame (another program on the port?)`);
      }
      const length = header.readUInt32LE(12);
      const payload = length === 0 ? Buffer.alloc(0) : await reader.read(length, Math.max(1, deadline - Date.now()), what);
      return { seq: header.readUInt32LE(4), op: header.readUInt32LE(8), payload };
    },
  };
}
