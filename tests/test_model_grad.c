// test_model_grad.c — the decoder's numerics against independent references.
//
// Every op (embedding, RMSNorm, matmul, RoPE, GQA causal attention over packed
// sequences, SwiGLU, classifier log-softmax gather) and the whole model (tied
// and untied classifier) are checked two ways against naive double-precision
// reimplementations written here with plain loops:
//   1. forward outputs agree to float rounding;
//   2. the float backward agrees with central differences of the double
//      reference's loss  sum_i c_i * out_i  (random c).
// The whole-model reference runs token by token with a KV cache, the way
// llama2.c's run.c does, so it shares no structure with the packed batch code.
// Then: no leakage across packed sequences (bit-for-bit), accumulation,
// frozen models, batch validation, seeded init, the chunked classifier path,
// and the shared checkpoints: aidreams260K reproduces run.c's greedy ids and
// stories260K (GQA 8/4, seq_len 512) matches the reference over 512 tokens.
//
// Tolerances. The finite differences run on the double reference with
// h = 1e-5 * max(1, |x|): truncation ~h^2 ~ 1e-10 and rounding
// ~1e-16 / 1e-5 ~ 1e-11, i.e. exact for our purposes. The analytic gradients
// are float: each element carries relative rounding of about 1e-7 times the
// length of the reductions feeding it (tens to hundreds of terms here), so
// ~1e-5 of the gradient's scale. We accept |g - fd| <= 2e-3 |fd| +
// 2e-4 * scale, where scale is the largest |fd| seen in that tensor: at least
// 10x above float rounding, while a wrong or missing term is an O(1) error.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt.h"
#include "model.h"
#include "ops.h"
#include "test_util.h"

// ---------------------------------------------------------------------------
// helpers

static uint64_t rng_state = 0x853c49e6748fea9bull;

static uint32_t rng_u32(void) {
    return test_rng_u32(&rng_state);
}

static double rng_unif(void) { // [0, 1)
    return rng_u32() / 4294967296.0;
}

static int rng_int(int n) {
    return (int)(rng_unif() * n);
}

static double rng_normal(void) {
    double u1 = (rng_u32() + 1.0) / 4294967297.0, u2 = rng_unif();
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

static float *randn_f(size_t n, double std) {
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(std * rng_normal());
    return x;
}

static double *to_d(const float *x, size_t n) {
    double *d = malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++)
        d[i] = x[i];
    return d;
}

// Checks float vs double outputs elementwise: |a - b| <= atol + rtol |b|.
static void check_out(const char *what, const float *a, const double *b, size_t n, double rtol,
                      double atol) {
    double worst = 0;
    size_t wi = 0;
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs(a[i] - b[i]);
        if (!(isfinite(a[i]) && e <= atol + rtol * fabs(b[i]))) bad++;
        if (!(e <= worst)) worst = e, wi = i;
    }
    CHECK_MSG(bad == 0, "%s: %d of %zu outputs off; worst [%zu] %.9g vs %.9g", what, bad, n, wi,
              n ? a[wi] : 0.0, n ? b[wi] : 0.0);
}

// Central differences of loss() with respect to x[idx[j]] against grad[idx[j]].
typedef double (*LossFn)(void *ctx);

static void fd_check(const char *what, LossFn loss, void *ctx, double *x, const float *grad,
                     size_t n, int max_checks) {
    int count = (size_t)max_checks >= n ? (int)n : max_checks;
    size_t *idx = malloc((size_t)count * sizeof(size_t));
    double *fd = malloc((size_t)count * sizeof(double));
    double scale = 0;
    for (int j = 0; j < count; j++) {
        idx[j] = (size_t)max_checks >= n ? (size_t)j : (size_t)(rng_unif() * n);
        double x0 = x[idx[j]], h = 1e-5 * fmax(1.0, fabs(x0));
        x[idx[j]] = x0 + h;
        double lp = loss(ctx);
        x[idx[j]] = x0 - h;
        double lm = loss(ctx);
        x[idx[j]] = x0;
        fd[j] = (lp - lm) / (2 * h);
        scale = fmax(scale, fabs(fd[j]));
    }
    int bad = 0;
    double worst = 0;
    int wj = 0;
    for (int j = 0; j < count; j++) {
        double g = grad[idx[j]], e = fabs(g - fd[j]);
        if (!(isfinite(g) && e <= 2e-3 * fabs(fd[j]) + 2e-4 * scale)) bad++;
        if (!(e <= worst)) worst = e, wj = j;
    }
    CHECK_MSG(bad == 0,
              "%s: %d of %d gradients off; worst [%zu] analytic %.9g vs fd %.9g "
              "(scale %.3g)",
              what, bad, count, count ? idx[wj] : 0, count ? grad[idx[wj]] : 0.0,
              count ? fd[wj] : 0.0, scale);
    // A check over all-zero gradients would prove little: the tests are
    // built so every checked tensor has a non-trivial gradient.
    CHECK_MSG(scale > 0, "%s: all finite differences are zero", what);
    free(idx);
    free(fd);
}

static double dot_cd(const double *c, const double *y, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += c[i] * y[i];
    return s;
}

// run.c's RoPE, angle in float exactly as run.c computes it, rotation in double.
static void ref_rope_vec(double *vec, int n, int head_size, int pos, float theta) {
    for (int i = 0; i < n; i += 2) {
        int head_dim = i % head_size;
        float freq = 1.0f / powf(theta, head_dim / (float)head_size);
        float val = pos * freq;
        double fcr = cos((double)val), fci = sin((double)val);
        double v0 = vec[i], v1 = vec[i + 1];
        vec[i] = v0 * fcr - v1 * fci;
        vec[i + 1] = v0 * fci + v1 * fcr;
    }
}

static void ref_rmsnorm_vec(double *o, const double *x, const double *w, int D, double eps) {
    double ss = 0;
    for (int d = 0; d < D; d++)
        ss += x[d] * x[d];
    double r = 1.0 / sqrt(ss / D + eps);
    for (int d = 0; d < D; d++)
        o[d] = w[d] * (x[d] * r);
}

static void ref_matvec(double *o, const double *w, const double *x, int in, int out) {
    for (int i = 0; i < out; i++) {
        double s = 0;
        for (int j = 0; j < in; j++)
            s += w[(size_t)i * in + j] * x[j];
        o[i] = s;
    }
}

// ---------------------------------------------------------------------------
// op: embedding

typedef struct {
    const int *tok;
    double *emb, *c;
    int N, D;
} EmbCtx;

