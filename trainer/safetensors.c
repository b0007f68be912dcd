// safetensors.c — reader and writer of safetensors files (see safetensors.h
// for the layout and the rules the reader enforces).
//
// Files are mapped read-only and stay mapped until st_close, so a tensor is a
// pointer into the mapping and reading it is one widening pass. The header is
// parsed with cJSON; every number that sizes or locates data is checked to be
// a non-negative integer and every product for overflow before it is used.
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; a big-endian host needs byte swapping"
#endif

// An index file lists names, not data: 64 MiB is far beyond any real one.
#define ST_MAX_INDEX_BYTES ((size_t)64 << 20)
#define ST_MAX_SHARDS 100000
// Integers above 2^53 do not survive JSON's doubles exactly.
#define ST_MAX_JSON_INT 9007199254740992.0

typedef struct {
    char *path;
    unsigned char *map;
    size_t size;
} StFile;

struct SafeTensors {
    StFile *files;
    int n_files, cap_files;
    StTensor *t; // sorted by name once every file is added
    int n, cap;
};

static const struct {
    const char *name;
    size_t size;
} DTYPES[] = {
    [ST_BOOL] = {"BOOL", 1},       [ST_U8] = {"U8", 1},           [ST_I8] = {"I8", 1},
    [ST_F8_E5M2] = {"F8_E5M2", 1}, [ST_F8_E4M3] = {"F8_E4M3", 1}, [ST_I16] = {"I16", 2},
    [ST_U16] = {"U16", 2},         [ST_F16] = {"F16", 2},         [ST_BF16] = {"BF16", 2},
    [ST_I32] = {"I32", 4},         [ST_U32] = {"U32", 4},         [ST_F32] = {"F32", 4},
    [ST_F64] = {"F64", 8},         [ST_I64] = {"I64", 8},         [ST_U64] = {"U64", 8},
};
#define N_DTYPES ((int)(sizeof DTYPES / sizeof DTYPES[0]))

const char *st_dtype_name(StDtype d) {
    return (int)d >= 0 && (int)d < N_DTYPES ? DTYPES[d].name : "?";
}

int st_dtype_is_float(StDtype d) {
    return d == ST_F32 || d == ST_F16 || d == ST_BF16;
}

// ---------------------------------------------------------------------------
// scalar conversions

float st_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) {
        // zero or subnormal: mant * 2^-24, exact in f32
        float f = (float)mant * 0x1p-24f;
        return sign ? -f : f;
    }
    if (exp == 31)
        bits = sign | 0x7f800000u | (mant << 13); // inf / NaN keep their payload
    else
        bits = sign | ((exp + 112u) << 23) | (mant << 13); // rebias 15 -> 127
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

float st_bf16_to_f32(uint16_t b) {
    uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

uint16_t st_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0; // NaN, as c10::BFloat16
    u += 0x7fffu + ((u >> 16) & 1u);                    // round half to even
    return (uint16_t)(u >> 16);
}

// ---------------------------------------------------------------------------
// reading

static int dtype_from_name(const char *s, StDtype *out) {
    for (int i = 0; i < N_DTYPES; i++) {
        if (strcmp(s, DTYPES[i].name) == 0) {
            *out = (StDtype)i;
            return 0;
        }
    }
    return -1;
}

// A JSON number that is an integer in [0, 2^53]; -1 otherwise.
static int json_uint(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return -1;
    double d = j->valuedouble;
    if (!(d >= 0.0 && d <= ST_MAX_JSON_INT) || d != (double)(uint64_t)d) return -1;
    *out = (uint64_t)d;
    return 0;
}

static int push_tensor(SafeTensors *st, StTensor *t) {
    if (st->n == st->cap) {
        int cap = st->cap ? st->cap * 2 : 64;
        StTensor *p = realloc(st->t, (size_t)cap * sizeof *p);
        if (!p) return -1;
        st->t = p;
        st->cap = cap;
    }
    st->t[st->n++] = *t;
    return 0;
}

typedef struct {
    uint64_t begin, end;
    const char *name;
} Span;

