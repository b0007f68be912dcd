// hf.c — Hugging Face Llama/Mistral directories (see hf.h): config.json
// parsing with the transformers defaults, tensor-by-tensor validation and
// loading into the flat llama2.c layout (q/k rows reordered for RoPE), the
// exporter, and ckpt.h's ckpt_peek_model / ckpt_read_model dispatchers.
#include "hf.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt.h"
#include "safetensors.h"

#define HF_MAX_CONFIG_BYTES ((size_t)16 << 20)
#define HF_MAX_TOKENIZER_BYTES ((size_t)1 << 30)

// ---------------------------------------------------------------------------
// config.json

// A field's value, NULL when absent or JSON null (transformers treats both
// as "use the default").
static const cJSON *field(const cJSON *root, const char *key) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(root, key);
    return cJSON_IsNull(j) ? NULL : j;
}

static int get_int(const cJSON *root, const char *key, const char *where, int required, int def,
                   int lo, int *out, BsError *err) {
    const cJSON *j = field(root, key);
    if (!j) {
        if (required) return bs_fail(err, "model_invalid", key, "%s has no %s", where, key);
        *out = def;
        return 0;
    }
    double d = cJSON_IsNumber(j) ? j->valuedouble : NAN;
    if (!(d >= lo && d <= INT_MAX) || d != floor(d))
        return bs_fail(err, "model_invalid", key, "%s: %s must be an integer >= %d", where, key,
                       lo);
    *out = (int)d;
    return 0;
}

static int get_bool(const cJSON *root, const char *key, const char *where, int def, int *out,
                    BsError *err) {
    const cJSON *j = field(root, key);
    if (!j) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsBool(j))
        return bs_fail(err, "model_invalid", key, "%s: %s must be true or false", where, key);
    *out = cJSON_IsTrue(j);
    return 0;
}

// A finite positive number that fits a float.
static int get_pos_float(const cJSON *root, const char *key, const char *where, double def,
                         float *out, BsError *err) {
    const cJSON *j = field(root, key);
    double d = def;
    if (j) d = cJSON_IsNumber(j) ? j->valuedouble : NAN;
    if (!(d > 0.0 && d <= FLT_MAX) || (float)d <= 0.0f)
        return bs_fail(err, "model_invalid", key, "%s: %s must be a positive number", where, key);
    *out = (float)d;
    return 0;
}

// bos/eos ids: absent -> def, null -> none (-1 / 0 ids), an id, or (eos) a list.
static int get_token_ids(const cJSON *root, const char *key, const char *where, int def, int *ids,
                         int max, int *n, BsError *err) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(root, key);
    *n = 0;
    if (!j) {
        ids[(*n)++] = def;
        return 0;
    }
    if (cJSON_IsNull(j)) return 0;
    const cJSON *one = j, *e;
    if (cJSON_IsArray(j)) {
        if (cJSON_GetArraySize(j) > max)
            return bs_fail(err, "model_invalid", key, "%s: %s lists more than %d ids", where, key,
                           max);
        cJSON_ArrayForEach(e, j) {
            double d = cJSON_IsNumber(e) ? e->valuedouble : NAN;
            if (!(d >= 0 && d <= INT_MAX) || d != floor(d))
                return bs_fail(err, "model_invalid", key,
                               "%s: %s must hold non-negative integer ids", where, key);
            ids[(*n)++] = (int)d;
        }
        return 0;
    }
    double d = cJSON_IsNumber(one) ? one->valuedouble : NAN;
    if (!(d >= 0 && d <= INT_MAX) || d != floor(d))
        return bs_fail(err, "model_invalid", key, "%s: %s must be a non-negative integer id", where,
                       key);
    ids[(*n)++] = (int)d;
    return 0;
}

// model_config_validate's field names, as config.json spells them.
static const char *hf_field_name(const char *param) {
    static const char *map[][2] = {
        {"dim", "hidden_size"},
        {"hidden_dim", "intermediate_size"},
        {"n_layers", "num_hidden_layers"},
        {"n_heads", "num_attention_heads"},
        {"n_kv_heads", "num_key_value_heads"},
        {"seq_len", "max_position_embeddings"},
        {"norm_eps", "rms_norm_eps"},
        {"shared_classifier", "tie_word_embeddings"},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(param, map[i][0]) == 0) return map[i][1];
    return param;
}

