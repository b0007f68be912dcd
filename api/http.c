// http.c — the HTTP layer over libmicrohttpd (see http.h).
//
// Every request gets one HttpRequest, created on the first access-handler
// call and destroyed in the completion callback: its arena blocks, deferred
// cleanups, body and header list are all released there, so handlers never
// free request memory themselves. Decisions are made once the whole body has
// arrived (a reply queued while the client is still sending makes the server
// close the socket under it), except for a declared body far over the cap.
// http_handle_request runs the same dispatch for a request without a
// connection (the fuzzer's entry point): the accessors read its arrays and
// the reply helpers capture instead of queueing.
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "jsoncheck.h"
#include "strbuf.h"

#define MAX_PARAMS 4
#define MAX_EXTRA_HEADERS 8
// A declared body larger than this many caps is refused before reading it;
// smaller oversized bodies are drained so the client can read the 413.
#define EARLY_REJECT_FACTOR 8

struct HttpServer {
    struct MHD_Daemon *mhd;
    HttpConfig cfg;
    char host[INET6_ADDRSTRLEN];
    int port;
    char *token; // the bearer token, NULL without one
    size_t token_len;
};

typedef struct Defer {
    void (*fn)(void *);
    void *ptr;
    struct Defer *next;
} Defer;

typedef struct Block {
    struct Block *next;
    max_align_t data[];
} Block;

struct HttpRequest {
    HttpServer *srv;
    struct MHD_Connection *conn;
    unsigned method;
    const char *path;
    const HttpRoute *route;
    const char *route_label;
    int n_params;
    struct {
        const char *name; // points into the route pattern
        size_t name_len;
        char *value; // arena
    } params[MAX_PARAMS];
    char *body;
    size_t body_len, body_cap;
    int body_too_large;
    struct timespec start;
    Block *blocks;
    Defer *defers;
    int n_headers;
    char *header_name[MAX_EXTRA_HEADERS], *header_value[MAX_EXTRA_HEADERS];
    int replied;
    int status;
    enum MHD_Result queued;
    // A socketless request (http_handle_request) has no connection: its
    // query and headers come from these arrays and its reply lands in capture.
    HttpCapturedReply *capture;
    const char *const *in_headers; // name, value, ..., NULL
    int n_query;
    char **query_name, **query_value; // arena; a value is NULL without '='
    size_t stream_limit;
};

// ---- request memory ------------------------------------------------------

void *http_alloc(HttpRequest *req, size_t n) {
    if (n > SIZE_MAX - sizeof(Block)) return NULL;
    Block *b = malloc(sizeof(Block) + n);
    if (!b) return NULL;
    b->next = req->blocks;
    req->blocks = b;
    return b->data;
}

char *http_strdup(HttpRequest *req, const char *s) {
    size_t n = strlen(s) + 1;
    char *p = http_alloc(req, n);
    if (p) memcpy(p, s, n);
    return p;
}

int http_defer(HttpRequest *req, void (*fn)(void *), void *ptr) {
    Defer *d = malloc(sizeof(*d));
    if (!d) {
        fn(ptr);
        return -1;
    }
    d->fn = fn;
    d->ptr = ptr;
    d->next = req->defers;
    req->defers = d;
    return 0;
}

static void request_free(HttpRequest *req) {
    while (req->defers) {
        Defer *d = req->defers;
        req->defers = d->next;
        d->fn(d->ptr);
        free(d);
    }
    while (req->blocks) {
        Block *b = req->blocks;
        req->blocks = b->next;
        free(b);
    }
    for (int i = 0; i < req->n_headers; i++) {
        free(req->header_name[i]);
        free(req->header_value[i]);
    }
    free(req->body);
    free(req);
}

// ---- accessors -------------------------------------------------------------

unsigned http_method(const HttpRequest *req) {
    return req->method;
}

const char *http_path(const HttpRequest *req) {
    return req->path;
}

const char *http_path_param(const HttpRequest *req, const char *name) {
    size_t n = strlen(name);
    for (int i = 0; i < req->n_params; i++)
        if (req->params[i].name_len == n && memcmp(req->params[i].name, name, n) == 0)
            return req->params[i].value;
    return NULL;
}

