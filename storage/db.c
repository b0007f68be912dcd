// db.c — SQLite storage for brewslmd (see db.h for the contract).
//
// One Db is one connection with its own cache of prepared statements. All
// writes go through BEGIN IMMEDIATE (retried while the lock stays busy) so a
// transaction never has to upgrade a read lock, which in WAL mode would fail
// with SQLITE_BUSY_SNAPSHOT without waiting.
#include "db.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "migrate.h"

#define DB_LIST_MAX 1000

// Cached statements. The job columns are read by job_row_json /
// job_row_load in this order (JOB_COLS).
#define JOB_COLS                                                                                   \
    "id, status, method, recipe_json, recipe_text, created_at, started_at, finished_at, step, "    \
    "total_steps, epoch, latest_metrics_json, summary_json, blockers_json, warnings_json, "        \
    "error_json, output_dir, depends_on, attempts, cancel_requested"
enum {
    C_ID,
    C_STATUS,
    C_METHOD,
    C_RECIPE_JSON,
    C_RECIPE_TEXT,
    C_CREATED,
    C_STARTED,
    C_FINISHED,
    C_STEP,
    C_TOTAL,
    C_EPOCH,
    C_LATEST,
    C_SUMMARY,
    C_BLOCKERS,
    C_WARNINGS,
    C_ERROR,
    C_OUTDIR,
    C_DEPENDS,
    C_ATTEMPTS,
    C_CANCEL
};

typedef enum {
    ST_JOB_BY_KEY,
    ST_JOB_EXISTS,
    ST_JOB_INSERT,
    ST_JOB_GET,
    ST_JOB_SEQ,
    ST_JOB_LIST,
    ST_JOB_STATUS,
    ST_JOB_SET_STATUS,
    ST_JOB_SET_CANCEL,
    ST_JOB_PROGRESS,
    ST_JOB_OUTDIR,
    ST_JOB_NEXT,
    ST_JOB_WAITING,
    ST_JOB_RUNNING,
    ST_JOB_COUNTS,
    ST_JOB_LATEST,
    ST_JOB_METRICS_UPDATE,
    ST_METRIC_UPSERT,
    ST_METRIC_LIST,
    ST_METRIC_DELETE,
    ST_EVENT_INSERT,
    ST_EVENT_AFTER,
    ST_EVENT_LAST,
    ST_CKPT_UPSERT,
    ST_CKPT_LIST,
    ST_CKPT_LATEST,
    ST_JOB_RENDER,
    ST_COUNT
} StmtId;

static const char *const stmt_sql[ST_COUNT] = {
    [ST_JOB_BY_KEY] = "SELECT id, request_hash FROM jobs WHERE idempotency_key = ?1",
    [ST_JOB_EXISTS] = "SELECT 1 FROM jobs WHERE id = ?1",
    [ST_JOB_INSERT] =
        "INSERT INTO jobs (id, seq, status, method, recipe_json, recipe_text, created_at, "
        "finished_at, total_steps, blockers_json, warnings_json, output_dir, depends_on, "
        "idempotency_key, request_hash) "
        "SELECT ?1, COALESCE(MAX(seq), 0) + 1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, "
        "?13, ?14 FROM jobs",
    [ST_JOB_GET] = "SELECT " JOB_COLS " FROM jobs WHERE id = ?1",
    [ST_JOB_SEQ] = "SELECT seq FROM jobs WHERE id = ?1",
    [ST_JOB_LIST] = "SELECT " JOB_COLS " FROM jobs WHERE seq < ?1 AND (?2 IS NULL OR status = ?2) "
                    "ORDER BY seq DESC LIMIT ?3",
    [ST_JOB_STATUS] = "SELECT status FROM jobs WHERE id = ?1",
    // ?2 new status, ?3 now, ?4 detail (NULL: keep), ?5 1 when ?2 is terminal
    [ST_JOB_SET_STATUS] =
        "UPDATE jobs SET status = ?2, "
        "started_at = CASE WHEN ?2 = 'running' THEN ?3 WHEN ?2 = 'queued' THEN NULL "
        "ELSE started_at END, "
        "finished_at = CASE WHEN ?5 THEN ?3 ELSE NULL END, "
        "attempts = attempts + (?2 = 'running'), "
        "cancel_requested = CASE WHEN ?2 IN ('running', 'queued') THEN 0 "
        "ELSE cancel_requested END, "
        "summary_json = CASE WHEN ?2 = 'succeeded' AND ?4 IS NOT NULL THEN ?4 "
        "ELSE summary_json END, "
        "error_json = CASE WHEN ?2 IN ('failed', 'cancelled') AND ?4 IS NOT NULL THEN ?4 "
        "ELSE error_json END, "
        "blockers_json = CASE WHEN ?2 = 'blocked' AND ?4 IS NOT NULL THEN ?4 "
        "ELSE blockers_json END "
        "WHERE id = ?1",
    [ST_JOB_SET_CANCEL] = "UPDATE jobs SET cancel_requested = 1 WHERE id = ?1",
    [ST_JOB_PROGRESS] = "UPDATE jobs SET step = ?2, epoch = ?3, "
                        "total_steps = CASE WHEN ?4 < 0 THEN total_steps ELSE ?4 END WHERE id = ?1",
    [ST_JOB_OUTDIR] = "UPDATE jobs SET output_dir = ?2 WHERE id = ?1",
    [ST_JOB_NEXT] =
        "SELECT j.id FROM jobs j LEFT JOIN jobs d ON d.id = j.depends_on "
        "WHERE j.status = 'queued' AND (j.depends_on IS NULL OR d.status = 'succeeded') "
        "ORDER BY j.seq LIMIT 1",
    [ST_JOB_WAITING] =
        "SELECT id FROM jobs WHERE depends_on = ?1 AND status = 'queued' ORDER BY seq",
    [ST_JOB_RUNNING] = "SELECT id FROM jobs WHERE status = 'running' ORDER BY seq",
    [ST_JOB_COUNTS] = "SELECT status, COUNT(*) FROM jobs GROUP BY status",
    [ST_JOB_LATEST] = "SELECT latest_metrics_json, total_steps FROM jobs WHERE id = ?1",
    [ST_JOB_METRICS_UPDATE] =
        "UPDATE jobs SET step = ?2, epoch = ?3, latest_metrics_json = ?4 WHERE id = ?1",
    [ST_METRIC_UPSERT] =
        "INSERT INTO metrics (job_id, step, is_eval, values_json, created_at) "
        "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (job_id, step, is_eval) DO UPDATE SET "
        "values_json = excluded.values_json, created_at = excluded.created_at",
    [ST_METRIC_LIST] = "SELECT step, is_eval, values_json, created_at FROM metrics "
                       "WHERE job_id = ?1 AND step > ?2 ORDER BY step, is_eval LIMIT ?3",
    [ST_METRIC_DELETE] = "DELETE FROM metrics WHERE job_id = ?1 AND step > ?2",
    [ST_EVENT_INSERT] = "INSERT INTO events (job_id, seq, type, data_json, created_at) "
                        "SELECT ?1, COALESCE(MAX(seq), 0) + 1, ?2, ?3, ?4 FROM events "
                        "WHERE job_id = ?1 RETURNING seq",
    [ST_EVENT_AFTER] = "SELECT seq, type, data_json, created_at FROM events "
                       "WHERE job_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
    [ST_EVENT_LAST] = "SELECT COALESCE(MAX(seq), 0) FROM events WHERE job_id = ?1",
    [ST_CKPT_UPSERT] = "INSERT INTO checkpoints (job_id, step, path, bytes, created_at) "
                       "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (job_id, step) DO UPDATE SET "
                       "path = excluded.path, bytes = excluded.bytes, "
                       "created_at = excluded.created_at",
    [ST_CKPT_LIST] = "SELECT step, path, bytes, created_at FROM checkpoints WHERE job_id = ?1 "
                     "ORDER BY step",
    [ST_CKPT_LATEST] =
        "SELECT step, path FROM checkpoints WHERE job_id = ?1 ORDER BY step DESC LIMIT 1",
    // JOB_COLS with recipe_text (not in the object, up to max_body_bytes, so
    // possibly overflow pages) left unread: NULL keeps the C_* positions.
    [ST_JOB_RENDER] = "SELECT id, status, method, recipe_json, NULL, created_at, started_at, "
                      "finished_at, step, total_steps, epoch, latest_metrics_json, summary_json, "
                      "blockers_json, warnings_json, error_json, output_dir, depends_on, attempts, "
                      "cancel_requested FROM jobs WHERE id = ?1",
};

