// dbpool.c — bounded SQLite connection pool (see dbpool.h).
#include "dbpool.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct DbPool {
    pthread_mutex_t mu;
    pthread_cond_t freed; // a connection came back, or an open slot
    char *path;
    int max_open, n_open; // n_open counts connections being opened too
    int n_idle;
    Db **idle; // (max_open)
    int busy_timeout_ms, wait_ms;
};

DbPool *dbpool_create(const char *path, int max_open, int busy_timeout_ms, int wait_ms,
                      BsError *err) {
    DbPool *p = calloc(1, sizeof(*p));
    if (!p) goto oom;
    if (max_open < 1) max_open = 1;
    p->max_open = max_open;
    p->busy_timeout_ms = busy_timeout_ms;
    p->wait_ms = wait_ms > 0 ? wait_ms : 1;
    p->path = strdup(path);
    p->idle = calloc((size_t)max_open, sizeof(Db *));
    if (!p->path || !p->idle) goto oom;
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0) goto oom;
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&p->freed, &attr);
    pthread_condattr_destroy(&attr);
    if (rc != 0) goto oom;
    if (pthread_mutex_init(&p->mu, NULL) != 0) {
        pthread_cond_destroy(&p->freed);
        goto oom;
    }
    for (int i = 0; i < max_open; i++) {
        Db *db = db_open(p->path, p->busy_timeout_ms, err);
        if (!db) {
            dbpool_free(p);
            return NULL;
        }
        p->idle[p->n_idle++] = db;
        p->n_open++;
    }
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
    pthread_cond_destroy(&p->freed);
    pthread_mutex_destroy(&p->mu);
    free(p->idle);
    free(p->path);
    free(p);
}

Db *dbpool_acquire(DbPool *p, BsError *err) {
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += p->wait_ms / 1000;
    deadline.tv_nsec += (long)(p->wait_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&p->mu);
    for (;;) {
        if (p->n_idle > 0) {
            Db *db = p->idle[--p->n_idle];
            pthread_mutex_unlock(&p->mu);
            return db;
        }
        if (p->n_open < p->max_open) break;
        if (pthread_cond_timedwait(&p->freed, &p->mu, &deadline) == ETIMEDOUT && p->n_idle == 0 &&
            p->n_open >= p->max_open) {
            pthread_mutex_unlock(&p->mu);
            bs_fail(err, "db_busy", "", "all %d database connections stayed in use for %d ms",
                    p->max_open, p->wait_ms);
            return NULL;
        }
    }
    p->n_open++; // reserve the slot; open outside the lock (it runs the migration check)
    pthread_mutex_unlock(&p->mu);
    Db *db = db_open(p->path, p->busy_timeout_ms, err);
    if (!db) {
        pthread_mutex_lock(&p->mu);
        p->n_open--;
        pthread_cond_signal(&p->freed);
        pthread_mutex_unlock(&p->mu);
    }
    return db;
}

Db *dbpool_acquire_or_reply(DbPool *p, HttpRequest *req) {
    BsError err;
    bs_error_clear(&err);
    Db *db = dbpool_acquire(p, &err);
    if (!db)
        http_reply_error(req, 503, "unavailable", err.code, NULL, "database unavailable: %s",
                         err.message);
    return db;
}

void dbpool_release(DbPool *p, Db *db) {
    if (!db) return;
    pthread_mutex_lock(&p->mu);
    p->idle[p->n_idle++] = db; // n_idle <= n_open <= max_open
    pthread_cond_signal(&p->freed);
    pthread_mutex_unlock(&p->mu);
}

const char *dbpool_path(const DbPool *p) {
    return p->path;
}
