/* bp_bench_run: one device op, or a list, timed through the backend's own entries. */
#define _POSIX_C_SOURCE 199309L /* clock_gettime */

#include "backprop/bench.h"

#include "backprop/train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/device_internal.h"
#include "core/error.h"
#include "core/names.h"

static const char *const fn = "bp_bench_run";

#define MAX_SIDE     INT64_C(2147483647) /* the backends take int sizes */
#define MAX_ELEMENTS (INT64_C(1) << 40)  /* per operand: no device holds 4 TiB */

BP_NAME_TABLE(bp_names_bench_kind, "a bench op", "gemm", "bias_act", "act_backward", "col_sum",
              "softmax_xent", "update", "copy", "norm");
BP_NAME_PAIR(bp_bench_kind, bp_names_bench_kind)

bp_bench_op bp_bench_op_default(bp_bench_kind kind, int64_t m, int64_t n, int64_t k) {
    bp_bench_op op;
    memset(&op, 0, sizeof op);
    op.kind = kind;
    op.m = m;
    op.n = n;
    op.k = k;
    op.precision = BP_PRECISION_FP32;
    op.activation = BP_ACT_RELU;
    op.optimizer = BP_OPTIM_SGD;
    op.norm = BP_NORM_LAYER;
    return op;
}

bp_bench_options bp_bench_options_default(void) {
    bp_bench_options o = {2, 10, 0.02, 1000};
    return o;
}

/* ---- checking ----------------------------------------------------------------------------- */

static bp_status check_side(int i, const char *what, int64_t v) {
    if (v >= 1 && v <= MAX_SIDE) return BP_OK;
    return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: ops[%d].%s is %lld, expected 1..2^31-1", fn, i,
                    what, (long long)v);
}

static bp_status check_elements(int i, const char *what, int64_t a, int64_t b) {
    if (a <= MAX_ELEMENTS / b) return BP_OK;
    return bp_error(BP_ERR_INVALID_ARGUMENT,
                    "%s: ops[%d]: %s holds %lld x %lld elements, over 2^40", fn, i, what,
                    (long long)a, (long long)b);
}

static bp_status check_gemm(const bp_device *d, int i, const bp_bench_op *op) {
    bp_status st = check_side(i, "k", op->k);
    if (st == BP_OK) st = check_elements(i, "A", op->m, op->k);
    if (st == BP_OK) st = check_elements(i, "B", op->k, op->n);
    if (st == BP_OK) st = check_elements(i, "C", op->m, op->n);
    if (st != BP_OK) return st;
    if ((unsigned)op->trans_a > 1 || (unsigned)op->trans_b > 1)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: ops[%d]: trans_a and trans_b are 0 or 1", fn,
                        i);
    if ((unsigned)op->precision >= BP_PRECISION_COUNT_)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: ops[%d].precision is %d, not a precision", fn,
                        i, (int)op->precision);
    if (op->precision != BP_PRECISION_FP32 && (!d->ops->gemm_ex || !d->ops->cast))
        return bp_error(BP_ERR_UNSUPPORTED,
                        "%s: ops[%d]: the %s backend runs fp32 GEMMs only, not %s", fn, i,
                        d->ops->name, bp_precision_name(op->precision));
    return BP_OK;
}

