// ops.c — forward/backward pairs of the decoder's ops (see ops.h for the
// shapes and the accumulate-into-gradients convention), the thread pool that
// runs model.c's parallel regions, and the vector kernels under the
// element-wise ops. Everything is fp32; matmuls go through cblas_sgemm.
//
// The vector kernels (ops_simd.h) are written once with GCC vector
// extensions and compiled for AVX-512, AVX2 and the baseline; the set is
// picked at first use. No FMA contraction (C11 mode keeps
// -ffp-contract=off), so each set computes exactly what the source says.
// Tails shorter than a vector go through zero-padded copies.
#include "ops.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define OPS_MULTI_ISA 1
#include <immintrin.h>
#endif

// vf / vi: VW floats / int32 (the instruction set's native width), typedef'd
// by ops_simd.h for each set; these macros are used inside it only.
// (-0.0 + s is s for every s, so this folds to one broadcast; 0.0 + s would
// not, -0.0 + 0.0 being +0.0.)
#define VSPLAT(s) (-(vf){0} + (float)(s))
#define VISPLAT(s) ((vi){0} + (int32_t)(s))
#define VLOAD(v, p) memcpy(&(v), (p), sizeof(vf))
#define VSTORE(p, v) memcpy((p), &(v), sizeof(vf))
// Lane-wise m ? a : b for a comparison mask m (all ones / all zeros).
#define VSEL(m, a, b) ((vf)(((vi)(a) & (m)) | ((vi)(b) & ~(m))))

// exp of every lane (Cephes expf: n = round(x log2 e), r = x - n ln 2 in two
// parts, 2^n * (1 + r + r^2 p(r))). Below EXP_LO the result is 0, above
// EXP_HI (log FLT_MAX) inf; NaN lanes stay NaN.
#define EXP_LO (-87.33654f)
#define EXP_HI 88.72283f
// The shared core of VEXP and VEXP_NEG: declares t (x log2 e + 1.5 * 2^23, whose
// low bits hold n = round(x log2 e)), n, and p = exp(r) for r = x - n ln 2.
// In VFMA steps: one rounding each where the set has a fused multiply-add
// (the Cody-Waite reduction is then exact to more bits, and the polynomial
// half as long a dependency chain), two on the baseline.
#define VEXP_POLY(xc, t_, n_, p_)                                                                  \
    vf t_ = VFMA((xc), VSPLAT(1.44269504088896341f), VSPLAT(12582912.0f));                         \
    vf n_ = t_ - VSPLAT(12582912.0f);                                                              \
    vf r_ = VFMA(n_, VSPLAT(-0.693359375f), (xc));                                                 \
    r_ = VFMA(n_, VSPLAT(2.12194440e-4f), r_);                                                     \
    vf p_ = VSPLAT(1.9875691500e-4f);                                                              \
    p_ = VFMA(p_, r_, VSPLAT(1.3981999507e-3f));                                                   \
    p_ = VFMA(p_, r_, VSPLAT(8.3334519073e-3f));                                                   \
    p_ = VFMA(p_, r_, VSPLAT(4.1665795894e-2f));                                                   \
    p_ = VFMA(p_, r_, VSPLAT(1.6666665459e-1f));                                                   \
    p_ = VFMA(p_, r_, VSPLAT(5.0000001201e-1f));                                                   \
    p_ = VFMA(p_, r_ * r_, r_) + VSPLAT(1.0f)
#define VEXP(out, xin)                                                                             \
    do {                                                                                           \
        vf x_ = (xin);                                                                             \
        vi lo_ = x_ < VSPLAT(EXP_LO);                                                              \
        vi hi_ = x_ > VSPLAT(EXP_HI);                                                              \
        vi nan_ = x_ != x_;                                                                        \
        vf xc_ = VSEL(lo_ | hi_ | nan_, VSPLAT(0.0f), x_);                                         \
        VEXP_POLY(xc_, t_, n_, p_);                                                                \
        /* 2^n as 2^(n-s) * 2^s, s = (n > 0), so that n = 128 stays representable */               \
        vi s_ = n_ > VSPLAT(0.0f);                                                                 \
        vi e_ = ((vi)t_ - VISPLAT(0x4B400000) + VISPLAT(127) + s_) << 23;                          \
        vf y_ = p_ * (vf)e_ * (VSPLAT(1.0f) + (vf)((vi)VSPLAT(1.0f) & s_));                        \
        /* 0 below, inf above the range, NaN for NaN: plain bit operations */                      \
        (out) =                                                                                    \
            (vf)(((vi)y_ & ~(lo_ | hi_ | nan_)) | (hi_ & (vi)VSPLAT(INFINITY)) | (nan_ & (vi)x_)); \
    } while (0)

