/* bp_gpu_probe: what only the hardware can say, for the GPU check's report (scripts/gpu-check.sh
 * writes its output to probe.txt):
 *   1. which rounding the device's TF32 GEMMs give their operands (tests/tf32_probe.c), at a
 *      1 x 1 x 1 GEMM (where cuBLASLt may use no tensor core at all) and at 64 x 64 x 256;
 *   2. which cuBLASLt algorithm and epilogue each GEMM of a model got, in fp32, tf32 and bf16:
 *      cuBLASLt's own log of the model's creation (its heuristic calls) and of one training
 *      step (each cublasLtMatmul with its algorithm), through cublasLtLoggerSetCallback; the
 *      library's line on stderr names any plan it composed instead.
 * The log needs the real cuBLASLt (BP_PROBE_LT_LOG, a build with -DBP_CUDA=ON); elsewhere (the
 * emulated device, the CPU) part 2 says so and lists nothing.
 * Usage: bp_gpu_probe [device]   (default cuda). Exit status 0, or 1 when a probe failed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backprop/backprop.h"
#include "tf32_probe.h"

#if BP_PROBE_LT_LOG
#include <cublasLt.h>

static const char *phase = "";
static int lines;

/* cuBLASLt's log lines, each under the phase that caused it. */
static void on_log(int level, const char *function, const char *message) {
    if (++lines > 400) return; /* a runaway log must not swamp the report */
    printf("  [%s] L%d %s: %s\n", phase, level, function, message);
}
#endif

static int tf32_part(bp_device *dev) {
    const struct { int k, n, rows; } shapes[] = {{1, 4, 1}, {256, 64, 64}};
    int bad = 0;
    printf("## TF32 rounding of GEMM operands (tests/tf32_probe.c)\n");
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; ++i) {
        bpt_tf32_rounding r;
        float y[4] = {0};
        bp_status st = bpt_tf32_rounding_of(dev, shapes[i].k, shapes[i].n, shapes[i].rows, &r, y);
        if (st != BP_OK) {
            printf("tf32 %dx%dx%d: FAILED: %s\n", shapes[i].rows, shapes[i].n, shapes[i].k,
                   bp_last_error());
            bad = 1;
            continue;
        }
        printf("tf32 %dx%dx%d: %s (probes 1+2^-11+2^-13, 1+2^-11, 1+2^-10+2^-11, "
               "-(1+2^-11+2^-13) became %a %a %a %a)\n",
               shapes[i].rows, shapes[i].n, shapes[i].k, bpt_tf32_rounding_name(r), y[0], y[1],
               y[2], y[3]);
    }
    return bad;
}

/* A model of the README's shape (ReLU and GELU hidden layers, fused where cuBLASLt allows, a
 * ten-class output) made and trained one step in precision p. */
static int plans_of(bp_device *dev, bp_precision p) {
    int widths[4] = {784, 256, 128, 10};
    bp_activation acts[3] = {BP_ACT_RELU, BP_ACT_GELU_TANH, BP_ACT_IDENTITY};
    bp_mlp_config c = bp_mlp_config_default(3, widths);
    c.activations = acts;
    c.max_batch = 128;
    c.precision = p;
    char label[64];
    snprintf(label, sizeof label, "%s create", bp_precision_name(p));
#if BP_PROBE_LT_LOG
    phase = label;
#endif
    bp_status st = BP_OK;
    bp_model *m = bp_model_create(dev, &c, &st);
    if (!m) {
        printf("%s: bp_model_create FAILED: %s\n", bp_precision_name(p), bp_last_error());
        return 1;
    }
    bp_optim_config oc = bp_optim_config_default(BP_OPTIM_ADAMW);
    bp_optimizer *o = bp_optimizer_create(m, &oc, &st);
    size_t nx = (size_t)128 * 784;
    float *x_host = malloc(nx * sizeof *x_host);
    int32_t labels[128];
    bp_tensor *x = NULL, *y = NULL;
    if (o && x_host) {
        for (size_t i = 0; i < nx; ++i)
            x_host[i] = (float)((i * 7919u) % 1000u) / 1000.0f - 0.5f;
        for (int i = 0; i < 128; ++i)
            labels[i] = i % 10;
        x = bp_tensor_create(dev, BP_F32, 128, 784, &st);
        if (st == BP_OK) y = bp_tensor_create(dev, BP_I32, 128, 1, &st);
        if (st == BP_OK) st = bp_tensor_upload(x, x_host, nx);
        if (st == BP_OK) st = bp_tensor_upload(y, labels, 128);
        snprintf(label, sizeof label, "%s step", bp_precision_name(p));
        bp_loss_config ce = {BP_LOSS_CROSS_ENTROPY, 0.0f};
        float loss = 0.0f;
        if (st == BP_OK) st = bp_train_step(m, o, &ce, x, y, &loss);
        if (st == BP_OK) st = bp_device_synchronize(dev);
    } else if (st == BP_OK) {
        st = BP_ERR_OUT_OF_MEMORY;
    }
#if BP_PROBE_LT_LOG
    phase = "";
#endif
    if (st != BP_OK)
        printf("%s: a training step FAILED: %s\n", bp_precision_name(p), bp_last_error());
    bp_tensor_free(x);
    bp_tensor_free(y);
    free(x_host);
    bp_optimizer_free(o);
    bp_model_free(m);
    return st != BP_OK;
}

static int plans_part(bp_device *dev) {
    printf("## cuBLASLt's algorithm and epilogue for each GEMM of a 784-256-128-10 ReLU/GELU "
           "model, batch 128\n");
#if BP_PROBE_LT_LOG
    /* errors, kernel launches with their parameters (the algorithm), heuristic information */
    cublasLtLoggerSetCallback(on_log);
    cublasLtLoggerSetMask(1 | 2 | 8);
#else
    printf("no cuBLASLt log in this build (it needs -DBP_CUDA=ON and the real cuBLASLt): the "
           "models are made and trained, nothing is listed\n");
#endif
    int bad = 0;
    const bp_precision modes[3] = {BP_PRECISION_FP32, BP_PRECISION_TF32, BP_PRECISION_BF16};
    for (int i = 0; i < 3; ++i) {
        printf("### %s\n", bp_precision_name(modes[i]));
        fflush(stdout);
        bad |= plans_of(dev, modes[i]);
        fflush(stdout);
    }
#if BP_PROBE_LT_LOG
    cublasLtLoggerSetMask(0);
    cublasLtLoggerSetCallback(NULL);
    if (lines > 400) printf("(%d log lines; the first 400 are above)\n", lines);
#endif
    return bad;
}

int main(int argc, char **argv) {
    const char *name = argc > 1 ? argv[1] : "cuda";
    bp_status st = BP_OK;
    bp_device *dev = bp_device_open(name, &st);
    if (!dev) {
        printf("bp_gpu_probe: no device %s: %s\n", name, bp_last_error());
        return 1;
    }
    printf("# bp_gpu_probe on %s\n", name);
    int bad = tf32_part(dev);
    bad |= plans_part(dev);
    bp_device_close(dev);
    return bad;
}
