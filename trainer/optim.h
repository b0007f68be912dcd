// optim.h — AdamW (torch.optim.AdamW semantics), gradient clipping
// (torch.nn.utils.clip_grad_norm_) and learning-rate schedules (Hugging Face
// transformers' constant / linear / cosine with warmup).
#ifndef OPTIM_H
#define OPTIM_H

#include <stddef.h>

#include "model.h"
#include "recipe.h"

typedef struct {
    double lr, beta1, beta2, eps, weight_decay;
} AdamWConfig;

// One AdamW update of step t (1-based) over the flat buffers; weight decay
// applies only to ranges with decay set. m and v (P) start zeroed.
void adamw_step(float *params, const float *grads, float *m, float *v, const ParamRange *ranges,
                int n_ranges, int t, const AdamWConfig *cfg);
// Returns the global L2 norm of grads (before clipping) and scales grads by
// max_norm / (norm + 1e-6) when that is < 1. max_norm <= 0: no clipping.
double clip_grad_norm(float *grads, size_t n, double max_norm);
// Learning rate for optimizer step `step` (0-based: the rate the scheduler
// holds after `step` scheduler.step() calls).
double lr_at(const Recipe *r, int step, int total_steps, int warmup_steps);
// Warmup steps from warmup_steps, else ceil(warmup_ratio * total_steps).
int lr_warmup_steps(const Recipe *r, int total_steps);

#endif