static bp_status check_op(const bp_device *d, int i, const bp_bench_op *op) {
    if ((unsigned)op->kind >= BP_BENCH_KIND_COUNT_)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: ops[%d].kind is %d, not a bench op", fn, i,
                        (int)op->kind);
    bp_status st = check_side(i, "m", op->m);
    if (st == BP_OK) st = check_side(i, "n", op->n);
    if (st != BP_OK) return st;
    if (op->kind == BP_BENCH_GEMM) return check_gemm(d, i, op);
    st = check_elements(i, "the operand", op->m, op->n);
    if (st != BP_OK) return st;
    int act = op->kind == BP_BENCH_BIAS_ACT || op->kind == BP_BENCH_ACT_BACKWARD;
    if (act && (unsigned)op->activation >= BP_ACT_COUNT_)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: ops[%d].activation is %d, not an activation",
                        fn, i, (int)op->activation);
    if (op->kind == BP_BENCH_UPDATE && (unsigned)op->optimizer > BP_OPTIM_ADAMW)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: ops[%d].optimizer is %d, not an optimizer",
                        fn, i, (int)op->optimizer);
    if (op->kind == BP_BENCH_NORM && op->norm != BP_NORM_LAYER && op->norm != BP_NORM_RMS)
        return bp_error(BP_ERR_INVALID_ARGUMENT,
                        "%s: ops[%d].norm is %d, expected BP_NORM_LAYER or BP_NORM_RMS", fn, i,
                        (int)op->norm);
    if (op->kind == BP_BENCH_NORM && (!d->ops->norm_forward || !d->ops->norm_backward))
        return bp_error(BP_ERR_UNSUPPORTED, "%s: ops[%d]: the %s backend runs no norm layers", fn,
                        i, d->ops->name);
    return BP_OK;
}

static bp_status check_options(const char *who, const bp_bench_options *o);

static bp_status check_args(const bp_device *d, const bp_bench_op *ops, int n_ops,
                            const bp_bench_options *o, const bp_bench_result *r) {
    if (!d || !ops || !r)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn,
                        !d     ? "device"
                        : !ops ? "ops"
                               : "result");
    if (n_ops < 1)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: n_ops is %d, expected >= 1", fn, n_ops);
    bp_status st = check_options(fn, o);
    for (int i = 0; i < n_ops && st == BP_OK; ++i)
        st = check_op(d, i, &ops[i]);
    return st;
}

static bp_status check_options(const char *who, const bp_bench_options *o) {
    if (o->warmup < 0 || o->warmup > 1000000)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: options.warmup is %d, expected 0..10^6", who,
                        o->warmup);
    if (o->repeats < 1 || o->repeats > 1000000)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: options.repeats is %d, expected 1..10^6", who,
                        o->repeats);
    if (!(o->min_sample_seconds >= 0.0 && o->min_sample_seconds <= 3600.0))
        return bp_error(BP_ERR_INVALID_ARGUMENT,
                        "%s: options.min_sample_seconds is %g, expected 0..3600", who,
                        o->min_sample_seconds);
    if (o->max_inner < 1)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: options.max_inner is %d, expected >= 1", who,
                        o->max_inner);
    return BP_OK;
}

/* ---- the napkin math ---------------------------------------------------------------------- */

static double op_flops(const bp_bench_op *op) {
    return op->kind == BP_BENCH_GEMM ? 2.0 * (double)op->m * (double)op->n * (double)op->k : 0.0;
}

static double op_bytes(const bp_bench_op *op) {
    double m = (double)op->m, n = (double)op->n, e = m * n;
    switch (op->kind) {
    case BP_BENCH_GEMM: {
        double ab = op->precision == BP_PRECISION_BF16 ? 2.0 : 4.0, k = (double)op->k;
        return ab * (m * k + k * n) + 4.0 * e;
    }
    case BP_BENCH_BIAS_ACT:
        return 12.0 * e + 4.0 * n; /* read z and the bias, write z and a */
    case BP_BENCH_ACT_BACKWARD:
        return 12.0 * e; /* read z and da, write dz */
    case BP_BENCH_COL_SUM:
        return 4.0 * e + 4.0 * n;
    case BP_BENCH_SOFTMAX_XENT:
        return 8.0 * e + 8.0 * m; /* read logits, write the gradient; labels and row losses */
    case BP_BENCH_UPDATE:
        return (op->optimizer == BP_OPTIM_SGD ? 20.0 : 28.0) * e;
    case BP_BENCH_NORM:
        return 20.0 * e + 16.0 * m + (op->norm == BP_NORM_LAYER ? 20.0 : 12.0) * n;
    default:
        return 8.0 * e; /* copy: read and write */
    }
}

/* ---- operands ----------------------------------------------------------------------------- */