// VEXP for lanes known to be <= 0 or NaN (softmax arguments): the same
// polynomial without the overflow and NaN selects. -inf and anything below
// EXP_LO give 0; NaN propagates through the arithmetic.
#define VEXP_NEG(out, xin)                                                                         \
    do {                                                                                           \
        vf x_ = (xin);                                                                             \
        vi lo_ = x_ < VSPLAT(EXP_LO);                                                              \
        vf xc_ = (vf)((vi)x_ & ~lo_);                                                              \
        VEXP_POLY(xc_, t_, n_, p_);                                                                \
        vi e_ = ((vi)t_ - VISPLAT(0x4B400000) + VISPLAT(127)) << 23;                               \
        (out) = (vf)((vi)(p_ * (vf)e_) & ~lo_);                                                    \
    } while (0)

static const int32_t k_iota[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

// Element-wise loop over j < n: loads a, b, c, d from pa..pd (a NULL
// pointer leaves its vector 0), runs BODY, stores o to po and, when po2 is
// not NULL, o2 to po2. The tail goes through zero-padded copies.
#define VLOOP(n, pa, pb, pc, pd, po, po2, BODY)                                                    \
    do {                                                                                           \
        vf a = {0}, b = {0}, c = {0}, d = {0}, o = {0}, o2 = {0};                                  \
        size_t j_ = 0, n_ = (n);                                                                   \
        for (; j_ + VW <= n_; j_ += VW) {                                                          \
            if (pa) VLOAD(a, (pa) + j_);                                                           \
            if (pb) VLOAD(b, (pb) + j_);                                                           \
            if (pc) VLOAD(c, (pc) + j_);                                                           \
            if (pd) VLOAD(d, (pd) + j_);                                                           \
            BODY;                                                                                  \
            if (po) VSTORE((po) + j_, o);                                                          \
            if (po2) VSTORE((po2) + j_, o2);                                                       \
        }                                                                                          \
        if (j_ < n_) {                                                                             \
            float t_[4][VW] = {{0}}, bo_[VW];                                                      \
            size_t r_ = n_ - j_;                                                                   \
            if (pa) memcpy(t_[0], (pa) + j_, r_ * sizeof(float));                                  \
            if (pb) memcpy(t_[1], (pb) + j_, r_ * sizeof(float));                                  \
            if (pc) memcpy(t_[2], (pc) + j_, r_ * sizeof(float));                                  \
            if (pd) memcpy(t_[3], (pd) + j_, r_ * sizeof(float));                                  \
            VLOAD(a, t_[0]);                                                                       \
            VLOAD(b, t_[1]);                                                                       \
            VLOAD(c, t_[2]);                                                                       \
            VLOAD(d, t_[3]);                                                                       \
            BODY;                                                                                  \
            if (po) {                                                                              \
                VSTORE(bo_, o);                                                                    \
                memcpy((po) + j_, bo_, r_ * sizeof(float));                                        \
            }                                                                                      \
            if (po2) {                                                                             \
                VSTORE(bo_, o2);                                                                   \
                memcpy((po2) + j_, bo_, r_ * sizeof(float));                                       \
            }                                                                                      \
        }                                                                                          \
        (void)a, (void)b, (void)c, (void)d, (void)o2;                                              \
    } while (0)

static float *const NOF = NULL;

// sigmoid(x) = 1 / (1 + exp(-x)) on vectors
#define VSIGMOID(out, x)                                                                           \
    do {                                                                                           \
        vf e__;                                                                                    \
        VEXP(e__, VSPLAT(0.0f) - (x));                                                             \
        (out) = VSPLAT(1.0f) / (VSPLAT(1.0f) + e__);                                               \
    } while (0)

// The kernel sets. Each instruction set gets its own copy of ops_simd.h.
typedef struct {
    float (*vexp)(float *, const float *, float, float, float, int);
    float (*vexp_neg)(float *, const float *, float, float, float, int);
    float (*vmax)(const float *, int);
    float (*vdot)(const float *, const float *, int);
    void (*rmsnorm_fwd)(float *, float *, const float *, const float *, int, int, float);
    void (*rmsnorm_apply)(float *, const float *, const float *, const float *, int, int);
    void (*rmsnorm_bwd)(float *, float *, const float *, const float *, const float *,
                        const float *, int, int);
    void (*add)(float *, const float *, const float *, size_t);
    void (*scale)(float *, float, int);
    void (*softmax_grad)(float *, const float *, float, int);
    void (*swiglu_fwd)(float *, const float *, const float *, size_t);
    void (*swiglu_bwd)(float *, float *, const float *, const float *, const float *, size_t);
    void (*swiglu_bwd_inplace)(float *, float *, float *, const float *, size_t);
    size_t (*att_scratch)(int, int);
    void (*att_fwd)(float *, float *, float *, float *, const float *, const float *, const float *,
                    int, int, int, int, int, int);
    void (*att_bwd)(float *, float *, float *, float *, const float *, const float *, const float *,
                    const float *, const float *, const float *, int, int, int, int, int, int, int);
    void (*adamw)(float *, const float *, float *, float *, size_t, const OpsAdamW *);
    double (*sumsq)(const float *, size_t);
} Kernels;

#define KERNELS(P)                                                                                 \
    {                                                                                              \
        P##vexp, P##vexp_neg, P##vmax, P##vdot, P##rmsnorm_fwd, P##rmsnorm_apply, P##rmsnorm_bwd,  \
            P##add, P##scale, P##softmax_grad, P##swiglu_fwd, P##swiglu_bwd,                       \
            P##swiglu_bwd_inplace, P##att_scratch, P##att_fwd, P##att_bwd, P##adamw, P##sumsq      \
    }

// Query rows per block of the fused attention.
#define ATT_RB 8

// VFMA may round twice (the baseline has no fused multiply-add); the
// optimizer's VFMA_EXACT and VSQRT must round once, as fmaf and sqrtf do.
#define VW 4
#define VFMA(a, b, c) ((a) * (b) + (c))
#define VFMA_EXACT(out, a, b, c)                                                                   \
    do {                                                                                           \
        vf fa_ = (a), fb_ = (b), fc_ = (c);                                                        \
        for (int l_ = 0; l_ < VW; l_++)                                                            \
            (out)[l_] = fmaf(fa_[l_], fb_[l_], fc_[l_]);                                           \
    } while (0)
#define VSQRT(out, x)                                                                              \
    do {                                                                                           \
        vf sx_ = (x);                                                                              \
        for (int l_ = 0; l_ < VW; l_++)                                                            \
            (out)[l_] = sqrtf(sx_[l_]);                                                            \
    } while (0)
#define KN(f) kbase_##f
#include "ops_simd.h"
#undef KN
#undef VSQRT
#undef VFMA_EXACT
#undef VFMA
#undef VW
static const Kernels k_base = KERNELS(kbase_);

#ifdef OPS_MULTI_ISA
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define VW 8
#define VFMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define VFMA_EXACT(out, a, b, c) ((out) = _mm256_fmadd_ps(a, b, c))
#define VSQRT(out, x) ((out) = _mm256_sqrt_ps(x))
#define KN(f) kavx2_##f
#include "ops_simd.h"
#undef KN
#undef VSQRT
#undef VFMA_EXACT
#undef VFMA
#undef VW
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f")
#define VW 16
#define VFMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define VFMA_EXACT(out, a, b, c) ((out) = _mm512_fmadd_ps(a, b, c))
#define VSQRT(out, x) ((out) = _mm512_sqrt_ps(x))
#define KN(f) kavx512_##f
#include "ops_simd.h"
#undef KN
#undef VSQRT
#undef VFMA_EXACT
#undef VFMA
#undef VW
#pragma GCC pop_options
static const Kernels k_avx2 = KERNELS(kavx2_), k_avx512 = KERNELS(kavx512_);
#endif

static const Kernels *k_sel = &k_base;
static pthread_once_t k_once = PTHREAD_ONCE_INIT;

static void kernels_pick(void) {
#ifdef OPS_MULTI_ISA
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        k_sel = &k_avx512;
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        k_sel = &k_avx2;
#endif
}

static const Kernels *K(void) {
    pthread_once(&k_once, kernels_pick);
    return k_sel;
}

float ops_vexp(float *y, const float *x, float a, float b, float scale, int n) {
    return K()->vexp(y, x, a, b, scale, n);
}

float ops_vmax(const float *x, int n) {
    return K()->vmax(x, n);
}

void ops_adamw(float *p, const float *g, float *m, float *v, size_t n, const OpsAdamW *c) {
    K()->adamw(p, g, m, v, n, c);
}

double ops_sumsq(const float *x, size_t n) {
    return K()->sumsq(x, n);
}

void ops_scale(float *x, float s, size_t n) {
    // The kernel counts in int; 2^30 is a multiple of every VW, so only the
    // last piece has a tail.
    const size_t piece = (size_t)1 << 30;
    for (size_t j = 0; j < n; j += piece)
        K()->scale(x + j, s, (int)(n - j < piece ? n - j : piece));
}

// ---------------------------------------------------------------------------
// Thread pool. Tasks are claimed from one atomic word holding the region's
// generation (high 32 bits) and the next task index, so a worker that wakes
// up late for a finished region can never take a task of the next one.

typedef struct {
    OpsPool *p;
    int id;
    pthread_t th;
} PoolWorker;

struct OpsPool {
    int n;
    PoolWorker *w;
    pthread_mutex_t mu;
    pthread_cond_t go, done_cv;
    int stop;
    uint32_t gen;
    _Atomic uint32_t gen_spin; // gen, for the spin before sleeping
    OpsTaskFn fn;
    void *ctx;
    int n_tasks;
    _Atomic uint64_t claim;
    atomic_int done;
};

static void pool_work(OpsPool *p, uint32_t gen, OpsTaskFn fn, void *ctx, int n_tasks, int id) {
    for (;;) {
        uint64_t c = atomic_load(&p->claim);
        if ((uint32_t)(c >> 32) != gen || (int)(uint32_t)c >= n_tasks) return;
        if (!atomic_compare_exchange_weak(&p->claim, &c, c + 1)) continue;
        fn(ctx, (int)(uint32_t)c, id);
        if (atomic_fetch_add(&p->done, 1) + 1 == n_tasks) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_broadcast(&p->done_cv);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

// Regions follow each other within microseconds, while waking a sleeping
// thread can take far longer (on virtual machines especially). So a worker
// (or the caller at the end of a region) first polls for up to SPIN_NS
// before it sleeps on the condition variable.
#define SPIN_NS 100000

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

// Polls until *v != old or SPIN_NS pass.
static void spin_while_eq(_Atomic uint32_t *v, uint32_t old) {
    uint64_t t0 = 0;
    for (unsigned i = 1;; i++) {
        if (atomic_load_explicit(v, memory_order_acquire) != old) return;
        cpu_relax();
        if ((i & 63) == 0) {
            uint64_t t = now_ns();
            if (!t0)
                t0 = t;
            else if (t - t0 > SPIN_NS)
                return;
        }
    }
}

static void *pool_main(void *arg) {
    PoolWorker *w = arg;
    OpsPool *p = w->p;
    uint32_t seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        if (!p->stop && p->gen == seen) {
            pthread_mutex_unlock(&p->mu);
            spin_while_eq(&p->gen_spin, seen);
            pthread_mutex_lock(&p->mu);
        }
        while (!p->stop && p->gen == seen)
            pthread_cond_wait(&p->go, &p->mu);
        if (p->stop) break;
        seen = p->gen;
        OpsTaskFn fn = p->fn;
        void *ctx = p->ctx;
        int n = p->n_tasks;
        pthread_mutex_unlock(&p->mu);
        pool_work(p, seen, fn, ctx, n, w->id);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int ops_pool_create(OpsPool **out, int n_threads) {
    *out = NULL;
    if (n_threads < 1) return -1;
    OpsPool *p = calloc(1, sizeof *p);
    if (!p) return -1;
    p->w = calloc((size_t)n_threads, sizeof *p->w);
    if (!p->w) {
        free(p);
        return -1;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->go, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    atomic_init(&p->claim, 0);
    atomic_init(&p->done, 0);
    atomic_init(&p->gen_spin, 0);
    p->n = 1;
    for (int i = 1; i < n_threads; i++) {
        p->w[i].p = p;
        p->w[i].id = i;
        if (pthread_create(&p->w[i].th, NULL, pool_main, &p->w[i]) != 0) {
            ops_pool_free(p);
            return -1;
        }
        p->n = i + 1;
    }
    *out = p;
    return 0;
}

void ops_pool_free(OpsPool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    atomic_fetch_add(&p->gen_spin, 1); // ends any spin
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n; i++)
        pthread_join(p->w[i].th, NULL);
    pthread_cond_destroy(&p->go);
    pthread_cond_destroy(&p->done_cv);
    pthread_mutex_destroy(&p->mu);
    free(p->w);
    free(p);
}

int ops_pool_threads(const OpsPool *p) {
    return p ? p->n : 1;
}

void ops_pool_run(OpsPool *p, OpsTaskFn fn, void *ctx, int n_tasks) {
    if (n_tasks <= 0) return;
    if (!p || p->n == 1 || n_tasks == 1) {
        for (int t = 0; t < n_tasks; t++)
            fn(ctx, t, 0);
        return;
    }
    pthread_mutex_lock(&p->mu);
    uint32_t gen = ++p->gen;
    p->fn = fn;
    p->ctx = ctx;
    p->n_tasks = n_tasks;
    atomic_store(&p->done, 0);
    atomic_store(&p->claim, (uint64_t)gen << 32);
    atomic_store_explicit(&p->gen_spin, gen, memory_order_release);
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    pool_work(p, gen, fn, ctx, n_tasks, 0);
    uint64_t t0 = now_ns();
    while (atomic_load(&p->done) < n_tasks && now_ns() - t0 < SPIN_NS)
        for (int i = 0; i < 64; i++)
            cpu_relax();
    pthread_mutex_lock(&p->mu);
    while (atomic_load(&p->done) < n_tasks)
        pthread_cond_wait(&p->done_cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

// ---------------------------------------------------------------------------
// Ops

void ops_rope_tables(float *cos_t, float *sin_t, int seq_len, int head_size, float theta) {
    int half = head_size / 2;
    for (int j = 0; j < half; j++) {
        // Same float expressions as run.c (head_dim = 2j there), so greedy
        // decoding with these tables reproduces run.c's ids bit for bit.
        float freq = 1.0f / powf(theta, (float)(2 * j) / (float)head_size);
        for (int pos = 0; pos < seq_len; pos++) {
            float val = (float)pos * freq;
            cos_t[(size_t)pos * half + j] = cosf(val);
            sin_t[(size_t)pos * half + j] = sinf(val);
        }
    }
}

void embedding_forward(float *out, const int *tokens, const float *emb, int N, int D) {
    for (int i = 0; i < N; i++)
        memcpy(out + (size_t)i * D, emb + (size_t)tokens[i] * D, (size_t)D * sizeof(float));
}

void embedding_backward(float *demb, const float *dout, const int *tokens, int N, int D) {
    for (int i = 0; i < N; i++) {
        float *dst = demb + (size_t)tokens[i] * D;
        const float *src = dout + (size_t)i * D;
        for (int d = 0; d < D; d++)
            dst[d] += src[d];
    }
}

void rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int N, int D,
                     float eps) {
    K()->rmsnorm_fwd(out, rstd, x, w, N, D, eps);
}

void rmsnorm_apply(float *out, const float *x, const float *w, const float *rstd, int N, int D) {
    K()->rmsnorm_apply(out, x, w, rstd, N, D);
}

void rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                      const float *rstd, int N, int D) {
    K()->rmsnorm_bwd(dx, dw, dout, x, w, rstd, N, D);
}

void matmul_forward(float *out, const float *inp, const float *w, int N, int C_in, int C_out) {
    if (N == 0) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, C_out, C_in, 1.0f, inp, C_in, w, C_in,
                0.0f, out, C_out);
}

void matmul_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                     int N, int C_in, int C_out) {
    if (N == 0) return;
    if (dinp)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C_in, C_out, 1.0f, dout, C_out, w,
                    C_in, 1.0f, dinp, C_in);
    if (dw)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, C_out, C_in, N, 1.0f, dout, C_out, inp,
                    C_in, 1.0f, dw, C_in);
}