// db_job_get_text's renders, per connection (a Db is used by one thread at a
// time, so no lock): the column bytes a job object was rendered from, and the
// text. A poll of an unchanged job finds the same bytes and skips the cJSON
// parse / build / print, which costs far more than the SELECT. Keyed by the
// bytes themselves, not by a hash or a change counter, so a hit cannot be stale.
//
// Reading the row back (19 columns, each string copied into a fresh malloc by
// SQLite) costs twice the read transaction itself, and the transaction (two
// fcntl locks and a process-wide mutex on the -shm file) costs more than the
// rest of the poll, so an entry also records the connection's "nothing was
// committed" epoch it was last compared in, and is served without either
// while the epoch holds. The epoch moves whenever the WAL-index header
// changes: every commit, by any connection or process, is published by
// rewriting it (https://www.sqlite.org/walformat.html, "the WAL-index
// header"), so this is SQLite's own change signal, not a counter of ours that
// writers bypassing this module could miss. Where the header cannot be mapped
// (not the unix VFS), every poll compares the row.
#define WAL_HDR_BYTES 48 // one copy of the WAL-index header; two copies lead the -shm
#define JOB_TEXT_SLOTS 8
#define JOB_TEXT_KEY_MAX (256u << 10) // larger rows are rendered every time
typedef struct {
    unsigned char *key;
    size_t key_len;
    char *text;
    size_t text_len;
    char id[DB_ID_SIZE];
    unsigned long long epoch; // Db.epoch when the row was last compared
} JobText;

struct Db {
    sqlite3 *conn;
    sqlite3_stmt *stmt[ST_COUNT];
    JobText jt[JOB_TEXT_SLOTS];
    int jt_next; // the slot a miss overwrites (round robin)
    unsigned char *keybuf;
    size_t keycap;
    // The WAL-index header as last read, and the epoch it defines: bumped
    // whenever the header differs from the previous reading.
    int shm_tried;                     // wal_index_map ran
    const volatile unsigned char *shm; // the WAL-index (region 0); NULL: no epochs
    unsigned char wal_hdr[2 * WAL_HDR_BYTES];
    unsigned long long epoch;
};

static const char *const status_names[JOB_STATUS_COUNT] = {
    "queued", "running", "succeeded", "failed", "cancelled", "blocked",
};

const char *db_status_name(JobStatus s) {
    return (s >= 0 && s < JOB_STATUS_COUNT) ? status_names[s] : NULL;
}

int db_status_parse(const char *name, JobStatus *out) {
    for (int i = 0; name && i < JOB_STATUS_COUNT; i++) {
        if (strcmp(name, status_names[i]) == 0) {
            *out = (JobStatus)i;
            return 0;
        }
    }
    return -1;
}

int db_status_is_terminal(JobStatus s) {
    return s == JOB_SUCCEEDED || s == JOB_FAILED || s == JOB_CANCELLED || s == JOB_BLOCKED;
}

int db_status_transition_ok(JobStatus from, JobStatus to) {
    switch (from) {
    case JOB_QUEUED:
        return to == JOB_RUNNING || to == JOB_CANCELLED || to == JOB_BLOCKED || to == JOB_FAILED;
    case JOB_RUNNING:
        return to == JOB_SUCCEEDED || to == JOB_FAILED || to == JOB_CANCELLED || to == JOB_QUEUED;
    default:
        return 0;
    }
}

int db_job_id_valid(const char *id) {
    if (!id || strncmp(id, "job_", 4) != 0 || strlen(id) != DB_ID_SIZE - 1) return 0;
    for (const char *p = id + 4; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) return 0;
    return 1;
}

// ---- helpers ---------------------------------------------------------------

static int db_fail(Db *db, BsError *err, int rc, const char *what) {
    int prim = rc & 0xff;
    if (prim == SQLITE_NOMEM) return bs_fail(err, "oom", "", "%s: out of memory", what);
    const char *code = (prim == SQLITE_BUSY || prim == SQLITE_LOCKED) ? "db_busy" : "db";
    return bs_fail(err, code, "", "%s: %s", what,
                   db ? sqlite3_errmsg(db->conn) : sqlite3_errstr(rc));
}

// ISO-8601 UTC with milliseconds; strftime keeps the field widths fixed.
static void utc_now(char buf[32]) {
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(buf, 24, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, 32 - n, ".%03uZ", (unsigned)(ts.tv_nsec / 1000000) % 1000u);
}

// The cached statement, reset and unbound, ready for binding. NULL on error.
static sqlite3_stmt *stmt_get(Db *db, StmtId id, BsError *err) {
    sqlite3_stmt *st = db->stmt[id];
    if (!st) {
        int rc = sqlite3_prepare_v3(db->conn, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT,
                                    &db->stmt[id], NULL);
        if (rc != SQLITE_OK) {
            db_fail(db, err, rc, "prepare");
            db->stmt[id] = NULL;
            return NULL;
        }
        return db->stmt[id];
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return st;
}

// Resets so the statement releases its read snapshot right away.
static void stmt_done(sqlite3_stmt *st) {
    if (st) sqlite3_reset(st);
}

// Runs the one-row statement `which` for job id (bound as ?1) and returns it
// positioned on the row; the caller reads the columns, then stmt_done. NULL
// with err ("not_found", or the SQLite error while reading `what`) and the
// statement already reset. id must outlive the statement's use (bound static).
static sqlite3_stmt *job_row(Db *db, StmtId which, const char *id, const char *what, BsError *err) {
    if (!id) {
        bs_fail(err, "invalid_argument", "id", "job id is NULL");
        return NULL;
    }
    sqlite3_stmt *st = stmt_get(db, which, err);
    if (!st) return NULL;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) return st;
    stmt_done(st);
    if (rc == SQLITE_DONE)
        bs_fail(err, "not_found", "id", "no job %s", id);
    else
        db_fail(db, err, rc, what);
    return NULL;
}

static void bind_text_or_null(sqlite3_stmt *st, int i, const char *s) {
    if (s)
        sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, i);
}

static int db_begin(Db *db, BsError *err) {
    int rc = migrate_exec_retrying(db->conn, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : db_fail(db, err, rc, "BEGIN IMMEDIATE");
}

static void db_rollback(Db *db) {
    if (!sqlite3_get_autocommit(db->conn)) sqlite3_exec(db->conn, "ROLLBACK", NULL, NULL, NULL);
}

static int db_commit(Db *db, BsError *err) {
    int rc = migrate_exec_retrying(db->conn, "COMMIT", NULL, NULL, NULL);
    if (rc == SQLITE_OK) return 0;
    db_fail(db, err, rc, "COMMIT");
    db_rollback(db);
    return -1;
}

// Steps a statement expecting no row (INSERT/UPDATE/DELETE).
static int step_done(Db *db, sqlite3_stmt *st, const char *what, BsError *err) {
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc == SQLITE_DONE) return 0;
    if ((rc & 0xff) == SQLITE_CONSTRAINT) {
        return bs_fail(err, "db", "", "%s: constraint failed: %s", what, sqlite3_errmsg(db->conn));
    }
    return db_fail(db, err, rc, what);
}

// A text column as a fresh malloc'd string (NULL for SQL NULL); *oom set when
// the copy failed.
static char *col_strdup(sqlite3_stmt *st, int col, int *oom) {
    const unsigned char *t = sqlite3_column_text(st, col);
    if (!t) return NULL;
    char *s = strdup((const char *)t);
    if (!s) *oom = 1;
    return s;
}

// Adds key: parsed JSON of a text column (null for NULL or unparsable, or
// empty_array when the column is NULL and empty_array is set).
static int add_json_col(cJSON *obj, const char *key, sqlite3_stmt *st, int col, int empty_array) {
    const char *t = (const char *)sqlite3_column_text(st, col);
    cJSON *v = t ? cJSON_Parse(t) : NULL;
    if (!v) v = empty_array ? cJSON_CreateArray() : cJSON_CreateNull();
    if (!v) return -1;
    if (!cJSON_AddItemToObject(obj, key, v)) {
        cJSON_Delete(v);
        return -1;
    }
    return 0;
}

static int add_text_col(cJSON *obj, const char *key, sqlite3_stmt *st, int col) {
    const char *t = (const char *)sqlite3_column_text(st, col);
    cJSON *v = t ? cJSON_AddStringToObject(obj, key, t) : cJSON_AddNullToObject(obj, key);
    return v ? 0 : -1;
}

