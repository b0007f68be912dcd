// http.h — a small HTTP layer over libmicrohttpd: a route table matched on
// method + path pattern, request-scoped memory freed in one place, bearer
// token auth, a body cap, JSON error replies, long-lived streamed responses
// (SSE) and per-route request counters / latency histograms.
//
// Threading: the server runs libmicrohttpd with an internal polling thread
// and one thread per connection (poll(), so descriptors above FD_SETSIZE
// work), so a handler (and a stream producer) may block; every handler runs
// on its connection's thread. A client that stops reading stalls only its
// own thread. Connections over the limit are closed at accept.
//
// Handlers are flat: the reply helpers send the response themselves, and the
// validating helpers (http_body_format, ...) reply with an error and return -1
// so a handler just returns.
#ifndef HTTP_H
#define HTTP_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <sys/types.h>

#include "bs.h"
#include "promstats.h"

typedef struct HttpServer HttpServer;
typedef struct HttpRequest HttpRequest;

enum {
    HTTP_GET = 1 << 0,
    HTTP_POST = 1 << 1,
    HTTP_PUT = 1 << 2,
    HTTP_DELETE = 1 << 3,
    HTTP_PATCH = 1 << 4,
    HTTP_HEAD = 1 << 5,
    HTTP_OPTIONS = 1 << 6,
    HTTP_OTHER = 1 << 7,
};

typedef void (*HttpHandler)(HttpRequest *req, void *user);

// One route: pattern segments written "{name}" match one non-empty path
// segment, readable with http_path_param. Patterns are matched in table
// order; a path that matches a pattern but not its methods is answered 405
// with an Allow header.
typedef struct {
    const char *pattern; // "/v1/jobs/{id}/cancel"
    unsigned methods;    // HTTP_GET | ...
    int is_public;       // 1: no bearer token needed (e.g. /healthz)
    HttpHandler handler;
} HttpRoute;

typedef struct {
    const char *host;              // numeric address or "localhost"
    int port;                      // 0: ephemeral
    const char *token;             // NULL or "": no auth
    size_t max_body_bytes;         // bodies over this are answered 413
    unsigned connection_limit;     // open connections (one thread each); 0: 1024
    unsigned connection_timeout_s; // idle keep-alive / stalled upload timeout
    const HttpRoute *routes;       // terminated by a NULL pattern
    void *user;                    // passed to every handler
    PromStats *stats;              // request counters; NULL: none
} HttpConfig;

// Binds and starts serving. The route table and strings in cfg must outlive
// the server. Returns NULL with err on failure (bad address, bind error).
HttpServer *http_server_start(const HttpConfig *cfg, BsError *err);
// The bound port (useful with port 0) and address as text ("127.0.0.1").
int http_server_port(const HttpServer *s);
const char *http_server_host(const HttpServer *s);
// Stops accepting new connections (existing ones continue).
void http_server_quiesce(HttpServer *s);
// Stops the server: closes connections and joins their threads. Streams must
// have been told to end first (their producers block otherwise). NULL: no-op.
void http_server_stop(HttpServer *s);

// 1 when host names a loopback address (127.0.0.0/8, ::1, localhost).
int http_host_is_loopback(const char *host);

// ---- socketless requests (fuzzing, tests) ----------------------------------

#define HTTP_CAPTURE_MAX_HEADERS 12

// One reply of http_handle_request. Every string is malloc'd and owned by
// the struct (http_captured_reply_free).
typedef struct {
    int status;
    char *content_type; // NULL when the reply set none
    int n_headers;      // the extra headers (http_add_header, a stream's Cache-Control, ...)
    char *header_name[HTTP_CAPTURE_MAX_HEADERS], *header_value[HTTP_CAPTURE_MAX_HEADERS];
    char *body; // NUL-terminated (the NUL is not counted in body_len); NULL only when dropped
    size_t body_len;
    int streamed;  // 1: http_reply_stream; body holds what the producer wrote
    int truncated; // 1: the stream was ended at max_stream_bytes
    int dropped;   // 1: the server would have closed the connection instead of answering
                   // (no response could be built, or a stream producer failed)
} HttpCapturedReply;

// Runs one request through the same path as the server (route match, bearer
// auth, body cap, 404 / 405, the handler, the 500 for a handler that did not
// reply) without a socket. cfg supplies routes, user, token, max_body_bytes
// and stats (host, port and the connection settings are ignored). url is
// "path?query": the path and the query names and values are decoded as
// libmicrohttpd decodes them (%XX; '+' is a space in the query). headers is
// NULL or name, value, ..., NULL; lookups ignore case and take the first
// match. body may hold any bytes. The reply is captured into *out instead of
// being sent; a streamed reply is read on this thread until its producer ends
// it or max_stream_bytes were written, then ended. Returns 0 with *out filled
// (free it with http_captured_reply_free), or -1 with err when out of memory
// before a reply existed (*out is then empty).
int http_handle_request(const HttpConfig *cfg, const char *method, const char *url,
                        const char *const *headers, const char *body, size_t body_len,
                        size_t max_stream_bytes, HttpCapturedReply *out, BsError *err);
