// test_optim.c — AdamW, gradient clipping and learning-rate schedules against
// independent expectations: AdamW recomputed here in double from the paper's
// update (decoupled decay on one range only, varying lr), the same run's
// float32 results as torch 1.13's torch.optim.AdamW printed them (exact bits),
// torch.nn.utils.clip_grad_norm_'s outputs, the transformers schedule
// formulas evaluated by hand at their boundaries, and the threaded vector
// versions against the scalar formula and a plain double sum.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optim.h"
#include "tests/test_util.h"

enum { P = 6, STEPS = 3 };

static const float p0[P] = {0.5f, -0.25f, 1.5f, 0.125f, -2.0f, 0.75f};
// Gradients include values near the eps scale and exact zeros.
static const float G[STEPS][P] = {
    {0.1f, -0.2f, 0.3f, -1e-3f, 2.0f, 0.0f},
    {0.05f, 0.4f, -0.3f, 2e-3f, -1.0f, 1e-9f},
    {-0.2f, 0.1f, 0.3f, -5e-4f, 0.5f, -1e-9f},
};
static const double lrs[STEPS] = {1e-2, 5e-3, 2.5e-3};

static void test_adamw(void) {
    float p[P], m[P] = {0}, v[P] = {0};
    memcpy(p, p0, sizeof p);
    // Decay on the first three values only (the "matrix" range).
    ParamRange ranges[2] = {{"w", 0, 3, 1}, {"norm", 3, 3, 0}};
    AdamWConfig cfg = {0, 0.9, 0.999, 1e-8, 0.1};
    double rp[P], rm[P] = {0}, rv[P] = {0};
    for (int i = 0; i < P; i++)
        rp[i] = p0[i];
    for (int t = 1; t <= STEPS; t++) {
        cfg.lr = lrs[t - 1];
        adamw_step(p, G[t - 1], m, v, ranges, 2, t, &cfg);
        // Loshchilov & Hutter's AdamW as torch implements it, in double.
        for (int i = 0; i < P; i++) {
            double g = G[t - 1][i];
            double wd = i < 3 ? 0.1 : 0.0;
            rp[i] -= cfg.lr * wd * rp[i];
            rm[i] = 0.9 * rm[i] + 0.1 * g;
            rv[i] = 0.999 * rv[i] + 0.001 * g * g;
            double mhat = rm[i] / (1 - pow(0.9, t));
            double denom = sqrt(rv[i]) / sqrt(1 - pow(0.999, t)) + 1e-8;
            rp[i] -= cfg.lr * mhat / denom;
        }
        for (int i = 0; i < P; i++) {
            CHECK_CLOSE(p[i], rp[i], 1e-6, 1e-9);
            CHECK_CLOSE(m[i], rm[i], 1e-6, 1e-15);
            CHECK_CLOSE(v[i], rv[i], 1e-6, 1e-18);
        }
        if (t == 1) {
            // First step: m_hat = g, v_hat = g^2, so each value moves by lr
            // against its gradient sign (less the decay), and not at all where g = 0.
            CHECK_CLOSE(p[0], 0.5 * (1 - 1e-3) - 1e-2 * 0.1 / (0.1 + 1e-8), 1e-7, 0);
            CHECK_CLOSE(p[4], -2.0 - 1e-2, 1e-7, 0);
            CHECK(p[5] == 0.75f);
        }
    }
    // torch.optim.AdamW([{decay 0.1}, {decay 0}], betas=(0.9, 0.999), eps=1e-8)
    // over the same gradients and lrs, float32 results as float.hex() gives them.
    const float torch_p[P] = {0x1.f0a0fap-2f, -0x1.f08412p-3f, 0x1.7c9f6ap+0f,
                              0x1.1007f4p-3f, -0x1.018f34p+1f, 0x1.7fe0e8p-1f};
    for (int i = 0; i < P; i++) {
        CHECK_MSG(p[i] == torch_p[i], "param %d: %a vs torch %a", i, p[i], torch_p[i]);
    }
}

