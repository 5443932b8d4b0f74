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
