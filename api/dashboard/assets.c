// assets.c — finds an embedded dashboard file by URL path and decides whether
// a client's cached copy is still current (If-None-Match).
#include "assets.h"

#include <string.h>

const DashboardAsset *dashboard_asset_lookup(const char *path) {
    if (path == NULL || path[0] != '/') return NULL;
    size_t n = strcspn(path, "?#");
    if (n == 1) {
        path = "/index.html";
        n = strlen(path);
    }
    for (int i = 0; i < dashboard_assets_count; i++) {
        const char *p = dashboard_assets[i].path;
        if (strlen(p) == n && memcmp(p, path, n) == 0) return &dashboard_assets[i];
    }
    return NULL;
}

int dashboard_etag_matches(const DashboardAsset *a, const char *if_none_match) {
    if (a == NULL || if_none_match == NULL) return 0;
    size_t tag_len = strlen(a->etag);
    const char *s = if_none_match;
    while (*s) {
        while (*s == ' ' || *s == '\t' || *s == ',') s++;
        if (*s == '\0') break;
        if (*s == '*') return 1;
        if (s[0] == 'W' && s[1] == '/') s += 2;
        // An entity tag is a quoted string; compare it whole, quotes included.
        if (*s != '"') return 0;
        const char *end = strchr(s + 1, '"');
        if (end == NULL) return 0;
        size_t len = (size_t)(end - s) + 1;
        if (len == tag_len && memcmp(s, a->etag, len) == 0) return 1;
        s = end + 1;
    }
    return 0;
}
