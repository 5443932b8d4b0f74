// Row-wise kernels: softmax and the losses (softmax cross-entropy, MSE, BCE with logits), each
// value and gradient in one launch.
//
// A group of threads owns a row: one warp (8 rows per 256-thread block) when the row is short,
// the whole 256-thread block when it is long. The group reduces its row with the fixed-order
// reductions of common.cuh, so a row's loss is bitwise the same on every run and GPU. Any
// number of columns works: each thread strides over the row.
#include <climits>

#include "cuda/launch.h"
#include "kernels/bp_math.h"
#include "kernels/common.cuh"

namespace bp_cu {
namespace {

constexpr int kWarpRowsMax = 512; // rows up to this many columns go one warp per row

// Scratch for a block-wide group: one value per warp (unused by warp groups).
template <int GROUP> struct RowShared {
    float max[GROUP / kWarp];
    double sum[GROUP / kWarp];
};

template <int GROUP>
__device__ __forceinline__ float row_max(const float *z, int cols, int lane, float *red) {
    float m = -INFINITY;
    for (int j = lane; j < cols; j += GROUP)
        m = fmaxf(m, z[j]);
    return group_allreduce<GROUP>(m, MaxOp(), -INFINITY, red);
}

// sum_j exp(z_j - m), the stable softmax denominator: fp32 terms added in double, as the CPU
// backend adds them.
template <int GROUP>
__device__ __forceinline__ double row_sum_exp(const float *z, int cols, float m, int lane,
                                              double *red) {
    double s = 0.0;
    for (int j = lane; j < cols; j += GROUP)
        s += expf(z[j] - m);
    return group_allreduce<GROUP>(s, SumOp(), 0.0, red);
}

// y = softmax(x) per row; y may alias x (each element is read and written by one thread, after
// the reductions that read it).
template <int GROUP>
__global__ void __launch_bounds__(kRowThreads)
    softmax_kernel(int rows, int cols, const float *x, float *y) {
    __shared__ RowShared<GROUP> sh;
    const int row = group_row<GROUP>(), lane = threadIdx.x % GROUP;
    if (row >= rows) return; // a whole group leaves together: barriers stay uniform
    const float *xr = x + (size_t)row * cols;
    float *yr = y + (size_t)row * cols;
    float m = row_max<GROUP>(xr, cols, lane, sh.max);
    float total = (float)row_sum_exp<GROUP>(xr, cols, m, lane, sh.sum);
    for (int j = lane; j < cols; j += GROUP)
        yr[j] = expf(xr[j] - m) / total;
}

// Softmax cross-entropy with label smoothing, value and gradient of one row:
// lse = m + log(sum exp(z - m)); loss = sum_j q_j (lse - z_j); grad_j = scale (p_j - q_j).
// grad may alias logits: z[j] is read before grad[j] is written, by the same thread.
template <int GROUP>
__global__ void __launch_bounds__(kRowThreads)
    softmax_xent_kernel(int rows, int cols, const float *logits, const int32_t *labels,
                        float smoothing, float grad_scale, float *grad, float *row_loss) {
    __shared__ RowShared<GROUP> sh;
    const int row = group_row<GROUP>(), lane = threadIdx.x % GROUP;
    if (row >= rows) return;
    const float *z = logits + (size_t)row * cols;
    float m = row_max<GROUP>(z, cols, lane, sh.max);
    float lse = m + (float)log(row_sum_exp<GROUP>(z, cols, m, lane, sh.sum));
    const int label = labels[row];
    double loss = 0.0;
    for (int j = lane; j < cols; j += GROUP) {
        float q = bp_xent_target(j, label, smoothing, cols);
        // Terms with q = 0 add nothing; skipping them keeps a -inf logit from making 0 * inf.
        if (q != 0.0f) loss += (double)q * ((double)lse - (double)z[j]);
        if (grad) grad[(size_t)row * cols + j] = grad_scale * bp_xent_grad_elem(z[j], lse, q);
    }
    loss = group_allreduce<GROUP>(loss, SumOp(), 0.0, sh.sum);
    if (lane == 0 && row_loss) row_loss[row] = (float)loss;
}

// match[row] = 1 when the first largest logit of the row is at its label (NaN logits are never
// the largest: fmaxf skips them and none compares equal): the row's largest value, then the
// smallest index holding it, each a fixed-order reduction of the group.
template <int GROUP>
__global__ void __launch_bounds__(kRowThreads)
    class_match_kernel(int rows, int cols, const float *logits, const int32_t *labels,
                       float *match) {
    __shared__ float red_max[GROUP / kWarp];
    __shared__ long long red_idx[GROUP / kWarp];
    const int row = group_row<GROUP>(), lane = threadIdx.x % GROUP;
    if (row >= rows) return;
    const float *z = logits + (size_t)row * cols;
    float m = row_max<GROUP>(z, cols, lane, red_max);
    long long first = LLONG_MAX;
    for (int j = lane; j < cols; j += GROUP)
        if (z[j] == m && j < first) first = j;
    first = group_allreduce<GROUP>(first, MinOp(), LLONG_MAX, red_idx);
    if (lane == 0) match[row] = first == (long long)labels[row] ? 1.0f : 0.0f;
}

struct MseElem {
    __device__ __forceinline__ float operator()(float pred, float target, float *g) const {
        return bp_mse_elem(pred, target, g);
    }
};

struct BceElem {
    __device__ __forceinline__ float operator()(float logit, float target, float *g) const {
        return bp_bce_logits_elem(logit, target, g);
    }
};

// Element-wise losses: row_loss[r] = sum_c elem(x, t) (fp32 elements added in double, as on
// the CPU); grad = grad_scale * d elem / d x. grad may alias x.
template <int GROUP, typename Elem>
__global__ void __launch_bounds__(kRowThreads)
    elem_loss_kernel(int rows, int cols, const float *x, const float *target, float grad_scale,
                     float *grad, float *row_loss) {
    __shared__ RowShared<GROUP> sh;
    const int row = group_row<GROUP>(), lane = threadIdx.x % GROUP;
    if (row >= rows) return;
    const size_t base = (size_t)row * cols;
    double loss = 0.0;
    for (int j = lane; j < cols; j += GROUP) {
        float g;
        loss += Elem()(x[base + j], target[base + j], &g);
        if (grad) grad[base + j] = grad_scale * g;
    }
    loss = group_allreduce<GROUP>(loss, SumOp(), 0.0, sh.sum);
    if (lane == 0 && row_loss) row_loss[row] = (float)loss;
}

// ---- the loss head of a training step (loss_head in core/backend.h) ----
//
// A row's loss, gradient (and its bf16 copy), class match and class check, made as
// softmax_xent_kernel, elem_loss_kernel and class_match_kernel make them with the same group a
// row, so the row's fp32 loss and its gradient are those kernels' bits.
template <int GROUP> struct HeadShared {
    RowShared<GROUP> row;
    long long idx[GROUP / kWarp];
};

struct HeadRow {
    double loss; // the row's loss, summed in double
    bool match;  // cross-entropy: the first largest logit is at the label
    bool bad;    // cross-entropy: the label is outside [0, cols)
};

template <int GROUP, int KIND>
__device__ __forceinline__ HeadRow head_row(int row, int cols, const float *logits,
                                            const void *target, float smoothing, float grad_scale,
                                            float *grad, uint16_t *grad_lp, int lane,
                                            HeadShared<GROUP> *sh) {
    const size_t base = (size_t)row * cols;
    const float *z = logits + base;
    float *g = grad + base;
    uint16_t *g_lp = grad_lp ? grad_lp + base : nullptr;
    HeadRow out = {0.0, false, false};
    double loss = 0.0;
    if constexpr (KIND == BP_LOSS_CROSS_ENTROPY) {
        const int label = ((const int32_t *)target)[row];
        float m = row_max<GROUP>(z, cols, lane, sh->row.max);
        float lse = m + (float)log(row_sum_exp<GROUP>(z, cols, m, lane, sh->row.sum));
        long long at = LLONG_MAX;
        for (int j = lane; j < cols; j += GROUP) {
            float q = bp_xent_target(j, label, smoothing, cols);
            if (q != 0.0f) loss += (double)q * ((double)lse - (double)z[j]);
            float v = grad_scale * bp_xent_grad_elem(z[j], lse, q);
            g[j] = v;
            if (g_lp) g_lp[j] = bp_f32_to_bf16(v);
            if (z[j] == m && j < at) at = j;
        }
        at = group_allreduce<GROUP>(at, MinOp(), LLONG_MAX, sh->idx);
        out.match = at == (long long)label;
        out.bad = label < 0 || label >= cols;
    } else {
        const float *t = (const float *)target + base;
        for (int j = lane; j < cols; j += GROUP) {
            float d;
            if constexpr (KIND == BP_LOSS_MSE)
                loss += MseElem()(z[j], t[j], &d);
            else
                loss += BceElem()(z[j], t[j], &d);
            float v = grad_scale * d;
            g[j] = v;
            if (g_lp) g_lp[j] = bp_f32_to_bf16(v);
        }
    }
    out.loss = group_allreduce<GROUP>(loss, SumOp(), 0.0, sh->row.sum);
    return out;
}

// The head's sums into the state, by one thread: total (the rows' fp32 losses summed in
// double), count (matches), first (the first bad row of these rows, LLONG_MAX when none).
template <int KIND>
__device__ __forceinline__ void head_finish(double total, long long count, long long first,
                                            int accumulate, long long first_row,
                                            bp_step_state *state) {
    state->loss = accumulate ? state->loss + (float)total : (float)total;
    if (KIND != BP_LOSS_CROSS_ENTROPY) return;
    state->match = accumulate ? state->match + (float)count : (float)count;
    long long at = first == LLONG_MAX ? LLONG_MAX : first_row + first;
    state->bad_row = accumulate && state->bad_row < at ? state->bad_row : at;
}

// A small head (at most kHeadBlockElems logits, a warp a row) in one block: each warp takes rows
// warp, warp + kHeadWarps, ...; the block then sums the rows' losses (lane 0 of each warp in
// double, in its row order, then the warps in order), the matches and the first bad class, and
// after a barrier (the gradient written by the block's own threads is then visible to all of
// them) each column of the gradient, 32 columns at a time, in col_sum's way with kHeadWarps row
// lanes. One launch: no atomics and no second kernel to combine blocks.
constexpr int kHeadThreads = 1024;
constexpr int kHeadWarps = kHeadThreads / kWarp;
constexpr long long kHeadBlockElems = 1 << 16;
static_assert(kHeadWarps == kWarp, "warp 0 combines one value per warp, a lane each");

template <int KIND>
__global__ void __launch_bounds__(kHeadThreads)
    head_block_kernel(int rows, int cols, const float *logits, const void *target, float smoothing,
                      float grad_scale, float *grad, uint16_t *grad_lp, float *bias_grad,
                      int accumulate, long long first_row, bp_step_state *state) {
    __shared__ HeadShared<kWarp> sh; // a warp's reductions need none
    __shared__ double red_loss[kHeadWarps];
    __shared__ long long red_count[kHeadWarps], red_bad[kHeadWarps];
    __shared__ double part[kHeadWarps][kWarp + 1];
    const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
    double loss = 0.0;
    long long matches = 0, bad = LLONG_MAX;
    for (int row = warp; row < rows; row += kHeadWarps) {
        HeadRow h = head_row<kWarp, KIND>(row, cols, logits, target, smoothing, grad_scale, grad,
                                          grad_lp, lane, &sh);
        loss += (double)(float)h.loss; // the row's loss as row_loss holds it, then summed
        matches += h.match;
        if (h.bad && row < bad) bad = row;
    }
    if (lane == 0) {
        red_loss[warp] = loss;
        red_count[warp] = matches;
        red_bad[warp] = bad;
    }
    __syncthreads();
    if (warp == 0) {
        double total = warp_allreduce(red_loss[lane], SumOp());
        long long count = warp_allreduce(red_count[lane], SumOp());
        long long first = warp_allreduce(red_bad[lane], MinOp());
        if (lane == 0) head_finish<KIND>(total, count, first, accumulate, first_row, state);
    }
    for (int c0 = 0; c0 < cols; c0 += kWarp) { // the same trip count in every thread
        const int c = c0 + lane;
        double acc = 0.0;
        if (c < cols)
            for (int r = warp; r < rows; r += kHeadWarps)
                acc += grad[(size_t)r * cols + c];
        part[warp][lane] = acc;
        __syncthreads();
        if (warp == 0 && c < cols) {
            double s = part[0][lane];
            for (int k = 1; k < kHeadWarps; ++k)
                s += part[k][lane];
            bias_grad[c] = accumulate ? bias_grad[c] + (float)s : (float)s;
        }
        __syncthreads(); // part is written again by the next tile
    }
}

// A larger head in two launches. Pass 1, with softmax_xent's layout: each row's gradient, and
// row_out[row] = its fp32 loss, row_out[rows + row] = match + 2 bad.
template <int GROUP, int KIND>
__global__ void __launch_bounds__(kRowThreads)
    head_rows_kernel(int rows, int cols, const float *logits, const void *target, float smoothing,
                     float grad_scale, float *grad, uint16_t *grad_lp, float *row_out) {
    __shared__ HeadShared<GROUP> sh;
    const int row = group_row<GROUP>(), lane = threadIdx.x % GROUP;
    if (row >= rows) return; // a whole group leaves together: barriers stay uniform
    HeadRow h = head_row<GROUP, KIND>(row, cols, logits, target, smoothing, grad_scale, grad,
                                      grad_lp, lane, &sh);
    if (lane != 0) return;
    row_out[row] = (float)h.loss;
    row_out[rows + row] = (float)((int)h.match + 2 * (int)h.bad);
}

// Pass 2: col_sum's column sums of the gradient into bias_grad, one block a tile of columns;
// block 0 also sums pass 1's rows (each of its threads the rows t, t + its block's size, ...,
// then thread 0 the threads' sums in order) into the state.
constexpr int kSumsThreads = kRowLanes * kColTile;

template <int KIND>
__global__ void head_sums_kernel(int rows, int cols, const float *grad, const float *row_out,
                                 float *bias_grad, int accumulate, long long first_row,
                                 bp_step_state *state) {
    __shared__ double partial[kRowLanes][kColTile];
    __shared__ double red_loss[kSumsThreads];
    __shared__ long long red_count[kSumsThreads], red_bad[kSumsThreads];
    col_sum_tile(rows, cols, grad, accumulate ? 1.0f : 0.0f, bias_grad, partial);
    if (blockIdx.x != 0) return;
    const int t = threadIdx.y * kColTile + threadIdx.x;
    double loss = 0.0;
    long long count = 0, bad = LLONG_MAX;
    for (int r = t; r < rows; r += kSumsThreads) {
        loss += row_out[r];
        const int flags = (int)row_out[rows + r];
        count += flags & 1;
        if ((flags & 2) && r < bad) bad = r;
    }
    red_loss[t] = loss;
    red_count[t] = count;
    red_bad[t] = bad;
    __syncthreads();
    if (t != 0) return;
    for (int k = 1; k < kSumsThreads; ++k) {
        loss += red_loss[k];
        count += red_count[k];
        bad = red_bad[k] < bad ? red_bad[k] : bad;
    }
    head_finish<KIND>(loss, count, bad, accumulate, first_row, state);
}

// Calls launch(std::integral_constant<int, KIND>{}) with the loss as a compile-time constant.
template <typename Launch> cudaError_t dispatch_loss(bp_loss_kind kind, Launch &&launch) {
    if (kind == BP_LOSS_CROSS_ENTROPY)
        return launch(std::integral_constant<int, BP_LOSS_CROSS_ENTROPY>{});
    if (kind == BP_LOSS_MSE) return launch(std::integral_constant<int, BP_LOSS_MSE>{});
    return launch(std::integral_constant<int, BP_LOSS_BCE_LOGITS>{});
}

} // namespace
} // namespace bp_cu

