// test_recipe.c — recipe parsing: the lesson's YAML, JSON and nested forms,
// defaults, canonical JSON round trip, and every error class with its code
// and the field it names.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recipe.h"
#include "test_util.h"

// The lesson's example exactly as written (comments included), plus the two
// keys a runnable recipe needs.
static const char *lesson_yaml = "recipe:\n"
                                 "method: dpo # routes to the AlignmentHandler\n"
                                 "beta: 0.1 # how hard to push toward chosen vs stay near the "
                                 "reference\n"
                                 "data: preference # rows of {prompt, chosen, rejected}\n"
                                 "model: ../shared/models/stories260K.bin\n"
                                 "train_file: prefs.jsonl\n";

static int parse(const char *text, RecipeFormat fmt, Recipe *r, BsError *err) {
    bs_error_clear(err);
    return recipe_parse(text, strlen(text), fmt, r, err);
}

static int streq(const char *a, const char *b) {
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static int recipes_equal(const Recipe *a, const Recipe *b) {
    return a->method == b->method && a->data == b->data && a->beta == b->beta &&
           a->loss_type == b->loss_type && a->label_smoothing == b->label_smoothing &&
           streq(a->model, b->model) && a->has_model_init == b->has_model_init &&
           memcmp(&a->model_init, &b->model_init, sizeof a->model_init) == 0 &&
           streq(a->tokenizer, b->tokenizer) && streq(a->reference_model, b->reference_model) &&
           a->precompute_ref_log_probs == b->precompute_ref_log_probs &&
           streq(a->train_file, b->train_file) && streq(a->eval_file, b->eval_file) &&
           streq(a->output_dir, b->output_dir) && a->learning_rate == b->learning_rate &&
           a->per_device_train_batch_size == b->per_device_train_batch_size &&
           a->per_device_eval_batch_size == b->per_device_eval_batch_size &&
           a->gradient_accumulation_steps == b->gradient_accumulation_steps &&
           a->num_train_epochs == b->num_train_epochs && a->max_steps == b->max_steps &&
           a->lr_scheduler_type == b->lr_scheduler_type && a->warmup_steps == b->warmup_steps &&
           a->warmup_ratio == b->warmup_ratio && a->weight_decay == b->weight_decay &&
           a->adam_beta1 == b->adam_beta1 && a->adam_beta2 == b->adam_beta2 &&
           a->adam_epsilon == b->adam_epsilon && a->max_grad_norm == b->max_grad_norm &&
           a->seed == b->seed && a->shuffle == b->shuffle && a->logging_steps == b->logging_steps &&
           a->eval_steps == b->eval_steps && a->save_steps == b->save_steps &&
           a->max_length == b->max_length && a->max_prompt_length == b->max_prompt_length &&
           a->truncation_mode == b->truncation_mode && a->bad_rows == b->bad_rows &&
           a->threads == b->threads && a->chat_template == b->chat_template &&
           a->output_format == b->output_format;
}

// Expects a failure with `code` naming `param`; the message must mention
// `needle` when given.
static void expect_error(const char *text, RecipeFormat fmt, const char *code, const char *param,
                         const char *needle) {
    Recipe r;
    BsError err;
    int rc = parse(text, fmt, &r, &err);
    CHECK_MSG(rc == -1, "accepted: %s", text);
    if (rc != -1) {
        recipe_free(&r);
        return;
    }
    CHECK_MSG(strcmp(err.code, code) == 0, "code '%s' != '%s' for: %s (%s)", err.code, code, text,
              err.message);
    if (param)
        CHECK_MSG(strcmp(err.param, param) == 0, "param '%s' != '%s' for: %s (%s)", err.param,
                  param, text, err.message);
    if (needle)
        CHECK_MSG(strstr(err.message, needle) != NULL, "message '%s' lacks '%s'", err.message,
                  needle);
    recipe_free(&r);
}

// A valid DPO base recipe with one extra YAML line.
static void expect_yaml_error(const char *extra, const char *code, const char *param,
                              const char *needle) {
    char buf[8192];
    snprintf(buf, sizeof buf, "method: dpo\nmodel: m.bin\ntrain_file: t.jsonl\n%s\n", extra);
    expect_error(buf, RECIPE_YAML, code, param, needle);
}

static void expect_json_error(const char *extra, const char *code, const char *param,
                              const char *needle) {
    char buf[8192];
    snprintf(buf, sizeof buf,
             "{\"method\": \"dpo\", \"model\": \"m.bin\", \"train_file\": "
             "\"t.jsonl\", %s}",
             extra);
    expect_error(buf, RECIPE_JSON, code, param, needle);
}

static void test_lesson_form(void) {
    Recipe r;
    BsError err;
    int rc = parse(lesson_yaml, RECIPE_AUTO, &r, &err);
    CHECK_MSG(rc == 0, "lesson recipe refused: %s %s", err.code, err.message);
    if (rc) return;
    CHECK_INT_EQ(r.method, METHOD_DPO);
    CHECK(r.beta == 0.1);
    CHECK_INT_EQ(r.data, DATA_PREFERENCE);
    CHECK(streq(r.model, "../shared/models/stories260K.bin"));
    CHECK(streq(r.train_file, "prefs.jsonl"));
    // TRL DPOConfig defaults.
    CHECK(r.learning_rate == 1e-6);
    CHECK_INT_EQ(r.per_device_train_batch_size, 8);
    CHECK(r.num_train_epochs == 3.0);
    CHECK_INT_EQ(r.max_steps, -1);
    CHECK_INT_EQ(r.max_length, 1024);
    CHECK_INT_EQ(r.max_prompt_length, 512);
    CHECK_INT_EQ(r.truncation_mode, TRUNC_KEEP_END);
    CHECK_INT_EQ(r.loss_type, LOSS_SIGMOID);
    CHECK(r.seed == 42);
    CHECK(r.adam_beta1 == 0.9 && r.adam_beta2 == 0.999 && r.adam_epsilon == 1e-8);
    CHECK(r.max_grad_norm == 1.0);
    CHECK(!r.eval_file && !r.tokenizer && !r.reference_model && !r.output_dir);

    // The same recipe nested under `recipe:` and as JSON (flat and nested).
    const char *nested = "# a comment line\n"
                         "recipe:\n"
                         "  method: dpo   # routes to the AlignmentHandler\n"
                         "  beta: 0.1\n"
                         "  data: preference\n"
                         "  model: ../shared/models/stories260K.bin\n"
                         "  train_file: prefs.jsonl\n";
    const char *json = "{\"method\": \"dpo\", \"beta\": 0.1, \"data\": \"preference\", "
                       "\"model\": \"../shared/models/stories260K.bin\", "
                       "\"train_file\": \"prefs.jsonl\"}";
    const char *json_nested = "{\"recipe\": {\"method\": \"dpo\", \"beta\": 0.1, "
                              "\"data\": \"preference\", "
                              "\"model\": \"../shared/models/stories260K.bin\", "
                              "\"train_file\": \"prefs.jsonl\"}}";
    const char *json_null = "{\"recipe\": null, \"method\": \"dpo\", \"beta\": 0.1, "
                            "\"model\": \"../shared/models/stories260K.bin\", "
                            "\"train_file\": \"prefs.jsonl\"}";
    const char *variants[] = {nested, json, json_nested, json_null};
    for (int i = 0; i < 4; i++) {
        Recipe v;
        rc = parse(variants[i], RECIPE_AUTO, &v, &err);
        CHECK_MSG(rc == 0, "variant %d refused: %s", i, err.message);
        if (rc) continue;
        CHECK_MSG(recipes_equal(&r, &v), "variant %d differs from the lesson form", i);
        recipe_free(&v);
    }
    // JSON parsed with the YAML reader (JSON is YAML flow syntax) gives the same.
    Recipe v;
    rc = parse(json, RECIPE_YAML, &v, &err);
    CHECK_MSG(rc == 0, "JSON as YAML refused: %s", err.message);
    if (rc == 0) {
        CHECK(recipes_equal(&r, &v));
        recipe_free(&v);
    }
    recipe_free(&r);
}

static void test_defaults_and_values(void) {
    Recipe r;
    BsError err;
    int rc = parse("method: sft\nmodel: m.bin\ntrain_file: t.jsonl\n", RECIPE_YAML, &r, &err);
    CHECK_MSG(rc == 0, "%s", err.message);
    if (rc == 0) {
        CHECK_INT_EQ(r.method, METHOD_SFT);
        CHECK_INT_EQ(r.data, DATA_SFT);
        CHECK(r.learning_rate == 2e-5); // TRL SFTConfig
        // chat_template and output_format default to auto (resolved by the trainer).
        CHECK_INT_EQ(r.chat_template, CHAT_AUTO);
        CHECK_INT_EQ(r.output_format, OUTPUT_AUTO);
        char *j = recipe_to_json(&r);
        CHECK(j && strstr(j, ",\"chat_template\":\"auto\",\"output_format\":\"auto\"}"));
        free(j);
        recipe_free(&r);
    }
    rc = parse("method: orpo\nmodel: m.bin\ntrain_file: t.jsonl\n", RECIPE_YAML, &r, &err);
    CHECK(rc == 0);
    if (rc == 0) {
        CHECK_INT_EQ(r.data, DATA_PREFERENCE);
        CHECK(r.learning_rate == 1e-6);
        recipe_free(&r);
    }
    // Every key set, YAML typing: ints, floats with exponents, booleans, '~'.
    const char *full = "method: dpo\n"
                       "data: preference\n"
                       "beta: 0.25\n"
                       "loss_type: robust\n"
                       "label_smoothing: 0.1\n"
                       "model_init: {dim: 64, n_layers: 2, n_heads: 4, max_seq_len: 128}\n"
                       "model: ~\n"
                       "tokenizer: tok.bin\n"
                       "reference_model: ref.bin\n"
                       "precompute_ref_log_probs: true\n"
                       "train_file: 'train.jsonl.gz'\n"
                       "eval_file: \"eval.jsonl\"\n"
                       "output_dir: out\n"
                       "learning_rate: 5.0e-7\n"
                       "batch_size: 4.0\n"
                       "per_device_eval_batch_size: 2\n"
                       "gradient_accumulation_steps: 3\n"
                       "num_train_epochs: 1.5\n"
                       "max_steps: 100\n"
                       "lr_scheduler_type: cosine\n"
                       "warmup_steps: 5\n"
                       "warmup_ratio: 0.1\n"
                       "weight_decay: 0.01\n"
                       "adam_beta1: 0.8\n"
                       "adam_beta2: 0.99\n"
                       "adam_epsilon: 1e-6\n"
                       "max_grad_norm: 0\n"
                       "seed: 0x10\n"
                       "shuffle: False\n"
                       "logging_steps: 1\n"
                       "eval_steps: 7\n"
                       "save_steps: 0\n"
                       "max_length: 256\n"
                       "max_prompt_length: 128\n"
                       "truncation_mode: keep_start\n"
                       "bad_rows: error\n"
                       "threads: 2\n"
                       "chat_template: chatml\n"
                       "output_format: hf\n";
    rc = parse(full, RECIPE_AUTO, &r, &err);
    CHECK_MSG(rc == 0, "%s %s %s", err.code, err.param, err.message);
    if (rc) return;
    CHECK(r.beta == 0.25 && r.loss_type == LOSS_ROBUST && r.label_smoothing == 0.1);
    CHECK(!r.model && r.has_model_init);
    CHECK_INT_EQ(r.model_init.dim, 64);
    CHECK_INT_EQ(r.model_init.n_layers, 2);
    CHECK_INT_EQ(r.model_init.n_heads, 4);
    CHECK_INT_EQ(r.model_init.n_kv_heads, 4);   // default n_heads
    CHECK_INT_EQ(r.model_init.hidden_dim, 192); // int(2*4*64/3) = 170 -> multiple of 32
    CHECK_INT_EQ(r.model_init.max_seq_len, 128);
    CHECK_INT_EQ(r.model_init.vocab_size, 0);
    CHECK(streq(r.tokenizer, "tok.bin") && streq(r.reference_model, "ref.bin"));
    CHECK(r.precompute_ref_log_probs == 1);
    CHECK(streq(r.train_file, "train.jsonl.gz") && streq(r.eval_file, "eval.jsonl"));
    CHECK(streq(r.output_dir, "out"));
    CHECK(r.learning_rate == 5.0e-7);
    CHECK_INT_EQ(r.per_device_train_batch_size, 4);
    CHECK_INT_EQ(r.per_device_eval_batch_size, 2);
    CHECK_INT_EQ(r.gradient_accumulation_steps, 3);
    CHECK(r.num_train_epochs == 1.5);
    CHECK_INT_EQ(r.max_steps, 100);
    CHECK_INT_EQ(r.lr_scheduler_type, SCHED_COSINE);
    CHECK_INT_EQ(r.warmup_steps, 5);
    CHECK(r.warmup_ratio == 0.1 && r.weight_decay == 0.01);
    CHECK(r.adam_beta1 == 0.8 && r.adam_beta2 == 0.99 && r.adam_epsilon == 1e-6);
    CHECK(r.max_grad_norm == 0.0);
    CHECK(r.seed == 16);
    CHECK_INT_EQ(r.shuffle, 0);
    CHECK_INT_EQ(r.logging_steps, 1);
    CHECK_INT_EQ(r.eval_steps, 7);
    CHECK_INT_EQ(r.save_steps, 0);
    CHECK_INT_EQ(r.max_length, 256);
    CHECK_INT_EQ(r.max_prompt_length, 128);
    CHECK_INT_EQ(r.truncation_mode, TRUNC_KEEP_START);
    CHECK_INT_EQ(r.bad_rows, BAD_ROWS_ERROR);
    CHECK_INT_EQ(r.threads, 2);
    CHECK_INT_EQ(r.chat_template, CHAT_CHATML);
    CHECK_INT_EQ(r.output_format, OUTPUT_HF);

    // Round trip: canonical JSON re-parses to the same recipe and is a fixed point.
    char *j1 = recipe_to_json(&r);
    CHECK(j1 != NULL);
    if (j1) {
        Recipe r2;
        rc = parse(j1, RECIPE_AUTO, &r2, &err);
        CHECK_MSG(rc == 0, "canonical JSON refused: %s %s", err.param, err.message);
        if (rc == 0) {
            CHECK(recipes_equal(&r, &r2));
            char *j2 = recipe_to_json(&r2);
            CHECK(j2 && strcmp(j1, j2) == 0);
            free(j2);
            recipe_free(&r2);
        }
        // Canonical JSON lists every key.
        CHECK(strstr(j1, "\"per_device_train_batch_size\"") && strstr(j1, "\"adam_epsilon\"") &&
              strstr(j1, "\"hidden_dim\"") && strstr(j1, "\"bad_rows\""));
        free(j1);
    }
    recipe_free(&r);

    // Round trip of the defaults (model path, values that need 17 digits).
    rc = parse("{\"method\":\"dpo\",\"model\":\"job:42\",\"train_file\":\"t\","
               "\"beta\":0.30000000000000004,\"seed\":9007199254740991}",
               RECIPE_JSON, &r, &err);
    CHECK_MSG(rc == 0, "%s", err.message);
    if (rc == 0) {
        CHECK(r.seed == 9007199254740991ULL);
        char *j = recipe_to_json(&r);
        Recipe r2;
        CHECK(j && parse(j, RECIPE_JSON, &r2, &err) == 0);
        if (j) {
            CHECK(recipes_equal(&r, &r2));
            CHECK(r2.beta == 0.30000000000000004);
            recipe_free(&r2);
        }
        free(j);
        recipe_free(&r);
    }
    // model_init with explicit fields and GQA; vocab_size round-trips.
    rc = parse("method: sft\ntrain_file: t\nmodel_init:\n  dim: 64\n  n_layers: 5\n  n_heads: 8\n"
               "  n_kv_heads: 4\n  hidden_dim: 172\n  max_seq_len: 512\n  vocab_size: 512\n",
               RECIPE_YAML, &r, &err);
    CHECK_MSG(rc == 0, "%s", err.message);
    if (rc == 0) {
        CHECK_INT_EQ(r.model_init.n_kv_heads, 4);
        CHECK_INT_EQ(r.model_init.hidden_dim, 172);
        CHECK_INT_EQ(r.model_init.vocab_size, 512);
        char *j = recipe_to_json(&r);
        Recipe r2;
        CHECK(j && parse(j, RECIPE_JSON, &r2, &err) == 0);
        if (j) {
            CHECK(recipes_equal(&r, &r2));
            recipe_free(&r2);
        }
        free(j);
        recipe_free(&r);
    }
    // robust with label_smoothing 0 and sigmoid with smoothing are both allowed.
    rc = parse("method: dpo\nmodel: m\ntrain_file: t\nloss_type: robust\n", RECIPE_YAML, &r, &err);
    CHECK(rc == 0);
    if (rc == 0) recipe_free(&r);
    // Lowering max_length alone scales the default max_prompt_length down.
    rc = parse("method: dpo\nmodel: m\ntrain_file: t\nmax_length: 128\n", RECIPE_YAML, &r, &err);
    CHECK_MSG(rc == 0, "%s", err.message);
    if (rc == 0) {
        CHECK_INT_EQ(r.max_length, 128);
        CHECK_INT_EQ(r.max_prompt_length, 64);
        recipe_free(&r);
    }
    // Every chat_template and output_format value round-trips through JSON.
    static const char *const templates[] = {"auto", "plain", "chatml", "llama2", "zephyr"};
    static const char *const formats[] = {"auto", "llama2c", "hf"};
    for (int t = 0; t < 5; t++) {
        for (int f = 0; f < 3; f++) {
            char text[256];
            snprintf(text, sizeof text,
                     "{\"method\":\"sft\",\"model_init\":{\"dim\":8,\"n_layers\":1,"
                     "\"n_heads\":2,\"max_seq_len\":16},\"train_file\":\"t\","
                     "\"chat_template\":\"%s\",\"output_format\":\"%s\"}",
                     templates[t], formats[f]);
            rc = parse(text, RECIPE_JSON, &r, &err);
            CHECK_MSG(rc == 0, "%s: %s", text, err.message);
            if (rc) continue;
            CHECK_INT_EQ((int)r.chat_template, t);
            CHECK_INT_EQ((int)r.output_format, f);
            CHECK(strcmp(chat_template_name(r.chat_template), templates[t]) == 0);
            CHECK(strcmp(recipe_output_format_name(r.output_format), formats[f]) == 0);
            char *j = recipe_to_json(&r);
            Recipe r2;
            CHECK(j && parse(j, RECIPE_JSON, &r2, &err) == 0);
            if (j) {
                CHECK(recipes_equal(&r, &r2));
                recipe_free(&r2);
            }
            free(j);
            recipe_free(&r);
        }
    }
    // Names.
    CHECK(strcmp(recipe_method_name(METHOD_ORPO), "orpo") == 0);
    CHECK(strcmp(recipe_loss_type_name(LOSS_HINGE), "hinge") == 0);
}

static void test_errors(void) {
    // Unknown keys name the key (flat, nested and in model_init).
    expect_yaml_error("betta: 0.1", "invalid_recipe", "betta", "betta");
    // chat_template / output_format: one of their names, as strings.
    expect_yaml_error("chat_template: jinja", "invalid_hyperparameter", "chat_template",
                      "\"chatml\"");
    expect_yaml_error("chat_template: 2", "invalid_recipe", "chat_template", "string");
    expect_json_error("\"output_format\": \"gguf\"", "invalid_hyperparameter", "output_format",
                      "\"llama2c\", \"hf\"");
    expect_json_error("\"output_format\": true", "invalid_recipe", "output_format", "string");
    expect_json_error("\"learningrate\": 1e-5", "invalid_recipe", "learningrate", "learningrate");
    expect_error("recipe:\n  method: dpo\n  model: m\n  train_file: t\n  lr: 1\n", RECIPE_YAML,
                 "invalid_recipe", "lr", "lr");
    expect_yaml_error("model_init: {dim: 64, n_layers: 1, n_heads: 4, max_seq_len: 8, x: 1}",
                      "invalid_recipe", "model_init.x", "'x'");
    // Nested mapping mixed with flat keys.
    expect_error("recipe:\n  method: dpo\n  model: m\nbeta: 0.2\ntrain_file: t\n", RECIPE_YAML,
                 "invalid_recipe", NULL, "outside");
    expect_error("recipe: dpo\nmethod: dpo\nmodel: m\ntrain_file: t\n", RECIPE_YAML,
                 "invalid_recipe", "recipe", NULL);

    // Wrong types.
    expect_yaml_error("beta: \"0.1\"", "invalid_recipe", "beta", "number");
    expect_yaml_error("beta: [0.1]", "invalid_recipe", "beta", NULL);
    expect_json_error("\"beta\": true", "invalid_recipe", "beta", NULL);
    expect_yaml_error("shuffle: yes", "invalid_recipe", "shuffle", NULL); // YAML 1.2: a string
    expect_json_error("\"shuffle\": 1", "invalid_recipe", "shuffle", NULL);
    expect_yaml_error("batch_size: 1.5", "invalid_recipe", "batch_size", "integer");
    expect_yaml_error("max_length: '512'", "invalid_recipe", "max_length", NULL);
    expect_yaml_error("seed: 1.25", "invalid_recipe", "seed", NULL);
    expect_json_error("\"eval_file\": 3", "invalid_recipe", "eval_file", "string");
    expect_yaml_error("loss_type: 1", "invalid_recipe", "loss_type", NULL);
    expect_yaml_error("beta:", "invalid_recipe", "beta", NULL); // null
    expect_yaml_error("model_init: 3", "invalid_recipe", "model_init", NULL);

    // Non-finite and huge values.
    expect_yaml_error("beta: .nan", "invalid_hyperparameter", "beta", NULL);
    expect_yaml_error("beta: .inf", "invalid_hyperparameter", "beta", NULL);
    expect_json_error("\"beta\": 1e999", "invalid_hyperparameter", "beta", NULL);
    expect_json_error("\"beta\": NaN", "invalid_recipe", NULL, "syntax");
    expect_yaml_error("max_steps: 1e300", "invalid_hyperparameter", "max_steps", NULL);
    expect_yaml_error("seed: 18446744073709551616", "invalid_hyperparameter", "seed", NULL);
    expect_yaml_error("per_device_train_batch_size: 99999999999", "invalid_hyperparameter",
                      "per_device_train_batch_size", "[1, 4096]");

    // Ranges (messages carry the allowed range).
    expect_yaml_error("beta: 0", "invalid_hyperparameter", "beta", "(0, 1000]");
    expect_yaml_error("beta: -0.1", "invalid_hyperparameter", "beta", NULL);
    expect_yaml_error("beta: 1001", "invalid_hyperparameter", "beta", NULL);
    expect_yaml_error("batch_size: 0", "invalid_hyperparameter", "batch_size", "[1, 4096]");
    expect_yaml_error("batch_size: -1", "invalid_hyperparameter", "batch_size", NULL);
    expect_yaml_error("per_device_train_batch_size: 0", "invalid_hyperparameter",
                      "per_device_train_batch_size", NULL);
    expect_yaml_error("per_device_eval_batch_size: 4097", "invalid_hyperparameter",
                      "per_device_eval_batch_size", NULL);
    expect_yaml_error("gradient_accumulation_steps: 0", "invalid_hyperparameter",
                      "gradient_accumulation_steps", NULL);
    expect_yaml_error("learning_rate: 0", "invalid_hyperparameter", "learning_rate", NULL);
    expect_yaml_error("learning_rate: 1.5", "invalid_hyperparameter", "learning_rate", NULL);
    expect_yaml_error("label_smoothing: 0.5", "invalid_hyperparameter", "label_smoothing", NULL);
    expect_yaml_error("num_train_epochs: 0", "invalid_hyperparameter", "num_train_epochs", NULL);
    expect_yaml_error("max_steps: 0", "invalid_hyperparameter", "max_steps", NULL);
    expect_yaml_error("max_steps: -2", "invalid_hyperparameter", "max_steps", NULL);
    expect_yaml_error("warmup_ratio: 1", "invalid_hyperparameter", "warmup_ratio", NULL);
    expect_yaml_error("warmup_steps: -1", "invalid_hyperparameter", "warmup_steps", NULL);
    expect_yaml_error("weight_decay: -0.01", "invalid_hyperparameter", "weight_decay", NULL);
    expect_yaml_error("adam_beta1: 1", "invalid_hyperparameter", "adam_beta1", NULL);
    expect_yaml_error("adam_beta2: -0.5", "invalid_hyperparameter", "adam_beta2", NULL);
    expect_yaml_error("adam_epsilon: 0", "invalid_hyperparameter", "adam_epsilon", NULL);
    expect_yaml_error("max_grad_norm: -1", "invalid_hyperparameter", "max_grad_norm", NULL);
    expect_yaml_error("logging_steps: 0", "invalid_hyperparameter", "logging_steps", NULL);
    expect_yaml_error("eval_steps: -1", "invalid_hyperparameter", "eval_steps", NULL);
    expect_yaml_error("save_steps: -1", "invalid_hyperparameter", "save_steps", NULL);
    expect_yaml_error("max_length: 1", "invalid_hyperparameter", "max_length", NULL);
    expect_yaml_error("max_length: 2000000", "invalid_hyperparameter", "max_length", NULL);
    expect_yaml_error("threads: 1025", "invalid_hyperparameter", "threads", NULL);
    expect_yaml_error("max_length: 512\nmax_prompt_length: 512", "invalid_hyperparameter",
                      "max_prompt_length", "max_prompt_length must be smaller than max_length");
    expect_yaml_error("max_prompt_length: 2048", "invalid_hyperparameter", "max_prompt_length",
                      "smaller than max_length");
    expect_yaml_error("max_prompt_length: 0", "invalid_hyperparameter", "max_prompt_length", NULL);
    expect_yaml_error("loss_type: ipo\nlabel_smoothing: 0.1", "invalid_hyperparameter",
                      "label_smoothing", NULL);
    expect_yaml_error("loss_type: kto", "invalid_hyperparameter", "loss_type", "sigmoid");
    expect_yaml_error("lr_scheduler_type: step", "invalid_hyperparameter", "lr_scheduler_type",
                      NULL);
    expect_yaml_error("truncation_mode: middle", "invalid_hyperparameter", "truncation_mode", NULL);
    expect_yaml_error("bad_rows: ignore", "invalid_hyperparameter", "bad_rows", NULL);
    expect_yaml_error("eval_file: ''", "invalid_hyperparameter", "eval_file", "empty");
    expect_yaml_error("model_init: {dim: 60, n_layers: 1, n_heads: 8, max_seq_len: 8}",
                      "invalid_hyperparameter", "model_init.n_heads", NULL);
    expect_yaml_error("model_init: {dim: 64, n_layers: 1, n_heads: 8, n_kv_heads: 3, "
                      "max_seq_len: 8}",
                      "invalid_hyperparameter", "model_init.n_kv_heads", NULL);
    expect_error("method: dpo\ntrain_file: t\nmodel_init: {dim: 64, n_heads: 4, max_seq_len: 8}\n",
                 RECIPE_YAML, "invalid_recipe", "model_init.n_layers", NULL);
    {
        char big[5200];
        memcpy(big, "output_dir: ", 12);
        memset(big + 12, 'a', 4097);
        big[12 + 4097] = '\0';
        expect_yaml_error(big, "invalid_hyperparameter", "output_dir", NULL);
    }

    // method / data / model / train_file.
    expect_error("model: m\ntrain_file: t\n", RECIPE_YAML, "invalid_recipe", "method", NULL);
    expect_error("method: ppo\nmodel: m\ntrain_file: t\n", RECIPE_YAML, "invalid_hyperparameter",
                 "method", "\"dpo\"");
    expect_yaml_error("data: sft", "invalid_hyperparameter", "data", "data");
    expect_error("method: sft\ndata: preference\nmodel: m\ntrain_file: t\n", RECIPE_YAML,
                 "invalid_hyperparameter", "data", NULL);
    expect_error("method: dpo\ntrain_file: t\n", RECIPE_YAML, "invalid_recipe", "model", NULL);
    expect_yaml_error("model_init: {dim: 64, n_layers: 1, n_heads: 4, max_seq_len: 8}",
                      "invalid_recipe", "model", "not both");
    expect_error("method: dpo\nmodel: m\n", RECIPE_YAML, "invalid_recipe", "train_file", NULL);
    expect_error("method: orpo\nmodel: m\ntrain_file: t\nloss_type: hinge\n", RECIPE_YAML,
                 "invalid_hyperparameter", "loss_type", NULL);

    // batch_size alias together with its full name.
    expect_yaml_error("batch_size: 4\nper_device_train_batch_size: 4", "invalid_recipe",
                      "batch_size", "alias");

    // Duplicate keys.
    expect_yaml_error("beta: 0.1\nbeta: 0.2", "invalid_recipe", "beta", "duplicate");
    expect_json_error("\"beta\": 0.1, \"beta\": 0.2", "invalid_recipe", "beta", "duplicate");

    // YAML anchors and aliases (billion laughs) are refused, naming the alias.
    expect_error("method: &m dpo\nmodel: m\ntrain_file: t\n", RECIPE_YAML, "invalid_recipe", NULL,
                 "anchor '&m'");
    expect_error("a: &lol [1, 2]\nb: [*lol, *lol]\nmethod: dpo\n", RECIPE_YAML, "invalid_recipe",
                 NULL, "anchor");
    expect_error("method: dpo\nmodel: *lol\ntrain_file: t\n", RECIPE_YAML, "invalid_recipe", NULL,
                 "alias '*lol'");
    expect_yaml_error("unknown_tag: !!binary aGk=", "invalid_recipe", NULL, "tag");

    // Deep nesting (YAML flow and block, JSON).
    char deep[512];
    int n = snprintf(deep, sizeof deep, "method: dpo\nmodel: m\ntrain_file: t\nx: ");
    for (int i = 0; i < 40; i++)
        deep[n++] = '[';
    for (int i = 0; i < 40; i++)
        deep[n++] = ']';
    deep[n++] = '\n';
    deep[n] = '\0';
    expect_error(deep, RECIPE_YAML, "invalid_recipe", NULL, "nesting");
    n = snprintf(deep, sizeof deep, "{\"method\": \"dpo\", \"x\": ");
    for (int i = 0; i < 40; i++)
        deep[n++] = '[';
    for (int i = 0; i < 40; i++)
        deep[n++] = ']';
    deep[n++] = '}';
    deep[n] = '\0';
    expect_error(deep, RECIPE_JSON, "invalid_recipe", NULL, "nesting");

    // Syntax, empty and non-object bodies.
    expect_error("", RECIPE_AUTO, "invalid_recipe", NULL, "empty");
    expect_error("  \n\t\n", RECIPE_AUTO, "invalid_recipe", NULL, "empty");
    expect_error("# only a comment\n", RECIPE_YAML, "invalid_recipe", NULL, "empty");
    expect_error("[1, 2]", RECIPE_AUTO, "invalid_recipe", NULL, "mapping");
    expect_error("just a string", RECIPE_YAML, "invalid_recipe", NULL, "mapping");
    expect_error("null", RECIPE_JSON, "invalid_recipe", NULL, "mapping");
    expect_error("{\"method\": \"dpo\",}", RECIPE_JSON, "invalid_recipe", NULL, "line 1");
    expect_error("{\"method\": \"dpo\"} x", RECIPE_JSON, "invalid_recipe", NULL, "trailing");
    expect_error("method: dpo\n  beta: : 0.1\n", RECIPE_YAML, "invalid_recipe", NULL, "line");
    expect_error("method: dpo\n---\nmethod: sft\n", RECIPE_YAML, "invalid_recipe", NULL,
                 "document");
    expect_json_error("\"eval_file\": \"a\\u0000b\"", "invalid_recipe", NULL, "u0000");
    {
        const char nul_text[] = "method: dpo\0\nmodel: m\n";
        Recipe r;
        BsError err;
        CHECK(recipe_parse(nul_text, sizeof nul_text - 1, RECIPE_YAML, &r, &err) == -1);
        CHECK(strcmp(err.code, "invalid_recipe") == 0);
    }
    // A refused recipe leaves r safe to free.
    {
        Recipe r;
        BsError err;
        CHECK(parse("method: dpo\nmodel: m\ntrain_file: t\nbeta: 0\n", RECIPE_YAML, &r, &err) ==
              -1);
        CHECK(r.model == NULL && r.train_file == NULL);
        recipe_free(&r);
    }
}

int main(void) {
    test_lesson_form();
    test_defaults_and_values();
    test_errors();
    return test_summary("recipe");
}
