// fuzz_safetensors.c — libFuzzer target for the safetensors reader
// (trainer/safetensors.c) and the Hugging Face weight loader on top of it
// (trainer/hf.c).
//
// The input is a .safetensors file. st_open must refuse it with
// model_invalid or accept it; an accepted file must satisfy what the format
// promises: the header is UTF-8, 8 + header + the tensors' bytes is the file size, tensors come
// sorted by distinct name, st_find finds each, every tensor's numel and byte
// size follow from its shape and dtype, its data are the file's bytes at its
// offset, st_read_f32 widens F32/F16/BF16 exactly (checked against a separate
// conversion) and refuses other dtypes and ranges past the end. Float
// tensors are written back with st_write (F32) and read again: same names,
// shapes and values.
//
// An accepted file is then read as the model.safetensors of a Hugging Face
// folder whose config.json is fixed (the tiny Llama of gen_corpus.py, tied
// when the file has no lm_head.weight): hf_peek_model and hf_read_model must
// agree, and the loaded parameters must be the file's tensors with q/k rows
// in llama2.c's order (hf.h's mapping, recomputed here).
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_common.h"
#include "hf.h"
#include "model.h"
#include "safetensors.h"

// The fixed config.json (see gen_corpus.py hf_tiny).
#define T_D 4
#define T_H 8
#define T_L 1
#define T_NH 2
#define T_NKV 1
#define T_V 6
#define T_S 8

static FuzzFile input;
static char tmp_dir[256], out_path[320], model_dir[2][320], model_path[2][400];

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    FUZZ_CHECK(f != NULL, "cannot write %s", path);
    fputs(text, f);
    FUZZ_CHECK(fclose(f) == 0, "cannot close %s", path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fuzz_file_init(&input, "fuzz_safetensors_input");
    snprintf(tmp_dir, sizeof tmp_dir, "%s", fuzz_tmp_dir("fuzz_safetensors"));
    snprintf(out_path, sizeof out_path, "%s/rewrite.safetensors", tmp_dir);
    for (int tied = 0; tied < 2; tied++) {
        snprintf(model_dir[tied], sizeof model_dir[tied], "%s/model%d", tmp_dir, tied);
        FUZZ_CHECK(mkdir(model_dir[tied], 0700) == 0 || errno == EEXIST, "mkdir");
        snprintf(model_path[tied], sizeof model_path[tied], "%s/model.safetensors",
                 model_dir[tied]);
        char cfg[512], path[400];
        snprintf(cfg, sizeof cfg,
                 "{\"model_type\": \"llama\", \"hidden_size\": %d, \"intermediate_size\": %d, "
                 "\"num_hidden_layers\": %d, \"num_attention_heads\": %d, "
                 "\"num_key_value_heads\": %d, \"vocab_size\": %d, "
                 "\"max_position_embeddings\": %d, \"tie_word_embeddings\": %s}\n",
                 T_D, T_H, T_L, T_NH, T_NKV, T_V, T_S, tied ? "true" : "false");
        snprintf(path, sizeof path, "%s/config.json", model_dir[tied]);
        write_text(path, cfg);
    }
    return 0;
}

static size_t dtype_size(StDtype d) {
    switch (d) {
    case ST_BOOL:
    case ST_U8:
    case ST_I8:
    case ST_F8_E5M2:
    case ST_F8_E4M3:
        return 1;
    case ST_I16:
    case ST_U16:
    case ST_F16:
    case ST_BF16:
        return 2;
    case ST_I32:
    case ST_U32:
    case ST_F32:
        return 4;
    case ST_F64:
    case ST_I64:
    case ST_U64:
        return 8;
    }
    return 0;
}

// IEEE binary16 by its definition: (-1)^s * 2^(e-15) * 1.m, subnormals 2^-14 * 0.m.
static float half_ref(uint16_t h) {
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    float v;
    if (e == 0)
        v = ldexpf((float)m, -24);
    else if (e == 31)
        v = m ? NAN : INFINITY;
    else
        v = ldexpf((float)(m + 1024), e - 25);
    return s ? -v : v;
}

static int same_float(float a, float b) {
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
    return memcmp(&a, &b, sizeof a) == 0;
}

