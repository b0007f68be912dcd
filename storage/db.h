// db.h — the daemon's durable state in SQLite: jobs, metrics, events (SSE
// replay) and checkpoints.
//
// Threading: a Db handle is ONE connection and must be used from one thread
// at a time (open one per thread: the HTTP threads' pool, each worker, the
// scheduler). Connections share the file through WAL; writers serialize with
// BEGIN IMMEDIATE, busy_timeout and a retry loop, so two threads writing at
// once both commit. Every multi-row change below is one transaction.
//
// Errors: every fallible function returns 0 / -1 and fills a BsError. Codes:
//   "not_found"            the job (err->param "id") does not exist
//   "idempotency_conflict" same Idempotency-Key, different request body
//   "invalid_transition"   status change not allowed (message names both)
//   "invalid_argument"     caller passed something unusable (param names it)
//   "schema_too_new"       the file was written by a newer brewslmd
//   "db_busy"              the database stayed locked past every retry
//   "db"                   any other SQLite / I/O failure (message has sqlite's)
//   "oom"                  allocation failed
//
// Memory: functions returning cJSON* (through an out-parameter) hand the
// caller a tree it must cJSON_Delete; functions returning char* hand a
// malloc'd string the caller frees. Strings passed in are copied.
//
// Time stamps are ISO-8601 UTC with milliseconds ("2024-05-01T12:00:00.123Z").
#ifndef DB_H
#define DB_H

#include <cjson/cJSON.h>

#include "bs.h"

typedef struct Db Db;

// "job_" + 16 lowercase hex + NUL
#define DB_ID_SIZE 21

typedef enum {
    JOB_QUEUED = 0,
    JOB_RUNNING,
    JOB_SUCCEEDED,
    JOB_FAILED,
    JOB_CANCELLED,
    JOB_BLOCKED, // preflight (or a failed dependency) says it cannot run
    JOB_STATUS_COUNT
} JobStatus;

// "queued", "running", ... (static string); NULL for an out-of-range value.
const char *db_status_name(JobStatus s);
// Parses a status name; returns 0 and sets *out, or -1 for an unknown name.
int db_status_parse(const char *name, JobStatus *out);
// 1 for succeeded / failed / cancelled / blocked.
int db_status_is_terminal(JobStatus s);
// 1 when from -> to is allowed:
//   queued  -> running | cancelled | blocked | failed
//   running -> succeeded | failed | cancelled | queued (re-queue after a crash)
//   terminal states never change.
int db_status_transition_ok(JobStatus from, JobStatus to);
// 1 when id looks like "job_" + 16 lowercase hex digits.
int db_job_id_valid(const char *id);

// Opens (creating when absent) the database at path, sets WAL,
// synchronous=FULL, foreign_keys=ON, busy_timeout (busy_timeout_ms <= 0:
// 5000), then applies the embedded migrations (no-op when up to date; a file
// whose schema is newer than this binary fails with "schema_too_new").
// Returns the handle (caller closes with db_close) or NULL with err filled.
Db *db_open(const char *path, int busy_timeout_ms, BsError *err);
// Finalizes the cached statements and closes; NULL is a no-op.
void db_close(Db *db);
// Highest migration version recorded in the file (0 for a fresh file).
int db_schema_version(Db *db, int *version, BsError *err);
// Runs PRAGMA integrity_check; 0 when the answer is "ok", else -1 with the
// first problem in err->message.
int db_integrity_check(Db *db, BsError *err);

// ---- jobs ----------------------------------------------------------------

