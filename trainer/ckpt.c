// ckpt.c — llama2.c "v0" checkpoint files and the library's durable write.
//
// Layout (little-endian, as llama2.c's legacy export writes and run.c's
// memory_map_weights reads): a 28-byte header of 7 int32
// (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len), a
// negative vocab_size meaning an unshared classifier; then fp32 tensors
// tok_emb, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final,
// freq_cis_real (seq_len, HS/2), freq_cis_imag (seq_len, HS/2), and wcls
// when unshared. The freq_cis tables are derived data: skipped on read,
// regenerated on write so run.c (and older runners that use them) work.
#include "ckpt.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "ops.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "llama2.c checkpoints are little-endian; a big-endian host needs byte swapping"
#endif

#define HEADER_BYTES 28

// Floats of the tensors that precede the freq_cis tables (all but wcls).
static size_t floats_before_freq(const ModelConfig *c) {
    size_t p = model_param_count(c);
    return c->shared_classifier ? p : p - (size_t)c->vocab_size * (size_t)c->dim;
}

static size_t freq_floats(const ModelConfig *c) {
    return (size_t)c->seq_len * (size_t)(c->dim / c->n_heads); // real + imag halves
}

// Total file size implied by a validated config (validate bounds it well
// below SIZE_MAX, but check anyway).
static int expected_bytes(const ModelConfig *c, size_t *out) {
    size_t floats, bytes;
    if (__builtin_add_overflow(model_param_count(c), freq_floats(c), &floats) ||
        __builtin_mul_overflow(floats, sizeof(float), &bytes) ||
        __builtin_add_overflow(bytes, (size_t)HEADER_BYTES, &bytes))
        return -1;
    *out = bytes;
    return 0;
}

static int read_full(int fd, void *buf, size_t len, off_t off) {
    char *p = buf;
    while (len > 0) {
        ssize_t r = pread(fd, p, len > (1u << 30) ? (1u << 30) : len, off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        p += r;
        len -= (size_t)r;
        off += r;
    }
    return 0;
}

// Opens path and validates header and size; on success *fd_out is open and
// the caller closes it.
static int open_checked(const char *path, ModelConfig *cfg, int *fd_out, BsError *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return bs_fail(err, "model_not_found", path, "cannot open model file %s: %s", path,
                       strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return bs_fail(err, "io", path, "cannot stat model file %s: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return bs_fail(err, "model_invalid", path, "model path %s is not a regular file", path);
    }
    size_t actual = (size_t)st.st_size;
    int32_t h[7];
    if (actual < HEADER_BYTES) {
        close(fd);
        return bs_fail(err, "model_invalid", path,
                       "model file %s is %zu bytes, shorter than the 28-byte llama2.c header", path,
                       actual);
    }
    if (read_full(fd, h, sizeof h, 0) != 0) {
        int e = errno;
        close(fd);
        return bs_fail(err, "io", path, "cannot read header of %s: %s", path, strerror(e));
    }
    static const char *names[7] = {"dim",        "hidden_dim", "n_layers", "n_heads",
                                   "n_kv_heads", "vocab_size", "seq_len"};
    for (int i = 0; i < 7; i++) {
        // vocab may be negative (unshared classifier) but never 0 or INT_MIN.
        int bad = (i == 5) ? (h[i] == 0 || h[i] == INT32_MIN) : (h[i] <= 0);
        if (bad) {
            close(fd);
            return bs_fail(err, "model_invalid", path,
                           "%s is not a llama2.c checkpoint: header %s = %d", path, names[i],
                           (int)h[i]);
        }
    }
    ModelConfig c = {
        .dim = h[0],
        .hidden_dim = h[1],
        .n_layers = h[2],
        .n_heads = h[3],
        .n_kv_heads = h[4],
        .vocab_size = h[5] < 0 ? -h[5] : h[5],
        .seq_len = h[6],
        .shared_classifier = h[5] > 0,
        .norm_eps = 1e-5f,
        .rope_theta = 10000.0f,
    };
    BsError verr;
    if (model_config_validate(&c, &verr) != 0) {
        close(fd);
        return bs_fail(err, "model_invalid", path, "%s has an invalid llama2.c header: %s", path,
                       verr.message);
    }
    size_t expected;
    if (expected_bytes(&c, &expected) != 0) {
        close(fd);
        return bs_fail(err, "model_invalid", path, "%s: header sizes overflow", path);
    }
    if (expected != actual) {
        close(fd);
        return bs_fail(err, "model_invalid", path,
                       "%s is %zu bytes but its header (dim %d, hidden %d, layers %d, heads %d, "
                       "kv heads %d, vocab %d, seq_len %d) needs exactly %zu bytes",
                       path, actual, c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads,
                       c.vocab_size, c.seq_len, expected);
    }
    *cfg = c;
    *fd_out = fd;
    return 0;
}

int ckpt_peek_llama2c(const char *path, ModelConfig *cfg, BsError *err) {
    int fd;
    if (open_checked(path, cfg, &fd, err) != 0) return -1;
    close(fd);
    return 0;
}

int ckpt_read_llama2c(const char *path, ModelConfig *cfg, float **params, BsError *err) {
    ModelConfig c;
    int fd;
    *params = NULL;
    if (open_checked(path, &c, &fd, err) != 0) return -1;
    size_t n = model_param_count(&c), before = floats_before_freq(&c);
    float *p = malloc(n * sizeof(float));
    if (!p) {
        close(fd);
        return bs_fail(err, "out_of_memory", path, "cannot allocate %zu bytes for %s",
                       n * sizeof(float), path);
    }
    off_t off = HEADER_BYTES;
    if (read_full(fd, p, before * sizeof(float), off) != 0) goto fail_io;
    if (n > before) {
        off += (off_t)((before + freq_floats(&c)) * sizeof(float));
        if (read_full(fd, p + before, (n - before) * sizeof(float), off) != 0) goto fail_io;
    }
    close(fd);
    *cfg = c;
    *params = p;
    return 0;

fail_io:;
    int e = errno;
    free(p);
    close(fd);
    return bs_fail(err, "io", path, "cannot read tensors of %s: %s", path,
                   e ? strerror(e) : "file changed while reading");
}

// Writes every iov chunk to path.tmp, fsyncs, renames over path and fsyncs
// the containing directory, so readers see the old file or the new one.
static int write_atomic_iov(const char *path, const struct iovec *iov, int n_iov, BsError *err) {
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 5);
    char *dir = malloc(plen + 2);
    int fd = -1, e = 0;
    const char *what = "";
    if (!tmp || !dir) {
        free(tmp);
        free(dir);
        return bs_fail(err, "out_of_memory", path, "cannot allocate a path for %s", path);
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        e = errno;
        what = "create";
        goto fail;
    }
    for (int i = 0; i < n_iov; i++) {
        const char *p = iov[i].iov_base;
        size_t len = iov[i].iov_len;
        while (len > 0) {
            ssize_t w = write(fd, p, len > (1u << 30) ? (1u << 30) : len);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) {
                e = w < 0 ? errno : EIO;
                what = "write";
                goto fail_unlink;
            }
            p += w;
            len -= (size_t)w;
        }
    }
    if (fsync(fd) != 0) {
        e = errno;
        what = "fsync";
        goto fail_unlink;
    }
    if (close(fd) != 0) {
        fd = -1;
        e = errno;
        what = "close";
        goto fail_unlink;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        e = errno;
        what = "rename";
        goto fail_unlink;
    }
    // fsync the directory so the rename itself survives a crash.
    memcpy(dir, path, plen + 1);
    char *slash = strrchr(dir, '/');
    if (!slash) {
        strcpy(dir, ".");
    } else if (slash == dir) {
        dir[1] = '\0';
    } else {
        *slash = '\0';
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0) {
        e = errno;
        if (dfd >= 0) close(dfd);
        what = "fsync the folder of";
        goto fail;
    }
    close(dfd);
    free(tmp);
    free(dir);
    return 0;

fail_unlink:
    if (fd >= 0) close(fd);
    fd = -1;
    unlink(tmp);
fail:
    if (fd >= 0) close(fd);
    free(tmp);
    free(dir);
    return bs_fail(err, "io", path, "cannot %s %s: %s", what, path, strerror(e));
}