static double emb_loss(void *p) {
    EmbCtx *e = p;
    double s = 0;
    for (int i = 0; i < e->N; i++)
        for (int d = 0; d < e->D; d++)
            s += e->c[i * e->D + d] * e->emb[e->tok[i] * e->D + d];
    return s;
}

static void test_embedding(void) {
    int V = 7, D = 5, N = 9;
    int tok[9] = {3, 0, 6, 3, 3, 1, 6, 2, 0};
    float *emb = randn_f((size_t)V * D, 1.0), *out = malloc(sizeof(float) * N * D);
    embedding_forward(out, tok, emb, N, D);
    for (int i = 0; i < N; i++)
        CHECK(memcmp(out + i * D, emb + tok[i] * D, sizeof(float) * D) == 0);
    float *c = randn_f((size_t)N * D, 1.0), *demb = calloc((size_t)V * D, sizeof(float));
    embedding_backward(demb, c, tok, N, D);
    EmbCtx ctx = {tok, to_d(emb, (size_t)V * D), to_d(c, (size_t)N * D), N, D};
    // Row 4 and 5 are unused: their gradient must stay 0 (fd_check covers it).
    fd_check("embedding d_emb", emb_loss, &ctx, ctx.emb, demb, (size_t)V * D, 1000);
    free(emb), free(out), free(c), free(demb), free(ctx.emb), free(ctx.c);
}

// ---------------------------------------------------------------------------
// op: RMSNorm

typedef struct {
    double *x, *w, *c, *y;
    int N, D;
    double eps;
} RmsCtx;

static double rms_loss(void *p) {
    RmsCtx *r = p;
    for (int i = 0; i < r->N; i++)
        ref_rmsnorm_vec(r->y + i * r->D, r->x + i * r->D, r->w, r->D, r->eps);
    return dot_cd(r->c, r->y, (size_t)r->N * r->D);
}

static void test_rmsnorm(void) {
    int N = 6, D = 10;
    float eps = 1e-5f;
    float *x = randn_f((size_t)N * D, 1.0), *w = randn_f(D, 0.3);
    for (int d = 0; d < D; d++)
        w[d] += 1.0f;
    for (int d = 0; d < D; d++)
        x[2 * D + d] *= 0.01f; // small row: eps matters
    float *y = malloc(sizeof(float) * N * D), *rstd = malloc(sizeof(float) * N);
    rmsnorm_forward(y, rstd, x, w, N, D, eps);
    RmsCtx r = {
        to_d(x, (size_t)N * D), to_d(w, D), NULL, malloc(sizeof(double) * N * D), N, D, eps};
    float *c = randn_f((size_t)N * D, 1.0);
    r.c = to_d(c, (size_t)N * D);
    rms_loss(&r);
    check_out("rmsnorm forward", y, r.y, (size_t)N * D, 1e-5, 1e-6);
    // Backward accumulates: start from known values and subtract them after.
    float *dx = malloc(sizeof(float) * N * D), *dw = malloc(sizeof(float) * D);
    for (int i = 0; i < N * D; i++)
        dx[i] = 0.5f;
    for (int d = 0; d < D; d++)
        dw[d] = -0.25f;
    rmsnorm_backward(dx, dw, c, x, w, rstd, N, D);
    for (int i = 0; i < N * D; i++)
        dx[i] -= 0.5f;
    for (int d = 0; d < D; d++)
        dw[d] += 0.25f;
    fd_check("rmsnorm dx", rms_loss, &r, r.x, dx, (size_t)N * D, 1000);
    fd_check("rmsnorm dw", rms_loss, &r, r.w, dw, D, 1000);
    free(x), free(w), free(y), free(rstd), free(c), free(dx), free(dw);
    free(r.x), free(r.w), free(r.c), free(r.y);
}

// ---------------------------------------------------------------------------
// op: matmul

typedef struct {
    double *x, *w, *c, *y;
    int N, in, out;
} MmCtx;

static double mm_loss(void *p) {
    MmCtx *m = p;
    for (int i = 0; i < m->N; i++)
        ref_matvec(m->y + i * m->out, m->w, m->x + i * m->in, m->in, m->out);
    return dot_cd(m->c, m->y, (size_t)m->N * m->out);
}

static void test_matmul(void) {
    int N = 5, in = 7, out = 6;
    float *x = randn_f((size_t)N * in, 1.0), *w = randn_f((size_t)out * in, 0.5);
    float *y = malloc(sizeof(float) * N * out), *c = randn_f((size_t)N * out, 1.0);
    matmul_forward(y, x, w, N, in, out);
    MmCtx m = {to_d(x, (size_t)N * in),
               to_d(w, (size_t)out * in),
               to_d(c, (size_t)N * out),
               malloc(sizeof(double) * N * out),
               N,
               in,
               out};
    mm_loss(&m);
    check_out("matmul forward", y, m.y, (size_t)N * out, 1e-5, 1e-6);
    float *dx = calloc((size_t)N * in, sizeof(float)), *dw = calloc((size_t)out * in, 4);
    matmul_backward(dx, dw, c, x, w, N, in, out);
    fd_check("matmul dx", mm_loss, &m, m.x, dx, (size_t)N * in, 1000);
    fd_check("matmul dw", mm_loss, &m, m.w, dw, (size_t)out * in, 1000);
    free(x), free(w), free(y), free(c), free(dx), free(dw);
    free(m.x), free(m.w), free(m.c), free(m.y);
}

// ---------------------------------------------------------------------------
// op: RoPE

typedef struct {
    double *x, *c, *y;
    const int *pos;
    int N, NH, HS;
    float theta;
} RopeCtx;

static double rope_loss(void *p) {
    RopeCtx *r = p;
    int C = r->NH * r->HS;
    memcpy(r->y, r->x, sizeof(double) * r->N * C);
    for (int i = 0; i < r->N; i++)
        ref_rope_vec(r->y + i * C, C, r->HS, r->pos[i], r->theta);
    return dot_cd(r->c, r->y, (size_t)r->N * C);
}

