// How the ranks of a job find each other: a TCPStore on MASTER_ADDR:MASTER_PORT, hosted by torchrun's
// agent (TORCHELASTIC_USE_AGENT_STORE) or else by rank 0. Through it every rank publishes its host and pid,
// rank 0 publishes where its collective hub listens (and, on GPUs, NCCL's unique id), and heartbeats let
// every rank notice a rank that stopped answering. Keys of one attempt live under tuna/attempt_<n>/, so a
// torchrun restart never reads the keys of the attempt before it. Nothing here blocks Node's event loop:
// every wait is a bounded network read.
import { hostname } from "node:os";
import { TunaError } from "../util/errors.ts";
import type { ProcessPlace } from "./launch-env.ts";
import { connectStore, type StoreClient } from "./store/client.ts";
import type { StoreProtocol } from "./store/protocol.ts";
import { startStoreServer, type StoreServer } from "./store/server.ts";

/** torchrun's default rendezvous port. */
export const DEFAULT_MASTER_PORT = 29500;

export interface JobRendezvous {
  readonly store: StoreClient;
  /** A key of this job's attempt. */
  key(name: string): string;
  /** Where rank 0's own listeners (the collective hub) bind, and the address the others reach them by. */
  readonly listenHost: string | undefined;
  readonly advertiseHost: string;
  /** "rank 2 on host-b (pid 4242)" once that rank has joined; "rank 2" before. */
  describeRank(rank: number): string;
  close(): Promise<void>;
}

export interface RendezvousOptions {
  timeoutMs: number;
  /** Default: TUNA_TCPSTORE_PROTOCOL, else torch2. */
  protocol?: StoreProtocol;
  /** Told when the store's connection breaks (its host, rank 0 or the agent, ended). */
  onBroken?: (e: TunaError) => void;
}

export function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\./.test(host);
}

function storeProtocol(env: NodeJS.ProcessEnv): StoreProtocol {
  const raw = env["TUNA_TCPSTORE_PROTOCOL"];
  if (raw === undefined || raw === "") return "torch2";
  if (raw === "torch2" || raw === "torch1") return raw;
  throw new TunaError("CONFIG_INVALID", `TUNA_TCPSTORE_PROTOCOL=${raw}: use torch2 (PyTorch 2's torchrun, the default) or torch1 (PyTorch 1.x).`);
}

export async function joinRendezvous(place: ProcessPlace, options: RendezvousOptions): Promise<JobRendezvous> {
  const host = place.masterAddr ?? "127.0.0.1";
  const port = place.masterPort ?? DEFAULT_MASTER_PORT;
  const protocol = options.protocol ?? storeProtocol(process.env);
  let server: StoreServer | undefined;
  if (place.rank === 0 && !place.agentStore) {
    // Like PyTorch, listen on every interface unless the job is confined to this machine's loopback.
    server = await startStoreServer({ host: isLoopback(host) ? host : undefined, port });
  }
  let store: StoreClient;
  try {
    store = await connectStore({ host, port, timeoutMs: options.timeoutMs, protocol, onBroken: options.onBroken });
  } catch (e) {
    await server?.close();
    throw e;
  }
  const prefix = `tuna/attempt_${place.restartCount}/`;
  const key = (name: string): string => prefix + name;
  const myHost = hostname();
  const known = new Map<number, string>([[place.rank, `rank ${place.rank} on ${myHost} (pid ${process.pid})`]]);
  try {
    await store.set(key(`rank/${place.rank}`), JSON.stringify({ host: myHost, pid: process.pid }));
    // Rank 0 learns everyone's host once, for messages (a bounded wait: a missing rank is named).
    if (place.rank === 0 && place.worldSize > 1) {
      const others = Array.from({ length: place.worldSize - 1 }, (_, i) => i + 1);
      const values = await store.multiGet(others.map((r) => key(`rank/${r}`))).catch((e: unknown) => {
        throw new TunaError("DIST", `rendezvous at ${host}:${port}: not every rank of ${place.worldSize} joined within ${options.timeoutMs / 1000} s.`, { cause: e });
      });
      values.forEach((v, i) => {
        const info = JSON.parse(v.toString("utf8")) as { host: string; pid: number };
        known.set(others[i]!, `rank ${others[i]!} on ${info.host} (pid ${info.pid})`);
      });
    }
  } catch (e) {
    store.close();
    await server?.close();
    throw e;
  }
  return {
    store,
    key,
    // Rank 0's hub: on the store's address when rank 0 hosts the store; else the address rank 0 reaches the
    // agent's store from (its address on the route the others use too).
    listenHost: isLoopback(host) ? host : undefined,
    advertiseHost: server !== undefined ? host : store.localAddress,
    describeRank: (rank) => known.get(rank) ?? `rank ${rank}`,
    async close() {
      store.close();
      await server?.close();
    },
  };
}

export interface Heartbeat {
  /** Stops beating and tells the others this rank left on purpose (never reported as stale). */
  stop(): Promise<void>;
}

/**
 * Every `intervalMs`, this rank bumps its counter in the store and reads everyone's; a rank whose counter has
 * not moved for `staleMs` is reported once through `onStale` (a rank stuck in a kernel or a dead machine
 * that kept its socket open). The counters are read in one MULTI_GET, never blocking the event loop.
 */
export function startHeartbeat(rdzv: JobRendezvous, place: ProcessPlace, options: { intervalMs: number; staleMs: number; onStale: (e: TunaError) => void }): Heartbeat {
  const keys = Array.from({ length: place.worldSize }, (_, r) => rdzv.key(`heartbeat/${r}`));
  const lastSeen = new Map<number, { value: string; at: number }>();
  let stopped = false;
  let beat = 0;
  const tick = async (): Promise<void> => {
    beat++;
    await rdzv.store.set(keys[place.rank]!, String(beat));
    if (!(await rdzv.store.check(keys))) return; // not every rank has beaten yet
    const values = await rdzv.store.multiGet(keys);
    const now = Date.now();
    for (let r = 0; r < values.length; r++) {
      if (r === place.rank) continue;
      const value = values[r]!.toString("latin1");
      if (value === LEFT) continue;
      const seen = lastSeen.get(r);
      if (seen === undefined || seen.value !== value) {
        lastSeen.set(r, { value, at: now });
      } else if (now - seen.at > options.staleMs) {
        stopped = true;
        options.onStale(new TunaError("DIST", `${rdzv.describeRank(r)} has not answered for ${Math.round((now - seen.at) / 1000)} s (heartbeat); it hangs or its machine is gone. The job stops.`));
        return;
      }
    }
  };
  const timer = setInterval(() => {
    if (stopped) return;
    tick().catch(() => undefined); // a broken store is reported by the store's own onBroken
  }, options.intervalMs);
  timer.unref();
  return {
    async stop() {
      stopped = true;
      clearInterval(timer);
      await rdzv.store.set(keys[place.rank]!, LEFT).catch(() => undefined);
    },
  };
}

const LEFT = "left";
