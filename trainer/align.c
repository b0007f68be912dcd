// align.c — the AlignmentHandler: SFT, DPO (sigmoid / ipo / hinge / robust) and
// ORPO objectives as functions of per-sequence log-prob sums, with their exact
// derivatives and the metrics Hugging Face TRL logs under the same names.
//
// Everything is computed in double: the inputs are sums of many float32 token
// log-probs, and the DPO logits are differences of nearly equal sums, so
// float32 here would add error that TRL (which works on the same float32 sums
// but with few further operations) does not have.
//
// Semantics follow TRL's DPOTrainer.dpo_loss / concatenated_forward (ipo uses
// length-averaged log-probs) and ORPOTrainer.odds_ratio_loss /
// get_batch_loss_metrics (length-averaged log-probs, loss = nll - beta *
// mean(logsigmoid(log_odds))).
#include "align.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

// log(sigmoid(x)) without overflow: min(x, 0) - log1p(exp(-|x|)).
static double log_sigmoid(double x) {
    return (x < 0 ? x : 0.0) - log1p(exp(-fabs(x)));
}

static double sigmoid(double x) {
    if (x >= 0) return 1.0 / (1.0 + exp(-x));
    double e = exp(x);
    return e / (1.0 + e);
}

// log(1 - exp(x)) for x < 0; the two branches keep full precision near 0 and
// for very negative x (Maechler's log1mexp).
static double log1mexp(double x) {
    if (x > -M_LN2) return log(-expm1(x));
    return log1p(-exp(x));
}

// d/dx of [x - log1mexp(x)] = 1 / (1 - exp(x)) = -1 / expm1(x).
static double dlogodds(double x) {
    return -1.0 / expm1(x);
}

static int check_lengths(const int *len, int n, const char *what, BsError *err) {
    for (int s = 0; s < n; s++) {
        if (len[s] <= 0) {
            return bs_fail(err, "invalid_batch", what,
                           "sequence %d of the micro-batch has no %s tokens to score", s, what);
        }
    }
    return 0;
}

static int finish(AlignResult *out, int n, const double *d1, const double *d2, BsError *err) {
    int ok = isfinite(out->loss);
    for (int s = 0; ok && s < n; s++) {
        if (d1 && !isfinite(d1[s])) ok = 0;
        if (d2 && !isfinite(d2[s])) ok = 0;
    }
    if (!ok) {
        return bs_fail(err, "nan_loss", "",
                       "the loss or its gradient is not finite (loss %g): the log-probs "
                       "diverged; lower learning_rate or check the data",
                       out->loss);
    }
    return 0;
}

// Scored tokens of every sequence in b's chosen lengths (SFT's and ORPO's
// token-level mean divides by it).
static double total_len(const int *len, int n) {
    double total = 0.0;
    for (int s = 0; s < n; s++)
        total += len[s];
    return total;
}

static int align_sft(const AlignBatch *b, AlignResult *out, BsError *err) {
    if (check_lengths(b->chosen_len, b->n, "completion", err)) return -1;
    double sum = 0.0, total = total_len(b->chosen_len, b->n);
    for (int s = 0; s < b->n; s++)
        sum += b->chosen_logps[s];
    // Token-level mean over the micro-batch, as the cross-entropy of a
    // padded batch with ignore_index: every token weighs the same.
    out->loss = -sum / total;
    for (int s = 0; s < b->n; s++)
        out->d_chosen[s] = -1.0 / total;
    return finish(out, b->n, out->d_chosen, NULL, err);
}

// Loss of one pair and its derivative w.r.t. the DPO logit z.
static void dpo_pair(DpoLossType t, double beta, double eps, double z, double *loss, double *dz) {
    double bz = beta * z;
    switch (t) {
    case LOSS_SIGMOID:
        // d/dx logsigmoid(x) = sigmoid(-x)
        *loss = -(1.0 - eps) * log_sigmoid(bz) - eps * log_sigmoid(-bz);
        *dz = -(1.0 - eps) * beta * sigmoid(-bz) + eps * beta * sigmoid(bz);
        break;
    case LOSS_ROBUST:
        *loss = (-(1.0 - eps) * log_sigmoid(bz) + eps * log_sigmoid(-bz)) / (1.0 - 2.0 * eps);
        *dz = (-(1.0 - eps) * beta * sigmoid(-bz) - eps * beta * sigmoid(bz)) / (1.0 - 2.0 * eps);
        break;
    case LOSS_HINGE:
        // torch.relu's gradient at exactly 0 is 0, hence the strict test.
        *loss = 1.0 - bz > 0 ? 1.0 - bz : 0.0;
        *dz = 1.0 - bz > 0 ? -beta : 0.0;
        break;
    case LOSS_IPO: {
        double d = z - 1.0 / (2.0 * beta);
        *loss = d * d;
        *dz = 2.0 * d;
        break;
    }
    }
}

