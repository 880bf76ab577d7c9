// The host transport: the CPU reference collective over TCP, a star around rank 0. Rank 0 listens, every
// other rank connects and says who it is; a collective sends each rank's buffer to rank 0, which checks
// that every rank called the same collective (op, sequence number, length), combines in rank order
// (sums in float64, so the result does not depend on arrival order) and sends the result back.
// Bandwidth is not the point (NCCL is): determinism, clear failures and real processes in CI are.
// Every wait is bounded; a rank that dies, hangs or disagrees makes every rank fail with a DIST error
// naming the rank, its host and the collective.
import { connect, createServer, type Server, type Socket } from "node:net";
import { hostname } from "node:os";
import { TunaError, errorMessage } from "../../util/errors.ts";
import type { Collective, CollectiveOp } from "../collective.ts";
import type { StoreClient } from "../store/client.ts";
import { encodeFrame, frameReader, type Frame, type FrameReader } from "./framing.ts";
import { bytesOf } from "../../util/bytes.ts";

export interface HostCollectiveOptions {
  rank: number;
  worldSize: number;
  /**
   * Where rank 0 listens: a fixed address, or a free port that rank 0 publishes in the rendezvous store
   * under `key` (as advertiseHost:port) and the others read from it.
   */
  hub: { kind: "fixed"; host: string; port: number } | { kind: "store"; store: StoreClient; key: string; listenHost: string | undefined; advertiseHost: string };
  /** Bound on every wait: rendezvous and each collective (default 60 s). */
  timeoutMs?: number;
  /**
   * What every rank must agree on (tuna version, configuration hash...): a rank whose identity differs
   * is refused at the rendezvous with both values named.
   */
  identity?: Record<string, string>;
}

const OPS: readonly CollectiveOp[] = ["allReduce", "reduceScatter", "allGather", "broadcast", "barrier"];
const HELLO = 100;
const WELCOME = 101;
const FAILURE = 102;
const RESULT = 103;
const CONNECT_RETRY_MS = 200;

interface Peer {
  rank: number;
  host: string;
  socket: Socket;
  reader: FrameReader;
}

function distError(message: string, cause?: unknown): TunaError {
  return new TunaError("DIST", message, cause === undefined ? undefined : { cause });
}

function opName(op: number): string {
  return OPS[op] ?? (op === RESULT ? "a result" : op === FAILURE ? "a failure report" : `op ${op}`);
}

function send(socket: Socket, seq: number, op: number, payload: Uint8Array): void {
  if (!socket.destroyed) socket.write(encodeFrame(seq, op, payload));
}

function floatsOf(bytes: Buffer): Float32Array {
  const copy = new Uint8Array(bytes.byteLength);
  copy.set(bytes);
  return new Float32Array(copy.buffer, 0, copy.byteLength / 4);
}

/** Joins the group (rank 0 hosts it); resolves once every rank is there and agrees on its identity. */
export async function createHostCollective(options: HostCollectiveOptions): Promise<Collective> {
  const { rank, worldSize } = options;
  if (!Number.isInteger(worldSize) || worldSize < 1 || !Number.isInteger(rank) || rank < 0 || rank >= worldSize) {
    throw distError(`rank ${rank} of world size ${worldSize} is not a valid place in a job.`);
  }
  const timeoutMs = options.timeoutMs ?? 60_000;
  const identity = { worldSize: String(worldSize), ...options.identity };
  const hub = options.hub;
  if (rank === 0) {
    return hub.kind === "fixed" ? hostGroup(options, identity, timeoutMs, hub.host, hub.port) : hostGroup(options, identity, timeoutMs, hub.listenHost, 0, hub);
  }
  if (hub.kind === "fixed") return joinGroup(options, identity, timeoutMs, hub.host, hub.port);
  const published = (await hub.store.get(hub.key)).toString("utf8");
  const address = /^(.+):(\d+)$/.exec(published);
  if (address === null) throw distError(`the rendezvous store holds ${JSON.stringify(published)} under ${hub.key}, not rank 0's host:port.`);
  return joinGroup(options, identity, timeoutMs, address[1]!, Number(address[2]));
}

