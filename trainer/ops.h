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
#ifndef OPS_H
#define OPS_H

#include <stddef.h>

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
// dx (N, D) += ..., dw (D) += ...; dw may be NULL.
void rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                      const float *rstd, int N, int D);

// out (N, C_out) = inp (N, C_in) @ w^T, w (C_out, C_in) row-major.
void matmul_forward(float *out, const float *inp, const float *w, int N, int C_in, int C_out);
// dinp (N, C_in) += dout @ w; dw (C_out, C_in) += dout^T @ inp. Either may be NULL.
void matmul_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                     int N, int C_in, int C_out);

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

// Floats of scratch attention_forward/backward need for a longest sequence
// of max_T tokens: two (T, T) tiles.
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

// out (N, H) = silu(h1) * h3 (the elementwise part of SwiGLU; h1 = x W1^T,
// h3 = x W3^T come from matmul_forward). out may alias neither input.
void swiglu_forward(float *out, const float *h1, const float *h3, size_t n);
// dh1, dh3 (N, H) += gradients given dout (N, H).
void swiglu_backward(float *dh1, float *dh3, const float *dout, const float *h1, const float *h3,
                     size_t n);

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

#endif
