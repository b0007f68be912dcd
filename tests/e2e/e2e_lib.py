"""e2e_lib.py — helpers for brewslmd's end-to-end tests (Python 3 stdlib only).

A Daemon starts the real brewslmd binary on 127.0.0.1 port 0 with its own
temporary state folder, database and data root, reads the bound address from
the first stdout line, and is killed when the test exits (also on SIGTERM from
the test runner and, through PR_SET_PDEATHSIG, if the test process dies).
"""

import atexit
import ctypes
import http.client
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

BUILD = os.environ.get("BREWSLM_BUILD") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "build")
BINARY = os.path.join(BUILD, "daemon", "brewslmd")

# Sanitized builds (deploy/sanitize.sh) run 2-4x slower and export
# BREWSLM_TIME_SCALE: the waits for the daemon (its address, a job status or
# step, its exit on SIGTERM) are stretched by it; what is checked is not.
TIME_SCALE = max(1.0, float(os.environ.get("BREWSLM_TIME_SCALE") or 1))


def scaled(seconds):
    """A wait of `seconds` on an unsanitized build, stretched for this build."""
    return seconds * TIME_SCALE

_daemons = []
_failures = []


def _cleanup():
    for d in list(_daemons):
        d.kill()


atexit.register(_cleanup)


def _on_term(signum, frame):
    raise SystemExit(128 + signum)


signal.signal(signal.SIGTERM, _on_term)


def _die_with_parent():
    # Runs in the child before exec: SIGKILL the daemon if this test dies.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def check(cond, what):
    """Records a failed expectation (the test continues) and prints it."""
    if not cond:
        _failures.append(what)
        print("FAIL: " + what, flush=True)
    return cond


def require(cond, what):
    """A failed expectation that makes the rest of the test meaningless."""
    if not cond:
        _failures.append(what)
        print("FAIL (fatal): " + what, flush=True)
        raise SystemExit(1)


def finish(name):
    for d in list(_daemons):
        d.stop_kill()
    if _failures:
        print("%s: %d failure(s)" % (name, len(_failures)), flush=True)
        sys.exit(1)
    print("%s: all checks passed" % name, flush=True)
    sys.exit(0)


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def __repr__(self):
        return "<%d %s>" % (self.status, self.body[:400])


