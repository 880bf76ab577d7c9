// The TCPStore server and client: PyTorch's semantics (decimal counters, compare-set, waits that answer when
// every key exists, cancel), both protocol generations, bytes captured off the wire of a real PyTorch 1.13
// client and server (tools/interop/tcpstore-torch.py) answered byte for byte, and clients that break the
// protocol losing only their own connection.
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect, type Socket } from "node:net";
import { startStoreServer, type StoreServer } from "../../src/dist/store/server.ts";
import { connectStore, type StoreClient } from "../../src/dist/store/client.ts";
import type { StoreProtocol } from "../../src/dist/store/protocol.ts";
import { TunaError } from "../../src/util/errors.ts";
import { freePort } from "./free-port.ts";

async function withStore(body: (server: StoreServer, client: (protocol?: StoreProtocol, timeoutMs?: number) => Promise<StoreClient>) => Promise<void>): Promise<void> {
  const server = await startStoreServer({ host: "127.0.0.1", port: 0 });
  const clients: StoreClient[] = [];
  try {
    await body(server, async (protocol, timeoutMs = 5000) => {
      const c = await connectStore({ host: "127.0.0.1", port: server.port, timeoutMs, protocol });
      clients.push(c);
      return c;
    });
  } finally {
    for (const c of clients) c.close();
    await server.close();
  }
}

