// api.c — the route handlers of brewslmd (see api.h). One handler per route
// family; the helpers below reply with an error themselves and return NULL /
// -1, so each handler is a flat sequence of "get it or return".
#include "api.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "blasenv.h"
#include "brewslm_config.h"
#include "generate_route.h"
#include "jobutil.h"
#include "preflight.h"
#include "recipe.h"
#include "assets.h"
#include "strbuf.h"

#define SSE_BATCH 256
// Shortest gap between two event reads of one stream, and the pause before
// trying again when every pooled database connection was busy.
#define SSE_MIN_FILL_MS 50.0
#define SSE_BUSY_RETRY_MS 200.0
// Syntax-level nesting cap; the recipe parser refuses more than 32 levels
// with its own message, this only keeps hostile bodies cheap.
#define JSON_MAX_DEPTH 64

// ---- helpers that reply on failure -------------------------------------------

typedef struct {
    DbPool *pool;
    Db *db;
} DbLease;

static void lease_release(void *p) {
    DbLease *l = p;
    dbpool_release(l->pool, l->db);
}

// A pooled connection returned to the pool when the request completes.
static Db *req_db(HttpRequest *req, ApiContext *api) {
    Db *db = dbpool_acquire_or_reply(api->pool, req);
    if (!db) return NULL;
    DbLease *l = http_alloc(req, sizeof(*l));
    if (!l) {
        dbpool_release(api->pool, db);
        http_reply_error(req, 500, "internal_error", "oom", NULL, "out of memory");
        return NULL;
    }
    l->pool = api->pool;
    l->db = db;
    if (http_defer(req, lease_release, l) < 0) {
        http_reply_error(req, 500, "internal_error", "oom", NULL, "out of memory");
        return NULL;
    }
    return db;
}

// Maps a storage error onto a reply.
static void reply_db_error(HttpRequest *req, const BsError *err) {
    if (strcmp(err->code, "not_found") == 0) {
        http_reply_error(req, 404, "not_found", "job_not_found", err->param[0] ? err->param : "id",
                         "%s", err->message);
    } else if (strcmp(err->code, "invalid_argument") == 0) {
        http_reply_error(req, 400, "invalid_request", "invalid_parameter", err->param, "%s",
                         err->message);
    } else if (strcmp(err->code, "invalid_transition") == 0) {
        http_reply_error(req, 409, "conflict", "invalid_transition", NULL, "%s", err->message);
    } else if (strcmp(err->code, "db_busy") == 0) {
        http_add_header(req, "Retry-After", "1");
        http_reply_error(req, 503, "unavailable", "db_busy", NULL, "%s", err->message);
    } else if (strstr(err->message, "database or disk is full")) {
        // SQLITE_FULL (storage reports it as "db" with SQLite's message).
        http_reply_error(req, 507, "unavailable", "disk_full", NULL, "%s", err->message);
    } else {
        http_reply_error(req, 500, "internal_error", err->code, NULL, "%s", err->message);
    }
}

static void oom(HttpRequest *req) {
    http_reply_error(req, 500, "internal_error", "oom", NULL, "out of memory");
}

// The {id} path parameter when it names a job (any format error is a 404:
// no such job can exist).
static const char *req_job_id(HttpRequest *req) {
    const char *id = http_path_param(req, "id");
    if (!id || !db_job_id_valid(id)) {
        http_reply_error(req, 404, "not_found", "job_not_found", "id", "no job with id '%.40s'",
                         id ? id : "");
        return NULL;
    }
    return id;
}

// Loads the job (to answer 404 early); NULL after replying.
static cJSON *req_job(HttpRequest *req, Db *db, const char *id) {
    cJSON *job = NULL;
    BsError err;
    bs_error_clear(&err);
    if (db_job_get(db, id, &job, &err) < 0) {
        reply_db_error(req, &err);
        return NULL;
    }
    return job;
}

static void recipe_free_void(void *p) {
    recipe_free(p);
}

static void free_void(void *p) {
    free(p);
}

// Parses the body as a recipe (freed with the request). Syntax problems are
// 400; a well-formed body with a bad key or value is 422 naming the key.
static Recipe *req_recipe(HttpRequest *req, HttpBodyFormat fmt) {
    if (http_body_check(req, fmt, JSON_MAX_DEPTH) < 0) return NULL;
    size_t len;
    const char *body = http_body(req, &len);
    Recipe *r = http_alloc(req, sizeof(*r));
    if (!r) {
        oom(req);
        return NULL;
    }
    BsError err;
    bs_error_clear(&err);
    if (recipe_parse(body, len, fmt == HTTP_BODY_JSON ? RECIPE_JSON : RECIPE_YAML, r, &err) < 0) {
        if (strcmp(err.code, "io") == 0)
            http_reply_error(req, 500, "internal_error", "io", NULL, "%s", err.message);
        else if (!err.param[0])
            http_reply_error(req, 400, "invalid_request", "malformed_body", NULL, "%s",
                             err.message);
        else
            http_reply_error(req, 422, "invalid_request", err.code, err.param, "%s", err.message);
        return NULL;
    }
    if (http_defer(req, recipe_free_void, r) < 0) {
        oom(req);
        return NULL;
    }
    return r;
}

