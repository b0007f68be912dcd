// test_state.c — the training-state checkpoint: bit-exact round trip, refusal
// of corrupt / truncated / foreign files, and resume equivalence: a run stopped
// by should_stop and resumed must log the same rows and write the same final
// model bytes as the uninterrupted run (plain DPO, DPO with precomputed
// reference log-probs and gradient accumulation, fallback past a corrupt
// newest checkpoint); plus checkpoint rotation, refusal of a checkpoint from
// another recipe, and the nan_loss stop.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt.h"
#include "model.h"
#include "recipe.h"
#include "state.h"
#include "test_util.h"
#include "train.h"

static char g_root[256];

// ---------------------------------------------------------------------------
// helpers

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

static unsigned char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static int spit(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, len, f);
    return fclose(f) == 0 && w == len ? 0 : -1;
}

static uint64_t g_rng = 0x1234567u;
static uint32_t rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 11);
}

// ---------------------------------------------------------------------------
// 1. state file round trip and refusals

static ModelConfig tiny_cfg(void) {
    ModelConfig c = {.dim = 8,
                     .hidden_dim = 16,
                     .n_layers = 2,
                     .n_heads = 2,
                     .n_kv_heads = 1,
                     .vocab_size = 16,
                     .seq_len = 8,
                     .shared_classifier = 1,
                     .norm_eps = 1e-5f,
                     .rope_theta = 10000.0f};
    return c;
}

