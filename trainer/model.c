// model.c — the Llama decoder of model.h: configuration checks, the flat
// parameter layout, seeded initialisation and forward/backward over a packed
// batch, built from the op pairs of ops.c.
//
// Activations (per layer, N tokens of the batch; kept only with
// keep_activations, otherwise one slot is reused by every layer and the
// token-local ones live in per-thread scratch):
//   res_in (N,D) rstd1 (N) q (N,D) k (N,KVD) v (N,KVD) att_max (N,NH)
//   att_inv (N,NH) att (N,D) res_mid (N,D) rstd2 (N) h1 (N,H) h3 (N,H)
// plus res_out (N,D), rstdf (N) after the last layer and, for the M rows with
// a target, their normed inputs xg (M,D), softmax max and log-sum (M each)
// and, kept, their gradient dxg (M,D). A forward-only slot has no res_mid,
// h1, h3; its attention output is written over q and the last layer's
// output over res_in (both dead by then).
// The normed inputs of the layers (rmsnorm outputs) are not kept: the
// backward recomputes them from res_in / res_mid and the kept rstd, bit for
// bit (rmsnorm_apply). Attention probabilities are NOT stored: the forward
// keeps each row's max and 1/sum of exp, and the backward recomputes them
// block by block, so memory stays O(N) instead of O(sum T^2 * NH * L). The SwiGLU product
// silu(h1)*h3 is likewise recomputed. The classifier never holds an (M, V)
// buffer either: a forward runs an online softmax over vocabulary tiles.
// For training, model_forward_grouped keeps the logits of one group of
// sequences at a time (a DPO pair: its loss is known once both sequences'
// log-probs are), asks the caller for the group's dL/dlogp and forms the
// classifier's gradients (dwcls, dxg) from the kept logits right away: three
// M x V x D matmuls, as torch does with its whole (M, V) logits. A plain
// model_backward recomputes the logits instead, block by block (four).
//
// The backward consumes the activations (as torch frees its graph after
// backward), using those it has read as its working memory: dh1, dh3 are
// written over h1, h3, datt over res_mid, then dq over datt, dk over k and
// dv over v, and the (N, D) gradient of the residual stream over res_out,
// updated in place from the classifier down to the embedding. Apart from
// them it holds two slots of chunk_rows_of rows for the weight gradients: each
// weight gradient accumulates over the batch one chunk at a time, in chunk
// order, while the row blocks of the next chunk run (see task_ffn_backward),
// so no other (N, *) buffer exists and the result does not depend on the
// thread count.
//
// Parallelism: every op runs in regions of independent tasks on the model's
// own pool (see the task functions below) with single-threaded OpenBLAS, so
// small matmuls, attention and element-wise work all use every thread and
// nothing is oversubscribed.
#include "model.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "ops.h"

// Upper bounds that no CPU-trainable model reaches; they keep every size
// product far from overflow and reject garbage headers early.
#define MAX_DIM (1 << 16)
#define MAX_HIDDEN (1 << 18)
#define MAX_LAYERS 1024
#define MAX_VOCAB (1 << 24)
#define MAX_SEQ_LEN (1 << 20)

static int mul_sz(size_t a, size_t b, size_t *out) {
    return __builtin_mul_overflow(a, b, out) ? -1 : 0;
}

static int add_sz(size_t a, size_t b, size_t *out) {
    return __builtin_add_overflow(a, b, out) ? -1 : 0;
}

// Sizes of every tensor in flat order; count 11 or 12 (wcls when unshared).
typedef struct {
    const char *name;
    size_t count;
    int decay;
} TensorSpec;

static int tensor_specs(const ModelConfig *c, TensorSpec *s) {
    size_t V = (size_t)c->vocab_size, D = (size_t)c->dim, H = (size_t)c->hidden_dim;
    size_t L = (size_t)c->n_layers;
    size_t KVD = (size_t)c->n_kv_heads * (D / (size_t)c->n_heads);
    int n = 0;
    s[n++] = (TensorSpec){"tok_emb", V * D, 1};
    s[n++] = (TensorSpec){"rms_att", L * D, 0};
    s[n++] = (TensorSpec){"wq", L * D * D, 1};
    s[n++] = (TensorSpec){"wk", L * KVD * D, 1};
    s[n++] = (TensorSpec){"wv", L * KVD * D, 1};
    s[n++] = (TensorSpec){"wo", L * D * D, 1};
    s[n++] = (TensorSpec){"rms_ffn", L * D, 0};
    s[n++] = (TensorSpec){"w1", L * H * D, 1};
    s[n++] = (TensorSpec){"w2", L * D * H, 1};
    s[n++] = (TensorSpec){"w3", L * H * D, 1};
    s[n++] = (TensorSpec){"rms_final", D, 0};
    if (!c->shared_classifier) s[n++] = (TensorSpec){"wcls", V * D, 1};
    return n;
}

int model_config_validate(const ModelConfig *c, BsError *err) {
    struct {
        const char *name;
        int value, max;
    } f[] = {
        {"dim", c->dim, MAX_DIM},
        {"hidden_dim", c->hidden_dim, MAX_HIDDEN},
        {"n_layers", c->n_layers, MAX_LAYERS},
        {"n_heads", c->n_heads, MAX_DIM},
        {"n_kv_heads", c->n_kv_heads, MAX_DIM},
        {"vocab_size", c->vocab_size, MAX_VOCAB},
        {"seq_len", c->seq_len, MAX_SEQ_LEN},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        if (f[i].value <= 0 || f[i].value > f[i].max)
            return bs_fail(err, "model_invalid", f[i].name, "model %s is %d, must be in 1..%d",
                           f[i].name, f[i].value, f[i].max);
    }
    if (c->dim % c->n_heads != 0)
        return bs_fail(err, "model_invalid", "n_heads", "dim %d is not divisible by n_heads %d",
                       c->dim, c->n_heads);
    if (c->n_kv_heads > c->n_heads || c->n_heads % c->n_kv_heads != 0)
        return bs_fail(err, "model_invalid", "n_kv_heads", "n_kv_heads %d must divide n_heads %d",
                       c->n_kv_heads, c->n_heads);
    if ((c->dim / c->n_heads) % 2 != 0)
        return bs_fail(err, "model_invalid", "n_heads",
                       "head size %d (dim / n_heads) must be even for RoPE", c->dim / c->n_heads);
    if (c->shared_classifier != 0 && c->shared_classifier != 1)
        return bs_fail(err, "model_invalid", "shared_classifier",
                       "shared_classifier must be 0 or 1");
    if (!(isfinite(c->norm_eps) && c->norm_eps > 0.0f))
        return bs_fail(err, "model_invalid", "norm_eps", "norm_eps must be finite and > 0");
    if (!(isfinite(c->rope_theta) && c->rope_theta > 0.0f))
        return bs_fail(err, "model_invalid", "rope_theta", "rope_theta must be finite and > 0");
    // The caps bound each product below 2^50 on their own; check the sum
    // (and its byte size) anyway so a later cap change cannot overflow.
    size_t V = (size_t)c->vocab_size, D = (size_t)c->dim, H = (size_t)c->hidden_dim;
    size_t L = (size_t)c->n_layers, KVD = (size_t)c->n_kv_heads * (D / (size_t)c->n_heads);
    size_t t, total = 0, bytes;
    size_t parts[][3] = {{V, D, 1},   {L, D, 1}, {L, D, D}, {L, KVD, D},
                         {L, KVD, D}, {L, D, D}, {L, D, 1}, {L, H, D},
                         {L, D, H},   {L, H, D}, {D, 1, 1}, {c->shared_classifier ? 0 : V, D, 1}};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        if (mul_sz(parts[i][0], parts[i][1], &t) || mul_sz(t, parts[i][2], &t) ||
            add_sz(total, t, &total))
            return bs_fail(err, "model_invalid", "", "model parameter count overflows");
    }
    // Parameters and gradients must be addressable in bytes.
    if (mul_sz(total, 2 * sizeof(float), &bytes))
        return bs_fail(err, "model_invalid", "", "model parameter bytes overflow");
    return 0;
}

size_t model_param_count(const ModelConfig *c) {
    TensorSpec s[12];
    int n = tensor_specs(c, s);
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += s[i].count;
    return total;
}

void model_tensors(ModelTensors *t, float *flat, const ModelConfig *c) {
    TensorSpec s[12];
    int n = tensor_specs(c, s);
    float **dst[12] = {&t->tok_emb, &t->rms_att, &t->wq, &t->wk, &t->wv,        &t->wo,
                       &t->rms_ffn, &t->w1,      &t->w2, &t->w3, &t->rms_final, &t->wcls};
    float *p = flat;
    for (int i = 0; i < n; i++) {
        *dst[i] = p;
        p += s[i].count;
    }
    if (c->shared_classifier) t->wcls = t->tok_emb;
}