typedef struct {
    PreflightReport *rep;
    char depends_on[DB_ID_SIZE]; // "" when none
    const char *output_dir;      // the recipe's folder, confined by preflight; NULL: default
} Prepared;

// One `job:ID` field: a succeeded job is fine (resolved when the job runs),
// an unfinished one becomes the dependency, a missing or failed one a
// missing_dependency blocker. Malformed references are left to preflight.
// Returns -1 after replying.
static int check_jobref(HttpRequest *req, Db *db, const char *field, const char *value, Prepared *p,
                        Blocker *extra, int *n_extra) {
    char id[DB_ID_SIZE];
    if (!jobref_parse(value, id)) return 0;
    DbJob dep;
    BsError err;
    bs_error_clear(&err);
    Blocker *b = &extra[*n_extra];
    memset(b, 0, sizeof(*b));
    snprintf(b->code, sizeof(b->code), "missing_dependency");
    snprintf(b->field, sizeof(b->field), "%s", field);
    if (db_job_load(db, id, &dep, &err) < 0) {
        if (strcmp(err.code, "not_found") != 0) {
            reply_db_error(req, &err);
            return -1;
        }
        snprintf(b->message, sizeof(b->message), "%s names job %s, which does not exist", field,
                 id);
        snprintf(b->hint, sizeof(b->hint), "submit the job that produces the model first");
        (*n_extra)++;
        return 0;
    }
    JobStatus st = dep.status;
    db_job_free(&dep);
    if (st == JOB_SUCCEEDED) return 0;
    if (db_status_is_terminal(st)) {
        snprintf(b->message, sizeof(b->message),
                 "%s names job %s, which ended %s and left no model", field, id,
                 db_status_name(st));
        snprintf(b->hint, sizeof(b->hint), "rerun the dependency and point %s at the new job",
                 field);
        (*n_extra)++;
        return 0;
    }
    if (p->depends_on[0] && strcmp(p->depends_on, id) != 0) {
        http_reply_error(req, 422, "invalid_request", "invalid_recipe", field,
                         "a job can wait for one unfinished job; %s and %s are both unfinished",
                         p->depends_on, id);
        return -1;
    }
    snprintf(p->depends_on, sizeof(p->depends_on), "%s", id);
    return 0;
}

// Dependencies and preflight (which confines every path, output_dir
// included, to data_root and rewrites them absolute). Fills p; returns -1
// after replying on an internal error. Blockers are in p->rep for the caller.
// Holds a pooled connection only around the job-reference lookups, not
// through preflight (which reads the data files and can take a while).
static int prepare(HttpRequest *req, ApiContext *api, Recipe *r, Prepared *p) {
    memset(p, 0, sizeof(*p));
    p->rep = http_alloc(req, sizeof(*p->rep));
    if (!p->rep) {
        oom(req);
        return -1;
    }
    Blocker extra[2];
    int n_extra = 0;
    char ref[DB_ID_SIZE];
    if (jobref_parse(r->model, ref) || jobref_parse(r->reference_model, ref)) {
        BsError derr;
        bs_error_clear(&derr);
        Db *db = dbpool_acquire(api->pool, &derr);
        if (!db) {
            reply_db_error(req, &derr);
            return -1;
        }
        int rc = check_jobref(req, db, "model", r->model, p, extra, &n_extra);
        if (rc == 0)
            rc = check_jobref(req, db, "reference_model", r->reference_model, p, extra, &n_extra);
        dbpool_release(api->pool, db);
        if (rc < 0) return -1;
    }
    PreflightOptions opt = {
        .data_root = api->data_root,
        .memory_limit_bytes = api->memory_limit_bytes,
        .preference_enabled = BREWSLM_PREFERENCE,
    };
    BsError err;
    bs_error_clear(&err);
    if (preflight_run(r, &opt, p->rep, &err) < 0) {
        http_reply_error(req, 500, "internal_error", err.code, err.param, "preflight failed: %s",
                         err.message);
        return -1;
    }
    for (int i = 0; i < n_extra; i++)
        preflight_add(p->rep, 0, extra[i].code, extra[i].field, extra[i].hint, "%s",
                      extra[i].message);
    p->output_dir = r->output_dir; // absolute and confined now; NULL: the default folder
    return 0;
}

// 422 preflight_blocked with the blockers (and warnings) at the top level.
static void reply_blocked(HttpRequest *req, const PreflightReport *rep) {
    cJSON *extra = cJSON_CreateObject();
    cJSON *bl = blockers_to_json(rep->blockers, rep->n_blockers);
    cJSON *wa = blockers_to_json(rep->warnings, rep->n_warnings);
    if (!extra || !bl || !wa) {
        cJSON_Delete(extra);
        cJSON_Delete(bl);
        cJSON_Delete(wa);
        oom(req);
        return;
    }
    cJSON_AddItemToObject(extra, "blockers", bl);
    cJSON_AddItemToObject(extra, "warnings", wa);
    char msg[700];
    const Blocker *b0 = &rep->blockers[0];
    snprintf(msg, sizeof(msg), "preflight found %d blocker%s: %s", rep->n_blockers,
             rep->n_blockers == 1 ? "" : "s", b0->message);
    http_reply_error_extra(req, 422, "preflight_blocked", b0->code, b0->field, extra, msg);
}