static void test_rope(void) {
    int offsets[4] = {0, 5, 8, 15}, n_seqs = 3, N = 15, NH = 3, HS = 6, C = NH * HS, S = 8;
    float thetas[2] = {10000.0f, 500000.0f};
    for (int t = 0; t < 2; t++) {
        float theta = thetas[t];
        float *cs = malloc(sizeof(float) * S * HS / 2), *sn = malloc(sizeof(float) * S * HS / 2);
        ops_rope_tables(cs, sn, S, HS, theta);
        // The tables are run.c's float expressions (needed for greedy parity).
        for (int pos = 0; pos < S; pos++) {
            for (int i = 0; i < HS; i += 2) {
                float freq = 1.0f / powf(theta, i / (float)HS);
                float val = pos * freq;
                CHECK(cs[pos * HS / 2 + i / 2] == cosf(val));
                CHECK(sn[pos * HS / 2 + i / 2] == sinf(val));
            }
        }
        int pos[15];
        ops_positions(pos, offsets, n_seqs);
        int want_pos[15] = {0, 1, 2, 3, 4, 0, 1, 2, 0, 1, 2, 3, 4, 5, 6};
        CHECK(memcmp(pos, want_pos, sizeof pos) == 0);
        float *x = randn_f((size_t)N * C, 1.0), *y = malloc(sizeof(float) * N * C);
        memcpy(y, x, sizeof(float) * N * C);
        rope_forward(y, pos, cs, sn, N, NH, HS);
        float *c = randn_f((size_t)N * C, 1.0);
        RopeCtx r = {to_d(x, (size_t)N * C),
                     to_d(c, (size_t)N * C),
                     malloc(sizeof(double) * N * C),
                     pos,
                     N,
                     NH,
                     HS,
                     theta};
        rope_loss(&r);
        check_out("rope forward", y, r.y, (size_t)N * C, 1e-5, 1e-6);
        // Position 0 is the identity.
        CHECK(memcmp(y, x, sizeof(float) * C) == 0 && memcmp(y + 5 * C, x + 5 * C, 4 * C) == 0);
        float *dx = malloc(sizeof(float) * N * C);
        memcpy(dx, c, sizeof(float) * N * C);
        rope_backward(dx, pos, cs, sn, N, NH, HS);
        fd_check("rope dx", rope_loss, &r, r.x, dx, (size_t)N * C, 1000);
        free(cs), free(sn), free(x), free(y), free(c), free(dx), free(r.x), free(r.c), free(r.y);
    }
}

// ---------------------------------------------------------------------------
// op: attention

typedef struct {
    double *q, *k, *v, *c, *y;
    const int *offsets;
    int n_seqs, NH, NKV, HS;
} AttCtx;

static void ref_attention(double *out, const double *q, const double *k, const double *v,
                          const int *offsets, int n_seqs, int NH, int NKV, int HS) {
    int C = NH * HS, KVC = NKV * HS;
    double p[64];
    for (int s = 0; s < n_seqs; s++) {
        for (int t = offsets[s]; t < offsets[s + 1]; t++) {
            for (int h = 0; h < NH; h++) {
                int kh = h / (NH / NKV);
                double mx = -INFINITY, sum = 0;
                for (int u = offsets[s]; u <= t; u++) {
                    double d = 0;
                    for (int i = 0; i < HS; i++)
                        d += q[t * C + h * HS + i] * k[u * KVC + kh * HS + i];
                    p[u - offsets[s]] = d / sqrt((double)HS);
                    mx = fmax(mx, p[u - offsets[s]]);
                }
                for (int u = offsets[s]; u <= t; u++)
                    sum += exp(p[u - offsets[s]] - mx);
                for (int i = 0; i < HS; i++) {
                    double o = 0;
                    for (int u = offsets[s]; u <= t; u++)
                        o += exp(p[u - offsets[s]] - mx) / sum * v[u * KVC + kh * HS + i];
                    out[t * C + h * HS + i] = o;
                }
            }
        }
    }
}

static double att_loss(void *p) {
    AttCtx *a = p;
    ref_attention(a->y, a->q, a->k, a->v, a->offsets, a->n_seqs, a->NH, a->NKV, a->HS);
    return dot_cd(a->c, a->y, (size_t)a->offsets[a->n_seqs] * a->NH * a->HS);
}

static void test_attention(void) {
    int offsets[5] = {0, 5, 6, 13, 16}, n_seqs = 4, N = 16, NH = 4, HS = 4, max_T = 7;
    int nkvs[3] = {2, 1, 4}; // GQA, MQA, plain multi-head
    for (int t = 0; t < 3; t++) {
        int NKV = nkvs[t], C = NH * HS, KVC = NKV * HS;
        char name[64];
        float *q = randn_f((size_t)N * C, 1.5), *k = randn_f((size_t)N * KVC, 1.5);
        float *v = randn_f((size_t)N * KVC, 1.0), *c = randn_f((size_t)N * C, 1.0);
        float *out = malloc(sizeof(float) * N * C), *mx = malloc(sizeof(float) * N * NH);
        float *inv = malloc(sizeof(float) * N * NH);
        float *scr = malloc(sizeof(float) * attention_scratch_floats(max_T));
        attention_forward(out, mx, inv, scr, q, k, v, offsets, n_seqs, NH, NKV, HS);
        AttCtx a = {to_d(q, (size_t)N * C),
                    to_d(k, (size_t)N * KVC),
                    to_d(v, (size_t)N * KVC),
                    to_d(c, (size_t)N * C),
                    malloc(sizeof(double) * N * C),
                    offsets,
                    n_seqs,
                    NH,
                    NKV,
                    HS};
        att_loss(&a);
        snprintf(name, sizeof name, "attention forward NKV=%d", NKV);
        check_out(name, out, a.y, (size_t)N * C, 1e-5, 1e-6);
        float *dq = calloc((size_t)N * C, 4), *dk = calloc((size_t)N * KVC, 4);
        float *dv = calloc((size_t)N * KVC, 4);
        attention_backward(dq, dk, dv, scr, c, q, k, v, mx, inv, offsets, n_seqs, NH, NKV, HS);
        snprintf(name, sizeof name, "attention dq NKV=%d", NKV);
        fd_check(name, att_loss, &a, a.q, dq, (size_t)N * C, 1000);
        snprintf(name, sizeof name, "attention dk NKV=%d", NKV);
        fd_check(name, att_loss, &a, a.k, dk, (size_t)N * KVC, 1000);
        snprintf(name, sizeof name, "attention dv NKV=%d", NKV);
        fd_check(name, att_loss, &a, a.v, dv, (size_t)N * KVC, 1000);

        // Nothing leaks across sequences: change everything of sequence 2
        // (tokens 6..12); the outputs of sequences 0, 1 and 3 stay bit-equal.
        float *out2 = malloc(sizeof(float) * N * C);
        for (int i = 6 * C; i < 13 * C; i++)
            q[i] += 1.0f;
        for (int i = 6 * KVC; i < 13 * KVC; i++)
            k[i] -= 0.5f, v[i] *= 3.0f;
        attention_forward(out2, mx, inv, scr, q, k, v, offsets, n_seqs, NH, NKV, HS);
        CHECK(memcmp(out, out2, sizeof(float) * 6 * C) == 0);
        CHECK(memcmp(out + 13 * C, out2 + 13 * C, sizeof(float) * 3 * C) == 0);
        CHECK(memcmp(out + 6 * C, out2 + 6 * C, sizeof(float) * 7 * C) != 0);
        free(q), free(k), free(v), free(c), free(out), free(out2), free(mx), free(inv), free(scr),
            free(dq), free(dk), free(dv);
        free(a.q), free(a.k), free(a.v), free(a.c), free(a.y);
    }
}

