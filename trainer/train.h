// train.h — the training loop: loads model, reference, tokenizer and data for
// a recipe, runs SFT / DPO / ORPO micro-batches through the model and the
// AlignmentHandler, steps AdamW, logs metrics, evaluates, writes training-state
// checkpoints and the final model (r->output_format: llama2.c
// output_dir/final/model.bin, or a Hugging Face folder output_dir/final with
// config.json, model.safetensors and the tokenizer's files; "auto" is hf when
// r->model is a Hugging Face folder), and resumes from the latest checkpoint in
// output_dir/checkpoints exactly where it stopped. Without r->tokenizer a
// Hugging Face model folder's own tokenizer is used when it has one.
#ifndef TRAIN_H
#define TRAIN_H

#include "bs.h"
#include "recipe.h"

typedef struct {
    void *user;
    // Each logged train row (every logging_steps and the last step) and each
    // eval row. Nonzero return aborts the run with an error.
    int (*on_metrics)(void *user, const MetricRow *row);
    // Human progress lines (also what the CLI prints on stderr).
    void (*on_log)(void *user, const char *line);
    // Polled before every optimizer step; nonzero stops cooperatively: a
    // checkpoint is written and train_run returns 0 with stopped set.
    int (*should_stop)(void *user);
    // After every optimizer step.
    void (*on_progress)(void *user, int step, int total_steps, double epoch);
    // After a training-state checkpoint is durably written.
    void (*on_checkpoint)(void *user, int step, const char *path);
    // Once at start when resuming; steps after resumed_step will be logged
    // again (identically), so consumers may drop rows with step > resumed_step.
    void (*on_resume)(void *user, int resumed_step);
} TrainHooks;

typedef struct {
    int step;        // optimizer steps done
    int total_steps;
    int stopped;     // 1 when should_stop ended the run early
    int resumed_from; // 0 or the checkpoint step resumed from
    MetricRow last_train, last_eval; // last logged rows (n == 0 when none)
    char final_model[1024]; // output_dir/final/model.bin (llama2c) or output_dir/final (hf)
} TrainResult;

// Runs (or resumes) the recipe. r->output_dir must be set. BLAS threads are
// r->threads when > 0. Returns 0 (finished or stopped) or -1 with err.
int train_run(const Recipe *r, const TrainHooks *hooks, TrainResult *res, BsError *err);

#endif
