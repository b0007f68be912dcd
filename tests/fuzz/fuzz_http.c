// fuzz_http.c — libFuzzer target for brewslmd's HTTP API: the route table of
// api_routes_create() run through http_handle_request, the same dispatch the
// daemon's libmicrohttpd server uses (route match, bearer auth, body cap,
// 404 / 405, the handler, the 500 for a handler that did not reply).
//
// The input is a small HTTP request:
//     METHOD SP URL (path?query) LF
//     Name: value LF            (any number of header lines)
//     LF
//     body                      (any bytes, to the end of the input)
// Carriage returns before a LF are dropped. A request carrying an
// Authorization header goes to a server configured with the bearer token
// "fuzz-token"; any other to one without a token.
//
// State: a temporary data_root with a tiny preference file, an SFT file and a
// llama2.c checkpoint (so POST /v1/jobs and /v1/preflight reach preflight and
// accept), and a SQLite database holding fixture jobs with fixed ids:
//     job_00000000000000a1  succeeded, metrics, events, checkpoints, a final model
//     job_00000000000000b2  queued (cancellable; its event stream never ends)
//     job_00000000000000c3  running (a cancel asks the "worker")
//     job_00000000000000d4  failed
// Before every input that follows a write, the database is restored from a
// snapshot taken after the fixtures, so every input sees the same state. The
// scheduler callbacks only count; event streams are read up to STREAM_LIMIT
// bytes (the heartbeat is 0 ms, so an idle stream pings instead of waiting).
//
// Properties: every reply has a status in 100..599 and is not a 5xx (no input
// may make the API fail internally; 503/507 need a busy or full disk); an
// application/json body is valid UTF-8 and parses; an error status with JSON
// carries error.type and error.message strings; 401 has WWW-Authenticate,
// 405 an Allow header, 201 a Location; a stream is a 200 text/event-stream.
// LeakSanitizer checks that no request leaks.
#include <cjson/cJSON.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api.h"
#include "ckpt.h"
#include "db.h"
#include "fuzz_common.h"
#include "jobutil.h"
#include "jsoncheck.h"
#include "model.h"
#include "recipe.h"

#define TOKEN "fuzz-token"
#define STREAM_LIMIT 1024
#define MAX_BODY 3000
#define MAX_HEADERS 32
#define N_FIXTURES 4

static char root_dir[PATH_MAX], data_root[PATH_MAX], state_dir[PATH_MAX], db_path[PATH_MAX];
static ApiContext api;
static HttpRoute *routes;
static HttpConfig cfg_open, cfg_token;
static sqlite3 *raw;      // the harness's own connection: snapshot and restore
static sqlite3 *snapshot; // in memory, the database right after the fixtures
static long long seen_version;
static int n_wakes, n_cancels;

static const char *const FIXTURE_IDS[N_FIXTURES] = {
    "job_00000000000000a1",
    "job_00000000000000b2",
    "job_00000000000000c3",
    "job_00000000000000d4",
};

static void ctl_wake(void *user) {
    (void)user;
    n_wakes++;
}

static void ctl_cancel(void *user, const char *id) {
    (void)user;
    FUZZ_CHECK(db_job_id_valid(id), "cancel_running got id '%s'", id);
    n_cancels++;
}

static int ctl_accepting(void *user) {
    (void)user;
    return 1;
}

// ---- fixtures ----------------------------------------------------------------

static void write_file(const char *dir, const char *name, const char *text) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    FUZZ_CHECK(f != NULL, "cannot write %s", path);
    fputs(text, f);
    FUZZ_CHECK(fclose(f) == 0, "cannot close %s", path);
}

static void make_dir(const char *path) {
    FUZZ_CHECK(mkdir(path, 0700) == 0 || errno == EEXIST, "mkdir %s: errno %d", path, errno);
}

// A llama2.c checkpoint of cfg with deterministic small weights.
static void write_model(const char *path, const ModelConfig *c) {
    size_t n = model_param_count(c);
    float *p = malloc(n * sizeof *p);
    FUZZ_CHECK(p != NULL, "oom");
    for (size_t i = 0; i < n; i++)
        p[i] = (float)((int)((i * 7919u) % 2001u) - 1000) / 4000.0f;
    BsError err = {0};
    FUZZ_CHECK(ckpt_write_llama2c(path, c, p, &err) == 0, "write %s: %s", path, err.message);
    free(p);
}

