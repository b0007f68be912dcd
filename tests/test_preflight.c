// test_preflight.c — every blocker code provoked by a concrete recipe over
// files in a temp data root (models copied from ../shared/models), a clean
// recipe with its estimate, path traversal and symlinks out of the root, and
// Hugging Face folders (hf_export of the shared models): model_unsupported
// naming the config.json key, model_invalid for a truncated safetensors,
// output_format llama2c refused for a model it cannot carry,
// tokenizer_unsupported, and the chat-template fallback warning.
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "ckpt.h"
#include "hf.h"
#include "model.h"
#include "preflight.h"
#include "recipe.h"
#include "test_util.h"

static char base[] = "/tmp/bs_preflight_XXXXXX";
// Short buffers keep every path built from them well inside PATH_MAX.
static char root[512];    // base/root (realpath'd: the data root)
static char outside[512]; // base/outside

static int write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, len, f);
    return (fclose(f) == 0 && w == len) ? 0 : -1;
}

static int write_text(const char *dir, const char *name, const char *text) {
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return write_file(p, text, strlen(text));
}

static int copy_file(const char *from, const char *to) {
    FILE *f = fopen(from, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n);
    int ok = buf && fread(buf, 1, (size_t)n, f) == (size_t)n;
    fclose(f);
    ok = ok && write_file(to, buf, (size_t)n) == 0;
    free(buf);
    return ok ? 0 : -1;
}

// Runs preflight on a JSON recipe; returns the parsed report via rep.
// The recipe must parse (the test is about preflight, not recipe.c).
static int run(const char *json, const PreflightOptions *opt, PreflightReport *rep, Recipe *r) {
    BsError err = {0};
    if (recipe_parse(json, strlen(json), RECIPE_JSON, r, &err) != 0) {
        fprintf(stderr, "recipe did not parse: %s (%s): %s\n", err.code, err.param, err.message);
        return -1;
    }
    if (preflight_run(r, opt, rep, &err) != 0) {
        fprintf(stderr, "preflight failed: %s: %s\n", err.code, err.message);
        return -1;
    }
    return 0;
}

static const Blocker *find(const PreflightReport *rep, int warning, const char *code,
                           const char *field) {
    int n = warning ? rep->n_warnings : rep->n_blockers;
    const Blocker *list = warning ? rep->warnings : rep->blockers;
    for (int i = 0; i < n; i++)
        if (strcmp(list[i].code, code) == 0 && (!field || strcmp(list[i].field, field) == 0))
            return &list[i];
    return NULL;
}

static void dump(const PreflightReport *rep) {
    for (int i = 0; i < rep->n_blockers; i++)
        fprintf(stderr, "  blocker %s [%s]: %s\n", rep->blockers[i].code, rep->blockers[i].field,
                rep->blockers[i].message);
    for (int i = 0; i < rep->n_warnings; i++)
        fprintf(stderr, "  warning %s [%s]: %s\n", rep->warnings[i].code, rep->warnings[i].field,
                rep->warnings[i].message);
}

// Expects exactly one blocker code on field (other blockers are allowed only
// when `only` is 0). Returns the blocker.
static const Blocker *expect_blocker(const char *json, const PreflightOptions *opt,
                                     const char *code, const char *field, int only,
                                     const char *what) {
    static PreflightReport rep;
    Recipe r;
    if (run(json, opt, &rep, &r) != 0) {
        CHECK_MSG(0, "%s: preflight did not run", what);
        return NULL;
    }
    recipe_free(&r);
    const Blocker *b = find(&rep, 0, code, field);
    CHECK_MSG(b != NULL, "%s: no %s blocker on %s", what, code, field ? field : "(any)");
    if (only) CHECK_MSG(rep.n_blockers == 1, "%s: %d blockers", what, rep.n_blockers);
    if (!b || (only && rep.n_blockers != 1)) dump(&rep);
    return b;
}

static const PreflightOptions opts = {NULL, 0, 1};
static PreflightOptions ropts; // data_root = root

