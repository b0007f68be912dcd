// optim.h — AdamW (torch.optim.AdamW semantics), gradient clipping
// (torch.nn.utils.clip_grad_norm_) and learning-rate schedules (Hugging Face
// transformers' constant / linear / cosine with warmup).
#ifndef OPTIM_H
#define OPTIM_H

#include <stddef.h>

#include "model.h"
#include "ops.h"
#include "recipe.h"

typedef struct {
    double lr, beta1, beta2, eps, weight_decay;
} AdamWConfig;

// One AdamW update of step t (1-based) over the flat buffers; weight decay
// applies only to ranges with decay set. m and v (P) start zeroed.
// Bit-identical to torch 1.13 (see optim.c) on every instruction set.
void adamw_step(float *params, const float *grads, float *m, float *v, const ParamRange *ranges,
                int n_ranges, int t, const AdamWConfig *cfg);
// adamw_step with the elements split over pool's threads (NULL: the calling
// thread only; adamw_step is this with NULL). Same bits for any pool. The
// pool must not be running another region (e.g. the model's, model_pool).
void adamw_step_pool(OpsPool *pool, float *params, const float *grads, float *m, float *v,
                     const ParamRange *ranges, int n_ranges, int t, const AdamWConfig *cfg);
// Returns the global L2 norm of grads (before clipping) and scales grads by
// max_norm / (norm + 1e-6) when that is < 1. max_norm <= 0: no clipping.
// The sum of squares is formed in double over fixed chunks of grads, so the
// norm does not depend on the thread count (its last bits may on the
// instruction set).
double clip_grad_norm(float *grads, size_t n, double max_norm);
// clip_grad_norm over pool's threads (NULL: the calling thread only); the
// same result for any pool.
double clip_grad_norm_pool(OpsPool *pool, float *grads, size_t n, double max_norm);
// Learning rate for optimizer step `step` (0-based: the rate the scheduler
// holds after `step` scheduler.step() calls).
double lr_at(const Recipe *r, int step, int total_steps, int warmup_steps);
// Warmup steps from warmup_steps, else ceil(warmup_ratio * total_steps).
int lr_warmup_steps(const Recipe *r, int total_steps);

#endif
