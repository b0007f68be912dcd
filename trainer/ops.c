// ops.c — forward/backward pairs of the decoder's ops (see ops.h for the
// shapes and the accumulate-into-gradients convention). Everything is fp32;
// matmuls go through OpenBLAS's cblas_sgemm over all N tokens at once.
#include "ops.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

void ops_rope_tables(float *cos_t, float *sin_t, int seq_len, int head_size, float theta) {
    int half = head_size / 2;
    for (int j = 0; j < half; j++) {
        // Same float expressions as run.c (head_dim = 2j there), so greedy
        // decoding with these tables reproduces run.c's ids bit for bit.
        float freq = 1.0f / powf(theta, (float)(2 * j) / (float)head_size);
        for (int pos = 0; pos < seq_len; pos++) {
            float val = (float)pos * freq;
            cos_t[(size_t)pos * half + j] = cosf(val);
            sin_t[(size_t)pos * half + j] = sinf(val);
        }
    }
}

void embedding_forward(float *out, const int *tokens, const float *emb, int N, int D) {
    for (int i = 0; i < N; i++)
        memcpy(out + (size_t)i * D, emb + (size_t)tokens[i] * D, (size_t)D * sizeof(float));
}

void embedding_backward(float *demb, const float *dout, const int *tokens, int N, int D) {
    for (int i = 0; i < N; i++) {
        float *dst = demb + (size_t)tokens[i] * D;
        const float *src = dout + (size_t)i * D;
        for (int d = 0; d < D; d++)
            dst[d] += src[d];
    }
}

void rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int N, int D,
                     float eps) {
    for (int i = 0; i < N; i++) {
        const float *xi = x + (size_t)i * D;
        float *oi = out + (size_t)i * D;
        float ss = 0.0f;
        for (int d = 0; d < D; d++)
            ss += xi[d] * xi[d];
        float r = 1.0f / sqrtf(ss / (float)D + eps);
        rstd[i] = r;
        for (int d = 0; d < D; d++)
            oi[d] = w[d] * (r * xi[d]);
    }
}

void rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                      const float *rstd, int N, int D) {
    for (int i = 0; i < N; i++) {
        const float *xi = x + (size_t)i * D;
        const float *gi = dout + (size_t)i * D;
        float *dxi = dx + (size_t)i * D;
        float r = rstd[i];
        // y = w * xhat, xhat = x * r, dr/dx = -r^3 x / D:
        // dx = r * (g*w - xhat * mean(g*w*xhat))
        float dot = 0.0f;
        for (int d = 0; d < D; d++)
            dot += gi[d] * w[d] * (xi[d] * r);
        dot /= (float)D;
        for (int d = 0; d < D; d++) {
            float xhat = xi[d] * r;
            dxi[d] += r * (gi[d] * w[d] - xhat * dot);
            if (dw) dw[d] += gi[d] * xhat;
        }
    }
}

void matmul_forward(float *out, const float *inp, const float *w, int N, int C_in, int C_out) {
    if (N == 0) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, C_out, C_in, 1.0f, inp, C_in, w, C_in,
                0.0f, out, C_out);
}

void matmul_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                     int N, int C_in, int C_out) {
    if (N == 0) return;
    if (dinp)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C_in, C_out, 1.0f, dout, C_out, w,
                    C_in, 1.0f, dinp, C_in);
    if (dw)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, C_out, C_in, N, 1.0f, dout, C_out, inp,
                    C_in, 1.0f, dw, C_in);
}

void residual_forward(float *out, const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        out[i] = a[i] + b[i];
}

void ops_positions(int *pos, const int *offsets, int n_seqs) {
    for (int s = 0; s < n_seqs; s++)
        for (int i = offsets[s]; i < offsets[s + 1]; i++)
            pos[i] = i - offsets[s];
}