static int cmp_span(const void *a, const void *b) {
    const Span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

// Parses one header entry into t (name set by the caller); data_size is the
// byte size of the buffer after the header.
static int parse_entry(const cJSON *e, const char *path, size_t data_size, StTensor *t,
                       uint64_t *begin, uint64_t *end, BsError *err) {
    const char *name = e->string;
    if (!cJSON_IsObject(e))
        return bs_fail(err, "model_invalid", name, "%s: header entry %s is not an object", path,
                       name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(off))
        return bs_fail(err, "model_invalid", name,
                       "%s: tensor %s needs a string dtype, a shape array and a data_offsets "
                       "array",
                       path, name);
    if (dtype_from_name(dt->valuestring, &t->dtype) != 0)
        return bs_fail(err, "model_invalid", name, "%s: tensor %s has unknown dtype \"%.32s\"",
                       path, name, dt->valuestring);
    int nd = cJSON_GetArraySize(sh);
    if (nd > ST_MAX_DIMS)
        return bs_fail(err, "model_invalid", name, "%s: tensor %s has %d dimensions (at most %d)",
                       path, name, nd, ST_MAX_DIMS);
    size_t numel = 1;
    int k = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, sh) {
        uint64_t v;
        if (json_uint(d, &v) != 0 || v > (uint64_t)INT64_MAX)
            return bs_fail(err, "model_invalid", name,
                           "%s: tensor %s has a shape entry that is not a non-negative integer",
                           path, name);
        if (__builtin_mul_overflow(numel, (size_t)v, &numel))
            return bs_fail(err, "model_invalid", name, "%s: tensor %s: shape product overflows",
                           path, name);
        t->shape[k++] = (int64_t)v;
    }
    t->ndim = nd;
    t->numel = numel;
    if (__builtin_mul_overflow(numel, DTYPES[t->dtype].size, &t->nbytes))
        return bs_fail(err, "model_invalid", name, "%s: tensor %s: byte size overflows", path,
                       name);
    if (cJSON_GetArraySize(off) != 2 || json_uint(cJSON_GetArrayItem(off, 0), begin) != 0 ||
        json_uint(cJSON_GetArrayItem(off, 1), end) != 0)
        return bs_fail(err, "model_invalid", name,
                       "%s: tensor %s: data_offsets must be two non-negative integers", path, name);
    if (*begin > *end || *end > data_size)
        return bs_fail(err, "model_invalid", name,
                       "%s: tensor %s has data_offsets [%llu, %llu] outside the %zu-byte data "
                       "buffer (truncated file?)",
                       path, name, (unsigned long long)*begin, (unsigned long long)*end, data_size);
    if (*end - *begin != t->nbytes)
        return bs_fail(err, "model_invalid", name,
                       "%s: tensor %s spans %llu bytes but its shape and dtype %s need %zu", path,
                       name, (unsigned long long)(*end - *begin), DTYPES[t->dtype].name, t->nbytes);
    return 0;
}

// 1 when s[0..n) is UTF-8 (RFC 3629: no overlong forms, surrogates or code
// points past U+10FFFF). The format's header is UTF-8 JSON and the reference
// reader refuses anything else (str::from_utf8) before parsing.
static int utf8_ok(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
        if (c < 0xc2 || c > 0xf4 || n - i < len) return 0;
        uint32_t cp = c & (0x7fu >> len);
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return 0;
            cp = cp << 6 | (s[i + k] & 0x3fu);
        }
        if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
            (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
            return 0;
        i += len;
    }
    return 1;
}

