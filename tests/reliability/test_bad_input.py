"""reliability: a table of malformed and hostile requests (broken JSON, deep
nesting, huge numbers, NaN/Infinity, wrong types, unknown keys, YAML alias
bombs, 10 MB bodies, bad UTF-8, path traversal and symlinks, absolute paths,
bad hyperparameters, bad methods / routes / headers / job ids / query
parameters, huge headers, Content-Length lies). Each is sent as raw bytes and
must get its documented status with the uniform JSON error
{"error":{"type","message","param","code"}}; after every batch the daemon
must still be alive and answer GET /healthz, and at the end a real job must
still train.

Requests that libmicrohttpd rejects before any handler runs (a broken request
line, a header block over its 32 KiB connection memory, an unparsable
Content-Length, a missing Host, an HTTP version it does not speak) get
libmicrohttpd's own status without a JSON body; their rows say json=False."""

import json
import os
import threading
import time

from rel_lib import (Daemon, check, dpo_recipe, error_shape_ok, finish, http_bytes,
                     preference_rows, raw_request, require, write_jsonl)

d = Daemon(extra_args=["--max-body-bytes", "1M"]).start()
write_jsonl(os.path.join(d.data, "pref.jsonl"), preference_rows(16))
os.makedirs(os.path.join(d.data, "sub"), exist_ok=True)
outside_dir = os.path.join(d.dir, "outside")
os.makedirs(outside_dir, exist_ok=True)
outside = os.path.join(outside_dir, "secret.jsonl")
write_jsonl(outside, preference_rows(4))
os.symlink(outside, os.path.join(d.data, "link.jsonl"))
os.symlink(outside_dir, os.path.join(d.data, "linkdir"))
os.symlink("/etc/passwd", os.path.join(d.data, "passwd.jsonl"))
fifo = os.path.join(d.data, "fifo.jsonl")
os.mkfifo(fifo)

# A real job to address by id.
r = d.submit(dpo_recipe(steps=2))
require(r.status == 201, "seed job: %r" % r)
JOB = r.json()["id"]
d.wait_status(JOB, ("succeeded",), timeout=60)

JSON = [("Content-Type", "application/json")]
YAML = [("Content-Type", "application/yaml")]


def recipe_json(**over):
    r = dpo_recipe(steps=2)
    for k, v in over.items():
        if v is DELETE:
            r.pop(k, None)
        else:
            r[k] = v
    return json.dumps(r)


DELETE = object()
BASE_YAML = ("method: dpo\nbeta: 0.1\ndata: preference\ntrain_file: pref.jsonl\nmax_steps: 2\n"
             "model_init: {dim: 16, n_layers: 1, n_heads: 2, n_kv_heads: 2, hidden_dim: 32, "
             "max_seq_len: 32}\n")


def post(path, body, headers=None, **kw):
    return http_bytes("POST", path, headers if headers is not None else JSON, body, **kw)


def get(path, headers=None):
    return http_bytes("GET", path, headers or [])


# (name, request bytes (or a list of chunks), expected status(es), options)
# options: code / etype / param: expected error fields; json: False for
# libmicrohttpd's own replies; check: extra predicate on the response;
# half_close: shut the write side after sending; none_ok: the server may
# close the connection without an answer.
CASES = []


def case(name, req, status, **opt):
    CASES.append((name, req, status, opt))


# ---- broken JSON -----------------------------------------------------------------
for i, body in enumerate(['{', '{"method": "dpo",', '{"method" "dpo"}', "{'method': 'dpo'}",
                          '{"method": dpo}', '[', '}', '{"a":1,}', '{"a":01}', '{"a":.5}',
                          '{"a":1e}', '{"a":-}', '{"a":"\x01"}', '{"a":"\\ud800"}',
                          '{"a":"\\udc00x"}', '{"a":"\\x"}', '/* c */ {"method":"dpo"}',
                          '\ufeff{"method":"dpo"}', '{"a":tru}', '{"a":nul}']):
    case("broken JSON %d %r" % (i, body[:20]), post("/v1/jobs", body), 400,
         etype="invalid_request", code="malformed_json")
for i, body in enumerate(['"a string"', '42', 'null', 'true', '[]', '[{"method":"dpo"}]']):
    case("JSON non-object %d" % i, post("/v1/jobs", body), 400, code="malformed_body")
case("trailing garbage after the object", post("/v1/jobs", recipe_json() + " xyz"), 400,
     code="malformed_json")