static int unsupported(BsError *err, const char *where, const char *key, const char *why) {
    return bs_fail(err, "model_unsupported", key, "%s: %s", where, why);
}

static int parse_config(const cJSON *root, const char *where, ModelConfig *cfg, HfModelInfo *info,
                        BsError *err) {
    HfModelInfo inf;
    memset(&inf, 0, sizeof inf);
    if (!cJSON_IsObject(root))
        return bs_fail(err, "model_invalid", "config.json", "%s is not a JSON object", where);

    const cJSON *mt = field(root, "model_type");
    if (!cJSON_IsString(mt))
        return unsupported(err, where, "model_type",
                           "model_type is missing; only llama and mistral are supported");
    int mistral = strcmp(mt->valuestring, "mistral") == 0;
    if (!mistral && strcmp(mt->valuestring, "llama") != 0)
        return bs_fail(err, "model_unsupported", "model_type",
                       "%s: model_type \"%.40s\" is not supported; only llama and mistral are",
                       where, mt->valuestring);
    snprintf(inf.model_type, sizeof inf.model_type, "%s", mt->valuestring);

    // Features this decoder does not implement.
    if (field(root, "rope_scaling"))
        return unsupported(err, where, "rope_scaling",
                           "rope_scaling is set; only plain RoPE (rope_scaling null) is supported");
    const cJSON *rp = field(root, "rope_parameters"), *rp_theta = NULL;
    if (rp) {
        const cJSON *rt = cJSON_GetObjectItemCaseSensitive(rp, "rope_type");
        if (!rt) rt = cJSON_GetObjectItemCaseSensitive(rp, "type");
        if (!cJSON_IsObject(rp) ||
            (rt && (!cJSON_IsString(rt) || strcmp(rt->valuestring, "default") != 0)))
            return unsupported(err, where, "rope_parameters",
                               "rope_parameters asks for scaled RoPE; only rope_type \"default\" "
                               "is supported");
        rp_theta = field(rp, "rope_theta");
    }
    int flag = 0;
    if (get_bool(root, "attention_bias", where, 0, &flag, err) != 0) return -1;
    if (flag)
        return unsupported(err, where, "attention_bias",
                           "attention_bias is true; projections with biases are not supported");
    if (get_bool(root, "mlp_bias", where, 0, &flag, err) != 0) return -1;
    if (flag)
        return unsupported(err, where, "mlp_bias",
                           "mlp_bias is true; MLP biases are not supported");
    const cJSON *act = field(root, "hidden_act");
    // transformers' ACT2FN maps both names to SiLU.
    if (act && (!cJSON_IsString(act) ||
                (strcmp(act->valuestring, "silu") != 0 && strcmp(act->valuestring, "swish") != 0)))
        return bs_fail(err, "model_unsupported", "hidden_act",
                       "%s: hidden_act \"%.40s\" is not supported; only silu is", where,
                       cJSON_IsString(act) ? act->valuestring : "?");
    if (field(root, "quantization_config"))
        return unsupported(err, where, "quantization_config",
                           "quantized weights are not supported");

    int D = 0, H = 0, L = 0, NH = 0, NKV = 0, V = 0, S = 0, tie = 0;
    if (get_int(root, "hidden_size", where, 1, 0, 1, &D, err) != 0 ||
        get_int(root, "intermediate_size", where, 1, 0, 1, &H, err) != 0 ||
        get_int(root, "num_hidden_layers", where, 1, 0, 1, &L, err) != 0 ||
        get_int(root, "num_attention_heads", where, 1, 0, 1, &NH, err) != 0 ||
        get_int(root, "num_key_value_heads", where, 0, mistral ? 8 : NH, 1, &NKV, err) != 0 ||
        get_int(root, "vocab_size", where, 1, 0, 1, &V, err) != 0 ||
        get_int(root, "max_position_embeddings", where, 0, mistral ? 4096 * 32 : 2048, 1, &S,
                err) != 0 ||
        get_bool(root, "tie_word_embeddings", where, 0, &tie, err) != 0)
        return -1;
    if (field(root, "head_dim")) {
        int hd;
        if (get_int(root, "head_dim", where, 1, 0, 1, &hd, err) != 0) return -1;
        if (D % NH != 0 || hd != D / NH)
            return bs_fail(err, "model_unsupported", "head_dim",
                           "%s: head_dim %d differs from hidden_size / num_attention_heads "
                           "(%d / %d); only head_dim = hidden_size / heads is supported",
                           where, hd, D, NH);
    }
    if (mistral) {
        // MistralConfig defaults sliding_window to 4096; a window covering every
        // position is plain causal attention.
        int sw = 0;
        if (get_int(root, "sliding_window", where, 0, 4096, 1, &sw, err) != 0) return -1;
        if (!cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(root, "sliding_window")) && sw < S)
            return bs_fail(err, "model_unsupported", "sliding_window",
                           "%s: sliding_window %d is below max_position_embeddings %d; "
                           "sliding-window attention is not supported",
                           where, sw, S);
    }
    ModelConfig c = {
        .dim = D,
        .hidden_dim = H,
        .n_layers = L,
        .n_heads = NH,
        .n_kv_heads = NKV,
        .vocab_size = V,
        .seq_len = S,
        .shared_classifier = tie,
    };
    if (get_pos_float(root, "rms_norm_eps", where, 1e-6, &c.norm_eps, err) != 0) return -1;
    if (field(root, "rope_theta") || !rp_theta) {
        if (get_pos_float(root, "rope_theta", where, 10000.0, &c.rope_theta, err) != 0) return -1;
    } else if (get_pos_float(rp, "rope_theta", where, 10000.0, &c.rope_theta, err) != 0) {
        return -1;
    }

    int ids[HF_MAX_EOS], n;
    if (get_token_ids(root, "bos_token_id", where, 1, ids, 1, &n, err) != 0) return -1;
    inf.bos_token_id = n ? ids[0] : -1;
    if (get_token_ids(root, "eos_token_id", where, 2, inf.eos_token_ids, HF_MAX_EOS, &inf.n_eos,
                      err) != 0)
        return -1;
    const cJSON *dt = field(root, "torch_dtype");
    if (!dt) dt = field(root, "dtype"); // transformers >= 4.56 writes "dtype"
    if (cJSON_IsString(dt))
        snprintf(inf.torch_dtype, sizeof inf.torch_dtype, "%s", dt->valuestring);

    BsError verr;
    if (model_config_validate(&c, &verr) != 0) {
        const char *f = hf_field_name(verr.param);
        return bs_fail(err, "model_invalid", f[0] ? f : "config.json", "%s: %s (%s)", where,
                       verr.message, f[0] ? f : "sizes");
    }
    *cfg = c;
    if (info) *info = inf;
    return 0;
}

