/* backprop bench: per-op and end-to-end training throughput, each row with its napkin math.
 *
 * The device limits are measured in the same run (the BLAS/cuBLAS sgemm rate at 2048^3 and a
 * large device-to-device copy), so "% of limit" compares like with like on a loaded machine.
 * Ops are timed alone by bp_bench_run (bench.h), training steps by bp_bench_train: the
 * command uses the public API only. */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

/* What the measurements take from the options, resolved. */
typedef struct bench_opts {
    int quick, warmup, repeats;
    bp_precision prec[BP_PRECISION_COUNT_]; /* --precision */
    int n_prec;
} bench_opts;

/* One measured row: seconds over the repeats. */
typedef bp_bench_stats sample_stats;

/* ---- JSON, written as the rows are measured ---- */
static FILE *g_json;
static int g_json_rows, g_json_open; /* rows written; whether the last row's brace is open */

/* Starts a row; json_stats may add to it until the next row or json_end closes it. */
static void json_row(const char *section, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void json_row(const char *section, const char *fmt, ...) {
    if (!g_json) return;
    fprintf(g_json, "%s\n    {\"section\": \"%s\", ",
            g_json_open   ? "},"
            : g_json_rows ? ","
                          : "",
            section);
    g_json_rows++;
    g_json_open = 1;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(g_json, fmt, ap);
    va_end(ap);
}

static void json_stats(const char *name, const sample_stats *s) {
    if (!g_json) return;
    fprintf(
        g_json,
        ", \"%s\": {\"median\": %.6e, \"min\": %.6e, \"max\": %.6e, \"q1\": %.6e, \"q3\": %.6e}",
        name, s->median, s->min, s->max, s->q1, s->q3);
}

static void json_end(void) {
    fprintf(g_json, "%s\n  ]\n}\n", g_json_open ? "}" : "");
    g_json = NULL;
}

/* ---- process memory (Linux): peak RSS since a reset, the method compare.sh uses for both ---- */
static long proc_status_kb(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long v = -1;
    size_t klen = strlen(key);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
            v = strtol(line + klen + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

/* Resets VmHWM to the current RSS (Linux >= 4.0); 0 when it worked. */
static int reset_peak_rss(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return -1;
    int ok = fputs("5", f) >= 0;
    return (fclose(f) == 0 && ok) ? 0 : -1;
}

/* ---- ops, timed by bp_bench_run (bench.h) ---- */
/* Times ops[0..n) on dev with the command's warm-up and repeats (at least min_repeats: every
 * % column divides by a limit, measured over 5 samples or more). A sample lasts at least
 * --quick's 5 ms or 20 ms: one call of a small op is below timer noise. */
static bp_status time_ops(bp_device *dev, const bench_opts *o, const bp_bench_op *ops, int n,
                          int min_repeats, bp_bench_result *r) {
    bp_bench_options bo = bp_bench_options_default();
    bo.warmup = o->warmup;
    bo.repeats = o->repeats < min_repeats ? min_repeats : o->repeats;
    bo.min_sample_seconds = o->quick ? 0.005 : 0.02;
    bo.max_inner = 1000;
    return bp_bench_run(dev, ops, n, &bo, r);
}

static bp_bench_op gemm_op(int ta, int tb, int m, int n, int k, bp_precision prec) {
    bp_bench_op op = bp_bench_op_default(BP_BENCH_GEMM, m, n, k);
    op.trans_a = ta;
    op.trans_b = tb;
    op.precision = prec;
    return op;
}

typedef struct limits {
    double gemm_flops; /* FLOP/s of sgemm NN at 2048^3 */
    double bandwidth;  /* bytes/s of a large copy, read + write counted */
} limits;

static void print_rule(void) {
    printf("---------------------------------------------------------------------------------------"
           "-------------\n");
}

static void report_gemm(const char *tcase, const bp_bench_op *g, const bp_bench_result *r,
                        const limits *lim) {
    int m = (int)g->m, n = (int)g->n, k = (int)g->k;
    const sample_stats *s = &r->seconds;
    double rate = r->flops / s->median;
    const char *pn = bp_precision_name(g->precision);
    printf("gemm %-2s %s %5dx%5dx%5d  %8.2f GFLOP/s  (min %.3f ms, med %.3f, max %.3f)  %.3g GFLOP "
           "%.3g MB  %5.1f%% of sgemm limit\n",
           tcase, pn, m, n, k, rate / 1e9, s->min * 1e3, s->median * 1e3, s->max * 1e3,
           r->flops / 1e9, r->bytes / 1e6,
           lim->gemm_flops > 0 ? 100.0 * rate / lim->gemm_flops : 0.0);
    json_row(
        "op",
        "\"op\": \"gemm\", \"case\": \"%s\", \"precision\": \"%s\", \"m\": %d, \"n\": %d, \"k\": "
        "%d, \"flops\": %.6e, \"bytes\": %.6e, \"gflops\": %.4f, \"fraction_of_limit\": %.4f",
        tcase, pn, m, n, k, r->flops, r->bytes, rate / 1e9,
        lim->gemm_flops > 0 ? rate / lim->gemm_flops : 0.0);
    json_stats("seconds", s);
}

static void report_mem(const char *name, const char *shape, const bp_bench_result *r,
                       const limits *lim) {
    const sample_stats *s = &r->seconds;
    double rate = r->bytes / s->median;
    printf("%-22s %-14s %8.2f GB/s   (min %.3f ms, med %.3f, max %.3f)  %.3g MB moved  %5.1f%% of "
           "copy bandwidth\n",
           name, shape, rate / 1e9, s->min * 1e3, s->median * 1e3, s->max * 1e3, r->bytes / 1e6,
           lim->bandwidth > 0 ? 100.0 * rate / lim->bandwidth : 0.0);
    json_row("op",
             "\"op\": \"%s\", \"shape\": \"%s\", \"bytes\": %.6e, \"gbps\": %.4f, "
             "\"fraction_of_limit\": %.4f",
             name, shape, r->bytes, rate / 1e9, lim->bandwidth > 0 ? rate / lim->bandwidth : 0.0);
    json_stats("seconds", s);
}

/* The sgemm rate at 2048^3 (NN). Measured once up front and again right before each training
 * config, since other jobs on the machine change it by 2x within a minute: a step is compared
 * with the rate measured next to it. */
static int measure_sgemm(bp_device *dev, const bench_opts *o, const char *before, double *rate) {
    bp_bench_op g = gemm_op(0, 0, 2048, 2048, 2048, BP_PRECISION_FP32);
    bp_bench_result r;
    if (time_ops(dev, o, &g, 1, 5, &r) != BP_OK) return -1;
    const sample_stats *s = &r.seconds;
    *rate = r.flops / s->median;
    if (before)
        printf("%-4s sgemm NN 2048^3 measured just before: ", before);
    else
        printf("limit: sgemm NN 2048^3 ");
    printf("%.2f GFLOP/s (min %.2f ms, med %.2f, max %.2f)\n", *rate / 1e9, s->min * 1e3,
           s->median * 1e3, s->max * 1e3);
    json_row("limit", "\"what\": \"sgemm_2048\", %s%s%s\"gflops\": %.4f",
             before ? "\"before_config\": \"" : "", before ? before : "", before ? "\", " : "",
             *rate / 1e9);
    json_stats("seconds", s);
    return 0;
}

/* The matrix engine's own rate at 2048^3 (NN) in precision prec, with what runs it: the limit a
 * training row in that precision is held to. Nothing for a mode the backend does not run. */
static int measure_engine(bp_device *dev, const bench_opts *o, bp_precision prec) {
    bp_bench_op g = gemm_op(0, 0, 2048, 2048, 2048, prec);
    bp_bench_result r;
    bp_status st = time_ops(dev, o, &g, 1, 5, &r);
    if (st == BP_ERR_UNSUPPORTED) return 0;
    if (st != BP_OK) return -1;
    char engine[160] = "";
    if (bp_device_matrix_engine(dev, prec, engine, sizeof engine) != BP_OK)
        snprintf(engine, sizeof engine, "?");
    const sample_stats *s = &r.seconds;
    double rate = r.flops / s->median;
    const char *pn = bp_precision_name(prec);
    printf("limit: %s matrix products 2048^3 %.2f GFLOP/s (min %.2f ms, med %.2f, max %.2f): %s\n",
           pn, rate / 1e9, s->min * 1e3, s->median * 1e3, s->max * 1e3, engine);
    json_row("limit", "\"what\": \"engine_%s_2048\", \"gflops\": %.4f, \"engine\": \"%s\"", pn,
             rate / 1e9, engine);
    json_stats("seconds", s);
    return 0;
}

static int measure_limits(bp_device *dev, const bench_opts *o, limits *lim) {
    if (measure_sgemm(dev, o, NULL, &lim->gemm_flops)) return -1;
    /* 256 MiB each way: far past any cache, so this is DRAM (or HBM) bandwidth. On the CPU the
     * backend's copy is one memmove on one thread, so two-thread ops can pass 100% of it. */
    size_t floats = (size_t)(o->quick ? 32 : 64) << 20;
    bp_bench_op copy = bp_bench_op_default(BP_BENCH_COPY, (int64_t)(floats >> 10), 1024, 0);
    bp_bench_result r;
    if (time_ops(dev, o, &copy, 1, 5, &r) != BP_OK) return -1;
    lim->bandwidth = r.bytes / r.seconds.median;
    printf("limit: copy %zu MiB, read+write %.2f GB/s (min %.2f ms, med %.2f, max %.2f)\n",
           floats * sizeof(float) >> 20, lim->bandwidth / 1e9, r.seconds.min * 1e3,
           r.seconds.median * 1e3, r.seconds.max * 1e3);
    json_row("limit", "\"what\": \"copy\", \"bytes\": %.6e, \"gbps\": %.4f", r.bytes,
             lim->bandwidth / 1e9);
    json_stats("seconds", &r.seconds);
    /* The engine's fp32 and bf16 rates: what a training row in each mode can reach. */
    if (measure_engine(dev, o, BP_PRECISION_FP32)) return -1;
    return measure_engine(dev, o, BP_PRECISION_BF16);
}

/* The three cases the passes use: forward z = x W^T (NT), weight gradient dz^T x (TN), input
 * gradient dz W (NN), in each precision asked for. */
static int bench_gemms(bp_device *dev, const bench_opts *o, const limits *lim) {
    static const char *const names[] = {"NN", "NT", "TN"};
    static const int ta[] = {0, 0, 1}, tb[] = {0, 1, 0};
    static const int full[] = {128, 256, 512, 1024, 2048}, quick[] = {128, 256, 512};
    const int *sizes = o->quick ? quick : full;
    int n_sizes = o->quick ? 3 : 5;
    for (int p = 0; p < o->n_prec; ++p)
        for (int t = 0; t < 3; ++t)
            for (int i = 0; i < n_sizes; ++i) {
                int sz = sizes[i];
                bp_bench_op g = gemm_op(ta[t], tb[t], sz, sz, sz, o->prec[p]);
                bp_bench_result r;
                if (time_ops(dev, o, &g, 1, 1, &r) != BP_OK) return -1;
                report_gemm(names[t], &g, &r, lim);
            }
    return 0;
}

/* The other ops of a step, ReLU's where they take an activation: bias+ReLU forward, its
 * backward, column sums (a bias gradient), softmax cross-entropy over 1000 classes, the
 * SGD-momentum and Adam updates, and a LayerNorm's forward and backward. */
static int bench_elementwise(bp_device *dev, const bench_opts *o, const limits *lim) {
    int rows = o->quick ? 1024 : 4096, cols = 1024;
    static const char *const names[] = {"bias+relu forward", "relu backward",       "col_sum",
                                        "softmax-xent",      "update sgd-momentum", "update adam",
                                        "layernorm fwd+bwd"};
    static const bp_bench_kind kinds[] = {
        BP_BENCH_BIAS_ACT, BP_BENCH_ACT_BACKWARD, BP_BENCH_COL_SUM, BP_BENCH_SOFTMAX_XENT,
        BP_BENCH_UPDATE,   BP_BENCH_UPDATE,       BP_BENCH_NORM};
    for (int i = 0; i < 7; ++i) {
        bp_bench_op op = bp_bench_op_default(kinds[i], rows, i == 3 ? 1000 : cols, 0);
        if (i == 5) op.optimizer = BP_OPTIM_ADAM;
        char shape[32];
        snprintf(shape, sizeof shape, "%dx%d", rows, (int)op.n);
        bp_bench_result r;
        if (time_ops(dev, o, &op, 1, 1, &r) != BP_OK) return cli_lib_fail(CMD_BENCH, "bench ops");
        report_mem(names[i], shape, &r, lim);
    }
    return 0;
}
/* ---- end-to-end training steps ---- */
typedef struct e2e_config {
    const char *name;
    int n_widths;
    int widths[8];
    int batch;
    bp_optim_kind opt;
    int gpu_only;
} e2e_config;

static const e2e_config CONFIGS[] = {
    {"S", 3, {784, 128, 10}, 128, BP_OPTIM_SGD, 0},
    {"M", 4, {784, 1024, 1024, 10}, 256, BP_OPTIM_ADAM, 0},
    {"L", 5, {2048, 2048, 2048, 2048, 10}, 512, BP_OPTIM_ADAM, 0},
    {"XL", 5, {8192, 8192, 8192, 8192, 1000}, 8192, BP_OPTIM_ADAMW, 1},
    /* For the smoke test: a step in microseconds. */
    {"tiny", 3, {32, 16, 4}, 8, BP_OPTIM_ADAM, 0},
};
#define N_CONFIGS ((int)(sizeof CONFIGS / sizeof CONFIGS[0]))

static const char *optim_name(bp_optim_kind k) {
    return k == BP_OPTIM_SGD ? "sgd-momentum" : k == BP_OPTIM_ADAM ? "adam" : "adamw";
}

/* FLOPs of one step, GEMMs only: forward 2*B*in*out per layer, backward 4*B*in*out per layer
 * (dW and dx) less the first layer's dx (2*B*in0*out0), which nothing needs. */
static double step_flops(const e2e_config *c) {
    double f = 0, b = c->batch;
    for (int l = 0; l + 1 < c->n_widths; ++l)
        f += 6.0 * b * c->widths[l] * c->widths[l + 1];
    return f - 2.0 * b * c->widths[0] * c->widths[1];
}

static double n_params(const e2e_config *c) {
    double p = 0;
    for (int l = 0; l + 1 < c->n_widths; ++l)
        p += (double)c->widths[l] * c->widths[l + 1] + c->widths[l + 1];
    return p;
}

/* Bytes of one step at the least: weights read twice (forward, dx), gradients read and written
 * (dW accumulates, beta 1), the update's traffic (SGD momentum 20 B/param, Adam 28), each
 * layer's z and a written forward and read back (z, a, plus dz written and read) backward. */
static double step_bytes(const e2e_config *c) {
    double p = n_params(c), act = 0;
    for (int l = 1; l < c->n_widths; ++l)
        act += (double)c->batch * c->widths[l];
    double upd = c->opt == BP_OPTIM_SGD ? 20.0 : 28.0;
    return 4.0 * p * 2 + 8.0 * p + upd * p + 4.0 * act * 5 + 4.0 * c->batch * c->widths[0];
}

/* The GEMMs of one training step at the shapes the passes give them, one after another: per
 * layer the forward z = x W^T (NT: B x out x in), the weight gradient dz^T x (TN: out x in x B)
 * and, past the first layer, the input gradient dz W (NN: B x in x out). Their time is what the
 * step would take if nothing but these GEMMs ran, on the backend's own GEMM (cuBLAS on CUDA):
 * *rate is the step's GEMM FLOPs over it. Every product writes one fp32 output: the rate is the
 * GEMMs', not the fused epilogues'. */
static int measure_step_gemms(bp_device *dev, const bench_opts *o, const e2e_config *cf,
                              bp_precision prec, double *rate) {
    bp_bench_op set[3 * 7];
    int n = 0;
    for (int l = 0; l + 1 < cf->n_widths; ++l) {
        int in = cf->widths[l], out = cf->widths[l + 1], b = cf->batch;
        set[n++] = gemm_op(0, 1, b, out, in, prec);            /* forward, NT */
        set[n++] = gemm_op(1, 0, out, in, b, prec);            /* dW, TN */
        if (l > 0) set[n++] = gemm_op(0, 0, b, in, out, prec); /* dX, NN */
    }
    bp_bench_result r;
    if (time_ops(dev, o, set, n, 5, &r) != BP_OK) return -1;
    const sample_stats *s = &r.seconds;
    const char *pn = bp_precision_name(prec);
    *rate = step_flops(cf) / s->median;
    printf("%-4s %s GEMMs at the step's %d shapes, same run: %.2f GFLOP/s (%.4g ms for all; min "
           "%.4g, max %.4g)\n",
           cf->name, pn, n, *rate / 1e9, s->median * 1e3, s->min * 1e3, s->max * 1e3);
    json_row("limit",
             "\"what\": \"gemm_step_shapes\", \"before_config\": \"%s\", \"precision\": \"%s\", "
             "\"gemms\": %d, \"gflops\": %.4f",
             cf->name, pn, n, *rate / 1e9);
    json_stats("seconds", s);
    return 0;
}
static int bench_e2e(bp_device *shared, const bench_opts *o, const e2e_config *c, bp_precision prec,
                     const limits *lim) {
    const char *pn = bp_precision_name(prec);
    const char *dn = bp_device_name(shared);
    if (c->gpu_only && bp_device_get_kind(shared) != BP_DEVICE_CUDA) {
        printf("%-4s %s batch %d %s: skipped on %s: GPU only (%.1f TFLOP and %.1f GB of optimizer "
               "state per step; minutes per step on a CPU)\n",
               c->name, "8192x4-1000", c->batch, optim_name(c->opt), dn, step_flops(c) / 1e12,
               16.0 * n_params(c) / 1e9);
        json_row("train", "\"config\": \"%s\", \"precision\": \"%s\", \"skipped\": \"GPU only\"",
                 c->name, pn);
        return 0;
    }
    limits near = *lim;
    double step_gemm_rate = 0; /* FLOP/s of this config's own GEMM shapes, measured here */
    if (lim->gemm_flops > 0) {
        if (measure_sgemm(shared, o, c->name, &near.gemm_flops))
            return cli_lib_fail(CMD_BENCH, "sgemm 2048");
        if (measure_step_gemms(shared, o, c, prec, &step_gemm_rate))
            return cli_lib_fail(CMD_BENCH, "the GEMMs at the step's shapes");
        lim = &near;
    }
    long base_kb = reset_peak_rss() == 0 ? proc_status_kb("VmRSS") : -1;
    bp_status st = BP_OK;
    /* A handle of its own: its peak_bytes is this config's alone. */
    bp_device_options dopts = bp_device_get_options(shared);
    bp_device *dev = bp_device_open_ex(dn, &dopts, &st);
    if (!dev) return cli_lib_fail(CMD_BENCH, c->name);
    int rc = CLI_EXIT_FAIL;
    bp_device_stats ds0;
    bp_device_get_stats(dev, &ds0);
    bp_mlp_config mc = bp_mlp_config_default(c->n_widths - 1, c->widths);
    mc.max_batch = c->batch;
    mc.seed = 1;
    mc.precision = prec;
    bp_model *m = bp_model_create(dev, &mc, &st);
    bp_optim_config oc = bp_optim_config_default(c->opt);
    if (c->opt == BP_OPTIM_SGD) oc.momentum = 0.9;
    bp_optimizer *opt = m ? bp_optimizer_create(m, &oc, &st) : NULL;
    int in = c->widths[0], classes = c->widths[c->n_widths - 1];
    bp_tensor *x = opt ? bp_tensor_create(dev, BP_F32, c->batch, in, &st) : NULL;
    bp_tensor *y = x ? bp_tensor_create(dev, BP_I32, c->batch, 1, &st) : NULL;
    bp_loss_config loss = {BP_LOSS_CROSS_ENTROPY, 0.0f};
    size_t nx = (size_t)c->batch * (size_t)in;
    float *hx = y ? malloc(nx * sizeof(float)) : NULL;
    int32_t *hy = hx ? malloc((size_t)c->batch * sizeof(int32_t)) : NULL;
    if (!hy) {
        if (m && opt && x && y)
            cli_lib_fail(CMD_BENCH, "out of memory");
        else
            cli_lib_fail(CMD_BENCH, c->name);
        goto done;
    }
    uint32_t s = 12345;
    for (size_t i = 0; i < nx; ++i) {
        s = s * 1664525u + 1013904223u;
        hx[i] = (float)((s >> 8) * (1.0 / 16777216.0) * 2.0 - 1.0);
    }
    for (int r = 0; r < c->batch; ++r)
        hy[r] = (int32_t)((r * 31 + 7) % classes);
    if (bp_tensor_upload(x, hx, nx) != BP_OK ||
        bp_tensor_upload(y, hy, (size_t)c->batch) != BP_OK) {
        cli_lib_fail(CMD_BENCH, c->name);
        goto done;
    }
    /* A sample lasts min_sample seconds: one small step is within timer and scheduler noise. */
    bp_bench_options bo = {o->warmup, o->repeats, o->quick ? 0.02 : 0.2, 1000};
    bp_bench_train_result tr;
    if (bp_bench_train(m, opt, &loss, x, y, &bo, &tr) != BP_OK) {
        cli_lib_fail(CMD_BENCH, c->name);
        goto done;
    }
    const sample_stats ss = tr.seconds;
    int graph = tr.graph_launches_per_step > 0.0; /* replayed, not only switched on */
    bp_device_stats ds;
    bp_device_get_stats(dev, &ds);
    long hwm_kb = proc_status_kb("VmHWM");
    double flops = step_flops(c), bytes = step_bytes(c), p = n_params(c);
    double sps = tr.samples_per_second, gf = flops / ss.median;
    /* The step cannot beat its GEMMs at the sgemm rate plus its bytes at copy bandwidth. */
    double t_lim = (lim->gemm_flops > 0 ? flops / lim->gemm_flops : 0) +
                   (lim->bandwidth > 0 ? bytes / lim->bandwidth : 0);
    char layers[96] = "";
    for (int l = 0; l < c->n_widths; ++l)
        snprintf(layers + strlen(layers), sizeof layers - strlen(layers), "%s%d", l ? "-" : "",
                 c->widths[l]);
    printf("%-4s %s batch %d %s %s softmax-CE, %.0f params\n", c->name, layers, c->batch,
           optim_name(c->opt), pn, p);
    printf("     step %.3f ms (min %.3f, max %.3f, IQR %.3f-%.3f; %d samples of %d steps): %.0f "
           "samples/s, %.2f GFLOP/s",
           ss.median * 1e3, ss.min * 1e3, ss.max * 1e3, ss.q1 * 1e3, ss.q3 * 1e3, tr.samples,
           tr.inner, sps, gf / 1e9);
    if (lim->gemm_flops > 0)
        printf(" = %.1f%% of sgemm limit\n", 100.0 * gf / lim->gemm_flops);
    else
        printf(" (no limits measured)\n");
    if (step_gemm_rate > 0)
        printf("     %.1f%% of the %s GEMMs' rate at the step's own shapes (their time alone: %.4g "
               "ms)\n",
               100.0 * gf / step_gemm_rate, pn, flops / step_gemm_rate * 1e3);
    printf("     parts (median ms): forward+loss %.3f, zero_grad+backward %.3f, norm+update %.3f\n",
           tr.forward_seconds.median * 1e3, tr.backward_seconds.median * 1e3,
           tr.update_seconds.median * 1e3);
    printf("     device: %.1f launches and %.2f host waits per step (bp_device_get_counters), CUDA "
           "graphs %s\n",
           tr.launches_per_step, tr.host_waits_per_step, graph ? "on" : "off");
    printf("     napkin: %.4g GFLOP/step (6*B*sum(in*out) - 2*B*in0*out0), >= %.4g MB/step",
           flops / 1e9, bytes / 1e6);
    if (t_lim > 0)
        printf("; limit time %.3f ms = %.1f%% of measured", t_lim * 1e3, 100.0 * t_lim / ss.median);
    printf("\n");
    printf("     memory: device peak %.2f MiB (bp_device_get_stats), process VmHWM - VmRSS at "
           "start %.2f MiB\n",
           (double)(ds.peak_bytes - ds0.bytes_in_use) / 1048576.0,
           base_kb >= 0 && hwm_kb >= 0 ? (hwm_kb - base_kb) / 1024.0 : -1.0);
    json_row("train",
             "\"config\": \"%s\", \"precision\": \"%s\", \"layers\": \"%s\", \"batch\": %d, "
             "\"optimizer\": \"%s\", \"params\": %.0f, \"flops_per_step\": %.6e, "
             "\"bytes_per_step\": %.6e, \"samples_per_s\": %.3f, \"gflops\": %.4f, "
             "\"fraction_of_sgemm\": %.4f, \"fraction_of_step_shape_gemm\": %.4f, "
             "\"limit_seconds\": %.6e, \"device_peak_bytes\": %zu, \"process_hwm_delta_kib\": %ld, "
             "\"warmup\": %d, \"repeats\": %d, \"steps_per_sample\": %d, \"launches_per_step\": "
             "%.4f, \"host_syncs_per_step\": %.4f, \"graph\": %s",
             c->name, pn, layers, c->batch, optim_name(c->opt), p, flops, bytes, sps, gf / 1e9,
             lim->gemm_flops > 0 ? gf / lim->gemm_flops : 0.0,
             step_gemm_rate > 0 ? gf / step_gemm_rate : 0.0, t_lim,
             ds.peak_bytes - ds0.bytes_in_use, base_kb >= 0 && hwm_kb >= 0 ? hwm_kb - base_kb : -1L,
             o->warmup, tr.samples, tr.inner, tr.launches_per_step, tr.host_waits_per_step,
             graph ? "true" : "false");
    json_stats("step_seconds", &ss);
    json_stats("forward_seconds", &tr.forward_seconds);
    json_stats("backward_seconds", &tr.backward_seconds);
    json_stats("update_seconds", &tr.update_seconds);
    rc = 0;
done:
    free(hx);
    free(hy);
    bp_tensor_free(x);
    bp_tensor_free(y);
    bp_optimizer_free(opt);
    bp_model_free(m);
    bp_device_close(dev);
    return rc;
}

/* ---- the command ---- */
/* A comma-separated list of the user's into buf: whole and without an empty item (strtok_r
 * would skip one silently); 0 or a usage error naming the flag. */
static int copy_list(const char *flag, const char *list, char *buf, size_t cap) {
    size_t n = strlen(list);
    if (n >= cap)
        return cli_usage_error(CMD_BENCH, "%s: the list is longer than %zu characters", flag,
                               cap - 1);
    if (!n || list[0] == ',' || list[n - 1] == ',' || strstr(list, ",,"))
        return cli_usage_error(CMD_BENCH, "%s: '%s' has an empty item", flag, list);
    memcpy(buf, list, n + 1);
    return 0;
}

/* Resolves --precision (default: every mode on a GPU, fp32 alone on the CPU, whose tf32 and bf16
 * modes are the GPU's reference numbers, not a speed) into b->prec; 0 or a usage error. */
static int pick_precisions(const cli_options *o, const bp_device *dev, bench_opts *b) {
    const char *list = o->precisions;
    if (!list[0]) list = bp_device_get_kind(dev) == BP_DEVICE_CUDA ? "fp32,tf32,bf16" : "fp32";
    char buf[64];
    b->n_prec = 0;
    if (copy_list("--precision", list, buf, sizeof buf)) return CLI_EXIT_USAGE;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        bp_precision found;
        if (bp_precision_parse(t, &found) != BP_OK)
            return cli_usage_error(CMD_BENCH, "--precision: '%s' is not one of fp32, tf32, bf16",
                                   t);
        for (int i = 0; i < b->n_prec; ++i)
            if (b->prec[i] == found)
                return cli_usage_error(CMD_BENCH, "--precision: '%s' is named twice", t);
        b->prec[b->n_prec++] = found;
    }
    return 0;
}

/* Resolves --config into indices of CONFIGS; 0 or a usage error. */
static int pick_configs(const char *list, int *picked, int *n) {
    *n = 0;
    char buf[128];
    if (copy_list("--config", list, buf, sizeof buf)) return CLI_EXIT_USAGE;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int found = -1;
        for (int i = 0; i < N_CONFIGS; ++i)
            if (strcmp(CONFIGS[i].name, t) == 0) found = i;
        if (found < 0)
            return cli_usage_error(CMD_BENCH, "--config: '%s' is not one of S, M, L, XL, tiny", t);
        for (int i = 0; i < *n; ++i)
            if (picked[i] == found)
                return cli_usage_error(CMD_BENCH, "--config: '%s' is named twice", t);
        picked[(*n)++] = found;
    }
    return 0;
}

/* The options (through the table of options.c), the configs and the --json file, checked
 * before the device is opened. */
static int setup(int argc, char **argv, cli_options *o, bench_opts *b, int *picked, int *n) {
    int rc = cli_parse(CMD_BENCH, argc, argv, o);
    if (!rc) rc = cli_check_names(CMD_BENCH, o);
    if (!rc) rc = pick_configs(o->configs, picked, n);
    if (!rc && o->json_file[0]) rc = cli_check_writable(CMD_BENCH, "--json", o->json_file);
    b->quick = o->quick;
    /* --quick's counts, unless given */
    b->warmup = o->quick && !cli_option_given(o, "warmup") ? 1 : o->warmup_calls;
    b->repeats = o->quick && !cli_option_given(o, "repeats") ? 3 : o->repeats;
    return rc;
}

/* The run's header: the device, the date, the counts and the matrix engines. */
static void print_header(bp_device *dev, const cli_options *o, const bench_opts *b) {
    time_t now = time(NULL);
    char date[32];
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    const char *omp = getenv("OMP_NUM_THREADS"), *blas = getenv("OPENBLAS_NUM_THREADS");
    printf("backprop bench on %s, %s; warm-up %d, repeats %d%s; OMP_NUM_THREADS=%s "
           "OPENBLAS_NUM_THREADS=%s\n",
           bp_device_name(dev), date, b->warmup, b->repeats, b->quick ? " (--quick)" : "",
           omp ? omp : "unset", blas ? blas : "unset");
    if (g_json)
        fprintf(g_json,
                "{\n  \"device\": \"%s\", \"date\": \"%s\", \"warmup\": %d, \"repeats\": %d, "
                "\"quick\": %s, \"omp_num_threads\": \"%s\", \"openblas_num_threads\": \"%s\",\n  ",
                bp_device_name(dev), date, b->warmup, b->repeats, b->quick ? "true" : "false",
                omp ? omp : "unset", blas ? blas : "unset");
    for (int p = 0; p < BP_PRECISION_COUNT_; ++p) {
        char engine[160];
        if (bp_device_matrix_engine(dev, (bp_precision)p, engine, sizeof engine) != BP_OK) continue;
        printf("matrix products, %s: %s\n", bp_precision_name((bp_precision)p), engine);
        if (g_json)
            fprintf(g_json, "\"engine_%s\": \"%s\", ", bp_precision_name((bp_precision)p), engine);
    }
    if (g_json) fprintf(g_json, "\"threads_option\": %d,\n  \"rows\": [", o->threads);
}

/* The sections --only asks for. */
static int run_sections(bp_device *dev, const cli_options *o, const bench_opts *b,
                        const int *picked, int n_picked) {
    limits lim = {0, 0};
    print_rule();
    if (o->no_limits)
        printf("limits: not measured (--no-limits); %% of limit columns read 0\n");
    else if (measure_limits(dev, b, &lim))
        return cli_lib_fail(CMD_BENCH, "measuring the limits");
    if (o->only != ONLY_TRAIN) {
        print_rule();
        if (bench_gemms(dev, b, &lim)) return cli_lib_fail(CMD_BENCH, "gemm");
        if (bench_elementwise(dev, b, &lim)) return CLI_EXIT_FAIL;
    }
    if (o->only == ONLY_OPS) return 0;
    print_rule();
    printf("training steps: FLOPs count GEMMs only: forward 2*B*in*out per layer, backward "
           "4*B*in*out per layer\nless the first layer's dx (2*B*in0*out0)\n");
    int rc = 0;
    for (int i = 0; i < n_picked && rc == 0; ++i)
        for (int p = 0; p < b->n_prec && rc == 0; ++p)
            rc = bench_e2e(dev, b, &CONFIGS[picked[i]], b->prec[p], &lim);
    return rc;
}

int cli_cmd_bench(int argc, char **argv) {
    cli_options o;
    bench_opts b;
    int picked[N_CONFIGS], n_picked = 0;
    bp_device *dev = NULL;
    bp_file *af = NULL;
    int rc = setup(argc, argv, &o, &b, picked, &n_picked);
    if (!rc) rc = cli_open_device(CMD_BENCH, &o, &dev);
    if (!rc) rc = pick_precisions(&o, dev, &b);
    if (!rc && o.json_file[0] && !(af = bp_file_open(o.json_file, NULL)))
        rc = cli_lib_fail(CMD_BENCH, "--json");
    if (!rc) {
        g_json = af ? bp_file_stream(af) : NULL;
        g_json_rows = g_json_open = 0;
        print_header(dev, &o, &b);
        rc = run_sections(dev, &o, &b, picked, n_picked);
    }
    if (g_json) json_end();
    if (af && rc == 0 && bp_file_commit(af) != BP_OK) rc = cli_lib_fail(CMD_BENCH, "--json");
    if (af && rc) bp_file_abort(af);
    bp_device_close(dev);
    cli_options_free(&o);
    return rc < 0 ? CLI_EXIT_OK : rc;
}