case("two objects", post("/v1/jobs", recipe_json() + recipe_json()), 400, code="malformed_json")
case("NUL byte inside the body", post("/v1/jobs", recipe_json()[:-1] + '\x00}'), 400,
     code="malformed_json")
case("escaped NUL in a string", post("/v1/jobs", recipe_json(train_file="pref.jsonl\u0000../x")),
     400, code="malformed_body")
case("empty body", post("/v1/jobs", ""), 400, code="empty_body")

# ---- deep nesting ------------------------------------------------------------------
case("100000 nested arrays", post("/v1/jobs", "[" * 100000 + "]" * 100000), 400,
     code="malformed_json")
case("5000 nested objects", post("/v1/jobs", '{"a":' * 5000 + "1" + "}" * 5000), 400,
     code="malformed_json")
# Recipes nest at most 32 deep (README): deeper is a syntax-level 400.
case("nested 40 deep in a known key",
     post("/v1/jobs", recipe_json(model_init=json.loads('{"a":' * 40 + "1" + "}" * 40))), 400,
     code="malformed_body")
case("YAML nested 200 deep", post("/v1/jobs", "a: " + "[" * 200 + "]" * 200 + "\n", YAML),
     (400, 422), etype="invalid_request")

# ---- huge numbers, NaN / Infinity -------------------------------------------------------
for lit in ("NaN", "Infinity", "-Infinity", "nan", "inf"):
    case("JSON %s literal" % lit, post("/v1/jobs", recipe_json()[:-1] + ', "beta": %s}' % lit),
         400, code="malformed_json")
for key, lit in (("beta", "1e999"), ("beta", "-1e999"), ("max_steps", "1e30"),
                 ("max_steps", "99999999999999999999"), ("seed", "1e400"),
                 ("learning_rate", "1e308"), ("per_device_train_batch_size", "4294967297"),
                 ("max_length", "1" + "0" * 300)):
    case("huge %s=%s" % (key, lit[:12]),
         post("/v1/jobs", recipe_json(**{key: DELETE})[:-1] + ', "%s": %s}' % (key, lit)), 422,
         param=key)
for lit in (".nan", ".inf", "-.inf", ".NaN"):
    case("YAML beta %s" % lit, post("/v1/jobs", BASE_YAML.replace("beta: 0.1", "beta: " + lit),
                                    YAML), 422, param="beta")
case("YAML max_steps 1e30", post("/v1/jobs", BASE_YAML.replace("max_steps: 2", "max_steps: 1e30"),
                                 YAML), 422, param="max_steps")

# ---- wrong types -------------------------------------------------------------------------
for key, val in (("beta", "high"), ("beta", True), ("beta", None), ("beta", []), ("beta", {}),
                 ("max_steps", "5"), ("max_steps", 2.5), ("method", 5), ("method", None),
                 ("train_file", 7), ("train_file", ["pref.jsonl"]), ("model_init", "tiny"),
                 ("model_init", [16]), ("shuffle", "yes"), ("seed", 1.5),
                 ("logging_steps", True), ("learning_rate", "1e-3"),
                 ("per_device_train_batch_size", [1])):
    case("wrong type %s=%r" % (key, val), post("/v1/jobs", recipe_json(**{key: val})), 422,
         etype="invalid_request", param=key)

# ---- unknown keys ---------------------------------------------------------------------------
for key in ("learning_rat", "__proto__", "bêta", "x" * 10000, "recipe_extra", "Beta"):
    # param names the key (cut to the error's 95-byte param field for the long one)
    case("unknown key %r" % key[:12], post("/v1/jobs", recipe_json()[:-1] + ', %s: 1}'
                                           % json.dumps(key)), 422, etype="invalid_request",
         code="invalid_recipe",
         check=lambda r, k=key: len(r.json()["error"]["param"]) > 0
         and k.startswith(r.json()["error"]["param"]))
# An empty key cannot be named in param: a body-level 400.
case("unknown key ''", post("/v1/jobs", recipe_json()[:-1] + ', "": 1}'), 400,
     code="malformed_body")
case("unknown key inside model_init",
     post("/v1/jobs", recipe_json(model_init=dict(dpo_recipe()["model_init"], dimm=3))), 422,
     etype="invalid_request")
case("duplicate JSON key", post("/v1/jobs", recipe_json()[:-1] + ', "beta": 0.2}'), 422,
     param="beta")
case("duplicate YAML key", post("/v1/jobs", BASE_YAML + "beta: 0.3\n", YAML), 422, param="beta")