/* Four float operands shared by the ops (slot 3 non-negative: Adam's v), a fifth for a norm's
 * per-feature and per-row vectors (run_norm), bf16 copies of the first two for bf16 GEMMs,
 * labels, and GEMM scratch. */
enum { SLOTS = 5 };

typedef struct bench_mem {
    bp_device *d;
    float *f[SLOTS];
    size_t nf[SLOTS];
    void *h[2]; /* bf16 copies of f[0], f[1] */
    size_t nh[2];
    int32_t *labels;
    size_t nlabels;
    void *scratch;
    size_t nscratch;
} bench_mem;

static void grow(size_t *have, size_t want) {
    if (want > *have) *have = want;
}

static bp_gemm_desc gemm_desc(const bp_bench_op *op, const bench_mem *mem) {
    bp_gemm_desc g;
    memset(&g, 0, sizeof g);
    int bf16 = op->precision == BP_PRECISION_BF16;
    g.trans_a = op->trans_a;
    g.trans_b = op->trans_b;
    g.m = (int)op->m;
    g.n = (int)op->n;
    g.k = (int)op->k;
    g.alpha = 1.0f;
    g.ab_type = bf16 ? BP_EL_BF16 : BP_EL_F32;
    g.tf32 = op->precision == BP_PRECISION_TF32;
    g.a = bf16 ? mem->h[0] : (const void *)mem->f[0];
    g.lda = op->trans_a ? g.m : g.k;
    g.b = bf16 ? mem->h[1] : (const void *)mem->f[1];
    g.ldb = op->trans_b ? g.k : g.n;
    g.c = mem->f[2];
    g.ldc = g.n;
    g.c_type = BP_EL_F32;
    g.epilogue = BP_EPI_NONE;
    g.scratch = mem->scratch;
    return g;
}

/* The element counts every op needs, the largest of each. */
static void size_operands(bench_mem *mem, const bp_bench_op *ops, int n_ops) {
    for (int i = 0; i < n_ops; ++i) {
        const bp_bench_op *op = &ops[i];
        size_t m = (size_t)op->m, n = (size_t)op->n, e = m * n;
        if (op->kind == BP_BENCH_GEMM) {
            size_t k = (size_t)op->k;
            grow(&mem->nf[0], m * k);
            grow(&mem->nf[1], k * n);
            grow(&mem->nf[2], e);
            if (op->precision == BP_PRECISION_BF16) {
                grow(&mem->nh[0], m * k);
                grow(&mem->nh[1], k * n);
            }
            if (op->precision != BP_PRECISION_FP32 && mem->d->ops->gemm_scratch) {
                bp_gemm_desc g = gemm_desc(op, mem);
                grow(&mem->nscratch, mem->d->ops->gemm_scratch(&g));
            }
            continue;
        }
        for (int s = 0; s < (op->kind == BP_BENCH_UPDATE ? 4 : 3); ++s)
            grow(&mem->nf[s], e);
        if (op->kind == BP_BENCH_NORM) grow(&mem->nf[4], 4 * n + 2 * m);
        if (op->kind == BP_BENCH_SOFTMAX_XENT) grow(&mem->nlabels, m);
    }
}

static void free_operands(bench_mem *mem) {
    for (int s = 0; s < SLOTS; ++s)
        bp_dev_free(mem->d, mem->f[s], mem->nf[s] * sizeof(float));
    for (int s = 0; s < 2; ++s)
        bp_dev_free(mem->d, mem->h[s], mem->nh[s] * 2);
    bp_dev_free(mem->d, mem->labels, mem->nlabels * sizeof(int32_t));
    bp_dev_free(mem->d, mem->scratch, mem->nscratch);
}