// ---- /v1/jobs ------------------------------------------------------------------

// 1 to 255 printable ASCII characters (space included): keys are echoed in
// errors and compared byte for byte, so no encodings or control bytes.
static int idempotency_key_ok(const char *key) {
    size_t n = strlen(key);
    if (n == 0 || n > 255) return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)key[i] < 0x20 || (unsigned char)key[i] > 0x7e) return 0;
    return 1;
}

static void h_jobs_create(HttpRequest *req, ApiContext *api) {
    if (api->ctl.accepting && !api->ctl.accepting(api->ctl.user)) {
        http_reply_error(req, 503, "unavailable", "shutting_down", NULL,
                         "the daemon is shutting down");
        return;
    }
    const char *key = http_header(req, "Idempotency-Key");
    if (key && !idempotency_key_ok(key)) {
        http_reply_error(req, 400, "invalid_request", "invalid_idempotency_key", "Idempotency-Key",
                         "Idempotency-Key must be 1 to 255 printable ASCII characters");
        return;
    }
    HttpBodyFormat fmt;
    if (http_body_format(req, &fmt) < 0) return;
    Recipe *r = req_recipe(req, fmt);
    if (!r) return;
    // Stored before preflight rewrites the paths: the worker confines and
    // resolves them again when the job runs.
    char *canonical = recipe_to_json(r);
    if (!canonical || http_defer(req, free_void, canonical) < 0) {
        oom(req);
        return;
    }
    Prepared p;
    if (prepare(req, api, r, &p) < 0) return;
    if (p.rep->n_blockers > 0) {
        reply_blocked(req, p.rep);
        return;
    }
    Db *db = req_db(req, api);
    if (!db) return;
    char *warnings = NULL;
    cJSON *wa = blockers_to_json(p.rep->warnings, p.rep->n_warnings);
    if (wa) warnings = cJSON_PrintUnformatted(wa);
    cJSON_Delete(wa);
    if (!warnings || http_defer(req, free_void, warnings) < 0) {
        oom(req);
        return;
    }
    size_t len;
    const char *body = http_body(req, &len);
    DbJobNew j = {
        .method = recipe_method_name(r->method),
        .recipe_json = canonical,
        .recipe_text = body,
        .output_dir = p.output_dir,
        .depends_on = p.depends_on[0] ? p.depends_on : NULL,
        .idempotency_key = key,
        .status = JOB_QUEUED,
        .warnings_json = warnings,
        .total_steps = p.rep->steps > 0 && p.rep->steps < 1000000000 ? (int)p.rep->steps : 0,
    };
    char id[DB_ID_SIZE];
    int existed = 0;
    BsError err;
    bs_error_clear(&err);
    if (db_job_insert(db, &j, id, &existed, &err) < 0) {
        if (strcmp(err.code, "idempotency_conflict") == 0)
            http_reply_error(req, 409, "conflict", "idempotency_conflict", "Idempotency-Key",
                             "Idempotency-Key '%.64s' was used for job %s with a different body",
                             key, id);
        else if (strcmp(err.code, "not_found") == 0)
            http_reply_error(req, 422, "invalid_request", "missing_dependency", "model", "%s",
                             err.message);
        else
            reply_db_error(req, &err);
        return;
    }
    if (!existed && !p.output_dir) {
        char *dir = job_default_output_dir(api->state_dir, id);
        if (!dir) {
            oom(req);
            return;
        }
        // The worker falls back to the same folder, so a failure here only
        // hides output_dir from the job object.
        db_job_set_output_dir(db, id, dir, &err);
        free(dir);
    }
    if (!existed) {
        broker_publish(api->broker);
        if (api->ctl.wake) api->ctl.wake(api->ctl.user);
    } else {
        http_add_header(req, "Idempotent-Replayed", "true");
    }
    cJSON *job = req_job(req, db, id);
    if (!job) return;
    char loc[64];
    snprintf(loc, sizeof(loc), "/v1/jobs/%s", id);
    http_add_header(req, "Location", loc);
    http_reply_json(req, 201, job);
}