static void test_round_trip(void) {
    ModelConfig c = tiny_cfg();
    size_t P = model_param_count(&c);
    float *p = malloc(P * sizeof(float)), *m = malloc(P * sizeof(float)),
          *v = malloc(P * sizeof(float));
    uint8_t extra[37];
    for (size_t i = 0; i < P; i++) {
        p[i] = (float)((int)(rnd() % 20001) - 10000) * 1e-4f;
        m[i] = (float)(rnd() % 1000) * 1e-7f - 5e-5f;
        v[i] = (float)(rnd() % 1000) * 1e-9f;
    }
    p[3] = -0.0f; // signed zero must survive
    for (size_t i = 0; i < sizeof extra; i++)
        extra[i] = (uint8_t)rnd();
    TrainState s = {0};
    s.cfg = c;
    s.method = 1;
    s.step = 17;
    s.total_steps = 40;
    s.epoch = 2;
    s.batch_in_epoch = 3;
    s.rng_state = 0xfeedfacecafebeefull;
    s.recipe_hash = 0x0123456789abcdefull;
    s.data_hash = 0xdeadbeef00112233ull;
    s.ref_crc = 0xa5a5a5a5u;
    s.extra = extra;
    s.extra_len = sizeof extra;
    s.n_params = P;
    s.params = p;
    s.m = m;
    s.v = v;

    char path[512];
    snprintf(path, sizeof path, "%s/rt.state", g_root);
    BsError err = {0};
    CHECK_MSG(state_write(path, &s, &err) == 0, "%s", err.message);
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CHECK(access(tmp, F_OK) != 0); // renamed away

    TrainState r;
    CHECK_MSG(state_read(path, &r, &err) == 0, "%s", err.message);
    CHECK(memcmp(&r.cfg, &s.cfg, sizeof c) == 0);
    CHECK_INT_EQ(r.method, 1);
    CHECK_INT_EQ(r.step, 17);
    CHECK_INT_EQ(r.total_steps, 40);
    CHECK_INT_EQ(r.epoch, 2);
    CHECK_INT_EQ(r.batch_in_epoch, 3);
    CHECK(r.rng_state == s.rng_state && r.recipe_hash == s.recipe_hash &&
          r.data_hash == s.data_hash && r.ref_crc == s.ref_crc);
    CHECK(r.extra_len == sizeof extra && memcmp(r.extra, extra, sizeof extra) == 0);
    CHECK(r.n_params == P);
    CHECK(memcmp(r.params, p, P * sizeof(float)) == 0);
    CHECK(memcmp(r.m, m, P * sizeof(float)) == 0);
    CHECK(memcmp(r.v, v, P * sizeof(float)) == 0);
    state_free(&r);

    // Independent expectation of the size: prefix 16 + header 88 + 8 + extra
    // + 8 + 3 P floats + crc 4.
    size_t len;
    unsigned char *bytes = slurp(path, &len);
    CHECK(bytes != NULL);
    CHECK_INT_EQ(len, 16 + 88 + 8 + sizeof extra + 8 + 12 * P + 4);
    CHECK(memcmp(bytes, "BSLMSTAT", 8) == 0);

    // Every single-byte corruption is refused: magic, version, header, extra,
    // parameters, the v block and the CRC itself.
    size_t where[] = {
        0, 9, 20, 16 + 88 + 8 + 5, 16 + 88 + 8 + sizeof extra + 8 + 100, len - 4 - 3, len - 1};
    char bad[512];
    snprintf(bad, sizeof bad, "%s/bad.state", g_root);
    for (size_t k = 0; k < sizeof where / sizeof where[0]; k++) {
        bytes[where[k]] ^= 0x40;
        CHECK(spit(bad, bytes, len) == 0);
        BsError e = {0};
        CHECK_MSG(state_read(bad, &r, &e) != 0, "corruption at byte %zu accepted", where[k]);
        CHECK_MSG(strcmp(e.code, "corrupt_state") == 0, "byte %zu: code %s", where[k], e.code);
        bytes[where[k]] ^= 0x40;
    }
    // Truncations at every section boundary and in the middle of a block.
    size_t cuts[] = {0, 7, 16, 50, 16 + 88 + 4, 16 + 88 + 8 + 10, len / 2, len - 4, len - 1};
    for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
        CHECK(spit(bad, bytes, cuts[k]) == 0);
        BsError e = {0};
        CHECK_MSG(state_read(bad, &r, &e) != 0, "truncation to %zu accepted", cuts[k]);
        CHECK_MSG(strcmp(e.code, "corrupt_state") == 0, "cut %zu: code %s", cuts[k], e.code);
    }
    // A lying length field (huge extra_len) is refused before any allocation.
    unsigned char *big = malloc(len);
    memcpy(big, bytes, len);
    uint64_t huge = UINT64_MAX - 3;
    memcpy(big + 16 + 88, &huge, 8);
    CHECK(spit(bad, big, len) == 0);
    BsError e = {0};
    CHECK(state_read(bad, &r, &e) != 0 && strcmp(e.code, "corrupt_state") == 0);
    // Trailing garbage is refused too (sizes must match the file exactly).
    unsigned char *longer = malloc(len + 3);
    memcpy(longer, bytes, len);
    memset(longer + len, 0, 3);
    CHECK(spit(bad, longer, len + 3) == 0);
    CHECK(state_read(bad, &r, &e) != 0 && strcmp(e.code, "corrupt_state") == 0);
    // Missing file: io.
    char missing[512];
    snprintf(missing, sizeof missing, "%s/none.state", g_root);
    CHECK(state_read(missing, &r, &e) != 0 && strcmp(e.code, "io") == 0);
    // Writing into a folder that does not exist fails cleanly.
    char nodir[512];
    snprintf(nodir, sizeof nodir, "%s/no/such/dir.state", g_root);
    CHECK(state_write(nodir, &s, &e) != 0 && strcmp(e.code, "io") == 0);
    // Mismatched parameter count is refused by the writer.
    s.n_params = P - 1;
    CHECK(state_write(path, &s, &e) != 0);

    free(longer);
    free(big);
    free(bytes);
    free(p);
    free(m);
    free(v);
    unlink(bad);
    unlink(path);
}

// ---------------------------------------------------------------------------
// 2. resume equivalence

#define MAX_ROWS 64
typedef struct {
    MetricRow rows[MAX_ROWS];
    int n;
    int stop_after; // 0: never
    int done;       // optimizer steps reported by on_progress
    int resumed;    // -1: on_resume not called
    int checkpoints;
} Collect;

static int c_metrics(void *user, const MetricRow *row) {
    Collect *c = user;
    if (c->n < MAX_ROWS) c->rows[c->n++] = *row;
    return 0;
}
static int c_stop(void *user) {
    Collect *c = user;
    return c->stop_after > 0 && c->done >= c->stop_after;
}
static void c_progress(void *user, int step, int total, double epoch) {
    (void)total;
    (void)epoch;
    ((Collect *)user)->done = step;
}
static void c_resume(void *user, int step) {
    ((Collect *)user)->resumed = step;
}
static void c_ckpt(void *user, int step, const char *path) {
    (void)step;
    (void)path;
    ((Collect *)user)->checkpoints++;
}

