// config.h — brewslmd's settings: defaults, a `key = value` config file,
// BREWSLM_* environment variables and command-line flags, in increasing
// precedence (flags > environment > file > defaults).
//
//   key                  flag                     environment
//   listen               --listen ADDR:PORT       BREWSLM_LISTEN          127.0.0.1:8080
//   state_dir            --state-dir DIR          BREWSLM_STATE_DIR       ./var
//   db                   --db FILE                BREWSLM_DB              <state_dir>/brewslm.db
//   data_root            --data-root DIR          BREWSLM_DATA_ROOT       <state_dir>/data
//   max_concurrent_jobs  --max-concurrent-jobs N  BREWSLM_MAX_CONCURRENT_JOBS  1
//   token_file           --token-file FILE        BREWSLM_TOKEN_FILE      (none)
//   (token itself)       -                        BREWSLM_TOKEN           (none)
//   max_body_bytes       --max-body-bytes SIZE    BREWSLM_MAX_BODY_BYTES  1M
//   memory_limit         --memory-limit SIZE      BREWSLM_MEMORY_LIMIT    0 (no limit)
//   shutdown_timeout     --shutdown-timeout SECS  BREWSLM_SHUTDOWN_TIMEOUT 30
//   sse_heartbeat        --sse-heartbeat SECS     BREWSLM_SSE_HEARTBEAT   15
//   max_connections      --max-connections N      BREWSLM_MAX_CONNECTIONS 1024
//
// max_connections bounds open HTTP connections (one thread each; an SSE
// stream holds one for its whole life); connections over it are closed at
// accept. The open-file limit is raised to fit it at start-up.//
// The file is given with --config FILE (or BREWSLM_CONFIG); '#' starts a
// comment, values may be quoted. SIZE takes an optional K/M/G/T suffix
// (powers of 1024). The token is never accepted on the command line.
#ifndef CONFIG_H
#define CONFIG_H

#include <stddef.h>

typedef struct {
    char *listen; // as given
    char *host;   // parsed from listen ("127.0.0.1", "::1")
    int port;
    char *state_dir;
    char *db_path;
    char *data_root;
    int max_concurrent_jobs;
    char *token_file;
    char *token; // loaded from token_file or BREWSLM_TOKEN; NULL: none
    long long max_body_bytes;
    long long memory_limit;
    int shutdown_timeout_s;
    int sse_heartbeat_s;
    int max_connections;
    char *config_file;
} DaemonConfig;

// Fills c from argv, the environment and the config file. Returns 0 to run,
// 1 when --help / --version was answered (text written to stdout), or -1
// with a message in msg (usage or value error; the caller exits 2).
// c owns its strings: config_free.
int config_load(DaemonConfig *c, int argc, char **argv, char *msg, size_t msg_len);
void config_free(DaemonConfig *c);

#endif
