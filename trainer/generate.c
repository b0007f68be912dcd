// generate.c — inference with a KV cache, one token at a time, over a model's
// flat parameters. This is llama2.c run.c's forward() and sampler kept
// operation for operation (plain float loops in the same order, no BLAS), so
// greedy ids equal run.c's; it is separate from model.c's batched training
// forward, which rounds differently.
#include "generate.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define GEN_DEFAULT_MAX_NEW 256
#define GEN_DEFAULT_SEED 42ull
#define LLAMA2C_BOS 1

typedef struct {
    float prob;
    int index;
} ProbIndex;

typedef struct {
    float *x;                   // (D) activation at the current position
    float *xb;                  // (D) inside a residual branch
    float *xb2;                 // (D)
    float *hb;                  // (H)
    float *hb2;                 // (H)
    float *q;                   // (D)
    float *k;                   // (KVD)
    float *v;                   // (KVD)
    float *att;                 // (NH, T) attention scores
    float *logits;              // (V)
    float *rope_cos, *rope_sin; // (HS / 2) for the current position
    float *key_cache;           // (L, T, KVD)
    float *value_cache;         // (L, T, KVD)
    ProbIndex *probindex;       // (V) top-p scratch
    int T;                      // positions the caches hold
} RunState;

static int mul_ok(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return 0;
    *out = a * b;
    return 1;
}

static void free_run_state(RunState *s) {
    free(s->x);
    free(s->xb);
    free(s->xb2);
    free(s->hb);
    free(s->hb2);
    free(s->q);
    free(s->k);
    free(s->v);
    free(s->att);
    free(s->logits);
    free(s->rope_cos);
    free(s->rope_sin);
    free(s->key_cache);
    free(s->value_cache);
    free(s->probindex);
}

static int malloc_run_state(RunState *s, const ModelConfig *p, int T, BsError *err) {
    memset(s, 0, sizeof *s);
    size_t D = (size_t)p->dim, H = (size_t)p->hidden_dim, V = (size_t)p->vocab_size;
    size_t HS = D / (size_t)p->n_heads, KVD = HS * (size_t)p->n_kv_heads;
    size_t att_n, cache_n;
    if (!mul_ok((size_t)p->n_heads, (size_t)T, &att_n) ||
        !mul_ok((size_t)p->n_layers, (size_t)T, &cache_n) || !mul_ok(cache_n, KVD, &cache_n) ||
        !mul_ok(cache_n, sizeof(float), &(size_t){0}))
        return bs_fail(err, "model_invalid", "", "KV cache size overflows");
    s->T = T;
    s->x = calloc(D, sizeof(float));
    s->xb = calloc(D, sizeof(float));
    s->xb2 = calloc(D, sizeof(float));
    s->hb = calloc(H, sizeof(float));
    s->hb2 = calloc(H, sizeof(float));
    s->q = calloc(D, sizeof(float));
    s->k = calloc(KVD, sizeof(float));
    s->v = calloc(KVD, sizeof(float));
    s->att = calloc(att_n, sizeof(float));
    s->logits = calloc(V, sizeof(float));
    s->rope_cos = calloc(HS / 2, sizeof(float));
    s->rope_sin = calloc(HS / 2, sizeof(float));
    s->key_cache = calloc(cache_n, sizeof(float));
    s->value_cache = calloc(cache_n, sizeof(float));
    s->probindex = calloc(V, sizeof(ProbIndex));
    if (!s->x || !s->xb || !s->xb2 || !s->hb || !s->hb2 || !s->q || !s->k || !s->v || !s->att ||
        !s->logits || !s->rope_cos || !s->rope_sin || !s->key_cache || !s->value_cache ||
        !s->probindex) {
        free_run_state(s);
        return bs_fail(err, "out_of_memory", "", "cannot allocate the inference state");
    }
    return 0;
}

// ---------------------------------------------------------------------------
// neural net blocks, as run.c

static void rmsnorm(float *o, const float *x, const float *weight, int size, float eps) {
    float ss = 0.0f;
    for (int j = 0; j < size; j++)
        ss += x[j] * x[j];
    ss /= size;
    ss += eps;
    ss = 1.0f / sqrtf(ss);
    for (int j = 0; j < size; j++)
        o[j] = weight[j] * (ss * x[j]);
}