// ---------------------------------------------------------------------------
// op: SwiGLU

typedef struct {
    double *h1, *h3, *c;
    size_t n;
} SwiCtx;

static double swi_loss(void *p) {
    SwiCtx *s = p;
    double l = 0;
    for (size_t i = 0; i < s->n; i++)
        l += s->c[i] * s->h1[i] / (1.0 + exp(-s->h1[i])) * s->h3[i];
    return l;
}

static void test_swiglu(void) {
    size_t n = 40;
    float *h1 = randn_f(n, 3.0), *h3 = randn_f(n, 1.0), *c = randn_f(n, 1.0);
    float *out = malloc(sizeof(float) * n);
    swiglu_forward(out, h1, h3, n);
    SwiCtx s = {to_d(h1, n), to_d(h3, n), to_d(c, n), n};
    double *ref = malloc(sizeof(double) * n);
    for (size_t i = 0; i < n; i++)
        ref[i] = s.h1[i] / (1.0 + exp(-s.h1[i])) * s.h3[i];
    check_out("swiglu forward", out, ref, n, 1e-5, 1e-6);
    float *d1 = calloc(n, 4), *d3 = calloc(n, 4);
    swiglu_backward(d1, d3, c, h1, h3, n);
    fd_check("swiglu dh1", swi_loss, &s, s.h1, d1, n, 1000);
    fd_check("swiglu dh3", swi_loss, &s, s.h3, d3, n, 1000);
    free(h1), free(h3), free(c), free(out), free(ref), free(d1), free(d3);
    free(s.h1), free(s.h3), free(s.c);
}

// ---------------------------------------------------------------------------
// op: classifier log-softmax gather

typedef struct {
    double *x, *w, *c, *lp;
    const int *tg;
    int M, D, V;
} ClsCtx;

static void ref_logp(double *lp, const double *x, const double *w, const int *tg, int M, int D,
                     int V) {
    double *logits = malloc(sizeof(double) * V);
    for (int i = 0; i < M; i++) {
        ref_matvec(logits, w, x + (size_t)i * D, D, V);
        double mx = -INFINITY, s = 0;
        for (int j = 0; j < V; j++)
            mx = fmax(mx, logits[j]);
        for (int j = 0; j < V; j++)
            s += exp(logits[j] - mx);
        lp[i] = logits[tg[i]] - mx - log(s);
    }
    free(logits);
}

static double cls_loss(void *p) {
    ClsCtx *c = p;
    ref_logp(c->lp, c->x, c->w, c->tg, c->M, c->D, c->V);
    return dot_cd(c->c, c->lp, (size_t)c->M);
}

static void test_classifier(void) {
    int M = 6, D = 5, V = 11;
    int tg[6] = {3, 0, 10, 3, 7, 1};
    float *x = randn_f((size_t)M * D, 1.0), *w = randn_f((size_t)V * D, 1.0);
    float *c = randn_f(M, 1.0), *lp = malloc(sizeof(float) * M);
    float *probs = malloc(sizeof(float) * M * V);
    logsoftmax_gather_forward(lp, probs, x, w, tg, M, D, V);
    ClsCtx cc = {to_d(x, (size_t)M * D),
                 to_d(w, (size_t)V * D),
                 to_d(c, M),
                 malloc(sizeof(double) * M),
                 tg,
                 M,
                 D,
                 V};
    cls_loss(&cc);
    check_out("logsoftmax gather forward", lp, cc.lp, M, 1e-5, 1e-5);
    float *dx = calloc((size_t)M * D, 4), *dw = calloc((size_t)V * D, 4);
    logsoftmax_gather_backward(dx, dw, probs, c, x, w, tg, M, D, V);
    fd_check("classifier dx", cls_loss, &cc, cc.x, dx, (size_t)M * D, 1000);
    fd_check("classifier dw", cls_loss, &cc, cc.w, dw, (size_t)V * D, 1000);

    // Huge logits (~1e3) would overflow a naive expf: stays finite and exact.
    for (int i = 0; i < D; i++)
        x[i] *= 300.0f, cc.x[i] = x[i];
    logsoftmax_gather_forward(lp, probs, x, w, tg, M, D, V);
    ref_logp(cc.lp, cc.x, cc.w, tg, M, D, V);
    check_out("logsoftmax gather large logits", lp, cc.lp, M, 1e-5, 1e-4);
    free(x), free(w), free(c), free(lp), free(probs), free(dx), free(dw);
    free(cc.x), free(cc.w), free(cc.c), free(cc.lp);
}

// ---------------------------------------------------------------------------
// whole model: naive token-by-token reference (run.c style), in double

typedef struct {
    const ModelConfig *c;
    const ModelBatch *b;
    double *p;       // flat double parameters (same layout as the model's)
    const float *dl; // loss coefficients per position (only target rows count)
    double *logp;    // (N)
} RefModel;

