"""e2e: cancelling jobs — a running job stops cooperatively within a step
(checkpointing) and ends cancelled, a queued job is cancelled at once, and a
finished job cannot be cancelled (409)."""

import os

from e2e_lib import Daemon, check, dpo_recipe, finish, preference_rows, require, write_jsonl

d = Daemon().start()
write_jsonl(os.path.join(d.data, "pref.jsonl"), preference_rows(32))

LONG = 200000  # far longer than the test waits: only a cancel ends it
r = d.submit(dpo_recipe(steps=LONG, logging_steps=50))
require(r.status == 201, "long job submitted: %r" % r)
a = r.json()["id"]
r = d.submit(dpo_recipe(steps=LONG, seed=3))
require(r.status == 201, "second job submitted: %r" % r)
b = r.json()["id"]

j = d.wait_step(a, 60, timeout=60)
require(j["status"] == "running", "first job is running: %s" % j["status"])
check(d.job(b)["status"] == "queued", "with one slot the second job waits in the queue")

# Queued: cancelled at once, never started.
r = d.post("/v1/jobs/%s/cancel" % b)
check(r.status == 200 and r.json()["status"] == "cancelled", "queued job cancelled at once: %r" % r)
check(r.json()["started_at"] is None, "a cancelled queued job never started")

# Running: cooperative.
r = d.post("/v1/jobs/%s/cancel" % a)
check(r.status == 202 and r.json()["cancel_requested"] is True,
      "running job: 202, cancel requested: %r" % r)
j = d.wait_status(a, ("cancelled", "succeeded", "failed"), timeout=30)
check(j["status"] == "cancelled", "running job ended cancelled: %s" % j["status"])
check(j["error"] and j["error"]["type"] == "cancelled",
      "cancelled job carries the reason: %r" % j["error"])
stop = j["progress"]["step"]
check(60 <= stop < LONG, "stopped early, at step %d" % stop)
ck = [c["step"] for c in d.get("/v1/jobs/%s/checkpoints" % a).json()["data"]]
check(ck and ck[-1] == stop, "a checkpoint was written at the stop step %d: %r" % (stop, ck))
events, _ = d.events(a)
check(events and events[-1][1] == "status" and events[-1][2]["status"] == "cancelled",
      "event stream ends with cancelled")

r = d.post("/v1/jobs/%s/cancel" % a)
check(r.status == 409 and r.json()["error"]["code"] == "job_not_cancellable",
      "second cancel: 409: %r" % r)
r = d.post("/v1/jobs/job_0123456789abcdef/cancel")
check(r.status == 404, "cancel of an unknown job: 404: %r" % r)

# The slot is free again.
r = d.submit(dpo_recipe(steps=3))
require(r.status == 201, "next job submitted: %r" % r)
j = d.wait_status(r.json()["id"], ("succeeded", "failed", "cancelled", "blocked"), timeout=60)
check(j["status"] == "succeeded", "next job runs after the cancel: %s" % j["status"])

finish("e2e_cancel")
