// promstats.h — the daemon's Prometheus series kept in memory: HTTP request
// counters by (route, code), a request latency histogram by route, and the
// trained steps / tokens counters. Thread-safe; rendering follows the text
// exposition format 0.0.4.
#ifndef PROMSTATS_H
#define PROMSTATS_H

#include "strbuf.h"

typedef struct PromStats PromStats;

// NULL on allocation failure. Free with promstats_free.
PromStats *promstats_create(void);
void promstats_free(PromStats *ps);

// route must be a string that outlives ps (a route pattern or a literal).
void promstats_observe_request(PromStats *ps, const char *route, int code, double seconds);
void promstats_add_steps(PromStats *ps, long long n);
void promstats_add_tokens(PromStats *ps, long long n);

// Appends brewslm_steps_trained_total, brewslm_tokens_trained_total,
// brewslm_http_requests_total and brewslm_http_request_duration_seconds.
void promstats_render(PromStats *ps, StrBuf *out);

// Appends one gauge family `name` with one sample per label value.
void promstats_render_gauge(StrBuf *out, const char *name, const char *help, const char *label,
                            const char *const *values, const long long *samples, int n);

#endif
