// test_parallel.c — the fast paths of ops.c and model.c against independent
// expectations:
//   pool        every task of a region runs exactly once, regions back to
//               back, more threads than tasks, NULL pool
//   vexp        the vector exp against libm's double exp (relative error),
//               special values, lane sums against a double sum
//   attention   the fused per-task kernels against the sgemm-blocked
//               attention_forward/backward (head sizes 8, 12, 48, 64; GQA,
//               MQA; lengths that are not multiples of the blocks)
//               and the in-place backward task against the accumulating one
//   classifier  classifier_forward_tile + merge_tiles (logits kept) and
//               classifier_forward_rows/backward_tile/
//               backward_dx (whole and in vocabulary slices) against
//               logsoftmax_gather_forward/backward
//   tile merge  classifier_forward_tile + classifier_merge_tiles against a
//               double log-sum-exp of known logits (maxima far apart across
//               tiles, targets in the last, partial tile) and bit for bit
//               against classifier_forward_rows
//   recompute   rmsnorm_apply against rmsnorm_forward (bit for bit),
//               matmul_backward_dw_rows over split rows against a double sum
//   threads     model forward/backward with 1, 2 and 3 threads: identical
//               bits (fixed task decomposition), on a batch large enough for
//               several row blocks (of 256 and of 512 rows: the width is
//               the config's), backward chunks (of two row blocks, the last
//               partial), attention tasks, vocabulary tiles and dx slices
//   grouped     model_forward_grouped: callback order and inputs, identical
//               bits at 1-3 threads, the plain path's gradients, a frozen
//               copy's grouped log-probs bit for bit, errors, and a logit
//               cache too small for any group (recomputed blocks)
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "ops.h"
#include "tests/test_util.h"

static uint64_t rng_state = 0x243F6A8885A308D3ull;

static double rng_uniform(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (double)((z ^ (z >> 31)) >> 11) * 0x1.0p-53;
}

static float *randu(size_t n, double scale) {
    float *p = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        p[i] = (float)((2.0 * rng_uniform() - 1.0) * scale);
    return p;
}

// Largest |a - b| / (atol + rtol |b|); <= 1 means within tolerance.
static double worst(const float *a, const float *b, size_t n, double rtol, double atol) {
    double w = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]) / (atol + rtol * fabs((double)b[i]));
        if (!(e <= w)) w = e; // NaN counts as worst
    }
    return w;
}

// ---------------------------------------------------------------------------

typedef struct {
    atomic_int *hits;
    atomic_int bad_thread;
    int threads;
} PoolCtx;

static void count_task(void *p, int task, int thread) {
    PoolCtx *c = p;
    atomic_fetch_add(&c->hits[task], 1);
    if (thread < 0 || thread >= c->threads) atomic_store(&c->bad_thread, 1);
}

static void test_pool(void) {
    int sizes[] = {1, 3, 2, 5};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        OpsPool *p = NULL;
        CHECK(ops_pool_create(&p, sizes[si]) == 0 && p);
        if (!p) continue;
        CHECK_INT_EQ(ops_pool_threads(p), sizes[si]);
        int counts[] = {0, 1, 2, 7, 1000};
        for (int rep = 0; rep < 50; rep++) {
            int n = counts[rep % 5];
            atomic_int *hits = calloc(n ? (size_t)n : 1, sizeof *hits);
            PoolCtx c = {.hits = hits, .threads = sizes[si]};
            atomic_init(&c.bad_thread, 0);
            ops_pool_run(p, count_task, &c, n);
            int bad = 0;
            for (int t = 0; t < n; t++)
                bad += atomic_load(&hits[t]) != 1;
            CHECK_MSG(bad == 0 && !atomic_load(&c.bad_thread), "pool %d threads, %d tasks: %d bad",
                      sizes[si], n, bad);
            free(hits);
        }
        ops_pool_free(p);
    }
    atomic_int hits[4] = {0};
    PoolCtx c = {.hits = hits, .threads = 1};
    atomic_init(&c.bad_thread, 0);
    ops_pool_run(NULL, count_task, &c, 4);
    CHECK(hits[0] == 1 && hits[3] == 1 && !atomic_load(&c.bad_thread));
    CHECK_INT_EQ(ops_pool_threads(NULL), 1);
}

// ---------------------------------------------------------------------------