int hf_parse_config(const char *json, size_t len, const char *where, ModelConfig *cfg,
                    HfModelInfo *info, BsError *err) {
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) return bs_fail(err, "model_invalid", "config.json", "%s is not valid JSON", where);
    int rc = parse_config(root, where, cfg, info, err);
    cJSON_Delete(root);
    return rc;
}

// dir + "/" + name, malloc'd; NULL when out of memory.
static char *path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

static int read_config(const char *dir, ModelConfig *cfg, HfModelInfo *info, BsError *err) {
    char *path = path_join(dir, "config.json"), *text = NULL;
    size_t len = 0;
    if (!path) return bs_fail(err, "out_of_memory", dir, "cannot allocate a path");
    int rc = -1;
    if (st_slurp(path, HF_MAX_CONFIG_BYTES, &text, &len, err) != 0) {
        if (strcmp(err->code, "model_not_found") == 0)
            bs_fail(err, "model_invalid", path,
                    "%s is a folder without config.json: not a Hugging Face model", dir);
        goto out;
    }
    rc = hf_parse_config(text, len, path, cfg, info, err);
out:
    free(text);
    free(path);
    return rc;
}

// ---------------------------------------------------------------------------
// tensors

typedef struct {
    char name[64];
    int ndim;
    int64_t shape[2];
    size_t offset;  // floats into the flat buffer
    int rope_heads; // > 0: q/k rows, HF order on disk, this many heads
} HfTensor;

