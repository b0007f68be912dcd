"""reliability: bearer-token auth over the whole route table.

The API routes are read from api/api.c's API_ROUTES table (so a new route is
covered without editing this test). With a token set, every method of every
route, every method a route does not allow, unknown paths and oversized bodies
are answered 401 without a valid token (401 comes before 404 / 405 / 413, so
the route map is not visible without the token); only GET /healthz and the
dashboard's static files (which hold no data and must load before the page
can ask for the token) are public. The token comes from a file or
BREWSLM_TOKEN, never the command line; a bad token source, and a non-loopback
bind without a token, are refused at start-up."""

import os
import re
import subprocess
import tempfile

from rel_lib import (BINARY, Daemon, check, dpo_recipe, error_shape_ok, finish, http_bytes,
                     preference_rows, raw_request, require, write_jsonl)

SRC = os.environ.get("BREWSLM_SOURCE") or os.path.join(os.path.dirname(__file__), "..", "..")
TOKEN = "rel-auth-token-0123456789abcdef"

# ---- the route table, from the source -------------------------------------------------
text = open(os.path.join(SRC, "api", "api.c")).read()
table = re.search(r"API_ROUTES\[\]\s*=\s*\{(.*?)\n\};", text, re.S)
require(table is not None, "API_ROUTES found in api/api.c")
ROUTES = []
for m in re.finditer(r'\{"([^"]+)",\s*([A-Z_| ]+),\s*([01]),', table.group(1)):
    methods = [x.strip()[len("HTTP_"):] for x in m.group(2).split("|")]
    ROUTES.append((m.group(1), methods, m.group(3) == "1"))
require(len(ROUTES) >= 10, "route table parsed: %r" % ROUTES)
public = [p for p, _, pub in ROUTES if pub]
check(public == ["/healthz"], "/healthz is the only public API route: %r" % public)
ALL_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "BREW"]

tmp = tempfile.mkdtemp(prefix="brewslm-rel-auth-")
token_file = os.path.join(tmp, "token")
with open(token_file, "w") as f:
    f.write(TOKEN + "\n")
os.chmod(token_file, 0o600)

d = Daemon(token=TOKEN, extra_args=["--token-file", token_file, "--max-body-bytes", "4K"]).start()
write_jsonl(os.path.join(d.data, "pref.jsonl"), preference_rows(16))
r = d.submit(dpo_recipe(steps=2))
require(r.status == 201, "submit with the token: %r" % r)
JOB = r.json()["id"]
d.wait_status(JOB, ("succeeded",), timeout=60)


def concrete(pattern):
    return pattern.replace("{id}", JOB)


def send(method, path, auth=None, body=b"", headers=None):
    h = list(headers or [])
    if auth is not None:
        h.append(("Authorization", auth))
    if body:
        h.append(("Content-Type", "application/json"))
    return raw_request(d.port, http_bytes(method, path, h, body))


def is_401(r, head=False):
    if head:  # a HEAD reply has the status and headers, never a body
        return r is not None and r.status == 401 and r.header("WWW-Authenticate") == "Bearer"
    return (r is not None and r.status == 401 and error_shape_ok(r.body)
            and r.json()["error"]["type"] == "authentication_error"
            and r.header("WWW-Authenticate") == "Bearer")


BAD_AUTH = [None, "Bearer", "Bearer ", "Bearer wrong", "Bearer " + TOKEN[:-1],
            "Bearer " + TOKEN + "x", "Bearer " + TOKEN.upper(), "Basic " + TOKEN, TOKEN,
            "Bearer " + "x" * len(TOKEN), "Bearer " + TOKEN + " extra", "Token " + TOKEN]

# ---- every route x every method x bad credentials: 401 --------------------------------------
n = 0
for pattern, methods, is_public in ROUTES:
    path = concrete(pattern)
    for m in ALL_METHODS:
        if is_public:
            continue
        for auth in (BAD_AUTH if m in methods else BAD_AUTH[:2]):
            r = send(m, path, auth, body=b"{}" if m == "POST" else b"")
            n += 1
            check(is_401(r, m == "HEAD"), "%s %s with Authorization %r: 401 (got %r)"
                  % (m, path, auth and auth[:20], r))
print("%d unauthorized requests checked" % n, flush=True)

# Unknown routes: 401 before 404, so probing reveals nothing without the token.
UNKNOWN = ["/v1/nope", "/v2/jobs", "/v1/jobs/%s/nope" % JOB, "/admin", "/.env", "/v1/jobs/",
           "/index.htm", "/vendor/", "/vendor/missing.js", "/" + "a" * 2000]
for path in UNKNOWN:
    for m in ("GET", "POST", "DELETE"):
        check(is_401(send(m, path)), "%s %s (unknown) without a token: 401" % (m, path[:40]))
        r = send(m, path, "Bearer " + TOKEN)
        check(r is not None and r.status in (404, 405) and error_shape_ok(r.body),
              "%s %s (unknown) with the token: 404/405: %r" % (m, path[:40], r))
# 405 and 413 need the token first too.
check(is_401(send("DELETE", "/v1/jobs")), "DELETE /v1/jobs without a token: 401, not 405")
big = b'{"pad":"' + b"x" * 8000 + b'"}'
check(is_401(send("POST", "/v1/jobs", None, big)), "over-cap body without a token: 401, not 413")
r = raw_request(d.port, http_bytes("POST", "/v1/jobs", [("Content-Type", "application/json"),
                                                        ("Content-Length", str(1 << 30))]))
