// jobutil.c — job references, confined paths and blocker JSON (see jobutil.h).
#include "jobutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "strbuf.h"

int jobref_parse(const char *s, char id[DB_ID_SIZE]) {
    if (!s || strncmp(s, "job:", 4) != 0) return 0;
    if (!db_job_id_valid(s + 4)) return 0;
    snprintf(id, DB_ID_SIZE, "%s", s + 4);
    return 1;
}

static char *join(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s%s%s", a, (*a && a[strlen(a) - 1] == '/') ? "" : "/", b);
    return p;
}

char *jobref_model_path(const char *output_dir) {
    char *bin = join(output_dir, "final/model.bin");
    char *cfg = join(output_dir, "final/config.json");
    if (!bin || !cfg) {
        free(bin);
        free(cfg);
        return NULL;
    }
    struct stat sb, sc;
    int has_bin = stat(bin, &sb) == 0, has_cfg = stat(cfg, &sc) == 0 && S_ISREG(sc.st_mode);
    free(cfg);
    if (!has_cfg || (has_bin && (sb.st_mtim.tv_sec > sc.st_mtim.tv_sec ||
                                 (sb.st_mtim.tv_sec == sc.st_mtim.tv_sec &&
                                  sb.st_mtim.tv_nsec >= sc.st_mtim.tv_nsec))))
        return bin;
    free(bin);
    return join(output_dir, "final");
}

char *job_default_output_dir(const char *state_dir, const char *id) {
    size_t n = strlen(state_dir) + strlen(id) + sizeof("/jobs/");
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/jobs/%s", state_dir, id);
    return p;
}

cJSON *blockers_to_json(const Blocker *b, int n) {
    cJSON *arr = cJSON_CreateArray();
    if (!arr) return NULL;
    for (int i = 0; i < n; i++) {
        cJSON *o = cJSON_CreateObject();
        if (!o || !cJSON_AddItemToArray(arr, o)) {
            cJSON_Delete(o);
            goto oom;
        }
        // Blocker text quotes recipe values and data rows: keep it valid UTF-8.
        Blocker c = b[i];
        utf8_scrub(c.code);
        utf8_scrub(c.field);
        utf8_scrub(c.message);
        utf8_scrub(c.hint);
        if (!cJSON_AddStringToObject(o, "code", c.code) ||
            !cJSON_AddStringToObject(o, "field", c.field) ||
            !cJSON_AddStringToObject(o, "message", c.message) ||
            !cJSON_AddStringToObject(o, "hint", c.hint))
            goto oom;
    }
    return arr;
oom:
    cJSON_Delete(arr);
    return NULL;
}
