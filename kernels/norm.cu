// LayerNorm and RMSNorm over each row, forward and backward, and the residual add.
//
// A group of threads owns a row (common.cuh's dispatch_rows): one warp up to 1024 features, the
// whole 256-thread block beyond. The row statistics and the backward's row sums are fp32
// elements added in double with the fixed-order reductions of common.cuh, so they are bitwise
// the same on every run and GPU. The weight and bias gradients are column sums over the rows,
// one thread a column walking the rows in order: deterministic, no atomics. The per-element
// math is bp_math.h's, the CPU backend's.
#include "cuda/launch.h"
#include "kernels/bp_math.h"
#include "kernels/common.cuh"
#include "kernels/elem.cuh"

namespace bp_cu {
namespace {

constexpr int kWarpNormMax = 1024; // rows up to this many features go one warp per row

template <int GROUP, int XT, int YT>
__global__ void __launch_bounds__(kRowThreads)
    norm_forward_kernel(int center, int rows, int cols, const typename Elem<XT>::type *x,
                        const float *weight, const float *bias, float eps,
                        typename Elem<YT>::type *y, float *mean, float *rstd) {
    __shared__ double red[GROUP / kWarp];
    const int row = group_row<GROUP>(), lane = threadIdx.x % GROUP;
    if (row >= rows) return; // a whole group leaves together: barriers stay uniform
    const size_t base = (size_t)row * cols;
    double s = 0.0;
    if (center) {
        for (int j = lane; j < cols; j += GROUP)
            s += Elem<XT>::load(x, base + j);
        s = group_allreduce<GROUP>(s, SumOp(), 0.0, red) / cols;
    }
    double q = 0.0;
    for (int j = lane; j < cols; j += GROUP) {
        double d = Elem<XT>::load(x, base + j) - s;
        q += d * d;
    }
    q = group_allreduce<GROUP>(q, SumOp(), 0.0, red);
    const float m = (float)s, r = bp_norm_rstd((float)(q / cols), eps);
    for (int j = lane; j < cols; j += GROUP)
        Elem<YT>::store(y, base + j,
                        bp_norm_forward_elem(Elem<XT>::load(x, base + j), m, r, weight[j],
                                             bias ? bias[j] : 0.0f));
    if (lane == 0) {
        mean[row] = m;
        rstd[row] = r;
    }
}

template <int GROUP, int XT>
__global__ void __launch_bounds__(kRowThreads)
    norm_backward_kernel(int center, int rows, int cols, const typename Elem<XT>::type *x,
                         const float *weight, const float *mean, const float *rstd, const float *dy,
                         float *dx) {
    __shared__ double red[GROUP / kWarp];
    const int row = group_row<GROUP>(), lane = threadIdx.x % GROUP;
    if (row >= rows) return;
    const size_t base = (size_t)row * cols;
    const float m = mean[row], r = rstd[row];
    double sg = 0.0, sgx = 0.0;
    for (int j = lane; j < cols; j += GROUP) {
        double g = (double)dy[base + j] * weight[j];
        sg += g;
        sgx += g * ((Elem<XT>::load(x, base + j) - m) * r);
    }
    sg = group_allreduce<GROUP>(sg, SumOp(), 0.0, red);
    sgx = group_allreduce<GROUP>(sgx, SumOp(), 0.0, red);
    const float mean_g = center ? (float)(sg / cols) : 0.0f, mean_gx = (float)(sgx / cols);
    for (int j = lane; j < cols; j += GROUP) {
        float xhat = (Elem<XT>::load(x, base + j) - m) * r;
        dx[base + j] = bp_norm_backward_elem(dy[base + j] * weight[j], xhat, r, mean_g, mean_gx);
    }
}

// dweight[c] (and dbias[c]) = beta * itself + the sum over the rows, one thread a column.
template <int XT>
__global__ void norm_param_grad_kernel(int rows, int cols, const typename Elem<XT>::type *x,
                                       const float *mean, const float *rstd, const float *dy,
                                       float beta, float *dweight, float *dbias) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    double sw = 0.0, sb = 0.0;
    for (int r = 0; r < rows; ++r) {
        size_t i = (size_t)r * cols + c;
        float xhat = (Elem<XT>::load(x, i) - mean[r]) * rstd[r];
        sw += (double)dy[i] * xhat;
        sb += dy[i];
    }
    dweight[c] = (float)(sw + (beta != 0.0f ? (double)dweight[c] : 0.0));
    if (dbias) dbias[c] = (float)(sb + (beta != 0.0f ? (double)dbias[c] : 0.0));
}

template <int XT>
__global__ void add_kernel(size_t n, const typename Elem<XT>::type *__restrict__ x,
                           float *__restrict__ y) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] += Elem<XT>::load(x, i);
}

