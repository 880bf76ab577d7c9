// A TCPStore server: the key-value store rank 0 hosts when no torchrun agent hosts one. It speaks both
// generations of PyTorch's protocol, told apart per connection (a PyTorch 2 client always starts with
// VALIDATE and the magic number; a PyTorch 1 client never does), so torch's own clients and tuna's work
// against it. Values are bytes; ADD keeps its counter as decimal text like PyTorch does. WAIT answers when
// every key it names exists; CANCEL_WAIT withdraws a pending wait. A client that breaks the protocol loses
// its connection and nothing else: the store and every other client go on.
import { createServer, type Server, type Socket } from "node:net";
import { TunaError } from "../../util/errors.ts";
import { CHECK_NOT_READY, CHECK_READY, STOP_WAITING, VALIDATION_MAGIC, WAIT_CANCELED, queryName, type StoreProtocol } from "./protocol.ts";
import { MAX_KEY_BYTES, MAX_VALUE_BYTES, SendBuffer, SocketReader } from "./wire.ts";

export interface StoreServer {
  readonly port: number;
  close(): Promise<void>;
  /** Number of open client connections (for tests and diagnostics). */
  readonly connections: number;
}

export interface StoreServerOptions {
  /** Address to listen on; all interfaces when undefined. */
  host?: string;
  /** 0 picks a free port. */
  port: number;
  /** Told when a client breaks the protocol (its connection is closed). */
  onProblem?: (message: string) => void;
}

interface PendingWait {
  socket: Socket;
  remaining: Set<string>;
}

const MAX_KEYS_PER_QUERY = 1 << 20;