static void raw_exec(const char *sql) {
    char *msg = NULL;
    int rc = sqlite3_exec(raw, sql, NULL, NULL, &msg);
    FUZZ_CHECK(rc == SQLITE_OK, "%s: %s", sql, msg ? msg : "?");
}

// Inserts a job from a YAML recipe and renames it to the fixed id (the
// storage layer draws random ids; the seeds need known ones).
static void insert_job(Db *db, const char *fixed_id, const char *yaml) {
    Recipe r;
    BsError err = {0};
    FUZZ_CHECK(recipe_parse(yaml, strlen(yaml), RECIPE_YAML, &r, &err) == 0, "fixture recipe: %s",
               err.message);
    char *canonical = recipe_to_json(&r);
    FUZZ_CHECK(canonical != NULL, "oom");
    DbJobNew j = {
        .method = recipe_method_name(r.method),
        .recipe_json = canonical,
        .recipe_text = yaml,
        .status = JOB_QUEUED,
        .total_steps = 4,
    };
    char id[DB_ID_SIZE];
    FUZZ_CHECK(db_job_insert(db, &j, id, NULL, &err) == 0, "insert: %s", err.message);
    free(canonical);
    recipe_free(&r);
    char sql[256];
    snprintf(sql, sizeof sql,
             "UPDATE jobs SET id = '%s' WHERE id = '%s'; UPDATE events SET job_id = '%s' WHERE "
             "job_id = '%s';",
             fixed_id, id, fixed_id, id);
    raw_exec(sql);
}

static const char SFT_RECIPE[] = "method: sft\n"
                                 "model_init: {dim: 8, n_layers: 1, n_heads: 2, n_kv_heads: 2, "
                                 "hidden_dim: 16, max_seq_len: 32}\n"
                                 "train_file: sft.jsonl\n"
                                 "max_steps: 4\n"
                                 "per_device_train_batch_size: 2\n"
                                 "max_length: 32\n";
static const char DPO_RECIPE[] = "method: dpo\n"
                                 "beta: 0.1\n"
                                 "model: tiny.bin\n"
                                 "train_file: prefs.jsonl\n"
                                 "max_steps: 4\n"
                                 "per_device_train_batch_size: 2\n"
                                 "max_length: 32\n"
                                 "max_prompt_length: 16\n";