static size_t range_offset(const ParamRange *r, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (strcmp(r[i].name, name) == 0) return r[i].offset;
    return 0; // every name asked for is in model_param_ranges' list
}

// The tensors a validated config implies, in flat order; *out malloc'd.
static int hf_tensors(const ModelConfig *c, HfTensor **out, int *n_out, BsError *err) {
    ParamRange r[12];
    int nr = model_param_ranges(c, r, 12);
    size_t D = (size_t)c->dim, H = (size_t)c->hidden_dim, HS = D / (size_t)c->n_heads;
    size_t KVD = (size_t)c->n_kv_heads * HS;
    int n = 0, cap = 9 * c->n_layers + 3;
    HfTensor *t = calloc((size_t)cap, sizeof *t);
    if (!t) return bs_fail(err, "out_of_memory", "", "cannot allocate the tensor list");
#define ADD(nm, nd, r0, r1, off, rh)                                                               \
    do {                                                                                           \
        HfTensor *x = &t[n++];                                                                     \
        snprintf(x->name, sizeof x->name, "%s", nm);                                               \
        x->ndim = nd;                                                                              \
        x->shape[0] = (int64_t)(r0);                                                               \
        x->shape[1] = (int64_t)(r1);                                                               \
        x->offset = off;                                                                           \
        x->rope_heads = rh;                                                                        \
    } while (0)
    ADD("model.embed_tokens.weight", 2, c->vocab_size, D, range_offset(r, nr, "tok_emb"), 0);
    for (int l = 0; l < c->n_layers; l++) {
        size_t ll = (size_t)l;
        char nm[64];
#define LAYER(suffix) (snprintf(nm, sizeof nm, "model.layers.%d.%s", l, suffix), nm)
        ADD(LAYER("input_layernorm.weight"), 1, D, 0, range_offset(r, nr, "rms_att") + ll * D, 0);
        ADD(LAYER("self_attn.q_proj.weight"), 2, D, D, range_offset(r, nr, "wq") + ll * D * D,
            c->n_heads);
        ADD(LAYER("self_attn.k_proj.weight"), 2, KVD, D, range_offset(r, nr, "wk") + ll * KVD * D,
            c->n_kv_heads);
        ADD(LAYER("self_attn.v_proj.weight"), 2, KVD, D, range_offset(r, nr, "wv") + ll * KVD * D,
            0);
        ADD(LAYER("self_attn.o_proj.weight"), 2, D, D, range_offset(r, nr, "wo") + ll * D * D, 0);
        ADD(LAYER("post_attention_layernorm.weight"), 1, D, 0,
            range_offset(r, nr, "rms_ffn") + ll * D, 0);
        ADD(LAYER("mlp.gate_proj.weight"), 2, H, D, range_offset(r, nr, "w1") + ll * H * D, 0);
        ADD(LAYER("mlp.down_proj.weight"), 2, D, H, range_offset(r, nr, "w2") + ll * D * H, 0);
        ADD(LAYER("mlp.up_proj.weight"), 2, H, D, range_offset(r, nr, "w3") + ll * H * D, 0);
#undef LAYER
    }
    ADD("model.norm.weight", 1, D, 0, range_offset(r, nr, "rms_final"), 0);
    if (!c->shared_classifier)
        ADD("lm_head.weight", 2, c->vocab_size, D, range_offset(r, nr, "wcls"), 0);
#undef ADD
    *out = t;
    *n_out = n;
    return 0;
}