// 12 pre-tokenized preference rows for a 512-token model.
static void make_data(void) {
    char text[8192] = "";
    for (int i = 0; i < 12; i++) {
        char line[256];
        snprintf(line, sizeof line,
                 "{\"prompt_ids\":[1,%d,%d],\"chosen_ids\":[%d,%d,2],\"rejected_ids\":[%d,2]}\n",
                 10 + i, 20 + i, 30 + i, 40 + i, 50 + i);
        strcat(text, line);
    }
    CHECK(write_text(root, "data/pref_ids.jsonl", text) == 0);
    CHECK(write_text(root, "data/pref_text.jsonl",
                     "{\"prompt\":\"Tell me a dream.\",\"chosen\":\" I dream of stars.\","
                     "\"rejected\":\" No.\"}\n"
                     "{\"prompt\":\"Describe the sea.\",\"chosen\":\" Waves hum softly.\","
                     "\"rejected\":\" Wet.\"}\n") == 0);
    CHECK(write_text(root, "data/sft.jsonl",
                     "{\"prompt\":\"Hi\",\"completion\":\" there\"}\n"
                     "{\"prompt\":\"Yo\",\"completion\":\" hey\"}\n") == 0);
    CHECK(write_text(root, "data/bad_line3.jsonl",
                     "{\"prompt_ids\":[1,5],\"chosen_ids\":[6,2],\"rejected_ids\":[7,2]}\n"
                     "{\"prompt_ids\":[1,5],\"chosen_ids\":[6,2],\"rejected_ids\":[8,2]}\n"
                     "{\"prompt_ids\":[1,5],\"chosen_ids\":[6,2]}\n"
                     "{\"prompt_ids\":[1,5],\"chosen_ids\":[6,2],\"rejected_ids\":[9,2]}\n") == 0);
    CHECK(write_text(root, "data/empty.jsonl", "\n\n") == 0);
    CHECK(write_text(outside, "secret.jsonl",
                     "{\"prompt_ids\":[1,5],\"chosen_ids\":[6,2],\"rejected_ids\":[7,2]}\n") == 0);
}

// A valid checkpoint whose seq_len is 1: max_length caps to 1.
static void make_seq1_model(void) {
    ModelConfig c = {.dim = 8,
                     .hidden_dim = 16,
                     .n_layers = 1,
                     .n_heads = 2,
                     .n_kv_heads = 2,
                     .vocab_size = 16,
                     .seq_len = 1,
                     .shared_classifier = 1,
                     .norm_eps = 1e-5f,
                     .rope_theta = 10000.0f};
    BsError err = {0};
    float *p = calloc(model_param_count(&c), sizeof(float));
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/models/seq1.bin", root);
    CHECK(p && ckpt_write_llama2c(path, &c, p, &err) == 0);
    free(p);
}

static void test_clean(void) {
    Recipe r;
    PreflightReport rep;
    const char *json = "{\"method\":\"dpo\",\"model\":\"models/stories260K.bin\","
                       "\"train_file\":\"data/pref_ids.jsonl\",\"output_dir\":\"runs/a/b\","
                       "\"per_device_train_batch_size\":4,\"num_train_epochs\":3}";
    if (run(json, &ropts, &rep, &r) != 0) {
        CHECK(0);
        return;
    }
    CHECK_INT_EQ(rep.n_blockers, 0);
    if (rep.n_blockers) dump(&rep);
    ModelConfig c;
    BsError err = {0};
    CHECK(ckpt_peek_llama2c("../shared/models/stories260K.bin", &c, &err) == 0);
    CHECK_INT_EQ(rep.parameters, (long long)model_param_count(&c));
    CHECK_INT_EQ(rep.train_rows, 12);
    // ceil(12 / 4) = 3 batches, 3 steps per epoch, 3 epochs.
    CHECK_INT_EQ(rep.steps, 9);
    // At least weights + grads + AdamW + reference (20 bytes per parameter),
    // and far below a GiB for a 260K model on 12 short rows.
    CHECK(rep.memory_bytes > 20LL * rep.parameters);
    CHECK(rep.memory_bytes < (1LL << 30));
    // Paths rewritten to absolute, symlink-resolved ones inside the root.
    char want[PATH_MAX * 2];
    snprintf(want, sizeof want, "%s/models/stories260K.bin", root);
    CHECK(r.model && strcmp(r.model, want) == 0);
    snprintf(want, sizeof want, "%s/runs/a/b", root);
    CHECK_MSG(r.output_dir && strcmp(r.output_dir, want) == 0, "output_dir %s", r.output_dir);
    // stories260K has seq_len 512: the default max_prompt_length 512 is a warning.
    CHECK(find(&rep, 1, "invalid_hyperparameter", "max_prompt_length") != NULL);
    CHECK(find(&rep, 1, "no_eval_file", "eval_file") != NULL);
    char *js = preflight_to_json(&rep);
    cJSON *o = js ? cJSON_Parse(js) : NULL;
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(o, "ok")));
    CHECK_INT_EQ(cJSON_GetArraySize(cJSON_GetObjectItem(o, "blockers")), 0);
    CHECK_INT_EQ(cJSON_GetArraySize(cJSON_GetObjectItem(o, "warnings")), rep.n_warnings);
    const cJSON *est = cJSON_GetObjectItem(o, "estimate");
    CHECK_INT_EQ(cJSON_GetNumberValue(cJSON_GetObjectItem(est, "parameters")), rep.parameters);
    CHECK_INT_EQ(cJSON_GetNumberValue(cJSON_GetObjectItem(est, "steps")), 9);
    CHECK_INT_EQ(cJSON_GetNumberValue(cJSON_GetObjectItem(est, "train_rows")), 12);
    cJSON_Delete(o);
    free(js);
    recipe_free(&r);

    // The memory estimate moves the right way: precomputing reference
    // log-probs drops the reference forward; a larger batch costs more;
    // ORPO holds no reference at all.
    long long dpo = rep.memory_bytes;
    const char *pre = "{\"method\":\"dpo\",\"model\":\"models/stories260K.bin\","
                      "\"train_file\":\"data/pref_ids.jsonl\",\"per_device_train_batch_size\":4,"
                      "\"precompute_ref_log_probs\":true}";
    CHECK(run(pre, &ropts, &rep, &r) == 0);
    recipe_free(&r);
    CHECK(rep.memory_bytes < dpo);
    long long precomputed = rep.memory_bytes;
    const char *orpo = "{\"method\":\"orpo\",\"model\":\"models/stories260K.bin\","
                       "\"train_file\":\"data/pref_ids.jsonl\",\"per_device_train_batch_size\":4}";
    CHECK(run(orpo, &ropts, &rep, &r) == 0);
    recipe_free(&r);
    CHECK_INT_EQ(rep.n_blockers, 0);
    CHECK_INT_EQ(precomputed - rep.memory_bytes, 4 * rep.parameters); // the reference weights
    const char *big = "{\"method\":\"dpo\",\"model\":\"models/stories260K.bin\","
                      "\"train_file\":\"data/pref_ids.jsonl\",\"per_device_train_batch_size\":12}";
    CHECK(run(big, &ropts, &rep, &r) == 0);
    recipe_free(&r);
    CHECK(rep.memory_bytes > dpo);
    CHECK_INT_EQ(rep.steps, 3); // 1 batch per epoch, 3 epochs (default)

    // Text rows with the model's own tokenizer; no data root (CLI use).
    const char *text = "{\"method\":\"orpo\",\"model\":\"../shared/models/aidreams260K.bin\","
                       "\"tokenizer\":\"../shared/models/aidreams260K-tok512.bin\","
                       "\"train_file\":\"%s/data/pref_text.jsonl\",\"max_length\":128,"
                       "\"max_prompt_length\":64,\"per_device_train_batch_size\":8}";
    char buf[1024];
    snprintf(buf, sizeof buf, text, root);
    CHECK(run(buf, &opts, &rep, &r) == 0);
    CHECK_INT_EQ(rep.n_blockers, 0);
    if (rep.n_blockers) dump(&rep);
    CHECK_INT_EQ(rep.train_rows, 2);
    CHECK_INT_EQ(rep.steps, 3);
    CHECK(r.model && r.model[0] == '/'); // resolved against the working directory
    CHECK(find(&rep, 1, "batch_larger_than_data", "per_device_train_batch_size") != NULL);
    recipe_free(&r);
}