class Daemon:
    """One brewslmd process. Folders survive restarts of the same Daemon."""

    def __init__(self, token=None, extra_args=None, env=None, workdir=None):
        self.dir = workdir or tempfile.mkdtemp(prefix="brewslm-e2e-")
        self.owns_dir = workdir is None
        self.state = os.path.join(self.dir, "var")
        self.data = os.path.join(self.dir, "data")
        self.db = os.path.join(self.dir, "var", "brewslm.db")
        os.makedirs(self.data, exist_ok=True)
        self.token = token
        self.extra_args = extra_args or []
        self.env = env
        self.proc = None
        self.port = None
        self.log_path = os.path.join(self.dir, "daemon.log")
        self.restarts = 0
        _daemons.append(self)

    def args(self):
        return [BINARY, "--listen", "127.0.0.1:0", "--state-dir", self.state, "--db", self.db,
                "--data-root", self.data] + self.extra_args

    def start(self, timeout=20):
        env = dict(os.environ)
        env["OPENBLAS_NUM_THREADS"] = "1"
        if self.env:
            env.update(self.env)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args(), stdout=subprocess.PIPE, stderr=log, env=env,
                                     preexec_fn=_die_with_parent)
        log.close()
        line = b""
        timeout = scaled(timeout)
        deadline = time.time() + timeout
        while not line.endswith(b"\n"):
            left = deadline - time.time()
            require(left > 0, "daemon printed its address within %d s" % timeout)
            r, _, _ = select.select([self.proc.stdout], [], [], left)
            if not r:
                continue
            ch = os.read(self.proc.stdout.fileno(), 1)
            if not ch:
                require(False,
                        "daemon exited early (rc %s): %s" % (self.proc.wait(), self.log_tail()))
            line += ch
        text = line.decode().strip()
        prefix = "brewslmd listening on http://127.0.0.1:"
        require(text.startswith(prefix), "first stdout line names the address: %r" % text)
        self.port = int(text[len(prefix):])
        return self

    def log_tail(self, n=3000):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")[-n:]
        except OSError:
            return ""

    def signal(self, sig):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass

    def stop_kill(self):
        """Ends the daemon (SIGTERM, then SIGKILL) and removes its folder.
        A daemon that does not exit 0 on SIGTERM is a failure: under the
        sanitizers a leak or error found at exit makes that status non-zero,
        and a SIGKILL would skip the leak check."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            rc = self.wait_exit(scaled(40))
            if rc is None:
                self.kill()
            check(rc == 0, "daemon exited 0 on SIGTERM (status %s)" % rc)
        if self in _daemons:
            _daemons.remove(self)
        if self.owns_dir and not _failures:
            shutil.rmtree(self.dir, ignore_errors=True)
        elif _failures:
            print("daemon folder kept for inspection: %s\n--- daemon log tail ---\n%s"
                  % (self.dir, self.log_tail()), flush=True)

    # ---- HTTP ---------------------------------------------------------------

    def request(self, method, path, body=None, headers=None, token=True, timeout=30):
        h = dict(headers or {})
        if token is True and self.token:
            h["Authorization"] = "Bearer " + self.token
        elif isinstance(token, str):
            h["Authorization"] = "Bearer " + token
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            body = body.encode()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=h)
            resp = conn.getresponse()
            data = resp.read()
            return Response(resp.status, resp.getheaders(), data)
        finally:
            conn.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)

    def submit(self, recipe, yaml_text=None, headers=None):
        if yaml_text is not None:
            h = {"Content-Type": "application/yaml"}
            h.update(headers or {})
            return self.post("/v1/jobs", yaml_text, headers=h)
        return self.post("/v1/jobs", recipe, headers=headers)

    def job(self, job_id):
        r = self.get("/v1/jobs/" + job_id)
        require(r.status == 200, "GET job %s: %r" % (job_id, r))
        return r.json()

    def wait_status(self, job_id, statuses, timeout=120):
        timeout = scaled(timeout)
        deadline = time.time() + timeout
        while True:
            j = self.job(job_id)
            if j["status"] in statuses:
                return j
            if time.time() > deadline:
                require(False, "job %s reached %s within %d s (now %s, progress %s)\n%s"
                        % (job_id, statuses, timeout, j["status"], j.get("progress"),
                           self.log_tail()))
            time.sleep(0.1)

    def wait_step(self, job_id, step, timeout=120):
        timeout = scaled(timeout)
        deadline = time.time() + timeout
        while True:
            j = self.job(job_id)
            if j["status"] != "running" and j["status"] != "queued":
                return j
            if (j.get("progress") or {}).get("step", 0) >= step:
                return j
            require(time.time() < deadline,
                    "job %s reached step %d within %d s" % (job_id, step, timeout))
            time.sleep(0.05)

    def events(self, job_id, last_event_id=None, query=None, timeout=60, for_seconds=None):
        """Reads the SSE stream to its end (or for for_seconds when given):
        a list of (id, event, data) and the number of comment lines."""
        h = {}
        if self.token:
            h["Authorization"] = "Bearer " + self.token
        if last_event_id is not None:
            h["Last-Event-ID"] = str(last_event_id)
        conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                          timeout=for_seconds if for_seconds else timeout)
        path = "/v1/jobs/%s/events%s" % (job_id, query or "")
        conn.request("GET", path, headers=h)
        resp = conn.getresponse()
        require(resp.status == 200, "GET %s: %d" % (path, resp.status))
        require((resp.getheader("Content-Type") or "").startswith("text/event-stream"),
                "events content type is text/event-stream")
        out, cur, comments = [], {}, 0
        start = time.time()
        while True:
            if for_seconds is not None and time.time() - start > for_seconds:
                break
            try:
                line = resp.readline()
            except (TimeoutError, OSError):
                require(for_seconds is not None, "event stream of %s stalled" % job_id)
                break
            if not line:
                break
            line = line.decode("utf-8").rstrip("\r\n")
            if line == "":
                if cur:
                    out.append((int(cur["id"]), cur.get("event"), json.loads(cur["data"])))
                cur = {}
                continue
            if line.startswith(":"):
                comments += 1
                continue
            k, _, v = line.partition(":")
            cur[k] = v[1:] if v.startswith(" ") else v
        conn.close()
        return out, comments


# ---- data --------------------------------------------------------------------

WORDS = ["cat", "dog", "sun", "sky", "tea", "sea", "owl", "fox"]


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def preference_rows(n, seed=1):
    """Byte-tokenized preference rows: the chosen answer repeats the asked word."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        w = rng.choice(WORDS)
        other = rng.choice([x for x in WORDS if x != w])
        rows.append({"prompt": "say %s:" % w, "chosen": " %s." % w, "rejected": " %s!" % other})
    return rows


def sft_rows(n, seed=2):
    rng = random.Random(seed)
    return [{"prompt": "say %s:" % w, "completion": " %s." % w}
            for w in (rng.choice(WORDS) for _ in range(n))]


TINY_MODEL = {"dim": 16, "n_layers": 1, "n_heads": 2, "n_kv_heads": 2, "hidden_dim": 32,
              "max_seq_len": 32}


def dpo_recipe(train_file="pref.jsonl", steps=6, **extra):
    r = {"method": "dpo", "beta": 0.1, "data": "preference", "model_init": dict(TINY_MODEL),
         "train_file": train_file, "max_steps": steps, "logging_steps": 1,
         "per_device_train_batch_size": 4, "learning_rate": 1e-3, "max_length": 32,
         "max_prompt_length": 16, "save_steps": 0}
    r.update(extra)
    return r


def parse_prometheus(text):
    """Parses the text exposition format 0.0.4 strictly enough to catch errors:
    returns {family: type} and a list of (name, labels, value)."""
    import re
    types, samples = {}, []
    sample_re = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
    label_re = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ", 3)
            require(typ in ("counter", "gauge", "histogram", "summary", "untyped"),
                    "metric type %s" % typ)
            types[name] = typ
            continue
        if line.startswith("#"):
            continue
        m = sample_re.match(line)
        require(m is not None, "exposition line parses: %r" % line)
        labels = {}
        if m.group(3):
            rest = m.group(3)
            pos = 0
            while pos < len(rest):
                lm = label_re.match(rest, pos)
                require(lm is not None, "labels parse: %r" % line)
                labels[lm.group(1)] = lm.group(2)
                pos = lm.end()
        value = float(m.group(4))
        samples.append((m.group(1), labels, value))
    return types, samples
