// preflight.h — the checks that decide whether a recipe can run, as typed
// blockers ({code, field, message, hint}) instead of mid-run crashes.
// Codes: missing_dependency, dataset_not_found, dataset_schema, dataset_empty,
// model_not_found, model_invalid, model_unsupported (a Hugging Face model
// brewslm cannot train faithfully; field = the config.json key, e.g.
// "rope_scaling", or tensor name), tokenizer_mismatch, tokenizer_unsupported
// (a tokenizer.json component brewslm lacks; field = its JSON path, e.g.
// "model.type"), invalid_hyperparameter (also output_format: llama2c for a
// model whose rms_norm_eps / rope_theta a llama2.c file cannot carry),
// path_outside_data_root, insufficient_memory.
// Warnings add chat_template_fallback / chat_template_approximate (field
// chat_template) when conversational rows use a template guessed from the
// tokenizer's tokenizer_config.json.
#ifndef PREFLIGHT_H
#define PREFLIGHT_H

#include "bs.h"
#include "recipe.h"

typedef struct {
    char code[40];
    char field[64];
    char message[512];
    char hint[256];
} Blocker;

#define PREFLIGHT_MAX_ISSUES 32
typedef struct {
    int n_blockers, n_warnings;
    Blocker blockers[PREFLIGHT_MAX_ISSUES];
    Blocker warnings[PREFLIGHT_MAX_ISSUES];
    long long parameters;   // policy parameters
    long long memory_bytes; // policy + reference + grads + AdamW + activations
    long long train_rows;   // usable rows after truncation
    long long steps;        // optimizer steps the run will take
} PreflightReport;

typedef struct {
    const char *data_root;        // NULL: no confinement (CLI); else every path must resolve inside
    long long memory_limit_bytes; // 0: no limit
    int preference_enabled;       // 0 when built without the preference trainer
} PreflightOptions;

// Rewrites every path of r (model, tokenizer, reference_model, train_file,
// eval_file) relative to data_root into an absolute, symlink-resolved path.
// A path leaving data_root adds a path_outside_data_root blocker.
// Then checks files, data schema, model/tokenizer agreement, hyperparameters
// and memory. Returns 0 when the checks ran (rep->n_blockers tells the
// verdict), -1 only on an internal error (allocation).
int preflight_run(Recipe *r, const PreflightOptions *opt, PreflightReport *rep, BsError *err);
// For a Hugging Face folder at path (or the folder of a tokenizer .json file):
// 1 when every file the loaders read there (config.json, *.safetensors and
// the index, the tokenizer's files) is a regular file or a symbolic link
// resolving to a regular file inside root (root NULL: anywhere), else 0 with
// the first offending file's path in bad. Paths of other kinds give 1.
int preflight_folder_confined(const char *root, const char *path, char *bad, size_t bad_len);
void preflight_add(PreflightReport *rep, int warning, const char *code, const char *field,
                   const char *hint, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
// JSON of the report: {"ok","blockers","warnings","estimate":{...}}; malloc'd.
char *preflight_to_json(const PreflightReport *rep);

#endif
