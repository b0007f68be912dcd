"""e2e: submit short real DPO jobs as JSON and as the lesson's YAML, follow
them to succeeded, and read metrics (JSON + CSV), the SSE stream (order, end
after the terminal status, Last-Event-ID resume), checkpoints, the job list,
idempotent retries and the Prometheus exposition."""

import math
import os

from e2e_lib import (Daemon, check, dpo_recipe, finish, parse_prometheus, preference_rows,
                     require, write_jsonl)

LESSON_YAML = """\
recipe:
method: dpo # routes to the AlignmentHandler
beta: 0.1 # how hard to push toward chosen vs stay near the reference
data: preference # rows of {prompt, chosen, rejected}
model_init: {dim: 16, n_layers: 1, n_heads: 2, n_kv_heads: 2, hidden_dim: 32, max_seq_len: 32}
train_file: pref.jsonl
max_steps: 6
logging_steps: 1
save_steps: 2
per_device_train_batch_size: 4
learning_rate: 0.001
max_length: 32
max_prompt_length: 16
"""

d = Daemon().start()
write_jsonl(os.path.join(d.data, "pref.jsonl"), preference_rows(32))

r = d.get("/healthz")
check(r.status == 200 and r.json() == {"status": "ok"}, "healthz: %r" % r)
r = d.get("/readyz")
check(r.status == 200 and r.json()["status"] == "ready", "readyz: %r" % r)
caps = d.get("/v1/capabilities").json()
check(caps["methods"] == ["sft", "dpo", "orpo"], "capabilities methods: %r" % caps["methods"])
check("sigmoid" in caps["loss_types"] and caps["blas"].startswith("OpenBLAS"),
      "capabilities loss types and BLAS: %r" % caps)
check(caps["threads"]["max_concurrent_jobs"] == 1 and caps["threads"]["blas_threads_per_job"] >= 1,
      "capabilities threads: %r" % caps["threads"])

# ---- JSON and YAML submissions ---------------------------------------------------
r = d.submit(dpo_recipe(steps=6))
require(r.status == 201, "JSON submit answered 201: %r" % r)
job_json = r.json()
jid = job_json["id"]
check(r.header("Location") == "/v1/jobs/" + jid, "Location header")
check(job_json["status"] in ("queued", "running"), "new job is queued: %s" % job_json["status"])
check(job_json["method"] == "dpo" and job_json["recipe"]["beta"] == 0.1, "job method and recipe")
check(job_json["output_dir"] == os.path.join(os.path.realpath(d.state), "jobs", jid),
      "default output_dir is state_dir/jobs/<id>: %s" % job_json["output_dir"])
check(job_json["progress"]["total_steps"] == 6,
      "total_steps from preflight: %r" % job_json["progress"])

r = d.submit(None, yaml_text=LESSON_YAML)
require(r.status == 201, "YAML (lesson form) submit answered 201: %r" % r)
yid = r.json()["id"]
check(r.json()["recipe"]["method"] == "dpo" and r.json()["recipe"]["data"] == "preference",
      "YAML recipe parsed")

j = d.wait_status(jid, ("succeeded", "failed", "cancelled", "blocked"), timeout=120)
require(j["status"] == "succeeded", "JSON job succeeded: %s %s" % (j["status"], j.get("error")))
y = d.wait_status(yid, ("succeeded", "failed", "cancelled", "blocked"), timeout=120)
require(y["status"] == "succeeded", "YAML job succeeded: %s %s" % (y["status"], y.get("error")))

check(j["started_at"] and j["finished_at"] and j["started_at"] <= j["finished_at"], "timestamps")
check(j["progress"]["step"] == 6, "progress reached 6: %r" % j["progress"])
s = j["summary"]
for key in ("train_rewards/margins", "train_rewards/accuracies", "train_loss"):
    check(isinstance(s.get(key), float) or isinstance(s.get(key), int),
          "summary has %s: %r" % (key, s))
check(s["final_model"] == os.path.join(j["output_dir"], "final", "model.bin")
      and os.path.getsize(s["final_model"]) > 0, "final model written: %r" % s["final_model"])
check(j["latest_metrics"]["step"] == 6, "latest_metrics is step 6")

