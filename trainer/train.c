// train.c — the training loop, the integrator of the trainer library: loads
// the policy (llama2.c file, Hugging Face folder or seeded model_init), the
// DPO reference, the tokenizer and the data (conversational rows through the
// chat template); runs micro-batches through model -> align ->
// model_backward; steps AdamW with clipping and the learning-rate schedule;
// logs and evaluates like Hugging Face Trainer + TRL; writes training-state
// checkpoints (state.c) and the final model (llama2.c final/model.bin, or a
// Hugging Face final/ folder with output_format hf); resumes exactly.
//
// Step accounting (HF semantics where they are unambiguous):
//   n_batches       = ceil(n_train / per_device_train_batch_size)   (no drop_last)
//   steps_per_epoch = max(1, floor(n_batches / gradient_accumulation_steps))
//   total_steps     = max_steps > 0 ? max_steps : ceil(num_train_epochs * steps_per_epoch)
// Optimizer step k of an epoch (0-based) consumes micro-batches
// [k * A, (k + 1) * A) of that epoch's order, A = gradient_accumulation_steps,
// or all n_batches when n_batches < A (then A = n_batches for that step). The
// n_batches % A micro-batches left at the end of an epoch are skipped (a
// drop_last at the accumulation level): every optimizer step then averages the
// same number of micro-batches, the logged epoch is exactly
// step / steps_per_epoch, and the position in the data follows from the step
// alone, which keeps resume exact. With A == 1 (the default) nothing is skipped
// and this is identical to HF. Recent transformers instead run the remainder
// as one smaller update; older ones carried its gradient into the next epoch.
//
// Logged values, as HF Trainer / TRL log them:
//   loss          mean over the window's optimizer steps of
//                 sum_microbatches(loss_mb / A)           (HF tr_loss, not rounded)
//   grad_norm     global L2 norm before clipping, of the logging step
//   learning_rate the rate this step's update used, lr_at(step - 1) for the 1-based
//                 step: transformers >= 4.51 reads it before lr_scheduler.step()
//                 (older versions logged the next step's rate); tests/golden agrees
//   align metrics mean over the window's micro-batches (TRL store_metrics + log)
//   epoch         step / steps_per_epoch
//   tokens_per_second  packed tokens (prompt + completion, both sequences of a
//                 pair) / wall seconds of the window; not reproducible by nature
//   num_tokens    cumulative packed tokens trained on since step 0 (TRL's running
//                 num_tokens); kept in the checkpoint, so exact across a resume
// Eval rows: eval_loss is the mean of the eval batch losses weighted by batch
// size (HF evaluation_loop repeats each batch loss batch_size times); the other
// eval_ metrics are plain means over eval batches (TRL), plus epoch.
#include "train.h"

#include <cblas.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "align.h"
#include "chat.h"
#include "ckpt.h"
#include "data.h"
#include "hf.h"
#include "model.h"
#include "optim.h"
#include "state.h"
#include "tok.h"

#define MAX_RANGES 16
#define KEEP_CHECKPOINTS 2
#define EXTRA_VERSION 2u

// ---------------------------------------------------------------------------
// metric names: MetricRow names must outlive every row, so eval_ names and
// names restored from a checkpoint come from a static table (TRL's names) or,
// for a name the table lacks, from a process-lifetime intern pool.

static const char *const k_names[][2] = {
    {"loss", "eval_loss"},
    {"rewards/chosen", "eval_rewards/chosen"},
    {"rewards/rejected", "eval_rewards/rejected"},
    {"rewards/accuracies", "eval_rewards/accuracies"},
    {"rewards/margins", "eval_rewards/margins"},
    {"logps/chosen", "eval_logps/chosen"},
    {"logps/rejected", "eval_logps/rejected"},
    {"logits/chosen", "eval_logits/chosen"},
    {"logits/rejected", "eval_logits/rejected"},
    {"nll_loss", "eval_nll_loss"},
    {"log_odds_ratio", "eval_log_odds_ratio"},
    {"log_odds_chosen", "eval_log_odds_chosen"},
    {"mean_token_accuracy", "eval_mean_token_accuracy"},
    {"num_tokens", "eval_num_tokens"},
    {"entropy", "eval_entropy"},
    {"grad_norm", "eval_grad_norm"},
    {"learning_rate", "eval_learning_rate"},
    {"epoch", "eval_epoch"},
    {"tokens_per_second", "eval_tokens_per_second"},
};

#define POOL_NAMES 64
#define POOL_NAME_LEN 64
static char g_pool[POOL_NAMES][POOL_NAME_LEN];
static int g_pool_n;
static pthread_mutex_t g_pool_mu = PTHREAD_MUTEX_INITIALIZER;

// Returns a static string equal to (eval ? "eval_" : "") + name, or NULL when
// the pool is full or the name too long (the metric is then not logged).
static const char *metric_name(const char *name, int eval) {
    for (size_t i = 0; i < sizeof k_names / sizeof k_names[0]; i++) {
        if (strcmp(k_names[i][0], name) == 0) return k_names[i][eval ? 1 : 0];
        if (!eval && strcmp(k_names[i][1], name) == 0) return k_names[i][1];
    }
    char want[POOL_NAME_LEN];
    if ((size_t)snprintf(want, sizeof want, "%s%s", eval ? "eval_" : "", name) >= sizeof want)
        return NULL;
    const char *found = NULL;
    pthread_mutex_lock(&g_pool_mu);
    for (int i = 0; i < g_pool_n && !found; i++)
        if (strcmp(g_pool[i], want) == 0) found = g_pool[i];
    if (!found && g_pool_n < POOL_NAMES) {
        memcpy(g_pool[g_pool_n], want, strlen(want) + 1);
        found = g_pool[g_pool_n++];
    }
    pthread_mutex_unlock(&g_pool_mu);
    return found;
}

// Running sums of named metrics over a window of micro-batches.
typedef struct {
    int n;
    const char *name[BS_MAX_METRICS];
    double sum[BS_MAX_METRICS];
    int count[BS_MAX_METRICS];
} MetricWindow;

static void window_add(MetricWindow *w, const char *name, double value) {
    for (int i = 0; i < w->n; i++) {
        if (strcmp(w->name[i], name) == 0) {
            w->sum[i] += value;
            w->count[i]++;
            return;
        }
    }
    if (w->n < BS_MAX_METRICS) {
        w->name[w->n] = name;
        w->sum[w->n] = value;
        w->count[w->n] = 1;
        w->n++;
    }
}

static void window_add_row(MetricWindow *w, const MetricRow *row) {
    for (int i = 0; i < row->n; i++) {
        if (strcmp(row->name[i], "loss") == 0) continue; // the trainer owns "loss"
        window_add(w, row->name[i], row->value[i]);
    }
}

// ---------------------------------------------------------------------------
// small utilities

static uint64_t fnv1a(uint64_t h, const void *data, size_t len) {
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}
#define FNV_INIT 0xcbf29ce484222325ull

// splitmix64: the data-order generator; its whole state is one u64.
static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// Uniform in [0, n) without modulo bias (Lemire's multiply-shift).
static uint32_t rng_below(uint64_t *s, uint32_t n) {
    for (;;) {
        uint64_t x = rng_next(s) >> 32;
        uint64_t m = x * (uint64_t)n;
        uint32_t lo = (uint32_t)m;
        if (lo >= n || lo >= (uint32_t)(-n) % n) return (uint32_t)(m >> 32);
    }
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

// mkdir -p; existing folders are fine.
static int mkdir_p(const char *path, BsError *err) {
    char buf[PATH_MAX];
    if (!path || !*path) return bs_fail(err, "io", "output_dir", "empty folder name");
    if ((size_t)snprintf(buf, sizeof buf, "%s", path) >= sizeof buf)
        return bs_fail(err, "io", "output_dir", "path too long: %s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return bs_fail(err, "io", "output_dir", "cannot create %s: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        return bs_fail(err, "io", "output_dir", "cannot create %s: %s", buf, strerror(errno));
    struct stat st;
    if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode))
        return bs_fail(err, "io", "output_dir", "%s is not a folder", buf);
    return 0;
}

