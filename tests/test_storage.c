// test_storage.c — storage/db.c against a real SQLite file in a temp dir:
// migrations, refusal of a newer schema, jobs (insert/get/list/idempotency/
// transitions), metrics upsert, events, requeue, checkpoints, two writer
// threads with separate connections, integrity_check.
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "migrate.h"
#include "test_util.h"

static char tmpdir[] = "/tmp/bs_storage_XXXXXX";

static void path_in_tmp(char *out, size_t cap, const char *name) {
    snprintf(out, cap, "%s/%s", tmpdir, name);
}

// One integer from a query on a separate raw connection (independent of db.c).
static long long raw_int(const char *path, const char *sql) {
    sqlite3 *c = NULL;
    long long v = -1;
    if (sqlite3_open(path, &c) == SQLITE_OK) {
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(c, sql, -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
            v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    sqlite3_close(c);
    return v;
}

static char *raw_text(const char *path, const char *sql) {
    sqlite3 *c = NULL;
    char *v = NULL;
    if (sqlite3_open(path, &c) == SQLITE_OK) {
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(c, sql, -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
            v = strdup((const char *)sqlite3_column_text(st, 0));
        sqlite3_finalize(st);
    }
    sqlite3_close(c);
    return v;
}

static int insert_job(Db *db, const char *text, const char *key, char id[DB_ID_SIZE], int *existed,
                      BsError *err) {
    DbJobNew j = {0};
    j.method = "dpo";
    j.recipe_json = "{\"method\":\"dpo\",\"beta\":0.1}";
    j.recipe_text = text;
    j.idempotency_key = key;
    j.status = JOB_QUEUED;
    j.total_steps = 30;
    return db_job_insert(db, &j, id, existed, err);
}

static const char *jstr(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double jnum(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : -12345.0;
}

static void test_migrations(void) {
    char path[256];
    path_in_tmp(path, sizeof path, "mig.db");
    BsError err = {0};
    int highest = migrate_embedded[migrate_embedded_count - 1].version;
    CHECK(migrate_embedded_count >= 2);
    Db *db = db_open(path, 0, &err);
    CHECK_MSG(db != NULL, "%s: %s", err.code, err.message);
    if (!db) return;
    int v = -1;
    CHECK(db_schema_version(db, &v, &err) == 0);
    CHECK_INT_EQ(v, highest);
    db_close(db);
    CHECK_INT_EQ(raw_int(path, "SELECT COUNT(*) FROM schema_migrations"), migrate_embedded_count);
    CHECK_INT_EQ(raw_int(path, "SELECT COUNT(*) FROM sqlite_schema WHERE type='table' AND "
                               "name IN ('jobs','metrics','events','checkpoints')"),
                 4);
    char *applied = raw_text(path, "SELECT applied_at FROM schema_migrations WHERE version=1");
    CHECK(applied != NULL && strlen(applied) == 24 && applied[23] == 'Z');
    char *mode = raw_text(path, "PRAGMA journal_mode");
    CHECK(mode && strcmp(mode, "wal") == 0);
    free(mode);

    // Second open: nothing re-applied, the recorded rows are untouched.
    usleep(5000);
    db = db_open(path, 0, &err);
    CHECK(db != NULL);
    db_close(db);
    CHECK_INT_EQ(raw_int(path, "SELECT COUNT(*) FROM schema_migrations"), migrate_embedded_count);
    char *applied2 = raw_text(path, "SELECT applied_at FROM schema_migrations WHERE version=1");
    CHECK(applied && applied2 && strcmp(applied, applied2) == 0);
    free(applied);
    free(applied2);

    // migrate_apply directly: a second run applies 0.
    sqlite3 *c = NULL;
    CHECK(sqlite3_open(path, &c) == SQLITE_OK);
    int n_applied = -1;
    CHECK(migrate_apply(c, migrate_embedded, migrate_embedded_count, &n_applied, &err) == 0);
    CHECK_INT_EQ(n_applied, 0);
    // A failing migration rolls back as a whole: its table must not exist.
    Migration extra[3] = {migrate_embedded[0],
                          migrate_embedded[1],
                          {highest + 1, "broken", "CREATE TABLE half (x); SELECT nosuchfn();"}};
    int n_extra = migrate_embedded_count == 2 ? 3 : 0;
    if (n_extra) {
        CHECK(migrate_apply(c, extra, n_extra, &n_applied, &err) == -1);
        CHECK(strcmp(err.code, "db") == 0);
        sqlite3_close(c);
        CHECK_INT_EQ(raw_int(path, "SELECT COUNT(*) FROM sqlite_schema WHERE name='half'"), 0);
        CHECK_INT_EQ(raw_int(path, "SELECT MAX(version) FROM schema_migrations"), highest);
    } else {
        sqlite3_close(c);
    }

    // A file from a newer brewslmd is refused with the documented message.
    char newer[256];
    path_in_tmp(newer, sizeof newer, "newer.db");
    db = db_open(newer, 0, &err);
    CHECK(db != NULL);
    db_close(db);
    CHECK(sqlite3_open(newer, &c) == SQLITE_OK);
    CHECK(sqlite3_exec(c,
                       "INSERT INTO schema_migrations VALUES (999, 'future', "
                       "'2030-01-01T00:00:00.000Z')",
                       NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(c);
    bs_error_clear(&err);
    db = db_open(newer, 0, &err);
    CHECK(db == NULL);
    db_close(db);
    CHECK(strcmp(err.code, "schema_too_new") == 0);
    char want[256];
    snprintf(want, sizeof want,
             "database schema version 999 is newer than this brewslmd supports (%d); "
             "upgrade brewslmd",
             highest);
    CHECK_MSG(strcmp(err.message, want) == 0, "got \"%s\"", err.message);
}

// The whole transition table against the documented one.
static void test_transition_table(void) {
    // rows: from, columns: to (queued running succeeded failed cancelled blocked)
    static const int allowed[JOB_STATUS_COUNT][JOB_STATUS_COUNT] = {
        {0, 1, 0, 1, 1, 1}, // queued
        {1, 0, 1, 1, 1, 0}, // running
        {0, 0, 0, 0, 0, 0}, // succeeded
        {0, 0, 0, 0, 0, 0}, // failed
        {0, 0, 0, 0, 0, 0}, // cancelled
        {0, 0, 0, 0, 0, 0}, // blocked
    };
    for (int f = 0; f < JOB_STATUS_COUNT; f++)
        for (int t = 0; t < JOB_STATUS_COUNT; t++)
            CHECK_MSG(db_status_transition_ok((JobStatus)f, (JobStatus)t) == allowed[f][t],
                      "%s -> %s", db_status_name((JobStatus)f), db_status_name((JobStatus)t));
    JobStatus s;
    CHECK(db_status_parse("cancelled", &s) == 0 && s == JOB_CANCELLED);
    CHECK(db_status_parse("done", &s) == -1);
    CHECK(db_job_id_valid("job_0123456789abcdef"));
    CHECK(!db_job_id_valid("job_0123456789ABCDEF"));
    CHECK(!db_job_id_valid("job_0123456789abcde"));
    CHECK(!db_job_id_valid("../etc/passwd"));
}

static void test_jobs(Db *db, const char *path) {
    BsError err = {0};
    char ids[5][DB_ID_SIZE];
    for (int i = 0; i < 5; i++) {
        char text[64];
        snprintf(text, sizeof text, "method: dpo\n# job %d\n", i);
        CHECK_MSG(insert_job(db, text, NULL, ids[i], NULL, &err) == 0, "%s", err.message);
        CHECK(db_job_id_valid(ids[i]));
    }
    CHECK(strcmp(ids[0], ids[1]) != 0);

    // The request hash is SHA-256 of the body: check a FIPS 180-2 vector.
    char id_abc[DB_ID_SIZE];
    CHECK(insert_job(db, "abc", NULL, id_abc, NULL, &err) == 0);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT request_hash FROM jobs WHERE id='%s'", id_abc);
    char *h = raw_text(path, sql);
    CHECK(h && strcmp(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0);
    free(h);
    char long_text[200];
    memset(long_text, 'a', 112); // two-block padding path (> 55 bytes tail)
    long_text[112] = '\0';
    char id_long[DB_ID_SIZE];
    CHECK(insert_job(db, long_text, NULL, id_long, NULL, &err) == 0);
    snprintf(sql, sizeof sql, "SELECT request_hash FROM jobs WHERE id='%s'", id_long);
    h = raw_text(path, sql);
    // python3 -c "import hashlib;print(hashlib.sha256(b'a'*112).hexdigest())"
    CHECK(h && strcmp(h, "f54353008a2553262ecdc4a34749563ba0950e8b0fc8652780b0a614b99683c1") == 0);
    free(h);

    // get: shape and values.
    cJSON *j = NULL;
    CHECK(db_job_get(db, ids[2], &j, &err) == 0);
    if (j) {
        CHECK(strcmp(jstr(j, "id"), ids[2]) == 0);
        CHECK(strcmp(jstr(j, "status"), "queued") == 0);
        CHECK(strcmp(jstr(j, "method"), "dpo") == 0);
        const cJSON *rec = cJSON_GetObjectItemCaseSensitive(j, "recipe");
        CHECK(cJSON_IsObject(rec) && jnum(rec, "beta") == 0.1);
        const char *ca = jstr(j, "created_at");
        CHECK(ca && strlen(ca) == 24 && ca[10] == 'T' && ca[23] == 'Z');
        CHECK(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "started_at")));
        const cJSON *prog = cJSON_GetObjectItemCaseSensitive(j, "progress");
        CHECK(jnum(prog, "step") == 0 && jnum(prog, "total_steps") == 30);
        CHECK(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(j, "blockers")));
        CHECK(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "latest_metrics")));
    }
    cJSON_Delete(j);
    CHECK(db_job_get(db, "job_0000000000000000", &j, &err) == -1);
    CHECK(strcmp(err.code, "not_found") == 0 && j == NULL);

    // list: newest first, pages of 2 over 7 jobs (ids[0..4], abc, long).
    const char *order[7] = {id_long, id_abc, ids[4], ids[3], ids[2], ids[1], ids[0]};
    char after[DB_ID_SIZE] = "";
    int seen = 0, pages = 0, has_more = 1;
    while (has_more && pages < 10) {
        cJSON *arr = NULL;
        CHECK(db_job_list(db, NULL, 2, after[0] ? after : NULL, &arr, &has_more, &err) == 0);
        pages++;
        const cJSON *it;
        cJSON_ArrayForEach(it, arr) {
            const char *id = jstr(it, "id");
            CHECK(id && seen < 7 && strcmp(id, order[seen]) == 0);
            snprintf(after, sizeof after, "%s", id ? id : "");
            seen++;
        }
        CHECK_INT_EQ(has_more, seen < 7);
        cJSON_Delete(arr);
    }
    CHECK_INT_EQ(seen, 7);
    CHECK_INT_EQ(pages, 4);
    cJSON *arr = NULL;
    CHECK(db_job_list(db, NULL, 2, "job_ffffffffffffffff", &arr, &has_more, &err) == -1);
    CHECK(strcmp(err.code, "not_found") == 0 && strcmp(err.param, "after") == 0);

    // Idempotency: same key + same body -> same job; different body -> conflict.
    char k1[DB_ID_SIZE], k2[DB_ID_SIZE];
    int existed = -1;
    CHECK(insert_job(db, "body-A", "key-1", k1, &existed, &err) == 0);
    CHECK_INT_EQ(existed, 0);
    CHECK(insert_job(db, "body-A", "key-1", k2, &existed, &err) == 0);
    CHECK_INT_EQ(existed, 1);
    CHECK(strcmp(k1, k2) == 0);
    CHECK(insert_job(db, "body-B", "key-1", k2, &existed, &err) == -1);
    CHECK(strcmp(err.code, "idempotency_conflict") == 0);
    CHECK(strcmp(k1, k2) == 0);
    CHECK_INT_EQ(raw_int(path, "SELECT COUNT(*) FROM jobs WHERE idempotency_key='key-1'"), 1);

    // Transitions.
    CHECK(db_job_set_status(db, ids[0], JOB_SUCCEEDED, NULL, NULL, &err) == -1);
    CHECK(strcmp(err.code, "invalid_transition") == 0);
    long long seq = 0;
    CHECK(db_job_set_status(db, ids[0], JOB_RUNNING, NULL, &seq, &err) == 0);
    CHECK_INT_EQ(seq, 2); // 1 was the creation event
    CHECK(db_job_set_status(db, ids[0], JOB_RUNNING, NULL, NULL, &err) == -1);
    CHECK(strcmp(err.code, "invalid_transition") == 0);
    DbJob dj;
    CHECK(db_job_load(db, ids[0], &dj, &err) == 0);
    CHECK(dj.status == JOB_RUNNING && dj.attempts == 1 && strcmp(dj.method, "dpo") == 0);
    CHECK(dj.recipe_text && strstr(dj.recipe_text, "# job 0") != NULL);
    db_job_free(&dj);
    CHECK(db_job_set_status(db, ids[0], JOB_SUCCEEDED, "{\"final_loss\":0.5}", NULL, &err) == 0);
    CHECK(db_job_get(db, ids[0], &j, &err) == 0);
    CHECK(j && jstr(j, "started_at") && jstr(j, "finished_at"));
    CHECK(j && jnum(cJSON_GetObjectItemCaseSensitive(j, "summary"), "final_loss") == 0.5);
    cJSON_Delete(j);
    CHECK(db_job_set_status(db, ids[0], JOB_QUEUED, NULL, NULL, &err) == -1);
    CHECK(db_job_set_status(db, ids[0], JOB_FAILED, NULL, NULL, &err) == -1);
    CHECK(db_job_set_status(db, ids[1], JOB_BLOCKED, "{\"not\":\"array\"}", NULL, &err) == -1);
    CHECK(strcmp(err.code, "invalid_argument") == 0);
    CHECK(db_job_set_status(db, ids[1], JOB_BLOCKED,
                            "[{\"code\":\"model_not_found\",\"field\":\"model\"}]", NULL,
                            &err) == 0);
    CHECK(db_job_get(db, ids[1], &j, &err) == 0);
    const cJSON *bl = j ? cJSON_GetObjectItemCaseSensitive(j, "blockers") : NULL;
    CHECK(cJSON_GetArraySize(bl) == 1 &&
          strcmp(jstr(cJSON_GetArrayItem(bl, 0), "code"), "model_not_found") == 0);
    cJSON_Delete(j);
    // Cancel: queued -> cancelled at once, running -> flag, terminal refused.
    int now_c = -1;
    CHECK(db_job_request_cancel(db, ids[2], &now_c, &err) == 0);
    CHECK_INT_EQ(now_c, 1);
    CHECK(db_job_set_status(db, ids[3], JOB_RUNNING, NULL, NULL, &err) == 0);
    CHECK(db_job_request_cancel(db, ids[3], &now_c, &err) == 0);
    CHECK_INT_EQ(now_c, 0);
    CHECK(db_job_load(db, ids[3], &dj, &err) == 0);
    CHECK(dj.cancel_requested == 1 && dj.status == JOB_RUNNING);
    db_job_free(&dj);
    CHECK(db_job_set_status(db, ids[3], JOB_CANCELLED, NULL, NULL, &err) == 0);
    CHECK(db_job_request_cancel(db, ids[3], &now_c, &err) == -1);
    CHECK(strcmp(err.code, "invalid_transition") == 0);

    // Status filter and counts: succeeded ids[0], blocked ids[1], cancelled
    // ids[2], ids[3]; queued ids[4], abc, long, key-1.
    JobStatus q = JOB_QUEUED;
    CHECK(db_job_list(db, &q, 100, NULL, &arr, &has_more, &err) == 0);
    CHECK_INT_EQ(cJSON_GetArraySize(arr), 4);
    CHECK_INT_EQ(has_more, 0);
    cJSON_Delete(arr);
    long long counts[JOB_STATUS_COUNT];
    CHECK(db_job_counts_by_status(db, counts, &err) == 0);
    CHECK_INT_EQ(counts[JOB_QUEUED], 4);
    CHECK_INT_EQ(counts[JOB_SUCCEEDED], 1);
    CHECK_INT_EQ(counts[JOB_BLOCKED], 1);
    CHECK_INT_EQ(counts[JOB_CANCELLED], 2);
    CHECK_INT_EQ(counts[JOB_RUNNING], 0);
    CHECK_INT_EQ(counts[JOB_FAILED], 0);
}

static void test_metrics_events(Db *db, const char *path) {
    BsError err = {0};
    char id[DB_ID_SIZE];
    CHECK(insert_job(db, "metrics job", NULL, id, NULL, &err) == 0);
    CHECK(db_job_set_status(db, id, JOB_RUNNING, NULL, NULL, &err) == 0);
    MetricRow rows[2] = {{0}};
    rows[0].step = 10;
    metric_set(&rows[0], "loss", 0.69);
    metric_set(&rows[0], "rewards/margins", 0.01);
    rows[1].step = 10;
    rows[1].is_eval = 1;
    metric_set(&rows[1], "eval_loss", 0.70);
    long long s1 = 0, s2 = 0, s3 = 0;
    CHECK(db_metrics_append(db, id, rows, 2, 0.5, &s1, &err) == 0);
    MetricRow r20 = {0};
    r20.step = 20;
    metric_set(&r20, "loss", 0.60);
    metric_set(&r20, "grad_norm", NAN);
    CHECK(db_metrics_append(db, id, &r20, 1, 1.0, &s2, &err) == 0);
    // A resumed run rewrites step 20: replaced, not duplicated.
    r20.value[0] = 0.55;
    r20.value[1] = 2.0;
    CHECK(db_metrics_append(db, id, &r20, 1, 1.0, &s3, &err) == 0);
    CHECK(s1 < s2 && s2 < s3);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM metrics WHERE job_id='%s'", id);
    CHECK_INT_EQ(raw_int(path, sql), 3);
    cJSON *list = NULL;
    CHECK(db_metrics_list(db, id, -1, 0, &list, &err) == 0);
    CHECK_INT_EQ(cJSON_GetArraySize(list), 3);
    const cJSON *m0 = cJSON_GetArrayItem(list, 0), *m1 = cJSON_GetArrayItem(list, 1),
                *m2 = cJSON_GetArrayItem(list, 2);
    CHECK(jnum(m0, "step") == 10 && cJSON_IsFalse(cJSON_GetObjectItem(m0, "is_eval")));
    CHECK(jnum(m1, "step") == 10 && cJSON_IsTrue(cJSON_GetObjectItem(m1, "is_eval")));
    CHECK_CLOSE(jnum(cJSON_GetObjectItem(m0, "values"), "rewards/margins"), 0.01, 0, 1e-12);
    CHECK_CLOSE(jnum(cJSON_GetObjectItem(m2, "values"), "loss"), 0.55, 0, 1e-12);
    CHECK_CLOSE(jnum(cJSON_GetObjectItem(m2, "values"), "grad_norm"), 2.0, 0, 1e-12);
    cJSON_Delete(list);
    CHECK(db_metrics_list(db, id, 10, 0, &list, &err) == 0);
    CHECK_INT_EQ(cJSON_GetArraySize(list), 1);
    cJSON_Delete(list);

    // Job: progress and merged latest metrics (eval from step 10 kept).
    cJSON *j = NULL;
    CHECK(db_job_get(db, id, &j, &err) == 0);
    const cJSON *lm = cJSON_GetObjectItem(j, "latest_metrics");
    CHECK_CLOSE(jnum(lm, "loss"), 0.55, 0, 1e-12);
    CHECK_CLOSE(jnum(lm, "eval_loss"), 0.70, 0, 1e-12);
    CHECK(jnum(lm, "step") == 20);
    const cJSON *prog = cJSON_GetObjectItem(j, "progress");
    CHECK(jnum(prog, "step") == 20 && jnum(prog, "epoch") == 1.0);
    cJSON_Delete(j);

    // Events: creation, running, 3 metrics, then a log line; in order.
    long long ls = 0;
    CHECK(db_event_append(db, id, "log", "{\"line\":\"hello\"}", &ls, &err) == 0);
    CHECK(db_event_append(db, id, "bogus", "{}", NULL, &err) == -1);
    CHECK(db_event_append(db, id, "log", "{not json", NULL, &err) == -1);
    cJSON *ev = NULL;
    CHECK(db_events_after(db, id, 0, 0, &ev, &err) == 0);
    CHECK_INT_EQ(cJSON_GetArraySize(ev), 6);
    const char *types[6] = {"status", "status", "metrics", "metrics", "metrics", "log"};
    for (int i = 0; i < cJSON_GetArraySize(ev) && i < 6; i++) {
        const cJSON *e = cJSON_GetArrayItem(ev, i);
        CHECK_INT_EQ(jnum(e, "seq"), i + 1);
        CHECK(strcmp(jstr(e, "type"), types[i]) == 0);
    }
    const cJSON *e2 = cJSON_GetArrayItem(ev, 2);
    const cJSON *d2 = cJSON_GetObjectItem(e2, "data");
    CHECK(jnum(d2, "step") == 10 && jnum(d2, "total_steps") == 30);
    CHECK_CLOSE(jnum(cJSON_GetObjectItem(d2, "values"), "eval_loss"), 0.70, 0, 1e-12);
    const cJSON *d3 = cJSON_GetObjectItem(cJSON_GetArrayItem(ev, 3), "data");
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetObjectItem(d3, "values"), "grad_norm")));
    const cJSON *d1 = cJSON_GetObjectItem(cJSON_GetArrayItem(ev, 1), "data");
    CHECK(strcmp(jstr(d1, "status"), "running") == 0 &&
          strcmp(jstr(d1, "previous"), "queued") == 0);
    cJSON_Delete(ev);
    CHECK(db_events_after(db, id, s2, 2, &ev, &err) == 0);
    CHECK_INT_EQ(cJSON_GetArraySize(ev), 2);
    CHECK_INT_EQ(jnum(cJSON_GetArrayItem(ev, 0), "seq"), s3);
    CHECK_INT_EQ(jnum(cJSON_GetArrayItem(ev, 1), "seq"), ls);
    cJSON_Delete(ev);
    long long last = 0;
    CHECK(db_event_last_seq(db, id, &last, &err) == 0);
    CHECK_INT_EQ(last, 6);

    // Resume at step 10: later rows go, earlier stay.
    CHECK(db_metrics_delete_after(db, id, 10, &err) == 0);
    CHECK_INT_EQ(raw_int(path, sql), 2);

    // Checkpoints: upsert per step, latest is the highest step.
    CHECK(db_checkpoint_add(db, id, 10, "/o/ckpt-10.bin", 1000, &err) == 0);
    CHECK(db_checkpoint_add(db, id, 20, "/o/ckpt-20.bin", 1000, &err) == 0);
    CHECK(db_checkpoint_add(db, id, 10, "/o/ckpt-10b.bin", 1001, &err) == 0);
    cJSON *ck = NULL;
    CHECK(db_checkpoint_list(db, id, &ck, &err) == 0);
    CHECK_INT_EQ(cJSON_GetArraySize(ck), 2);
    CHECK(strcmp(jstr(cJSON_GetArrayItem(ck, 0), "path"), "/o/ckpt-10b.bin") == 0);
    cJSON_Delete(ck);
    int found = 0, cstep = 0;
    char *cpath = NULL;
    CHECK(db_checkpoint_latest(db, id, &found, &cstep, &cpath, &err) == 0);
    CHECK(found == 1 && cstep == 20 && cpath && strcmp(cpath, "/o/ckpt-20.bin") == 0);
    free(cpath);
    CHECK(db_checkpoint_add(db, "job_0000000000000001", 1, "/x", 1, &err) == -1);
    CHECK(strcmp(err.code, "not_found") == 0);

    // Start-up recovery: the running job goes back to queued.
    cJSON *ids = NULL;
    CHECK(db_jobs_requeue_running(db, &ids, &err) == 0);
    CHECK_INT_EQ(cJSON_GetArraySize(ids), 1);
    CHECK(cJSON_GetArraySize(ids) == 1 && strcmp(cJSON_GetArrayItem(ids, 0)->valuestring, id) == 0);
    cJSON_Delete(ids);
    CHECK(db_job_get(db, id, &j, &err) == 0);
    CHECK(strcmp(jstr(j, "status"), "queued") == 0);
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(j, "started_at")));
    CHECK(jnum(j, "attempts") == 1);
    cJSON_Delete(j);
    CHECK(db_jobs_requeue_running(db, &ids, &err) == 0);
    CHECK_INT_EQ(cJSON_GetArraySize(ids), 0);
    cJSON_Delete(ids);
}

