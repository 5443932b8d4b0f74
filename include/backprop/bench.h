/* Timing one device op (or a list of them) as the library runs it: kernel throughput for a
 * benchmark, without a model around it.
 *
 * The op runs through the same backend entry a training step calls (the GEMM through the
 * backend's BLAS, cuBLAS or cuBLASLt, the rest through its kernels), on operands the call makes
 * on the device and fills with a fixed pattern of values in [-1, 1) (never zeros: ReLU masks and
 * softmax do real work). A sample runs the list `inner` times and waits for the device; the
 * result is the time of one run of the list, as the median and quartiles over the samples, with
 * the napkin math to compare it to a limit: the FLOPs of its matrix products and the least bytes
 * it must move. bp_bench_train times a whole training step (train.h) the same way.
 *
 * Lifetime: nothing is kept; the operands are freed before the call returns (they count in
 * bp_device_get_stats while it runs, and against a memory limit).
 * Threads: the device is used by one thread at a time, as for any call that runs on it. */
#ifndef BACKPROP_BENCH_H
#define BACKPROP_BENCH_H

#include <stdint.h>

#include "device.h"
#include "model.h"
#include "optim.h"
#include "train.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum bp_bench_kind {
    BP_BENCH_GEMM = 0,         /* C [m, n] = op(A) op(B), inner size k: fp32 (sgemm), tf32
                                  (TF32 operands) or bf16 (bf16 operands), fp32 C */
    BP_BENCH_BIAS_ACT = 1,     /* z += bias, a = act(z) over m rows of n columns */
    BP_BENCH_ACT_BACKWARD = 2, /* dz = da * act'(z) over m * n elements */
    BP_BENCH_COL_SUM = 3,      /* the column sums of m x n (a bias gradient) */
    BP_BENCH_SOFTMAX_XENT = 4, /* softmax cross-entropy value and gradient, m rows of n classes */
    BP_BENCH_UPDATE = 5,       /* one optimizer update over m * n parameters */
    BP_BENCH_COPY = 6,         /* a device-to-device copy of m * n floats */
    BP_BENCH_NORM = 7,         /* a norm layer's forward and backward over m rows of n features
                                  (model.h's LayerNorm or RMSNorm, fp32, stats per row) */
    BP_BENCH_KIND_COUNT_ = 8
} bp_bench_kind;

/* "gemm", "bias_act", "act_backward", "col_sum", "softmax_xent", "update", "copy", "norm" (the
 * name and parse pair of device.h). */
BP_API const char *bp_bench_kind_name(bp_bench_kind kind);
BP_API bp_status bp_bench_kind_parse(const char *text, bp_bench_kind *out);

typedef struct bp_bench_op {
    bp_bench_kind kind;
    int64_t m, n; /* GEMM: C's rows and columns; the others: rows and columns, 1..2^31-1 */
    int64_t k;    /* GEMM: the inner size, 1..2^31-1; unused by the others */
    int trans_a;  /* GEMM: A is stored [k, m] and used transposed (0: [m, k]) */
    int trans_b;  /* GEMM: B is stored [n, k] (0: [k, n]) */
    bp_precision precision;   /* GEMM; tf32 and bf16 need a backend that runs those modes */
    bp_activation activation; /* BIAS_ACT, ACT_BACKWARD */
    bp_optim_kind optimizer;  /* UPDATE: SGD with momentum 0.9, Adam or AdamW */
    bp_norm norm;             /* NORM: BP_NORM_LAYER or BP_NORM_RMS */
} bp_bench_op;

/* An op of kind over m x n (k for a GEMM), fp32, ReLU, SGD, LayerNorm, no transposes. */
BP_API bp_bench_op bp_bench_op_default(bp_bench_kind kind, int64_t m, int64_t n, int64_t k);

