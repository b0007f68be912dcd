// test_ckpt.c — llama2.c v0 checkpoints: reading the shared models (configs
// as documented in ../shared/README.md, tensors equal to the raw file bytes),
// write -> read round trips (bit-identical parameters, byte-identical
// re-writes, freq_cis tables as llama2.c exports them), unshared classifiers,
// and clear errors for truncated, padded, garbage, missing and unwritable
// files.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt.h"
#include "model.h"
#include "test_util.h"

static char tmpdir[] = "/tmp/brewslm_ckpt_XXXXXX";

static unsigned char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(n > 0 ? (size_t)n : 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return b;
}

static int spit(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, len, f);
    return (fclose(f) == 0 && w == len) ? 0 : -1;
}

static void tmp_path(char *out, size_t n, const char *name) {
    snprintf(out, n, "%s/%s", tmpdir, name);
}

typedef struct {
    const char *file;
    int dim, hidden, layers, heads, kv_heads, vocab, seq;
} Expected;

// Reads a shared model, checks its config and tensors against the raw file,
// then round-trips it through ckpt_write_llama2c.
static void check_model(const Expected *e) {
    char path[512];
    snprintf(path, sizeof path, "../shared/models/%s", e->file);
    BsError err;
    ModelConfig peek, c;
    float *p = NULL;
    CHECK(ckpt_peek_llama2c(path, &peek, &err) == 0);
    int rc = ckpt_read_llama2c(path, &c, &p, &err);
    CHECK_MSG(rc == 0, "%s: %s", path, err.message);
    if (rc != 0) return;
    CHECK_INT_EQ(c.dim, e->dim);
    CHECK_INT_EQ(c.hidden_dim, e->hidden);
    CHECK_INT_EQ(c.n_layers, e->layers);
    CHECK_INT_EQ(c.n_heads, e->heads);
    CHECK_INT_EQ(c.n_kv_heads, e->kv_heads);
    CHECK_INT_EQ(c.vocab_size, e->vocab);
    CHECK_INT_EQ(c.seq_len, e->seq);
    CHECK_INT_EQ(c.shared_classifier, 1);
    CHECK(c.norm_eps == 1e-5f && c.rope_theta == 10000.0f);
    CHECK(memcmp(&peek, &c, sizeof c) == 0);

    size_t raw_len, P = model_param_count(&c);
    unsigned char *raw = slurp(path, &raw_len);
    CHECK(raw != NULL);
    if (!raw) {
        free(p);
        return;
    }
    int HS = c.dim / c.n_heads;
    size_t freq = (size_t)c.seq_len * HS; // both tables
    CHECK_INT_EQ(raw_len, 28 + 4 * (P + freq));
    // Shared classifier: all parameters precede the freq tables.
    CHECK(memcmp(raw + 28, p, P * 4) == 0);
    ModelTensors t;
    model_tensors(&t, p, &c);
    CHECK(t.wcls == t.tok_emb);
    // rms weights of trained models sit near 1, projections near 0: a
    // layout error would swap these scales.
    double rms_mean = 0, wq_mean = 0;
    for (int i = 0; i < c.dim; i++)
        rms_mean += fabs(t.rms_final[i]) / c.dim;
    for (int i = 0; i < c.dim * c.dim; i++)
        wq_mean += fabs(t.wq[i]) / (c.dim * c.dim);
    CHECK_MSG(rms_mean > 0.2 && wq_mean < 0.5, "rms %g wq %g", rms_mean, wq_mean);

    char out1[600], out2[600], tmpname[620];
    tmp_path(out1, sizeof out1, "a.bin");
    tmp_path(out2, sizeof out2, "b.bin");
    CHECK(ckpt_write_llama2c(out1, &c, p, &err) == 0);
    snprintf(tmpname, sizeof tmpname, "%s.tmp", out1);
    CHECK(access(tmpname, F_OK) != 0);
    size_t len1;
    unsigned char *b1 = slurp(out1, &len1);
    CHECK(b1 && len1 == raw_len);
    if (b1 && len1 == raw_len) {
        // Header and tensors byte-identical to the original file.
        CHECK(memcmp(b1, raw, 28 + P * 4) == 0);
        // freq_cis tables: cos/sin(pos * theta^(-2j/HS)), as llama2.c's
        // export computes them (in float32, so within a few ulp of the
        // original file's and of a double-precision reference).
        const float *fr = (const float *)(b1 + 28 + P * 4);
        const float *fi = fr + freq / 2;
        const float *orr = (const float *)(raw + 28 + P * 4);
        const float *ori = orr + freq / 2;
        double maxd = 0, maxo = 0;
        for (int pos = 0; pos < c.seq_len; pos++) {
            for (int j = 0; j < HS / 2; j++) {
                double f = pos * pow(10000.0, -2.0 * j / HS);
                size_t ix = (size_t)pos * (HS / 2) + j;
                maxd = fmax(maxd, fabs(fr[ix] - cos(f)));
                maxd = fmax(maxd, fabs(fi[ix] - sin(f)));
                maxo = fmax(maxo, fabs(fr[ix] - orr[ix]));
                maxo = fmax(maxo, fabs(fi[ix] - ori[ix]));
            }
        }
        // float32 angle rounding at pos < 512 is at most 512 * 2^-24 ~ 3e-5.
        CHECK_MSG(maxd < 1e-4, "freq vs double %g", maxd);
        CHECK_MSG(maxo < 1e-6, "freq vs original file %g", maxo);
    }
    ModelConfig c2;
    float *p2 = NULL;
    CHECK(ckpt_read_llama2c(out1, &c2, &p2, &err) == 0);
    CHECK(p2 && memcmp(&c2, &c, sizeof c) == 0);
    CHECK(p2 && memcmp(p2, p, P * 4) == 0);
    CHECK(p2 && ckpt_write_llama2c(out2, &c2, p2, &err) == 0);
    size_t len2;
    unsigned char *b2 = slurp(out2, &len2);
    CHECK(b1 && b2 && len1 == len2 && memcmp(b1, b2, len1) == 0);
    free(b1);
    free(b2);
    free(p2);
    free(raw);
    free(p);
    unlink(out1);
    unlink(out2);
}