static void test_vexp(void) {
    int n = 200003;
    float *x = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n);
    for (int i = 0; i < n; i++)
        x[i] = (float)(-87.0 + 175.5 * i / (n - 1)); // -87 .. 88.5
    float s = ops_vexp(y, x, 0.0f, 0.0f, 1.0f, n);
    double rel = 0, sum = 0;
    for (int i = 0; i < n; i++) {
        double e = exp((double)x[i]);
        sum += y[i];
        double r = fabs(y[i] - e) / e;
        if (!(r <= rel)) rel = r;
    }
    CHECK_MSG(rel < 3e-7, "vexp max relative error %g", rel);
    CHECK(isinf(s) || fabs(s - sum) <= 1e-5 * sum); // the range reaches 1e38: sum may overflow

    // Shift, second shift and scale: y = scale * exp((x - a) - b), sum of y.
    for (int i = 0; i < 37; i++)
        x[i] = (float)(i * 0.25);
    s = ops_vexp(y, x, 3.0f, 0.5f, -2.0f, 37);
    sum = 0;
    for (int i = 0; i < 37; i++) {
        double e = -2.0 * exp(((double)x[i] - 3.0) - 0.5);
        CHECK_CLOSE(y[i], e, 3e-7, 0);
        sum += e;
    }
    CHECK_CLOSE(s, sum, 1e-6, 0);

    float sp[6] = {-INFINITY, -200.0f, NAN, INFINITY, 100.0f, 0.0f}, o[6];
    ops_vexp(o, sp, 0.0f, 0.0f, 1.0f, 6);
    CHECK(o[0] == 0.0f && o[1] == 0.0f && isnan(o[2]) && isinf(o[3]) && isinf(o[4]) &&
          o[5] == 1.0f);

    for (int len = 1; len < 40; len++) {
        float *v = randu((size_t)len, 5.0);
        int at = (int)(rng_uniform() * len);
        v[at] = 7.5f;
        CHECK(ops_vmax(v, len) == 7.5f);
        free(v);
    }
    free(x);
    free(y);
}

// ---------------------------------------------------------------------------