static void h_jobs_list(HttpRequest *req, ApiContext *api) {
    const char *sname = http_query(req, "status");
    JobStatus st;
    if (sname && db_status_parse(sname, &st) < 0) {
        http_reply_error(req, 400, "invalid_request", "invalid_parameter", "status",
                         "status must be one of queued, running, succeeded, failed, cancelled, "
                         "blocked");
        return;
    }
    long long limit;
    if (http_query_int(req, "limit", 1, 100, 20, &limit) < 0) return;
    const char *after = http_query(req, "after");
    if (after && !db_job_id_valid(after)) {
        http_reply_error(req, 400, "invalid_request", "invalid_parameter", "after",
                         "after must be a job id from a previous page");
        return;
    }
    Db *db = req_db(req, api);
    if (!db) return;
    cJSON *data = NULL;
    int has_more = 0;
    BsError err;
    bs_error_clear(&err);
    if (db_job_list(db, sname ? &st : NULL, (int)limit, after, &data, &has_more, &err) < 0) {
        if (strcmp(err.code, "not_found") == 0)
            http_reply_error(req, 400, "invalid_request", "invalid_parameter", "after", "%s",
                             err.message);
        else
            reply_db_error(req, &err);
        return;
    }
    cJSON *out = cJSON_CreateObject();
    if (!out) {
        cJSON_Delete(data);
        oom(req);
        return;
    }
    cJSON_AddStringToObject(out, "object", "list");
    cJSON_AddItemToObject(out, "data", data);
    cJSON_AddBoolToObject(out, "has_more", has_more);
    http_reply_json(req, 200, out);
}

static void h_jobs(HttpRequest *req, void *user) {
    if (http_method(req) == HTTP_POST)
        h_jobs_create(req, user);
    else
        h_jobs_list(req, user);
}

// The polling endpoint: the job as rendered text (db_job_get_text skips the
// cJSON round trip for an unchanged job) on a connection held only for the
// SELECT, not through the reply.
static void h_job_get(HttpRequest *req, void *user) {
    ApiContext *api = user;
    const char *id = req_job_id(req);
    if (!id) return;
    Db *db = dbpool_acquire_or_reply(api->pool, req);
    if (!db) return;
    BsError err;
    bs_error_clear(&err);
    char *text = NULL;
    size_t len = 0;
    int rc = db_job_get_text(db, id, &text, &len, &err);
    dbpool_release(api->pool, db);
    if (rc < 0) {
        reply_db_error(req, &err);
        return;
    }
    http_reply_json_text(req, 200, text, len);
}

static void h_job_cancel(HttpRequest *req, void *user) {
    ApiContext *api = user;
    const char *id = req_job_id(req);
    if (!id) return;
    Db *db = req_db(req, api);
    if (!db) return;
    int now = 0;
    BsError err;
    bs_error_clear(&err);
    if (db_job_request_cancel(db, id, &now, &err) < 0) {
        if (strcmp(err.code, "invalid_transition") == 0)
            http_reply_error(req, 409, "conflict", "job_not_cancellable", "id",
                             "job %s has already finished", id);
        else
            reply_db_error(req, &err);
        return;
    }
    if (!now && api->ctl.cancel_running) api->ctl.cancel_running(api->ctl.user, id);
    broker_publish(api->broker);
    if (api->ctl.wake) api->ctl.wake(api->ctl.user); // dependents of a cancelled job block
    cJSON *job = req_job(req, db, id);
    if (job) http_reply_json(req, now ? 200 : 202, job);
}

// ---- metrics -------------------------------------------------------------------

// One object per step: {"step": s, name: value, ...}, train and eval values
// of a step merged (eval names carry their eval_ prefix).
static cJSON *metrics_by_step(const cJSON *rows) {
    cJSON *out = cJSON_CreateArray();
    if (!out) return NULL;
    cJSON *cur = NULL;
    int cur_step = -1;
    const cJSON *row;
    cJSON_ArrayForEach(row, rows) {
        int step = cJSON_GetObjectItemCaseSensitive(row, "step")->valueint;
        if (!cur || step != cur_step) {
            cur = cJSON_CreateObject();
            if (!cur || !cJSON_AddItemToArray(out, cur)) {
                cJSON_Delete(cur);
                goto oom;
            }
            if (!cJSON_AddNumberToObject(cur, "step", step)) goto oom;
            cur_step = step;
        }
        const cJSON *v;
        cJSON_ArrayForEach(v, cJSON_GetObjectItemCaseSensitive(row, "values")) {
            cJSON *dup = cJSON_Duplicate(v, 1);
            if (!dup) goto oom;
            cJSON_DeleteItemFromObjectCaseSensitive(cur, v->string);
            cJSON_AddItemToObject(cur, v->string, dup);
        }
    }
    return out;
oom:
    cJSON_Delete(out);
    return NULL;
}

static void csv_field(StrBuf *sb, const char *s) {
    if (strpbrk(s, ",\"\n\r")) {
        sb_puts(sb, "\"");
        for (const char *p = s; *p; p++) {
            if (*p == '"') sb_puts(sb, "\"");
            sb_append(sb, p, 1);
        }
        sb_puts(sb, "\"");
    } else {
        sb_puts(sb, s);
    }
}