using namespace bp_cu;

extern "C" cudaError_t bp_cu_softmax(cudaStream_t stream, int rows, int cols, const float *x,
                                     float *y) {
    return dispatch_rows<kWarpRowsMax>(rows, cols, [&](auto group, unsigned blocks) {
        BP_LAUNCH(blocks, kRowThreads, 0, stream, softmax_kernel<decltype(group)::value>)
        (rows, cols, x, y);
        return cudaGetLastError();
    });
}

extern "C" cudaError_t bp_cu_softmax_xent(cudaStream_t stream, int rows, int cols,
                                          const float *logits, const int32_t *labels,
                                          float smoothing, float grad_scale, float *grad,
                                          float *row_loss) {
    return dispatch_rows<kWarpRowsMax>(rows, cols, [&](auto group, unsigned blocks) {
        BP_LAUNCH(blocks, kRowThreads, 0, stream, softmax_xent_kernel<decltype(group)::value>)
        (rows, cols, logits, labels, smoothing, grad_scale, grad, row_loss);
        return cudaGetLastError();
    });
}

extern "C" cudaError_t bp_cu_class_match(cudaStream_t stream, int rows, int cols,
                                         const float *logits, const int32_t *labels, float *match) {
    return dispatch_rows<kWarpRowsMax>(rows, cols, [&](auto group, unsigned blocks) {
        BP_LAUNCH(blocks, kRowThreads, 0, stream, class_match_kernel<decltype(group)::value>)
        (rows, cols, logits, labels, match);
        return cudaGetLastError();
    });
}

