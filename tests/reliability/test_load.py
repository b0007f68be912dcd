"""load (loopback only, bounded): brewslmd under concurrent clients.

1. While a job trains: 100 SSE clients and one slow client (a 4 KiB receive
   buffer, never reads) follow the job, and wrk drives 64 connections for 30 s
   (32 at GET /v1/jobs/{id}, 32 at GET /v1/jobs/{id}/metrics; 165+ connections
   at once, over the old 128 limit). wrk must see no socket error and no
   non-2xx answer; p50/p90/p99 per endpoint are printed. Then the job is cancelled and every SSE
   client must have received exactly the job's events as stored in the
   database (ids 1..K, same types and data, metrics events matching the
   metrics table), the stalled client notwithstanding.
2. The slow client does not slow the trainer: a job followed by a new stalled
   client and 20 readers finishes within 2x (+2 s) of the same job run alone,
   and the readers get every event.
3. 200 concurrent POST /v1/jobs, half of them with an Idempotency-Key sent
   twice: every request is answered 201, each key maps to one job, and exactly
   150 jobs are created (counted through GET /v1/jobs)."""

import json
import os
import re
import selectors
import socket
import subprocess
import tempfile
import threading
import time

from rel_lib import (Daemon, check, db_query, dpo_recipe, finish, preference_rows, require,
                     write_jsonl)

T_START = time.time()
WRK_SECONDS = int(os.environ.get("BREWSLM_LOAD_SECONDS", "30"))
N_SSE = 100

d = Daemon(extra_args=["--sse-heartbeat", "2"]).start()
write_jsonl(os.path.join(d.data, "pref.jsonl"), preference_rows(64))


