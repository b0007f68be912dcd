"""reliability: crash consistency under kill -9.

Twenty times: submit a job (save_steps 1 or 2, logging_steps 1, so checkpoint
writes and metric commits happen every step) while a second client keeps
submitting small jobs, kill -9 the daemon after a random delay (anywhere from
before the first step to after the last), and before restarting check that

  * PRAGMA integrity_check answers ok;
  * the newest complete checkpoint on disk (CRC checked here, independently of
    the trainer) is where the job must resume: after the restart the job's
    summary says resumed_from == that step, never a *.tmp file's step. Twice a
    torn newest checkpoint (a truncated step-N.state) and a CRC-valid but
    unfinished step-N.state.tmp carrying a later step are planted: the trainer
    must skip the first, ignore the second and fall back to the valid file;

and after restarting that every job acknowledged with 201 still exists (and
its Idempotency-Key still maps to it), the job finishes succeeded, its metric
history is steps 1..N once each, with losses and the cumulative num_tokens
equal to an uninterrupted run, and its event ids are 1..K without gaps."""

import os
import random
import shutil
import signal
import struct
import threading
import time
import zlib

from rel_lib import (Daemon, check, db_integrity, db_query, dpo_recipe, finish, parse_prometheus,
                     preference_rows, require, valid_checkpoints, write_jsonl)

ROUNDS = 20
STEPS = 40
rng = random.Random(int(os.environ.get("BREWSLM_CRASH_SEED", "20240601")))
print("seed %s" % os.environ.get("BREWSLM_CRASH_SEED", "20240601"), flush=True)


# Small, but with a ~0.5 MB training state, so a kill can land inside a write.
MODEL = {"dim": 48, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "hidden_dim": 96,
         "max_seq_len": 32}


def recipe(save_steps):
    return dpo_recipe(steps=STEPS, save_steps=save_steps, logging_steps=1, seed=7,
                      per_device_train_batch_size=4, model_init=dict(MODEL))


d = Daemon(extra_args=["--shutdown-timeout", "5"]).start()
write_jsonl(os.path.join(d.data, "pref.jsonl"), preference_rows(48))


def metrics(job_id):
    r = d.get("/v1/jobs/%s/metrics" % job_id)
    require(r.status == 200, "metrics of %s: %r" % (job_id, r))
    return r.json()["data"]


# ---- the uninterrupted reference -------------------------------------------------------
t0 = time.time()
r = d.submit(recipe(1))
require(r.status == 201, "reference submit: %r" % r)
ref_id = r.json()["id"]
j = d.wait_status(ref_id, ("succeeded", "failed"), timeout=120)
require(j["status"] == "succeeded", "reference succeeded: %r" % j["error"])
T_RUN = time.time() - t0
reference = metrics(ref_id)
require([m["step"] for m in reference] == list(range(1, STEPS + 1)), "reference steps")
require(all("num_tokens" in m for m in reference), "num_tokens logged on every train row")
tokens = [m["num_tokens"] for m in reference]
check(all(b > a for a, b in zip(tokens, tokens[1:])) and tokens[0] > 0,
      "num_tokens is cumulative and increasing: %r" % tokens[:5])
T_STEP = T_RUN / STEPS
print("reference run: %.2f s for %d steps" % (T_RUN, STEPS), flush=True)


# ---- a second client submitting while the daemon dies ----------------------------------------
class Submitter(threading.Thread):
    """POSTs small jobs with Idempotency-Keys until stopped; records the
    acknowledged (201) ones."""

    def __init__(self, tag):
        super().__init__(daemon=True)
        self.tag = tag
        self.acked = {}  # key -> id
        self.stop = threading.Event()

    def run(self):
        i = 0
        while not self.stop.is_set():
            key = "crash-%s-%d" % (self.tag, i)
            i += 1
            try:
                r = d.submit(dpo_recipe(steps=1), headers={"Idempotency-Key": key})
            except OSError:
                time.sleep(0.02)  # the daemon is gone: keep trying until stopped
                continue
            if r.status == 201:
                self.acked[key] = r.json()["id"]
            time.sleep(0.03)