static void test_attention_kernels(void) {
    struct {
        int NH, NKV, HS;
    } cfg[] = {{4, 2, 8}, {2, 1, 12}, {3, 3, 48}, {2, 2, 64}};
    int offsets[] = {0, 1, 20, 61, 61, 98}, n_seqs = 5, N = 98, max_T = 41;
    for (size_t ci = 0; ci < sizeof cfg / sizeof cfg[0]; ci++) {
        int NH = cfg[ci].NH, NKV = cfg[ci].NKV, HS = cfg[ci].HS, C = NH * HS, KVC = NKV * HS;
        float *q = randu((size_t)N * C, 1.5), *k = randu((size_t)N * KVC, 1.5);
        float *v = randu((size_t)N * KVC, 1.0), *g = randu((size_t)N * C, 1.0);
        float *o1 = malloc(sizeof(float) * N * C), *o2 = malloc(sizeof(float) * N * C);
        float *m1 = malloc(sizeof(float) * N * NH), *m2 = malloc(sizeof(float) * N * NH);
        float *i1 = malloc(sizeof(float) * N * NH), *i2 = malloc(sizeof(float) * N * NH);
        float *s1 = malloc(sizeof(float) * attention_scratch_floats(max_T));
        float *s2 = malloc(sizeof(float) * attention_task_scratch_floats(max_T, HS));
        attention_forward(o1, m1, i1, s1, q, k, v, offsets, n_seqs, NH, NKV, HS);
        for (int s = 0; s < n_seqs; s++)
            for (int h = 0; h < NH; h++)
                attention_forward_task(o2, m2, i2, s2, q, k, v, offsets[s],
                                       offsets[s + 1] - offsets[s], h, NH, NKV, HS);
        CHECK_MSG(worst(o2, o1, (size_t)N * C, 1e-5, 1e-6) <= 1, "fused attention out HS=%d", HS);
        CHECK_MSG(worst(m2, m1, (size_t)N * NH, 1e-6, 1e-6) <= 1, "fused attention max HS=%d", HS);
        CHECK_MSG(worst(i2, i1, (size_t)N * NH, 1e-6, 0) <= 1, "fused attention 1/sum HS=%d", HS);

        float *dq1 = calloc((size_t)N * C, 4), *dq2 = calloc((size_t)N * C, 4);
        float *dk1 = calloc((size_t)N * KVC, 4), *dk2 = calloc((size_t)N * KVC, 4);
        float *dv1 = calloc((size_t)N * KVC, 4), *dv2 = calloc((size_t)N * KVC, 4);
        attention_backward(dq1, dk1, dv1, s1, g, q, k, v, m1, i1, offsets, n_seqs, NH, NKV, HS);
        for (int s = 0; s < n_seqs; s++)
            for (int kh = 0; kh < NKV; kh++)
                attention_backward_task(dq2, dk2, dv2, s2, g, q, k, v, m2, i2, offsets[s],
                                        offsets[s + 1] - offsets[s], kh, NH, NKV, HS, NULL, NULL,
                                        NULL);
        CHECK_MSG(worst(dq2, dq1, (size_t)N * C, 1e-4, 1e-6) <= 1, "fused attention dq HS=%d", HS);
        CHECK_MSG(worst(dk2, dk1, (size_t)N * KVC, 1e-4, 1e-6) <= 1, "fused attention dk HS=%d",
                  HS);
        CHECK_MSG(worst(dv2, dv1, (size_t)N * KVC, 1e-4, 1e-6) <= 1, "fused attention dv HS=%d",
                  HS);

        // With RoPE tables the task rotates its dq / dk slices back.
        int *pos = malloc(sizeof(int) * N);
        ops_positions(pos, offsets, n_seqs);
        float *cs = malloc(sizeof(float) * 64 * HS / 2), *sn = malloc(sizeof(float) * 64 * HS / 2);
        ops_rope_tables(cs, sn, 64, HS, 10000.0f);
        memset(dq2, 0, sizeof(float) * N * C);
        memset(dk2, 0, sizeof(float) * N * KVC);
        for (int s = 0; s < n_seqs; s++)
            for (int kh = 0; kh < NKV; kh++)
                attention_backward_task(dq2, dk2, dv2, s2, g, q, k, v, m2, i2, offsets[s],
                                        offsets[s + 1] - offsets[s], kh, NH, NKV, HS, pos, cs, sn);
        rope_backward(dq1, pos, cs, sn, N, NH, HS);
        rope_backward(dk1, pos, cs, sn, N, NKV, HS);
        CHECK_MSG(worst(dq2, dq1, (size_t)N * C, 1e-4, 1e-6) <= 1, "attention+rope dq HS=%d", HS);
        CHECK_MSG(worst(dk2, dk1, (size_t)N * KVC, 1e-4, 1e-6) <= 1, "attention+rope dk HS=%d", HS);

        // In place (dq over dout, dk over k, dv over v) gives what the
        // accumulating task adds to zeroed outputs, with and without RoPE.
        for (int rope = 0; rope < 2; rope++) {
            float *gi = malloc(sizeof(float) * N * C), *ki = malloc(sizeof(float) * N * KVC);
            float *vi = malloc(sizeof(float) * N * KVC);
            memcpy(gi, g, sizeof(float) * N * C);
            memcpy(ki, k, sizeof(float) * N * KVC);
            memcpy(vi, v, sizeof(float) * N * KVC);
            memset(dq2, 0, sizeof(float) * N * C);
            memset(dk2, 0, sizeof(float) * N * KVC);
            memset(dv2, 0, sizeof(float) * N * KVC);
            for (int s = 0; s < n_seqs; s++)
                for (int kh = 0; kh < NKV; kh++) {
                    int o = offsets[s], T = offsets[s + 1] - o;
                    attention_backward_task(dq2, dk2, dv2, s2, g, q, k, v, m2, i2, o, T, kh, NH,
                                            NKV, HS, pos, rope ? cs : NULL, sn);
                    attention_backward_task_inplace(gi, ki, vi, s2, q, m2, i2, o, T, kh, NH, NKV,
                                                    HS, pos, rope ? cs : NULL, sn);
                }
            int bad = 0;
            for (int i = 0; i < N * C; i++)
                bad += gi[i] != dq2[i];
            for (int i = 0; i < N * KVC; i++)
                bad += (ki[i] != dk2[i]) + (vi[i] != dv2[i]);
            CHECK_MSG(bad == 0, "in-place attention backward HS=%d rope=%d: %d differ", HS, rope,
                      bad);
            free(gi), free(ki), free(vi);
        }
        free(pos), free(cs), free(sn);
        free(q), free(k), free(v), free(g), free(o1), free(o2), free(m1), free(m2), free(i1),
            free(i2), free(s1), free(s2), free(dq1), free(dq2), free(dk1), free(dk2), free(dv1),
            free(dv2);
    }
}

// ---------------------------------------------------------------------------

