// model.h — a Llama-architecture decoder in fp32: forward and backward over a
// packed batch of variable-length sequences (no padding anywhere).
//
// Parameters live in one flat float buffer in llama2.c's tensor order (without
// the freq_cis tables): tok_emb, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3,
// rms_final, then wcls only when the classifier is not shared. Gradients use
// the same layout in a second flat buffer, so the optimizer is one loop and a
// checkpoint one write. Every weight matrix is row-major (out, in): y = W x.
#ifndef MODEL_H
#define MODEL_H

#include <stddef.h>

#include "bs.h"
#include "ops.h"

typedef struct {
    int dim;               // D
    int hidden_dim;        // H (SwiGLU inner size)
    int n_layers;          // L
    int n_heads;           // NH; head size HS = D / NH
    int n_kv_heads;        // NKV, divides NH; KVD = NKV * HS
    int vocab_size;        // V
    int seq_len;           // maximum positions
    int shared_classifier; // 1: logits use tok_emb
    float norm_eps;        // RMSNorm epsilon, 1e-5
    float rope_theta;      // 10000
} ModelConfig;

typedef struct {
    float *tok_emb;   // (V, D)
    float *rms_att;   // (L, D)
    float *wq;        // (L, D, D)
    float *wk;        // (L, KVD, D)
    float *wv;        // (L, KVD, D)
    float *wo;        // (L, D, D)
    float *rms_ffn;   // (L, D)
    float *w1;        // (L, H, D)
    float *w2;        // (L, D, H)
    float *w3;        // (L, H, D)
    float *rms_final; // (D)
    float *wcls;      // (V, D); == tok_emb when shared
} ModelTensors;

// A contiguous range of the flat parameter buffer and whether AdamW's
// decoupled weight decay applies to it (2-D matrices yes, norm weights no).
typedef struct {
    const char *name;
    size_t offset, count;
    int decay;
} ParamRange;

// A packed batch: sequence s occupies tokens[offsets[s] .. offsets[s+1]).
// targets[i] is the id whose log-prob position i must produce (normally the
// next token of the same sequence), or -1 where no logit is needed: the
// vocab-sized classifier and softmax are skipped there.
typedef struct {
    int n_seqs;
    const int *offsets; // (n_seqs + 1), offsets[0] == 0
    const int *tokens;  // (N)
    const int *targets; // (N)
} ModelBatch;

typedef struct Model Model;

// Checks sizes and relations (dims positive, D % NH == 0, NH % NKV == 0,
// HS even, products fit in size_t). 0 or -1 with err filled.
int model_config_validate(const ModelConfig *c, BsError *err);
size_t model_param_count(const ModelConfig *c);
// Points t into a flat buffer of model_param_count(c) floats.
void model_tensors(ModelTensors *t, float *flat, const ModelConfig *c);
// Fills up to max ranges covering the flat buffer in order; returns how many.
int model_param_ranges(const ModelConfig *c, ParamRange *out, int max);

// Bytes of activation and scratch buffers a model allocates for a batch of
// n_tokens tokens whose longest sequence has max_seq tokens (every token
// assumed to have a target); backward=1 for a training model (all layers'
// activations kept plus gradient buffers). SIZE_MAX when it overflows.
size_t model_activation_bytes(const ModelConfig *c, int n_tokens, int max_seq, int backward);

// Allocates a model with zeroed parameters; with_grads=0 makes a frozen model
// (reference) that can run forward only. Caller frees with model_free.
int model_create(Model **out, const ModelConfig *c, int with_grads, BsError *err);
void model_free(Model *m);
const ModelConfig *model_config(const Model *m);
float *model_params(Model *m); // (P) flat, owned by the model
float *model_grads(Model *m);  // (P) flat, NULL for a frozen model
void model_zero_grads(Model *m);
// Seeded, deterministic initialisation for from-scratch models: weights
// N(0, 0.02) (output projections wo and w2 scaled by 1/sqrt(2L)), norms 1.
void model_init_random(Model *m, unsigned long long seed);

// Threads used by model_forward and model_backward (the model's own pool;
// OpenBLAS is set to 1 thread for the duration of each call and restored).
// 0, the default, follows openblas_get_num_threads() at each call. Results
// are bit-identical for any thread count.
void model_set_threads(Model *m, int n_threads);
// The model's thread pool, sized to the current setting as model_forward
// sizes it (NULL: one thread), for work between passes that should use the
// same threads (the optimizer: optim.h's *_pool functions). Owned by the
// model and valid until the next model call; do not use it concurrently with
// model_forward / model_backward.
OpsPool *model_pool(Model *m);

// Forward pass. logp (N) receives log softmax(logits_i)[targets[i]] for every
// position with a target, 0 elsewhere. When keep_activations is set the
// activations needed by model_backward are kept (the model must have grads).
// Sequences longer than seq_len are an error.
int model_forward(Model *m, const ModelBatch *b, float *logp, int keep_activations, BsError *err);
// Sequences scored together by model_forward_grouped: seq_group[s] in
// 0 .. n_groups-1 for every sequence s of the batch. grad is called once per
// group, in group order, when logp holds the log-probs of every row of the
// group's sequences (rows of later groups are not yet computed); it writes
// dLoss/dlogp into dlogp for those rows (the other entries are not read) and
// returns 0, or -1 with err filled, which ends the forward with -1.
typedef struct {
    int n_groups;
    const int *seq_group; // (n_seqs)
    int (*grad)(void *ctx, int group, const float *logp, float *dlogp, BsError *err);
    void *ctx;
} ModelGroups;

// The training forward: as model_forward with keep_activations, and the
// classifier's part of the backward done on the way, group by group, while
// the group's logits are held (at most one group's: a DPO pair, whose loss
// is known once both its sequences' log-probs are). dlogp (N) receives the
// grad callbacks' values. Follow it with model_backward(m, b, NULL, err).
// A group whose logits exceed the logit cache (model_set_logit_cache) is
// scored block by block and its logits recomputed for the gradient.
int model_forward_grouped(Model *m, const ModelBatch *b, const ModelGroups *groups, float *logp,
                          float *dlogp, BsError *err);
// Bytes a training model may hold for kept logits: one group's (grouped
// forward) or one block's (the plain backward's recomputation), at least 16
// rows. Default 64 MiB: a DPO pair of two 256-token sequences of a
// 32000-token vocabulary fits.
void model_set_logit_cache(Model *m, size_t bytes);

// Backward pass of the most recent forward on the same batch: dlogp (N) holds
// dLoss/dlogp_i (0 where no target) after model_forward, and must be NULL
// after model_forward_grouped (which consumed it already). Gradients are
// accumulated (+=). The backward consumes the forward's activations (it
// works in their memory, as torch frees its graph): another backward needs
// another forward first.
int model_backward(Model *m, const ModelBatch *b, const float *dlogp, BsError *err);

#endif
