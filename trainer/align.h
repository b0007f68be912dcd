// align.h — the AlignmentHandler: preference objectives (DPO with sigmoid,
// ipo, hinge, robust losses; ORPO) and the SFT handler, all as functions of
// per-sequence log-prob sums, with TRL's metric names and meanings.
//
// The model produces per-token log-probs; the caller sums them per sequence
// and passes the sums here. The handler returns the loss of the micro-batch
// and, per sequence, the coefficient every token's log-prob gets in the
// backward pass:
//   dL/dlogp(token) = d_completion[s] for completion tokens of sequence s
//                   + d_all[s]        for every scored token of s (ORPO NLL)
#ifndef ALIGN_H
#define ALIGN_H

#include "bs.h"
#include "recipe.h"

typedef struct {
    int n;                        // pairs (preference) or sequences (sft)
    const double *chosen_logps;   // (n) sum of completion-token log-probs
    const int *chosen_len;        // (n) completion token counts
    const double *rejected_logps; // (n) preference only
    const int *rejected_len;
    const double *ref_chosen_logps;   // (n) DPO only: reference sums
    const double *ref_rejected_logps;
    const double *chosen_all_logps;   // (n) ORPO: sum over every scored token of the
    const int *chosen_all_len;        //     chosen sequence, prompt included
} AlignBatch;

typedef struct {
    double loss;
    double *d_chosen;       // (n) caller-allocated
    double *d_rejected;     // (n) caller-allocated (preference)
    double *d_chosen_all;   // (n) caller-allocated (ORPO), else untouched
    MetricRow metrics;      // rewards/*, logps/*, nll_loss, log_odds_* ...
} AlignResult;

// Computes loss, gradients and metrics for one micro-batch of method/loss
// type/beta/label_smoothing from r. Returns -1 with err "nan_loss" when the
// loss is not finite. out->metrics is reset (step 0, TRL's names); an empty
// micro-batch, a sequence with no tokens to score or a missing array for the
// method is err "invalid_batch".
int align_compute(const Recipe *r, const AlignBatch *b, AlignResult *out, BsError *err);

// The coefficients align_compute gives pair (SFT: sequence) s -- d_chosen,
// d_rejected (preference) and d_chosen_all (ORPO; may be NULL otherwise) --
// computed from pair s's log-prob sums and every sequence's lengths alone:
// the other pairs' sums are not read (they may not exist yet). Bit for bit
// the values align_compute writes for s, so a trainer can form pair s's
// gradient as soon as its log-probs are known (model_forward_grouped).
// 0, or -1 with err "invalid_batch" (s out of range, missing arrays, a
// sequence with nothing to score) or "nan_loss" (not finite).
int align_pair_gradient(const Recipe *r, const AlignBatch *b, int s, double *d_chosen,
                        double *d_rejected, double *d_chosen_all, BsError *err);

#endif
