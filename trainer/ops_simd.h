// ops_simd.h — the vector kernels of ops.c, compiled once per instruction
// set: ops.c includes this file several times, each time under another
// `#pragma GCC target` and with KN(name) giving the names a per-ISA prefix,
// then picks one set at run time. Not a header of its own: no include guard,
// and it relies on the vf / VEXP / VLOOP definitions of ops.c. The bodies
// must be compiled under the target itself (GCC lowers generic vectors of a
// baseline body to scalar code, even when later cloned or inlined).

// gcc 12 spills these 64-byte vectors with aligned moves, and AddressSanitizer's
// fake stack (detect_stack_use_after_return) is not 64-byte aligned: the
// kernels keep their frames on the real stack. Their loads and stores are of
// caller buffers whose bounds the instrumented callers and tests check.
#ifndef KN_NOFAKESTACK
#if defined(__SANITIZE_ADDRESS__)
#define KN_NOFAKESTACK __attribute__((no_sanitize_address))
#else
#define KN_NOFAKESTACK
#endif
#endif
typedef float KN(vf) __attribute__((vector_size(4 * VW)));
typedef int32_t KN(vi) __attribute__((vector_size(4 * VW)));
// Half a vector of floats, and as many doubles (one register).
typedef float KN(vfh) __attribute__((vector_size(2 * VW)));
typedef double KN(vdh) __attribute__((vector_size(4 * VW)));
#define vf KN(vf)
#define vi KN(vi)
#define vfh KN(vfh)
#define vdh KN(vdh)
#define VHEAD(n) (KN(iota)() < VISPLAT(n))

// 0, 1, ..., VW-1
static KN_NOFAKESTACK vi KN(iota)(void) {
    vi v;
    memcpy(&v, k_iota, sizeof v);
    return v;
}

// Sum of the VW lanes in a fixed tree.
static KN_NOFAKESTACK float KN(lane_sum)(const vf *v) {
    float t[VW];
    memcpy(t, v, sizeof t);
    // Unrolled: a handful of straight-line vector ops, not a loop nest.
#pragma GCC unroll 8
    for (int w = VW / 2; w > 0; w /= 2)
#pragma GCC unroll 16
        for (int i = 0; i < w; i++)
            t[i] += t[i + w];
    return t[0];
}

// y = scale * exp((x - a) - b) and the sum of y. only_neg: every x - a - b is
// <= 0 or NaN (softmax arguments), so VEXP_NEG's cheaper polynomial without
// the overflow and NaN selects applies. A constant at each call, so each
// caller gets its own specialised loop.
static inline KN_NOFAKESTACK __attribute__((always_inline)) float
KN(vexp_any)(float *y, const float *x, float a, float b, float scale, int n, const int only_neg) {
    vf acc = VSPLAT(0.0f), va = VSPLAT(a), vb = VSPLAT(b), vs = VSPLAT(scale), v, e;
#define VEXP_ANY(out, in)                                                                          \
    do {                                                                                           \
        if (only_neg)                                                                              \
            VEXP_NEG(out, in);                                                                     \
        else                                                                                       \
            VEXP(out, in);                                                                         \
    } while (0)
    int j = 0;
    for (; j + VW <= n; j += VW) {
        VLOAD(v, x + j);
        VEXP_ANY(e, (v - va) - vb);
        e = e * vs;
        VSTORE(y + j, e);
        acc = acc + e;
    }
    if (j < n) {
        float buf[VW] = {0};
        int r = n - j;
        memcpy(buf, x + j, (size_t)r * sizeof(float));
        VLOAD(v, buf);
        VEXP_ANY(e, (v - va) - vb);
        e = e * vs;
        e = (vf)((vi)e & VHEAD(r));
        VSTORE(buf, e);
        memcpy(y + j, buf, (size_t)r * sizeof(float));
        acc = acc + e;
    }
#undef VEXP_ANY
    return KN(lane_sum)(&acc);
}

static KN_NOFAKESTACK float KN(vexp_neg)(float *y, const float *x, float a, float b, float scale,
                                         int n) {
    return KN(vexp_any)(y, x, a, b, scale, n, 1);
}

