// http_bare.c — the baseline of the HTTP benchmark (tests/bench/http/run_http.sh): a bare
// libmicrohttpd server started with exactly the daemon's options (api/http.c
// http_server_start: internal polling thread + thread per connection + ITC + poll(),
// connection limit 1024, 60 s connection timeout, strict client parsing, a
// completion callback) that answers every GET with one fixed JSON body. No routing,
// no database, no JSON building, no metrics: what brewslmd's GET /v1/jobs/{id} costs
// over this is the cost of our request path.
//
//   http_bare [--body FILE] [--max-seconds N]
//
// Listens on 127.0.0.1, port chosen by the kernel, and prints
// "http_bare listening on http://127.0.0.1:PORT" as its first stdout line (the same
// form as brewslmd). The body is FILE's bytes (the script passes a real job object
// fetched from brewslmd, so both servers send the same bytes) or, without --body, a
// built-in job-shaped object. Stops on SIGTERM / SIGINT, or by itself after
// --max-seconds (default 300) so a lost benchmark never leaves it running.
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

// A job object of the same shape and about the same size as brewslmd's (about 1 KiB).
static const char DEFAULT_BODY[] =
    "{\"id\":\"job_0123456789abcdef\",\"object\":\"job\",\"method\":\"dpo\","
    "\"status\":\"succeeded\",\"created_at\":\"2024-01-01T00:00:00.000Z\","
    "\"started_at\":\"2024-01-01T00:00:00.100Z\",\"finished_at\":\"2024-01-01T00:00:01.200Z\","
    "\"step\":2,\"total_steps\":2,\"epoch\":0.5,\"attempts\":1,\"cancel_requested\":false,"
    "\"error\":null,\"blockers\":[],\"warnings\":[],\"depends_on\":null,"
    "\"output_dir\":\"/tmp/brewslm-http-bench/var/jobs/job_0123456789abcdef\","
    "\"recipe\":{\"method\":\"dpo\",\"beta\":0.1,\"loss_type\":\"sigmoid\",\"data\":\"preference\","
    "\"model_init\":{\"dim\":16,\"n_layers\":1,\"n_heads\":2,\"n_kv_heads\":2,\"hidden_dim\":32,"
    "\"vocab_size\":259,\"max_seq_len\":32},\"train_file\":\"pref.jsonl\",\"max_steps\":2,"
    "\"logging_steps\":1,\"per_device_train_batch_size\":4,\"learning_rate\":0.001,"
    "\"max_length\":32,\"max_prompt_length\":16,\"save_steps\":0,\"seed\":42}}";

static volatile sig_atomic_t stop;

static void on_signal(int sig) {
    (void)sig;
    stop = 1;
}

typedef struct {
    const char *body;
    size_t len;
} Body;

// The daemon's two-call pattern (first call: allocate per-request state; last
// call: answer), so the baseline pays the same libmicrohttpd round trips.
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls) {
    (void)url;
    (void)version;
    (void)upload_data;
    static int first_call_marker;
    const Body *b = cls;
    if (!*con_cls) {
        *con_cls = &first_call_marker;
        return MHD_YES;
    }
    if (*upload_data_size) {
        *upload_data_size = 0; // bodies are ignored
        return MHD_YES;
    }
    unsigned status = strcmp(method, "GET") == 0 ? MHD_HTTP_OK : MHD_HTTP_METHOD_NOT_ALLOWED;
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(b->len, (void *)b->body, MHD_RESPMEM_PERSISTENT);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    enum MHD_Result r = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return r;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)cls;
    (void)conn;
    (void)toe;
    *con_cls = NULL;
}

// The whole of FILE in a malloc'ed buffer (caller frees); NULL on error.
static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 4096;
            if (nc > (64u << 20)) goto fail; // a job object is a few KiB
            char *p = realloc(buf, nc);
            if (!p) goto fail;
            buf = p;
            cap = nc;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    if (ferror(f)) goto fail;
    fclose(f);
    *len = n;
    return buf;
fail:
    free(buf);
    fclose(f);
    return NULL;
}

int main(int argc, char **argv) {
    const char *body_path = NULL;
    long max_seconds = 300;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--body") == 0 && i + 1 < argc) {
            body_path = argv[++i];
        } else if (strcmp(argv[i], "--max-seconds") == 0 && i + 1 < argc) {
            char *end;
            max_seconds = strtol(argv[++i], &end, 10);
            if (*end || max_seconds < 1 || max_seconds > 86400) {
                fprintf(stderr, "http_bare: --max-seconds must be in [1, 86400]\n");
                return 2;
            }
        } else {
            fprintf(stderr, "usage: http_bare [--body FILE] [--max-seconds N]\n");
            return 2;
        }
    }
    Body b = {DEFAULT_BODY, sizeof(DEFAULT_BODY) - 1};
    char *file_body = NULL;
    if (body_path) {
        file_body = read_file(body_path, &b.len);
        if (!file_body) {
            fprintf(stderr, "http_bare: cannot read %s: %s\n", body_path, strerror(errno));
            return 1;
        }
        b.body = file_body;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    struct sockaddr_in addr;
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = 0;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    // The flags and options of api/http.c http_server_start, in the same order.
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ITC |
                     MHD_USE_POLL;
    struct MHD_Daemon *d =
        MHD_start_daemon(flags, 0, NULL, NULL, on_request, &b, MHD_OPTION_SOCK_ADDR,
                         (struct sockaddr *)&addr, MHD_OPTION_CONNECTION_LIMIT, 1024u,
                         MHD_OPTION_CONNECTION_TIMEOUT, 60u, MHD_OPTION_STRICT_FOR_CLIENT, (int)1,
                         MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "http_bare: cannot start libmicrohttpd on 127.0.0.1\n");
        free(file_body);
        return 1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    if (!info || info->port == 0) {
        fprintf(stderr, "http_bare: cannot read the bound port\n");
        MHD_stop_daemon(d);
        free(file_body);
        return 1;
    }
    printf("http_bare listening on http://127.0.0.1:%u\n", (unsigned)info->port);
    fflush(stdout);
    fprintf(stderr, "http_bare: answering GET with a %zu-byte body\n", b.len);
    for (long t = 0; !stop && t < max_seconds * 10; t++)
        usleep(100000);
    MHD_stop_daemon(d);
    free(file_body);
    return stop ? 0 : 3;
}
