"""e2e: restarts. A job running when brewslmd gets SIGTERM checkpoints, goes
back to queued and the daemon exits 0; one running at kill -9 is re-queued at
the next start. Both resume from their checkpoint and finish succeeded with
metric steps 1..N, no gaps or duplicates, equal to an uninterrupted run."""

import os
import signal

from e2e_lib import Daemon, check, dpo_recipe, finish, preference_rows, require, write_jsonl

STEPS = 80
MODEL = {"dim": 48, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "hidden_dim": 96,
         "max_seq_len": 32}


def recipe(seed):
    return dpo_recipe(steps=STEPS, save_steps=10, seed=seed, model_init=dict(MODEL),
                      per_device_train_batch_size=8)


d = Daemon(extra_args=["--shutdown-timeout", "30"]).start()
write_jsonl(os.path.join(d.data, "pref.jsonl"), preference_rows(64))


def metrics(job_id):
    return d.get("/v1/jobs/%s/metrics" % job_id).json()["data"]


def check_resumed(job_id, reference, killed_at, how):
    j = d.wait_status(job_id, ("succeeded", "failed", "cancelled", "blocked"), timeout=180)
    require(j["status"] == "succeeded",
            "%s: job finished succeeded: %s %r" % (how, j["status"], j["error"]))
    rows = metrics(job_id)
    steps = [r["step"] for r in rows]
    check(steps == list(range(1, STEPS + 1)),
          "%s: metric steps 1..%d without gaps or duplicates: %r"
          % (how, STEPS, steps))
    check(j["attempts"] == 2, "%s: two attempts: %r" % (how, j["attempts"]))
    resumed = j["summary"]["resumed_from"]
    check(0 < resumed <= killed_at,
          "%s: resumed from step %d (stopped at %d)" % (how, resumed, killed_at))
    worst = max(abs(a["loss"] - b["loss"]) / max(1e-12, abs(b["loss"]))
                for a, b in zip(rows, reference))
    check(worst < 1e-5,
          "%s: losses equal the uninterrupted run (worst relative gap %.3g)" % (how, worst))
    return j


def status_events(events):
    """(status, detail.reason) of each status event."""
    return [(e[2]["status"], (e[2].get("detail") or {}).get("reason"))
            for e in events if e[1] == "status"]


# Reference: the same recipe (same seed) without interruption.
r = d.submit(recipe(5))
require(r.status == 201, "reference job: %r" % r)
ref_id = r.json()["id"]
j = d.wait_status(ref_id, ("succeeded", "failed", "blocked"), timeout=180)
require(j["status"] == "succeeded", "reference job succeeded: %r" % j)
reference = metrics(ref_id)
require([x["step"] for x in reference] == list(range(1, STEPS + 1)), "reference metrics complete")

# ---- SIGTERM: checkpoint, back to queued, exit 0 ---------------------------------
r = d.submit(recipe(5))
require(r.status == 201, "job 1 submitted: %r" % r)
j1 = r.json()["id"]
j = d.wait_step(j1, 15, timeout=120)
require(j["status"] == "running", "job 1 running before SIGTERM: %s" % j["status"])
d.signal(signal.SIGTERM)
rc = d.wait_exit(45)
check(rc == 0, "SIGTERM: daemon exited 0 (rc %r)" % rc)
require(rc is not None, "daemon exited after SIGTERM")
d.start()
j = d.job(j1)
check(j["status"] in ("queued", "running", "succeeded"), "job 1 after restart: %s" % j["status"])
stopped_at = check_resumed(j1, reference, STEPS - 1, "SIGTERM")["summary"]["resumed_from"]
events, _ = d.events(j1)
st = status_events(events)
check([s for s, _ in st] == ["queued", "running", "queued", "running", "succeeded"],
      "SIGTERM: status events %r" % st)
check(("queued", "daemon shutdown") in st, "SIGTERM: re-queued for a shutdown: %r" % st)
ck = [c["step"] for c in d.get("/v1/jobs/%s/checkpoints" % j1).json()["data"]]
check(stopped_at in ck, "SIGTERM: the stop step %d has a checkpoint: %r" % (stopped_at, ck))

# ---- kill -9: re-queued at start-up -------------------------------------------------
r = d.submit(recipe(5))
require(r.status == 201, "job 2 submitted: %r" % r)
j2 = r.json()["id"]
j = d.wait_step(j2, 25, timeout=120)
require(j["status"] == "running", "job 2 running before kill -9: %s" % j["status"])
killed_at = j["progress"]["step"]
d.signal(signal.SIGKILL)
check(d.wait_exit(10) == -signal.SIGKILL, "daemon killed")
d.start()
j = check_resumed(j2, reference, STEPS, "kill -9")
check(j["summary"]["resumed_from"] % 10 == 0, "kill -9: resumed from a save_steps checkpoint: %d"
      % j["summary"]["resumed_from"])
events, _ = d.events(j2)
st = status_events(events)
check(("queued", "daemon restart") in st, "kill -9: re-queued at start-up: %r" % st)
check(st[-1][0] == "succeeded", "kill -9: stream ends succeeded")
check(killed_at >= 25, "killed mid-run at step %d" % killed_at)

finish("e2e_restart")