extern "C" cudaError_t bp_cu_mse(cudaStream_t stream, int rows, int cols, const float *pred,
                                 const float *target, float grad_scale, float *grad,
                                 float *row_loss) {
    return dispatch_rows<kWarpRowsMax>(rows, cols, [&](auto group, unsigned blocks) {
        BP_LAUNCH(blocks, kRowThreads, 0, stream, elem_loss_kernel<decltype(group)::value, MseElem>)
        (rows, cols, pred, target, grad_scale, grad, row_loss);
        return cudaGetLastError();
    });
}

extern "C" cudaError_t bp_cu_bce_logits(cudaStream_t stream, int rows, int cols,
                                        const float *logits, const float *target, float grad_scale,
                                        float *grad, float *row_loss) {
    return dispatch_rows<kWarpRowsMax>(rows, cols, [&](auto group, unsigned blocks) {
        BP_LAUNCH(blocks, kRowThreads, 0, stream, elem_loss_kernel<decltype(group)::value, BceElem>)
        (rows, cols, logits, target, grad_scale, grad, row_loss);
        return cudaGetLastError();
    });
}

extern "C" cudaError_t bp_cu_loss_head(cudaStream_t stream, const bp_loss_head_args *a) {
    const int rows = a->rows, cols = a->cols;
    const long long first_row = (long long)a->first_row;
    return dispatch_loss(a->kind, [&](auto kind) {
        constexpr int K = decltype(kind)::value;
        if (cols <= kWarpRowsMax && (long long)rows * cols <= kHeadBlockElems) {
            BP_LAUNCH(1, kHeadThreads, 0, stream, head_block_kernel<K>)
            (rows, cols, a->logits, a->target, a->smoothing, a->grad_scale, a->grad, a->grad_lp,
             a->bias_grad, a->accumulate, first_row, a->state);
            return cudaGetLastError();
        }
        cudaError_t err = dispatch_rows<kWarpRowsMax>(rows, cols, [&](auto group, unsigned blocks) {
            BP_LAUNCH(blocks, kRowThreads, 0, stream, head_rows_kernel<decltype(group)::value, K>)
            (rows, cols, a->logits, a->target, a->smoothing, a->grad_scale, a->grad, a->grad_lp,
             a->row_scratch);
            return cudaGetLastError();
        });
        if (err != cudaSuccess) return err;
        unsigned tiles = (unsigned)((cols + kColTile - 1) / kColTile);
        BP_LAUNCH(tiles, dim3(kColTile, kRowLanes), 0, stream, head_sums_kernel<K>)
        (rows, cols, a->grad, a->row_scratch, a->bias_grad, a->accumulate, first_row, a->state);
        return cudaGetLastError();
    });
}