// The first captured extra header called name (case ignored), or NULL.
const char *http_captured_header(const HttpCapturedReply *r, const char *name);
// Frees what *r holds and empties it; NULL is a no-op.
void http_captured_reply_free(HttpCapturedReply *r);

// ---- request accessors (strings live until the request completes) -------

unsigned http_method(const HttpRequest *req);
const char *http_path(const HttpRequest *req);
const char *http_path_param(const HttpRequest *req, const char *name);
const char *http_query(const HttpRequest *req, const char *name);
const char *http_header(const HttpRequest *req, const char *name);
// The request body (NUL-terminated for convenience), len may be NULL.
const char *http_body(const HttpRequest *req, size_t *len);

// Request-scoped memory: freed when the request completes. NULL on OOM.
void *http_alloc(HttpRequest *req, size_t n);
char *http_strdup(HttpRequest *req, const char *s);
// Registers fn(ptr) to run when the request completes (e.g. cJSON_Delete),
// in reverse registration order. Returns -1 (and runs fn(ptr) at once) on OOM.
int http_defer(HttpRequest *req, void (*fn)(void *), void *ptr);

// ---- replies (exactly one per request) ---------------------------------

// Adds a header to the eventual response (before the reply call).
int http_add_header(HttpRequest *req, const char *name, const char *value);
// Serializes and sends obj; takes ownership of obj (deleted here).
void http_reply_json(HttpRequest *req, int status, cJSON *obj);
void http_reply_text(HttpRequest *req, int status, const char *content_type, const char *body,
                     size_t len);
// Sends len bytes of already serialized JSON; takes ownership of text (a
// malloc'ed buffer, freed here or when the response is done), so a hot path
// hands its buffer to the connection without another copy.
void http_reply_json_text(HttpRequest *req, int status, char *text, size_t len);
// {"error":{"type","message","param","code"}}; param / code may be NULL.
void http_reply_error(HttpRequest *req, int status, const char *type, const char *code,
                      const char *param, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
// Like http_reply_error with extra top-level members merged in (extra is
// consumed; e.g. {"blockers":[...]}).
void http_reply_error_extra(HttpRequest *req, int status, const char *type, const char *code,
                            const char *param, cJSON *extra, const char *message);

// A streamed response of unknown length. produce is called on the
// connection thread whenever the socket can take more; it may block. It
// returns bytes written into buf (> 0), 0 never, HTTP_STREAM_END to finish,
// or HTTP_STREAM_ERROR to drop the connection. done(state) runs once when the
// response is freed (also when the client went away).
#define HTTP_STREAM_END ((ssize_t)-1)
#define HTTP_STREAM_ERROR ((ssize_t)-2)
typedef ssize_t (*HttpStreamFn)(void *state, char *buf, size_t max);
void http_reply_stream(HttpRequest *req, int status, const char *content_type, HttpStreamFn produce,
                       void *state, void (*done)(void *state));

// ---- validating helpers: reply themselves and return -1 on failure -------

typedef enum { HTTP_BODY_JSON = 1, HTTP_BODY_YAML = 2 } HttpBodyFormat;
// Content-Type must be application/json or application/yaml,
// application/x-yaml, text/yaml (parameters like charset ignored): else 415.
// An empty body is answered 400.
int http_body_format(HttpRequest *req, HttpBodyFormat *fmt);
// The body must be UTF-8 (JSON and YAML bodies are: RFC 8259, a BOM-less
// YAML stream) and, for HTTP_BODY_JSON, one strict RFC 8259 object nested at
// most max_depth deep (json_check): else 400 invalid_utf8 / malformed_json /
// malformed_body.
int http_body_check(HttpRequest *req, HttpBodyFormat fmt, int max_depth);
// Parses v as a base-10 integer in [lo, hi]: an optional '-' and digits
// only (no spaces, '+', exponents). Returns 0, or -1 for anything else.
int http_parse_int(const char *v, long long lo, long long hi, long long *out);
// Parses the query parameter as a base-10 integer in [lo, hi]; absent: def.
// Out of range or not a number: 400 naming the parameter.
int http_query_int(HttpRequest *req, const char *name, long long lo, long long hi, long long def,
                   long long *out);

#endif
