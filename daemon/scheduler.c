// scheduler.c — job scheduler and workers (see scheduler.h).
//
// Ownership of a job while this process works on it:
//   loop thread   picks the oldest runnable queued job, registers a Worker
//                 and hands it to the thread pool (the job stays queued);
//   pool thread   re-runs preflight, claims the job (queued -> running, which
//                 fails if a cancel got there first), trains, and writes the
//                 final status on its own connection;
//   loop thread   (after_work) unregisters the worker and schedules again.
// A registered job is never handed out twice: a pass stops when the oldest
// runnable job is one still in its worker's preflight.
#include "scheduler.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "brewslm_config.h"
#include "db.h"
#include "jobutil.h"
#include "preflight.h"
#include "recipe.h"
#include "strbuf.h"
#include "train.h"

#define TICK_MS 2000
#define PROGRESS_EVERY_S 0.5
#define SWEEP_PAGE 500

typedef struct Worker Worker;

// A final status a worker could not write (the database was full or
// locked): retried on every tick until it lands, so the job does not stay
// 'running' in the database while nothing runs it.
typedef struct Pending {
    char id[DB_ID_SIZE];
    JobStatus status;
    char *detail; // JSON or NULL (malloc'd)
    struct Pending *next;
} Pending;

struct Sched {
    uv_loop_t *loop;
    SchedConfig cfg;
    Db *db; // the loop thread's connection
    uv_async_t wake;
    uv_timer_t tick;
    pthread_mutex_t mu; // running[] / n_running (HTTP threads look up workers)
    Worker **running;
    int n_running;
    atomic_int stopping;
    void (*done)(void *);
    void *done_arg;
    Pending *pending; // loop thread only
};

struct Worker {
    uv_work_t work;
    Sched *s;
    char id[DB_ID_SIZE];
    atomic_int cancel;
    // Pool-thread state.
    Db *db;
    double epoch;
    int last_step;
    double last_progress;
    double last_num_tokens;
    // Why a hook stopped the run (the trainer only reports "aborted").
    int hook_failed;
    BsError hook_err;
    // Outcome, written by the pool thread, or by after_work when the pool
    // thread had no database connection.
    int has_outcome;
    int outcome_written;
    JobStatus outcome;
    char *detail; // JSON or NULL (malloc'd)
};

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void logf_(const char *id, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(const char *id, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fprintf(stderr, "brewslmd: %s%s%s\n", id ? id : "", id ? ": " : "", msg);
}

// ---- JSON helpers --------------------------------------------------------------

static cJSON *row_values(const MetricRow *row) {
    if (row->n == 0) return cJSON_CreateNull();
    cJSON *o = cJSON_CreateObject();
    for (int i = 0; o && i < row->n; i++) {
        if (isfinite(row->value[i]))
            cJSON_AddNumberToObject(o, row->name[i], row->value[i]);
        else
            cJSON_AddNullToObject(o, row->name[i]);
    }
    return o;
}

static void add_metric(cJSON *o, const char *key, const MetricRow *row, const char *name) {
    double v;
    if (metric_get(row, name, &v) && isfinite(v))
        cJSON_AddNumberToObject(o, key, v);
    else
        cJSON_AddNullToObject(o, key);
}

// {"steps","total_steps","resumed_from","final_model","train_loss",
//  "train_rewards/margins","train_rewards/accuracies","eval_loss",
//  "eval_rewards/margins","eval_rewards/accuracies","train":{...},"eval":{...}}
static char *summary_json(const TrainResult *res) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddNumberToObject(o, "steps", res->step);
    cJSON_AddNumberToObject(o, "total_steps", res->total_steps);
    cJSON_AddNumberToObject(o, "resumed_from", res->resumed_from);
    cJSON_AddStringToObject(o, "final_model", res->final_model);
    add_metric(o, "train_loss", &res->last_train, "loss");
    add_metric(o, "train_rewards/margins", &res->last_train, "rewards/margins");
    add_metric(o, "train_rewards/accuracies", &res->last_train, "rewards/accuracies");
    add_metric(o, "eval_loss", &res->last_eval, "eval_loss");
    add_metric(o, "eval_rewards/margins", &res->last_eval, "eval_rewards/margins");
    add_metric(o, "eval_rewards/accuracies", &res->last_eval, "eval_rewards/accuracies");
    cJSON_AddItemToObject(o, "train", row_values(&res->last_train));
    cJSON_AddItemToObject(o, "eval", row_values(&res->last_eval));
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static char *error_json(const char *type, const char *message, const char *param) {
    // Trainer messages may quote data bytes: the API serves this JSON as is.
    char msg[1024], par[256];
    snprintf(msg, sizeof(msg), "%s", message ? message : "");
    snprintf(par, sizeof(par), "%s", param ? param : "");
    utf8_scrub(msg);
    utf8_scrub(par);
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "type", type);
    cJSON_AddStringToObject(o, "message", msg);
    if (par[0])
        cJSON_AddStringToObject(o, "param", par);
    else
        cJSON_AddNullToObject(o, "param");
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static char *one_blocker_json(const char *code, const char *field, const char *hint,
                              const char *message) {
    Blocker b;
    memset(&b, 0, sizeof(b));
    snprintf(b.code, sizeof(b.code), "%s", code);
    snprintf(b.field, sizeof(b.field), "%s", field);
    snprintf(b.hint, sizeof(b.hint), "%s", hint);
    snprintf(b.message, sizeof(b.message), "%s", message);
    cJSON *a = blockers_to_json(&b, 1);
    char *s = a ? cJSON_PrintUnformatted(a) : NULL;
    cJSON_Delete(a);
    return s;
}

// ---- registry -----------------------------------------------------------------

static int registered(Sched *s, const char *id) {
    int found = 0;
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->n_running; i++)
        if (strcmp(s->running[i]->id, id) == 0) found = 1;
    pthread_mutex_unlock(&s->mu);
    return found;
}

