// dbpool.h — a pool of SQLite connections (storage/db.h handles) for the HTTP
// threads: a Db is one connection used by one thread at a time, and opening
// one per request would rerun the migration check every time.
//
// The pool is bounded: at most max_open connections exist, all kept open
// once made. When every one is in use, dbpool_acquire waits (up to a
// deadline) for one to come back instead of opening more, so a burst of
// threads (every SSE stream wakes at each event) reuses a few warm
// connections instead of opening and closing one each.
#ifndef DBPOOL_H
#define DBPOOL_H

#include "bs.h"
#include "db.h"
#include "http.h"

typedef struct DbPool DbPool;

// max_open connections to path, each with SQLite's busy_timeout
// busy_timeout_ms (<= 0: storage's default), all opened here: db_open runs
// the migration check under the write lock, so a connection opened later
// would wait behind any writer, and a plain read must not. acquire waits at
// most wait_ms for a free one. NULL with err when a connection cannot be
// opened (the file, its migrations) or on OOM.
DbPool *dbpool_create(const char *path, int max_open, int busy_timeout_ms, int wait_ms,
                      BsError *err);
// Closes the pooled connections; every acquired one must have been released.
void dbpool_free(DbPool *p);
// A free connection, a newly opened one while fewer than max_open exist, or
// (all in use) the first one released within wait_ms. NULL with err when
// opening fails or the wait times out ("db_busy"). The caller gives it back
// with dbpool_release and must not hold two at once (it could wait on itself).
Db *dbpool_acquire(DbPool *p, BsError *err);
void dbpool_release(DbPool *p, Db *db);
// dbpool_acquire for a handler: on failure it answers req itself (503
// unavailable, the error's code) and returns NULL, so the handler just returns.
Db *dbpool_acquire_or_reply(DbPool *p, HttpRequest *req);
// The database path the pool opens (owned by the pool).
const char *dbpool_path(const DbPool *p);

#endif