static void fmt_shape(char *s, size_t n, int ndim, const int64_t *shape) {
    size_t at = 0;
    at += (size_t)snprintf(s, n, "[");
    for (int d = 0; d < ndim && at < n; d++)
        at += (size_t)snprintf(s + at, n - at, d ? ", %lld" : "%lld", (long long)shape[d]);
    if (at < n) snprintf(s + at, n - at, "]");
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

// Every expected tensor present with a float dtype and its config shape, and
// nothing unexpected besides what hf.h lists as ignored.
static int check_tensors(const SafeTensors *st, const HfTensor *t, int n, const ModelConfig *c,
                         const char *dir, BsError *err) {
    int total = st_count(st), rc = -1;
    char *seen = calloc((size_t)total + 1, 1);
    if (!seen) return bs_fail(err, "out_of_memory", dir, "cannot allocate the tensor table");
    const StTensor *base = st_tensor(st, 0);
    for (int k = 0; k < n; k++) {
        const StTensor *s = st_find(st, t[k].name);
        if (!s) {
            bs_fail(err, "model_invalid", t[k].name, "%s: tensor %s is missing", dir, t[k].name);
            goto out;
        }
        if (!st_dtype_is_float(s->dtype)) {
            bs_fail(err, "model_invalid", t[k].name,
                    "%s: tensor %s has dtype %s; only F32, F16 and BF16 are supported", dir,
                    t[k].name, st_dtype_name(s->dtype));
            goto out;
        }
        int same = s->ndim == t[k].ndim;
        for (int d = 0; same && d < s->ndim; d++)
            same = s->shape[d] == t[k].shape[d];
        if (!same) {
            char got[128], want[64];
            fmt_shape(got, sizeof got, s->ndim, s->shape);
            fmt_shape(want, sizeof want, t[k].ndim, t[k].shape);
            bs_fail(err, "model_invalid", t[k].name,
                    "%s: tensor %s has shape %s but config.json implies %s", dir, t[k].name, got,
                    want);
            goto out;
        }
        seen[s - base] = 1;
    }
    for (int i = 0; i < total; i++) {
        const StTensor *s = st_tensor(st, i);
        if (seen[i] || ends_with(s->name, ".rotary_emb.inv_freq") ||
            (c->shared_classifier && strcmp(s->name, "lm_head.weight") == 0))
            continue;
        bs_fail(err, "model_unsupported", s->name,
                "%s: tensor %s is not part of a plain Llama model (biases, adapters and extra "
                "layers are not supported)",
                dir, s->name);
        goto out;
    }
    rc = 0;
out:
    free(seen);
    return rc;
}

// Config + validated weights; on success the caller closes *st and frees *t.
static int open_model(const char *dir, ModelConfig *cfg, HfModelInfo *info, SafeTensors **st,
                      HfTensor **t, int *n, BsError *err) {
    *st = NULL;
    *t = NULL;
    if (read_config(dir, cfg, info, err) != 0) return -1;
    if (st_open_dir(st, dir, err) != 0) return -1;
    if (hf_tensors(cfg, t, n, err) != 0 || check_tensors(*st, *t, *n, cfg, dir, err) != 0) {
        st_close(*st);
        free(*t);
        *st = NULL;
        *t = NULL;
        return -1;
    }
    return 0;
}

int hf_is_model_dir(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

int hf_peek_model(const char *dir, ModelConfig *cfg, HfModelInfo *info, BsError *err) {
    SafeTensors *st;
    HfTensor *t;
    int n;
    if (open_model(dir, cfg, info, &st, &t, &n, err) != 0) return -1;
    st_close(st);
    free(t);
    return 0;
}

// HF row of llama2.c row r within q/k of head size hs (see hf.h).
static size_t hf_row(size_t r, size_t hs) {
    size_t h = r / hs, j = r % hs;
    return h * hs + (j % 2) * (hs / 2) + j / 2;
}

int hf_read_model(const char *dir, ModelConfig *cfg, float **params, HfModelInfo *info,
                  BsError *err) {
    SafeTensors *st;
    HfTensor *t;
    ModelConfig c;
    int n, rc = -1;
    *params = NULL;
    if (open_model(dir, &c, info, &st, &t, &n, err) != 0) return -1;
    size_t P = model_param_count(&c);
    float *p = malloc(P * sizeof(float));
    if (!p) {
        bs_fail(err, "out_of_memory", dir, "cannot allocate %zu bytes for %s", P * sizeof(float),
                dir);
        goto out;
    }
    for (int k = 0; k < n; k++) {
        const StTensor *s = st_find(st, t[k].name);
        float *dst = p + t[k].offset;
        if (t[k].rope_heads > 0) {
            size_t rows = (size_t)t[k].shape[0], cols = (size_t)t[k].shape[1];
            size_t hs = rows / (size_t)t[k].rope_heads;
            for (size_t r = 0; r < rows; r++)
                if (st_read_f32(s, hf_row(r, hs) * cols, cols, dst + r * cols, err) != 0) goto out;
        } else if (st_read_f32(s, 0, s->numel, dst, err) != 0) {
            goto out;
        }
    }
    *cfg = c;
    *params = p;
    p = NULL;
    rc = 0;
out:
    free(p);
    free(t);
    st_close(st);
    return rc;
}

// ---------------------------------------------------------------------------
// dispatch (ckpt.h)

static int refuse_weights_file(const char *path, BsError *err) {
    return bs_fail(err, "model_invalid", path,
                   "%s is one file of a Hugging Face model: give the folder that holds "
                   "config.json and the safetensors weights",
                   path);
}

static int is_hf_file(const char *path) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    return ends_with(base, ".safetensors") || strcmp(base, "config.json") == 0 ||
           strcmp(base, "model.safetensors.index.json") == 0;
}

int ckpt_peek_model(const char *path, ModelConfig *cfg, BsError *err) {
    if (hf_is_model_dir(path)) return hf_peek_model(path, cfg, NULL, err);
    if (is_hf_file(path) && access(path, F_OK) == 0) return refuse_weights_file(path, err);
    return ckpt_peek_llama2c(path, cfg, err);
}

int ckpt_read_model(const char *path, ModelConfig *cfg, float **params, BsError *err) {
    *params = NULL;
    if (hf_is_model_dir(path)) return hf_read_model(path, cfg, params, NULL, err);
    if (is_hf_file(path) && access(path, F_OK) == 0) return refuse_weights_file(path, err);
    return ckpt_read_llama2c(path, cfg, params, err);
}

// ---------------------------------------------------------------------------
// export

// Creates dir and its missing parents; *created says whether any was made
// (the new entry in dir's parent then needs an fsync).
static int mkdir_p(const char *dir, int *created, BsError *err) {
    size_t len = strlen(dir);
    char *p = malloc(len + 1);
    if (!p) return bs_fail(err, "out_of_memory", dir, "cannot allocate a path");
    memcpy(p, dir, len + 1);
    *created = 0;
    for (size_t i = 1; i <= len; i++) {
        if (p[i] != '/' && p[i] != '\0') continue;
        char saved = p[i];
        p[i] = '\0';
        if (mkdir(p, 0755) == 0) {
            *created = 1;
        } else if (errno != EEXIST) {
            int e = errno;
            bs_fail(err, "io", dir, "cannot create folder %s: %s", p, strerror(e));
            free(p);
            return -1;
        }
        p[i] = saved;
    }
    free(p);
    if (!hf_is_model_dir(dir)) return bs_fail(err, "io", dir, "%s exists and is not a folder", dir);
    return 0;
}

static int fsync_parent(const char *dir, BsError *err) {
    size_t len = strlen(dir);
    char *p = malloc(len + 4);
    if (!p) return bs_fail(err, "out_of_memory", dir, "cannot allocate a path");
    memcpy(p, dir, len + 1);
    while (len > 1 && p[len - 1] == '/') // "a/b/" -> "a/b"
        p[--len] = '\0';
    char *slash = strrchr(p, '/');
    if (!slash)
        strcpy(p, ".");
    else if (slash == p)
        p[1] = '\0';
    else
        *slash = '\0';
    int fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;
    if (fd < 0 || fsync(fd) != 0) {
        int e = errno;
        rc = bs_fail(err, "io", dir, "cannot fsync the folder of %s: %s", dir, strerror(e));
    }
    if (fd >= 0) close(fd);
    free(p);
    return rc;
}

// Shortest decimal that reads back as the same float, with ".0" on
// integral values as Python's json writes floats.
static void fmt_float(char *s, size_t n, float v) {
    if (v == floorf(v) && fabsf(v) < 1e16f) {
        snprintf(s, n, "%.1f", (double)v);
        return;
    }
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(s, n, "%.*g", prec, (double)v);
        if ((float)strtod(s, NULL) == v) return;
    }
}