async function hostGroup(
  options: HostCollectiveOptions,
  identity: Record<string, string>,
  timeoutMs: number,
  listenHost: string | undefined,
  listenPort: number,
  publish?: { store: StoreClient; key: string; advertiseHost: string },
): Promise<Collective> {
  const { worldSize } = options;
  const peers = new Map<number, Peer>();
  const server: Server = createServer();
  let where = `${listenHost ?? "*"}:${listenPort}`;
  await new Promise<void>((resolve, reject) => {
    server.once("error", (e: NodeJS.ErrnoException) => {
      reject(distError(e.code === "EADDRINUSE" ? `rank 0 cannot listen on ${where}: the port is in use; choose another --master_port.` : `rank 0 cannot listen on ${where}: ${e.message}`, e));
    });
    server.listen(listenPort, listenHost, resolve);
  });
  if (publish !== undefined) {
    const port = (server.address() as { port: number }).port;
    where = `${publish.advertiseHost}:${port}`;
    try {
      await publish.store.set(publish.key, where);
    } catch (e) {
      server.close();
      throw e;
    }
  }
  try {
    await new Promise<void>((resolve, reject) => {
      if (worldSize === 1) {
        resolve();
        return;
      }
      const timer = setTimeout(() => {
        const missing = Array.from({ length: worldSize - 1 }, (_, i) => i + 1).filter((r) => !peers.has(r));
        reject(distError(`rendezvous at ${where}: rank(s) ${missing.join(", ")} did not join within ${timeoutMs / 1000} s (of ${worldSize}).`));
      }, timeoutMs);
      const refuse = (socket: Socket, message: string): void => {
        send(socket, 0, FAILURE, Buffer.from(message));
        socket.end();
        clearTimeout(timer);
        reject(distError(message));
      };
      server.on("connection", (socket) => {
        socket.setNoDelay(true);
        const reader = frameReader(socket, `a rank connecting from ${socket.remoteAddress ?? "?"}`);
        reader
          .next(timeoutMs, () => "its hello")
          .then((frame) => {
            const hello = JSON.parse(frame.payload.toString("utf8")) as { rank: number; host: string; identity: Record<string, string> };
            if (frame.op !== HELLO) {
              refuse(socket, `a connection to ${where} sent ${opName(frame.op)} instead of a hello.`);
              return;
            }
            for (const key of new Set([...Object.keys(identity), ...Object.keys(hello.identity)])) {
              if (identity[key] !== hello.identity[key]) {
                refuse(socket, `rank ${hello.rank} on ${hello.host} has ${key} ${JSON.stringify(hello.identity[key])} but rank 0 has ${JSON.stringify(identity[key])}; every rank must run the same tuna with the same configuration.`);
                return;
              }
            }
            if (!Number.isInteger(hello.rank) || hello.rank < 1 || hello.rank >= worldSize || peers.has(hello.rank)) {
              refuse(socket, `rank ${hello.rank} on ${hello.host} joined twice or is outside the world of ${worldSize}.`);
              return;
            }
            peers.set(hello.rank, { rank: hello.rank, host: hello.host, socket, reader: frameReaderFor(reader, hello.rank, hello.host) });
            if (peers.size === worldSize - 1) {
              clearTimeout(timer);
              resolve();
            }
          })
          .catch((e: unknown) => {
            socket.destroy();
            clearTimeout(timer);
            reject(distError(`rendezvous at ${where}: ${errorMessage(e)}`, e));
          });
      });
    });
  } catch (e) {
    server.close();
    for (const p of peers.values()) p.socket.destroy();
    throw e;
  }
  server.close();
  for (const p of peers.values()) send(p.socket, 0, WELCOME, new Uint8Array(0));
  return rootCollective(options, [...peers.values()].sort((a, b) => a.rank - b.rank), timeoutMs);
}

/** The reader whose errors name the peer's rank and host. */
function frameReaderFor(reader: FrameReader, rank: number, host: string): FrameReader {
  return {
    get closed() {
      return reader.closed;
    },
    next: (timeoutMs, what) =>
      reader.next(timeoutMs, what).catch((e: unknown) => {
        throw distError(`rank ${rank} on ${host}: ${errorMessage(e)}`, e);
      }),
  };
}