static void test_adamw_no_decay_when_lr_zero(void) {
    // lr 0 (first warmup step): nothing moves, but the moments advance.
    float p[2] = {1.0f, -1.0f}, m[2] = {0}, v[2] = {0};
    const float g[2] = {0.5f, -0.25f};
    ParamRange r = {"w", 0, 2, 1};
    AdamWConfig cfg = {0.0, 0.9, 0.999, 1e-8, 0.01};
    adamw_step(p, g, m, v, &r, 1, 1, &cfg);
    CHECK(p[0] == 1.0f && p[1] == -1.0f);
    CHECK_CLOSE(m[0], 0.05, 1e-7, 0);
    CHECK_CLOSE(v[1], 0.001 * 0.0625, 1e-6, 0);
}

static void test_clip(void) {
    float g[2] = {3.0f, 4.0f};
    CHECK_CLOSE(clip_grad_norm(g, 2, 1.0), 5.0, 1e-12, 0);
    // torch: clip_grad_norm_([x], 1.0) with x.grad = [3, 4]
    CHECK_MSG(g[0] == 0x1.33333p-1f && g[1] == 0x1.999994p-1f, "%a %a", g[0], g[1]);
    // max_norm equal to the norm still scales by max/(norm + 1e-6) < 1, as torch
    g[0] = 3.0f, g[1] = 4.0f;
    CHECK_CLOSE(clip_grad_norm(g, 2, 5.0), 5.0, 1e-12, 0);
    CHECK_MSG(g[0] == 0x1.7ffffap+1f && g[1] == 0x1.fffff8p+1f, "%a %a", g[0], g[1]);
    // a norm below max_norm: untouched
    g[0] = 3.0f, g[1] = 4.0f;
    CHECK_CLOSE(clip_grad_norm(g, 2, 10.0), 5.0, 1e-12, 0);
    CHECK(g[0] == 3.0f && g[1] == 4.0f);
    // max_norm 0 disables clipping but still reports the norm
    g[0] = 300.0f, g[1] = 400.0f;
    CHECK_CLOSE(clip_grad_norm(g, 2, 0.0), 500.0, 1e-12, 0);
    CHECK(g[0] == 300.0f && g[1] == 400.0f);
    // the norm accumulates in double (a float sum of 1e6 squares drifts ~1e-4)
    enum { BIG = 1000000 };
    static float big[BIG];
    for (int i = 0; i < BIG; i++)
        big[i] = 1e-3f;
    CHECK_CLOSE(clip_grad_norm(big, BIG, 0.0), sqrt(BIG * (double)1e-3f * 1e-3f), 1e-9, 0);
}

// Deterministic values in (-1, 1) (splitmix64).
static double unit(unsigned long long *s) {
    unsigned long long z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1.0p-52 - 1.0;
}

// torch 1.13's AdamW element update written out one operation per statement
// (the order optim.c documents): the expectation for the vector kernels.
static void adamw_scalar(float *p, const float *g, float *m, float *v, size_t n, double lr,
                         double wd, int t, double b1, double b2, double eps) {
    float decay = (float)(1.0 - lr * wd);
    float neg_step = (float)(-(lr / (1.0 - pow(b1, t))));
    float bc2_sqrt = (float)sqrt(1.0 - pow(b2, t));
    for (size_t i = 0; i < n; i++) {
        float pi = p[i] * decay;
        float m_b1 = m[i] * (float)b1;
        float mi = fmaf(g[i], (float)(1.0 - b1), m_b1);
        float g_omb2 = (float)(1.0 - b2) * g[i];
        float v_b2 = v[i] * (float)b2;
        float vi = fmaf(g_omb2, g[i], v_b2);
        float root = sqrtf(vi);
        float denom = root / bc2_sqrt;
        denom = denom + (float)eps;
        float upd = neg_step * mi;
        upd = upd / denom;
        p[i] = pi + upd;
        m[i] = mi;
        v[i] = vi;
    }
}

