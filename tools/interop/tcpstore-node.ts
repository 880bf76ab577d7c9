// The Node side of tools/interop/tcpstore-torch.py: `serve` hosts tuna's store on a free port and prints
// it; `client HOST PORT PROTOCOL` runs tuna's client against a PyTorch store and prints what it read.
import { startStoreServer } from "../../src/dist/store/server.ts";
import { connectStore } from "../../src/dist/store/client.ts";
import type { StoreProtocol } from "../../src/dist/store/protocol.ts";

const [mode, host, port, protocol] = process.argv.slice(2);
if (mode === "serve") {
  const server = await startStoreServer({ host: "127.0.0.1", port: 0, onProblem: (m) => { console.error(`problem: ${m}`); } });
  console.log(JSON.stringify({ port: server.port }));
  process.stdin.resume();
  process.stdin.on("end", () => void server.close());
} else if (mode === "client" && host !== undefined && port !== undefined) {
  const c = await connectStore({ host, port: Number(port), timeoutMs: 10_000, protocol: protocol as StoreProtocol });
  // The Python side set "from_torch" and the counter "count" (to 10) before starting this client.
  const fromTorch = (await c.get("from_torch")).toString();
  const count = await c.add("count", 5);
  await c.set("from_tuna", "hello torch");
  const swapped = (await c.compareSet("from_torch", "hello tuna", "swapped")).toString();
  const keys = await c.numKeys();
  await c.multiSet([["ms_a", "1"], ["ms_b", "2"]]);
  const multi = (await c.multiGet(["from_tuna", "ms_a", "ms_b"])).map(String);
  let waitError = "";
  await c.wait(["never_set"], 300).catch((e: unknown) => (waitError = e instanceof Error ? e.message : String(e)));
  const deleted = protocol === "torch1" ? "skipped" : await c.deleteKey("to_delete");
  console.log(JSON.stringify({ fromTorch, count, swapped, keys, multi, waitTimedOut: waitError.includes("never_set"), deleted }));
  c.close();
} else {
  console.error("usage: tcpstore-node.ts serve | client HOST PORT PROTOCOL");
  process.exit(2);
}