int model_param_ranges(const ModelConfig *c, ParamRange *out, int max) {
    TensorSpec s[12];
    int n = tensor_specs(c, s);
    size_t off = 0;
    int k = 0;
    for (int i = 0; i < n && k < max; i++) {
        out[k++] = (ParamRange){s[i].name, off, s[i].count, s[i].decay};
        off += s[i].count;
    }
    return k;
}

// ---------------------------------------------------------------------------
// The model object

// Work split (ops.h explains the threading). Row blocks of row_block(c)
// tokens carry every token-local op (norms, projections, RoPE, SwiGLU,
// residuals); attention runs one task per (sequence, head); each weight
// gradient is one task (one sgemm over all N tokens). Block sizes are
// functions of the config, never of the thread count, so the arithmetic is
// the same for any number of threads.
// Each row block packs every weight matrix it multiplies (OpenBLAS copies
// the weights into its panel layout per sgemm), so a wide model uses blocks
// of ROW_BLOCK_WIDE rows: L's DPO step spends ~1/4 less on packing. A narrow
// one keeps ROW_BLOCK, as its scratch and backward chunk slots, which scale
// with the block, would weigh on its small memory minimum.
#define ROW_BLOCK 256
#define ROW_BLOCK_WIDE 512
#define ROW_BLOCK_WIDE_DIM 256 // dim from which blocks are wide
// Classifier forward without kept logits: CLS_ROWS target rows per task,
// vocabulary tiles of CLS_VB logits (small models use fewer rows:
// cls_tile_rows). The grouped classifier (training and reference scoring)
// runs one task per vocabulary tile of CLS_VB (fewer for a small
// vocabulary: cls_group_vocab) over all rows of a block, so that wcls is
// packed once per block rather than once per row task, then folds each
// row's tile statistics in tile order; final norms run FINAL_NORM_ROWS rows
// per task. The classifier backward runs one dwcls task per CLS_BWD_VB
// vocabulary rows (fewer for a small vocabulary: cls_bwd_vocab) and dx in
// CLS_DX_SLICES tasks over vocabulary slices, all rows each (cls_dx_vocab),
// whose partials are summed in slice order. The default bound on kept
// logits is CLS_CACHE_BYTES (model_set_logit_cache).
#define CLS_ROWS 384
#define CLS_VB 1024
#define CLS_BWD_VB 512
#define FINAL_NORM_ROWS 192
#define CLS_DX_SLICES 4
#define CLS_CACHE_BYTES ((size_t)64 << 20)
#define MAX_THREADS 256
// Backward: each weight gradient is split into WSPLIT tasks over its output
// rows (and accumulates over chunk_rows_of rows at a time).
#define WSPLIT 2

typedef struct {
    float *res_in, *rstd1, *q, *k, *v, *att_max, *att_inv, *att, *res_mid, *rstd2;
    float *h1, *h3; // res_mid, h1, h3 NULL in a forward-only slot (att == q there)
} LayerActs;

struct Model {
    ModelConfig c;
    size_t n_params;
    float *params, *grads;        // (P) each; grads NULL when frozen
    ModelTensors w, g;            // views into params / grads
    float *rope_cos, *rope_sin;   // (seq_len, HS/2)
    int threads;                  // model_set_threads; 0: openblas_get_num_threads()
    int rb;                       // row_block: rows of a row block
    int cls_rows;                 // cls_tile_rows
    int cls_vb, cls_tiles;        // cls_group_vocab and its tiles
    int cls_bwd_vb;               // cls_bwd_vocab
    int cls_dx_vs, cls_dx_slices; // cls_dx_vocab and its slices
    size_t cache_bytes;           // model_set_logit_cache
    OpsPool *pool;                // NULL with one thread
    int pool_n;

    // Buffers grow to the largest batch seen (64-byte aligned); contents
    // are per-call, so growth never needs to preserve them.
    float *acts; // layer slots (L kept, or 1 forward-only), then the classifier's
    size_t acts_cap;
    LayerActs *slots;        // (L)
    float *res_out, *rstdf;  // (N, D), (N)
    float *xg, *dxg;         // (M, D) normed rows with a target; dxg kept only
    float *lse_m, *lse_l;    // (M) softmax max and log-sum of each row
    float *cls_logp, *cls_g; // (M)
    int *ints; // pos, rows, tg, rowg (N each), seq_order, grp_k, grp_cur (n_seqs + 1 each)
    size_t ints_cap;
    int *pos, *rows, *tg, *rowg, *seq_order;
    int *grp_k, *grp_cur; // grouped forward: group g's rows are k in [grp_k[g], grp_k[g+1])
    float *cache;         // cls_block: kept logits and dx partials (or tiles), statistics
    size_t cache_cap, cache_ld, cache_cap_rows; // cache_cap_rows: rows of a block it holds
    int cache_rows;
    double *cls_tsum;             // (cls_tiles, rows of the block) tile sums
    float *cls_dxpart;            // (cls_dx_slices - 1, rows, D) dx partials (kept only)
    float *cls_tmax, *cls_tlogit; // (cls_tiles, rows), (rows) tile max, target logits
    int n_att;                    // non-empty sequences (entries of seq_order)
    float *scratch;               // per thread: scratch_floats each
    size_t scratch_cap, scratch_floats;
    float *part; // (row blocks, D) RMSNorm weight-gradient partials
    size_t part_cap;
    float *bwd; // 2 chunk slots of gout, xn (C, D) and prod (C, H) each
    size_t bwd_cap;

    // What the last forward left behind for model_backward.
    int have_acts, last_N, last_M, last_n_seqs, max_T;
    int cls_done; // the grouped forward did the classifier's backward
};

// Per-token floats of a kept layer slot and of a forward-only one.
static size_t layer_floats(const ModelConfig *c, int keep) {
    size_t D = (size_t)c->dim, H = (size_t)c->hidden_dim, NH = (size_t)c->n_heads;
    size_t KVD = (size_t)c->n_kv_heads * (D / NH);
    return keep ? 4 * D + 2 * KVD + 2 * NH + 2 * H + 2 : 2 * D + 2 * KVD + 2 * NH + 2;
}

// Rows of a row block: a function of the config alone.
static int row_block(const ModelConfig *c) {
    return c->dim >= ROW_BLOCK_WIDE_DIM ? ROW_BLOCK_WIDE : ROW_BLOCK;
}

// Rows per backward chunk, a function of the config: two row blocks, so
// that the first region of a chunked phase has a row block for each of two
// threads, and half as many regions (each a pool synchronisation) as
// one-block chunks, which a small model's short backward notices (S: 4-26%
// shorter in three alternating runs). Their slots cost a small model ~2% of
// its minimum.
static int chunk_rows_of(const ModelConfig *c) {
    return 2 * row_block(c);
}

// Rows of a backward chunk slot for an N-token batch.
static size_t chunk_cap(const ModelConfig *c, size_t N) {
    size_t C = (size_t)chunk_rows_of(c);
    return N < C ? N : C;
}

// Floats of one chunk slot per row: gout and recomputed xn (D each), prod (H).
static size_t slot_floats(const ModelConfig *c) {
    return 2 * (size_t)c->dim + (size_t)c->hidden_dim;
}

static size_t max_sz(size_t a, size_t b) {
    return a > b ? a : b;
}

// Target rows of a classifier forward task without kept logits: CLS_ROWS,
// fewer (multiples of 16, at least 64) where that logits tile would outgrow
// the scratch a forward-only row block needs anyway, so that a small
// model's per-thread scratch stays in proportion to it. A function of the
// config alone: every thread count uses the same tiles.
static int cls_tile_rows(const ModelConfig *c) {
    size_t D = (size_t)c->dim, H = (size_t)c->hidden_dim, V = (size_t)c->vocab_size;
    size_t vb = V < CLS_VB ? V : CLS_VB;
    size_t rows = ((size_t)row_block(c) * (3 * D + 2 * H) / (vb + 16)) & ~(size_t)15;
    return (int)(rows < 64 ? 64 : rows > CLS_ROWS ? CLS_ROWS : rows);
}

// Vocabulary rows of a dwcls task: CLS_BWD_VB, or a quarter of a small
// vocabulary (multiples of 16, at least 64), so that its tiles still spread
// over the threads (S: 4 tasks of 128 rather than one of 512).
static int cls_bwd_vocab(const ModelConfig *c) {
    int q = ((c->vocab_size / 4) + 15) & ~15;
    return q >= CLS_BWD_VB ? CLS_BWD_VB : q < 64 ? 64 : q;
}

// Vocabulary columns of a grouped classifier tile: CLS_VB, or a quarter of a
// small vocabulary (multiples of 16, at least 64, at most V), so that a small
// model's tiles still spread over the threads.
static int cls_group_vocab(const ModelConfig *c) {
    int V = c->vocab_size, q = ((V / 4) + 15) & ~15;
    q = q >= CLS_VB ? CLS_VB : q < 64 ? 64 : q;
    return q < V ? q : V;
}

static int cls_group_tiles(const ModelConfig *c) {
    int vb = cls_group_vocab(c);
    return (c->vocab_size + vb - 1) / vb;
}