static void test_classifier_kernels(void) {
    int M = 37, D = 24, V = 1000, vb = 96;
    float *x = randu((size_t)M * D, 2.0), *w = randu((size_t)V * D, 1.0);
    float *g = randu((size_t)M, 1.0);
    int *tg = malloc(sizeof(int) * M);
    for (int i = 0; i < M; i++)
        tg[i] = (int)(rng_uniform() * V);
    g[3] = 0.0f; // a row without gradient

    float *probs = malloc(sizeof(float) * M * V), *lp1 = malloc(sizeof(float) * M);
    logsoftmax_gather_forward(lp1, probs, x, w, tg, M, D, V);
    float *dx1 = calloc((size_t)M * D, 4), *dw1 = calloc((size_t)V * D, 4);
    logsoftmax_gather_backward(dx1, dw1, probs, g, x, w, tg, M, D, V);

    // Logits kept in an (M, V) cache with a row stride that is not V, tile
    // by tile over all rows (tiles that do not divide V) as the grouped
    // classifier runs them, then merged.
    size_t ld = (size_t)V + 5;
    int nt = (V + vb - 1) / vb, split = 20;
    float *lp2 = malloc(sizeof(float) * M), *lm = malloc(sizeof(float) * M);
    float *ll = malloc(sizeof(float) * M), *cache = malloc(sizeof(float) * M * ld);
    float *tmax = malloc(sizeof(float) * nt * M), *tlogit = malloc(sizeof(float) * M);
    float *exps = malloc(sizeof(float) * vb);
    double *tsum = malloc(sizeof(double) * nt * M);
    for (int t = 0; t < nt; t++)
        classifier_forward_tile(tmax + (size_t)t * M, tsum + (size_t)t * M, tlogit,
                                cache + (size_t)t * vb, ld, exps, x, w, tg, M, D, t * vb,
                                V - t * vb < vb ? V - t * vb : vb);
    classifier_merge_tiles(lp2, lm, ll, tmax, tsum, (size_t)M, nt, tlogit, M);
    CHECK_MSG(worst(lp2, lp1, (size_t)M, 1e-6, 1e-6) <= 1, "classifier tiles logp");
    // classifier_forward_rows (logits not kept) in two uneven row blocks:
    // the same log-probs, max and log-sum, bit for bit.
    float *scr = malloc(sizeof(float) * classifier_scratch_floats(M, vb));
    float *lp3 = malloc(sizeof(float) * M), *lm3 = malloc(sizeof(float) * M);
    float *ll3 = malloc(sizeof(float) * M);
    classifier_forward_rows(lp3, lm3, ll3, scr, x, w, tg, split, D, V, vb);
    classifier_forward_rows(lp3 + split, lm3 + split, ll3 + split, scr, x + (size_t)split * D, w,
                            tg + split, M - split, D, V, vb);
    CHECK(memcmp(lp3, lp2, sizeof(float) * M) == 0);
    CHECK(memcmp(lm3, lm, sizeof(float) * M) == 0);
    CHECK(memcmp(ll3, ll, sizeof(float) * M) == 0);
    free(tmax), free(tlogit), free(exps), free(tsum);

    float *dx2 = calloc((size_t)M * D, 4), *dw2 = calloc((size_t)V * D, 4);
    for (int v0 = 0; v0 < V; v0 += vb)
        classifier_backward_tile(dw2, cache, ld, g, x, tg, lm, ll, M, D, v0,
                                 V - v0 < vb ? V - v0 : vb);
    classifier_backward_dx(dx2, cache, ld, w, split, D, V);
    classifier_backward_dx(dx2 + (size_t)split * D, cache + (size_t)split * ld, ld, w, M - split, D,
                           V);
    CHECK_MSG(worst(dx2, dx1, (size_t)M * D, 1e-4, 1e-6) <= 1, "classifier dx from dlogits");
    // dx over vocabulary slices (uneven, the last partial), added up.
    float *dx3 = calloc((size_t)M * D, 4), *dxs = malloc(sizeof(float) * M * D);
    int cuts[] = {0, 256, 512, 768, V};
    for (int p = 0; p < 4; p++) {
        memset(dxs, 0, sizeof(float) * M * D);
        classifier_backward_dx(dxs, cache + cuts[p], ld, w + (size_t)cuts[p] * D, M, D,
                               cuts[p + 1] - cuts[p]);
        residual_forward(dx3, dx3, dxs, (size_t)M * D);
    }
    CHECK_MSG(worst(dx3, dx1, (size_t)M * D, 1e-4, 1e-6) <= 1, "classifier dx in slices");
    free(dx3), free(dxs);
    CHECK_MSG(worst(dw2, dw1, (size_t)V * D, 1e-4, 1e-6) <= 1, "classifier dwcls tiles");
    for (int d = 0; d < D; d++)
        CHECK(dx2[3 * D + d] == 0.0f);
    free(x), free(w), free(g), free(tg), free(probs), free(lp1), free(dx1), free(dw1), free(lp2),
        free(lm), free(ll), free(cache), free(scr), free(lp3), free(lm3), free(ll3), free(dx2),
        free(dw2);
}