static TrainHooks hooks_for(Collect *c) {
    TrainHooks h = {0};
    h.user = c;
    h.on_metrics = c_metrics;
    h.should_stop = c_stop;
    h.on_progress = c_progress;
    h.on_resume = c_resume;
    h.on_checkpoint = c_ckpt;
    return h;
}

// Pre-tokenized preference rows over a 32-token vocabulary.
static void write_pairs(const char *path, int n, uint64_t seed) {
    g_rng = seed;
    FILE *f = fopen(path, "w");
    for (int i = 0; i < n; i++) {
        int np = 2 + (int)(rnd() % 4), nc = 1 + (int)(rnd() % 4), nr = 1 + (int)(rnd() % 4);
        fprintf(f, "{\"prompt_ids\":[");
        for (int k = 0; k < np; k++)
            fprintf(f, "%s%u", k ? "," : "", 3 + rnd() % 29);
        fprintf(f, "],\"chosen_ids\":[");
        for (int k = 0; k < nc; k++)
            fprintf(f, "%s%u", k ? "," : "", 3 + rnd() % 29);
        fprintf(f, "],\"rejected_ids\":[");
        for (int k = 0; k < nr; k++)
            fprintf(f, "%s%u", k ? "," : "", 3 + rnd() % 29);
        fprintf(f, "]}\n");
    }
    fclose(f);
}

static int make_recipe(Recipe *r, const char *method, const char *extra_json, const char *out_dir) {
    char text[2048];
    snprintf(text, sizeof text,
             "{\"method\":\"%s\","
             "\"model_init\":{\"dim\":16,\"n_layers\":2,\"n_heads\":2,\"n_kv_heads\":1,"
             "\"max_seq_len\":16,\"vocab_size\":32},"
             "\"train_file\":\"%s/train.jsonl\",\"eval_file\":\"%s/eval.jsonl\","
             "\"output_dir\":\"%s\",\"learning_rate\":0.003,\"per_device_train_batch_size\":4,"
             "\"per_device_eval_batch_size\":3,\"max_steps\":6,\"logging_steps\":2,"
             "\"eval_steps\":3,\"warmup_steps\":1,\"seed\":7%s}",
             method, g_root, g_root, out_dir, extra_json);
    BsError err = {0};
    if (recipe_parse(text, strlen(text), RECIPE_JSON, r, &err) != 0) {
        fprintf(stderr, "recipe: %s: %s\n", err.param, err.message);
        return -1;
    }
    return 0;
}

static const MetricRow *find_row(const Collect *c, int step, int is_eval) {
    for (int i = 0; i < c->n; i++)
        if (c->rows[i].step == step && c->rows[i].is_eval == is_eval) return &c->rows[i];
    return NULL;
}

// Rows of `b` must equal rows of `a` with step > from, value for value;
// tokens_per_second is wall-clock and excluded.
static void compare_rows(const Collect *a, const Collect *b, int from, const char *what) {
    int expected = 0;
    for (int i = 0; i < a->n; i++) {
        const MetricRow *x = &a->rows[i];
        if (x->step <= from) continue;
        expected++;
        const MetricRow *y = find_row(b, x->step, x->is_eval);
        CHECK_MSG(y != NULL, "%s: row step %d eval %d missing after resume", what, x->step,
                  x->is_eval);
        if (!y) continue;
        CHECK_MSG(x->n == y->n, "%s: step %d: %d vs %d metrics", what, x->step, x->n, y->n);
        for (int k = 0; k < x->n; k++) {
            if (strcmp(x->name[k], "tokens_per_second") == 0) continue;
            double v;
            int has = metric_get(y, x->name[k], &v);
            CHECK_MSG(has && v == x->value[k], "%s: step %d %s: %.17g vs %.17g", what, x->step,
                      x->name[k], has ? v : NAN, x->value[k]);
        }
    }
    int got = 0;
    for (int i = 0; i < b->n; i++)
        got += b->rows[i].step > from;
    CHECK_MSG(got == expected && expected > 0, "%s: %d rows after step %d, expected %d", what, got,
              from, expected);
}

static int files_equal(const char *a, const char *b) {
    size_t la, lb;
    unsigned char *x = slurp(a, &la), *y = slurp(b, &lb);
    int eq = x && y && la == lb && memcmp(x, y, la) == 0;
    free(x);
    free(y);
    return eq;
}