typedef struct {
    const char *method;          // "sft" | "dpo" | "orpo" (required)
    const char *recipe_json;     // canonical recipe JSON (required, must parse)
    const char *recipe_text;     // the body as submitted (required)
    const char *output_dir;      // NULL allowed; may be set later (db_job_set_output_dir)
    const char *depends_on;      // job id this one waits for, or NULL
    const char *idempotency_key; // NULL: none
    const char *request_hash;    // NULL: SHA-256 hex of recipe_text is used
    JobStatus status;            // initial: JOB_QUEUED or JOB_BLOCKED
    const char *blockers_json;   // JSON array for a blocked job, or NULL
    const char *warnings_json;   // JSON array of preflight warnings, or NULL
    int total_steps;             // preflight's estimate (0 if unknown)
} DbJobNew;

// Inserts a job with a fresh random id (written to id_out) and a 'status'
// event (seq 1). Idempotency: when j->idempotency_key is already stored,
// the same request hash returns 0 with that job's id and *existed = 1 and
// inserts nothing; a different hash fails with "idempotency_conflict"
// (id_out gets the existing id). depends_on must name an existing job
// ("not_found", param "depends_on"). existed may be NULL. A job inserted
// blocked is finished at once (finished_at = created_at).
int db_job_insert(Db *db, const DbJobNew *j, char id_out[DB_ID_SIZE], int *existed, BsError *err);

// The job as the API shows it (caller cJSON_Deletes *out):
// {"id","status","method","recipe":{...},"created_at","started_at",
//  "finished_at","progress":{"step","total_steps","epoch"},"latest_metrics",
//  "summary","blockers","warnings","error","output_dir","depends_on",
//  "attempts","cancel_requested"}
// Absent values are JSON null (blockers/warnings: [] when none).
int db_job_get(Db *db, const char *id, cJSON **out, BsError *err);

// db_job_get's object as JSON text, byte for byte cJSON_PrintUnformatted of
// it (*out malloc'ed, NUL-terminated, caller frees; *len its length). For
// polling: the Db remembers its last few renders and the row bytes they came
// from, and while nothing was committed to the database (by anyone) serves
// them without reading the row; after a commit, an unchanged row costs one
// SELECT and a comparison. Never stale: see db.c.
int db_job_get_text(Db *db, const char *id, char **out, size_t *len, BsError *err);

// The fields the scheduler / worker need, as plain C (db_job_free).
typedef struct {
    char id[DB_ID_SIZE];
    JobStatus status;
    char method[8];
    char *recipe_json; // canonical recipe
    char *recipe_text; // as submitted
    char *output_dir;  // NULL when unset
    char *depends_on;  // NULL when none
    int step, total_steps;
    double epoch;
    int attempts;         // times the job went queued -> running
    int cancel_requested; // 1 after db_job_request_cancel on a running job
} DbJob;
int db_job_load(Db *db, const char *id, DbJob *out, BsError *err);
void db_job_free(DbJob *j);

// Lists jobs newest first. status: NULL for all. limit: 1..1000 (others are
// clamped). after: a job id from a previous page (NULL: from the newest);
// an unknown cursor fails with "not_found" (param "after").
// *out is a JSON array of db_job_get objects; *has_more says whether another
// page follows.
int db_job_list(Db *db, const JobStatus *status, int limit, const char *after, cJSON **out,
                int *has_more, BsError *err);

// Changes the status when db_status_transition_ok allows it
// ("invalid_transition" otherwise), stamping times: -> running sets
// started_at and attempts += 1, cancel_requested = 0; -> any terminal state
// sets finished_at; running -> queued clears started_at. detail_json (NULL:
// unchanged) is stored by target: succeeded -> summary, failed / cancelled
// -> error, blocked -> blockers (a JSON array). Appends a 'status' event
// {"status","previous","detail"} in the same transaction; its seq goes to
// *event_seq when non-NULL.
int db_job_set_status(Db *db, const char *id, JobStatus to, const char *detail_json,
                      long long *event_seq, BsError *err);

// Cancel request: a queued job becomes cancelled at once (*now_cancelled = 1,
// with its status event); a running job gets cancel_requested = 1 for the
// worker to honour (*now_cancelled = 0); a terminal job fails with
// "invalid_transition". now_cancelled may be NULL.
int db_job_request_cancel(Db *db, const char *id, int *now_cancelled, BsError *err);

