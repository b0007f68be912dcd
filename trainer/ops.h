// ops.h — the numerical building blocks of the decoder, llm.c style: each op
// is a forward/backward pair over a packed batch of N tokens (sequences laid
// end to end, no padding), fp32, row-major, matmuls through cblas_sgemm.
//
// Conventions: forward functions overwrite their outputs; backward functions
// ACCUMULATE (+=) into every gradient they produce (input and weight
// gradients alike), so callers zero them once and several consumers of one
// tensor can add into the same buffer. The only exception is RoPE, whose
// backward rotates a gradient buffer in place. Same argument order in each
// pair: outputs, inputs, sizes.
//
// Threading: OpsPool runs the independent tasks of one parallel region on a
// fixed set of threads (the caller included). Ops never start threads
// themselves; model.c splits its work into tasks whose outputs are disjoint,
// so results do not depend on which thread runs which task. cblas_sgemm must
// then be single-threaded (openblas_set_num_threads(1)) while a region runs.
// The element-wise kernels are vector code compiled for AVX-512, AVX2 and
// the baseline (picked at run time on GCC/x86-64); sums over a row run in
// the vector's lanes, so the last bits may differ between instruction sets,
// never between runs or thread counts on one machine.
#ifndef OPS_H
#define OPS_H

#include <stddef.h>

typedef struct OpsPool OpsPool;
// One parallel region's work: task in 0 .. n_tasks-1, thread in
// 0 .. ops_pool_threads()-1 (index of per-thread scratch).
typedef void (*OpsTaskFn)(void *ctx, int task, int thread);

// Starts n_threads - 1 workers (the caller is thread 0). 0, or -1 when a
// thread or the memory cannot be had (*out NULL). Free with ops_pool_free.
int ops_pool_create(OpsPool **out, int n_threads);
void ops_pool_free(OpsPool *p);
int ops_pool_threads(const OpsPool *p); // 1 for NULL
// Runs fn(ctx, task, thread) for every task, in any order and on any thread
// (dynamic scheduling), and returns when all are done. p NULL: serial on the
// caller. Not re-entrant: one region at a time per pool.
void ops_pool_run(OpsPool *p, OpsTaskFn fn, void *ctx, int n_tasks);

// Vector exp: y[j] = scale * exp((x[j] - a) - b) for j < n (y may alias x),
// returns the sum of the y[j] (lane sums added in a fixed tree). Relative
// error below 3e-7 (Cephes expf polynomial); exp underflows to 0 below -87.3
// and overflows to inf above 88.72; NaN propagates.
float ops_vexp(float *y, const float *x, float a, float b, float scale, int n);
// Largest of x[0..n-1], n >= 1 (-inf when all are -inf).
float ops_vmax(const float *x, int n);

// The float32 constants of one AdamW step (optim.c forms them from the
// double hyperparameters as torch does).
typedef struct {
    float decay; // 1 - lr * weight_decay
    float beta1, one_minus_beta1, beta2, one_minus_beta2;
    float bc2_sqrt;      // sqrt(1 - beta2^t)
    float eps, neg_step; // -lr / (1 - beta1^t)
} OpsAdamW;
// AdamW over n elements, in torch 1.13's order, each operation rounded once:
//   p = p * decay;  m = fma(g, 1 - b1, m * b1);  v = fma((1 - b2) * g, g, v * b2);
//   p = p + neg_step * m / (sqrt(v) / bc2_sqrt + eps)
// Bit-identical on every instruction set (fused multiply-add and sqrt are
// correctly rounded; the baseline calls fmaf and sqrtf).
void ops_adamw(float *p, const float *g, float *m, float *v, size_t n, const OpsAdamW *c);
// sum x[j]^2 in double (exact squares, lane partial sums in a fixed tree: the
// last bits depend on the instruction set, never on the run).
double ops_sumsq(const float *x, size_t n);
// x[j] *= s
void ops_scale(float *x, float s, size_t n);

// RoPE tables exactly as llama2.c run.c computes them, in float:
//   freq_j = 1.0f / powf(theta, (2j) / (float)head_size), val = pos * freq_j,
//   cos_t[pos * HS/2 + j] = cosf(val), sin_t[...] = sinf(val)
// cos_t, sin_t: (seq_len, head_size/2), caller-allocated. Also the freq_cis
// tables written into llama2.c checkpoints.
void ops_rope_tables(float *cos_t, float *sin_t, int seq_len, int head_size, float theta);

// out (N, D) = emb[tokens[i]]; emb (V, D).
void embedding_forward(float *out, const int *tokens, const float *emb, int N, int D);
// demb (V, D) rows tokens[i] += dout (N, D) rows.
void embedding_backward(float *demb, const float *dout, const int *tokens, int N, int D);

// out (N, D) = x / sqrt(mean(x^2) + eps) * w; rstd (N) keeps 1/sqrt(...).
// out may not alias x.
void rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int N, int D,
                     float eps);