// text/csv: a header "step,<every metric name in first-seen order>", one
// line per step, empty cells where a step lacks a value.
static char *metrics_csv(const cJSON *steps, size_t *len) {
    StrBuf sb;
    sb_init(&sb);
    cJSON *names = cJSON_CreateArray();
    if (!names) return NULL;
    const cJSON *obj, *v;
    cJSON_ArrayForEach(obj, steps) {
        cJSON_ArrayForEach(v, obj) {
            if (strcmp(v->string, "step") == 0) continue;
            int seen = 0;
            const cJSON *n;
            cJSON_ArrayForEach(n, names) if (strcmp(n->valuestring, v->string) == 0) seen = 1;
            if (!seen) cJSON_AddItemToArray(names, cJSON_CreateString(v->string));
        }
    }
    sb_puts(&sb, "step");
    const cJSON *n;
    cJSON_ArrayForEach(n, names) {
        sb_puts(&sb, ",");
        csv_field(&sb, n->valuestring ? n->valuestring : "");
    }
    sb_puts(&sb, "\n");
    cJSON_ArrayForEach(obj, steps) {
        sb_printf(&sb, "%d", cJSON_GetObjectItemCaseSensitive(obj, "step")->valueint);
        cJSON_ArrayForEach(n, names) {
            sb_puts(&sb, ",");
            v = n->valuestring ? cJSON_GetObjectItemCaseSensitive(obj, n->valuestring) : NULL;
            if (v && cJSON_IsNumber(v)) sb_printf(&sb, "%.17g", v->valuedouble);
        }
        sb_puts(&sb, "\n");
    }
    cJSON_Delete(names);
    return sb_take(&sb, len);
}

static void h_job_metrics(HttpRequest *req, void *user) {
    ApiContext *api = user;
    const char *id = req_job_id(req);
    if (!id) return;
    long long after;
    if (http_query_int(req, "after_step", -1, 2000000000, -1, &after) < 0) return;
    const char *format = http_query(req, "format");
    if (format && strcmp(format, "json") != 0 && strcmp(format, "csv") != 0) {
        http_reply_error(req, 400, "invalid_request", "invalid_parameter", "format",
                         "format must be json or csv");
        return;
    }
    Db *db = req_db(req, api);
    if (!db) return;
    cJSON *job = req_job(req, db, id);
    if (!job) return;
    cJSON_Delete(job);
    cJSON *rows = NULL;
    BsError err;
    bs_error_clear(&err);
    if (db_metrics_list(db, id, (int)after, 0, &rows, &err) < 0) {
        reply_db_error(req, &err);
        return;
    }
    cJSON *steps = metrics_by_step(rows);
    cJSON_Delete(rows);
    if (!steps) {
        oom(req);
        return;
    }
    if (format && strcmp(format, "csv") == 0) {
        size_t len;
        char *csv = metrics_csv(steps, &len);
        cJSON_Delete(steps);
        if (!csv) {
            oom(req);
            return;
        }
        http_reply_text(req, 200, "text/csv; charset=utf-8", csv, len);
        free(csv);
        return;
    }
    cJSON *out = cJSON_CreateObject();
    if (!out) {
        cJSON_Delete(steps);
        oom(req);
        return;
    }
    cJSON_AddStringToObject(out, "object", "list");
    cJSON_AddStringToObject(out, "job_id", id);
    cJSON_AddItemToObject(out, "data", steps);
    http_reply_json(req, 200, out);
}

static void h_job_checkpoints(HttpRequest *req, void *user) {
    ApiContext *api = user;
    const char *id = req_job_id(req);
    if (!id) return;
    Db *db = req_db(req, api);
    if (!db) return;
    cJSON *job = req_job(req, db, id);
    if (!job) return;
    cJSON_Delete(job);
    cJSON *list = NULL;
    BsError err;
    bs_error_clear(&err);
    if (db_checkpoint_list(db, id, &list, &err) < 0) {
        reply_db_error(req, &err);
        return;
    }
    cJSON *out = cJSON_CreateObject();
    if (!out) {
        cJSON_Delete(list);
        oom(req);
        return;
    }
    cJSON_AddStringToObject(out, "object", "list");
    cJSON_AddStringToObject(out, "job_id", id);
    cJSON_AddItemToObject(out, "data", list);
    http_reply_json(req, 200, out);
}

// ---- SSE events ------------------------------------------------------------------

typedef struct {
    ApiContext *api;
    char id[DB_ID_SIZE];
    long long cursor; // last seq sent
    StrBuf out;       // frames not yet handed to the socket
    size_t off;
    int finished; // the terminal status went out (or the job is over)
    struct timespec last_write;
    struct timespec last_fill; // zero before the first read
    int backlog;               // the last read filled a whole batch: read on at once
} Sse;

static void sse_done(void *state) {
    Sse *s = state;
    sb_free(&s->out);
    free(s);
}

static double since(const struct timespec *t) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t->tv_sec) + (double)(now.tv_nsec - t->tv_nsec) * 1e-9;
}