// The API object of the current row of a JOB_COLS statement; NULL on OOM.
static cJSON *job_row_json(sqlite3_stmt *st) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    int bad = 0;
    bad |= add_text_col(o, "id", st, C_ID);
    bad |= add_text_col(o, "status", st, C_STATUS);
    bad |= add_text_col(o, "method", st, C_METHOD);
    bad |= add_json_col(o, "recipe", st, C_RECIPE_JSON, 0);
    bad |= add_text_col(o, "created_at", st, C_CREATED);
    bad |= add_text_col(o, "started_at", st, C_STARTED);
    bad |= add_text_col(o, "finished_at", st, C_FINISHED);
    cJSON *prog = cJSON_AddObjectToObject(o, "progress");
    if (!prog || !cJSON_AddNumberToObject(prog, "step", sqlite3_column_int(st, C_STEP)) ||
        !cJSON_AddNumberToObject(prog, "total_steps", sqlite3_column_int(st, C_TOTAL)) ||
        !cJSON_AddNumberToObject(prog, "epoch", sqlite3_column_double(st, C_EPOCH)))
        bad = 1;
    bad |= add_json_col(o, "latest_metrics", st, C_LATEST, 0);
    bad |= add_json_col(o, "summary", st, C_SUMMARY, 0);
    bad |= add_json_col(o, "blockers", st, C_BLOCKERS, 1);
    bad |= add_json_col(o, "warnings", st, C_WARNINGS, 1);
    bad |= add_json_col(o, "error", st, C_ERROR, 0);
    bad |= add_text_col(o, "output_dir", st, C_OUTDIR);
    bad |= add_text_col(o, "depends_on", st, C_DEPENDS);
    if (!cJSON_AddNumberToObject(o, "attempts", sqlite3_column_int(st, C_ATTEMPTS)) ||
        !cJSON_AddBoolToObject(o, "cancel_requested", sqlite3_column_int(st, C_CANCEL)))
        bad = 1;
    if (bad) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

// Appends an event inside the caller's transaction.
static int event_insert(Db *db, const char *job_id, const char *type, const char *data_json,
                        long long *seq, BsError *err) {
    sqlite3_stmt *st = stmt_get(db, ST_EVENT_INSERT, err);
    if (!st) return -1;
    char now[32];
    utc_now(now);
    sqlite3_bind_text(st, 1, job_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, type, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, data_json, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 4, now, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite3_reset(st);
        return db_fail(db, err, rc, "append event");
    }
    long long s = sqlite3_column_int64(st, 0);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) return db_fail(db, err, rc, "append event");
    if (seq) *seq = s;
    return 0;
}

// 0 when the job exists, "not_found" otherwise.
static int job_must_exist(Db *db, const char *id, BsError *err) {
    if (!id) return bs_fail(err, "invalid_argument", "id", "job id is NULL");
    sqlite3_stmt *st = stmt_get(db, ST_JOB_EXISTS, err);
    if (!st) return -1;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    stmt_done(st);
    if (rc == SQLITE_ROW) return 0;
    if (rc == SQLITE_DONE) return bs_fail(err, "not_found", "id", "no job %s", id);
    return db_fail(db, err, rc, "find job");
}

static int job_status_of(Db *db, const char *id, JobStatus *out, BsError *err) {
    sqlite3_stmt *st = job_row(db, ST_JOB_STATUS, id, "read job status", err);
    if (!st) return -1;
    int ok = db_status_parse((const char *)sqlite3_column_text(st, 0), out) == 0;
    stmt_done(st);
    if (!ok) return bs_fail(err, "db", "status", "job %s has an unknown status", id);
    return 0;
}

// ---- SHA-256 (FIPS 180-4), for the idempotency request hash ---------------

