// bs.h — shared error and metric types for the brewslm library.
// Library code never prints and never exits: every fallible function returns
// 0 on success or -1 on failure and fills a BsError the caller owns.
#ifndef BS_H
#define BS_H

#include <stddef.h>

typedef struct {
    char code[48];     // machine-readable reason ("io", "invalid_hyperparameter", ...)
    char param[96];    // the offending field or file, "" when none
    char message[512]; // one human sentence, no trailing newline
} BsError;

// Fills err (when non-NULL) and returns -1, so callers can `return bs_fail(...)`.
int bs_fail(BsError *err, const char *code, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void bs_error_clear(BsError *err);

// Reads the whole regular file path (at most max bytes) into a malloc'd,
// NUL-terminated buffer the caller frees; *len excludes the NUL. Errors:
// missing_code when it does not exist, too_large_code when it holds more than
// max bytes, "out_of_memory", and "io" for anything else (not a regular file,
// unreadable), each with what ("tokenizer file", ...) in the message.
int bs_read_file(const char *path, size_t max, const char *what, const char *missing_code,
                 const char *too_large_code, char **out, size_t *len, BsError *err);

// One logged row of metrics: a step and up to BS_MAX_METRICS named values,
// names as Hugging Face TRL spells them ("loss", "rewards/margins", ...).
// Eval rows carry the "eval_" prefix in their names.
#define BS_MAX_METRICS 32
typedef struct {
    int step;
    int is_eval;
    int n;
    const char *name[BS_MAX_METRICS]; // static strings, never freed
    double value[BS_MAX_METRICS];
} MetricRow;

// Sets (or overwrites) a named value; names must be string literals.
void metric_set(MetricRow *row, const char *name, double value);
// Returns 1 and stores the value if the row has it, else 0.
int metric_get(const MetricRow *row, const char *name, double *value);

#endif