// Row stride of a grouped classifier tile without kept logits: vb + 16, so
// that rows are not a power of two apart.
static size_t group_tile_ld(const ModelConfig *c) {
    return (size_t)cls_group_vocab(c) + 16;
}

// Row stride of kept logits: V + 16, so that rows are not a power of two
// apart.
static size_t cache_ld(const ModelConfig *c) {
    return (size_t)c->vocab_size + 16;
}

// Rows of kept logits that `bytes` allows (at least 16).
static int cache_rows_for(const ModelConfig *c, size_t bytes) {
    size_t rows = bytes / (cache_ld(c) * sizeof(float));
    return rows < 16 ? 16 : rows > (size_t)INT32_MAX ? INT32_MAX : (int)rows;
}

// Vocabulary columns of a dx slice: a quarter of the vocabulary (multiples
// of 16), so that dx runs CLS_DX_SLICES tasks over all rows of a block.
static int cls_dx_vocab(const ModelConfig *c) {
    int V = c->vocab_size, q = ((V + CLS_DX_SLICES - 1) / CLS_DX_SLICES + 15) & ~15;
    return q < V ? q : V;
}

static int cls_dx_slices(const ModelConfig *c) {
    int vs = cls_dx_vocab(c);
    return (c->vocab_size + vs - 1) / vs;
}

// Layout of the grouped classifier's block buffer (m->cache) for blocks of
// `rows` rows, in floats: kept logits (rows, cache_ld) and the dx partials
// ((cls_dx_slices - 1) x (rows, D)) or, without kept logits, one (rows,
// group_tile_ld) tile per thread; then the tile statistics at `stats`: sums
// (doubles), maxima (cls_tiles x rows each) and target logits (rows). -1
// on overflow.
typedef struct {
    size_t dxpart, stats, total;
} ClsBlock;

static int cls_block(const ModelConfig *c, size_t rows, int keep, int threads, ClsBlock *b) {
    size_t t, u, n = rows > 0 ? rows : 1, T = (size_t)cls_group_tiles(c);
    if (keep ? mul_sz(n, cache_ld(c), &t)
             : mul_sz(n, group_tile_ld(c), &t) || mul_sz(t, (size_t)threads, &t))
        return -1;
    b->dxpart = t;
    if (keep &&
        (mul_sz(n, (size_t)c->dim * (size_t)(cls_dx_slices(c) - 1), &u) || add_sz(t, u, &t)))
        return -1;
    b->stats = t = (t + 1) & ~(size_t)1; // the sums are doubles
    if (mul_sz(T, 3, &u) || add_sz(u, 1, &u) || mul_sz(u, n, &u) || add_sz(t, u, &b->total))
        return -1;
    return 0;
}

// Scratch floats one thread needs (rounded to 64 bytes).
static size_t thread_floats(const ModelConfig *c, size_t max_T, int keep, int backward) {
    size_t D = (size_t)c->dim, H = (size_t)c->hidden_dim, RB = (size_t)row_block(c);
    // task_ffn: tmp, xn2 (D) and prod (H); forward-only also res_mid, h1, h3.
    size_t f = keep ? RB * (2 * D + H) : RB * (3 * D + 2 * H);
    f = max_sz(f, attention_task_scratch_floats((int)max_T, c->dim / c->n_heads));
    int V = c->vocab_size, vb = V < CLS_VB ? V : CLS_VB;
    // A plain classifier forward's tile; it covers the row of exps that a
    // grouped tile task needs with kept logits.
    f = max_sz(f, classifier_scratch_floats(cls_tile_rows(c), vb));
    if (backward) f = max_sz(f, RB * (H + D)); // dprod and dxn of a backward row block
    return (f + 15) & ~(size_t)15;
}

// Bytes of each buffer for a batch; -1 on overflow. The sizes stay far below
// overflow for any config model_config_validate accepts and any int N, but
// are checked anyway.
typedef struct {
    size_t acts, ints, scratch, part, bwd;
} BufSizes;

static int buf_sizes(const ModelConfig *c, size_t N, size_t M, size_t n_seqs, size_t max_T,
                     int keep, int threads, BufSizes *s) {
    size_t t, u, D = (size_t)c->dim;
    size_t slots = keep ? (size_t)c->n_layers : 1;
    memset(s, 0, sizeof *s);
    // slots, res_out (kept only) + rstdf (N), xg (+ E) + 4 per row (M)
    if (mul_sz(layer_floats(c, keep), slots, &t) || add_sz(t, keep ? D + 1 : 1, &t) ||
        mul_sz(t, N, &t) || mul_sz(D, keep ? 2 : 1, &u) || add_sz(u, 4, &u) || mul_sz(u, M, &u) ||
        add_sz(t, u, &t) || mul_sz(t, sizeof(float), &s->acts))
        return -1;
    if (mul_sz(4, N, &t) || mul_sz(3, n_seqs, &u) || add_sz(t, u, &t) || add_sz(t, 2, &t) ||
        mul_sz(t, sizeof(int), &s->ints))
        return -1;
    if (mul_sz(thread_floats(c, max_T, keep, keep), (size_t)threads, &t) ||
        mul_sz(t, sizeof(float), &s->scratch))
        return -1;
    if (keep) {
        size_t RB = (size_t)row_block(c);
        if (mul_sz((N + RB - 1) / RB, D * sizeof(float), &s->part)) return -1;
        if (mul_sz(slot_floats(c), 2 * chunk_cap(c, N), &t) || mul_sz(t, sizeof(float), &s->bwd))
            return -1;
    }
    return 0;
}

size_t model_activation_bytes(const ModelConfig *c, int n_tokens, int max_seq, int backward) {
    BufSizes s;
    size_t n = n_tokens > 0 ? (size_t)n_tokens : 0, T = max_seq > 0 ? (size_t)max_seq : 0;
    size_t n_seqs = T > 0 ? (n + T - 1) / T : 0;
    if (buf_sizes(c, n, n, n_seqs, T, backward, 1, &s) != 0) return SIZE_MAX;
    size_t total = 0;
    size_t parts[] = {s.acts, s.ints, s.scratch, s.part, s.bwd};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        if (add_sz(total, parts[i], &total)) return SIZE_MAX;
    if (n > 0) {
        // The grouped classifier's block buffer (kept logits when training,
        // a reference's tiles otherwise): at most the default bound's rows
        // (model_set_logit_cache).
        size_t rows = (size_t)cache_rows_for(c, CLS_CACHE_BYTES), bytes;
        if (n < rows) rows = n;
        ClsBlock cb;
        if (cls_block(c, rows, backward, 1, &cb) != 0 || mul_sz(cb.total, sizeof(float), &bytes) ||
            add_sz(total, bytes, &total))
            return SIZE_MAX;
    }
    return total;
}

static int ensure(void *pbuf, size_t *cap, size_t need, BsError *err) {
    void **buf = pbuf;
    if (need <= *cap) return 0;
    // Aligned for the vector kernels and sgemm; contents need not survive.
    void *p = NULL;
    if (posix_memalign(&p, 64, need) != 0)
        return bs_fail(err, "out_of_memory", "", "cannot allocate %zu bytes of activations", need);
    free(*buf);
    *buf = p;
    *cap = need;
    return 0;
}

int model_create(Model **out, const ModelConfig *c, int with_grads, BsError *err) {
    *out = NULL;
    if (model_config_validate(c, err) != 0) return -1;
    Model *m = calloc(1, sizeof *m);
    if (!m) return bs_fail(err, "out_of_memory", "", "cannot allocate a model");
    m->c = *c;
    m->pool_n = 1;
    m->rb = row_block(c);
    m->cls_rows = cls_tile_rows(c);
    m->cls_vb = cls_group_vocab(c);
    m->cls_tiles = cls_group_tiles(c);
    m->cls_bwd_vb = cls_bwd_vocab(c);
    m->cls_dx_vs = cls_dx_vocab(c);
    m->cls_dx_slices = cls_dx_slices(c);
    m->cache_bytes = CLS_CACHE_BYTES;
    m->n_params = model_param_count(c);
    size_t half = (size_t)c->seq_len * (size_t)(c->dim / c->n_heads / 2);
    m->params = calloc(m->n_params, sizeof(float));
    m->slots = calloc((size_t)c->n_layers, sizeof(LayerActs));
    m->rope_cos = malloc(half * sizeof(float));
    m->rope_sin = malloc(half * sizeof(float));
    if (with_grads) m->grads = calloc(m->n_params, sizeof(float));
    if (!m->params || !m->slots || !m->rope_cos || !m->rope_sin || (with_grads && !m->grads)) {
        size_t bytes = m->n_params * sizeof(float) * (with_grads ? 2 : 1);
        model_free(m);
        return bs_fail(err, "out_of_memory", "",
                       "cannot allocate %zu bytes for the model's parameters", bytes);
    }
    model_tensors(&m->w, m->params, c);
    if (m->grads) model_tensors(&m->g, m->grads, c);
    ops_rope_tables(m->rope_cos, m->rope_sin, c->seq_len, c->dim / c->n_heads, c->rope_theta);
    *out = m;
    return 0;
}

