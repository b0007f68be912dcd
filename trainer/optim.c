// optim.c — AdamW as torch.optim.AdamW (single-tensor path, no amsgrad),
// global-norm gradient clipping as torch.nn.utils.clip_grad_norm_, and the
// learning-rate schedules of Hugging Face transformers (get_*_schedule_with_warmup).
//
// Tensors are float32 and hyperparameters double, as torch keeps tensors in
// float32 and optimizer hyperparameters as Python floats: each scalar is
// formed in double and rounded to float32 when it meets a tensor, and the
// element operations run in torch's order and rounding (fused where torch's
// vectorised kernels fuse), so the updates agree with torch 1.13 on an x86-64
// FMA machine bit for bit (checked on 100k elements over 3 steps).
//
// The element loops run in ops.c's vector kernels (ops_adamw, ops_sumsq,
// ops_scale: AVX-512, AVX2 or the baseline, picked at run time) as tasks of
// an OpsPool. Task sizes are constants, never derived from the thread count:
// AdamW is element-wise, and the norm's partial sums belong to fixed chunks
// added in chunk order, so any number of threads gives the same bits.
#include "optim.h"

#include <limits.h>
#include <math.h>

// Elements per AdamW task: 4 streams of 128 KiB, large enough that claiming
// a task costs nothing, small enough to balance two or more threads.
#define ADAMW_CHUNK ((size_t)32768)
// Elements per partial sum of the norm; grows (doubling, a function of n
// only) when n would need more than NORM_MAX_CHUNKS partial sums.
#define NORM_CHUNK ((size_t)65536)
#define NORM_MAX_CHUNKS 512

typedef struct {
    float *params, *m, *v;
    const float *grads;
    const ParamRange *ranges;
    int n_ranges;
    double lr, weight_decay;
    OpsAdamW c; // decay set per range
    size_t chunk;
} AdamWTask;

// Positions [task * chunk, (task + 1) * chunk) of the ranges laid end to end.
static void adamw_task(void *ctx, int task, int thread) {
    (void)thread;
    const AdamWTask *a = ctx;
    size_t lo = (size_t)task * a->chunk, hi = lo + a->chunk, base = 0;
    for (int r = 0; r < a->n_ranges && base < hi; r++) {
        const ParamRange *pr = &a->ranges[r];
        size_t b0 = lo > base ? lo : base, e = base + pr->count < hi ? base + pr->count : hi;
        if (b0 < e) {
            OpsAdamW c = a->c;
            // param.mul_(1 - lr * weight_decay): decoupled decay, before the moments.
            c.decay = (float)(1.0 - a->lr * (pr->decay ? a->weight_decay : 0.0));
            size_t off = pr->offset + (b0 - base);
            ops_adamw(a->params + off, a->grads + off, a->m + off, a->v + off, e - b0, &c);
        }
        base += pr->count;
    }
}

void adamw_step_pool(OpsPool *pool, float *params, const float *grads, float *m, float *v,
                     const ParamRange *ranges, int n_ranges, int t, const AdamWConfig *cfg) {
    double lr = cfg->lr, b1 = cfg->beta1, b2 = cfg->beta2;
    // Scalars as torch's _single_tensor_adamw forms them (Python floats),
    // each rounded to float32 where it meets a tensor. The element update
    // (ops.h's ops_adamw) then runs torch's order: decay; exp_avg.mul_(b1)
    // .add_(grad, alpha=1 - b1), whose add_ is one fused multiply-add in
    // torch's vectorised kernel (vec::fmadd(other, alpha, self));
    // exp_avg_sq.mul_(b2).addcmul_(grad, grad, value=1 - b2), whose
    // self + value * t1 * t2 torch's compiler contracts to one fma;
    // denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps);
    // param.addcdiv_(exp_avg, denom, value=-step_size).
    double bias_correction1 = 1.0 - pow(b1, t);
    double bias_correction2 = 1.0 - pow(b2, t);
    double step_size = lr / bias_correction1;
    AdamWTask a = {
        .params = params,
        .m = m,
        .v = v,
        .grads = grads,
        .ranges = ranges,
        .n_ranges = n_ranges,
        .lr = lr,
        .weight_decay = cfg->weight_decay,
        .c = {.beta1 = (float)b1,
              .one_minus_beta1 = (float)(1.0 - b1),
              .beta2 = (float)b2,
              .one_minus_beta2 = (float)(1.0 - b2),
              .bc2_sqrt = (float)sqrt(bias_correction2),
              .eps = (float)cfg->eps,
              .neg_step = (float)(-step_size)},
        .chunk = ADAMW_CHUNK,
    };
    size_t total = 0;
    for (int r = 0; r < n_ranges; r++)
        total += ranges[r].count;
    if (total == 0) return;
    // Any split gives the same bits: only keep the task count an int.
    while ((total - 1) / a.chunk >= (size_t)INT_MAX)
        a.chunk *= 2;
    int n_tasks = (int)((total - 1) / a.chunk + 1);
    ops_pool_run(n_tasks > 1 ? pool : NULL, adamw_task, &a, n_tasks);
}

