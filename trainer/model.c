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
            return bs_fail(err, "model_invalid", f[i].name, "model %s is %d, must be in 1..%d",
                           f[i].name, f[i].value, f[i].max);
    }
    if (c->dim % c->n_heads != 0)
        return bs_fail(err, "model_invalid", "n_heads", "dim %d is not divisible by n_heads %d",
                       c->dim, c->n_heads);
    if (c->n_kv_heads > c->n_heads || c->n_heads % c->n_kv_heads != 0)
        return bs_fail(err, "model_invalid", "n_kv_heads", "n_kv_heads %d must divide n_heads %d",
                       c->n_kv_heads, c->n_heads);
    if ((c->dim / c->n_heads) % 2 != 0)
        return bs_fail(err, "model_invalid", "n_heads",
                       "head size %d (dim / n_heads) must be even for RoPE", c->dim / c->n_heads);
    if (c->shared_classifier != 0 && c->shared_classifier != 1)
        return bs_fail(err, "model_invalid", "shared_classifier",
                       "shared_classifier must be 0 or 1");
    if (!(isfinite(c->norm_eps) && c->norm_eps > 0.0f))
        return bs_fail(err, "model_invalid", "norm_eps", "norm_eps must be finite and > 0");
    if (!(isfinite(c->rope_theta) && c->rope_theta > 0.0f))
        return bs_fail(err, "model_invalid", "rope_theta", "rope_theta must be finite and > 0");
    // The caps bound each product below 2^50 on their own; check the sum
    // (and its byte size) anyway so a later cap change cannot overflow.
    size_t V = (size_t)c->vocab_size, D = (size_t)c->dim, H = (size_t)c->hidden_dim;
    size_t L = (size_t)c->n_layers, KVD = (size_t)c->n_kv_heads * (D / (size_t)c->n_heads);
    size_t t, total = 0, bytes;
    size_t parts[][3] = {{V, D, 1},   {L, D, 1}, {L, D, D}, {L, KVD, D},
                         {L, KVD, D}, {L, D, D}, {L, D, 1}, {L, H, D},
                         {L, D, H},   {L, H, D}, {D, 1, 1}, {c->shared_classifier ? 0 : V, D, 1}};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        if (mul_sz(parts[i][0], parts[i][1], &t) || mul_sz(t, parts[i][2], &t) ||
            add_sz(total, t, &total))
            return bs_fail(err, "model_invalid", "", "model parameter count overflows");
    }
    // Parameters and gradients must be addressable in bytes.
    if (mul_sz(total, 2 * sizeof(float), &bytes))
        return bs_fail(err, "model_invalid", "", "model parameter bytes overflow");
    return 0;
}

size_t model_param_count(const ModelConfig *c) {
    TensorSpec s[12];
    int n = tensor_specs(c, s);
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += s[i].count;
    return total;
}

