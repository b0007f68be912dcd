// test_generate.c — KV-cache generation: greedy ids equal llama2.c run.c's on
// aidreams260K; on stories260K (grouped-query attention) every greedy id is the
// argmax of an independent, cache-free double-precision forward; sampling is
// seeded and deterministic; stop ids, callbacks, limits and bad input.
#include <math.h>
#include <string.h>

#include "ckpt.h"
#include "generate.h"
#include "test_util.h"
#include "tok.h"

#define AIDREAMS "../shared/models/aidreams260K.bin"
#define AIDREAMS_TOK "../shared/models/aidreams260K-tok512.bin"
#define STORIES "../shared/models/stories260K.bin"

// llama2.c run.c on aidreams260K.bin -t 0 (shared/README.md)
static const int RUNC_IDS[15] = {319, 459, 355, 260, 275, 429, 339, 315,
                                 374, 327, 446, 262, 421, 392, 275};

// ---------------------------------------------------------------------------
// Reference: the whole sequence at once, no cache, double accumulation,
// RoPE angles from the textbook formula. logits (N, V).

static void ref_rmsnorm(double *o, const double *x, const float *w, int n, double eps) {
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += x[i] * x[i];
    double r = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++)
        o[i] = w[i] * x[i] * r;
}

static void ref_matvec(double *y, const float *W, const double *x, int out, int in) {
    for (int i = 0; i < out; i++) {
        double s = 0;
        for (int j = 0; j < in; j++)
            s += (double)W[(size_t)i * in + j] * x[j];
        y[i] = s;
    }
}

static void ref_rope(double *v, int n_heads, int hs, int pos, double theta) {
    for (int h = 0; h < n_heads; h++) {
        for (int i = 0; i < hs / 2; i++) {
            double ang = pos * pow(theta, -2.0 * i / hs);
            double *p = v + h * hs + 2 * i;
            double a = p[0], b = p[1];
            p[0] = a * cos(ang) - b * sin(ang);
            p[1] = a * sin(ang) + b * cos(ang);
        }
    }
}

static double *ref_forward(const ModelConfig *c, const float *params, const int *tok, int N) {
    ModelTensors w;
    model_tensors(&w, (float *)params, c);
    int D = c->dim, Hd = c->hidden_dim, NH = c->n_heads, NKV = c->n_kv_heads;
    int HS = D / NH, KVD = NKV * HS, V = c->vocab_size;
    double *x = calloc((size_t)N * D, sizeof(double));
    double *q = calloc((size_t)N * D, sizeof(double));
    double *k = calloc((size_t)N * KVD, sizeof(double));
    double *v = calloc((size_t)N * KVD, sizeof(double));
    double *xb = calloc(D, sizeof(double)), *o = calloc(D, sizeof(double));
    double *y = calloc(D, sizeof(double)), *att = calloc(N, sizeof(double));
    double *h1 = calloc(Hd, sizeof(double)), *h3 = calloc(Hd, sizeof(double));
    double *logits = calloc((size_t)N * V, sizeof(double));
    for (int t = 0; t < N; t++)
        for (int i = 0; i < D; i++)
            x[t * D + i] = w.tok_emb[(size_t)tok[t] * D + i];
    for (int l = 0; l < c->n_layers; l++) {
        for (int t = 0; t < N; t++) {
            ref_rmsnorm(xb, x + t * D, w.rms_att + l * D, D, c->norm_eps);
            ref_matvec(q + t * D, w.wq + (size_t)l * D * D, xb, D, D);
            ref_matvec(k + t * KVD, w.wk + (size_t)l * KVD * D, xb, KVD, D);
            ref_matvec(v + t * KVD, w.wv + (size_t)l * KVD * D, xb, KVD, D);
            ref_rope(q + t * D, NH, HS, t, c->rope_theta);
            ref_rope(k + t * KVD, NKV, HS, t, c->rope_theta);
        }
        for (int t = 0; t < N; t++) {
            for (int h = 0; h < NH; h++) {
                int g = h / (NH / NKV); // the kv head this query head shares
                double mx = -INFINITY, sum = 0;
                for (int s = 0; s <= t; s++) {
                    double d = 0;
                    for (int i = 0; i < HS; i++)
                        d += q[t * D + h * HS + i] * k[s * KVD + g * HS + i];
                    att[s] = d / sqrt((double)HS);
                    if (att[s] > mx) mx = att[s];
                }
                for (int s = 0; s <= t; s++)
                    sum += att[s] = exp(att[s] - mx);
                for (int i = 0; i < HS; i++) {
                    double a = 0;
                    for (int s = 0; s <= t; s++)
                        a += att[s] / sum * v[s * KVD + g * HS + i];
                    o[h * HS + i] = a;
                }
            }
            ref_matvec(y, w.wo + (size_t)l * D * D, o, D, D);
            for (int i = 0; i < D; i++)
                x[t * D + i] += y[i];
            ref_rmsnorm(xb, x + t * D, w.rms_ffn + l * D, D, c->norm_eps);
            ref_matvec(h1, w.w1 + (size_t)l * Hd * D, xb, Hd, D);
            ref_matvec(h3, w.w3 + (size_t)l * Hd * D, xb, Hd, D);
            for (int i = 0; i < Hd; i++)
                h1[i] = h1[i] / (1 + exp(-h1[i])) * h3[i];
            ref_matvec(y, w.w2 + (size_t)l * D * Hd, h1, D, Hd);
            for (int i = 0; i < D; i++)
                x[t * D + i] += y[i];
        }
    }
    for (int t = 0; t < N; t++) {
        ref_rmsnorm(xb, x + t * D, w.rms_final, D, c->norm_eps);
        ref_matvec(logits + (size_t)t * V, w.wcls, xb, V, D);
    }
    free(x), free(q), free(k), free(v), free(xb), free(o), free(y), free(att), free(h1), free(h3);
    return logits;
}