void model_free(Model *m) {
    if (!m) return;
    ops_pool_free(m->pool);
    free(m->params);
    free(m->grads);
    free(m->rope_cos);
    free(m->rope_sin);
    free(m->slots);
    free(m->acts);
    free(m->ints);
    free(m->scratch);
    free(m->part);
    free(m->bwd);
    free(m->cache);
    free(m);
}

const ModelConfig *model_config(const Model *m) {
    return &m->c;
}

float *model_params(Model *m) {
    return m->params;
}

float *model_grads(Model *m) {
    return m->grads;
}

void model_zero_grads(Model *m) {
    if (m->grads) memset(m->grads, 0, m->n_params * sizeof(float));
}

void model_set_logit_cache(Model *m, size_t bytes) {
    m->cache_bytes = bytes;
}

void model_set_threads(Model *m, int n_threads) {
    m->threads = n_threads < 0 ? 0 : n_threads > MAX_THREADS ? MAX_THREADS : n_threads;
}

// Random numbers: splitmix64 (Steele, Lea & Flood 2014) over a 64-bit state
// seeded with `seed`; each uniform is the top 53 bits of one output. Normals
// come in pairs from the Box-Muller transform of two uniforms
// (u1 in (0, 1], u2 in [0, 1)): sqrt(-2 ln u1) * (cos, sin)(2 pi u2), both
// used, in flat parameter order, tensor by tensor. Same seed, same model, on
// every platform with IEEE doubles and a correctly rounded libm.
static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

typedef struct {
    uint64_t state;
    int has_spare;
    double spare;
} Gauss;

static double gauss_next(Gauss *g) {
    if (g->has_spare) {
        g->has_spare = 0;
        return g->spare;
    }
    double u1 = (double)((splitmix64(&g->state) >> 11) + 1) * 0x1.0p-53;
    double u2 = (double)(splitmix64(&g->state) >> 11) * 0x1.0p-53;
    double r = sqrt(-2.0 * log(u1)), a = 2.0 * M_PI * u2;
    g->spare = r * sin(a);
    g->has_spare = 1;
    return r * cos(a);
}

void model_init_random(Model *m, unsigned long long seed) {
    const ModelConfig *c = &m->c;
    ParamRange r[12];
    int n = model_param_ranges(c, r, 12);
    Gauss g = {.state = seed};
    double out_std = 0.02 / sqrt(2.0 * c->n_layers);
    for (int i = 0; i < n; i++) {
        float *p = m->params + r[i].offset;
        if (!r[i].decay) { // RMSNorm weights
            for (size_t j = 0; j < r[i].count; j++)
                p[j] = 1.0f;
            continue;
        }
        double std =
            (strcmp(r[i].name, "wo") == 0 || strcmp(r[i].name, "w2") == 0) ? out_std : 0.02;
        for (size_t j = 0; j < r[i].count; j++)
            p[j] = (float)(std * gauss_next(&g));
    }
}

// Checks the batch against the config; fills N, M (rows with a target) and
// the longest sequence.
static int batch_check(const Model *m, const ModelBatch *b, int *N, int *M, int *max_T,
                       BsError *err) {
    const ModelConfig *c = &m->c;
    if (b->n_seqs < 0 || (b->n_seqs > 0 && (!b->offsets || !b->tokens || !b->targets)))
        return bs_fail(err, "invalid_batch", "", "batch is missing offsets, tokens or targets");
    if (b->n_seqs == 0) {
        *N = *M = *max_T = 0;
        return 0;
    }
    if (b->offsets[0] != 0)
        return bs_fail(err, "invalid_batch", "offsets", "batch offsets[0] is %d, must be 0",
                       b->offsets[0]);
    int mt = 0;
    for (int s = 0; s < b->n_seqs; s++) {
        long len = (long)b->offsets[s + 1] - b->offsets[s];
        if (len < 0 || len > c->seq_len)
            return bs_fail(err, "invalid_batch", "offsets",
                           "sequence %d has %ld tokens; the model allows 0..%d (seq_len)", s, len,
                           c->seq_len);
        if (len > mt) mt = (int)len;
    }
    int n = b->offsets[b->n_seqs], mm = 0;
    for (int i = 0; i < n; i++) {
        if (b->tokens[i] < 0 || b->tokens[i] >= c->vocab_size)
            return bs_fail(err, "invalid_batch", "tokens",
                           "token %d at position %d is outside "
                           "the vocabulary (0..%d)",
                           b->tokens[i], i, c->vocab_size - 1);
        if (b->targets[i] < -1 || b->targets[i] >= c->vocab_size)
            return bs_fail(err, "invalid_batch", "targets",
                           "target %d at position %d is "
                           "outside the vocabulary (-1..%d)",
                           b->targets[i], i, c->vocab_size - 1);
        mm += b->targets[i] >= 0;
    }
    *N = n;
    *M = mm;
    *max_T = mt;
    return 0;
}

// Sizes the pool to the thread setting. A pool that cannot start leaves
// the work to the caller's thread alone.
static void pool_resize(Model *m) {
    int want = m->threads > 0 ? m->threads : openblas_get_num_threads();
    want = want < 1 ? 1 : want > MAX_THREADS ? MAX_THREADS : want;
    if (want != m->pool_n) {
        ops_pool_free(m->pool);
        m->pool = NULL;
        m->pool_n = 1;
        if (want > 1 && ops_pool_create(&m->pool, want) == 0) m->pool_n = want;
    }
}

// Sizes the pool for this call and makes OpenBLAS single-threaded while the
// model's own threads call it; *blas_prev receives the setting to restore.
static void threads_begin(Model *m, int *blas_prev) {
    pool_resize(m);
    *blas_prev = openblas_get_num_threads();
    if (*blas_prev != 1) openblas_set_num_threads(1);
}

static void threads_end(int blas_prev) {
    if (blas_prev != 1) openblas_set_num_threads(blas_prev);
}

OpsPool *model_pool(Model *m) {
    pool_resize(m);
    return m->pool;
}

// Points the activation views at the buffers for a batch of N tokens, M of
// them with a target.
static void layout(Model *m, int N, int M, int n_seqs, int keep) {
    const ModelConfig *c = &m->c;
    size_t n = (size_t)N, D = (size_t)c->dim, H = (size_t)c->hidden_dim;
    size_t NH = (size_t)c->n_heads, KVD = (size_t)c->n_kv_heads * (D / NH);
    float *p = m->acts;
    for (int l = 0; l < c->n_layers; l++) {
        LayerActs *a = &m->slots[l];
        if (!keep && l > 0) {
            *a = m->slots[0];
            continue;
        }
        memset(a, 0, sizeof *a);
        a->res_in = p, p += n * D;
        a->rstd1 = p, p += n;
        a->q = p, p += n * D;
        a->k = p, p += n * KVD;
        a->v = p, p += n * KVD;
        a->att_max = p, p += n * NH;
        a->att_inv = p, p += n * NH;
        a->rstd2 = p, p += n;
        a->att = a->q; // forward-only: q is dead once its attention output exists
        if (keep) {
            a->att = p, p += n * D;
            a->res_mid = p, p += n * D;
            a->h1 = p, p += n * H;
            a->h3 = p, p += n * H;
        }
    }
    size_t mm = (size_t)M;
    m->res_out = m->slots[0].res_in; // forward-only: the last layer's input is dead
    if (keep) m->res_out = p, p += n * D;
    m->rstdf = p, p += n;
    m->xg = p, p += mm * D;
    m->dxg = NULL;
    if (keep) m->dxg = p, p += mm * D;
    m->lse_m = p, p += mm;
    m->lse_l = p, p += mm;
    m->cls_logp = p, p += mm;
    m->cls_g = p;
    m->pos = m->ints;
    m->rows = m->ints + n;
    m->tg = m->ints + 2 * n;
    m->rowg = m->ints + 3 * n;
    m->seq_order = m->ints + 4 * n;
    m->grp_k = m->seq_order + n_seqs;
    m->grp_cur = m->grp_k + n_seqs + 1;
}

// ---------------------------------------------------------------------------
// Tasks of the parallel regions. Each writes only its own rows / heads /
// weight, so tasks of a region can run in any order on any thread.

typedef struct {
    Model *m;
    const ModelBatch *b;
    LayerActs *a;
    float *next; // forward: the layer's output residual
    // Backward: G (N, D) is dLoss/d(layer output), turned in place into
    // d(res_mid), then into d(layer input); chunk slots (see chunk_rows_of).
    float *G, *gc[2], *xs[2], *pr[2];
    int l, N, M, keep, n_rows;
    int chunk_n, n_chunks; // backward: rows per chunk, chunks
    int chunk, n_rowt;     // backward region: rows of chunk, dW of chunk - 1
    int cls_k0, cls_n;     // grouped classifier: gathered rows of the block
} Run;

static float *tscratch(Model *m, int thread) {
    return m->scratch + (size_t)thread * m->scratch_floats;
}