# ---- YAML hostile forms -----------------------------------------------------------------------
laughs = "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n"
prev = "a"
for i, name in enumerate("bcdefghi"):
    laughs += "%s: &%s [%s]\n" % (name, name, ",".join(["*" + prev] * 9))
    prev = name
case("YAML billion laughs", post("/v1/jobs", laughs, YAML), 400, code="malformed_body",
     check=lambda r: "alias" in r.json()["error"]["message"]
     or "anchor" in r.json()["error"]["message"])
case("YAML alias to an undefined anchor", post("/v1/jobs", BASE_YAML + "seed: *x\n", YAML), 400,
     code="malformed_body")
case("YAML merge key", post("/v1/jobs", "base: &b {beta: 0.1}\n<<: *b\n" + BASE_YAML, YAML), 400,
     code="malformed_body")
case("YAML python tag", post("/v1/jobs", BASE_YAML + "seed: !!python/object:os.system 1\n", YAML),
     (400, 422), etype="invalid_request")
case("YAML two documents", post("/v1/jobs", BASE_YAML + "---\n" + BASE_YAML, YAML), 400,
     code="malformed_body")
case("YAML sequence document", post("/v1/jobs", "- method: dpo\n", YAML), 400,
     code="malformed_body")
case("YAML broken flow", post("/v1/jobs", "method: [dpo\n", YAML), 400, code="malformed_body")
case("YAML bad indentation", post("/v1/jobs", "method: dpo\n  beta: 0.1\n bad: 1\n", YAML), 400,
     code="malformed_body")
case("YAML tab indentation", post("/v1/jobs", "method:\n\t- dpo\n", YAML), 400,
     code="malformed_body")

# ---- body size ------------------------------------------------------------------------------
big = json.dumps({"method": "dpo", "pad": "x" * (2 * 1024 * 1024)})
case("2 MB JSON body (drained)", post("/v1/jobs", big), 413, code="body_too_large")
ten = b'{"pad":"' + b"x" * (10 * 1024 * 1024) + b'"}'
case("10 MB JSON body (refused early)",
     [post("/v1/jobs", "", content_length=False)[:-2] + b"Content-Length: %d\r\n\r\n" % len(ten),
      ten], 413, code="body_too_large", timeout=30)
case("10 MB declared, nothing sent",
     http_bytes("POST", "/v1/jobs", JSON + [("Content-Length", str(10 << 20))]), 413,
     code="body_too_large")
case("10 MB YAML body", post("/v1/preflight", b"a: " + b"y" * (10 << 20), YAML), 413,
     code="body_too_large", timeout=30)

# ---- bad UTF-8 ----------------------------------------------------------------------------------
for i, bad in enumerate([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82",
                         b"\x80", b"\xf8\x88\x80\x80\x80"]):
    body = b'{"method":"dpo","train_file":"pref' + bad + b'.jsonl"}'
    case("bad UTF-8 in JSON %d" % i, post("/v1/jobs", body), 400, code="invalid_utf8")
case("bad UTF-8 in YAML", post("/v1/jobs", BASE_YAML.encode() + b"# \xff\xfe\n", YAML), 400,
     etype="invalid_request")
case("bad UTF-8 in a path", get("/v1/jobs/job_%ff%fe"), 404, code="job_not_found")
case("bad UTF-8 in an unknown route", get("/v1/%ff%c0%af"), 404, code="route_not_found")
case("bad UTF-8 in Content-Type", post("/v1/jobs", recipe_json(),
                                       [("Content-Type", b"application/\xff\xfe")]), 415,
     code="unsupported_media_type")

# ---- paths: traversal, symlinks, absolute, odd files -------------------------------------------
for key, val in (("train_file", "../outside/secret.jsonl"), ("train_file", outside),
                 ("train_file", "sub/../../outside/secret.jsonl"), ("train_file", "/etc/passwd"),
                 ("train_file", "link.jsonl"), ("train_file", "linkdir/secret.jsonl"),
                 ("train_file", "passwd.jsonl"), ("train_file", "/dev/zero"),
                 ("eval_file", "../outside/secret.jsonl"), ("output_dir", "../escape"),
                 ("output_dir", "/tmp"), ("output_dir", "linkdir"),
                 ("tokenizer", "/etc/passwd"), ("reference_model", "../../etc/passwd")):
    case("path %s=%s" % (key, val[-24:]), post("/v1/jobs", recipe_json(**{key: val})), 422,
         etype="preflight_blocked", code="path_outside_data_root", param=key)
