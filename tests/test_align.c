// test_align.c — the AlignmentHandler against independent expectations:
// central finite differences of the loss for every gradient it returns (SFT,
// DPO x 4 loss types with and without label smoothing, ORPO), tiny cases
// worked out here by the textbook formulas (naive, unstabilised forms on
// harmless numbers) and cross-checked with constants from Python's math
// module, TRL's metric values, and the non-finite / empty-input errors;
// align_pair_gradient against align_compute, pair by pair.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "align.h"
#include "tests/test_util.h"

enum { N = 3 };

typedef struct {
    double c[N], r[N], rc[N], rr[N], all[N];
    int cl[N], rl[N], al[N];
} Inputs;

static Recipe make_recipe(Method m, DpoLossType t, double beta, double eps) {
    Recipe r;
    memset(&r, 0, sizeof r);
    r.method = m;
    r.loss_type = t;
    r.beta = beta;
    r.label_smoothing = eps;
    return r;
}

static AlignBatch make_batch(const Inputs *in, int n) {
    AlignBatch b = {n, in->c, in->cl, in->r, in->rl, in->rc, in->rr, in->all, in->al};
    return b;
}

// An AlignResult writing its coefficients into the caller's arrays.
static AlignResult result_into(double *dc, double *dr, double *da) {
    AlignResult out = {0};
    out.d_chosen = dc;
    out.d_rejected = dr;
    out.d_chosen_all = da;
    return out;
}

static double loss_of(const Recipe *r, const Inputs *in) {
    double dc[N], dr[N], da[N];
    AlignResult out = result_into(dc, dr, da);
    AlignBatch b = make_batch(in, N);
    BsError err;
    if (align_compute(r, &b, &out, &err) != 0) {
        fprintf(stderr, "align_compute failed: %s %s\n", err.code, err.message);
        return NAN;
    }
    return out.loss;
}

// Central differences of the loss w.r.t. every input the handler returns a
// gradient for. The loss is smooth at the chosen points (hinge stays away from
// its kink), so h = 1e-5 gives ~1e-10 truncation error.
static void check_pair_gradient(const char *what, const Recipe *r, const Inputs *base);

static void check_grads(const char *what, const Recipe *r, const Inputs *base) {
    double dc[N], dr[N], da[N];
    for (int s = 0; s < N; s++)
        dc[s] = dr[s] = da[s] = NAN;
    AlignResult out = result_into(dc, dr, da);
    AlignBatch b = make_batch(base, N);
    BsError err;
    CHECK_INT_EQ(align_compute(r, &b, &out, &err), 0);
    const double h = 1e-5;
    for (int s = 0; s < N; s++) {
        Inputs p = *base, m = *base;
        p.c[s] += h, m.c[s] -= h;
        double fd = (loss_of(r, &p) - loss_of(r, &m)) / (2 * h);
        CHECK_MSG(fabs(fd - dc[s]) <= 1e-7 + 1e-6 * fabs(fd), "%s d_chosen[%d] %.10g vs fd %.10g",
                  what, s, dc[s], fd);
        if (r->method == METHOD_SFT) continue;
        p = *base, m = *base;
        p.r[s] += h, m.r[s] -= h;
        fd = (loss_of(r, &p) - loss_of(r, &m)) / (2 * h);
        CHECK_MSG(fabs(fd - dr[s]) <= 1e-7 + 1e-6 * fabs(fd), "%s d_rejected[%d] %.10g vs fd %.10g",
                  what, s, dr[s], fd);
        if (r->method != METHOD_ORPO) continue;
        p = *base, m = *base;
        p.all[s] += h, m.all[s] -= h;
        fd = (loss_of(r, &p) - loss_of(r, &m)) / (2 * h);
        CHECK_MSG(fabs(fd - da[s]) <= 1e-7 + 1e-6 * fabs(fd),
                  "%s d_chosen_all[%d] %.10g vs fd %.10g", what, s, da[s], fd);
    }
    // The gradient must be informative, not trivially zero.
    double mag = 0;
    for (int s = 0; s < N; s++)
        mag += fabs(dc[s]);
    CHECK_MSG(mag > 1e-6, "%s: zero gradient", what);
    check_pair_gradient(what, r, base);
}