/* n values in [-1, 1) from a fixed xorshift sequence (|value| for a non-negative slot). */
static bp_status fill_pattern(bench_mem *mem, float *dst, size_t n, uint32_t seed, int positive) {
    size_t chunk = n < ((size_t)1 << 20) ? n : (size_t)1 << 20;
    float *host = malloc(chunk * sizeof(float));
    if (!host) return bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no host memory", fn);
    uint32_t s = 2463534242u ^ seed;
    bp_status st = BP_OK;
    for (size_t at = 0; st == BP_OK && at < n; at += chunk) {
        size_t len = n - at < chunk ? n - at : chunk;
        for (size_t i = 0; i < len; ++i) {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            float v = (float)((double)s / 2147483648.0 - 1.0);
            host[i] = positive ? fabsf(v) : v;
        }
        st = mem->d->ops->upload(mem->d, dst + at, host, len * sizeof(float));
    }
    free(host);
    return st;
}

static bp_status fill_labels(bench_mem *mem, int classes) {
    int32_t *host = malloc(mem->nlabels * sizeof(int32_t) + 1);
    if (!host) return bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no host memory", fn);
    for (size_t r = 0; r < mem->nlabels; ++r)
        host[r] = (int32_t)((r * 7919) % (size_t)classes);
    bp_status st = mem->d->ops->upload(mem->d, mem->labels, host, mem->nlabels * sizeof(int32_t));
    free(host);
    return st;
}

/* The smallest class count of the cross-entropy ops, so every label is a class of each. */
static int fewest_classes(const bp_bench_op *ops, int n_ops) {
    int64_t c = MAX_SIDE;
    for (int i = 0; i < n_ops; ++i)
        if (ops[i].kind == BP_BENCH_SOFTMAX_XENT && ops[i].n < c) c = ops[i].n;
    return (int)c;
}

static bp_status alloc_operands(bench_mem *mem, const bp_bench_op *ops, int n_ops) {
    bp_status st = BP_OK;
    for (int s = 0; s < SLOTS && st == BP_OK; ++s)
        if (mem->nf[s])
            st = bp_dev_alloc(mem->d, mem->nf[s] * sizeof(float), fn, (void **)&mem->f[s]);
    for (int s = 0; s < 2 && st == BP_OK; ++s)
        if (mem->nh[s]) st = bp_dev_alloc(mem->d, mem->nh[s] * 2, fn, &mem->h[s]);
    if (st == BP_OK && mem->nlabels)
        st = bp_dev_alloc(mem->d, mem->nlabels * sizeof(int32_t), fn, (void **)&mem->labels);
    if (st == BP_OK && mem->nscratch) st = bp_dev_alloc(mem->d, mem->nscratch, fn, &mem->scratch);
    for (int s = 0; s < SLOTS && st == BP_OK; ++s)
        if (mem->nf[s]) st = fill_pattern(mem, mem->f[s], mem->nf[s], (uint32_t)s + 1, s >= 3);
    for (int s = 0; s < 2 && st == BP_OK; ++s)
        if (mem->nh[s])
            st = mem->d->ops->cast(mem->d, mem->nh[s], mem->f[s], BP_EL_F32, mem->h[s], BP_EL_BF16);
    if (st == BP_OK && mem->nlabels) st = fill_labels(mem, fewest_classes(ops, n_ops));
    return st;
}

/* ---- running ------------------------------------------------------------------------------ */

static bp_update_args update_args(const bp_bench_op *op, const bench_mem *mem) {
    bp_update_args a;
    memset(&a, 0, sizeof a);
    a.kind = op->optimizer;
    a.n = (size_t)op->m * (size_t)op->n;
    a.param = mem->f[0];
    a.grad = mem->f[1];
    a.m = mem->f[2];
    a.v = op->optimizer == BP_OPTIM_SGD ? NULL : mem->f[3];
    a.grad_scale = 1.0f;
    a.lr = 1e-6f; /* small steps: the values stay where they started over any number of runs */
    a.momentum = 0.9f;
    a.one_minus_dampening = 1.0f;
    a.beta2 = 0.999f;
    a.eps = 1e-8f;
    a.one_minus_beta1 = 0.1f;
    a.one_minus_beta2 = 0.001f;
    a.step_size = 1e-6f;
    a.bc2_sqrt = 1.0f;
    a.weight_decay = op->optimizer == BP_OPTIM_ADAMW ? 0.01f : 0.0f;
    a.decay_factor = 1.0f - 1e-8f;
    return a;
}

