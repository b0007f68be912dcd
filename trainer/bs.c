// bs.c — error filling and metric rows shared by every module.
#include "bs.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int bs_fail(BsError *err, const char *code, const char *param, const char *fmt, ...) {
    if (!err) return -1;
    snprintf(err->code, sizeof err->code, "%s", code ? code : "error");
    snprintf(err->param, sizeof err->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return -1;
}

int bs_read_file(const char *path, size_t max, const char *what, const char *missing_code,
                 const char *too_large_code, char **out, size_t *len, BsError *err) {
    *out = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        return bs_fail(err, e == ENOENT ? missing_code : "io", path, "cannot open %s %s: %s", what,
                       path, strerror(e));
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return bs_fail(err, "io", path, "%s %s is not a regular file", what, path);
    }
    if ((unsigned long long)st.st_size > (unsigned long long)max) {
        fclose(f);
        return bs_fail(err, too_large_code, path, "%s %s is too large (%lld bytes, at most %zu)",
                       what, path, (long long)st.st_size, max);
    }
    size_t n = (size_t)st.st_size;
    char *b = malloc(n + 1);
    if (!b) {
        fclose(f);
        return bs_fail(err, "out_of_memory", path, "cannot allocate %zu bytes for %s", n, path);
    }
    // A file that grew since fstat is read up to its size then: the extra
    // byte asked for shows that, and it is refused like any other change.
    size_t got = fread(b, 1, n + 1, f);
    int bad = ferror(f) || got != n;
    fclose(f);
    if (bad) {
        free(b);
        return bs_fail(err, "io", path, "cannot read %s %s (read error or changed while read)",
                       what, path);
    }
    b[n] = '\0';
    *out = b;
    *len = n;
    return 0;
}

void bs_error_clear(BsError *err) {
    if (err) memset(err, 0, sizeof *err);
}

void metric_set(MetricRow *row, const char *name, double value) {
    for (int i = 0; i < row->n; i++) {
        if (strcmp(row->name[i], name) == 0) {
            row->value[i] = value;
            return;
        }
    }
    if (row->n < BS_MAX_METRICS) {
        row->name[row->n] = name;
        row->value[row->n] = value;
        row->n++;
    }
}

int metric_get(const MetricRow *row, const char *name, double *value) {
    for (int i = 0; i < row->n; i++) {
        if (strcmp(row->name[i], name) == 0) {
            if (value) *value = row->value[i];
            return 1;
        }
    }
    return 0;
}