static int path_join(char *out, size_t cap, const char *a, const char *b, BsError *err) {
    if ((size_t)snprintf(out, cap, "%s/%s", a, b) >= cap)
        return bs_fail(err, "io", "output_dir", "path too long: %s/%s", a, b);
    return 0;
}

// ---------------------------------------------------------------------------
// packed micro-batches

void train_pack_align_batch(const TrainPack *p, int B, int preference, int dpo, int orpo,
                            AlignBatch *ab) {
    memset(ab, 0, sizeof *ab);
    ab->n = B;
    ab->chosen_logps = p->comp;
    ab->chosen_len = p->n_comp;
    if (preference) {
        ab->rejected_logps = p->comp + B;
        ab->rejected_len = p->n_comp + B;
    }
    if (dpo) {
        ab->ref_chosen_logps = p->ref_comp;
        ab->ref_rejected_logps = p->ref_comp + B;
    }
    if (orpo) {
        ab->chosen_all_logps = p->all;
        ab->chosen_all_len = p->n_all;
    }
}

void train_pack_free(TrainPack *p) {
    free(p->offsets);
    free(p->tokens);
    free(p->targets);
    free(p->kind);
    free(p->logp);
    free(p->ref_logp);
    free(p->dlogp);
    free(p->n_comp);
    free(p->n_all);
    free(p->comp);
    free(p->all);
    free(p->ref_comp);
    free(p->group);
    memset(p, 0, sizeof *p);
}

#define GROW(ptr, n)                                                                               \
    do {                                                                                           \
        void *q_ = realloc((ptr), (n) * sizeof *(ptr));                                            \
        if (!q_) return bs_fail(err, "out_of_memory", "", "cannot allocate a micro-batch");        \
        (ptr) = q_;                                                                                \
    } while (0)

static int pack_reserve(TrainPack *p, size_t n_seqs, size_t n_tok, BsError *err) {
    if (n_seqs > p->cap_seq) {
        GROW(p->offsets, n_seqs + 1);
        GROW(p->n_comp, n_seqs);
        GROW(p->n_all, n_seqs);
        GROW(p->comp, n_seqs);
        GROW(p->all, n_seqs);
        GROW(p->ref_comp, n_seqs);
        GROW(p->group, n_seqs);
        p->cap_seq = n_seqs;
    }
    if (n_tok > p->cap_tok) {
        GROW(p->tokens, n_tok);
        GROW(p->targets, n_tok);
        GROW(p->kind, n_tok);
        GROW(p->logp, n_tok);
        GROW(p->ref_logp, n_tok);
        GROW(p->dlogp, n_tok);
        p->cap_tok = n_tok;
    }
    return 0;
}

// Appends one sequence prompt + completion. Positions whose next token is a
// completion token get TRAIN_TGT_COMPLETION; with score_prompt the positions
// whose next token is still in the prompt get TRAIN_TGT_PROMPT (ORPO's NLL
// covers the whole chosen sequence); the last position predicts nothing.
static void pack_seq(TrainPack *p, const int *prompt, int np, const int *comp, int nc,
                     int score_prompt) {
    int s = p->n_seqs, o = p->n_tok, len = np + nc;
    memcpy(p->tokens + o, prompt, (size_t)np * sizeof(int));
    memcpy(p->tokens + o + np, comp, (size_t)nc * sizeof(int));
    int ncomp = 0, nall = 0;
    for (int i = 0; i < len; i++) {
        int next = i + 1;
        unsigned char k = TRAIN_TGT_NONE;
        if (next < len)
            k = next >= np     ? TRAIN_TGT_COMPLETION
                : score_prompt ? TRAIN_TGT_PROMPT
                               : TRAIN_TGT_NONE;
        p->kind[o + i] = k;
        p->targets[o + i] = k == TRAIN_TGT_NONE ? -1 : p->tokens[o + next];
        ncomp += k == TRAIN_TGT_COMPLETION;
        nall += k != TRAIN_TGT_NONE;
    }
    p->n_comp[s] = ncomp;
    p->n_all[s] = nall;
    p->n_tok += len;
    p->n_seqs++;
    p->offsets[p->n_seqs] = p->n_tok;
}

int train_pack_batch(TrainPack *p, const Dataset *ds, const int *idx, int B, int preference,
                     int orpo, BsError *err) {
    size_t n_tok = 0;
    for (int j = 0; j < B; j++) {
        const Example *e = &ds->rows[idx[j]];
        n_tok += (size_t)e->n_prompt + (size_t)e->n_chosen;
        if (preference) n_tok += (size_t)e->n_prompt + (size_t)e->n_rejected;
    }
    if (n_tok > INT_MAX) return bs_fail(err, "invalid_batch", "", "micro-batch too large");
    size_t n_seqs = (size_t)B * (preference ? 2 : 1);
    if (pack_reserve(p, n_seqs, n_tok, err) != 0) return -1;
    p->n_seqs = 0;
    p->n_tok = 0;
    p->offsets[0] = 0;
    for (int j = 0; j < B; j++) {
        const Example *e = &ds->rows[idx[j]];
        pack_seq(p, e->prompt, e->n_prompt, e->chosen, e->n_chosen, orpo);
    }
    if (preference) {
        for (int j = 0; j < B; j++) {
            const Example *e = &ds->rows[idx[j]];
            pack_seq(p, e->prompt, e->n_prompt, e->rejected, e->n_rejected, 0);
        }
    }
    for (int s = 0; s < p->n_seqs; s++)
        p->group[s] = preference ? (s < B ? s : s - B) : s / 2;
    p->n_groups = preference ? B : (B + 1) / 2;
    return 0;
}

// Sequence s's sums of logp over its completion targets (comp[s]) and, when
// all is not NULL, over every scored position.
static void seq_sums(const TrainPack *p, int s, const float *logp, double *comp, double *all) {
    double c = 0.0, a = 0.0;
    for (int i = p->offsets[s]; i < p->offsets[s + 1]; i++) {
        if (p->kind[i] == TRAIN_TGT_COMPLETION) c += logp[i];
        if (p->kind[i] != TRAIN_TGT_NONE) a += logp[i];
    }
    comp[s] = c;
    if (all) all[s] = a;
}

void train_pack_sums(const TrainPack *p, const float *logp, double *comp, double *all) {
    for (int s = 0; s < p->n_seqs; s++)
        seq_sums(p, s, logp, comp, all);
}

// dlogp over sequence s: dc on completion targets plus da on every scored
// position, divided by scale; 0 elsewhere.
static void seq_dlogp(const TrainPack *p, int s, double dc, double da, double scale, float *dlogp) {
    for (int i = p->offsets[s]; i < p->offsets[s + 1]; i++) {
        double d = 0.0;
        if (p->kind[i] == TRAIN_TGT_COMPLETION)
            d = dc + da;
        else if (p->kind[i] == TRAIN_TGT_PROMPT)
            d = da;
        dlogp[i] = (float)(d / scale);
    }
}

void train_pack_dlogp(TrainPack *p, int B, const double *d_chosen, const double *d_rejected,
                      const double *d_chosen_all, double scale) {
    for (int s = 0; s < p->n_seqs; s++) {
        int chosen = s < B;
        double dc = chosen ? d_chosen[s] : d_rejected[s - B];
        double da = chosen && d_chosen_all ? d_chosen_all[s] : 0.0;
        seq_dlogp(p, s, dc, da, scale, p->dlogp);
    }
}