static void softmax(float *x, int size) {
    float max_val = x[0];
    for (int i = 1; i < size; i++)
        if (x[i] > max_val) max_val = x[i];
    float sum = 0.0f;
    for (int i = 0; i < size; i++) {
        x[i] = expf(x[i] - max_val);
        sum += x[i];
    }
    for (int i = 0; i < size; i++)
        x[i] /= sum;
}

// W (d, n) @ x (n) -> xout (d)
static void matmul(float *xout, const float *x, const float *w, int n, int d) {
    for (int i = 0; i < d; i++) {
        float val = 0.0f;
        const float *row = w + (size_t)i * (size_t)n;
        for (int j = 0; j < n; j++)
            val += row[j] * x[j];
        xout[i] = val;
    }
}

// Runs token at pos through the model, appending its keys and values to the
// cache; fills s->logits (V) only when want_logits, since prompt positions
// before the last need nothing but the cache.
static void forward(RunState *s, const ModelTensors *w, const ModelConfig *p, int token, int pos,
                    int want_logits) {
    float *x = s->x;
    int dim = p->dim;
    int kv_dim = (p->dim * p->n_kv_heads) / p->n_heads;
    int kv_mul = p->n_heads / p->n_kv_heads;
    int hidden_dim = p->hidden_dim;
    int head_size = dim / p->n_heads;
    size_t D = (size_t)dim, H = (size_t)hidden_dim, KVD = (size_t)kv_dim;

    memcpy(x, w->tok_emb + (size_t)token * D, D * sizeof(float));

    // run.c recomputes these per element; the same float expressions once per
    // position give the same values.
    for (int i = 0; i < head_size; i += 2) {
        float freq = 1.0f / powf(p->rope_theta, i / (float)head_size);
        float val = pos * freq;
        s->rope_cos[i / 2] = cosf(val);
        s->rope_sin[i / 2] = sinf(val);
    }

    for (int l = 0; l < p->n_layers; l++) {
        size_t ll = (size_t)l;
        rmsnorm(s->xb, x, w->rms_att + ll * D, dim, p->norm_eps);

        matmul(s->q, s->xb, w->wq + ll * D * D, dim, dim);
        matmul(s->k, s->xb, w->wk + ll * KVD * D, dim, kv_dim);
        matmul(s->v, s->xb, w->wv + ll * KVD * D, dim, kv_dim);

        // RoPE: rotate adjacent pairs (2i, 2i+1) of every q and k head
        for (int i = 0; i < dim; i += 2) {
            int head_dim = i % head_size;
            float fcr = s->rope_cos[head_dim / 2];
            float fci = s->rope_sin[head_dim / 2];
            int rotn = i < kv_dim ? 2 : 1; // q always, k while i is inside kv_dim
            for (int r = 0; r < rotn; r++) {
                float *vec = r == 0 ? s->q : s->k;
                float v0 = vec[i];
                float v1 = vec[i + 1];
                vec[i] = v0 * fcr - v1 * fci;
                vec[i + 1] = v0 * fci + v1 * fcr;
            }
        }

        size_t loff = ll * (size_t)s->T * KVD;
        memcpy(s->key_cache + loff + (size_t)pos * KVD, s->k, KVD * sizeof(float));
        memcpy(s->value_cache + loff + (size_t)pos * KVD, s->v, KVD * sizeof(float));

        for (int h = 0; h < p->n_heads; h++) {
            const float *q = s->q + h * head_size;
            float *att = s->att + (size_t)h * (size_t)s->T;
            size_t kv_off = (size_t)(h / kv_mul) * (size_t)head_size;
            for (int t = 0; t <= pos; t++) {
                const float *k = s->key_cache + loff + (size_t)t * KVD + kv_off;
                float score = 0.0f;
                for (int i = 0; i < head_size; i++)
                    score += q[i] * k[i];
                score /= sqrtf(head_size);
                att[t] = score;
            }
            softmax(att, pos + 1);
            float *xb = s->xb + h * head_size;
            memset(xb, 0, (size_t)head_size * sizeof(float));
            for (int t = 0; t <= pos; t++) {
                const float *v = s->value_cache + loff + (size_t)t * KVD + kv_off;
                float a = att[t];
                for (int i = 0; i < head_size; i++)
                    xb[i] += a * v[i];
            }
        }

        matmul(s->xb2, s->xb, w->wo + ll * D * D, dim, dim);
        for (int i = 0; i < dim; i++)
            x[i] += s->xb2[i];

        rmsnorm(s->xb, x, w->rms_ffn + ll * D, dim, p->norm_eps);

        // SwiGLU: w2(silu(w1 x) * w3 x)
        matmul(s->hb, s->xb, w->w1 + ll * H * D, dim, hidden_dim);
        matmul(s->hb2, s->xb, w->w3 + ll * H * D, dim, hidden_dim);
        for (int i = 0; i < hidden_dim; i++) {
            float val = s->hb[i];
            val *= (1.0f / (1.0f + expf(-val)));
            val *= s->hb2[i];
            s->hb[i] = val;
        }
        matmul(s->xb, s->hb, w->w2 + ll * D * H, hidden_dim, dim);
        for (int i = 0; i < dim; i++)
            x[i] += s->xb[i];
    }
    if (!want_logits) return;

    rmsnorm(x, x, w->rms_final, dim, p->norm_eps);
    matmul(s->logits, x, w->wcls, dim, p->vocab_size);
}