// A separate classifier: negative vocab in the header, wcls after the tables.
static void check_unshared(void) {
    ModelConfig c = {.dim = 8,
                     .hidden_dim = 12,
                     .n_layers = 2,
                     .n_heads = 2,
                     .n_kv_heads = 1,
                     .vocab_size = 11,
                     .seq_len = 6,
                     .shared_classifier = 0,
                     .norm_eps = 1e-5f,
                     .rope_theta = 10000.0f};
    BsError err;
    CHECK(model_config_validate(&c, &err) == 0);
    size_t P = model_param_count(&c);
    // tok 88 + rms 16 + wq 128 + wk 64 + wv 64 + wo 128 + rms 16 + 3*192 + 8 + wcls 88
    CHECK_INT_EQ(P, 88 + 16 + 128 + 64 + 64 + 128 + 16 + 3 * 192 + 8 + 88);
    float *p = malloc(P * sizeof(float));
    for (size_t i = 0; i < P; i++)
        p[i] = (float)i * 0.5f - 3.0f;
    char out[600];
    tmp_path(out, sizeof out, "unshared.bin");
    CHECK(ckpt_write_llama2c(out, &c, p, &err) == 0);
    size_t len;
    unsigned char *b = slurp(out, &len);
    size_t freq = 6 * 4;
    CHECK_INT_EQ(len, 28 + 4 * (P + freq));
    if (b && len == 28 + 4 * (P + freq)) {
        int32_t h[7];
        memcpy(h, b, 28);
        CHECK(h[0] == 8 && h[1] == 12 && h[2] == 2 && h[3] == 2 && h[4] == 1 && h[5] == -11 &&
              h[6] == 6);
        CHECK(memcmp(b + 28, p, (P - 88) * 4) == 0);
        CHECK(memcmp(b + 28 + (P - 88 + freq) * 4, p + P - 88, 88 * 4) == 0);
    }
    ModelConfig c2;
    float *p2 = NULL;
    CHECK(ckpt_read_llama2c(out, &c2, &p2, &err) == 0);
    CHECK(p2 && c2.shared_classifier == 0 && c2.vocab_size == 11 && c2.n_kv_heads == 1);
    CHECK(p2 && memcmp(p2, p, P * 4) == 0);
    free(b);
    free(p);
    free(p2);
    unlink(out);
}