static int count_states(const char *dir, int *steps, int max) {
    DIR *d = opendir(dir);
    int n = 0;
    if (!d) return 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        int s, end = 0;
        if (sscanf(de->d_name, "step-%d.state%n", &s, &end) == 1 && de->d_name[end] == '\0') {
            if (n < max) steps[n] = s;
            n++;
        }
    }
    closedir(d);
    return n;
}

// Uninterrupted run vs stop after `stop_at` + resume, for one recipe variant.
static void check_resume(const char *name, const char *method, const char *extra_json, int stop_at,
                         int steps_per_epoch) {
    char dir_a[512], dir_b[512];
    snprintf(dir_a, sizeof dir_a, "%s/%s-a", g_root, name);
    snprintf(dir_b, sizeof dir_b, "%s/%s-b", g_root, name);
    Recipe ra, rb;
    if (make_recipe(&ra, method, extra_json, dir_a) != 0 ||
        make_recipe(&rb, method, extra_json, dir_b) != 0) {
        CHECK(0);
        return;
    }
    BsError err = {0};
    Collect a = {.resumed = -1};
    TrainHooks ha = hooks_for(&a);
    TrainResult res;
    CHECK_MSG(train_run(&ra, &ha, &res, &err) == 0, "%s A: %s", name, err.message);
    CHECK_INT_EQ(res.step, 6);
    CHECK(!res.stopped);
    CHECK_INT_EQ(a.resumed, -1);
    // Logged schedule: the rate step s's update used (linear, warmup 1, 6 steps:
    // lr_at(k) = 0.003 * (6 - k) / 5 for k >= 1) and epoch = s / steps_per_epoch.
    for (int i = 0; i < a.n; i++) {
        const MetricRow *row = &a.rows[i];
        int s = row->step;
        double lr, ep;
        if (!row->is_eval) {
            CHECK(metric_get(row, "learning_rate", &lr));
            CHECK_CLOSE(lr, 0.003 * (6 - (s - 1)) / 5.0, 1e-12, 0);
        }
        CHECK(metric_get(row, "epoch", &ep));
        CHECK_CLOSE(ep, (double)s / steps_per_epoch, 1e-15, 0);
    }

    Collect b1 = {.stop_after = stop_at, .resumed = -1};
    TrainHooks hb1 = hooks_for(&b1);
    CHECK_MSG(train_run(&rb, &hb1, &res, &err) == 0, "%s B1: %s", name, err.message);
    CHECK(res.stopped);
    CHECK_INT_EQ(res.step, stop_at);
    CHECK_INT_EQ(b1.checkpoints, 1);
    CHECK(res.final_model[0] == '\0');
    char ck[600];
    snprintf(ck, sizeof ck, "%s/checkpoints/step-%d.state", dir_b, stop_at);
    CHECK_MSG(access(ck, F_OK) == 0, "%s missing", ck);
    char fin_b[600];
    snprintf(fin_b, sizeof fin_b, "%s/final/model.bin", dir_b);
    CHECK(access(fin_b, F_OK) != 0);
    // The rows before the stop equal the uninterrupted run's too.
    for (int i = 0; i < b1.n; i++) {
        const MetricRow *x = find_row(&a, b1.rows[i].step, b1.rows[i].is_eval);
        CHECK(x != NULL);
        double v;
        if (x && metric_get(x, "learning_rate", &v)) {
            double w;
            CHECK(metric_get(&b1.rows[i], "learning_rate", &w) && w == v);
        }
    }

    Collect b2 = {.resumed = -1};
    TrainHooks hb2 = hooks_for(&b2);
    CHECK_MSG(train_run(&rb, &hb2, &res, &err) == 0, "%s B2: %s", name, err.message);
    CHECK_INT_EQ(b2.resumed, stop_at);
    CHECK_INT_EQ(res.resumed_from, stop_at);
    CHECK_INT_EQ(res.step, 6);
    compare_rows(&a, &b2, stop_at, name);
    char fin_a[600];
    snprintf(fin_a, sizeof fin_a, "%s/final/model.bin", dir_a);
    CHECK_MSG(files_equal(fin_a, fin_b), "%s: final model.bin differs after resume", name);
    recipe_free(&ra);
    recipe_free(&rb);
}

