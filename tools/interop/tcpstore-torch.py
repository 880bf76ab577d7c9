#!/usr/bin/env python3
"""tuna's TCPStore against PyTorch's, both ways, with the torch this Python has (run from the repo root):

    python3 tools/interop/tcpstore-torch.py            # here: Debian's python3-torch (1.13); on the GPU machine: torch 2.x

1. PyTorch clients against tuna's store server (tools/interop/tcpstore-node.ts serve).
2. tuna's client against a PyTorch store server.
3. --capture: a logging proxy between a PyTorch client and server, printing the bytes each way (how the
   fixture in test/dist/store.test.ts was taken).
Prints one PASS/FAIL line per check and exits non-zero on any failure.
"""
import datetime, json, os, socket, subprocess, sys, threading, time
import torch
import torch.distributed as dist

PROTOCOL = "torch1" if torch.__version__.startswith("1.") else "torch2"
# From source with tsx here; the bundle (npm run build:gpu) where there is no tsx, as on the GPU machine.
NODE = ["node", "dist/tcpstore-node.mjs"] if os.environ.get("TUNA_INTEROP_BUNDLE") == "1" else ["node", "--import", "tsx", "tools/interop/tcpstore-node.ts"]
failures = 0


def check(name, ok, detail=""):
    global failures
    print(("PASS" if ok else "FAIL"), name, detail, flush=True)
    failures += 0 if ok else 1


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def torch_clients_against_tuna():
    node = subprocess.Popen(NODE + ["serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    port = json.loads(node.stdout.readline())["port"]
    t = datetime.timedelta(seconds=10)
    a = dist.TCPStore("127.0.0.1", port, None, False, t)
    b = dist.TCPStore("127.0.0.1", port, None, False, t)
    a.set("k", "vv")
    check("torch client: set then get from another client", b.get("k") == b"vv")
    check("torch client: add", a.add("n", 5) == 5 and b.add("n", -2) == 3 and a.get("n") == b"3")
    check("torch client: compare_set", a.compare_set("k", "vv", "ww") == b"ww" and a.compare_set("k", "x", "y") == b"ww")
    check("torch client: num_keys", a.num_keys() == 2, str(a.num_keys()))
    check("torch client: delete_key", a.delete_key("n") is True and a.delete_key("n") is False)
    got = []
    th = threading.Thread(target=lambda: (a.wait(["later"]), got.append(a.get("later"))))
    th.start(); time.sleep(0.3); b.set("later", "now"); th.join(5)
    check("torch client: wait answered when another client sets", got == [b"now"])
    try:
        a.wait(["never"], datetime.timedelta(milliseconds=300)); timed_out = False
    except Exception:
        timed_out = True
    check("torch client: wait times out", timed_out)
    if PROTOCOL == "torch2":
        c = dist.TCPStore("127.0.0.1", port, None, False, t)
        c.set("after_cancel", "ok")
        check("torch 2 client: store still serves after a cancelled wait", a.get("after_cancel") == b"ok")
    # a world: torch's own wait-for-workers counter ("init/") on tuna's store
    w = dist.TCPStore("127.0.0.1", port, 2, False, t)
    w2 = dist.TCPStore("127.0.0.1", port, 2, False, t)
    check("torch clients with world_size 2 connect and register on init/ without error", w.add("probe", 1) == 1 and w2.add("probe", 1) == 2)
    node.stdin.close(); node.wait(10)


def tuna_client_against_torch():
    port = free_port()
    t = datetime.timedelta(seconds=20)
    server = dist.TCPStore("127.0.0.1", port, None, True, t)
    server.set("from_torch", "hello tuna")
    server.add("count", 10)
    server.set("to_delete", "x")
    out = subprocess.run(NODE + ["client", "127.0.0.1", str(port), PROTOCOL], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        check("tuna client against torch server", False, out.stderr[-2000:]); return
    r = json.loads(out.stdout.strip().splitlines()[-1])
    check("tuna client: get a torch key", r["fromTorch"] == "hello tuna", str(r))
    check("tuna client: add to a torch counter", r["count"] == 15 and server.add("count", 0) == 15)
    check("tuna client: set, read by torch", server.get("from_tuna") == b"hello torch")
    check("tuna client: compare_set", r["swapped"] == "swapped" and server.get("from_torch") == b"swapped")
    check("tuna client: num_keys", r["keys"] >= 4, str(r["keys"]))
    check("tuna client: multi_set and multi_get (key by key on PyTorch 1)", r["multi"] == ["hello torch", "1", "2"] and server.get("ms_b") == b"2", str(r["multi"]))
    check("tuna client: wait times out and names the key", r["waitTimedOut"])
    if PROTOCOL == "torch2":
        check("tuna client: delete_key", r["deleted"] is True)


def capture():
    srv_port, proxy_port = free_port(), free_port()
    server = dist.TCPStore("127.0.0.1", srv_port, None, True, datetime.timedelta(seconds=5))
    ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); ls.bind(("127.0.0.1", proxy_port)); ls.listen(4)

    def pump(src, dst, tag):
        while True:
            d = src.recv(65536)
            if not d: break
            print(tag, d.hex(), flush=True); dst.sendall(d)

    def accept():
        c, _ = ls.accept(); s = socket.create_connection(("127.0.0.1", srv_port))
        threading.Thread(target=pump, args=(c, s, "C>"), daemon=True).start()
        threading.Thread(target=pump, args=(s, c, "S>"), daemon=True).start()
    threading.Thread(target=accept, daemon=True).start()
    c = dist.TCPStore("127.0.0.1", proxy_port, None, False, datetime.timedelta(seconds=2))
    for name, f in [("set", lambda: c.set("k", "vv")), ("get", lambda: c.get("k")), ("add", lambda: c.add("n", 5)),
                    ("add", lambda: c.add("n", -2)), ("num_keys", c.num_keys), ("compare_set", lambda: c.compare_set("k", "vv", "ww")),
                    ("delete_key", lambda: c.delete_key("k"))]:
        print("###", name, f(), flush=True); time.sleep(0.1)


if __name__ == "__main__":
    print(f"torch {torch.__version__}, protocol {PROTOCOL}", flush=True)
    if "--capture" in sys.argv:
        capture(); sys.exit(0)
    torch_clients_against_tuna()
    tuna_client_against_torch()
    print(f"{failures} failed", flush=True)
    sys.exit(1 if failures else 0)