// Element i of t widened as the reference conversions say.
static float ref_value(const StTensor *t, size_t i) {
    if (t->dtype == ST_F32) {
        float f;
        memcpy(&f, t->data + 4 * i, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, t->data + 2 * i, 2);
    if (t->dtype == ST_F16) return half_ref(h);
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static void check_read(const StTensor *t, float **vals) {
    BsError err = {0};
    float probe;
    *vals = NULL;
    if (!st_dtype_is_float(t->dtype)) {
        FUZZ_CHECK(st_read_f32(t, 0, 0, &probe, &err) != 0, "read of %s tensor %s accepted",
                   st_dtype_name(t->dtype), t->name);
        return;
    }
    FUZZ_CHECK(st_read_f32(t, t->numel, 1, &probe, &err) != 0, "read past the end of %s", t->name);
    FUZZ_CHECK(st_read_f32(t, SIZE_MAX, 2, &probe, &err) != 0, "overflowing range of %s", t->name);
    float *v = malloc((t->numel ? t->numel : 1) * sizeof *v);
    FUZZ_CHECK(v != NULL, "oom");
    FUZZ_CHECK(st_read_f32(t, 0, t->numel, v, &err) == 0, "read %s: %s", t->name, err.message);
    for (size_t i = 0; i < t->numel; i++)
        FUZZ_CHECK(same_float(v[i], ref_value(t, i)), "%s[%zu] = %g, expected %g", t->name, i,
                   (double)v[i], (double)ref_value(t, i));
    if (t->numel > 1) {
        size_t mid = t->numel / 2;
        FUZZ_CHECK(st_read_f32(t, mid, 1, &probe, &err) == 0 && same_float(probe, v[mid]),
                   "partial read of %s", t->name);
    }
    *vals = v;
}

// Writes the float tensors back as F32 and checks the file reads the same.
static void check_rewrite(const SafeTensors *st, float **vals) {
    int n = st_count(st), k = 0;
    StWriteTensor *w = calloc((size_t)n + 1, sizeof *w);
    FUZZ_CHECK(w != NULL, "oom");
    for (int i = 0; i < n; i++) {
        const StTensor *t = st_tensor(st, i);
        if (!vals[i]) continue;
        w[k].name = t->name;
        w[k].ndim = t->ndim;
        memcpy(w[k].shape, t->shape, sizeof t->shape);
        w[k].data = vals[i];
        k++;
    }
    BsError err = {0};
    FUZZ_CHECK(st_write(out_path, w, k, ST_F32, &err) == 0, "st_write: %s: %s", err.code,
               err.message);
    SafeTensors *back = NULL;
    FUZZ_CHECK(st_open(&back, out_path, &err) == 0, "rewritten file refused: %s", err.message);
    FUZZ_CHECK(st_count(back) == k, "%d tensors written, %d read", k, st_count(back));
    for (int i = 0; i < k; i++) {
        const StTensor *b = st_find(back, w[i].name);
        FUZZ_CHECK(b != NULL, "tensor %s lost in the rewrite", w[i].name);
        FUZZ_CHECK(b->dtype == ST_F32 && b->ndim == w[i].ndim &&
                       memcmp(b->shape, w[i].shape, sizeof(int64_t) * (size_t)b->ndim) == 0,
                   "tensor %s changed dtype or shape", w[i].name);
        FUZZ_CHECK(b->numel == 0 || memcmp(b->data, w[i].data, b->numel * 4) == 0,
                   "tensor %s changed values", w[i].name);
    }
    st_close(back);
    unlink(out_path);
    free(w);
}

// llama2.c row r of q/k (heads of hs rows) lives at this HF row (hf.h).
static size_t hf_row_ref(size_t r, size_t hs) {
    size_t head = r / hs, j = r % hs;
    return head * hs + (j % 2 == 0 ? j / 2 : hs / 2 + j / 2);
}

static void check_hf(const SafeTensors *st, const uint8_t *data, size_t size) {
    int tied = st_find(st, "lm_head.weight") == NULL;
    FILE *f = fopen(model_path[tied], "wb");
    FUZZ_CHECK(f != NULL && fwrite(data, 1, size, f) == size && fclose(f) == 0, "cannot write %s",
               model_path[tied]);
    ModelConfig peek, cfg;
    HfModelInfo info;
    BsError err = {0};
    float *params = (float *)1;
    int rc_peek = hf_peek_model(model_dir[tied], &peek, NULL, &err);
    int rc_read = hf_read_model(model_dir[tied], &cfg, &params, &info, &err);
    FUZZ_CHECK(rc_peek == rc_read, "peek %d, read %d: %s", rc_peek, rc_read, err.message);
    FUZZ_DEBUG("hf_read_model (%s): %d %s", tied ? "tied" : "untied", rc_read,
               rc_read ? err.message : "");
    if (rc_read != 0) {
        FUZZ_CHECK(params == NULL, "failed read left params");
        FUZZ_CHECK(strcmp(err.code, "model_invalid") == 0 ||
                       strcmp(err.code, "model_unsupported") == 0,
                   "code %s: %s", err.code, err.message);
        return;
    }
    FUZZ_CHECK(memcmp(&peek, &cfg, sizeof cfg) == 0, "peek and read disagree");
    FUZZ_CHECK(cfg.dim == T_D && cfg.n_layers == T_L && cfg.vocab_size == T_V &&
                   cfg.shared_classifier == tied,
               "config not as written");
    ModelTensors w;
    model_tensors(&w, params, &cfg);
    const size_t D = T_D, HS = T_D / T_NH, KVD = T_NKV * HS;
    struct {
        const char *name;
        const float *dst;
        size_t rows, cols, heads;
    } want[] = {
        {"model.embed_tokens.weight", w.tok_emb, T_V, D, 0},
        {"model.layers.0.self_attn.q_proj.weight", w.wq, D, D, T_NH},
        {"model.layers.0.self_attn.k_proj.weight", w.wk, KVD, D, T_NKV},
        {"model.layers.0.mlp.down_proj.weight", w.w2, D, T_H, 0},
        {"model.norm.weight", w.rms_final, 1, D, 0},
        {"lm_head.weight", w.wcls, T_V, D, 0},
    };
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        if (tied && k == 5) continue;
        const StTensor *t = st_find(st, want[k].name);
        FUZZ_CHECK(t != NULL, "accepted without %s", want[k].name);
        for (size_t r = 0; r < want[k].rows; r++) {
            size_t src = want[k].heads ? hf_row_ref(r, want[k].rows / want[k].heads) : r;
            for (size_t c = 0; c < want[k].cols; c++)
                FUZZ_CHECK(same_float(want[k].dst[r * want[k].cols + c],
                                      ref_value(t, src * want[k].cols + c)),
                           "%s row %zu col %zu differs", want[k].name, r, c);
        }
    }
    if (tied) FUZZ_CHECK(w.wcls == w.tok_emb, "tied classifier not shared");
    free(params);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_file_set(&input, data, size);
    SafeTensors *st = (SafeTensors *)1;
    BsError err = {0};
    int rc = st_open(&st, input.path, &err);
    FUZZ_DEBUG("st_open: %d %s", rc, rc ? err.message : "");
    if (rc != 0) {
        FUZZ_CHECK(st == NULL, "failed open returned a set");
        FUZZ_CHECK(strcmp(err.code, "model_invalid") == 0, "code %s: %s", err.code, err.message);
        return 0;
    }
    FUZZ_CHECK(size >= 8, "accepted a %zu-byte file", size);
    uint64_t hlen;
    memcpy(&hlen, data, 8);
    FUZZ_CHECK(hlen <= size - 8, "header length %llu", (unsigned long long)hlen);
    // The format's header is UTF-8 JSON (the reference reads it with from_utf8).
    FUZZ_CHECK(fuzz_utf8_valid(data + 8, (size_t)hlen), "accepted a header that is not UTF-8");
    const uint8_t *buf = data + 8 + hlen;
    size_t buf_size = size - 8 - (size_t)hlen, total = 0;
    int n = st_count(st);
    FUZZ_CHECK(n >= 0, "count %d", n);
    // The tensors tile the buffer, so the lowest data pointer is its start.
    const unsigned char *base = NULL;
    for (int i = 0; i < n; i++)
        if (!base || st_tensor(st, i)->data < base) base = st_tensor(st, i)->data;
    float **vals = calloc((size_t)n + 1, sizeof *vals);
    FUZZ_CHECK(vals != NULL, "oom");
    for (int i = 0; i < n; i++) {
        const StTensor *t = st_tensor(st, i);
        if (i > 0) FUZZ_CHECK(strcmp(st_tensor(st, i - 1)->name, t->name) < 0, "names unsorted");
        FUZZ_CHECK(st_find(st, t->name) == t, "st_find(%s)", t->name);
        FUZZ_CHECK(strcmp(st_dtype_name(t->dtype), "?") != 0, "dtype %d", (int)t->dtype);
        FUZZ_CHECK(t->ndim >= 0 && t->ndim <= ST_MAX_DIMS, "ndim %d", t->ndim);
        size_t numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            FUZZ_CHECK(t->shape[d] >= 0, "negative dimension");
            FUZZ_CHECK(!__builtin_mul_overflow(numel, (size_t)t->shape[d], &numel), "overflow");
        }
        FUZZ_CHECK(numel == t->numel, "%s: numel %zu, shape says %zu", t->name, t->numel, numel);
        FUZZ_CHECK(t->nbytes == numel * dtype_size(t->dtype), "%s: %zu bytes", t->name, t->nbytes);
        size_t off = (size_t)(t->data - base);
        FUZZ_CHECK(off <= buf_size && t->nbytes <= buf_size - off, "%s outside the buffer",
                   t->name);
        FUZZ_CHECK(t->nbytes == 0 || memcmp(t->data, buf + off, t->nbytes) == 0,
                   "%s: data differ from the file", t->name);
        total += t->nbytes;
        check_read(t, &vals[i]);
    }
    FUZZ_CHECK(total == buf_size, "tensors cover %zu of %zu bytes", total, buf_size);
    check_rewrite(st, vals);
    check_hf(st, data, size);
    for (int i = 0; i < n; i++)
        free(vals[i]);
    free(vals);
    st_close(st);
    return 0;
}