static const uint32_t sha_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROR32(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(uint32_t h[8], const unsigned char *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR32(w[i - 15], 7) ^ ROR32(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR32(w[i - 2], 17) ^ ROR32(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = k + (ROR32(e, 6) ^ ROR32(e, 11) ^ ROR32(e, 25)) + ((e & f) ^ (~e & g)) +
                      sha_k[i] + w[i];
        uint32_t t2 = (ROR32(a, 2) ^ ROR32(a, 13) ^ ROR32(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += k;
}

// Lowercase hex SHA-256 of data into out (65 bytes).
static void sha256_hex(const void *data, size_t len, char out[65]) {
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                     0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    const unsigned char *p = data;
    size_t n = len;
    while (n >= 64) {
        sha256_block(h, p);
        p += 64;
        n -= 64;
    }
    unsigned char tail[128] = {0};
    memcpy(tail, p, n);
    tail[n] = 0x80;
    size_t tl = n + 1 + 8 <= 64 ? 64 : 128;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++)
        tail[tl - 1 - i] = (unsigned char)(bits >> (8 * i));
    for (size_t off = 0; off < tl; off += 64)
        sha256_block(h, tail + off);
    for (int i = 0; i < 8; i++)
        snprintf(out + 8 * i, 9, "%08x", h[i]);
}

// ---- open / close ----------------------------------------------------------

static int exec_pragma(sqlite3 *conn, const char *sql, BsError *err) {
    char *msg = NULL;
    int rc = sqlite3_exec(conn, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        bs_fail(err, (rc & 0xff) == SQLITE_BUSY ? "db_busy" : "db", "", "%s: %s", sql,
                msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static int journal_cb(void *arg, int ncol, char **vals, char **names) {
    (void)names;
    if (ncol > 0 && vals[0]) snprintf((char *)arg, 16, "%s", vals[0]);
    return 0;
}

// SQLite's memory statistics put a process-wide mutex around every one of its
// allocations, which the API's pooled connections then queue on; nothing here
// reads the statistics (SQLite recommends SQLITE_DEFAULT_MEMSTATUS=0). Only
// possible before SQLite initializes: later it is a harmless SQLITE_MISUSE.
static void sqlite_setup(void) {
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

Db *db_open(const char *path, int busy_timeout_ms, BsError *err) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, sqlite_setup);
    if (!path) {
        bs_fail(err, "invalid_argument", "path", "database path is NULL");
        return NULL;
    }
    Db *db = calloc(1, sizeof *db);
    if (!db) {
        bs_fail(err, "oom", "", "out of memory opening the database");
        return NULL;
    }
    int rc = sqlite3_open_v2(
        path, &db->conn, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        bs_fail(err, "db", "path", "cannot open database %s: %s", path,
                db->conn ? sqlite3_errmsg(db->conn) : sqlite3_errstr(rc));
        goto fail;
    }
    sqlite3_extended_result_codes(db->conn, 1);
    sqlite3_busy_timeout(db->conn, busy_timeout_ms > 0 ? busy_timeout_ms : 5000);
    char mode[16] = "";
    char *msg = NULL;
    // Switching a fresh file to WAL needs its exclusive lock, and SQLite
    // answers SQLITE_BUSY at once, without the busy handler, when another
    // connection opening the same file holds a shared lock meanwhile (two
    // processes starting together).
    rc = migrate_exec_retrying(db->conn, "PRAGMA journal_mode=WAL", journal_cb, mode, &msg);
    if (rc != SQLITE_OK) {
        bs_fail(err, (rc & 0xff) == SQLITE_BUSY ? "db_busy" : "db", "path",
                "cannot set WAL on %s: %s", path, msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        goto fail;
    }
    if (strcmp(mode, "wal") != 0) {
        bs_fail(err, "db", "path", "database %s refused WAL journaling (got \"%s\")", path, mode);
        goto fail;
    }
    if (exec_pragma(db->conn, "PRAGMA synchronous=FULL", err) != 0) goto fail;
    if (exec_pragma(db->conn, "PRAGMA foreign_keys=ON", err) != 0) goto fail;
    if (migrate_apply(db->conn, migrate_embedded, migrate_embedded_count, NULL, err) != 0)
        goto fail;
    return db;
fail:
    db_close(db);
    return NULL;
}

void db_close(Db *db) {
    if (!db) return;
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(db->stmt[i]);
    for (int i = 0; i < JOB_TEXT_SLOTS; i++) {
        free(db->jt[i].key);
        free(db->jt[i].text);
    }
    free(db->keybuf);
    sqlite3_close(db->conn);
    free(db);
}

int db_schema_version(Db *db, int *version, BsError *err) {
    return migrate_version(db->conn, version, err);
}

int db_integrity_check(Db *db, BsError *err) {
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db->conn, "PRAGMA integrity_check", -1, &st, NULL);
    if (rc != SQLITE_OK) return db_fail(db, err, rc, "integrity_check");
    rc = sqlite3_step(st);
    int ret = 0;
    if (rc != SQLITE_ROW) {
        ret = db_fail(db, err, rc, "integrity_check");
    } else {
        const char *r = (const char *)sqlite3_column_text(st, 0);
        if (!r || strcmp(r, "ok") != 0)
            ret = bs_fail(err, "db", "", "integrity_check: %s", r ? r : "(null)");
    }
    sqlite3_finalize(st);
    return ret;
}

// ---- jobs --------------------------------------------------------------------

static int random_job_id(char out[DB_ID_SIZE], BsError *err) {
    unsigned char b[8];
    size_t got = 0;
    while (got < sizeof b) {
        ssize_t n = getrandom(b + got, sizeof b - got, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            return bs_fail(err, "io", "", "getrandom: %s", strerror(errno));
        }
        got += (size_t)n;
    }
    snprintf(out, DB_ID_SIZE, "job_%02x%02x%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3], b[4],
             b[5], b[6], b[7]);
    return 0;
}

static int json_text_ok(const char *s, int want_array) {
    cJSON *v = cJSON_Parse(s);
    int ok = v && (!want_array || cJSON_IsArray(v));
    cJSON_Delete(v);
    return ok;
}

int db_job_insert(Db *db, const DbJobNew *j, char id_out[DB_ID_SIZE], int *existed, BsError *err) {
    if (existed) *existed = 0;
    id_out[0] = '\0';
    if (!j->method ||
        (strcmp(j->method, "sft") && strcmp(j->method, "dpo") && strcmp(j->method, "orpo")))
        return bs_fail(err, "invalid_argument", "method", "method must be sft, dpo or orpo");
    if (!j->recipe_json || !json_text_ok(j->recipe_json, 0))
        return bs_fail(err, "invalid_argument", "recipe_json", "recipe_json is not valid JSON");
    if (!j->recipe_text)
        return bs_fail(err, "invalid_argument", "recipe_text", "recipe_text is NULL");
    if (j->status != JOB_QUEUED && j->status != JOB_BLOCKED)
        return bs_fail(err, "invalid_argument", "status", "a new job is queued or blocked");
    if (j->blockers_json && !json_text_ok(j->blockers_json, 1))
        return bs_fail(err, "invalid_argument", "blockers_json", "blockers_json is not an array");
    if (j->warnings_json && !json_text_ok(j->warnings_json, 1))
        return bs_fail(err, "invalid_argument", "warnings_json", "warnings_json is not an array");
    if (j->depends_on && !db_job_id_valid(j->depends_on))
        return bs_fail(err, "invalid_argument", "depends_on", "depends_on \"%s\" is not a job id",
                       j->depends_on);
    if (j->total_steps < 0)
        return bs_fail(err, "invalid_argument", "total_steps", "total_steps is negative");
    char hash[65];
    if (j->request_hash)
        snprintf(hash, sizeof hash, "%s", j->request_hash);
    else
        sha256_hex(j->recipe_text, strlen(j->recipe_text), hash);

    if (db_begin(db, err) != 0) return -1;
    sqlite3_stmt *st;
    int rc;
    if (j->idempotency_key) {
        if (!(st = stmt_get(db, ST_JOB_BY_KEY, err))) goto fail;
        sqlite3_bind_text(st, 1, j->idempotency_key, -1, SQLITE_TRANSIENT);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            snprintf(id_out, DB_ID_SIZE, "%s", (const char *)sqlite3_column_text(st, 0));
            int same = strcmp((const char *)sqlite3_column_text(st, 1), hash) == 0;
            stmt_done(st);
            db_rollback(db);
            if (!same)
                return bs_fail(err, "idempotency_conflict", "Idempotency-Key",
                               "Idempotency-Key was already used for job %s with a different "
                               "request body",
                               id_out);
            if (existed) *existed = 1;
            return 0;
        }
        stmt_done(st);
        if (rc != SQLITE_DONE) {
            db_fail(db, err, rc, "look up idempotency key");
            goto fail;
        }
    }
    if (j->depends_on && job_must_exist(db, j->depends_on, err) != 0) {
        snprintf(err->param, sizeof err->param, "depends_on");
        goto fail;
    }
    char now[32];
    utc_now(now);
    for (int attempt = 0;; attempt++) {
        if (random_job_id(id_out, err) != 0) goto fail;
        if (!(st = stmt_get(db, ST_JOB_INSERT, err))) goto fail;
        sqlite3_bind_text(st, 1, id_out, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, db_status_name(j->status), -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, j->method, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 4, j->recipe_json, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 5, j->recipe_text, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 6, now, -1, SQLITE_TRANSIENT);
        // A job blocked at submission never runs: it is finished when created.
        bind_text_or_null(st, 7, j->status == JOB_BLOCKED ? now : NULL);
        sqlite3_bind_int(st, 8, j->total_steps);
        bind_text_or_null(st, 9, j->blockers_json);
        bind_text_or_null(st, 10, j->warnings_json);
        bind_text_or_null(st, 11, j->output_dir);
        bind_text_or_null(st, 12, j->depends_on);
        bind_text_or_null(st, 13, j->idempotency_key);
        sqlite3_bind_text(st, 14, hash, -1, SQLITE_TRANSIENT);
        rc = sqlite3_step(st);
        stmt_done(st);
        if (rc == SQLITE_DONE) break;
        // 64 random bits: a collision is a freak event, but retrying is cheap.
        if (rc == SQLITE_CONSTRAINT_PRIMARYKEY && attempt < 3) continue;
        db_fail(db, err, rc, "insert job");
        goto fail;
    }
    cJSON *ev = cJSON_CreateObject();
    char *ev_text = NULL;
    if (ev && cJSON_AddStringToObject(ev, "status", db_status_name(j->status)) &&
        cJSON_AddNullToObject(ev, "previous")) {
        cJSON *detail = j->blockers_json ? cJSON_Parse(j->blockers_json) : cJSON_CreateNull();
        if (detail && !cJSON_AddItemToObject(ev, "detail", detail))
            cJSON_Delete(detail);
        else if (detail)
            ev_text = cJSON_PrintUnformatted(ev);
    }
    cJSON_Delete(ev);
    if (!ev_text) {
        bs_fail(err, "oom", "", "out of memory building the status event");
        goto fail;
    }
    rc = event_insert(db, id_out, "status", ev_text, NULL, err);
    free(ev_text);
    if (rc != 0) goto fail;
    if (db_commit(db, err) != 0) goto fail_noroll;
    return 0;
fail:
    db_rollback(db);
fail_noroll:
    id_out[0] = '\0';
    return -1;
}

int db_job_get(Db *db, const char *id, cJSON **out, BsError *err) {
    *out = NULL;
    sqlite3_stmt *st = job_row(db, ST_JOB_GET, id, "read job", err);
    if (!st) return -1;
    *out = job_row_json(st);
    stmt_done(st);
    if (!*out) return bs_fail(err, "oom", "", "out of memory reading job %s", id);
    return 0;
}

// Appends n bytes to db->keybuf at *len; -1 when the key would pass
// JOB_TEXT_KEY_MAX (not cached then) or on OOM (*oom set).
static int key_put(Db *db, size_t *len, const void *p, size_t n, int *oom) {
    if (n > JOB_TEXT_KEY_MAX || *len > JOB_TEXT_KEY_MAX - n) return -1;
    if (*len + n > db->keycap) {
        size_t cap = db->keycap ? db->keycap : 4096;
        while (cap < *len + n)
            cap *= 2;
        unsigned char *b = realloc(db->keybuf, cap);
        if (!b) {
            *oom = 1;
            return -1;
        }
        db->keybuf = b;
        db->keycap = cap;
    }
    if (n) memcpy(db->keybuf + *len, p, n);
    *len += n;
    return 0;
}

// One column of the key: its type tag, then the int64, the double's bits or
// the length and the stored bytes (what job_row_json's column_text returns
// in a UTF-8 database, without the NUL-terminated copy column_text makes).
typedef struct {
    unsigned char tag;
    unsigned char num[8];
    uint64_t n;
    const void *bytes;
} KeyCol;

static int key_col(sqlite3_stmt *st, int c, KeyCol *k) {
    memset(k, 0, sizeof *k);
    k->tag = (unsigned char)sqlite3_column_type(st, c);
    if (k->tag == SQLITE_INTEGER) {
        sqlite3_int64 v = sqlite3_column_int64(st, c);
        memcpy(k->num, &v, 8);
    } else if (k->tag == SQLITE_FLOAT) {
        double v = sqlite3_column_double(st, c);
        memcpy(k->num, &v, 8);
    } else if (k->tag != SQLITE_NULL) {
        k->bytes = sqlite3_column_blob(st, c);
        k->n = (uint64_t)sqlite3_column_bytes(st, c);
        if (!k->bytes && k->n) return -1; // OOM expanding the value
    }
    return 0;
}

// Bytes of one KeyCol in the serialized key.
static size_t key_col_size(const KeyCol *k) {
    if (k->tag == SQLITE_INTEGER || k->tag == SQLITE_FLOAT) return 9;
    if (k->tag == SQLITE_NULL) return 1;
    return 1 + sizeof(uint64_t) + (size_t)k->n;
}

// 1 when column k sits at key[*off] (advancing *off), 0 otherwise.
static int key_col_eq(const KeyCol *k, const unsigned char *key, size_t len, size_t *off) {
    size_t need = key_col_size(k);
    if (need > len - *off || key[*off] != k->tag) return 0;
    const unsigned char *p = key + *off + 1;
    if (k->tag == SQLITE_INTEGER || k->tag == SQLITE_FLOAT) {
        if (memcmp(p, k->num, 8) != 0) return 0;
    } else if (k->tag != SQLITE_NULL) {
        if (memcmp(p, &k->n, sizeof k->n) != 0 ||
            (k->n && memcmp(p + sizeof k->n, k->bytes, (size_t)k->n) != 0))
            return 0;
    }
    *off += need;
    return 1;
}

// The columns job_row_json reads (C_RECIPE_TEXT is left out of the object).
#define KEY_COLS (C_CANCEL + 1)

// Serializes cols into db->keybuf: equal keys render to equal objects.
// Returns the length, 0 when not cacheable (too large, or *oom set).
static size_t job_row_key(Db *db, const KeyCol cols[KEY_COLS], int *oom) {
    size_t len = 0;
    for (int c = C_ID; c < KEY_COLS; c++) {
        if (c == C_RECIPE_TEXT) continue;
        const KeyCol *k = &cols[c];
        if (key_put(db, &len, &k->tag, 1, oom) < 0) return 0;
        if (k->tag == SQLITE_INTEGER || k->tag == SQLITE_FLOAT) {
            if (key_put(db, &len, k->num, 8, oom) < 0) return 0;
        } else if (k->tag != SQLITE_NULL) {
            if (key_put(db, &len, &k->n, sizeof k->n, oom) < 0 ||
                key_put(db, &len, k->bytes, (size_t)k->n, oom) < 0)
                return 0;
        }
    }
    return len;
}

// Reads the current row's key columns into cols, each once (reading a value
// can change how SQLite reports its type afterwards); -1 on OOM.
static int job_row_cols(sqlite3_stmt *st, KeyCol cols[KEY_COLS]) {
    for (int c = C_ID; c < KEY_COLS; c++) {
        if (c == C_RECIPE_TEXT) continue;
        if (key_col(st, c, &cols[c]) < 0) return -1;
    }
    return 0;
}

// The cached render of a row with these columns, or NULL. Compared column by
// column in place (no key is built for a hit); the job id comes first, so
// other jobs' entries fail on their first bytes.
static JobText *job_text_find(Db *db, const KeyCol cols[KEY_COLS]) {
    for (int i = 0; i < JOB_TEXT_SLOTS; i++) {
        JobText *e = &db->jt[i];
        if (!e->key) continue;
        size_t off = 0;
        int c;
        for (c = C_ID; c < KEY_COLS; c++) {
            if (c == C_RECIPE_TEXT) continue;
            if (!key_col_eq(&cols[c], e->key, e->key_len, &off)) break;
        }
        if (c == KEY_COLS && off == e->key_len) return e;
    }
    return NULL;
}

// A malloc'ed, NUL-terminated copy of n bytes; NULL on OOM.
static char *dup_bytes(const char *p, size_t n) {
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, p, n);
        d[n] = '\0';
    }
    return d;
}

// The connection's mapping of the WAL-index (the -shm file's first region),
// or NULL. It stays valid while the connection is open: SQLite unmaps it only
// when this connection closes its WAL (sqlite3_close, or leaving WAL mode,
// which nothing here does), and maps further regions separately.
static const volatile unsigned char *wal_index_map(Db *db) {
    sqlite3_file *f = NULL;
    if (sqlite3_file_control(db->conn, "main", SQLITE_FCNTL_FILE_POINTER, &f) != SQLITE_OK || !f ||
        !f->pMethods || f->pMethods->iVersion < 2 || !f->pMethods->xShmMap)
        return NULL;
    volatile void *p = NULL;
    // 32 KiB is SQLite's region size; 0: map only what exists.
    if (f->pMethods->xShmMap(f, 0, 32 * 1024, 0, &p) != SQLITE_OK) return NULL;
    return p;
}

// Reads the WAL-index header and bumps db->epoch when anything was committed
// since the last reading. Without a mapping it bumps every time, so no entry
// is ever current and every poll compares the row.
static void change_epoch(Db *db) {
    if (!db->shm_tried) {
        db->shm_tried = 1;
        db->shm = wal_index_map(db);
    }
    if (!db->shm) {
        db->epoch++;
        return;
    }
    // In SQLite's reader order: copy 1, barrier, copy 2 (a writer writes copy
    // 2 first). Both equal to the last reading: nothing was published since.
    // A torn read differs, which only costs a row comparison.
    unsigned char h[2 * WAL_HDR_BYTES];
    memcpy(h, (const void *)db->shm, WAL_HDR_BYTES);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    memcpy(h + WAL_HDR_BYTES, (const void *)(db->shm + WAL_HDR_BYTES), WAL_HDR_BYTES);
    if (db->epoch == 0 || memcmp(h, db->wal_hdr, sizeof h) != 0) {
        memcpy(db->wal_hdr, h, sizeof h);
        db->epoch++; // entries start at 0: never current
    }
}

int db_job_get_text(Db *db, const char *id, char **out, size_t *len, BsError *err) {
    *out = NULL;
    *len = 0;
    if (!id) return bs_fail(err, "invalid_argument", "id", "job id is NULL");
    // Read before the row: a commit published after this reading changes the
    // header for the next request, so an entry compared below stays current
    // only while nothing was committed since.
    change_epoch(db);
    for (int i = 0; i < JOB_TEXT_SLOTS; i++) {
        const JobText *e = &db->jt[i];
        if (!e->key || e->epoch != db->epoch || strcmp(e->id, id) != 0) continue;
        *out = dup_bytes(e->text, e->text_len);
        if (!*out) return bs_fail(err, "oom", "", "out of memory reading job %s", id);
        *len = e->text_len;
        return 0;
    }
    sqlite3_stmt *st = job_row(db, ST_JOB_RENDER, id, "read job", err);
    if (!st) return -1;
    KeyCol cols[KEY_COLS];
    if (job_row_cols(st, cols) < 0) {
        stmt_done(st);
        return bs_fail(err, "oom", "", "out of memory reading job %s", id);
    }
    JobText *hit = job_text_find(db, cols);
    if (hit) {
        hit->epoch = db->epoch;
        stmt_done(st);
        *out = dup_bytes(hit->text, hit->text_len);
        if (!*out) return bs_fail(err, "oom", "", "out of memory reading job %s", id);
        *len = hit->text_len;
        return 0;
    }
    int oom = 0;
    size_t klen = job_row_key(db, cols, &oom);
    if (oom) {
        stmt_done(st);
        return bs_fail(err, "oom", "", "out of memory reading job %s", id);
    }
    cJSON *obj = job_row_json(st);
    stmt_done(st);
    char *text = obj ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    if (!text) return bs_fail(err, "oom", "", "out of memory reading job %s", id);
    *out = text;
    *len = strlen(text);
    if (klen && strlen(id) < sizeof db->jt[0].id) {
        // Cache a copy; failing to is only a slower next poll.
        unsigned char *k = malloc(klen);
        char *t = dup_bytes(text, *len);
        if (!k || !t) {
            free(k);
            free(t);
            return 0;
        }
        memcpy(k, db->keybuf, klen);
        JobText *e = &db->jt[db->jt_next];
        db->jt_next = (db->jt_next + 1) % JOB_TEXT_SLOTS;
        free(e->key);
        free(e->text);
        *e = (JobText){.key = k, .key_len = klen, .text = t, .text_len = *len, .epoch = db->epoch};
        snprintf(e->id, sizeof e->id, "%s", id);
    }
    return 0;
}

int db_job_load(Db *db, const char *id, DbJob *out, BsError *err) {
    memset(out, 0, sizeof *out);
    sqlite3_stmt *st = job_row(db, ST_JOB_GET, id, "read job", err);
    if (!st) return -1;
    int oom = 0;
    snprintf(out->id, sizeof out->id, "%s", (const char *)sqlite3_column_text(st, C_ID));
    int bad_status =
        db_status_parse((const char *)sqlite3_column_text(st, C_STATUS), &out->status) != 0;
    snprintf(out->method, sizeof out->method, "%s",
             (const char *)sqlite3_column_text(st, C_METHOD));
    out->recipe_json = col_strdup(st, C_RECIPE_JSON, &oom);
    out->recipe_text = col_strdup(st, C_RECIPE_TEXT, &oom);
    out->output_dir = col_strdup(st, C_OUTDIR, &oom);
    out->depends_on = col_strdup(st, C_DEPENDS, &oom);
    out->step = sqlite3_column_int(st, C_STEP);
    out->total_steps = sqlite3_column_int(st, C_TOTAL);
    out->epoch = sqlite3_column_double(st, C_EPOCH);
    out->attempts = sqlite3_column_int(st, C_ATTEMPTS);
    out->cancel_requested = sqlite3_column_int(st, C_CANCEL);
    stmt_done(st);
    if (oom || bad_status) {
        db_job_free(out);
        if (oom) return bs_fail(err, "oom", "", "out of memory reading job %s", id);
        return bs_fail(err, "db", "status", "job %s has an unknown status", id);
    }
    return 0;
}

void db_job_free(DbJob *j) {
    if (!j) return;
    free(j->recipe_json);
    free(j->recipe_text);
    free(j->output_dir);
    free(j->depends_on);
    j->recipe_json = j->recipe_text = j->output_dir = j->depends_on = NULL;
}

int db_job_list(Db *db, const JobStatus *status, int limit, const char *after, cJSON **out,
                int *has_more, BsError *err) {
    *out = NULL;
    *has_more = 0;
    if (status && !db_status_name(*status))
        return bs_fail(err, "invalid_argument", "status", "unknown status %d", (int)*status);
    if (limit < 1) limit = 1;
    if (limit > DB_LIST_MAX) limit = DB_LIST_MAX;
    sqlite3_stmt *st;
    int rc;
    long long cursor = INT64_MAX;
    if (after) {
        if (!(st = stmt_get(db, ST_JOB_SEQ, err))) return -1;
        sqlite3_bind_text(st, 1, after, -1, SQLITE_TRANSIENT);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) cursor = sqlite3_column_int64(st, 0);
        stmt_done(st);
        if (rc == SQLITE_DONE) return bs_fail(err, "not_found", "after", "no job %s", after);
        if (rc != SQLITE_ROW) return db_fail(db, err, rc, "read cursor");
    }
    cJSON *arr = cJSON_CreateArray();
    if (!arr) return bs_fail(err, "oom", "", "out of memory listing jobs");
    if (!(st = stmt_get(db, ST_JOB_LIST, err))) goto fail;
    sqlite3_bind_int64(st, 1, cursor);
    if (status)
        sqlite3_bind_text(st, 2, db_status_name(*status), -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 2);
    sqlite3_bind_int(st, 3, limit + 1); // one extra row tells whether a next page exists
    int n = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == limit) {
            *has_more = 1;
            break;
        }
        cJSON *o = job_row_json(st);
        if (!o || !cJSON_AddItemToArray(arr, o)) {
            cJSON_Delete(o);
            stmt_done(st);
            bs_fail(err, "oom", "", "out of memory listing jobs");
            goto fail;
        }
        n++;
    }
    stmt_done(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        db_fail(db, err, rc, "list jobs");
        goto fail;
    }
    *out = arr;
    return 0;
fail:
    cJSON_Delete(arr);
    *has_more = 0;
    return -1;
}