#define RUN_DIMS                                                                                   \
    Model *m = r->m;                                                                               \
    const ModelConfig *c = &m->c;                                                                  \
    const ModelTensors *w = &m->w;                                                                 \
    LayerActs *a = r->a;                                                                           \
    size_t D = (size_t)c->dim, H = (size_t)c->hidden_dim, NH = (size_t)c->n_heads;                 \
    size_t HS = D / NH, NKV = (size_t)c->n_kv_heads, KVD = NKV * HS, l = (size_t)r->l;             \
    (void)w, (void)a, (void)H, (void)KVD, (void)l

// Row block of a task: rows r0 .. r0 + n - 1.
#define ROW_RANGE(task)                                                                            \
    size_t r0 = (size_t)(task) * (size_t)m->rb;                                                    \
    int n = r->N - (int)r0 < m->rb ? r->N - (int)r0 : m->rb

// rmsnorm, q k v projections and RoPE of a row block.
static void task_qkv(void *ctx, int task, int thread) {
    Run *r = ctx;
    RUN_DIMS;
    ROW_RANGE(task);
    float *xn = tscratch(m, thread);
    rmsnorm_forward(xn, a->rstd1 + r0, a->res_in + r0 * D, w->rms_att + l * D, n, (int)D,
                    c->norm_eps);
    matmul_forward(a->q + r0 * D, xn, w->wq + l * D * D, n, (int)D, (int)D);
    matmul_forward(a->k + r0 * KVD, xn, w->wk + l * KVD * D, n, (int)D, (int)KVD);
    matmul_forward(a->v + r0 * KVD, xn, w->wv + l * KVD * D, n, (int)D, (int)KVD);
    rope_forward(a->q + r0 * D, m->pos + r0, m->rope_cos, m->rope_sin, n, (int)NH, (int)HS);
    rope_forward(a->k + r0 * KVD, m->pos + r0, m->rope_cos, m->rope_sin, n, (int)NKV, (int)HS);
}

// One (sequence, head) of causal attention, longest sequences first.
static void task_attention(void *ctx, int task, int thread) {
    Run *r = ctx;
    RUN_DIMS;
    int s = m->seq_order[task / (int)NH], h = task % (int)NH;
    int o = r->b->offsets[s], T = r->b->offsets[s + 1] - o;
    attention_forward_task(a->att, a->att_max, a->att_inv, tscratch(m, thread), a->q, a->k, a->v, o,
                           T, h, (int)NH, (int)NKV, (int)HS);
}

// Output projection, residual, rmsnorm and SwiGLU feed-forward of a row block.
static void task_ffn(void *ctx, int task, int thread) {
    Run *r = ctx;
    RUN_DIMS;
    ROW_RANGE(task);
    size_t lHD = l * H * D;
    float *s = tscratch(m, thread), *tmp = s, *res_mid, *xn2, *h1, *h3, *prod;
    s += (size_t)m->rb * D;
    xn2 = s, s += (size_t)m->rb * D;
    if (r->keep) {
        res_mid = a->res_mid + r0 * D;
        h1 = a->h1 + r0 * H, h3 = a->h3 + r0 * H, prod = s;
    } else {
        res_mid = s, s += (size_t)m->rb * D;
        h1 = s, s += (size_t)m->rb * H;
        h3 = s, prod = h1; // h1 is dead once the product is formed
    }
    size_t nD = (size_t)n * D;
    matmul_forward(tmp, a->att + r0 * D, w->wo + l * D * D, n, (int)D, (int)D);
    residual_forward(res_mid, a->res_in + r0 * D, tmp, nD);
    rmsnorm_forward(xn2, a->rstd2 + r0, res_mid, w->rms_ffn + l * D, n, (int)D, c->norm_eps);
    matmul_forward(h1, xn2, w->w1 + lHD, n, (int)D, (int)H);
    matmul_forward(h3, xn2, w->w3 + lHD, n, (int)D, (int)H);
    swiglu_forward(prod, h1, h3, (size_t)n * H);
    matmul_forward(tmp, prod, w->w2 + lHD, n, (int)H, (int)D);
    residual_forward(r->next + r0 * D, res_mid, tmp, nD);
}

// xg rows k0 .. k0+nk-1: the final rmsnorm of the gathered target rows.
static void final_norm_rows(Model *m, int k0, int nk) {
    size_t D = (size_t)m->c.dim;
    for (int k = k0; k < k0 + nk; k++) {
        size_t i = (size_t)m->rows[k];
        rmsnorm_forward(m->xg + (size_t)k * D, m->rstdf + i, m->res_out + i * D, m->w.rms_final, 1,
                        (int)D, m->c.norm_eps);
    }
}

// Final rmsnorm of the target rows and their log-probs: cls_rows of the M
// gathered rows (the logits are not kept).
static void task_cls_forward(void *ctx, int task, int thread) {
    Run *r = ctx;
    RUN_DIMS;
    int R = m->cls_rows, k0 = task * R, nk = r->M - k0 < R ? r->M - k0 : R;
    final_norm_rows(m, k0, nk);
    classifier_forward_rows(m->cls_logp + k0, m->lse_m + k0, m->lse_l + k0, tscratch(m, thread),
                            m->xg + (size_t)k0 * D, w->wcls, m->tg + k0, nk, (int)D, c->vocab_size,
                            c->vocab_size < CLS_VB ? c->vocab_size : CLS_VB);
}

// Final rmsnorm of a block of FINAL_NORM_ROWS gathered rows (grouped forward).
static void task_final_norm(void *ctx, int task, int thread) {
    Run *r = ctx;
    (void)thread;
    int k0 = task * FINAL_NORM_ROWS, nk = r->M - k0 < FINAL_NORM_ROWS ? r->M - k0 : FINAL_NORM_ROWS;
    final_norm_rows(r->m, k0, nk);
}

// The grouped classifier, over a block of gathered rows [cls_k0, cls_k0 +
// cls_n): one task per vocabulary tile of cls_vb columns over all the rows
// (one sgemm: wcls is packed once per block), each leaving its per-row tile
// max and sum in cls_tmax, cls_tsum (and target logits in cls_tlogit), which
// cls_logits then folds in tile order. The tasks and their arithmetic are the
// same with and without kept logits, so that a reference scored with
// model_forward_grouped gets the policy's log-probs bit for bit when their
// weights are equal (DPO's first step: rewards exactly 0, as torch). Kept
// (training), the logits go to the cache (row k at cache row k - cls_k0);
// otherwise each thread has a tile of its own there.
static void task_cls_logits(void *ctx, int task, int thread) {
    Run *r = ctx;
    RUN_DIMS;
    int vb = m->cls_vb, V = c->vocab_size, v0 = task * vb, nv = V - v0 < vb ? V - v0 : vb;
    size_t k0 = (size_t)r->cls_k0, ts = m->cache_cap_rows, ld, o = (size_t)task * ts;
    float *logits, *exps;
    if (r->keep) {
        logits = m->cache + v0, ld = m->cache_ld, exps = tscratch(m, thread);
    } else {
        ld = group_tile_ld(c), logits = m->cache + (size_t)thread * ts * ld, exps = NULL;
    }
    classifier_forward_tile(m->cls_tmax + o, m->cls_tsum + o, m->cls_tlogit, logits, ld, exps,
                            m->xg + k0 * D, w->wcls, m->tg + k0, r->cls_n, (int)D, v0, nv);
}

// One vocabulary tile: its logits become dlogits, dwcls rows += over the rows.
static void task_cls_dw(void *ctx, int task, int thread) {
    Run *r = ctx;
    RUN_DIMS;
    (void)thread;
    int vb = m->cls_bwd_vb, V = c->vocab_size, v0 = task * vb, nv = V - v0 < vb ? V - v0 : vb;
    size_t k0 = (size_t)r->cls_k0;
    classifier_backward_tile(m->g.wcls, m->cache, m->cache_ld, m->cls_g + k0, m->xg + k0 * D,
                             m->tg + k0, m->lse_m + k0, m->lse_l + k0, r->cls_n, (int)D, v0, nv);
}

// One vocabulary slice of dxg = dlogits @ wcls over all rows of the block
// (one sgemm: its slice of wcls is packed once per block): slice 0 adds to
// dxg (zero until then), slice s > 0 goes to partial s - 1 in the block
// buffer, which cls_grad adds to dxg in slice order.
static void task_cls_dx(void *ctx, int task, int thread) {
    Run *r = ctx;
    RUN_DIMS;
    (void)thread;
    int vs = m->cls_dx_vs, V = c->vocab_size, v0 = task * vs, nv = V - v0 < vs ? V - v0 : vs;
    size_t nD = (size_t)r->cls_n * D;
    float *dx = m->dxg + (size_t)r->cls_k0 * D;
    if (task > 0) {
        dx = m->cls_dxpart + (size_t)(task - 1) * m->cache_cap_rows * D;
        memset(dx, 0, nD * sizeof(float));
    }
    classifier_backward_dx(dx, m->cache + v0, m->cache_ld, w->wcls + (size_t)v0 * D, r->cls_n,
                           (int)D, nv);
}