// Every generated id must be the reference argmax, unless the reference's top
// two are closer than float rounding can be trusted to order.
static void check_greedy_against_reference(const ModelConfig *c, const float *params,
                                           const int *prompt, int n_prompt, const int *gen,
                                           int n_gen) {
    int N = n_prompt + n_gen - 1; // the last generated id is never an input
    int *seq = malloc((size_t)(n_prompt + n_gen) * sizeof(int));
    memcpy(seq, prompt, (size_t)n_prompt * sizeof(int));
    memcpy(seq + n_prompt, gen, (size_t)n_gen * sizeof(int));
    double *logits = ref_forward(c, params, seq, N);
    int checked = 0;
    for (int i = 0; i < n_gen; i++) {
        const double *lg = logits + (size_t)(n_prompt - 1 + i) * c->vocab_size;
        int best = 0;
        for (int j = 1; j < c->vocab_size; j++)
            if (lg[j] > lg[best]) best = j;
        double second = -INFINITY;
        for (int j = 0; j < c->vocab_size; j++)
            if (j != best && lg[j] > second) second = lg[j];
        if (lg[best] - second < 1e-4) continue;
        checked++;
        CHECK_MSG(gen[i] == best, "step %d: generated %d, reference argmax %d", i, gen[i], best);
    }
    CHECK_MSG(checked >= n_gen - 2, "only %d of %d steps were unambiguous", checked, n_gen);
    free(logits);
    free(seq);
}

// The random stream run.c documents: xorshift64*, 24-bit floats in [0, 1).
static float xorshift_f32(unsigned long long *st) {
    *st ^= *st >> 12;
    *st ^= *st << 25;
    *st ^= *st >> 27;
    unsigned int u = (unsigned int)((*st * 0x2545F4914F6CDD1Dull) >> 32);
    return (u >> 8) / 16777216.0f;
}

typedef struct {
    double p;
    int id;
} PI;

static int by_prob_desc(const void *a, const void *b) {
    double x = ((const PI *)a)->p, y = ((const PI *)b)->p;
    return (x < y) - (x > y);
}

