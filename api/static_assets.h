// static_assets.h — files the daemon serves as-is (the dashboard): a table
// of {path, content type, bytes} terminated by a NULL path. Every entry gets
// a public GET route in api_routes_create.
#ifndef STATIC_ASSETS_H
#define STATIC_ASSETS_H

#include <stddef.h>

typedef struct {
    const char *path;         // "/", "/app.js", ...
    const char *content_type; // "text/html; charset=utf-8", ...
    const unsigned char *data;
    size_t len;
} StaticAsset;

extern const StaticAsset static_assets[];

// The asset served at path, or NULL.
const StaticAsset *static_asset_find(const char *path);

#endif
