// promstats.c — in-memory Prometheus counters and histograms (see promstats.h).
#include "promstats.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static const double BUCKETS[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
#define N_BUCKETS ((int)(sizeof(BUCKETS) / sizeof(BUCKETS[0])))

typedef struct {
    const char *route;
    int code;
    long long count;
} CodeCount;

typedef struct {
    const char *route;
    long long bucket[N_BUCKETS]; // non-cumulative; summed when rendered
    long long count;
    double sum;
} RouteHist;

struct PromStats {
    pthread_mutex_t mu;
    CodeCount *codes;
    int n_codes, cap_codes;
    RouteHist *hists;
    int n_hists, cap_hists;
    atomic_llong steps, tokens;
};

PromStats *promstats_create(void) {
    PromStats *ps = calloc(1, sizeof(*ps));
    if (!ps) return NULL;
    if (pthread_mutex_init(&ps->mu, NULL) != 0) {
        free(ps);
        return NULL;
    }
    atomic_init(&ps->steps, 0);
    atomic_init(&ps->tokens, 0);
    return ps;
}

void promstats_free(PromStats *ps) {
    if (!ps) return;
    pthread_mutex_destroy(&ps->mu);
    free(ps->codes);
    free(ps->hists);
    free(ps);
}

// Grows *arr (elements of size sz) to hold one more; -1 on OOM.
static int grow(void **arr, int *cap, int n, size_t sz) {
    if (n < *cap) return 0;
    int nc = *cap ? *cap * 2 : 16;
    void *p = realloc(*arr, (size_t)nc * sz);
    if (!p) return -1;
    *arr = p;
    *cap = nc;
    return 0;
}

void promstats_observe_request(PromStats *ps, const char *route, int code, double seconds) {
    if (!ps) return;
    pthread_mutex_lock(&ps->mu);
    int i;
    for (i = 0; i < ps->n_codes; i++)
        if (ps->codes[i].code == code && strcmp(ps->codes[i].route, route) == 0) break;
    if (i == ps->n_codes &&
        grow((void **)&ps->codes, &ps->cap_codes, ps->n_codes, sizeof(CodeCount)) == 0) {
        ps->codes[ps->n_codes++] = (CodeCount){route, code, 0};
    }
    if (i < ps->n_codes) ps->codes[i].count++;

    for (i = 0; i < ps->n_hists; i++)
        if (strcmp(ps->hists[i].route, route) == 0) break;
    if (i == ps->n_hists &&
        grow((void **)&ps->hists, &ps->cap_hists, ps->n_hists, sizeof(RouteHist)) == 0) {
        memset(&ps->hists[ps->n_hists], 0, sizeof(RouteHist));
        ps->hists[ps->n_hists++].route = route;
    }
    if (i < ps->n_hists) {
        RouteHist *h = &ps->hists[i];
        for (int b = 0; b < N_BUCKETS; b++) {
            if (seconds <= BUCKETS[b]) {
                h->bucket[b]++;
                break;
            }
        }
        h->count++;
        h->sum += seconds;
    }
    pthread_mutex_unlock(&ps->mu);
}

void promstats_add_steps(PromStats *ps, long long n) {
    if (ps && n > 0) atomic_fetch_add(&ps->steps, n);
}

void promstats_add_tokens(PromStats *ps, long long n) {
    if (ps && n > 0) atomic_fetch_add(&ps->tokens, n);
}

// Label values here are route patterns and status names: no quotes or
// backslashes, but escape anyway so the exposition always parses.
static void put_label(StrBuf *out, const char *v) {
    for (const char *p = v; *p; p++) {
        if (*p == '\\' || *p == '"') sb_append(out, "\\", 1);
        if (*p == '\n') {
            sb_puts(out, "\\n");
            continue;
        }
        sb_append(out, p, 1);
    }
}

void promstats_render_gauge(StrBuf *out, const char *name, const char *help, const char *label,
                            const char *const *values, const long long *samples, int n) {
    sb_printf(out, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name);
    for (int i = 0; i < n; i++) {
        sb_printf(out, "%s{%s=\"", name, label);
        put_label(out, values[i]);
        sb_printf(out, "\"} %lld\n", samples[i]);
    }
}

void promstats_render(PromStats *ps, StrBuf *out) {
    sb_puts(out, "# HELP brewslm_steps_trained_total Optimizer steps trained by this process.\n"
                 "# TYPE brewslm_steps_trained_total counter\n");
    sb_printf(out, "brewslm_steps_trained_total %lld\n", (long long)atomic_load(&ps->steps));
    sb_puts(out, "# HELP brewslm_tokens_trained_total Tokens trained on by this process.\n"
                 "# TYPE brewslm_tokens_trained_total counter\n");
    sb_printf(out, "brewslm_tokens_trained_total %lld\n", (long long)atomic_load(&ps->tokens));

    pthread_mutex_lock(&ps->mu);
    sb_puts(out, "# HELP brewslm_http_requests_total HTTP requests answered, by route and code.\n"
                 "# TYPE brewslm_http_requests_total counter\n");
    for (int i = 0; i < ps->n_codes; i++) {
        sb_puts(out, "brewslm_http_requests_total{route=\"");
        put_label(out, ps->codes[i].route);
        sb_printf(out, "\",code=\"%d\"} %lld\n", ps->codes[i].code, ps->codes[i].count);
    }
    sb_puts(out, "# HELP brewslm_http_request_duration_seconds HTTP request latency by route.\n"
                 "# TYPE brewslm_http_request_duration_seconds histogram\n");
    for (int i = 0; i < ps->n_hists; i++) {
        const RouteHist *h = &ps->hists[i];
        long long cum = 0;
        for (int b = 0; b < N_BUCKETS; b++) {
            cum += h->bucket[b];
            sb_puts(out, "brewslm_http_request_duration_seconds_bucket{route=\"");
            put_label(out, h->route);
            sb_printf(out, "\",le=\"%g\"} %lld\n", BUCKETS[b], cum);
        }
        sb_puts(out, "brewslm_http_request_duration_seconds_bucket{route=\"");
        put_label(out, h->route);
        sb_printf(out, "\",le=\"+Inf\"} %lld\n", h->count);
        sb_puts(out, "brewslm_http_request_duration_seconds_sum{route=\"");
        put_label(out, h->route);
        sb_printf(out, "\"} %.9g\n", h->sum);
        sb_puts(out, "brewslm_http_request_duration_seconds_count{route=\"");
        put_label(out, h->route);
        sb_printf(out, "\"} %lld\n", h->count);
    }
    pthread_mutex_unlock(&ps->mu);
}