static void test_dependencies(Db *db) {
    BsError err = {0};
    // Finish every queued job first so the runnable scan sees only ours.
    for (;;) {
        char id[DB_ID_SIZE];
        int found = 0;
        CHECK(db_job_next_runnable(db, id, &found, &err) == 0);
        if (!found) break;
        CHECK(db_job_set_status(db, id, JOB_CANCELLED, NULL, NULL, &err) == 0);
    }
    char parent[DB_ID_SIZE], child[DB_ID_SIZE];
    CHECK(insert_job(db, "parent", NULL, parent, NULL, &err) == 0);
    DbJobNew j = {0};
    j.method = "sft";
    j.recipe_json = "{}";
    j.recipe_text = "child";
    j.depends_on = parent;
    j.status = JOB_QUEUED;
    CHECK(db_job_insert(db, &j, child, NULL, &err) == 0);
    j.depends_on = "job_0123456789abcdef";
    char bad[DB_ID_SIZE];
    CHECK(db_job_insert(db, &j, bad, NULL, &err) == -1);
    CHECK(strcmp(err.code, "not_found") == 0 && strcmp(err.param, "depends_on") == 0);
    cJSON *w = NULL;
    CHECK(db_jobs_waiting_on(db, parent, &w, &err) == 0);
    CHECK(cJSON_GetArraySize(w) == 1 && strcmp(cJSON_GetArrayItem(w, 0)->valuestring, child) == 0);
    cJSON_Delete(w);
    char next[DB_ID_SIZE];
    int found = 0;
    CHECK(db_job_next_runnable(db, next, &found, &err) == 0);
    CHECK(found && strcmp(next, parent) == 0);
    CHECK(db_job_set_status(db, parent, JOB_RUNNING, NULL, NULL, &err) == 0);
    CHECK(db_job_next_runnable(db, next, &found, &err) == 0);
    CHECK_INT_EQ(found, 0); // child waits for a running parent
    CHECK(db_job_set_status(db, parent, JOB_SUCCEEDED, NULL, NULL, &err) == 0);
    CHECK(db_job_next_runnable(db, next, &found, &err) == 0);
    CHECK(found && strcmp(next, child) == 0);
}