case("model outside data_root",
     post("/v1/jobs", recipe_json(model_init=DELETE, model="/etc/passwd")), 422,
     etype="preflight_blocked", code="path_outside_data_root", param="model")
case("train_file is a directory", post("/v1/jobs", recipe_json(train_file="sub")), 422,
     etype="preflight_blocked", code="dataset_not_found")
case("train_file missing", post("/v1/jobs", recipe_json(train_file="nope.jsonl")), 422,
     etype="preflight_blocked", code="dataset_not_found")
case("train_file 5000-character name", post("/v1/jobs", recipe_json(train_file="a" * 5000)),
     422, param="train_file")
case("train_file is a FIFO (must not block)", post("/v1/jobs", recipe_json(train_file="fifo.jsonl")),
     422, etype="preflight_blocked", code="dataset_not_found", fifo=True)
case("model job: reference malformed", post("/v1/jobs", recipe_json(model_init=DELETE,
                                                                    model="job:../../x")),
     422, etype="preflight_blocked")

# ---- hyperparameters out of range ----------------------------------------------------------------
for key, val in (("per_device_train_batch_size", 0), ("per_device_train_batch_size", -3),
                 ("per_device_eval_batch_size", 0), ("gradient_accumulation_steps", 0),
                 ("beta", 0), ("beta", -0.5), ("beta", 1e6), ("learning_rate", -1),
                 ("max_length", 0), ("max_length", 1), ("max_prompt_length", 0),
                 ("logging_steps", 0), ("num_train_epochs", -1), ("warmup_ratio", 2),
                 ("label_smoothing", 0.5), ("max_grad_norm", -1), ("adam_beta1", 1),
                 ("threads", 100000), ("seed", -1), ("max_steps", -2)):
    case("hyperparameter %s=%r" % (key, val), post("/v1/jobs", recipe_json(**{key: val})), 422,
         etype="invalid_request", code="invalid_hyperparameter", param=key)
case("method ppo", post("/v1/jobs", recipe_json(method="ppo")), 422, param="method")
case("data mismatch", post("/v1/jobs", recipe_json(data="sft")), 422, param="data")
case("model_init absurd size", post("/v1/jobs", recipe_json(model_init={
    "dim": 65536, "n_layers": 4096, "n_heads": 2, "n_kv_heads": 2, "hidden_dim": 65536,
    "max_seq_len": 32})), 422, etype=None)
# Documented as accepted: prompts longer than max_length are truncated the TRL way
# (README, Data) and preflight reports it as a warning, not an error.
case("max_length smaller than the prompt (preflight warns)",
     post("/v1/preflight", recipe_json(max_length=4, max_prompt_length=2)), 200, json=False,
     check=lambda r: r.json()["ok"] is True
     and any(w["code"] == "rows_truncated" for w in r.json()["warnings"]))

# ---- methods and routes -----------------------------------------------------------------------------
for m, path, allow in (("DELETE", "/v1/jobs", "GET, POST"), ("PUT", "/v1/jobs", "GET, POST"),
                       ("PATCH", "/v1/jobs/" + JOB, "GET"), ("DELETE", "/v1/jobs/" + JOB, "GET"),
                       ("GET", "/v1/jobs/%s/cancel" % JOB, "POST"),
                       ("POST", "/v1/jobs/%s/metrics" % JOB, "GET"),
                       ("POST", "/healthz", "GET"), ("PUT", "/v1/preflight", "POST"),
                       ("BREW", "/v1/jobs", "GET, POST"), ("OPTIONS", "/v1/jobs", "GET, POST")):
    case("%s %s" % (m, path[:30]), http_bytes(m, path), 405, code="method_not_allowed",
         check=lambda r, a=allow: r.header("Allow") == a)
for path in ("/v1/nope", "/v2/jobs", "/v1/jobs/", "//v1/jobs", "/v1/jobs/%s/extra/deep" % JOB,
             "/V1/JOBS", "/v1", "/v1/jobs/" + JOB + "/", "/.git/config", "/../../etc/passwd",
             "/" + "a" * 8000):
    case("unknown route %s" % path[:30], get(path), 404, etype="not_found")