// Progress without metrics (e.g. after loading a checkpoint). total_steps
// < 0 leaves it unchanged.
int db_job_progress(Db *db, const char *id, int step, int total_steps, double epoch, BsError *err);
int db_job_set_output_dir(Db *db, const char *id, const char *output_dir, BsError *err);

// Oldest queued job whose dependency (if any) has succeeded. found = 0 when
// none; the job is NOT claimed (the caller sets it running, which fails
// with "invalid_transition" if another thread got there first).
int db_job_next_runnable(Db *db, char id_out[DB_ID_SIZE], int *found, BsError *err);

// Queued jobs whose depends_on is job_id, oldest first: *out is a JSON
// array of id strings (caller deletes).
int db_jobs_waiting_on(Db *db, const char *job_id, cJSON **out, BsError *err);

// Start-up recovery: every running job goes back to queued (with a status
// event, detail {"reason":"daemon restart"}); *out is a JSON array of their
// ids (caller deletes).
int db_jobs_requeue_running(Db *db, cJSON **out, BsError *err);

// counts[s] = number of jobs with status s, for every JobStatus.
int db_job_counts_by_status(Db *db, long long counts[JOB_STATUS_COUNT], BsError *err);

// ---- metrics -------------------------------------------------------------

// Records rows (n >= 1, all with the same step; train and/or eval) in ONE
// transaction with: an upsert per row into metrics (a resumed run
// rewriting a step replaces it, no duplicate), the job's progress (step,
// epoch) and latest_metrics (previous values merged with these, plus
// "step"), and one 'metrics' event {"step","epoch","total_steps","values":
// {name: value, ...}} whose seq goes to *event_seq when non-NULL.
// Non-finite values are stored as JSON null.
int db_metrics_append(Db *db, const char *job_id, const MetricRow *rows, int n, double epoch,
                      long long *event_seq, BsError *err);

// Rows with step > after_step (after_step < 0: all), by step, train row
// before eval row; limit <= 0: no limit. *out is a JSON array of
// {"step","is_eval","values":{...},"created_at"} (caller deletes).
int db_metrics_list(Db *db, const char *job_id, int after_step, int limit, cJSON **out,
                    BsError *err);

// Resume from a checkpoint at `step`: deletes the metrics rows with
// step > step. Events stay: they are a log of what was sent.
int db_metrics_delete_after(Db *db, const char *job_id, int step, BsError *err);

// ---- events (SSE) --------------------------------------------------------

// Appends an event; type is "metrics" | "status" | "log"; data_json must be
// valid JSON. seq numbers are per job, 1, 2, 3, ... in commit order.
int db_event_append(Db *db, const char *job_id, const char *type, const char *data_json,
                    long long *seq, BsError *err);
// Events with seq > after_seq, in seq order, at most limit (<= 0: all).
// *out is a JSON array of {"seq","type","data":<json>,"created_at"}.
int db_events_after(Db *db, const char *job_id, long long after_seq, int limit, cJSON **out,
                    BsError *err);
// Highest seq of the job (0 when none).
int db_event_last_seq(Db *db, const char *job_id, long long *seq, BsError *err);

// ---- checkpoints ---------------------------------------------------------

// Records (or replaces, same job and step) a checkpoint file.
int db_checkpoint_add(Db *db, const char *job_id, int step, const char *path, long long bytes,
                      BsError *err);
// *out: JSON array of {"step","path","bytes","created_at"} by step.
int db_checkpoint_list(Db *db, const char *job_id, cJSON **out, BsError *err);
// Newest checkpoint: *found = 0 when none; else *step and *path (malloc'd,
// caller frees).
int db_checkpoint_latest(Db *db, const char *job_id, int *found, int *step, char **path,
                         BsError *err);

#endif
