// ops_simd.h — the vector kernels of ops.c, compiled once per instruction
// set: ops.c includes this file several times, each time under another
// `#pragma GCC target` and with KN(name) giving the names a per-ISA prefix,
// then picks one set at run time. Not a header of its own: no include guard,
// and it relies on the vf / VEXP / VLOOP definitions of ops.c. The bodies
// must be compiled under the target itself (GCC lowers generic vectors of a
// baseline body to scalar code, even when later cloned or inlined).

typedef float KN(vf) __attribute__((vector_size(4 * VW)));
typedef int32_t KN(vi) __attribute__((vector_size(4 * VW)));
#define vf KN(vf)
#define vi KN(vi)
#define VHEAD(n) (KN(iota)() < VISPLAT(n))

// 0, 1, ..., VW-1
static vi KN(iota)(void) {
    vi v;
    memcpy(&v, k_iota, sizeof v);
    return v;
}

// Sum of the VW lanes in a fixed tree.
static float KN(lane_sum)(const vf *v) {
    float t[VW];
    memcpy(t, v, sizeof t);
    for (int w = VW / 2; w > 0; w /= 2)
        for (int i = 0; i < w; i++)
            t[i] += t[i + w];
    return t[0];
}

// vexp for x - a - b <= 0 or NaN (softmax): no overflow handling needed;
// NaN propagates through the arithmetic, -inf gives 0.
static float KN(vexp_neg)(float *y, const float *x, float a, float b, float scale, int n) {
    vf acc = VSPLAT(0.0f), va = VSPLAT(a), vb = VSPLAT(b), vs = VSPLAT(scale), v, e;
    int j = 0;
    for (; j + VW <= n; j += VW) {
        VLOAD(v, x + j);
        VEXP_NEG(e, (v - va) - vb);
        e = e * vs;
        VSTORE(y + j, e);
        acc = acc + e;
    }
    if (j < n) {
        float buf[VW] = {0};
        int r = n - j;
        memcpy(buf, x + j, (size_t)r * sizeof(float));
        VLOAD(v, buf);
        VEXP_NEG(e, (v - va) - vb);
        e = e * vs;
        e = (vf)((vi)e & VHEAD(r));
        VSTORE(buf, e);
        memcpy(y + j, buf, (size_t)r * sizeof(float));
        acc = acc + e;
    }
    return KN(lane_sum)(&acc);
}

static float KN(vexp)(float *y, const float *x, float a, float b, float scale, int n) {
    vf acc = VSPLAT(0.0f), va = VSPLAT(a), vb = VSPLAT(b), vs = VSPLAT(scale), v, e;
    int j = 0;
    for (; j + VW <= n; j += VW) {
        VLOAD(v, x + j);
        VEXP(e, (v - va) - vb);
        e = e * vs;
        VSTORE(y + j, e);
        acc = acc + e;
    }
    if (j < n) {
        float buf[VW] = {0};
        int r = n - j;
        memcpy(buf, x + j, (size_t)r * sizeof(float));
        VLOAD(v, buf);
        VEXP(e, (v - va) - vb);
        e = e * vs;
        e = (vf)((vi)e & VHEAD(r));
        VSTORE(buf, e);
        memcpy(y + j, buf, (size_t)r * sizeof(float));
        acc = acc + e;
    }
    return KN(lane_sum)(&acc);
}

static float KN(vmax)(const float *x, int n) {
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
    float t[VW], m = -INFINITY;
    memcpy(t, &acc, sizeof t);
    for (int i = 0; i < VW; i++)
        m = t[i] > m ? t[i] : m;
    return m;
}

// sum a[j] * b[j]
static float KN(vdot)(const float *pa, const float *pb, int n) {
    vf acc = VSPLAT(0.0f);
    VLOOP((size_t)n, pa, pb, NOF, NOF, NOF, NOF, acc = acc + a * b);
    return KN(lane_sum)(&acc);
}