// The policy pass's per-group gradient (ModelGroups.grad) for the sequences
// with p->group[s] == j (train_pack_batch: a pair, or two SFT rows).
typedef struct {
    TrainPack *p;
    const Recipe *r;
    int B, preference, dpo, orpo;
    double scale;
} GroupCtx;

static int group_grad(void *ctx, int j, const float *logp, float *dlogp, BsError *err) {
    GroupCtx *g = ctx;
    TrainPack *p = g->p;
    for (int s = 0; s < p->n_seqs; s++)
        if (p->group[s] == j) seq_sums(p, s, logp, p->comp, p->all);
    AlignBatch ab;
    train_pack_align_batch(p, g->B, g->preference, g->dpo, g->orpo, &ab);
    double dc = 0.0, dr = 0.0, da = 0.0;
    // Preference: pair j's coefficients; SFT: each row's own (the same value).
    if (g->preference && align_pair_gradient(g->r, &ab, j, &dc, &dr, &da, err) != 0) return -1;
    for (int s = 0; s < p->n_seqs; s++) {
        if (p->group[s] != j) continue;
        if (!g->preference) {
            if (align_pair_gradient(g->r, &ab, s, &dc, NULL, NULL, err) != 0) return -1;
            seq_dlogp(p, s, dc, 0.0, g->scale, dlogp);
        } else if (s < g->B) {
            seq_dlogp(p, s, dc, g->orpo ? da : 0.0, g->scale, dlogp);
        } else {
            seq_dlogp(p, s, dr, 0.0, g->scale, dlogp);
        }
    }
    return 0;
}

int train_pack_score(TrainPack *p, Model *m, float *logp, BsError *err) {
    ModelGroups groups = {p->n_groups, p->group, NULL, NULL};
    ModelBatch mb = {p->n_seqs, p->offsets, p->tokens, p->targets};
    return model_forward_grouped(m, &mb, &groups, logp, NULL, err);
}

int train_pack_policy_forward(TrainPack *p, Model *policy, const Recipe *r, int B, int preference,
                              int dpo, int orpo, double scale, AlignResult *ar, BsError *err) {
    GroupCtx g = {p, r, B, preference, dpo, orpo, scale};
    ModelGroups groups = {p->n_groups, p->group, group_grad, &g};
    ModelBatch mb = {p->n_seqs, p->offsets, p->tokens, p->targets};
    if (model_forward_grouped(policy, &mb, &groups, p->logp, p->dlogp, err) != 0) return -1;
    train_pack_sums(p, p->logp, p->comp, p->all);
    AlignBatch ab;
    train_pack_align_batch(p, B, preference, dpo, orpo, &ab);
    return align_compute(r, &ab, ar, err);
}

// ---------------------------------------------------------------------------
// the trainer

typedef struct {
    const Recipe *r;
    const TrainHooks *h;
    int preference, dpo, orpo;
    Model *policy, *ref;
    ModelConfig cfg;
    size_t P;
    Tokenizer *tok;
    char tok_path[PATH_MAX]; // the tokenizer loaded ("" when none or bytes)
    int model_is_hf;         // the policy came from a Hugging Face folder
    HfModelInfo hf_info;     // its config.json's bos / eos (model_is_hf)
    OutputFormat out_fmt;    // resolved: llama2c or hf
    ChatTemplate tpl;        // resolved template for conversational rows
    char tpl_warning[512];   // chat_detect's warning, logged when rows used it
    Dataset train, eval;
    int have_eval;
    double *ref_train, *ref_eval; // (2n) precomputed reference sums: chosen, rejected
    uint32_t ref_crc;
    float *m, *v;
    ParamRange ranges[MAX_RANGES];
    int n_ranges;
    TrainPack pk;
    int max_b;
    double *d_chosen, *d_rejected, *d_chosen_all; // (max_b)
    int *idx;                                     // (max_b) eval row indices
    // schedule
    int bs, n_batches, mb_per_step, steps_per_epoch, total, warmup;
    // data order
    int *perm;
    int cur_epoch;
    uint64_t rng, epoch_rng;
    // logging window
    int win_steps;
    double win_loss, win_tokens, win_seconds;
    MetricWindow win;
    int64_t total_tokens; // packed tokens of every step so far; -1: unknown (v1 checkpoint)
    uint64_t recipe_hash, data_hash;
    char ckpt_dir[PATH_MAX];
    int last_saved;
    BsError *err;
} Trainer;