class SseClients:
    """Many SSE streams over raw sockets, read by one selector loop (HTTP/1.1,
    chunked transfer decoding). A stream ends with the response's last chunk
    (sent after the job's terminal status; the connection may stay open)."""

    def __init__(self, port, job_id, n, token=None):
        self.sel = selectors.DefaultSelector()
        self.clients = []
        req = ("GET /v1/jobs/%s/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               "Accept: text/event-stream\r\n\r\n" % job_id).encode()
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(req)
            s.setblocking(False)
            c = {"sock": s, "raw": b"", "head": None, "chunk": None, "body": b"", "done": False,
                 "events": [], "pings": 0}
            self.sel.register(s, selectors.EVENT_READ, c)
            self.clients.append(c)
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.deadline = time.time() + 600
        self.thread.start()

    def loop(self):
        while time.time() < self.deadline and not all(c["done"] for c in self.clients):
            for key, _ in self.sel.select(timeout=0.5):
                c = key.data
                try:
                    data = c["sock"].recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    self.sel.unregister(c["sock"])
                    c["sock"].close()
                    c["done"] = True
                    continue
                self.feed(c, data)

    def feed(self, c, data):
        c["raw"] += data
        if c["head"] is None:
            if b"\r\n\r\n" not in c["raw"]:
                return
            head, _, c["raw"] = c["raw"].partition(b"\r\n\r\n")
            c["head"] = head.decode("latin-1")
            c["chunk"] = 0
        # Chunked decoding: c["chunk"] > 0 bytes of the current chunk are due;
        # 0: a size line is next; -1: the CRLF after a chunk is next.
        while True:
            if c["chunk"] == -1:
                if len(c["raw"]) < 2:
                    break
                c["raw"] = c["raw"][2:]
                c["chunk"] = 0
            if c["chunk"] == 0:
                if b"\r\n" not in c["raw"]:
                    break
                line, _, c["raw"] = c["raw"].partition(b"\r\n")
                size = int(line.split(b";")[0], 16)
                if size == 0:  # the last chunk: the response (the stream) is over
                    c["chunk"] = None
                    self.sel.unregister(c["sock"])
                    c["sock"].close()
                    c["done"] = True
                    break
                c["chunk"] = size
            if c["chunk"] is None or not c["raw"]:
                break
            take = c["raw"][:c["chunk"]]
            c["raw"] = c["raw"][len(take):]
            c["body"] += take
            c["chunk"] -= len(take)
            if c["chunk"] == 0:
                c["chunk"] = -1
        while b"\n\n" in c["body"]:
            frame, _, c["body"] = c["body"].partition(b"\n\n")
            ev = {}
            for line in frame.decode("utf-8").split("\n"):
                if line.startswith(":"):
                    c["pings"] += 1
                    continue
                k, _, v = line.partition(":")
                ev[k] = v[1:] if v.startswith(" ") else v
            if "id" in ev:
                c["events"].append((int(ev["id"]), ev.get("event"), json.loads(ev["data"])))

    def wait(self, timeout):
        self.thread.join(timeout)
        return all(c["done"] for c in self.clients)

    def close(self):
        self.deadline = 0
        self.thread.join(5)
        for c in self.clients:
            if not c["done"]:
                c["sock"].close()


def slow_client(port, job_id):
    """An SSE request from a socket with a tiny receive buffer that is never read."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(("GET /v1/jobs/%s/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % job_id).encode())
    return s


def server_send_queue(client_sock):
    """Bytes the daemon has queued but the client never took (ss Send-Q of
    the server side of this connection), or None when ss cannot tell."""
    cport = client_sock.getsockname()[1]
    try:
        out = subprocess.run(["ss", "-tnH", "sport", "=", ":%d" % d.port, "dport", "=",
                              ":%d" % cport], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 3:
            return int(f[2])
    return None


def db_events(job_id):
    return [(seq, typ, json.loads(data)) for seq, typ, data in db_query(
        d.db, "SELECT seq, type, data_json FROM events WHERE job_id = ? ORDER BY seq", (job_id,))]


def check_streams(clients, job_id, what):
    events = db_events(job_id)
    require(events and events[-1][1] == "status", "%s: the job's last event is its status" % what)
    ids = [e[0] for e in events]
    check(ids == list(range(1, len(ids) + 1)), "%s: event ids 1..%d in the database"
          % (what, len(ids)))
    got_all = sum(1 for c in clients.clients if c["events"] == events)
    check(got_all == len(clients.clients), "%s: %d of %d clients got all %d events"
          % (what, got_all, len(clients.clients), len(events)))
    bad = [c for c in clients.clients if c["events"] != events][:1]
    for c in bad:
        print("  first mismatch: client has %d events (last %r), database %d"
              % (len(c["events"]), c["events"][-1:] and c["events"][-1][:2], len(events)))
    msteps = [e[2]["step"] for e in events if e[1] == "metrics"]
    rows = [s for (s,) in db_query(d.db, "SELECT step FROM metrics WHERE job_id = ? AND "
                                   "is_eval = 0 ORDER BY step", (job_id,))]
    check(msteps == rows and rows == list(range(1, len(rows) + 1)),
          "%s: metrics events (%d) match the metrics table (%d rows), steps 1..N"
          % (what, len(msteps), len(rows)))
    return len(events)


# ---- phase 0: the reference timing of a job run alone --------------------------------------
B_STEPS = 400
recipe_b = dpo_recipe(steps=B_STEPS, logging_steps=1, seed=3)
t0 = time.time()
r = d.submit(recipe_b)
require(r.status == 201, "baseline job: %r" % r)
j = d.wait_status(r.json()["id"], ("succeeded", "failed"), timeout=300)
require(j["status"] == "succeeded", "baseline job succeeded")
T_ALONE = time.time() - t0
print("phase 0: %d-step job alone: %.2f s" % (B_STEPS, T_ALONE), flush=True)

# ---- phase 1: wrk + 100 SSE clients + a stalled client, while a job trains ------------------------
r = d.submit(dpo_recipe(steps=1000000, logging_steps=1, seed=4))
require(r.status == 201, "long job: %r" % r)
A = r.json()["id"]
d.wait_step(A, 5, timeout=60)
slow1 = slow_client(d.port, A)
sse = SseClients(d.port, A, N_SSE)
LUA_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('RESULT {"requests": %d, "duration_us": %d, "non2xx": %d, ' ..
    '"connect": %d, "read": %d, "write": %d, "timeout": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""
lua = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
lua.write(LUA_DONE)
lua.close()
time.sleep(1)  # the streams are open and replaying
try:  # ss (iproute2) only informs here
    n_conn = subprocess.run(["ss", "-tnH", "state", "established", "sport", "=", ":%d" % d.port],
                            capture_output=True, text=True).stdout.count("\n")
except OSError:
    n_conn = "?"
print("phase 1: %s connections open before wrk" % n_conn, flush=True)
# Two wrk processes at once, 32 connections each, one per endpoint, so each
# endpoint's latency is reported on its own.
ENDPOINTS = [("job", "/v1/jobs/" + A), ("metrics", "/v1/jobs/%s/metrics" % A)]
procs = [subprocess.Popen(["wrk", "-t", "1", "-c", "32", "-d", "%ds" % WRK_SECONDS, "--timeout",
                           "10s", "-s", lua.name, "http://127.0.0.1:%d%s" % (d.port, path)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
         for _, path in ENDPOINTS]
outs = [p.communicate(timeout=WRK_SECONDS + 120) for p in procs]
os.unlink(lua.name)
for (name, path), p, (out, err) in zip(ENDPOINTS, procs, outs):
    m = re.search(r"RESULT (\{.*\})", out)
    require(p.returncode == 0 and m, "wrk %s ran: rc %d %s" % (name, p.returncode, err[-500:]))
    res = json.loads(m.group(1))
    check(res["requests"] > 0 and res["non2xx"] == 0,
          "wrk %s: no non-2xx answers (%d of %d)" % (name, res["non2xx"], res["requests"]))
    errors = {k: res[k] for k in ("connect", "read", "write", "timeout")}
    check(not any(errors.values()), "wrk %s: no socket errors: %r" % (name, errors))
    rps = res["requests"] / (res["duration_us"] / 1e6)
    print("phase 1: wrk GET %s (32 connections, %d s): %d requests, %.0f req/s, p50 %.1f ms, "
          "p90 %.1f ms, p99 %.1f ms, max %.1f ms"
          % (path.replace(A, "{id}"), WRK_SECONDS, res["requests"], rps, res["p50_us"] / 1e3,
             res["p90_us"] / 1e3, res["p99_us"] / 1e3, res["max_us"] / 1e3), flush=True)
check(d.proc.poll() is None and d.get("/healthz").status == 200, "daemon healthy after wrk")
stalled = server_send_queue(slow1)
j = d.job(A)
check(j["status"] == "running" and j["progress"]["step"] > 5,
      "the job trained during the load (step %d)" % j["progress"]["step"])
print("phase 1: the job trained to step %d meanwhile" % j["progress"]["step"], flush=True)
r = d.post("/v1/jobs/%s/cancel" % A)
check(r.status == 202, "long job cancelled: %r" % r)
d.wait_status(A, ("cancelled",), timeout=60)
check(sse.wait(60), "all %d SSE streams ended after the terminal status" % N_SSE)
sse.close()
n_events = check_streams(sse, A, "phase 1")
print("phase 1: %d SSE clients x %d events; stalled client's unread server queue: %s bytes"
      % (N_SSE, n_events, stalled), flush=True)
if stalled is not None:
    check(stalled > 0, "the slow client really stalled its stream (Send-Q %d)" % stalled)

# ---- phase 2: a stalled client does not slow the trainer -------------------------------------------
t0 = time.time()
r = d.submit(recipe_b)
require(r.status == 201, "timed job: %r" % r)
B = r.json()["id"]
slow2 = slow_client(d.port, B)
readers = SseClients(d.port, B, 20)
j = d.wait_status(B, ("succeeded", "failed"), timeout=300)
T_LOADED = time.time() - t0
check(j["status"] == "succeeded", "timed job succeeded")
check(readers.wait(30), "the 20 readers' streams ended")
readers.close()
check_streams(readers, B, "phase 2")
check(T_LOADED < 2 * T_ALONE + 2, "with a stalled client the job took %.2f s (alone %.2f s)"
      % (T_LOADED, T_ALONE))
print("phase 2: %d-step job with a stalled client: %.2f s (alone %.2f s)"
      % (B_STEPS, T_LOADED, T_ALONE), flush=True)
slow1.close()
slow2.close()

# ---- phase 3: 200 concurrent submissions, half with repeated Idempotency-Keys -------------------------


def list_ids():
    ids, after = [], None
    while True:
        r = d.get("/v1/jobs?limit=100" + ("&after=" + after if after else ""))
        require(r.status == 200, "list: %r" % r)
        page = r.json()
        ids += [x["id"] for x in page["data"]]
        if not page["has_more"]:
            return ids
        after = page["data"][-1]["id"]


before = set(list_ids())
N_POST = 200
plan = [None] * (N_POST // 2) + ["load-key-%d" % (i // 2) for i in range(N_POST // 2)]
results = [None] * N_POST
barrier = threading.Barrier(N_POST)


def poster(i):
    h = {"Idempotency-Key": plan[i]} if plan[i] else {}
    barrier.wait()
    t = time.time()
    try:
        r = d.submit(dpo_recipe(steps=2, seed=100 + (i if plan[i] is None else 0)), headers=h)
        results[i] = (r.status, r.json().get("id"), r.header("Idempotent-Replayed"),
                      time.time() - t)
    except (OSError, ValueError) as e:
        results[i] = ("error", repr(e), None, time.time() - t)


threads = [threading.Thread(target=poster, args=(i,)) for i in range(N_POST)]
t0 = time.time()
for t in threads:
    t.start()
for t in threads:
    t.join(120)
T_POST = time.time() - t0
statuses = [x[0] for x in results if x]
check(statuses.count(201) == N_POST, "all %d POSTs answered 201: %r"
      % (N_POST, {s: statuses.count(s) for s in set(statuses)}))
by_key = {}
for i, x in enumerate(results):
    if x and plan[i] and x[0] == 201:
        by_key.setdefault(plan[i], set()).add(x[1])
check(len(by_key) == N_POST // 4 and all(len(v) == 1 for v in by_key.values()),
      "each repeated Idempotency-Key maps to one job")
replayed = sum(1 for i, x in enumerate(results) if x and plan[i] and x[2] == "true")
check(replayed == N_POST // 4, "one of each key pair was a replay (%d)" % replayed)
new = set(list_ids()) - before
expected = N_POST // 2 + N_POST // 4
check(len(new) == expected, "exactly %d jobs created (got %d)" % (expected, len(new)))
lat = sorted(x[3] for x in results if x)
print("phase 3: %d concurrent POSTs in %.2f s, %d jobs created, latency p50 %.0f ms, max %.0f ms"
      % (N_POST, T_POST, len(new), lat[len(lat) // 2] * 1e3, lat[-1] * 1e3), flush=True)
for jid in new:
    d.post("/v1/jobs/%s/cancel" % jid)
check(d.proc.poll() is None and d.get("/healthz").status == 200, "daemon healthy at the end")
print("load test body took %.1f s" % (time.time() - T_START), flush=True)
finish("reliability_load")