void sched_cancel_running(Sched *s, const char *id) {
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->n_running; i++)
        if (strcmp(s->running[i]->id, id) == 0) atomic_store(&s->running[i]->cancel, 1);
    pthread_mutex_unlock(&s->mu);
}

int sched_running_count(Sched *s) {
    pthread_mutex_lock(&s->mu);
    int n = s->n_running;
    pthread_mutex_unlock(&s->mu);
    return n;
}

int sched_accepting(Sched *s) {
    return !atomic_load(&s->stopping);
}

// ---- worker hooks (pool thread) -----------------------------------------------

static int hook_metrics(void *user, const MetricRow *row) {
    Worker *w = user;
    BsError err;
    bs_error_clear(&err);
    if (db_metrics_append(w->db, w->id, row, 1, w->epoch, NULL, &err) < 0) {
        logf_(w->id, "cannot record metrics of step %d: %s", row->step, err.message);
        // The job fails rather than train on without a record of its metrics.
        w->hook_failed = 1;
        bs_fail(&w->hook_err, strcmp(err.code, "db_busy") == 0 ? "db_busy" : "io", "",
                "cannot record the metrics of step %d in the database: %s", row->step, err.message);
        return -1;
    }
    double tokens;
    // TRL's num_tokens is cumulative: count what this row adds.
    if (!row->is_eval && metric_get(row, "num_tokens", &tokens) && tokens > w->last_num_tokens) {
        promstats_add_tokens(w->s->cfg.stats, (long long)(tokens - w->last_num_tokens));
        w->last_num_tokens = tokens;
    }
    broker_publish(w->s->cfg.broker);
    return 0;
}

static void hook_log(void *user, const char *line) {
    Worker *w = user;
    logf_(w->id, "%s", line);
    cJSON *o = cJSON_CreateObject();
    if (!o) return;
    cJSON_AddStringToObject(o, "message", line);
    char *data = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!data) return;
    BsError err;
    bs_error_clear(&err);
    if (db_event_append(w->db, w->id, "log", data, NULL, &err) == 0)
        broker_publish(w->s->cfg.broker);
    free(data);
}