typedef struct {
    const char *path;
    int ok;
    char id[DB_ID_SIZE];
    BsError err;
} Writer;

#define WRITES 40

static void *writer_main(void *arg) {
    Writer *w = arg;
    // A short busy timeout makes the BEGIN IMMEDIATE retry loop do real work.
    Db *db = db_open(w->path, 20, &w->err);
    if (!db) return NULL;
    for (int i = 0; i < WRITES; i++) {
        MetricRow r = {0};
        r.step = i;
        metric_set(&r, "loss", 1.0 / (i + 1));
        if (db_metrics_append(db, w->id, &r, 1, 0.0, NULL, &w->err) != 0) goto out;
        char text[64];
        snprintf(text, sizeof text, "writer %s %d", w->id, i);
        char nid[DB_ID_SIZE];
        if (insert_job(db, text, NULL, nid, NULL, &w->err) != 0) goto out;
        w->ok++;
    }
out:
    db_close(db);
    return NULL;
}

static void test_concurrency(Db *db, const char *path) {
    BsError err = {0};
    Writer w[2] = {{0}, {0}};
    long long before = raw_int(path, "SELECT COUNT(*) FROM jobs");
    for (int i = 0; i < 2; i++) {
        w[i].path = path;
        CHECK(insert_job(db, i ? "w1" : "w0", NULL, w[i].id, NULL, &err) == 0);
    }
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        CHECK(pthread_create(&th[i], NULL, writer_main, &w[i]) == 0);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 2; i++) {
        CHECK_MSG(w[i].ok == WRITES, "writer %d: %d ok, %s: %s", i, w[i].ok, w[i].err.code,
                  w[i].err.message);
        cJSON *list = NULL;
        CHECK(db_metrics_list(db, w[i].id, -1, 0, &list, &err) == 0);
        CHECK_INT_EQ(cJSON_GetArraySize(list), WRITES);
        cJSON_Delete(list);
        cJSON *ev = NULL;
        CHECK(db_events_after(db, w[i].id, 0, 0, &ev, &err) == 0);
        CHECK_INT_EQ(cJSON_GetArraySize(ev), WRITES + 1);
        long long expect = 1;
        const cJSON *e;
        cJSON_ArrayForEach(e, ev) CHECK_INT_EQ(jnum(e, "seq"), expect++);
        cJSON_Delete(ev);
    }
    CHECK_INT_EQ(raw_int(path, "SELECT COUNT(*) FROM jobs"), before + 2 + 2 * WRITES);
    CHECK_INT_EQ(raw_int(path, "SELECT COUNT(DISTINCT seq) FROM jobs"),
                 raw_int(path, "SELECT COUNT(*) FROM jobs"));
}

