// test_train_learning.c — training learns. A synthetic preference task the
// test generates itself (pre-tokenized, vocabulary 64): the prompt is 6 random
// "content" tokens (3..31); the chosen completion is a deterministic function
// of the prompt (first token 32 + last prompt token, then counting up mod 32);
// the rejected completion is 6 random tokens of the same set (32..63). Chosen
// and rejected tokens have the same distribution, so an untrained model ranks
// about half of the pairs right, and only learning the rule beats that.
// A held-out eval file uses other prompts.
//
// A tiny model_init model (dim 32, 2 layers, 4 heads) is trained with DPO,
// ORPO and SFT through train_run, and the before/after numbers are measured
// independently of the trainer: the test packs its own batches, runs
// model_forward on the seeded start model and on final/model.bin, and checks
// the trainer's eval rows against its own computation.
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt.h"
#include "model.h"
#include "recipe.h"
#include "test_util.h"
#include "train.h"

#define VOCAB 64
#define NP 6 // prompt tokens
#define NC 6 // completion tokens
#define N_TRAIN 256
#define N_EVAL 64
#define SEED 1234

typedef struct {
    int prompt[NP], chosen[NC], rejected[NC];
} Pair;

static char g_root[256];
static Pair g_eval[N_EVAL];

static uint64_t g_rng;
static uint32_t rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 11);
}

static void make_pair(Pair *p) {
    for (int i = 0; i < NP; i++)
        p->prompt[i] = 3 + (int)(rnd() % 29);
    int c = p->prompt[NP - 1];
    for (int i = 0; i < NC; i++)
        p->chosen[i] = 32 + (c + i) % 32;
    for (int i = 0; i < NC; i++)
        p->rejected[i] = 32 + (int)(rnd() % 32);
}

static void put_ids(FILE *f, const char *key, const int *ids, int n) {
    fprintf(f, "\"%s\":[", key);
    for (int i = 0; i < n; i++)
        fprintf(f, "%s%d", i ? "," : "", ids[i]);
    fputc(']', f);
}

// Writes n pairs as preference rows (and as SFT rows to sft_path).
static void write_files(const char *pref_path, const char *sft_path, Pair *pairs, int n,
                        uint64_t seed) {
    g_rng = seed;
    FILE *f = fopen(pref_path, "w"), *g = fopen(sft_path, "w");
    for (int i = 0; i < n; i++) {
        make_pair(&pairs[i]);
        fputc('{', f);
        put_ids(f, "prompt_ids", pairs[i].prompt, NP);
        fputc(',', f);
        put_ids(f, "chosen_ids", pairs[i].chosen, NC);
        fputc(',', f);
        put_ids(f, "rejected_ids", pairs[i].rejected, NC);
        fputs("}\n", f);
        fputc('{', g);
        put_ids(g, "prompt_ids", pairs[i].prompt, NP);
        fputc(',', g);
        put_ids(g, "completion_ids", pairs[i].chosen, NC);
        fputs("}\n", g);
    }
    fclose(f);
    fclose(g);
}

// Sum of log p(completion | prompt) under m, with the test's own packing: one
// sequence, targets = next token at completion positions only.
static double completion_logp(Model *m, const int *prompt, const int *comp) {
    int tokens[NP + NC], targets[NP + NC], offsets[2] = {0, NP + NC};
    float logp[NP + NC];
    memcpy(tokens, prompt, sizeof(int) * NP);
    memcpy(tokens + NP, comp, sizeof(int) * NC);
    for (int i = 0; i < NP + NC; i++)
        targets[i] = (i >= NP - 1 && i + 1 < NP + NC) ? tokens[i + 1] : -1;
    ModelBatch b = {1, offsets, tokens, targets};
    BsError err;
    if (model_forward(m, &b, logp, 0, &err) != 0) {
        fprintf(stderr, "forward: %s\n", err.message);
        return NAN;
    }
    double s = 0;
    for (int i = 0; i < NP + NC; i++)
        if (targets[i] >= 0) s += logp[i];
    return s;
}

static ModelConfig model_cfg(void) {
    ModelConfig c = {.dim = 32,
                     .hidden_dim = 96,
                     .n_layers = 2,
                     .n_heads = 4,
                     .n_kv_heads = 4,
                     .vocab_size = VOCAB,
                     .seq_len = 64,
                     .shared_classifier = 1,
                     .norm_eps = 1e-5f,
                     .rope_theta = 10000.0f};
    return c;
}

// The start model train_run builds from model_init: model_init_random(seed).
static Model *start_model(void) {
    ModelConfig c = model_cfg();
    Model *m = NULL;
    BsError err;
    if (model_create(&m, &c, 0, &err) != 0) return NULL;
    model_init_random(m, SEED);
    return m;
}

static Model *load_final(const char *out_dir) {
    char path[512];
    snprintf(path, sizeof path, "%s/final/model.bin", out_dir);
    ModelConfig c;
    float *params = NULL;
    BsError err;
    if (ckpt_read_llama2c(path, &c, &params, &err) != 0) {
        fprintf(stderr, "%s: %s\n", path, err.message);
        return NULL;
    }
    Model *m = NULL;
    if (model_create(&m, &c, 0, &err) == 0)
        memcpy(model_params(m), params, model_param_count(&c) * sizeof(float));
    free(params);
    return m;
}