export async function startStoreServer(options: StoreServerOptions): Promise<StoreServer> {
  const data = new Map<string, Buffer>();
  const waitsByKey = new Map<string, Set<PendingWait>>();
  const waitOf = new Map<Socket, PendingWait>();
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.setNoDelay(true);
    socket.on("close", () => {
      sockets.delete(socket);
      dropWait(socket);
    });
    socket.on("error", () => undefined);
    serveClient(socket).catch((e: unknown) => {
      const reader = e instanceof ProtocolBreach ? e.message : undefined;
      if (reader !== undefined) options.onProblem?.(reader);
      socket.destroy();
    });
  });

  const dropWait = (socket: Socket): PendingWait | undefined => {
    const w = waitOf.get(socket);
    if (w === undefined) return undefined;
    waitOf.delete(socket);
    for (const key of w.remaining) waitsByKey.get(key)?.delete(w);
    return w;
  };

  const changed = (key: string): void => {
    const waits = waitsByKey.get(key);
    if (waits === undefined) return;
    waitsByKey.delete(key);
    for (const w of waits) {
      w.remaining.delete(key);
      if (w.remaining.size === 0) {
        waitOf.delete(w.socket);
        new SendBuffer().u8(STOP_WAITING).writeTo(w.socket);
      }
    }
  };

  const put = (key: string, value: Buffer): void => {
    data.set(key, value);
    changed(key);
  };

  async function serveClient(socket: Socket): Promise<void> {
    const who = `store client ${socket.remoteAddress ?? "?"}:${socket.remotePort ?? "?"}`;
    const r = new SocketReader(socket, who);
    const key = async (): Promise<string> => (await r.bytes(MAX_KEY_BYTES, "key")).toString("latin1");
    const value = (): Promise<Buffer> => r.bytes(MAX_VALUE_BYTES, "value");
    const keys = async (): Promise<string[]> => {
      const n = await r.count(MAX_KEYS_PER_QUERY, "key count");
      const out: string[] = [];
      for (let i = 0; i < n; i++) out.push(await key());
      return out;
    };
    let protocol: StoreProtocol;
    try {
      // Which protocol: VALIDATE (0) followed by the magic number is PyTorch 2; anything else PyTorch 1.
      const first = await r.read(1);
      if (first[0] === 0) {
        const next = await r.read(4);
        if (next.readUInt32LE(0) === VALIDATION_MAGIC) {
          protocol = "torch2";
        } else {
          protocol = "torch1";
          r.unread(Buffer.concat([first, next]));
        }
      } else {
        protocol = "torch1";
        r.unread(first);
      }
    } catch {
      return; // closed before saying anything
    }
    for (;;) {
      let code: number;
      try {
        code = await r.u8();
      } catch {
        return; // the client left between queries: normal
      }
      const query = queryName(protocol, code);
      try {
        switch (query) {
          case "VALIDATE": {
            const magic = await r.u32();
            if (magic !== VALIDATION_MAGIC) throw new ProtocolBreach(`${who} sent VALIDATE with ${magic.toString(16)}, not PyTorch's magic number`);
            break;
          }
          case "PING":
            new SendBuffer().u32(await r.u32()).writeTo(socket);
            break;
          case "SET": {
            const k = await key();
            put(k, await value());
            break;
          }
          case "COMPARE_SET": {
            const k = await key();
            const expected = await value();
            const desired = await value();
            const current = data.get(k);
            let answer: Buffer;
            if (current === undefined) {
              answer = expected.length === 0 ? desired : expected;
              if (expected.length === 0) put(k, desired);
            } else if (current.equals(expected)) {
              put(k, desired);
              answer = desired;
            } else {
              answer = current;
            }
            new SendBuffer().bytes(answer).writeTo(socket);
            break;
          }
          case "GET": {
            const k = await key();
            new SendBuffer().bytes(data.get(k) ?? Buffer.alloc(0)).writeTo(socket);
            break;
          }
          case "ADD": {
            const k = await key();
            const delta = await r.i64();
            const current = data.get(k);
            let base = 0n;
            if (current !== undefined) {
              const text = current.toString("latin1");
              if (!/^-?\d+$/.test(text)) throw new ProtocolBreach(`${who} added to ${JSON.stringify(k)}, whose value is not a number`);
              base = BigInt(text);
            }
            const sum = BigInt.asIntN(64, base + delta);
            put(k, Buffer.from(sum.toString(), "latin1"));
            new SendBuffer().i64(sum).writeTo(socket);
            break;
          }
          case "CHECK": {
            const ks = await keys();
            new SendBuffer().u8(ks.every((k) => data.has(k)) ? CHECK_READY : CHECK_NOT_READY).writeTo(socket);
            break;
          }
          case "WAIT": {
            const ks = await keys();
            const remaining = new Set(ks.filter((k) => !data.has(k)));
            dropWait(socket);
            if (remaining.size === 0) {
              new SendBuffer().u8(STOP_WAITING).writeTo(socket);
            } else {
              const w: PendingWait = { socket, remaining };
              waitOf.set(socket, w);
              for (const k of remaining) {
                const set = waitsByKey.get(k) ?? new Set<PendingWait>();
                set.add(w);
                waitsByKey.set(k, set);
              }
            }
            break;
          }
          case "CANCEL_WAIT":
            dropWait(socket);
            new SendBuffer().u8(WAIT_CANCELED).writeTo(socket);
            break;
          case "GETNUMKEYS":
            new SendBuffer().i64(BigInt(data.size)).writeTo(socket);
            break;
          case "DELETE_KEY": {
            const k = await key();
            new SendBuffer().i64(data.delete(k) ? 1n : 0n).writeTo(socket);
            break;
          }
          case "APPEND": {
            const k = await key();
            const more = await value();
            const current = data.get(k);
            if (current !== undefined && current.length + more.length > MAX_VALUE_BYTES) throw new ProtocolBreach(`${who} appended past ${MAX_VALUE_BYTES} bytes to ${JSON.stringify(k)}`);
            put(k, current === undefined ? more : Buffer.concat([current, more]));
            break;
          }
          case "MULTI_GET": {
            const ks = await keys();
            const out = new SendBuffer();
            for (const k of ks) out.bytes(data.get(k) ?? Buffer.alloc(0));
            out.writeTo(socket);
            break;
          }
          case "MULTI_SET": {
            const n = await r.count(MAX_KEYS_PER_QUERY, "key count");
            for (let i = 0; i < n; i++) {
              const k = await key();
              put(k, await value());
            }
            break;
          }
          case "WATCH_KEY":
          case undefined:
            throw new ProtocolBreach(`${who} sent query ${query ?? code}, which this store does not serve (${protocol} protocol)`);
        }
      } catch (e) {
        if (e instanceof ProtocolBreach) throw e;
        // A read failed mid-query: the client left or sent an impossible length.
        if (r.closed !== undefined) return;
        throw new ProtocolBreach(e instanceof Error ? e.message : String(e));
      }
    }
  }

  await new Promise<void>((resolve, reject) => {
    server.once("error", (e: NodeJS.ErrnoException) => {
      const where = `${options.host ?? "*"}:${options.port}`;
      reject(
        new TunaError(
          "DIST",
          e.code === "EADDRINUSE" ? `the rendezvous store cannot listen on ${where}: the port is in use; choose another --master_port (MASTER_PORT).` : `the rendezvous store cannot listen on ${where}: ${e.message}`,
          { cause: e },
        ),
      );
    });
    server.listen(options.port, options.host, resolve);
  });
  const address = server.address();
  const port = typeof address === "object" && address !== null ? address.port : options.port;
  return {
    port,
    get connections() {
      return sockets.size;
    },
    close() {
      return new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => {
          resolve();
        });
      });
    },
  };
}

class ProtocolBreach extends Error {}
