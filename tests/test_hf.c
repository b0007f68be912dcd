// test_hf.c — Hugging Face model folders (trainer/hf.h, trainer/safetensors.h):
//   * the shared llama2.c models -> hf_export (F32) -> ckpt_read_model gives
//     bit-identical parameters, and the file holds q/k rows in HF's
//     rotate-half order (checked with this test's own index formula), every
//     other tensor verbatim, config.json with LlamaConfig's key set;
//   * same logits and greedy ids from the .bin and from the folder (and, for
//     aidreams260K, the ids llama2.c's run.c prints, per ../shared/README.md);
//   * BF16 export: every value is the nearest bfloat16, ties to even;
//   * a folder written by this test's own safetensors writer (F32, F16, BF16
//     mixed, shards with an index) reads back bit-identically;
//   * malformed files and configs fail with the documented code and param.
// Extra modes used by the hf_convert test (tests/hf/llama2c_to_hf.py):
//   test_hf --compare MODEL.bin DIR      exit 0 when DIR reads back to MODEL.bin
//   test_hf --export MODEL.bin DIR [--bf16]
#include <cjson/cJSON.h>
#include <ftw.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt.h"
#include "generate.h"
#include "hf.h"
#include "model.h"
#include "safetensors.h"
#include "test_util.h"

static char tmpdir[] = "/tmp/brewslm_hf_XXXXXX";

static void tmp_path(char *out, size_t n, const char *name) {
    snprintf(out, n, "%s/%s", tmpdir, name);
}

static unsigned char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(n > 0 ? (size_t)n + 1 : 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b) b[n > 0 ? n : 0] = 0;
    *len = (size_t)n;
    return b;
}