typedef struct {
    MetricRow first_train, last_train;
    int n_train;
} Rows;

static int on_metrics(void *user, const MetricRow *row) {
    Rows *r = user;
    if (!row->is_eval) {
        if (r->n_train++ == 0) r->first_train = *row;
        r->last_train = *row;
    }
    return 0;
}

static int run(const char *method, const char *data, const char *extra, const char *out,
               TrainResult *res, Rows *rows) {
    char text[2048];
    snprintf(text, sizeof text,
             "{\"method\":\"%s\",\"model_init\":{\"dim\":32,\"n_layers\":2,\"n_heads\":4,"
             "\"hidden_dim\":96,\"max_seq_len\":64,\"vocab_size\":%d},"
             "\"train_file\":\"%s/%s-train.jsonl\",\"eval_file\":\"%s/%s-eval.jsonl\","
             "\"output_dir\":\"%s\",\"per_device_train_batch_size\":8,"
             "\"per_device_eval_batch_size\":16,\"logging_steps\":20,\"seed\":%d%s}",
             method, VOCAB, g_root, data, g_root, data, out, SEED, extra);
    Recipe r;
    BsError err = {0};
    if (recipe_parse(text, strlen(text), RECIPE_JSON, &r, &err) != 0) {
        fprintf(stderr, "recipe: %s: %s\n", err.param, err.message);
        return -1;
    }
    TrainHooks h = {0};
    h.user = rows;
    h.on_metrics = on_metrics;
    int rc = train_run(&r, &h, res, &err);
    if (rc != 0) fprintf(stderr, "%s: train_run: [%s] %s\n", method, err.code, err.message);
    recipe_free(&r);
    return rc;
}

static double get(const MetricRow *row, const char *name) {
    double v = NAN;
    CHECK_MSG(metric_get(row, name, &v), "row of step %d has no %s", row->step, name);
    return v;
}

static void test_dpo(Model *start) {
    // At step 0 the policy equals the reference, so DPO's rewards are exactly 0
    // and its strict accuracy is 0: "before" is instead the fraction of eval
    // pairs the start model already ranks right, logp(chosen) > logp(rejected)
    // (about 0.5 for a random init).
    double ref_c[N_EVAL], ref_r[N_EVAL];
    int before = 0;
    for (int i = 0; i < N_EVAL; i++) {
        ref_c[i] = completion_logp(start, g_eval[i].prompt, g_eval[i].chosen);
        ref_r[i] = completion_logp(start, g_eval[i].prompt, g_eval[i].rejected);
        before += ref_c[i] > ref_r[i];
    }
    double acc_before = (double)before / N_EVAL;

    char out[512];
    snprintf(out, sizeof out, "%s/dpo-run", g_root);
    TrainResult res;
    Rows rows = {0};
    if (run("dpo", "pref", ",\"learning_rate\":0.001,\"beta\":0.1,\"max_steps\":120", out, &res,
            &rows) != 0) {
        CHECK(0);
        return;
    }
    CHECK_INT_EQ(res.step, 120);
    CHECK(res.last_eval.n > 0 && res.last_eval.step == 120);
    double acc = get(&res.last_eval, "eval_rewards/accuracies");
    double margin = get(&res.last_eval, "eval_rewards/margins");
    printf("DPO: eval pairs ranked right by the start model %.3f; after 120 steps "
           "eval_rewards/accuracies %.3f, eval_rewards/margins %.3f, eval_loss %.4f "
           "(train loss %.4f at step %d -> %.4f at step %d)\n",
           acc_before, acc, margin, get(&res.last_eval, "eval_loss"),
           get(&rows.first_train, "loss"), rows.first_train.step, get(&rows.last_train, "loss"),
           rows.last_train.step);
    CHECK_MSG(acc_before > 0.3 && acc_before < 0.7, "start model already ranks %.3f", acc_before);
    CHECK_MSG(acc >= 0.9, "DPO eval_rewards/accuracies %.3f < 0.9", acc);
    CHECK(margin > 0);

    // Independent recomputation from final/model.bin and the start model:
    // accuracy = fraction with beta*(pc - rc) > beta*(pr - rr); margin the mean.
    Model *fin = load_final(out);
    CHECK(fin != NULL);
    if (!fin) return;
    int right = 0;
    double msum = 0;
    for (int i = 0; i < N_EVAL; i++) {
        double pc = completion_logp(fin, g_eval[i].prompt, g_eval[i].chosen);
        double pr = completion_logp(fin, g_eval[i].prompt, g_eval[i].rejected);
        double rc = 0.1 * (pc - ref_c[i]), rr = 0.1 * (pr - ref_r[i]);
        right += rc > rr;
        msum += rc - rr;
    }
    CHECK_CLOSE((double)right / N_EVAL, acc, 0, 1.0 / N_EVAL + 1e-12);
    // eval batches of 16 divide 64: the mean of batch means is the mean.
    CHECK_CLOSE(msum / N_EVAL, margin, 1e-4, 1e-5);
    model_free(fin);
}