static KN_NOFAKESTACK float KN(vexp)(float *y, const float *x, float a, float b, float scale,
                                     int n) {
    return KN(vexp_any)(y, x, a, b, scale, n, 0);
}

static KN_NOFAKESTACK float KN(vmax)(const float *x, int n) {
    vf acc = VSPLAT(-INFINITY), v;
    int j = 0;
    for (; j + VW <= n; j += VW) {
        VLOAD(v, x + j);
        acc = VSEL(v > acc, v, acc);
    }
    if (j < n) {
        float buf[VW];
        for (int i = 0; i < VW; i++)
            buf[i] = j + i < n ? x[j + i] : -INFINITY;
        VLOAD(v, buf);
        acc = VSEL(v > acc, v, acc);
    }
    // Lanes folded in halves (a max is exact in any order; NaN lanes lose,
    // as above): log2(VW) vector steps instead of VW scalar ones, which
    // dominated the short rows of the attention softmax.
    float t[VW];
    memcpy(t, &acc, sizeof t);
#pragma GCC unroll 8
    for (int w = VW / 2; w > 0; w /= 2)
#pragma GCC unroll 16
        for (int i = 0; i < w; i++)
            t[i] = t[i + w] > t[i] ? t[i + w] : t[i];
    return t[0];
}

// sum a[j] * b[j]
static KN_NOFAKESTACK float KN(vdot)(const float *pa, const float *pb, int n) {
    vf acc = VSPLAT(0.0f);
    VLOOP((size_t)n, pa, pb, NOF, NOF, NOF, NOF, acc = acc + a * b);
    return KN(lane_sum)(&acc);
}

static KN_NOFAKESTACK void KN(rmsnorm_fwd)(float *out, float *rstd, const float *x, const float *w,
                                           int N, int D, float eps) {
    for (int i = 0; i < N; i++) {
        const float *xi = x + (size_t)i * D;
        float *oi = out + (size_t)i * D;
        float ss = KN(vdot)(xi, xi, D);
        float r = 1.0f / sqrtf(ss / (float)D + eps);
        rstd[i] = r;
        vf vr = VSPLAT(r);
        VLOOP((size_t)D, w, xi, NOF, NOF, oi, NOF, o = a * (vr * b));
    }
}

// The forward's output again from its kept rstd, with the forward's own
// expression, so the recomputed rows equal the forward's bit for bit.
static KN_NOFAKESTACK void KN(rmsnorm_apply)(float *out, const float *x, const float *w,
                                             const float *rstd, int N, int D) {
    for (int i = 0; i < N; i++) {
        const float *xi = x + (size_t)i * D;
        float *oi = out + (size_t)i * D;
        vf vr = VSPLAT(rstd[i]);
        VLOOP((size_t)D, w, xi, NOF, NOF, oi, NOF, o = a * (vr * b));
    }
}

static KN_NOFAKESTACK void KN(rmsnorm_bwd)(float *dx, float *dw, const float *dout, const float *x,
                                           const float *w, const float *rstd, int N, int D) {
    for (int i = 0; i < N; i++) {
        const float *xi = x + (size_t)i * D;
        const float *gi = dout + (size_t)i * D;
        float *dxi = dx + (size_t)i * D;
        float r = rstd[i];
        // y = w * xhat, xhat = x * r, dr/dx = -r^3 x / D:
        // dx = r * (g*w - xhat * mean(g*w*xhat)), dw = g * xhat
        vf vr = VSPLAT(r), acc = VSPLAT(0.0f);
        VLOOP((size_t)D, gi, w, xi, NOF, NOF, NOF, acc = acc + a * b * (c * vr));
        vf vd = VSPLAT(KN(lane_sum)(&acc) / (float)D);
        // a = g, b = x, c = w, d = dx
        VLOOP((size_t)D, gi, xi, w, dxi, dxi, NOF, o = d + vr * (a * c - (b * vr) * vd));
        if (dw) VLOOP((size_t)D, gi, xi, dw, NOF, dw, NOF, o = c + a * (b * vr));
    }
}