// The status change inside the caller's transaction; from is the current
// status the caller read in that transaction.
static int set_status_locked(Db *db, const char *id, JobStatus from, JobStatus to,
                             const char *detail_json, long long *event_seq, BsError *err) {
    if (!db_status_transition_ok(from, to))
        return bs_fail(err, "invalid_transition", "status", "job %s cannot go from %s to %s", id,
                       db_status_name(from), db_status_name(to));
    cJSON *detail = NULL;
    if (detail_json) {
        detail = cJSON_Parse(detail_json);
        if (!detail) return bs_fail(err, "invalid_argument", "detail", "detail is not valid JSON");
        if (to == JOB_BLOCKED && !cJSON_IsArray(detail)) {
            cJSON_Delete(detail);
            return bs_fail(err, "invalid_argument", "detail",
                           "the detail of a blocked job is the array of blockers");
        }
    }
    sqlite3_stmt *st = stmt_get(db, ST_JOB_SET_STATUS, err);
    if (!st) {
        cJSON_Delete(detail);
        return -1;
    }
    char now[32];
    utc_now(now);
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, db_status_name(to), -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, now, -1, SQLITE_TRANSIENT);
    bind_text_or_null(st, 4, detail_json);
    sqlite3_bind_int(st, 5, db_status_is_terminal(to));
    if (step_done(db, st, "update job status", err) != 0) {
        cJSON_Delete(detail);
        return -1;
    }
    cJSON *ev = cJSON_CreateObject();
    char *text = NULL;
    if (ev && cJSON_AddStringToObject(ev, "status", db_status_name(to)) &&
        cJSON_AddStringToObject(ev, "previous", db_status_name(from))) {
        cJSON *d = detail ? detail : cJSON_CreateNull();
        detail = NULL;
        if (d && cJSON_AddItemToObject(ev, "detail", d))
            text = cJSON_PrintUnformatted(ev);
        else
            cJSON_Delete(d);
    }
    cJSON_Delete(detail);
    cJSON_Delete(ev);
    if (!text) return bs_fail(err, "oom", "", "out of memory building the status event");
    int rc = event_insert(db, id, "status", text, event_seq, err);
    free(text);
    return rc;
}