static void test_orpo(Model *start) {
    // ORPO's rewards are beta * mean token log-prob; completions have equal
    // length, so the start accuracy is the fraction with logp(chosen) > logp(rejected).
    int before = 0;
    for (int i = 0; i < N_EVAL; i++)
        before += completion_logp(start, g_eval[i].prompt, g_eval[i].chosen) >
                  completion_logp(start, g_eval[i].prompt, g_eval[i].rejected);
    double acc_before = (double)before / N_EVAL;

    char out[512];
    snprintf(out, sizeof out, "%s/orpo-run", g_root);
    TrainResult res;
    Rows rows = {0};
    if (run("orpo", "pref", ",\"learning_rate\":0.001,\"beta\":0.1,\"max_steps\":120", out, &res,
            &rows) != 0) {
        CHECK(0);
        return;
    }
    double acc = get(&res.last_eval, "eval_rewards/accuracies");
    printf("ORPO: eval accuracy of the start model %.3f; after 120 steps "
           "eval_rewards/accuracies %.3f, eval_rewards/margins %.4f, eval_nll_loss %.4f, "
           "eval_log_odds_ratio %.4f\n",
           acc_before, acc, get(&res.last_eval, "eval_rewards/margins"),
           get(&res.last_eval, "eval_nll_loss"), get(&res.last_eval, "eval_log_odds_ratio"));
    CHECK_MSG(acc_before > 0.3 && acc_before < 0.7, "start model already ranks %.3f", acc_before);
    CHECK_MSG(acc >= 0.9, "ORPO eval_rewards/accuracies %.3f < 0.9", acc);

    Model *fin = load_final(out);
    CHECK(fin != NULL);
    if (!fin) return;
    int right = 0;
    for (int i = 0; i < N_EVAL; i++)
        right += completion_logp(fin, g_eval[i].prompt, g_eval[i].chosen) >
                 completion_logp(fin, g_eval[i].prompt, g_eval[i].rejected);
    CHECK_CLOSE((double)right / N_EVAL, acc, 0, 1.0 / N_EVAL + 1e-12);
    model_free(fin);
}

static void test_sft(Model *start) {
    // Held-out completion NLL per token of the start model.
    double nll = 0;
    for (int i = 0; i < N_EVAL; i++)
        nll -= completion_logp(start, g_eval[i].prompt, g_eval[i].chosen);
    double before = nll / (N_EVAL * NC);

    char out[512];
    snprintf(out, sizeof out, "%s/sft-run", g_root);
    TrainResult res;
    Rows rows = {0};
    if (run("sft", "sft", ",\"learning_rate\":0.001,\"max_steps\":120", out, &res, &rows) != 0) {
        CHECK(0);
        return;
    }
    double after = get(&res.last_eval, "eval_loss");
    printf("SFT: held-out eval loss %.4f before (uniform would be ln 64 = %.4f), %.4f after 120 "
           "steps (%.0f%% lower)\n",
           before, log(64.0), after, 100.0 * (1.0 - after / before));
    CHECK_MSG(after <= 0.7 * before, "SFT eval_loss %.4f is not 30%% below %.4f", after, before);

    Model *fin = load_final(out);
    CHECK(fin != NULL);
    if (!fin) return;
    double nll2 = 0;
    for (int i = 0; i < N_EVAL; i++)
        nll2 -= completion_logp(fin, g_eval[i].prompt, g_eval[i].chosen);
    // Equal completion lengths and batches of 16 dividing 64: the trainer's
    // batch-weighted mean of per-batch token means equals the token mean.
    CHECK_CLOSE(after, nll2 / (N_EVAL * NC), 1e-4, 1e-6);
    model_free(fin);
}

static void rm_rf(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (d) {
            struct dirent *de;
            while ((de = readdir(d)) != NULL) {
                if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
                char sub[1024];
                snprintf(sub, sizeof sub, "%s/%s", path, de->d_name);
                rm_rf(sub);
            }
            closedir(d);
        }
        rmdir(path);
    } else {
        unlink(path);
    }
}

int main(void) {
    snprintf(g_root, sizeof g_root, "/tmp/bs-learn-XXXXXX");
    if (!mkdtemp(g_root)) {
        perror("mkdtemp");
        return 1;
    }
    static Pair train[N_TRAIN];
    char a[512], b[512];
    snprintf(a, sizeof a, "%s/pref-train.jsonl", g_root);
    snprintf(b, sizeof b, "%s/sft-train.jsonl", g_root);
    write_files(a, b, train, N_TRAIN, 0x9e3779b97f4a7c15ull);
    snprintf(a, sizeof a, "%s/pref-eval.jsonl", g_root);
    snprintf(b, sizeof b, "%s/sft-eval.jsonl", g_root);
    write_files(a, b, g_eval, N_EVAL, 0x2545f4914f6cdd1dull);

    Model *start = start_model();
    CHECK(start != NULL);
    if (start) {
        test_dpo(start);
        test_orpo(start);
        test_sft(start);
        model_free(start);
    }
    rm_rf(g_root);
    return test_summary("train_learning");
}