// Every sampled id must be the one run.c's sampler picks from the reference
// distribution with the same coin (one coin per step): the nucleus is the
// most likely ids until their mass exceeds top_p, the coin scaled by that
// mass. Coins within 1e-5 of a bucket edge are skipped.
static void check_sampling_against_reference(const ModelConfig *c, const float *params,
                                             const int *prompt, int n_prompt, const int *gen,
                                             int n_gen, double temperature, double top_p,
                                             unsigned long long seed) {
    int N = n_prompt + n_gen - 1, V = c->vocab_size;
    int *seq = malloc((size_t)(n_prompt + n_gen) * sizeof(int));
    memcpy(seq, prompt, (size_t)n_prompt * sizeof(int));
    memcpy(seq + n_prompt, gen, (size_t)n_gen * sizeof(int));
    double *logits = ref_forward(c, params, seq, N);
    PI *pi = malloc((size_t)V * sizeof(PI));
    unsigned long long st = seed;
    int checked = 0;
    for (int i = 0; i < n_gen; i++) {
        const double *lg = logits + (size_t)(n_prompt - 1 + i) * V;
        double mx = -INFINITY, sum = 0;
        for (int j = 0; j < V; j++)
            mx = fmax(mx, lg[j] / temperature);
        for (int j = 0; j < V; j++)
            sum += pi[j].p = exp(lg[j] / temperature - mx);
        for (int j = 0; j < V; j++) {
            pi[j].p /= sum;
            pi[j].id = j;
        }
        int n_keep = V;
        double mass = 1.0;
        if (top_p > 0 && top_p < 1) {
            qsort(pi, (size_t)V, sizeof(PI), by_prob_desc);
            mass = 0;
            for (int j = 0; j < V; j++) {
                mass += pi[j].p;
                if (mass > top_p) {
                    n_keep = j + 1;
                    break;
                }
            }
        }
        double r = xorshift_f32(&st) * mass, cdf = 0;
        int pick = pi[n_keep - 1].id, near_edge = 0;
        for (int j = 0; j < n_keep; j++) {
            cdf += pi[j].p;
            if (fabs(r - cdf) < 1e-5) near_edge = 1;
            if (r < cdf) {
                pick = pi[j].id;
                break;
            }
        }
        if (near_edge) continue;
        checked++;
        CHECK_MSG(gen[i] == pick, "step %d: sampled %d, reference %d", i, gen[i], pick);
    }
    CHECK_MSG(checked >= n_gen - 2, "only %d of %d steps were unambiguous", checked, n_gen);
    free(pi);
    free(logits);
    free(seq);
}

// ---------------------------------------------------------------------------

typedef struct {
    int seen[64];
    int n;
    int stop_after;
} Collector;

static int collect(void *user, int id) {
    Collector *c = user;
    if (c->n < 64) c->seen[c->n] = id;
    c->n++;
    return c->n == c->stop_after;
}