// The tile statistics and their merge on logits known exactly: x row i is
// the unit vector e_i and wcls column i holds row i's logits, so the sgemm
// reproduces them bit for bit. Rows: the max in the first tile far above
// the rest; the max in the last, partial tile (the target there); maxima
// rising tile by tile (every fold rescales); everything far below zero but
// one tile; random. The result must be the double log-sum-exp, bit for bit
// the same in any tile order, and classifier_forward_rows' (one task over
// the same tiles) bit for bit.
static void test_tile_merge(void) {
    enum { R = 5 };
    int V = 1000, vb = 96, D = R, T = (V + vb - 1) / vb; // last tile: 40 columns
    float *x = calloc((size_t)R * D, sizeof(float)), *w = malloc(sizeof(float) * V * D);
    for (int i = 0; i < R; i++)
        x[(size_t)i * D + i] = 1.0f;
    for (int v = 0; v < V; v++) {
        int t = v / vb;
        double u = 2.0 * rng_uniform() - 1.0;
        float lg[R] = {
            (float)(t == 0 ? 40.0 + u : u),     // max in the first tile
            (float)(t == T - 1 ? 60.0 + u : u), // max in the last, partial tile
            (float)(3.0 * t + u),               // rising maxima
            (float)(t == 4 ? u : -90.0 + u),    // one tile near 0, the rest far below
            (float)(5.0 * u),                   // random
        };
        for (int i = 0; i < R; i++)
            w[(size_t)v * D + i] = lg[i];
    }
    int tg[R] = {3, V - 7, V / 2, 4 * vb + 5, V - 1};
    size_t ld = (size_t)V + 3;
    float *logits = malloc(sizeof(float) * R * ld), *exps = malloc(sizeof(float) * vb);
    float *tmax = malloc(sizeof(float) * T * R), *tlogit = malloc(sizeof(float) * R);
    double *tsum = malloc(sizeof(double) * T * R);
    float lp[R], lm[R], ll[R];
    for (int dir = 0; dir < 2; dir++) { // tiles in order, then in reverse
        for (int k = 0; k < T; k++) {
            int t = dir ? T - 1 - k : k, v0 = t * vb, nv = V - v0 < vb ? V - v0 : vb;
            classifier_forward_tile(tmax + (size_t)t * R, tsum + (size_t)t * R, tlogit, logits + v0,
                                    ld, exps, x, w, tg, R, D, v0, nv);
        }
        float lp2[R], lm2[R], ll2[R];
        classifier_merge_tiles(dir ? lp2 : lp, dir ? lm2 : lm, dir ? ll2 : ll, tmax, tsum, R, T,
                               tlogit, R);
        if (dir) {
            CHECK(memcmp(lp2, lp, sizeof lp) == 0 && memcmp(lm2, lm, sizeof lm) == 0 &&
                  memcmp(ll2, ll, sizeof ll) == 0);
        }
    }
    for (int i = 0; i < R; i++) {
        double mx = -INFINITY, sum = 0.0;
        for (int v = 0; v < V; v++)
            mx = fmax(mx, w[(size_t)v * D + i]);
        for (int v = 0; v < V; v++)
            sum += exp((double)w[(size_t)v * D + i] - mx);
        double want = (double)w[(size_t)tg[i] * D + i] - mx - log(sum);
        CHECK_MSG(lm[i] == (float)mx, "tile merge row %d max %g, want %g", i, lm[i], mx);
        CHECK_MSG(fabs(ll[i] - log(sum)) <= 1e-6 * fmax(1.0, log(sum)), "tile merge row %d log-sum",
                  i);
        CHECK_MSG(fabs(lp[i] - want) <= 1e-6 * fmax(1.0, fabs(want)),
                  "tile merge row %d logp %.9g, want %.9g", i, lp[i], want);
        for (int v = 0; v < V; v++) // the tiles kept the logits
            if (logits[(size_t)i * ld + v] != w[(size_t)v * D + i]) {
                CHECK_MSG(0, "tile merge row %d logit %d", i, v);
                break;
            }
    }
    // Against logsoftmax_gather_forward (one sgemm, one softmax per row).
    float *probs = malloc(sizeof(float) * R * V), lpg[R];
    logsoftmax_gather_forward(lpg, probs, x, w, tg, R, D, V);
    CHECK_MSG(worst(lp, lpg, R, 1e-6, 1e-6) <= 1, "tile merge vs logsoftmax_gather_forward");
    // classifier_forward_rows folds the same statistics as it goes.
    float lp3[R], lm3[R], ll3[R];
    float *scr = malloc(sizeof(float) * classifier_scratch_floats(R, vb));
    classifier_forward_rows(lp3, lm3, ll3, scr, x, w, tg, R, D, V, vb);
    CHECK(memcmp(lp3, lp, sizeof lp) == 0 && memcmp(lm3, lm, sizeof lm) == 0 &&
          memcmp(ll3, ll, sizeof ll) == 0);
    free(x), free(w), free(logits), free(exps), free(tmax), free(tlogit), free(tsum), free(probs),
        free(scr);
}

// ---------------------------------------------------------------------------