// Appends the events after the cursor as frames; sets *n to how many and
// marks the stream finished after a terminal status event.
static int sse_append_events(Sse *s, Db *db, int *n, BsError *err) {
    cJSON *events = NULL;
    int rc = -1;
    *n = 0;
    if (db_events_after(db, s->id, s->cursor, SSE_BATCH, &events, err) < 0) goto done;
    const cJSON *ev;
    cJSON_ArrayForEach(ev, events) {
        const cJSON *seq = cJSON_GetObjectItemCaseSensitive(ev, "seq");
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(ev, "type");
        const cJSON *data = cJSON_GetObjectItemCaseSensitive(ev, "data");
        if (!cJSON_IsNumber(seq) || !cJSON_IsString(type) || !data) goto done;
        char *text = cJSON_PrintUnformatted(data);
        if (!text) goto done;
        sb_printf(&s->out, "id: %lld\nevent: %s\ndata: %s\n\n", (long long)seq->valuedouble,
                  type->valuestring, text);
        free(text);
        s->cursor = (long long)seq->valuedouble;
        (*n)++;
        if (strcmp(type->valuestring, "status") == 0) {
            const cJSON *st = cJSON_GetObjectItemCaseSensitive(data, "status");
            JobStatus js;
            if (cJSON_IsString(st) && db_status_parse(st->valuestring, &js) == 0 &&
                db_status_is_terminal(js)) {
                s->finished = 1;
                break;
            }
        }
    }
    rc = s->out.oom ? -1 : 0;
done:
    cJSON_Delete(events);
    return rc;
}

// Reads the events after the cursor into frames; marks the stream finished
// after a terminal status or when a terminal job has nothing newer.
//
// Each statement reads its own snapshot, and a job's terminal status and its
// status event commit together. So "no new events" followed by "the job is
// terminal" can straddle that commit: the events are read once more before the
// stream ends, from a snapshot that includes it (the bug behind the load
// test's "99 of 100 clients got all events": a stream closed one event short).
//
// Returns 0, 1 when the database was busy (nothing read; try again later:
// a stream outlives a moment of contention), -1 on an error that ends it.
static int sse_fill(Sse *s) {
    BsError err;
    bs_error_clear(&err);
    clock_gettime(CLOCK_MONOTONIC, &s->last_fill);
    Db *db = dbpool_acquire(s->api->pool, &err);
    if (!db) return strcmp(err.code, "db_busy") == 0 ? 1 : -1;
    int rc = -1, n;
    if (sse_append_events(s, db, &n, &err) < 0) goto done;
    s->backlog = n == SSE_BATCH;
    if (n == 0) {
        DbJob job;
        if (db_job_load(db, s->id, &job, &err) < 0) goto done;
        int terminal = db_status_is_terminal(job.status);
        db_job_free(&job);
        if (terminal) {
            if (sse_append_events(s, db, &n, &err) < 0) goto done;
            if (n == 0) s->finished = 1;
        }
    }
    rc = 0;
done:
    dbpool_release(s->api->pool, db);
    if (rc < 0 && strcmp(err.code, "db_busy") == 0) rc = 1;
    return rc;
}

// Sleeps for what is left of ms since *t (nothing when it has passed).
static void sleep_rest(const struct timespec *t, double ms) {
    double left = ms - since(t) * 1000.0;
    if (left <= 0) return;
    struct timespec d = {(time_t)(left / 1000.0), (long)(fmod(left, 1000.0) * 1e6)};
    nanosleep(&d, NULL);
}

static ssize_t sse_produce(void *state, char *buf, size_t max) {
    Sse *s = state;
    Broker *b = s->api->broker;
    for (;;) {
        if (s->off < s->out.len) {
            size_t n = s->out.len - s->off;
            if (n > max) n = max;
            memcpy(buf, s->out.data + s->off, n);
            s->off += n;
            if (s->off == s->out.len) s->out.len = s->off = 0;
            clock_gettime(CLOCK_MONOTONIC, &s->last_write);
            return (ssize_t)n;
        }
        if (s->finished || broker_is_shutdown(b)) return HTTP_STREAM_END;
        // A job logging every few milliseconds wakes every stream at each
        // event; reading at most every SSE_MIN_FILL_MS batches the events
        // instead of running one query per stream per event, which starved
        // the other requests (and the pool) with 100 streams on 2 cores.
        if (!s->backlog && (s->last_fill.tv_sec || s->last_fill.tv_nsec))
            sleep_rest(&s->last_fill, SSE_MIN_FILL_MS);
        unsigned long long gen = broker_generation(b);
        int filled = sse_fill(s);
        if (filled < 0) return HTTP_STREAM_ERROR;
        if (filled == 1) {
            sleep_rest(&s->last_fill, SSE_BUSY_RETRY_MS);
            continue;
        }
        if (s->out.len || s->finished) continue;
        double left_ms = s->api->sse_heartbeat_ms - since(&s->last_write) * 1000.0;
        if (left_ms <= 0) {
            sb_puts(&s->out, ": ping\n\n");
            continue;
        }
        if (broker_wait(b, gen, (int)ceil(left_ms)) < 0) return HTTP_STREAM_END;
    }
}