static void tlog(Trainer *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tlog(Trainer *t, const char *fmt, ...) {
    if (!t->h || !t->h->on_log) return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    t->h->on_log(t->h->user, line);
}

// Reference sums for the rows of a packed batch: from the precomputed table
// when present, else a forward of the frozen reference on the same batch.
static int ref_sums(Trainer *t, const int *idx, int B, const double *table) {
    TrainPack *p = &t->pk;
    if (table) {
        for (int j = 0; j < B; j++) {
            p->ref_comp[j] = table[2 * (size_t)idx[j]];
            p->ref_comp[B + j] = table[2 * (size_t)idx[j] + 1];
        }
        return 0;
    }
    if (train_pack_score(p, t->ref, p->ref_logp, t->err) != 0) return -1;
    train_pack_sums(p, p->ref_logp, p->ref_comp, NULL);
    return 0;
}

// One micro-batch of rows idx[0..B) of ds. train: forward with activations,
// align, backward with dlogp scaled by 1/scale. Returns the micro-batch loss
// in *loss and the align metrics in *metrics.
static int micro_batch(Trainer *t, const Dataset *ds, const int *idx, int B,
                       const double *ref_table, int train, double scale, double *loss,
                       MetricRow *metrics) {
    TrainPack *p = &t->pk;
    if (train_pack_batch(p, ds, idx, B, t->preference, t->orpo, t->err) != 0) return -1;
    ModelBatch mb = {p->n_seqs, p->offsets, p->tokens, p->targets};
    // The reference first: with its sums known, the policy's forward can form
    // each pair's gradient while that pair's logits are still in memory.
    if (t->dpo && ref_sums(t, idx, B, ref_table) != 0) return -1;
    AlignResult ar = {0};
    ar.d_chosen = t->d_chosen;
    ar.d_rejected = t->d_rejected;
    ar.d_chosen_all = t->d_chosen_all;
    memset(t->d_chosen_all, 0, (size_t)t->max_b * sizeof(double));
    if (train) {
        if (train_pack_policy_forward(p, t->policy, t->r, B, t->preference, t->dpo, t->orpo, scale,
                                      &ar, t->err) != 0)
            return -1;
    } else {
        if (train_pack_score(p, t->policy, p->logp, t->err) != 0) return -1;
        train_pack_sums(p, p->logp, p->comp, p->all);
        AlignBatch ab;
        train_pack_align_batch(p, B, t->preference, t->dpo, t->orpo, &ab);
        if (align_compute(t->r, &ab, &ar, t->err) != 0) return -1;
    }
    *loss = ar.loss;
    *metrics = ar.metrics;
    if (!train) return 0;
    return model_backward(t->policy, &mb, NULL, t->err);
}

// Reference sums of every row of ds, batched in file order by B (as TRL's
// precompute pass). They equal the per-batch recomputation to float32
// rounding, not bit for bit: a packed forward's sums move by an ulp with the
// batch a sequence shares (OpenBLAS blocking), and training batches are shuffled.
static int precompute_refs(Trainer *t, const Dataset *ds, int B, double **out) {
    *out = NULL;
    if (ds->n == 0) return 0;
    double *tab = malloc(2 * (size_t)ds->n * sizeof *tab);
    if (!tab) return bs_fail(t->err, "out_of_memory", "", "cannot allocate reference log-probs");
    for (int start = 0; start < ds->n; start += B) {
        int nb = ds->n - start < B ? ds->n - start : B;
        for (int j = 0; j < nb; j++)
            t->idx[j] = start + j;
        if (train_pack_batch(&t->pk, ds, t->idx, nb, 1, 0, t->err) != 0 ||
            ref_sums(t, t->idx, nb, NULL) != 0) {
            free(tab);
            return -1;
        }
        for (int j = 0; j < nb; j++) {
            tab[2 * (size_t)(start + j)] = t->pk.ref_comp[j];
            tab[2 * (size_t)(start + j) + 1] = t->pk.ref_comp[nb + j];
        }
    }
    *out = tab;
    return 0;
}

static int emit(Trainer *t, const MetricRow *row) {
    if (t->h && t->h->on_metrics && t->h->on_metrics(t->h->user, row) != 0)
        return bs_fail(t->err, "aborted", "", "the metrics consumer stopped the run at step %d",
                       row->step);
    return 0;
}

static double epoch_of(const Trainer *t, int step) {
    return (double)step / t->steps_per_epoch;
}

// Eval over the whole eval set in file order; emits an eval row for `step`.
static int evaluate(Trainer *t, int step, TrainResult *res) {
    int B = t->r->per_device_eval_batch_size;
    double loss_sum = 0.0;
    long n_rows = 0;
    MetricWindow w = {0};
    for (int start = 0; start < t->eval.n; start += B) {
        int nb = t->eval.n - start < B ? t->eval.n - start : B;
        for (int j = 0; j < nb; j++)
            t->idx[j] = start + j;
        double loss;
        MetricRow m;
        if (micro_batch(t, &t->eval, t->idx, nb, t->ref_eval, 0, 1.0, &loss, &m) != 0) {
            if (strcmp(t->err->code, "nan_loss") == 0)
                bs_fail(t->err, "nan_loss", "", "eval loss is not finite at step %d", step);
            return -1;
        }
        loss_sum += loss * nb;
        n_rows += nb;
        window_add_row(&w, &m);
    }
    MetricRow row = {0};
    row.step = step;
    row.is_eval = 1;
    metric_set(&row, "eval_loss", loss_sum / (double)n_rows);
    for (int i = 0; i < w.n; i++) {
        const char *name = metric_name(w.name[i], 1);
        if (name) metric_set(&row, name, w.sum[i] / w.count[i]);
    }
    metric_set(&row, "epoch", epoch_of(t, step));
    if (t->preference) {
        double margin = 0, acc = 0;
        metric_get(&row, "eval_rewards/margins", &margin);
        metric_get(&row, "eval_rewards/accuracies", &acc);
        tlog(t, "eval step %d: loss %.4f margin %.4f acc %.2f", step, loss_sum / n_rows, margin,
             acc);
    } else {
        tlog(t, "eval step %d: loss %.4f", step, loss_sum / n_rows);
    }
    res->last_eval = row;
    return emit(t, &row);
}

// ---------------------------------------------------------------------------
// identity of a run, for refusing a checkpoint from another recipe or data

static int compute_hashes(Trainer *t) {
    // Paths may be rewritten between runs (daemon data roots, cwd) and output
    // knobs do not change the numbers; the data and weights are checked by
    // content instead (data_hash, ref_crc).
    Recipe copy = *t->r;
    copy.model = copy.tokenizer = copy.reference_model = NULL;
    copy.train_file = copy.eval_file = copy.output_dir = NULL;
    copy.threads = 0;
    copy.save_steps = 0;
    char *json = recipe_to_json(&copy);
    if (!json) return bs_fail(t->err, "out_of_memory", "", "cannot serialise the recipe");
    // chat_template and output_format (the canonical JSON's last keys) are
    // left out too: the template's effect is in data_hash, the format is
    // output only, and leaving them out keeps older checkpoints resumable.
    char *tail = strstr(json, ",\"chat_template\":");
    size_t len = tail ? (size_t)(tail - json) : strlen(json);
    t->recipe_hash = fnv1a(fnv1a(FNV_INIT, json, len), "}", tail ? 1 : 0);
    free(json);
    uint64_t h = FNV_INIT;
    const Dataset *sets[2] = {&t->train, &t->eval};
    for (int k = 0; k < 2; k++) {
        h = fnv1a(h, &sets[k]->n, sizeof(int));
        for (int i = 0; i < sets[k]->n; i++) {
            const Example *e = &sets[k]->rows[i];
            h = fnv1a(h, &e->n_prompt, sizeof(int));
            h = fnv1a(h, e->prompt, (size_t)e->n_prompt * sizeof(int));
            h = fnv1a(h, &e->n_chosen, sizeof(int));
            h = fnv1a(h, e->chosen, (size_t)e->n_chosen * sizeof(int));
            h = fnv1a(h, &e->n_rejected, sizeof(int));
            if (e->n_rejected > 0) h = fnv1a(h, e->rejected, (size_t)e->n_rejected * sizeof(int));
        }
    }
    t->data_hash = h;
    return 0;
}

static uint32_t crc_floats(const float *x, size_t n) {
    uint32_t crc = (uint32_t)crc32(0L, Z_NULL, 0);
    const Bytef *p = (const Bytef *)x;
    size_t len = n * sizeof(float);
    while (len > 0) {
        uInt c = len > (1u << 30) ? (1u << 30) : (uInt)len;
        crc = (uint32_t)crc32(crc, p, c);
        p += c;
        len -= c;
    }
    return crc;
}

// ---------------------------------------------------------------------------
// the trainer's extra bytes in the state file (version EXTRA_VERSION):
//   u32 version | i64 total_tokens (version >= 2) | f64 win_loss | f64 win_tokens
//   | f64 win_seconds | i32 win_steps | i32 n_metrics
//   | n x (u8 len, name bytes, f64 sum, i32 count)
//   | i32 n_ref_train | i32 n_ref_eval (-1: not precomputed) | f64 tables (2n each)

typedef struct {
    uint8_t *buf;
    size_t len, cap;
    int oom;
} Buf;

static void buf_put(Buf *b, const void *data, size_t n) {
    if (b->oom) return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *q = realloc(b->buf, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->buf = q;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, data, n);
    b->len += n;
}

static int extra_build(Trainer *t, Buf *b) {
    uint32_t ver = EXTRA_VERSION;
    buf_put(b, &ver, 4);
    buf_put(b, &t->total_tokens, 8);
    buf_put(b, &t->win_loss, 8);
    buf_put(b, &t->win_tokens, 8);
    buf_put(b, &t->win_seconds, 8);
    buf_put(b, &t->win_steps, 4);
    int32_t n = t->win.n;
    buf_put(b, &n, 4);
    for (int i = 0; i < t->win.n; i++) {
        size_t len = strlen(t->win.name[i]);
        uint8_t l = (uint8_t)(len > 255 ? 255 : len);
        buf_put(b, &l, 1);
        buf_put(b, t->win.name[i], l);
        buf_put(b, &t->win.sum[i], 8);
        buf_put(b, &t->win.count[i], 4);
    }
    int32_t nt = t->ref_train ? t->train.n : -1, ne = t->ref_eval ? t->eval.n : -1;
    buf_put(b, &nt, 4);
    buf_put(b, &ne, 4);
    if (nt > 0) buf_put(b, t->ref_train, 2 * (size_t)nt * sizeof(double));
    if (ne > 0) buf_put(b, t->ref_eval, 2 * (size_t)ne * sizeof(double));
    if (b->oom) {
        free(b->buf);
        b->buf = NULL;
        return bs_fail(t->err, "out_of_memory", "", "cannot serialise the training state");
    }
    return 0;
}

typedef struct {
    const uint8_t *p;
    size_t left;
    int bad;
} Rd;

static void rd(Rd *r, void *out, size_t n) {
    if (r->bad || r->left < n) {
        r->bad = 1;
        memset(out, 0, n);
        return;
    }
    memcpy(out, r->p, n);
    r->p += n;
    r->left -= n;
}

// Restores the logging window and the reference tables; 0, or -1 when the
// bytes are malformed or disagree with the loaded data (checkpoint unusable).
static int extra_apply(Trainer *t, const uint8_t *data, size_t len, double **ref_train,
                       double **ref_eval) {
    Rd r = {data, len, 0};
    uint32_t ver;
    rd(&r, &ver, 4);
    // Version 1 lacks the token count: the run continues exactly, without num_tokens.
    if (ver != 1 && ver != EXTRA_VERSION) return -1;
    t->total_tokens = -1;
    if (ver >= 2) {
        rd(&r, &t->total_tokens, 8);
        if (r.bad || t->total_tokens < 0) return -1;
    }
    rd(&r, &t->win_loss, 8);
    rd(&r, &t->win_tokens, 8);
    rd(&r, &t->win_seconds, 8);
    rd(&r, &t->win_steps, 4);
    int32_t n;
    rd(&r, &n, 4);
    if (r.bad || n < 0 || n > BS_MAX_METRICS || t->win_steps < 0) return -1;
    memset(&t->win, 0, sizeof t->win);
    for (int i = 0; i < n; i++) {
        uint8_t l;
        char name[256];
        rd(&r, &l, 1);
        rd(&r, name, l);
        name[l] = '\0';
        double sum;
        int32_t count;
        rd(&r, &sum, 8);
        rd(&r, &count, 4);
        if (r.bad || count < 0) return -1;
        const char *s = metric_name(name, 0);
        if (!s) return -1;
        t->win.name[t->win.n] = s;
        t->win.sum[t->win.n] = sum;
        t->win.count[t->win.n] = count;
        t->win.n++;
    }
    int32_t nt, ne;
    rd(&r, &nt, 4);
    rd(&r, &ne, 4);
    if (r.bad) return -1;
    *ref_train = *ref_eval = NULL;
    if (nt >= 0 || ne >= 0) {
        if (nt != t->train.n || ne != (t->have_eval ? t->eval.n : -1)) return -1;
        if (nt > 0) {
            if (r.left < 2 * (size_t)nt * sizeof(double)) return -1;
            *ref_train = malloc(2 * (size_t)nt * sizeof(double));
            if (!*ref_train) return -1;
            rd(&r, *ref_train, 2 * (size_t)nt * sizeof(double));
        }
        if (ne > 0) {
            if (r.left < 2 * (size_t)ne * sizeof(double)) goto bad;
            *ref_eval = malloc(2 * (size_t)ne * sizeof(double));
            if (!*ref_eval) goto bad;
            rd(&r, *ref_eval, 2 * (size_t)ne * sizeof(double));
        }
    }
    if (r.bad || r.left != 0) goto bad;
    return 0;
bad:
    free(*ref_train);
    free(*ref_eval);
    *ref_train = *ref_eval = NULL;
    return -1;
}

// ---------------------------------------------------------------------------
// checkpoints

static int parse_step_name(const char *name, int *step) {
    int n = 0, end = 0;
    if (sscanf(name, "step-%d.state%n", &n, &end) != 1 || name[end] != '\0' || n < 0) return 0;
    char canon[64];
    snprintf(canon, sizeof canon, "step-%d.state", n);
    if (strcmp(canon, name) != 0) return 0; // "step-007.state" is not ours
    *step = n;
    return 1;
}

static int cmp_desc(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x < y) - (x > y);
}