// adamw_step_pool and clip_grad_norm_pool without a pool and on pools of 1,
// 2 and 3 threads, over enough elements for several tasks with ragged ends:
// AdamW equal bit for bit to adamw_scalar, the norm the same bits on every
// pool and within 1e-12 of a plain double sum, the clipped gradients equal to
// g * coef.
static void test_pool_bit_identical(void) {
    enum { N = 200003, N_A = 70001, N_B = 5, STEPS_P = 3 };
    ParamRange ranges[3] = {
        {"a", 0, N_A, 1}, {"b", N_A, N_B, 0}, {"c", N_A + N_B, N - N_A - N_B, 1}};
    const double lr_t[STEPS_P] = {1e-3, 3e-4, 5e-2};
    AdamWConfig cfg = {0, 0.9, 0.999, 1e-8, 0.1};
    float *p0 = malloc(N * sizeof(float)), *g0 = malloc(N * sizeof(float));
    float *m0 = malloc(N * sizeof(float)), *v0 = malloc(N * sizeof(float));
    float *rp = malloc(N * sizeof(float)), *rm = malloc(N * sizeof(float));
    float *rv = malloc(N * sizeof(float)), *p = malloc(N * sizeof(float));
    float *m = malloc(N * sizeof(float)), *v = malloc(N * sizeof(float));
    float *g = malloc(N * sizeof(float)), *rg = malloc(N * sizeof(float));
    CHECK(p0 && g0 && m0 && v0 && rp && rm && rv && p && m && v && g && rg);
    if (!(p0 && g0 && m0 && v0 && rp && rm && rv && p && m && v && g && rg)) goto done;
    unsigned long long seed = 12345;
    for (int i = 0; i < N; i++) {
        p0[i] = (float)unit(&seed);
        // Gradients over many scales, with exact zeros and values near eps.
        double u = unit(&seed);
        g0[i] = i % 97 == 0 ? 0.0f : (float)(u * pow(10.0, -(double)(i % 9)));
        m0[i] = (float)(0.1 * unit(&seed));
        v0[i] = (float)(1e-4 * fabs(unit(&seed)));
    }
    // The expectation: each range through the scalar formula.
    memcpy(rp, p0, N * sizeof(float));
    memcpy(rm, m0, N * sizeof(float));
    memcpy(rv, v0, N * sizeof(float));
    for (int t = 1; t <= STEPS_P; t++)
        for (int r = 0; r < 3; r++) {
            size_t o = ranges[r].offset;
            adamw_scalar(rp + o, g0 + o, rm + o, rv + o, ranges[r].count, lr_t[t - 1],
                         ranges[r].decay ? cfg.weight_decay : 0.0, t, cfg.beta1, cfg.beta2,
                         cfg.eps);
        }
    double ss = 0.0;
    for (int i = 0; i < N; i++)
        ss += (double)g0[i] * g0[i];
    double ref_norm = sqrt(ss), norm0 = 0.0;

    const int sizes[4] = {0, 1, 2, 3}; // 0: no pool
    for (int si = 0; si < 4; si++) {
        OpsPool *pool = NULL;
        if (sizes[si] > 0) {
            CHECK(ops_pool_create(&pool, sizes[si]) == 0 && pool);
            if (!pool) continue;
        }
        memcpy(p, p0, N * sizeof(float));
        memcpy(m, m0, N * sizeof(float));
        memcpy(v, v0, N * sizeof(float));
        for (int t = 1; t <= STEPS_P; t++) {
            cfg.lr = lr_t[t - 1];
            adamw_step_pool(pool, p, g0, m, v, ranges, 3, t, &cfg);
        }
        int bad = -1;
        for (int i = 0; i < N && bad < 0; i++)
            if (memcmp(&p[i], &rp[i], sizeof(float)) || memcmp(&m[i], &rm[i], sizeof(float)) ||
                memcmp(&v[i], &rv[i], sizeof(float)))
                bad = i;
        CHECK_MSG(bad < 0, "threads %d, element %d: p %a m %a v %a vs scalar %a %a %a", sizes[si],
                  bad, p[bad < 0 ? 0 : bad], m[bad < 0 ? 0 : bad], v[bad < 0 ? 0 : bad],
                  rp[bad < 0 ? 0 : bad], rm[bad < 0 ? 0 : bad], rv[bad < 0 ? 0 : bad]);

        // max_norm 0 reports the norm and leaves the gradients alone.
        memcpy(g, g0, N * sizeof(float));
        double n_plain = clip_grad_norm_pool(pool, g, N, 0.0);
        CHECK(memcmp(g, g0, N * sizeof(float)) == 0);
        // Clipping to 1 (the norm is ~ 100): g * coef, coef as torch forms it.
        double norm = clip_grad_norm_pool(pool, g, N, 1.0);
        CHECK(memcmp(&norm, &n_plain, sizeof norm) == 0);
        CHECK_CLOSE(norm, ref_norm, 1e-12, 0);
        if (si == 0) norm0 = norm;
        CHECK_MSG(memcmp(&norm, &norm0, sizeof norm) == 0, "threads %d: norm %a vs %a", sizes[si],
                  norm, norm0);
        float coef = (1.0f / ((float)norm + 1e-6f)) * 1.0f;
        CHECK(coef < 1.0f);
        for (int i = 0; i < N; i++)
            rg[i] = g0[i] * coef;
        CHECK(memcmp(g, rg, N * sizeof(float)) == 0);
        ops_pool_free(pool);
    }
    // adamw_step and clip_grad_norm are the pool-less calls.
    memcpy(p, p0, N * sizeof(float));
    memcpy(m, m0, N * sizeof(float));
    memcpy(v, v0, N * sizeof(float));
    for (int t = 1; t <= STEPS_P; t++) {
        cfg.lr = lr_t[t - 1];
        adamw_step(p, g0, m, v, ranges, 3, t, &cfg);
    }
    CHECK(memcmp(p, rp, N * sizeof(float)) == 0 && memcmp(m, rm, N * sizeof(float)) == 0 &&
          memcmp(v, rv, N * sizeof(float)) == 0);
    memcpy(g, g0, N * sizeof(float));
    double norm = clip_grad_norm(g, N, 0.0);
    CHECK(memcmp(&norm, &norm0, sizeof norm) == 0);
done:
    free(p0), free(g0), free(m0), free(v0), free(rp), free(rm);
    free(rv), free(p), free(m), free(v), free(g), free(rg);
}