void matmul_backward_dw_rows(float *dw, const float *dout, const float *inp, int N, int C_in,
                             int C_out, int o0, int o1) {
    if (N == 0 || o1 <= o0) return;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, o1 - o0, C_in, N, 1.0f, dout + o0, C_out,
                inp, C_in, 1.0f, dw + (size_t)o0 * C_in, C_in);
}

void residual_forward(float *out, const float *a, const float *b, size_t n) {
    K()->add(out, a, b, n);
}

void ops_positions(int *pos, const int *offsets, int n_seqs) {
    for (int s = 0; s < n_seqs; s++)
        for (int i = offsets[s]; i < offsets[s + 1]; i++)
            pos[i] = i - offsets[s];
}

// Rotates each pair of n_heads heads of N rows (row stride ld) by +angle
// (dir = 1) or -angle (dir = -1, the transpose).
static void rope_rows(float *x, size_t ld, const int *pos, const float *cos_t, const float *sin_t,
                      int N, int n_heads, int head_size, float dir) {
    int half = head_size / 2;
    for (int i = 0; i < N; i++) {
        const float *c = cos_t + (size_t)pos[i] * half;
        const float *s = sin_t + (size_t)pos[i] * half;
        float *xi = x + (size_t)i * ld;
        for (int h = 0; h < n_heads; h++) {
            float *xh = xi + (size_t)h * head_size;
            for (int j = 0; j < half; j++) {
                float x0 = xh[2 * j], x1 = xh[2 * j + 1];
                float sn = dir * s[j];
                xh[2 * j] = x0 * c[j] - x1 * sn;
                xh[2 * j + 1] = x0 * sn + x1 * c[j];
            }
        }
    }
}