// rmsnorm_apply recomputes rmsnorm_forward's output bit for bit (the
// backward relies on it instead of keeping the normed rows), and
// matmul_backward_dw_rows over a split of the output rows gives
// matmul_backward's weight gradient.
static void test_recompute_ops(void) {
    int dims[] = {1, 7, 16, 33, 64, 100};
    for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++) {
        int N = 5, D = dims[di];
        float *x = randu((size_t)N * D, 3.0), *w = randu((size_t)D, 1.5);
        float *o1 = malloc(sizeof(float) * N * D), *o2 = malloc(sizeof(float) * N * D);
        float *rstd = malloc(sizeof(float) * N);
        rmsnorm_forward(o1, rstd, x, w, N, D, 1e-5f);
        rmsnorm_apply(o2, x, w, rstd, N, D);
        CHECK_MSG(memcmp(o1, o2, sizeof(float) * N * D) == 0, "rmsnorm_apply D=%d", D);
        free(x), free(w), free(o1), free(o2), free(rstd);
    }
    int N = 77, Cin = 40, Cout = 53;
    float *dout = randu((size_t)N * Cout, 1.0), *inp = randu((size_t)N * Cin, 1.0);
    float *dw1 = randu((size_t)Cout * Cin, 1.0), *dw2 = malloc(sizeof(float) * Cout * Cin);
    double *ref = malloc(sizeof(double) * Cout * Cin);
    for (int o = 0; o < Cout; o++)
        for (int i = 0; i < Cin; i++) {
            double acc = dw1[(size_t)o * Cin + i];
            for (int t = 0; t < N; t++)
                acc += (double)dout[(size_t)t * Cout + o] * inp[(size_t)t * Cin + i];
            ref[(size_t)o * Cin + i] = acc;
        }
    memcpy(dw2, dw1, sizeof(float) * Cout * Cin);
    matmul_backward(NULL, dw1, dout, inp, NULL, N, Cin, Cout);
    int cuts[] = {0, 16, 17, 48, Cout};
    for (int p = 0; p + 1 < 5; p++)
        matmul_backward_dw_rows(dw2, dout, inp, N, Cin, Cout, cuts[p], cuts[p + 1]);
    matmul_backward_dw_rows(dw2, dout, inp, N, Cin, Cout, 30, 30); // empty: no-op
    float *dwf = malloc(sizeof(float) * Cout * Cin);
    for (int i = 0; i < Cout * Cin; i++)
        dwf[i] = (float)ref[i];
    CHECK_MSG(worst(dw1, dwf, (size_t)Cout * Cin, 1e-5, 1e-5) <= 1, "matmul_backward dw");
    CHECK_MSG(worst(dw2, dwf, (size_t)Cout * Cin, 1e-5, 1e-5) <= 1, "matmul_backward_dw_rows");
    free(dout), free(inp), free(dw1), free(dw2), free(ref), free(dwf);
}

// ---------------------------------------------------------------------------
// model_forward_grouped: sequences s and s + 4 form group s % 4 (a DPO pair
// in train.c's packing: not adjacent). The callback's dL/dlogp depends on
// the group's log-probs, as a loss does.

typedef struct {
    const ModelBatch *b;
    const float *dl; // (N) per-token factors
    int n_groups, calls, order_ok, logp_ok, fail_at;
} GroupProbe;

static int probe_grad(void *ctx, int g, const float *logp, float *dlogp, BsError *err) {
    GroupProbe *pr = ctx;
    if (g == pr->fail_at) return bs_fail(err, "probe", "", "group %d refused", g);
    pr->order_ok &= g == pr->calls++;
    double sum = 0.0;
    for (int s = g; s < pr->b->n_seqs; s += pr->n_groups)
        for (int i = pr->b->offsets[s]; i < pr->b->offsets[s + 1]; i++)
            if (pr->b->targets[i] >= 0) {
                pr->logp_ok &= isfinite(logp[i]) && logp[i] < 0.0f;
                sum += logp[i];
            }
    double c = 1.0 / (1.0 + exp(sum / 1000.0)); // a sigmoid of the group's sum
    for (int s = g; s < pr->b->n_seqs; s += pr->n_groups)
        for (int i = pr->b->offsets[s]; i < pr->b->offsets[s + 1]; i++)
            dlogp[i] = pr->b->targets[i] >= 0 ? (float)(c * pr->dl[i]) : 0.0f;
    return 0;
}

// sg (n_seqs): sequence s in group s % 4.
static void pair_groups(int *sg, int n_seqs) {
    for (int s = 0; s < n_seqs; s++)
        sg[s] = s % 4;
}

// One grouped pass on a fresh model: logp, dlogp and grads (caller frees).
static void grouped_pass(const ModelConfig *c, const ModelBatch *b, const float *dl, int threads,
                         size_t cache_bytes, float **lp, float **dlp, float **gr) {
    size_t P = model_param_count(c);
    int N = b->offsets[b->n_seqs], G = 4, sg[8];
    pair_groups(sg, b->n_seqs);
    *lp = calloc((size_t)N, sizeof(float));
    *dlp = calloc((size_t)N, sizeof(float));
    *gr = calloc(P, sizeof(float));
    Model *m = NULL;
    BsError err;
    CHECK(model_create(&m, c, 1, &err) == 0);
    if (!m) return;
    model_init_random(m, 99);
    model_set_threads(m, threads);
    if (cache_bytes) model_set_logit_cache(m, cache_bytes);
    model_zero_grads(m);
    GroupProbe pr = {b, dl, G, 0, 1, 1, -1};
    ModelGroups groups = {G, sg, probe_grad, &pr};
    CHECK(model_forward_grouped(m, b, &groups, *lp, *dlp, &err) == 0);
    CHECK(pr.calls == G && pr.order_ok && pr.logp_ok);
    CHECK(model_backward(m, b, NULL, &err) == 0);
    memcpy(*gr, model_grads(m), P * sizeof(float));
    model_free(m);
}