// Pair s of a DPO batch from its own sums alone: its loss, dLoss/d(chosen
// sum) and dLoss/d(rejected sum) of the batch mean, the log-probs as the
// loss sees them (lc, lr) and the rewards (cr, rr).
static void dpo_pair_terms(const Recipe *r, const AlignBatch *b, int s, double *loss, double *dc,
                           double *dr, double *lc, double *lr, double *cr, double *rr) {
    // TRL averages the log-probs over the completion for ipo only
    // (concatenated_forward: all_logps / size_completion).
    int ipo = r->loss_type == LOSS_IPO;
    double beta = r->beta;
    double nc = ipo ? (double)b->chosen_len[s] : 1.0;
    double nr = ipo ? (double)b->rejected_len[s] : 1.0;
    double pc = b->chosen_logps[s] / nc, pr = b->rejected_logps[s] / nr;
    double rc = b->ref_chosen_logps[s] / nc, rj = b->ref_rejected_logps[s] / nr;
    double z = (pc - pr) - (rc - rj), dz = 0.0;
    dpo_pair(r->loss_type, beta, r->label_smoothing, z, loss, &dz);
    *dc = dz / b->n / nc;
    *dr = -dz / b->n / nr;
    *lc = pc;
    *lr = pr;
    *cr = beta * (pc - rc);
    *rr = beta * (pr - rj);
}

// Pair s of an ORPO batch from its own sums alone: logsigmoid(log_odds)
// (ratio), log_odds, the completion coefficients (dc, dr) and the
// length-averaged log-probs (lc, lr).
static void orpo_pair_terms(const Recipe *r, const AlignBatch *b, int s, double *ratio,
                            double *odds, double *dc, double *dr, double *lc, double *lr) {
    double beta = r->beta;
    double ac = b->chosen_logps[s] / b->chosen_len[s];
    double ar = b->rejected_logps[s] / b->rejected_len[s];
    double log_odds = (ac - ar) - (log1mexp(ac) - log1mexp(ar));
    *ratio = log_sigmoid(log_odds);
    *odds = log_odds;
    // loss = nll - beta * mean(logsigmoid(log_odds))
    double g = -beta / b->n * sigmoid(-log_odds);
    *dc = g * dlogodds(ac) / b->chosen_len[s];
    *dr = -g * dlogodds(ar) / b->rejected_len[s];
    *lc = ac;
    *lr = ar;
}

static void reward_metrics(MetricRow *m, int n, const double *cr, const double *rr,
                           const double *lc, const double *lr) {
    double sc = 0, sr = 0, acc = 0, margin = 0, slc = 0, slr = 0;
    for (int s = 0; s < n; s++) {
        sc += cr[s];
        sr += rr[s];
        acc += cr[s] > rr[s] ? 1.0 : 0.0;
        margin += cr[s] - rr[s];
        slc += lc[s];
        slr += lr[s];
    }
    metric_set(m, "rewards/chosen", sc / n);
    metric_set(m, "rewards/rejected", sr / n);
    metric_set(m, "rewards/accuracies", acc / n);
    metric_set(m, "rewards/margins", margin / n);
    metric_set(m, "logps/chosen", slc / n);
    metric_set(m, "logps/rejected", slr / n);
}

// Per-pair scratch: chosen/rejected log-probs as the loss sees them, and rewards.
typedef struct {
    double *lc, *lr, *cr, *rr;
} Scratch;

static int align_dpo(const Recipe *r, const AlignBatch *b, AlignResult *out, const Scratch *w,
                     BsError *err) {
    if (check_lengths(b->chosen_len, b->n, "chosen", err)) return -1;
    if (check_lengths(b->rejected_len, b->n, "rejected", err)) return -1;
    double loss = 0.0;
    for (int s = 0; s < b->n; s++) {
        double ls;
        dpo_pair_terms(r, b, s, &ls, &out->d_chosen[s], &out->d_rejected[s], w->lc + s, w->lr + s,
                       w->cr + s, w->rr + s);
        loss += ls;
    }
    out->loss = loss / b->n;
    reward_metrics(&out->metrics, b->n, w->cr, w->rr, w->lc, w->lr);
    return finish(out, b->n, out->d_chosen, out->d_rejected, err);
}

static int align_orpo(const Recipe *r, const AlignBatch *b, AlignResult *out, const Scratch *w,
                      BsError *err) {
    if (check_lengths(b->chosen_len, b->n, "chosen", err)) return -1;
    if (check_lengths(b->rejected_len, b->n, "rejected", err)) return -1;
    if (check_lengths(b->chosen_all_len, b->n, "scored chosen", err)) return -1;
    double beta = r->beta;
    double all_sum = 0.0, all_len = total_len(b->chosen_all_len, b->n), ratio_sum = 0.0;
    double odds_sum = 0.0;
    for (int s = 0; s < b->n; s++)
        all_sum += b->chosen_all_logps[s];
    for (int s = 0; s < b->n; s++) {
        double ratio, odds;
        orpo_pair_terms(r, b, s, &ratio, &odds, &out->d_chosen[s], &out->d_rejected[s], w->lc + s,
                        w->lr + s);
        ratio_sum += ratio;
        odds_sum += odds;
        w->cr[s] = beta * w->lc[s];
        w->rr[s] = beta * w->lr[s];
    }
    double nll = -all_sum / all_len;
    for (int s = 0; s < b->n; s++)
        out->d_chosen_all[s] = -1.0 / all_len;
    out->loss = nll - beta * (ratio_sum / b->n);
    MetricRow *m = &out->metrics;
    reward_metrics(m, b->n, w->cr, w->rr, w->lc, w->lr);
    metric_set(m, "nll_loss", nll);
    metric_set(m, "log_odds_ratio", ratio_sum / b->n);
    metric_set(m, "log_odds_chosen", odds_sum / b->n);
    if (finish(out, b->n, out->d_chosen, out->d_rejected, err)) return -1;
    return finish(out, b->n, out->d_chosen_all, NULL, err);
}