static void ref_model_forward(const ModelConfig *c, const double *P, const ModelBatch *b,
                              double *logp) {
    int D = c->dim, H = c->hidden_dim, L = c->n_layers, NH = c->n_heads, NKV = c->n_kv_heads;
    int V = c->vocab_size, HS = D / NH, KVD = NKV * HS;
    size_t sD = D, sL = L, sV = V, sH = H, sKVD = KVD;
    // Layout written out independently of model_tensors().
    const double *emb = P, *rms_att = emb + sV * sD, *wq = rms_att + sL * sD;
    const double *wk = wq + sL * sD * sD, *wv = wk + sL * sKVD * sD, *wo = wv + sL * sKVD * sD;
    const double *rms_ffn = wo + sL * sD * sD, *w1 = rms_ffn + sL * sD, *w2 = w1 + sL * sH * sD;
    const double *w3 = w2 + sL * sD * sH, *rms_f = w3 + sL * sH * sD;
    const double *wcls = c->shared_classifier ? emb : rms_f + sD;
    int maxT = 0;
    for (int s = 0; s < b->n_seqs; s++)
        if (b->offsets[s + 1] - b->offsets[s] > maxT) maxT = b->offsets[s + 1] - b->offsets[s];
    double *kc = malloc(sizeof(double) * sL * maxT * KVD),
           *vc = malloc(sizeof(double) * sL * maxT * KVD);
    double *x = malloc(sizeof(double) * D), *xb = malloc(sizeof(double) * D);
    double *q = malloc(sizeof(double) * D), *ao = malloc(sizeof(double) * D);
    double *tmp = malloc(sizeof(double) * D), *h1 = malloc(sizeof(double) * H);
    double *h3 = malloc(sizeof(double) * H), *att = malloc(sizeof(double) * (maxT + 1));
    double *logits = malloc(sizeof(double) * V);
    for (int s = 0; s < b->n_seqs; s++) {
        for (int t = 0; t < b->offsets[s + 1] - b->offsets[s]; t++) {
            int i = b->offsets[s] + t;
            for (int d = 0; d < D; d++)
                x[d] = emb[(size_t)b->tokens[i] * D + d];
            for (int l = 0; l < L; l++) {
                double *kr = kc + ((size_t)l * maxT + t) * KVD,
                       *vr = vc + ((size_t)l * maxT + t) * KVD;
                ref_rmsnorm_vec(xb, x, rms_att + (size_t)l * D, D, c->norm_eps);
                ref_matvec(q, wq + (size_t)l * D * D, xb, D, D);
                ref_matvec(kr, wk + (size_t)l * KVD * D, xb, D, KVD);
                ref_matvec(vr, wv + (size_t)l * KVD * D, xb, D, KVD);
                ref_rope_vec(q, D, HS, t, c->rope_theta);
                ref_rope_vec(kr, KVD, HS, t, c->rope_theta);
                for (int h = 0; h < NH; h++) {
                    int kh = h / (NH / NKV);
                    double mx = -INFINITY, sum = 0;
                    for (int u = 0; u <= t; u++) {
                        double dd = 0;
                        for (int j = 0; j < HS; j++)
                            dd += q[h * HS + j] * kc[((size_t)l * maxT + u) * KVD + kh * HS + j];
                        att[u] = dd / sqrt((double)HS);
                        mx = fmax(mx, att[u]);
                    }
                    for (int u = 0; u <= t; u++)
                        sum += (att[u] = exp(att[u] - mx));
                    for (int j = 0; j < HS; j++) {
                        double o = 0;
                        for (int u = 0; u <= t; u++)
                            o += att[u] / sum * vc[((size_t)l * maxT + u) * KVD + kh * HS + j];
                        ao[h * HS + j] = o;
                    }
                }
                ref_matvec(tmp, wo + (size_t)l * D * D, ao, D, D);
                for (int d = 0; d < D; d++)
                    x[d] += tmp[d];
                ref_rmsnorm_vec(xb, x, rms_ffn + (size_t)l * D, D, c->norm_eps);
                ref_matvec(h1, w1 + (size_t)l * H * D, xb, D, H);
                ref_matvec(h3, w3 + (size_t)l * H * D, xb, D, H);
                for (int j = 0; j < H; j++)
                    h1[j] = h1[j] / (1.0 + exp(-h1[j])) * h3[j];
                ref_matvec(tmp, w2 + (size_t)l * D * H, h1, H, D);
                for (int d = 0; d < D; d++)
                    x[d] += tmp[d];
            }
            logp[i] = 0;
            if (b->targets[i] < 0) continue;
            ref_rmsnorm_vec(xb, x, rms_f, D, c->norm_eps);
            ref_matvec(logits, wcls, xb, D, V);
            double mx = -INFINITY, sum = 0;
            for (int j = 0; j < V; j++)
                mx = fmax(mx, logits[j]);
            for (int j = 0; j < V; j++)
                sum += exp(logits[j] - mx);
            logp[i] = logits[b->targets[i]] - mx - log(sum);
        }
    }
    free(kc), free(vc), free(x), free(xb), free(q), free(ao), free(tmp), free(h1), free(h3),
        free(att), free(logits);
}

static double ref_model_loss(void *p) {
    RefModel *r = p;
    ref_model_forward(r->c, r->p, r->b, r->logp);
    int N = r->b->offsets[r->b->n_seqs];
    double s = 0;
    for (int i = 0; i < N; i++)
        if (r->b->targets[i] >= 0) s += r->dl[i] * r->logp[i];
    return s;
}

// Random weights with more spread than the 0.02 init, so attention is
// peaked, SwiGLU leaves its linear regime and second-order terms matter.
static void fill_test_params(Model *m) {
    const ModelConfig *c = model_config(m);
    ParamRange r[12];
    int n = model_param_ranges(c, r, 12);
    float *p = model_params(m);
    for (int i = 0; i < n; i++) {
        for (size_t j = 0; j < r[i].count; j++) {
            p[r[i].offset + j] =
                r[i].decay ? (float)(0.3 * rng_normal()) : (float)(1.0 + 0.2 * rng_normal());
        }
    }
}

