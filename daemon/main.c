// main.c — brewslmd: loads the configuration, opens the database, starts
// the scheduler on a libuv loop and the HTTP API, and shuts down cleanly on
// SIGTERM / SIGINT (stop accepting, let running jobs checkpoint, exit 0).
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "api.h"
#include "blasenv.h"
#include "config.h"
#include "http.h"
#include "scheduler.h"

// Database connections shared by the HTTP threads (a handler borrows one per
// request, an SSE stream one per read): a bounded set kept open, since a
// burst of streams waking at each event would otherwise open and close a
// connection apiece. A thread finding all in use waits up to DB_POOL_WAIT_MS.
#define DB_POOL_MAX 32
#define DB_POOL_WAIT_MS 10000
// SQLite busy timeout of the HTTP threads' connections. The storage layer
// retries BEGIN IMMEDIATE 20 times after each timeout, so a request waits
// about 20 x 250 ms + backoff ~= 6 s for a write lock held elsewhere, then
// answers 503 db_busy with Retry-After. Job workers and the scheduler keep
// storage's default (5 s per try, ~100 s): a training step would rather wait
// than fail.
#define API_BUSY_TIMEOUT_MS 250

typedef struct {
    uv_loop_t *loop;
    DaemonConfig cfg;
    HttpServer *srv;
    Sched *sched;
    Broker *broker;
    uv_signal_t sig_term, sig_int;
    uv_timer_t grace;
    int stopping, finished, forced;
} App;

static int mkdir_p(const char *path) {
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != '\0') continue;
        char saved = *p;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -1;
        *p = saved;
        if (!saved) break;
    }
    return 0;
}

// mkdir -p dir, then its absolute resolved path (malloc'd) or NULL.
static char *ensure_dir(const char *what, const char *dir) {
    if (mkdir_p(dir) != 0) {
        fprintf(stderr, "brewslmd: cannot create %s %s: %s\n", what, dir, strerror(errno));
        return NULL;
    }
    char *abs = realpath(dir, NULL);
    if (!abs) fprintf(stderr, "brewslmd: cannot resolve %s %s: %s\n", what, dir, strerror(errno));
    return abs;
}

// Each connection holds a socket, and each HTTP thread may hold a pooled
// SQLite connection (its file, WAL and shm descriptors): raise the soft
// open-file limit towards that, up to the hard limit. Returns the limit.
static rlim_t raise_nofile(int max_connections) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
    rlim_t want = (rlim_t)max_connections * 2 + 256;
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= want) return rl.rlim_cur;
    rlim_t old = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) return old;
    return rl.rlim_cur;
}

static void finish(App *app) {
    if (app->finished) return;
    app->finished = 1;
    broker_shutdown(app->broker); // event streams end, so their threads can be joined
    http_server_stop(app->srv);
    app->srv = NULL;
    uv_timer_stop(&app->grace);
    uv_close((uv_handle_t *)&app->grace, NULL);
    uv_close((uv_handle_t *)&app->sig_term, NULL);
    uv_close((uv_handle_t *)&app->sig_int, NULL);
    sched_close(app->sched);
    if (app->forced) uv_stop(app->loop); // workers still hold the loop open
}

static void on_jobs_stopped(void *arg) {
    App *app = arg;
    fprintf(stderr, "brewslmd: no job running; exiting\n");
    finish(app);
}

static void on_grace(uv_timer_t *t) {
    App *app = t->data;
    fprintf(stderr,
            "brewslmd: %d job(s) still running after %d s; exiting (they resume at the next "
            "start)\n",
            sched_running_count(app->sched), app->cfg.shutdown_timeout_s);
    app->forced = 1;
    finish(app);
}

// Extra seconds past shutdown_timeout before the watchdog ends the process.
#define SHUTDOWN_WATCHDOG_SLACK_S 15