// Maps path, validates its header and appends its tensors to st.
static int add_file(SafeTensors *st, const char *path, BsError *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return bs_fail(err, e == ENOENT ? "model_not_found" : "io", path, "cannot open %s: %s",
                       path, strerror(e));
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return bs_fail(err, "io", path, "cannot stat %s: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return bs_fail(err, "model_invalid", path, "%s is not a regular file", path);
    }
    size_t size = (size_t)sb.st_size;
    if (size < 8) {
        close(fd);
        return bs_fail(err, "model_invalid", path,
                       "%s is %zu bytes, too short for a safetensors header", path, size);
    }
    if (st->n_files == st->cap_files) {
        int cap = st->cap_files ? st->cap_files * 2 : 4;
        StFile *p = realloc(st->files, (size_t)cap * sizeof *p);
        if (!p) {
            close(fd);
            return bs_fail(err, "out_of_memory", path, "cannot allocate the file table");
        }
        st->files = p;
        st->cap_files = cap;
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd);
    if (map == MAP_FAILED)
        return bs_fail(err, "io", path, "cannot map %s: %s", path, strerror(map_errno));
    StFile *f = &st->files[st->n_files];
    f->map = map;
    f->size = size;
    f->path = strdup(path);
    if (!f->path) {
        munmap(map, size);
        return bs_fail(err, "out_of_memory", path, "cannot allocate a path");
    }
    st->n_files++; // owned by st from here: st_close unmaps it

    uint64_t hlen;
    memcpy(&hlen, f->map, 8);
    if (hlen > ST_MAX_HEADER_BYTES)
        return bs_fail(err, "model_invalid", path,
                       "%s: header length %llu exceeds the 100,000,000-byte limit", path,
                       (unsigned long long)hlen);
    if (hlen > size - 8)
        return bs_fail(err, "model_invalid", path,
                       "%s: header length %llu runs past the end of the %zu-byte file", path,
                       (unsigned long long)hlen, size);
    const char *hdr = (const char *)f->map + 8;
    size_t data_size = size - 8 - (size_t)hlen;
    const unsigned char *data = f->map + 8 + hlen;
    if (hlen < 2 || hdr[0] != '{')
        return bs_fail(err, "model_invalid", path, "%s: header does not start with a JSON object",
                       path);
    if (!utf8_ok((const unsigned char *)hdr, (size_t)hlen))
        return bs_fail(err, "model_invalid", path, "%s: header is not valid UTF-8", path);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, (size_t)hlen, &end, 0);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return bs_fail(err, "model_invalid", path, "%s: header is not a valid JSON object", path);
    }
    for (const char *p = end; p && p < hdr + hlen; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            cJSON_Delete(root);
            return bs_fail(err, "model_invalid", path,
                           "%s: unexpected bytes after the header's JSON object", path);
        }
    }

    int n_entries = cJSON_GetArraySize(root), n_spans = 0, rc = -1;
    Span *spans = malloc(((size_t)n_entries + 1) * sizeof *spans);
    if (!spans) {
        cJSON_Delete(root);
        return bs_fail(err, "out_of_memory", path, "cannot allocate the header table");
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        if (!e->string) {
            bs_fail(err, "model_invalid", path, "%s: header entry without a name", path);
            goto out;
        }
        if (strcmp(e->string, "__metadata__") == 0) {
            const cJSON *m;
            int ok = cJSON_IsObject(e);
            cJSON_ArrayForEach(m, e) ok = ok && cJSON_IsString(m);
            if (!ok) {
                bs_fail(err, "model_invalid", path, "%s: __metadata__ must map strings to strings",
                        path);
                goto out;
            }
            continue;
        }
        StTensor t = {0};
        uint64_t b = 0, en = 0;
        if (parse_entry(e, path, data_size, &t, &b, &en, err) != 0) goto out;
        t.data = data + b;
        t.file = f->path;
        t.name = strdup(e->string);
        if (!t.name || push_tensor(st, &t) != 0) {
            free((char *)t.name);
            bs_fail(err, "out_of_memory", path, "cannot allocate the tensor table");
            goto out;
        }
        spans[n_spans++] = (Span){b, en, st->t[st->n - 1].name};
    }
    // The tensors must tile the data buffer: sorted by offset, each starts
    // where the previous one ended and the last ends at the end of the file.
    qsort(spans, (size_t)n_spans, sizeof *spans, cmp_span);
    uint64_t at = 0;
    for (int i = 0; i < n_spans; i++) {
        if (spans[i].begin != at) {
            bs_fail(err, "model_invalid", spans[i].name,
                    "%s: tensor %s starts at byte %llu of the data buffer, %s (expected %llu)",
                    path, spans[i].name, (unsigned long long)spans[i].begin,
                    spans[i].begin < at ? "overlapping the previous tensor"
                                        : "leaving a hole after the previous tensor",
                    (unsigned long long)at);
            goto out;
        }
        at = spans[i].end;
    }
    if (at != data_size) {
        bs_fail(err, "model_invalid", path,
                "%s: the tensors cover %llu bytes but the data buffer has %zu (truncated or "
                "trailing bytes)",
                path, (unsigned long long)at, data_size);
        goto out;
    }
    rc = 0;
out:
    free(spans);
    cJSON_Delete(root);
    return rc;
}