static KN_NOFAKESTACK void KN(add)(float *out, const float *pa, const float *pb, size_t n) {
    VLOOP(n, pa, pb, NOF, NOF, out, NOF, o = a + b);
}

// x *= s
static KN_NOFAKESTACK void KN(scale)(float *x, float s, int n) {
    vf vs = VSPLAT(s);
    VLOOP((size_t)n, x, NOF, NOF, NOF, x, NOF, o = a * vs);
}

// g[j] = p[j] * (g[j] - dot)
static KN_NOFAKESTACK void KN(softmax_grad)(float *g, const float *p, float dot, int n) {
    vf vd = VSPLAT(dot);
    VLOOP((size_t)n, g, p, NOF, NOF, g, NOF, o = b * (a - vd));
}

static KN_NOFAKESTACK void KN(swiglu_fwd)(float *out, const float *h1, const float *h3, size_t n) {
    VLOOP(n, h1, h3, NOF, NOF, out, NOF, {
        vf sg;
        VSIGMOID(sg, a);
        o = a * sg * b;
    });
}

static KN_NOFAKESTACK void KN(swiglu_bwd)(float *dh1, float *dh3, const float *dout,
                                          const float *h1, const float *h3, size_t n) {
    // a = h1, b = h3, c = dout, d = dh1; d silu/dx = sg * (1 + x * (1 - sg))
    VLOOP(n, h1, h3, dout, dh1, dh1, NOF, {
        vf sg;
        VSIGMOID(sg, a);
        o = d + c * b * sg * (VSPLAT(1.0f) + a * (VSPLAT(1.0f) - sg));
    });
    VLOOP(n, h1, dout, dh3, NOF, dh3, NOF, {
        vf sg;
        VSIGMOID(sg, a);
        o = c + b * (a * sg);
    });
}

// Loads every input of an element before the first store, so prod, dh1 and
// dh3 may be written over the inputs.
static KN_NOFAKESTACK void KN(swiglu_bwd_inplace)(float *prod, float *h1, float *h3,
                                                  const float *dout, size_t n) {
    vf a, b, c, sg, p, g1, g3;
    size_t j = 0;
    float t[6][VW];
    for (;;) {
        size_t r = n - j < VW ? n - j : VW;
        if (r == 0) break;
        const float *pa = h1 + j, *pb = h3 + j, *pc = dout + j;
        if (r < VW) {
            memset(t, 0, sizeof t);
            memcpy(t[0], pa, r * sizeof(float));
            memcpy(t[1], pb, r * sizeof(float));
            memcpy(t[2], pc, r * sizeof(float));
            pa = t[0], pb = t[1], pc = t[2];
        }
        VLOAD(a, pa);
        VLOAD(b, pb);
        VLOAD(c, pc);
        VSIGMOID(sg, a);
        p = a * sg * b;
        g1 = c * b * sg * (VSPLAT(1.0f) + a * (VSPLAT(1.0f) - sg));
        g3 = c * (a * sg);
        if (r == VW) {
            VSTORE(prod + j, p);
            VSTORE(h1 + j, g1);
            VSTORE(h3 + j, g3);
        } else {
            VSTORE(t[3], p);
            VSTORE(t[4], g1);
            VSTORE(t[5], g3);
            memcpy(prod + j, t[3], r * sizeof(float));
            memcpy(h1 + j, t[4], r * sizeof(float));
            memcpy(h3 + j, t[5], r * sizeof(float));
        }
        j += r;
    }
}

// ---------------------------------------------------------------------------
// Fused causal attention of one (sequence, head). Query rows go ATT_RB at a
// time; a block's keys are 0 .. its last row, in chunks of VW. Layouts in
// scratch (Tp = T rounded up to VW, HSP = HS rounded up to VW, zero padded):
// Kt, Vt (HS, Tp) for products vectorised over keys (scores, dP, dK, dV) and
// Vp, Kp (Tp, HSP) for products vectorised over the head dimension (P V,
// dS K). No sgemm: these tiles are too small for its call and packing
// overhead, and the causal mask costs nothing beyond the last chunk.