static void test_model_tiny(int shared) {
    ModelConfig c = {.dim = 16,
                     .hidden_dim = 24,
                     .n_layers = 2,
                     .n_heads = 4,
                     .n_kv_heads = 2,
                     .vocab_size = 37,
                     .seq_len = 12,
                     .shared_classifier = shared,
                     .norm_eps = 1e-5f,
                     .rope_theta = 10000.0f};
    BsError err;
    Model *m;
    CHECK(model_create(&m, &c, 1, &err) == 0);
    fill_test_params(m);
    size_t P = model_param_count(&c);
    // Three packed sequences of different lengths; targets are the next
    // token, -1 at each sequence end and on two "prompt" positions.
    int offsets[4] = {0, 7, 11, 20}, n_seqs = 3, N = 20;
    int tokens[20], targets[20];
    for (int i = 0; i < N; i++)
        tokens[i] = rng_int(c.vocab_size);
    for (int s = 0; s < n_seqs; s++)
        for (int i = offsets[s]; i < offsets[s + 1]; i++)
            targets[i] = i + 1 < offsets[s + 1] ? tokens[i + 1] : -1;
    targets[0] = -1, targets[12] = -1;
    ModelBatch b = {n_seqs, offsets, tokens, targets};
    float logp[20], dl[20];
    CHECK(model_forward(m, &b, logp, 1, &err) == 0);

    RefModel r = {&c, &b, to_d(model_params(m), P), dl, malloc(sizeof(double) * N)};
    ref_model_forward(&c, r.p, &b, r.logp);
    char name[96];
    snprintf(name, sizeof name, "model logp vs naive reference (shared=%d)", shared);
    check_out(name, logp, r.logp, N, 0, 1e-5);
    for (int i = 0; i < N; i++)
        if (targets[i] < 0) CHECK(logp[i] == 0.0f);

    // Loss = sum c_i logp_i; positions without a target get a large
    // coefficient that the backward must ignore.
    for (int i = 0; i < N; i++)
        dl[i] = targets[i] >= 0 ? (float)rng_normal() : 1000.0f;
    model_zero_grads(m);
    CHECK(model_backward(m, &b, dl, &err) == 0);
    ParamRange pr[12];
    int nr = model_param_ranges(&c, pr, 12);
    CHECK_INT_EQ(nr, shared ? 11 : 12);
    for (int i = 0; i < nr; i++) {
        snprintf(name, sizeof name, "model d%s (shared=%d)", pr[i].name, shared);
        // 12 random entries of each tensor (all of the small norm vectors).
        fd_check(name, ref_model_loss, &r, r.p + pr[i].offset, model_grads(m) + pr[i].offset,
                 pr[i].count, pr[i].decay ? 12 : (int)pr[i].count);
    }

    // The backward consumed the activations: a second one needs a forward.
    CHECK(model_backward(m, &b, dl, &err) == -1 && strcmp(err.code, "invalid_argument") == 0);
    // Gradients accumulate: a second forward and backward doubles them.
    float *g1 = malloc(sizeof(float) * P);
    memcpy(g1, model_grads(m), sizeof(float) * P);
    float lp1[20];
    CHECK(model_forward(m, &b, lp1, 1, &err) == 0);
    CHECK(memcmp(lp1, logp, sizeof logp) == 0);
    CHECK(model_backward(m, &b, dl, &err) == 0);
    int bad = 0;
    for (size_t i = 0; i < P; i++)
        bad += fabsf(model_grads(m)[i] - 2 * g1[i]) > 1e-6f * (1 + fabsf(g1[i]));
    CHECK_MSG(bad == 0, "%d gradients did not double", bad);

    // Keeping activations or not, and a frozen copy, give identical logp.
    float lp2[20], lp3[20];
    CHECK(model_forward(m, &b, lp2, 0, &err) == 0);
    CHECK(memcmp(logp, lp2, sizeof logp) == 0);
    CHECK(model_backward(m, &b, dl, &err) == -1); // no activations kept
    Model *f;
    CHECK(model_create(&f, &c, 0, &err) == 0);
    memcpy(model_params(f), model_params(m), sizeof(float) * P);
    CHECK(model_grads(f) == NULL);
    CHECK(model_forward(f, &b, lp3, 0, &err) == 0);
    CHECK(memcmp(logp, lp3, sizeof logp) == 0);
    CHECK(model_forward(f, &b, lp3, 1, &err) == -1);
    CHECK(model_backward(f, &b, dl, &err) == -1);

    // Changing a token of sequence 1 leaves sequences 0 and 2 bit-identical.
    tokens[8] = (tokens[8] + 5) % c.vocab_size;
    targets[7] = tokens[8];
    CHECK(model_forward(m, &b, lp2, 1, &err) == 0);
    CHECK(memcmp(lp2, logp, sizeof(float) * 7) == 0);
    CHECK(memcmp(lp2 + 11, logp + 11, sizeof(float) * 9) == 0);
    CHECK(memcmp(lp2 + 7, logp + 7, sizeof(float) * 4) != 0);
    // A packed sequence scores like the same sequence alone (positions
    // restart at 0).
    int off1[2] = {0, 9};
    ModelBatch b1 = {1, off1, tokens + 11, targets + 11};
    CHECK(model_forward(m, &b1, lp3, 0, &err) == 0);
    for (int i = 0; i < 9; i++)
        CHECK_CLOSE(lp3[i], lp2[11 + i], 0, 2e-6);

    // A bigger batch after a smaller one reallocates and still matches.
    int off2[3] = {0, 12, 24}, tok2[24], tg2[24];
    for (int i = 0; i < 24; i++)
        tok2[i] = rng_int(c.vocab_size), tg2[i] = rng_int(c.vocab_size);
    ModelBatch b2 = {2, off2, tok2, tg2};
    float lp4[24];
    double rl[24];
    CHECK(model_forward(m, &b2, lp4, 1, &err) == 0);
    ref_model_forward(&c, r.p, &b2, rl);
    check_out("model logp, grown batch", lp4, rl, 24, 0, 1e-5);
    CHECK(model_backward(m, &b, dl, &err) == -1); // not the batch of the last forward

    // Invalid batches.
    int off_long[2] = {0, 13}, tok_long[13] = {0}, tg_long[13] = {0};
    ModelBatch bl = {1, off_long, tok_long, tg_long};
    CHECK(model_forward(m, &bl, lp4, 0, &err) == -1 && strcmp(err.code, "invalid_batch") == 0);
    int off_bad[3] = {0, 5, 3};
    ModelBatch bb = {2, off_bad, tok2, tg2};
    CHECK(model_forward(m, &bb, lp4, 0, &err) == -1);
    tok2[3] = c.vocab_size;
    CHECK(model_forward(m, &b2, lp4, 0, &err) == -1 && strcmp(err.code, "invalid_batch") == 0);
    tok2[3] = 0, tg2[5] = -2;
    CHECK(model_forward(m, &b2, lp4, 0, &err) == -1 && strcmp(err.code, "invalid_batch") == 0);

    free(g1), free(r.p), free(r.logp);
    model_free(m);
    model_free(f);
}

// A batch of several backward chunks (the last one partial) whose row
// blocks and chunks cut through sequences: every weight gradient against
// finite differences of the naive double reference, so the chunked weight
// gradients, the in-place backward and the recomputed norms are checked
// beyond a single chunk.
static void test_model_chunks(void) {
    ModelConfig c = {.dim = 8,
                     .hidden_dim = 12,
                     .n_layers = 2,
                     .n_heads = 2,
                     .n_kv_heads = 1,
                     .vocab_size = 11,
                     .seq_len = 300,
                     .shared_classifier = 0,
                     .norm_eps = 1e-5f,
                     .rope_theta = 10000.0f};
    BsError err;
    Model *m;
    CHECK(model_create(&m, &c, 1, &err) == 0);
    fill_test_params(m);
    size_t P = model_param_count(&c);
    enum { N = 600 };
    int offsets[4] = {0, 300, 341, N}, n_seqs = 3;
    int *tokens = malloc(sizeof(int) * N), *targets = malloc(sizeof(int) * N);
    float *logp = malloc(sizeof(float) * N), *dl = malloc(sizeof(float) * N);
    for (int i = 0; i < N; i++)
        tokens[i] = rng_int(c.vocab_size);
    for (int s = 0; s < n_seqs; s++)
        for (int i = offsets[s]; i < offsets[s + 1]; i++)
            targets[i] = i + 1 < offsets[s + 1] && i % 7 != 3 ? tokens[i + 1] : -1;
    ModelBatch b = {n_seqs, offsets, tokens, targets};
    CHECK(model_forward(m, &b, logp, 1, &err) == 0);
    RefModel r = {&c, &b, to_d(model_params(m), P), dl, malloc(sizeof(double) * N)};
    ref_model_forward(&c, r.p, &b, r.logp);
    check_out("model logp vs naive reference (multi-chunk batch)", logp, r.logp, N, 0, 2e-5);
    for (int i = 0; i < N; i++)
        dl[i] = targets[i] >= 0 ? (float)rng_normal() / 16 : 1000.0f;
    model_zero_grads(m);
    CHECK(model_backward(m, &b, dl, &err) == 0);
    ParamRange pr[12];
    int nr = model_param_ranges(&c, pr, 12);
    char name[96];
    for (int i = 0; i < nr; i++) {
        snprintf(name, sizeof name, "model d%s (multi-chunk batch)", pr[i].name);
        fd_check(name, ref_model_loss, &r, r.p + pr[i].offset, model_grads(m) + pr[i].offset,
                 pr[i].count, 12);
    }
    free(tokens), free(targets), free(logp), free(dl), free(r.p), free(r.logp);
    model_free(m);
}

