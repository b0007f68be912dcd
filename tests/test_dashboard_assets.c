// test_dashboard_assets.c — the embedded dashboard table: every page file is
// embedded byte for byte from api/dashboard/, "/" is index.html, content types
// and caching follow the kind of file, ETags are distinct strong validators,
// and If-None-Match matching follows RFC 9110 (lists, W/, "*").
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "assets.h"
#include "test_util.h"

// Reads a whole file (malloc'd, caller frees); NULL on any failure.
static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *buf = NULL;
    if (fseek(f, 0, SEEK_END) != 0) goto fail;
    long n = ftell(f);
    if (n < 0 || fseek(f, 0, SEEK_SET) != 0) goto fail;
    buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) goto fail;
    fclose(f);
    *len = (size_t)n;
    return buf;
fail:
    free(buf);
    fclose(f);
    return NULL;
}

static void check_same_as_source(const char *url, const char *file) {
    const char *src = getenv("BREWSLM_SOURCE");
    char path[4096];
    snprintf(path, sizeof(path), "%s/api/dashboard/%s", src ? src : ".", file);
    size_t len = 0;
    unsigned char *want = read_file(path, &len);
    const DashboardAsset *a = dashboard_asset_lookup(url);
    CHECK_MSG(want != NULL, "cannot read %s", path);
    CHECK_MSG(a != NULL, "no asset at %s", url);
    if (want && a) {
        CHECK_INT_EQ(a->size, len);
        CHECK_MSG(a->size == len && memcmp(a->data, want, len) == 0, "%s differs from %s", url,
                  path);
    }
    free(want);
}

static int is_strong_etag(const char *e) {
    if (strlen(e) != 34 || e[0] != '"' || e[33] != '"') return 0;
    for (int i = 1; i < 33; i++)
        if (!((e[i] >= '0' && e[i] <= '9') || (e[i] >= 'a' && e[i] <= 'f'))) return 0;
    return 1;
}

int main(void) {
    check_same_as_source("/index.html", "index.html");
    check_same_as_source("/app.js", "app.js");
    check_same_as_source("/style.css", "style.css");

    const DashboardAsset *index = dashboard_asset_lookup("/index.html");
    CHECK(index != NULL);
    CHECK(dashboard_asset_lookup("/") == index);
    CHECK(dashboard_asset_lookup("/?from=bookmark") == index);
    CHECK(dashboard_asset_lookup("/index.html?x=1") == index);
    CHECK(dashboard_asset_lookup("/app.js#frag") == dashboard_asset_lookup("/app.js"));
    CHECK(dashboard_asset_lookup("/nope.js") == NULL);
    CHECK(dashboard_asset_lookup("/app.js/") == NULL);
    CHECK(dashboard_asset_lookup("/app.j") == NULL);
    CHECK(dashboard_asset_lookup("app.js") == NULL);
    CHECK(dashboard_asset_lookup("") == NULL);
    CHECK(dashboard_asset_lookup(NULL) == NULL);

    const DashboardAsset *chart = dashboard_asset_lookup("/vendor/chart.js");
    CHECK(chart != NULL);
    if (chart) {
        static const char head[] = "/*!\n * Chart.js v";
        CHECK(chart->size > 100000);
        CHECK(chart->size > sizeof(head) && memcmp(chart->data, head, sizeof(head) - 1) == 0);
        CHECK(strcmp(chart->content_type, "text/javascript; charset=utf-8") == 0);
        CHECK(strcmp(chart->cache_control, "public, max-age=86400") == 0);
    }
    if (index) {
        CHECK(strcmp(index->content_type, "text/html; charset=utf-8") == 0);
        CHECK(strcmp(index->cache_control, "no-cache") == 0);
    }
    const DashboardAsset *css = dashboard_asset_lookup("/style.css");
    if (css) CHECK(strcmp(css->content_type, "text/css; charset=utf-8") == 0);
    const DashboardAsset *js = dashboard_asset_lookup("/app.js");
    if (js) {
        CHECK(strcmp(js->content_type, "text/javascript; charset=utf-8") == 0);
        CHECK(strcmp(js->cache_control, "no-cache") == 0);
    }

    CHECK(dashboard_assets_count == 4);
    for (int i = 0; i < dashboard_assets_count; i++) {
        const DashboardAsset *a = &dashboard_assets[i];
        CHECK_MSG(is_strong_etag(a->etag), "%s: bad ETag %s", a->path, a->etag);
        CHECK(dashboard_asset_lookup(a->path) == a);
        for (int j = 0; j < i; j++)
            CHECK_MSG(strcmp(a->etag, dashboard_assets[j].etag) != 0, "%s and %s share an ETag",
                      a->path, dashboard_assets[j].path);
    }

    if (index) {
        char list[256];
        CHECK(dashboard_etag_matches(index, index->etag));
        snprintf(list, sizeof(list), "\"0123\", %s", index->etag);
        CHECK(dashboard_etag_matches(index, list));
        snprintf(list, sizeof(list), "\"0123\",W/%s", index->etag);
        CHECK(dashboard_etag_matches(index, list));
        snprintf(list, sizeof(list), "  %s  ", index->etag);
        CHECK(dashboard_etag_matches(index, list));
        CHECK(dashboard_etag_matches(index, "*"));
        CHECK(!dashboard_etag_matches(index, NULL));
        CHECK(!dashboard_etag_matches(index, ""));
        CHECK(!dashboard_etag_matches(index, "\"0123\""));
        CHECK(!dashboard_etag_matches(index, chart ? chart->etag : "\"x\""));
        // The same hex without quotes is not an entity tag.
        snprintf(list, sizeof(list), "%.32s", index->etag + 1);
        CHECK(!dashboard_etag_matches(index, list));
        // A prefix of the tag must not match.
        snprintf(list, sizeof(list), "%.20s\"", index->etag);
        CHECK(!dashboard_etag_matches(index, list));
        CHECK(!dashboard_etag_matches(index, "\"unterminated"));
        CHECK(!dashboard_etag_matches(NULL, "*"));
    }
    return test_summary("dashboard_assets");
}