static int spit(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, len, f);
    return (fclose(f) == 0 && w == len) ? 0 : -1;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void rm_rf(const char *path) {
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

#define CHECK_ERR(rc, e, want_code, want_param)                                                    \
    CHECK_MSG((rc) == -1 && strcmp((e).code, want_code) == 0 &&                                    \
                  strcmp((e).param, want_param) == 0 && (e).message[0] != '\0',                    \
              "rc %d code \"%s\" param \"%s\" (want %s / %s): %s", rc, (e).code, (e).param,        \
              want_code, want_param, (e).message)

static int same_config(const ModelConfig *a, const ModelConfig *b) {
    return a->dim == b->dim && a->hidden_dim == b->hidden_dim && a->n_layers == b->n_layers &&
           a->n_heads == b->n_heads && a->n_kv_heads == b->n_kv_heads &&
           a->vocab_size == b->vocab_size && a->seq_len == b->seq_len &&
           a->shared_classifier == b->shared_classifier && a->norm_eps == b->norm_eps &&
           a->rope_theta == b->rope_theta;
}

// ---------------------------------------------------------------------------
// This test's own description of a Llama folder: names, shapes and the HF
// q/k row order written as the view/transpose of convert_llama_weights_to_hf:
// HF view (heads, 2, HS/2, cols) <- llama2.c view (heads, HS/2, 2, cols).

typedef struct {
    char name[64];
    char dtype[12];
    int ndim;
    long long shape[2];
    long long begin, end;
} Ent;

// Entries in llama2.c flat order; hf (model_param_count floats) receives each
// tensor in HF layout at the same flat offset. Returns the entry count.
static int hf_layout(const ModelConfig *c, const float *params, float *hf, Ent *e) {
    long long D = c->dim, H = c->hidden_dim, V = c->vocab_size, L = c->n_layers;
    long long HS = D / c->n_heads, KVD = c->n_kv_heads * HS;
    int n = 0;
    size_t off = 0;
#define ENT(nd, r, cc, heads, ...)                                                                 \
    do {                                                                                           \
        Ent *x = &e[n++];                                                                          \
        snprintf(x->name, sizeof x->name, __VA_ARGS__);                                            \
        strcpy(x->dtype, "F32");                                                                   \
        x->ndim = nd;                                                                              \
        x->shape[0] = r;                                                                           \
        x->shape[1] = cc;                                                                          \
        size_t cnt = (size_t)(r) * (size_t)((nd) == 2 ? (cc) : 1);                                 \
        if ((heads) > 0) {                                                                         \
            for (long long h = 0; h < (heads); h++)                                                \
                for (long long half = 0; half < 2; half++)                                         \
                    for (long long i = 0; i < HS / 2; i++)                                         \
                        memcpy(hf + off + (size_t)(((h * 2 + half) * (HS / 2) + i) * (cc)),        \
                               params + off + (size_t)((h * HS + 2 * i + half) * (cc)),            \
                               (size_t)(cc) * sizeof(float));                                      \
        } else {                                                                                   \
            memcpy(hf + off, params + off, cnt * sizeof(float));                                   \
        }                                                                                          \
        off += cnt;                                                                                \
    } while (0)
    // flat order: tok_emb, rms_att[L], wq[L], wk[L], wv[L], wo[L], rms_ffn[L], w1, w2, w3, norm
    ENT(2, V, D, 0, "model.embed_tokens.weight");
    for (long long l = 0; l < L; l++)
        ENT(1, D, 0, 0, "model.layers.%lld.input_layernorm.weight", l);
    for (long long l = 0; l < L; l++)
        ENT(2, D, D, c->n_heads, "model.layers.%lld.self_attn.q_proj.weight", l);
    for (long long l = 0; l < L; l++)
        ENT(2, KVD, D, c->n_kv_heads, "model.layers.%lld.self_attn.k_proj.weight", l);
    for (long long l = 0; l < L; l++)
        ENT(2, KVD, D, 0, "model.layers.%lld.self_attn.v_proj.weight", l);
    for (long long l = 0; l < L; l++)
        ENT(2, D, D, 0, "model.layers.%lld.self_attn.o_proj.weight", l);
    for (long long l = 0; l < L; l++)
        ENT(1, D, 0, 0, "model.layers.%lld.post_attention_layernorm.weight", l);
    for (long long l = 0; l < L; l++)
        ENT(2, H, D, 0, "model.layers.%lld.mlp.gate_proj.weight", l);
    for (long long l = 0; l < L; l++)
        ENT(2, D, H, 0, "model.layers.%lld.mlp.down_proj.weight", l);
    for (long long l = 0; l < L; l++)
        ENT(2, H, D, 0, "model.layers.%lld.mlp.up_proj.weight", l);
    ENT(1, D, 0, 0, "model.norm.weight");
    if (!c->shared_classifier) ENT(2, V, D, 0, "lm_head.weight");
#undef ENT
    return n;
}

static size_t ent_numel(const Ent *e) {
    return (size_t)e->shape[0] * (size_t)(e->ndim == 2 ? e->shape[1] : 1);
}

// f32 -> f16 bits for values exactly representable as normal halves (or 0).
static uint16_t f16_bits_exact(float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    if ((b & 0x7fffffffu) == 0) return (uint16_t)(b >> 16);
    uint32_t sign = (b >> 16) & 0x8000u, exp = ((b >> 23) & 0xffu) - 127u + 15u;
    return (uint16_t)(sign | (exp << 10) | ((b >> 13) & 0x3ffu));
}

// Serialises entries (dtype per entry: F32, F16 or BF16) from hf floats at
// their flat offsets; sets contiguous data_offsets. *bytes malloc'd.
static size_t encode(Ent *e, int n, const float *hf, unsigned char **bytes) {
    size_t total = 0, off = 0;
    for (int k = 0; k < n; k++)
        total += ent_numel(&e[k]) * (strcmp(e[k].dtype, "F32") == 0 ? 4 : 2);
    unsigned char *b = malloc(total ? total : 1);
    size_t at = 0;
    for (int k = 0; k < n; k++) {
        size_t cnt = ent_numel(&e[k]);
        e[k].begin = (long long)at;
        for (size_t i = 0; i < cnt; i++) {
            float v = hf[off + i];
            if (strcmp(e[k].dtype, "F32") == 0) {
                memcpy(b + at, &v, 4);
                at += 4;
            } else {
                uint32_t u;
                memcpy(&u, &v, 4);
                uint16_t h =
                    strcmp(e[k].dtype, "F16") == 0 ? f16_bits_exact(v) : (uint16_t)(u >> 16);
                memcpy(b + at, &h, 2);
                at += 2;
            }
        }
        e[k].end = (long long)at;
        off += cnt;
    }
    *bytes = b;
    return total;
}

// Writes a safetensors file from entries and raw data. hdr_len: 0 = actual.
static void write_st(const char *path, const Ent *e, int n, const unsigned char *data,
                     size_t data_len, uint64_t hdr_len, size_t cut) {
    size_t cap = 256 + (size_t)n * 192;
    char *h = malloc(cap);
    size_t at = (size_t)snprintf(h, cap, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int k = 0; k < n; k++) {
        at += (size_t)snprintf(h + at, cap - at, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", e[k].name,
                               e[k].dtype);
        for (int d = 0; d < e[k].ndim; d++)
            at += (size_t)snprintf(h + at, cap - at, d ? ",%lld" : "%lld", e[k].shape[d]);
        at += (size_t)snprintf(h + at, cap - at, "],\"data_offsets\":[%lld,%lld]}", e[k].begin,
                               e[k].end);
    }
    at += (size_t)snprintf(h + at, cap - at, "}");
    uint64_t len = hdr_len ? hdr_len : at;
    size_t total = 8 + at + data_len;
    unsigned char *f = malloc(total);
    memcpy(f, &len, 8);
    memcpy(f + 8, h, at);
    if (data_len) memcpy(f + 8 + at, data, data_len);
    CHECK(spit(path, f, total - cut) == 0);
    free(f);
    free(h);
}

static const char *TINY_CONFIG =
    "{\"model_type\": \"llama\", \"hidden_size\": 8, \"intermediate_size\": 12, "
    "\"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"num_key_value_heads\": 1, "
    "\"vocab_size\": 10, \"max_position_embeddings\": 16, \"rms_norm_eps\": 1e-05, "
    "\"tie_word_embeddings\": %s, \"hidden_act\": \"silu\", \"rope_theta\": 10000.0%s}";

static ModelConfig tiny_config(int shared) {
    ModelConfig c = {.dim = 8,
                     .hidden_dim = 12,
                     .n_layers = 2,
                     .n_heads = 2,
                     .n_kv_heads = 1,
                     .vocab_size = 10,
                     .seq_len = 16,
                     .shared_classifier = shared,
                     .norm_eps = 1e-5f,
                     .rope_theta = 10000.0f};
    return c;
}

// Multiples of 1/64 in [-1, 1]: exact in F16 and BF16.
static float *tiny_params(const ModelConfig *c) {
    size_t P = model_param_count(c);
    float *p = malloc(P * sizeof *p);
    for (size_t i = 0; i < P; i++)
        p[i] = (float)((long long)((i * 37 + 11) % 129) - 64) / 64.0f;
    return p;
}

static void make_dir(const char *name, char *out, size_t n) {
    tmp_path(out, n, name);
    mkdir(out, 0755);
}

static void write_config(const char *dir, const char *text) {
    char p[512];
    snprintf(p, sizeof p, "%s/config.json", dir);
    CHECK(spit(p, text, strlen(text)) == 0);
}

static void tiny_config_text(char *out, size_t n, int shared, const char *extra) {
    snprintf(out, n, TINY_CONFIG, shared ? "true" : "false", extra);
}

// ---------------------------------------------------------------------------
// shared models

// logp of a fixed sequence through model_forward.
static void forward_logp(const ModelConfig *c, const float *params, const int *tok, int n,
                         float *logp) {
    Model *m = NULL;
    BsError err;
    CHECK(model_create(&m, c, 0, &err) == 0);
    if (!m) return;
    memcpy(model_params(m), params, model_param_count(c) * sizeof(float));
    int offsets[2] = {0, n}, targets[64];
    for (int i = 0; i < n; i++)
        targets[i] = i + 1 < n ? tok[i + 1] : -1;
    ModelBatch b = {.n_seqs = 1, .offsets = offsets, .tokens = tok, .targets = targets};
    CHECK(model_forward(m, &b, logp, 0, &err) == 0);
    model_free(m);
}

static void greedy(const ModelConfig *c, const float *params, int **ids, int *n) {
    BsError err;
    int prompt[1] = {1};
    GenerateOptions opt = {.max_new_tokens = 24, .temperature = 0.0f};
    *ids = NULL;
    *n = 0;
    CHECK(generate(c, params, prompt, 1, &opt, ids, n, &err) == 0);
}

static void check_config_json(const char *dir, const ModelConfig *c, const char *dtype) {
    static const char *keys[] = {"architectures",
                                 "attention_bias",
                                 "attention_dropout",
                                 "bos_token_id",
                                 "eos_token_id",
                                 "head_dim",
                                 "hidden_act",
                                 "hidden_size",
                                 "initializer_range",
                                 "intermediate_size",
                                 "max_position_embeddings",
                                 "mlp_bias",
                                 "model_type",
                                 "num_attention_heads",
                                 "num_hidden_layers",
                                 "num_key_value_heads",
                                 "pretraining_tp",
                                 "rms_norm_eps",
                                 "rope_scaling",
                                 "rope_theta",
                                 "tie_word_embeddings",
                                 "torch_dtype",
                                 "use_cache",
                                 "vocab_size"};
    char p[512];
    size_t len;
    snprintf(p, sizeof p, "%s/config.json", dir);
    char *text = (char *)slurp(p, &len);
    CHECK(text != NULL);
    if (!text) return;
    cJSON *j = cJSON_Parse(text);
    CHECK(cJSON_IsObject(j));
    int nk = (int)(sizeof keys / sizeof keys[0]);
    CHECK_INT_EQ(cJSON_GetArraySize(j), nk);
    for (int i = 0; i < nk; i++)
        CHECK_MSG(cJSON_GetObjectItemCaseSensitive(j, keys[i]) != NULL, "config.json lacks %s",
                  keys[i]);
#define NUM(k) cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(j, k))
#define STR(k) cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, k))
    const cJSON *arch = cJSON_GetObjectItemCaseSensitive(j, "architectures");
    CHECK(cJSON_GetArraySize(arch) == 1 &&
          strcmp(cJSON_GetStringValue(cJSON_GetArrayItem(arch, 0)), "LlamaForCausalLM") == 0);
    CHECK(STR("model_type") && strcmp(STR("model_type"), "llama") == 0);
    CHECK(STR("hidden_act") && strcmp(STR("hidden_act"), "silu") == 0);
    CHECK(STR("torch_dtype") && strcmp(STR("torch_dtype"), dtype) == 0);
    CHECK_INT_EQ(NUM("hidden_size"), c->dim);
    CHECK_INT_EQ(NUM("intermediate_size"), c->hidden_dim);
    CHECK_INT_EQ(NUM("num_hidden_layers"), c->n_layers);
    CHECK_INT_EQ(NUM("num_attention_heads"), c->n_heads);
    CHECK_INT_EQ(NUM("num_key_value_heads"), c->n_kv_heads);
    CHECK_INT_EQ(NUM("head_dim"), c->dim / c->n_heads);
    CHECK_INT_EQ(NUM("vocab_size"), c->vocab_size);
    CHECK_INT_EQ(NUM("max_position_embeddings"), c->seq_len);
    CHECK_INT_EQ(NUM("bos_token_id"), 1);
    CHECK_INT_EQ(NUM("eos_token_id"), 2);
    CHECK(NUM("rms_norm_eps") == 1e-5); // the shortest decimal, as Python writes 1e-05
    CHECK(NUM("rope_theta") == 10000.0);
    CHECK(strstr(text, "\"rms_norm_eps\": 1e-05,") != NULL);
    CHECK(strstr(text, "\"rope_theta\": 10000.0,") != NULL);
    CHECK(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "rope_scaling")));
    CHECK(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(j, "attention_bias")));
    CHECK(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(j, "mlp_bias")));
    CHECK(cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(j, "tie_word_embeddings")) &&
          cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "tie_word_embeddings")) ==
              c->shared_classifier);