static void test_aidreams(void) {
    ModelConfig c;
    float *params = NULL;
    BsError err = {0};
    if (ckpt_read_llama2c(AIDREAMS, &c, &params, &err) != 0) {
        CHECK_MSG(0, "read %s: %s", AIDREAMS, err.message);
        return;
    }
    CHECK_INT_EQ(c.vocab_size, 512);
    CHECK_INT_EQ(c.shared_classifier, 1);

    int bos = 1;
    GenerateOptions opt = {.max_new_tokens = 60, .temperature = 0.0f};
    int *ids = NULL, n = 0;
    CHECK_MSG(generate(&c, params, &bos, 1, &opt, &ids, &n, &err) == 0, "%s", err.message);
    CHECK_INT_EQ(n, 60);
    for (int i = 0; i < 15 && i < n; i++)
        CHECK_MSG(ids[i] == RUNC_IDS[i], "id %d: %d, run.c %d", i, ids[i], RUNC_IDS[i]);
    check_greedy_against_reference(&c, params, &bos, 1, ids, n);

    Tokenizer *tok = NULL;
    CHECK_MSG(tok_load_llama2c(&tok, AIDREAMS_TOK, c.vocab_size, &err) == 0, "%s", err.message);
    if (tok && n > 0) {
        int *seq = malloc((size_t)(n + 1) * sizeof(int));
        seq[0] = 1;
        memcpy(seq + 1, ids, (size_t)n * sizeof(int));
        char *text = tok_decode(tok, seq, n + 1, &err);
        // run.c prints the opening quote too (shared/README.md)
        const char *want = "\"Echoes of vectors unfold, a gentle hum of";
        CHECK_MSG(text && strncmp(text, want, strlen(want)) == 0, "decoded \"%s\"",
                  text ? text : err.message);
        free(text);
        free(seq);
    }

    // A prompt that is run.c's own first ids continues exactly as run.c.
    int prompt[4] = {1, RUNC_IDS[0], RUNC_IDS[1], RUNC_IDS[2]};
    int *cont = NULL, nc = 0;
    opt.max_new_tokens = 12;
    CHECK(generate(&c, params, prompt, 4, &opt, &cont, &nc, &err) == 0);
    CHECK_INT_EQ(nc, 12);
    for (int i = 0; i < nc; i++)
        CHECK_INT_EQ(cont[i], RUNC_IDS[3 + i]);
    free(cont);

    // The prompt text encoded by the tokenizer is run.c's first 9 ids and
    // continues as run.c.
    if (tok) {
        int *p = NULL, np = 0;
        CHECK(tok_encode(tok, "\"Echoes of vectors", 1, 0, &p, &np, &err) == 0);
        CHECK_INT_EQ(np, 10);
        for (int i = 1; i < np && i <= 15; i++)
            CHECK_INT_EQ(p[i], RUNC_IDS[i - 1]);
        CHECK(generate(&c, params, p, np, &opt, &cont, &nc, &err) == 0);
        char *text = tok_decode(tok, cont, nc, &err);
        CHECK_MSG(text && strncmp(text, " unfold, a gentle hum of", 24) == 0, "got \"%s\"",
                  text ? text : "");
        free(text);
        free(cont);
        free(p);
    }

    // EOS and BOS stop generation before the stop id; the callback sees ids
    // as they come and can stop early.
    opt = (GenerateOptions){.max_new_tokens = 15, .eos_id = RUNC_IDS[3]};
    CHECK(generate(&c, params, &bos, 1, &opt, &cont, &nc, &err) == 0);
    CHECK_INT_EQ(nc, 3);
    free(cont);
    opt = (GenerateOptions){.max_new_tokens = 15, .bos_id = RUNC_IDS[1], .eos_id = -1};
    CHECK(generate(&c, params, &bos, 1, &opt, &cont, &nc, &err) == 0);
    CHECK_INT_EQ(nc, 1);
    free(cont);
    Collector col = {.stop_after = 5};
    opt = (GenerateOptions){.max_new_tokens = 15, .on_token = collect, .user = &col};
    CHECK(generate(&c, params, &bos, 1, &opt, &cont, &nc, &err) == 0);
    CHECK_INT_EQ(nc, 5);
    CHECK_INT_EQ(col.n, 5);
    for (int i = 0; i < 5 && i < nc; i++) {
        CHECK_INT_EQ(col.seen[i], RUNC_IDS[i]);
        CHECK_INT_EQ(cont[i], RUNC_IDS[i]);
    }
    free(cont);

    // A temperature near 0 puts all top-p mass on the argmax: greedy again.
    opt = (GenerateOptions){.max_new_tokens = 15, .temperature = 1e-3f, .top_p = 0.9f, .seed = 7};
    CHECK(generate(&c, params, &bos, 1, &opt, &cont, &nc, &err) == 0);
    CHECK_INT_EQ(nc, 15);
    for (int i = 0; i < nc; i++)
        CHECK_INT_EQ(cont[i], RUNC_IDS[i]);
    free(cont);

    // Sampling is a function of the seed.
    int *a = NULL, *b = NULL, *d = NULL, na = 0, nb = 0, nd = 0;
    opt = (GenerateOptions){.max_new_tokens = 40, .temperature = 1.0f, .top_p = 0.9f, .seed = 1234};
    CHECK(generate(&c, params, &bos, 1, &opt, &a, &na, &err) == 0);
    CHECK(generate(&c, params, &bos, 1, &opt, &b, &nb, &err) == 0);
    opt.seed = 99;
    opt.top_p = 1.0f; // plain multinomial
    CHECK(generate(&c, params, &bos, 1, &opt, &d, &nd, &err) == 0);
    CHECK(na > 0 && na == nb && memcmp(a, b, (size_t)na * sizeof(int)) == 0);
    check_sampling_against_reference(&c, params, &bos, 1, a, na, 1.0, 0.9, 1234);
    check_sampling_against_reference(&c, params, &bos, 1, d, nd, 1.0, 1.0, 99);
    int differs = nd != na || memcmp(a, d, (size_t)(na < nd ? na : nd) * sizeof(int)) != 0;
    int greedy_like = na >= 15 && memcmp(a, RUNC_IDS, sizeof RUNC_IDS) == 0;
    CHECK(differs);
    CHECK(!greedy_like);
    for (int i = 0; i < nd; i++)
        CHECK(d[i] >= 0 && d[i] < c.vocab_size && d[i] != 1);
    free(a), free(b), free(d);

    // seq_len caps the total length.
    int *longp = malloc((size_t)c.seq_len * sizeof(int));
    longp[0] = 1;
    for (int i = 1; i < c.seq_len; i++)
        longp[i] = RUNC_IDS[i % 15];
    opt = (GenerateOptions){.max_new_tokens = 50};
    CHECK(generate(&c, params, longp, c.seq_len - 2, &opt, &cont, &nc, &err) == 0);
    CHECK(nc <= 2);
    free(cont);
    CHECK(generate(&c, params, longp, c.seq_len, &opt, &cont, &nc, &err) == 0);
    CHECK_INT_EQ(nc, 0);
    free(cont);
    bs_error_clear(&err);
    int *over = calloc((size_t)c.seq_len + 1, sizeof(int));
    CHECK(generate(&c, params, over, c.seq_len + 1, &opt, &cont, &nc, &err) == -1);
    CHECK(strcmp(err.code, "prompt_too_long") == 0);
    free(over);
    free(longp);

    // bad input
    int bad[2] = {1, 512};
    bs_error_clear(&err);
    CHECK(generate(&c, params, bad, 2, &opt, &cont, &nc, &err) == -1);
    CHECK(strcmp(err.code, "invalid_token") == 0);
    bs_error_clear(&err);
    CHECK(generate(&c, params, bad, 0, &opt, &cont, &nc, &err) == -1);
    CHECK(strcmp(err.code, "invalid_argument") == 0);
    opt.temperature = NAN;
    bs_error_clear(&err);
    CHECK(generate(&c, params, &bos, 1, &opt, &cont, &nc, &err) == -1);
    CHECK(strcmp(err.code, "invalid_hyperparameter") == 0);
    opt = (GenerateOptions){.top_p = 1.5f};
    CHECK(generate(&c, params, &bos, 1, &opt, &cont, &nc, &err) == -1);
    opt = (GenerateOptions){.max_new_tokens = -1};
    CHECK(generate(&c, params, &bos, 1, &opt, &cont, &nc, &err) == -1);

    tok_free(tok);
    free(ids);
    free(params);
}

