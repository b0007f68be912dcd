"""reliability: storage faults.

Disk full (a small tmpfs, mounted here and unmounted in a finally):
  * under a job's output_dir: the checkpoint write fails with ENOSPC; the job
    ends failed with an "io" error naming "No space left on device", no
    partial file is left, and the daemon, the database and other jobs are
    unharmed;
  * under the database: metric commits fail with SQLITE_FULL; the job ends
    failed with an error saying the database is full (recorded as soon as
    space is back), submissions are answered 507 disk_full meanwhile, reads
    keep working, and integrity_check stays ok.
Database locked (another connection holding BEGIN IMMEDIATE):
  * shorter than the busy timeout: writes wait and then commit; no metric row
    or submission is lost;
  * longer: a submission is answered 503 db_busy with Retry-After (a clear
    error, in bounded time), reads and /healthz keep working, and the running
    job (whose writes wait longer) loses nothing.
The tmpfs parts need root (mount); without it they are skipped."""

import os
import sqlite3
import subprocess
import threading
import time

from rel_lib import (Daemon, check, db_integrity, db_query, dpo_recipe, error_shape_ok, finish,
                     preference_rows, require, scaled, write_jsonl)

mounts = []


def mount_tmpfs(path, size):
    os.makedirs(path, exist_ok=True)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size, "tmpfs", path],
                       capture_output=True)
    if p.returncode != 0:
        print("cannot mount a tmpfs (%s): disk-full cases skipped" % p.stderr.decode().strip(),
              flush=True)
        return False
    mounts.append(path)
    return True


def unmount_all():
    for m in reversed(mounts):
        for _ in range(20):
            if subprocess.run(["umount", m], capture_output=True).returncode == 0:
                break
            time.sleep(0.25)  # a daemon being stopped may still hold a file there
        else:
            subprocess.run(["umount", "-l", m], capture_output=True)
    mounts.clear()


def fill(path, leave_bytes):
    """Writes a filler file until only about leave_bytes stay free."""
    st = os.statvfs(os.path.dirname(path))
    free = st.f_bavail * st.f_frsize
    with open(path, "wb") as f:
        f.write(b"\0" * max(0, free - leave_bytes))


def terminal(d, jid, timeout=120):
    return d.wait_status(jid, ("succeeded", "failed", "cancelled", "blocked"), timeout=timeout)


