// api.h — brewslmd's HTTP API: the route table and its handlers (jobs,
// preflight, metrics, SSE events, checkpoints, capabilities, health, the
// Prometheus exposition and static assets). The handlers keep no state of
// their own: they read and write the database through a connection pool and
// reach the scheduler through ApiJobControl.
#ifndef API_H
#define API_H

#include "broker.h"
#include "dbpool.h"
#include "http.h"
#include "promstats.h"

// What the API needs from the daemon's scheduler. Every callback may be
// called from any HTTP thread.
typedef struct {
    void *user;
    // Something changed (a job queued or cancelled): schedule again soon.
    void (*wake)(void *user);
    // The job is running in this process: ask it to stop (it will end
    // cancelled). Unknown ids are ignored.
    void (*cancel_running)(void *user, const char *id);
    // 0 once shutdown began (readyz answers 503, submissions are refused).
    int (*accepting)(void *user);
} ApiJobControl;

typedef struct {
    const char *data_root;        // absolute and symlink-resolved; recipes are confined to it
    const char *state_dir;        // absolute; default job folders are state_dir/jobs/<id>
    long long memory_limit_bytes; // preflight's limit, 0: none
    int max_concurrent_jobs;
    int blas_threads; // per job
    int cores;
    int sse_heartbeat_ms; // ": ping" comment interval on idle event streams
    DbPool *pool;
    Broker *broker;
    PromStats *stats;
    ApiJobControl ctl;
} ApiContext;

// The route table (NULL-pattern terminated) for http_server_start with
// user = the ApiContext: the API routes followed by one route per static
// asset. malloc'd; the caller frees it after the server stopped. NULL on OOM.
HttpRoute *api_routes_create(void);

#endif