// The pool for a classifier region over n rows: none (the caller's thread
// runs the same tasks in order, with the same bits) when the region is too
// small to pay for waking the threads: a tiny model's steps then burn no
// spinning time on regions of microseconds.
#define CLS_INLINE_WORK ((size_t)1 << 22) // n x V x D multiply-adds
static OpsPool *cls_pool(const Model *m, int n) {
    size_t work = (size_t)n * (size_t)m->c.vocab_size * (size_t)m->c.dim;
    return work < CLS_INLINE_WORK ? NULL : m->pool;
}

// Log-probs of rows [k0, k0 + n) (at most cache_cap_rows), with their
// logits into the cache when kept.
static void cls_logits(Model *m, Run *r, int k0, int n) {
    r->cls_k0 = k0;
    r->cls_n = n;
    if (n == 0) return;
    ops_pool_run(cls_pool(m, n), task_cls_logits, r, m->cls_tiles);
    classifier_merge_tiles(m->cls_logp + k0, m->lse_m + k0, m->lse_l + k0, m->cls_tmax, m->cls_tsum,
                           m->cache_cap_rows, m->cls_tiles, m->cls_tlogit, n);
}

// dwcls += and dxg = the classifier backward of the cached rows [k0, k0 + n)
// with dL/dlogp in cls_g.
static void cls_grad(Model *m, Run *r, int k0, int n) {
    r->cls_k0 = k0;
    r->cls_n = n;
    if (n == 0) return;
    OpsPool *pool = cls_pool(m, n);
    ops_pool_run(pool, task_cls_dw, r, (m->c.vocab_size + m->cls_bwd_vb - 1) / m->cls_bwd_vb);
    ops_pool_run(pool, task_cls_dx, r, m->cls_dx_slices);
    size_t nD = (size_t)n * (size_t)m->c.dim;
    float *dx = m->dxg + (size_t)k0 * (size_t)m->c.dim;
    for (int t = 1; t < m->cls_dx_slices; t++) {
        const float *p = m->cls_dxpart + (size_t)(t - 1) * m->cache_cap_rows * (size_t)m->c.dim;
        residual_forward(dx, dx, p, nD);
    }
}

// Sets m->cache_rows, the rows of a classifier block (the logits cache's
// bound), and grows the block buffer for blocks of min(rows, that) rows:
// kept logits with keep, the threads' tiles without (cls_block).
static int cache_reserve(Model *m, int rows, int keep, BsError *err) {
    const ModelConfig *c = &m->c;
    m->cache_rows = cache_rows_for(c, m->cache_bytes);
    m->cache_ld = cache_ld(c);
    size_t n = (size_t)(rows < m->cache_rows ? rows : m->cache_rows), need;
    n = n > 0 ? n : 1;
    ClsBlock cb;
    if (cls_block(c, n, keep, m->pool_n, &cb) != 0 || mul_sz(cb.total, sizeof(float), &need))
        return bs_fail(err, "out_of_memory", "", "logits cache size overflows");
    if (ensure(&m->cache, &m->cache_cap, need, err) != 0) return -1;
    size_t T = (size_t)m->cls_tiles;
    m->cache_cap_rows = n;
    m->cls_dxpart = m->cache + cb.dxpart;
    m->cls_tsum = (double *)(m->cache + cb.stats);
    m->cls_tmax = (float *)(m->cls_tsum + T * n);
    m->cls_tlogit = m->cls_tmax + T * n;
    return 0;
}

// The classifier's backward of rows [k0, k0 + n) with dL/dlogp in cls_g,
// logits recomputed block by block (every cache_rows rows).
static void cls_grad_recompute(Model *m, Run *r, int k0, int n) {
    for (int j = 0; j < n; j += m->cache_rows) {
        int nb = n - j < m->cache_rows ? n - j : m->cache_rows;
        cls_logits(m, r, k0 + j, nb);
        cls_grad(m, r, k0 + j, nb);
    }
}

// Gathers the target rows: rows, tg, rowg; grouped (groups non-NULL) in
// group order, each group's rows in token order, with grp_k the groups'
// first rows; otherwise in token order.
static void gather_rows(Model *m, const ModelBatch *b, const ModelGroups *groups, float *logp) {
    int N = b->offsets[b->n_seqs];
    for (int i = 0; i < N; i++) {
        logp[i] = 0.0f;
        m->rowg[i] = -1;
    }
    if (!groups) {
        int k = 0;
        for (int i = 0; i < N; i++) {
            if (b->targets[i] < 0) continue;
            m->rows[k] = i;
            m->tg[k] = b->targets[i];
            m->rowg[i] = k++;
        }
        return;
    }
    int G = groups->n_groups;
    memset(m->grp_k, 0, (size_t)(G + 1) * sizeof(int));
    for (int s = 0; s < b->n_seqs; s++)
        for (int i = b->offsets[s]; i < b->offsets[s + 1]; i++)
            m->grp_k[groups->seq_group[s] + 1] += b->targets[i] >= 0;
    for (int g = 0; g < G; g++) {
        m->grp_k[g + 1] += m->grp_k[g];
        m->grp_cur[g] = m->grp_k[g];
    }
    for (int s = 0; s < b->n_seqs; s++) {
        int *cur = &m->grp_cur[groups->seq_group[s]];
        for (int i = b->offsets[s]; i < b->offsets[s + 1]; i++) {
            if (b->targets[i] < 0) continue;
            m->rows[*cur] = i;
            m->tg[*cur] = b->targets[i];
            m->rowg[i] = (*cur)++;
        }
    }
}

// The grouped forward's classifier, group by group in blocks of cache_rows
// rows: log-probs; when training (r->keep), the logits kept (or, for a group
// larger than a block, later recomputed block by block), the caller's
// dL/dlogp for the group's rows, then dwcls and dxg.
static int cls_grouped(Model *m, Run *r, const ModelGroups *groups, float *logp, float *dlogp,
                       BsError *err) {
    int D = m->c.dim, max_rows = 0;
    for (int g = 0; g < groups->n_groups; g++) {
        int n = m->grp_k[g + 1] - m->grp_k[g];
        if (n > max_rows) max_rows = n;
    }
    if (cache_reserve(m, max_rows, r->keep, err) != 0) return -1;
    ops_pool_run(cls_pool(m, r->M), task_final_norm, r,
                 (r->M + FINAL_NORM_ROWS - 1) / FINAL_NORM_ROWS);
    if (r->keep) memset(m->dxg, 0, (size_t)r->M * (size_t)D * sizeof(float));
    for (int g = 0; g < groups->n_groups; g++) {
        int k0 = m->grp_k[g], n = m->grp_k[g + 1] - k0;
        for (int j = 0; j < n; j += m->cache_rows)
            cls_logits(m, r, k0 + j, n - j < m->cache_rows ? n - j : m->cache_rows);
        for (int k = k0; k < k0 + n; k++)
            logp[m->rows[k]] = m->cls_logp[k];
        if (!r->keep) continue;
        if (groups->grad(groups->ctx, g, logp, dlogp, err) != 0) return -1;
        for (int k = k0; k < k0 + n; k++)
            m->cls_g[k] = dlogp[m->rows[k]];
        if (n <= m->cache_rows)
            cls_grad(m, r, k0, n); // the logits are still in the cache
        else
            cls_grad_recompute(m, r, k0, n);
    }
    return 0;
}