static void test_blockers(void) {
    char j[2048];
    PreflightOptions nopref = ropts;
    nopref.preference_enabled = 0;
    const Blocker *b;

    // missing_dependency: no preference trainer; a DPO reference file missing.
    b = expect_blocker("{\"method\":\"dpo\",\"model\":\"models/stories260K.bin\","
                       "\"train_file\":\"data/pref_ids.jsonl\"}",
                       &nopref, "missing_dependency", "method", 1, "no preference build");
    CHECK(b && strstr(b->hint, "-Dpreference=enabled") != NULL);
    expect_blocker("{\"method\":\"orpo\",\"model\":\"models/stories260K.bin\","
                   "\"train_file\":\"data/pref_ids.jsonl\"}",
                   &nopref, "missing_dependency", "method", 1, "no preference build, orpo");
    expect_blocker("{\"method\":\"dpo\",\"model\":\"models/stories260K.bin\","
                   "\"reference_model\":\"models/sft-ref.bin\","
                   "\"train_file\":\"data/pref_ids.jsonl\"}",
                   &ropts, "missing_dependency", "reference_model", 1, "reference missing");
    // An SFT recipe does not need the preference trainer.
    {
        PreflightReport rep;
        Recipe r;
        CHECK(run("{\"method\":\"sft\",\"model\":\"models/stories260K.bin\","
                  "\"train_file\":\"data/sft_ids.jsonl\"}",
                  &nopref, &rep, &r) == 0);
        CHECK(find(&rep, 0, "missing_dependency", NULL) == NULL);
        recipe_free(&r);
    }

    // model_not_found / model_invalid.
    expect_blocker("{\"method\":\"dpo\",\"model\":\"models/nope.bin\","
                   "\"train_file\":\"data/pref_ids.jsonl\"}",
                   &ropts, "model_not_found", "model", 0, "model missing");
    expect_blocker("{\"method\":\"dpo\",\"model\":\"models/garbage.bin\","
                   "\"train_file\":\"data/pref_ids.jsonl\"}",
                   &ropts, "model_invalid", "model", 0, "model garbage");
    b = expect_blocker("{\"method\":\"dpo\",\"model\":\"models/truncated.bin\","
                       "\"train_file\":\"data/pref_ids.jsonl\"}",
                       &ropts, "model_invalid", "model", 0, "model truncated");
    CHECK(b && strstr(b->message, "100000 bytes"));
    // recipe.c refuses a bad model_init shape itself; preflight checks again
    // (a Recipe may come from elsewhere than recipe_parse).
    {
        PreflightReport rep;
        Recipe r;
        BsError err = {0};
        const char *mi = "{\"method\":\"sft\",\"model_init\":{\"dim\":32,\"n_layers\":1,"
                         "\"n_heads\":4,\"max_seq_len\":32},\"train_file\":\"data/sft.jsonl\"}";
        CHECK(recipe_parse(mi, strlen(mi), RECIPE_JSON, &r, &err) == 0);
        CHECK(preflight_run(&r, &ropts, &rep, &err) == 0);
        CHECK_INT_EQ(rep.n_blockers, 0); // byte tokenizer, text rows: fine
        if (rep.n_blockers) dump(&rep);
        CHECK_INT_EQ(rep.train_rows, 2);
        r.model_init.dim = 30; // 30 % 4 != 0
        CHECK(preflight_run(&r, &ropts, &rep, &err) == 0);
        CHECK(find(&rep, 0, "model_invalid", "model_init") != NULL);
        recipe_free(&r);
    }
    expect_blocker("{\"method\":\"dpo\",\"model\":\"models/stories260K.bin\","
                   "\"reference_model\":\"models/aidreams260K.bin\","
                   "\"train_file\":\"data/pref_ids.jsonl\"}",
                   &ropts, "model_invalid", "reference_model", 1, "reference shape");
    expect_blocker("{\"method\":\"dpo\",\"model\":\"job:not-an-id\","
                   "\"train_file\":\"data/pref_ids.jsonl\"}",
                   &ropts, "model_not_found", "model", 1, "bad job reference");

    // tokenizer_mismatch: entries != vocab; text rows without a tokenizer.
    b = expect_blocker("{\"method\":\"orpo\",\"model\":\"models/aidreams260K.bin\","
                       "\"tokenizer\":\"models/llama2-tokenizer.bin\","
                       "\"train_file\":\"data/pref_text.jsonl\"}",
                       &ropts, "tokenizer_mismatch", "tokenizer", 1, "tokenizer size");
    CHECK(b && strstr(b->message, "32000") && strstr(b->message, "512"));
    b = expect_blocker("{\"method\":\"dpo\",\"model\":\"models/stories260K.bin\","
                       "\"train_file\":\"data/pref_text.jsonl\"}",
                       &ropts, "tokenizer_mismatch", "tokenizer", 1, "text without tokenizer");
    CHECK(b && strstr(b->message, "line 1"));

    // dataset_not_found, dataset_schema, dataset_empty.
    expect_blocker("{\"method\":\"dpo\",\"model\":\"models/stories260K.bin\","
                   "\"train_file\":\"data/none.jsonl\"}",
                   &ropts, "dataset_not_found", "train_file", 1, "train file missing");
    expect_blocker("{\"method\":\"dpo\",\"model\":\"models/stories260K.bin\","
                   "\"train_file\":\"data/pref_ids.jsonl\",\"eval_file\":\"data/none.jsonl\"}",
                   &ropts, "dataset_not_found", "eval_file", 1, "eval file missing");
    b = expect_blocker("{\"method\":\"dpo\",\"model\":\"models/stories260K.bin\","
                       "\"train_file\":\"data/bad_line3.jsonl\",\"bad_rows\":\"error\"}",
                       &ropts, "dataset_schema", "train_file", 1, "bad row, error policy");
    CHECK_MSG(b && strncmp(b->message, "line 3:", 7) == 0, "message: %s", b ? b->message : "");
    b = expect_blocker("{\"method\":\"dpo\",\"model\":\"models/aidreams260K.bin\","
                       "\"tokenizer\":\"models/aidreams260K-tok512.bin\","
                       "\"train_file\":\"data/sft.jsonl\"}",
                       &ropts, "dataset_schema", "train_file", 1, "sft rows for dpo");
    CHECK_MSG(b && strstr(b->message, "lack chosen/rejected") && strstr(b->message, "line 1"),
              "message: %s", b ? b->message : "");
    expect_blocker("{\"method\":\"dpo\",\"model\":\"models/stories260K.bin\","
                   "\"train_file\":\"data/empty.jsonl\"}",
                   &ropts, "dataset_empty", "train_file", 1, "empty data");
    // The skip policy turns the bad row into a warning, with its line.
    {
        PreflightReport rep;
        Recipe r;
        CHECK(run("{\"method\":\"dpo\",\"model\":\"models/stories260K.bin\","
                  "\"train_file\":\"data/bad_line3.jsonl\"}",
                  &ropts, &rep, &r) == 0);
        CHECK_INT_EQ(rep.n_blockers, 0);
        const Blocker *w = find(&rep, 1, "bad_rows_skipped", "train_file");
        CHECK(w && strstr(w->message, "line 3"));
        CHECK_INT_EQ(rep.train_rows, 3);
        recipe_free(&r);
    }

    // invalid_hyperparameter: a model with one position leaves no room.
    expect_blocker("{\"method\":\"dpo\",\"model\":\"models/seq1.bin\","
                   "\"train_file\":\"data/pref_ids.jsonl\"}",
                   &ropts, "invalid_hyperparameter", "max_length", 1, "seq_len 1");

    // insufficient_memory: a 1 MiB limit cannot hold 4.6 MB of weights and state.
    PreflightOptions small = ropts;
    small.memory_limit_bytes = 1 << 20;
    b = expect_blocker("{\"method\":\"dpo\",\"model\":\"models/stories260K.bin\","
                       "\"train_file\":\"data/pref_ids.jsonl\"}",
                       &small, "insufficient_memory", NULL, 1, "memory limit");
    CHECK(b && strstr(b->hint, "precompute_ref_log_probs"));

    // A job reference is not a path: no file checks, a deferred estimate.
    {
        PreflightReport rep;
        Recipe r;
        CHECK(run("{\"method\":\"dpo\",\"model\":\"job:job_0123456789abcdef\","
                  "\"train_file\":\"data/pref_ids.jsonl\"}",
                  &ropts, &rep, &r) == 0);
        CHECK_INT_EQ(rep.n_blockers, 0);
        if (rep.n_blockers) dump(&rep);
        CHECK(find(&rep, 1, "estimate_deferred", "model") != NULL);
        CHECK(strcmp(r.model, "job:job_0123456789abcdef") == 0);
        CHECK_INT_EQ(rep.train_rows, 12);
        CHECK_INT_EQ(rep.parameters, 0);
        recipe_free(&r);
    }
    (void)j;
}