async function joinGroup(options: HostCollectiveOptions, identity: Record<string, string>, timeoutMs: number, host: string, port: number): Promise<Collective> {
  const where = `${host}:${port}`;
  const deadline = Date.now() + timeoutMs;
  let socket: Socket | undefined;
  let lastError = "";
  while (socket === undefined) {
    try {
      socket = await new Promise<Socket>((resolve, reject) => {
        const s = connect({ host, port });
        s.once("connect", () => {
          resolve(s);
        });
        s.once("error", reject);
      });
    } catch (e) {
      lastError = errorMessage(e);
      if (Date.now() > deadline) throw distError(`rank ${options.rank} could not reach rank 0 at ${where} within ${timeoutMs / 1000} s (${lastError}); check MASTER_ADDR/MASTER_PORT and that rank 0 started.`, e);
      await new Promise((r) => setTimeout(r, CONNECT_RETRY_MS));
    }
  }
  socket.setNoDelay(true);
  const reader = frameReaderFor(frameReader(socket, `rank 0 at ${where}`), 0, where);
  send(socket, 0, HELLO, Buffer.from(JSON.stringify({ rank: options.rank, host: hostname(), identity })));
  const answer = await reader.next(Math.max(1, deadline - Date.now()) + timeoutMs, () => "the other ranks to join").catch((e: unknown) => {
    socket.destroy();
    throw e;
  });
  if (answer.op === FAILURE) {
    socket.destroy();
    throw distError(answer.payload.toString("utf8"));
  }
  return memberCollective(options, socket, reader, timeoutMs);
}

/**
 * Runs calls one after another in the order they were made (a prefetch may be in flight when the next call
 * comes), as collectives on one stream do: every rank then carries them in the same sequence.
 */
function callsInOrder(): <T>(call: () => Promise<T>) => Promise<T> {
  let tail: Promise<unknown> = Promise.resolve();
  return (call) => {
    const result = tail.then(call);
    tail = result.catch(() => undefined);
    return result;
  };
}

/** What rank 0 runs: gather every rank's buffer for collective #seq, check, combine, answer. */
function rootCollective(options: HostCollectiveOptions, peers: Peer[], timeoutMs: number): Collective {
  const inOrder = callsInOrder();
  let seq = 0;
  let broken: TunaError | undefined;
  const abortAll = (e: TunaError): never => {
    broken ??= e;
    for (const p of peers) {
      send(p.socket, seq, FAILURE, Buffer.from(`rank 0 stopped the job: ${broken.message}`));
      p.socket.end();
    }
    throw broken;
  };
  const gather = async (op: number, own: Uint8Array, sameLength: boolean, waitMs = timeoutMs): Promise<Buffer[]> => {
    if (broken !== undefined) throw broken;
    seq++;
    const parts: Buffer[] = [Buffer.from(own.buffer, own.byteOffset, own.byteLength)];
    for (const p of peers) {
      let frame: Frame;
      try {
        frame = await p.reader.next(waitMs, () => `its ${opName(op)} #${seq}`);
      } catch (e) {
        return abortAll(e instanceof TunaError ? distError(`${e.message} (during ${opName(op)} #${seq})`, e) : distError(errorMessage(e), e));
      }
      if (frame.op !== op || frame.seq !== seq) {
        return abortAll(distError(`rank ${p.rank} on ${p.host} called ${opName(frame.op)} #${frame.seq} while rank 0 called ${opName(op)} #${seq}; the ranks run different code or configurations.`));
      }
      if (sameLength && frame.payload.byteLength !== own.byteLength) {
        return abortAll(distError(`rank ${p.rank} on ${p.host} gave ${frame.payload.byteLength / 4} elements to ${opName(op)} #${seq}, rank 0 gave ${own.byteLength / 4}.`));
      }
      parts.push(frame.payload);
    }
    return parts;
  };
  const answer = (payload: Uint8Array): void => {
    for (const p of peers) send(p.socket, seq, RESULT, payload);
  };
  const sumInto = (data: Float32Array, parts: Buffer[]): void => {
    const acc = Float64Array.from(data);
    for (const part of parts.slice(1)) {
      const values = floatsOf(part);
      for (let i = 0; i < acc.length; i++) acc[i]! += values[i]!;
    }
    for (let i = 0; i < acc.length; i++) data[i] = acc[i]!;
  };
  return {
    rank: 0,
    worldSize: options.worldSize,
    allReduceSum(data, options) {
      return inOrder(async () => {
        sumInto(data, await gather(OPS.indexOf("allReduce"), bytesOf(data), true, options?.waitMs));
        answer(bytesOf(data));
      });
    },
    reduceScatterSum(data) {
      return inOrder(async () => {
        checkDivisible(data, options.worldSize);
        const sum = data.slice();
        sumInto(sum, await gather(OPS.indexOf("reduceScatter"), bytesOf(data), true));
        answer(bytesOf(sum));
        return sum.slice(0, sum.length / options.worldSize);
      });
    },
    allGather(local) {
      return inOrder(async () => {
        const parts = await gather(OPS.indexOf("allGather"), bytesOf(local), true);
        const all = Buffer.concat(parts);
        answer(all);
        return floatsOf(all);
      });
    },
    broadcast(data, root) {
      return inOrder(async () => {
        checkRoot(root, options.worldSize);
        const parts = await gather(OPS.indexOf("broadcast"), data, true);
        const chosen = parts[root]!;
        data.set(chosen);
        answer(chosen);
      });
    },
    barrier() {
      return inOrder(async () => {
        await gather(OPS.indexOf("barrier"), new Uint8Array(0), true);
        answer(new Uint8Array(0));
      });
    },
    abort(reason) {
      broken ??= reason;
      for (const p of peers) {
        send(p.socket, seq, FAILURE, Buffer.from(`rank 0 stopped the job: ${reason.message}`));
        p.socket.end();
        p.socket.destroy();
      }
    },
    close() {
      broken ??= distError("the collective was closed");
      for (const p of peers) p.socket.end();
      return Promise.resolve();
    },
  };
}