// Steps of the step-N.state files in dir, newest first (malloc'd); also
// removes leftover *.state.tmp from interrupted writes.
static int list_checkpoints(const char *dir, int **steps, int *n, BsError *err) {
    *steps = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT) return 0;
        return bs_fail(err, "io", "output_dir", "cannot list %s: %s", dir, strerror(errno));
    }
    int cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (l > 10 && strcmp(de->d_name + l - 10, ".state.tmp") == 0) {
            char p[PATH_MAX];
            if ((size_t)snprintf(p, sizeof p, "%s/%s", dir, de->d_name) < sizeof p) unlink(p);
            continue;
        }
        int s;
        if (!parse_step_name(de->d_name, &s)) continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 8;
            int *q = realloc(*steps, (size_t)cap * sizeof(int));
            if (!q) {
                closedir(d);
                free(*steps);
                *steps = NULL;
                return bs_fail(err, "out_of_memory", "", "cannot list checkpoints");
            }
            *steps = q;
        }
        (*steps)[(*n)++] = s;
    }
    closedir(d);
    if (*n > 1) qsort(*steps, (size_t)*n, sizeof(int), cmp_desc);
    return 0;
}

// 0, or -1 when the name does not fit (cannot happen for a valid ckpt_dir).
static int step_path(char *out, size_t cap, const char *dir, int step) {
    int n = snprintf(out, cap, "%s/step-%d.state", dir, step);
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

static int save_checkpoint(Trainer *t, int step) {
    if (mkdir_p(t->ckpt_dir, t->err) != 0) return -1;
    char path[PATH_MAX];
    if (step_path(path, sizeof path, t->ckpt_dir, step) != 0)
        return bs_fail(t->err, "io", "output_dir", "checkpoint path too long");
    Buf extra = {0};
    if (extra_build(t, &extra) != 0) return -1;
    TrainState s = {0};
    s.cfg = t->cfg;
    s.method = (int32_t)t->r->method;
    s.step = step;
    s.total_steps = t->total;
    s.epoch = step / t->steps_per_epoch;
    s.batch_in_epoch = (step % t->steps_per_epoch) * t->mb_per_step;
    // The generator state before shuffling the epoch the next step belongs to.
    s.rng_state = s.epoch == t->cur_epoch ? t->epoch_rng : t->rng;
    s.recipe_hash = t->recipe_hash;
    s.data_hash = t->data_hash;
    s.ref_crc = t->ref_crc;
    s.extra = extra.buf;
    s.extra_len = extra.len;
    s.n_params = t->P;
    s.params = model_params(t->policy);
    s.m = t->m;
    s.v = t->v;
    int rc = state_write(path, &s, t->err);
    free(extra.buf);
    if (rc != 0) return -1;
    t->last_saved = step;
    if (t->h && t->h->on_checkpoint) t->h->on_checkpoint(t->h->user, step, path);
    // Rotate only now that the new file is durable.
    int *steps, n;
    if (list_checkpoints(t->ckpt_dir, &steps, &n, t->err) != 0) return -1;
    for (int i = KEEP_CHECKPOINTS; i < n; i++) {
        char old[PATH_MAX];
        if (step_path(old, sizeof old, t->ckpt_dir, steps[i]) == 0) unlink(old);
    }
    free(steps);
    return 0;
}

// Loads the newest valid checkpoint, if any. Returns 1 when resumed, 0 when
// there is none (fresh start), -1 on error (a valid checkpoint of another run).
static int try_resume(Trainer *t, int *start_step, double **ref_train, double **ref_eval) {
    int *steps, n;
    if (list_checkpoints(t->ckpt_dir, &steps, &n, t->err) != 0) return -1;
    int resumed = 0;
    for (int i = 0; i < n && !resumed; i++) {
        char path[PATH_MAX];
        if (step_path(path, sizeof path, t->ckpt_dir, steps[i]) != 0) continue;
        TrainState s;
        BsError e;
        if (state_read(path, &s, &e) != 0) {
            tlog(t, "skipping unreadable checkpoint %s: %s", path, e.message);
            continue;
        }
        const ModelConfig *a = &s.cfg, *b = &t->cfg;
        int same_cfg = a->dim == b->dim && a->hidden_dim == b->hidden_dim &&
                       a->n_layers == b->n_layers && a->n_heads == b->n_heads &&
                       a->n_kv_heads == b->n_kv_heads && a->vocab_size == b->vocab_size &&
                       a->seq_len == b->seq_len && a->shared_classifier == b->shared_classifier;
        if (!same_cfg || s.method != (int32_t)t->r->method || s.recipe_hash != t->recipe_hash ||
            s.data_hash != t->data_hash || s.total_steps != t->total) {
            state_free(&s);
            free(steps);
            return bs_fail(t->err, "resume_mismatch", "output_dir",
                           "%s belongs to a run with a different recipe, model or data; use a new "
                           "output_dir or delete its checkpoints folder",
                           path);
        }
        if (extra_apply(t, s.extra, s.extra_len, ref_train, ref_eval) != 0) {
            tlog(t, "skipping checkpoint %s: malformed trainer section", path);
            state_free(&s);
            memset(&t->win, 0, sizeof t->win);
            t->win_steps = 0;
            t->win_loss = t->win_tokens = t->win_seconds = 0;
            t->total_tokens = 0;
            continue;
        }
        if (t->dpo && !*ref_train && t->ref && s.ref_crc != t->ref_crc) {
            free(*ref_train);
            free(*ref_eval);
            state_free(&s);
            free(steps);
            return bs_fail(t->err, "resume_mismatch", "reference_model",
                           "the reference weights differ from those %s was trained against; use "
                           "a new output_dir or delete its checkpoints folder",
                           path);
        }
        memcpy(model_params(t->policy), s.params, t->P * sizeof(float));
        memcpy(t->m, s.m, t->P * sizeof(float));
        memcpy(t->v, s.v, t->P * sizeof(float));
        t->rng = s.rng_state;
        t->cur_epoch = -1;
        t->ref_crc = s.ref_crc;
        *start_step = s.step;
        t->last_saved = s.step;
        state_free(&s);
        resumed = 1;
    }
    free(steps);
    return resumed;
}

// ---------------------------------------------------------------------------
// set-up

static int load_policy(Trainer *t) {
    const Recipe *r = t->r;
    float *params = NULL;
    if (r->model) {
        // A folder is a Hugging Face model; its bos / eos go into an HF export.
        t->model_is_hf = hf_is_model_dir(r->model);
        int rc = t->model_is_hf ? hf_read_model(r->model, &t->cfg, &params, &t->hf_info, t->err)
                                : ckpt_read_model(r->model, &t->cfg, &params, t->err);
        if (rc != 0) {
            if (!t->err->param[0]) snprintf(t->err->param, sizeof t->err->param, "model");
            return -1;
        }
    } else if (r->has_model_init) {
        recipe_model_init_config(&r->model_init, &t->cfg);
    } else {
        return bs_fail(t->err, "invalid_recipe", "model",
                       "the recipe names no model or model_init");
    }
    if (model_config_validate(&t->cfg, t->err) != 0) goto fail;
    t->out_fmt = r->output_format != OUTPUT_AUTO ? r->output_format
                 : t->model_is_hf                ? OUTPUT_HF
                                                 : OUTPUT_LLAMA2C;
    // llama2.c's format stores neither: run.c assumes 1e-5 and 10000.
    if (t->out_fmt == OUTPUT_LLAMA2C && (t->cfg.norm_eps != 1e-5f || t->cfg.rope_theta != 1e4f)) {
        bs_fail(t->err, "invalid_hyperparameter", "output_format",
                "the model has rms_norm_eps %g and rope_theta %g, which a llama2.c checkpoint "
                "cannot carry (it assumes 1e-05 and 10000): use output_format: hf",
                (double)t->cfg.norm_eps, (double)t->cfg.rope_theta);
        goto fail;
    }
    if (model_create(&t->policy, &t->cfg, 1, t->err) != 0) goto fail;
    model_set_threads(t->policy, r->threads);
    t->P = model_param_count(&t->cfg);
    if (params)
        memcpy(model_params(t->policy), params, t->P * sizeof(float));
    else
        model_init_random(t->policy, r->seed);
    free(params);
    return 0;
fail:
    free(params);
    return -1;
}

static int load_tokenizer(Trainer *t) {
    const Recipe *r = t->r;
    // The recipe's tokenizer, else the Hugging Face model folder's own.
    const char *path = r->tokenizer                                 ? r->tokenizer
                       : t->model_is_hf && tok_dir_has_hf(r->model) ? r->model
                                                                    : NULL;
    if (path) {
        if ((size_t)snprintf(t->tok_path, sizeof t->tok_path, "%s", path) >= sizeof t->tok_path)
            return bs_fail(t->err, "io", "tokenizer", "tokenizer path too long: %s", path);
        if (tok_load(&t->tok, path, t->cfg.vocab_size, t->err) != 0) {
            // tokenizer_unsupported names the tokenizer.json field; the rest the key.
            if (strcmp(t->err->code, "tokenizer_unsupported") != 0 || !t->err->param[0])
                snprintf(t->err->param, sizeof t->err->param, "tokenizer");
            return -1;
        }
    } else if (recipe_uses_byte_tokenizer(r)) {
        if (tok_create_bytes(&t->tok, t->err) != 0) return -1;
    }
    // else: pre-tokenized rows only (data_load with tok NULL)
    t->tpl = data_chat_template(r, path, t->tpl_warning, sizeof t->tpl_warning);
    return 0;
}

static int load_reference(Trainer *t) {
    const Recipe *r = t->r;
    if (model_create(&t->ref, &t->cfg, 0, t->err) != 0) return -1;
    model_set_threads(t->ref, r->threads);
    if (!r->reference_model) {
        memcpy(model_params(t->ref), model_params(t->policy), t->P * sizeof(float));
    } else {
        ModelConfig c;
        float *params = NULL;
        if (ckpt_read_model(r->reference_model, &c, &params, t->err) != 0) {
            snprintf(t->err->param, sizeof t->err->param, "reference_model");
            return -1;
        }
        const ModelConfig *p = &t->cfg;
        if (c.dim != p->dim || c.hidden_dim != p->hidden_dim || c.n_layers != p->n_layers ||
            c.n_heads != p->n_heads || c.n_kv_heads != p->n_kv_heads ||
            c.vocab_size != p->vocab_size || c.seq_len != p->seq_len ||
            c.shared_classifier != p->shared_classifier) {
            free(params);
            return bs_fail(t->err, "model_invalid", "reference_model",
                           "reference_model %s has config dim %d hidden %d layers %d heads %d/%d "
                           "vocab %d seq %d; the policy has dim %d hidden %d layers %d heads "
                           "%d/%d vocab %d seq %d: they must match",
                           r->reference_model, c.dim, c.hidden_dim, c.n_layers, c.n_heads,
                           c.n_kv_heads, c.vocab_size, c.seq_len, p->dim, p->hidden_dim,
                           p->n_layers, p->n_heads, p->n_kv_heads, p->vocab_size, p->seq_len);
        }
        memcpy(model_params(t->ref), params, t->P * sizeof(float));
        free(params);
    }
    t->ref_crc = crc_floats(model_params(t->ref), t->P);
    return 0;
}

static int load_data(Trainer *t) {
    const Recipe *r = t->r;
    int max_len = r->max_length < t->cfg.seq_len ? r->max_length : t->cfg.seq_len;
    if (!r->train_file)
        return bs_fail(t->err, "invalid_recipe", "train_file", "the recipe names no train_file");
    DataOptions opt = {.chat_template = t->tpl};
    if (data_load_ex(&t->train, r->train_file, r, t->tok, t->cfg.vocab_size, max_len, &opt,
                     t->err) != 0) {
        if (!t->err->param[0]) snprintf(t->err->param, sizeof t->err->param, "train_file");
        return -1;
    }
    if (t->train.n == 0)
        return bs_fail(t->err, "dataset_empty", "train_file",
                       "%s has no usable rows (%d lines, %d refused, %d dropped after truncation)",
                       r->train_file, t->train.n_lines, t->train.n_bad, t->train.n_dropped);
    if (r->eval_file) {
        if (data_load_ex(&t->eval, r->eval_file, r, t->tok, t->cfg.vocab_size, max_len, &opt,
                         t->err) != 0) {
            if (!t->err->param[0]) snprintf(t->err->param, sizeof t->err->param, "eval_file");
            return -1;
        }
        t->have_eval = t->eval.n > 0;
        if (!t->have_eval) tlog(t, "eval_file %s has no usable rows: no evaluation", r->eval_file);
    }
    if (t->train.n_chat + t->eval.n_chat > 0) {
        if (t->tpl_warning[0]) tlog(t, "warning: chat_template: %s", t->tpl_warning);
        tlog(t, "conversational rows rendered with the %s chat template",
             chat_template_name(t->tpl));
    }
    if (t->preference) {
        const Dataset *sets[2] = {&t->train, &t->eval};
        for (int k = 0; k < 2; k++) {
            for (int i = 0; i < sets[k]->n; i++) {
                if (sets[k]->rows[i].n_rejected <= 0 || !sets[k]->rows[i].rejected)
                    return bs_fail(t->err, "dataset_schema", k ? "eval_file" : "train_file",
                                   "line %d has no rejected completion: %s needs preference rows",
                                   sets[k]->rows[i].line, recipe_method_name(r->method));
            }
        }
    }
    return 0;
}

static void new_epoch(Trainer *t, int epoch) {
    t->epoch_rng = t->rng;
    for (int i = 0; i < t->train.n; i++)
        t->perm[i] = i;
    if (t->r->shuffle) {
        for (int i = t->train.n - 1; i > 0; i--) { // Fisher-Yates
            int j = (int)rng_below(&t->rng, (uint32_t)i + 1);
            int x = t->perm[i];
            t->perm[i] = t->perm[j];
            t->perm[j] = x;
        }
    }
    t->cur_epoch = epoch;
}

static void trainer_free(Trainer *t) {
    model_free(t->policy);
    model_free(t->ref);
    tok_free(t->tok);
    data_free(&t->train);
    data_free(&t->eval);
    free(t->ref_train);
    free(t->ref_eval);
    free(t->m);
    free(t->v);
    train_pack_free(&t->pk);
    free(t->d_chosen);
    free(t->d_rejected);
    free(t->d_chosen_all);
    free(t->idx);
    free(t->perm);
}

// One optimizer step g (0-based) over its micro-batches; fills the window.
static int optimizer_step(Trainer *t, int g, double *grad_norm_out) {
    const Recipe *r = t->r;
    int k = g % t->steps_per_epoch;
    model_zero_grads(t->policy);
    double t0 = now_seconds(), step_loss = 0.0;
    long tokens = 0;
    for (int j = 0; j < t->mb_per_step; j++) {
        int b = k * t->mb_per_step + j;
        int start = b * t->bs;
        int nb = t->train.n - start < t->bs ? t->train.n - start : t->bs;
        const int *idx = t->perm + start;
        double loss;
        MetricRow m;
        if (micro_batch(t, &t->train, idx, nb, t->ref_train, 1, t->mb_per_step, &loss, &m) != 0) {
            if (strcmp(t->err->code, "nan_loss") == 0)
                bs_fail(t->err, "nan_loss", "learning_rate",
                        "the loss is not finite at step %d: lower learning_rate or check the data",
                        g + 1);
            return -1;
        }
        step_loss += loss / t->mb_per_step;
        tokens += t->pk.n_tok;
        window_add_row(&t->win, &m);
    }
    float *grads = model_grads(t->policy);
    // The optimizer runs on the policy's own threads (idle between passes).
    OpsPool *pool = model_pool(t->policy);
    double gn = clip_grad_norm_pool(pool, grads, t->P, r->max_grad_norm);
    if (!isfinite(step_loss) || !isfinite(gn))
        return bs_fail(t->err, "nan_loss", "learning_rate",
                       "%s is not finite at step %d (loss %g, grad_norm %g): lower learning_rate "
                       "or check the data",
                       isfinite(step_loss) ? "the gradient norm" : "the loss", g + 1, step_loss,
                       gn);
    AdamWConfig ac = {lr_at(r, g, t->total, t->warmup), r->adam_beta1, r->adam_beta2,
                      r->adam_epsilon, r->weight_decay};
    adamw_step_pool(pool, model_params(t->policy), grads, t->m, t->v, t->ranges, t->n_ranges, g + 1,
                    &ac);
    t->win_steps++;
    t->win_loss += step_loss;
    t->win_tokens += (double)tokens;
    if (t->total_tokens >= 0) t->total_tokens += tokens;
    t->win_seconds += now_seconds() - t0;
    *grad_norm_out = gn;
    return 0;
}

static int log_train_row(Trainer *t, int step, double grad_norm, TrainResult *res) {
    MetricRow row = {0};
    row.step = step;
    double loss = t->win_loss / t->win_steps;
    metric_set(&row, "loss", loss);
    metric_set(&row, "grad_norm", grad_norm);
    double lr = lr_at(t->r, step - 1, t->total, t->warmup);
    metric_set(&row, "learning_rate", lr);
    for (int i = 0; i < t->win.n; i++)
        metric_set(&row, t->win.name[i], t->win.sum[i] / t->win.count[i]);
    metric_set(&row, "epoch", epoch_of(t, step));
    double tps = t->win_seconds > 0 ? t->win_tokens / t->win_seconds : 0.0;
    metric_set(&row, "tokens_per_second", tps);
    if (t->total_tokens >= 0) metric_set(&row, "num_tokens", (double)t->total_tokens);
    if (t->preference) {
        double margin = 0, acc = 0;
        metric_get(&row, "rewards/margins", &margin);
        metric_get(&row, "rewards/accuracies", &acc);
        tlog(t, "step %d/%d loss %.4f margin %.4f acc %.2f lr %.3g %.0f tok/s", step, t->total,
             loss, margin, acc, lr, tps);
    } else {
        tlog(t, "step %d/%d loss %.4f lr %.3g %.0f tok/s", step, t->total, loss, lr, tps);
    }
    t->win_steps = 0;
    t->win_loss = t->win_tokens = t->win_seconds = 0.0;
    memset(&t->win, 0, sizeof t->win);
    res->last_train = row;
    return emit(t, &row);
}

// The final model as a Hugging Face folder (hf_export, F32): bos / eos from
// the starting folder's config.json, else the tokenizer's (llama2.c's 1 / 2
// without one), and the tokenizer files when the tokenizer is a Hugging Face
// one (its folder, or the folder of its .json file).
static int write_final_hf(Trainer *t, const char *final_dir, TrainResult *res) {
    HfModelInfo info = {0}, *ip = NULL;
    if (t->model_is_hf) {
        ip = &t->hf_info;
    } else if (t->tok) {
        info.bos_token_id = tok_bos(t->tok);
        int eos = tok_eos(t->tok);
        info.n_eos = eos >= 0 ? 1 : 0;
        info.eos_token_ids[0] = eos;
        ip = &info;
    }
    char src[PATH_MAX];
    const char *tok_dir = NULL;
    if (t->tok_path[0] && tok_path_is_hf(t->tok_path)) {
        snprintf(src, sizeof src, "%s", t->tok_path); // fits: tok_path has the same size
        if (!hf_is_model_dir(src)) {                  // a .json file: its folder
            char *slash = strrchr(src, '/');
            if (!slash)
                snprintf(src, sizeof src, ".");
            else if (slash == src)
                src[1] = '\0';
            else
                *slash = '\0';
        }
        tok_dir = src;
    }
    if ((size_t)snprintf(res->final_model, sizeof res->final_model, "%s", final_dir) >=
        sizeof res->final_model)
        return bs_fail(t->err, "io", "output_dir", "output_dir path too long");
    if (hf_export(final_dir, &t->cfg, model_params(t->policy), ip, 0, tok_dir, t->err) != 0) {
        res->final_model[0] = '\0';
        return -1;
    }
    return 0;
}

int train_run(const Recipe *r, const TrainHooks *hooks, TrainResult *res, BsError *err) {
    BsError local;
    if (!err) err = &local;
    bs_error_clear(err);
    if (!r || !res)
        return bs_fail(err, "invalid_argument", "", "train_run: missing recipe or result");
    memset(res, 0, sizeof *res);
    if (!r->output_dir || !*r->output_dir)
        return bs_fail(err, "invalid_recipe", "output_dir", "train_run needs an output_dir");
    if (r->per_device_train_batch_size <= 0 || r->per_device_eval_batch_size <= 0 ||
        r->gradient_accumulation_steps <= 0 || r->logging_steps <= 0)
        return bs_fail(err, "invalid_hyperparameter", "per_device_train_batch_size",
                       "batch sizes, gradient_accumulation_steps and logging_steps must be > 0");

    Trainer tr = {0};
    Trainer *t = &tr;
    t->r = r;
    t->h = hooks;
    t->err = err;
    t->dpo = r->method == METHOD_DPO;
    t->orpo = r->method == METHOD_ORPO;
    t->preference = t->dpo || t->orpo;
    t->cur_epoch = -1;
    t->last_saved = -1;
    if (t->preference && r->data != DATA_PREFERENCE) {
        return bs_fail(err, "invalid_recipe", "data", "%s needs data: preference",
                       recipe_method_name(r->method));
    }
    // The models run r->threads threads of their own over single-threaded
    // OpenBLAS (model_set_threads); 0 leaves the count to OpenBLAS's default.
    if (r->threads > 0) openblas_set_num_threads(1);
    if (mkdir_p(r->output_dir, err) != 0) return -1;
    if (path_join(t->ckpt_dir, sizeof t->ckpt_dir, r->output_dir, "checkpoints", err) != 0)
        return -1;

    if (load_policy(t) != 0) goto fail;
    if (load_tokenizer(t) != 0) goto fail;
    if (load_data(t) != 0) goto fail;

    // Schedule.
    t->bs = r->per_device_train_batch_size;
    t->n_batches = (t->train.n + t->bs - 1) / t->bs;
    int A = r->gradient_accumulation_steps;
    t->steps_per_epoch = t->n_batches / A > 1 ? t->n_batches / A : 1;
    t->mb_per_step = t->n_batches < A ? t->n_batches : A;
    if (r->max_steps > 0) {
        t->total = r->max_steps;
    } else {
        double tot = ceil(r->num_train_epochs * t->steps_per_epoch);
        if (!(tot >= 0) || tot > INT_MAX) {
            bs_fail(err, "invalid_hyperparameter", "num_train_epochs",
                    "num_train_epochs gives %g optimizer steps", tot);
            goto fail;
        }
        t->total = (int)tot;
    }
    t->warmup = lr_warmup_steps(r, t->total);
    res->total_steps = t->total;

    // Buffers.
    t->max_b = t->bs > r->per_device_eval_batch_size ? t->bs : r->per_device_eval_batch_size;
    t->d_chosen = calloc((size_t)t->max_b, sizeof(double));
    t->d_rejected = calloc((size_t)t->max_b, sizeof(double));
    t->d_chosen_all = calloc((size_t)t->max_b, sizeof(double));
    t->idx = calloc((size_t)t->max_b, sizeof(int));
    t->perm = calloc((size_t)t->train.n, sizeof(int));
    t->m = calloc(t->P, sizeof(float));
    t->v = calloc(t->P, sizeof(float));
    if (!t->d_chosen || !t->d_rejected || !t->d_chosen_all || !t->idx || !t->perm || !t->m ||
        !t->v) {
        bs_fail(err, "out_of_memory", "", "cannot allocate optimizer state for %zu parameters",
                t->P);
        goto fail;
    }
    t->n_ranges = model_param_ranges(&t->cfg, t->ranges, MAX_RANGES);
    if (compute_hashes(t) != 0) goto fail;

    // Reference (DPO): the frozen start or reference_model. Built before a
    // resume so its weights can be checked against the checkpoint's.
    if (t->dpo && load_reference(t) != 0) goto fail;

    t->rng = r->seed;
    int g = 0;
    double *rt = NULL, *re = NULL;
    int resumed = try_resume(t, &g, &rt, &re);
    if (resumed < 0) goto fail;
    if (resumed) {
        t->ref_train = rt;
        t->ref_eval = re;
        res->resumed_from = g;
        tlog(t, "resuming from step %d/%d", g, t->total);
        if (hooks && hooks->on_resume) hooks->on_resume(hooks->user, g);
    }
    if (t->dpo && r->precompute_ref_log_probs) {
        if (!t->ref_train) {
            tlog(t, "precomputing reference log-probs for %d train and %d eval rows", t->train.n,
                 t->have_eval ? t->eval.n : 0);
            if (precompute_refs(t, &t->train, t->bs, &t->ref_train) != 0) goto fail;
            if (t->have_eval &&
                precompute_refs(t, &t->eval, r->per_device_eval_batch_size, &t->ref_eval) != 0)
                goto fail;
        }
        model_free(t->ref); // every reference value is in the tables now
        t->ref = NULL;
    }
    if (!resumed)
        tlog(t, "training %s: %zu parameters, %d rows, %d steps (%d per epoch)",
             recipe_method_name(r->method), t->P, t->train.n, t->total, t->steps_per_epoch);

    while (g < t->total) {
        if (hooks && hooks->should_stop && hooks->should_stop(hooks->user)) {
            if (t->last_saved != g && save_checkpoint(t, g) != 0) goto fail;
            tlog(t, "stopped at step %d/%d; checkpoint saved", g, t->total);
            res->stopped = 1;
            break;
        }
        int epoch = g / t->steps_per_epoch;
        if (epoch != t->cur_epoch) new_epoch(t, epoch);
        double gn = 0.0;
        if (optimizer_step(t, g, &gn) != 0) goto fail;
        g++;
        res->step = g;
        if (hooks && hooks->on_progress)
            hooks->on_progress(hooks->user, g, t->total, epoch_of(t, g));
        if (g % r->logging_steps == 0 || g == t->total)
            if (log_train_row(t, g, gn, res) != 0) goto fail;
        if (t->have_eval && ((r->eval_steps > 0 && g % r->eval_steps == 0) || g == t->total))
            if (evaluate(t, g, res) != 0) goto fail;
        if (r->save_steps > 0 && g % r->save_steps == 0)
            if (save_checkpoint(t, g) != 0) goto fail;
    }
    res->step = g;

    if (!res->stopped) {
        char final_dir[PATH_MAX];
        if (path_join(final_dir, sizeof final_dir, r->output_dir, "final", err) != 0) goto fail;
        if (mkdir_p(final_dir, err) != 0) goto fail;
        if (t->out_fmt == OUTPUT_HF) {
            if (write_final_hf(t, final_dir, res) != 0) goto fail;
        } else {
            if ((size_t)snprintf(res->final_model, sizeof res->final_model, "%s/model.bin",
                                 final_dir) >= sizeof res->final_model) {
                bs_fail(err, "io", "output_dir", "output_dir path too long");
                goto fail;
            }
            if (ckpt_write_llama2c(res->final_model, &t->cfg, model_params(t->policy), err) != 0) {
                res->final_model[0] = '\0';
                goto fail;
            }
        }
        tlog(t, "finished %d steps; model written to %s", g, res->final_model);
    }
    trainer_free(t);
    return 0;

fail:
    trainer_free(t);
    return -1;
}
