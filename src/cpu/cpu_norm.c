/* LayerNorm, RMSNorm and the residual add. The statistics and the row sums of the backward are
 * accumulated in double in every precision; the per-element math is bp_math.h's, the one the
 * CUDA kernels call. */
#include <stdlib.h>

#include "core/error.h"
#include "cpu/cpu_internal.h"

/* Columns per task of the weight-gradient sums: each task owns its columns and walks the rows
 * in order, so the sums are the same whatever the thread count. */
#define NORM_COLS 64

/* mean (0 for RMSNorm) and rstd of one row. */
static void row_stats(bp_norm kind, int cols, const void *x, bp_eltype type, size_t o, float eps,
                      float *mean, float *rstd) {
    double s = 0.0, q = 0.0;
    if (kind == BP_NORM_LAYER) {
        for (int c = 0; c < cols; ++c)
            s += bp_cpu_load(x, type, o + (size_t)c);
        s /= cols;
    }
    for (int c = 0; c < cols; ++c) {
        double d = bp_cpu_load(x, type, o + (size_t)c) - s;
        q += d * d;
    }
    *mean = (float)s;
    *rstd = bp_norm_rstd((float)(q / cols), eps);
}

bp_status bp_cpu_norm_forward(bp_device *device, bp_norm kind, int rows, int cols, const void *x,
                              bp_eltype x_type, const float *weight, const float *bias, float eps,
                              void *y, bp_eltype y_type, float *mean, float *rstd) {
#pragma omp parallel for schedule(static)                                                          \
    num_threads(bp_cpu_threads(device)) if (bp_cpu_parallel(rows, cols))
    for (int r = 0; r < rows; ++r) {
        size_t o = (size_t)r * (size_t)cols;
        row_stats(kind, cols, x, x_type, o, eps, &mean[r], &rstd[r]);
        for (int c = 0; c < cols; ++c) {
            float v = bp_cpu_load(x, x_type, o + (size_t)c);
            float out = bp_norm_forward_elem(v, mean[r], rstd[r], weight[c], bias ? bias[c] : 0.0f);
            bp_cpu_store(y, y_type, o + (size_t)c, out);
        }
    }
    return BP_OK;
}

/* dx of one row. */
static void row_backward(int cols, const void *x, bp_eltype type, size_t o, const float *weight,
                         float mean, float rstd, int center, const float *dy, float *dx) {
    double sg = 0.0, sgx = 0.0;
    for (int c = 0; c < cols; ++c) {
        double g = (double)dy[o + (size_t)c] * weight[c];
        sg += g;
        sgx += g * ((bp_cpu_load(x, type, o + (size_t)c) - mean) * rstd);
    }
    float mean_g = center ? (float)(sg / cols) : 0.0f, mean_gx = (float)(sgx / cols);
    for (int c = 0; c < cols; ++c) {
        float xhat = (bp_cpu_load(x, type, o + (size_t)c) - mean) * rstd;
        dx[o + (size_t)c] =
            bp_norm_backward_elem(dy[o + (size_t)c] * weight[c], xhat, rstd, mean_g, mean_gx);
    }
}

/* dweight and dbias of columns c0 .. c0+width-1. */
static void col_grads(int rows, int cols, int c0, int width, const void *x, bp_eltype type,
                      const float *mean, const float *rstd, const float *dy, float beta,
                      float *dweight, float *dbias) {
    double sw[NORM_COLS] = {0}, sb[NORM_COLS] = {0};
    for (int r = 0; r < rows; ++r) {
        size_t o = (size_t)r * (size_t)cols + (size_t)c0;
        for (int k = 0; k < width; ++k) {
            float xhat = (bp_cpu_load(x, type, o + (size_t)k) - mean[r]) * rstd[r];
            sw[k] += (double)dy[o + (size_t)k] * xhat;
            sb[k] += dy[o + (size_t)k];
        }
    }
    for (int k = 0; k < width; ++k) {
        dweight[c0 + k] = (float)(sw[k] + (beta != 0.0f ? (double)dweight[c0 + k] : 0.0));
        if (dbias) dbias[c0 + k] = (float)(sb[k] + (beta != 0.0f ? (double)dbias[c0 + k] : 0.0));
    }
}

bp_status bp_cpu_norm_backward(bp_device *device, bp_norm kind, int rows, int cols, const void *x,
                               bp_eltype x_type, const float *weight, const float *mean,
                               const float *rstd, const float *dy, float *dx, float beta,
                               float *dweight, float *dbias) {
    int center = kind == BP_NORM_LAYER;
#pragma omp parallel for schedule(static)                                                          \
    num_threads(bp_cpu_threads(device)) if (bp_cpu_parallel(rows, cols))
    for (int r = 0; r < rows; ++r)
        row_backward(cols, x, x_type, (size_t)r * (size_t)cols, weight, mean[r], rstd[r], center,
                     dy, dx);
    int blocks = (cols + NORM_COLS - 1) / NORM_COLS;
#pragma omp parallel for schedule(static)                                                          \
    num_threads(bp_cpu_threads(device)) if (bp_cpu_parallel(rows, cols))
    for (int b = 0; b < blocks; ++b) {
        int c0 = b * NORM_COLS, width = cols - c0 < NORM_COLS ? cols - c0 : NORM_COLS;
        col_grads(rows, cols, c0, width, x, x_type, mean, rstd, dy, beta, dweight,
                  center ? dbias : NULL);
    }
    return BP_OK;
}

bp_status bp_cpu_add(bp_device *device, size_t n, const void *x, bp_eltype x_type, float *y) {
#pragma omp parallel for schedule(static)                                                          \
    num_threads(bp_cpu_threads(device)) if (n >= BP_CPU_PAR_MIN)
    for (size_t i = 0; i < n; ++i)
        y[i] += bp_cpu_load(x, x_type, i);
    return BP_OK;
}
