// A TCPStore client: talks to tuna's store (server.ts) or to the one a torchrun agent hosts, in PyTorch's
// wire protocol. One query at a time per connection (like PyTorch's activeOpLock_); every query is bounded
// by the store's timeout and a late or lost answer is a DIST error naming the query, the key and the
// address. get() waits for the key first, as PyTorch's get does.
import { connect, type Socket } from "node:net";
import { TunaError, errorMessage } from "../../util/errors.ts";
import { CHECK_READY, KEY_PREFIX, STOP_WAITING, VALIDATION_MAGIC, WAIT_CANCELED, hasQuery, queryCode, type Query, type StoreProtocol } from "./protocol.ts";
import { MAX_VALUE_BYTES, ReadTimeout, SendBuffer, SocketReader } from "./wire.ts";

export interface StoreClient {
  /** host:port of the store. */
  readonly address: string;
  /** This end's address on the connection (the address others can reach this machine by). */
  readonly localAddress: string;
  set(key: string, value: Uint8Array | string): Promise<void>;
  /** Waits (within the timeout) for the key, then returns its value. */
  get(key: string): Promise<Buffer>;
  /** Adds to a counter (created at 0) and returns the new value. */
  add(key: string, delta: number): Promise<number>;
  compareSet(key: string, expected: Uint8Array | string, desired: Uint8Array | string): Promise<Buffer>;
  check(keys: readonly string[]): Promise<boolean>;
  /** Resolves once every key exists; a DIST error naming the missing keys after `timeoutMs`. */
  wait(keys: readonly string[], timeoutMs?: number): Promise<void>;
  multiGet(keys: readonly string[]): Promise<Buffer[]>;
  multiSet(entries: readonly (readonly [string, Uint8Array | string])[]): Promise<void>;
  deleteKey(key: string): Promise<boolean>;
  numKeys(): Promise<number>;
  append(key: string, value: Uint8Array | string): Promise<void>;
  /** Set when the connection broke (the store's host ended): every later query fails with it. */
  readonly broken: TunaError | undefined;
  close(): void;
}

export interface StoreClientOptions {
  host: string;
  port: number;
  /** Bound on connecting (retried until then: the store may start later) and on every query. */
  timeoutMs: number;
  /** Default torch2; torch1 for a torchrun agent of PyTorch 1.x. */
  protocol?: StoreProtocol;
  /** Told when the connection to the store breaks outside a query. */
  onBroken?: (e: TunaError) => void;
}

const CONNECT_RETRY_MS = 100;

function distError(message: string, cause?: unknown): TunaError {
  return new TunaError("DIST", message, cause === undefined ? undefined : { cause });
}

function asBytes(v: Uint8Array | string): Uint8Array {
  return typeof v === "string" ? Buffer.from(v, "utf8") : v;
}

