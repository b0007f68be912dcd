// recipe.h — a training recipe: flat TRL-named keys (as in the lesson:
// `method: dpo`, `beta: 0.1`, `data: preference`), in JSON or YAML, optionally
// nested under a top-level `recipe:` key. Unknown keys and out-of-range values
// are errors naming the field. Defaults follow Hugging Face TRL / transformers.
#ifndef RECIPE_H
#define RECIPE_H

#include "bs.h"
#include "chat.h"
#include "model.h"

typedef enum { METHOD_SFT = 0, METHOD_DPO, METHOD_ORPO } Method;
typedef enum { DATA_PREFERENCE = 0, DATA_SFT } DataKind;
typedef enum { LOSS_SIGMOID = 0, LOSS_IPO, LOSS_HINGE, LOSS_ROBUST } DpoLossType;
typedef enum { SCHED_LINEAR = 0, SCHED_CONSTANT, SCHED_COSINE } LrSchedule;
typedef enum { TRUNC_KEEP_END = 0, TRUNC_KEEP_START } TruncationMode;
typedef enum { BAD_ROWS_SKIP = 0, BAD_ROWS_ERROR } BadRowPolicy;
typedef enum { RECIPE_AUTO = 0, RECIPE_JSON, RECIPE_YAML } RecipeFormat;
// Where the final model goes: "auto" is resolved by the trainer (hf when the
// starting model is a Hugging Face folder, else llama2c).
typedef enum { OUTPUT_AUTO = 0, OUTPUT_LLAMA2C, OUTPUT_HF } OutputFormat;

// `model_init`: a model initialised from scratch (seeded by `seed`).
typedef struct {
    int dim, n_layers, n_heads, n_kv_heads, hidden_dim, max_seq_len;
    int vocab_size; // 0: the built-in byte tokenizer (vocab 259)
} ModelInit;

typedef struct {
    Method method;        // "sft" | "dpo" | "orpo" (required)
    DataKind data;        // "preference" | "sft"; default from method
    double beta;          // dpo beta / orpo lambda; default 0.1
    DpoLossType loss_type;        // "sigmoid" | "ipo" | "hinge" | "robust"
    double label_smoothing;       // [0, 0.5)
    char *model;                  // llama2.c .bin, Hugging Face folder or "job:ID"; NULL with
                                  // model_init
    int has_model_init;
    ModelInit model_init;
    char *tokenizer;              // tokenizer.bin, HF tokenizer folder or tokenizer.json; NULL:
                                  // the HF model folder's own tokenizer when it has one, else
                                  // bytes (model_init) or pre-tokenized
    char *reference_model;        // NULL: frozen copy of the start
    int precompute_ref_log_probs; // bool
    char *train_file;             // JSONL (required)
    char *eval_file;              // JSONL or NULL
    char *output_dir;             // NULL: caller chooses (daemon: per-job folder)
    double learning_rate;         // dpo/orpo 1e-6, sft 2e-5
    int per_device_train_batch_size; // 8; alias `batch_size`
    int per_device_eval_batch_size;  // 8
    int gradient_accumulation_steps; // 1
    double num_train_epochs;         // 3
    int max_steps;                   // -1: from epochs
    LrSchedule lr_scheduler_type;    // "linear" (default) | "constant" | "cosine"
    int warmup_steps;                // 0
    double warmup_ratio;             // 0
    double weight_decay;             // 0
    double adam_beta1, adam_beta2, adam_epsilon; // 0.9, 0.999, 1e-8
    double max_grad_norm;            // 1.0; 0 disables clipping
    unsigned long long seed;         // 42
    int shuffle;                     // 1
    int logging_steps;               // 10
    int eval_steps;                  // 0: eval at the end only (when eval_file)
    int save_steps;                  // 500; 0: only at the end
    int max_length;                  // 1024 (capped by the model's seq_len)
    int max_prompt_length;           // 512
    TruncationMode truncation_mode;  // "keep_end" (default) | "keep_start"
    BadRowPolicy bad_rows;           // "skip" (default) | "error"
    int threads;                     // BLAS threads; 0: the caller decides
    ChatTemplate chat_template; // conversational rows: "auto" (default: chat_detect on the
                                // tokenizer) | "plain" | "chatml" | "llama2" | "zephyr"
    OutputFormat output_format; // "auto" (default) | "llama2c" (final/model.bin) |
                                // "hf" (final/ folder: config.json + model.safetensors)
} Recipe;

// Fills r with the defaults of `method` (all strings NULL).
void recipe_defaults(Recipe *r, Method method);
// Parses and validates text. On failure err->param names the key and
// err->code is "invalid_recipe" (syntax, unknown key, wrong type) or
// "invalid_hyperparameter" (out of range). r owns its strings: recipe_free.
int recipe_parse(const char *text, size_t len, RecipeFormat fmt, Recipe *r, BsError *err);
void recipe_free(Recipe *r);
// Canonical JSON of the recipe with every default filled (malloc'd, caller
// frees). Re-parsing it gives the same recipe.
char *recipe_to_json(const Recipe *r);
const char *recipe_method_name(Method m);
const char *recipe_loss_type_name(DpoLossType t);
// The model configuration `model_init` describes (hidden_dim defaults to
// llama2.c's rule: 2/3 of 4 * dim rounded up to 32; vocab 0 means the byte
// tokenizer's 259; shared classifier, eps 1e-5, theta 10000). The result still
// needs model_config_validate.
void recipe_model_init_config(const ModelInit *mi, ModelConfig *c);
// 1 when the recipe trains on the built-in byte tokenizer: a model_init model
// without vocab_size and no tokenizer file.
int recipe_uses_byte_tokenizer(const Recipe *r);
// "auto", "llama2c" or "hf".
const char *recipe_output_format_name(OutputFormat f);

#endif