static int hook_should_stop(void *user) {
    Worker *w = user;
    return atomic_load(&w->cancel) || atomic_load(&w->s->stopping);
}

static void hook_progress(void *user, int step, int total_steps, double epoch) {
    Worker *w = user;
    w->epoch = epoch;
    if (step > w->last_step) promstats_add_steps(w->s->cfg.stats, step - w->last_step);
    w->last_step = step;
    double t = now_s();
    if (step == total_steps || t - w->last_progress >= PROGRESS_EVERY_S) {
        BsError err;
        bs_error_clear(&err);
        if (db_job_progress(w->db, w->id, step, total_steps, epoch, &err) == 0)
            broker_publish(w->s->cfg.broker);
        w->last_progress = t;
    }
}

static void hook_checkpoint(void *user, int step, const char *path) {
    Worker *w = user;
    struct stat st;
    long long bytes = stat(path, &st) == 0 ? (long long)st.st_size : 0;
    BsError err;
    bs_error_clear(&err);
    if (db_checkpoint_add(w->db, w->id, step, path, bytes, &err) < 0)
        logf_(w->id, "cannot record checkpoint %s: %s", path, err.message);
}

static void hook_resume(void *user, int resumed_step) {
    Worker *w = user;
    BsError err;
    bs_error_clear(&err);
    // The run logs the steps after the checkpoint again: drop the old rows
    // so the series stays one row per step.
    if (db_metrics_delete_after(w->db, w->id, resumed_step, &err) < 0)
        logf_(w->id, "cannot drop metrics after step %d: %s", resumed_step, err.message);
    w->last_step = resumed_step;
    // num_tokens is cumulative over the whole run: count this process's
    // tokens from the last logged row at or before the resumed step (exact
    // when that step was logged, as with save_steps a multiple of
    // logging_steps).
    cJSON *rows = NULL;
    if (db_metrics_list(w->db, w->id, -1, 0, &rows, &err) == 0) {
        const cJSON *row;
        cJSON_ArrayForEach(row, rows) {
            const cJSON *ev = cJSON_GetObjectItemCaseSensitive(row, "is_eval");
            const cJSON *st = cJSON_GetObjectItemCaseSensitive(row, "step");
            const cJSON *vals = cJSON_GetObjectItemCaseSensitive(row, "values");
            const cJSON *nt = cJSON_GetObjectItemCaseSensitive(vals, "num_tokens");
            if (cJSON_IsTrue(ev) || (cJSON_IsNumber(ev) && ev->valuedouble != 0)) continue;
            if (cJSON_IsNumber(st) && st->valuedouble <= resumed_step && cJSON_IsNumber(nt))
                w->last_num_tokens = nt->valuedouble;
        }
        cJSON_Delete(rows);
    }
    db_job_progress(w->db, w->id, resumed_step, -1, w->epoch, &err);
}

// ---- worker (pool thread) --------------------------------------------------------

static void set_outcome(Worker *w, JobStatus st, char *detail) {
    w->has_outcome = 1;
    w->outcome = st;
    free(w->detail);
    w->detail = detail;
}

// Writes the outcome with db; 0 when written (or nothing to write).
static int write_outcome(Worker *w, Db *db) {
    if (!w->has_outcome || w->outcome_written) return 0;
    BsError err;
    bs_error_clear(&err);
    if (db_job_set_status(db, w->id, w->outcome, w->detail, NULL, &err) < 0) {
        logf_(w->id, "cannot set status %s: %s", db_status_name(w->outcome), err.message);
        if (strcmp(err.code, "invalid_transition") == 0) w->outcome_written = 1;
        return -1;
    }
    w->outcome_written = 1;
    logf_(w->id, "%s", db_status_name(w->outcome));
    return 0;
}

