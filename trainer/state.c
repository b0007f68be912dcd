// state.c — training-state checkpoints (format in state.h). The writer streams
// straight from the model's buffers so a large model never needs a second
// in-memory copy; the reader checks every size against the file size before
// allocating, and the CRC before handing anything back.
#include "state.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "state.c writes the host byte order and assumes little-endian"
#endif

#define HEADER_LEN 88u // bytes of the v1 header, see header_pack
#define PREFIX_LEN 16u // magic + version + header_len

// zlib's crc32 takes uInt lengths; feed it in chunks so size_t buffers work.
static uint32_t crc_update(uint32_t crc, const void *data, size_t len) {
    const Bytef *p = data;
    while (len > 0) {
        uInt n = len > (1u << 30) ? (1u << 30) : (uInt)len;
        crc = (uint32_t)crc32(crc, p, n);
        p += n;
        len -= n;
    }
    return crc;
}

static uint8_t *put(uint8_t *p, const void *v, size_t n) {
    memcpy(p, v, n);
    return p + n;
}

static const uint8_t *get(const uint8_t *p, void *v, size_t n) {
    memcpy(v, p, n);
    return p + n;
}

static void header_pack(uint8_t out[HEADER_LEN], const TrainState *s) {
    const ModelConfig *c = &s->cfg;
    int32_t ints[8] = {c->dim,        c->hidden_dim, c->n_layers, c->n_heads,
                       c->n_kv_heads, c->vocab_size, c->seq_len,  c->shared_classifier};
    uint8_t *p = out;
    p = put(p, ints, sizeof ints);
    p = put(p, &c->norm_eps, 4);
    p = put(p, &c->rope_theta, 4);
    p = put(p, &s->method, 4);
    p = put(p, &s->step, 4);
    p = put(p, &s->total_steps, 4);
    p = put(p, &s->epoch, 4);
    p = put(p, &s->batch_in_epoch, 4);
    p = put(p, &s->rng_state, 8);
    p = put(p, &s->recipe_hash, 8);
    p = put(p, &s->data_hash, 8);
    p = put(p, &s->ref_crc, 4);
    _Static_assert(8 * 4 + 4 + 4 + 5 * 4 + 3 * 8 + 4 == HEADER_LEN, "header layout");
    (void)p;
}

static void header_unpack(const uint8_t in[HEADER_LEN], TrainState *s) {
    ModelConfig *c = &s->cfg;
    int32_t ints[8];
    const uint8_t *p = in;
    p = get(p, ints, sizeof ints);
    c->dim = ints[0];
    c->hidden_dim = ints[1];
    c->n_layers = ints[2];
    c->n_heads = ints[3];
    c->n_kv_heads = ints[4];
    c->vocab_size = ints[5];
    c->seq_len = ints[6];
    c->shared_classifier = ints[7];
    p = get(p, &c->norm_eps, 4);
    p = get(p, &c->rope_theta, 4);
    p = get(p, &s->method, 4);
    p = get(p, &s->step, 4);
    p = get(p, &s->total_steps, 4);
    p = get(p, &s->epoch, 4);
    p = get(p, &s->batch_in_epoch, 4);
    p = get(p, &s->rng_state, 8);
    p = get(p, &s->recipe_hash, 8);
    p = get(p, &s->data_hash, 8);
    p = get(p, &s->ref_crc, 4);
    (void)p;
}

// ---------------------------------------------------------------------------
// writing

typedef struct {
    int fd;
    uint32_t crc;
    const char *path;
    BsError *err;
} Writer;