static void test_paths(void) {
    char j[2048];
    const Blocker *b;
    // ".." out of the root.
    b = expect_blocker("{\"method\":\"dpo\",\"model\":\"models/stories260K.bin\","
                       "\"train_file\":\"../outside/secret.jsonl\"}",
                       &ropts, "path_outside_data_root", "train_file", 1, "dot-dot");
    CHECK(b && strstr(b->message, "outside the data root"));
    // An absolute path outside.
    snprintf(j, sizeof j,
             "{\"method\":\"dpo\",\"model\":\"models/stories260K.bin\","
             "\"train_file\":\"%s/secret.jsonl\"}",
             outside);
    expect_blocker(j, &ropts, "path_outside_data_root", "train_file", 1, "absolute outside");
    // An absolute path inside is fine.
    snprintf(j, sizeof j,
             "{\"method\":\"dpo\",\"model\":\"%s/models/stories260K.bin\","
             "\"train_file\":\"data/pref_ids.jsonl\"}",
             root);
    {
        PreflightReport rep;
        Recipe r;
        CHECK(run(j, &ropts, &rep, &r) == 0);
        CHECK_INT_EQ(rep.n_blockers, 0);
        recipe_free(&r);
    }
    // A symlink inside the root that points outside.
    expect_blocker("{\"method\":\"dpo\",\"model\":\"models/stories260K.bin\","
                   "\"train_file\":\"data/link.jsonl\"}",
                   &ropts, "path_outside_data_root", "train_file", 1, "symlink out");
    // A directory symlink, then a missing file under it (output_dir).
    expect_blocker("{\"method\":\"dpo\",\"model\":\"models/stories260K.bin\","
                   "\"train_file\":\"data/pref_ids.jsonl\",\"output_dir\":\"outlink/new/run\"}",
                   &ropts, "path_outside_data_root", "output_dir", 1, "dir symlink out");
    // output_dir that does not exist, climbing out through missing folders.
    expect_blocker("{\"method\":\"dpo\",\"model\":\"models/stories260K.bin\","
                   "\"train_file\":\"data/pref_ids.jsonl\","
                   "\"output_dir\":\"runs/new/../../../outside/x\"}",
                   &ropts, "path_outside_data_root", "output_dir", 1, "missing dir dot-dot");
    // A missing folder, then "..", then the outward symlink.
    expect_blocker("{\"method\":\"dpo\",\"model\":\"models/stories260K.bin\","
                   "\"train_file\":\"data/pref_ids.jsonl\","
                   "\"output_dir\":\"runs/new/../../outlink/x\"}",
                   &ropts, "path_outside_data_root", "output_dir", 1, "missing, up, link");
    // A dangling symlink cannot be judged.
    expect_blocker("{\"method\":\"dpo\",\"model\":\"models/stories260K.bin\","
                   "\"train_file\":\"data/pref_ids.jsonl\",\"output_dir\":\"dangling/x\"}",
                   &ropts, "path_outside_data_root", "output_dir", 1, "dangling");
    // A symlink that stays inside is followed and allowed.
    {
        PreflightReport rep;
        Recipe r;
        CHECK(run("{\"method\":\"dpo\",\"model\":\"models/stories260K.bin\","
                  "\"train_file\":\"inlink/pref_ids.jsonl\",\"output_dir\":\"runs/../runs2\"}",
                  &ropts, &rep, &r) == 0);
        CHECK_INT_EQ(rep.n_blockers, 0);
        char want[PATH_MAX * 2];
        snprintf(want, sizeof want, "%s/data/pref_ids.jsonl", root);
        CHECK(r.train_file && strcmp(r.train_file, want) == 0);
        snprintf(want, sizeof want, "%s/runs2", root);
        CHECK_MSG(r.output_dir && strcmp(r.output_dir, want) == 0, "%s", r.output_dir);
        recipe_free(&r);
    }
    // A model path outside is blocked before it is opened.
    expect_blocker("{\"method\":\"dpo\",\"model\":\"../../../../../../etc/passwd\","
                   "\"train_file\":\"data/pref_ids.jsonl\"}",
                   &ropts, "path_outside_data_root", "model", 1, "model outside");
}