/* A norm's forward from x (slot 0) into y (slot 1), then its backward from dy (slot 2) into dx
 * (slot 1 again); slot 4 holds weight, bias, their gradients [n each] and the row statistics. */
static bp_status run_norm(const bp_bench_op *op, const bench_mem *mem) {
    bp_device *d = mem->d;
    int rows = (int)op->m, cols = (int)op->n, layer = op->norm == BP_NORM_LAYER;
    float *v = mem->f[4], *mean = v + 4 * (size_t)cols, *rstd = mean + rows;
    float *w = v, *b = layer ? v + cols : NULL, *dw = v + 2 * (size_t)cols;
    float *db = layer ? dw + cols : NULL;
    bp_status st = d->ops->norm_forward(d, op->norm, rows, cols, mem->f[0], BP_EL_F32, w, b, 1e-5f,
                                        mem->f[1], BP_EL_F32, mean, rstd);
    if (st != BP_OK) return st;
    return d->ops->norm_backward(d, op->norm, rows, cols, mem->f[0], BP_EL_F32, w, mean, rstd,
                                 mem->f[2], mem->f[1], 0.0f, dw, db);
}

static bp_status run_op(const bp_bench_op *op, const bench_mem *mem) {
    bp_device *d = mem->d;
    const bp_backend_ops *o = d->ops;
    int rows = (int)op->m, cols = (int)op->n;
    size_t e = (size_t)op->m * (size_t)op->n;
    float **f = (float **)mem->f;
    switch (op->kind) {
    case BP_BENCH_GEMM: {
        bp_gemm_desc g = gemm_desc(op, mem);
        if (op->precision != BP_PRECISION_FP32) return o->gemm_ex(d, &g, NULL);
        return o->gemm(d, g.trans_a, g.trans_b, g.m, g.n, g.k, 1.0f, f[0], g.lda, f[1], g.ldb, 0.0f,
                       f[2], g.ldc);
    }
    case BP_BENCH_BIAS_ACT:
        return o->bias_act_forward(d, rows, cols, f[2], f[0], f[1], op->activation, 0.01f);
    case BP_BENCH_ACT_BACKWARD:
        return o->act_backward(d, e, f[0], f[1], f[2], op->activation, 0.01f);
    case BP_BENCH_COL_SUM:
        return o->col_sum(d, rows, cols, f[0], 0.0f, f[1]);
    case BP_BENCH_SOFTMAX_XENT:
        return o->softmax_xent(d, rows, cols, f[0], mem->labels, 0.1f, 1.0f / (float)rows, f[1],
                               f[2]);
    case BP_BENCH_UPDATE: {
        bp_update_args a = update_args(op, mem);
        return o->update(d, &a);
    }
    case BP_BENCH_NORM:
        return run_norm(op, mem);
    default:
        return o->copy(d, f[1], f[0], e * sizeof(float));
    }
}