// dst (HS, Tp) = src (T rows, stride ld, HS columns) transposed, zero padded.
static KN_NOFAKESTACK void KN(att_transpose)(float *dst, const float *src, size_t ld, int T, int Tp,
                                             int HS) {
    for (int d = 0; d < HS; d++) {
        float *row = dst + (size_t)d * Tp;
        for (int j = 0; j < T; j++)
            row[j] = src[(size_t)j * ld + d];
        for (int j = T; j < Tp; j++)
            row[j] = 0.0f;
    }
}

// dst (Tp, HSP) = src rows, zero padded.
static KN_NOFAKESTACK void KN(att_pad)(float *dst, const float *src, size_t ld, int T, int Tp,
                                       int HS, int HSP) {
    for (int j = 0; j < Tp; j++) {
        float *row = dst + (size_t)j * HSP;
        if (j < T)
            memcpy(row, src + (size_t)j * ld, (size_t)HS * sizeof(float));
        else
            memset(row, 0, (size_t)HS * sizeof(float));
        memset(row + HS, 0, (size_t)(HSP - HS) * sizeof(float));
    }
}

// S[r][j] = scale * sum_d x[r][d] * Yt[d][j] for the ATT_RB rows x[r] and
// j < nch * VW (S row stride ldS).
static KN_NOFAKESTACK void KN(att_rowsxt)(float *S, size_t ldS, const float *const *x,
                                          const float *Yt, int Tp, int HS, int nch, float scale) {
    vf vs = VSPLAT(scale);
    int c = 0;
    for (; c + 2 <= nch; c += 2) {
        vf a0[ATT_RB], a1[ATT_RB];
#pragma GCC unroll 8
        for (int r = 0; r < ATT_RB; r++)
            a0[r] = VSPLAT(0.0f), a1[r] = VSPLAT(0.0f);
        const float *y = Yt + (size_t)c * VW;
        for (int d = 0; d < HS; d++, y += Tp) {
            vf y0, y1;
            VLOAD(y0, y);
            VLOAD(y1, y + VW);
#pragma GCC unroll 8
            for (int r = 0; r < ATT_RB; r++) {
                vf xb = VSPLAT(x[r][d]);
                a0[r] = VFMA(xb, y0, a0[r]);
                a1[r] = VFMA(xb, y1, a1[r]);
            }
        }
#pragma GCC unroll 8
        for (int r = 0; r < ATT_RB; r++) {
            a0[r] = a0[r] * vs, a1[r] = a1[r] * vs;
            VSTORE(S + r * ldS + (size_t)c * VW, a0[r]);
            VSTORE(S + r * ldS + (size_t)c * VW + VW, a1[r]);
        }
    }
    if (c < nch) {
        vf a0[ATT_RB];
#pragma GCC unroll 8
        for (int r = 0; r < ATT_RB; r++)
            a0[r] = VSPLAT(0.0f);
        const float *y = Yt + (size_t)c * VW;
        for (int d = 0; d < HS; d++, y += Tp) {
            vf y0;
            VLOAD(y0, y);
#pragma GCC unroll 8
            for (int r = 0; r < ATT_RB; r++)
                a0[r] = VFMA(VSPLAT(x[r][d]), y0, a0[r]);
        }
#pragma GCC unroll 8
        for (int r = 0; r < ATT_RB; r++) {
            a0[r] = a0[r] * vs;
            VSTORE(S + r * ldS + (size_t)c * VW, a0[r]);
        }
    }
}

