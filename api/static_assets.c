// static_assets.c — the table of files served by GET (see static_assets.h).
// The dashboard adds its entries here (data generated or embedded at build
// time); until then the table holds only its terminator.
#include "static_assets.h"

#include <string.h>

const StaticAsset static_assets[] = {
    {NULL, NULL, NULL, 0},
};

const StaticAsset *static_asset_find(const char *path) {
    for (const StaticAsset *a = static_assets; a->path; a++)
        if (strcmp(a->path, path) == 0) return a;
    return NULL;
}