// ---------------------------------------------------------------------------
// sampling, as run.c

static unsigned int random_u32(unsigned long long *state) {
    // xorshift rng: https://en.wikipedia.org/wiki/Xorshift#xorshift.2A
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (unsigned int)((*state * 0x2545F4914F6CDD1Dull) >> 32);
}

static float random_f32(unsigned long long *state) { // [0, 1)
    return (random_u32(state) >> 8) / 16777216.0f;
}

// First maximum wins.
static int sample_argmax(const float *probabilities, int n) {
    int max_i = 0;
    float max_p = probabilities[0];
    for (int i = 1; i < n; i++) {
        if (probabilities[i] > max_p) {
            max_i = i;
            max_p = probabilities[i];
        }
    }
    return max_i;
}

static int sample_mult(const float *probabilities, int n, float coin) {
    float cdf = 0.0f;
    for (int i = 0; i < n; i++) {
        cdf += probabilities[i];
        if (coin < cdf) return i;
    }
    return n - 1; // rounding
}

static int compare_probindex(const void *a, const void *b) {
    const ProbIndex *a_ = a, *b_ = b;
    if (a_->prob > b_->prob) return -1;
    if (a_->prob < b_->prob) return 1;
    return 0;
}

// Nucleus sampling: samples from the smallest set of most likely tokens whose
// probabilities exceed topp.
static int sample_topp(const float *probabilities, int n, float topp, ProbIndex *probindex,
                       float coin) {
    int n0 = 0;
    // a token below (1 - topp) / (n - 1) cannot be in the nucleus
    const float cutoff = (1.0f - topp) / (n - 1);
    for (int i = 0; i < n; i++) {
        if (probabilities[i] >= cutoff) {
            probindex[n0].index = i;
            probindex[n0].prob = probabilities[i];
            n0++;
        }
    }
    qsort(probindex, (size_t)n0, sizeof(ProbIndex), compare_probindex);

    float cumulative_prob = 0.0f;
    int last_idx = n0 - 1; // rounding: consider all
    for (int i = 0; i < n0; i++) {
        cumulative_prob += probindex[i].prob;
        if (cumulative_prob > topp) {
            last_idx = i;
            break;
        }
    }
    float r = coin * cumulative_prob;
    float cdf = 0.0f;
    for (int i = 0; i <= last_idx; i++) {
        cdf += probindex[i].prob;
        if (r < cdf) return probindex[i].index;
    }
    return probindex[last_idx].index; // rounding
}