// Replaces a `job:ID` field by the model file its succeeded job wrote.
// Returns 1 when replaced, 0 when not a reference, -1 with a blocker outcome
// set (or err filled for a database failure, returned as -2).
static int resolve_ref(Worker *w, char **slot, const char *field, BsError *err) {
    char dep_id[DB_ID_SIZE];
    if (!jobref_parse(*slot, dep_id)) return 0;
    DbJob dep;
    char msg[512];
    if (db_job_load(w->db, dep_id, &dep, err) < 0) {
        if (strcmp(err->code, "not_found") != 0) return -2;
        snprintf(msg, sizeof(msg), "%s names job %s, which does not exist", field, dep_id);
        set_outcome(w, JOB_BLOCKED,
                    one_blocker_json("missing_dependency", field,
                                     "submit the job that produces the model first", msg));
        return -1;
    }
    char *path = NULL;
    if (dep.status != JOB_SUCCEEDED) {
        snprintf(msg, sizeof(msg), "%s names job %s, which is %s and left no model", field, dep_id,
                 db_status_name(dep.status));
    } else {
        char *dir = dep.output_dir ? strdup(dep.output_dir)
                                   : job_default_output_dir(w->s->cfg.state_dir, dep_id);
        path = dir ? jobref_model_path(dir) : NULL;
        free(dir);
        if (path && access(path, R_OK) != 0) {
            snprintf(msg, sizeof(msg), "job %s succeeded but its model %s is gone", dep_id, path);
            free(path);
            path = NULL;
        } else if (!path) {
            snprintf(msg, sizeof(msg), "out of memory");
        }
    }
    db_job_free(&dep);
    if (!path) {
        set_outcome(w, JOB_BLOCKED,
                    one_blocker_json("missing_dependency", field,
                                     "rerun the dependency and point the recipe at the new job",
                                     msg));
        return -1;
    }
    free(*slot);
    *slot = path;
    return 1;
}

static int run_preflight(Worker *w, Recipe *r, const char *data_root, PreflightReport *rep) {
    PreflightOptions opt = {
        .data_root = data_root,
        .memory_limit_bytes = w->s->cfg.memory_limit_bytes,
        .preference_enabled = BREWSLM_PREFERENCE,
    };
    BsError err;
    bs_error_clear(&err);
    if (preflight_run(r, &opt, rep, &err) < 0) {
        set_outcome(w, JOB_FAILED, error_json(err.code, err.message, err.param));
        return -1;
    }
    if (rep->n_blockers > 0) {
        cJSON *a = blockers_to_json(rep->blockers, rep->n_blockers);
        set_outcome(w, JOB_BLOCKED, a ? cJSON_PrintUnformatted(a) : NULL);
        cJSON_Delete(a);
        return -1;
    }
    return 0;
}