// Rotates each pair by +angle (dir = 1) or -angle (dir = -1, the transpose).
static void rope_apply(float *x, const int *pos, const float *cos_t, const float *sin_t, int N,
                       int n_heads, int head_size, float dir) {
    int half = head_size / 2;
    size_t C = (size_t)n_heads * head_size;
    for (int i = 0; i < N; i++) {
        const float *c = cos_t + (size_t)pos[i] * half;
        const float *s = sin_t + (size_t)pos[i] * half;
        float *xi = x + (size_t)i * C;
        for (int h = 0; h < n_heads; h++) {
            float *xh = xi + (size_t)h * head_size;
            for (int j = 0; j < half; j++) {
                float x0 = xh[2 * j], x1 = xh[2 * j + 1];
                float sn = dir * s[j];
                xh[2 * j] = x0 * c[j] - x1 * sn;
                xh[2 * j + 1] = x0 * sn + x1 * c[j];
            }
        }
    }
}

void rope_forward(float *x, const int *pos, const float *cos_t, const float *sin_t, int N,
                  int n_heads, int head_size) {
    rope_apply(x, pos, cos_t, sin_t, N, n_heads, head_size, 1.0f);
}

void rope_backward(float *dx, const int *pos, const float *cos_t, const float *sin_t, int N,
                   int n_heads, int head_size) {
    rope_apply(dx, pos, cos_t, sin_t, N, n_heads, head_size, -1.0f);
}

size_t attention_scratch_floats(int max_T) {
    return 2 * (size_t)max_T * (size_t)max_T;
}

void attention_forward(float *out, float *row_max, float *row_inv, float *scratch, const float *q,
                       const float *k, const float *v, const int *offsets, int n_seqs, int NH,
                       int NKV, int HS) {
    int C = NH * HS, KVC = NKV * HS, group = NH / NKV;
    float scale = 1.0f / sqrtf((float)HS);
    float *S = scratch;
    for (int s = 0; s < n_seqs; s++) {
        int o = offsets[s], T = offsets[s + 1] - o;
        if (T == 0) continue;
        for (int h = 0; h < NH; h++) {
            int kh = h / group;
            const float *qh = q + (size_t)o * C + (size_t)h * HS;
            const float *kk = k + (size_t)o * KVC + (size_t)kh * HS;
            const float *vv = v + (size_t)o * KVC + (size_t)kh * HS;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, HS, scale, qh, C, kk, KVC,
                        0.0f, S, T);
            for (int i = 0; i < T; i++) {
                float *row = S + (size_t)i * T;
                float mx = row[0];
                for (int j = 1; j <= i; j++)
                    mx = row[j] > mx ? row[j] : mx;
                float sum = 0.0f;
                for (int j = 0; j <= i; j++) {
                    row[j] = expf(row[j] - mx);
                    sum += row[j];
                }
                float inv = 1.0f / sum;
                for (int j = 0; j <= i; j++)
                    row[j] *= inv;
                for (int j = i + 1; j < T; j++)
                    row[j] = 0.0f;
                row_max[(size_t)(o + i) * NH + h] = mx;
                row_inv[(size_t)(o + i) * NH + h] = inv;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, HS, T, 1.0f, S, T, vv, KVC,
                        0.0f, out + (size_t)o * C + (size_t)h * HS, C);
        }
    }
}

void attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                        const float *q, const float *k, const float *v, const float *row_max,
                        const float *row_inv, const int *offsets, int n_seqs, int NH, int NKV,
                        int HS) {
    int C = NH * HS, KVC = NKV * HS, group = NH / NKV;
    float scale = 1.0f / sqrtf((float)HS);
    for (int s = 0; s < n_seqs; s++) {
        int o = offsets[s], T = offsets[s + 1] - o;
        if (T == 0) continue;
        float *P = scratch, *dP = scratch + (size_t)T * T;
        for (int h = 0; h < NH; h++) {
            int kh = h / group;
            size_t qoff = (size_t)o * C + (size_t)h * HS, kvoff = (size_t)o * KVC + (size_t)kh * HS;
            // Recompute the forward's probabilities exactly (same sgemm, same
            // expf, same stored max and 1/sum).
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, HS, scale, q + qoff, C,
                        k + kvoff, KVC, 0.0f, P, T);
            for (int i = 0; i < T; i++) {
                float *row = P + (size_t)i * T;
                float mx = row_max[(size_t)(o + i) * NH + h];
                float inv = row_inv[(size_t)(o + i) * NH + h];
                for (int j = 0; j <= i; j++)
                    row[j] = expf(row[j] - mx) * inv;
                for (int j = i + 1; j < T; j++)
                    row[j] = 0.0f;
            }
            // dP (T, T) = dOut_h V^T
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, HS, 1.0f, dout + qoff, C,
                        v + kvoff, KVC, 0.0f, dP, T);
            // dV_kh (T, HS) += P^T dOut_h
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, HS, T, 1.0f, P, T, dout + qoff,
                        C, 1.0f, dv + kvoff, KVC);
            // softmax backward, in place: dS = P * (dP - rowsum(P * dP))
            for (int i = 0; i < T; i++) {
                const float *p = P + (size_t)i * T;
                float *g = dP + (size_t)i * T;
                float dot = 0.0f;
                for (int j = 0; j <= i; j++)
                    dot += p[j] * g[j];
                for (int j = 0; j <= i; j++)
                    g[j] = p[j] * (g[j] - dot);
                for (int j = i + 1; j < T; j++)
                    g[j] = 0.0f;
            }
            // dQ_h += scale dS K_kh; dK_kh += scale dS^T Q_h
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, HS, T, scale, dP, T,
                        k + kvoff, KVC, 1.0f, dq + qoff, C);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, HS, T, scale, dP, T, q + qoff,
                        C, 1.0f, dk + kvoff, KVC);
        }
    }
}

static inline float sigmoidf(float x) {
    return 1.0f / (1.0f + expf(-x));
}

void swiglu_forward(float *out, const float *h1, const float *h3, size_t n) {
    for (size_t i = 0; i < n; i++)
        out[i] = h1[i] * sigmoidf(h1[i]) * h3[i];
}

void swiglu_backward(float *dh1, float *dh3, const float *dout, const float *h1, const float *h3,
                     size_t n) {
    for (size_t i = 0; i < n; i++) {
        float sg = sigmoidf(h1[i]);
        float silu = h1[i] * sg;
        // d silu/dx = sg * (1 + x * (1 - sg))
        dh1[i] += dout[i] * h3[i] * sg * (1.0f + h1[i] * (1.0f - sg));
        dh3[i] += dout[i] * silu;
    }
}

void logsoftmax_gather_forward(float *logp, float *probs, const float *x, const float *wcls,
                               const int *targets, int M, int D, int V) {
    if (M == 0) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, V, D, 1.0f, x, D, wcls, D, 0.0f, probs,
                V);
    for (int i = 0; i < M; i++) {
        float *row = probs + (size_t)i * V;
        float mx = row[0];
        for (int j = 1; j < V; j++)
            mx = row[j] > mx ? row[j] : mx;
        // The sum runs in double: V can be 32000 terms.
        double sum = 0.0;
        float target_logit = row[targets[i]];
        for (int j = 0; j < V; j++) {
            row[j] = expf(row[j] - mx);
            sum += row[j];
        }
        float inv = (float)(1.0 / sum);
        for (int j = 0; j < V; j++)
            row[j] *= inv;
        logp[i] = (float)((double)target_logit - (double)mx - log(sum));
    }
}

void logsoftmax_gather_backward(float *dx, float *dwcls, float *probs, const float *dlogp,
                                const float *x, const float *wcls, const int *targets, int M, int D,
                                int V) {
    if (M == 0) return;
    for (int i = 0; i < M; i++) {
        float *row = probs + (size_t)i * V;
        float g = dlogp[i];
        for (int j = 0; j < V; j++)
            row[j] = -g * row[j];
        row[targets[i]] += g;
    }
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, D, V, 1.0f, probs, V, wcls, D,
                    1.0f, dx, D);
    if (dwcls)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, V, D, M, 1.0f, probs, V, x, D, 1.0f,
                    dwcls, D);
}