static int sample(RunState *s, int n, float temperature, float topp, unsigned long long *rng) {
    float *logits = s->logits;
    if (temperature == 0.0f) return sample_argmax(logits, n);
    for (int q = 0; q < n; q++)
        logits[q] /= temperature;
    softmax(logits, n);
    float coin = random_f32(rng);
    if (topp <= 0 || topp >= 1) return sample_mult(logits, n, coin);
    return sample_topp(logits, n, topp, s->probindex, coin);
}

// ---------------------------------------------------------------------------

int generate(const ModelConfig *cfg, const float *params, const int *prompt_ids, int n_prompt,
             const GenerateOptions *opt, int **out_ids, int *n_out, BsError *err) {
    *out_ids = NULL;
    *n_out = 0;
    if (model_config_validate(cfg, err) != 0) return -1;
    if (!params) return bs_fail(err, "invalid_argument", "params", "no model parameters");
    if (!prompt_ids || n_prompt < 1)
        return bs_fail(err, "invalid_argument", "prompt_ids",
                       "the prompt must hold at least one id (BOS)");
    if (n_prompt > cfg->seq_len)
        return bs_fail(err, "prompt_too_long", "prompt_ids",
                       "the prompt has %d ids but the model's seq_len is %d", n_prompt,
                       cfg->seq_len);
    for (int i = 0; i < n_prompt; i++) {
        if (prompt_ids[i] < 0 || prompt_ids[i] >= cfg->vocab_size)
            return bs_fail(err, "invalid_token", "prompt_ids",
                           "prompt id %d at position %d is outside 0..%d", prompt_ids[i], i,
                           cfg->vocab_size - 1);
    }
    GenerateOptions o = opt ? *opt : (GenerateOptions){0};
    if (o.max_new_tokens < 0)
        return bs_fail(err, "invalid_hyperparameter", "max_new_tokens",
                       "max_new_tokens must be >= 0, got %d", o.max_new_tokens);
    if (!(isfinite(o.temperature) && o.temperature >= 0.0f))
        return bs_fail(err, "invalid_hyperparameter", "temperature",
                       "temperature must be finite and >= 0, got %g", (double)o.temperature);
    if (!(o.top_p >= 0.0f && o.top_p <= 1.0f))
        return bs_fail(err, "invalid_hyperparameter", "top_p", "top_p must be in [0, 1], got %g",
                       (double)o.top_p);
    if (o.max_new_tokens == 0) o.max_new_tokens = GEN_DEFAULT_MAX_NEW;
    if (o.seed == 0) o.seed = GEN_DEFAULT_SEED; // xorshift never leaves state 0
    int bos_id = o.bos_id > 0 ? o.bos_id : o.bos_id < 0 ? -1 : LLAMA2C_BOS; // -1: never stops

    int max_new = cfg->seq_len - n_prompt;
    if (o.max_new_tokens < max_new) max_new = o.max_new_tokens;
    if (max_new == 0) return 0;

    ModelTensors w;
    // model_tensors only computes pointers; nothing below writes through them.
    model_tensors(&w, (float *)params, cfg);
    RunState s;
    // the last generated id is never fed back, so n_prompt + max_new - 1 positions
    if (malloc_run_state(&s, cfg, n_prompt + max_new - 1, err) != 0) return -1;
    int *out = malloc((size_t)max_new * sizeof *out);
    if (!out) {
        free_run_state(&s);
        return bs_fail(err, "out_of_memory", "", "cannot allocate %d output ids", max_new);
    }

    unsigned long long rng = o.seed;
    int n = 0;
    int token = prompt_ids[0];
    for (int pos = 0;; pos++) {
        int in_prompt = pos < n_prompt - 1;
        forward(&s, &w, cfg, token, pos, !in_prompt);
        if (in_prompt) {
            token = prompt_ids[pos + 1];
            continue;
        }
        int next = sample(&s, cfg->vocab_size, o.temperature, o.top_p, &rng);
        // run.c: the BOS delimits sequences
        if (next == bos_id || (o.eos_id > 0 && next == o.eos_id)) break;
        out[n++] = next;
        if (o.on_token && o.on_token(o.user, next) != 0) break;
        if (n == max_new) break;
        token = next;
    }
    free_run_state(&s);
    *out_ids = out;
    *n_out = n;
    return 0;
}