static void worker_run(uv_work_t *req) {
    Worker *w = req->data;
    Sched *s = w->s;
    BsError err;
    bs_error_clear(&err);
    Recipe r;
    int have_recipe = 0, have_job = 0;
    DbJob job;
    char *out_dir = NULL;
    PreflightReport *rep = malloc(sizeof(*rep));
    if (!rep) {
        bs_fail(&err, "oom", "", "out of memory");
        goto failed;
    }
    w->db = db_open(s->cfg.db_path, 0, &err);
    if (!w->db) goto failed;
    if (db_job_load(w->db, w->id, &job, &err) < 0) goto failed;
    have_job = 1;
    if (job.status != JOB_QUEUED) goto out; // cancelled meanwhile
    if (recipe_parse(job.recipe_json, strlen(job.recipe_json), RECIPE_JSON, &r, &err) < 0)
        goto failed;
    have_recipe = 1;

    out_dir =
        job.output_dir ? strdup(job.output_dir) : job_default_output_dir(s->cfg.state_dir, w->id);
    if (!out_dir) {
        bs_fail(&err, "oom", "", "out of memory");
        goto failed;
    }
    if (!job.output_dir) db_job_set_output_dir(w->db, w->id, out_dir, &err);

    // Pass 1: the recipe as submitted, confined to data_root. The job folder
    // is the daemon's (already confined at submit when the user chose it).
    free(r.output_dir);
    r.output_dir = NULL;
    if (run_preflight(w, &r, s->cfg.data_root, rep) < 0) goto out;
    // Pass 2: models produced by earlier jobs live in their job folders,
    // outside data_root; every other path is absolute and confined by now.
    int n_refs = 0, rc;
    if ((rc = resolve_ref(w, &r.model, "model", &err)) < 0) goto ref_fail;
    n_refs += rc;
    if ((rc = resolve_ref(w, &r.reference_model, "reference_model", &err)) < 0) goto ref_fail;
    n_refs += rc;
    if (n_refs > 0 && run_preflight(w, &r, NULL, rep) < 0) goto out;

    r.output_dir = out_dir;
    out_dir = NULL;
    r.threads = s->cfg.blas_threads;
    if (atomic_load(&s->stopping)) goto out; // stays queued for the next start

    // Claim: fails when a cancel turned the job terminal during preflight.
    if (db_job_set_status(w->db, w->id, JOB_RUNNING, NULL, NULL, &err) < 0) {
        logf_(w->id, "not started: %s", err.message);
        goto out;
    }
    broker_publish(s->cfg.broker);
    logf_(w->id, "running (%s, %d BLAS threads)", recipe_method_name(r.method), r.threads);

    TrainHooks hooks = {
        .user = w,
        .on_metrics = hook_metrics,
        .on_log = hook_log,
        .should_stop = hook_should_stop,
        .on_progress = hook_progress,
        .on_checkpoint = hook_checkpoint,
        .on_resume = hook_resume,
    };
    TrainResult res;
    bs_error_clear(&err);
    int trc = train_run(&r, &hooks, &res, &err);
    // Progress writes are throttled: record where the run really ended.
    BsError perr;
    if (res.step > 0) db_job_progress(w->db, w->id, res.step, res.total_steps, w->epoch, &perr);
    if (trc < 0 && w->hook_failed && strcmp(err.code, "aborted") == 0) {
        set_outcome(w, JOB_FAILED,
                    error_json(w->hook_err.code, w->hook_err.message, w->hook_err.param));
    } else if (trc < 0) {
        set_outcome(w, JOB_FAILED, error_json(err.code, err.message, err.param));
    } else if (!res.stopped) {
        set_outcome(w, JOB_SUCCEEDED, summary_json(&res));
    } else if (atomic_load(&w->cancel)) {
        char msg[128];
        snprintf(msg, sizeof(msg), "cancelled at step %d of %d", res.step, res.total_steps);
        set_outcome(w, JOB_CANCELLED, error_json("cancelled", msg, NULL));
    } else {
        // Shutdown: back to queued, to resume from the checkpoint just written.
        char detail[128];
        snprintf(detail, sizeof(detail), "{\"reason\":\"daemon shutdown\",\"step\":%d}", res.step);
        set_outcome(w, JOB_QUEUED, strdup(detail));
    }
    goto out;

ref_fail:
    if (rc == -2) goto failed;
    goto out;
failed:
    set_outcome(w, JOB_FAILED,
                error_json(err.code[0] ? err.code : "internal", err.message, err.param));
out:
    if (w->db) write_outcome(w, w->db);
    if (have_recipe) recipe_free(&r);
    if (have_job) db_job_free(&job);
    free(out_dir);
    free(rep);
    db_close(w->db);
    w->db = NULL;
}

// ---- loop thread --------------------------------------------------------------------

static void schedule(Sched *s);

