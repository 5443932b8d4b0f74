/* Element-wise ops: bias + activation, activation backward, softmax, dropout. */
#include <math.h>

#include "cpu/cpu_internal.h"
#include "kernels/bp_math.h"

/* Elements per task of act_backward: a chunk is the unit the activation switch is hoisted
 * out of. */
#define ACT_CHUNK ((size_t)4096)

static inline void add_bias(int cols, const float *bias, float *z) {
    if (bias)
        for (int j = 0; j < cols; ++j)
            z[j] += bias[j];
}

/* For the cheap activations, inlined with a constant act at the call sites in bias_act_row, so
 * the switch in bp_act_forward folds away and the loop vectorises. `omp simd`: a may be z
 * itself, and with the two the same the compiler's overlap check would take its scalar loop;
 * element j reads and writes only element j, so the vector loop is right either way. */
static inline void bias_act_span(int cols, const float *bias, float *z, float *a, bp_activation act,
                                 float slope) {
    add_bias(cols, bias, z);
#pragma omp simd
    for (int j = 0; j < cols; ++j)
        a[j] = bp_act_forward(z[j], act, slope);
}

/* The others (erf, tanh, exp) keep the switch in a plain loop. */
static void bias_act_any(int cols, const float *bias, float *z, float *a, bp_activation act,
                         float slope) {
    add_bias(cols, bias, z);
    for (int j = 0; j < cols; ++j)
        a[j] = bp_act_forward(z[j], act, slope);
}

static void bias_act_row(int cols, const float *bias, float *z, float *a, bp_activation act,
                         float slope) {
    switch (act) {
    case BP_ACT_IDENTITY:
        bias_act_span(cols, bias, z, a, BP_ACT_IDENTITY, slope);
        break;
    case BP_ACT_RELU:
        bias_act_span(cols, bias, z, a, BP_ACT_RELU, slope);
        break;
    case BP_ACT_LEAKY_RELU:
        bias_act_span(cols, bias, z, a, BP_ACT_LEAKY_RELU, slope);
        break;
    default:
        bias_act_any(cols, bias, z, a, act, slope);
        break;
    }
}

bp_status bp_cpu_bias_act_forward(bp_device *device, int rows, int cols, const float *bias,
                                  float *z, float *a, bp_activation act, float slope) {
    (void)device;
#pragma omp parallel for schedule(static)                                                          \
    num_threads(bp_cpu_threads(device)) if (bp_cpu_parallel(rows, cols))
    for (int r = 0; r < rows; ++r) {
        size_t o = (size_t)r * (size_t)cols;
        bias_act_row(cols, bias, z + o, a + o, act, slope);
    }
    return BP_OK;
}

/* See bias_act_span: inlined with a constant act; dz is often da itself (the backward pass works
 * in place), which without `omp simd` ran the scalar loop (13% of an S step). */
static inline void act_backward_span(size_t n, const float *z, const float *da, float *dz,
                                     bp_activation act, float slope) {
#pragma omp simd
    for (size_t i = 0; i < n; ++i)
        dz[i] = da[i] * bp_act_derivative(z[i], act, slope);
}

static void act_backward_any(size_t n, const float *z, const float *da, float *dz,
                             bp_activation act, float slope) {
    for (size_t i = 0; i < n; ++i)
        dz[i] = da[i] * bp_act_derivative(z[i], act, slope);
}

static void act_backward_chunk(size_t n, const float *z, const float *da, float *dz,
                               bp_activation act, float slope) {
    switch (act) {
    case BP_ACT_IDENTITY:
        act_backward_span(n, z, da, dz, BP_ACT_IDENTITY, slope);
        break;
    case BP_ACT_RELU:
        act_backward_span(n, z, da, dz, BP_ACT_RELU, slope);
        break;
    case BP_ACT_LEAKY_RELU:
        act_backward_span(n, z, da, dz, BP_ACT_LEAKY_RELU, slope);
        break;
    default:
        act_backward_any(n, z, da, dz, act, slope);
        break;
    }
}

bp_status bp_cpu_act_backward(bp_device *device, size_t n, const float *z, const float *da,
                              float *dz, bp_activation act, float slope) {
    (void)device;
    size_t chunks = (n + ACT_CHUNK - 1) / ACT_CHUNK;
#pragma omp parallel for schedule(static)                                                          \
    num_threads(bp_cpu_threads(device)) if (n >= BP_CPU_PAR_MIN)
    for (size_t b = 0; b < chunks; ++b) {
        size_t lo = b * ACT_CHUNK;
        size_t len = n - lo < ACT_CHUNK ? n - lo : ACT_CHUNK;
        act_backward_chunk(len, z + lo, da + lo, dz + lo, act, slope);
    }
    return BP_OK;
}

/* y may be x: x is read in full (max) before y is first written. */
static void softmax_row(int cols, const float *x, float *y) {
    float m = bp_cpu_row_max(x, cols);
    double s = 0.0;
    for (int j = 0; j < cols; ++j) {
        float e = expf(x[j] - m);
        y[j] = e;
        s += e;
    }
    float total = (float)s;
    for (int j = 0; j < cols; ++j)
        y[j] /= total;
}

bp_status bp_cpu_softmax(bp_device *device, int rows, int cols, const float *x, float *y) {
    (void)device;
    if (cols <= 0) return BP_OK;
#pragma omp parallel for schedule(static)                                                          \
    num_threads(bp_cpu_threads(device)) if (bp_cpu_parallel(rows, cols))
    for (int r = 0; r < rows; ++r) {
        size_t o = (size_t)r * (size_t)cols;
        softmax_row(cols, x + o, y + o);
    }
    return BP_OK;
}

bp_status bp_cpu_dropout(bp_device *device, size_t n, const float *x, float *y, uint64_t seed,
                         uint64_t stream, uint64_t first, uint32_t threshold, float scale) {
    (void)device;
    if (n == 0) return BP_OK;
    /* One Philox block gives the words of stream indices 4b .. 4b+3; the blocks that hold
     * first .. first+n-1, the first and last of them possibly in part. */
    uint64_t b0 = first / 4, blocks = (first + n + 3) / 4 - b0;
#pragma omp parallel for schedule(static)                                                          \
    num_threads(bp_cpu_threads(device)) if (n >= BP_CPU_PAR_MIN)
    for (uint64_t t = 0; t < blocks; ++t) {
        uint32_t w[4];
        bp_random_block(seed, stream, b0 + t, w);
        uint64_t g0 = 4 * (b0 + t);
        uint64_t lo = g0 < first ? first : g0, hi = g0 + 4 < first + n ? g0 + 4 : first + n;
        for (uint64_t g = lo; g < hi; ++g)
            y[g - first] = bp_dropout_keep_word(w[g - g0], threshold) ? x[g - first] * scale : 0.0f;
    }
    return BP_OK;
}
