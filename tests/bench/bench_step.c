// bench_step.c — the training-step benchmark (issue 5): times one optimizer
// step of DPO (also with precomputed reference log-probs), SFT and ORPO on
// pre-tokenized random data, composed from the trainer library exactly as
// trainer/train.c composes it (pack chosen then rejected, reference forward,
// the policy's grouped forward with each pair's dL/dlogp and the classifier's
// backward, align_compute, backward, clip, AdamW); and the
// cblas_sgemm peak of the machine. Prints one JSON object on stdout and a
// human line on stderr; with --serve, after the warm-up, steps and sgemm
// peaks on demand (serve() below; tests/bench/interleave.py drives that).
// Not a test: tests/bench/run.sh drives it.
//
//   bench_step --shape S|M|L --method dpo|dpo_pre|sft|orpo [--threads N]
//              [--pairs B] [--seq T] [--steps K] [--warmup W] [--seed S]
//              [--dump PREFIX] [--serve]
//   bench_step --sgemm [--threads-list 1,2] [--min-seconds X]
//
// FLOPs of a step (counted analytically, no recomputation counted):
//   F_fwd(N, M) = 2 N L (2 D^2 + 2 D KVD + 3 D H)        matmuls of the layers
//               + 4 L NH HS sum_s T_s^2                 QK^T and PV, full square
//               + 2 M D V                               classifier rows with a target
//   backward = 2 x forward; step = 3 F_fwd(policy) + F_fwd(reference) when the
//   reference runs (dpo), + 0 for dpo_pre/sft/orpo. N tokens, M target rows.
//   Element-wise ops, softmax and AdamW are not counted (memory-bound, < 1%).
// Theoretical minimum memory of a step (bytes, fp32):
//   4 P (weights) + 4 P (grads) + 8 P (AdamW m, v) + 4 P (reference, dpo only)
//   + 4 N (L (4 D + 2 KVD + 2 NH + 2 H + 2) + 2 D + 1)   activations kept for
//   backward (the per-token set model.c documents: residual in and mid, RMSNorm
//   rstd, q/k/v, attention row stats and output, h1/h3; no (T, T)
//   probabilities, no normed inputs: the backward recomputes those from the
//   residual and rstd). Transient scratch (logits tiles, backward chunks) is
//   not counted: it can be made arbitrarily small by chunking.
// The RSS compared with it is the step-phase peak less the file-backed pages
// (RssFile + RssShmem after the steps: the mapped code of the binary,
// OpenBLAS, libc, ~5 MB), which no training data lives in; the raw peak is
// reported as well.
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "align.h"
#include "model.h"
#include "optim.h"
#include "recipe.h"
#include "train.h"

#define MAX_RANGES 16
#define MAX_STEPS 64

typedef struct {
    const char *name;
    ModelConfig c;
    int pairs, seq;
} Shape;

static const Shape k_shapes[] = {
    {"S", {64, 172, 5, 8, 4, 512, 128, 1, 1e-5f, 10000.0f}, 8, 128},
    {"M", {288, 768, 6, 6, 6, 32000, 256, 1, 1e-5f, 10000.0f}, 4, 256},
    {"L", {512, 1376, 8, 8, 8, 32000, 256, 1, 1e-5f, 10000.0f}, 4, 256},
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

// CPU seconds of the whole process (all threads): less sensitive than wall
// time to other processes sharing the cores, though not to cache contention.
static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *v, int n) {
    double tmp[MAX_STEPS];
    if (n <= 0) return 0.0;
    memcpy(tmp, v, (size_t)n * sizeof *v);
    qsort(tmp, (size_t)n, sizeof *tmp, cmp_double);
    return n % 2 ? tmp[n / 2] : 0.5 * (tmp[n / 2 - 1] + tmp[n / 2]);
}

// kB from /proc/self/status (VmRSS, VmHWM), -1 when unreadable.
static long proc_kb(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long v = -1;
    size_t n = strlen(key);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, n) == 0 && line[n] == ':') v = atol(line + n + 1);
    fclose(f);
    return v;
}

// Resets VmHWM to the current RSS (Linux >= 4.0), so the peak of the timed
// phase can be told apart from set-up (e.g. a reference freed after precompute).
static int reset_peak(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return -1;
    int ok = fputs("5", f) >= 0;
    return (fclose(f) == 0 && ok) ? 0 : -1;
}

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// ---------------------------------------------------------------------------
// data: packed by trainer/train.c's own train_pack_batch

