/* LayerNorm, RMSNorm and the residual add; the per-element math is bp_math.h's, the one the
 * CUDA kernels call.
 *
 * Speed: a row is read from memory once by the forward and once by the backward. The forward's
 * three sweeps (mean, variance, output) and the backward's two (row sums, then dx) run a CHUNK
 * of features at a time over a row that stays in the first-level cache (up to a few thousand
 * features), and the backward adds each row's share of the weight and bias gradients while it
 * has the row, instead of reading x and dy again.
 *
 * Accuracy: every sum is a two-level one: LANES fp32 accumulators over a chunk (at most
 * CHUNK / LANES = 16 additions each, and independent lanes let it vectorise), the lanes and the
 * chunks then added in double. The variance is the mean of the squared deviations from the
 * mean, never E[x^2] - mean^2, which cancels.
 *
 * Determinism: the order of every addition is fixed by the shape alone. Each row is reduced on
 * its own; the column sums are accumulated per block of ROW_BLOCK rows in row order (fp32), and
 * the block partials added in block order in double (bp_cpu_col_sum); threads only decide who
 * computes which block, so a result is the same for any thread count. */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "cpu/cpu_internal.h"

#define CHUNK     256
#define LANES     16
#define ROW_BLOCK 32

static int imin(int a, int b) {
    return a < b ? a : b;
}

/* Features o .. o+n-1 of x as fp32: x itself in fp32, else widened into buf (n <= CHUNK). */
static const float *chunk_f32(const void *x, bp_eltype type, size_t o, int n, float *buf) {
    if (type == BP_EL_F32) return (const float *)x + o;
    const uint16_t *h = (const uint16_t *)x + o;
    for (int i = 0; i < n; ++i)
        buf[i] = bp_bf16_to_f32(h[i]);
    return buf;
}

static double lanes_total(const float acc[LANES]) {
    double s = 0.0;
    for (int l = 0; l < LANES; ++l)
        s += acc[l];
    return s;
}

/* sum of v[i] - shift, or with square set of its squares, over n <= CHUNK features. */
static double chunk_sum(const float *v, int n, float shift, int square) {
    float acc[LANES] = {0};
    int i = 0;
    if (square)
        for (; i + LANES <= n; i += LANES)
#pragma omp simd
            for (int l = 0; l < LANES; ++l) {
                float d = v[i + l] - shift;
                acc[l] += d * d;
            }
    else
        for (; i + LANES <= n; i += LANES)
#pragma omp simd
            for (int l = 0; l < LANES; ++l)
                acc[l] += v[i + l] - shift;
    double tail = 0.0;
    for (; i < n; ++i) {
        float d = v[i] - shift;
        tail += square ? d * d : d;
    }
    return lanes_total(acc) + tail;
}

/* The sum (square 0) or the sum of squares of x's row at o, less shift. */
static double row_sum(int cols, const void *x, bp_eltype type, size_t o, float shift, int square) {
    float buf[CHUNK];
    double s = 0.0;
    for (int c0 = 0; c0 < cols; c0 += CHUNK) {
        int n = imin(CHUNK, cols - c0);
        s += chunk_sum(chunk_f32(x, type, o + (size_t)c0, n, buf), n, shift, square);
    }
    return s;
}

/* y of n features from v; bias NULL is 0. `omp simd`: y may be the input's buffer itself,
 * and element i reads and writes only element i. */
static void chunk_forward(int n, const float *v, float mean, float rstd, const float *weight,
                          const float *bias, float *y) {
    if (bias) {
#pragma omp simd
        for (int i = 0; i < n; ++i)
            y[i] = bp_norm_forward_elem(v[i], mean, rstd, weight[i], bias[i]);
    } else {
#pragma omp simd
        for (int i = 0; i < n; ++i)
            y[i] = bp_norm_forward_elem(v[i], mean, rstd, weight[i], 0.0f);
    }
}

static void row_forward(bp_norm kind, int cols, const void *x, bp_eltype x_type, size_t o,
                        const float *weight, const float *bias, float eps, void *y,
                        bp_eltype y_type, float *mean, float *rstd) {
    float m = 0.0f;
    if (kind == BP_NORM_LAYER) m = (float)(row_sum(cols, x, x_type, o, 0.0f, 0) / cols);
    float r = bp_norm_rstd((float)(row_sum(cols, x, x_type, o, m, 1) / cols), eps);
    *mean = m;
    *rstd = r;
    float in[CHUNK], out[CHUNK];
    for (int c0 = 0; c0 < cols; c0 += CHUNK) {
        int n = imin(CHUNK, cols - c0);
        size_t at = o + (size_t)c0;
        const float *v = chunk_f32(x, x_type, at, n, in);
        float *dst = y_type == BP_EL_F32 ? (float *)y + at : out;
        chunk_forward(n, v, m, r, weight + c0, bias ? bias + c0 : NULL, dst);
        if (y_type != BP_EL_F32)
            for (int i = 0; i < n; ++i)
                bp_cpu_store(y, y_type, at + (size_t)i, out[i]);
    }
}

bp_status bp_cpu_norm_forward(bp_device *device, bp_norm kind, int rows, int cols, const void *x,
                              bp_eltype x_type, const float *weight, const float *bias, float eps,
                              void *y, bp_eltype y_type, float *mean, float *rstd) {
#pragma omp parallel for schedule(static)                                                          \
    num_threads(bp_cpu_threads(device)) if (bp_cpu_parallel(rows, cols))
    for (int r = 0; r < rows; ++r)
        row_forward(kind, cols, x, x_type, (size_t)r * (size_t)cols, weight, bias, eps, y, y_type,
                    &mean[r], &rstd[r]);
    return BP_OK;
}

