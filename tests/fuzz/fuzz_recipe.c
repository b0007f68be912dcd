// fuzz_recipe.c — libFuzzer target for the recipe parser (trainer/recipe.c).
//
// The input is parsed as JSON, as YAML and with format detection. Properties:
// a refusal carries one of the two documented error codes and leaves the
// recipe at its (string-free) defaults; an accepted recipe's canonical JSON
// (recipe_to_json) re-parses, and re-parsing gives byte-identical canonical
// JSON. When that JSON is printable ASCII it is also valid YAML (flow style),
// and the YAML reading must agree too.
#include <stdint.h>
#include <string.h>

#include "fuzz_common.h"
#include "recipe.h"

static void check_refusal(const Recipe *r, const BsError *err) {
    FUZZ_CHECK(strcmp(err->code, "invalid_recipe") == 0 ||
                   strcmp(err->code, "invalid_hyperparameter") == 0,
               "unexpected error code '%s' (%s)", err->code, err->message);
    FUZZ_CHECK(!r->model && !r->tokenizer && !r->reference_model && !r->train_file &&
                   !r->eval_file && !r->output_dir,
               "a refused recipe still holds strings");
}

static int printable_ascii(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e) return 0;
    return 1;
}

// Re-parses the canonical JSON of r in format fmt and compares.
static void check_reparse(const char *json, RecipeFormat fmt) {
    Recipe again;
    BsError err = {0};
    int rc = recipe_parse(json, strlen(json), fmt, &again, &err);
    FUZZ_CHECK(rc == 0, "canonical JSON refused as %s: %s: %s (param %s)\n%s",
               fmt == RECIPE_JSON ? "JSON" : "YAML", err.code, err.message, err.param, json);
    char *json2 = recipe_to_json(&again);
    FUZZ_CHECK(json2 != NULL, "recipe_to_json failed on the re-parsed recipe");
    FUZZ_CHECK(strcmp(json, json2) == 0, "canonical JSON changed on re-parse (%s):\n%s\n%s",
               fmt == RECIPE_JSON ? "JSON" : "YAML", json, json2);
    free(json2);
    recipe_free(&again);
}

static void check_accepted(const Recipe *r) {
    FUZZ_CHECK(r->train_file != NULL, "accepted a recipe without train_file");
    FUZZ_CHECK(!r->model != !r->has_model_init, "model and model_init both set or both unset");
    FUZZ_CHECK(r->max_prompt_length < r->max_length, "max_prompt_length %d >= max_length %d",
               r->max_prompt_length, r->max_length);
    char *json = recipe_to_json(r);
    FUZZ_CHECK(json != NULL, "recipe_to_json failed on an accepted recipe");
    check_reparse(json, RECIPE_JSON);
    if (printable_ascii(json)) check_reparse(json, RECIPE_YAML);
    free(json);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const RecipeFormat fmts[] = {RECIPE_JSON, RECIPE_YAML, RECIPE_AUTO};
    for (size_t i = 0; i < sizeof fmts / sizeof fmts[0]; i++) {
        Recipe r;
        BsError err = {0};
        if (recipe_parse((const char *)data, size, fmts[i], &r, &err) == 0)
            check_accepted(&r);
        else
            check_refusal(&r, &err);
        recipe_free(&r);
    }
    return 0;
}