# ---- headers ------------------------------------------------------------------------------------------
case("no Content-Type", post("/v1/jobs", recipe_json(), []), 415, code="unsupported_media_type")
for ct in ("text/plain", "application/jsonx", "multipart/form-data; boundary=x",
           "application/" + "j" * 5000):
    case("Content-Type %s" % ct[:24], post("/v1/jobs", recipe_json(), [("Content-Type", ct)]), 415,
         code="unsupported_media_type", param="Content-Type")
case("Idempotency-Key empty", post("/v1/jobs", recipe_json(), JSON + [("Idempotency-Key", "")]),
     400, code="invalid_idempotency_key")
case("Idempotency-Key 256 chars", post("/v1/jobs", recipe_json(),
                                       JSON + [("Idempotency-Key", "k" * 256)]), 400,
     code="invalid_idempotency_key")
case("Idempotency-Key control characters",
     post("/v1/jobs", recipe_json(), JSON + [("Idempotency-Key", b"a\x01b")]), 400,
     code="invalid_idempotency_key")
case("Idempotency-Key non-ASCII", post("/v1/jobs", recipe_json(),
                                       JSON + [("Idempotency-Key", b"cl\xc3\xa9")]), 400,
     code="invalid_idempotency_key")
for v in ("abc", "-1", "1e3", "99999999999999999999999"):
    case("Last-Event-ID %s" % v[:10], get("/v1/jobs/%s/events" % JOB, [("Last-Event-ID", v)]), 400,
         code="invalid_parameter", param="Last-Event-ID")
case("header block of 100 KiB", get("/v1/jobs", [("X-Big", "b" * 100000)]), 431, json=False,
     none_ok=True)
case("2000 headers", get("/v1/jobs", [("X-H%d" % i, "v" * 30) for i in range(2000)]), 431,
     json=False, none_ok=True)
case("header line without a colon", b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n",
     400, json=False, none_ok=True)
case("garbage request line", b"GARBAGE\r\n\r\n", 400, json=False, none_ok=True)
case("HTTP/2.0 request line", http_bytes("GET", "/healthz", version="HTTP/2.0"), 505, json=False,
     none_ok=True)
case("HTTP/1.1 without Host", http_bytes("GET", "/v1/jobs", host=False), 400, json=False)
case("Authorization ignored without a token", get("/v1/jobs", [("Authorization", "Bearer x")]),
     200, json=False)

# ---- job ids --------------------------------------------------------------------------------------------
for jid in ("job_", "job_0123456789ABCDEF", "job_0123456789abcdeg", "job_0123456789abcdef0",
            "x" * 5000, "job_%00", "..", "%2e%2e", "job_0123456789abcdef%20", "%27%20OR%201%3D1%20--",
            "job_0123456789abcdef"):
    case("job id %r" % jid[:24], get("/v1/jobs/" + jid), 404, etype="not_found", param="id")
for sub in ("cancel", "metrics", "events", "checkpoints"):
    m = "POST" if sub == "cancel" else "GET"
    case("%s of an unknown job" % sub, http_bytes(m, "/v1/jobs/job_0123456789abcdef/" + sub), 404,
         code="job_not_found")
case("cancel a finished job", http_bytes("POST", "/v1/jobs/%s/cancel" % JOB), 409,
     etype="conflict")

# ---- query parameters -------------------------------------------------------------------------------------
for q, param in (("limit=-1", "limit"), ("limit=0", "limit"), ("limit=101", "limit"),
                 ("limit=abc", "limit"), ("limit=", "limit"), ("limit=1e2", "limit"),
                 ("limit=99999999999999999999", "limit"), ("limit=%201", "limit"),
                 ("after=garbage", "after"), ("after=job_0123456789abcdef", "after"),
                 ("status=bogus", "status"), ("status=", "status")):
    case("GET /v1/jobs?%s" % q, get("/v1/jobs?" + q), 400, code="invalid_parameter", param=param)
for q, param in (("after_step=x", "after_step"), ("after_step=-5", "after_step"),
                 ("after_step=3000000000", "after_step"), ("format=xml", "format")):
    case("metrics ?%s" % q, get("/v1/jobs/%s/metrics?%s" % (JOB, q)), 400,
         code="invalid_parameter", param=param)
case("events ?last_event_id=-1", get("/v1/jobs/%s/events?last_event_id=-1" % JOB), 400,
     param="last_event_id")

# ---- Content-Length lies -------------------------------------------------------------------------------------
body = recipe_json()
case("Content-Length larger than the body, then EOF",
     http_bytes("POST", "/v1/jobs", JSON + [("Content-Length", str(len(body) + 100))], body),
     None, json=False, half_close=True, none_ok=True)