static Recipe sched(LrSchedule s, double lr, int warmup_steps, double warmup_ratio) {
    Recipe r;
    memset(&r, 0, sizeof r);
    r.learning_rate = lr;
    r.lr_scheduler_type = s;
    r.warmup_steps = warmup_steps;
    r.warmup_ratio = warmup_ratio;
    return r;
}

static void test_schedules(void) {
    const double lr = 1e-3;
    // linear, 10 steps, 2 warmup: 0, lr/2, lr, then (10 - s)/8 down to 0
    Recipe r = sched(SCHED_LINEAR, lr, 2, 0);
    CHECK_CLOSE(lr_at(&r, 0, 10, 2), 0.0, 0, 0);
    CHECK_CLOSE(lr_at(&r, 1, 10, 2), 0.5e-3, 1e-15, 0);
    CHECK_CLOSE(lr_at(&r, 2, 10, 2), 1e-3, 1e-15, 0);
    CHECK_CLOSE(lr_at(&r, 6, 10, 2), 1e-3 * 4.0 / 8.0, 1e-15, 0);
    CHECK_CLOSE(lr_at(&r, 9, 10, 2), 1e-3 / 8.0, 1e-15, 0);
    CHECK_CLOSE(lr_at(&r, 10, 10, 2), 0.0, 0, 0);
    CHECK_CLOSE(lr_at(&r, 12, 10, 2), 0.0, 0, 0); // clamped at 0
    // linear, no warmup: starts at the full rate
    CHECK_CLOSE(lr_at(&r, 0, 4, 0), 1e-3, 1e-15, 0);
    CHECK_CLOSE(lr_at(&r, 3, 4, 0), 0.25e-3, 1e-15, 0);
    // the golden runs: 3 steps, warmup 1 -> 0, lr, lr/2
    CHECK_CLOSE(lr_at(&r, 0, 3, 1), 0.0, 0, 0);
    CHECK_CLOSE(lr_at(&r, 1, 3, 1), 1e-3, 1e-15, 0);
    CHECK_CLOSE(lr_at(&r, 2, 3, 1), 0.5e-3, 1e-15, 0);
    // total == warmup: max(1, total - warmup) keeps it finite
    CHECK_CLOSE(lr_at(&r, 2, 2, 2), 0.0, 0, 0);

    // cosine (half a cycle): lr, lr/2 at the middle, 0 at the end
    Recipe c = sched(SCHED_COSINE, lr, 0, 0);
    CHECK_CLOSE(lr_at(&c, 0, 10, 0), 1e-3, 1e-15, 0);
    CHECK_CLOSE(lr_at(&c, 5, 10, 0), 0.5e-3, 1e-12, 0);
    CHECK_CLOSE(lr_at(&c, 10, 10, 0), 0.0, 0, 1e-18);
    CHECK_CLOSE(lr_at(&c, 1, 3, 0), 1e-3 * 0.5 * (1 + cos(M_PI / 3)), 1e-15, 0);
    CHECK_CLOSE(lr_at(&c, 1, 10, 4), 1e-3 * 0.25, 1e-15, 0); // warmup 1/4
    CHECK_CLOSE(lr_at(&c, 7, 10, 4), 0.5e-3, 1e-12, 0);      // progress 3/6

    // constant: warmup then flat; flat from step 0 without warmup
    Recipe k = sched(SCHED_CONSTANT, lr, 0, 0);
    CHECK_CLOSE(lr_at(&k, 0, 10, 0), 1e-3, 0, 0);
    CHECK_CLOSE(lr_at(&k, 9, 10, 0), 1e-3, 0, 0);
    CHECK_CLOSE(lr_at(&k, 1, 10, 3), 1e-3 / 3, 1e-15, 0);
    CHECK_CLOSE(lr_at(&k, 3, 10, 3), 1e-3, 0, 0);
    CHECK_CLOSE(lr_at(&k, 50, 10, 3), 1e-3, 0, 0);

    // warmup steps: explicit count wins, else ceil(ratio * total) in double
    Recipe w = sched(SCHED_LINEAR, lr, 5, 0.5);
    CHECK_INT_EQ(lr_warmup_steps(&w, 100), 5);
    w.warmup_steps = 0;
    CHECK_INT_EQ(lr_warmup_steps(&w, 100), 50);
    w.warmup_ratio = 0.25;
    CHECK_INT_EQ(lr_warmup_steps(&w, 10), 3); // ceil(2.5)
    w.warmup_ratio = 0.07;
    CHECK_INT_EQ(lr_warmup_steps(&w, 100), 8); // 100 * 0.07 == 7.000000000000001
    w.warmup_ratio = 0.0;
    CHECK_INT_EQ(lr_warmup_steps(&w, 100), 0);
}

int main(void) {
    test_adamw();
    test_adamw_no_decay_when_lr_zero();
    test_clip();
    test_pool_bit_identical();
    test_schedules();
    return test_summary("optim");
}