static void check_grouped(const ModelConfig *cfg, const ModelBatch *b, const float *dl) {
    ModelConfig c = *cfg;
    size_t P = model_param_count(&c);
    int N = b->offsets[b->n_seqs];
    BsError err;
    float *lp[3], *dlp[3], *gr[3];
    int threads[3] = {1, 2, 3};
    for (int t = 0; t < 3; t++)
        grouped_pass(&c, b, dl, threads[t], 0, &lp[t], &dlp[t], &gr[t]);
    for (int t = 1; t < 3; t++) {
        CHECK_MSG(memcmp(lp[t], lp[0], sizeof(float) * N) == 0,
                  "grouped: dim %d logp differ at %d threads", c.dim, threads[t]);
        CHECK_MSG(memcmp(gr[t], gr[0], sizeof(float) * P) == 0,
                  "grouped: dim %d grads differ at %d threads", c.dim, threads[t]);
    }

    // Against the plain path with the dL/dlogp the grouped pass formed.
    Model *m = NULL;
    CHECK(model_create(&m, &c, 1, &err) == 0);
    if (!m) return;
    model_init_random(m, 99);
    model_set_threads(m, 2);
    model_zero_grads(m);
    float *lpp = calloc((size_t)N, sizeof(float));
    CHECK(model_forward(m, b, lpp, 1, &err) == 0);
    CHECK_MSG(worst(lp[0], lpp, (size_t)N, 1e-5, 1e-6) <= 1, "grouped logp vs plain");
    CHECK(model_backward(m, b, NULL, &err) == -1); // the plain path needs dlogp
    CHECK(model_backward(m, b, dlp[0], &err) == 0);
    CHECK_MSG(worst(gr[0], model_grads(m), P, 1e-3, 1e-6) <= 1, "grouped grads vs plain, dim %d",
              c.dim);

    // A frozen copy scored with the same groups: the policy's logp, bit for bit.
    Model *f = NULL;
    CHECK(model_create(&f, &c, 0, &err) == 0);
    if (f) {
        memcpy(model_params(f), model_params(m), P * sizeof(float));
        int sg[8];
        pair_groups(sg, b->n_seqs);
        ModelGroups score = {4, sg, NULL, NULL};
        float *lpf = calloc((size_t)N, sizeof(float));
        CHECK(model_forward_grouped(f, b, &score, lpf, NULL, &err) == 0);
        CHECK_MSG(memcmp(lpf, lp[0], sizeof(float) * N) == 0, "frozen grouped logp differ");
        free(lpf);
        model_free(f);
    }

    // After a grouped forward the backward takes no dlogp; a failing callback
    // ends the forward with its error.
    GroupProbe pr = {b, dl, 4, 0, 1, 1, 2};
    int sg[8];
    pair_groups(sg, b->n_seqs);
    ModelGroups groups = {4, sg, probe_grad, &pr};
    float *dtmp = calloc((size_t)N, sizeof(float));
    CHECK(model_forward_grouped(m, b, &groups, lpp, dtmp, &err) == -1);
    CHECK(strcmp(err.code, "probe") == 0 && pr.calls == 2);
    pr.fail_at = -1, pr.calls = 0;
    CHECK(model_forward_grouped(m, b, &groups, lpp, dtmp, &err) == 0);
    CHECK(model_backward(m, b, dtmp, &err) == -1);
    sg[3] = 4; // out of range
    CHECK(model_forward_grouped(m, b, &groups, lpp, dtmp, &err) == -1);
    CHECK(strcmp(err.code, "invalid_argument") == 0);
    free(dtmp);
    free(lpp);
    model_free(m);

    // A logit cache of 16 rows: every group is scored block by block and its
    // logits recomputed; the same gradients up to rounding.
    float *lps, *dls, *grs;
    grouped_pass(&c, b, dl, 2, 1, &lps, &dls, &grs);
    CHECK_MSG(worst(lps, lp[0], (size_t)N, 1e-5, 1e-6) <= 1, "small-cache logp");
    CHECK_MSG(worst(grs, gr[0], P, 1e-3, 1e-6) <= 1, "small-cache grads, dim %d", c.dim);
    free(lps), free(dls), free(grs);
    for (int t = 0; t < 3; t++)
        free(lp[t]), free(dlp[t]), free(gr[t]);
}