ran_tmpfs = False
try:
    # ---- disk full under a job's output_dir ------------------------------------------------
    d = Daemon().start()
    write_jsonl(os.path.join(d.data, "pref.jsonl"), preference_rows(32))
    r = d.submit(dpo_recipe(steps=4, save_steps=2))
    require(r.status == 201, "baseline job: %r" % r)
    base_id = r.json()["id"]
    require(terminal(d, base_id)["status"] == "succeeded", "baseline job succeeded")
    base_metrics = d.get("/v1/jobs/%s/metrics" % base_id).json()["data"]

    full = os.path.join(d.data, "full")
    if mount_tmpfs(full, "48k"):
        ran_tmpfs = True
        # A training state of this model is ~80 KiB: the first checkpoint cannot fit.
        r = d.submit(dpo_recipe(steps=6, save_steps=2, output_dir="full/job"))
        require(r.status == 201, "job writing to the full disk submitted: %r" % r)
        jid = r.json()["id"]
        j = terminal(d, jid)
        check(j["status"] == "failed", "disk full at a checkpoint: job failed (%s)" % j["status"])
        err = j.get("error") or {}
        print("checkpoint on a full disk: %s %r" % (j["status"], err), flush=True)
        check(err.get("type") == "io" and "No space left on device" in err.get("message", ""),
              "the error says io / no space: %r" % err)
        check(d.proc.poll() is None and d.get("/healthz").status == 200, "daemon still serves")
        left = [n for _, _, fs in os.walk(full) for n in fs if n.endswith(".tmp")]
        check(left == [], "no partial checkpoint left on the full disk: %r" % left)
        # Other jobs and the database are unharmed.
        r = d.submit(dpo_recipe(steps=4, save_steps=2))
        require(r.status == 201, "next job: %r" % r)
        check(terminal(d, r.json()["id"])["status"] == "succeeded", "a job on the normal disk "
              "still succeeds")
        check(d.get("/v1/jobs/%s/metrics" % base_id).json()["data"] == base_metrics,
              "an earlier job's metrics are unchanged")
        check(db_integrity(d.db) == [("ok",)], "integrity_check ok after the full disk")
    d.stop_kill()
    unmount_all()

    # ---- disk full under the database ------------------------------------------------------------
    probe = Daemon()
    dbdir = os.path.join(probe.dir, "dbfs")
    if mount_tmpfs(dbdir, "4m"):
        ran_tmpfs = True
        d = Daemon(workdir=probe.dir)
        d.db = os.path.join(dbdir, "brewslm.db")  # Daemon.args passes --db d.db
        d.start()
        write_jsonl(os.path.join(d.data, "pref.jsonl"), preference_rows(32))
        r = d.submit(dpo_recipe(steps=3))
        require(r.status == 201, "job before the disk fills: %r" % r)
        first = r.json()["id"]
        require(terminal(d, first)["status"] == "succeeded", "it succeeds")
        first_metrics = d.get("/v1/jobs/%s/metrics" % first).json()["data"]
        filler = os.path.join(dbdir, "filler")
        fill(filler, 96 * 1024)
        r = d.submit(dpo_recipe(steps=5000, logging_steps=1))
        if r.status == 201:
            jid = r.json()["id"]
            # Metric commits fill the rest; the failure cannot be recorded until
            # space is back, so the job may still read 'running' for a while.
            deadline = time.time() + 60
            while time.time() < deadline and "database or disk is full" not in d.log_tail(50000):
                time.sleep(0.1)
            check("database or disk is full" in d.log_tail(50000), "the disk filled up")
        else:
            jid = None
            check(False, "a submission still fit (%r)" % r)
        r = d.submit(dpo_recipe(steps=2))
        check(r.status == 507 and error_shape_ok(r.body) and r.json()["error"]["code"] ==
              "disk_full", "submission on a full database: 507 disk_full: %r" % r)
        check(d.get("/healthz").status == 200, "healthz while the database is full")
        r = d.get("/v1/jobs/" + first)
        check(r.status == 200 and r.json()["status"] == "succeeded", "reads work while full")
        check(d.proc.poll() is None, "daemon alive while the database is full")
        os.unlink(filler)
        if jid:
            j = terminal(d, jid, timeout=30)
            err = j.get("error") or {}
            print("metrics on a full database: %s %r" % (j["status"], err), flush=True)
            check(j["status"] == "failed" and "database or disk is full" in err.get("message", "")
                  and err.get("type") == "io",
                  "the job failed with a clear error once space was back: %s %r"
                  % (j["status"], err))
        check(db_integrity(d.db) == [("ok",)], "integrity_check ok after SQLITE_FULL")
        check(d.get("/v1/jobs/%s/metrics" % first).json()["data"] == first_metrics,
              "the earlier job's metrics are intact")
        r = d.submit(dpo_recipe(steps=3))
        require(r.status == 201, "submissions work again: %r" % r)
        check(terminal(d, r.json()["id"])["status"] == "succeeded", "and the job succeeds")
        d.stop_kill()
    else:
        probe.stop_kill()
    unmount_all()

    # ---- database locked ------------------------------------------------------------------------
    d = Daemon().start()
    write_jsonl(os.path.join(d.data, "pref.jsonl"), preference_rows(32))
    STEPS = 800
    r = d.submit(dpo_recipe(steps=STEPS, logging_steps=1))
    require(r.status == 201, "long job: %r" % r)
    jid = r.json()["id"]
    d.wait_step(jid, 20, timeout=60)

    def hold_lock(seconds, during):
        """BEGIN IMMEDIATE on another connection for `seconds` while during()
        runs; returns during()'s result and the seconds the lock was held."""
        con = sqlite3.connect(d.db, timeout=30, isolation_level=None)
        con.execute("BEGIN IMMEDIATE")
        t0 = time.time()
        out = {}
        th = threading.Thread(target=lambda: out.update(result=during()))
        th.start()
        time.sleep(seconds)
        con.execute("ROLLBACK")
        con.close()
        held = time.time() - t0
        th.join(60)
        return out.get("result"), held

    def timed_submit():
        t0 = time.time()
        r = d.submit(dpo_recipe(steps=2))
        return r, time.time() - t0

    step_before = d.job(jid)["progress"]["step"]
    (r, took), held = hold_lock(2.0, timed_submit)
    print("submission under a %.1f s lock: %d after %.2f s" % (held, r.status, took), flush=True)
    check(r.status == 201, "submission during a 2 s lock waits and commits: %r" % r)
    check(took >= 1.5, "it waited for the lock (%.2f s)" % took)
    short_id = r.json()["id"] if r.status == 201 else None

    def probe_reads():
        out = []
        t_end = time.time() + 6
        while time.time() < t_end:
            out.append((d.get("/healthz").status, d.get("/v1/jobs/" + jid).status))
            time.sleep(0.5)
        return out

    reads = {}
    th = threading.Thread(target=lambda: reads.update(r=probe_reads()))
    th.start()
    (r, took), held = hold_lock(10.0, timed_submit)
    th.join(30)
    print("submission under a %.1f s lock: %d after %.2f s: %s" % (held, r.status, took, r.body),
          flush=True)
    check(r.status == 503 and error_shape_ok(r.body) and r.json()["error"]["code"] == "db_busy"
          and r.header("Retry-After") == "1",
          "submission during a 10 s lock: 503 db_busy with Retry-After: %r" % r)
    check(3.0 <= took <= 9.5, "the busy answer came in bounded time (%.2f s)" % took)
    check(reads.get("r") and all(x == (200, 200) for x in reads["r"]),
          "healthz and reads answer while the write lock is held: %r" % reads.get("r"))
    check(d.proc.poll() is None, "daemon alive after the long lock")
    # The job's commit has waited out both locks in SQLite's busy handler,
    # which retries every 100 ms at most: give it that long (stretched on a
    # sanitized build) to take the lock back before looking at its step.
    deadline = time.time() + scaled(5)
    while True:
        j = d.job(jid)
        step_after = j["progress"]["step"]
        if step_after > step_before or j["status"] != "running" or time.time() > deadline:
            break
        time.sleep(0.05)
    check(step_after > step_before, "the job moved on after the locks (%d -> %d)"
          % (step_before, step_after))
    j = terminal(d, jid, timeout=180)
    check(j["status"] == "succeeded", "the job survived both locks: %s %r"
          % (j["status"], j.get("error")))
    steps = [m["step"] for m in d.get("/v1/jobs/%s/metrics" % jid).json()["data"]]
    check(steps == list(range(1, STEPS + 1)), "no metric row was lost: %d rows, gaps %r"
          % (len(steps), sorted(set(range(1, STEPS + 1)) - set(steps))[:10]))
    n = db_query(d.db, "SELECT COUNT(*) FROM metrics WHERE job_id = ?", (jid,))[0][0]
    check(n == STEPS, "metrics table holds %d rows (want %d)" % (n, STEPS))
    if short_id:
        check(terminal(d, short_id)["status"] == "succeeded", "the job submitted under the short "
              "lock runs")
    check(db_integrity(d.db) == [("ok",)], "integrity_check ok after the locks")
    d.stop_kill()
finally:
    unmount_all()

if not ran_tmpfs:
    print("note: disk-full cases skipped (no tmpfs)", flush=True)
finish("reliability_faults")
