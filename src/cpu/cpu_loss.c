/* Losses: each row's loss summed over its columns, and grad_scale times its gradient, in one
 * call. grad may be the input itself: every element is read before it is written. */
#include <math.h>

#include "cpu/cpu_internal.h"
#include "kernels/bp_math.h"

/* glibc's vector expf (libmvec, which libm pulls in as needed): math.h declares it for `omp simd`
 * loops only under -ffast-math, which the library is not built with; this declaration lets gcc
 * call it from the loops below (1 ulp, as the scalar expf), so a row's exponentials run 4 or
 * more at a time instead of one. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__)
__attribute__((__simd__("notinbranch"))) float expf(float);
#endif

/* Log-sum-exp of a row, stable: the largest logit is taken out before exp. The sum is in double,
 * in the vector lanes' fixed order. */
static float row_lse(int cols, const float *z) {
    float m = bp_cpu_row_max(z, cols);
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int j = 0; j < cols; ++j)
        s += (double)expf(z[j] - m);
    return m + (float)log(s);
}

static float xent_row(int cols, const float *z, int label, float smoothing, float grad_scale,
                      float *grad) {
    float lse = row_lse(cols, z);
    double loss = 0.0;
#pragma omp simd reduction(+ : loss)
    for (int j = 0; j < cols; ++j) {
        float q = bp_xent_target(j, label, smoothing, cols);
        /* Skipping q = 0 keeps a -inf logit outside the target from making 0 * inf = NaN. */
        loss += q != 0.0f ? (double)q * ((double)lse - (double)z[j]) : 0.0;
    }
    if (grad)
#pragma omp simd
        for (int j = 0; j < cols; ++j)
            grad[j] = grad_scale *
                      bp_xent_grad_elem(z[j], lse, bp_xent_target(j, label, smoothing, cols));
    return (float)loss;
}

bp_status bp_cpu_softmax_xent(bp_device *device, int rows, int cols, const float *logits,
                              const int32_t *labels, float smoothing, float grad_scale, float *grad,
                              float *row_loss) {
    (void)device;
    if (cols <= 0) return BP_OK;
#pragma omp parallel for schedule(static)                                                          \
    num_threads(bp_cpu_threads(device)) if (bp_cpu_parallel(rows, cols))
    for (int r = 0; r < rows; ++r) {
        size_t o = (size_t)r * (size_t)cols;
        row_loss[r] =
            xent_row(cols, logits + o, labels[r], smoothing, grad_scale, grad ? grad + o : NULL);
    }
    return BP_OK;
}

/* The index of the first largest of z[0..cols) (NaNs skipped; -1 when all are NaN). */
static int first_argmax(const float *z, int cols) {
    int best = -1;
    for (int j = 0; j < cols; ++j)
        if (!isnan(z[j]) && (best < 0 || z[j] > z[best])) best = j;
    return best;
}

bp_status bp_cpu_class_match(bp_device *device, int rows, int cols, const float *logits,
                             const int32_t *labels, float *match) {
    (void)device;
    for (int r = 0; r < rows; ++r)
        match[r] = first_argmax(logits + (size_t)r * (size_t)cols, cols) == labels[r] ? 1.0f : 0.0f;
    return BP_OK;
}

static float mse_row(int cols, const float *pred, const float *target, float grad_scale,
                     float *grad) {
    double loss = 0.0;
    for (int j = 0; j < cols; ++j) {
        float g;
        loss += bp_mse_elem(pred[j], target[j], &g);
        if (grad) grad[j] = grad_scale * g;
    }
    return (float)loss;
}

bp_status bp_cpu_mse(bp_device *device, int rows, int cols, const float *pred, const float *target,
                     float grad_scale, float *grad, float *row_loss) {
    (void)device;
#pragma omp parallel for schedule(static)                                                          \
    num_threads(bp_cpu_threads(device)) if (bp_cpu_parallel(rows, cols))
    for (int r = 0; r < rows; ++r) {
        size_t o = (size_t)r * (size_t)cols;
        row_loss[r] = mse_row(cols, pred + o, target + o, grad_scale, grad ? grad + o : NULL);
    }
    return BP_OK;
}

static float bce_row(int cols, const float *z, const float *target, float grad_scale, float *grad) {
    double loss = 0.0;
    for (int j = 0; j < cols; ++j) {
        float g;
        loss += bp_bce_logits_elem(z[j], target[j], &g);
        if (grad) grad[j] = grad_scale * g;
    }
    return (float)loss;
}

bp_status bp_cpu_bce_logits(bp_device *device, int rows, int cols, const float *logits,
                            const float *target, float grad_scale, float *grad, float *row_loss) {
    (void)device;
#pragma omp parallel for schedule(static)                                                          \
    num_threads(bp_cpu_threads(device)) if (bp_cpu_parallel(rows, cols))
    for (int r = 0; r < rows; ++r) {
        size_t o = (size_t)r * (size_t)cols;
        row_loss[r] = bce_row(cols, logits + o, target + o, grad_scale, grad ? grad + o : NULL);
    }
    return BP_OK;
}
