/* The TF32 rounding probe (tf32_probe.h). TF32 keeps 10 of fp32's 23 mantissa bits, so between
 * 1 and 2 its neighbours are 2^-10 apart:
 *   p0 = 1 + 2^-11 + 2^-13   above half-way:   nearest (either tie rule) 1 + 2^-10, truncation 1
 *   p1 = 1 + 2^-11           a tie, even below: nearest-even 1, half-away 1 + 2^-10, trunc. 1
 *   p2 = 1 + 2^-10 + 2^-11   a tie, odd below:  nearest-even and half-away 1 + 2^-9, trunc.
 *                            1 + 2^-10
 *   p3 = -p0                 toward zero (truncation) -1, not -(1 + 2^-10) (toward -inf)
 * Any fp32 GEMM keeps each probe as it is. */
#include "tf32_probe.h"

#include <stdlib.h>

const char *bpt_tf32_rounding_name(bpt_tf32_rounding r) {
    switch (r) {
    case BPT_TF32_UNROUNDED:
        return "unrounded (fp32 operands)";
    case BPT_TF32_NEAREST_EVEN:
        return "round to nearest, ties to even";
    case BPT_TF32_TRUNCATION:
        return "truncation (toward zero)";
    case BPT_TF32_HALF_AWAY:
        return "round to nearest, ties away from zero";
    default:
        return "none of nearest-even, truncation, half-away (see the products)";
    }
}

static const float probes[4] = {1.0f + 0x1p-11f + 0x1p-13f, 1.0f + 0x1p-11f,
                                1.0f + 0x1p-10f + 0x1p-11f, -(1.0f + 0x1p-11f + 0x1p-13f)};

static bpt_tf32_rounding classify(const float y[4]) {
    const float want[4][4] = {
        {probes[0], probes[1], probes[2], probes[3]},
        {1.0f + 0x1p-10f, 1.0f, 1.0f + 0x1p-9f, -(1.0f + 0x1p-10f)},
        {1.0f, 1.0f, 1.0f + 0x1p-10f, -1.0f},
        {1.0f + 0x1p-10f, 1.0f + 0x1p-10f, 1.0f + 0x1p-9f, -(1.0f + 0x1p-10f)},
    };
    for (int r = 0; r < 4; ++r)
        if (y[0] == want[r][0] && y[1] == want[r][1] && y[2] == want[r][2] && y[3] == want[r][3])
            return (bpt_tf32_rounding)r;
    return BPT_TF32_OTHER;
}

/* The probe's forward; *y_all gets the rows x n outputs (freed by the caller). */
static bp_status probe_forward(bp_device *dev, int k, int n, int rows, float *y_all) {
    int widths[2] = {k, n};
    bp_activation act = BP_ACT_IDENTITY;
    bp_mlp_config c = bp_mlp_config_default(1, widths);
    c.activations = &act;
    c.max_batch = rows;
    c.precision = BP_PRECISION_TF32;
    bp_status st = BP_OK;
    bp_model *m = bp_model_create(dev, &c, &st);
    if (!m) return st;
    size_t np = (size_t)n * (size_t)k + (size_t)n;
    float *host = calloc(np + (size_t)rows * (size_t)k, sizeof *host);
    bp_tensor *x = NULL, *y = NULL;
    if (!host) st = BP_ERR_OUT_OF_MEMORY;
    if (st == BP_OK) {
        for (size_t i = 0; i < (size_t)n * (size_t)k; ++i) /* weights [n, k], then zero bias */
            host[i] = probes[(i / (size_t)k) % 4];
        for (size_t i = 0; i < (size_t)rows * (size_t)k; ++i)
            host[np + i] = 1.0f;
        st = bp_model_set_params(m, host, np);
    }
    if (st == BP_OK) x = bp_tensor_create(dev, BP_F32, rows, k, &st);
    if (st == BP_OK) y = bp_tensor_create(dev, BP_F32, rows, n, &st);
    if (st == BP_OK) st = bp_tensor_upload(x, host + np, (size_t)rows * (size_t)k);
    if (st == BP_OK) st = bp_model_forward(m, x, BP_MODE_INFERENCE, y);
    if (st == BP_OK) st = bp_tensor_download(y, y_all, (size_t)rows * (size_t)n);
    bp_tensor_free(x);
    bp_tensor_free(y);
    bp_model_free(m);
    free(host);
    return st;
}

bp_status bpt_tf32_rounding_of(bp_device *dev, int k, int n, int rows, bpt_tf32_rounding *out,
                               float y[4]) {
    *out = BPT_TF32_OTHER;
    float *all = malloc((size_t)rows * (size_t)n * sizeof *all);
    if (!all) return BP_ERR_OUT_OF_MEMORY;
    bp_status st = probe_forward(dev, k, n, rows, all);
    if (st == BP_OK) {
        for (int j = 0; j < 4; ++j)
            y[j] = all[j] / (float)k;
        *out = classify(y);
        /* every row and every copy of a probe must agree */
        for (size_t i = 0; i < (size_t)rows * (size_t)n; ++i)
            if (all[i] / (float)k != y[(i % (size_t)n) % 4]) *out = BPT_TF32_OTHER;
    }
    free(all);
    return st;
}