/* The row sums of the backward over n <= CHUNK features: sums[0] += sum of g = dy * weight,
 * sums[1] += sum of g * xhat. */
static void chunk_grad_sums(int n, const float *v, const float *dy, const float *weight, float mean,
                            float rstd, double sums[2]) {
    float sg[LANES] = {0}, sgx[LANES] = {0};
    int i = 0;
    for (; i + LANES <= n; i += LANES)
#pragma omp simd
        for (int l = 0; l < LANES; ++l) {
            float g = dy[i + l] * weight[i + l];
            sg[l] += g;
            sgx[l] += g * ((v[i + l] - mean) * rstd);
        }
    double tg = 0.0, tgx = 0.0;
    for (; i < n; ++i) {
        float g = dy[i] * weight[i];
        tg += g;
        tgx += g * ((v[i] - mean) * rstd);
    }
    sums[0] += lanes_total(sg) + tg;
    sums[1] += lanes_total(sgx) + tgx;
}

/* dx of n features, and their shares of the weight and bias gradients added to pw and pb (pb
 * NULL for RMSNorm). */
static void chunk_backward(int n, const float *restrict v, const float *restrict dy,
                           const float *restrict weight, float mean, float rstd, float mean_g,
                           float mean_gx, float *restrict dx, float *restrict pw,
                           float *restrict pb) {
    for (int i = 0; i < n; ++i) {
        float xhat = (v[i] - mean) * rstd;
        dx[i] = bp_norm_backward_elem(dy[i] * weight[i], xhat, rstd, mean_g, mean_gx);
        pw[i] += dy[i] * xhat;
    }
    if (pb)
        for (int i = 0; i < n; ++i)
            pb[i] += dy[i];
}

static void row_backward(int cols, const void *x, bp_eltype type, size_t o, const float *weight,
                         float mean, float rstd, int center, const float *dy, float *dx, float *pw,
                         float *pb) {
    float buf[CHUNK];
    double sums[2] = {0.0, 0.0};
    for (int c0 = 0; c0 < cols; c0 += CHUNK) {
        int n = imin(CHUNK, cols - c0);
        size_t at = o + (size_t)c0;
        chunk_grad_sums(n, chunk_f32(x, type, at, n, buf), dy + at, weight + c0, mean, rstd, sums);
    }
    float mean_g = center ? (float)(sums[0] / cols) : 0.0f, mean_gx = (float)(sums[1] / cols);
    for (int c0 = 0; c0 < cols; c0 += CHUNK) {
        int n = imin(CHUNK, cols - c0);
        size_t at = o + (size_t)c0;
        chunk_backward(n, chunk_f32(x, type, at, n, buf), dy + at, weight + c0, mean, rstd, mean_g,
                       mean_gx, dx + at, pw + c0, pb ? pb + c0 : NULL);
    }
}

bp_status bp_cpu_norm_backward(bp_device *device, bp_norm kind, int rows, int cols, const void *x,
                               bp_eltype x_type, const float *weight, const float *mean,
                               const float *rstd, const float *dy, float *dx, float beta,
                               float *dweight, float *dbias) {
    int center = kind == BP_NORM_LAYER, with_bias = center && dbias;
    if (cols <= 0) return BP_OK;
    if (rows <= 0) { /* sums over no rows: 0, added to the gradients for beta 1 */
        if (beta == 0.0f) memset(dweight, 0, (size_t)cols * sizeof *dweight);
        if (beta == 0.0f && with_bias) memset(dbias, 0, (size_t)cols * sizeof *dbias);
        return BP_OK;
    }
    int blocks = (rows + ROW_BLOCK - 1) / ROW_BLOCK;
    size_t plane = (size_t)blocks * (size_t)cols;
    /* the weight partials of every block, then the bias partials */
    float *part = malloc((with_bias ? 2 : 1) * plane * sizeof *part);
    if (!part)
        return bp_error(BP_ERR_OUT_OF_MEMORY,
                        "cpu norm_backward: no host memory for the column sums of %d x %d", rows,
                        cols);
#pragma omp parallel for schedule(static)                                                          \
    num_threads(bp_cpu_threads(device)) if (bp_cpu_parallel(rows, cols))
    for (int b = 0; b < blocks; ++b) {
        float *pw = part + (size_t)b * (size_t)cols;
        float *pb = with_bias ? pw + plane : NULL;
        memset(pw, 0, (size_t)cols * sizeof *pw);
        if (pb) memset(pb, 0, (size_t)cols * sizeof *pb);
        for (int r = b * ROW_BLOCK; r < imin(rows, (b + 1) * ROW_BLOCK); ++r)
            row_backward(cols, x, x_type, (size_t)r * (size_t)cols, weight, mean[r], rstd[r],
                         center, dy, dx, pw, pb);
    }
    bp_status st = bp_cpu_col_sum(device, blocks, cols, part, beta, dweight);
    if (st == BP_OK && with_bias)
        st = bp_cpu_col_sum(device, blocks, cols, part + plane, beta, dbias);
    free(part);
    return st;
}

bp_status bp_cpu_add(bp_device *device, size_t n, const void *x, bp_eltype x_type, float *y) {
#pragma omp parallel for schedule(static)                                                          \
    num_threads(bp_cpu_threads(device)) if (n >= BP_CPU_PAR_MIN)
    for (size_t i = 0; i < n; ++i)
        y[i] += bp_cpu_load(x, x_type, i);
    return BP_OK;
}
