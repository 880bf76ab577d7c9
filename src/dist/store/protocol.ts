// PyTorch's TCPStore protocol (torch/csrc/distributed/c10d/TCPStoreBackend.hpp), the query codes of its
// two generations. PyTorch 2 (what torchrun's agent store speaks today) starts every connection with
// VALIDATE + a magic number and dropped WATCH_KEY; PyTorch 1.x numbers the queries from SET = 0. The
// 1.x codes below were read off the wire of Debian's torch 1.13 (tools/interop/tcpstore-torch.py --capture).
// Every user key is sent with a "/" in front (TCPStore's keyPrefix_), so Python's store.get("x") and
// tuna's get("x") name the same entry.

export type StoreProtocol = "torch2" | "torch1";

export type Query =
  | "VALIDATE"
  | "SET"
  | "COMPARE_SET"
  | "GET"
  | "ADD"
  | "CHECK"
  | "WAIT"
  | "GETNUMKEYS"
  | "WATCH_KEY"
  | "DELETE_KEY"
  | "APPEND"
  | "MULTI_GET"
  | "MULTI_SET"
  | "CANCEL_WAIT"
  | "PING";

const TORCH2: readonly Query[] = ["VALIDATE", "SET", "COMPARE_SET", "GET", "ADD", "CHECK", "WAIT", "GETNUMKEYS", "DELETE_KEY", "APPEND", "MULTI_GET", "MULTI_SET", "CANCEL_WAIT", "PING"];
// PyTorch 1.13's store serves these only: a later query (MULTI_GET...) makes it reset the connection (seen
// against Debian's torch 1.13), so tuna's client does those one key at a time on this protocol.
const TORCH1: readonly Query[] = ["SET", "COMPARE_SET", "GET", "ADD", "CHECK", "WAIT", "GETNUMKEYS", "WATCH_KEY", "DELETE_KEY"];

/** Whether the protocol has the query (PyTorch 1's store lacks APPEND, MULTI_GET, MULTI_SET and CANCEL_WAIT). */
export function hasQuery(protocol: StoreProtocol, query: Query): boolean {
  return (protocol === "torch2" ? TORCH2 : TORCH1).includes(query);
}

export function queryCode(protocol: StoreProtocol, query: Query): number {
  const code = (protocol === "torch2" ? TORCH2 : TORCH1).indexOf(query);
  if (code < 0) throw new Error(`internal: ${query} is not a ${protocol} store query`);
  return code;
}

export function queryName(protocol: StoreProtocol, code: number): Query | undefined {
  return (protocol === "torch2" ? TORCH2 : TORCH1)[code];
}

/** What a PyTorch 2 client sends right after VALIDATE. */
export const VALIDATION_MAGIC = 0x3c85f7ce;

/** CHECK's answer. */
export const CHECK_READY = 0;
export const CHECK_NOT_READY = 1;
/** WAIT's answers: the keys are there, or the wait was cancelled. */
export const STOP_WAITING = 0;
export const WAIT_CANCELED = 1;

/** TCPStore's prefix for user keys. */
export const KEY_PREFIX = "/";