static int cmp_tensor(const void *a, const void *b) {
    return strcmp(((const StTensor *)a)->name, ((const StTensor *)b)->name);
}

static int finish(SafeTensors *st, BsError *err) {
    if (st->n > 0) qsort(st->t, (size_t)st->n, sizeof *st->t, cmp_tensor);
    for (int i = 1; i < st->n; i++) {
        if (strcmp(st->t[i - 1].name, st->t[i].name) == 0)
            return bs_fail(err, "model_invalid", st->t[i].name,
                           "tensor %s appears twice (%s and %s)", st->t[i].name, st->t[i - 1].file,
                           st->t[i].file);
    }
    return 0;
}

static SafeTensors *st_new(void) {
    return calloc(1, sizeof(SafeTensors));
}

void st_close(SafeTensors *st) {
    if (!st) return;
    for (int i = 0; i < st->n; i++)
        free((char *)st->t[i].name);
    for (int i = 0; i < st->n_files; i++) {
        munmap(st->files[i].map, st->files[i].size);
        free(st->files[i].path);
    }
    free(st->t);
    free(st->files);
    free(st);
}

int st_open(SafeTensors **out, const char *path, BsError *err) {
    *out = NULL;
    SafeTensors *st = st_new();
    if (!st) return bs_fail(err, "out_of_memory", path, "cannot allocate a tensor set");
    if (add_file(st, path, err) != 0 || finish(st, err) != 0) {
        st_close(st);
        return -1;
    }
    *out = st;
    return 0;
}

// dir + "/" + name, malloc'd; NULL when out of memory.
static char *join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

int st_slurp(const char *path, size_t max, char **out, size_t *len, BsError *err) {
    return bs_read_file(path, max, "file", "model_not_found", "model_invalid", out, len, err);
}

static int exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

// A shard named by the index must be a plain file name inside the folder.
static int plain_file_name(const char *s) {
    return s[0] != '\0' && strchr(s, '/') == NULL && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

static int open_index(SafeTensors *st, const char *dir, const char *index_path, BsError *err) {
    char *text = NULL, **shards = NULL;
    size_t len = 0;
    int n_shards = 0, rc = -1;
    if (st_slurp(index_path, ST_MAX_INDEX_BYTES, &text, &len, err) != 0) return -1;
    cJSON *root = cJSON_ParseWithLength(text, len);
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(root) || !cJSON_IsObject(wm)) {
        bs_fail(err, "model_invalid", index_path, "%s is not JSON with a \"weight_map\" object",
                index_path);
        goto out;
    }
    int n_map = cJSON_GetArraySize(wm);
    if (n_map == 0) {
        bs_fail(err, "model_invalid", index_path, "%s: weight_map is empty", index_path);
        goto out;
    }
    shards = calloc((size_t)n_map, sizeof *shards);
    if (!shards) {
        bs_fail(err, "out_of_memory", index_path, "cannot allocate the shard list");
        goto out;
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, wm) {
        if (!e->string || !cJSON_IsString(e) || !plain_file_name(e->valuestring)) {
            bs_fail(err, "model_invalid", e->string ? e->string : index_path,
                    "%s: the shard of tensor %s must be a file name in the model folder",
                    index_path, e->string ? e->string : "?");
            goto out;
        }
        int seen = 0;
        for (int i = 0; i < n_shards && !seen; i++)
            seen = strcmp(shards[i], e->valuestring) == 0;
        if (!seen) {
            if (n_shards == ST_MAX_SHARDS) {
                bs_fail(err, "model_invalid", index_path, "%s names more than %d shards",
                        index_path, ST_MAX_SHARDS);
                goto out;
            }
            shards[n_shards++] = e->valuestring;
        }
    }
    for (int i = 0; i < n_shards; i++) {
        char *p = join(dir, shards[i]);
        if (!p) {
            bs_fail(err, "out_of_memory", shards[i], "cannot allocate a path");
            goto out;
        }
        if (!exists(p)) {
            bs_fail(err, "model_invalid", shards[i], "%s names shard %s, which is not in %s",
                    index_path, shards[i], dir);
            free(p);
            goto out;
        }
        int r = add_file(st, p, err);
        free(p);
        if (r != 0) goto out;
    }
    if (finish(st, err) != 0) goto out;
    cJSON_ArrayForEach(e, wm) {
        const StTensor *t = st_find(st, e->string);
        const char *slash = t ? strrchr(t->file, '/') : NULL;
        if (!t || strcmp(slash ? slash + 1 : t->file, e->valuestring) != 0) {
            bs_fail(err, "model_invalid", e->string, "%s maps tensor %s to %s, which %s",
                    index_path, e->string, e->valuestring,
                    t ? "does not hold it" : "does not hold it (no shard does)");
            goto out;
        }
    }
    rc = 0;
out:
    free(shards);
    cJSON_Delete(root);
    free(text);
    return rc;
}