// align_pair_gradient gives pair s exactly what align_compute gives it,
// reading only pair s's sums: the other pairs' sums are NaN here.
static void check_pair_gradient(const char *what, const Recipe *r, const Inputs *base) {
    double dc[N], dr[N], da[N];
    AlignResult out = result_into(dc, dr, da);
    AlignBatch b = make_batch(base, N);
    BsError err;
    CHECK_INT_EQ(align_compute(r, &b, &out, &err), 0);
    for (int s = 0; s < N; s++) {
        Inputs in = *base;
        for (int o = 0; o < N; o++) {
            if (o == s) continue;
            in.c[o] = in.r[o] = in.rc[o] = in.rr[o] = in.all[o] = NAN;
        }
        AlignBatch bs = make_batch(&in, N);
        double pc = NAN, pr = NAN, pa = NAN;
        CHECK_INT_EQ(align_pair_gradient(r, &bs, s, &pc, &pr, &pa, &err), 0);
        CHECK_MSG(pc == dc[s], "%s pair %d: d_chosen %.17g vs %.17g", what, s, pc, dc[s]);
        if (r->method != METHOD_SFT)
            CHECK_MSG(pr == dr[s], "%s pair %d: d_rejected %.17g vs %.17g", what, s, pr, dr[s]);
        if (r->method == METHOD_ORPO)
            CHECK_MSG(pa == da[s], "%s pair %d: d_chosen_all %.17g vs %.17g", what, s, pa, da[s]);
    }
    double pc;
    CHECK_INT_EQ(align_pair_gradient(r, &b, N, &pc, dr, da, &err), -1);
    CHECK(strcmp(err.code, "invalid_batch") == 0);
}

static void test_finite_differences(void) {
    // Sums of completion log-probs with distinct lengths, the policy ahead of
    // the reference on some pairs and behind on others.
    Inputs in = {
        .c = {-12.5, -30.25, -7.0},
        .r = {-14.0, -26.5, -9.75},
        .rc = {-13.0, -29.0, -7.5},
        .rr = {-13.5, -27.5, -9.0},
        .all = {-20.0, -41.5, -15.25},
        .cl = {5, 11, 3},
        .rl = {6, 9, 4},
        .al = {9, 17, 8},
    };
    Recipe r = make_recipe(METHOD_SFT, LOSS_SIGMOID, 0.1, 0);
    check_grads("sft", &r, &in);
    const DpoLossType types[] = {LOSS_SIGMOID, LOSS_IPO, LOSS_HINGE, LOSS_ROBUST};
    const char *names[] = {"sigmoid", "ipo", "hinge", "robust"};
    for (int t = 0; t < 4; t++) {
        for (int ls = 0; ls < 2; ls++) {
            if (types[t] == LOSS_ROBUST && ls == 0) continue; // robust == sigmoid at 0
            double eps = ls ? 0.15 : 0.0;
            // beta 0.5 keeps hinge's 1 - beta z away from 0 for all pairs
            Recipe d = make_recipe(METHOD_DPO, types[t], 0.5, eps);
            char what[64];
            snprintf(what, sizeof what, "dpo %s eps=%g", names[t], eps);
            check_grads(what, &d, &in);
        }
    }
    Recipe o = make_recipe(METHOD_ORPO, LOSS_SIGMOID, 0.25, 0);
    check_grads("orpo", &o, &in);
}

static int run1(const Recipe *r, const AlignBatch *b, AlignResult *out, double *dc, double *dr,
                double *da) {
    memset(out, 0, sizeof *out);
    out->d_chosen = dc;
    out->d_rejected = dr;
    out->d_chosen_all = da;
    BsError err;
    int rc = align_compute(r, b, out, &err);
    if (rc) fprintf(stderr, "align_compute: %s %s\n", err.code, err.message);
    return rc;
}

static double metric(const AlignResult *out, const char *name) {
    double v = NAN;
    CHECK_MSG(metric_get(&out->metrics, name, &v), "metric %s missing", name);
    return v;
}