for (const protocol of ["torch2", "torch1"] as const) {
  test(`store (${protocol}): set/get, counters as decimal text, compare-set, check, delete, append, multi-get/set`, async () => {
    await withStore(async (_server, client) => {
      const a = await client(protocol);
      const b = await client(protocol);
      await a.set("k", "vv");
      assert.equal((await b.get("k")).toString(), "vv");
      assert.equal(await a.add("n", 5), 5);
      assert.equal(await b.add("n", -2), 3);
      assert.equal((await a.get("n")).toString(), "3", "ADD keeps the counter as decimal text, like PyTorch");
      // compare-set: a mismatch returns the current value and changes nothing; a match sets.
      assert.equal((await a.compareSet("k", "nope", "x")).toString(), "vv");
      assert.equal((await a.compareSet("k", "vv", "ww")).toString(), "ww");
      assert.equal((await b.get("k")).toString(), "ww");
      // a missing key: an empty expectation creates it, any other returns the expectation.
      assert.equal((await a.compareSet("fresh", "", "made")).toString(), "made");
      assert.equal((await a.compareSet("absent", "e", "d")).toString(), "e");
      assert.equal(await a.check(["k", "absent"]), false);
      assert.equal(await a.check(["k", "n"]), true);
      assert.equal(await a.numKeys(), 3);
      assert.equal(await b.deleteKey("fresh"), true);
      assert.equal(await b.deleteKey("fresh"), false);
      if (protocol === "torch2") {
        await a.append("log", "ab");
        await b.append("log", "cd");
        assert.equal((await a.get("log")).toString(), "abcd");
      } else {
        // PyTorch 1's store has no APPEND (nor MULTI_GET/MULTI_SET: those go key by key below).
        await assert.rejects(a.append("log", "ab"), /PyTorch 1's protocol, which has no APPEND/);
      }
      await a.multiSet([
        ["m1", "one"],
        ["m2", new Uint8Array([0, 255, 7])],
      ]);
      const [m1, m2] = await b.multiGet(["m1", "m2"]);
      assert.equal(m1!.toString(), "one");
      assert.deepEqual([...m2!], [0, 255, 7]);
    });
  });
}

test("store: a wait answers when the last of its keys is set by another client; get waits for its key", async () => {
  await withStore(async (_server, client) => {
    const a = await client();
    const b = await client();
    let done = false;
    const waiting = a.wait(["x", "y"]).then(() => {
      done = true;
    });
    await b.set("x", "1");
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(done, false, "one of two keys is not enough");
    await b.set("y", "2");
    await waiting;
    const later = a.get("z");
    await b.set("z", "late");
    assert.equal((await later).toString(), "late");
  });
});

test("store: a wait that times out is a DIST error naming the keys, and the connection goes on (PyTorch 2 cancels the wait)", async () => {
  await withStore(async (_server, client) => {
    const a = await client("torch2");
    const b = await client("torch2");
    const started = Date.now();
    await assert.rejects(a.wait(["never"], 200), (e: unknown) => e instanceof TunaError && e.code === "DIST" && /"never"/.test(e.message) && /0\.2 s/.test(e.message));
    assert.ok(Date.now() - started < 2000);
    await b.set("never", "now");
    await a.set("after", "ok");
    assert.equal((await a.get("after")).toString(), "ok", "the cancelled wait's late answer did not shift later answers");
    assert.equal((await a.get("never")).toString(), "now");
  });
});

test("store: a client whose store ends is told so, and every later query fails with that DIST error", async () => {
  const server = await startStoreServer({ host: "127.0.0.1", port: 0 });
  let told: TunaError | undefined;
  const c = await connectStore({ host: "127.0.0.1", port: server.port, timeoutMs: 2000, onBroken: (e) => (told = e) });
  await c.set("a", "1");
  await server.close();
  await new Promise((r) => setTimeout(r, 100));
  assert.ok(told instanceof TunaError && /closed the connection/.test(told.message));
  await assert.rejects(c.get("a"), (e: unknown) => e instanceof TunaError && e.code === "DIST");
  c.close();
});

test("store: connecting retries until the store starts, and gives up at the bound naming the address", async () => {
  const port = await freePort();
  const late = (async () => {
    await new Promise((r) => setTimeout(r, 300));
    return startStoreServer({ host: "127.0.0.1", port });
  })();
  const c = await connectStore({ host: "127.0.0.1", port, timeoutMs: 5000 });
  await c.set("up", "1");
  c.close();
  await (await late).close();
  const nobody = await freePort();
  await assert.rejects(connectStore({ host: "127.0.0.1", port: nobody, timeoutMs: 300 }), (e: unknown) => e instanceof TunaError && e.code === "DIST" && e.message.includes(`127.0.0.1:${nobody}`) && /MASTER_ADDR/.test(e.message));
});

test("store: a port in use is a DIST error that says to choose another MASTER_PORT", async () => {
  const first = await startStoreServer({ host: "127.0.0.1", port: 0 });
  await assert.rejects(startStoreServer({ host: "127.0.0.1", port: first.port }), (e: unknown) => e instanceof TunaError && e.code === "DIST" && /in use/.test(e.message) && /MASTER_PORT/.test(e.message));
  await first.close();
});

// Captured off the wire between a PyTorch 1.13 client and a PyTorch 1.13 server (Debian's python3-torch,
// tools/interop/tcpstore-torch.py --capture): each query and the server's exact answer.
const TORCH113_CAPTURE: [string, string | undefined][] = [
  ["0002000000000000002f6b02000000000000007676", undefined], // set("k", "vv")
  ["05010000000000000002000000000000002f6b", "00"], // wait(["/k"]) inside get
  ["0202000000000000002f6b", "02000000000000007676"], // get("k")
  ["0302000000000000002f6e0500000000000000", "0500000000000000"], // add("n", 5)
  ["0302000000000000002f6efeffffffffffffff", "0300000000000000"], // add("n", -2)
  ["06", "0200000000000000"], // num_keys()
  ["0102000000000000002f6b0200000000000000767602000000000000007777", "02000000000000007777"], // compare_set("k", "vv", "ww")
  ["0802000000000000002f6b", "0100000000000000"], // delete_key("k")
];

function rawSocket(port: number): Promise<{ socket: Socket; next: (n: number) => Promise<Buffer> }> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: "127.0.0.1", port }, () => {
      let buffered = Buffer.alloc(0);
      let want: { n: number; resolve: (b: Buffer) => void } | undefined;
      socket.on("data", (d: Buffer) => {
        buffered = Buffer.concat([buffered, d]);
        if (want !== undefined && buffered.length >= want.n) {
          const w = want;
          want = undefined;
          const out = buffered.subarray(0, w.n);
          buffered = buffered.subarray(w.n);
          w.resolve(out);
        }
      });
      resolve({
        socket,
        next: (n) =>
          new Promise<Buffer>((res, rej) => {
            if (buffered.length >= n) {
              const out = buffered.subarray(0, n);
              buffered = buffered.subarray(n);
              res(out);
              return;
            }
            const timer = setTimeout(() => {
              rej(new Error(`no ${n}-byte answer within 2 s`));
            }, 2000);
            want = {
              n,
              resolve: (b) => {
                clearTimeout(timer);
                res(b);
              },
            };
          }),
      });
    });
    socket.once("error", reject);
  });
}