typedef struct bp_bench_options {
    int warmup;                /* untimed runs first, 0..10^6 (default 2) */
    int repeats;               /* timed samples, 1..10^6 (default 10) */
    double min_sample_seconds; /* a sample runs the list as often as it takes to last this long,
                                  from a first timed run (a small op is below the timer's noise
                                  once), 0..3600 (default 0.02) */
    int max_inner;             /* but at most this often, >= 1 (default 1000) */
} bp_bench_options;

BP_API bp_bench_options bp_bench_options_default(void);

typedef struct bp_bench_stats {
    double median, min, max, q1, q3; /* seconds */
} bp_bench_stats;

typedef struct bp_bench_result {
    bp_bench_stats seconds; /* one run of the list, over the samples */
    int samples;            /* = repeats */
    int inner;              /* runs of the list in each sample */
    double flops;           /* of one run: 2 m n k per GEMM (the others count 0) */
    double bytes;           /* of one run, the least each op reads and writes: GEMM the operands
                               (2 bytes per bf16 element) and C; bias_act 12 per element and the
                               bias; act_backward 12 per element; col_sum the input and a row;
                               softmax_xent 8 per logit and 8 per row; update 20 per parameter
                               for SGD with momentum, 28 for Adam and AdamW; copy 8 per float;
                               norm 20 per element (x and y forward; x, dy and dx backward),
                               16 per row (its statistics) and 20 per feature for LayerNorm
                               (weight and bias read, weight read, their gradients written),
                               12 for RMSNorm */
} bp_bench_result;

/* Times ops[0..n_ops) run in order on device (a GEMM list such as a training step's shapes),
 * with options (NULL: the defaults), into *result. Operands are shared between the ops (each
 * as large as the largest op needs), so a list costs the memory of its largest op. An argument
 * out of its range is BP_ERR_INVALID_ARGUMENT naming it ("ops[2].k is 0"); a precision the
 * backend does not run BP_ERR_UNSUPPORTED; a device that fails, the backend's status. Nothing
 * is asserted about speed: the numbers are what this device did now. */
BP_API bp_status bp_bench_run(bp_device *device, const bp_bench_op *ops, int n_ops,
                              const bp_bench_options *options, bp_bench_result *result);

/* ---- a whole training step ---- */

typedef struct bp_bench_train_result {
    bp_bench_stats seconds; /* one step, over the samples */
    /* The same step in parts, each timed up to the device finishing it: forward and loss,
     * zero_grad and backward, the optimizer's update (its gradient norm included). They wait
     * for the device where the step does not, so they add up to more than a step. */
    bp_bench_stats forward_seconds, backward_seconds, update_seconds;
    int samples;               /* = repeats */
    int inner;                 /* steps in each sample */
    double samples_per_second; /* x's rows over the median step */
    /* bp_device_get_counters over the timed bp_train_step calls (the sample-sizing one and
     * the samples; not the wait that ends a sample), per step: the work queued outside a
     * recorded graph, the waits for the device, and the graphs replayed (1 when CUDA graphs
     * run each step). 0 on the CPU, which counts none. */
    double launches_per_step, host_waits_per_step, graph_launches_per_step;
} bp_bench_train_result;

/* Times bp_train_step(model, optimizer, loss, x, target) as a training loop runs it, with
 * options (NULL: the defaults; min_sample_seconds and max_inner size the samples in steps): the
 * warm-up steps, then samples of `inner` steps queued without waiting (loss_value NULL), each
 * ended by bp_train_results waiting for them and checking that the device ran them all, so a
 * sample's time is the device's work. Then the parts (see above), `inner` of each per sample.
 * Every step trains: the model and the optimizer move on (warmup + 1 + 2 * repeats * inner
 * updates). A NULL argument or an option out of range is BP_ERR_INVALID_ARGUMENT naming it; a
 * refused step fails the call with its status (train.h). */
BP_API bp_status bp_bench_train(bp_model *model, bp_optimizer *optimizer,
                                const bp_loss_config *loss, const bp_tensor *x,
                                const bp_tensor *target, const bp_bench_options *options,
                                bp_bench_train_result *result);

#ifdef __cplusplus
}
#endif

#endif