static void make_fixtures(void) {
    BsError err = {0};
    Db *db = db_open(db_path, 0, &err);
    FUZZ_CHECK(db != NULL, "db_open: %s", err.message);
    FUZZ_CHECK(sqlite3_open(db_path, &raw) == SQLITE_OK, "sqlite3_open %s", db_path);
    raw_exec("PRAGMA busy_timeout = 5000; PRAGMA synchronous = OFF;");

    insert_job(db, FIXTURE_IDS[0], SFT_RECIPE);
    insert_job(db, FIXTURE_IDS[1], DPO_RECIPE);
    insert_job(db, FIXTURE_IDS[2], DPO_RECIPE);
    insert_job(db, FIXTURE_IDS[3], SFT_RECIPE);

    // a1: ran to the end with metrics, a log line, checkpoints and a final model.
    const char *a = FIXTURE_IDS[0];
    char out[PATH_MAX + 64], path[PATH_MAX + 128];
    snprintf(out, sizeof out, "%s/jobs", state_dir);
    make_dir(out);
    snprintf(out, sizeof out, "%s/jobs/%s", state_dir, a);
    make_dir(out);
    snprintf(path, sizeof path, "%s/final", out);
    make_dir(path);
    ModelConfig mc = {8, 16, 1, 2, 2, 259, 32, 1, 1e-5f, 10000.0f};
    snprintf(path, sizeof path, "%s/final/model.bin", out);
    write_model(path, &mc);
    FUZZ_CHECK(db_job_set_output_dir(db, a, out, &err) == 0, "%s", err.message);
    FUZZ_CHECK(db_job_set_status(db, a, JOB_RUNNING, NULL, NULL, &err) == 0, "%s", err.message);
    for (int step = 1; step <= 4; step++) {
        MetricRow rows[2] = {{.step = step, .n = 3}, {.step = step, .is_eval = 1, .n = 1}};
        rows[0].name[0] = "loss";
        rows[0].value[0] = 2.0 / step;
        rows[0].name[1] = "learning_rate";
        rows[0].value[1] = 1e-3;
        rows[0].name[2] = "grad,norm \"odd\"";
        rows[0].value[2] = step == 3 ? 1.0 / 0.0 : 0.5;
        rows[1].name[0] = "eval_loss";
        rows[1].value[0] = 2.5 / step;
        FUZZ_CHECK(db_metrics_append(db, a, rows, step % 2 == 0 ? 2 : 1, step / 4.0, NULL, &err) ==
                       0,
                   "%s", err.message);
        if (step % 2 == 0) {
            snprintf(path, sizeof path, "%s/checkpoint-%d", out, step);
            FUZZ_CHECK(db_checkpoint_add(db, a, step, path, 1234, &err) == 0, "%s", err.message);
        }
    }
    FUZZ_CHECK(db_event_append(db, a, "log", "{\"message\":\"saved \\u00e9\"}", NULL, &err) == 0,
               "%s", err.message);
    FUZZ_CHECK(db_job_set_status(db, a, JOB_SUCCEEDED, "{\"final_loss\":0.5}", NULL, &err) == 0,
               "%s", err.message);
    // c3: running; d4: failed.
    FUZZ_CHECK(db_job_set_status(db, FIXTURE_IDS[2], JOB_RUNNING, NULL, NULL, &err) == 0, "%s",
               err.message);
    FUZZ_CHECK(db_job_set_status(db, FIXTURE_IDS[3], JOB_RUNNING, NULL, NULL, &err) == 0, "%s",
               err.message);
    FUZZ_CHECK(db_job_set_status(db, FIXTURE_IDS[3], JOB_FAILED,
                                 "{\"code\":\"nan_loss\",\"message\":\"loss is NaN\"}", NULL,
                                 &err) == 0,
               "%s", err.message);
    db_close(db);

    raw_exec("PRAGMA wal_checkpoint(TRUNCATE);");
    FUZZ_CHECK(sqlite3_open(":memory:", &snapshot) == SQLITE_OK, "sqlite3_open :memory:");
    sqlite3_backup *b = sqlite3_backup_init(snapshot, "main", raw, "main");
    FUZZ_CHECK(b && sqlite3_backup_step(b, -1) == SQLITE_DONE, "snapshot: %s",
               sqlite3_errmsg(snapshot));
    sqlite3_backup_finish(b);
}