static void test_resume(void) {
    char p[512];
    snprintf(p, sizeof p, "%s/train.jsonl", g_root);
    write_pairs(p, 18, 11); // 5 batches of 4 (last has 2): the run crosses an epoch
    snprintf(p, sizeof p, "%s/eval.jsonl", g_root);
    write_pairs(p, 7, 23);

    // Stop mid logging window (step 3 of window [3, 4]) and right after an eval.
    check_resume("dpo", "dpo", ",\"beta\":0.1", 3, 5);
    // Precomputed reference log-probs and 2-micro-batch accumulation: the
    // reference tables travel in the checkpoint; stop at an epoch boundary.
    check_resume("pre", "dpo",
                 ",\"precompute_ref_log_probs\":true,\"gradient_accumulation_steps\":2", 2, 2);
    check_resume("orpo", "orpo", "", 5, 5);
}

// Precomputing the reference gives the numbers of recomputing it each batch.
static void test_precompute_equivalence(void) {
    char da[512], db[512];
    snprintf(da, sizeof da, "%s/eq-a", g_root);
    snprintf(db, sizeof db, "%s/eq-b", g_root);
    Recipe ra, rb;
    if (make_recipe(&ra, "dpo", "", da) != 0 ||
        make_recipe(&rb, "dpo", ",\"precompute_ref_log_probs\":true", db) != 0) {
        CHECK(0);
        return;
    }
    Collect a = {.resumed = -1}, b = {.resumed = -1};
    TrainHooks ha = hooks_for(&a), hb = hooks_for(&b);
    TrainResult res;
    BsError err = {0};
    CHECK_MSG(train_run(&ra, &ha, &res, &err) == 0, "%s", err.message);
    CHECK_MSG(train_run(&rb, &hb, &res, &err) == 0, "%s", err.message);
    CHECK_INT_EQ(a.n, b.n);
    // The reference sums agree to float32 rounding, not bit for bit: a packed
    // forward's per-sequence sums depend on the batch it runs in by an ulp
    // (precompute batches rows in file order, training in shuffled order).
    // So values are compared to 1e-5, and rewards/accuracies, a step function
    // of the margins, may flip one pair of the window only while the policy
    // still equals the reference (|margin| ~ 1e-9).
    for (int i = 0; i < a.n && i < b.n; i++) {
        CHECK_INT_EQ(a.rows[i].step, b.rows[i].step);
        double margin = 1.0;
        metric_get(&a.rows[i], a.rows[i].is_eval ? "eval_rewards/margins" : "rewards/margins",
                   &margin);
        for (int k = 0; k < a.rows[i].n; k++) {
            const char *name = a.rows[i].name[k];
            if (strcmp(name, "tokens_per_second") == 0) continue;
            double v = NAN, x = a.rows[i].value[k];
            CHECK(metric_get(&b.rows[i], name, &v));
            if (strstr(name, "rewards/accuracies") && fabs(margin) < 1e-6)
                CHECK_CLOSE(v, x, 0, 0.125 + 1e-12);
            else
                CHECK_CLOSE(v, x, 1e-5, 1e-7);
        }
    }
    recipe_free(&ra);
    recipe_free(&rb);
}