static void h_job_events(HttpRequest *req, void *user) {
    ApiContext *api = user;
    const char *id = req_job_id(req);
    if (!id) return;
    const char *last = http_header(req, "Last-Event-ID");
    long long cursor = 0;
    if (last && *last) {
        if (http_parse_int(last, 0, (long long)1 << 53, &cursor) < 0) {
            http_reply_error(req, 400, "invalid_request", "invalid_parameter", "Last-Event-ID",
                             "Last-Event-ID must be an integer in [0, 2^53]");
            return;
        }
    } else if (http_query_int(req, "last_event_id", 0, (long long)1 << 53, 0, &cursor) < 0) {
        return;
    }
    // Not req_db: a stream's request lives as long as the stream, and a lease
    // held that long would pin one pooled connection per subscriber.
    Db *db = dbpool_acquire_or_reply(api->pool, req);
    if (!db) return;
    cJSON *job = req_job(req, db, id);
    dbpool_release(api->pool, db);
    if (!job) return;
    cJSON_Delete(job);
    Sse *s = calloc(1, sizeof(*s));
    if (!s) {
        oom(req);
        return;
    }
    s->api = api;
    snprintf(s->id, sizeof(s->id), "%s", id);
    s->cursor = cursor;
    sb_init(&s->out);
    clock_gettime(CLOCK_MONOTONIC, &s->last_write);
    http_reply_stream(req, 200, "text/event-stream", sse_produce, s, sse_done);
}

// ---- preflight, capabilities, health --------------------------------------------

static void h_preflight(HttpRequest *req, void *user) {
    ApiContext *api = user;
    HttpBodyFormat fmt;
    if (http_body_format(req, &fmt) < 0) return;
    Recipe *r = req_recipe(req, fmt);
    if (!r) return;
    Prepared p;
    if (prepare(req, api, r, &p) < 0) return;
    char *text = preflight_to_json(p.rep);
    cJSON *out = text ? cJSON_Parse(text) : NULL;
    free(text);
    if (!out) {
        oom(req);
        return;
    }
    http_reply_json(req, 200, out);
}

static cJSON *string_array(const char *const *v, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateString(v[i]));
    return a;
}

static void h_capabilities(HttpRequest *req, void *user) {
    ApiContext *api = user;
    static const char *methods_all[] = {"sft", "dpo", "orpo"};
    static const char *loss_types[] = {"sigmoid", "ipo", "hinge", "robust"};
    static const char *data_formats[] = {
        "preference: {prompt, chosen, rejected}",
        "preference: {chosen, rejected} (implicit prompt)",
        "preference: conversational {role, content} lists",
        "preference: {prompt_ids, chosen_ids, rejected_ids}",
        "sft: {prompt, completion}",
        "sft: {text}",
        "sft: {prompt_ids, completion_ids}",
    };
    static const char *file_formats[] = {"jsonl", "jsonl.gz"};
    static const char *model_formats[] = {
        "llama2.c v0 checkpoint (fp32)",
        "Hugging Face folder (config.json + safetensors F32/F16/BF16, Llama/Mistral)",
        "model_init"};
    static const char *tokenizer_formats[] = {
        "llama2.c tokenizer.bin", "Hugging Face tokenizer.json (BPE: byte-level, SentencePiece)",
        "bytes (vocab 259)"};
    static const char *chat_templates[] = {"auto", "chatml", "llama2", "zephyr", "plain"};
    static const char *output_formats[] = {"llama2c", "hf"};
    static const char *recipe_formats[] = {"application/json", "application/yaml"};
    cJSON *o = cJSON_CreateObject();
    if (!o) {
        oom(req);
        return;
    }
    cJSON_AddStringToObject(o, "version", BREWSLM_VERSION);
    cJSON_AddItemToObject(o, "methods", string_array(methods_all, BREWSLM_PREFERENCE ? 3 : 1));
    cJSON_AddBoolToObject(o, "preference", BREWSLM_PREFERENCE);
    cJSON_AddItemToObject(o, "loss_types", string_array(loss_types, 4));
    cJSON_AddItemToObject(o, "data_formats", string_array(data_formats, 7));
    cJSON_AddItemToObject(o, "file_formats", string_array(file_formats, 2));
    cJSON_AddItemToObject(o, "model_formats", string_array(model_formats, 3));
    cJSON_AddItemToObject(o, "tokenizer_formats", string_array(tokenizer_formats, 3));
    cJSON_AddItemToObject(o, "chat_templates", string_array(chat_templates, 5));
    cJSON_AddItemToObject(o, "output_formats", string_array(output_formats, 2));
    cJSON_AddItemToObject(o, "recipe_formats", string_array(recipe_formats, 2));
    const char *blas = openblas_get_config();
    cJSON_AddStringToObject(o, "blas", blas ? blas : "");
    // The kernel set in use: blasenv.h explains why it is not always detected.
    cJSON_AddStringToObject(o, "blas_core", blasenv_core_name());
    cJSON *th = cJSON_AddObjectToObject(o, "threads");
    if (th) {
        cJSON_AddNumberToObject(th, "cores", api->cores);
        cJSON_AddNumberToObject(th, "max_concurrent_jobs", api->max_concurrent_jobs);
        cJSON_AddNumberToObject(th, "blas_threads_per_job", api->blas_threads);
    }
    http_reply_json(req, 200, o);
}

