// test_job_text.c — db_job_get_text (the GET /v1/jobs/{id} fast path, see db.h)
// against a real SQLite file: its text must be byte for byte what
// cJSON_PrintUnformatted makes of db_job_get's object, read on a fresh connection
// (no render cache), right after every kind of change to the row: through db.c
// on another connection and on the same one, through a raw sqlite3 connection in
// this process, and from another process, the sqlite3 shell (the render cache
// must never serve a stale object, whoever wrote). Also: more jobs than the cache holds, not_found,
// and a row read while nothing changed (served from the cache: the same text).
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "db.h"
#include "test_util.h"

static char tmpdir[] = "/tmp/bs_jobtext_XXXXXX";
static char db_path[256];

// The independent expectation: db_job_get on a connection opened just now.
static char *expected_text(const char *id) {
    BsError err = {0};
    Db *db = db_open(db_path, 5000, &err);
    if (!db) return NULL;
    cJSON *obj = NULL;
    char *text = NULL;
    if (db_job_get(db, id, &obj, &err) == 0) text = cJSON_PrintUnformatted(obj);
    cJSON_Delete(obj);
    db_close(db);
    return text;
}

// 1 when db_job_get_text on db answers exactly expected_text(id).
static int text_matches(Db *db, const char *id, const char *what) {
    BsError err = {0};
    char *got = NULL;
    size_t len = 0;
    int rc = db_job_get_text(db, id, &got, &len, &err);
    char *want = expected_text(id);
    int ok = rc == 0 && got && want && len == strlen(got) && strcmp(got, want) == 0;
    if (!ok)
        fprintf(stderr, "%s: rc %d (%s)\n  got  %s\n  want %s\n", what, rc, err.message,
                got ? got : "(null)", want ? want : "(null)");
    free(got);
    free(want);
    return ok;
}

static void raw_exec(const char *sql) {
    sqlite3 *c = NULL;
    int rc = sqlite3_open(db_path, &c);
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(c, 5000);
        rc = sqlite3_exec(c, sql, NULL, NULL, NULL);
    }
    CHECK_MSG(rc == SQLITE_OK, "%s: %s", sql, c ? sqlite3_errmsg(c) : "open failed");
    sqlite3_close(c);
}

// The same UPDATE from another process: the sqlite3 shell (Debian's sqlite3
// package), exec'd so it starts with its own SQLite state and locks (an open
// connection must not cross a fork).
static void child_exec(const char *sql) {
    pid_t pid = fork();
    if (pid == 0) {
        execlp("sqlite3", "sqlite3", "-bail", "-cmd", ".timeout 5000", db_path, sql, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "sqlite3 %s: status %d", sql, status);
}

static int insert(Db *db, int i, char id[DB_ID_SIZE]) {
    char text[64], recipe[128];
    snprintf(text, sizeof text, "method: dpo\nbeta: 0.%d\n", i + 1);
    snprintf(recipe, sizeof recipe, "{\"method\":\"dpo\",\"beta\":0.%d,\"max_steps\":%d}", i + 1,
             10 + i);
    DbJobNew j = {.method = "dpo",
                  .recipe_json = recipe,
                  .recipe_text = text,
                  .status = JOB_QUEUED,
                  .warnings_json = "[{\"code\":\"no_eval_file\",\"field\":\"eval_file\"}]",
                  .total_steps = 10 + i};
    BsError err = {0};
    int rc = db_job_insert(db, &j, id, NULL, &err);
    CHECK_MSG(rc == 0, "insert: %s", err.message);
    return rc;
}

int main(void) {
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(db_path, sizeof db_path, "%s/jobs.db", tmpdir);
    BsError err = {0};
    Db *api = db_open(db_path, 5000, &err);    // the polling connection
    Db *worker = db_open(db_path, 5000, &err); // another writer in this process
    if (!api || !worker) {
        fprintf(stderr, "db_open: %s\n", err.message);
        return 1;
    }
    char id[DB_ID_SIZE];
    if (insert(worker, 0, id) != 0) return 1;

    CHECK(text_matches(api, id, "first read"));
    CHECK(text_matches(api, id, "unchanged (cached)"));

    // Through db.c on another connection: status, progress, metrics-free fields.
    CHECK(db_job_set_status(worker, id, JOB_RUNNING, NULL, NULL, &err) == 0);
    CHECK(text_matches(api, id, "running (other connection)"));
    CHECK(db_job_progress(worker, id, 3, -1, 0.25, &err) == 0);
    CHECK(text_matches(api, id, "progress (other connection)"));
    CHECK(text_matches(api, id, "progress, unchanged"));

    // Through db.c on the polling connection itself.
    CHECK(db_job_progress(api, id, 4, 20, 0.5, &err) == 0);
    CHECK(text_matches(api, id, "progress (same connection)"));
    CHECK(db_job_set_output_dir(api, id, "/tmp/out/\"quoted\"", &err) == 0);
    CHECK(text_matches(api, id, "output_dir (same connection)"));

    // Around db.c: a raw connection in this process, then another process, each
    // changing one field the cache key covers (integer, text, JSON, real).
    raw_exec("UPDATE jobs SET attempts = attempts + 5");
    CHECK(text_matches(api, id, "attempts (raw connection)"));
    raw_exec("UPDATE jobs SET latest_metrics_json = '{\"loss\":0.6931,\"step\":4}'");
    CHECK(text_matches(api, id, "latest_metrics (raw connection)"));
    child_exec("UPDATE jobs SET epoch = 0.75");
    CHECK(text_matches(api, id, "epoch (other process)"));
    child_exec("UPDATE jobs SET status = 'succeeded', summary_json = '{\"margin\":1.5}', "
               "finished_at = '2024-01-01T00:00:00.000Z'");
    CHECK(text_matches(api, id, "succeeded (other process)"));
    CHECK(text_matches(api, id, "succeeded, unchanged"));
    // A write that leaves the row as it was: still the same object.
    child_exec("UPDATE jobs SET attempts = attempts");
    CHECK(text_matches(api, id, "no-op update (other process)"));

    // More jobs than the cache has slots, read in turns, one changing.
    char ids[12][DB_ID_SIZE];
    for (int i = 0; i < 12; i++)
        if (insert(worker, i + 1, ids[i]) != 0) return 1;
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 12; i++) {
            char what[64];
            snprintf(what, sizeof what, "job %d round %d", i, round);
            CHECK(text_matches(api, ids[i], what));
        }
        CHECK(db_job_progress(worker, ids[5], round + 1, -1, 0.1 * (round + 1), &err) == 0);
    }

    // Unknown and malformed ids.
    char *t = NULL;
    size_t n = 0;
    bs_error_clear(&err);
    CHECK(db_job_get_text(api, "job_0000000000000000", &t, &n, &err) == -1);
    CHECK(strcmp(err.code, "not_found") == 0 && t == NULL);
    bs_error_clear(&err);
    CHECK(db_job_get_text(api, "job_0123456789abcdef0123456789", &t, &n, &err) == -1);
    CHECK(strcmp(err.code, "not_found") == 0 && t == NULL);

    db_close(api);
    db_close(worker);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_summary("job_text");
}