int st_open_dir(SafeTensors **out, const char *dir, BsError *err) {
    *out = NULL;
    SafeTensors *st = st_new();
    char *single = join(dir, "model.safetensors");
    char *index = join(dir, "model.safetensors.index.json");
    int rc = -1;
    if (!st || !single || !index) {
        bs_fail(err, "out_of_memory", dir, "cannot allocate a tensor set");
        goto out;
    }
    if (exists(single)) {
        if (add_file(st, single, err) != 0 || finish(st, err) != 0) goto out;
    } else if (exists(index)) {
        if (open_index(st, dir, index, err) != 0) goto out;
    } else {
        bs_fail(err, "model_invalid", "model.safetensors",
                "%s has neither model.safetensors nor model.safetensors.index.json (only "
                "safetensors weights are supported)",
                dir);
        goto out;
    }
    *out = st;
    st = NULL;
    rc = 0;
out:
    st_close(st);
    free(single);
    free(index);
    return rc;
}

int st_count(const SafeTensors *st) {
    return st->n;
}

const StTensor *st_tensor(const SafeTensors *st, int i) {
    return i >= 0 && i < st->n ? &st->t[i] : NULL;
}

const StTensor *st_find(const SafeTensors *st, const char *name) {
    int lo = 0, hi = st->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(st->t[mid].name, name);
        if (c == 0) return &st->t[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return NULL;
}

int st_read_f32(const StTensor *t, size_t first, size_t n, float *dst, BsError *err) {
    if (!st_dtype_is_float(t->dtype))
        return bs_fail(err, "model_invalid", t->name,
                       "tensor %s has dtype %s; only F32, F16 and BF16 are supported", t->name,
                       st_dtype_name(t->dtype));
    size_t last;
    if (__builtin_add_overflow(first, n, &last) || last > t->numel)
        return bs_fail(err, "model_invalid", t->name,
                       "elements [%zu, %zu) are outside tensor %s of %zu elements", first,
                       first + n, t->name, t->numel);
    if (t->dtype == ST_F32) {
        memcpy(dst, t->data + first * 4, n * sizeof(float));
        return 0;
    }
    const unsigned char *p = t->data + first * 2;
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        dst[i] = t->dtype == ST_F16 ? st_f16_to_f32(h) : st_bf16_to_f32(h);
    }
    return 0;
}

// ---------------------------------------------------------------------------
// writing

typedef struct {
    char *p;
    size_t n, cap;
    int oom;
} Buf;

static void buf_add(Buf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void buf_str(Buf *b, const char *s) {
    buf_add(b, s, strlen(s));
}

static void buf_u64(Buf *b, unsigned long long v) {
    char s[24];
    int n = snprintf(s, sizeof s, "%llu", v);
    buf_add(b, s, (size_t)n);
}

// A JSON string literal (quotes included) of s.
static void buf_json_str(Buf *b, const char *s) {
    buf_add(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            buf_add(b, esc, 2);
        } else if (*p < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", *p);
            buf_add(b, esc, 6);
        } else {
            buf_add(b, (const char *)p, 1);
        }
    }
    buf_add(b, "\"", 1);
}

typedef struct {
    const char *name;
    int index;
} NameIndex;

static int cmp_name_index(const void *a, const void *b) {
    return strcmp(((const NameIndex *)a)->name, ((const NameIndex *)b)->name);
}