static bp_status run_list(const bp_bench_op *ops, int n_ops, const bench_mem *mem, int times) {
    bp_status st = BP_OK;
    for (int t = 0; t < times && st == BP_OK; ++t)
        for (int i = 0; i < n_ops && st == BP_OK; ++i)
            st = run_op(&ops[i], mem);
    return st;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* What is timed: `times` runs of it, up to the device finishing them. */
typedef struct timed_work {
    bp_status (*run)(const struct timed_work *w, int times);
    const char *who;        /* the entry, for messages */
    const bp_bench_op *ops; /* bp_bench_run */
    int n_ops;
    const bench_mem *mem;
    bp_model *model; /* bp_bench_train */
    bp_optimizer *optimizer;
    const bp_loss_config *loss;
    const bp_tensor *x, *target;
    bp_device_counters *steps_did; /* what the bp_train_step calls asked of the device */
} timed_work;

static bp_status run_ops(const timed_work *w, int times) {
    bp_status st = run_list(w->ops, w->n_ops, w->mem, times);
    return st == BP_OK ? w->mem->d->ops->synchronize(w->mem->d) : st;
}

static bp_status timed(const timed_work *w, int times, double *seconds) {
    double t0 = now();
    bp_status st = w->run(w, times);
    *seconds = now() - t0;
    return st;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double quantile(const double *sorted, int n, double q) {
    double pos = q * (n - 1);
    int lo = (int)pos, hi = lo + 1 < n ? lo + 1 : lo;
    return sorted[lo] + (pos - lo) * (sorted[hi] - sorted[lo]);
}

/* Sorts t[0..n) into its median, extremes and quartiles. */
static bp_bench_stats stats_of(double *t, int n) {
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    bp_bench_stats s = {quantile(t, n, 0.5), t[0], t[n - 1], quantile(t, n, 0.25),
                        quantile(t, n, 0.75)};
    return s;
}

/* The warm-up, one timed run to size a sample (`inner` runs lasting min_sample_seconds), then
 * the samples: seconds of one run, into *stats. */
static bp_status measure(const timed_work *w, const bp_bench_options *o, bp_bench_stats *stats,
                         int *inner_out) {
    double *t = malloc((size_t)o->repeats * sizeof *t);
    if (!t) return bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no host memory", w->who);
    double one = 0.0;
    bp_status st = o->warmup > 0 ? w->run(w, o->warmup) : BP_OK;
    if (st == BP_OK) st = timed(w, 1, &one);
    double want = one > 0.0 ? ceil(o->min_sample_seconds / one) : (double)o->max_inner;
    int inner = want < 1.0 ? 1 : want > (double)o->max_inner ? o->max_inner : (int)want;
    for (int s = 0; s < o->repeats && st == BP_OK; ++s) {
        st = timed(w, inner, &t[s]);
        t[s] /= inner;
    }
    if (st == BP_OK) {
        *stats = stats_of(t, o->repeats);
        *inner_out = inner;
    }
    free(t);
    return st;
}

bp_status bp_bench_run(bp_device *device, const bp_bench_op *ops, int n_ops,
                       const bp_bench_options *options, bp_bench_result *result) {
    bp_bench_options o = options ? *options : bp_bench_options_default();
    bp_status st = check_args(device, ops, n_ops, &o, result);
    if (st != BP_OK) return st;
    bench_mem mem;
    memset(&mem, 0, sizeof mem);
    mem.d = device;
    size_operands(&mem, ops, n_ops);
    bp_bench_result r;
    memset(&r, 0, sizeof r);
    for (int i = 0; i < n_ops; ++i) {
        r.flops += op_flops(&ops[i]);
        r.bytes += op_bytes(&ops[i]);
    }
    st = alloc_operands(&mem, ops, n_ops);
    timed_work w = {run_ops, fn, ops, n_ops, &mem, NULL, NULL, NULL, NULL, NULL, NULL};
    if (st == BP_OK) st = measure(&w, &o, &r.seconds, &r.inner);
    r.samples = o.repeats;
    free_operands(&mem);
    if (st == BP_OK) *result = r;
    return st;
}

/* ---- a whole training step ---------------------------------------------------------------- */

static const char *const fn_train = "bp_bench_train";

/* `times` steps queued without waiting (loss_value NULL), then their results read with a wait:
 * the time includes the device's work, and a refused step or a step the device did not run
 * fails the sample. */
static bp_status run_steps(const timed_work *w, int times) {
    bp_device *dev = bp_model_device(w->model);
    bp_device_counters c0, c1;
    bp_status st = bp_device_get_counters(dev, &c0);
    for (int i = 0; i < times && st == BP_OK; ++i)
        st = bp_train_step(w->model, w->optimizer, w->loss, w->x, w->target, NULL);
    if (st == BP_OK) st = bp_device_get_counters(dev, &c1);
    if (st == BP_OK && w->steps_did) {
        w->steps_did->launches += c1.launches - c0.launches;
        w->steps_did->host_waits += c1.host_waits - c0.host_waits;
        w->steps_did->graph_launches += c1.graph_launches - c0.graph_launches;
    }
    bp_step_totals totals;
    memset(&totals, 0, sizeof totals);
    if (st == BP_OK) st = bp_train_results(w->optimizer, 1, &totals);
    if (st == BP_OK && totals.steps != times)
        st = bp_error(BP_ERR_DEVICE, "%s: %d steps were queued, %lld reported", fn_train, times,
                      (long long)totals.steps);
    return st;
}

/* The step in parts, each timed to the device's end: forward and loss, zero_grad and
 * backward, the optimizer's update; `inner` of each per sample. */
static bp_status time_parts(const timed_work *w, const bp_bench_options *o, int inner,
                            bp_bench_train_result *r) {
    double *t = calloc(3 * (size_t)o->repeats, sizeof *t);
    if (!t) return bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no host memory", fn_train);
    bp_device *dev = bp_model_device(w->model);
    bp_status st = BP_OK;
    for (int s = 0; s < o->repeats && st == BP_OK; ++s)
        for (int i = 0; i < inner && st == BP_OK; ++i) {
            double t0 = now();
            st = bp_model_forward(w->model, w->x, BP_MODE_TRAINING, NULL);
            if (st == BP_OK) st = bp_model_loss(w->model, w->loss, w->target, NULL);
            if (st == BP_OK) st = bp_device_synchronize(dev);
            double t1 = now();
            if (st == BP_OK) st = bp_model_zero_grad(w->model);
            if (st == BP_OK) st = bp_model_backward(w->model, NULL);
            if (st == BP_OK) st = bp_device_synchronize(dev);
            double t2 = now();
            if (st == BP_OK) st = bp_optimizer_step(w->optimizer);
            if (st == BP_OK) st = bp_device_synchronize(dev);
            double t3 = now();
            t[s] += (t1 - t0) / inner;
            t[o->repeats + s] += (t2 - t1) / inner;
            t[2 * o->repeats + s] += (t3 - t2) / inner;
        }
    if (st == BP_OK) {
        r->forward_seconds = stats_of(t, o->repeats);
        r->backward_seconds = stats_of(t + o->repeats, o->repeats);
        r->update_seconds = stats_of(t + 2 * o->repeats, o->repeats);
    }
    free(t);
    return st;
}

bp_status bp_bench_train(bp_model *model, bp_optimizer *optimizer, const bp_loss_config *loss,
                         const bp_tensor *x, const bp_tensor *target,
                         const bp_bench_options *options, bp_bench_train_result *result) {
    bp_bench_options o = options ? *options : bp_bench_options_default();
    const char *null = !model       ? "model"
                       : !optimizer ? "optimizer"
                       : !loss      ? "loss"
                       : !x         ? "x"
                       : !target    ? "target"
                       : !result    ? "result"
                                    : NULL;
    if (null) return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn_train, null);
    bp_status st = check_options(fn_train, &o);
    if (st != BP_OK) return st;
    bp_bench_train_result r;
    memset(&r, 0, sizeof r);
    bp_device_counters did;
    memset(&did, 0, sizeof did);
    timed_work w = {run_steps, fn_train, NULL, 0, NULL, model, optimizer, loss, x, target, NULL};
    /* Counted after the warm-up, whose first steps set things up (a graph's recording). */
    st = o.warmup > 0 ? run_steps(&w, o.warmup) : BP_OK;
    o.warmup = 0;
    w.steps_did = &did;
    if (st == BP_OK) st = measure(&w, &o, &r.seconds, &r.inner);
    w.steps_did = NULL;
    if (st == BP_OK) st = time_parts(&w, &o, r.inner, &r);
    if (st != BP_OK) return st;
    double steps = 1.0 + (double)o.repeats * r.inner; /* the sizing step and the samples */
    r.samples = o.repeats;
    r.samples_per_second = (double)bp_tensor_rows(x) / r.seconds.median;
    r.launches_per_step = (double)did.launches / steps;
    r.host_waits_per_step = (double)did.host_waits / steps;
    r.graph_launches_per_step = (double)did.graph_launches / steps;
    *result = r;
    return BP_OK;
}
