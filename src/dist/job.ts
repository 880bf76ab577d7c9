// A rank's membership of a distributed job, put together: the rendezvous store, the host collective whose
// hub rank 0 publishes there, and heartbeats. Anything that says the job is over (a rank stops answering,
// the store's host ends) aborts the collective, so a rank waiting in a collective fails at once with that
// reason instead of at the end of its own timeout.
import type { Collective } from "./collective.ts";
import { createHostCollective } from "./host/star.ts";
import type { ProcessPlace } from "./launch-env.ts";
import { joinRendezvous, startHeartbeat, type JobRendezvous } from "./rendezvous.ts";
import type { TunaError } from "../util/errors.ts";

export interface JobMembership {
  readonly collective: Collective;
  readonly rendezvous: JobRendezvous;
  /** Another collective of this job (NCCL on GPUs): stopped with the job, closed before it. */
  adopt(other: Collective): void;
  /** The normal end: every rank reaches this barrier, then leaves. */
  leave(): Promise<void>;
  /** After a failure: leave at once without waiting for the others. */
  close(): Promise<void>;
}

export interface JoinOptions {
  /** Bound on the rendezvous, on every collective and on a rank's silence (ddp_timeout). */
  timeoutMs: number;
  /** What every rank must agree on (tuna version, configuration hash). */
  identity: Record<string, string>;
}

export async function joinJob(place: ProcessPlace, options: JoinOptions): Promise<JobMembership> {
  // The job's collectives: the host one first, then any adopted (NCCL); a stop aborts them all.
  const collectives: Collective[] = [];
  let stopReason: TunaError | undefined;
  const join = (c: Collective): void => {
    collectives.push(c);
    if (stopReason !== undefined) c.abort(stopReason);
  };
  const stop = (e: TunaError): void => {
    stopReason ??= e;
    for (const c of collectives) c.abort(e);
  };
  const rendezvous = await joinRendezvous(place, { timeoutMs: options.timeoutMs, onBroken: stop });
  let host: Collective;
  try {
    host = await createHostCollective({
      rank: place.rank,
      worldSize: place.worldSize,
      timeoutMs: options.timeoutMs,
      identity: options.identity,
      hub: { kind: "store", store: rendezvous.store, key: rendezvous.key("host-collective"), listenHost: rendezvous.listenHost, advertiseHost: rendezvous.advertiseHost },
    });
  } catch (e) {
    await rendezvous.close();
    throw e;
  }
  join(host);
  const heartbeat = startHeartbeat(rendezvous, place, { intervalMs: Math.min(5000, options.timeoutMs / 4), staleMs: options.timeoutMs, onStale: stop });
  const close = async (): Promise<void> => {
    await heartbeat.stop();
    // The adopted ones first, the host collective last.
    for (const c of collectives.slice(1)) await c.close().catch(() => undefined);
    await host.close();
    await rendezvous.close();
  };
  return {
    collective: host,
    rendezvous,
    adopt: join,
    async leave() {
      await host.barrier();
      await close();
    },
    close,
  };
}