// root/models/NAME: aidreams260K exported as a Hugging Face folder, with
// config.json's `from` text replaced by `to` (NULL: unchanged).
static int make_hf(const char *name, const char *from, const char *to) {
    char dir[PATH_MAX], path[PATH_MAX + 16];
    snprintf(dir, sizeof dir, "%s/models/%s", root, name);
    ModelConfig cfg;
    float *params = NULL;
    BsError err = {0};
    if (ckpt_read_llama2c("../shared/models/aidreams260K.bin", &cfg, &params, &err) != 0 ||
        hf_export(dir, &cfg, params, NULL, 0, NULL, &err) != 0) {
        fprintf(stderr, "make_hf %s: %s\n", name, err.message);
        free(params);
        return -1;
    }
    free(params);
    if (!from) return 0;
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "rb");
    char text[8192];
    size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
    if (f) fclose(f);
    text[n] = '\0';
    char *at = strstr(text, from);
    if (!at) return -1;
    char out[8192];
    snprintf(out, sizeof out, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
    return write_file(path, out, strlen(out));
}

static void test_hf(void) {
    char p[PATH_MAX];
    CHECK(make_hf("hf-aid", NULL, NULL) == 0);
    CHECK(make_hf("hf-rope", "\"rope_scaling\": null",
                  "\"rope_scaling\": {\"type\": \"linear\", "
                  "\"factor\": 2.0}") == 0);
    CHECK(make_hf("hf-eps", "\"rms_norm_eps\": 1e-05", "\"rms_norm_eps\": 1e-06") == 0);
    CHECK(make_hf("hf-trunc", NULL, NULL) == 0);
    snprintf(p, sizeof p, "%s/models/hf-trunc/model.safetensors", root);
    CHECK(truncate(p, 5000) == 0);

    // A clean HF folder; it trains as it is (output_format auto: hf).
    PreflightReport rep;
    Recipe r;
    if (run("{\"method\":\"dpo\",\"model\":\"models/hf-aid\","
            "\"train_file\":\"data/pref_ids.jsonl\"}",
            &ropts, &rep, &r) == 0) {
        CHECK_INT_EQ(rep.n_blockers, 0);
        if (rep.n_blockers) dump(&rep);
        CHECK_INT_EQ(rep.train_rows, 12);
        recipe_free(&r);
    } else {
        CHECK(0);
    }
    const Blocker *b;
    b = expect_blocker("{\"method\":\"dpo\",\"model\":\"models/hf-rope\","
                       "\"train_file\":\"data/pref_ids.jsonl\"}",
                       &ropts, "model_unsupported", "rope_scaling", 1, "rope_scaling");
    CHECK(b && strstr(b->message, "rope_scaling") != NULL);
    b = expect_blocker("{\"method\":\"dpo\",\"model\":\"models/hf-aid\","
                       "\"reference_model\":\"models/hf-rope\","
                       "\"train_file\":\"data/pref_ids.jsonl\"}",
                       &ropts, "model_unsupported", "rope_scaling", 1, "reference rope_scaling");
    expect_blocker("{\"method\":\"dpo\",\"model\":\"models/hf-trunc\","
                   "\"train_file\":\"data/pref_ids.jsonl\"}",
                   &ropts, "model_invalid", "model", 1, "truncated safetensors");
    // Confinement covers the files inside a folder: a weights file (or a
    // tokenizer file) linking outside the data root is refused, one linking
    // inside is fine.
    CHECK(make_hf("hf-link", NULL, NULL) == 0);
    char q[PATH_MAX + 32];
    snprintf(p, sizeof p, "%s/models/hf-link/model.safetensors", root);
    snprintf(q, sizeof q, "%s/model.safetensors", outside);
    CHECK(rename(p, q) == 0 && symlink(q, p) == 0);
    b = expect_blocker("{\"method\":\"dpo\",\"model\":\"models/hf-link\","
                       "\"train_file\":\"data/pref_ids.jsonl\"}",
                       &ropts, "path_outside_data_root", "model", 1, "weights linked outside");
    CHECK(b && strstr(b->message, "model.safetensors") != NULL);
    snprintf(q, sizeof q, "%s/models/hf-aid/model.safetensors", root);
    CHECK(unlink(p) == 0 && symlink(q, p) == 0);
    if (run("{\"method\":\"dpo\",\"model\":\"models/hf-link\","
            "\"train_file\":\"data/pref_ids.jsonl\"}",
            &ropts, &rep, &r) == 0) {
        CHECK_INT_EQ(rep.n_blockers, 0);
        if (rep.n_blockers) dump(&rep);
        recipe_free(&r);
    } else {
        CHECK(0);
    }
    snprintf(p, sizeof p, "%s/models/hf-link/tokenizer_config.json", root);
    snprintf(q, sizeof q, "%s/secret.jsonl", outside);
    CHECK(symlink(q, p) == 0);
    CHECK(write_text(root, "models/hf-link/tokenizer.json", "{}") == 0);
    expect_blocker("{\"method\":\"dpo\",\"model\":\"models/stories260K.bin\","
                   "\"tokenizer\":\"models/hf-link/tokenizer.json\","
                   "\"train_file\":\"data/pref_ids.jsonl\"}",
                   &ropts, "path_outside_data_root", "tokenizer", 0, "tokenizer sibling outside");
    // Without a data root (the CLI) the link is fine.
    snprintf(p, sizeof p, "%s/models/hf-link", root);
    CHECK(preflight_folder_confined(NULL, p, q, sizeof q) == 1);
    CHECK(preflight_folder_confined(root, p, q, sizeof q) == 0 &&
          strstr(q, "tokenizer_config.json") != NULL);

    // rms_norm_eps 1e-6: fine as hf (auto), refused as llama2c.
    if (run("{\"method\":\"dpo\",\"model\":\"models/hf-eps\","
            "\"train_file\":\"data/pref_ids.jsonl\"}",
            &ropts, &rep, &r) == 0) {
        CHECK_INT_EQ(rep.n_blockers, 0);
        recipe_free(&r);
    } else {
        CHECK(0);
    }
    b = expect_blocker("{\"method\":\"dpo\",\"model\":\"models/hf-eps\","
                       "\"output_format\":\"llama2c\",\"train_file\":\"data/pref_ids.jsonl\"}",
                       &ropts, "invalid_hyperparameter", "output_format", 1, "eps as llama2c");
    CHECK(b && strstr(b->message, "1e-06") != NULL);
    expect_blocker("{\"method\":\"dpo\",\"model\":\"models/hf-eps\","
                   "\"reference_model\":\"models/hf-aid\",\"output_format\":\"llama2c\","
                   "\"train_file\":\"data/pref_ids.jsonl\"}",
                   &ropts, "invalid_hyperparameter", "output_format", 1, "eps as llama2c, ref");

    // tokenizer_unsupported names the tokenizer.json field.
    snprintf(p, sizeof p, "%s/models/wordpiece", root);
    CHECK(mkdir(p, 0700) == 0);
    CHECK(write_text(p, "tokenizer.json",
                     "{\"model\":{\"type\":\"WordPiece\",\"vocab\":{\"a\":0}}}") == 0);
    expect_blocker("{\"method\":\"dpo\",\"model\":\"models/hf-aid\","
                   "\"tokenizer\":\"models/wordpiece\",\"train_file\":\"data/pref_ids.jsonl\"}",
                   &ropts, "tokenizer_unsupported", "model.type", 1, "WordPiece");
    // ... also when it is the model folder's own tokenizer (no tokenizer key).
    snprintf(p, sizeof p, "%s/models/hf-aid/tokenizer.json", root);
    CHECK(write_text(root, "models/hf-aid/tokenizer.json",
                     "{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}") == 0);
    expect_blocker("{\"method\":\"dpo\",\"model\":\"models/hf-aid\","
                   "\"train_file\":\"data/pref_ids.jsonl\"}",
                   &ropts, "tokenizer_unsupported", "model.type", 1, "folder's own tokenizer");

    // A character-level BPE (ASCII, ids 0..127, no BOS / EOS) in the model
    // folder without a chat_template: conversational rows are rendered plain
    // with a warning; string rows give none.
    char vocab[4096];
    size_t o = (size_t)snprintf(vocab, sizeof vocab, "{\"model\":{\"type\":\"BPE\",\"vocab\":{");
    for (int c = 0; c < 128; c++) {
        char key[8];
        if (c == '"' || c == '\\')
            snprintf(key, sizeof key, "\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            snprintf(key, sizeof key, "\\u%04x", c);
        else
            snprintf(key, sizeof key, "%c", c);
        o += (size_t)snprintf(vocab + o, sizeof vocab - o, "%s\"%s\":%d", c ? "," : "", key, c);
    }
    snprintf(vocab + o, sizeof vocab - o, "},\"merges\":[]}}");
    CHECK(write_text(root, "models/hf-aid/tokenizer.json", vocab) == 0);
    CHECK(write_text(root, "models/hf-aid/tokenizer_config.json", "{\"eos_token\": null}") == 0);
    CHECK(write_text(root, "data/chat.jsonl",
                     "{\"prompt\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                     "\"chosen\":[{\"role\":\"assistant\",\"content\":\"yes\"}],"
                     "\"rejected\":[{\"role\":\"assistant\",\"content\":\"no\"}]}\n") == 0);
    if (run("{\"method\":\"dpo\",\"model\":\"models/hf-aid\",\"train_file\":\"data/chat.jsonl\"}",
            &ropts, &rep, &r) == 0) {
        CHECK_INT_EQ(rep.n_blockers, 0);
        CHECK_INT_EQ(rep.train_rows, 1);
        b = find(&rep, 1, "chat_template_fallback", "chat_template");
        CHECK(b && strstr(b->message, "no chat_template") != NULL);
        if (rep.n_blockers || !b) dump(&rep);
        recipe_free(&r);
    } else {
        CHECK(0);
    }
    if (run("{\"method\":\"dpo\",\"model\":\"models/hf-aid\",\"chat_template\":\"zephyr\","
            "\"train_file\":\"data/chat.jsonl\"}",
            &ropts, &rep, &r) == 0) {
        CHECK(rep.n_blockers == 0 && !find(&rep, 1, "chat_template_fallback", NULL));
        recipe_free(&r);
    } else {
        CHECK(0);
    }
    if (run("{\"method\":\"dpo\",\"model\":\"models/hf-aid\",\"train_file\":\"data/"
            "pref_text.jsonl\"}",
            &ropts, &rep, &r) == 0) {
        CHECK(rep.n_blockers == 0 && !find(&rep, 1, "chat_template_fallback", NULL));
        if (rep.n_blockers) dump(&rep);
        recipe_free(&r);
    } else {
        CHECK(0);
    }
}

static void cleanup(void) {
    char cmd[PATH_MAX + 32];
    // Only our own mkdtemp folder; the name was created by this process.
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", base);
}

int main(void) {
    if (!mkdtemp(base)) {
        perror("mkdtemp");
        return 1;
    }
    char p[1024], q[1024], real[PATH_MAX];
    snprintf(p, sizeof p, "%s/root", base);
    snprintf(outside, sizeof outside, "%s/outside", base);
    CHECK(mkdir(p, 0700) == 0 && mkdir(outside, 0700) == 0);
    CHECK(realpath(p, real) != NULL && strlen(real) < sizeof root);
    snprintf(root, sizeof root, "%s", real);
    ropts.data_root = root;
    ropts.preference_enabled = 1;
    snprintf(p, sizeof p, "%s/models", root);
    CHECK(mkdir(p, 0700) == 0);
    snprintf(p, sizeof p, "%s/data", root);
    CHECK(mkdir(p, 0700) == 0);
    snprintf(p, sizeof p, "%s/runs", root);
    CHECK(mkdir(p, 0700) == 0);
    const char *models[] = {"stories260K.bin", "aidreams260K.bin", "aidreams260K-tok512.bin",
                            "llama2-tokenizer.bin"};
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "../shared/models/%s", models[i]);
        snprintf(q, sizeof q, "%s/models/%s", root, models[i]);
        CHECK_MSG(copy_file(p, q) == 0, "copy %s", p);
    }
    CHECK(write_text(root, "models/garbage.bin", "this is not a checkpoint at all, no") == 0);
    {
        snprintf(p, sizeof p, "%s/models/truncated.bin", root);
        FILE *f = fopen("../shared/models/stories260K.bin", "rb");
        char *buf = malloc(100000);
        CHECK(f && buf && fread(buf, 1, 100000, f) == 100000);
        CHECK(buf && write_file(p, buf, 100000) == 0);
        free(buf);
        if (f) fclose(f);
    }
    make_data();
    CHECK(write_text(root, "data/sft_ids.jsonl",
                     "{\"prompt_ids\":[1,5],\"completion_ids\":[6,2]}\n") == 0);
    make_seq1_model();
    snprintf(p, sizeof p, "%s/secret.jsonl", outside);
    snprintf(q, sizeof q, "%s/data/link.jsonl", root);
    CHECK(symlink(p, q) == 0);
    snprintf(q, sizeof q, "%s/outlink", root);
    CHECK(symlink(outside, q) == 0);
    snprintf(q, sizeof q, "%s/dangling", root);
    CHECK(symlink("/nonexistent/brewslm/target", q) == 0);
    snprintf(p, sizeof p, "%s/data", root);
    snprintf(q, sizeof q, "%s/inlink", root);
    CHECK(symlink(p, q) == 0);

    test_clean();
    test_blockers();
    test_paths();
    test_hf();
    cleanup();
    return test_summary("preflight");
}