// save_steps rotation keeps the newest two; a corrupt newest checkpoint is
// skipped in favour of the previous one, and the result is still exact.
static void test_rotation_and_fallback(void) {
    char da[512], db[512];
    snprintf(da, sizeof da, "%s/rot-a", g_root);
    snprintf(db, sizeof db, "%s/rot-b", g_root);
    Recipe ra, rb;
    if (make_recipe(&ra, "dpo", "", da) != 0 ||
        make_recipe(&rb, "dpo", ",\"save_steps\":1", db) != 0) {
        CHECK(0);
        return;
    }
    Collect a = {.resumed = -1};
    TrainHooks ha = hooks_for(&a);
    TrainResult res;
    BsError err = {0};
    CHECK_MSG(train_run(&ra, &ha, &res, &err) == 0, "%s", err.message);

    Collect b1 = {.stop_after = 4, .resumed = -1};
    TrainHooks hb1 = hooks_for(&b1);
    CHECK_MSG(train_run(&rb, &hb1, &res, &err) == 0, "%s", err.message);
    CHECK(res.stopped);
    CHECK_INT_EQ(b1.checkpoints, 4); // steps 1..4; the stop found step 4 already saved
    char ckdir[600];
    snprintf(ckdir, sizeof ckdir, "%s/checkpoints", db);
    int steps[8];
    int n = count_states(ckdir, steps, 8);
    CHECK_INT_EQ(n, 2);
    CHECK((steps[0] == 3 && steps[1] == 4) || (steps[0] == 4 && steps[1] == 3));

    // Tear the newest file: resume must fall back to step 3.
    char newest[700];
    snprintf(newest, sizeof newest, "%s/step-4.state", ckdir);
    size_t len;
    unsigned char *bytes = slurp(newest, &len);
    CHECK(bytes != NULL);
    if (bytes) {
        CHECK(spit(newest, bytes, len / 2) == 0);
        free(bytes);
    }
    Collect b2 = {.resumed = -1};
    TrainHooks hb2 = hooks_for(&b2);
    CHECK_MSG(train_run(&rb, &hb2, &res, &err) == 0, "%s", err.message);
    CHECK_INT_EQ(b2.resumed, 3);
    compare_rows(&a, &b2, 3, "fallback");
    char fa[700], fb[700];
    snprintf(fa, sizeof fa, "%s/final/model.bin", da);
    snprintf(fb, sizeof fb, "%s/final/model.bin", db);
    CHECK(files_equal(fa, fb));

    // The same folder with a different beta refuses to resume.
    Recipe rc;
    if (make_recipe(&rc, "dpo", ",\"save_steps\":1,\"beta\":0.2", db) == 0) {
        Collect c = {.resumed = -1};
        TrainHooks hc = hooks_for(&c);
        BsError e2 = {0};
        CHECK(train_run(&rc, &hc, &res, &e2) != 0);
        CHECK_MSG(strcmp(e2.code, "resume_mismatch") == 0, "code %s", e2.code);
        CHECK_INT_EQ(c.resumed, -1);
        recipe_free(&rc);
    } else {
        CHECK(0);
    }
    recipe_free(&ra);
    recipe_free(&rb);
}

// A model whose weights are NaN stops with nan_loss naming step 1, and no
// final model is written.
static void test_nan_stop(void) {
    ModelConfig c = tiny_cfg();
    c.vocab_size = 32;
    c.seq_len = 16;
    size_t P = model_param_count(&c);
    float *p = malloc(P * sizeof(float));
    for (size_t i = 0; i < P; i++)
        p[i] = (float)NAN;
    char model[512], out[512], text[2048];
    snprintf(model, sizeof model, "%s/nan.bin", g_root);
    snprintf(out, sizeof out, "%s/nan-run", g_root);
    BsError err = {0};
    CHECK_MSG(ckpt_write_llama2c(model, &c, p, &err) == 0, "%s", err.message);
    free(p);
    snprintf(text, sizeof text,
             "{\"method\":\"orpo\",\"model\":\"%s\",\"train_file\":\"%s/train.jsonl\","
             "\"output_dir\":\"%s\",\"max_steps\":3,\"logging_steps\":1}",
             model, g_root, out);
    Recipe r;
    CHECK_MSG(recipe_parse(text, strlen(text), RECIPE_JSON, &r, &err) == 0, "%s", err.message);
    Collect col = {.resumed = -1};
    TrainHooks h = hooks_for(&col);
    TrainResult res;
    CHECK(train_run(&r, &h, &res, &err) != 0);
    CHECK_MSG(strcmp(err.code, "nan_loss") == 0, "code %s: %s", err.code, err.message);
    CHECK_MSG(strstr(err.message, "step 1") != NULL, "message: %s", err.message);
    CHECK_INT_EQ(col.n, 0);
    char fin[600];
    snprintf(fin, sizeof fin, "%s/final/model.bin", out);
    CHECK(access(fin, F_OK) != 0);
    recipe_free(&r);
}

int main(void) {
    snprintf(g_root, sizeof g_root, "/tmp/bs-state-XXXXXX");
    if (!mkdtemp(g_root)) {
        perror("mkdtemp");
        return 1;
    }
    test_round_trip();
    test_resume();
    test_precompute_equivalence();
    test_rotation_and_fallback();
    test_nan_stop();
    rm_rf(g_root);
    return test_summary("state");
}