static void check_bad_files(void) {
    BsError err;
    ModelConfig c;
    float *p = (float *)1;
    char path[600];

    // Missing file.
    tmp_path(path, sizeof path, "missing.bin");
    CHECK(ckpt_read_llama2c(path, &c, &p, &err) == -1);
    CHECK(strcmp(err.code, "model_not_found") == 0);
    CHECK(p == NULL);
    CHECK(ckpt_peek_llama2c(path, &c, &err) == -1 && strcmp(err.code, "model_not_found") == 0);

    // Truncated copy: the error names both sizes.
    size_t len;
    unsigned char *raw = slurp("../shared/models/stories260K.bin", &len);
    CHECK(raw != NULL);
    if (!raw) return;
    tmp_path(path, sizeof path, "trunc.bin");
    CHECK(spit(path, raw, len) == 0);
    CHECK(truncate(path, (off_t)len - 4) == 0);
    CHECK(ckpt_read_llama2c(path, &c, &p, &err) == -1);
    CHECK(strcmp(err.code, "model_invalid") == 0);
    char want[64], got[64];
    snprintf(want, sizeof want, "%zu bytes", len);
    snprintf(got, sizeof got, "is %zu bytes", len - 4);
    CHECK_MSG(strstr(err.message, want) && strstr(err.message, got), "%s", err.message);
    CHECK(ckpt_peek_llama2c(path, &c, &err) == -1 && strcmp(err.code, "model_invalid") == 0);
    // Cut inside the header.
    CHECK(truncate(path, 10) == 0);
    CHECK(ckpt_read_llama2c(path, &c, &p, &err) == -1 && strcmp(err.code, "model_invalid") == 0);
    // Empty file.
    CHECK(truncate(path, 0) == 0);
    CHECK(ckpt_read_llama2c(path, &c, &p, &err) == -1 && strcmp(err.code, "model_invalid") == 0);

    // Trailing bytes are a mismatch too.
    unsigned char *big = malloc(len + 8);
    memcpy(big, raw, len);
    memset(big + len, 0, 8);
    CHECK(spit(path, big, len + 8) == 0);
    CHECK(ckpt_read_llama2c(path, &c, &p, &err) == -1 && strcmp(err.code, "model_invalid") == 0);

    // Garbage headers: a text file, a zero dim, heads not dividing dim, huge
    // sizes whose product would overflow.
    const char *text = "this is not a llama2.c checkpoint, just some text bytes\n";
    CHECK(spit(path, text, strlen(text)) == 0);
    CHECK(ckpt_read_llama2c(path, &c, &p, &err) == -1 && strcmp(err.code, "model_invalid") == 0);
    int32_t headers[][7] = {
        {0, 172, 5, 8, 4, 512, 512},
        {64, 172, 5, 7, 7, 512, 512},
        {64, 172, 5, 8, 3, 512, 512},
        {64, 172, 5, 8, 4, INT32_MIN, 512},
        {2147483647, 2147483647, 2147483647, 1, 1, 2147483647, 2147483647},
        {65536, 262144, 1024, 1, 1, 1 << 24, 1 << 20},
    };
    for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++) {
        memcpy(big, headers[i], 28);
        CHECK(spit(path, big, len) == 0);
        int rc = ckpt_read_llama2c(path, &c, &p, &err);
        CHECK_MSG(rc == -1 && strcmp(err.code, "model_invalid") == 0, "header %zu", i);
    }
    // A directory is not a model.
    CHECK(ckpt_read_llama2c(tmpdir, &c, &p, &err) == -1);
    free(big);
    free(raw);
    unlink(path);
}

static void check_write_errors(void) {
    BsError err;
    ModelConfig c = {.dim = 8,
                     .hidden_dim = 12,
                     .n_layers = 1,
                     .n_heads = 2,
                     .n_kv_heads = 2,
                     .vocab_size = 5,
                     .seq_len = 4,
                     .shared_classifier = 1,
                     .norm_eps = 1e-5f,
                     .rope_theta = 10000.0f};
    size_t P = model_param_count(&c);
    float *p = calloc(P, sizeof(float));
    // The parent "folder" is a regular file (root ignores permission bits,
    // so chmod cannot make a folder unwritable here).
    char file[600], path[700];
    tmp_path(file, sizeof file, "plainfile");
    CHECK(spit(file, "x", 1) == 0);
    snprintf(path, sizeof path, "%s/model.bin", file);
    CHECK(ckpt_write_llama2c(path, &c, p, &err) == -1);
    CHECK(strcmp(err.code, "io") == 0 && strstr(err.message, path) != NULL);
    CHECK(ckpt_write_llama2c("/nonexistent-brewslm-dir/x/model.bin", &c, p, &err) == -1);
    CHECK(strcmp(err.code, "io") == 0);
    // An invalid config is refused before touching the disk.
    ModelConfig bad = c;
    bad.n_heads = 3;
    tmp_path(path, sizeof path, "bad.bin");
    CHECK(ckpt_write_llama2c(path, &bad, p, &err) == -1 && access(path, F_OK) != 0);
    unlink(file);
    free(p);

    // ckpt_write_file_atomic replaces the whole content.
    tmp_path(path, sizeof path, "atomic.txt");
    CHECK(ckpt_write_file_atomic(path, "hello world", 11, &err) == 0);
    CHECK(ckpt_write_file_atomic(path, "bye", 3, &err) == 0);
    size_t len;
    unsigned char *b = slurp(path, &len);
    CHECK(b && len == 3 && memcmp(b, "bye", 3) == 0);
    free(b);
    unlink(path);
}

int main(void) {
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    Expected aid = {"aidreams260K.bin", 64, 172, 4, 4, 4, 512, 128};
    Expected sto = {"stories260K.bin", 64, 172, 5, 8, 4, 512, 512};
    check_model(&aid);
    check_model(&sto);
    check_unshared();
    check_bad_files();
    check_write_errors();
    rmdir(tmpdir);
    return test_summary("ckpt");
}
