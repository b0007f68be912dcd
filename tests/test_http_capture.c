// test_http_capture.c — http_handle_request, the socketless path through
// api/http.c's dispatch (the fuzzer's entry point): routing (404, 405 with
// Allow), bearer auth (401 before 404), the body cap (413), the 500 for a
// handler that does not reply, the first reply winning, query and path
// decoding as libmicrohttpd does it, case-blind header lookup, and streamed
// replies read to their end or cut at the byte limit.
#include <string.h>
#include <sys/types.h>

#include "http.h"
#include "test_util.h"

// Echoes what the request carried, as JSON.
static void h_echo(HttpRequest *req, void *user) {
    (void)user;
    size_t len;
    const char *body = http_body(req, &len);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "body_terminated", body[len] == '\0');
    cJSON_AddStringToObject(o, "path", http_path(req));
    const char *id = http_path_param(req, "id");
    cJSON_AddStringToObject(o, "id", id ? id : "(none)");
    const char *q = http_query(req, "q"), *flag = http_query(req, "flag");
    cJSON_AddStringToObject(o, "q", q ? q : "(none)");
    cJSON_AddBoolToObject(o, "flag_null", flag == NULL);
    const char *h = http_header(req, "x-test");
    cJSON_AddStringToObject(o, "header", h ? h : "(none)");
    cJSON_AddNumberToObject(o, "body_len", (double)len);
    cJSON_AddNumberToObject(o, "method", http_method(req));
    http_add_header(req, "X-Seen", "1");
    http_reply_json(req, 200, o);
}

static void h_silent(HttpRequest *req, void *user) {
    (void)req;
    (void)user;
}

static void h_twice(HttpRequest *req, void *user) {
    (void)user;
    http_reply_text(req, 202, "text/plain", "first", 5);
    http_reply_text(req, 200, "text/plain", "second", 6);
}

typedef struct {
    int left; // chunks still to produce
    int *done;
} Counter;

static ssize_t produce(void *state, char *buf, size_t max) {
    Counter *c = state;
    if (c->left == 0) return HTTP_STREAM_END;
    c->left--;
    size_t n = max < 10 ? max : 10;
    memset(buf, 'a' + c->left % 26, n);
    return (ssize_t)n;
}

static void stream_done(void *state) {
    Counter *c = state;
    (*c->done)++;
}

static int stream_done_count;
static Counter stream_state;

static void h_stream(HttpRequest *req, void *user) {
    (void)user;
    long long chunks;
    if (http_query_int(req, "chunks", 0, 1000, 3, &chunks) < 0) return;
    stream_state = (Counter){(int)chunks, &stream_done_count};
    http_reply_stream(req, 200, "text/event-stream", produce, &stream_state, stream_done);
}

static const HttpRoute ROUTES[] = {
    {"/echo/{id}", HTTP_GET | HTTP_POST, 0, h_echo},
    {"/silent", HTTP_GET, 0, h_silent},
    {"/twice", HTTP_GET, 0, h_twice},
    {"/stream", HTTP_GET, 0, h_stream},
    {"/public", HTTP_GET, 1, h_echo},
    {NULL, 0, 0, NULL},
};

static HttpConfig cfg = {.routes = ROUTES, .max_body_bytes = 16};

static cJSON *run(const char *method, const char *url, const char *const *headers, const char *body,
                  size_t max_stream, HttpCapturedReply *r) {
    BsError err = {0};
    CHECK_MSG(http_handle_request(&cfg, method, url, headers, body, body ? strlen(body) : 0,
                                  max_stream, r, &err) == 0,
              "%s", err.message);
    return r->content_type && strcmp(r->content_type, "application/json") == 0
               ? cJSON_Parse(r->body)
               : NULL;
}

static const char *str(const cJSON *o, const char *a, const char *b) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, a);
    if (b) x = cJSON_GetObjectItemCaseSensitive(x, b);
    return cJSON_IsString(x) ? x->valuestring : "";
}