#undef NUM
#undef STR
    cJSON_Delete(j);
    free(text);
}

// The exported file: header padding, metadata, name order, and each tensor
// in the layout this test's hf_layout computes (q/k permuted, rest verbatim).
static void check_file_layout(const char *dir, const ModelConfig *c, const float *params) {
    char p[600];
    size_t len;
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    unsigned char *raw = slurp(p, &len);
    CHECK(raw && len > 8);
    if (!raw) return;
    uint64_t hl;
    memcpy(&hl, raw, 8);
    CHECK_INT_EQ((8 + hl) % 8, 0);
    CHECK(raw[8 + hl - 1] == ' ' || raw[8 + hl - 1] == '}');
    cJSON *h = cJSON_ParseWithLength((const char *)raw + 8, hl);
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(h, "__metadata__");
    CHECK(meta && strcmp(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(meta, "format")),
                         "pt") == 0);
    // data in name order: offsets ascend with the names
    const char *prev = "";
    double prev_end = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, h) {
        if (strcmp(e->string, "__metadata__") == 0) continue;
        CHECK_MSG(strcmp(prev, e->string) < 0, "%s after %s", e->string, prev);
        const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
        CHECK(cJSON_GetNumberValue(cJSON_GetArrayItem(off, 0)) == prev_end);
        prev_end = cJSON_GetNumberValue(cJSON_GetArrayItem(off, 1));
        prev = e->string;
    }
    CHECK(prev_end == (double)(len - 8 - hl));
    cJSON_Delete(h);
    free(raw);

    size_t P = model_param_count(c);
    float *hf = malloc(P * sizeof *hf), *got = malloc(P * sizeof *got);
    Ent *ent = calloc((size_t)(9 * c->n_layers + 3), sizeof *ent);
    int n = hf_layout(c, params, hf, ent);
    SafeTensors *st = NULL;
    BsError err;
    CHECK(st_open(&st, p, &err) == 0);
    if (st) {
        CHECK_INT_EQ(st_count(st), n);
        size_t off = 0;
        for (int k = 0; k < n; k++) {
            const StTensor *t = st_find(st, ent[k].name);
            CHECK_MSG(t != NULL, "missing %s", ent[k].name);
            size_t cnt = ent_numel(&ent[k]);
            if (t) {
                CHECK(t->dtype == ST_F32 && t->ndim == ent[k].ndim &&
                      t->shape[0] == ent[k].shape[0]);
                CHECK(st_read_f32(t, 0, cnt, got + off, &err) == 0);
                CHECK_MSG(memcmp(got + off, hf + off, cnt * sizeof(float)) == 0,
                          "tensor %s differs from the expected HF layout", ent[k].name);
            }
            off += cnt;
        }
        CHECK_INT_EQ(off, P);
        st_close(st);
    }
    free(ent);
    free(got);
    free(hf);
}

// Nearest bfloat16 of x, ties to even, checked against both neighbours.
static int is_nearest_bf16(float x, float y) {
    uint32_t ux, uy;
    memcpy(&ux, &x, 4);
    memcpy(&uy, &y, 4);
    if ((uy & 0xffffu) != 0) return 0;
    uint32_t lo = ux & 0xffff0000u, hi = lo + 0x10000u;
    float flo, fhi;
    memcpy(&flo, &lo, 4);
    memcpy(&fhi, &hi, 4);
    double dlo = fabs((double)x - flo), dhi = fabs((double)x - fhi), dy = fabs((double)x - y);
    if (uy != lo && uy != hi) return 0;
    if (dlo != dhi) return dy == (dlo < dhi ? dlo : dhi);
    return ((uy >> 16) & 1u) == 0; // a tie goes to the even one
}