void rope_forward(float *x, const int *pos, const float *cos_t, const float *sin_t, int N,
                  int n_heads, int head_size) {
    rope_rows(x, (size_t)n_heads * head_size, pos, cos_t, sin_t, N, n_heads, head_size, 1.0f);
}

void rope_backward(float *dx, const int *pos, const float *cos_t, const float *sin_t, int N,
                   int n_heads, int head_size) {
    rope_rows(dx, (size_t)n_heads * head_size, pos, cos_t, sin_t, N, n_heads, head_size, -1.0f);
}

size_t attention_scratch_floats(int max_T) {
    size_t T = max_T > 0 ? (size_t)max_T : 0, B = T < ATTENTION_BLOCK ? T : ATTENTION_BLOCK;
    return 2 * B * T;
}

// Per query block of bq rows (i0 .. i0+bq-1) the keys 0 .. i0+bq-1 form a
// (bq, kend) tile; entries past a row's own position are zeroed so the
// following sgemms over the whole tile see the causal mask.
static void attention_forward_blas(float *out, float *row_max, float *row_inv, float *scratch,
                                   const float *q, const float *k, const float *v, int o, int T,
                                   int h, int NH, int NKV, int HS) {
    int C = NH * HS, KVC = NKV * HS, kh = h / (NH / NKV);
    float scale = 1.0f / sqrtf((float)HS);
    const float *qh = q + (size_t)o * C + (size_t)h * HS;
    const float *kk = k + (size_t)o * KVC + (size_t)kh * HS;
    const float *vv = v + (size_t)o * KVC + (size_t)kh * HS;
    float *oh = out + (size_t)o * C + (size_t)h * HS;
    float *S = scratch;
    for (int i0 = 0; i0 < T; i0 += ATTENTION_BLOCK) {
        int bq = T - i0 < ATTENTION_BLOCK ? T - i0 : ATTENTION_BLOCK, kend = i0 + bq;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bq, kend, HS, scale,
                    qh + (size_t)i0 * C, C, kk, KVC, 0.0f, S, kend);
        for (int r = 0; r < bq; r++) {
            int i = i0 + r, len = i + 1;
            float *row = S + (size_t)r * kend;
            float mx = ops_vmax(row, len);
            float inv = 1.0f / K()->vexp_neg(row, row, mx, 0.0f, 1.0f, len);
            for (int j = len; j < kend; j++)
                row[j] = 0.0f;
            row_max[(size_t)(o + i) * NH + h] = mx;
            row_inv[(size_t)(o + i) * NH + h] = inv;
        }
        // out = (exp(S - max) V) * inv: normalising the (bq, HS) result is
        // cheaper than the (bq, kend) tile.
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, bq, HS, kend, 1.0f, S, kend, vv, KVC,
                    0.0f, oh + (size_t)i0 * C, C);
        for (int r = 0; r < bq; r++) {
            float inv = row_inv[(size_t)(o + i0 + r) * NH + h];
            float *orow = oh + (size_t)(i0 + r) * C;
            K()->scale(orow, inv, HS);
        }
    }
}

