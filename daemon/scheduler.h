// scheduler.h — the job scheduler: runs on the libuv loop thread, starts queued
// jobs whose dependency has succeeded (at most max_concurrent_jobs at once)
// on the libuv thread pool, where each worker re-runs preflight and calls
// train_run with hooks that write metrics, progress, checkpoints and log
// events to the database. Jobs whose dependency ended without a model are
// blocked with a missing_dependency blocker.
#ifndef SCHEDULER_H
#define SCHEDULER_H

#include <uv.h>

#include "broker.h"
#include "bs.h"
#include "promstats.h"

typedef struct Sched Sched;

typedef struct {
    const char *db_path;
    const char *data_root; // absolute, resolved
    const char *state_dir; // absolute
    long long memory_limit_bytes;
    int max_concurrent_jobs;
    int blas_threads; // per job
    Broker *broker;
    PromStats *stats;
} SchedConfig;

// Opens the scheduler's own connection, re-queues jobs left running by a
// previous process (they resume from their checkpoints) and arms the
// wake-up handles on loop. Strings in cfg must outlive the scheduler.
// NULL with err on failure.
Sched *sched_create(uv_loop_t *loop, const SchedConfig *cfg, BsError *err);
// Asks for a scheduling pass soon. Any thread.
void sched_wake(Sched *s);
// Asks a job running in this process to stop and end cancelled. Any thread.
void sched_cancel_running(Sched *s, const char *id);
// 0 once sched_shutdown was called. Any thread.
int sched_accepting(Sched *s);
// Loop thread: stops starting jobs and asks the running ones to stop at
// their next step (they checkpoint and go back to queued). done(arg) runs on
// the loop thread once none is running (at once when none was).
void sched_shutdown(Sched *s, void (*done)(void *arg), void *arg);
int sched_running_count(Sched *s);
// Loop thread: closes the scheduler's handles; free with sched_free after
// the loop has run their close callbacks. Workers must have finished.
void sched_close(Sched *s);
void sched_free(Sched *s);

#endif