static int config_json(char *s, size_t n, const ModelConfig *c, const HfModelInfo *info, int bf16) {
    char eps[32], theta[32], bos[16], eos[16 * (HF_MAX_EOS + 1)];
    fmt_float(eps, sizeof eps, c->norm_eps);
    fmt_float(theta, sizeof theta, c->rope_theta);
    if (!info) {
        snprintf(bos, sizeof bos, "1");
        snprintf(eos, sizeof eos, "2");
    } else {
        if (info->bos_token_id >= 0)
            snprintf(bos, sizeof bos, "%d", info->bos_token_id);
        else
            snprintf(bos, sizeof bos, "null");
        int ne = info->n_eos < 0 ? 0 : info->n_eos > HF_MAX_EOS ? HF_MAX_EOS : info->n_eos;
        if (ne == 0) {
            snprintf(eos, sizeof eos, "null");
        } else if (ne == 1) {
            snprintf(eos, sizeof eos, "%d", info->eos_token_ids[0]);
        } else {
            size_t at = (size_t)snprintf(eos, sizeof eos, "[");
            for (int i = 0; i < ne; i++)
                at += (size_t)snprintf(eos + at, sizeof eos - at, i ? ", %d" : "%d",
                                       info->eos_token_ids[i]);
            snprintf(eos + at, sizeof eos - at, "]");
        }
    }
    // The key set of transformers' LlamaConfig.to_dict(), sorted as
    // save_pretrained writes it.
    return snprintf(s, n,
                    "{\n"
                    "  \"architectures\": [\n"
                    "    \"LlamaForCausalLM\"\n"
                    "  ],\n"
                    "  \"attention_bias\": false,\n"
                    "  \"attention_dropout\": 0.0,\n"
                    "  \"bos_token_id\": %s,\n"
                    "  \"eos_token_id\": %s,\n"
                    "  \"head_dim\": %d,\n"
                    "  \"hidden_act\": \"silu\",\n"
                    "  \"hidden_size\": %d,\n"
                    "  \"initializer_range\": 0.02,\n"
                    "  \"intermediate_size\": %d,\n"
                    "  \"max_position_embeddings\": %d,\n"
                    "  \"mlp_bias\": false,\n"
                    "  \"model_type\": \"llama\",\n"
                    "  \"num_attention_heads\": %d,\n"
                    "  \"num_hidden_layers\": %d,\n"
                    "  \"num_key_value_heads\": %d,\n"
                    "  \"pretraining_tp\": 1,\n"
                    "  \"rms_norm_eps\": %s,\n"
                    "  \"rope_scaling\": null,\n"
                    "  \"rope_theta\": %s,\n"
                    "  \"tie_word_embeddings\": %s,\n"
                    "  \"torch_dtype\": \"%s\",\n"
                    "  \"use_cache\": true,\n"
                    "  \"vocab_size\": %d\n"
                    "}\n",
                    bos, eos, c->dim / c->n_heads, c->dim, c->hidden_dim, c->seq_len, c->n_heads,
                    c->n_layers, c->n_kv_heads, eps, theta, c->shared_classifier ? "true" : "false",
                    bf16 ? "bfloat16" : "float32", c->vocab_size);
}

