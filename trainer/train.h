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

#include "align.h"
#include "bs.h"
#include "data.h"
#include "model.h"
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

// ---------------------------------------------------------------------------
// Packed micro-batches: how the trainer lays dataset rows out for the model
// (public so that tests/bench/bench_step.c times exactly this).

// What position i of a packed sequence is scored for (TrainPack.kind).
enum { TRAIN_TGT_NONE = 0, TRAIN_TGT_COMPLETION = 1, TRAIN_TGT_PROMPT = 2 };

// A micro-batch of B rows packed as chosen_0..chosen_{B-1} then, for
// preference methods, rejected_0..rejected_{B-1} (TRL's concatenated_forward
// order), each sequence prompt + completion, no padding. The first six
// fields make a ModelBatch {n_seqs, offsets, tokens, targets}. Zero-initialise
// before first use; the buffers grow to the largest batch packed and are
// owned by the pack (free with train_pack_free).
typedef struct {
    int n_seqs, n_tok;
    int *offsets;                   // (n_seqs + 1), offsets[0] == 0
    int *tokens, *targets;          // (n_tok) targets[i]: next token, or -1 when unscored
    unsigned char *kind;            // (n_tok) TRAIN_TGT_* of targets[i]
    float *logp, *ref_logp, *dlogp; // (n_tok) for the caller: model log-probs and dL/dlogp
    int *n_comp, *n_all;            // (n_seqs) scored completion / all scored positions
    double *comp, *all, *ref_comp;  // (n_seqs) for the caller: per-sequence log-prob sums
    int *group;                     // (n_seqs) group of each sequence: its pair (SFT: row / 2)
    int n_groups;                   // pairs (SFT: rows / 2, rounded up)
    size_t cap_tok, cap_seq;
} TrainPack;

// Packs rows idx[0..B) of ds (rejected sequences too when preference). A
// position is scored (target = the next token) when the next token belongs to
// the completion, and with orpo also when it is in a chosen prompt
// (TRAIN_TGT_PROMPT: ORPO's NLL covers the whole chosen sequence); the last
// position of a sequence predicts nothing. 0, or -1 with err (out of memory,
// more than INT_MAX tokens); p keeps its buffers either way.
int train_pack_batch(TrainPack *p, const Dataset *ds, const int *idx, int B, int preference,
                     int orpo, BsError *err);
// Per-sequence sums (in double) of logp (n_tok) over the completion targets
// into comp (n_seqs) and, when all is not NULL, over every scored position.
void train_pack_sums(const TrainPack *p, const float *logp, double *comp, double *all);
// p->dlogp from the per-sequence coefficients of align_compute (B rows):
// d_chosen[s] / d_rejected[s - B] on completion targets, plus d_chosen_all[s]
// (ORPO; NULL for none) on every scored position of chosen sequence s, all
// divided by scale (the micro-batches per optimizer step); 0 elsewhere.
void train_pack_dlogp(TrainPack *p, int B, const double *d_chosen, const double *d_rejected,
                      const double *d_chosen_all, double scale);
// The AlignBatch of a packed micro-batch of B rows after train_pack_sums:
// chosen (and, when preference, rejected) completion sums and lengths; the
// reference sums p->ref_comp when dpo; ORPO's whole-sequence sums when orpo.
// ab points into p (valid while p is).
void train_pack_align_batch(const TrainPack *p, int B, int preference, int dpo, int orpo,
                            AlignBatch *ab);
// Log-probs (no activations kept) of a packed micro-batch into
// logp (n_tok): model_forward_grouped with the pack's groups and no grad,
// whose classifier works on the same rows in the same blocks as
// train_pack_policy_forward's, so that equal weights give the policy's
// log-probs bit for bit (the reference and eval scoring). 0, or -1 with err.
int train_pack_score(TrainPack *p, Model *m, float *logp, BsError *err);
// The policy's training pass over a packed micro-batch of B rows (after
// train_pack_batch and, for DPO, with p->ref_comp filled):
// model_forward_grouped with one group per pair (SFT: per two rows), whose
// gradient is formed as soon as its log-probs exist (align_pair_gradient,
// dL/dlogp divided by scale into p->dlogp); then every sequence's sums and
// align_compute on the whole micro-batch for the loss, metrics and
// coefficients (ar's arrays caller-allocated). The policy is then ready for
// model_backward(policy, batch, NULL). 0, or -1 with err.
int train_pack_policy_forward(TrainPack *p, Model *policy, const Recipe *r, int B, int preference,
                              int dpo, int orpo, double scale, AlignResult *ar, BsError *err);
// Frees the buffers and zeroes p.
void train_pack_free(TrainPack *p);

// Runs (or resumes) the recipe. r->output_dir must be set. BLAS threads are
// r->threads when > 0. Returns 0 (finished or stopped) or -1 with err.
int train_run(const Recipe *r, const TrainHooks *hooks, TrainResult *res, BsError *err);

#endif