// ---------------------------------------------------------------------------

// Forward and backward of one config at 1, 2 and 3 threads: identical bits.
static void check_thread_counts(const ModelConfig *cfg) {
    ModelConfig c = *cfg;
    // Lengths: long, one token, empty, not multiples of any block.
    int lens[] = {300, 1, 217, 0, 150, 299, 33, 140};
    int n_seqs = 8, offsets[9] = {0};
    for (int s = 0; s < n_seqs; s++)
        offsets[s + 1] = offsets[s] + lens[s];
    int N = offsets[n_seqs];
    int *tok = malloc(sizeof(int) * N), *tg = malloc(sizeof(int) * N);
    float *dl = malloc(sizeof(float) * N);
    for (int s = 0; s < n_seqs; s++)
        for (int i = offsets[s]; i < offsets[s + 1]; i++) {
            tok[i] = (int)(rng_uniform() * c.vocab_size);
            int last = i == offsets[s + 1] - 1, prompt = i - offsets[s] < 10;
            tg[i] = last || prompt ? -1 : (int)(rng_uniform() * c.vocab_size);
            dl[i] = (float)(2.0 * rng_uniform() - 1.0);
        }
    ModelBatch b = {n_seqs, offsets, tok, tg};
    BsError err;
    size_t P = model_param_count(&c);
    float *lp[3], *gr[3];
    int threads[3] = {1, 2, 3};
    for (int t = 0; t < 3; t++) {
        Model *m = NULL;
        lp[t] = calloc((size_t)N, sizeof(float));
        gr[t] = calloc(P, sizeof(float));
        CHECK(model_create(&m, &c, 1, &err) == 0);
        if (!m) continue;
        model_init_random(m, 99);
        model_set_threads(m, threads[t]);
        model_zero_grads(m);
        CHECK(model_forward(m, &b, lp[t], 1, &err) == 0);
        CHECK(model_backward(m, &b, dl, &err) == 0);
        memcpy(gr[t], model_grads(m), P * sizeof(float));
        // The frozen path (one slot, scratch activations) gives the same logp.
        float *lp2 = calloc((size_t)N, sizeof(float));
        CHECK(model_forward(m, &b, lp2, 0, &err) == 0);
        CHECK(memcmp(lp2, lp[t], sizeof(float) * N) == 0);
        free(lp2);
        model_free(m);
    }
    int finite = 1, nonzero = 0;
    for (int i = 0; i < N; i++) {
        finite &= isfinite(lp[0][i]);
        nonzero += tg[i] >= 0 && lp[0][i] < 0.0f;
    }
    for (size_t i = 0; i < P; i++)
        finite &= isfinite(gr[0][i]);
    CHECK(finite && nonzero > N / 2);
    for (int t = 1; t < 3; t++) {
        CHECK_MSG(memcmp(lp[t], lp[0], sizeof(float) * N) == 0, "dim %d: logp differ at %d threads",
                  c.dim, threads[t]);
        CHECK_MSG(memcmp(gr[t], gr[0], sizeof(float) * P) == 0,
                  "dim %d: grads differ at %d threads", c.dim, threads[t]);
    }
    for (int t = 0; t < 3; t++)
        free(lp[t]), free(gr[t]);
    check_grouped(&c, &b, dl);
    free(tok), free(tg), free(dl);
}

static void test_thread_counts(void) {
    ModelConfig c = {.dim = 32,
                     .hidden_dim = 56,
                     .n_layers = 2,
                     .n_heads = 4,
                     .n_kv_heads = 2,
                     .vocab_size = 1100,
                     .seq_len = 300,
                     .shared_classifier = 0,
                     .norm_eps = 1e-5f,
                     .rope_theta = 10000.0f};
    // 1140 tokens. dim 32: row blocks of 256 (five, the last of 116 rows),
    // three backward chunks of 512, the last partial; vocabulary tiles of
    // 288 (four, the last of 236) and dx slices of 288.
    check_thread_counts(&c);
    ModelConfig c2 = {.dim = 256,
                      .hidden_dim = 96,
                      .n_layers = 1,
                      .n_heads = 4,
                      .n_kv_heads = 2,
                      .vocab_size = 300,
                      .seq_len = 300,
                      .shared_classifier = 1,
                      .norm_eps = 1e-5f,
                      .rope_theta = 10000.0f};
    // dim 256: row blocks of 512 (three, the last of 116 rows), two backward
    // chunks of 1024, the second partial (one partial block); vocabulary
    // tiles and dx slices of 80 (four, the last of 60).
    check_thread_counts(&c2);
}

int main(void) {
    test_pool();
    test_vexp();
    test_attention_kernels();
    test_classifier_kernels();
    test_tile_merge();
    test_recompute_ops();
    test_thread_counts();
    return test_summary("parallel");
}
