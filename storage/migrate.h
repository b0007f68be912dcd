// migrate.h — applies the numbered schema migrations embedded in the binary
// (migrations/*.sql, see migrations/embed.py) and records each one in
// schema_migrations (version, name, applied_at).
#ifndef MIGRATE_H
#define MIGRATE_H

#include <sqlite3.h>

#include "bs.h"

typedef struct {
    int version;      // NNNN of NNNN_name.sql, strictly increasing in the list
    const char *name; // name part of the file name
    const char *sql;  // the statements
} Migration;

// The migrations compiled into this binary, ascending by version.
extern const Migration migrate_embedded[];
extern const int migrate_embedded_count;

// Applies every migration of list (n entries, ascending) newer than the
// file's recorded version, each in its own BEGIN IMMEDIATE transaction
// together with its schema_migrations row, so a crash leaves the file at a
// whole version and concurrent openers apply each migration exactly once.
// A file whose version is above list's highest fails with code
// "schema_too_new". *n_applied (may be NULL) counts the migrations run.
int migrate_apply(sqlite3 *conn, const Migration *list, int n, int *n_applied, BsError *err);

// sqlite3_exec(conn, sql, cb, arg, msg), tried again (up to 20 times, backing
// off 5 ms more each time) while the answer is SQLITE_BUSY or SQLITE_LOCKED:
// busy_timeout already waits inside each try, but some lock requests get
// SQLITE_BUSY without waiting at all (the switch to WAL while another opener
// reads the file), and a lock may outlive the timeout (a long checkpoint).
// Returns the last result code; *msg (msg may be NULL) holds the last error
// text, which the caller frees with sqlite3_free.
int migrate_exec_retrying(sqlite3 *conn, const char *sql, int (*cb)(void *, int, char **, char **),
                          void *arg, char **msg);

// Highest version recorded (0 when schema_migrations is absent or empty).
int migrate_version(sqlite3 *conn, int *version, BsError *err);

#endif
