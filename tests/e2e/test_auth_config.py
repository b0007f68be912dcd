"""e2e: bearer-token auth (token file and BREWSLM_TOKEN; every route but
/healthz needs it), refusing a non-loopback bind without a token, and the
configuration precedence flags > environment > config file > defaults."""

import os
import subprocess
import tempfile
import time

from e2e_lib import BINARY, Daemon, check, dpo_recipe, finish, preference_rows, require, write_jsonl

TOKEN = "s3cret-token-0123456789"
tmp = tempfile.mkdtemp(prefix="brewslm-e2e-auth-")
token_file = os.path.join(tmp, "token")
with open(token_file, "w") as f:
    f.write(TOKEN + "\n")
os.chmod(token_file, 0o600)


def auth_checks(d, how):
    r = d.get("/v1/jobs", token=False)
    check(r.status == 401 and r.json()["error"]["type"] == "authentication_error"
          and r.header("WWW-Authenticate") == "Bearer", "%s: no token: 401: %r" % (how, r))
    r = d.get("/v1/jobs", token="x" * len(TOKEN))
    check(r.status == 401 and r.json()["error"]["code"] == "invalid_token",
          "%s: wrong token: 401" % how)
    r = d.get("/v1/jobs", token=TOKEN + "x")
    check(r.status == 401, "%s: longer token: 401" % how)
    r = d.get("/v1/jobs", headers={"Authorization": TOKEN}, token=False)
    check(r.status == 401, "%s: token without Bearer: 401" % how)
    check(d.get("/v1/jobs").status == 200, "%s: right token: 200" % how)
    check(d.get("/healthz", token=False).status == 200, "%s: /healthz needs no token" % how)
    for path in ("/readyz", "/metrics", "/v1/capabilities", "/v1/nope"):
        check(d.get(path, token=False).status == 401, "%s: %s without token: 401" % (how, path))
    r = d.post("/v1/jobs", dpo_recipe(steps=2), token=False)
    check(r.status == 401, "%s: submit without token: 401" % how)
    check(d.get("/v1/jobs").json()["data"] == [], "%s: the refused submit created nothing" % how)


# ---- token file ----------------------------------------------------------------------
d = Daemon(token=TOKEN, extra_args=["--token-file", token_file]).start()
write_jsonl(os.path.join(d.data, "pref.jsonl"), preference_rows(16))
auth_checks(d, "token file")
r = d.submit(dpo_recipe(steps=2))
require(r.status == 201, "submit with the token: %r" % r)
j = d.wait_status(r.json()["id"], ("succeeded", "failed", "blocked"), timeout=60)
check(j["status"] == "succeeded", "job runs with auth on")
events, _ = d.events(j["id"])
check(events and events[-1][2]["status"] == "succeeded", "SSE works with the token")
d.stop_kill()

# ---- BREWSLM_TOKEN --------------------------------------------------------------------
d = Daemon(token=TOKEN, env={"BREWSLM_TOKEN": TOKEN}).start()
auth_checks(d, "BREWSLM_TOKEN")
d.stop_kill()


# ---- binding -----------------------------------------------------------------------------
def run_briefly(args, env=None, timeout=15):
    e = dict(os.environ)
    e.pop("BREWSLM_TOKEN", None)
    e.update(env or {})
    return subprocess.run([BINARY] + args, capture_output=True, timeout=timeout, env=e)


state = os.path.join(tmp, "var")
p = run_briefly(["--listen", "0.0.0.0:0", "--state-dir", state])
check(p.returncode == 2 and b"token" in p.stderr,
      "non-loopback bind without a token refused (rc %d): %r"
      % (p.returncode, p.stderr))
check(p.stdout == b"", "nothing was served")
p = run_briefly(["--listen", "0.0.0.0:0", "--state-dir", state, "--token", TOKEN])
check(p.returncode == 2 and b"--token" in p.stderr,
      "a command-line token is refused: %r" % p.stderr)
p = run_briefly(["--listen", "127.0.0.1", "--state-dir", state])
check(p.returncode == 2, "listen without a port: exit 2")
p = run_briefly(["--bogus"])
check(p.returncode == 2 and b"--bogus" in p.stderr, "unknown flag: exit 2")
p = run_briefly(["--help"])
check(p.returncode == 0 and b"--listen" in p.stdout, "--help")

# With a token the same bind is allowed.
proc = subprocess.Popen([BINARY, "--listen", "0.0.0.0:0", "--state-dir", state, "--token-file",
                         token_file], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
try:
    line = proc.stdout.readline().decode()
    check(line.startswith("brewslmd listening on http://0.0.0.0:"),
          "non-loopback bind with a token: %r" % line)
finally:
    proc.terminate()
    check(proc.wait(30) == 0, "SIGTERM with no jobs exits 0")

# ---- configuration precedence ------------------------------------------------------------
conf = os.path.join(tmp, "brewslmd.conf")
with open(conf, "w") as f:
    f.write("# test configuration\n"
            "max_concurrent_jobs = 3\n"
            "max_body_bytes = 4K   # small, to see the cap come from here\n"
            "sse_heartbeat = 1\n"
            "memory_limit = \"64G\"\n")
d = Daemon(extra_args=["--config", conf], env={"BREWSLM_MAX_CONCURRENT_JOBS": "2"}).start()
caps = d.get("/v1/capabilities").json()
check(caps["threads"]["max_concurrent_jobs"] == 2,
      "environment beats the file: %r" % caps["threads"])
r = d.post("/v1/preflight", {"method": "dpo", "pad": "x" * 5000})
check(r.status == 413, "max_body_bytes from the file: 413: %r" % r)
write_jsonl(os.path.join(d.data, "pref.jsonl"), preference_rows(16))
r = d.submit(dpo_recipe(steps=200000, logging_steps=100000))
require(r.status == 201, "quiet long job: %r" % r)
lid = r.json()["id"]
d.wait_step(lid, 1)
events, pings = d.events(lid, for_seconds=3.5)
check(pings >= 2, "sse_heartbeat from the file: %d ': ping' comments in 3.5 s" % pings)
check(d.post("/v1/jobs/%s/cancel" % lid).status == 202, "quiet job cancelled")
d.wait_status(lid, ("cancelled",), timeout=30)
d.stop_kill()

d = Daemon(extra_args=["--config", conf, "--max-concurrent-jobs", "1"],
           env={"BREWSLM_MAX_CONCURRENT_JOBS": "2"}).start()
caps = d.get("/v1/capabilities").json()
check(caps["threads"]["max_concurrent_jobs"] == 1,
      "flag beats the environment: %r" % caps["threads"])
d.stop_kill()

with open(conf, "a") as f:
    f.write("max_concurent_jobs = 2\n")
p = run_briefly(["--config", conf, "--listen", "127.0.0.1:0", "--state-dir", state])
check(p.returncode == 2 and b"max_concurent_jobs" in p.stderr,
      "unknown config key: exit 2: %r" % p.stderr)
p = run_briefly(["--listen", "127.0.0.1:0", "--state-dir", state],
                env={"BREWSLM_MAX_CONCURRENT_JOBS": "zero"})
check(p.returncode == 2 and b"max_concurrent_jobs" in p.stderr, "bad environment value: exit 2")

import shutil
shutil.rmtree(tmp, ignore_errors=True)
finish("e2e_auth_config")
