// dbpool.h — a pool of SQLite connections (storage/db.h handles) for the HTTP
// threads: a Db is one connection used by one thread at a time, and opening
// one per request would rerun the migration check every time.
#ifndef DBPOOL_H
#define DBPOOL_H

#include "bs.h"
#include "db.h"

typedef struct DbPool DbPool;

// Keeps at most max_idle idle connections to path, opened with SQLite's
// busy_timeout busy_timeout_ms (<= 0: storage's default). NULL with err on OOM.
DbPool *dbpool_create(const char *path, int max_idle, int busy_timeout_ms, BsError *err);
// Closes the idle connections; every acquired one must have been released.
void dbpool_free(DbPool *p);
// An idle connection, or a newly opened one; NULL with err when opening fails.
// The caller gives it back with dbpool_release.
Db *dbpool_acquire(DbPool *p, BsError *err);
void dbpool_release(DbPool *p, Db *db);
// The database path the pool opens (owned by the pool).
const char *dbpool_path(const DbPool *p);

#endif