static void test_layout_and_init(void) {
    ModelConfig c = {.dim = 32,
                     .hidden_dim = 40,
                     .n_layers = 3,
                     .n_heads = 4,
                     .n_kv_heads = 2,
                     .vocab_size = 300,
                     .seq_len = 16,
                     .shared_classifier = 0,
                     .norm_eps = 1e-5f,
                     .rope_theta = 10000.0f};
    BsError err;
    size_t P = model_param_count(&c);
    // 300*32 + 3*32 + 3*32*32 + 2*3*16*32 + 3*32*32 + 3*32 + 3*3*40*32 + 32 + 300*32
    CHECK_INT_EQ(P, 9600 + 96 + 3072 + 3072 + 3072 + 96 + 11520 + 32 + 9600);
    ParamRange r[12];
    int n = model_param_ranges(&c, r, 12);
    const char *names[12] = {"tok_emb", "rms_att", "wq", "wk", "wv",        "wo",
                             "rms_ffn", "w1",      "w2", "w3", "rms_final", "wcls"};
    int decay[12] = {1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 0, 1};
    CHECK_INT_EQ(n, 12);
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        CHECK(strcmp(r[i].name, names[i]) == 0 && r[i].decay == decay[i] && r[i].offset == off);
        off += r[i].count;
    }
    CHECK_INT_EQ(off, P);
    CHECK_INT_EQ(model_param_ranges(&c, r, 3), 3);

    Model *a = NULL, *b = NULL;
    CHECK(model_create(&a, &c, 0, &err) == 0 && model_create(&b, &c, 0, &err) == 0);
    ModelTensors t;
    model_tensors(&t, model_params(a), &c);
    CHECK(t.wk == model_params(a) + r[3].offset && t.wcls == model_params(a) + r[11].offset);
    model_init_random(a, 1234);
    model_init_random(b, 1234);
    CHECK(memcmp(model_params(a), model_params(b), P * sizeof(float)) == 0);
    model_init_random(b, 1235);
    CHECK(memcmp(model_params(a), model_params(b), P * sizeof(float)) != 0);
    const float *p = model_params(a);
    for (int i = 0; i < n; i++) {
        double s = 0, s2 = 0;
        for (size_t j = 0; j < r[i].count; j++)
            s += p[r[i].offset + j], s2 += (double)p[r[i].offset + j] * p[r[i].offset + j];
        double mean = s / r[i].count, sd = sqrt(s2 / r[i].count - mean * mean);
        if (!decay[i]) {
            CHECK_MSG(mean == 1.0 && sd < 1e-6, "%s mean %g", names[i], mean);
            continue;
        }
        double want = (i == 5 || i == 8) ? 0.02 / sqrt(6.0) : 0.02;
        // 3072+ samples: the sample sd is within ~3% (5 sigma ~ 6.5%) of the truth.
        CHECK_MSG(fabs(sd / want - 1) < 0.07 && fabs(mean) < 5 * want / sqrt((double)r[i].count),
                  "%s sd %g (want %g) mean %g", names[i], sd, want, mean);
    }
    model_free(a);
    model_free(b);

    ModelConfig bad = c;
    bad.n_heads = 3;
    CHECK(model_create(&a, &bad, 1, &err) == -1 && strcmp(err.code, "model_invalid") == 0);
    bad = c, bad.n_kv_heads = 3;
    CHECK(model_config_validate(&bad, &err) == -1);
    bad = c, bad.dim = 36, bad.n_heads = 4; // head size 9: odd
    CHECK(model_config_validate(&bad, &err) == -1);
    bad = c, bad.norm_eps = 0;
    CHECK(model_config_validate(&bad, &err) == -1);
    bad = c, bad.vocab_size = -3;
    CHECK(model_config_validate(&bad, &err) == -1);
    CHECK(model_activation_bytes(&c, 100, 50, 1) > model_activation_bytes(&c, 100, 50, 0));
}

// The classifier over more rows than one logits chunk holds recomputes
// probabilities in the backward. Loss and gradients are sums over target
// rows, so the full batch must equal the sum of two half batches whose
// targets fit one chunk each.
static void test_classifier_chunks(void) {
    ModelConfig c = {.dim = 8,
                     .hidden_dim = 16,
                     .n_layers = 1,
                     .n_heads = 2,
                     .n_kv_heads = 1,
                     .vocab_size = 65536,
                     .seq_len = 160,
                     .shared_classifier = 1,
                     .norm_eps = 1e-5f,
                     .rope_theta = 10000.0f};
    BsError err;
    Model *m;
    CHECK(model_create(&m, &c, 1, &err) == 0);
    fill_test_params(m);
    size_t P = model_param_count(&c);
    int N = 300, off[3] = {0, 150, 300};
    int *tok = malloc(sizeof(int) * N), *tg = malloc(sizeof(int) * N);
    int *tga = malloc(sizeof(int) * N), *tgb = malloc(sizeof(int) * N);
    float *dl = malloc(sizeof(float) * N), *lp = malloc(sizeof(float) * N);
    float *lpa = malloc(sizeof(float) * N), *lpb = malloc(sizeof(float) * N);
    for (int i = 0; i < N; i++) {
        tok[i] = rng_int(c.vocab_size), tg[i] = rng_int(c.vocab_size);
        dl[i] = (float)rng_normal();
        tga[i] = i < 180 ? tg[i] : -1; // 180 and 120 rows: each under the 256-row chunk
        tgb[i] = i < 180 ? -1 : tg[i];
    }
    ModelBatch b = {2, off, tok, tg}, ba = {2, off, tok, tga}, bb = {2, off, tok, tgb};
    float *g = malloc(sizeof(float) * P);
    CHECK(model_forward(m, &b, lp, 1, &err) == 0);
    model_zero_grads(m);
    CHECK(model_backward(m, &b, dl, &err) == 0);
    memcpy(g, model_grads(m), sizeof(float) * P);
    model_zero_grads(m);
    CHECK(model_forward(m, &ba, lpa, 1, &err) == 0);
    CHECK(model_backward(m, &ba, dl, &err) == 0);
    CHECK(model_forward(m, &bb, lpb, 1, &err) == 0);
    CHECK(model_backward(m, &bb, dl, &err) == 0);
    for (int i = 0; i < N; i++)
        CHECK(lp[i] == (i < 180 ? lpa[i] : lpb[i]));
    double gmax = 0;
    for (size_t i = 0; i < P; i++)
        gmax = fmax(gmax, fabs(g[i]));
    int bad = 0;
    for (size_t i = 0; i < P; i++)
        bad += !(fabsf(g[i] - model_grads(m)[i]) <= 1e-5 * gmax + 1e-4 * fabsf(g[i]));
    CHECK_MSG(bad == 0 && gmax > 0, "%d chunked gradients differ (gmax %g)", bad, gmax);
    free(tok), free(tg), free(tga), free(tgb), free(dl), free(lp), free(lpa), free(lpb), free(g);
    model_free(m);
}

