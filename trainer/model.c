// model.c — the Llama decoder of model.h: configuration checks, the flat
// parameter layout, seeded initialisation and forward/backward over a packed
// batch, built from the op pairs of ops.c.
//
// Activations (per layer, N tokens of the batch; kept only with
// keep_activations, otherwise one slot is reused by every layer):
//   res_in (N,D) xn1 (N,D) rstd1 (N) q (N,D) k (N,KVD) v (N,KVD)
//   att_max (N,NH) att_inv (N,NH) att (N,D) res_mid (N,D) xn2 (N,D) rstd2 (N)
//   h1 (N,H) h3 (N,H)
// plus res_out (N,D), xnf (N,D), rstdf (N) after the last layer.
// Attention probabilities are NOT stored: the forward keeps each row's max
// and 1/sum of exp, and the backward recomputes the (T,T) probabilities of
// one (sequence, head) at a time with the same sgemm and expf calls, so they
// are bit-identical to the forward's while memory stays O(N) instead of
// O(sum T^2 * NH * L). The SwiGLU product silu(h1)*h3 is likewise recomputed.
// The classifier runs only over the M rows that have a target, in chunks of
// at most CLS_CHUNK_FLOATS / V rows; when all M rows fit in one chunk the
// softmax probabilities are kept for the backward, else they are recomputed.
#include "model.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

// Upper bounds that no CPU-trainable model reaches; they keep every size
// product far from overflow and reject garbage headers early.
#define MAX_DIM (1 << 16)
#define MAX_HIDDEN (1 << 18)
#define MAX_LAYERS 1024
#define MAX_VOCAB (1 << 24)
#define MAX_SEQ_LEN (1 << 20)

// Logits scratch budget (floats) of one classifier chunk: 64 MiB.
#define CLS_CHUNK_FLOATS ((size_t)16 << 20)

static int mul_sz(size_t a, size_t b, size_t *out) {
    return __builtin_mul_overflow(a, b, out) ? -1 : 0;
}

static int add_sz(size_t a, size_t b, size_t *out) {
    return __builtin_add_overflow(a, b, out) ? -1 : 0;
}

// Sizes of every tensor in flat order; count 11 or 12 (wcls when unshared).
typedef struct {
    const char *name;
    size_t count;
    int decay;
} TensorSpec;

static int tensor_specs(const ModelConfig *c, TensorSpec *s) {
    size_t V = (size_t)c->vocab_size, D = (size_t)c->dim, H = (size_t)c->hidden_dim;
    size_t L = (size_t)c->n_layers;
    size_t KVD = (size_t)c->n_kv_heads * (D / (size_t)c->n_heads);
    int n = 0;
    s[n++] = (TensorSpec){"tok_emb", V * D, 1};
    s[n++] = (TensorSpec){"rms_att", L * D, 0};
    s[n++] = (TensorSpec){"wq", L * D * D, 1};
    s[n++] = (TensorSpec){"wk", L * KVD * D, 1};
    s[n++] = (TensorSpec){"wv", L * KVD * D, 1};
    s[n++] = (TensorSpec){"wo", L * D * D, 1};
    s[n++] = (TensorSpec){"rms_ffn", L * D, 0};
    s[n++] = (TensorSpec){"w1", L * H * D, 1};
    s[n++] = (TensorSpec){"w2", L * D * H, 1};
    s[n++] = (TensorSpec){"w3", L * H * D, 1};
    s[n++] = (TensorSpec){"rms_final", D, 0};
    if (!c->shared_classifier) s[n++] = (TensorSpec){"wcls", V * D, 1};
    return n;
}