static void attention_backward_blas(float *dq, float *dk, float *dv, float *scratch,
                                    const float *dout, const float *q, const float *k,
                                    const float *v, const float *row_max, const float *row_inv,
                                    int o, int T, int kh, int NH, int NKV, int HS) {
    int C = NH * HS, KVC = NKV * HS, group = NH / NKV;
    float scale = 1.0f / sqrtf((float)HS);
    size_t kvoff = (size_t)o * KVC + (size_t)kh * HS;
    size_t cap = (size_t)(T < ATTENTION_BLOCK ? T : ATTENTION_BLOCK) * (size_t)T;
    float *P = scratch, *dP = scratch + cap;
    const Kernels *kf = K();
    for (int h = kh * group; h < (kh + 1) * group; h++) {
        size_t qoff = (size_t)o * C + (size_t)h * HS;
        for (int i0 = 0; i0 < T; i0 += ATTENTION_BLOCK) {
            int bq = T - i0 < ATTENTION_BLOCK ? T - i0 : ATTENTION_BLOCK, kend = i0 + bq;
            size_t qb = qoff + (size_t)i0 * C;
            // The forward's probabilities: same sgemm, same exp, same max
            // and 1/sum as attention_forward_task.
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bq, kend, HS, scale, q + qb, C,
                        k + kvoff, KVC, 0.0f, P, kend);
            for (int r = 0; r < bq; r++) {
                int i = i0 + r, len = i + 1;
                float *row = P + (size_t)r * kend;
                size_t st = (size_t)(o + i) * NH + h;
                K()->vexp_neg(row, row, row_max[st], 0.0f, row_inv[st], len);
                for (int j = len; j < kend; j++)
                    row[j] = 0.0f;
            }
            // dP (bq, kend) = dOut_blk V^T; dV += P^T dOut_blk
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bq, kend, HS, 1.0f, dout + qb, C,
                        v + kvoff, KVC, 0.0f, dP, kend);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kend, HS, bq, 1.0f, P, kend,
                        dout + qb, C, 1.0f, dv + kvoff, KVC);
            // softmax backward, in place: dS = P * (dP - rowsum(P * dP))
            for (int r = 0; r < bq; r++) {
                int len = i0 + r + 1;
                const float *p = P + (size_t)r * kend;
                float *g = dP + (size_t)r * kend;
                kf->softmax_grad(g, p, kf->vdot(p, g, len), len);
                for (int j = len; j < kend; j++)
                    g[j] = 0.0f;
            }
            // dQ_blk += scale dS K; dK += scale dS^T Q_blk
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, bq, HS, kend, scale, dP, kend,
                        k + kvoff, KVC, 1.0f, dq + qb, C);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kend, HS, bq, scale, dP, kend,
                        q + qb, C, 1.0f, dk + kvoff, KVC);
        }
    }
}