export async function connectStore(options: StoreClientOptions): Promise<StoreClient> {
  const protocol = options.protocol ?? "torch2";
  const address = `${options.host}:${options.port}`;
  const deadline = Date.now() + options.timeoutMs;
  let socket: Socket | undefined;
  let lastError: unknown;
  while (socket === undefined) {
    try {
      socket = await new Promise<Socket>((resolve, reject) => {
        const s = connect({ host: options.host, port: options.port });
        s.once("connect", () => {
          s.removeListener("error", reject);
          resolve(s);
        });
        s.once("error", reject);
      });
    } catch (e) {
      lastError = e;
      if (Date.now() + CONNECT_RETRY_MS > deadline) {
        throw distError(
          `could not reach the rendezvous store at ${address} within ${options.timeoutMs / 1000} s (${errorMessage(lastError)}); check MASTER_ADDR/MASTER_PORT and that rank 0 (or the launcher's agent) started.`,
          lastError,
        );
      }
      await new Promise((r) => setTimeout(r, CONNECT_RETRY_MS));
    }
  }
  const s = socket;
  s.setNoDelay(true);
  const reader = new SocketReader(s, `the rendezvous store at ${address}`);
  let broken: TunaError | undefined;
  let closing = false;
  s.on("close", () => {
    if (closing || broken !== undefined) return;
    broken = distError(`the rendezvous store at ${address} closed the connection (the process hosting it, rank 0 or the launcher's agent, ended).`);
    options.onBroken?.(broken);
  });
  s.on("error", () => undefined);

  const code = (q: Query): number => queryCode(protocol, q);
  const prefixed = (k: string): string => KEY_PREFIX + k;
  let queue: Promise<unknown> = Promise.resolve();
  /** Runs one query at a time; a failure names the query and breaks the connection for good. */
  const run = <T>(what: string, body: () => Promise<T>): Promise<T> => {
    const result = queue.then(async () => {
      if (broken !== undefined) throw broken;
      try {
        return await body();
      } catch (e) {
        if (e instanceof TunaError) throw e;
        broken ??= distError(`rendezvous store at ${address}, ${what}: ${errorMessage(e)}`, e);
        s.destroy();
        throw broken;
      }
    });
    queue = result.catch(() => undefined);
    return result;
  };
  const timeout = options.timeoutMs;

  const waitKeys = async (keys: readonly string[], timeoutMs: number): Promise<void> => {
    const msg = new SendBuffer().u8(code("WAIT")).count(keys.length);
    for (const k of keys) msg.key(prefixed(k));
    msg.writeTo(s);
    let answer: number;
    try {
      answer = await reader.u8(timeoutMs);
    } catch (e) {
      if (!(e instanceof ReadTimeout)) throw e;
      const message = `waited ${timeoutMs / 1000} s at the rendezvous store ${address} for ${keys.map((k) => JSON.stringify(k)).join(", ")}, which no rank set; a rank is missing or failed before it got there.`;
      if (protocol === "torch1") {
        // PyTorch 1's store cannot cancel a wait: its answer would come later, so this connection is done.
        broken = distError(message);
        s.destroy();
        throw broken;
      }
      // PyTorch's dance: cancel, then take the stop-waiting answer that may have crossed the cancel.
      new SendBuffer().u8(code("CANCEL_WAIT")).writeTo(s);
      let next = await reader.u8(timeout, () => "the answer to CANCEL_WAIT");
      if (next === STOP_WAITING) next = await reader.u8(timeout, () => "the answer to CANCEL_WAIT");
      if (next !== WAIT_CANCELED) throw new Error(`the store answered CANCEL_WAIT with ${next}`);
      throw distError(message);
    }
    if (answer !== STOP_WAITING) throw new Error(`the store answered WAIT with ${answer}`);
  };

  if (protocol === "torch2") {
    // What PyTorch 2's client does on connecting: validate, then ping to prove the connection works.
    await run("VALIDATE", async () => {
      new SendBuffer().u8(code("VALIDATE")).u32(VALIDATION_MAGIC).writeTo(s);
      const nonce = process.pid >>> 0;
      new SendBuffer().u8(code("PING")).u32(nonce).writeTo(s);
      const back = await reader.u32(timeout, () => "the answer to PING");
      if (back !== nonce) throw new Error(`the store answered PING ${nonce} with ${back}`);
    });
  }

  return {
    address,
    localAddress: s.localAddress ?? "127.0.0.1",
    get broken() {
      return broken;
    },
    set: (key, value) =>
      run(`SET ${key}`, () => {
        new SendBuffer().u8(code("SET")).key(prefixed(key)).bytes(asBytes(value)).writeTo(s);
        return Promise.resolve();
      }),
    get: (key) =>
      run(`GET ${key}`, async () => {
        await waitKeys([key], timeout);
        new SendBuffer().u8(code("GET")).key(prefixed(key)).writeTo(s);
        return reader.bytes(MAX_VALUE_BYTES, "value", timeout);
      }),
    add: (key, delta) =>
      run(`ADD ${key}`, async () => {
        new SendBuffer().u8(code("ADD")).key(prefixed(key)).i64(BigInt(delta)).writeTo(s);
        return Number(await reader.i64(timeout, () => `the answer to ADD ${key}`));
      }),
    compareSet: (key, expected, desired) =>
      run(`COMPARE_SET ${key}`, async () => {
        new SendBuffer().u8(code("COMPARE_SET")).key(prefixed(key)).bytes(asBytes(expected)).bytes(asBytes(desired)).writeTo(s);
        return reader.bytes(MAX_VALUE_BYTES, "value", timeout);
      }),
    check: (keys) =>
      run("CHECK", async () => {
        const msg = new SendBuffer().u8(code("CHECK")).count(keys.length);
        for (const k of keys) msg.key(prefixed(k));
        msg.writeTo(s);
        return (await reader.u8(timeout, () => "the answer to CHECK")) === CHECK_READY;
      }),
    wait: (keys, timeoutMs) => run("WAIT", () => waitKeys(keys, timeoutMs ?? timeout)),
    multiGet: (keys) =>
      run("MULTI_GET", async () => {
        await waitKeys(keys, timeout);
        if (!hasQuery(protocol, "MULTI_GET")) {
          // PyTorch 1's store: one GET per key (the WAIT above made sure they all exist).
          const values: Buffer[] = [];
          for (const k of keys) {
            new SendBuffer().u8(code("GET")).key(prefixed(k)).writeTo(s);
            values.push(await reader.bytes(MAX_VALUE_BYTES, "value", timeout));
          }
          return values;
        }
        const msg = new SendBuffer().u8(code("MULTI_GET")).count(keys.length);
        for (const k of keys) msg.key(prefixed(k));
        msg.writeTo(s);
        const out: Buffer[] = [];
        for (let i = 0; i < keys.length; i++) out.push(await reader.bytes(MAX_VALUE_BYTES, "value", timeout));
        return out;
      }),
    multiSet: (entries) =>
      run("MULTI_SET", () => {
        if (!hasQuery(protocol, "MULTI_SET")) {
          for (const [k, v] of entries) new SendBuffer().u8(code("SET")).key(prefixed(k)).bytes(asBytes(v)).writeTo(s);
          return Promise.resolve();
        }
        const msg = new SendBuffer().u8(code("MULTI_SET")).count(entries.length);
        for (const [k, v] of entries) msg.key(prefixed(k)).bytes(asBytes(v));
        msg.writeTo(s);
        return Promise.resolve();
      }),
    deleteKey: (key) =>
      run(`DELETE_KEY ${key}`, async () => {
        new SendBuffer().u8(code("DELETE_KEY")).key(prefixed(key)).writeTo(s);
        return (await reader.i64(timeout, () => "the answer to DELETE_KEY")) === 1n;
      }),
    numKeys: () =>
      run("GETNUMKEYS", async () => {
        new SendBuffer().u8(code("GETNUMKEYS")).writeTo(s);
        return Number(await reader.i64(timeout, () => "the answer to GETNUMKEYS"));
      }),
    append: (key, value) =>
      run(`APPEND ${key}`, () => {
        if (!hasQuery(protocol, "APPEND")) throw new TunaError("DIST", `the rendezvous store at ${address} speaks PyTorch 1's protocol, which has no APPEND.`);
        new SendBuffer().u8(code("APPEND")).key(prefixed(key)).bytes(asBytes(value)).writeTo(s);
        return Promise.resolve();
      }),
    close() {
      closing = true;
      s.end();
      s.destroy();
    },
  };
}