# ---- metrics -----------------------------------------------------------------------
m = d.get("/v1/jobs/%s/metrics" % jid)
require(m.status == 200, "metrics: %r" % m)
rows = m.json()["data"]
check(m.json()["job_id"] == jid, "metrics job_id")
check([row["step"] for row in rows] == [1, 2, 3, 4, 5, 6],
      "metric steps 1..6: %r" % [row["step"] for row in rows])
# Step 1: the policy equals its frozen reference, so every DPO logit is 0:
# loss = -log sigmoid(0) = ln 2 and the reward margin is 0.
check(abs(rows[0]["loss"] - math.log(2)) < 1e-6, "step-1 DPO loss is ln 2: %r" % rows[0]["loss"])
check(abs(rows[0]["rewards/margins"]) < 1e-9, "step-1 margin is 0: %r" % rows[0]["rewards/margins"])
check(rows[-1]["loss"] < rows[0]["loss"],
      "loss decreased: %r -> %r" % (rows[0]["loss"], rows[-1]["loss"]))
check(abs(s["train_rewards/margins"] - rows[-1]["rewards/margins"]) < 1e-12,
      "summary margin equals the last logged margin")
m3 = d.get("/v1/jobs/%s/metrics?after_step=3" % jid).json()["data"]
check([row["step"] for row in m3] == [4, 5, 6], "after_step=3 gives 4..6: %r" % m3)

c = d.get("/v1/jobs/%s/metrics?format=csv" % jid)
check(c.status == 200 and c.header("Content-Type").startswith("text/csv"), "CSV content type")
lines = c.body.decode().strip().split("\n")
header = lines[0].split(",")
check(header[0] == "step" and "loss" in header and "rewards/margins" in header,
      "CSV header names the metrics: %r" % header)
check(len(lines) == 7, "CSV has 6 data lines: %d" % (len(lines) - 1))
li = header.index("loss")
for row, line in zip(rows, lines[1:]):
    cells = line.split(",")
    check(int(cells[0]) == row["step"] and abs(float(cells[li]) - row["loss"]) < 1e-12,
          "CSV row matches JSON at step %d" % row["step"])
r = d.get("/v1/jobs/%s/metrics?format=xml" % jid)
check(r.status == 400 and r.json()["error"]["param"] == "format", "bad format is 400: %r" % r)

# ---- SSE -------------------------------------------------------------------------
events, _ = d.events(jid)
ids = [e[0] for e in events]
check(ids == list(range(1, len(ids) + 1)), "event ids 1..n in order: %r" % ids)
check(events[0][1] == "status" and events[0][2]["status"] == "queued", "first event: queued")
statuses = [e[2]["status"] for e in events if e[1] == "status"]
check(statuses == ["queued", "running", "succeeded"], "status events: %r" % statuses)
check(events[-1][1] == "status" and events[-1][2]["status"] == "succeeded",
      "stream ends after the terminal status")
msteps = [e[2]["step"] for e in events if e[1] == "metrics"]
check(msteps == [1, 2, 3, 4, 5, 6], "metrics events by step: %r" % msteps)
mloss = [e[2]["values"]["loss"] for e in events if e[1] == "metrics"]
check(all(abs(a - b["loss"]) < 1e-12 for a, b in zip(mloss, rows)),
      "SSE metrics equal stored metrics")