int db_job_set_status(Db *db, const char *id, JobStatus to, const char *detail_json,
                      long long *event_seq, BsError *err) {
    if (!db_status_name(to))
        return bs_fail(err, "invalid_argument", "status", "unknown status %d", (int)to);
    if (db_begin(db, err) != 0) return -1;
    JobStatus from;
    if (job_status_of(db, id, &from, err) != 0) goto fail;
    if (set_status_locked(db, id, from, to, detail_json, event_seq, err) != 0) goto fail;
    return db_commit(db, err);
fail:
    db_rollback(db);
    return -1;
}

int db_job_request_cancel(Db *db, const char *id, int *now_cancelled, BsError *err) {
    if (now_cancelled) *now_cancelled = 0;
    if (db_begin(db, err) != 0) return -1;
    JobStatus from;
    if (job_status_of(db, id, &from, err) != 0) goto fail;
    if (from == JOB_QUEUED) {
        if (set_status_locked(
                db, id, from, JOB_CANCELLED,
                "{\"code\":\"cancelled\",\"message\":\"cancelled before it started\"}", NULL,
                err) != 0)
            goto fail;
        if (db_commit(db, err) != 0) return -1;
        if (now_cancelled) *now_cancelled = 1;
        return 0;
    }
    if (from != JOB_RUNNING) {
        bs_fail(err, "invalid_transition", "status", "job %s is already %s", id,
                db_status_name(from));
        goto fail;
    }
    sqlite3_stmt *st = stmt_get(db, ST_JOB_SET_CANCEL, err);
    if (!st) goto fail;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    if (step_done(db, st, "request cancel", err) != 0) goto fail;
    return db_commit(db, err);
fail:
    db_rollback(db);
    return -1;
}

// Runs one bound UPDATE keyed by job id in its own transaction; "not_found"
// when it touched no row.
static int update_one_job(Db *db, sqlite3_stmt *st, const char *id, const char *what,
                          BsError *err) {
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        db_fail(db, err, rc, what);
        goto fail;
    }
    if (sqlite3_changes(db->conn) == 0) {
        bs_fail(err, "not_found", "id", "no job %s", id);
        goto fail;
    }
    return db_commit(db, err);
fail:
    db_rollback(db);
    return -1;
}

int db_job_progress(Db *db, const char *id, int step, int total_steps, double epoch, BsError *err) {
    if (!id) return bs_fail(err, "invalid_argument", "id", "job id is NULL");
    if (step < 0) return bs_fail(err, "invalid_argument", "step", "step is negative");
    if (db_begin(db, err) != 0) return -1;
    sqlite3_stmt *st = stmt_get(db, ST_JOB_PROGRESS, err);
    if (!st) {
        db_rollback(db);
        return -1;
    }
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 2, step);
    sqlite3_bind_double(st, 3, isfinite(epoch) ? epoch : 0.0);
    sqlite3_bind_int(st, 4, total_steps);
    return update_one_job(db, st, id, "update progress", err);
}