// out (N, D) = the output rmsnorm_forward gave for x with the rstd it kept,
// bit for bit (a backward recomputes the normed rows instead of keeping them).
void rmsnorm_apply(float *out, const float *x, const float *w, const float *rstd, int N, int D);
// dx (N, D) += ..., dw (D) += ...; dw may be NULL.
void rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                      const float *rstd, int N, int D);

// out (N, C_out) = inp (N, C_in) @ w^T, w (C_out, C_in) row-major.
void matmul_forward(float *out, const float *inp, const float *w, int N, int C_in, int C_out);
// dinp (N, C_in) += dout @ w; dw (C_out, C_in) += dout^T @ inp. Either may be NULL.
void matmul_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                     int N, int C_in, int C_out);

// Rows o0 .. o1-1 of matmul_backward's dw alone: dw[o0:o1] += dout[:, o0:o1]^T @ inp,
// so one weight gradient can be split into tasks over its output rows.
void matmul_backward_dw_rows(float *dw, const float *dout, const float *inp, int N, int C_in,
                             int C_out, int o0, int o1);

// out (N, C) = a + b (out may alias a or b).
void residual_forward(float *out, const float *a, const float *b, size_t n);

// pos (N): position of each token inside its own sequence (restarts at 0 at
// every offsets[s]).
void ops_positions(int *pos, const int *offsets, int n_seqs);

// In-place rotation of x (N, n_heads * head_size): each adjacent pair
// (2j, 2j+1) of each head by angle pos[i] * freq_j using the tables of
// ops_rope_tables (row stride head_size/2). Positions must be < the tables'
// seq_len.
void rope_forward(float *x, const int *pos, const float *cos_t, const float *sin_t, int N,
                  int n_heads, int head_size);
// In-place inverse rotation of a gradient buffer (the transpose).
void rope_backward(float *dx, const int *pos, const float *cos_t, const float *sin_t, int N,
                   int n_heads, int head_size);

// attention_forward/backward process queries in blocks of ATTENTION_BLOCK
// rows with sgemm, each block against the keys up to its last row only.
#define ATTENTION_BLOCK 64

// Floats of scratch attention_forward/backward need for a longest sequence
// of max_T tokens: two (min(T, ATTENTION_BLOCK), T) tiles.
size_t attention_scratch_floats(int max_T);

// Causal self-attention with grouped-query heads, per sequence and per head:
// q (N, NH*HS), k, v (N, NKV*HS), query head h reads kv head h / (NH/NKV);
// scale 1/sqrt(HS); a token attends to positions <= its own in its own
// sequence only. out (N, NH*HS). row_max, row_inv (N, NH) keep each softmax
// row's max and 1/sum(exp) so the backward recomputes identical
// probabilities. scratch: attention_scratch_floats(longest sequence).
void attention_forward(float *out, float *row_max, float *row_inv, float *scratch, const float *q,
                       const float *k, const float *v, const int *offsets, int n_seqs, int NH,
                       int NKV, int HS);
// dq (N, NH*HS), dk, dv (N, NKV*HS) += gradients of the forward above.
void attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                        const float *q, const float *k, const float *v, const float *row_max,
                        const float *row_inv, const int *offsets, int n_seqs, int NH, int NKV,
                        int HS);

// One task of each of the above, as fused kernels (no sgemm: vector code
// over blocks of query rows, exact causal extent, same math up to rounding):
// the sequence of tokens o .. o+T-1. scratch: attention_task_scratch_floats
// (longest sequence, head size) floats per concurrent task.
// Forward: query head h (out, row_max, row_inv rows of that head only).
// Backward: kv head kh with all NH/NKV query heads that read it, so the task
// owns its dk and dv slices; slices of dq (heads of the group), dk and dv
// are accumulated (+=) like attention_backward. When cos_t is not NULL the
// task then applies rope_backward to its dq and dk slices (pos indexed by
// token, as rope_backward).
size_t attention_task_scratch_floats(int max_T, int head_size);
void attention_forward_task(float *out, float *row_max, float *row_inv, float *scratch,
                            const float *q, const float *k, const float *v, int o, int T, int h,
                            int NH, int NKV, int HS);
void attention_backward_task(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                             const float *q, const float *k, const float *v, const float *row_max,
                             const float *row_inv, int o, int T, int kh, int NH, int NKV, int HS,
                             const int *pos, const float *cos_t, const float *sin_t);

// The same task in place, for a backward that no longer needs the task's
// inputs: dq is written over dout (same layout), dk over k and dv over v,
// overwritten rather than accumulated, RoPE's backward applied when cos_t is
// not NULL. Reads and writes only the task's rows of its kv head and query
// heads, so the tasks of a region still touch disjoint memory.
void attention_backward_task_inplace(float *dout_dq, float *k_dk, float *v_dv, float *scratch,
                                     const float *q, const float *row_max, const float *row_inv,
                                     int o, int T, int kh, int NH, int NKV, int HS, const int *pos,
                                     const float *cos_t, const float *sin_t);

