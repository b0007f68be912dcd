// dbpool.c — SQLite connection pool (see dbpool.h).
#include "dbpool.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct DbPool {
    pthread_mutex_t mu;
    char *path;
    int max_idle, n_idle;
    int busy_timeout_ms;
    Db **idle;
};

DbPool *dbpool_create(const char *path, int max_idle, int busy_timeout_ms, BsError *err) {
    DbPool *p = calloc(1, sizeof(*p));
    if (!p) goto oom;
    if (max_idle < 1) max_idle = 1;
    p->max_idle = max_idle;
    p->busy_timeout_ms = busy_timeout_ms;
    p->path = strdup(path);
    p->idle = calloc((size_t)max_idle, sizeof(Db *));
    if (!p->path || !p->idle) goto oom;
    if (pthread_mutex_init(&p->mu, NULL) != 0) goto oom;
    return p;
oom:
    if (p) {
        free(p->path);
        free(p->idle);
        free(p);
    }
    bs_fail(err, "oom", "", "out of memory");
    return NULL;
}

void dbpool_free(DbPool *p) {
    if (!p) return;
    for (int i = 0; i < p->n_idle; i++)
        db_close(p->idle[i]);
    pthread_mutex_destroy(&p->mu);
    free(p->idle);
    free(p->path);
    free(p);
}

Db *dbpool_acquire(DbPool *p, BsError *err) {
    pthread_mutex_lock(&p->mu);
    Db *db = p->n_idle ? p->idle[--p->n_idle] : NULL;
    pthread_mutex_unlock(&p->mu);
    if (db) return db;
    return db_open(p->path, p->busy_timeout_ms, err);
}

void dbpool_release(DbPool *p, Db *db) {
    if (!db) return;
    pthread_mutex_lock(&p->mu);
    if (p->n_idle < p->max_idle) {
        p->idle[p->n_idle++] = db;
        db = NULL;
    }
    pthread_mutex_unlock(&p->mu);
    db_close(db);
}

const char *dbpool_path(const DbPool *p) {
    return p->path;
}