// llama2.c run.c on aidreams260K at temperature 0 from BOS generates
// 319, 459, 355, ... (../shared/README.md). Teacher-forced on that path, the
// argmax of our log-probs at every position must be the next id. One batch
// holds V copies of the 15-token prefix; copy j targets id j everywhere.
static void test_aidreams_greedy(void) {
    const int ids[16] = {1,   319, 459, 355, 260, 275, 429, 339,
                         315, 374, 327, 446, 262, 421, 392, 275};
    ModelConfig c;
    float *params;
    BsError err;
    if (ckpt_read_llama2c("../shared/models/aidreams260K.bin", &c, &params, &err) != 0) {
        CHECK_MSG(0, "read aidreams260K: %s", err.message);
        return;
    }
    Model *m;
    CHECK(model_create(&m, &c, 0, &err) == 0);
    memcpy(model_params(m), params, model_param_count(&c) * sizeof(float));
    int T = 15, V = c.vocab_size, N = V * T;
    int *off = malloc(sizeof(int) * (V + 1)), *tok = malloc(sizeof(int) * N);
    int *tg = malloc(sizeof(int) * N);
    float *lp = malloc(sizeof(float) * N);
    for (int j = 0; j <= V; j++)
        off[j] = j * T;
    for (int j = 0; j < V; j++)
        for (int t = 0; t < T; t++)
            tok[j * T + t] = ids[t], tg[j * T + t] = j;
    ModelBatch b = {V, off, tok, tg};
    CHECK(model_forward(m, &b, lp, 0, &err) == 0);
    for (int t = 0; t < T; t++) {
        int best = 0;
        for (int j = 1; j < V; j++)
            if (lp[j * T + t] > lp[best * T + t]) best = j;
        CHECK_MSG(best == ids[t + 1], "position %d: argmax %d, run.c %d", t, best, ids[t + 1]);
    }
    free(off), free(tok), free(tg), free(lp), free(params);
    model_free(m);
}

// stories260K: GQA 8/4 and the full 512-token context, against the reference.
static void test_stories(void) {
    ModelConfig c;
    float *params;
    BsError err;
    if (ckpt_read_llama2c("../shared/models/stories260K.bin", &c, &params, &err) != 0) {
        CHECK_MSG(0, "read stories260K: %s", err.message);
        return;
    }
    CHECK(c.n_heads == 8 && c.n_kv_heads == 4 && c.seq_len == 512);
    size_t P = model_param_count(&c);
    Model *m;
    CHECK(model_create(&m, &c, 1, &err) == 0);
    memcpy(model_params(m), params, P * sizeof(float));
    double *pd = to_d(params, P);
    int N = 512 + 37 + 20, off[4] = {0, 512, 549, 569};
    int *tok = malloc(sizeof(int) * N), *tg = malloc(sizeof(int) * N);
    float *lp = malloc(sizeof(float) * N), *dl = malloc(sizeof(float) * N);
    double *rl = malloc(sizeof(double) * N);
    for (int i = 0; i < N; i++)
        tok[i] = rng_int(c.vocab_size);
    for (int s = 0; s < 3; s++)
        for (int i = off[s]; i < off[s + 1]; i++)
            tg[i] = i + 1 < off[s + 1] ? tok[i + 1] : -1;
    ModelBatch b = {3, off, tok, tg};
    CHECK(model_forward(m, &b, lp, 1, &err) == 0);
    ref_model_forward(&c, pd, &b, rl);
    // The trained weights give logits of a few tens: float rounding of
    // ~1e-7 relative over 5 layers stays below 1e-4 absolute in logp.
    check_out("stories260K logp vs reference", lp, rl, N, 1e-5, 1e-4);
    for (int i = 0; i < N; i++)
        dl[i] = tg[i] >= 0 ? -1.0f / N : 0.0f;
    model_zero_grads(m);
    CHECK(model_backward(m, &b, dl, &err) == 0);
    ParamRange r[12];
    int n = model_param_ranges(&c, r, 12);
    for (int i = 0; i < n; i++) {
        double s = 0;
        int finite = 1;
        for (size_t j = 0; j < r[i].count; j++) {
            float g = model_grads(m)[r[i].offset + j];
            finite &= isfinite(g) != 0;
            s += fabs(g);
        }
        CHECK_MSG(finite && s > 0, "stories260K grad %s finite %d sum %g", r[i].name, finite, s);
    }
    int off_long[2] = {0, 513};
    ModelBatch bl = {1, off_long, tok, tg};
    CHECK(model_forward(m, &bl, lp, 0, &err) == -1 && strcmp(err.code, "invalid_batch") == 0);
    free(tok), free(tg), free(lp), free(dl), free(rl), free(pd), free(params);
    model_free(m);
}

int main(void) {
    test_embedding();
    test_rmsnorm();
    test_matmul();
    test_rope();
    test_attention();
    test_swiglu();
    test_classifier();
    test_model_tiny(1);
    test_model_tiny(0);
    test_model_chunks();
    test_layout_and_init();
    test_classifier_chunks();
    test_aidreams_greedy();
    test_stories();
    return test_summary("model_grad");
}