static void check_shared_model(const char *file, const int *known_ids, int n_known) {
    char bin[256], dir[512], dir16[512];
    snprintf(bin, sizeof bin, "../shared/models/%s", file);
    snprintf(dir, sizeof dir, "%s/%s-f32", tmpdir, file);
    snprintf(dir16, sizeof dir16, "%s/%s-bf16", tmpdir, file);
    BsError err;
    ModelConfig c, c2, cpeek;
    float *p = NULL, *p2 = NULL, *p16 = NULL;
    CHECK(ckpt_read_llama2c(bin, &c, &p, &err) == 0);
    if (!p) return;
    size_t P = model_param_count(&c);

    // lossless F32 round trip through the folder
    CHECK_MSG(hf_export(dir, &c, p, NULL, 0, NULL, &err) == 0, "%s", err.message);
    CHECK(ckpt_peek_model(dir, &cpeek, &err) == 0);
    CHECK(same_config(&cpeek, &c));
    CHECK_MSG(ckpt_read_model(dir, &c2, &p2, &err) == 0, "%s", err.message);
    if (p2) {
        CHECK(same_config(&c2, &c));
        CHECK_MSG(memcmp(p, p2, P * sizeof(float)) == 0, "%s: parameters differ", file);
    }
    HfModelInfo info;
    float *p3 = NULL;
    CHECK(hf_read_model(dir, &c2, &p3, &info, &err) == 0);
    CHECK(strcmp(info.model_type, "llama") == 0 && strcmp(info.torch_dtype, "float32") == 0);
    CHECK(info.bos_token_id == 1 && info.n_eos == 1 && info.eos_token_ids[0] == 2);
    free(p3);
    check_config_json(dir, &c, "float32");
    check_file_layout(dir, &c, p);

    // .bin and folder: same log-probs, same greedy ids
    int tok[12] = {1, 5, 17, 200, 33, 99, 4, 250, 7, 301, 12, 60};
    float lp1[12], lp2[12];
    forward_logp(&c, p, tok, 12, lp1);
    int *g1 = NULL, *g2 = NULL, n1 = 0, n2 = 0;
    greedy(&c, p, &g1, &n1);
    if (p2) {
        forward_logp(&c2, p2, tok, 12, lp2);
        CHECK(memcmp(lp1, lp2, sizeof lp1) == 0);
        greedy(&c2, p2, &g2, &n2);
        CHECK(n1 == n2 && n1 > 0 && memcmp(g1, g2, (size_t)n1 * sizeof(int)) == 0);
        for (int i = 0; i < n_known; i++)
            CHECK_MSG(i < n2 && g2[i] == known_ids[i], "id %d: %d, run.c prints %d", i,
                      i < n2 ? g2[i] : -1, known_ids[i]);
    }

    // BF16: the nearest bfloat16 of every parameter
    CHECK(hf_export(dir16, &c, p, NULL, 1, NULL, &err) == 0);
    check_config_json(dir16, &c, "bfloat16");
    CHECK(ckpt_read_model(dir16, &c2, &p16, &err) == 0);
    if (p16) {
        size_t bad = 0, changed = 0;
        for (size_t i = 0; i < P; i++) {
            bad += !is_nearest_bf16(p[i], p16[i]);
            changed += p[i] != p16[i];
        }
        CHECK_MSG(bad == 0, "%zu of %zu values are not the nearest bfloat16", bad, P);
        CHECK(changed > P / 2); // fp32 weights really were rounded
        SafeTensors *st = NULL;
        char f[600];
        snprintf(f, sizeof f, "%s/model.safetensors", dir16);
        CHECK(st_open(&st, f, &err) == 0);
        if (st) {
            CHECK(st_find(st, "model.norm.weight")->dtype == ST_BF16);
            st_close(st);
        }
    }
    free(g1);
    free(g2);
    free(p);
    free(p2);
    free(p16);
}

// ---------------------------------------------------------------------------
// this test's writer -> the library's reader

static void test_foreign_files(void) {
    BsError err;
    for (int shared = 0; shared <= 1; shared++) {
        ModelConfig c = tiny_config(shared);
        float *p = tiny_params(&c);
        size_t P = model_param_count(&c);
        float *hf = malloc(P * sizeof *hf), *got = NULL;
        Ent e[32];
        int n = hf_layout(&c, p, hf, e);
        // mixed dtypes: F16, BF16 and F32 in turn
        static const char *dt[3] = {"F16", "BF16", "F32"};
        for (int k = 0; k < n; k++)
            strcpy(e[k].dtype, dt[k % 3]);
        unsigned char *bytes;
        size_t nb = encode(e, n, hf, &bytes);
        char dir[512], path[600], cfgtext[1024];
        make_dir(shared ? "mixed-tied" : "mixed", dir, sizeof dir);
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        write_st(path, e, n, bytes, nb, 0, 0);
        tiny_config_text(cfgtext, sizeof cfgtext, shared, "");
        write_config(dir, cfgtext);
        ModelConfig c2;
        CHECK_MSG(ckpt_read_model(dir, &c2, &got, &err) == 0, "%s", err.message);
        if (got) {
            CHECK(same_config(&c, &c2));
            CHECK_MSG(memcmp(got, p, P * sizeof(float)) == 0, "mixed-dtype folder differs");
            free(got);
            got = NULL;
        }

        // the same tensors in two shards + index (first half / second half)
        char sdir[512], idx[8192];
        make_dir(shared ? "sharded-tied" : "sharded", sdir, sizeof sdir);
        write_config(sdir, cfgtext);
        int half = n / 2;
        size_t base2 = (size_t)e[half].begin;
        Ent e2[32];
        memcpy(e2, e + half, (size_t)(n - half) * sizeof *e);
        for (int k = 0; k < n - half; k++) {
            e2[k].begin -= (long long)base2;
            e2[k].end -= (long long)base2;
        }
        snprintf(path, sizeof path, "%s/model-00001-of-00002.safetensors", sdir);
        write_st(path, e, half, bytes, base2, 0, 0);
        snprintf(path, sizeof path, "%s/model-00002-of-00002.safetensors", sdir);
        write_st(path, e2, n - half, bytes + base2, nb - base2, 0, 0);
        size_t at = (size_t)snprintf(idx, sizeof idx,
                                     "{\"metadata\": {\"total_size\": %zu}, \"weight_map\": {", nb);
        for (int k = 0; k < n; k++)
            at += (size_t)snprintf(idx + at, sizeof idx - at,
                                   "%s\"%s\": \"model-0000%d-of-00002.safetensors\"", k ? ", " : "",
                                   e[k].name, k < half ? 1 : 2);
        snprintf(idx + at, sizeof idx - at, "}}");
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", sdir);
        CHECK(spit(path, idx, strlen(idx)) == 0);
        CHECK_MSG(ckpt_read_model(sdir, &c2, &got, &err) == 0, "%s", err.message);
        if (got) {
            CHECK(memcmp(got, p, P * sizeof(float)) == 0);
            free(got);
            got = NULL;
        }
        if (shared) {
            int rc;
            // a weight_map entry naming the wrong shard
            char bad[8192];
            snprintf(bad, sizeof bad, "%s", idx);
            char *q = strstr(bad, "\"model.norm.weight\": \"model-00002");
            CHECK(q != NULL);
            if (q) q[strlen("\"model.norm.weight\": \"model-0000")] = '1';
            CHECK(spit(path, bad, strlen(bad)) == 0);
            rc = ckpt_read_model(sdir, &c2, &got, &err);
            CHECK_ERR(rc, err, "model_invalid", "model.norm.weight");
            // a shard that does not exist
            snprintf(bad, sizeof bad, "%s", idx);
            q = strstr(bad, "\"model.norm.weight\": \"model-00002");
            if (q) memcpy(q + strlen("\"model.norm.weight\": \"model-0000"), "3", 1);
            CHECK(spit(path, bad, strlen(bad)) == 0);
            rc = ckpt_peek_model(sdir, &c2, &err);
            CHECK_ERR(rc, err, "model_invalid", "model-00003-of-00002.safetensors");
            // a shard outside the folder
            snprintf(bad, sizeof bad, "%s", idx);
            q = strstr(bad, "\"model.norm.weight\": \"model-00002");
            if (q) memcpy(q + strlen("\"model.norm.weight\": \""), "../..", 5);
            CHECK(spit(path, bad, strlen(bad)) == 0);
            rc = ckpt_read_model(sdir, &c2, &got, &err);
            CHECK_ERR(rc, err, "model_invalid", "model.norm.weight");
            // not an index at all
            CHECK(spit(path, "[1, 2]", 6) == 0);
            rc = ckpt_read_model(sdir, &c2, &got, &err);
            CHECK_ERR(rc, err, "model_invalid", path);
            // a tensor in both shards
            CHECK(spit(path, idx, strlen(idx)) == 0);
            snprintf(path, sizeof path, "%s/model-00002-of-00002.safetensors", sdir);
            Ent dup[33];
            memcpy(dup, e2, (size_t)(n - half) * sizeof *e2);
            dup[n - half] = e[0];
            dup[n - half].begin = (long long)(nb - base2);
            dup[n - half].end = dup[n - half].begin + (e[0].end - e[0].begin);
            unsigned char *db = malloc(nb - base2 + (size_t)(e[0].end - e[0].begin));
            memcpy(db, bytes + base2, nb - base2);
            memcpy(db + nb - base2, bytes, (size_t)(e[0].end - e[0].begin));
            write_st(path, dup, n - half + 1, db, nb - base2 + (size_t)(e[0].end - e[0].begin), 0,
                     0);
            free(db);
            rc = ckpt_read_model(sdir, &c2, &got, &err);
            CHECK_ERR(rc, err, "model_invalid", e[0].name);
            CHECK(got == NULL);
        }
        free(bytes);
        free(hf);
        free(p);
    }
}