// One pair: chosen -10, rejected -12, reference -11 / -11, beta 0.1, so the
// logit is z = (-10 + 12) - (-11 + 11) = 2 and beta z = 0.2.
static void test_dpo_values(void) {
    double c[] = {-10}, r[] = {-12}, rc[] = {-11}, rr[] = {-11};
    int cl[] = {4}, rl[] = {5};
    AlignBatch b = {1, c, cl, r, rl, rc, rr, NULL, NULL};
    double dc[1], dr[1];
    AlignResult out;
    double s = 1.0 / (1.0 + exp(-0.2)); // sigmoid(beta z)

    Recipe rs = make_recipe(METHOD_DPO, LOSS_SIGMOID, 0.1, 0);
    CHECK_INT_EQ(run1(&rs, &b, &out, dc, dr, NULL), 0);
    CHECK_CLOSE(out.loss, -log(s), 1e-14, 0);
    CHECK_CLOSE(out.loss, 0.5981388693815918, 1e-14, 0); // math.log(1 + math.exp(-0.2))
    CHECK_CLOSE(dc[0], -0.1 * (1 - s), 1e-13, 0);
    CHECK_CLOSE(dr[0], 0.1 * (1 - s), 1e-13, 0);

    Recipe rl_ = make_recipe(METHOD_DPO, LOSS_SIGMOID, 0.1, 0.2);
    CHECK_INT_EQ(run1(&rl_, &b, &out, dc, dr, NULL), 0);
    CHECK_CLOSE(out.loss, -0.8 * log(s) - 0.2 * log(1 - s), 1e-14, 0);

    Recipe rb = make_recipe(METHOD_DPO, LOSS_ROBUST, 0.1, 0.2);
    CHECK_INT_EQ(run1(&rb, &b, &out, dc, dr, NULL), 0);
    CHECK_CLOSE(out.loss, (-0.8 * log(s) + 0.2 * log(1 - s)) / 0.6, 1e-14, 0);

    Recipe rh = make_recipe(METHOD_DPO, LOSS_HINGE, 0.1, 0);
    CHECK_INT_EQ(run1(&rh, &b, &out, dc, dr, NULL), 0);
    CHECK_CLOSE(out.loss, 0.8, 1e-14, 0); // relu(1 - 0.2)
    CHECK_CLOSE(dc[0], -0.1, 1e-14, 0);
    // beta 1: 1 - beta z = -1, the hinge is flat
    Recipe rh1 = make_recipe(METHOD_DPO, LOSS_HINGE, 1.0, 0);
    CHECK_INT_EQ(run1(&rh1, &b, &out, dc, dr, NULL), 0);
    CHECK_CLOSE(out.loss, 0.0, 0, 0);
    CHECK_CLOSE(dc[0], 0.0, 0, 0);
    // exactly at the kink (beta z == 1) torch's relu gradient is 0
    Recipe rk = make_recipe(METHOD_DPO, LOSS_HINGE, 0.5, 0);
    CHECK_INT_EQ(run1(&rk, &b, &out, dc, dr, NULL), 0);
    CHECK_CLOSE(out.loss, 0.0, 0, 0);
    CHECK_CLOSE(dc[0], 0.0, 0, 0);

    // ipo averages over lengths: z = (-10/4 + 12/5) - (-11/4 + 11/5) = 0.45,
    // loss = (0.45 - 1/(2*0.1))^2 = (0.45 - 5)^2 = 20.7025
    Recipe ri = make_recipe(METHOD_DPO, LOSS_IPO, 0.1, 0);
    CHECK_INT_EQ(run1(&ri, &b, &out, dc, dr, NULL), 0);
    CHECK_CLOSE(out.loss, 20.7025, 1e-13, 0);
    CHECK_CLOSE(dc[0], 2 * (0.45 - 5) / 4, 1e-13, 0);
    CHECK_CLOSE(dr[0], -2 * (0.45 - 5) / 5, 1e-13, 0);
    // rewards from the averaged log-probs, as TRL
    CHECK_CLOSE(metric(&out, "rewards/chosen"), 0.1 * (-2.5 + 2.75), 1e-13, 1e-15);
    CHECK_CLOSE(metric(&out, "rewards/rejected"), 0.1 * (-2.4 + 2.2), 1e-13, 1e-15);
    CHECK_CLOSE(metric(&out, "logps/chosen"), -2.5, 1e-15, 0);
    CHECK_CLOSE(metric(&out, "logps/rejected"), -2.4, 1e-15, 0);
}