// model_forward and model_forward_grouped (groups non-NULL: rows in group
// order; with groups->grad also the activations and the classifier's
// backward).
static int forward(Model *m, const ModelBatch *b, float *logp, int keep_activations,
                   const ModelGroups *groups, float *dlogp, BsError *err) {
    const ModelConfig *c = &m->c;
    int N = 0, M = 0, max_T = 0;
    m->have_acts = 0;
    m->cls_done = 0;
    if (keep_activations && !m->grads)
        return bs_fail(err, "invalid_argument", "",
                       "a frozen model cannot keep activations for a backward pass");
    if (batch_check(m, b, &N, &M, &max_T, err) != 0) return -1;
    if (groups) {
        if (groups->n_groups < 0 || groups->n_groups > b->n_seqs ||
            (b->n_seqs > 0 && !groups->seq_group) || (groups->grad && !dlogp))
            return bs_fail(err, "invalid_argument", "",
                           "grouped forward needs 0..n_seqs groups, seq_group and, with grad, "
                           "dlogp");
        for (int s = 0; s < b->n_seqs; s++)
            if (groups->seq_group[s] < 0 || groups->seq_group[s] >= groups->n_groups)
                return bs_fail(err, "invalid_argument", "",
                               "sequence %d is in group %d; groups are 0..%d", s,
                               groups->seq_group[s], groups->n_groups - 1);
    }
    int L = c->n_layers, D = c->dim;
    int NH = c->n_heads;
    int keep = keep_activations ? 1 : 0, blas_prev;
    threads_begin(m, &blas_prev);
    BufSizes s;
    int rc = -1;
    if (buf_sizes(c, (size_t)N, (size_t)M, (size_t)b->n_seqs, (size_t)max_T, keep, m->pool_n, &s) !=
        0) {
        bs_fail(err, "out_of_memory", "", "activation sizes of a %d-token batch overflow", N);
        goto out;
    }
    if (ensure(&m->acts, &m->acts_cap, s.acts, err) ||
        ensure(&m->ints, &m->ints_cap, s.ints, err) ||
        ensure(&m->scratch, &m->scratch_cap, s.scratch, err) ||
        ensure(&m->part, &m->part_cap, s.part, err))
        goto out;
    m->scratch_floats = thread_floats(c, (size_t)max_T, keep, keep);
    if (N == 0) {
        m->last_N = m->last_M = m->last_n_seqs = 0;
        m->have_acts = keep;
        m->cls_done = keep && groups;
        if (keep && groups) // every group is empty: its gradient is still asked for
            for (int g = 0; g < groups->n_groups; g++)
                if (groups->grad(groups->ctx, g, logp, dlogp, err) != 0) goto out;
        rc = 0;
        goto out;
    }
    layout(m, N, M, b->n_seqs, keep);
    ops_positions(m->pos, b->offsets, b->n_seqs);
    // Attention tasks longest sequence first, so the short ones fill in.
    m->n_att = 0;
    for (int q = 0; q < b->n_seqs; q++)
        if (b->offsets[q + 1] > b->offsets[q]) m->seq_order[m->n_att++] = q;
    for (int i = 1; i < m->n_att; i++) {
        int q = m->seq_order[i], len = b->offsets[q + 1] - b->offsets[q], j = i;
        for (; j > 0; j--) {
            int p = m->seq_order[j - 1];
            if (b->offsets[p + 1] - b->offsets[p] >= len) break;
            m->seq_order[j] = p;
        }
        m->seq_order[j] = q;
    }
    gather_rows(m, b, groups, logp);

    Run r = {.m = m, .b = b, .N = N, .M = M, .keep = keep};
    r.n_rows = (N + m->rb - 1) / m->rb;
    embedding_forward(m->slots[0].res_in, b->tokens, m->w.tok_emb, N, D);
    for (int l = 0; l < L; l++) {
        r.l = l;
        r.a = &m->slots[l];
        r.next = (l == L - 1) ? m->res_out : m->slots[keep ? l + 1 : 0].res_in;
        ops_pool_run(m->pool, task_qkv, &r, r.n_rows);
        ops_pool_run(m->pool, task_attention, &r, m->n_att * NH);
        ops_pool_run(m->pool, task_ffn, &r, r.n_rows);
    }
    if (groups) {
        if (cls_grouped(m, &r, groups, logp, dlogp, err) != 0) goto out;
        m->cls_done = keep;
    } else {
        ops_pool_run(m->pool, task_cls_forward, &r, (M + m->cls_rows - 1) / m->cls_rows);
        for (int q = 0; q < M; q++)
            logp[m->rows[q]] = m->cls_logp[q];
    }

    m->last_N = N;
    m->last_M = M;
    m->last_n_seqs = b->n_seqs;
    m->max_T = max_T;
    m->have_acts = keep;
    rc = 0;
out:
    threads_end(blas_prev);
    return rc;
}

int model_forward(Model *m, const ModelBatch *b, float *logp, int keep_activations, BsError *err) {
    return forward(m, b, logp, keep_activations, NULL, NULL, err);
}

int model_forward_grouped(Model *m, const ModelBatch *b, const ModelGroups *groups, float *logp,
                          float *dlogp, BsError *err) {
    if (!groups) return bs_fail(err, "invalid_argument", "", "grouped forward without groups");
    return forward(m, b, logp, groups->grad != NULL, groups, dlogp, err);
}

// The final rmsnorm's backward of a row block from dxg: G, written over
// res_out row by row once the row's rmsnorm backward has read it.
static void task_final_backward(void *ctx, int task, int thread) {
    Run *r = ctx;
    RUN_DIMS;
    ROW_RANGE(task);
    float *dx = tscratch(m, thread), *part = m->part + (size_t)task * D;
    memset(part, 0, D * sizeof(float));
    for (size_t i = r0; i < r0 + (size_t)n; i++) {
        int k = m->rowg[i];
        float *x = m->res_out + i * D; // becomes G's row
        if (k < 0) {
            memset(x, 0, D * sizeof(float));
            continue;
        }
        memset(dx, 0, D * sizeof(float));
        rmsnorm_backward(dx, part, m->dxg + (size_t)k * D, x, w->rms_final, m->rstdf + i, 1,
                         (int)D);
        memcpy(x, dx, D * sizeof(float));
    }
}

// The backward's chunked regions. Region k (0 .. n_chunks) runs the row
// blocks of chunk k (k < n_chunks) as tasks 0 .. n_rowt-1, then the weight
// gradients of chunk k-1 (k > 0), WSPLIT tasks per weight. The row blocks
// leave in chunk slot k & 1 what the weight gradients of their chunk read
// one region later, while the next chunk's row blocks fill the other slot;
// every weight gradient therefore adds its chunks in chunk order.

// Rows of chunk k: first row and count.
static int chunk_rows(const Run *r, int k, size_t *c0) {
    *c0 = (size_t)k * r->chunk_n;
    return r->N - (int)*c0 < r->chunk_n ? r->N - (int)*c0 : r->chunk_n;
}

// Row block `task` of the current chunk: global first row r0, chunk-local
// first row cr, n rows, slot s.
#define CHUNK_BLOCK(task)                                                                          \
    size_t c0_, cr = (size_t)(task) * (size_t)m->rb;                                               \
    int nk_ = chunk_rows(r, r->chunk, &c0_), s = r->chunk & 1;                                     \
    size_t r0 = c0_ + cr;                                                                          \
    int n = nk_ - (int)cr < m->rb ? nk_ - (int)cr : m->rb;                                         \
    (void)s

// Output rows [o0, o1) of part `part` of a weight gradient with C_out rows;
// inner boundaries fall on multiples of 16 rows.
static void wsplit_rows(int C_out, int part, int *o0, int *o1) {
    int a = (int)((long)C_out * part / WSPLIT), b = (int)((long)C_out * (part + 1) / WSPLIT);
    *o0 = part == 0 ? 0 : a & ~15;
    *o1 = part == WSPLIT - 1 ? C_out : b & ~15;
}

// Feed-forward backward of a row block: d(prod) = gout W2, the SwiGLU
// backward over h1, h3 (dh1, dh3 in place; prod for dW2), dxn2 = dh1 W1 +
// dh3 W3, G += the rmsnorm backward (G becomes d(res_mid)) and datt =
// d(res_mid) Wo over res_mid. gout and xn2 (recomputed) go to the slot for
// dW2, dW1 and dW3.
static void ffn_backward_rows(Run *r, int task, int thread) {
    RUN_DIMS;
    CHUNK_BLOCK(task);
    size_t lHD = l * H * D, nD = (size_t)n * D, nH = (size_t)n * H;
    float *g = r->G + r0 * D, *res_mid = a->res_mid + r0 * D, *h1 = a->h1 + r0 * H;
    float *h3 = a->h3 + r0 * H, *dprod = tscratch(m, thread), *dxn = dprod + (size_t)m->rb * H;
    float *part = m->part + (r0 / (size_t)m->rb) * D;
    memcpy(r->gc[s] + cr * D, g, nD * sizeof(float));
    rmsnorm_apply(r->xs[s] + cr * D, res_mid, w->rms_ffn + l * D, a->rstd2 + r0, n, (int)D);
    memset(dprod, 0, nH * sizeof(float));
    matmul_backward(dprod, NULL, g, NULL, w->w2 + lHD, n, (int)H, (int)D);
    swiglu_backward_inplace(r->pr[s] + cr * H, h1, h3, dprod, nH);
    memset(dxn, 0, nD * sizeof(float));
    matmul_backward(dxn, NULL, h1, NULL, w->w1 + lHD, n, (int)D, (int)H);
    matmul_backward(dxn, NULL, h3, NULL, w->w3 + lHD, n, (int)D, (int)H);
    memset(part, 0, D * sizeof(float));
    rmsnorm_backward(g, part, dxn, res_mid, w->rms_ffn + l * D, a->rstd2 + r0, n, (int)D);
    memset(res_mid, 0, nD * sizeof(float));
    matmul_backward(res_mid, NULL, g, NULL, w->wo + l * D * D, n, (int)D, (int)D);
}

// Part of dW2, dW1 or dW3 over the previous chunk.
static void ffn_backward_dw(Run *r, int task) {
    RUN_DIMS;
    const ModelTensors *g = &m->g;
    size_t c0, lHD = l * H * D;
    int k = r->chunk - 1, s = k & 1, nk = chunk_rows(r, k, &c0), o0, o1;
    int which = task / WSPLIT;
    wsplit_rows(which == 0 ? (int)D : (int)H, task % WSPLIT, &o0, &o1);
    if (which == 0)
        matmul_backward_dw_rows(g->w2 + lHD, r->gc[s], r->pr[s], nk, (int)H, (int)D, o0, o1);
    else
        matmul_backward_dw_rows(which == 1 ? g->w1 + lHD : g->w3 + lHD,
                                (which == 1 ? a->h1 : a->h3) + c0 * H, r->xs[s], nk, (int)D, (int)H,
                                o0, o1);
}