int st_write(const char *path, const StWriteTensor *tensors, int n, StDtype dtype, BsError *err) {
    if (dtype != ST_F32 && dtype != ST_BF16)
        return bs_fail(err, "invalid_argument", path, "st_write writes F32 or BF16, not %s",
                       st_dtype_name(dtype));
    if (n < 0) return bs_fail(err, "invalid_argument", path, "negative tensor count");
    NameIndex *sorted = malloc(((size_t)n + 1) * sizeof *sorted);
    int *order = malloc(((size_t)n + 1) * sizeof *order);
    size_t *numel = malloc(((size_t)n + 1) * sizeof *numel);
    struct iovec *iov = malloc(((size_t)n + 3) * sizeof *iov);
    uint16_t *half = NULL;
    Buf h = {0};
    int rc = -1;
    if (!sorted || !order || !numel || !iov) {
        bs_fail(err, "out_of_memory", path, "cannot allocate the tensor table");
        goto out;
    }
    for (int i = 0; i < n; i++)
        sorted[i] = (NameIndex){tensors[i].name, i};
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_name_index);
    for (int i = 0; i < n; i++)
        order[i] = sorted[i].index;
    size_t esize = DTYPES[dtype].size, offset = 0, total = 0;
    buf_str(&h, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int k = 0; k < n; k++) {
        const StWriteTensor *t = &tensors[order[k]];
        if (k > 0 && strcmp(tensors[order[k - 1]].name, t->name) == 0) {
            bs_fail(err, "invalid_argument", t->name, "tensor %s is given twice", t->name);
            goto out;
        }
        if (t->ndim < 0 || t->ndim > ST_MAX_DIMS) {
            bs_fail(err, "invalid_argument", t->name, "tensor %s has %d dimensions", t->name,
                    t->ndim);
            goto out;
        }
        size_t ne = 1, bytes;
        for (int d = 0; d < t->ndim; d++) {
            if (t->shape[d] < 0 || __builtin_mul_overflow(ne, (size_t)t->shape[d], &ne)) {
                bs_fail(err, "invalid_argument", t->name, "tensor %s has a bad shape", t->name);
                goto out;
            }
        }
        if (__builtin_mul_overflow(ne, esize, &bytes) ||
            __builtin_add_overflow(total, ne, &total)) {
            bs_fail(err, "invalid_argument", t->name, "tensor %s is too large", t->name);
            goto out;
        }
        numel[k] = ne;
        buf_add(&h, ",", 1);
        buf_json_str(&h, t->name);
        buf_str(&h, ":{\"dtype\":\"");
        buf_str(&h, DTYPES[dtype].name);
        buf_str(&h, "\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            if (d) buf_add(&h, ",", 1);
            buf_u64(&h, (unsigned long long)t->shape[d]);
        }
        buf_str(&h, "],\"data_offsets\":[");
        buf_u64(&h, offset);
        buf_add(&h, ",", 1);
        buf_u64(&h, offset + bytes);
        buf_str(&h, "]}");
        offset += bytes; // sum of sizes of a buffer the caller holds: cannot overflow
    }
    buf_add(&h, "}", 1);
    while (!h.oom && h.n % 8 != 0) // the data then starts at 8 + h.n, 8-byte aligned
        buf_add(&h, " ", 1);
    if (h.oom) {
        bs_fail(err, "out_of_memory", path, "cannot allocate the header");
        goto out;
    }
    uint64_t hlen = h.n;
    int n_iov = 0;
    iov[n_iov++] = (struct iovec){.iov_base = &hlen, .iov_len = 8};
    iov[n_iov++] = (struct iovec){.iov_base = h.p, .iov_len = h.n};
    if (dtype == ST_F32) {
        for (int k = 0; k < n; k++)
            iov[n_iov++] = (struct iovec){.iov_base = (void *)tensors[order[k]].data,
                                          .iov_len = numel[k] * sizeof(float)};
    } else {
        half = malloc((total ? total : 1) * sizeof *half);
        if (!half) {
            bs_fail(err, "out_of_memory", path, "cannot allocate %zu bytes for BF16 data",
                    total * sizeof *half);
            goto out;
        }
        size_t at = 0;
        for (int k = 0; k < n; k++) {
            const float *src = tensors[order[k]].data;
            for (size_t i = 0; i < numel[k]; i++)
                half[at + i] = st_f32_to_bf16(src[i]);
            at += numel[k];
        }
        iov[n_iov++] = (struct iovec){.iov_base = half, .iov_len = total * sizeof *half};
    }
    rc = ckpt_write_iov_atomic(path, iov, n_iov, err);
out:
    free(half);
    free(h.p);
    free(iov);
    free(numel);
    free(order);
    free(sorted);
    return rc;
}
