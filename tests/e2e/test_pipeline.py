"""e2e: pipelines. An SFT job feeds a DPO job through `model: job:ID` (the
DPO job waits for it, then trains from its final model); a dependency that
fails or is cancelled blocks its dependents with a missing_dependency
blocker, and new submissions naming it are answered 422."""

import math
import os
import random

from e2e_lib import TINY_MODEL, Daemon, check, finish, require, write_jsonl

d = Daemon().start()

# Pre-tokenized rows (ids below the byte vocabulary of model_init, 259), so
# a model read back from a job folder needs no tokenizer.
rng = random.Random(4)
sft = []
pref = []
for i in range(24):
    p = [1] + [rng.randrange(3, 200) for _ in range(5)]
    good = [rng.randrange(3, 200) for _ in range(4)]
    bad = [rng.randrange(3, 200) for _ in range(4)]
    sft.append({"prompt_ids": p, "completion_ids": good})
    pref.append({"prompt_ids": p, "chosen_ids": good, "rejected_ids": bad})
write_jsonl(os.path.join(d.data, "sft_ids.jsonl"), sft)
write_jsonl(os.path.join(d.data, "pref_ids.jsonl"), pref)

COMMON = {"max_length": 32, "max_prompt_length": 16, "per_device_train_batch_size": 4,
          "logging_steps": 1, "save_steps": 0}


def sft_recipe(**kw):
    r = {"method": "sft", "model_init": dict(TINY_MODEL), "train_file": "sft_ids.jsonl",
         "max_steps": 5, "learning_rate": 1e-3}
    r.update(COMMON)
    r.update(kw)
    return r


def dpo_from(job_id, **kw):
    r = {"method": "dpo", "beta": 0.1, "model": "job:" + job_id, "train_file": "pref_ids.jsonl",
         "max_steps": 4, "learning_rate": 1e-3}
    r.update(COMMON)
    r.update(kw)
    return r


def long_job():
    r = d.submit(sft_recipe(max_steps=200000, logging_steps=1000))
    require(r.status == 201, "long job submitted: %r" % r)
    return r.json()["id"]


def terminal(job_id, timeout=90):
    return d.wait_status(job_id, ("succeeded", "failed", "cancelled", "blocked"), timeout=timeout)


# ---- SFT -> DPO ----------------------------------------------------------------------
r = d.submit(sft_recipe())
require(r.status == 201, "SFT job: %r" % r)
s_id = r.json()["id"]
r = d.submit(dpo_from(s_id))
require(r.status == 201, "DPO job on job:%s accepted while it is unfinished: %r" % (s_id, r))
p_id = r.json()["id"]
check(r.json()["depends_on"] == s_id, "depends_on names the SFT job")
check(r.json()["recipe"]["model"] == "job:" + s_id, "recipe keeps the job reference")
r = d.submit(dpo_from(s_id, reference_model="job:" + s_id, seed=9))
require(r.status == 201, "DPO job with model and reference_model from the job: %r" % r)
q_id = r.json()["id"]

s = terminal(s_id)
require(s["status"] == "succeeded", "SFT job succeeded: %r" % s)
p = terminal(p_id)
require(p["status"] == "succeeded",
        "DPO job succeeded: %s %r %r" % (p["status"], p["error"], p["blockers"]))
q = terminal(q_id)
check(q["status"] == "succeeded",
      "DPO job with a job reference model: %s %r" % (q["status"], q["blockers"]))
check(p["started_at"] >= s["finished_at"], "the DPO job started after the SFT job finished")
rows = d.get("/v1/jobs/%s/metrics" % p_id).json()["data"]
check([x["step"] for x in rows] == [1, 2, 3, 4], "DPO metrics 1..4")
# The reference is a frozen copy of the SFT model the policy starts from.
check(abs(rows[0]["loss"] - math.log(2)) < 1e-6,
      "step-1 loss of DPO on the SFT model is ln 2: %r" % rows[0]["loss"])
sft_rows = d.get("/v1/jobs/%s/metrics" % s_id).json()["data"]
check("rewards/margins" not in sft_rows[0] and "loss" in sft_rows[0],
      "SFT metrics have no preference terms")

# A reference to a finished job is resolved right away (no waiting).
r = d.submit(dpo_from(s_id, seed=11))
check(r.status == 201 and r.json()["depends_on"] is None,
      "succeeded dependency needs no wait: %r" % r)
terminal(r.json()["id"])

# ---- a failed dependency blocks its dependents -----------------------------------------
hold = long_job()  # keeps the single slot busy so the next jobs wait
r = d.submit(sft_recipe(learning_rate=1.0, max_grad_norm=0, adam_beta2=0.0, adam_epsilon=1e-30,
                        max_steps=50))
require(r.status == 201, "doomed SFT job: %r" % r)
f_id = r.json()["id"]
r = d.submit(dpo_from(f_id))
require(r.status == 201, "dependent of the doomed job: %r" % r)
g_id = r.json()["id"]
r = d.submit(sft_recipe(seed=12))
require(r.status == 201, "job to cancel: %r" % r)
e_id = r.json()["id"]
r = d.submit(dpo_from(e_id))
require(r.status == 201, "dependent of the job to cancel: %r" % r)
k_id = r.json()["id"]

check(d.post("/v1/jobs/%s/cancel" % e_id).json()["status"] == "cancelled",
      "queued dependency cancelled")
k = terminal(k_id, timeout=30)
check(k["status"] == "blocked" and k["blockers"]
      and k["blockers"][0]["code"] == "missing_dependency",
      "dependent of a cancelled job is blocked missing_dependency: %s %r"
      % (k["status"], k["blockers"]))
check(k["started_at"] is None, "the blocked job never ran")

check(d.post("/v1/jobs/%s/cancel" % hold).status == 202, "long job cancelled")
f = terminal(f_id)
check(f["status"] == "failed" and f["error"]["type"] == "nan_loss",
      "doomed job failed: %s %r" % (f["status"], f["error"]))
g = terminal(g_id, timeout=30)
check(g["status"] == "blocked", "dependent of a failed job is blocked: %s" % g["status"])
check(g["blockers"] and g["blockers"][0]["code"] == "missing_dependency"
      and f_id in g["blockers"][0]["message"],
      "its blocker names the failed job: %r" % g["blockers"])
events, _ = d.events(g_id)
check([e[2]["status"] for e in events if e[1] == "status"] == ["queued", "blocked"],
      "blocked dependent's stream: queued then blocked, then it ends")

r = d.submit(dpo_from(f_id))
check(r.status == 422 and r.json()["error"]["type"] == "preflight_blocked"
      and any(b["code"] == "missing_dependency" and b["field"] == "model"
              for b in r.json()["blockers"]),
      "new job on a failed dependency: 422 missing_dependency: %r" % r)
r = d.submit(dpo_from("job_0123456789abcdef"))
check(r.status == 422 and any(b["code"] == "missing_dependency" for b in r.json()["blockers"]),
      "job reference to no job: 422: %r" % r)

finish("e2e_pipeline")