// Loop thread: keeps an outcome that could not be written for on_tick.
static void pending_add(Sched *s, Worker *w) {
    Pending *p = calloc(1, sizeof(*p));
    if (!p) {
        logf_(w->id, "out of memory: status %s is lost until the next start",
              db_status_name(w->outcome));
        return;
    }
    snprintf(p->id, sizeof(p->id), "%s", w->id);
    p->status = w->outcome;
    p->detail = w->detail;
    w->detail = NULL;
    p->next = s->pending;
    s->pending = p;
    logf_(w->id, "status %s not recorded yet; retrying every %d s", db_status_name(p->status),
          TICK_MS / 1000);
}

// Loop thread: writes the pending outcomes that the database takes now.
static void pending_retry(Sched *s) {
    Pending **pp = &s->pending;
    while (*pp) {
        Pending *p = *pp;
        BsError err;
        bs_error_clear(&err);
        int rc = db_job_set_status(s->db, p->id, p->status, p->detail, NULL, &err);
        if (rc < 0 && strcmp(err.code, "invalid_transition") != 0) {
            pp = &p->next;
            continue;
        }
        if (rc == 0) {
            logf_(p->id, "%s (recorded late)", db_status_name(p->status));
            broker_publish(s->cfg.broker);
        }
        *pp = p->next;
        free(p->detail);
        free(p);
    }
}

static void worker_after(uv_work_t *req, int status) {
    (void)status;
    Worker *w = req->data;
    Sched *s = w->s;
    if (!w->outcome_written && write_outcome(w, s->db) < 0 && !w->outcome_written)
        pending_add(s, w);
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->n_running; i++) {
        if (s->running[i] == w) {
            s->running[i] = s->running[--s->n_running];
            break;
        }
    }
    int left = s->n_running;
    pthread_mutex_unlock(&s->mu);
    free(w->detail);
    free(w);
    broker_publish(s->cfg.broker);
    if (atomic_load(&s->stopping)) {
        if (left == 0 && s->done) {
            void (*done)(void *) = s->done;
            s->done = NULL;
            done(s->done_arg);
        }
        return;
    }
    schedule(s);
}

// Blocks queued jobs whose dependency ended without a model. Returns the
// number blocked.
static int sweep_dependents(Sched *s) {
    int blocked = 0;
    char after[DB_ID_SIZE] = "";
    JobStatus queued = JOB_QUEUED;
    for (;;) {
        cJSON *page = NULL;
        int more = 0;
        BsError err;
        bs_error_clear(&err);
        if (db_job_list(s->db, &queued, SWEEP_PAGE, after[0] ? after : NULL, &page, &more, &err) <
            0) {
            logf_(NULL, "dependency sweep: %s", err.message);
            return blocked;
        }
        const cJSON *job;
        cJSON_ArrayForEach(job, page) {
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(job, "id");
            const cJSON *dep = cJSON_GetObjectItemCaseSensitive(job, "depends_on");
            if (!cJSON_IsString(id)) continue;
            snprintf(after, sizeof(after), "%s", id->valuestring);
            if (!cJSON_IsString(dep) || registered(s, id->valuestring)) continue;
            DbJob d;
            if (db_job_load(s->db, dep->valuestring, &d, &err) < 0) continue;
            JobStatus ds = d.status;
            db_job_free(&d);
            if (!db_status_is_terminal(ds) || ds == JOB_SUCCEEDED) continue;
            char msg[256];
            snprintf(msg, sizeof(msg),
                     "the job this one depends on, %s, ended %s and left no model",
                     dep->valuestring, db_status_name(ds));
            char *bl = one_blocker_json("missing_dependency", "model",
                                        "rerun the dependency and submit this recipe again", msg);
            if (db_job_set_status(s->db, id->valuestring, JOB_BLOCKED, bl, NULL, &err) == 0) {
                logf_(id->valuestring, "blocked: %s", msg);
                blocked++;
            }
            free(bl);
        }
        cJSON_Delete(page);
        if (!more) break;
    }
    return blocked;
}