test("store: a PyTorch 1.13 client's bytes get PyTorch 1.13's server's answers, byte for byte", async () => {
  await withStore(async (server) => {
    const { socket, next } = await rawSocket(server.port);
    for (const [query, answer] of TORCH113_CAPTURE) {
      // Split each query in two writes to prove answers do not depend on how TCP cuts the stream.
      const bytes = Buffer.from(query, "hex");
      socket.write(bytes.subarray(0, 3));
      await new Promise((r) => setTimeout(r, 5));
      socket.write(bytes.subarray(3));
      if (answer !== undefined) assert.equal((await next(answer.length / 2)).toString("hex"), answer, `answer to ${query}`);
    }
    socket.destroy();
  });
});

test("store: keys are sent with PyTorch's '/' prefix, so Python's store.get('x') and tuna's get('x') are the same entry", async () => {
  await withStore(async (server, client) => {
    const { socket, next } = await rawSocket(server.port);
    const c = await client("torch1");
    await c.set("shared", "from tuna");
    // PyTorch 1.13's get of "shared" as captured: WAIT for "/shared", then GET "/shared".
    socket.write(Buffer.from("0501000000000000000700000000000000" + Buffer.from("/shared").toString("hex"), "hex"));
    assert.equal((await next(1)).toString("hex"), "00");
    socket.write(Buffer.from("0207000000000000002f736861726564", "hex"));
    const answer = await next(8 + 9);
    assert.equal(answer.subarray(8).toString(), "from tuna");
    socket.destroy();
  });
});

test("store: a client that breaks the protocol (huge length, unknown query, bad magic) loses its connection; the store and others go on", async () => {
  const problems: string[] = [];
  const server = await startStoreServer({ host: "127.0.0.1", port: 0, onProblem: (m) => problems.push(m) });
  try {
    const good = await connectStore({ host: "127.0.0.1", port: server.port, timeoutMs: 2000 });
    await good.set("a", "1");
    const attacks = [
      "0001000000000000ff" + "00".repeat(8) + "ffffffffffffff7f", // torch1 SET with a key length of 2^63
      "0000000000f0ffffff", // torch1 SET, key length past the cap
      "00cef7853c63", // torch2 validate, then query 99
      "00cef7853c00deadbeef", // torch2 validate, then validate with a wrong magic
    ];
    for (const attack of attacks) {
      const { socket } = await rawSocket(server.port);
      const closed = new Promise<void>((r) => socket.once("close", () => { r(); }));
      socket.on("error", () => undefined);
      socket.write(Buffer.from(attack, "hex"));
      await closed;
    }
    assert.equal(problems.length, attacks.length, problems.join("\n"));
    assert.match(problems.join("\n"), /more than the/);
    assert.match(problems.join("\n"), /query 99/);
    assert.match(problems.join("\n"), /magic/);
    assert.equal((await good.get("a")).toString(), "1");
    good.close();
  } finally {
    await server.close();
  }
});