// ---------------------------------------------------------------------------
// malformed weights

typedef struct {
    ModelConfig c;
    float *p, *hf;
    Ent e[32];
    int n;
    unsigned char *bytes;
    size_t nb;
    char dir[512], path[600];
} Tiny;

static void tiny_setup(Tiny *t, const char *name) {
    t->c = tiny_config(1);
    t->p = tiny_params(&t->c);
    t->hf = malloc(model_param_count(&t->c) * sizeof(float));
    t->n = hf_layout(&t->c, t->p, t->hf, t->e);
    t->nb = encode(t->e, t->n, t->hf, &t->bytes);
    make_dir(name, t->dir, sizeof t->dir);
    snprintf(t->path, sizeof t->path, "%s/model.safetensors", t->dir);
    char cfg[1024];
    tiny_config_text(cfg, sizeof cfg, 1, "");
    write_config(t->dir, cfg);
}

static void tiny_free(Tiny *t) {
    free(t->p);
    free(t->hf);
    free(t->bytes);
}

static int find_ent(const Tiny *t, const char *name) {
    for (int k = 0; k < t->n; k++)
        if (strcmp(t->e[k].name, name) == 0) return k;
    return -1;
}

// Reads the folder expecting (code, param); checks peek agrees and nothing leaks.
static void expect_fail(const Tiny *t, const char *code, const char *param) {
    BsError err, perr;
    ModelConfig c;
    float *p = (float *)&c; // must be reset to NULL on failure
    int rc = ckpt_read_model(t->dir, &c, &p, &err);
    CHECK_ERR(rc, err, code, param);
    CHECK(p == NULL);
    rc = ckpt_peek_model(t->dir, &c, &perr);
    CHECK_ERR(rc, perr, code, param);
}

static void test_malformed_weights(void) {
    Tiny t;
    tiny_setup(&t, "bad-weights");
    BsError err;
    ModelConfig c;
    float *p = NULL;

    // baseline: this exact folder reads back
    write_st(t.path, t.e, t.n, t.bytes, t.nb, 0, 0);
    CHECK(ckpt_read_model(t.dir, &c, &p, &err) == 0);
    CHECK(p && memcmp(p, t.p, model_param_count(&t.c) * sizeof(float)) == 0);
    free(p);
    p = NULL;

    // truncated file: the tensor that runs past the end is named
    write_st(t.path, t.e, t.n, t.bytes, t.nb, 0, 5);
    expect_fail(&t, "model_invalid", "model.norm.weight");
    // trailing bytes after the last tensor
    {
        unsigned char *b = malloc(t.nb + 4);
        memcpy(b, t.bytes, t.nb);
        memset(b + t.nb, 0, 4);
        write_st(t.path, t.e, t.n, b, t.nb + 4, 0, 0);
        free(b);
        expect_fail(&t, "model_invalid", t.path);
    }
    // shorter than the length prefix
    CHECK(spit(t.path, "\x10\0\0", 3) == 0);
    expect_fail(&t, "model_invalid", t.path);
    // header length beyond the file, and beyond the 100 MB cap
    write_st(t.path, t.e, t.n, t.bytes, t.nb, 1u << 20, 0);
    expect_fail(&t, "model_invalid", t.path);
    write_st(t.path, t.e, t.n, t.bytes, t.nb, 200000000ull, 0);
    expect_fail(&t, "model_invalid", t.path);
    write_st(t.path, t.e, t.n, t.bytes, t.nb, UINT64_MAX, 0);
    expect_fail(&t, "model_invalid", t.path);
    // header that is not JSON
    {
        unsigned char f[64] = {0};
        uint64_t hl = 20;
        memcpy(f, &hl, 8);
        memcpy(f + 8, "{\"a\": {\"dtype\": \"F3", 20);
        CHECK(spit(t.path, f, 28) == 0);
        expect_fail(&t, "model_invalid", t.path);
    }

    Ent saved[32];
    memcpy(saved, t.e, sizeof saved);
    int k = find_ent(&t, "model.layers.1.self_attn.o_proj.weight");
    int last = t.n - 1;
    // offsets past the data buffer
    t.e[last].end += 4;
    write_st(t.path, t.e, t.n, t.bytes, t.nb, 0, 0);
    expect_fail(&t, "model_invalid", t.e[last].name);
    memcpy(t.e, saved, sizeof saved);
    // begin > end
    t.e[k].begin = t.e[k].end + 4;
    write_st(t.path, t.e, t.n, t.bytes, t.nb, 0, 0);
    expect_fail(&t, "model_invalid", t.e[k].name);
    memcpy(t.e, saved, sizeof saved);
    // overlap: o_proj shifted back onto the previous tensor
    t.e[k].begin -= 4;
    t.e[k].end -= 4;
    write_st(t.path, t.e, t.n, t.bytes, t.nb, 0, 0);
    expect_fail(&t, "model_invalid", t.e[k].name);
    memcpy(t.e, saved, sizeof saved);
    // byte count disagreeing with shape x dtype
    t.e[k].shape[0] -= 1;
    write_st(t.path, t.e, t.n, t.bytes, t.nb, 0, 0);
    expect_fail(&t, "model_invalid", t.e[k].name);
    memcpy(t.e, saved, sizeof saved);
    // negative and fractional shapes / offsets
    t.e[k].shape[1] = -8;
    write_st(t.path, t.e, t.n, t.bytes, t.nb, 0, 0);
    expect_fail(&t, "model_invalid", t.e[k].name);
    memcpy(t.e, saved, sizeof saved);
    // shape that matches the bytes but not the config
    t.e[k].shape[0] *= 2;
    t.e[k].shape[1] /= 2;
    write_st(t.path, t.e, t.n, t.bytes, t.nb, 0, 0);
    expect_fail(&t, "model_invalid", t.e[k].name);
    memcpy(t.e, saved, sizeof saved);
    // an integer dtype of the right size, and an unknown dtype
    int kn = find_ent(&t, "model.norm.weight");
    strcpy(t.e[kn].dtype, "I32");
    write_st(t.path, t.e, t.n, t.bytes, t.nb, 0, 0);
    expect_fail(&t, "model_invalid", "model.norm.weight");
    strcpy(t.e[kn].dtype, "Q4_K");
    write_st(t.path, t.e, t.n, t.bytes, t.nb, 0, 0);
    expect_fail(&t, "model_invalid", "model.norm.weight");
    memcpy(t.e, saved, sizeof saved);
    // missing tensor (the last one: model.norm.weight in flat order)
    CHECK(strcmp(t.e[last].name, "model.norm.weight") == 0);
    write_st(t.path, t.e, t.n - 1, t.bytes, (size_t)t.e[last].begin, 0, 0);
    expect_fail(&t, "model_invalid", "model.norm.weight");
    // an extra tensor: a bias is refused, rotary inv_freq is ignored
    {
        unsigned char *b = malloc(t.nb + 32);
        memcpy(b, t.bytes, t.nb);
        memset(b + t.nb, 0, 32);
        Ent extra[33];
        memcpy(extra, t.e, sizeof saved);
        extra[t.n] = t.e[kn];
        extra[t.n].begin = (long long)t.nb;
        extra[t.n].end = (long long)t.nb + 32;
        snprintf(extra[t.n].name, sizeof extra[t.n].name, "model.layers.0.self_attn.q_proj.bias");
        write_st(t.path, extra, t.n + 1, b, t.nb + 32, 0, 0);
        expect_fail(&t, "model_unsupported", "model.layers.0.self_attn.q_proj.bias");
        snprintf(extra[t.n].name, sizeof extra[t.n].name,
                 "model.layers.0.self_attn.rotary_emb.inv_freq");
        write_st(t.path, extra, t.n + 1, b, t.nb + 32, 0, 0);
        CHECK(ckpt_read_model(t.dir, &c, &p, &err) == 0);
        CHECK(p && memcmp(p, t.p, model_param_count(&t.c) * sizeof(float)) == 0);
        free(p);
        p = NULL;
        // a hole: the same extra entry but 4 bytes further than the data ends
        extra[t.n].begin += 4;
        extra[t.n].end -= 0;
        extra[t.n].shape[0] = 7;
        write_st(t.path, extra, t.n + 1, b, t.nb + 32, 0, 0);
        expect_fail(&t, "model_invalid", "model.layers.0.self_attn.rotary_emb.inv_freq");
        free(b);
    }
    // folder without weights, weights file given instead of the folder
    write_st(t.path, t.e, t.n, t.bytes, t.nb, 0, 0);
    CHECK(ckpt_read_model(t.path, &c, &p, &err) == -1 && strcmp(err.code, "model_invalid") == 0);
    CHECK(strstr(err.message, "folder") != NULL);
    unlink(t.path);
    expect_fail(&t, "model_invalid", "model.safetensors");
    // no such path
    char none[600];
    snprintf(none, sizeof none, "%s/nope", tmpdir);
    CHECK(ckpt_read_model(none, &c, &p, &err) == -1 && strcmp(err.code, "model_not_found") == 0);
    tiny_free(&t);
}