// Random pairs: pair j has prompt (np), chosen (nc), rejected (nc) ids, seen
// by the packer as a Dataset of B rows.
typedef struct {
    int B, np, nc;
    int *prompt, *chosen, *rejected; // (B, np), (B, nc), (B, nc)
    Example *rows;                   // (B) views into the arrays above
    int *idx;                        // (B) 0 .. B-1: every row, in order
    Dataset ds;
} Pairs;

// ---------------------------------------------------------------------------
// FLOPs and memory, as documented at the top

static double flops_forward(const ModelConfig *c, const TrainPack *p) {
    double D = c->dim, H = c->hidden_dim, L = c->n_layers, V = c->vocab_size;
    double NH = c->n_heads, HS = D / NH, KVD = c->n_kv_heads * HS;
    double N = p->n_tok, M = 0, T2 = 0;
    for (int i = 0; i < p->n_tok; i++)
        M += p->targets[i] >= 0;
    for (int s = 0; s < p->n_seqs; s++) {
        double T = p->offsets[s + 1] - p->offsets[s];
        T2 += T * T;
    }
    return 2.0 * N * L * (2 * D * D + 2 * D * KVD + 3 * D * H) + 4.0 * L * NH * HS * T2 +
           2.0 * M * D * V;
}

static double act_min_bytes(const ModelConfig *c, int N) {
    double D = c->dim, H = c->hidden_dim, L = c->n_layers, NH = c->n_heads;
    double KVD = c->n_kv_heads * (D / NH);
    return 4.0 * N * (L * (4 * D + 2 * KVD + 2 * NH + 2 * H + 2) + 2 * D + 1);
}

// ---------------------------------------------------------------------------
// sgemm peak

typedef struct {
    const char *name;
    CBLAS_TRANSPOSE ta, tb;
    int m, n, k;
} GemmShape;

// Square, and the shapes a training step runs (M/L layers and classifier).
static const GemmShape k_gemms[] = {
    {"square_1024", CblasNoTrans, CblasNoTrans, 1024, 1024, 1024},
    {"square_2048", CblasNoTrans, CblasNoTrans, 2048, 2048, 2048},
    {"M_ffn_fwd_2048x768x288_NT", CblasNoTrans, CblasTrans, 2048, 768, 288},
    {"M_ffn_dW_768x288x2048_TN", CblasTrans, CblasNoTrans, 768, 288, 2048},
    {"M_cls_fwd_1536x32000x288_NT", CblasNoTrans, CblasTrans, 1536, 32000, 288},
    {"L_ffn_fwd_2048x1376x512_NT", CblasNoTrans, CblasTrans, 2048, 1376, 512},
    {"L_cls_dW_32000x512x1536_TN", CblasTrans, CblasNoTrans, 32000, 512, 1536},
    {"S_ffn_fwd_2048x172x64_NT", CblasNoTrans, CblasTrans, 2048, 172, 64},
};

// Median GFLOP/s (wall and per CPU-second) of shape g over at least 3 timed
// calls and min_seconds, after one warm-up call; returns the timed calls.
static int gemm_rate(const GemmShape *g, const float *a, const float *b, float *cbuf,
                     double min_seconds, double *med, double *med_cpu) {
    int lda = g->ta == CblasNoTrans ? g->k : g->m;
    int ldb = g->tb == CblasNoTrans ? g->n : g->k;
    double fl = 2.0 * g->m * g->n * g->k, rates[MAX_STEPS], cpu_rates[MAX_STEPS];
    cblas_sgemm(CblasRowMajor, g->ta, g->tb, g->m, g->n, g->k, 1.0f, a, lda, b, ldb, 0.0f, cbuf,
                g->n); // warm-up
    int reps = 0;
    double t_start = now_s();
    while (reps < MAX_STEPS && (reps < 3 || now_s() - t_start < min_seconds)) {
        double c0 = cpu_s(), t0 = now_s();
        cblas_sgemm(CblasRowMajor, g->ta, g->tb, g->m, g->n, g->k, 1.0f, a, lda, b, ldb, 0.0f, cbuf,
                    g->n);
        rates[reps] = fl / (now_s() - t0) / 1e9;
        cpu_rates[reps++] = fl / (cpu_s() - c0) / 1e9;
    }
    *med = median(rates, reps);
    *med_cpu = median(cpu_rates, reps);
    return reps;
}