int db_job_set_output_dir(Db *db, const char *id, const char *output_dir, BsError *err) {
    if (!id) return bs_fail(err, "invalid_argument", "id", "job id is NULL");
    if (db_begin(db, err) != 0) return -1;
    sqlite3_stmt *st = stmt_get(db, ST_JOB_OUTDIR, err);
    if (!st) {
        db_rollback(db);
        return -1;
    }
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    bind_text_or_null(st, 2, output_dir);
    return update_one_job(db, st, id, "set output_dir", err);
}

int db_job_next_runnable(Db *db, char id_out[DB_ID_SIZE], int *found, BsError *err) {
    *found = 0;
    id_out[0] = '\0';
    sqlite3_stmt *st = stmt_get(db, ST_JOB_NEXT, err);
    if (!st) return -1;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        snprintf(id_out, DB_ID_SIZE, "%s", (const char *)sqlite3_column_text(st, 0));
        *found = 1;
    }
    stmt_done(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return db_fail(db, err, rc, "find runnable job");
    return 0;
}

// Collects the first column of every row of a bound statement as strings.
static int collect_ids(Db *db, sqlite3_stmt *st, cJSON **out, BsError *err) {
    cJSON *arr = cJSON_CreateArray();
    if (!arr) {
        stmt_done(st);
        return bs_fail(err, "oom", "", "out of memory");
    }
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        cJSON *s = cJSON_CreateString((const char *)sqlite3_column_text(st, 0));
        if (!s || !cJSON_AddItemToArray(arr, s)) {
            cJSON_Delete(s);
            cJSON_Delete(arr);
            stmt_done(st);
            return bs_fail(err, "oom", "", "out of memory");
        }
    }
    stmt_done(st);
    if (rc != SQLITE_DONE) {
        cJSON_Delete(arr);
        return db_fail(db, err, rc, "read job ids");
    }
    *out = arr;
    return 0;
}

int db_jobs_waiting_on(Db *db, const char *job_id, cJSON **out, BsError *err) {
    *out = NULL;
    if (!job_id) return bs_fail(err, "invalid_argument", "id", "job id is NULL");
    sqlite3_stmt *st = stmt_get(db, ST_JOB_WAITING, err);
    if (!st) return -1;
    sqlite3_bind_text(st, 1, job_id, -1, SQLITE_TRANSIENT);
    return collect_ids(db, st, out, err);
}

int db_jobs_requeue_running(Db *db, cJSON **out, BsError *err) {
    *out = NULL;
    cJSON *ids = NULL;
    if (db_begin(db, err) != 0) return -1;
    sqlite3_stmt *st = stmt_get(db, ST_JOB_RUNNING, err);
    if (!st) goto fail;
    if (collect_ids(db, st, &ids, err) != 0) goto fail;
    const cJSON *it;
    cJSON_ArrayForEach(it, ids) {
        if (set_status_locked(db, it->valuestring, JOB_RUNNING, JOB_QUEUED,
                              "{\"reason\":\"daemon restart\"}", NULL, err) != 0)
            goto fail;
    }
    if (db_commit(db, err) != 0) {
        cJSON_Delete(ids);
        return -1;
    }
    *out = ids;
    return 0;
fail:
    db_rollback(db);
    cJSON_Delete(ids);
    return -1;
}

int db_job_counts_by_status(Db *db, long long counts[JOB_STATUS_COUNT], BsError *err) {
    for (int i = 0; i < JOB_STATUS_COUNT; i++)
        counts[i] = 0;
    sqlite3_stmt *st = stmt_get(db, ST_JOB_COUNTS, err);
    if (!st) return -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        JobStatus s;
        if (db_status_parse((const char *)sqlite3_column_text(st, 0), &s) == 0)
            counts[s] = sqlite3_column_int64(st, 1);
    }
    stmt_done(st);
    if (rc != SQLITE_DONE) return db_fail(db, err, rc, "count jobs");
    return 0;
}

// ---- metrics -------------------------------------------------------------------

// Sets obj[name] = v (null when not finite), replacing an existing key.
static int json_set_number(cJSON *obj, const char *name, double v) {
    cJSON *item = isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull();
    if (!item) return -1;
    if (cJSON_GetObjectItemCaseSensitive(obj, name))
        return cJSON_ReplaceItemInObjectCaseSensitive(obj, name, item) ? 0 : -1;
    if (!cJSON_AddItemToObject(obj, name, item)) {
        cJSON_Delete(item);
        return -1;
    }
    return 0;
}

int db_metrics_append(Db *db, const char *job_id, const MetricRow *rows, int n, double epoch,
                      long long *event_seq, BsError *err) {
    if (!job_id) return bs_fail(err, "invalid_argument", "id", "job id is NULL");
    if (n < 1 || !rows) return bs_fail(err, "invalid_argument", "rows", "no metric rows");
    for (int i = 0; i < n; i++) {
        if (rows[i].step != rows[0].step)
            return bs_fail(err, "invalid_argument", "rows", "rows of one append share a step");
        if (rows[i].step < 0) return bs_fail(err, "invalid_argument", "step", "step is negative");
        if (rows[i].n < 0 || rows[i].n > BS_MAX_METRICS)
            return bs_fail(err, "invalid_argument", "rows", "row has %d values", rows[i].n);
    }
    if (!isfinite(epoch)) epoch = 0.0;
    int step = rows[0].step;
    cJSON *latest = NULL, *values = NULL, *ev = NULL;
    char *text = NULL;
    if (db_begin(db, err) != 0) return -1;

    sqlite3_stmt *st = job_row(db, ST_JOB_LATEST, job_id, "read job", err);
    if (!st) goto fail;
    const char *old = (const char *)sqlite3_column_text(st, 0);
    latest = old ? cJSON_Parse(old) : NULL;
    if (latest && !cJSON_IsObject(latest)) {
        cJSON_Delete(latest);
        latest = NULL;
    }
    int total_steps = sqlite3_column_int(st, 1);
    stmt_done(st);
    if (!latest) latest = cJSON_CreateObject();
    values = cJSON_CreateObject();
    if (!latest || !values) goto oom;

    char now[32];
    utc_now(now);
    for (int i = 0; i < n; i++) {
        cJSON *row = cJSON_CreateObject();
        if (!row) goto oom;
        int bad = 0;
        for (int k = 0; k < rows[i].n && !bad; k++) {
            bad |= json_set_number(row, rows[i].name[k], rows[i].value[k]);
            bad |= json_set_number(values, rows[i].name[k], rows[i].value[k]);
            bad |= json_set_number(latest, rows[i].name[k], rows[i].value[k]);
        }
        char *row_text = bad ? NULL : cJSON_PrintUnformatted(row);
        cJSON_Delete(row);
        if (!row_text) goto oom;
        if (!(st = stmt_get(db, ST_METRIC_UPSERT, err))) {
            free(row_text);
            goto fail;
        }
        sqlite3_bind_text(st, 1, job_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(st, 2, step);
        sqlite3_bind_int(st, 3, rows[i].is_eval ? 1 : 0);
        sqlite3_bind_text(st, 4, row_text, -1, free);
        sqlite3_bind_text(st, 5, now, -1, SQLITE_TRANSIENT);
        if (step_done(db, st, "upsert metrics", err) != 0) goto fail;
    }
    if (json_set_number(latest, "step", step) != 0) goto oom;
    text = cJSON_PrintUnformatted(latest);
    if (!text) goto oom;
    if (!(st = stmt_get(db, ST_JOB_METRICS_UPDATE, err))) goto fail;
    sqlite3_bind_text(st, 1, job_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 2, step);
    sqlite3_bind_double(st, 3, epoch);
    sqlite3_bind_text(st, 4, text, -1, free);
    text = NULL; // owned by the binding now
    if (step_done(db, st, "update latest metrics", err) != 0) goto fail;

    ev = cJSON_CreateObject();
    if (!ev || !cJSON_AddNumberToObject(ev, "step", step) ||
        !cJSON_AddNumberToObject(ev, "epoch", epoch) ||
        !cJSON_AddNumberToObject(ev, "total_steps", total_steps))
        goto oom;
    if (!cJSON_AddItemToObject(ev, "values", values)) goto oom;
    values = NULL;
    text = cJSON_PrintUnformatted(ev);
    if (!text) goto oom;
    if (event_insert(db, job_id, "metrics", text, event_seq, err) != 0) goto fail;
    if (db_commit(db, err) != 0) goto fail_noroll;
    cJSON_Delete(latest);
    cJSON_Delete(ev);
    free(text);
    return 0;
oom:
    bs_fail(err, "oom", "", "out of memory recording metrics");
fail:
    db_rollback(db);
fail_noroll:
    cJSON_Delete(latest);
    cJSON_Delete(values);
    cJSON_Delete(ev);
    free(text);
    return -1;
}

int db_metrics_list(Db *db, const char *job_id, int after_step, int limit, cJSON **out,
                    BsError *err) {
    *out = NULL;
    if (job_must_exist(db, job_id, err) != 0) return -1;
    sqlite3_stmt *st = stmt_get(db, ST_METRIC_LIST, err);
    if (!st) return -1;
    sqlite3_bind_text(st, 1, job_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 2, after_step < 0 ? -1 : after_step);
    sqlite3_bind_int(st, 3, limit > 0 ? limit : -1);
    cJSON *arr = cJSON_CreateArray();
    if (!arr) {
        stmt_done(st);
        return bs_fail(err, "oom", "", "out of memory listing metrics");
    }
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        cJSON *o = cJSON_CreateObject();
        if (!o || !cJSON_AddItemToArray(arr, o)) {
            cJSON_Delete(o);
            goto oom;
        }
        if (!cJSON_AddNumberToObject(o, "step", sqlite3_column_int(st, 0)) ||
            !cJSON_AddBoolToObject(o, "is_eval", sqlite3_column_int(st, 1)) ||
            add_json_col(o, "values", st, 2, 0) != 0 || add_text_col(o, "created_at", st, 3) != 0)
            goto oom;
    }
    stmt_done(st);
    if (rc != SQLITE_DONE) {
        cJSON_Delete(arr);
        return db_fail(db, err, rc, "list metrics");
    }
    *out = arr;
    return 0;
oom:
    stmt_done(st);
    cJSON_Delete(arr);
    return bs_fail(err, "oom", "", "out of memory listing metrics");
}