// out[r][:] (HSP floats, stride HSP) = sum_{j < kend} P[r][j] * Yp[j][:].
static KN_NOFAKESTACK void KN(att_rowsp)(float *out, const float *P, size_t ldP, const float *Yp,
                                         int HSP, int kend) {
    for (int dc = 0; dc < HSP; dc += 2 * VW) {
        int two = dc + VW < HSP;
        vf a0[ATT_RB], a1[ATT_RB];
#pragma GCC unroll 8
        for (int r = 0; r < ATT_RB; r++)
            a0[r] = VSPLAT(0.0f), a1[r] = VSPLAT(0.0f);
        const float *y = Yp + dc;
        if (two) {
            for (int j = 0; j < kend; j++, y += HSP) {
                vf y0, y1;
                VLOAD(y0, y);
                VLOAD(y1, y + VW);
#pragma GCC unroll 8
                for (int r = 0; r < ATT_RB; r++) {
                    vf pb = VSPLAT(P[r * ldP + j]);
                    a0[r] = VFMA(pb, y0, a0[r]);
                    a1[r] = VFMA(pb, y1, a1[r]);
                }
            }
        } else {
            for (int j = 0; j < kend; j++, y += HSP) {
                vf y0;
                VLOAD(y0, y);
#pragma GCC unroll 8
                for (int r = 0; r < ATT_RB; r++)
                    a0[r] = VFMA(VSPLAT(P[r * ldP + j]), y0, a0[r]);
            }
        }
#pragma GCC unroll 8
        for (int r = 0; r < ATT_RB; r++) {
            VSTORE(out + (size_t)r * HSP + dc, a0[r]);
            if (two) VSTORE(out + (size_t)r * HSP + dc + VW, a1[r]);
        }
    }
}

// Acc[d][j] += sum_r G[r][j] * x[r][d] for j < nch * VW (Acc stride Tp).
// Four rows of Acc at a time: four independent FMA chains.
static KN_NOFAKESTACK void KN(att_accxt)(float *Acc, int Tp, const float *G, size_t ldG,
                                         const float *const *x, int HS, int nch) {
    for (int c = 0; c < nch; c++) {
        vf g[ATT_RB];
#pragma GCC unroll 8
        for (int r = 0; r < ATT_RB; r++)
            VLOAD(g[r], G + r * ldG + (size_t)c * VW);
        float *acc = Acc + (size_t)c * VW;
        int d = 0;
        for (; d + 4 <= HS; d += 4) {
            vf a0, a1, a2, a3;
            float *p = acc + (size_t)d * Tp;
            VLOAD(a0, p);
            VLOAD(a1, p + Tp);
            VLOAD(a2, p + 2 * (size_t)Tp);
            VLOAD(a3, p + 3 * (size_t)Tp);
#pragma GCC unroll 8
            for (int r = 0; r < ATT_RB; r++) {
                a0 = VFMA(VSPLAT(x[r][d]), g[r], a0);
                a1 = VFMA(VSPLAT(x[r][d + 1]), g[r], a1);
                a2 = VFMA(VSPLAT(x[r][d + 2]), g[r], a2);
                a3 = VFMA(VSPLAT(x[r][d + 3]), g[r], a3);
            }
            VSTORE(p, a0);
            VSTORE(p + Tp, a1);
            VSTORE(p + 2 * (size_t)Tp, a2);
            VSTORE(p + 3 * (size_t)Tp, a3);
        }
        for (; d < HS; d++) {
            vf a;
            float *p = acc + (size_t)d * Tp;
            VLOAD(a, p);
#pragma GCC unroll 8
            for (int r = 0; r < ATT_RB; r++)
                a = VFMA(VSPLAT(x[r][d]), g[r], a);
            VSTORE(p, a);
        }
    }
}

static KN_NOFAKESTACK size_t KN(att_scratch)(int T, int HS) {
    size_t Tp = ((size_t)T + VW - 1) / VW * VW, HSP = ((size_t)HS + VW - 1) / VW * VW;
    return 4 * (size_t)HS * Tp + Tp * HSP + 2 * ATT_RB * Tp + ATT_RB * HSP + HSP;
}