// Stopping joins every connection thread; a handler stuck in a system call
// (say, reading a FIFO a recipe pointed at) would hold the exit forever. The
// watchdog bounds the whole shutdown: running jobs resume from their last
// checkpoint at the next start, as after a crash.
static void *shutdown_watchdog(void *arg) {
    int secs = *(const int *)arg;
    sleep((unsigned)secs);
    fprintf(stderr, "brewslmd: shutdown still not finished after %d s; exiting now\n", secs);
    fflush(stderr);
    _exit(1);
    return NULL;
}

static void on_signal(uv_signal_t *h, int signum) {
    App *app = h->data;
    if (app->stopping) {
        fprintf(stderr, "brewslmd: second %s: exiting now\n", strsignal(signum));
        fflush(stdout);
        _exit(1);
    }
    app->stopping = 1;
    fprintf(stderr, "brewslmd: %s: stopping; running jobs checkpoint (up to %d s)\n",
            strsignal(signum), app->cfg.shutdown_timeout_s);
    http_server_quiesce(app->srv);
    static int watchdog_s;
    watchdog_s = app->cfg.shutdown_timeout_s + SHUTDOWN_WATCHDOG_SLACK_S;
    pthread_t wd;
    if (pthread_create(&wd, NULL, shutdown_watchdog, &watchdog_s) == 0) pthread_detach(wd);
    uv_timer_start(&app->grace, on_grace, (uint64_t)app->cfg.shutdown_timeout_s * 1000u, 0);
    sched_shutdown(app->sched, on_jobs_stopped, app);
}

static void ctl_wake(void *user) {
    sched_wake(user);
}

static void ctl_cancel(void *user, const char *id) {
    sched_cancel_running(user, id);
}

static int ctl_accepting(void *user) {
    return sched_accepting(user);
}