static int run_sgemm(const int *threads, int n_threads, double min_seconds) {
    size_t maxa = 0, maxb = 0, maxc = 0;
    size_t ng = sizeof k_gemms / sizeof k_gemms[0];
    for (size_t i = 0; i < ng; i++) {
        size_t m = (size_t)k_gemms[i].m, n = (size_t)k_gemms[i].n, k = (size_t)k_gemms[i].k;
        maxa = m * k > maxa ? m * k : maxa;
        maxb = k * n > maxb ? k * n : maxb;
        maxc = m * n > maxc ? m * n : maxc;
    }
    float *a = malloc(maxa * sizeof(float)), *b = malloc(maxb * sizeof(float));
    float *cbuf = malloc(maxc * sizeof(float));
    if (!a || !b || !cbuf) {
        fprintf(stderr, "bench_step: out of memory\n");
        free(a);
        free(b);
        free(cbuf);
        return 1;
    }
    uint64_t rs = 7;
    for (size_t i = 0; i < maxa; i++)
        a[i] = (float)((splitmix64(&rs) >> 40) * 0x1.0p-24 - 0.5);
    for (size_t i = 0; i < maxb; i++)
        b[i] = (float)((splitmix64(&rs) >> 40) * 0x1.0p-24 - 0.5);
    memset(cbuf, 0, maxc * sizeof(float));
    printf("{\"kind\":\"sgemm\",\"blas\":\"%s\",\"results\":[", openblas_get_config());
    for (int t = 0; t < n_threads; t++) {
        openblas_set_num_threads(threads[t]);
        double peak = 0.0, peak_cpu = 0.0;
        printf("%s{\"threads\":%d,\"shapes\":[", t ? "," : "", threads[t]);
        for (size_t i = 0; i < ng; i++) {
            const GemmShape *g = &k_gemms[i];
            double med, med_cpu;
            int reps = gemm_rate(g, a, b, cbuf, min_seconds, &med, &med_cpu);
            peak = med > peak ? med : peak;
            peak_cpu = med_cpu > peak_cpu ? med_cpu : peak_cpu;
            printf("%s{\"name\":\"%s\",\"gflops\":%.2f,\"gflops_per_cpu_s\":%.2f,\"reps\":%d}",
                   i ? "," : "", g->name, med, med_cpu, reps);
            fprintf(stderr, "sgemm threads=%d %-30s %7.1f GFLOP/s, %7.1f GFLOP/CPU-s (%d reps)\n",
                    threads[t], g->name, med, med_cpu, reps);
        }
        printf("],\"peak_gflops\":%.2f,\"peak_gflops_per_cpu_s\":%.2f}", peak, peak_cpu);
    }
    printf("]}\n");
    free(a);
    free(b);
    free(cbuf);
    return 0;
}

// ---------------------------------------------------------------------------
// one training step

typedef enum { M_DPO, M_DPO_PRE, M_SFT, M_ORPO } BenchMethod;

typedef struct {
    BenchMethod method;
    Recipe r;
    Model *policy, *ref;
    const ModelConfig *c;
    size_t P;
    float *m, *v;
    ParamRange ranges[MAX_RANGES];
    int n_ranges;
    TrainPack pk;
    const Pairs *d;
    int preference, orpo, dpo;
    double *ref_table; // (2B) dpo_pre: chosen sums then rejected sums
    double *dc, *dr, *da;
    int t;
    BsError err;
} Bench;

typedef struct {
    double total, cpu, pack, fwd, ref, align, bwd, opt;
    double loss, grad_norm, logps_chosen, logps_rejected;
} StepTimes;

