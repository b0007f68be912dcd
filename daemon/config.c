// config.c — settings from defaults, file, environment and flags (see config.h).
//
// Every source goes through one table and one setter; each value remembers
// the precedence level it came from, and a lower level never overwrites a
// higher one, so the order sources are read in does not matter.
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "brewslm_config.h"

enum { LV_DEFAULT = 0, LV_FILE, LV_ENV, LV_FLAG };
typedef enum { T_STR, T_INT, T_SIZE } Type;

typedef struct {
    const char *key;  // file key
    const char *flag; // "--listen"
    const char *env;  // "BREWSLM_LISTEN"
    Type type;
    long long lo, hi;
    size_t offset;
} Option;

#define OFF(f) offsetof(DaemonConfig, f)
static const Option OPTIONS[] = {
    {"listen", "--listen", "BREWSLM_LISTEN", T_STR, 0, 0, OFF(listen)},
    {"state_dir", "--state-dir", "BREWSLM_STATE_DIR", T_STR, 0, 0, OFF(state_dir)},
    {"db", "--db", "BREWSLM_DB", T_STR, 0, 0, OFF(db_path)},
    {"data_root", "--data-root", "BREWSLM_DATA_ROOT", T_STR, 0, 0, OFF(data_root)},
    {"max_concurrent_jobs", "--max-concurrent-jobs", "BREWSLM_MAX_CONCURRENT_JOBS", T_INT, 1, 64,
     OFF(max_concurrent_jobs)},
    {"token_file", "--token-file", "BREWSLM_TOKEN_FILE", T_STR, 0, 0, OFF(token_file)},
    {"max_body_bytes", "--max-body-bytes", "BREWSLM_MAX_BODY_BYTES", T_SIZE, 1024, 1LL << 32,
     OFF(max_body_bytes)},
    {"memory_limit", "--memory-limit", "BREWSLM_MEMORY_LIMIT", T_SIZE, 0, 1LL << 50,
     OFF(memory_limit)},
    {"shutdown_timeout", "--shutdown-timeout", "BREWSLM_SHUTDOWN_TIMEOUT", T_INT, 1, 3600,
     OFF(shutdown_timeout_s)},
    {"sse_heartbeat", "--sse-heartbeat", "BREWSLM_SSE_HEARTBEAT", T_INT, 1, 3600,
     OFF(sse_heartbeat_s)},
    {"max_connections", "--max-connections", "BREWSLM_MAX_CONNECTIONS", T_INT, 16, 65536,
     OFF(max_connections)},
};
#define N_OPTIONS ((int)(sizeof(OPTIONS) / sizeof(OPTIONS[0])))

typedef struct {
    DaemonConfig *c;
    int level[N_OPTIONS];
    char *msg;
    size_t msg_len;
} Loader;

static int fail(Loader *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(Loader *L, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(L->msg, L->msg_len, fmt, ap);
    va_end(ap);
    return -1;
}

// "123", "64K", "1M", "8G": powers of 1024.
static int parse_size(const char *s, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || errno || v < 0) return -1;
    long long mul = 1;
    switch (toupper((unsigned char)*end)) {
    case '\0':
        break;
    case 'K':
        mul = 1LL << 10;
        break;
    case 'M':
        mul = 1LL << 20;
        break;
    case 'G':
        mul = 1LL << 30;
        break;
    case 'T':
        mul = 1LL << 40;
        break;
    default:
        return -1;
    }
    if (*end) {
        end++;
        if (toupper((unsigned char)*end) == 'I') end++;
        if (toupper((unsigned char)*end) == 'B') end++;
        if (*end) return -1;
    }
    if (v > (1LL << 62) / mul) return -1;
    *out = v * mul;
    return 0;
}