static long long data_version(void) {
    sqlite3_stmt *st = NULL;
    FUZZ_CHECK(sqlite3_prepare_v2(raw, "PRAGMA data_version", -1, &st, NULL) == SQLITE_OK, "%s",
               sqlite3_errmsg(raw));
    FUZZ_CHECK(sqlite3_step(st) == SQLITE_ROW, "%s", sqlite3_errmsg(raw));
    long long v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

// Puts the fixture database back when the previous input wrote to it.
static void restore_db(void) {
    long long v = data_version();
    if (v == seen_version) return;
    sqlite3_backup *b = sqlite3_backup_init(raw, "main", snapshot, "main");
    FUZZ_CHECK(b != NULL, "restore: %s", sqlite3_errmsg(raw));
    int rc = sqlite3_backup_step(b, -1);
    sqlite3_backup_finish(b);
    FUZZ_CHECK(rc == SQLITE_DONE, "restore: %d %s", rc, sqlite3_errmsg(raw));
    seen_version = data_version();
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    // tmpfs when available: every accepted job is an fsync'd SQLite commit.
    snprintf(root_dir, sizeof root_dir, "%s", fuzz_tmp_dir("fuzz_http"));
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s/data", root_dir);
    make_dir(buf);
    FUZZ_CHECK(realpath(buf, data_root) != NULL, "realpath %s", buf);
    snprintf(buf, sizeof buf, "%s/state", root_dir);
    make_dir(buf);
    FUZZ_CHECK(realpath(buf, state_dir) != NULL, "realpath %s", buf);
    snprintf(db_path, sizeof db_path, "%s/brewslm.db", state_dir);

    write_file(data_root, "prefs.jsonl",
               "{\"prompt\": \"say hi:\", \"chosen\": \" hi.\", \"rejected\": \" no!\"}\n"
               "{\"prompt\": \"say yes:\", \"chosen\": \" yes.\", \"rejected\": \" hi!\"}\n"
               "{\"prompt\": [{\"role\": \"user\", \"content\": \"say a:\"}], \"chosen\": "
               "[{\"role\": \"assistant\", \"content\": \" a.\"}], \"rejected\": [{\"role\": "
               "\"assistant\", \"content\": \" b!\"}]}\n"
               "{\"prompt\": \"say no:\", \"chosen\": \" no.\", \"rejected\": \" yes!\"}\n");
    write_file(data_root, "sft.jsonl",
               "{\"prompt\": \"say hi:\", \"completion\": \" hi.\"}\n"
               "{\"text\": \"plain text row\"}\n"
               "{\"prompt\": \"say no:\", \"completion\": \" no.\"}\n");
    write_file(data_root, "ids.jsonl",
               "{\"prompt_ids\": [1, 2, 3], \"chosen_ids\": [4, 5], \"rejected_ids\": [6]}\n"
               "{\"prompt_ids\": [7], \"chosen_ids\": [8], \"rejected_ids\": [9, 10]}\n");
    ModelConfig tiny = {8, 16, 1, 2, 2, 259, 32, 1, 1e-5f, 10000.0f};
    snprintf(buf, sizeof buf, "%s/tiny.bin", data_root);
    write_model(buf, &tiny);
    make_fixtures();
    seen_version = data_version();

    BsError err = {0};
    api = (ApiContext){
        .data_root = data_root,
        .state_dir = state_dir,
        .memory_limit_bytes = 256ll << 20,
        .max_concurrent_jobs = 1,
        .blas_threads = 1,
        .cores = 2,
        .sse_heartbeat_ms = 0,
        .pool = dbpool_create(db_path, 2, 1000, 1000, &err),
        .broker = broker_create(),
        .stats = promstats_create(),
        .ctl = {NULL, ctl_wake, ctl_cancel, ctl_accepting},
    };
    FUZZ_CHECK(api.pool && api.broker && api.stats, "context: %s", err.message);
    routes = api_routes_create();
    FUZZ_CHECK(routes != NULL, "oom");
    cfg_open = (HttpConfig){
        .host = "127.0.0.1",
        .max_body_bytes = MAX_BODY,
        .routes = routes,
        .user = &api,
        .stats = api.stats,
    };
    cfg_token = cfg_open;
    cfg_token.token = TOKEN;
    return 0;
}

// ---- the input -----------------------------------------------------------------

typedef struct {
    char *buf; // the input with NULs at the cut points
    const char *method, *url;
    const char *headers[2 * MAX_HEADERS + 2];
    int has_auth;
    const char *body;
    size_t body_len;
} Request;

// Cuts the line starting at *p (LF or the end ends it; a CR before the LF is
// dropped) and advances *p past it. NULL at the end of the input.
static char *next_line(char **p, char *end) {
    if (*p >= end) return NULL;
    char *line = *p, *nl = memchr(line, '\n', (size_t)(end - line));
    char *stop = nl ? nl : end;
    *p = nl ? nl + 1 : end;
    if (stop > line && stop[-1] == '\r') stop--;
    *stop = '\0';
    return line;
}

static void parse_request(Request *r, const uint8_t *data, size_t size) {
    memset(r, 0, sizeof *r);
    r->buf = malloc(size + 1);
    FUZZ_CHECK(r->buf != NULL, "oom");
    memcpy(r->buf, data, size);
    r->buf[size] = '\0';
    char *p = r->buf, *end = r->buf + size;
    char *line = next_line(&p, end);
    if (!line) line = (char *)"";
    char *sp = strchr(line, ' ');
    if (sp) *sp++ = '\0';
    r->method = line;
    r->url = sp ? sp : "/";
    if (sp && (sp = strchr(sp, ' '))) *sp = '\0'; // drops " HTTP/1.1"
    int n = 0;
    while ((line = next_line(&p, end)) && line[0]) {
        char *colon = strchr(line, ':');
        if (!colon || n == MAX_HEADERS) continue;
        *colon++ = '\0';
        while (*colon == ' ' || *colon == '\t')
            colon++;
        r->headers[2 * n] = line;
        r->headers[2 * n + 1] = colon;
        if (strcasecmp(line, "Authorization") == 0) r->has_auth = 1;
        n++;
    }
    r->headers[2 * n] = NULL;
    r->body = p;
    r->body_len = (size_t)(end - p);
}

// ---- properties ------------------------------------------------------------------

static int content_type_is(const char *ct, const char *base) {
    size_t n = strlen(base);
    return ct && strncasecmp(ct, base, n) == 0 && (ct[n] == '\0' || ct[n] == ';');
}

static void check_reply(const Request *q, const HttpCapturedReply *r) {
    int s = r->status;
    FUZZ_CHECK(s >= 100 && s <= 599, "status %d", s);
    FUZZ_CHECK(!r->dropped, "the connection was dropped (status %d)", s);
    FUZZ_CHECK(r->body != NULL, "no body");
    FUZZ_CHECK(strlen(r->body) <= r->body_len, "body length");
    if (content_type_is(r->content_type, "application/json")) {
        FUZZ_CHECK(utf8_valid(r->body, r->body_len), "JSON reply is not UTF-8: %s", r->body);
        char why[128];
        FUZZ_CHECK(json_check(r->body, r->body_len, 256, NULL, why, sizeof why) == 0,
                   "JSON reply is not JSON (%s): %s", why, r->body);
        cJSON *j = cJSON_ParseWithLength(r->body, r->body_len);
        FUZZ_CHECK(j != NULL, "JSON reply does not parse: %s", r->body);
        if (s >= 400) {
            const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
            FUZZ_CHECK(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(e, "type")) &&
                           cJSON_IsString(cJSON_GetObjectItemCaseSensitive(e, "message")),
                       "%d without error.type and error.message: %s", s, r->body);
        }
        cJSON_Delete(j);
    }
    // No request may make the API fail internally. 503 / 507 need a busy
    // pool or a full disk, neither of which the fuzzer can cause.
    FUZZ_CHECK(s < 500, "%s %s: %d %s", q->method, q->url, s, r->body);
    if (s == 401) {
        const char *w = http_captured_header(r, "WWW-Authenticate");
        FUZZ_CHECK(w && strcmp(w, "Bearer") == 0, "401 without WWW-Authenticate: Bearer");
        FUZZ_CHECK(q->has_auth, "401 from the server without a token");
    }
    if (s == 405) {
        const char *a = http_captured_header(r, "Allow");
        FUZZ_CHECK(a && a[0], "405 without Allow");
    }
    if (s == 201) {
        const char *l = http_captured_header(r, "Location");
        FUZZ_CHECK(l && strncmp(l, "/v1/jobs/job_", 13) == 0 && db_job_id_valid(l + 9),
                   "201 with Location %s", l ? l : "(none)");
    }
    if (r->streamed) {
        FUZZ_CHECK(s == 200 && content_type_is(r->content_type, "text/event-stream"),
                   "stream with %d %s", s, r->content_type ? r->content_type : "");
        FUZZ_CHECK(r->body_len <= STREAM_LIMIT, "stream of %zu bytes", r->body_len);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    restore_db();
    Request q;
    parse_request(&q, data, size);
    HttpCapturedReply r;
    BsError err = {0};
    int rc = http_handle_request(q.has_auth ? &cfg_token : &cfg_open, q.method, q.url, q.headers,
                                 q.body, q.body_len, STREAM_LIMIT, &r, &err);
    FUZZ_CHECK(rc == 0, "http_handle_request: %s", err.message);
    FUZZ_DEBUG("%s %s -> %d %s%s %.300s", q.method, q.url, r.status,
               r.content_type ? r.content_type : "-", r.truncated ? " (truncated)" : "",
               r.body ? r.body : "");
    check_reply(&q, &r);
    http_captured_reply_free(&r);
    free(q.buf);
    return 0;
}