static void test_stories_gqa(void) {
    ModelConfig c;
    float *params = NULL;
    BsError err = {0};
    if (ckpt_read_llama2c(STORIES, &c, &params, &err) != 0) {
        CHECK_MSG(0, "read %s: %s", STORIES, err.message);
        return;
    }
    CHECK_INT_EQ(c.n_heads, 8);
    CHECK_INT_EQ(c.n_kv_heads, 4);
    int prompt[3] = {1, 400, 300};
    GenerateOptions opt = {.max_new_tokens = 24};
    int *ids = NULL, n = 0;
    CHECK_MSG(generate(&c, params, prompt, 3, &opt, &ids, &n, &err) == 0, "%s", err.message);
    CHECK(n > 4);
    check_greedy_against_reference(&c, params, prompt, 3, ids, n);
    free(ids);

    opt = (GenerateOptions){.max_new_tokens = 24, .temperature = 0.8f, .top_p = 0.95f, .seed = 5};
    int *a = NULL, *b = NULL, na = 0, nb = 0;
    CHECK(generate(&c, params, prompt, 3, &opt, &a, &na, &err) == 0);
    CHECK(generate(&c, params, prompt, 3, &opt, &b, &nb, &err) == 0);
    CHECK(na == nb && (na == 0 || memcmp(a, b, (size_t)na * sizeof(int)) == 0));
    if (na > 0) check_sampling_against_reference(&c, params, prompt, 3, a, na, 0.8, 0.95, 5);
    free(a), free(b);
    free(params);
}

int main(void) {
    test_aidreams();
    test_stories_gqa();
    return test_summary("generate");
}