static void *opener_main(void *arg) {
    Writer *w = arg;
    Db *db = db_open(w->path, 0, &w->err);
    w->ok = db != NULL;
    db_close(db);
    return NULL;
}

// Several processes' worth of start-up on a fresh file: all open, each
// migration is applied exactly once. Regression: opening a fresh file while
// another connection did could fail with "cannot set WAL: database is
// locked" (about one start in 50 here), because SQLite answers the WAL switch
// with SQLITE_BUSY without waiting; hence many rounds.
#define OPEN_ROUNDS 60
#define OPENERS 4
static void test_concurrent_open(void) {
    for (int round = 0; round < OPEN_ROUNDS; round++) {
        char name[32], path[256];
        snprintf(name, sizeof name, "fresh%d.db", round);
        path_in_tmp(path, sizeof path, name);
        Writer w[OPENERS];
        memset(w, 0, sizeof w);
        pthread_t th[OPENERS];
        for (int i = 0; i < OPENERS; i++) {
            w[i].path = path;
            CHECK(pthread_create(&th[i], NULL, opener_main, &w[i]) == 0);
        }
        for (int i = 0; i < OPENERS; i++)
            pthread_join(th[i], NULL);
        for (int i = 0; i < OPENERS; i++)
            CHECK_MSG(w[i].ok == 1, "round %d opener %d: %s: %s", round, i, w[i].err.code,
                      w[i].err.message);
        CHECK_INT_EQ(raw_int(path, "SELECT COUNT(*) FROM schema_migrations"),
                     migrate_embedded_count);
        static const char *suffix[] = {"", "-wal", "-shm"};
        for (int k = 0; k < 3; k++) {
            char f[300];
            snprintf(f, sizeof f, "%s%s", path, suffix[k]);
            unlink(f);
        }
    }
}

int main(void) {
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_transition_table();
    test_migrations();
    test_concurrent_open();
    char path[256];
    path_in_tmp(path, sizeof path, "brewslm.db");
    BsError err = {0};
    Db *db = db_open(path, 0, &err);
    CHECK_MSG(db != NULL, "%s", err.message);
    if (db) {
        test_jobs(db, path);
        test_metrics_events(db, path);
        test_dependencies(db);
        test_concurrency(db, path);
        CHECK_MSG(db_integrity_check(db, &err) == 0, "%s", err.message);
        CHECK_INT_EQ(raw_int(path, "PRAGMA foreign_key_check"), -1); // no violation rows
        db_close(db);
    }
    const char *names[] = {"mig.db",     "mig.db-wal",     "mig.db-shm",
                           "newer.db",   "newer.db-wal",   "newer.db-shm",
                           "brewslm.db", "brewslm.db-wal", "brewslm.db-shm"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        path_in_tmp(path, sizeof path, names[i]);
        unlink(path);
    }
    rmdir(tmpdir);
    return test_summary("storage");
}