/** What every other rank runs: send its buffer for collective #seq to rank 0 and wait for the result. */
function memberCollective(options: HostCollectiveOptions, socket: Socket, reader: FrameReader, timeoutMs: number): Collective {
  const inOrder = callsInOrder();
  let seq = 0;
  let broken: TunaError | undefined;
  const exchange = async (op: number, payload: Uint8Array, waitMs = timeoutMs): Promise<Buffer> => {
    if (broken !== undefined) throw broken;
    seq++;
    send(socket, seq, op, payload);
    let frame: Frame;
    try {
      // Rank 0 sees which rank is late and tells everyone; the others wait half as long again for that verdict.
      frame = await reader.next(waitMs * 1.5, () => `the result of ${opName(op)} #${seq}`);
    } catch (e) {
      broken ??= e instanceof TunaError ? e : distError(errorMessage(e), e);
      socket.destroy();
      throw broken;
    }
    if (frame.op === FAILURE) {
      broken ??= distError(frame.payload.toString("utf8"));
      socket.destroy();
      throw broken;
    }
    return frame.payload;
  };
  return {
    rank: options.rank,
    worldSize: options.worldSize,
    allReduceSum(data, options) {
      return inOrder(async () => {
        data.set(floatsOf(await exchange(OPS.indexOf("allReduce"), bytesOf(data), options?.waitMs)));
      });
    },
    reduceScatterSum(data) {
      return inOrder(async () => {
        checkDivisible(data, options.worldSize);
        const sum = floatsOf(await exchange(OPS.indexOf("reduceScatter"), bytesOf(data)));
        const n = sum.length / options.worldSize;
        return sum.slice(options.rank * n, (options.rank + 1) * n);
      });
    },
    allGather(local) {
      return inOrder(async () => {
        return floatsOf(await exchange(OPS.indexOf("allGather"), bytesOf(local)));
      });
    },
    broadcast(data, root) {
      return inOrder(async () => {
        checkRoot(root, options.worldSize);
        data.set(await exchange(OPS.indexOf("broadcast"), data));
      });
    },
    barrier() {
      return inOrder(async () => {
        await exchange(OPS.indexOf("barrier"), new Uint8Array(0));
      });
    },
    abort(reason) {
      broken ??= reason;
      socket.destroy();
    },
    close() {
      broken ??= distError("the collective was closed");
      socket.end();
      return Promise.resolve();
    },
  };
}

function checkDivisible(data: Float32Array, worldSize: number): void {
  if (data.length % worldSize !== 0) throw new TunaError("INTERNAL", `reduceScatter: ${data.length} elements do not split evenly over ${worldSize} ranks`);
}

function checkRoot(root: number, worldSize: number): void {
  if (!Number.isInteger(root) || root < 0 || root >= worldSize) throw new TunaError("INTERNAL", `broadcast: root ${root} is not a rank of ${worldSize}`);
}