static int bench_step(Bench *b, StepTimes *st) {
    TrainPack *p = &b->pk;
    int B = b->d->B;
    double c0 = cpu_s(), t0 = now_s();
    model_zero_grads(b->policy);
    if (train_pack_batch(p, &b->d->ds, b->d->idx, B, b->preference, b->orpo, &b->err) != 0)
        return -1;
    double t1 = now_s();
    ModelBatch mb = {p->n_seqs, p->offsets, p->tokens, p->targets};
    // As train.c: the reference first, then the policy's grouped forward,
    // which forms each pair's gradient (align_pair_gradient) while its logits
    // are held, and align_compute for the loss.
    if (b->method == M_DPO) {
        if (train_pack_score(p, b->ref, p->ref_logp, &b->err) != 0) return -1;
        train_pack_sums(p, p->ref_logp, p->ref_comp, NULL);
    } else if (b->method == M_DPO_PRE) {
        memcpy(p->ref_comp, b->ref_table, 2 * (size_t)B * sizeof(double));
    }
    double t2 = now_s();
    AlignResult ar = {0};
    ar.d_chosen = b->dc;
    ar.d_rejected = b->dr;
    ar.d_chosen_all = b->da;
    memset(b->da, 0, (size_t)B * sizeof(double));
    if (train_pack_policy_forward(p, b->policy, &b->r, B, b->preference, b->dpo, b->orpo, 1.0, &ar,
                                  &b->err) != 0)
        return -1;
    double t3 = now_s(), t4 = t3;
    if (model_backward(b->policy, &mb, NULL, &b->err) != 0) return -1;
    double t5 = now_s();
    float *grads = model_grads(b->policy);
    OpsPool *pool = model_pool(b->policy); // as train.c: the policy's threads
    double gn = clip_grad_norm_pool(pool, grads, b->P, b->r.max_grad_norm);
    AdamWConfig ac = {b->r.learning_rate, b->r.adam_beta1, b->r.adam_beta2, b->r.adam_epsilon,
                      b->r.weight_decay};
    b->t++;
    adamw_step_pool(pool, model_params(b->policy), grads, b->m, b->v, b->ranges, b->n_ranges, b->t,
                    &ac);
    double t6 = now_s();
    st->cpu = cpu_s() - c0;
    st->total = t6 - t0;
    st->pack = t1 - t0;
    st->ref = t2 - t1;
    st->fwd = t3 - t2; // includes the classifier's backward and align_compute
    st->align = t4 - t3;
    st->bwd = t5 - t4;
    st->opt = t6 - t5;
    st->loss = ar.loss;
    st->grad_norm = gn;
    double sc = 0, sr = 0;
    for (int j = 0; j < B; j++) {
        sc += p->comp[j];
        if (b->preference) sr += p->comp[B + j];
    }
    st->logps_chosen = sc / B;
    st->logps_rejected = sr / B;
    return 0;
}

// ---------------------------------------------------------------------------
// --serve: steps on demand, for tests/bench/interleave.py

// Reads commands from stdin, one per line, until EOF, answering each with
// one JSON line on stdout:
//   step K   K training steps: {"kind":"serve_step","step_s":[...],...}
//   peak     this process's thread count's sgemm peak (square 1024 and 2048,
//            the larger median): {"kind":"serve_peak","peak_gflops":X,...}
// so that a driver can alternate single steps of several processes (ours
// and torch's) and bracket each of ours with a peak measured seconds away
// from it: this VM's speed drifts by up to 2x within a minute.
static int serve(Bench *b, int threads, double flops) {
    size_t n2 = (size_t)2048 * 2048;
    float *a = malloc(n2 * sizeof(float)), *bb = malloc(n2 * sizeof(float));
    float *cbuf = calloc(n2, sizeof(float));
    int rc = -1;
    if (!a || !bb || !cbuf) {
        fprintf(stderr, "bench_step: out of memory\n");
        goto out;
    }
    uint64_t rs = 7;
    for (size_t i = 0; i < n2; i++) {
        a[i] = (float)((splitmix64(&rs) >> 40) * 0x1.0p-24 - 0.5);
        bb[i] = (float)((splitmix64(&rs) >> 40) * 0x1.0p-24 - 0.5);
    }
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        int k = 0;
        if (strcmp(line, "peak\n") == 0) {
            double m1, c1, m2, c2;
            gemm_rate(&k_gemms[0], a, bb, cbuf, 0.1, &m1, &c1);
            gemm_rate(&k_gemms[1], a, bb, cbuf, 0.1, &m2, &c2);
            // OpenBLAS's own threads spin for ~0.1 s after a threaded call
            // before they sleep: let them, or the next step shares the cores.
            struct timespec idle = {0, 300000000};
            nanosleep(&idle, NULL);
            printf("{\"kind\":\"serve_peak\",\"threads\":%d,\"peak_gflops\":%.2f,"
                   "\"shapes\":{\"square_1024\":%.2f,\"square_2048\":%.2f}}\n",
                   threads, m1 > m2 ? m1 : m2, m1, m2);
        } else if (sscanf(line, "step %d", &k) == 1 && k >= 1 && k <= MAX_STEPS) {
            double tot[MAX_STEPS], cpu[MAX_STEPS];
            for (int i = 0; i < k; i++) {
                StepTimes st;
                if (bench_step(b, &st) != 0) {
                    fprintf(stderr, "bench_step: %s: %s\n", b->err.code, b->err.message);
                    goto out;
                }
                tot[i] = st.total;
                cpu[i] = st.cpu;
            }
            double med = median(tot, k);
            printf("{\"kind\":\"serve_step\",\"threads\":%d,\"steps\":%d,\"step_s\":[", threads, k);
            for (int i = 0; i < k; i++)
                printf("%s%.6f", i ? "," : "", tot[i]);
            printf("],\"step_median_s\":%.6f,\"cpu_median_s\":%.6f,\"gflops\":%.3f}\n", med,
                   median(cpu, k), flops / med / 1e9);
        } else {
            fprintf(stderr, "bench_step: --serve: unknown command %s", line);
            goto out;
        }
        if (fflush(stdout) != 0) goto out;
    }
    rc = 0;
