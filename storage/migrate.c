// migrate.c — the migration runner: one transaction per migration, recorded
// in schema_migrations; refuses files written by a newer brewslmd.
#include "migrate.h"

#include <stdio.h>
#include <time.h>
#include <unistd.h>

#define MIGRATE_BUSY_TRIES 20

static int sql_fail(sqlite3 *conn, BsError *err, int rc, const char *what) {
    int prim = rc & 0xff;
    const char *code = (prim == SQLITE_BUSY || prim == SQLITE_LOCKED) ? "db_busy" : "db";
    return bs_fail(err, code, "", "%s: %s", what, sqlite3_errmsg(conn));
}

int migrate_exec_retrying(sqlite3 *conn, const char *sql, int (*cb)(void *, int, char **, char **),
                          void *arg, char **msg) {
    int rc = SQLITE_OK;
    for (int i = 0; i < MIGRATE_BUSY_TRIES; i++) {
        if (msg) {
            sqlite3_free(*msg);
            *msg = NULL;
        }
        rc = sqlite3_exec(conn, sql, cb, arg, msg);
        int prim = rc & 0xff;
        if (prim != SQLITE_BUSY && prim != SQLITE_LOCKED) break;
        usleep(5000u * (unsigned)(i + 1));
    }
    return rc;
}

// BEGIN IMMEDIATE takes the write lock up front.
static int begin_immediate(sqlite3 *conn, BsError *err) {
    int rc = migrate_exec_retrying(conn, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : sql_fail(conn, err, rc, "migrations: BEGIN IMMEDIATE");
}

static void rollback(sqlite3 *conn) {
    if (!sqlite3_get_autocommit(conn)) sqlite3_exec(conn, "ROLLBACK", NULL, NULL, NULL);
}

static int table_exists(sqlite3 *conn, int *exists, BsError *err) {
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(conn,
                                "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND "
                                "name = 'schema_migrations'",
                                -1, &st, NULL);
    if (rc != SQLITE_OK) return sql_fail(conn, err, rc, "migrations: read schema");
    rc = sqlite3_step(st);
    *exists = rc == SQLITE_ROW;
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return sql_fail(conn, err, rc, "migrations: read schema");
    return 0;
}

int migrate_version(sqlite3 *conn, int *version, BsError *err) {
    int exists = 0;
    *version = 0;
    if (table_exists(conn, &exists, err) != 0) return -1;
    if (!exists) return 0;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(conn, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", -1,
                                &st, NULL);
    if (rc != SQLITE_OK) return sql_fail(conn, err, rc, "migrations: read version");
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) *version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW) return sql_fail(conn, err, rc, "migrations: read version");
    return 0;
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

int migrate_apply(sqlite3 *conn, const Migration *list, int n, int *n_applied, BsError *err) {
    int highest = 0;
    if (n_applied) *n_applied = 0;
    for (int i = 0; i < n; i++) {
        if (list[i].version <= highest)
            return bs_fail(err, "invalid_argument", "migrations",
                           "migration list is not strictly ascending at version %d",
                           list[i].version);
        highest = list[i].version;
    }
    for (;;) {
        if (begin_immediate(conn, err) != 0) return -1;
        int rc = sqlite3_exec(conn,
                              "CREATE TABLE IF NOT EXISTS schema_migrations ("
                              " version INTEGER PRIMARY KEY,"
                              " name TEXT NOT NULL,"
                              " applied_at TEXT NOT NULL)",
                              NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
            sql_fail(conn, err, rc, "migrations: create schema_migrations");
            goto fail;
        }
        int current = 0;
        if (migrate_version(conn, &current, err) != 0) goto fail;
        if (current > highest) {
            bs_fail(err, "schema_too_new", "schema_migrations",
                    "database schema version %d is newer than this brewslmd supports (%d); "
                    "upgrade brewslmd",
                    current, highest);
            goto fail;
        }
        const Migration *next = NULL;
        for (int i = 0; i < n && !next; i++)
            if (list[i].version > current) next = &list[i];
        if (!next) {
            rc = sqlite3_exec(conn, "COMMIT", NULL, NULL, NULL);
            if (rc != SQLITE_OK) {
                sql_fail(conn, err, rc, "migrations: COMMIT");
                goto fail;
            }
            return 0;
        }
        char *msg = NULL;
        rc = sqlite3_exec(conn, next->sql, NULL, NULL, &msg);
        if (rc != SQLITE_OK) {
            bs_fail(err, "db", "migrations", "migration %04d_%s failed: %s", next->version,
                    next->name, msg ? msg : sqlite3_errmsg(conn));
            sqlite3_free(msg);
            goto fail;
        }
        sqlite3_stmt *st = NULL;
        rc = sqlite3_prepare_v2(conn,
                                "INSERT INTO schema_migrations (version, name, applied_at) "
                                "VALUES (?1, ?2, ?3)",
                                -1, &st, NULL);
        if (rc == SQLITE_OK) {
            char now[32];
            utc_now(now);
            sqlite3_bind_int(st, 1, next->version);
            sqlite3_bind_text(st, 2, next->name, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 3, now, -1, SQLITE_TRANSIENT);
            rc = sqlite3_step(st);
            if (rc == SQLITE_DONE) rc = SQLITE_OK;
        }
        sqlite3_finalize(st);
        if (rc != SQLITE_OK) {
            sql_fail(conn, err, rc, "migrations: record version");
            goto fail;
        }
        rc = sqlite3_exec(conn, "COMMIT", NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
            sql_fail(conn, err, rc, "migrations: COMMIT");
            goto fail;
        }
        if (n_applied) (*n_applied)++;
    }
fail:
    rollback(conn);
    return -1;
}