void model_tensors(ModelTensors *t, float *flat, const ModelConfig *c) {
    TensorSpec s[12];
    int n = tensor_specs(c, s);
    float **dst[12] = {&t->tok_emb, &t->rms_att, &t->wq, &t->wk, &t->wv,        &t->wo,
                       &t->rms_ffn, &t->w1,      &t->w2, &t->w3, &t->rms_final, &t->wcls};
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

// ---------------------------------------------------------------------------
// The model object

typedef struct {
    float *res_in, *xn1, *rstd1, *q, *k, *v, *att_max, *att_inv, *att, *res_mid, *xn2, *rstd2;
    float *h1, *h3;
} LayerActs;

struct Model {
    ModelConfig c;
    size_t n_params;
    float *params, *grads;      // (P) each; grads NULL when frozen
    ModelTensors w, g;          // views into params / grads
    float *rope_cos, *rope_sin; // (seq_len, HS/2)

    // Buffers grow (realloc) to the largest batch seen; contents are
    // per-forward, so growth never needs to preserve them.
    float *acts;      // layer activations (1 or L slots) + final norm
    size_t acts_cap;  // bytes
    LayerActs *slots; // (L)
    float *res_out, *xnf, *rstdf;
    float *fwd; // tmp_d (N,D), tmp_h (N,H), xg (N,D), cls_logp (N), cls_g (N)
    size_t fwd_cap;
    float *tmp_d, *tmp_h, *xg, *cls_logp, *cls_g;
    int *ints; // pos (N), rows (N), tg (N)
    size_t ints_cap;
    int *pos, *rows, *tg;
    float *att_scratch;
    size_t att_cap;
    float *probs; // (chunk rows, V)
    size_t probs_cap;
    float *bwd; // dres, dxn, dq, datt (N,D); dk, dv (N,KVD); dh1, dh3 (N,H)
    size_t bwd_cap;

    // What the last forward left behind for model_backward.
    int have_acts, last_N, last_M, last_n_seqs, max_T, cls_chunk, cls_kept;
};

// Per-token float counts of the buffers above.
static size_t layer_floats(const ModelConfig *c) {
    size_t D = (size_t)c->dim, H = (size_t)c->hidden_dim, NH = (size_t)c->n_heads;
    size_t KVD = (size_t)c->n_kv_heads * (D / NH);
    return 6 * D + 2 * KVD + 2 * NH + 2 * H + 2;
}

static size_t bwd_floats(const ModelConfig *c) {
    size_t D = (size_t)c->dim, H = (size_t)c->hidden_dim;
    size_t KVD = (size_t)c->n_kv_heads * (D / (size_t)c->n_heads);
    return 4 * D + 2 * KVD + 2 * H;
}

static size_t fwd_floats(const ModelConfig *c) {
    return 2 * (size_t)c->dim + (size_t)c->hidden_dim + 2;
}

static size_t cls_chunk_rows(const ModelConfig *c) {
    size_t r = CLS_CHUNK_FLOATS / (size_t)c->vocab_size;
    return r ? r : 1;
}

// Bytes of each buffer for a batch; -1 on overflow.
typedef struct {
    size_t acts, fwd, ints, att, probs, bwd;
} BufSizes;

static int buf_sizes(const ModelConfig *c, size_t N, size_t M, size_t max_T, size_t slots,
                     int backward, BufSizes *s) {
    size_t t;
    memset(s, 0, sizeof *s);
    size_t rows = M < cls_chunk_rows(c) ? M : cls_chunk_rows(c);
    if (mul_sz(layer_floats(c), slots, &t) || add_sz(t, 2 * (size_t)c->dim + 1, &t) ||
        mul_sz(t, N, &t) || mul_sz(t, sizeof(float), &s->acts))
        return -1;
    if (mul_sz(fwd_floats(c), N, &t) || mul_sz(t, sizeof(float), &s->fwd)) return -1;
    if (mul_sz(3, N, &t) || mul_sz(t, sizeof(int), &s->ints)) return -1;
    if (mul_sz(max_T, max_T, &t) || mul_sz(t, 2 * sizeof(float), &s->att)) return -1;
    if (mul_sz(rows, (size_t)c->vocab_size, &t) || mul_sz(t, sizeof(float), &s->probs)) return -1;
    if (backward && (mul_sz(bwd_floats(c), N, &t) || mul_sz(t, sizeof(float), &s->bwd))) return -1;
    return 0;
}

size_t model_activation_bytes(const ModelConfig *c, int n_tokens, int max_seq, int backward) {
    BufSizes s;
    size_t n = n_tokens > 0 ? (size_t)n_tokens : 0, T = max_seq > 0 ? (size_t)max_seq : 0;
    if (buf_sizes(c, n, n, T, backward ? (size_t)c->n_layers : 1, backward, &s) != 0)
        return SIZE_MAX;
    size_t total = 0;
    size_t parts[] = {s.acts, s.fwd, s.ints, s.att, s.probs, s.bwd};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        if (add_sz(total, parts[i], &total)) return SIZE_MAX;
    return total;
}

static int ensure(void *pbuf, size_t *cap, size_t need, BsError *err) {
    void **buf = pbuf;
    if (need <= *cap) return 0;
    void *p = realloc(*buf, need);
    if (!p)
        return bs_fail(err, "out_of_memory", "", "cannot allocate %zu bytes of activations", need);
    *buf = p;
    *cap = need;
    return 0;
}

int model_create(Model **out, const ModelConfig *c, int with_grads, BsError *err) {
    *out = NULL;
    if (model_config_validate(c, err) != 0) return -1;
    Model *m = calloc(1, sizeof *m);
    if (!m) return bs_fail(err, "out_of_memory", "", "cannot allocate a model");
    m->c = *c;
    m->n_params = model_param_count(c);
    size_t half = (size_t)c->seq_len * (size_t)(c->dim / c->n_heads / 2);
    m->params = calloc(m->n_params, sizeof(float));
    m->slots = calloc((size_t)c->n_layers, sizeof(LayerActs));
    m->rope_cos = malloc(half * sizeof(float));
    m->rope_sin = malloc(half * sizeof(float));
    if (with_grads) m->grads = calloc(m->n_params, sizeof(float));
    if (!m->params || !m->slots || !m->rope_cos || !m->rope_sin || (with_grads && !m->grads)) {
        size_t bytes = m->n_params * sizeof(float) * (with_grads ? 2 : 1);
        model_free(m);
        return bs_fail(err, "out_of_memory", "",
                       "cannot allocate %zu bytes for the model's parameters", bytes);
    }
    model_tensors(&m->w, m->params, c);
    if (m->grads) model_tensors(&m->g, m->grads, c);
    ops_rope_tables(m->rope_cos, m->rope_sin, c->seq_len, c->dim / c->n_heads, c->rope_theta);
    *out = m;
    return 0;
}

void model_free(Model *m) {
    if (!m) return;
    free(m->params);
    free(m->grads);
    free(m->rope_cos);
    free(m->rope_sin);
    free(m->slots);
    free(m->acts);
    free(m->fwd);
    free(m->ints);
    free(m->att_scratch);
    free(m->probs);
    free(m->bwd);
    free(m);
}

const ModelConfig *model_config(const Model *m) {
    return &m->c;
}

float *model_params(Model *m) {
    return m->params;
}

float *model_grads(Model *m) {
    return m->grads;
}

void model_zero_grads(Model *m) {
    if (m->grads) memset(m->grads, 0, m->n_params * sizeof(float));
}

// Random numbers: splitmix64 (Steele, Lea & Flood 2014) over a 64-bit state
// seeded with `seed`; each uniform is the top 53 bits of one output. Normals
// come in pairs from the Box-Muller transform of two uniforms
// (u1 in (0, 1], u2 in [0, 1)): sqrt(-2 ln u1) * (cos, sin)(2 pi u2), both
// used, in flat parameter order, tensor by tensor. Same seed, same model, on
// every platform with IEEE doubles and a correctly rounded libm.
static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

typedef struct {
    uint64_t state;
    int has_spare;
    double spare;
} Gauss;

static double gauss_next(Gauss *g) {
    if (g->has_spare) {
        g->has_spare = 0;
        return g->spare;
    }
    double u1 = (double)((splitmix64(&g->state) >> 11) + 1) * 0x1.0p-53;
    double u2 = (double)(splitmix64(&g->state) >> 11) * 0x1.0p-53;
    double r = sqrt(-2.0 * log(u1)), a = 2.0 * M_PI * u2;
    g->spare = r * sin(a);
    g->has_spare = 1;
    return r * cos(a);
}

void model_init_random(Model *m, unsigned long long seed) {
    const ModelConfig *c = &m->c;
    ParamRange r[12];
    int n = model_param_ranges(c, r, 12);
    Gauss g = {.state = seed};
    double out_std = 0.02 / sqrt(2.0 * c->n_layers);
    for (int i = 0; i < n; i++) {
        float *p = m->params + r[i].offset;
        if (!r[i].decay) { // RMSNorm weights
            for (size_t j = 0; j < r[i].count; j++)
                p[j] = 1.0f;
            continue;
        }
        double std =
            (strcmp(r[i].name, "wo") == 0 || strcmp(r[i].name, "w2") == 0) ? out_std : 0.02;
        for (size_t j = 0; j < r[i].count; j++)
            p[j] = (float)(std * gauss_next(&g));
    }
}

// Checks the batch against the config; fills N, M (rows with a target) and
// the longest sequence.
static int batch_check(const Model *m, const ModelBatch *b, int *N, int *M, int *max_T,
                       BsError *err) {
    const ModelConfig *c = &m->c;
    if (b->n_seqs < 0 || (b->n_seqs > 0 && (!b->offsets || !b->tokens || !b->targets)))
        return bs_fail(err, "invalid_batch", "", "batch is missing offsets, tokens or targets");
    if (b->n_seqs == 0) {
        *N = *M = *max_T = 0;
        return 0;
    }
    if (b->offsets[0] != 0)
        return bs_fail(err, "invalid_batch", "offsets", "batch offsets[0] is %d, must be 0",
                       b->offsets[0]);
    int mt = 0;
    for (int s = 0; s < b->n_seqs; s++) {
        long len = (long)b->offsets[s + 1] - b->offsets[s];
        if (len < 0 || len > c->seq_len)
            return bs_fail(err, "invalid_batch", "offsets",
                           "sequence %d has %ld tokens; the model allows 0..%d (seq_len)", s, len,
                           c->seq_len);
        if (len > mt) mt = (int)len;
    }
    int n = b->offsets[b->n_seqs], mm = 0;
    for (int i = 0; i < n; i++) {
        if (b->tokens[i] < 0 || b->tokens[i] >= c->vocab_size)
            return bs_fail(err, "invalid_batch", "tokens",
                           "token %d at position %d is outside "
                           "the vocabulary (0..%d)",
                           b->tokens[i], i, c->vocab_size - 1);
        if (b->targets[i] < -1 || b->targets[i] >= c->vocab_size)
            return bs_fail(err, "invalid_batch", "targets",
                           "target %d at position %d is "
                           "outside the vocabulary (-1..%d)",
                           b->targets[i], i, c->vocab_size - 1);
        mm += b->targets[i] >= 0;
    }
    *N = n;
    *M = mm;
    *max_T = mt;
    return 0;
}

// Points the activation views at the buffers for a batch of N tokens.
static void layout(Model *m, int N, int slots) {
    const ModelConfig *c = &m->c;
    size_t n = (size_t)N, D = (size_t)c->dim, H = (size_t)c->hidden_dim;
    size_t NH = (size_t)c->n_heads, KVD = (size_t)c->n_kv_heads * (D / NH);
    float *p = m->acts;
    for (int l = 0; l < c->n_layers; l++) {
        LayerActs *a = &m->slots[l];
        if (l >= slots) {
            *a = m->slots[0];
            continue;
        }
        a->res_in = p, p += n * D;
        a->xn1 = p, p += n * D;
        a->rstd1 = p, p += n;
        a->q = p, p += n * D;
        a->k = p, p += n * KVD;
        a->v = p, p += n * KVD;
        a->att_max = p, p += n * NH;
        a->att_inv = p, p += n * NH;
        a->att = p, p += n * D;
        a->res_mid = p, p += n * D;
        a->xn2 = p, p += n * D;
        a->rstd2 = p, p += n;
        a->h1 = p, p += n * H;
        a->h3 = p, p += n * H;
    }
    m->res_out = p, p += n * D;
    m->xnf = p, p += n * D;
    m->rstdf = p;
    p = m->fwd;
    m->tmp_d = p, p += n * D;
    m->tmp_h = p, p += n * H;
    m->xg = p, p += n * D;
    m->cls_logp = p, p += n;
    m->cls_g = p;
    m->pos = m->ints;
    m->rows = m->ints + n;
    m->tg = m->ints + 2 * n;
}

int model_forward(Model *m, const ModelBatch *b, float *logp, int keep_activations, BsError *err) {
    const ModelConfig *c = &m->c;
    int N = 0, M = 0, max_T = 0;
    m->have_acts = 0;
    if (keep_activations && !m->grads)
        return bs_fail(err, "invalid_argument", "",
                       "a frozen model cannot keep activations for a backward pass");
    if (batch_check(m, b, &N, &M, &max_T, err) != 0) return -1;
    int L = c->n_layers, D = c->dim, H = c->hidden_dim, V = c->vocab_size;
    int NH = c->n_heads, NKV = c->n_kv_heads, HS = D / NH, KVD = NKV * HS;
    int slots = keep_activations ? L : 1;
    BufSizes s;
    if (buf_sizes(c, (size_t)N, (size_t)M, (size_t)max_T, (size_t)slots, 0, &s) != 0)
        return bs_fail(err, "out_of_memory", "", "activation sizes of a %d-token batch overflow",
                       N);
    if (ensure(&m->acts, &m->acts_cap, s.acts, err) || ensure(&m->fwd, &m->fwd_cap, s.fwd, err) ||
        ensure(&m->ints, &m->ints_cap, s.ints, err) ||
        ensure(&m->att_scratch, &m->att_cap, s.att, err) ||
        ensure(&m->probs, &m->probs_cap, s.probs, err))
        return -1;
    if (N == 0) {
        m->last_N = m->last_M = m->last_n_seqs = 0;
        m->have_acts = keep_activations;
        return 0;
    }
    layout(m, N, slots);
    const ModelTensors *w = &m->w;
    size_t nD = (size_t)N * D;

    ops_positions(m->pos, b->offsets, b->n_seqs);
    embedding_forward(m->slots[0].res_in, b->tokens, w->tok_emb, N, D);
    for (int l = 0; l < L; l++) {
        LayerActs *a = &m->slots[l];
        size_t lDD = (size_t)l * D * D, lKD = (size_t)l * KVD * D, lHD = (size_t)l * H * D;
        // attention block
        rmsnorm_forward(a->xn1, a->rstd1, a->res_in, w->rms_att + (size_t)l * D, N, D, c->norm_eps);
        matmul_forward(a->q, a->xn1, w->wq + lDD, N, D, D);
        matmul_forward(a->k, a->xn1, w->wk + lKD, N, D, KVD);
        matmul_forward(a->v, a->xn1, w->wv + lKD, N, D, KVD);
        rope_forward(a->q, m->pos, m->rope_cos, m->rope_sin, N, NH, HS);
        rope_forward(a->k, m->pos, m->rope_cos, m->rope_sin, N, NKV, HS);
        attention_forward(a->att, a->att_max, a->att_inv, m->att_scratch, a->q, a->k, a->v,
                          b->offsets, b->n_seqs, NH, NKV, HS);
        matmul_forward(m->tmp_d, a->att, w->wo + lDD, N, D, D);
        residual_forward(a->res_mid, a->res_in, m->tmp_d, nD);
        // feed-forward block
        rmsnorm_forward(a->xn2, a->rstd2, a->res_mid, w->rms_ffn + (size_t)l * D, N, D,
                        c->norm_eps);
        matmul_forward(a->h1, a->xn2, w->w1 + lHD, N, D, H);
        matmul_forward(a->h3, a->xn2, w->w3 + lHD, N, D, H);
        swiglu_forward(m->tmp_h, a->h1, a->h3, (size_t)N * H);
        matmul_forward(m->tmp_d, m->tmp_h, w->w2 + lHD, N, H, D);
        float *next = (l == L - 1) ? m->res_out : m->slots[keep_activations ? l + 1 : 0].res_in;
        residual_forward(next, a->res_mid, m->tmp_d, nD);
    }
    rmsnorm_forward(m->xnf, m->rstdf, m->res_out, w->rms_final, N, D, c->norm_eps);

    // Classifier only over rows with a target, gathered into (M, D).
    int r = 0;
    for (int i = 0; i < N; i++) {
        logp[i] = 0.0f;
        if (b->targets[i] < 0) continue;
        m->rows[r] = i;
        m->tg[r] = b->targets[i];
        memcpy(m->xg + (size_t)r * D, m->xnf + (size_t)i * D, (size_t)D * sizeof(float));
        r++;
    }
    int chunk = (int)(M < (int)cls_chunk_rows(c) ? M : (int)cls_chunk_rows(c));
    for (int r0 = 0; r0 < M; r0 += chunk) {
        int mc = M - r0 < chunk ? M - r0 : chunk;
        logsoftmax_gather_forward(m->cls_logp + r0, m->probs, m->xg + (size_t)r0 * D, w->wcls,
                                  m->tg + r0, mc, D, V);
    }
    for (int k = 0; k < M; k++)
        logp[m->rows[k]] = m->cls_logp[k];

    m->last_N = N;
    m->last_M = M;
    m->last_n_seqs = b->n_seqs;
    m->max_T = max_T;
    m->cls_chunk = chunk;
    m->cls_kept = (M <= chunk); // one chunk: probs still hold every row
    m->have_acts = keep_activations;
    return 0;
}

int model_backward(Model *m, const ModelBatch *b, const float *dlogp, BsError *err) {
    const ModelConfig *c = &m->c;
    if (!m->grads) return bs_fail(err, "invalid_argument", "", "a frozen model has no gradients");
    if (!m->have_acts)
        return bs_fail(err, "invalid_argument", "",
                       "model_backward needs a forward with keep_activations first");
    int N = b->n_seqs > 0 ? b->offsets[b->n_seqs] : 0;
    if (b->n_seqs != m->last_n_seqs || N != m->last_N)
        return bs_fail(err, "invalid_argument", "",
                       "model_backward got a different batch than the last forward");
    if (N == 0) return 0;
    int L = c->n_layers, D = c->dim, H = c->hidden_dim, V = c->vocab_size, M = m->last_M;
    int NH = c->n_heads, NKV = c->n_kv_heads, HS = D / NH, KVD = NKV * HS;
    BufSizes s;
    if (buf_sizes(c, (size_t)N, (size_t)M, (size_t)m->max_T, (size_t)L, 1, &s) != 0)
        return bs_fail(err, "out_of_memory", "", "gradient sizes of a %d-token batch overflow", N);
    if (ensure(&m->bwd, &m->bwd_cap, s.bwd, err) != 0) return -1;
    size_t nD = (size_t)N * D, nKV = (size_t)N * KVD, nH = (size_t)N * H;
    float *dres = m->bwd, *dxn = dres + nD, *dq = dxn + nD, *datt = dq + nD;
    float *dk = datt + nD, *dv = dk + nKV, *dh1 = dv + nKV, *dh3 = dh1 + nH;
    const ModelTensors *w = &m->w, *g = &m->g;

    // Classifier: dq serves as the (M, D) gradient of the gathered rows.
    float *dxg = dq;
    memset(dxg, 0, (size_t)M * D * sizeof(float));
    for (int k = 0; k < M; k++)
        m->cls_g[k] = dlogp[m->rows[k]];
    for (int r0 = 0; r0 < M; r0 += m->cls_chunk) {
        int mc = M - r0 < m->cls_chunk ? M - r0 : m->cls_chunk;
        if (!m->cls_kept)
            logsoftmax_gather_forward(m->cls_logp + r0, m->probs, m->xg + (size_t)r0 * D, w->wcls,
                                      m->tg + r0, mc, D, V);
        logsoftmax_gather_backward(dxg + (size_t)r0 * D, g->wcls, m->probs, m->cls_g + r0,
                                   m->xg + (size_t)r0 * D, w->wcls, m->tg + r0, mc, D, V);
    }
    m->cls_kept = 0; // probs now hold dlogits
    memset(dxn, 0, nD * sizeof(float));
    for (int k = 0; k < M; k++)
        memcpy(dxn + (size_t)m->rows[k] * D, dxg + (size_t)k * D, (size_t)D * sizeof(float));
    memset(dres, 0, nD * sizeof(float));
    rmsnorm_backward(dres, g->rms_final, dxn, m->res_out, w->rms_final, m->rstdf, N, D);

    // dres holds dLoss/d(layer output) going down; each block adds its
    // branch's gradient to the pass-through of the residual connection.
    for (int l = L - 1; l >= 0; l--) {
        LayerActs *a = &m->slots[l];
        size_t lDD = (size_t)l * D * D, lKD = (size_t)l * KVD * D, lHD = (size_t)l * H * D;
        // feed-forward block: out = res_mid + W2 (silu(W1 xn2) * W3 xn2)
        swiglu_forward(m->tmp_h, a->h1, a->h3, nH); // recompute the product for dW2
        matmul_backward(NULL, g->w2 + lHD, dres, m->tmp_h, w->w2 + lHD, N, H, D);
        memset(m->tmp_h, 0, nH * sizeof(float)); // now d(product)
        matmul_backward(m->tmp_h, NULL, dres, NULL, w->w2 + lHD, N, H, D);
        memset(dh1, 0, nH * sizeof(float));
        memset(dh3, 0, nH * sizeof(float));
        swiglu_backward(dh1, dh3, m->tmp_h, a->h1, a->h3, nH);
        memset(dxn, 0, nD * sizeof(float));
        matmul_backward(dxn, g->w1 + lHD, dh1, a->xn2, w->w1 + lHD, N, D, H);
        matmul_backward(dxn, g->w3 + lHD, dh3, a->xn2, w->w3 + lHD, N, D, H);
        rmsnorm_backward(dres, g->rms_ffn + (size_t)l * D, dxn, a->res_mid,
                         w->rms_ffn + (size_t)l * D, a->rstd2, N, D);
        // attention block: res_mid = res_in + Wo attention(rope(Wq xn1), rope(Wk xn1), Wv xn1)
        memset(datt, 0, nD * sizeof(float));
        matmul_backward(datt, g->wo + lDD, dres, a->att, w->wo + lDD, N, D, D);
        memset(dq, 0, nD * sizeof(float));
        memset(dk, 0, nKV * sizeof(float));
        memset(dv, 0, nKV * sizeof(float));
        attention_backward(dq, dk, dv, m->att_scratch, datt, a->q, a->k, a->v, a->att_max,
                           a->att_inv, b->offsets, b->n_seqs, NH, NKV, HS);
        rope_backward(dq, m->pos, m->rope_cos, m->rope_sin, N, NH, HS);
        rope_backward(dk, m->pos, m->rope_cos, m->rope_sin, N, NKV, HS);
        memset(dxn, 0, nD * sizeof(float));
        matmul_backward(dxn, g->wq + lDD, dq, a->xn1, w->wq + lDD, N, D, D);
        matmul_backward(dxn, g->wk + lKD, dk, a->xn1, w->wk + lKD, N, D, KVD);
        matmul_backward(dxn, g->wv + lKD, dv, a->xn1, w->wv + lKD, N, D, KVD);
        rmsnorm_backward(dres, g->rms_att + (size_t)l * D, dxn, a->res_in,
                         w->rms_att + (size_t)l * D, a->rstd1, N, D);
    }
    embedding_backward(g->tok_emb, dres, b->tokens, N, D);
    return 0;
}