void adamw_step(float *params, const float *grads, float *m, float *v, const ParamRange *ranges,
                int n_ranges, int t, const AdamWConfig *cfg) {
    adamw_step_pool(NULL, params, grads, m, v, ranges, n_ranges, t, cfg);
}

typedef struct {
    float *x;
    size_t n, chunk;
    double *partial; // (n_chunks) sum of squares of each chunk
    float scale;
} NormTask;

static void norm_sumsq_task(void *ctx, int task, int thread) {
    (void)thread;
    NormTask *a = ctx;
    size_t lo = (size_t)task * a->chunk, len = a->n - lo < a->chunk ? a->n - lo : a->chunk;
    a->partial[task] = ops_sumsq(a->x + lo, len);
}

static void norm_scale_task(void *ctx, int task, int thread) {
    (void)thread;
    const NormTask *a = ctx;
    size_t lo = (size_t)task * a->chunk, len = a->n - lo < a->chunk ? a->n - lo : a->chunk;
    ops_scale(a->x + lo, a->scale, len);
}

double clip_grad_norm_pool(OpsPool *pool, float *grads, size_t n, double max_norm) {
    if (n == 0) return 0.0;
    double partial[NORM_MAX_CHUNKS];
    NormTask a = {grads, n, NORM_CHUNK, partial, 1.0f};
    while ((n - 1) / a.chunk + 1 > NORM_MAX_CHUNKS)
        a.chunk *= 2;
    int n_chunks = (int)((n - 1) / a.chunk + 1);
    OpsPool *p = n_chunks > 1 ? pool : NULL;
    ops_pool_run(p, norm_sumsq_task, &a, n_chunks);
    double ss = 0.0;
    for (int c = 0; c < n_chunks; c++)
        ss += partial[c];
    double total = sqrt(ss);
    if (max_norm <= 0) return total;
    // clip_coef = max_norm / (total_norm + 1e-6), clamped at 1: torch forms it
    // on float32 tensors (x.reciprocal() * max_norm); scaling by 1 is a no-op.
    float coef = (1.0f / ((float)total + 1e-6f)) * (float)max_norm;
    if (coef < 1.0f) {
        a.scale = coef;
        ops_pool_run(p, norm_scale_task, &a, n_chunks);
    }
    return total;
}

double clip_grad_norm(float *grads, size_t n, double max_norm) {
    return clip_grad_norm_pool(NULL, grads, n, max_norm);
}

int lr_warmup_steps(const Recipe *r, int total_steps) {
    if (r->warmup_steps > 0) return r->warmup_steps;
    // math.ceil(num_training_steps * warmup_ratio), the product in double.
    return (int)ceil((double)total_steps * r->warmup_ratio);
}

// The LambdaLR multipliers of transformers' schedules.
static double lr_lambda(LrSchedule s, int step, int total, int warmup) {
    if (step < warmup) return (double)step / (double)(warmup > 1 ? warmup : 1);
    int span = total - warmup > 1 ? total - warmup : 1;
    switch (s) {
    case SCHED_CONSTANT:
        return 1.0;
    case SCHED_LINEAR: {
        double f = (double)(total - step) / (double)span;
        return f > 0.0 ? f : 0.0;
    }
    case SCHED_COSINE: {
        // num_cycles = 0.5: half a cosine from 1 down to 0.
        double progress = (double)(step - warmup) / (double)span;
        double f = 0.5 * (1.0 + cos(M_PI * 0.5 * 2.0 * progress));
        return f > 0.0 ? f : 0.0;
    }
    }
    return 1.0;
}

double lr_at(const Recipe *r, int step, int total_steps, int warmup_steps) {
    return r->learning_rate * lr_lambda(r->lr_scheduler_type, step, total_steps, warmup_steps);
}