static KN_NOFAKESTACK void KN(att_fwd)(float *out, float *row_max, float *row_inv, float *scratch,
                                       const float *q, const float *k, const float *v, int o, int T,
                                       int h, int NH, int NKV, int HS) {
    int C = NH * HS, KVC = NKV * HS, kh = h / (NH / NKV);
    int Tp = (T + VW - 1) / VW * VW, HSP = (HS + VW - 1) / VW * VW;
    float scale = 1.0f / sqrtf((float)HS);
    const float *qh = q + (size_t)o * C + (size_t)h * HS;
    float *Kt = scratch, *Vp = Kt + (size_t)HS * Tp, *S = Vp + (size_t)Tp * HSP;
    float *ob = S + (size_t)ATT_RB * Tp, *zero = ob + (size_t)ATT_RB * HSP;
    memset(zero, 0, (size_t)HSP * sizeof(float));
    KN(att_transpose)(Kt, k + (size_t)o * KVC + (size_t)kh * HS, (size_t)KVC, T, Tp, HS);
    KN(att_pad)(Vp, v + (size_t)o * KVC + (size_t)kh * HS, (size_t)KVC, T, Tp, HS, HSP);
    for (int i0 = 0; i0 < T; i0 += ATT_RB) {
        int nr = T - i0 < ATT_RB ? T - i0 : ATT_RB, kend = i0 + nr, nch = (kend + VW - 1) / VW;
        const float *x[ATT_RB];
        for (int r = 0; r < ATT_RB; r++)
            x[r] = r < nr ? qh + (size_t)(i0 + r) * C : zero;
        KN(att_rowsxt)(S, (size_t)Tp, x, Kt, Tp, HS, nch, scale);
        for (int r = 0; r < ATT_RB; r++) {
            float *row = S + (size_t)r * Tp;
            int len = i0 + r + 1;
            if (r >= nr) {
                memset(row, 0, (size_t)nch * VW * sizeof(float));
                continue;
            }
            for (int j = len; j < nch * VW; j++)
                row[j] = -INFINITY;
            float mx = KN(vmax)(row, nch * VW);
            float inv = 1.0f / KN(vexp_neg)(row, row, mx, 0.0f, 1.0f, nch * VW);
            size_t st = (size_t)(o + i0 + r) * NH + h;
            row_max[st] = mx;
            row_inv[st] = inv;
        }
        // out = (exp(S - max) V) * inv
        KN(att_rowsp)(ob, S, (size_t)Tp, Vp, HSP, kend);
        for (int r = 0; r < nr; r++) {
            float inv = row_inv[(size_t)(o + i0 + r) * NH + h];
            float *dst = out + (size_t)(o + i0 + r) * C + (size_t)h * HS;
            const float *src = ob + (size_t)r * HSP;
            for (int d = 0; d < HS; d++)
                dst[d] = src[d] * inv;
        }
    }
}