int align_compute(const Recipe *r, const AlignBatch *b, AlignResult *out, BsError *err) {
    if (!r || !b || !out || b->n <= 0 || !b->chosen_logps || !b->chosen_len || !out->d_chosen) {
        return bs_fail(err, "invalid_batch", "", "empty or incomplete micro-batch");
    }
    memset(&out->metrics, 0, sizeof out->metrics);
    out->loss = 0.0;
    if (r->method == METHOD_SFT) return align_sft(b, out, err);

    if (!b->rejected_logps || !b->rejected_len || !out->d_rejected) {
        return bs_fail(err, "invalid_batch", "", "preference micro-batch without rejected sums");
    }
    if (r->method == METHOD_DPO && (!b->ref_chosen_logps || !b->ref_rejected_logps)) {
        return bs_fail(err, "invalid_batch", "", "DPO micro-batch without reference sums");
    }
    if (r->method == METHOD_ORPO &&
        (!b->chosen_all_logps || !b->chosen_all_len || !out->d_chosen_all)) {
        return bs_fail(err, "invalid_batch", "", "ORPO micro-batch without full-sequence sums");
    }
    // Four per-pair arrays; a small batch stays on the stack.
    enum { STACK_PAIRS = 64 };
    double stack[4 * STACK_PAIRS];
    double *buf = stack;
    if (b->n > STACK_PAIRS) {
        buf = malloc(4 * (size_t)b->n * sizeof *buf);
        if (!buf) return bs_fail(err, "out_of_memory", "", "out of memory for %d pairs", b->n);
    }
    Scratch w = {buf, buf + b->n, buf + 2 * (size_t)b->n, buf + 3 * (size_t)b->n};
    int rc =
        r->method == METHOD_DPO ? align_dpo(r, b, out, &w, err) : align_orpo(r, b, out, &w, err);
    if (buf != stack) free(buf);
    return rc;
}

int align_pair_gradient(const Recipe *r, const AlignBatch *b, int s, double *d_chosen,
                        double *d_rejected, double *d_chosen_all, BsError *err) {
    if (!r || !b || b->n <= 0 || s < 0 || s >= b->n || !b->chosen_logps || !b->chosen_len ||
        !d_chosen)
        return bs_fail(err, "invalid_batch", "", "empty or incomplete micro-batch");
    double dc = 0.0, dr = 0.0, da = 0.0, unused[4];
    if (r->method == METHOD_SFT) {
        if (check_lengths(b->chosen_len, b->n, "completion", err)) return -1;
        dc = -1.0 / total_len(b->chosen_len, b->n);
    } else {
        if (!b->rejected_logps || !b->rejected_len || !d_rejected)
            return bs_fail(err, "invalid_batch", "",
                           "preference micro-batch without rejected sums");
        if (check_lengths(b->chosen_len + s, 1, "chosen", err) ||
            check_lengths(b->rejected_len + s, 1, "rejected", err))
            return -1;
        if (r->method == METHOD_DPO) {
            if (!b->ref_chosen_logps || !b->ref_rejected_logps)
                return bs_fail(err, "invalid_batch", "", "DPO micro-batch without reference sums");
            dpo_pair_terms(r, b, s, &unused[0], &dc, &dr, &unused[1], &unused[2], &unused[3],
                           &unused[0]);
        } else {
            if (!b->chosen_all_len || !d_chosen_all)
                return bs_fail(err, "invalid_batch", "",
                               "ORPO micro-batch without full-sequence lengths");
            if (check_lengths(b->chosen_all_len, b->n, "scored chosen", err)) return -1;
            orpo_pair_terms(r, b, s, &unused[0], &unused[1], &dc, &dr, &unused[2], &unused[3]);
            da = -1.0 / total_len(b->chosen_all_len, b->n);
        }
    }
    if (!isfinite(dc) || !isfinite(dr) || !isfinite(da))
        return bs_fail(err, "nan_loss", "",
                       "the gradient of pair %d is not finite: the log-probs diverged; lower "
                       "learning_rate or check the data",
                       s);
    *d_chosen = dc;
    if (d_rejected && r->method != METHOD_SFT) *d_rejected = dr;
    if (d_chosen_all && r->method == METHOD_ORPO) *d_chosen_all = da;
    return 0;
}