int ckpt_write_file_atomic(const char *path, const void *data, size_t len, BsError *err) {
    struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
    return write_atomic_iov(path, &iov, 1, err);
}

int ckpt_write_iov_atomic(const char *path, const struct iovec *iov, int n_iov, BsError *err) {
    return write_atomic_iov(path, iov, n_iov, err);
}

int ckpt_write_llama2c(const char *path, const ModelConfig *cfg, const float *params,
                       BsError *err) {
    if (model_config_validate(cfg, err) != 0) return -1;
    int hs = cfg->dim / cfg->n_heads;
    int32_t h[7] = {cfg->dim,        cfg->hidden_dim,
                    cfg->n_layers,   cfg->n_heads,
                    cfg->n_kv_heads, cfg->shared_classifier ? cfg->vocab_size : -cfg->vocab_size,
                    cfg->seq_len};
    size_t half = (size_t)cfg->seq_len * (size_t)(hs / 2);
    float *freq = malloc(2 * half * sizeof(float));
    if (!freq)
        return bs_fail(err, "out_of_memory", path, "cannot allocate the freq_cis tables for %s",
                       path);
    ops_rope_tables(freq, freq + half, cfg->seq_len, hs, cfg->rope_theta);
    size_t n = model_param_count(cfg), before = floats_before_freq(cfg);
    struct iovec iov[4] = {
        {.iov_base = h, .iov_len = sizeof h},
        {.iov_base = (void *)params, .iov_len = before * sizeof(float)},
        {.iov_base = freq, .iov_len = 2 * half * sizeof(float)},
        {.iov_base = (void *)(params + before), .iov_len = (n - before) * sizeof(float)},
    };
    int rc = write_atomic_iov(path, iov, 4, err);
    free(freq);
    return rc;
}
