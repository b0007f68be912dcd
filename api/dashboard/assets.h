// assets.h — the web dashboard's files (index.html, app.js, style.css and the
// system's Chart.js), compiled into the binary by embed_assets.py, and the
// lookup the HTTP layer uses to serve them at GET / with ETag revalidation.
#ifndef DASHBOARD_ASSETS_H
#define DASHBOARD_ASSETS_H

#include <stddef.h>

typedef struct {
    const char *path;          // URL path, e.g. "/app.js"
    const char *content_type;  // e.g. "text/javascript; charset=utf-8"
    const char *cache_control; // "no-cache" for pages, "public, max-age=86400" for vendor/
    const unsigned char *data; // the file's bytes (not NUL-terminated)
    size_t size;
    const char *etag;          // strong validator, quotes included: "\"0123...\""
} DashboardAsset;

// The generated table (embed_assets.py), in the order meson listed the files.
extern const DashboardAsset dashboard_assets[];
extern const int dashboard_assets_count;

// Returns the asset served at path ("/" is "/index.html"; a query string is
// ignored), or NULL when there is none. The result is static: never freed.
const DashboardAsset *dashboard_asset_lookup(const char *path);

// 1 when an If-None-Match header value (NULL: absent) names the asset's
// current ETag, so the server may answer 304: handles a list of tags,
// weak "W/" tags (weak comparison, as RFC 9110 asks for If-None-Match) and "*".
int dashboard_etag_matches(const DashboardAsset *a, const char *if_none_match);

#endif