static int write_all(Writer *w, const void *data, size_t len, int count_crc) {
    if (count_crc) w->crc = crc_update(w->crc, data, len);
    const char *p = data;
    while (len > 0) {
        size_t chunk = len > (1u << 30) ? (1u << 30) : len;
        ssize_t n = write(w->fd, p, chunk);
        if (n < 0) {
            if (errno == EINTR) continue;
            return bs_fail(w->err, "io", w->path, "cannot write %s: %s", w->path, strerror(errno));
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

// fsync the folder holding path so the rename itself is durable.
static int fsync_parent(const char *path, BsError *err) {
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (!slash) {
        snprintf(dir, sizeof dir, ".");
    } else if (slash == path) {
        snprintf(dir, sizeof dir, "/");
    } else {
        size_t n = (size_t)(slash - path);
        if (n >= sizeof dir) return bs_fail(err, "io", path, "path too long: %s", path);
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return bs_fail(err, "io", dir, "cannot open folder %s: %s", dir, strerror(errno));
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    if (rc != 0 && e != EINVAL) // some filesystems cannot fsync folders
        return bs_fail(err, "io", dir, "cannot fsync folder %s: %s", dir, strerror(e));
    return 0;
}

int state_write(const char *path, const TrainState *s, BsError *err) {
    if (!path || !s || !s->params || !s->m || !s->v || (s->extra_len > 0 && !s->extra))
        return bs_fail(err, "invalid_argument", "state", "state_write: missing buffers");
    if (model_config_validate(&s->cfg, err) != 0) return -1;
    if (model_param_count(&s->cfg) != s->n_params)
        return bs_fail(err, "invalid_argument", "state",
                       "state_write: %zu parameters for a config of %zu", s->n_params,
                       model_param_count(&s->cfg));
    if (s->n_params > SIZE_MAX / sizeof(float))
        return bs_fail(err, "invalid_argument", "state", "state_write: model too large");

    char tmp[PATH_MAX];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp)
        return bs_fail(err, "io", path, "path too long: %s", path);
    Writer w = {.fd = -1, .crc = (uint32_t)crc32(0L, Z_NULL, 0), .path = tmp, .err = err};
    w.fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w.fd < 0) return bs_fail(err, "io", path, "cannot create %s: %s", tmp, strerror(errno));

    uint8_t prefix[PREFIX_LEN];
    uint32_t version = STATE_VERSION, hl = HEADER_LEN;
    memcpy(prefix, STATE_MAGIC, 8);
    memcpy(prefix + 8, &version, 4);
    memcpy(prefix + 12, &hl, 4);
    uint8_t header[HEADER_LEN];
    header_pack(header, s);
    uint64_t extra_len = s->extra_len, n_params = s->n_params;
    size_t bytes = s->n_params * sizeof(float);

    if (write_all(&w, prefix, sizeof prefix, 1) != 0) goto fail;
    if (write_all(&w, header, sizeof header, 1) != 0) goto fail;
    if (write_all(&w, &extra_len, 8, 1) != 0) goto fail;
    if (s->extra_len > 0 && write_all(&w, s->extra, s->extra_len, 1) != 0) goto fail;
    if (write_all(&w, &n_params, 8, 1) != 0) goto fail;
    if (write_all(&w, s->params, bytes, 1) != 0) goto fail;
    if (write_all(&w, s->m, bytes, 1) != 0) goto fail;
    if (write_all(&w, s->v, bytes, 1) != 0) goto fail;
    uint32_t crc = w.crc;
    if (write_all(&w, &crc, 4, 0) != 0) goto fail;
    if (fsync(w.fd) != 0) {
        bs_fail(err, "io", path, "cannot fsync %s: %s", tmp, strerror(errno));
        goto fail;
    }
    if (close(w.fd) != 0) {
        w.fd = -1;
        bs_fail(err, "io", path, "cannot close %s: %s", tmp, strerror(errno));
        goto fail;
    }
    w.fd = -1;
    if (rename(tmp, path) != 0) {
        bs_fail(err, "io", path, "cannot rename %s: %s", tmp, strerror(errno));
        goto fail;
    }
    return fsync_parent(path, err);

fail:
    if (w.fd >= 0) close(w.fd);
    unlink(tmp);
    return -1;
}

// ---------------------------------------------------------------------------
// reading

static int read_all(int fd, void *data, size_t len, uint32_t *crc, const char *path, BsError *err) {
    char *p = data;
    size_t left = len;
    while (left > 0) {
        size_t chunk = left > (1u << 30) ? (1u << 30) : left;
        ssize_t n = read(fd, p, chunk);
        if (n < 0) {
            if (errno == EINTR) continue;
            return bs_fail(err, "io", path, "cannot read %s: %s", path, strerror(errno));
        }
        if (n == 0) return bs_fail(err, "corrupt_state", path, "%s is truncated", path);
        p += n;
        left -= (size_t)n;
    }
    if (crc) *crc = crc_update(*crc, data, len);
    return 0;
}

static int add_ov(uint64_t a, uint64_t b, uint64_t *out) {
    return __builtin_add_overflow(a, b, out);
}

int state_read(const char *path, TrainState *s, BsError *err) {
    memset(s, 0, sizeof *s);
    TrainState t = {0};
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return bs_fail(err, "io", path, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        bs_fail(err, "io", path, "cannot stat %s: %s", path, strerror(errno));
        goto fail;
    }
    uint64_t fsize = (uint64_t)st.st_size;
    uint32_t crc = (uint32_t)crc32(0L, Z_NULL, 0);

    uint8_t prefix[PREFIX_LEN];
    if (fsize < PREFIX_LEN + HEADER_LEN + 8 + 8 + 4) {
        bs_fail(err, "corrupt_state", path, "%s is too small to be a training state", path);
        goto fail;
    }
    if (read_all(fd, prefix, sizeof prefix, &crc, path, err) != 0) goto fail;
    if (memcmp(prefix, STATE_MAGIC, 8) != 0) {
        bs_fail(err, "corrupt_state", path, "%s is not a brewslm training state", path);
        goto fail;
    }
    uint32_t version, hl;
    memcpy(&version, prefix + 8, 4);
    memcpy(&hl, prefix + 12, 4);
    if (version != STATE_VERSION || hl != HEADER_LEN) {
        bs_fail(err, "corrupt_state", path, "%s has unsupported version %u (header %u bytes)", path,
                version, hl);
        goto fail;
    }
    uint8_t header[HEADER_LEN];
    if (read_all(fd, header, sizeof header, &crc, path, err) != 0) goto fail;
    header_unpack(header, &t);
    BsError cerr;
    if (model_config_validate(&t.cfg, &cerr) != 0) {
        bs_fail(err, "corrupt_state", path, "%s holds an invalid model config: %s", path,
                cerr.message);
        goto fail;
    }

    uint64_t extra_len;
    if (read_all(fd, &extra_len, 8, &crc, path, err) != 0) goto fail;
    uint64_t used = PREFIX_LEN + HEADER_LEN + 8, tmp;
    if (add_ov(used, extra_len, &tmp) || add_ov(tmp, 8 + 4, &tmp) || tmp > fsize) {
        bs_fail(err, "corrupt_state", path, "%s: extra section exceeds the file", path);
        goto fail;
    }
    if (extra_len > 0) {
        t.extra = malloc((size_t)extra_len);
        if (!t.extra) {
            bs_fail(err, "out_of_memory", path, "cannot allocate %llu bytes",
                    (unsigned long long)extra_len);
            goto fail;
        }
        if (read_all(fd, t.extra, (size_t)extra_len, &crc, path, err) != 0) goto fail;
    }
    t.extra_len = (size_t)extra_len;
    used += extra_len;

    uint64_t n_params;
    if (read_all(fd, &n_params, 8, &crc, path, err) != 0) goto fail;
    used += 8;
    if (n_params != model_param_count(&t.cfg) || n_params == 0 ||
        n_params > (UINT64_MAX - used - 4) / 12 || used + n_params * 12 + 4 != fsize) {
        bs_fail(err, "corrupt_state", path,
                "%s: %llu parameters do not match its config or the file size", path,
                (unsigned long long)n_params);
        goto fail;
    }
    t.n_params = (size_t)n_params;
    size_t bytes = t.n_params * sizeof(float);
    t.params = malloc(bytes);
    t.m = malloc(bytes);
    t.v = malloc(bytes);
    if (!t.params || !t.m || !t.v) {
        bs_fail(err, "out_of_memory", path, "cannot allocate the state of %zu parameters",
                t.n_params);
        goto fail;
    }
    if (read_all(fd, t.params, bytes, &crc, path, err) != 0) goto fail;
    if (read_all(fd, t.m, bytes, &crc, path, err) != 0) goto fail;
    if (read_all(fd, t.v, bytes, &crc, path, err) != 0) goto fail;
    uint32_t stored;
    if (read_all(fd, &stored, 4, NULL, path, err) != 0) goto fail;
    if (stored != crc) {
        bs_fail(err, "corrupt_state", path, "%s fails its CRC check (stored %08x, computed %08x)",
                path, stored, crc);
        goto fail;
    }
    if (t.step < 0 || t.total_steps < 0 || t.epoch < 0 || t.batch_in_epoch < 0) {
        bs_fail(err, "corrupt_state", path, "%s has negative positions", path);
        goto fail;
    }
    close(fd);
    t.owned = 1;
    *s = t;
    return 0;

fail:
    close(fd);
    free(t.extra);
    free(t.params);
    free(t.m);
    free(t.v);
    return -1;
}

void state_free(TrainState *s) {
    if (!s) return;
    if (s->owned) {
        free(s->extra);
        free(s->params);
        free(s->m);
        free(s->v);
    }
    memset(s, 0, sizeof *s);
}