static void test_dpo_metrics(void) {
    // Two pairs, beta 0.5. Rewards: chosen 0.5*(-10+11)=0.5, 0.5*(-20+19)=-0.5;
    // rejected 0.5*(-12+11)=-0.5, 0.5*(-18+19)=0.5.
    double c[] = {-10, -20}, r[] = {-12, -18}, rc[] = {-11, -19}, rr[] = {-11, -19};
    int cl[] = {3, 3}, rl[] = {3, 3};
    AlignBatch b = {2, c, cl, r, rl, rc, rr, NULL, NULL};
    double dc[2], dr[2];
    AlignResult out;
    Recipe rs = make_recipe(METHOD_DPO, LOSS_SIGMOID, 0.5, 0);
    CHECK_INT_EQ(run1(&rs, &b, &out, dc, dr, NULL), 0);
    CHECK_CLOSE(metric(&out, "rewards/chosen"), 0.0, 0, 1e-15);
    CHECK_CLOSE(metric(&out, "rewards/rejected"), 0.0, 0, 1e-15);
    CHECK_CLOSE(metric(&out, "rewards/accuracies"), 0.5, 0, 0);
    CHECK_CLOSE(metric(&out, "rewards/margins"), (1.0 + -1.0) / 2, 0, 1e-15);
    CHECK_CLOSE(metric(&out, "logps/chosen"), -15.0, 1e-15, 0);
    CHECK_CLOSE(metric(&out, "logps/rejected"), -15.0, 1e-15, 0);
    // z = 2 and -2: loss is the mean of log(1+e^-1) and log(1+e^1)
    CHECK_CLOSE(out.loss, 0.5 * (log(1 + exp(-1.0)) + log(1 + exp(1.0))), 1e-14, 0);
    CHECK(!metric_get(&out.metrics, "nll_loss", NULL));

    // Equal rewards are not accurate (strict >), as TRL's chosen > rejected.
    double c2[] = {-11, -19};
    AlignBatch b2 = {2, c2, cl, rr, rl, rc, rr, NULL, NULL};
    CHECK_INT_EQ(run1(&rs, &b2, &out, dc, dr, NULL), 0);
    CHECK_CLOSE(metric(&out, "rewards/accuracies"), 0.0, 0, 0);
    CHECK_CLOSE(out.loss, log(2.0), 1e-15, 0);
}

static void test_orpo_values(void) {
    // chosen -3 over 2 tokens (ac = -1.5), rejected -8 over 4 (ar = -2),
    // whole chosen sequence -5 over 4 scored tokens, lambda 0.1.
    double c[] = {-3}, r[] = {-8}, all[] = {-5};
    int cl[] = {2}, rl[] = {4}, al[] = {4};
    AlignBatch b = {1, c, cl, r, rl, NULL, NULL, all, al};
    double dc[1], dr[1], da[1];
    AlignResult out;
    Recipe ro = make_recipe(METHOD_ORPO, LOSS_SIGMOID, 0.1, 0);
    CHECK_INT_EQ(run1(&ro, &b, &out, dc, dr, da), 0);
    double lo = (-1.5 + 2.0) - (log(1 - exp(-1.5)) - log(1 - exp(-2.0)));
    double ratio = log(1 / (1 + exp(-lo)));
    CHECK_CLOSE(lo, 0.6070690010565949, 1e-14, 0);     // from Python's math
    CHECK_CLOSE(ratio, -0.4349888068705394, 1e-14, 0); // idem
    CHECK_CLOSE(out.loss, 1.25 - 0.1 * ratio, 1e-14, 0);
    CHECK_CLOSE(metric(&out, "nll_loss"), 1.25, 1e-15, 0);
    CHECK_CLOSE(metric(&out, "log_odds_ratio"), ratio, 1e-14, 0);
    CHECK_CLOSE(metric(&out, "log_odds_chosen"), lo, 1e-14, 0);
    CHECK_CLOSE(metric(&out, "rewards/chosen"), -0.15, 1e-14, 0);
    CHECK_CLOSE(metric(&out, "rewards/rejected"), -0.2, 1e-14, 0);
    CHECK_CLOSE(metric(&out, "rewards/accuracies"), 1.0, 0, 0);
    CHECK_CLOSE(metric(&out, "rewards/margins"), 0.05, 1e-13, 0);
    CHECK_CLOSE(metric(&out, "logps/chosen"), -1.5, 1e-15, 0);
    CHECK_CLOSE(metric(&out, "logps/rejected"), -2.0, 1e-15, 0);
    CHECK_CLOSE(da[0], -0.25, 1e-15, 0);
    // d loss / d chosen sum = -0.1 * sigmoid(-lo) * 1/(1 - e^ac) / len
    CHECK_CLOSE(dc[0], -0.1 * (1 / (1 + exp(lo))) / (1 - exp(-1.5)) / 2, 1e-13, 0);
    CHECK_CLOSE(dr[0], 0.1 * (1 / (1 + exp(lo))) / (1 - exp(-2.0)) / 4, 1e-13, 0);

    // log(1 - exp(x)) keeps its precision at both ends: an average log-prob of
    // -1e-9 (probability ~1) and of -60.
    double c3[] = {-2e-9}, r3[] = {-240};
    AlignBatch b3 = {1, c3, cl, r3, rl, NULL, NULL, all, al};
    CHECK_INT_EQ(run1(&ro, &b3, &out, dc, dr, da), 0);
    // log1mexp(-1e-9) = log(1e-9 - 5e-19 + ...) ; log1mexp(-60) = -e^-60
    double want = (-1e-9 + 60.0) - (log(1e-9) - 0.5e-9 - (-exp(-60.0)));
    CHECK_CLOSE(metric(&out, "log_odds_chosen"), want, 1e-12, 0);
}