check(is_401(r), "1 GiB declared without a token: 401: %r" % r)
r = send("POST", "/v1/jobs", "Bearer " + TOKEN, big)
check(r is not None and r.status == 413, "over-cap body with the token: 413: %r" % r)

# ---- the right token: every route works; scheme case and spacing are tolerated -----------------
for pattern, methods, _ in ROUTES:
    if "GET" not in methods or pattern.endswith("/events"):
        continue
    r = send("GET", concrete(pattern), "Bearer " + TOKEN)
    check(r is not None and r.status == 200, "GET %s with the token: 200: %r" % (pattern, r))
r = d.events(JOB)  # SSE with the token (e2e_lib sends it)
check(r[0] and r[0][-1][2]["status"] == "succeeded", "event stream with the token")
for auth in ("bearer " + TOKEN, "BEARER " + TOKEN, "Bearer  " + TOKEN, "Bearer " + TOKEN + " ",
             "Bearer\t" + TOKEN):
    r = send("GET", "/v1/jobs", auth)
    check(r is not None and r.status == 200, "Authorization %r accepted: %r" % (auth[:12], r))
r = send("GET", "/v1/jobs?token=" + TOKEN)
check(is_401(r), "a token in the query string is not accepted")
r = send("GET", "/v1/jobs", None, headers=[("Cookie", "token=" + TOKEN)])
check(is_401(r), "a token in a cookie is not accepted")

# ---- public: /healthz and the dashboard's static files --------------------------------------------
r = send("GET", "/healthz")
check(r is not None and r.status == 200, "/healthz without a token: 200")
r = send("GET", "/")
check(r is not None and r.status == 200 and b"<html" in r.body.lower(),
      "dashboard page without a token: 200")
assets = re.findall(rb'(?:src|href)="(/[^"]+)"', r.body if r else b"")
check(len(assets) >= 2, "the page references its assets: %r" % assets)
for a in assets:
    r2 = send("GET", a.decode())
    check(r2 is not None and r2.status == 200, "asset %s without a token: 200" % a.decode())
    check(TOKEN.encode() not in (r2.body if r2 else b""), "asset %s holds no token" % a.decode())
d.stop_kill()

# ---- where the token may come from -------------------------------------------------------------------


def run_briefly(args, env=None, timeout=15):
    e = dict(os.environ)
    e.pop("BREWSLM_TOKEN", None)
    e.update(env or {})
    return subprocess.run([BINARY] + args, capture_output=True, timeout=timeout, env=e)


state = os.path.join(tmp, "var")
base = ["--state-dir", state]
for argv in (["--token", TOKEN], ["--token=" + TOKEN]):
    p = run_briefly(["--listen", "127.0.0.1:0"] + base + argv)
    check(p.returncode == 2 and b"--token" in p.stderr and p.stdout == b"",
          "%s on the command line is refused: %r" % (argv[0][:8], p.stderr[-200:]))
empty = os.path.join(tmp, "empty")
open(empty, "w").close()
p = run_briefly(["--listen", "127.0.0.1:0", "--token-file", empty] + base)
check(p.returncode == 2 and b"empty" in p.stderr, "an empty token file is refused: %r" % p.stderr)
p = run_briefly(["--listen", "127.0.0.1:0", "--token-file", os.path.join(tmp, "missing")] + base)
check(p.returncode == 2, "a missing token file is refused")
p = run_briefly(["--listen", "127.0.0.1:0"] + base, env={"BREWSLM_TOKEN": "two words"})
check(p.returncode == 2 and b"BREWSLM_TOKEN" in p.stderr,
      "a BREWSLM_TOKEN with a space is refused: %r" % p.stderr)

p = run_briefly(["--listen", "127.0.0.1:0", "--max-connections", "8"] + base)
check(p.returncode == 2 and b"max_connections" in p.stderr,
      "max_connections below 16 is refused: %r" % p.stderr)

# Non-loopback binds need a token; loopback ones do not.
for listen in ("0.0.0.0:0", "[::]:0"):
    for env in ({}, {"BREWSLM_TOKEN": ""}):
        p = run_briefly(["--listen", listen] + base, env=env)
        check(p.returncode == 2 and b"without a token" in p.stderr and p.stdout == b"",
              "listen %s with env %r and no token refused: %r" % (listen, env, p.stderr[-200:]))
for listen in ("127.0.0.2:0", "localhost:0"):
    proc = subprocess.Popen([BINARY, "--listen", listen] + base, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    try:
        line = proc.stdout.readline().decode()
        check(line.startswith("brewslmd listening on http://127.0.0."),
              "loopback %s serves without a token: %r" % (listen, line))
    finally:
        proc.terminate()
        check(proc.wait(30) == 0, "SIGTERM exits 0")
proc = subprocess.Popen([BINARY, "--listen", "[::]:0"] + base, stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL, env=dict(os.environ, BREWSLM_TOKEN=TOKEN))
try:
    line = proc.stdout.readline().decode()
    check(line.startswith("brewslmd listening on http://[::]:"),
          "[::] with BREWSLM_TOKEN serves: %r" % line)
finally:
    proc.terminate()
    proc.wait(30)

import shutil  # noqa: E402
shutil.rmtree(tmp, ignore_errors=True)
finish("reliability_auth")