// Calls launch(std::integral_constant<int, T>{}) with the element type as a constant.
template <typename Launch> cudaError_t dispatch_type(bp_eltype type, Launch &&launch) {
    if (type == BP_EL_BF16) return launch(std::integral_constant<int, BP_EL_BF16>{});
    return launch(std::integral_constant<int, BP_EL_F32>{});
}

} // namespace
} // namespace bp_cu

using namespace bp_cu;

extern "C" cudaError_t bp_cu_norm_forward(cudaStream_t stream, bp_norm kind, int rows, int cols,
                                          const void *x, bp_eltype x_type, const float *weight,
                                          const float *bias, float eps, void *y, bp_eltype y_type,
                                          float *mean, float *rstd) {
    const int center = kind == BP_NORM_LAYER;
    return dispatch_rows<kWarpNormMax>(rows, cols, [&](auto group, unsigned blocks) {
        return dispatch_type(x_type, [&](auto xt) {
            return dispatch_type(y_type, [&](auto yt) {
                constexpr int G = decltype(group)::value, XT = decltype(xt)::value,
                              YT = decltype(yt)::value;
                BP_LAUNCH(blocks, kRowThreads, 0, stream, norm_forward_kernel<G, XT, YT>)
                (center, rows, cols, (const typename Elem<XT>::type *)x, weight, bias, eps,
                 (typename Elem<YT>::type *)y, mean, rstd);
                return cudaGetLastError();
            });
        });
    });
}

extern "C" cudaError_t bp_cu_norm_backward(cudaStream_t stream, bp_norm kind, int rows, int cols,
                                           const void *x, bp_eltype x_type, const float *weight,
                                           const float *mean, const float *rstd, const float *dy,
                                           float *dx, float beta, float *dweight, float *dbias) {
    const int center = kind == BP_NORM_LAYER;
    cudaError_t err = dispatch_rows<kWarpNormMax>(rows, cols, [&](auto group, unsigned blocks) {
        return dispatch_type(x_type, [&](auto xt) {
            constexpr int G = decltype(group)::value, XT = decltype(xt)::value;
            BP_LAUNCH(blocks, kRowThreads, 0, stream, norm_backward_kernel<G, XT>)
            (center, rows, cols, (const typename Elem<XT>::type *)x, weight, mean, rstd, dy, dx);
            return cudaGetLastError();
        });
    });
    if (err != cudaSuccess) return err;
    return dispatch_type(x_type, [&](auto xt) {
        constexpr int XT = decltype(xt)::value;
        unsigned blocks = (unsigned)((cols + kThreads - 1) / kThreads);
        BP_LAUNCH(blocks, kThreads, 0, stream, norm_param_grad_kernel<XT>)
        (rows, cols, (const typename Elem<XT>::type *)x, mean, rstd, dy, beta, dweight,
         center ? dbias : nullptr);
        return cudaGetLastError();
    });
}

extern "C" cudaError_t bp_cu_add(cudaStream_t stream, size_t n, const void *x, bp_eltype x_type,
                                 float *y) {
    return dispatch_type(x_type, [&](auto xt) {
        constexpr int XT = decltype(xt)::value;
        BP_LAUNCH(grid_for(n), kThreads, 0, stream, add_kernel<XT>)
        ((size_t)n, (const typename Elem<XT>::type *)x, y);
        return cudaGetLastError();
    });
}