static void test_sft_values(void) {
    // Token-level mean over the micro-batch: (4 + 6) / (2 + 3) = 2.
    double c[] = {-4, -6};
    int cl[] = {2, 3};
    AlignBatch b = {2, c, cl, NULL, NULL, NULL, NULL, NULL, NULL};
    double dc[2];
    AlignResult out;
    Recipe rs = make_recipe(METHOD_SFT, LOSS_SIGMOID, 0.1, 0);
    CHECK_INT_EQ(run1(&rs, &b, &out, dc, NULL, NULL), 0);
    CHECK_CLOSE(out.loss, 2.0, 1e-15, 0);
    CHECK_CLOSE(dc[0], -0.2, 1e-15, 0);
    CHECK_CLOSE(dc[1], -0.2, 1e-15, 0);
    CHECK_INT_EQ(out.metrics.n, 0);
}

static void test_errors(void) {
    double c[] = {NAN, -3}, r[] = {-2, -4}, rc[] = {-2, -3}, rr[] = {-2, -4};
    int cl[] = {2, 2}, rl[] = {2, 2};
    AlignBatch b = {2, c, cl, r, rl, rc, rr, NULL, NULL};
    double dc[2], dr[2];
    AlignResult out = {0};
    out.d_chosen = dc;
    out.d_rejected = dr;
    BsError err;
    Recipe rs = make_recipe(METHOD_DPO, LOSS_SIGMOID, 0.1, 0);
    CHECK_INT_EQ(align_compute(&rs, &b, &out, &err), -1);
    CHECK(strcmp(err.code, "nan_loss") == 0);
    CHECK(strlen(err.message) > 10);
    Recipe rf = make_recipe(METHOD_SFT, LOSS_SIGMOID, 0.1, 0);
    CHECK_INT_EQ(align_compute(&rf, &b, &out, &err), -1);
    CHECK(strcmp(err.code, "nan_loss") == 0);
    // an infinite log-prob (probability 0) is not a finite loss either
    c[0] = -INFINITY;
    CHECK_INT_EQ(align_compute(&rs, &b, &out, &err), -1);
    CHECK(strcmp(err.code, "nan_loss") == 0);
    // ORPO with an average log-prob of 0: log(1 - 1) = -inf
    c[0] = 0.0;
    double all[] = {-1, -1};
    int al[] = {2, 2};
    double da[2];
    out.d_chosen_all = da;
    AlignBatch bo = {2, c, cl, r, rl, NULL, NULL, all, al};
    Recipe ro = make_recipe(METHOD_ORPO, LOSS_SIGMOID, 0.1, 0);
    CHECK_INT_EQ(align_compute(&ro, &bo, &out, &err), -1);
    CHECK(strcmp(err.code, "nan_loss") == 0);
    // a completion with no tokens cannot be averaged
    c[0] = -1;
    cl[1] = 0;
    CHECK_INT_EQ(align_compute(&rs, &b, &out, &err), -1);
    CHECK(strcmp(err.code, "invalid_batch") == 0);
}

int main(void) {
    test_finite_differences();
    test_dpo_values();
    test_dpo_metrics();
    test_orpo_values();
    test_sft_values();
    test_errors();
    return test_summary("align_grad");
}