static void schedule(Sched *s) {
    if (atomic_load(&s->stopping)) return;
    // A blocked job can block its own dependents: repeat until stable.
    for (int round = 0; round < 16 && sweep_dependents(s) > 0; round++)
        broker_publish(s->cfg.broker);
    while (sched_running_count(s) < s->cfg.max_concurrent_jobs) {
        char id[DB_ID_SIZE];
        int found = 0;
        BsError err;
        bs_error_clear(&err);
        if (db_job_next_runnable(s->db, id, &found, &err) < 0) {
            logf_(NULL, "scheduler: %s", err.message);
            return;
        }
        if (!found || registered(s, id)) return;
        Worker *w = calloc(1, sizeof(*w));
        if (!w) return;
        w->s = s;
        snprintf(w->id, sizeof(w->id), "%s", id);
        atomic_init(&w->cancel, 0);
        w->work.data = w;
        pthread_mutex_lock(&s->mu);
        s->running[s->n_running++] = w;
        pthread_mutex_unlock(&s->mu);
        int rc = uv_queue_work(s->loop, &w->work, worker_run, worker_after);
        if (rc != 0) {
            logf_(id, "cannot start a worker: %s", uv_strerror(rc));
            pthread_mutex_lock(&s->mu);
            s->n_running--;
            pthread_mutex_unlock(&s->mu);
            free(w);
            return;
        }
    }
}

static void on_wake(uv_async_t *h) {
    schedule(h->data);
}

static void on_tick(uv_timer_t *h) {
    Sched *s = h->data;
    if (s->pending) pending_retry(s);
    schedule(s);
}

void sched_wake(Sched *s) {
    uv_async_send(&s->wake);
}

Sched *sched_create(uv_loop_t *loop, const SchedConfig *cfg, BsError *err) {
    Sched *s = calloc(1, sizeof(*s));
    if (!s) {
        bs_fail(err, "oom", "", "out of memory");
        return NULL;
    }
    s->loop = loop;
    s->cfg = *cfg;
    atomic_init(&s->stopping, 0);
    s->running = calloc((size_t)cfg->max_concurrent_jobs, sizeof(Worker *));
    if (!s->running || pthread_mutex_init(&s->mu, NULL) != 0) {
        bs_fail(err, "oom", "", "out of memory");
        free(s->running);
        free(s);
        return NULL;
    }
    s->db = db_open(cfg->db_path, 0, err);
    if (!s->db) goto fail;
    cJSON *ids = NULL;
    if (db_jobs_requeue_running(s->db, &ids, err) < 0) goto fail;
    const cJSON *id;
    cJSON_ArrayForEach(id, ids) {
        if (cJSON_IsString(id))
            logf_(id->valuestring, "was running when the daemon stopped: queued to resume");
    }
    cJSON_Delete(ids);
    uv_async_init(loop, &s->wake, on_wake);
    s->wake.data = s;
    uv_timer_init(loop, &s->tick);
    s->tick.data = s;
    uv_timer_start(&s->tick, on_tick, 0, TICK_MS);
    return s;
fail:
    db_close(s->db);
    pthread_mutex_destroy(&s->mu);
    free(s->running);
    free(s);
    return NULL;
}

void sched_shutdown(Sched *s, void (*done)(void *), void *arg) {
    atomic_store(&s->stopping, 1);
    uv_timer_stop(&s->tick);
    if (sched_running_count(s) == 0) {
        done(arg);
        return;
    }
    s->done = done;
    s->done_arg = arg;
}

void sched_close(Sched *s) {
    uv_close((uv_handle_t *)&s->wake, NULL);
    uv_close((uv_handle_t *)&s->tick, NULL);
}

void sched_free(Sched *s) {
    if (!s) return;
    while (s->pending) {
        Pending *p = s->pending;
        s->pending = p->next;
        logf_(p->id, "status %s was never recorded; the job resumes at the next start",
              db_status_name(p->status));
        free(p->detail);
        free(p);
    }
    db_close(s->db);
    pthread_mutex_destroy(&s->mu);
    free(s->running);
    free(s);
}