static int same_dir(const char *a, const char *b) {
    struct stat x, y;
    return stat(a, &x) == 0 && stat(b, &y) == 0 && x.st_dev == y.st_dev && x.st_ino == y.st_ino;
}

static int copy_tokenizer_files(const char *src_dir, const char *dir, BsError *err) {
    static const char *names[] = {"tokenizer.json", "tokenizer_config.json",
                                  "special_tokens_map.json", "tokenizer.model"};
    if (!hf_is_model_dir(src_dir))
        return bs_fail(err, "io", src_dir, "tokenizer folder %s is not a folder", src_dir);
    if (same_dir(src_dir, dir)) return 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char *src = path_join(src_dir, names[i]), *dst = path_join(dir, names[i]), *text = NULL;
        size_t len = 0;
        int rc = 0;
        if (!src || !dst) {
            rc = bs_fail(err, "out_of_memory", dir, "cannot allocate a path");
        } else if (access(src, F_OK) == 0) {
            rc = st_slurp(src, HF_MAX_TOKENIZER_BYTES, &text, &len, err);
            if (rc == 0) rc = ckpt_write_file_atomic(dst, text, len, err);
        }
        free(text);
        free(src);
        free(dst);
        if (rc != 0) return -1;
    }
    return 0;
}

int hf_export(const char *dir, const ModelConfig *cfg, const float *params, const HfModelInfo *info,
              int bf16, const char *tokenizer_src_dir, BsError *err) {
    if (model_config_validate(cfg, err) != 0) return -1;
    HfTensor *t = NULL;
    StWriteTensor *w = NULL;
    float *perm = NULL;
    char *path = NULL, text[4096];
    int n = 0, created = 0, rc = -1;
    if (mkdir_p(dir, &created, err) != 0) return -1;
    if (hf_tensors(cfg, &t, &n, err) != 0) return -1;
    size_t n_perm = 0;
    for (int k = 0; k < n; k++)
        if (t[k].rope_heads > 0) n_perm += (size_t)t[k].shape[0] * (size_t)t[k].shape[1];
    perm = malloc(n_perm * sizeof *perm);
    w = calloc((size_t)n, sizeof *w);
    if (!perm || !w) {
        bs_fail(err, "out_of_memory", dir, "cannot allocate export buffers");
        goto out;
    }
    size_t at = 0;
    for (int k = 0; k < n; k++) {
        w[k].name = t[k].name;
        w[k].ndim = t[k].ndim;
        w[k].shape[0] = t[k].shape[0];
        w[k].shape[1] = t[k].shape[1];
        const float *src = params + t[k].offset;
        if (t[k].rope_heads > 0) {
            size_t rows = (size_t)t[k].shape[0], cols = (size_t)t[k].shape[1];
            size_t hs = rows / (size_t)t[k].rope_heads;
            float *dst = perm + at;
            for (size_t r = 0; r < rows; r++)
                memcpy(dst + hf_row(r, hs) * cols, src + r * cols, cols * sizeof(float));
            w[k].data = dst;
            at += rows * cols;
        } else {
            w[k].data = src;
        }
    }
    path = path_join(dir, "model.safetensors");
    if (!path) {
        bs_fail(err, "out_of_memory", dir, "cannot allocate a path");
        goto out;
    }
    if (st_write(path, w, n, bf16 ? ST_BF16 : ST_F32, err) != 0) goto out;
    if (tokenizer_src_dir && copy_tokenizer_files(tokenizer_src_dir, dir, err) != 0) goto out;
    int len = config_json(text, sizeof text, cfg, info, bf16);
    if (len < 0 || (size_t)len >= sizeof text) {
        bs_fail(err, "invalid_argument", dir, "config.json does not fit its buffer");
        goto out;
    }
    free(path);
    path = path_join(dir, "config.json");
    if (!path) {
        bs_fail(err, "out_of_memory", dir, "cannot allocate a path");
        goto out;
    }
    if (ckpt_write_file_atomic(path, text, (size_t)len, err) != 0) goto out;
    if (created && fsync_parent(dir, err) != 0) goto out;
    rc = 0;
out:
    free(path);
    free(w);
    free(perm);
    free(t);
    return rc;
}