case("Content-Length smaller than the body",
     http_bytes("POST", "/v1/jobs", JSON + [("Content-Length", str(len(body) // 2))], body),
     400, code="malformed_json")
case("Content-Length negative", http_bytes("POST", "/v1/jobs", JSON + [("Content-Length", "-5")],
                                           body, content_length=False), 400, json=False,
     none_ok=True)
case("Content-Length not a number",
     http_bytes("POST", "/v1/jobs", JSON + [("Content-Length", "abc")], body,
                content_length=False), 400, json=False, none_ok=True)
case("Content-Length 2^64",
     http_bytes("POST", "/v1/jobs", JSON + [("Content-Length", "18446744073709551617")], body,
                content_length=False), (400, 413), json=False, none_ok=True)
case("Content-Length twice, different",
     http_bytes("POST", "/v1/jobs", JSON + [("Content-Length", "5"), ("Content-Length", "500")],
                body, content_length=False), (400, 413), json=False, none_ok=True)
case("chunked body with a bad chunk size",
     http_bytes("POST", "/v1/jobs", JSON + [("Transfer-Encoding", "chunked")],
                "zz\r\n" + body + "\r\n0\r\n\r\n", content_length=False), 400, json=False,
     none_ok=True)

# ---- run the table --------------------------------------------------------------------------------------------
BATCH = 20
jobs_before = len(d.get("/v1/jobs?limit=100").json()["data"])
print("%d cases" % len(CASES), flush=True)
require(len(CASES) >= 100, "at least 100 cases (%d)" % len(CASES))


def unblock_fifo():
    # If preflight opened the FIFO for reading it blocks until a writer comes:
    # give it one (and EOF) so a failure here does not hang the daemon.
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
    except OSError:
        pass


for i, (name, req, status, opt) in enumerate(CASES):
    t0 = time.time()
    watchdog = None
    if opt.get("fifo"):
        watchdog = threading.Timer(5.0, unblock_fifo)
        watchdog.start()
    try:
        r = raw_request(d.port, req, timeout=opt.get("timeout", 10),
                        half_close=opt.get("half_close", False))
    except (TimeoutError, OSError, ValueError) as e:
        r = e
    if watchdog:
        watchdog.cancel()
    took = time.time() - t0
    if opt.get("fifo"):
        check(took < 5, "%s: answered in %.1f s (not blocked on the FIFO)" % (name, took))
    if isinstance(r, Exception):
        check(False, "%s: no parsable response: %r" % (name, r))
    elif r is None:
        check(opt.get("none_ok", False) or status is None,
              "%s: connection closed without an answer" % name)
    else:
        want = status if isinstance(status, tuple) else (status,)
        ok = check(status is None or r.status in want,
                   "%s: status %d, expected %s: %r" % (name, r.status, status, r))
        if ok and opt.get("json", True):
            if check(error_shape_ok(r.body), "%s: uniform JSON error body: %r" % (name, r)):
                e = r.json()["error"]
                for field, key in (("etype", "type"), ("code", "code"), ("param", "param")):
                    if opt.get(field) is not None:
                        check(e[key] == opt[field], "%s: error %s %r, expected %r"
                              % (name, key, e[key], opt[field]))
                check((r.header("Content-Type") or "").startswith("application/json"),
                      "%s: JSON content type" % name)
        if ok and opt.get("check"):
            try:
                good = opt["check"](r)
            except Exception as e:  # noqa: BLE001 (any failure of the predicate)
                good = False
                print("  predicate raised %r" % e)
            check(good, "%s: extra check failed: %r" % (name, r))
    if i % BATCH == BATCH - 1 or i == len(CASES) - 1:
        require(d.proc.poll() is None, "daemon alive after case %d (%s)" % (i, name))
        h = d.get("/healthz", timeout=10)
        require(h.status == 200 and h.json() == {"status": "ok"},
                "healthz after case %d: %r" % (i, h))

check(len(d.get("/v1/jobs?limit=100").json()["data"]) == jobs_before,
      "no bad request created a job")

# The daemon still does real work.
r = d.submit(dpo_recipe(steps=2))
require(r.status == 201, "a valid job still submits: %r" % r)
j = d.wait_status(r.json()["id"], ("succeeded", "failed", "blocked", "cancelled"), timeout=60)
check(j["status"] == "succeeded", "and succeeds: %r" % j["status"])
unblock_fifo()
finish("reliability_bad_input")