size_t attention_task_scratch_floats(int max_T, int HS) {
    return K()->att_scratch(max_T > 0 ? max_T : 0, HS);
}

void attention_forward_task(float *out, float *row_max, float *row_inv, float *scratch,
                            const float *q, const float *k, const float *v, int o, int T, int h,
                            int NH, int NKV, int HS) {
    if (T > 0) K()->att_fwd(out, row_max, row_inv, scratch, q, k, v, o, T, h, NH, NKV, HS);
}

void attention_backward_task(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                             const float *q, const float *k, const float *v, const float *row_max,
                             const float *row_inv, int o, int T, int kh, int NH, int NKV, int HS,
                             const int *pos, const float *cos_t, const float *sin_t) {
    if (T == 0) return;
    K()->att_bwd(dq, dk, dv, scratch, dout, q, k, v, row_max, row_inv, o, T, kh, NH, NKV, HS, 0);
    if (cos_t) {
        int C = NH * HS, KVC = NKV * HS, group = NH / NKV;
        rope_rows(dq + (size_t)o * C + (size_t)kh * group * HS, (size_t)C, pos + o, cos_t, sin_t, T,
                  group, HS, -1.0f);
        rope_rows(dk + (size_t)o * KVC + (size_t)kh * HS, (size_t)KVC, pos + o, cos_t, sin_t, T, 1,
                  HS, -1.0f);
    }
}