const char *http_query(const HttpRequest *req, const char *name) {
    if (!req->conn) {
        // libmicrohttpd's lookup: names compared without case, first match.
        for (int i = 0; i < req->n_query; i++)
            if (strcasecmp(req->query_name[i], name) == 0) return req->query_value[i];
        return NULL;
    }
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *http_header(const HttpRequest *req, const char *name) {
    if (!req->conn) {
        for (const char *const *h = req->in_headers; h && h[0] && h[1]; h += 2)
            if (strcasecmp(h[0], name) == 0) return h[1];
        return NULL;
    }
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *http_body(const HttpRequest *req, size_t *len) {
    if (len) *len = req->body_len;
    return req->body ? req->body : "";
}

// ---- replies ---------------------------------------------------------------

int http_add_header(HttpRequest *req, const char *name, const char *value) {
    if (req->n_headers == MAX_EXTRA_HEADERS) return -1;
    char *n = strdup(name), *v = strdup(value);
    if (!n || !v) {
        free(n);
        free(v);
        return -1;
    }
    req->header_name[req->n_headers] = n;
    req->header_value[req->n_headers] = v;
    req->n_headers++;
    return 0;
}

// ---- captured replies (socketless requests) ----------------------------------

static int capture_header(HttpCapturedReply *c, const char *name, const char *value) {
    if (c->n_headers == HTTP_CAPTURE_MAX_HEADERS) return -1;
    char *n = strdup(name), *v = strdup(value);
    if (!n || !v) {
        free(n);
        free(v);
        return -1;
    }
    c->header_name[c->n_headers] = n;
    c->header_value[c->n_headers] = v;
    c->n_headers++;
    return 0;
}

// What queue() does when no response can be built: a 500 the client never
// sees, the connection dropped.
static void capture_drop(HttpRequest *req) {
    req->capture->dropped = 1;
    req->capture->status = req->status = 500;
}

// Starts the captured reply with the status, content type and pending
// headers. -1 when a reply already went out (the first one stands, as in
// queue()) or when out of memory (the reply is then dropped).
static int capture_begin(HttpRequest *req, int status, const char *content_type) {
    if (req->replied) return -1;
    req->replied = 1;
    HttpCapturedReply *c = req->capture;
    c->status = req->status = status;
    int ok = !content_type || (c->content_type = strdup(content_type)) != NULL;
    for (int i = 0; ok && i < req->n_headers; i++)
        ok = capture_header(c, req->header_name[i], req->header_value[i]) == 0;
    if (!ok) {
        capture_drop(req);
        return -1;
    }
    return 0;
}

static void capture_text(HttpRequest *req, int status, const char *content_type, const char *body,
                         size_t len) {
    if (capture_begin(req, status, content_type) < 0) return;
    char *b = len < SIZE_MAX ? malloc(len + 1) : NULL;
    if (!b) {
        capture_drop(req);
        return;
    }
    if (len) memcpy(b, body, len);
    b[len] = '\0';
    req->capture->body = b;
    req->capture->body_len = len;
}

// Reads the stream on this thread, as the connection thread would, until the
// producer ends it or stream_limit bytes were written; then runs done.
static void capture_stream(HttpRequest *req, int status, const char *content_type,
                           HttpStreamFn produce, void *state, void (*done)(void *)) {
    HttpCapturedReply *c = req->capture;
    if (capture_begin(req, status, content_type) < 0) goto out;
    c->streamed = 1;
    size_t limit = req->stream_limit < SIZE_MAX / 2 ? req->stream_limit : SIZE_MAX / 2;
    size_t len = 0, cap = (limit < 4096 ? limit : 4096) + 1;
    char *buf = malloc(cap);
    if (!buf || capture_header(c, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache") < 0 ||
        capture_header(c, "X-Accel-Buffering", "no") < 0) {
        free(buf);
        capture_drop(req);
        goto out;
    }
    for (;;) {
        if (len == limit) {
            c->truncated = 1;
            break;
        }
        size_t want = limit - len < 4096 ? limit - len : 4096;
        if (cap - len < want + 1) {
            size_t ncap = cap * 2 > len + want + 1 ? cap * 2 : len + want + 1;
            char *p = realloc(buf, ncap);
            if (!p) {
                c->dropped = 1;
                break;
            }
            buf = p;
            cap = ncap;
        }
        ssize_t n = produce(state, buf + len, want);
        if (n == HTTP_STREAM_END) break;
        if (n <= 0 || (size_t)n > want) {
            // stream_read ends the connection on anything else: the client
            // saw the status, then the socket closed.
            c->dropped = 1;
            break;
        }
        len += (size_t)n;
    }
    buf[len] = '\0';
    c->body = buf;
    c->body_len = len;
out:
    if (done) done(state);
}

// Queues resp (consumed) with the pending headers and content type.
static void queue(HttpRequest *req, int status, struct MHD_Response *resp,
                  const char *content_type) {
    if (req->replied) {
        // A handler bug; the first reply stands.
        if (resp) MHD_destroy_response(resp);
        return;
    }
    req->replied = 1;
    if (!resp) {
        req->status = 500;
        req->queued = MHD_NO; // drops the connection
        return;
    }
    if (content_type) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    for (int i = 0; i < req->n_headers; i++)
        MHD_add_response_header(resp, req->header_name[i], req->header_value[i]);
    req->status = status;
    req->queued = MHD_queue_response(req->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
}

void http_reply_text(HttpRequest *req, int status, const char *content_type, const char *body,
                     size_t len) {
    if (req->capture) {
        capture_text(req, status, content_type, body, len);
        return;
    }
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    queue(req, status, resp, content_type);
}

void http_reply_json_text(HttpRequest *req, int status, char *text, size_t len) {
    if (req->capture) {
        capture_text(req, status, "application/json", text, len);
        free(text);
        return;
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!resp) free(text);
    queue(req, status, resp, "application/json");
}

void http_reply_json(HttpRequest *req, int status, cJSON *obj) {
    char *text = obj ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    if (!text) {
        static const char oom[] = "{\"error\":{\"type\":\"internal_error\",\"message\":"
                                  "\"out of memory\",\"param\":null,\"code\":\"oom\"}}";
        http_reply_text(req, 500, "application/json", oom, sizeof(oom) - 1);
        return;
    }
    if (req->capture) {
        capture_text(req, status, "application/json", text, strlen(text));
        free(text);
        return;
    }
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!resp) free(text);
    queue(req, status, resp, "application/json");
}

void http_reply_error_extra(HttpRequest *req, int status, const char *type, const char *code,
                            const char *param, cJSON *extra, const char *message) {
    // Messages and params echo client input (paths, header values, ids):
    // scrubbed so the reply is always valid UTF-8 JSON.
    char msg[1024], par[256];
    snprintf(msg, sizeof(msg), "%s", message ? message : "");
    snprintf(par, sizeof(par), "%s", param ? param : "");
    utf8_scrub(msg);
    utf8_scrub(par);
    cJSON *root = cJSON_CreateObject();
    cJSON *e = cJSON_AddObjectToObject(root, "error");
    if (e) {
        cJSON_AddStringToObject(e, "type", type);
        cJSON_AddStringToObject(e, "message", msg);
        if (par[0])
            cJSON_AddStringToObject(e, "param", par);
        else
            cJSON_AddNullToObject(e, "param");
        if (code && *code)
            cJSON_AddStringToObject(e, "code", code);
        else
            cJSON_AddNullToObject(e, "code");
    }
    if (extra) {
        cJSON *item = extra->child;
        while (item) {
            cJSON *next = item->next;
            cJSON_AddItemToObject(root, item->string, cJSON_DetachItemViaPointer(extra, item));
            item = next;
        }
        cJSON_Delete(extra);
    }
    http_reply_json(req, status, root);
}

void http_reply_error(HttpRequest *req, int status, const char *type, const char *code,
                      const char *param, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    http_reply_error_extra(req, status, type, code, param, NULL, msg);
}

typedef struct {
    HttpStreamFn produce;
    void *state;
    void (*done)(void *);
} Stream;

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    Stream *st = cls;
    ssize_t n = st->produce(st->state, buf, max);
    if (n == HTTP_STREAM_END) return MHD_CONTENT_READER_END_OF_STREAM;
    if (n <= 0) return MHD_CONTENT_READER_END_WITH_ERROR;
    return n;
}

static void stream_free(void *cls) {
    Stream *st = cls;
    if (st->done) st->done(st->state);
    free(st);
}

void http_reply_stream(HttpRequest *req, int status, const char *content_type, HttpStreamFn produce,
                       void *state, void (*done)(void *)) {
    if (req->capture) {
        capture_stream(req, status, content_type, produce, state, done);
        return;
    }
    Stream *st = malloc(sizeof(*st));
    if (!st) {
        if (done) done(state);
        http_reply_error(req, 500, "internal_error", "oom", NULL, "out of memory");
        return;
    }
    st->produce = produce;
    st->state = state;
    st->done = done;
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, st, stream_free);
    if (!resp) {
        stream_free(st);
        http_reply_error(req, 500, "internal_error", "oom", NULL, "out of memory");
        return;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    queue(req, status, resp, content_type);
}

// ---- validating helpers ----------------------------------------------------

int http_body_format(HttpRequest *req, HttpBodyFormat *fmt) {
    const char *ct = http_header(req, MHD_HTTP_HEADER_CONTENT_TYPE);
    char base[96] = "";
    if (ct) {
        while (*ct == ' ' || *ct == '\t')
            ct++;
        size_t n = strcspn(ct, "; \t");
        if (n < sizeof(base)) {
            memcpy(base, ct, n);
            base[n] = '\0';
        }
    }
    if (strcasecmp(base, "application/json") == 0) {
        *fmt = HTTP_BODY_JSON;
    } else if (strcasecmp(base, "application/yaml") == 0 ||
               strcasecmp(base, "application/x-yaml") == 0 || strcasecmp(base, "text/yaml") == 0) {
        *fmt = HTTP_BODY_YAML;
    } else {
        http_reply_error(req, 415, "invalid_request", "unsupported_media_type", "Content-Type",
                         "Content-Type must be application/json or application/yaml (got %s)",
                         ct && *ct ? ct : "none");
        return -1;
    }
    if (req->body_len == 0) {
        http_reply_error(req, 400, "invalid_request", "empty_body", NULL,
                         "the request body is empty");
        return -1;
    }
    return 0;
}

int http_body_check(HttpRequest *req, HttpBodyFormat fmt, int max_depth) {
    size_t len;
    const char *body = http_body(req, &len);
    // Refusing other bytes here keeps every stored and echoed string valid.
    if (!utf8_valid(body, len)) {
        http_reply_error(req, 400, "invalid_request", "invalid_utf8", NULL,
                         "the body is not valid UTF-8");
        return -1;
    }
    if (fmt != HTTP_BODY_JSON) return 0;
    char why[128];
    int is_obj = 0;
    if (json_check(body, len, max_depth, &is_obj, why, sizeof(why)) < 0) {
        http_reply_error(req, 400, "invalid_request", "malformed_json", NULL,
                         "the body is not valid JSON: %s", why);
        return -1;
    }
    if (!is_obj) {
        http_reply_error(req, 400, "invalid_request", "malformed_body", NULL,
                         "the body must be a JSON object");
        return -1;
    }
    return 0;
}

int http_parse_int(const char *v, long long lo, long long hi, long long *out) {
    const char *digits = v[0] == '-' ? v + 1 : v;
    if (*digits < '0' || *digits > '9') return -1;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (*end != '\0' || errno != 0 || x < lo || x > hi) return -1;
    *out = x;
    return 0;
}

int http_query_int(HttpRequest *req, const char *name, long long lo, long long hi, long long def,
                   long long *out) {
    const char *v = http_query(req, name);
    if (!v) {
        *out = def;
        return 0;
    }
    long long x;
    if (http_parse_int(v, lo, hi, &x) < 0) {
        http_reply_error(req, 400, "invalid_request", "invalid_parameter", name,
                         "query parameter %s must be an integer in [%lld, %lld]", name, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

// ---- routing -----------------------------------------------------------------

static unsigned parse_method(const char *m) {
    static const struct {
        const char *name;
        unsigned bit;
    } table[] = {{"GET", HTTP_GET},        {"POST", HTTP_POST},   {"PUT", HTTP_PUT},
                 {"DELETE", HTTP_DELETE},  {"PATCH", HTTP_PATCH}, {"HEAD", HTTP_HEAD},
                 {"OPTIONS", HTTP_OPTIONS}};
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
        if (strcmp(m, table[i].name) == 0) return table[i].bit;
    return HTTP_OTHER;
}

// Length of the path segment at s (up to '/' or the end). A plain loop:
// segments are a few bytes, and every request tries every route, where
// strcspn's per-call set-up showed in profiles of the job poll.
static size_t seg_len(const char *s) {
    size_t n = 0;
    while (s[n] && s[n] != '/')
        n++;
    return n;
}

// Matches path against pattern; on success fills req's params (when fill).
static int route_match(HttpRequest *req, const char *pattern, const char *path, int fill) {
    const char *p = pattern, *s = path;
    int n = 0;
    while (*p && *s) {
        if (*p != '/' || *s != '/') return 0;
        p++;
        s++;
        size_t plen = seg_len(p), slen = seg_len(s);
        if (plen >= 2 && p[0] == '{' && p[plen - 1] == '}') {
            if (slen == 0 || n == MAX_PARAMS) return 0;
            if (fill) {
                char *v = http_alloc(req, slen + 1);
                if (!v) return 0;
                memcpy(v, s, slen);
                v[slen] = '\0';
                req->params[n].name = p + 1;
                req->params[n].name_len = plen - 2;
                req->params[n].value = v;
            }
            n++;
        } else if (plen != slen || memcmp(p, s, plen) != 0) {
            return 0;
        }
        p += plen;
        s += slen;
    }
    if (*p || *s) return 0;
    if (fill) req->n_params = n;
    return 1;
}

// Compares a guess with the secret in time that depends only on the
// secret's length: every byte of the secret is visited whatever the guess,
// no early exit, and the length mismatch is folded into the same accumulator
// (volatile, so the compiler cannot turn the loop back into a memcmp).
static int const_time_eq(const char *guess, size_t glen, const char *secret, size_t slen) {
    volatile unsigned char diff = (unsigned char)(glen != slen);
    for (size_t i = 0; i < slen; i++) {
        unsigned char g = i < glen ? (unsigned char)guess[i] : 0;
        diff |= (unsigned char)(g ^ (unsigned char)secret[i]);
    }
    return diff == 0;
}

// 1 when the Authorization header carries the server's bearer token. The
// scheme is case-insensitive (RFC 7235); the token is compared in constant time.
static int auth_ok(const HttpServer *srv, const char *h) {
    if (!h || strncasecmp(h, "Bearer", 6) != 0 || (h[6] != ' ' && h[6] != '\t')) return 0;
    h += 7;
    while (*h == ' ' || *h == '\t')
        h++;
    size_t n = strlen(h);
    while (n > 0 && (h[n - 1] == ' ' || h[n - 1] == '\t'))
        n--;
    return const_time_eq(h, n, srv->token, srv->token_len);
}

static void dispatch(HttpRequest *req) {
    HttpServer *srv = req->srv;
    const HttpRoute *match = NULL;
    unsigned allowed = 0;
    for (const HttpRoute *r = srv->cfg.routes; r && r->pattern; r++) {
        if (!route_match(req, r->pattern, req->path, 0)) continue;
        allowed |= r->methods;
        if (r->methods & req->method) {
            match = r; // allowed (for a 405's Allow) is only read without a match
            break;
        }
    }
    const HttpRoute *any = NULL;
    if (!match) {
        for (const HttpRoute *r = srv->cfg.routes; r && r->pattern; r++)
            if (route_match(req, r->pattern, req->path, 0)) {
                any = r;
                break;
            }
    }
    const HttpRoute *labelled = match ? match : any;
    if (labelled) req->route_label = labelled->pattern;

    // Unknown paths need the token too (401 before 404), so the route map is
    // not visible to a client without it.
    if (srv->token && !(labelled && labelled->is_public)) {
        const char *h = http_header(req, MHD_HTTP_HEADER_AUTHORIZATION);
        if (!auth_ok(srv, h)) {
            http_add_header(req, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
            http_reply_error(req, 401, "authentication_error",
                             h ? "invalid_token" : "missing_token", NULL, "%s",
                             h ? "the bearer token is not valid"
                               : "an Authorization: Bearer <token> header is required");
            return;
        }
    }
    if (req->body_too_large) {
        http_reply_error(req, 413, "invalid_request", "body_too_large", NULL,
                         "the request body is larger than %zu bytes", srv->cfg.max_body_bytes);
        return;
    }
    if (!match && allowed) {
        StrBuf sb;
        sb_init(&sb);
        static const char *names[] = {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"};
        for (int i = 0; i < 7; i++) {
            if (!(allowed & (1u << i))) continue;
            if (sb.len) sb_puts(&sb, ", ");
            sb_puts(&sb, names[i]);
        }
        char *allow = sb_take(&sb, NULL);
        if (allow) {
            http_add_header(req, MHD_HTTP_HEADER_ALLOW, allow);
            free(allow);
        }
        http_reply_error(req, 405, "invalid_request", "method_not_allowed", NULL,
                         "method not allowed on %s", req->path);
        return;
    }
    if (!match) {
        http_reply_error(req, 404, "not_found", "route_not_found", NULL, "no route for %s",
                         req->path);
        return;
    }
    if (!route_match(req, match->pattern, req->path, 1)) {
        http_reply_error(req, 500, "internal_error", "oom", NULL, "out of memory");
        return;
    }
    req->route = match;
    match->handler(req, srv->cfg.user);
    if (!req->replied)
        http_reply_error(req, 500, "internal_error", "no_reply", NULL,
                         "the handler produced no response");
}

// ---- libmicrohttpd callbacks -----------------------------------------------

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls) {
    (void)version;
    HttpServer *srv = cls;
    HttpRequest *req = *con_cls;
    if (!req) {
        req = calloc(1, sizeof(*req));
        if (!req) return MHD_NO;
        req->srv = srv;
        req->conn = conn;
        req->method = parse_method(method);
        req->route_label = "unmatched";
        clock_gettime(CLOCK_MONOTONIC, &req->start);
        *con_cls = req;
        req->path = http_strdup(req, url);
        if (!req->path) return MHD_NO;
        const char *cl =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl) {
            unsigned long long n = strtoull(cl, NULL, 10);
            size_t cap = srv->cfg.max_body_bytes;
            if (n > cap && (cap > SIZE_MAX / EARLY_REJECT_FACTOR ||
                            n > (unsigned long long)cap * EARLY_REJECT_FACTOR)) {
                req->body_too_large = 1;
                http_add_header(req, MHD_HTTP_HEADER_CONNECTION, "close");
                dispatch(req);
                return req->queued;
            }
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (req->replied || req->body_too_large) return MHD_YES;
        if (n > srv->cfg.max_body_bytes - req->body_len) {
            req->body_too_large = 1; // keep draining, answer at the end
            free(req->body);
            req->body = NULL;
            req->body_len = req->body_cap = 0;
            return MHD_YES;
        }
        if (req->body_len + n + 1 > req->body_cap) {
            size_t cap = req->body_cap ? req->body_cap : 4096;
            while (cap < req->body_len + n + 1)
                cap *= 2;
            char *p = realloc(req->body, cap);
            if (!p) return MHD_NO;
            req->body = p;
            req->body_cap = cap;
        }
        memcpy(req->body + req->body_len, upload_data, n);
        req->body_len += n;
        req->body[req->body_len] = '\0';
        return MHD_YES;
    }
    if (req->replied) return req->queued;
    dispatch(req);
    return req->queued;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)conn;
    (void)toe;
    HttpServer *srv = cls;
    HttpRequest *req = *con_cls;
    if (!req) return;
    *con_cls = NULL;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double secs = (double)(now.tv_sec - req->start.tv_sec) +
                  (double)(now.tv_nsec - req->start.tv_nsec) * 1e-9;
    if (req->replied)
        promstats_observe_request(srv->cfg.stats, req->route_label, req->status, secs);
    request_free(req);
}

// ---- socketless requests -------------------------------------------------------

static int hex_val(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// Decodes s in place as libmicrohttpd does: %XX escapes (a '%' without two
// hex digits stays), and with plus (query names and values) '+' as a space.
// A %00 ends the string, as it does there.
static void url_unescape(char *s, int plus) {
    char *r = s, *w = s;
    while (*r) {
        int hi, lo;
        if (*r == '%' && (hi = hex_val(r[1])) >= 0 && (lo = hex_val(r[2])) >= 0) {
            *w++ = (char)(hi * 16 + lo);
            r += 3;
        } else {
            *w++ = plus && *r == '+' ? ' ' : *r;
            r++;
        }
    }
    *w = '\0';
}

// Splits the query (after '?') into decoded name / value pairs in the arena,
// as MHD_parse_arguments_ does: '&' separates, the first '=' splits, a name
// without '=' has a NULL value.
static int parse_query(HttpRequest *req, const char *q) {
    size_t n = 1;
    for (const char *p = q; *p; p++)
        n += *p == '&';
    if (n > SIZE_MAX / sizeof(char *)) return -1;
    char *args = http_strdup(req, q);
    req->query_name = http_alloc(req, n * sizeof(char *));
    req->query_value = http_alloc(req, n * sizeof(char *));
    if (!args || !req->query_name || !req->query_value) return -1;
    while (*args) {
        char *amp = strchr(args, '&');
        if (amp) *amp = '\0';
        char *eq = strchr(args, '=');
        if (eq) *eq++ = '\0';
        url_unescape(args, 1);
        if (eq) url_unescape(eq, 1);
        req->query_name[req->n_query] = args;
        req->query_value[req->n_query] = eq;
        req->n_query++;
        if (!amp) break;
        args = amp + 1;
    }
    return 0;
}

int http_handle_request(const HttpConfig *cfg, const char *method, const char *url,
                        const char *const *headers, const char *body, size_t body_len,
                        size_t max_stream_bytes, HttpCapturedReply *out, BsError *err) {
    memset(out, 0, sizeof(*out));
    HttpServer srv;
    memset(&srv, 0, sizeof(srv));
    srv.cfg = *cfg;
    HttpRequest *req = calloc(1, sizeof(*req));
    if (!req) return bs_fail(err, "oom", "", "out of memory");
    if (cfg->token && *cfg->token) {
        srv.token = strdup(cfg->token);
        if (!srv.token) goto oom;
        srv.token_len = strlen(srv.token);
    }
    req->srv = &srv;
    req->method = parse_method(method);
    req->route_label = "unmatched";
    clock_gettime(CLOCK_MONOTONIC, &req->start);
    req->capture = out;
    req->in_headers = headers;
    req->stream_limit = max_stream_bytes;
    const char *q = strchr(url, '?');
    size_t plen = q ? (size_t)(q - url) : strlen(url);
    char *path = http_alloc(req, plen + 1);
    if (!path) goto oom;
    memcpy(path, url, plen);
    path[plen] = '\0';
    url_unescape(path, 0);
    req->path = path;
    if (q && parse_query(req, q + 1) < 0) goto oom;
    size_t cap = cfg->max_body_bytes;
    if (body_len > cap) {
        // The server refuses a declared body this large before reading it.
        req->body_too_large = 1;
        if (cap <= SIZE_MAX / EARLY_REJECT_FACTOR && body_len > cap * EARLY_REJECT_FACTOR)
            http_add_header(req, MHD_HTTP_HEADER_CONNECTION, "close");
    } else if (body_len > 0) {
        req->body = malloc(body_len + 1);
        if (!req->body) goto oom;
        memcpy(req->body, body, body_len);
        req->body[body_len] = '\0';
        req->body_len = body_len;
        req->body_cap = body_len + 1;
    }
    dispatch(req);
    if (req->replied) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        double secs = (double)(now.tv_sec - req->start.tv_sec) +
                      (double)(now.tv_nsec - req->start.tv_nsec) * 1e-9;
        promstats_observe_request(cfg->stats, req->route_label, req->status, secs);
    }
    request_free(req);
    free(srv.token);
    return 0;
oom:
    request_free(req);
    free(srv.token);
    http_captured_reply_free(out);
    return bs_fail(err, "oom", "", "out of memory");
}

const char *http_captured_header(const HttpCapturedReply *r, const char *name) {
    for (int i = 0; i < r->n_headers; i++)
        if (strcasecmp(r->header_name[i], name) == 0) return r->header_value[i];
    return NULL;
}

void http_captured_reply_free(HttpCapturedReply *r) {
    if (!r) return;
    free(r->content_type);
    for (int i = 0; i < r->n_headers; i++) {
        free(r->header_name[i]);
        free(r->header_value[i]);
    }
    free(r->body);
    memset(r, 0, sizeof(*r));
}

// ---- server ----------------------------------------------------------------

int http_host_is_loopback(const char *host) {
    if (strcmp(host, "localhost") == 0) return 1;
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1) return IN6_IS_ADDR_LOOPBACK(&a6);
    return 0;
}

HttpServer *http_server_start(const HttpConfig *cfg, BsError *err) {
    HttpServer *srv = calloc(1, sizeof(*srv));
    if (!srv) {
        bs_fail(err, "oom", "", "out of memory");
        return NULL;
    }
    srv->cfg = *cfg;
    if (cfg->token && *cfg->token) {
        srv->token = strdup(cfg->token);
        if (!srv->token) {
            bs_fail(err, "oom", "", "out of memory");
            goto fail;
        }
        srv->token_len = strlen(srv->token);
    }

    struct sockaddr_in sa4;
    struct sockaddr_in6 sa6;
    struct sockaddr *sa;
    // poll(), not select(): connection threads must work with descriptors
    // above FD_SETSIZE once the connection limit is raised.
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ITC |
                     MHD_USE_POLL;
    const char *host = strcmp(cfg->host, "localhost") == 0 ? "127.0.0.1" : cfg->host;
    if (cfg->port < 0 || cfg->port > 65535) {
        bs_fail(err, "invalid_argument", "listen", "port %d is out of range", cfg->port);
        goto fail;
    }
    memset(&sa4, 0, sizeof(sa4));
    memset(&sa6, 0, sizeof(sa6));
    if (inet_pton(AF_INET, host, &sa4.sin_addr) == 1) {
        sa4.sin_family = AF_INET;
        sa4.sin_port = htons((uint16_t)cfg->port);
        sa = (struct sockaddr *)&sa4;
    } else if (inet_pton(AF_INET6, host, &sa6.sin6_addr) == 1) {
        sa6.sin6_family = AF_INET6;
        sa6.sin6_port = htons((uint16_t)cfg->port);
        sa = (struct sockaddr *)&sa6;
        flags |= MHD_USE_IPv6;
    } else {
        bs_fail(err, "invalid_argument", "listen",
                "listen address '%s' is not a numeric IPv4/IPv6 address or localhost", cfg->host);
        goto fail;
    }
    snprintf(srv->host, sizeof(srv->host), "%s", host);

    srv->mhd = MHD_start_daemon(
        flags, (uint16_t)cfg->port, NULL, NULL, on_request, srv, MHD_OPTION_SOCK_ADDR, sa,
        MHD_OPTION_CONNECTION_LIMIT, cfg->connection_limit ? cfg->connection_limit : 1024u,
        MHD_OPTION_CONNECTION_TIMEOUT, cfg->connection_timeout_s ? cfg->connection_timeout_s : 60u,
        // Strict HTTP/1.1 parsing (Host required, no bare LF, no space before
        // ':'): a request smuggled past a lenient proxy is refused here.
        MHD_OPTION_STRICT_FOR_CLIENT, (int)1, MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
        MHD_OPTION_END);
    if (!srv->mhd) {
        bs_fail(err, "io", "listen", "cannot listen on %s:%d (address in use or not available)",
                cfg->host, cfg->port);
        goto fail;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->mhd, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = info ? info->port : cfg->port;
    return srv;
fail:
    free(srv->token);
    free(srv);
    return NULL;
}

int http_server_port(const HttpServer *s) {
    return s->port;
}

const char *http_server_host(const HttpServer *s) {
    return s->host;
}

void http_server_quiesce(HttpServer *s) {
    if (!s || !s->mhd) return;
    MHD_socket fd = MHD_quiesce_daemon(s->mhd);
    if (fd != MHD_INVALID_SOCKET) close(fd);
}

void http_server_stop(HttpServer *s) {
    if (!s) return;
    if (s->mhd) MHD_stop_daemon(s->mhd);
    free(s->token);
    free(s);
}