check(any(e[1] == "log" for e in events), "log events present")
k = ids[len(ids) // 2]
tail, _ = d.events(jid, last_event_id=k)
check([e[0] for e in tail] == ids[k:],
      "Last-Event-ID %d resumes after it: %r" % (k, [e[0] for e in tail]))
tail2, _ = d.events(jid, query="?last_event_id=%d" % k)
check([e[0] for e in tail2] == ids[k:], "?last_event_id resumes too")
end, _ = d.events(jid, last_event_id=ids[-1])
check(end == [], "resuming after the terminal event gives an empty, finished stream")

# ---- checkpoints ---------------------------------------------------------------------
ck = d.get("/v1/jobs/%s/checkpoints" % yid)
require(ck.status == 200, "checkpoints: %r" % ck)
csteps = [c["step"] for c in ck.json()["data"]]
check(csteps == [2, 4, 6], "checkpoints every 2 steps: %r" % csteps)
check(all(c["path"].startswith(y["output_dir"]) for c in ck.json()["data"]),
      "checkpoint paths in the job folder")

# ---- idempotency ---------------------------------------------------------------------
body = dpo_recipe(steps=2, seed=7)
r1 = d.submit(body, headers={"Idempotency-Key": "retry-1"})
r2 = d.submit(body, headers={"Idempotency-Key": "retry-1"})
check(r1.status == 201 and r2.status == 201, "idempotent submits: %r %r" % (r1, r2))
check(r1.json()["id"] == r2.json()["id"], "same key and body return the same job")
check(r2.header("Idempotent-Replayed") == "true", "replay is marked")
r3 = d.submit(dpo_recipe(steps=3, seed=7), headers={"Idempotency-Key": "retry-1"})
check(r3.status == 409 and r3.json()["error"]["code"] == "idempotency_conflict",
      "same key, different body is 409: %r" % r3)
d.wait_status(r1.json()["id"], ("succeeded",), timeout=60)

# ---- list ------------------------------------------------------------------------------
page1 = d.get("/v1/jobs?limit=2").json()
check(page1["object"] == "list" and len(page1["data"]) == 2 and page1["has_more"],
      "page 1: %r" % page1)
page2 = d.get("/v1/jobs?limit=2&after=" + page1["data"][-1]["id"]).json()
check(len(page2["data"]) == 1 and not page2["has_more"], "page 2: %r" % page2)
all_ids = [x["id"] for x in page1["data"] + page2["data"]]
check(sorted(all_ids) == sorted([jid, yid, r1.json()["id"]]), "pages cover every job once")
succ = d.get("/v1/jobs?status=succeeded").json()["data"]
check(len(succ) == 3, "status filter: %d" % len(succ))
check(d.get("/v1/jobs?status=running").json()["data"] == [], "no running jobs")
check(d.get("/v1/jobs?status=bogus").status == 400, "unknown status filter is 400")
check(d.get("/v1/jobs?limit=0").status == 400, "limit 0 is 400")

# ---- cancel a finished job -------------------------------------------------------------
r = d.post("/v1/jobs/%s/cancel" % jid)
check(r.status == 409 and r.json()["error"]["type"] == "conflict",
      "cancel of a finished job is 409: %r" % r)

# ---- Prometheus ----------------------------------------------------------------------
p = d.get("/metrics")
check(p.status == 200 and p.header("Content-Type").startswith("text/plain; version=0.0.4"),
      "metrics content type: %r" % p.header("Content-Type"))
types, samples = parse_prometheus(p.body.decode())
check(types.get("brewslm_jobs") == "gauge", "brewslm_jobs is a gauge")
check(types.get("brewslm_steps_trained_total") == "counter", "steps counter")
check(types.get("brewslm_tokens_trained_total") == "counter", "tokens counter")
check(types.get("brewslm_http_requests_total") == "counter", "requests counter")
check(types.get("brewslm_http_request_duration_seconds") == "histogram", "latency histogram")
val = {(n, tuple(sorted(l.items()))): v for n, l, v in samples}
check(val.get(("brewslm_jobs", (("status", "succeeded"),))) == 3, "3 succeeded jobs in the gauge")
check(val.get(("brewslm_steps_trained_total", ())) == 6 + 6 + 2, "steps counter is 14: %r"
      % val.get(("brewslm_steps_trained_total", ())))
check(val.get(("brewslm_http_requests_total", (("code", "201"), ("route", "/v1/jobs")))) == 4,
      "four 201s on /v1/jobs counted")
buckets = [(l["le"], v) for n, l, v in samples
           if n == "brewslm_http_request_duration_seconds_bucket" and l["route"] == "/v1/jobs/{id}"]
counts = [v for _, v in buckets]
check(buckets and buckets[-1][0] == "+Inf" and counts == sorted(counts), "cumulative buckets")
cnt = val.get(("brewslm_http_request_duration_seconds_count", (("route", "/v1/jobs/{id}"),)))
check(cnt == counts[-1], "+Inf bucket equals _count")

finish("e2e_jobs")