// Backward of one (sequence, kv head) over its group of query heads; dq,
// dk, dv accumulate (+=), or with assign are overwritten. Each dq row of a
// head is stored after the last read of that dout row and dk, dv after k
// and v were copied to scratch, so with assign dq may alias dout, dk k and
// dv v.
static KN_NOFAKESTACK void KN(att_bwd)(float *dq, float *dk, float *dv, float *scratch,
                                       const float *dout, const float *q, const float *k,
                                       const float *v, const float *row_max, const float *row_inv,
                                       int o, int T, int kh, int NH, int NKV, int HS, int assign) {
    int C = NH * HS, KVC = NKV * HS, group = NH / NKV;
    int Tp = (T + VW - 1) / VW * VW, HSP = (HS + VW - 1) / VW * VW;
    float scale = 1.0f / sqrtf((float)HS);
    size_t kvoff = (size_t)o * KVC + (size_t)kh * HS;
    float *Kt = scratch, *Vt = Kt + (size_t)HS * Tp, *dKt = Vt + (size_t)HS * Tp;
    float *dVt = dKt + (size_t)HS * Tp, *Kp = dVt + (size_t)HS * Tp;
    float *P = Kp + (size_t)Tp * HSP, *dP = P + (size_t)ATT_RB * Tp;
    float *ob = dP + (size_t)ATT_RB * Tp, *zrow = ob + (size_t)ATT_RB * HSP;
    memset(zrow, 0, (size_t)HSP * sizeof(float)); // stands in for missing rows
    KN(att_transpose)(Kt, k + kvoff, (size_t)KVC, T, Tp, HS);
    KN(att_transpose)(Vt, v + kvoff, (size_t)KVC, T, Tp, HS);
    KN(att_pad)(Kp, k + kvoff, (size_t)KVC, T, Tp, HS, HSP);
    memset(dKt, 0, 2 * (size_t)HS * Tp * sizeof(float));
    for (int h = kh * group; h < (kh + 1) * group; h++) {
        const float *qh = q + (size_t)o * C + (size_t)h * HS;
        const float *gh = dout + (size_t)o * C + (size_t)h * HS;
        for (int i0 = 0; i0 < T; i0 += ATT_RB) {
            int nr = T - i0 < ATT_RB ? T - i0 : ATT_RB, kend = i0 + nr;
            int nch = (kend + VW - 1) / VW, w = nch * VW;
            const float *xq[ATT_RB], *xg[ATT_RB];
            for (int r = 0; r < ATT_RB; r++) {
                xq[r] = r < nr ? qh + (size_t)(i0 + r) * C : zrow;
                xg[r] = r < nr ? gh + (size_t)(i0 + r) * C : zrow;
            }
            // The forward's probabilities, then dP = dOut V^T.
            KN(att_rowsxt)(P, (size_t)Tp, xq, Kt, Tp, HS, nch, scale);
            KN(att_rowsxt)(dP, (size_t)Tp, xg, Vt, Tp, HS, nch, 1.0f);
            for (int r = 0; r < ATT_RB; r++) {
                float *p = P + (size_t)r * Tp, *g = dP + (size_t)r * Tp;
                if (r >= nr) {
                    memset(p, 0, (size_t)w * sizeof(float));
                    memset(g, 0, (size_t)w * sizeof(float));
                    continue;
                }
                int len = i0 + r + 1;
                for (int j = len; j < w; j++)
                    p[j] = -INFINITY;
                size_t st = (size_t)(o + i0 + r) * NH + h;
                KN(vexp_neg)(p, p, row_max[st], 0.0f, row_inv[st], w);
                // dS = P * (dP - rowsum(P * dP)), 0 where P is masked
                KN(softmax_grad)(g, p, KN(vdot)(p, g, w), w);
            }
            // dV += P^T dOut, dK += dS^T Q (scaled at the end), dQ += scale dS K
            KN(att_accxt)(dVt, Tp, P, (size_t)Tp, xg, HS, nch);
            KN(att_accxt)(dKt, Tp, dP, (size_t)Tp, xq, HS, nch);
            KN(att_rowsp)(ob, dP, (size_t)Tp, Kp, HSP, kend);
            for (int r = 0; r < nr; r++) {
                float *dst = dq + (size_t)(o + i0 + r) * C + (size_t)h * HS;
                const float *src = ob + (size_t)r * HSP;
                if (assign)
                    for (int d = 0; d < HS; d++)
                        dst[d] = scale * src[d];
                else
                    for (int d = 0; d < HS; d++)
                        dst[d] += scale * src[d];
            }
        }
    }
    for (int j = 0; j < T; j++) {
        float *dkj = dk + kvoff + (size_t)j * KVC, *dvj = dv + kvoff + (size_t)j * KVC;
        if (assign) {
            for (int d = 0; d < HS; d++) {
                dkj[d] = scale * dKt[(size_t)d * Tp + j];
                dvj[d] = dVt[(size_t)d * Tp + j];
            }
        } else {
            for (int d = 0; d < HS; d++) {
                dkj[d] += scale * dKt[(size_t)d * Tp + j];
                dvj[d] += dVt[(size_t)d * Tp + j];
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Optimizer kernels (optim.c).

// One AdamW update of n elements in torch 1.13's order and rounding (optim.c
// explains it). Every step is one correctly rounded IEEE operation (VFMA_EXACT
// a single-rounding fused multiply-add, VSQRT a correctly rounded square
// root), so every set gives the scalar fmaf formula's result bit for bit.
static KN_NOFAKESTACK void KN(adamw)(float *p, const float *g, float *m, float *v, size_t n,
                                     const OpsAdamW *c) {
    vf decay = VSPLAT(c->decay), b1 = VSPLAT(c->beta1), omb1 = VSPLAT(c->one_minus_beta1);
    vf b2 = VSPLAT(c->beta2), omb2 = VSPLAT(c->one_minus_beta2), bc2 = VSPLAT(c->bc2_sqrt);
    vf eps = VSPLAT(c->eps), nstep = VSPLAT(c->neg_step);
    float t[4][VW];
    for (size_t j = 0; j < n; j += VW) {
        size_t r = n - j < VW ? n - j : VW;
        const float *pp = p + j, *pg = g + j, *pm = m + j, *pv = v + j;
        if (r < VW) {
            // Zero padding: sqrt(0) / bc2 + eps > 0, so the padded lanes stay finite.
            memset(t, 0, sizeof t);
            memcpy(t[0], pp, r * sizeof(float));
            memcpy(t[1], pg, r * sizeof(float));
            memcpy(t[2], pm, r * sizeof(float));
            memcpy(t[3], pv, r * sizeof(float));
            pp = t[0], pg = t[1], pm = t[2], pv = t[3];
        }
        vf gv, pw, mv, vv, mi, vi2, sq, denom;
        VLOAD(gv, pg);
        VLOAD(pw, pp);
        VLOAD(mv, pm);
        VLOAD(vv, pv);
        // param.mul_(1 - lr * wd)
        pw = pw * decay;
        // exp_avg.mul_(b1).add_(g, 1 - b1)
        VFMA_EXACT(mi, gv, omb1, mv * b1);
        // exp_avg_sq.mul_(b2).addcmul_(g, g, 1 - b2)
        VFMA_EXACT(vi2, omb2 * gv, gv, vv * b2);
        // denom = (exp_avg_sq.sqrt() / bc2_sqrt).add_(eps)
        VSQRT(sq, vi2);
        denom = sq / bc2 + eps;
        // param.addcdiv_(exp_avg, denom, -step_size)
        pw = pw + nstep * mi / denom;
        if (r == VW) {
            VSTORE(p + j, pw);
            VSTORE(m + j, mi);
            VSTORE(v + j, vi2);
        } else {
            VSTORE(t[0], pw);
            VSTORE(t[1], mi);
            VSTORE(t[2], vi2);
            memcpy(p + j, t[0], r * sizeof(float));
            memcpy(m + j, t[1], r * sizeof(float));
            memcpy(v + j, t[2], r * sizeof(float));
        }
    }
}

// sum x[j]^2 in double: each square is exact in double (48 significant
// bits). The low and high halves of each vector convert to two double
// vectors of one register each (a VW-double generic vector would live on
// the stack), accumulated in element order and added in a fixed tree at the
// end; the tail goes through a zero-padded copy.
static KN_NOFAKESTACK double KN(sumsq)(const float *x, size_t n) {
    vdh acc0 = {0}, acc1 = {0};
    vfh lo, hi;
    size_t j = 0;
    for (; j + VW <= n; j += VW) {
        memcpy(&lo, x + j, sizeof lo);
        memcpy(&hi, x + j + VW / 2, sizeof hi);
        vdh d0 = __builtin_convertvector(lo, vdh), d1 = __builtin_convertvector(hi, vdh);
        acc0 = acc0 + d0 * d0;
        acc1 = acc1 + d1 * d1;
    }
    if (j < n) {
        float buf[VW] = {0};
        memcpy(buf, x + j, (n - j) * sizeof(float));
        memcpy(&lo, buf, sizeof lo);
        memcpy(&hi, buf + VW / 2, sizeof hi);
        vdh d0 = __builtin_convertvector(lo, vdh), d1 = __builtin_convertvector(hi, vdh);
        acc0 = acc0 + d0 * d0;
        acc1 = acc1 + d1 * d1;
    }
    double t[VW];
    memcpy(t, &acc0, sizeof acc0);
    memcpy(t + VW / 2, &acc1, sizeof acc1);
    for (int w = VW / 2; w > 0; w /= 2)
        for (int i = 0; i < w; i++)
            t[i] += t[i + w];
    return t[0];
}

#undef VHEAD
#undef vf
#undef vi
#undef vfh
#undef vdh