void attention_backward_task_inplace(float *dout_dq, float *k_dk, float *v_dv, float *scratch,
                                     const float *q, const float *row_max, const float *row_inv,
                                     int o, int T, int kh, int NH, int NKV, int HS, const int *pos,
                                     const float *cos_t, const float *sin_t) {
    if (T == 0) return;
    K()->att_bwd(dout_dq, k_dk, v_dv, scratch, dout_dq, q, k_dk, v_dv, row_max, row_inv, o, T, kh,
                 NH, NKV, HS, 1);
    if (cos_t) {
        int C = NH * HS, KVC = NKV * HS, group = NH / NKV;
        rope_rows(dout_dq + (size_t)o * C + (size_t)kh * group * HS, (size_t)C, pos + o, cos_t,
                  sin_t, T, group, HS, -1.0f);
        rope_rows(k_dk + (size_t)o * KVC + (size_t)kh * HS, (size_t)KVC, pos + o, cos_t, sin_t, T,
                  1, HS, -1.0f);
    }
}

void attention_forward(float *out, float *row_max, float *row_inv, float *scratch, const float *q,
                       const float *k, const float *v, const int *offsets, int n_seqs, int NH,
                       int NKV, int HS) {
    for (int s = 0; s < n_seqs; s++) {
        int o = offsets[s], T = offsets[s + 1] - o;
        if (T == 0) continue;
        for (int h = 0; h < NH; h++)
            attention_forward_blas(out, row_max, row_inv, scratch, q, k, v, o, T, h, NH, NKV, HS);
    }
}

void attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                        const float *q, const float *k, const float *v, const float *row_max,
                        const float *row_inv, const int *offsets, int n_seqs, int NH, int NKV,
                        int HS) {
    for (int s = 0; s < n_seqs; s++) {
        int o = offsets[s], T = offsets[s + 1] - o;
        if (T == 0) continue;
        for (int kh = 0; kh < NKV; kh++)
            attention_backward_blas(dq, dk, dv, scratch, dout, q, k, v, row_max, row_inv, o, T, kh,
                                    NH, NKV, HS);
    }
}

void swiglu_forward(float *out, const float *h1, const float *h3, size_t n) {
    K()->swiglu_fwd(out, h1, h3, n);
}

void swiglu_backward(float *dh1, float *dh3, const float *dout, const float *h1, const float *h3,
                     size_t n) {
    K()->swiglu_bwd(dh1, dh3, dout, h1, h3, n);
}

void swiglu_backward_inplace(float *prod, float *h1, float *h3, const float *dout, size_t n) {
    K()->swiglu_bwd_inplace(prod, h1, h3, dout, n);
}

// Columns per exp call of the full-row softmax below: the float lane sums of
// one call stay short and their total is formed in double.
#define SUM_CHUNK 1024

void logsoftmax_gather_forward(float *logp, float *probs, const float *x, const float *wcls,
                               const int *targets, int M, int D, int V) {
    if (M == 0) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, V, D, 1.0f, x, D, wcls, D, 0.0f, probs,
                V);
    for (int i = 0; i < M; i++) {
        float *row = probs + (size_t)i * V;
        float mx = ops_vmax(row, V);
        float target_logit = row[targets[i]];
        double sum = 0.0;
        for (int j = 0; j < V; j += SUM_CHUNK) {
            int n = V - j < SUM_CHUNK ? V - j : SUM_CHUNK;
            sum += K()->vexp_neg(row + j, row + j, mx, 0.0f, 1.0f, n);
        }
        float inv = (float)(1.0 / sum);
        for (int j = 0; j < V; j++)
            row[j] *= inv;
        logp[i] = (float)((double)target_logit - (double)mx - log(sum));
    }
}

void logsoftmax_gather_backward(float *dx, float *dwcls, float *probs, const float *dlogp,
                                const float *x, const float *wcls, const int *targets, int M, int D,
                                int V) {
    if (M == 0) return;
    for (int i = 0; i < M; i++) {
        float *row = probs + (size_t)i * V;
        float g = dlogp[i];
        for (int j = 0; j < V; j++)
            row[j] = -g * row[j];
        row[targets[i]] += g;
    }
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, D, V, 1.0f, probs, V, wcls, D,
                    1.0f, dx, D);
    if (dwcls)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, V, D, M, 1.0f, probs, V, x, D, 1.0f,
                    dwcls, D);
}