int main(int argc, char **argv) {
    blasenv_select_kernels(argv);
    App app;
    memset(&app, 0, sizeof(app));
    char msg[1024];
    int rc = config_load(&app.cfg, argc, argv, msg, sizeof(msg));
    if (rc == 1) return 0;
    if (rc < 0) {
        fprintf(stderr, "brewslmd: %s\n", msg);
        config_free(&app.cfg);
        return 2;
    }
    DaemonConfig *cfg = &app.cfg;
    if (!http_host_is_loopback(cfg->host) && !cfg->token) {
        fprintf(stderr,
                "brewslmd: refusing to listen on %s without a token: anyone who can reach it "
                "could run jobs. Set --token-file FILE or BREWSLM_TOKEN, or listen on "
                "127.0.0.1.\n",
                cfg->listen);
        config_free(cfg);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    rlim_t nofile = raise_nofile(cfg->max_connections);
    if (nofile != RLIM_INFINITY && nofile < (rlim_t)cfg->max_connections + 64)
        fprintf(stderr,
                "brewslmd: warning: the open-file limit (%llu) is too low for %d connections; "
                "raise it (ulimit -n, LimitNOFILE=) or lower max_connections\n",
                (unsigned long long)nofile, cfg->max_connections);

    // One pool thread per concurrent job; libuv reads this once, when the
    // pool is first used, so it must be set before anything is queued.
    char n[16];
    snprintf(n, sizeof(n), "%d", cfg->max_concurrent_jobs);
    setenv("UV_THREADPOOL_SIZE", n, 1);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores < 1) cores = 1;
    int blas_threads = (int)(cores / cfg->max_concurrent_jobs);
    if (blas_threads < 1) blas_threads = 1;

    int exit_code = 1;
    char *state_dir = NULL, *data_root = NULL, *db_dir = NULL;
    PromStats *stats = NULL;
    DbPool *pool = NULL;
    HttpRoute *routes = NULL;
    BsError err;
    bs_error_clear(&err);

    if (!(state_dir = ensure_dir("state_dir", cfg->state_dir))) goto out;
    if (!(data_root = ensure_dir("data_root", cfg->data_root))) goto out;
    db_dir = strdup(cfg->db_path);
    if (!db_dir) goto out;
    char *slash = strrchr(db_dir, '/');
    if (slash && slash != db_dir) {
        *slash = '\0';
        if (mkdir_p(db_dir) != 0) {
            fprintf(stderr, "brewslmd: cannot create %s: %s\n", db_dir, strerror(errno));
            goto out;
        }
    }

    app.loop = uv_default_loop();
    app.broker = broker_create();
    stats = promstats_create();
    if (!app.broker || !stats) goto out;
    pool = dbpool_create(cfg->db_path, DB_POOL_MAX, API_BUSY_TIMEOUT_MS, DB_POOL_WAIT_MS, &err);
    if (!pool) goto fail_err;
    SchedConfig sc = {
        .db_path = cfg->db_path,
        .data_root = data_root,
        .state_dir = state_dir,
        .memory_limit_bytes = cfg->memory_limit,
        .max_concurrent_jobs = cfg->max_concurrent_jobs,
        .blas_threads = blas_threads,
        .broker = app.broker,
        .stats = stats,
    };
    app.sched = sched_create(app.loop, &sc, &err);
    if (!app.sched) goto fail_err;

    ApiContext api = {
        .data_root = data_root,
        .state_dir = state_dir,
        .memory_limit_bytes = cfg->memory_limit,
        .max_concurrent_jobs = cfg->max_concurrent_jobs,
        .blas_threads = blas_threads,
        .cores = (int)cores,
        .sse_heartbeat_ms = cfg->sse_heartbeat_s * 1000,
        .pool = pool,
        .broker = app.broker,
        .stats = stats,
        .ctl = {app.sched, ctl_wake, ctl_cancel, ctl_accepting},
    };
    // Before the address is printed: a supervisor may signal right after.
    uv_signal_init(app.loop, &app.sig_term);
    uv_signal_init(app.loop, &app.sig_int);
    uv_timer_init(app.loop, &app.grace);
    app.sig_term.data = app.sig_int.data = app.grace.data = &app;
    uv_signal_start(&app.sig_term, on_signal, SIGTERM);
    uv_signal_start(&app.sig_int, on_signal, SIGINT);

    routes = api_routes_create();
    if (!routes) goto out;
    HttpConfig hc = {
        .host = cfg->host,
        .port = cfg->port,
        .token = cfg->token,
        .max_body_bytes = (size_t)cfg->max_body_bytes,
        .connection_limit = (unsigned)cfg->max_connections,
        .connection_timeout_s = 60,
        .routes = routes,
        .user = &api,
        .stats = stats,
    };
    app.srv = http_server_start(&hc, &err);
    if (!app.srv) goto fail_err;
    const char *host = http_server_host(app.srv);
    int v6 = strchr(host, ':') != NULL;
    printf("brewslmd listening on http://%s%s%s:%d\n", v6 ? "[" : "", host, v6 ? "]" : "",
           http_server_port(app.srv));
    fflush(stdout);
    fprintf(stderr,
            "brewslmd: db %s, state_dir %s, data_root %s, %d job(s) at once, %d BLAS "
            "thread(s) each%s\n",
            cfg->db_path, state_dir, data_root, cfg->max_concurrent_jobs, blas_threads,
            cfg->token ? ", bearer token required" : "");

    uv_run(app.loop, UV_RUN_DEFAULT);

    if (app.forced) {
        // Workers are still training on the pool threads and use everything
        // below; leave without freeing (their jobs resume at the next start).
        fflush(stdout);
        fflush(stderr);
        _exit(0);
    }
    uv_run(app.loop, UV_RUN_NOWAIT); // close callbacks
    uv_loop_close(app.loop);
    exit_code = 0;
    goto out;

fail_err:
    fprintf(stderr, "brewslmd: %s\n", err.message);
out:
    http_server_stop(app.srv);
    sched_free(app.sched);
    dbpool_free(pool);
    promstats_free(stats);
    broker_free(app.broker);
    free(routes);
    free(state_dir);
    free(data_root);
    free(db_dir);
    config_free(cfg);
    return exit_code;
}