// out (N, H) = silu(h1) * h3 (the elementwise part of SwiGLU; h1 = x W1^T,
// h3 = x W3^T come from matmul_forward). out may alias neither input.
void swiglu_forward(float *out, const float *h1, const float *h3, size_t n);
// dh1, dh3 (N, H) += gradients given dout (N, H).
void swiglu_backward(float *dh1, float *dh3, const float *dout, const float *h1, const float *h3,
                     size_t n);
// The backward in place, for a backward that no longer needs h1 and h3:
// prod = silu(h1) * h3 (the forward's output, for the W2 gradient), then
// h1 := dh1 and h3 := dh3 (overwritten, not accumulated).
void swiglu_backward_inplace(float *prod, float *h1, float *h3, const float *dout, size_t n);

// Classifier over M gathered rows that all have a target:
// logits (M, V) = x (M, D) @ wcls^T; logp[i] = log_softmax(logits_i)[targets[i]].
// probs (M, V) receives softmax(logits) (kept for the backward).
void logsoftmax_gather_forward(float *logp, float *probs, const float *x, const float *wcls,
                               const int *targets, int M, int D, int V);
// dlogits = dlogp_i * (onehot(target_i) - probs_i), computed in place over
// probs; then dx (M, D) += dlogits @ wcls and dwcls (V, D) += dlogits^T @ x.
// dx or dwcls may be NULL.
void logsoftmax_gather_backward(float *dx, float *dwcls, float *probs, const float *dlogp,
                                const float *x, const float *wcls, const int *targets, int M, int D,
                                int V);

// The classifier over row blocks, for tasks (model.c holds at most one
// group of rows' logits, never all M rows'). Every path forms a row's
// log-sum-exp the same way: per vocabulary tile its max and the sum of
// exp(logit - tile max) (a float lane sum, then double), folded in tile
// order by classifier_merge_tiles' rule. A row's results therefore depend on
// the tile width and its logits only, not on which rows or tiles share a
// task.
//
// classifier_forward_tile: logits (R, nv) = x (R, D) @ wcls[v0 .. v0+nv)^T
// into logits (row stride ldl; column 0 is vocabulary entry v0), and per row
// i: tmax[i] the tile's max, tsum[i] = sum(exp(logit - tmax[i])), and
// tlogit[i] = the logit of targets[i] when it falls in the tile (untouched
// otherwise). exps: nv floats for the exps; NULL writes them over the logits.
void classifier_forward_tile(float *tmax, double *tsum, float *tlogit, float *logits, size_t ldl,
                             float *exps, const float *x, const float *wcls, const int *targets,
                             int R, int D, int v0, int nv);
// Folds the tile statistics of R rows (tile t of row i at tmax[t * ts + i],
// tsum[t * ts + i]) in tile order: lse_m[i] the row's max logit, lse_l[i] =
// log(sum(exp(logit - max))), logp[i] = tlogit[i] - lse_m[i] - lse_l[i], so
// that softmax(logits_i) = exp((logit - lse_m[i]) - lse_l[i]).
void classifier_merge_tiles(float *logp, float *lse_m, float *lse_l, const float *tmax,
                            const double *tsum, size_t ts, int n_tiles, const float *tlogit, int R);
// classifier_forward_rows: R rows x (R, D) against the whole vocabulary in
// tiles of vb columns (classifier_forward_tile, folded as it goes): logp,
// lse_m, lse_l as classifier_merge_tiles gives them. Each tile lives in
// scratch and is gone after its row sums (logits that must be kept go
// through classifier_forward_tile). scratch: classifier_scratch_floats(R,
// vb) floats (8-byte aligned).
size_t classifier_scratch_floats(int R, int vb);
void classifier_forward_rows(float *logp, float *lse_m, float *lse_l, float *scratch,
                             const float *x, const float *wcls, const int *targets, int R, int D,
                             int V, int vb);
// Vocabulary columns v0 .. v0+nv-1 of kept logits (R rows, stride ldl) are
// turned in place into dlogits = g_i * (onehot(target_i) - softmax_i), and
// dwcls rows v0 .. v0+nv-1 += that tile^T @ x (R, D).
void classifier_backward_tile(float *dwcls, float *logits, size_t ldl, const float *g,
                              const float *x, const int *targets, const float *lse_m,
                              const float *lse_l, int R, int D, int v0, int nv);
// dx (R, D) += dlogits (R, V; stride ldl) @ wcls, once every column of the
// rows went through classifier_backward_tile.
void classifier_backward_dx(float *dx, const float *dlogits, size_t ldl, const float *wcls, int R,
                            int D, int V);

#endif
