// bs.c — error filling and metric rows shared by every module.
#include "bs.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

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