def plant_torn(ckpt_dir, valid):
    """Next to the newest valid checkpoint V: a truncated step-(V+1).state and
    a CRC-valid step-(V+2).state.tmp claiming step V+2 (an unfinished
    write's name). Returns True when planted."""
    v = max(valid)
    if v + 2 >= STEPS:
        return False
    data = open(valid[v], "rb").read()
    with open(os.path.join(ckpt_dir, "step-%d.state" % (v + 1)), "wb") as f:
        f.write(data[:len(data) // 2])
    forged = bytearray(data[:-4])
    struct.pack_into("<i", forged, 16 + 44, v + 2)  # header step field (rel_lib)
    forged += struct.pack("<I", zlib.crc32(bytes(forged)) & 0xFFFFFFFF)
    with open(os.path.join(ckpt_dir, "step-%d.state.tmp" % (v + 2)), "wb") as f:
        f.write(forged)
    return True


stats = {"before_start": 0, "running": 0, "finished": 0, "tmp_seen": 0, "planted": 0,
         "resumed": 0}
all_acked = {}
for rnd in range(ROUNDS):
    save_steps = 1 if rnd % 2 == 0 else 2
    sub = Submitter(rnd)
    r = d.submit(recipe(save_steps))
    require(r.status == 201, "round %d: submit: %r" % (rnd, r))
    jid = r.json()["id"]
    out_dir = r.json()["output_dir"]
    ckpt_dir = os.path.join(out_dir, "checkpoints")
    sub.start()
    # Kill at a random point of the run: once a random step has been logged
    # (0: right after the submission; a few rounds after the last step), plus
    # a random slice of the next step, which lands inside a step, a metrics
    # commit or a checkpoint write. Progress-driven, so the machine's speed
    # does not skew where the kills land.
    tear = rnd % 5 == 4
    target = rng.randint(1, STEPS - 4) if tear else rng.randint(0, STEPS + 2)
    t_kill = time.time()
    while target > 0 and time.time() - t_kill < 60:
        j = d.job(jid)
        if (j.get("progress") or {}).get("step", 0) >= min(target, STEPS) or \
                j["status"] not in ("queued", "running"):
            break
        time.sleep(0.003)
    if tear:
        # Every fifth round: the moment the next checkpoint is half written
        # (its step-N.state.tmp exists), to be sure some kills tear a write.
        while time.time() - t_kill < 60:
            try:
                if any(n.endswith(".state.tmp") for n in os.listdir(ckpt_dir)):
                    d.signal(signal.SIGKILL)  # at once: the write takes milliseconds
                    break
            except FileNotFoundError:
                pass
            time.sleep(0.0002)
    else:
        time.sleep(rng.uniform(0.0, T_STEP))
    delay = time.time() - t_kill
    d.signal(signal.SIGKILL)
    require(d.wait_exit(10) == -signal.SIGKILL, "round %d: daemon killed" % rnd)
    sub.stop.set()
    sub.join(10)
    all_acked.update(sub.acked)

    # ---- the files as the crash left them -------------------------------------------------
    check(db_integrity(d.db) == [("ok",)], "round %d: integrity_check ok" % rnd)
    status_at_kill, step_at_kill = db_query(d.db, "SELECT status, step FROM jobs WHERE id = ?",
                                            (jid,))[0]
    names = os.listdir(ckpt_dir) if os.path.isdir(ckpt_dir) else []
    if any(n.endswith(".tmp") for n in names):
        stats["tmp_seen"] += 1
    valid = valid_checkpoints(ckpt_dir)
    expect_resume = max(valid) if valid else 0
    planted = False
    if rnd >= 3 and stats["planted"] < 2 and status_at_kill == "running" and valid:
        planted = plant_torn(ckpt_dir, valid)
        stats["planted"] += planted
    stats[{"queued": "before_start", "running": "running"}.get(status_at_kill, "finished")] += 1
    print("round %2d: killed after %.2f s at step %s (%s), newest valid checkpoint %d%s%s"
          % (rnd, delay, step_at_kill, status_at_kill,
             expect_resume, ", tmp present" if any(n.endswith(".tmp") for n in names) else "",
             ", planted torn files" if planted else ""), flush=True)

    # ---- restart -------------------------------------------------------------------------------
    d.start()
    for key, aid in sub.acked.items():
        r = d.get("/v1/jobs/" + aid)
        check(r.status == 200, "round %d: acknowledged job %s exists after the crash" % (rnd, aid))
    # Cancel the queued extras so they do not hold up the next rounds; a
    # retried key returns the same job (the key survived the crash too).
    for key, aid in list(sub.acked.items())[:3]:
        r = d.submit(dpo_recipe(steps=1), headers={"Idempotency-Key": key})
        check(r.status == 201 and r.json()["id"] == aid,
              "round %d: Idempotency-Key %s still names %s: %r" % (rnd, key, aid, r))
    # Every job submitted after this round's job (acknowledged or not: a
    # commit whose 201 was lost in the crash is a job too) is cancelled.
    extras = [x for (x,) in db_query(d.db, "SELECT id FROM jobs WHERE seq > (SELECT seq FROM jobs "
                                     "WHERE id = ?)", (jid,))]
    for aid in extras:
        d.post("/v1/jobs/%s/cancel" % aid)
    j = d.wait_status(jid, ("succeeded", "failed", "cancelled", "blocked"), timeout=120)
    if not check(j["status"] == "succeeded",
                 "round %d: job finished succeeded: %s %r" % (rnd, j["status"], j["error"])):
        continue
    if status_at_kill == "running":
        stats["resumed"] += 1
        check(j["summary"]["resumed_from"] == expect_resume,
              "round %d: resumed from the newest complete checkpoint %d (got %d)"
              % (rnd, expect_resume, j["summary"]["resumed_from"]))
        check(j["attempts"] == 2, "round %d: two attempts: %d" % (rnd, j["attempts"]))
        # This process trained steps resumed_from+1..N: its Prometheus counters
        # say exactly that (num_tokens is cumulative over the run).
        want_tokens = tokens[-1] - (tokens[expect_resume - 1] if expect_resume else 0)
        want_steps = STEPS - expect_resume
        for aid in extras:  # extras that started before their cancel landed
            e = d.wait_status(aid, ("succeeded", "failed", "cancelled", "blocked"), timeout=60)
            rows_e = metrics(aid)
            want_steps += (e.get("progress") or {}).get("step", 0)
            want_tokens += rows_e[-1].get("num_tokens", 0) if rows_e else 0
        _, samples = parse_prometheus(d.get("/metrics").body.decode())
        got = {n: v for n, _, v in samples if n in ("brewslm_tokens_trained_total",
                                                     "brewslm_steps_trained_total")}
        check(got.get("brewslm_tokens_trained_total") == want_tokens
              and got.get("brewslm_steps_trained_total") == want_steps,
              "round %d: counters of the resumed process: %r, want %d tokens, %d steps"
              % (rnd, got, want_tokens, want_steps))
    if planted:
        check("skipping unreadable checkpoint" in d.log_tail(20000)
              and "step-%d.state" % (expect_resume + 1) in d.log_tail(20000),
              "round %d: the torn checkpoint was reported and skipped" % rnd)
        left = os.listdir(ckpt_dir)
        check(not any(n.endswith(".tmp") for n in left),
              "round %d: the planted .tmp was removed, never loaded: %r" % (rnd, left))
    rows = metrics(jid)
    steps = [m["step"] for m in rows]
    check(steps == list(range(1, STEPS + 1)),
          "round %d: metric steps 1..%d, no gaps or duplicates: %r" % (rnd, STEPS, steps))
    if steps == list(range(1, STEPS + 1)):
        worst = max(abs(a["loss"] - b["loss"]) / max(1e-12, abs(b["loss"]))
                    for a, b in zip(rows, reference))
        check(worst < 1e-5, "round %d: losses equal the uninterrupted run (worst %.3g)"
              % (rnd, worst))
        check([m.get("num_tokens") for m in rows] == tokens,
              "round %d: num_tokens equal the uninterrupted run" % rnd)
    seqs = [s for (s,) in db_query(d.db, "SELECT seq FROM events WHERE job_id = ? ORDER BY seq",
                                   (jid,))]
    check(seqs == list(range(1, len(seqs) + 1)), "round %d: event ids 1..%d without gaps"
          % (rnd, len(seqs)))
    n_metric_rows = db_query(d.db, "SELECT COUNT(*), COUNT(DISTINCT step) FROM metrics "
                             "WHERE job_id = ? AND is_eval = 0", (jid,))[0]
    check(n_metric_rows == (STEPS, STEPS), "round %d: one metrics row per step in the table: %r"
          % (rnd, n_metric_rows))

# Every job ever acknowledged, across all rounds, is still there.
listed = set()
after = None
while True:
    r = d.get("/v1/jobs?limit=100" + ("&after=" + after if after else ""))
    require(r.status == 200, "list jobs: %r" % r)
    page = r.json()
    listed.update(x["id"] for x in page["data"])
    if not page["has_more"]:
        break
    after = page["data"][-1]["id"]
missing = [a for a in all_acked.values() if a not in listed]
check(not missing, "all %d acknowledged jobs are listed: missing %r" % (len(all_acked), missing))
check(db_integrity(d.db) == [("ok",)], "final integrity_check ok")
check(stats["running"] >= 8, "at least 8 of %d kills hit a running job: %r" % (ROUNDS, stats))
check(stats["tmp_seen"] >= 2, "at least 2 kills tore a checkpoint write: %r" % stats)
check(stats["planted"] == 2, "torn checkpoints were planted at least once: %r" % stats)
print("kills: %r; %d submissions acknowledged during the rounds" % (stats, len(all_acked)),
      flush=True)
shutil.rmtree(os.path.join(d.dir, "unused"), ignore_errors=True)
finish("reliability_crash")