// ---------------------------------------------------------------------------
// config.json

static void test_configs(void) {
    Tiny t;
    tiny_setup(&t, "configs");
    write_st(t.path, t.e, t.n, t.bytes, t.nb, 0, 0);
    char cfg[2048];
    struct {
        const char *extra; // appended fields (later keys: cJSON reads the first of a duplicate)
        const char *code, *param;
    } bad[] = {
        {", \"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}", "model_unsupported",
         "rope_scaling"},
        {", \"rope_parameters\": {\"rope_type\": \"yarn\", \"factor\": 4.0}", "model_unsupported",
         "rope_parameters"},
        {", \"attention_bias\": true", "model_unsupported", "attention_bias"},
        {", \"mlp_bias\": true", "model_unsupported", "mlp_bias"},
        {", \"head_dim\": 2", "model_unsupported", "head_dim"},
        {", \"quantization_config\": {\"bits\": 4}", "model_unsupported", "quantization_config"},
        {", \"attention_bias\": \"no\"", "model_invalid", "attention_bias"},
        {", \"bos_token_id\": -3", "model_invalid", "bos_token_id"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tiny_config_text(cfg, sizeof cfg, 1, bad[i].extra);
        write_config(t.dir, cfg);
        expect_fail(&t, bad[i].code, bad[i].param);
    }
    // fields replaced in the text
    struct {
        const char *from, *to, *code, *param;
    } sub[] = {
        {"\"llama\"", "\"gpt2\"", "model_unsupported", "model_type"},
        {"\"model_type\": \"llama\", ", "", "model_unsupported", "model_type"},
        {"\"silu\"", "\"gelu\"", "model_unsupported", "hidden_act"},
        {"\"hidden_size\": 8, ", "", "model_invalid", "hidden_size"},
        {"\"hidden_size\": 8", "\"hidden_size\": 8.5", "model_invalid", "hidden_size"},
        {"\"num_key_value_heads\": 1", "\"num_key_value_heads\": 3", "model_invalid",
         "num_key_value_heads"},
        {"\"vocab_size\": 10", "\"vocab_size\": 11", "model_invalid", "model.embed_tokens.weight"},
        {"\"rms_norm_eps\": 1e-05", "\"rms_norm_eps\": -1", "model_invalid", "rms_norm_eps"},
        {"\"tie_word_embeddings\": true", "\"tie_word_embeddings\": false", "model_invalid",
         "lm_head.weight"},
        {"{", "[", "model_invalid", "config.json"},
    };
    for (size_t i = 0; i < sizeof sub / sizeof sub[0]; i++) {
        tiny_config_text(cfg, sizeof cfg, 1, "");
        char *q = strstr(cfg, sub[i].from), out[2048];
        CHECK(q != NULL);
        if (!q) continue;
        snprintf(out, sizeof out, "%.*s%s%s", (int)(q - cfg), cfg, sub[i].to,
                 q + strlen(sub[i].from));
        write_config(t.dir, out);
        expect_fail(&t, sub[i].code, sub[i].param);
    }
    // mistral: sliding windows that cover every position (MistralConfig's
    // default 4096, null, 16) are plain causal attention; 15 is not
    tiny_config_text(cfg, sizeof cfg, 1, "");
    char out[2048], *q = strstr(cfg, "\"llama\"");
    BsError err;
    ModelConfig c;
    HfModelInfo info;
    float *p = NULL;
    static const char *windows[] = {"", ", \"sliding_window\": null", ", \"sliding_window\": 16",
                                    ", \"sliding_window\": 15"};
    for (int w = 0; w < 4; w++) {
        snprintf(out, sizeof out, "%.*s\"mistral\"%.*s%s}", (int)(q - cfg), cfg,
                 (int)strlen(q + 7) - 1, q + 7, windows[w]);
        write_config(t.dir, out);
        if (w == 3) {
            expect_fail(&t, "model_unsupported", "sliding_window");
            continue;
        }
        CHECK_MSG(hf_read_model(t.dir, &c, &p, &info, &err) == 0, "%s: %s", out, err.message);
        CHECK(strcmp(info.model_type, "mistral") == 0);
        CHECK(p && memcmp(p, t.p, model_param_count(&t.c) * sizeof(float)) == 0);
        free(p);
        p = NULL;
    }
    // values carried into ModelConfig / HfModelInfo; defaults when absent
    tiny_config_text(cfg, sizeof cfg, 1,
                     ", \"rope_theta\": 500000.0, \"bos_token_id\": null, "
                     "\"eos_token_id\": [2, 7, 9], \"head_dim\": 4, \"rope_scaling\": null, "
                     "\"torch_dtype\": \"bfloat16\", \"sliding_window\": 3");
    // the duplicate rope_theta key: cJSON takes the first (10000), so drop it
    q = strstr(cfg, ", \"rope_theta\": 10000.0");
    memmove(q, q + strlen(", \"rope_theta\": 10000.0"),
            strlen(q + strlen(", \"rope_theta\": 10000.0")) + 1);
    q = strstr(cfg, "\"rms_norm_eps\": 1e-05, ");
    memmove(q, q + strlen("\"rms_norm_eps\": 1e-05, "),
            strlen(q + strlen("\"rms_norm_eps\": 1e-05, ")) + 1);
    write_config(t.dir, cfg);
    CHECK_MSG(hf_peek_model(t.dir, &c, &info, &err) == 0, "%s", err.message);
    CHECK(c.rope_theta == 500000.0f);
    CHECK(c.norm_eps == 1e-6f); // LlamaConfig's default
    CHECK(info.bos_token_id == -1 && info.n_eos == 3 && info.eos_token_ids[2] == 9);
    CHECK(strcmp(info.torch_dtype, "bfloat16") == 0);
    // no bos/eos keys: LlamaConfig's 1 and 2; num_key_value_heads absent = heads
    const char *plain =
        "{\"model_type\": \"llama\", \"hidden_size\": 8, \"intermediate_size\": 12, "
        "\"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"vocab_size\": 10}";
    ModelConfig pc;
    CHECK(hf_parse_config(plain, strlen(plain), "plain", &pc, &info, &err) == 0);
    CHECK(pc.n_kv_heads == 2 && pc.seq_len == 2048 && pc.shared_classifier == 0);
    CHECK(pc.rope_theta == 10000.0f && pc.norm_eps == 1e-6f);
    CHECK(info.bos_token_id == 1 && info.n_eos == 1 && info.eos_token_ids[0] == 2);
    // transformers v5 style rope_parameters with the default rope type
    const char *v5 = "{\"model_type\": \"llama\", \"hidden_size\": 8, \"intermediate_size\": 12, "
                     "\"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"vocab_size\": 10, "
                     "\"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 1000.0}}";
    CHECK(hf_parse_config(v5, strlen(v5), "v5", &pc, NULL, &err) == 0);
    CHECK(pc.rope_theta == 1000.0f);
    CHECK(hf_parse_config("{", 1, "x", &pc, NULL, &err) == -1 &&
          strcmp(err.code, "model_invalid") == 0);
    // no config.json
    char p2[600];
    snprintf(p2, sizeof p2, "%s/config.json", t.dir);
    unlink(p2);
    expect_fail(&t, "model_invalid", p2);
    tiny_free(&t);
}

// ---------------------------------------------------------------------------
// scalar conversions and st_ functions on a hand-made file

static void test_dtypes(void) {
    struct {
        uint16_t h;
        float f;
    } f16[] = {{0x3c00, 1.0f},       {0xc000, -2.0f},           {0x0001, 0x1p-24f},
               {0x03ff, 0x3ffp-24f}, {0x0400, 0x1p-14f},        {0x7bff, 65504.0f},
               {0x8000, -0.0f},      {0x3555, 0.333251953125f}, {0x7c00, INFINITY},
               {0xfc00, -INFINITY}};
    for (size_t i = 0; i < sizeof f16 / sizeof f16[0]; i++) {
        float g = st_f16_to_f32(f16[i].h);
        CHECK_MSG(memcmp(&g, &f16[i].f, 4) == 0, "f16 %04x -> %g, want %g", f16[i].h, g, f16[i].f);
    }
    CHECK(isnan(st_f16_to_f32(0x7e00)));
    CHECK(st_bf16_to_f32(0x3f80) == 1.0f && st_bf16_to_f32(0xc049) == -3.140625f);
    CHECK(st_bf16_to_f32(0x0001) == 0x1p-133f);
    // rounding: ties to even, both directions, carry into the exponent
    CHECK_INT_EQ(st_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);            // tie, even is down
    CHECK_INT_EQ(st_f32_to_bf16(1.0f + 0x1p-7f + 0x1p-8f), 0x3f82);  // tie, even is up
    CHECK_INT_EQ(st_f32_to_bf16(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81); // above the tie
    CHECK_INT_EQ(st_f32_to_bf16(0x1.fffffep0f), 0x4000);             // carry
    CHECK_INT_EQ(st_f32_to_bf16(-1.0f), 0xbf80);
    CHECK_INT_EQ(st_f32_to_bf16(NAN), 0x7fc0);

    // a file with one tensor per float dtype plus an I8 one
    char path[600];
    tmp_path(path, sizeof path, "dtypes.safetensors");
    Ent e[4] = {{"a16", "F16", 1, {3, 0}, 0, 6},
                {"b16", "BF16", 2, {1, 2}, 6, 10},
                {"c32", "F32", 1, {2, 0}, 10, 18},
                {"i8", "I8", 0, {0, 0}, 18, 19}};
    unsigned char data[19];
    uint16_t h[5] = {0x3c00, 0x0001, 0xc000, 0x3f80, 0xc049};
    float f[2] = {0.5f, -7.25f};
    memcpy(data, h, 10);
    memcpy(data + 10, f, 8);
    data[18] = 0x7f;
    write_st(path, e, 4, data, sizeof data, 0, 0);
    SafeTensors *st = NULL;
    BsError err;
    CHECK_MSG(st_open(&st, path, &err) == 0, "%s", err.message);
    if (!st) return;
    CHECK_INT_EQ(st_count(st), 4);
    CHECK(strcmp(st_tensor(st, 0)->name, "a16") == 0 && strcmp(st_tensor(st, 3)->name, "i8") == 0);
    float out[3];
    CHECK(st_read_f32(st_find(st, "a16"), 0, 3, out, &err) == 0);
    CHECK(out[0] == 1.0f && out[1] == 0x1p-24f && out[2] == -2.0f);
    CHECK(st_read_f32(st_find(st, "a16"), 2, 1, out, &err) == 0 && out[0] == -2.0f);
    CHECK(st_read_f32(st_find(st, "b16"), 0, 2, out, &err) == 0);
    CHECK(out[0] == 1.0f && out[1] == -3.140625f);
    CHECK(st_read_f32(st_find(st, "c32"), 0, 2, out, &err) == 0);
    CHECK(out[0] == 0.5f && out[1] == -7.25f);
    const StTensor *i8 = st_find(st, "i8");
    CHECK(i8 && i8->ndim == 0 && i8->numel == 1 && i8->dtype == ST_I8);
    int rc = st_read_f32(i8, 0, 1, out, &err);
    CHECK_ERR(rc, err, "model_invalid", "i8");
    rc = st_read_f32(st_find(st, "a16"), 2, 2, out, &err);
    CHECK_ERR(rc, err, "model_invalid", "a16");
    CHECK(st_find(st, "zzz") == NULL);
    st_close(st);

    // st_write: names sorted, F32 bytes verbatim, header aligned, duplicates refused
    float w1[4] = {1, 2, 3, 4}, w2[2] = {-1, 0.1f};
    StWriteTensor wt[2] = {{"zeta", 2, {2, 2}, w1}, {"alpha", 1, {2}, w2}};
    tmp_path(path, sizeof path, "written.safetensors");
    CHECK(st_write(path, wt, 2, ST_F32, &err) == 0);
    size_t len;
    unsigned char *raw = slurp(path, &len);
    uint64_t hl;
    memcpy(&hl, raw, 8);
    CHECK(hl % 8 == 0 && len == 8 + hl + 24);
    CHECK(memcmp(raw + 8 + hl, w2, 8) == 0 && memcmp(raw + 8 + hl + 8, w1, 16) == 0);
    const char *want = "{\"__metadata__\":{\"format\":\"pt\"},\"alpha\":{\"dtype\":\"F32\","
                       "\"shape\":[2],\"data_offsets\":[0,8]},\"zeta\":{\"dtype\":\"F32\","
                       "\"shape\":[2,2],\"data_offsets\":[8,24]}}";
    CHECK(strncmp((const char *)raw + 8, want, strlen(want)) == 0);
    for (size_t i = 8 + strlen(want); i < 8 + hl; i++)
        CHECK(raw[i] == ' ');
    free(raw);
    StWriteTensor dup[2] = {{"x", 1, {2}, w2}, {"x", 1, {2}, w2}};
    rc = st_write(path, dup, 2, ST_F32, &err);
    CHECK_ERR(rc, err, "invalid_argument", "x");
    rc = st_write(path, wt, 2, ST_F16, &err);
    CHECK(rc == -1);
}

// ---------------------------------------------------------------------------
// export options

static void test_export_options(void) {
    ModelConfig c = tiny_config(0);
    float *p = tiny_params(&c);
    BsError err;
    char tokdir[512], dir[600];
    make_dir("tok-src", tokdir, sizeof tokdir);
    char f[700];
    snprintf(f, sizeof f, "%s/tokenizer.json", tokdir);
    CHECK(spit(f, "{\"model\": {}}", 13) == 0);
    snprintf(f, sizeof f, "%s/tokenizer_config.json", tokdir);
    CHECK(spit(f, "{\"bos_token\": \"<s>\"}", 20) == 0);
    // nested folders that do not exist yet
    snprintf(dir, sizeof dir, "%s/deep/er/export", tmpdir);
    HfModelInfo info = {.bos_token_id = -1, .n_eos = 2, .eos_token_ids = {2, 7}};
    CHECK_MSG(hf_export(dir, &c, p, &info, 0, tokdir, &err) == 0, "%s", err.message);
    size_t len;
    snprintf(f, sizeof f, "%s/tokenizer.json", dir);
    unsigned char *b = slurp(f, &len);
    CHECK(b && len == 13 && memcmp(b, "{\"model\": {}}", 13) == 0);
    free(b);
    snprintf(f, sizeof f, "%s/tokenizer.model", dir);
    CHECK(access(f, F_OK) != 0);
    snprintf(f, sizeof f, "%s/config.json", dir);
    b = slurp(f, &len);
    CHECK(b && strstr((char *)b, "\"bos_token_id\": null,") &&
          strstr((char *)b, "\"eos_token_id\": [2, 7],") &&
          strstr((char *)b, "\"tie_word_embeddings\": false,"));
    free(b);
    HfModelInfo back;
    ModelConfig c2;
    float *q = NULL;
    CHECK(hf_read_model(dir, &c2, &q, &back, &err) == 0);
    CHECK(back.bos_token_id == -1 && back.n_eos == 2 && back.eos_token_ids[1] == 7);
    CHECK(same_config(&c, &c2));
    CHECK(q && memcmp(q, p, model_param_count(&c) * sizeof(float)) == 0);
    free(q);
    // re-export over the same folder, tokenizer source = the folder itself
    CHECK(hf_export(dir, &c, p, NULL, 0, dir, &err) == 0);
    // export onto a regular file
    snprintf(f, sizeof f, "%s/tokenizer.json", tokdir);
    int rc = hf_export(f, &c, p, NULL, 0, NULL, &err);
    CHECK(rc == -1 && strcmp(err.code, "io") == 0);
    ModelConfig badc = c;
    badc.n_kv_heads = 3;
    CHECK(hf_export(dir, &badc, p, NULL, 0, NULL, &err) == -1);
    free(p);
}

// ---------------------------------------------------------------------------
// modes for tests/hf/llama2c_to_hf.py

static int mode_compare(const char *bin, const char *dir) {
    BsError err;
    ModelConfig a, b;
    float *pa = NULL, *pb = NULL;
    if (ckpt_read_llama2c(bin, &a, &pa, &err) != 0 || ckpt_read_model(dir, &b, &pb, &err) != 0) {
        fprintf(stderr, "test_hf --compare: %s (%s, %s)\n", err.message, err.code, err.param);
        free(pa);
        return 1;
    }
    int ok = same_config(&a, &b) && memcmp(pa, pb, model_param_count(&a) * sizeof(float)) == 0;
    fprintf(stderr, "test_hf --compare %s %s: %s\n", bin, dir, ok ? "bit-identical" : "DIFFERENT");
    free(pa);
    free(pb);
    return ok ? 0 : 1;
}

static int mode_export(const char *bin, const char *dir, int bf16) {
    BsError err;
    ModelConfig c;
    float *p = NULL;
    if (ckpt_read_llama2c(bin, &c, &p, &err) != 0 ||
        hf_export(dir, &c, p, NULL, bf16, NULL, &err)) {
        fprintf(stderr, "test_hf --export: %s (%s, %s)\n", err.message, err.code, err.param);
        free(p);
        return 1;
    }
    free(p);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 4 && strcmp(argv[1], "--compare") == 0) return mode_compare(argv[2], argv[3]);
    if (argc >= 4 && strcmp(argv[1], "--export") == 0)
        return mode_export(argv[2], argv[3], argc >= 5 && strcmp(argv[4], "--bf16") == 0);
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    // ../shared/README.md: run.c's first greedy ids for aidreams260K from BOS
    static const int aidreams_ids[15] = {319, 459, 355, 260, 275, 429, 339, 315,
                                         374, 327, 446, 262, 421, 392, 275};
    check_shared_model("stories260K.bin", NULL, 0);
    check_shared_model("aidreams260K.bin", aidreams_ids, 15);
    test_foreign_files();
    test_malformed_weights();
    test_configs();
    test_dtypes();
    test_export_options();
    rm_rf(tmpdir);
    return test_summary("hf");
}