int db_metrics_delete_after(Db *db, const char *job_id, int step, BsError *err) {
    if (db_begin(db, err) != 0) return -1;
    if (job_must_exist(db, job_id, err) != 0) goto fail;
    sqlite3_stmt *st = stmt_get(db, ST_METRIC_DELETE, err);
    if (!st) goto fail;
    sqlite3_bind_text(st, 1, job_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 2, step);
    if (step_done(db, st, "delete metrics", err) != 0) goto fail;
    return db_commit(db, err);
fail:
    db_rollback(db);
    return -1;
}

// ---- events --------------------------------------------------------------------

int db_event_append(Db *db, const char *job_id, const char *type, const char *data_json,
                    long long *seq, BsError *err) {
    if (!type || (strcmp(type, "metrics") && strcmp(type, "status") && strcmp(type, "log")))
        return bs_fail(err, "invalid_argument", "type",
                       "event type must be metrics, status or log");
    if (!data_json || !json_text_ok(data_json, 0))
        return bs_fail(err, "invalid_argument", "data", "event data is not valid JSON");
    if (db_begin(db, err) != 0) return -1;
    if (job_must_exist(db, job_id, err) != 0) goto fail;
    if (event_insert(db, job_id, type, data_json, seq, err) != 0) goto fail;
    return db_commit(db, err);
fail:
    db_rollback(db);
    return -1;
}

int db_events_after(Db *db, const char *job_id, long long after_seq, int limit, cJSON **out,
                    BsError *err) {
    *out = NULL;
    if (job_must_exist(db, job_id, err) != 0) return -1;
    sqlite3_stmt *st = stmt_get(db, ST_EVENT_AFTER, err);
    if (!st) return -1;
    sqlite3_bind_text(st, 1, job_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, after_seq);
    sqlite3_bind_int(st, 3, limit > 0 ? limit : -1);
    cJSON *arr = cJSON_CreateArray();
    if (!arr) {
        stmt_done(st);
        return bs_fail(err, "oom", "", "out of memory listing events");
    }
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        cJSON *o = cJSON_CreateObject();
        if (!o || !cJSON_AddItemToArray(arr, o)) {
            cJSON_Delete(o);
            goto oom;
        }
        if (!cJSON_AddNumberToObject(o, "seq", (double)sqlite3_column_int64(st, 0)) ||
            add_text_col(o, "type", st, 1) != 0 || add_json_col(o, "data", st, 2, 0) != 0 ||
            add_text_col(o, "created_at", st, 3) != 0)
            goto oom;
    }
    stmt_done(st);
    if (rc != SQLITE_DONE) {
        cJSON_Delete(arr);
        return db_fail(db, err, rc, "list events");
    }
    *out = arr;
    return 0;
oom:
    stmt_done(st);
    cJSON_Delete(arr);
    return bs_fail(err, "oom", "", "out of memory listing events");
}

int db_event_last_seq(Db *db, const char *job_id, long long *seq, BsError *err) {
    *seq = 0;
    if (job_must_exist(db, job_id, err) != 0) return -1;
    sqlite3_stmt *st = stmt_get(db, ST_EVENT_LAST, err);
    if (!st) return -1;
    sqlite3_bind_text(st, 1, job_id, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) *seq = sqlite3_column_int64(st, 0);
    stmt_done(st);
    if (rc != SQLITE_ROW) return db_fail(db, err, rc, "read last event");
    return 0;
}

// ---- checkpoints -----------------------------------------------------------------

int db_checkpoint_add(Db *db, const char *job_id, int step, const char *path, long long bytes,
                      BsError *err) {
    if (!path) return bs_fail(err, "invalid_argument", "path", "checkpoint path is NULL");
    if (step < 0 || bytes < 0)
        return bs_fail(err, "invalid_argument", step < 0 ? "step" : "bytes",
                       "checkpoint step and size must not be negative");
    if (db_begin(db, err) != 0) return -1;
    if (job_must_exist(db, job_id, err) != 0) goto fail;
    sqlite3_stmt *st = stmt_get(db, ST_CKPT_UPSERT, err);
    if (!st) goto fail;
    char now[32];
    utc_now(now);
    sqlite3_bind_text(st, 1, job_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 2, step);
    sqlite3_bind_text(st, 3, path, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 4, bytes);
    sqlite3_bind_text(st, 5, now, -1, SQLITE_TRANSIENT);
    if (step_done(db, st, "record checkpoint", err) != 0) goto fail;
    return db_commit(db, err);
fail:
    db_rollback(db);
    return -1;
}

int db_checkpoint_list(Db *db, const char *job_id, cJSON **out, BsError *err) {
    *out = NULL;
    if (job_must_exist(db, job_id, err) != 0) return -1;
    sqlite3_stmt *st = stmt_get(db, ST_CKPT_LIST, err);
    if (!st) return -1;
    sqlite3_bind_text(st, 1, job_id, -1, SQLITE_TRANSIENT);
    cJSON *arr = cJSON_CreateArray();
    if (!arr) {
        stmt_done(st);
        return bs_fail(err, "oom", "", "out of memory listing checkpoints");
    }
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        cJSON *o = cJSON_CreateObject();
        if (!o || !cJSON_AddItemToArray(arr, o)) {
            cJSON_Delete(o);
            goto oom;
        }
        if (!cJSON_AddNumberToObject(o, "step", sqlite3_column_int(st, 0)) ||
            add_text_col(o, "path", st, 1) != 0 ||
            !cJSON_AddNumberToObject(o, "bytes", (double)sqlite3_column_int64(st, 2)) ||
            add_text_col(o, "created_at", st, 3) != 0)
            goto oom;
    }
    stmt_done(st);
    if (rc != SQLITE_DONE) {
        cJSON_Delete(arr);
        return db_fail(db, err, rc, "list checkpoints");
    }
    *out = arr;
    return 0;
oom:
    stmt_done(st);
    cJSON_Delete(arr);
    return bs_fail(err, "oom", "", "out of memory listing checkpoints");
}

int db_checkpoint_latest(Db *db, const char *job_id, int *found, int *step, char **path,
                         BsError *err) {
    *found = 0;
    *step = 0;
    *path = NULL;
    if (job_must_exist(db, job_id, err) != 0) return -1;
    sqlite3_stmt *st = stmt_get(db, ST_CKPT_LATEST, err);
    if (!st) return -1;
    sqlite3_bind_text(st, 1, job_id, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    int oom = 0;
    if (rc == SQLITE_ROW) {
        *step = sqlite3_column_int(st, 0);
        *path = col_strdup(st, 1, &oom);
        *found = !oom;
    }
    stmt_done(st);
    if (oom) return bs_fail(err, "oom", "", "out of memory reading a checkpoint path");
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return db_fail(db, err, rc, "read checkpoint");
    return 0;
}
