/* Reductions: column sums, sum, sum of squares, label checks.
 *
 * Each result is the same for any thread count: the order of every addition is fixed by the
 * data's shape alone, and threads only decide who computes which fixed piece. */
#include "core/error.h"
#include "cpu/cpu_internal.h"

/* Columns per col_sum task: as wide as the thread count allows, since long contiguous reads
 * from each row stream well, and at most COL_MAX so the accumulators fit on the stack. The
 * width never changes a result: each column is summed over the rows in row order whatever task
 * it falls in. */
#define COL_MIN 32
#define COL_MAX 1024

/* sum, sum_squares: the input is cut into blocks of SUM_BLOCK elements, each reduced on its own
 * in SUM_LANES interleaved double accumulators (independent lanes let it vectorise without
 * reordering any lane's additions); the block partials are then added in block order. Blocks
 * are handed to threads SUM_GROUP at a time so the partials fit on the stack. */
#define SUM_BLOCK ((size_t)4096)
#define SUM_LANES ((size_t)8)
#define SUM_GROUP 256

static void col_sum_block(int rows, int cols, int c0, int width, const float *x, float beta,
                          float *out) {
    double acc[COL_MAX] = {0};
    for (int r = 0; r < rows; ++r) {
        const float *row = x + (size_t)r * (size_t)cols + c0;
        for (int j = 0; j < width; ++j)
            acc[j] += row[j];
    }
    /* beta = 0 must not read out: it may hold garbage, and 0 * NaN is NaN. */
    for (int j = 0; j < width; ++j)
        out[c0 + j] = beta == 0.0f ? (float)acc[j] : beta * out[c0 + j] + (float)acc[j];
}

static int col_width(int cols, int threads) {
    int w = (cols - 1) / threads + 1;
    if (w >= COL_MAX) return COL_MAX;
    return (w + COL_MIN - 1) / COL_MIN * COL_MIN;
}

bp_status bp_cpu_col_sum(bp_device *device, int rows, int cols, const float *x, float beta,
                         float *out) {
    if (cols <= 0) return BP_OK;
    int width = col_width(cols, bp_cpu_threads(device));
    int blocks = cols / width + (cols % width != 0);
#pragma omp parallel for schedule(static)                                                          \
    num_threads(bp_cpu_threads(device)) if (bp_cpu_parallel(rows, cols))
    for (int b = 0; b < blocks; ++b) {
        int c0 = b * width;
        int w = cols - c0 < width ? cols - c0 : width;
        col_sum_block(rows, cols, c0, w, x, beta, out);
    }
    return BP_OK;
}

static double lanes_total(const double acc[SUM_LANES]) {
    double s = 0.0;
    for (size_t l = 0; l < SUM_LANES; ++l)
        s += acc[l];
    return s;
}

static double block_sum(const float *x, size_t len) {
    double acc[SUM_LANES] = {0};
    size_t i = 0;
    for (; i + SUM_LANES <= len; i += SUM_LANES)
        for (size_t l = 0; l < SUM_LANES; ++l)
            acc[l] += (double)x[i + l];
    for (; i < len; ++i)
        acc[i % SUM_LANES] += (double)x[i];
    return lanes_total(acc);
}

static double block_sum_squares(const float *x, size_t len) {
    double acc[SUM_LANES] = {0};
    size_t i = 0;
    for (; i + SUM_LANES <= len; i += SUM_LANES)
        for (size_t l = 0; l < SUM_LANES; ++l)
            acc[l] += (double)x[i + l] * (double)x[i + l];
    for (; i < len; ++i)
        acc[i % SUM_LANES] += (double)x[i] * (double)x[i];
    return lanes_total(acc);
}

/* total plus the partials of the blocks of x[0..len), len <= SUM_GROUP * SUM_BLOCK, added one
 * by one in block order, so groups change nothing in the order of additions. */
static double reduce_group(int nt, double total, const float *x, size_t len,
                           double (*block)(const float *x, size_t len)) {
    double part[SUM_GROUP];
    size_t nblocks = (len + SUM_BLOCK - 1) / SUM_BLOCK;
#pragma omp parallel for schedule(static) num_threads(nt) if (len >= BP_CPU_PAR_MIN)
    for (size_t b = 0; b < nblocks; ++b) {
        size_t lo = b * SUM_BLOCK;
        part[b] = block(x + lo, len - lo < SUM_BLOCK ? len - lo : SUM_BLOCK);
    }
    for (size_t b = 0; b < nblocks; ++b)
        total += part[b];
    return total;
}

static float reduce(int nt, size_t n, const float *x, double (*block)(const float *x, size_t len)) {
    const size_t group = (size_t)SUM_GROUP * SUM_BLOCK;
    double total = 0.0;
    for (size_t lo = 0; lo < n; lo += group)
        total = reduce_group(nt, total, x + lo, n - lo < group ? n - lo : group, block);
    return (float)total;
}

bp_status bp_cpu_sum(bp_device *device, size_t n, const float *x, float *out) {
    *out = reduce(bp_cpu_threads(device), n, x, block_sum);
    return BP_OK;
}

bp_status bp_cpu_sum_squares(bp_device *device, size_t n, const float *x, float *out) {
    *out = reduce(bp_cpu_threads(device), n, x, block_sum_squares);
    return BP_OK;
}

bp_status bp_cpu_check_labels(bp_device *device, int rows, const int32_t *labels, int classes,
                              int64_t *bad_index) {
    (void)device;
    *bad_index = -1;
    for (int r = 0; r < rows; ++r) {
        if (labels[r] < 0 || labels[r] >= classes) {
            *bad_index = r;
            break;
        }
    }
    return BP_OK;
}

bp_status bp_cpu_check_labels_into(bp_device *device, int rows, const int32_t *labels, int classes,
                                   bp_step_state *state) {
    int64_t bad = -1;
    bp_cpu_check_labels(device, rows, labels, classes, &bad);
    state->bad_row = bad < 0 ? INT64_MAX : bad;
    return BP_OK;
}