static void task_ffn_backward(void *ctx, int task, int thread) {
    Run *r = ctx;
    if (task < r->n_rowt)
        ffn_backward_rows(r, task, thread);
    else
        ffn_backward_dw(r, task - r->n_rowt);
}

// dWo over all rows (task 0), then one (sequence, kv head) of the attention
// backward each, in place: dq over datt, dk over k, dv over v, RoPE's
// backward included.
static void task_att_backward(void *ctx, int task, int thread) {
    Run *r = ctx;
    RUN_DIMS;
    if (task == 0) {
        matmul_backward(NULL, m->g.wo + l * D * D, r->G, a->att, w->wo + l * D * D, r->N, (int)D,
                        (int)D);
        return;
    }
    task -= 1;
    int s = m->seq_order[task / (int)NKV], kh = task % (int)NKV;
    int o = r->b->offsets[s], T = r->b->offsets[s + 1] - o;
    attention_backward_task_inplace(a->res_mid, a->k, a->v, tscratch(m, thread), a->q, a->att_max,
                                    a->att_inv, o, T, kh, (int)NH, (int)NKV, (int)HS, m->pos,
                                    m->rope_cos, m->rope_sin);
}

// Row block of the q/k/v backward: xn1 recomputed into the slot (for dWq,
// dWk, dWv), dxn1 = dq Wq + dk Wk + dv Wv, G += the rmsnorm backward (G
// becomes dLoss/d(layer input)).
static void qkv_backward_rows(Run *r, int task, int thread) {
    RUN_DIMS;
    CHUNK_BLOCK(task);
    size_t lDD = l * D * D, lKD = l * KVD * D;
    float *dxn = tscratch(m, thread), *part = m->part + (r0 / (size_t)m->rb) * D;
    const float *res_in = a->res_in + r0 * D;
    rmsnorm_apply(r->xs[s] + cr * D, res_in, w->rms_att + l * D, a->rstd1 + r0, n, (int)D);
    memset(dxn, 0, (size_t)n * D * sizeof(float));
    matmul_backward(dxn, NULL, a->res_mid + r0 * D, NULL, w->wq + lDD, n, (int)D, (int)D);
    matmul_backward(dxn, NULL, a->k + r0 * KVD, NULL, w->wk + lKD, n, (int)D, (int)KVD);
    matmul_backward(dxn, NULL, a->v + r0 * KVD, NULL, w->wv + lKD, n, (int)D, (int)KVD);
    memset(part, 0, D * sizeof(float));
    rmsnorm_backward(r->G + r0 * D, part, dxn, res_in, w->rms_att + l * D, a->rstd1 + r0, n,
                     (int)D);
}

// Part of dWq, dWk or dWv over the previous chunk.
static void qkv_backward_dw(Run *r, int task) {
    RUN_DIMS;
    const ModelTensors *g = &m->g;
    size_t c0, lDD = l * D * D, lKD = l * KVD * D;
    int k = r->chunk - 1, s = k & 1, nk = chunk_rows(r, k, &c0), o0, o1;
    int which = task / WSPLIT;
    wsplit_rows(which == 0 ? (int)D : (int)KVD, task % WSPLIT, &o0, &o1);
    if (which == 0)
        matmul_backward_dw_rows(g->wq + lDD, a->res_mid + c0 * D, r->xs[s], nk, (int)D, (int)D, o0,
                                o1);
    else
        matmul_backward_dw_rows(which == 1 ? g->wk + lKD : g->wv + lKD,
                                (which == 1 ? a->k : a->v) + c0 * KVD, r->xs[s], nk, (int)D,
                                (int)KVD, o0, o1);
}

static void task_qkv_backward(void *ctx, int task, int thread) {
    Run *r = ctx;
    if (task < r->n_rowt)
        qkv_backward_rows(r, task, thread);
    else
        qkv_backward_dw(r, task - r->n_rowt);
}

// Regions 0 .. n_chunks of one chunked phase (see task_ffn_backward).
static void run_chunked(Model *m, Run *r, OpsTaskFn fn) {
    for (int k = 0; k <= r->n_chunks; k++) {
        size_t c0;
        r->chunk = k;
        r->n_rowt = k < r->n_chunks ? (chunk_rows(r, k, &c0) + m->rb - 1) / m->rb : 0;
        ops_pool_run(m->pool, fn, r, r->n_rowt + (k > 0 ? 3 * WSPLIT : 0));
    }
}

// dw += the row blocks' partial RMSNorm weight gradients, in block order.
static void reduce_parts(float *dw, const float *part, int n_blocks, int D) {
    for (int t = 0; t < n_blocks; t++)
        for (int d = 0; d < D; d++)
            dw[d] += part[(size_t)t * D + d];
}

int model_backward(Model *m, const ModelBatch *b, const float *dlogp, BsError *err) {
    const ModelConfig *c = &m->c;
    if (!m->grads) return bs_fail(err, "invalid_argument", "", "a frozen model has no gradients");
    if (!m->have_acts)
        return bs_fail(err, "invalid_argument", "",
                       "model_backward needs a forward with keep_activations first (each "
                       "backward consumes the activations of its forward)");
    int N = b->n_seqs > 0 ? b->offsets[b->n_seqs] : 0;
    if (b->n_seqs != m->last_n_seqs || N != m->last_N)
        return bs_fail(err, "invalid_argument", "",
                       "model_backward got a different batch than the last forward");
    if (m->cls_done ? dlogp != NULL : dlogp == NULL)
        return bs_fail(err, "invalid_argument", "",
                       m->cls_done ? "after model_forward_grouped, model_backward takes no dlogp"
                                   : "model_backward needs dlogp");
    if (N == 0) return 0;
    int L = c->n_layers, D = c->dim, M = m->last_M;
    int NKV = c->n_kv_heads;
    int blas_prev, rc = -1;
    threads_begin(m, &blas_prev);
    BufSizes s;
    if (buf_sizes(c, (size_t)N, (size_t)M, (size_t)b->n_seqs, (size_t)m->max_T, 1, m->pool_n, &s) !=
        0) {
        bs_fail(err, "out_of_memory", "", "gradient sizes of a %d-token batch overflow", N);
        goto out;
    }
    if (ensure(&m->bwd, &m->bwd_cap, s.bwd, err) != 0 ||
        ensure(&m->scratch, &m->scratch_cap, s.scratch, err) != 0)
        goto out;
    m->scratch_floats = thread_floats(c, (size_t)m->max_T, 1, 1);
    m->have_acts = 0; // from here on the activations are overwritten
    Run r = {.m = m, .b = b, .N = N, .M = M, .keep = 1};
    r.n_rows = (N + m->rb - 1) / m->rb;
    r.chunk_n = chunk_rows_of(c);
    r.n_chunks = (N + r.chunk_n - 1) / r.chunk_n;
    size_t cN = chunk_cap(c, (size_t)N), H = (size_t)c->hidden_dim;
    float *p = m->bwd;
    r.G = m->res_out;
    for (int k = 0; k < 2; k++) {
        r.gc[k] = p, p += cN * D;
        r.xs[k] = p, p += cN * D;
        r.pr[k] = p, p += cN * H;
    }

    // Classifier (unless the grouped forward did it): dwcls and dxg from
    // logits recomputed block by block.
    if (!m->cls_done) {
        if (cache_reserve(m, M, 1, err) != 0) goto out;
        for (int k = 0; k < M; k++)
            m->cls_g[k] = dlogp[m->rows[k]];
        memset(m->dxg, 0, (size_t)M * (size_t)D * sizeof(float));
        cls_grad_recompute(m, &r, 0, M);
    }
    m->cls_done = 0;
    ops_pool_run(m->pool, task_final_backward, &r, r.n_rows);
    reduce_parts(m->g.rms_final, m->part, r.n_rows, D);

    // G holds dLoss/d(layer output) going down; each block adds its
    // branch's gradient to the pass-through of the residual connection.
    for (int l = L - 1; l >= 0; l--) {
        r.l = l;
        r.a = &m->slots[l];
        run_chunked(m, &r, task_ffn_backward);
        reduce_parts(m->g.rms_ffn + (size_t)l * D, m->part, r.n_rows, D);
        ops_pool_run(m->pool, task_att_backward, &r, 1 + m->n_att * NKV);
        run_chunked(m, &r, task_qkv_backward);
        reduce_parts(m->g.rms_att + (size_t)l * D, m->part, r.n_rows, D);
    }
    embedding_backward(m->g.tok_emb, r.G, b->tokens, N, D);
    rc = 0;
out:
    threads_end(blas_prev);
    return rc;
}