// Row stride of the logits tiles: vb + 16, so that rows are not a power of
// two apart (a 4 KiB stride costs ~20% in cache-set conflicts).
#define TILE_LD(vb) ((size_t)(vb) + 16)

size_t classifier_scratch_floats(int R, int vb) {
    // The tile, then +1: the doubles start at the next even float (8-byte
    // aligned): the running and the tile's sums (R doubles each), then the
    // tile's max and the target logits (R floats each).
    return (size_t)R * TILE_LD(vb) + 1 + 6 * (size_t)R;
}

void classifier_forward_tile(float *tmax, double *tsum, float *tlogit, float *logits, size_t ldl,
                             float *exps, const float *x, const float *wcls, const int *targets,
                             int R, int D, int v0, int nv) {
    if (R == 0) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, R, nv, D, 1.0f, x, D,
                wcls + (size_t)v0 * D, D, 0.0f, logits, (int)ldl);
    for (int i = 0; i < R; i++) {
        float *row = logits + (size_t)i * ldl;
        int t = targets[i];
        if (t >= v0 && t < v0 + nv) tlogit[i] = row[t - v0];
        float tm = ops_vmax(row, nv);
        tmax[i] = tm;
        tsum[i] = K()->vexp_neg(exps ? exps : row, row, tm, 0.0f, 1.0f, nv);
    }
}

// Folds a tile's (max tm, sum ts of exp(logit - tm)) into a row's running
// (max *m, sum *s of exp(logit - *m)); *m = -inf, *s = 0 before the first
// tile. The one place the rule lives, so that every path folds alike.
static void lse_fold(float *m, double *s, float tm, double ts) {
    if (tm > *m) {
        *s = *s * exp((double)*m - (double)tm) + ts;
        *m = tm;
    } else {
        *s += ts * exp((double)tm - (double)*m);
    }
}

// lse_l and logp of a row from its folded max m and sum s.
static void lse_finish(float *logp, float *lse_l, float tlogit, float m, double s) {
    double ls = log(s);
    *lse_l = (float)ls;
    *logp = (float)((double)tlogit - (double)m - ls);
}

void classifier_merge_tiles(float *logp, float *lse_m, float *lse_l, const float *tmax,
                            const double *tsum, size_t ts, int n_tiles, const float *tlogit,
                            int R) {
    for (int i = 0; i < R; i++) {
        float m = -INFINITY;
        double s = 0.0;
        for (int t = 0; t < n_tiles; t++)
            lse_fold(&m, &s, tmax[(size_t)t * ts + i], tsum[(size_t)t * ts + i]);
        lse_m[i] = m;
        lse_finish(&logp[i], &lse_l[i], tlogit[i], m, s);
    }
}

void classifier_forward_rows(float *logp, float *lse_m, float *lse_l, float *scratch,
                             const float *x, const float *wcls, const int *targets, int R, int D,
                             int V, int vb) {
    if (R == 0) return;
    // Tile by tile, each row's statistics folded into its running max
    // (lse_m) and sum; the exps overwrite the tile (only their sum is needed).
    size_t ld = TILE_LD(vb), tile = (size_t)R * ld;
    double *sum = (double *)(scratch + ((tile + 1) & ~(size_t)1)), *tsum = sum + R;
    float *tmax = (float *)(tsum + R), *tlogit = tmax + R;
    for (int i = 0; i < R; i++) {
        lse_m[i] = -INFINITY;
        sum[i] = 0.0;
        tlogit[i] = NAN;
    }
    for (int v0 = 0; v0 < V; v0 += vb) {
        int nv = V - v0 < vb ? V - v0 : vb;
        classifier_forward_tile(tmax, tsum, tlogit, scratch, ld, NULL, x, wcls, targets, R, D, v0,
                                nv);
        for (int i = 0; i < R; i++)
            lse_fold(&lse_m[i], &sum[i], tmax[i], tsum[i]);
    }
    for (int i = 0; i < R; i++)
        lse_finish(&logp[i], &lse_l[i], tlogit[i], lse_m[i], sum[i]);
}

void classifier_backward_tile(float *dwcls, float *logits, size_t ldl, const float *g,
                              const float *x, const int *targets, const float *lse_m,
                              const float *lse_l, int R, int D, int v0, int nv) {
    if (R == 0) return;
    float *L = logits + v0;
    for (int i = 0; i < R; i++) {
        float *row = L + (size_t)i * ldl;
        // dlogits = g * (onehot(target) - softmax)
        K()->vexp_neg(row, row, lse_m[i], lse_l[i], -g[i], nv);
        int t = targets[i];
        if (t >= v0 && t < v0 + nv) row[t - v0] += g[i];
    }
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nv, D, R, 1.0f, L, (int)ldl, x, D, 1.0f,
                dwcls + (size_t)v0 * D, D);
}

void classifier_backward_dx(float *dx, const float *dlogits, size_t ldl, const float *wcls, int R,
                            int D, int V) {
    if (R == 0) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, R, D, V, 1.0f, dlogits, (int)ldl, wcls,
                D, 1.0f, dx, D);
}