static void KN(rmsnorm_fwd)(float *out, float *rstd, const float *x, const float *w, int N, int D,
                            float eps) {
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

static void KN(rmsnorm_bwd)(float *dx, float *dw, const float *dout, const float *x,
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

static void KN(add)(float *out, const float *pa, const float *pb, size_t n) {
    VLOOP(n, pa, pb, NOF, NOF, out, NOF, o = a + b);
}

// x *= s
static void KN(scale)(float *x, float s, int n) {
    vf vs = VSPLAT(s);
    VLOOP((size_t)n, x, NOF, NOF, NOF, x, NOF, o = a * vs);
}

// d += g * (u - v)
static void KN(diff_axpy)(float *dst, float g, const float *u, const float *v, int n) {
    vf vg = VSPLAT(g);
    VLOOP((size_t)n, dst, u, v, NOF, dst, NOF, o = a + vg * (b - c));
}

// g[j] = p[j] * (g[j] - dot)
static void KN(softmax_grad)(float *g, const float *p, float dot, int n) {
    vf vd = VSPLAT(dot);
    VLOOP((size_t)n, g, p, NOF, NOF, g, NOF, o = b * (a - vd));
}

static void KN(swiglu_fwd)(float *out, const float *h1, const float *h3, size_t n) {
    VLOOP(n, h1, h3, NOF, NOF, out, NOF, {
        vf sg;
        VSIGMOID(sg, a);
        o = a * sg * b;
    });
}

static void KN(swiglu_bwd)(float *dh1, float *dh3, const float *dout, const float *h1,
                           const float *h3, size_t n) {
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
static void KN(swiglu_bwd_inplace)(float *prod, float *h1, float *h3, const float *dout,
                                   size_t n) {
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
static void KN(att_transpose)(float *dst, const float *src, size_t ld, int T, int Tp, int HS) {
    for (int d = 0; d < HS; d++) {
        float *row = dst + (size_t)d * Tp;
        for (int j = 0; j < T; j++)
            row[j] = src[(size_t)j * ld + d];
        for (int j = T; j < Tp; j++)
            row[j] = 0.0f;
    }
}

// dst (Tp, HSP) = src rows, zero padded.
static void KN(att_pad)(float *dst, const float *src, size_t ld, int T, int Tp, int HS, int HSP) {
    for (int j = 0; j < Tp; j++) {
        float *row = dst + (size_t)j * HSP;
        if (j < T) memcpy(row, src + (size_t)j * ld, (size_t)HS * sizeof(float));
        else memset(row, 0, (size_t)HS * sizeof(float));
        memset(row + HS, 0, (size_t)(HSP - HS) * sizeof(float));
    }
}

// S[r][j] = scale * sum_d x[r][d] * Yt[d][j] for the ATT_RB rows x[r] and
// j < nch * VW (S row stride ldS).
static void KN(att_rowsxt)(float *S, size_t ldS, const float *const *x, const float *Yt, int Tp,
                           int HS, int nch, float scale) {
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
static void KN(att_rowsp)(float *out, const float *P, size_t ldP, const float *Yp, int HSP,
                          int kend) {
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
static void KN(att_accxt)(float *Acc, int Tp, const float *G, size_t ldG, const float *const *x,
                          int HS, int nch) {
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

static size_t KN(att_scratch)(int T, int HS) {
    size_t Tp = ((size_t)T + VW - 1) / VW * VW, HSP = ((size_t)HS + VW - 1) / VW * VW;
    return 4 * (size_t)HS * Tp + Tp * HSP + 2 * ATT_RB * Tp + ATT_RB * HSP + HSP;
}

static void KN(att_fwd)(float *out, float *row_max, float *row_inv, float *scratch, const float *q,
                        const float *k, const float *v, int o, int T, int h, int NH, int NKV,
                        int HS) {
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
// dk, dv accumulate (+=).
static void KN(att_bwd)(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                        const float *q, const float *k, const float *v, const float *row_max,
                        const float *row_inv, int o, int T, int kh, int NH, int NKV, int HS) {
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
                for (int d = 0; d < HS; d++)
                    dst[d] += scale * src[d];
            }
        }
    }
    for (int j = 0; j < T; j++) {
        float *dkj = dk + kvoff + (size_t)j * KVC, *dvj = dv + kvoff + (size_t)j * KVC;
        for (int d = 0; d < HS; d++) {
            dkj[d] += scale * dKt[(size_t)d * Tp + j];
            dvj[d] += dVt[(size_t)d * Tp + j];
        }
    }
}

#undef VHEAD
#undef vf
#undef vi