out:
    free(a);
    free(bb);
    free(cbuf);
    return rc;
}

static int write_file(const char *path, const void *data, size_t bytes) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, bytes, f);
    int rc = fclose(f);
    return (w == bytes && rc == 0) ? 0 : -1;
}

static void usage(void) {
    fprintf(stderr, "usage: bench_step --shape S|M|L --method dpo|dpo_pre|sft|orpo [--threads N]\n"
                    "                  [--pairs B] [--seq T] [--steps K] [--warmup W] [--seed S]\n"
                    "                  [--dump PREFIX] [--serve]\n"
                    "       bench_step --sgemm [--threads-list 1,2] [--min-seconds X]\n");
}

int main(int argc, char **argv) {
    const char *shape_name = "S", *method_name = "dpo", *dump = NULL;
    int threads = 1, pairs = 0, seq = 0, steps = 3, warmup = 1, sgemm = 0, serve_mode = 0;
    unsigned long long seed = 42;
    int tlist[8] = {1, 2}, n_tlist = 2;
    double min_seconds = 0.5;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--sgemm") == 0) {
            sgemm = 1;
            continue;
        }
        if (strcmp(a, "--serve") == 0) {
            serve_mode = 1;
            continue;
        }
        if (!v) {
            usage();
            return 2;
        }
        i++;
        if (strcmp(a, "--shape") == 0)
            shape_name = v;
        else if (strcmp(a, "--method") == 0)
            method_name = v;
        else if (strcmp(a, "--threads") == 0)
            threads = atoi(v);
        else if (strcmp(a, "--pairs") == 0)
            pairs = atoi(v);
        else if (strcmp(a, "--seq") == 0)
            seq = atoi(v);
        else if (strcmp(a, "--steps") == 0)
            steps = atoi(v);
        else if (strcmp(a, "--warmup") == 0)
            warmup = atoi(v);
        else if (strcmp(a, "--seed") == 0)
            seed = strtoull(v, NULL, 10);
        else if (strcmp(a, "--dump") == 0)
            dump = v;
        else if (strcmp(a, "--min-seconds") == 0)
            min_seconds = atof(v);
        else if (strcmp(a, "--threads-list") == 0) {
            n_tlist = 0;
            for (const char *s = v; *s && n_tlist < 8;) {
                tlist[n_tlist++] = atoi(s);
                const char *comma = strchr(s, ',');
                if (!comma) break;
                s = comma + 1;
            }
        } else {
            usage();
            return 2;
        }
    }
    if (sgemm) return run_sgemm(tlist, n_tlist, min_seconds);

    const Shape *sh = NULL;
    for (size_t i = 0; i < sizeof k_shapes / sizeof k_shapes[0]; i++)
        if (strcmp(k_shapes[i].name, shape_name) == 0) sh = &k_shapes[i];
    BenchMethod method;
    if (strcmp(method_name, "dpo") == 0)
        method = M_DPO;
    else if (strcmp(method_name, "dpo_pre") == 0)
        method = M_DPO_PRE;
    else if (strcmp(method_name, "sft") == 0)
        method = M_SFT;
    else if (strcmp(method_name, "orpo") == 0)
        method = M_ORPO;
    else
        sh = NULL;
    if (!sh || threads < 1 || steps < 1 || steps > MAX_STEPS || warmup < 0 || pairs < 0 ||
        seq < 0 || (serve_mode && warmup < 1)) {
        usage();
        return 2;
    }
    ModelConfig cfg = sh->c;
    int B = pairs ? pairs : sh->pairs, T = seq ? seq : sh->seq;
    int np = T / 4, nc = T - np;
    if (np < 1 || nc < 1) {
        fprintf(stderr, "bench_step: --seq must be at least 4\n");
        return 2;
    }
    if (T > cfg.seq_len) cfg.seq_len = T;
    openblas_set_num_threads(threads);
    long rss_base_kb = proc_kb("VmRSS");

    Bench bench = {0};
    Bench *b = &bench;
    Pairs d = {0};
    d.B = B, d.np = np, d.nc = nc;
    int rc = 1;
    b->method = method;
    b->dpo = method == M_DPO || method == M_DPO_PRE;
    b->orpo = method == M_ORPO;
    b->preference = method != M_SFT;
    recipe_defaults(&b->r, method == M_SFT ? METHOD_SFT : b->orpo ? METHOD_ORPO : METHOD_DPO);
    b->d = &d;
    d.prompt = malloc((size_t)B * np * sizeof(int));
    d.chosen = malloc((size_t)B * nc * sizeof(int));
    d.rejected = malloc((size_t)B * nc * sizeof(int));
    d.rows = calloc((size_t)B, sizeof(Example));
    d.idx = malloc((size_t)B * sizeof(int));
    b->dc = calloc((size_t)B, sizeof(double));
    b->dr = calloc((size_t)B, sizeof(double));
    b->da = calloc((size_t)B, sizeof(double));
    if (!d.prompt || !d.chosen || !d.rejected || !d.rows || !d.idx || !b->dc || !b->dr || !b->da) {
        fprintf(stderr, "bench_step: out of memory\n");
        goto done;
    }
    uint64_t rs = seed ^ 0xD1B54A32D192ED03ull;
    for (size_t i = 0; i < (size_t)B * np; i++)
        d.prompt[i] = (int)(splitmix64(&rs) % (uint64_t)cfg.vocab_size);
    for (size_t i = 0; i < (size_t)B * nc; i++)
        d.chosen[i] = (int)(splitmix64(&rs) % (uint64_t)cfg.vocab_size);
    for (size_t i = 0; i < (size_t)B * nc; i++)
        d.rejected[i] = (int)(splitmix64(&rs) % (uint64_t)cfg.vocab_size);
    for (int j = 0; j < B; j++) {
        Example *e = &d.rows[j];
        e->prompt = d.prompt + (size_t)j * np;
        e->n_prompt = np;
        e->chosen = d.chosen + (size_t)j * nc;
        e->n_chosen = nc;
        e->rejected = d.rejected + (size_t)j * nc;
        e->n_rejected = nc;
        e->line = j + 1;
        d.idx[j] = j;
    }
    d.ds.rows = d.rows;
    d.ds.n = B;

    if (model_create(&b->policy, &cfg, 1, &b->err) != 0) goto fail;
    model_init_random(b->policy, seed);
    b->c = model_config(b->policy);
    b->P = model_param_count(&cfg);
    b->m = calloc(b->P, sizeof(float));
    b->v = calloc(b->P, sizeof(float));
    if (!b->m || !b->v) {
        fprintf(stderr, "bench_step: out of memory for AdamW state\n");
        goto done;
    }
    b->n_ranges = model_param_ranges(&cfg, b->ranges, MAX_RANGES);
    if (dump) {
        char path[4096];
        snprintf(path, sizeof path, "%s.params.f32", dump);
        int bad = write_file(path, model_params(b->policy), b->P * sizeof(float));
        // tokens: prompt (B, np), chosen (B, nc), rejected (B, nc), int32
        snprintf(path, sizeof path, "%s.tokens.i32", dump);
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(d.prompt, sizeof(int), (size_t)B * np, f) != (size_t)B * np ||
            fwrite(d.chosen, sizeof(int), (size_t)B * nc, f) != (size_t)B * nc ||
            fwrite(d.rejected, sizeof(int), (size_t)B * nc, f) != (size_t)B * nc)
            bad = 1;
        if (f && fclose(f) != 0) bad = 1;
        if (bad) {
            fprintf(stderr, "bench_step: cannot write %s.*\n", dump);
            goto done;
        }
    }

    double t_pre = 0.0;
    if (b->dpo) {
        // The frozen reference: a copy of the start, as train.c's load_reference.
        if (model_create(&b->ref, &cfg, 0, &b->err) != 0) goto fail;
        memcpy(model_params(b->ref), model_params(b->policy), b->P * sizeof(float));
    }
    if (method == M_DPO_PRE) {
        // train.c's precompute_refs for this one batch, then the reference is freed.
        double t0 = now_s();
        if (train_pack_batch(&b->pk, &d.ds, d.idx, B, 1, 0, &b->err) != 0) goto fail;
        b->ref_table = malloc(2 * (size_t)B * sizeof(double));
        if (!b->ref_table) {
            fprintf(stderr, "bench_step: out of memory\n");
            goto done;
        }
        if (train_pack_score(&b->pk, b->ref, b->pk.ref_logp, &b->err) != 0) goto fail;
        train_pack_sums(&b->pk, b->pk.ref_logp, b->ref_table, NULL);
        t_pre = now_s() - t0;
        model_free(b->ref);
        b->ref = NULL;
    }

    StepTimes first = {0}, st[MAX_STEPS];
    double tot[MAX_STEPS], cpu[MAX_STEPS], fwd[MAX_STEPS], ref[MAX_STEPS], bwd[MAX_STEPS],
        opt[MAX_STEPS], other[MAX_STEPS];
    for (int i = 0; i < warmup; i++) {
        StepTimes w;
        if (bench_step(b, &w) != 0) goto fail;
        if (i == 0) first = w;
    }
    if (serve_mode) {
        // The warm-up packed the batch every step uses: the FLOPs are known.
        double f = flops_forward(b->c, &b->pk);
        f = 3.0 * f + (method == M_DPO ? f : 0.0);
        printf("{\"kind\":\"serve_ready\",\"impl\":\"c\",\"shape\":\"%s\",\"method\":\"%s\","
               "\"threads\":%d,\"flops_per_step\":%.6e,\"first_step\":{\"loss\":%.9g,"
               "\"grad_norm\":%.9g,\"logps_chosen\":%.9g,\"logps_rejected\":%.9g}}\n",
               sh->name, method_name, threads, f, first.loss, first.grad_norm, first.logps_chosen,
               first.logps_rejected);
        if (fflush(stdout) == 0 && serve(b, threads, f) == 0) rc = 0;
        goto done;
    }
    long rss_setup_kb = proc_kb("VmRSS"), setup_peak_kb = proc_kb("VmHWM");
    int peak_reset = reset_peak() == 0;
    for (int i = 0; i < steps; i++) {
        if (bench_step(b, &st[i]) != 0) goto fail;
        if (warmup == 0 && i == 0) first = st[i];
        tot[i] = st[i].total;
        cpu[i] = st[i].cpu;
        fwd[i] = st[i].fwd;
        ref[i] = st[i].ref;
        bwd[i] = st[i].bwd;
        opt[i] = st[i].opt;
        other[i] = st[i].pack + st[i].align;
    }
    long step_peak_kb = peak_reset ? proc_kb("VmHWM") : -1;
    long file_kb = proc_kb("RssFile"), shmem_kb = proc_kb("RssShmem");
    long mapped_kb = file_kb >= 0 && shmem_kb >= 0 ? file_kb + shmem_kb : -1;
    // clear_refs also resets ru_maxrss, so the process peak is the larger of
    // the set-up peak and the step-phase peak.
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    long peak_kb = ru.ru_maxrss > setup_peak_kb ? ru.ru_maxrss : setup_peak_kb;
    peak_kb = step_peak_kb > peak_kb ? step_peak_kb : peak_kb;

    // Work per step: the packed batch of the last step is the step's batch.
    double f_pol = flops_forward(b->c, &b->pk);
    double flops = 3.0 * f_pol + (method == M_DPO ? f_pol : 0.0);
    int M = 0;
    for (int i = 0; i < b->pk.n_tok; i++)
        M += b->pk.targets[i] >= 0;
    double P4 = 4.0 * (double)b->P;
    double w_bytes = P4, g_bytes = P4, adam_bytes = 2 * P4, ref_bytes = method == M_DPO ? P4 : 0;
    double act_bytes = act_min_bytes(b->c, b->pk.n_tok);
    double min_bytes = w_bytes + g_bytes + adam_bytes + ref_bytes + act_bytes;
    size_t model_act = model_activation_bytes(b->c, b->pk.n_tok, T, 1);
    double med = median(tot, steps), tmin = tot[0];
    for (int i = 1; i < steps; i++)
        tmin = tot[i] < tmin ? tot[i] : tmin;

    printf("{\"kind\":\"step\",\"impl\":\"c\",\"shape\":\"%s\",\"method\":\"%s\",\"threads\":%d,"
           "\"blas\":\"%s\",\"pairs\":%d,\"seq\":%d,\"prompt\":%d,\"params\":%zu,"
           "\"tokens\":%d,\"target_rows\":%d,\"warmup\":%d,\"steps\":%d,",
           sh->name, method_name, threads, openblas_get_config(), B, T, np, b->P, b->pk.n_tok, M,
           warmup, steps);
    printf("\"step_s\":[");
    for (int i = 0; i < steps; i++)
        printf("%s%.6f", i ? "," : "", tot[i]);
    printf("],\"step_median_s\":%.6f,\"step_min_s\":%.6f,\"cpu_median_s\":%.6f,", med, tmin,
           median(cpu, steps));
    printf("\"phase_median_s\":{\"policy_fwd\":%.6f,\"ref_fwd\":%.6f,\"backward\":%.6f,"
           "\"optimizer\":%.6f,\"pack_align\":%.6f},",
           median(fwd, steps), median(ref, steps), median(bwd, steps), median(opt, steps),
           median(other, steps));
    printf("\"precompute_ref_s\":%.6f,\"tokens_per_s\":%.1f,\"flops_per_step\":%.6e,"
           "\"gflops\":%.3f,",
           t_pre, b->pk.n_tok / med, flops, flops / med / 1e9);
    printf("\"first_step\":{\"loss\":%.9g,\"grad_norm\":%.9g,\"logps_chosen\":%.9g,"
           "\"logps_rejected\":%.9g},",
           first.loss, first.grad_norm, first.logps_chosen, first.logps_rejected);
    printf("\"last_loss\":%.9g,", st[steps - 1].loss);
    printf("\"rss_base_kb\":%ld,\"rss_after_warmup_kb\":%ld,\"peak_rss_kb\":%ld,"
           "\"step_peak_rss_kb\":%ld,\"file_backed_rss_kb\":%ld,",
           rss_base_kb, rss_setup_kb, peak_kb, step_peak_kb, mapped_kb);
    printf("\"min_bytes\":{\"weights\":%.0f,\"grads\":%.0f,\"adamw\":%.0f,\"reference\":%.0f,"
           "\"activations\":%.0f,\"total\":%.0f},\"model_activation_bytes\":%zu}\n",
           w_bytes, g_bytes, adam_bytes, ref_bytes, act_bytes, min_bytes, model_act);
    fprintf(stderr,
            "%s %-7s threads=%d: step %.4f s (median of %d), %.0f tok/s, %.2f GFLOP/s, "
            "peak RSS %.1f MiB (step phase %.1f MiB, of it file-backed %.1f MiB; min %.1f MiB), "
            "loss %.6f\n",
            sh->name, method_name, threads, med, steps, b->pk.n_tok / med, flops / med / 1e9,
            peak_kb / 1024.0, step_peak_kb / 1024.0, mapped_kb / 1024.0, min_bytes / 1048576.0,
            first.loss);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "bench_step: %s: %s\n", b->err.code, b->err.message);
done:
    model_free(b->policy);
    model_free(b->ref);
    free(b->m);
    free(b->v);
    free(b->ref_table);
    free(b->dc);
    free(b->dr);
    free(b->da);
    train_pack_free(&b->pk);
    free(d.rows);
    free(d.idx);
    free(d.prompt);
    free(d.chosen);
    free(d.rejected);
    return rc;
}