static void test_routing(void) {
    HttpCapturedReply r;
    const char *hdr[] = {"X-TEST", "v1", "x-test", "v2", NULL};
    cJSON *o = run("POST", "/echo/a%62c?q=a+b%21%zz&flag&q=second", hdr, "hello", 0, &r);
    CHECK_INT_EQ(r.status, 200);
    CHECK_MSG(strcmp(str(o, "id", NULL), "abc") == 0, "id %s", str(o, "id", NULL));
    CHECK_MSG(strcmp(str(o, "q", NULL), "a b!%zz") == 0, "q '%s'", str(o, "q", NULL));
    CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "flag_null")));
    CHECK_MSG(strcmp(str(o, "header", NULL), "v1") == 0, "header %s", str(o, "header", NULL));
    CHECK_INT_EQ(cJSON_GetObjectItemCaseSensitive(o, "body_len")->valueint, 5);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "body_terminated")));
    CHECK_INT_EQ(cJSON_GetObjectItemCaseSensitive(o, "method")->valueint, HTTP_POST);
    CHECK(http_captured_header(&r, "x-seen") &&
          strcmp(http_captured_header(&r, "x-seen"), "1") == 0);
    CHECK(!r.streamed && !r.dropped);
    cJSON_Delete(o);
    http_captured_reply_free(&r);

    o = run("GET", "/nowhere", NULL, NULL, 0, &r);
    CHECK_INT_EQ(r.status, 404);
    CHECK(strcmp(str(o, "error", "code"), "route_not_found") == 0);
    cJSON_Delete(o);
    http_captured_reply_free(&r);

    o = run("DELETE", "/echo/1", NULL, NULL, 0, &r);
    CHECK_INT_EQ(r.status, 405);
    const char *allow = http_captured_header(&r, "Allow");
    CHECK_MSG(allow && strcmp(allow, "GET, POST") == 0, "Allow %s", allow ? allow : "(none)");
    cJSON_Delete(o);
    http_captured_reply_free(&r);

    o = run("GET", "/echo/1", NULL, "0123456789abcdefg", 0, &r);
    CHECK_INT_EQ(r.status, 413);
    cJSON_Delete(o);
    http_captured_reply_free(&r);

    o = run("GET", "/silent", NULL, NULL, 0, &r);
    CHECK_INT_EQ(r.status, 500);
    CHECK(strcmp(str(o, "error", "code"), "no_reply") == 0);
    cJSON_Delete(o);
    http_captured_reply_free(&r);

    run("GET", "/twice", NULL, NULL, 0, &r);
    CHECK_INT_EQ(r.status, 202);
    CHECK(strcmp(r.body, "first") == 0 && r.body_len == 5);
    http_captured_reply_free(&r);
}

static void test_auth(void) {
    HttpCapturedReply r;
    cfg.token = "s3cret";
    cJSON *o = run("GET", "/nowhere", NULL, NULL, 0, &r);
    CHECK_INT_EQ(r.status, 401); // before 404: the route map stays hidden
    CHECK(strcmp(str(o, "error", "code"), "missing_token") == 0);
    CHECK(http_captured_header(&r, "WWW-Authenticate") != NULL);
    cJSON_Delete(o);
    http_captured_reply_free(&r);

    const char *bad[] = {"Authorization", "Bearer s3cre", NULL};
    o = run("GET", "/echo/1", bad, NULL, 0, &r);
    CHECK_INT_EQ(r.status, 401);
    CHECK(strcmp(str(o, "error", "code"), "invalid_token") == 0);
    cJSON_Delete(o);
    http_captured_reply_free(&r);

    const char *good[] = {"authorization", "bearer   s3cret ", NULL};
    o = run("GET", "/echo/1", good, NULL, 0, &r);
    CHECK_INT_EQ(r.status, 200);
    cJSON_Delete(o);
    http_captured_reply_free(&r);

    o = run("GET", "/public", NULL, NULL, 0, &r);
    CHECK_INT_EQ(r.status, 200);
    cJSON_Delete(o);
    http_captured_reply_free(&r);
    cfg.token = NULL;
}

static void test_stream(void) {
    HttpCapturedReply r;
    stream_done_count = 0;
    run("GET", "/stream?chunks=3", NULL, NULL, 1000, &r);
    CHECK_INT_EQ(r.status, 200);
    CHECK(r.streamed && !r.truncated && !r.dropped);
    CHECK_INT_EQ(r.body_len, 30);
    CHECK(strcmp(r.body, "ccccccccccbbbbbbbbbbaaaaaaaaaa") == 0);
    CHECK(http_captured_header(&r, "Cache-Control") != NULL);
    CHECK_INT_EQ(stream_done_count, 1);
    http_captured_reply_free(&r);

    // Cut at the limit, mid-chunk, and still ended (done runs once).
    run("GET", "/stream?chunks=100", NULL, NULL, 25, &r);
    CHECK(r.streamed && r.truncated);
    CHECK_INT_EQ(r.body_len, 25);
    CHECK_INT_EQ(strlen(r.body), 25);
    CHECK_INT_EQ(stream_done_count, 2);
    http_captured_reply_free(&r);

    cJSON *o = run("GET", "/stream?chunks=x", NULL, NULL, 25, &r);
    CHECK_INT_EQ(r.status, 400);
    CHECK(strcmp(str(o, "error", "param"), "chunks") == 0);
    CHECK_INT_EQ(stream_done_count, 2);
    cJSON_Delete(o);
    http_captured_reply_free(&r);
}

int main(void) {
    test_routing();
    test_auth();
    test_stream();
    return test_summary("http_capture");
}
