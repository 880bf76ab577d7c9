// The server's work queue: one generation at a time (each served model's decoder has one KV cache, and the
// backend is one device), the rest waiting in order, at most `limit` of them besides the one running; a full
// queue refuses at once (HTTP 429) instead of waiting unbounded.
import { HttpError } from "./requests.ts";

export interface WorkQueue {
  /** Runs `job` after the jobs before it; rejects with HttpError 429 when `limit` jobs already wait behind the running one. */
  run<T>(job: () => Promise<T>): Promise<T>;
  readonly waiting: number;
}

export function createWorkQueue(limit: number): WorkQueue {
  let tail: Promise<unknown> = Promise.resolve();
  let waiting = 0; // the running job and those behind it
  return {
    get waiting() {
      return waiting;
    },
    run<T>(job: () => Promise<T>): Promise<T> {
      if (waiting > limit) {
        return Promise.reject(new HttpError(429, `the server is busy: one request is running and ${limit} are waiting (--max_queue ${limit}); retry later`, "rate_limit_error", "queue_full"));
      }
      waiting++;
      const result = tail.then(
        () => job(),
        () => job(),
      );
      tail = result.then(
        () => undefined,
        () => undefined,
      );
      const done = (): void => {
        waiting--;
      };
      result.then(done, done);
      return result;
    },
  };
}