static void h_healthz(HttpRequest *req, void *user) {
    (void)user;
    static const char ok[] = "{\"status\":\"ok\"}";
    http_reply_text(req, 200, "application/json", ok, sizeof(ok) - 1);
}

static void h_readyz(HttpRequest *req, void *user) {
    ApiContext *api = user;
    if (api->ctl.accepting && !api->ctl.accepting(api->ctl.user)) {
        http_reply_error(req, 503, "unavailable", "shutting_down", NULL,
                         "the daemon is shutting down");
        return;
    }
    BsError err;
    bs_error_clear(&err);
    Db *db = dbpool_acquire(api->pool, &err);
    int version = 0;
    int ok = db && db_schema_version(db, &version, &err) == 0;
    dbpool_release(api->pool, db);
    if (!ok) {
        http_reply_error(req, 503, "unavailable", "database_unavailable", NULL,
                         "database unavailable: %s", err.message);
        return;
    }
    char body[96];
    int n = snprintf(body, sizeof(body), "{\"status\":\"ready\",\"schema_version\":%d}", version);
    http_reply_text(req, 200, "application/json", body, (size_t)n);
}

static void h_prometheus(HttpRequest *req, void *user) {
    ApiContext *api = user;
    Db *db = req_db(req, api);
    if (!db) return;
    long long counts[JOB_STATUS_COUNT];
    BsError err;
    bs_error_clear(&err);
    if (db_job_counts_by_status(db, counts, &err) < 0) {
        reply_db_error(req, &err);
        return;
    }
    const char *names[JOB_STATUS_COUNT];
    for (int s = 0; s < JOB_STATUS_COUNT; s++)
        names[s] = db_status_name((JobStatus)s);
    StrBuf sb;
    sb_init(&sb);
    promstats_render_gauge(&sb, "brewslm_jobs", "Jobs in the database by status.", "status", names,
                           counts, JOB_STATUS_COUNT);
    promstats_render(api->stats, &sb);
    size_t len;
    char *text = sb_take(&sb, &len);
    if (!text) {
        oom(req);
        return;
    }
    http_reply_text(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
    free(text);
}

// The dashboard's embedded files (api/dashboard): revalidated by ETag, so a
// cached copy costs a 304 and a new daemon's page is picked up at once.
static void h_static(HttpRequest *req, void *user) {
    (void)user;
    const DashboardAsset *a = dashboard_asset_lookup(http_path(req));
    if (!a) {
        http_reply_error(req, 404, "not_found", "route_not_found", NULL, "no route for %s",
                         http_path(req));
        return;
    }
    http_add_header(req, "ETag", a->etag);
    http_add_header(req, "Cache-Control", a->cache_control);
    http_add_header(req, "X-Content-Type-Options", "nosniff");
    if (dashboard_etag_matches(a, http_header(req, "If-None-Match"))) {
        http_reply_text(req, 304, a->content_type, "", 0);
        return;
    }
    http_reply_text(req, 200, a->content_type, (const char *)a->data, a->size);
}

// ---- the table ---------------------------------------------------------------

static const HttpRoute API_ROUTES[] = {
    {"/v1/jobs", HTTP_GET | HTTP_POST, 0, h_jobs},
    {"/v1/jobs/{id}", HTTP_GET, 0, h_job_get},
    {"/v1/jobs/{id}/cancel", HTTP_POST, 0, h_job_cancel},
    {"/v1/jobs/{id}/metrics", HTTP_GET, 0, h_job_metrics},
    {"/v1/jobs/{id}/events", HTTP_GET, 0, h_job_events},
    {"/v1/jobs/{id}/checkpoints", HTTP_GET, 0, h_job_checkpoints},
    {"/v1/jobs/{id}/generate", HTTP_POST, 0, api_job_generate},
    {"/v1/preflight", HTTP_POST, 0, h_preflight},
    {"/v1/capabilities", HTTP_GET, 0, h_capabilities},
    {"/healthz", HTTP_GET, 1, h_healthz},
    {"/readyz", HTTP_GET, 0, h_readyz},
    {"/metrics", HTTP_GET, 0, h_prometheus},
};

HttpRoute *api_routes_create(void) {
    size_t n_api = sizeof(API_ROUTES) / sizeof(API_ROUTES[0]);
    size_t n_static = (size_t)dashboard_assets_count + 1; // + "/" (index.html)
    HttpRoute *t = calloc(n_api + n_static + 1, sizeof(*t));
    if (!t) return NULL;
    memcpy(t, API_ROUTES, sizeof(API_ROUTES));
    t[n_api] = (HttpRoute){"/", HTTP_GET, 1, h_static};
    for (size_t i = 1; i < n_static; i++)
        t[n_api + i] = (HttpRoute){dashboard_assets[i - 1].path, HTTP_GET, 1, h_static};
    return t;
}