int model_config_validate(const ModelConfig *c, BsError *err) {
    struct {
        const char *name;
        int value, max;
    } f[] = {
        {"dim", c->dim, MAX_DIM},
        {"hidden_dim", c->hidden_dim, MAX_HIDDEN},
        {"n_layers", c->n_layers, MAX_LAYERS},
        {"n_heads", c->n_heads, MAX_DIM},
        {"n_kv_heads", c->n_kv_heads, MAX_DIM},
        {"vocab_size", c->vocab_size, MAX_VOCAB},
        {"seq_len", c->seq_len, MAX_SEQ_LEN},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        if (f[i].value <= 0 || f[i].value > f[i].max)
            return bs_fail(err, "model_invalid", f[i].name,
                           "model %s is %d, must be in 1..%d", f[i].name, f[i].value, f[i].max);
    }
    if (c->dim % c->n_heads != 0)
        return bs_fail(err, "model_invalid", "n_heads", "dim %d is not divisible by n_heads %d",
                       c->dim, c->n_heads);
    if (c->n_kv_heads > c->n_heads || c->n_heads % c->n_kv_heads != 0)
        return bs_fail(err, "model_invalid", "n_kv_heads",
                       "n_kv_heads %d must divide n_heads %d", c->n_kv_heads, c->n_heads);
    if ((c->dim / c->n_heads) % 2 != 0)
        return bs_fail(err, "model_invalid", "n_heads",
                       "head size %d (dim / n_heads) must be even for RoPE",
                       c->dim / c->n_heads);
    if (c->shared_classifier != 0 && c->shared_classifier != 1)
        return bs_fail(err, "model_invalid", "shared_classifier", "shared_classifier must be 0 or 1");
    if (!(isfinite(c->norm_eps) && c->norm_eps > 0.0f))
        return bs_fail(err, "model_invalid", "norm_eps", "norm_eps must be finite and > 0");
    if (!(isfinite(c->rope_theta) && c->rope_theta > 0.0f))
        return bs_fail(err, "model_invalid", "rope_theta", "rope_theta must be finite and > 0");
    // The caps bound each product below 2^50 on their own; check the sum
    // (and its byte size) anyway so a later cap change cannot overflow.
    size_t V = (size_t)c->vocab_size, D = (size_t)c->dim, H = (size_t)c->hidden_dim;
    size_t L = (size_t)c->n_layers, KVD = (size_t)c->n_kv_heads * (D / (size_t)c->n_heads);
    size_t t, total = 0, bytes;
    size_t parts[][3] = {{V, D, 1}, {L, D, 1},   {L, D, D}, {L, KVD, D}, {L, KVD, D}, {L, D, D},
                         {L, D, 1}, {L, H, D},   {L, D, H}, {L, H, D},   {D, 1, 1},
                         {c->shared_classifier ? 0 : V, D, 1}};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        if (mul_sz(parts[i][0], parts[i][1], &t) || mul_sz(t, parts[i][2], &t) ||
            add_sz(total, t, &total))
            return bs_fail(err, "model_invalid", "", "model parameter count overflows");
    }
    if (mul_sz(total, sizeof(float), &bytes) || mul_sz(total, 2 * sizeof(float), &bytes))
        return bs_fail(err, "model_invalid", "", "model parameter bytes overflow");
    return 0;
}

size_t model_param_count(const ModelConfig *c) {
    TensorSpec s[12];
    int n = tensor_specs(c, s);
    size_t total = 0;
    for (int i = 0; i < n; i++) total += s[i].count;
    return total;
}

void model_tensors(ModelTensors *t, float *flat, const ModelConfig *c) {
    TensorSpec s[12];
    int n = tensor_specs(c, s);
    float **dst[12] = {&t->tok_emb, &t->rms_att, &t->wq,        &t->wk,
                       &t->wv,      &t->wo,      &t->rms_ffn,   &t->w1,
                       &t->w2,      &t->w3,      &t->rms_final, &t->wcls};
    float *p = flat;
    for (int i = 0; i < n; i++) {
        *dst[i] = p;
        p += s[i].count;
    }
    if (c->shared_classifier) t->wcls = t->tok_emb;
}

int model_param_ranges(const ModelConfig *c, ParamRange *out, int max) {
    TensorSpec s[12];
    int n = tensor_specs(c, s);
    size_t off = 0;
    int k = 0;
    for (int i = 0; i < n && k < max; i++) {
        out[k++] = (ParamRange){s[i].name, off, s[i].count, s[i].decay};
        off += s[i].count;
    }
    return k;
}