static int set_option(Loader *L, int i, int level, const char *value, const char *where) {
    const Option *o = &OPTIONS[i];
    if (level < L->level[i]) return 0;
    char *base = (char *)L->c;
    if (o->type == T_STR) {
        if (!*value) return fail(L, "%s: %s must not be empty", where, o->key);
        char *copy = strdup(value);
        if (!copy) return fail(L, "out of memory");
        char **slot = (char **)(base + o->offset);
        free(*slot);
        *slot = copy;
    } else {
        long long v;
        if (o->type == T_INT) {
            char *end;
            errno = 0;
            v = strtoll(value, &end, 10);
            if (end == value || *end || errno) v = o->lo - 1;
        } else if (parse_size(value, &v) < 0) {
            v = o->lo - 1;
        }
        if (v < o->lo || v > o->hi)
            return fail(L, "%s: %s must be %s in [%lld, %lld], got '%s'", where, o->key,
                        o->type == T_SIZE ? "a size" : "an integer", o->lo, o->hi, value);
        if (o->type == T_INT)
            *(int *)(base + o->offset) = (int)v;
        else
            *(long long *)(base + o->offset) = v;
    }
    L->level[i] = level;
    return 0;
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

static int load_file(Loader *L, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return fail(L, "cannot open config file %s: %s", path, strerror(errno));
    char line[4096];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        char where[512];
        snprintf(where, sizeof(where), "%s:%d", path, lineno);
        if (!strchr(line, '\n') && !feof(f)) {
            rc = fail(L, "%s: line too long", where);
            break;
        }
        char *s = trim(line);
        if (*s == '\0' || *s == '#') continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            rc = fail(L, "%s: expected 'key = value'", where);
            break;
        }
        *eq = '\0';
        char *key = trim(s), *val = trim(eq + 1);
        size_t vl = strlen(val);
        if (vl >= 2 && (val[0] == '"' || val[0] == '\'') && val[vl - 1] == val[0]) {
            val[vl - 1] = '\0';
            val++;
        } else {
            char *hash = strstr(val, " #");
            if (hash) *hash = '\0';
            val = trim(val);
        }
        int i;
        for (i = 0; i < N_OPTIONS; i++)
            if (strcmp(OPTIONS[i].key, key) == 0) break;
        if (i == N_OPTIONS) {
            rc = fail(L, "%s: unknown key '%s'", where, key);
            break;
        }
        if ((rc = set_option(L, i, LV_FILE, val, where)) < 0) break;
    }
    if (rc == 0 && ferror(f)) rc = fail(L, "cannot read config file %s", path);
    fclose(f);
    return rc;
}

static void usage(void) {
    printf("usage: brewslmd [--config FILE] [options]\n"
           "  --listen ADDR:PORT         address to serve on (default 127.0.0.1:8080; port 0 "
           "picks one)\n"
           "  --state-dir DIR            job folders and defaults live here (default ./var)\n"
           "  --db FILE                  SQLite database (default <state_dir>/brewslm.db)\n"
           "  --data-root DIR            recipes may only read below this (default "
           "<state_dir>/data)\n"
           "  --max-concurrent-jobs N    jobs training at once (default 1)\n"
           "  --token-file FILE          bearer token required by the API (or BREWSLM_TOKEN)\n"
           "  --max-body-bytes SIZE      request body cap (default 1M)\n"
           "  --memory-limit SIZE        preflight's memory limit (default none)\n"
           "  --shutdown-timeout SECS    wait for jobs to checkpoint on SIGTERM (default 30)\n"
           "  --sse-heartbeat SECS       ': ping' interval on idle event streams (default 15)\n"
           "  --max-connections N        open HTTP connections, SSE streams included (default "
           "1024)\n"
           "Every option is also a config-file key (listen, state_dir, db, data_root, "
           "max_concurrent_jobs,\n"
           "token_file, max_body_bytes, memory_limit, shutdown_timeout, sse_heartbeat, "
           "max_connections)\nand a BREWSLM_* variable.\n");
}

// The token without surrounding white space, checked to be one printable
// word (what fits in an Authorization header); malloc'd, or NULL with msg.
static char *token_copy(Loader *L, const char *raw, const char *where) {
    char *copy = strdup(raw);
    if (!copy) {
        fail(L, "out of memory");
        return NULL;
    }
    char *t = trim(copy);
    const char *why = NULL;
    if (!*t) why = "is empty";
    for (char *p = t; !why && *p; p++)
        if (!isgraph((unsigned char)*p)) why = "must be one word of printable ASCII characters";
    if (!why && strlen(t) < 16)
        fprintf(stderr, "brewslmd: warning: the token from %s is shorter than 16 characters\n",
                where);
    if (why) {
        fail(L, "the token from %s %s", where, why);
        free(copy);
        return NULL;
    }
    memmove(copy, t, strlen(t) + 1);
    return copy;
}

static char *read_token(Loader *L, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fail(L, "cannot open token file %s: %s", path, strerror(errno));
        return NULL;
    }
    char buf[1024];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    int err = ferror(f), more = !feof(f);
    fclose(f);
    if (err || more) {
        fail(L, "token file %s is unreadable or longer than %zu bytes", path, sizeof(buf) - 2);
        return NULL;
    }
    buf[n] = '\0';
    return token_copy(L, buf, path);
}

// "ADDR:PORT", "[V6]:PORT".
static int parse_listen(Loader *L, DaemonConfig *c) {
    const char *s = c->listen;
    const char *colon;
    char host[256];
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':') return fail(L, "listen '%s' must be [ADDR]:PORT", s);
        snprintf(host, sizeof(host), "%.*s", (int)(close - s - 1), s + 1);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon || colon == s) return fail(L, "listen '%s' must be ADDR:PORT", s);
        snprintf(host, sizeof(host), "%.*s", (int)(colon - s), s);
    }
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (!colon[1] || *end || errno || port < 0 || port > 65535)
        return fail(L, "listen '%s': port must be in [0, 65535]", s);
    free(c->host);
    c->host = strdup(host);
    if (!c->host) return fail(L, "out of memory");
    c->port = (int)port;
    return 0;
}

static char *path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

int config_load(DaemonConfig *c, int argc, char **argv, char *msg, size_t msg_len) {
    memset(c, 0, sizeof(*c));
    Loader L = {.c = c, .msg = msg, .msg_len = msg_len};
    c->max_concurrent_jobs = 1;
    c->max_body_bytes = 1 << 20;
    c->shutdown_timeout_s = 30;
    c->sse_heartbeat_s = 15;
    c->max_connections = 1024;

    // Flags first (highest level) so --config is known before the file.
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            usage();
            return 1;
        }
        if (strcmp(arg, "--version") == 0) {
            printf("brewslmd %s\n", BREWSLM_VERSION);
            return 1;
        }
        const char *eq = strchr(arg, '=');
        size_t name_len = eq ? (size_t)(eq - arg) : strlen(arg);
        const char *value = eq ? eq + 1 : NULL;
        if (name_len == 7 && strncmp(arg, "--token", 7) == 0)
            return fail(&L, "--token is not accepted (command lines are visible to every user); "
                            "use --token-file FILE or BREWSLM_TOKEN");
        int i = -1;
        if (name_len == 8 && strncmp(arg, "--config", 8) == 0) {
            i = N_OPTIONS;
        } else {
            for (int k = 0; k < N_OPTIONS; k++)
                if (strlen(OPTIONS[k].flag) == name_len &&
                    strncmp(OPTIONS[k].flag, arg, name_len) == 0)
                    i = k;
        }
        if (i < 0) return fail(&L, "unknown option '%s' (see --help)", arg);
        if (!value) {
            if (a + 1 >= argc) return fail(&L, "option %.*s needs a value", (int)name_len, arg);
            value = argv[++a];
        }
        if (i == N_OPTIONS) {
            free(c->config_file);
            c->config_file = strdup(value);
            if (!c->config_file) return fail(&L, "out of memory");
            continue;
        }
        if (set_option(&L, i, LV_FLAG, value, "command line") < 0) return -1;
    }
    for (int i = 0; i < N_OPTIONS; i++) {
        const char *v = getenv(OPTIONS[i].env);
        if (v && set_option(&L, i, LV_ENV, v, OPTIONS[i].env) < 0) return -1;
    }
    if (!c->config_file && getenv("BREWSLM_CONFIG")) {
        c->config_file = strdup(getenv("BREWSLM_CONFIG"));
        if (!c->config_file) return fail(&L, "out of memory");
    }
    if (c->config_file && load_file(&L, c->config_file) < 0) return -1;

    // Defaults, some derived from state_dir.
    if (!c->listen && !(c->listen = strdup("127.0.0.1:8080"))) return fail(&L, "out of memory");
    if (!c->state_dir && !(c->state_dir = strdup("./var"))) return fail(&L, "out of memory");
    if (!c->db_path && !(c->db_path = path_join(c->state_dir, "brewslm.db")))
        return fail(&L, "out of memory");
    if (!c->data_root && !(c->data_root = path_join(c->state_dir, "data")))
        return fail(&L, "out of memory");
    if (parse_listen(&L, c) < 0) return -1;

    // The token: a --token-file flag wins, then BREWSLM_TOKEN, then a
    // token_file from the environment or the file.
    int tf_level = 0;
    for (int i = 0; i < N_OPTIONS; i++)
        if (OPTIONS[i].offset == OFF(token_file)) tf_level = L.level[i];
    const char *env_token = getenv("BREWSLM_TOKEN");
    if (c->token_file && (tf_level == LV_FLAG || !env_token || !*env_token)) {
        struct stat st;
        if (stat(c->token_file, &st) == 0 && (st.st_mode & 0077))
            fprintf(stderr, "brewslmd: warning: token file %s is readable by other users\n",
                    c->token_file);
        if (!(c->token = read_token(&L, c->token_file))) return -1;
    } else if (env_token && *env_token) {
        if (!(c->token = token_copy(&L, env_token, "BREWSLM_TOKEN"))) return -1;
    }
    return 0;
}

void config_free(DaemonConfig *c) {
    free(c->listen);
    free(c->host);
    free(c->state_dir);
    free(c->db_path);
    free(c->data_root);
    free(c->token_file);
    free(c->token);
    free(c->config_file);
    memset(c, 0, sizeof(*c));
}
