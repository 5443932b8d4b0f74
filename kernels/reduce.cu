// Deterministic reductions: column sums (bias gradients), sum and sum of squares (loss means,
// gradient norm) and the label check.
//
// None uses atomics. Each output is combined in an order fixed by constants of this file
// (tile sizes, BP_CU_REDUCE_BLOCKS), never by the GPU's SM count or by scheduling, so the same
// input gives bitwise the same result on every run and every GPU.
#include <climits>

#include "cuda/launch.h"
#include "kernels/common.cuh"

namespace bp_cu {
namespace {

// col_sum (common.cuh's col_sum_tile), one block per tile of kColTile columns.
__global__ void col_sum_kernel(int rows, int cols, const float *__restrict__ x, float beta,
                               float *__restrict__ out) {
    __shared__ double partial[kRowLanes][kColTile];
    col_sum_tile(rows, cols, x, beta, out, partial);
}

// sum / sum_squares, pass 1: block b sums x[i] (or x[i]^2) in double over the grid-stride
// indices of its threads and writes one partial.
constexpr int kSumThreads = 256;

template <bool SQUARES>
__global__ void __launch_bounds__(kSumThreads)
    sum_partials_kernel(size_t n, const float *__restrict__ x, double *__restrict__ partials) {
    __shared__ double red[kSumThreads / kWarp];
    double acc = 0.0;
    for (size_t i = (size_t)blockIdx.x * kSumThreads + threadIdx.x; i < n;
         i += (size_t)BP_CU_REDUCE_BLOCKS * kSumThreads) {
        double v = x[i];
        acc += SQUARES ? v * v : v;
    }
    acc = group_allreduce<kSumThreads>(acc, SumOp(), 0.0, red);
    if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

// Pass 2: one block of BP_CU_REDUCE_BLOCKS threads sums the partials and rounds to float.
__global__ void __launch_bounds__(BP_CU_REDUCE_BLOCKS)
    sum_final_kernel(const double *__restrict__ partials, float *__restrict__ out) {
    __shared__ double red[BP_CU_REDUCE_BLOCKS / kWarp];
    double v = group_allreduce<BP_CU_REDUCE_BLOCKS>(partials[threadIdx.x], SumOp(), 0.0, red);
    if (threadIdx.x == 0) *out = (float)v;
}

// Pass 2 of the gradient's squared norm in a training step, and the step's decision after it
// (norm_decide of core/backend.h): the same sum as sum_final_kernel, into state->norm2, then
// step_decide's rule by thread 0, which holds the sum; one launch fewer than the two apart.
__global__ void __launch_bounds__(BP_CU_REDUCE_BLOCKS)
    norm_decide_kernel(const double *__restrict__ partials, bp_step_state *state, float clip_norm) {
    __shared__ double red[BP_CU_REDUCE_BLOCKS / kWarp];
    double v = group_allreduce<BP_CU_REDUCE_BLOCKS>(partials[threadIdx.x], SumOp(), 0.0, red);
    if (threadIdx.x != 0) return;
    state->norm2 = (float)v;
    bp_cu_decide(state, clip_norm);
}

// check_labels: the smallest bad row index (LLONG_MAX: none), in the same two passes.
__global__ void __launch_bounds__(kSumThreads)
    labels_partials_kernel(int rows, const int32_t *__restrict__ labels, int classes,
                           long long *__restrict__ partials) {
    __shared__ long long red[kSumThreads / kWarp];
    long long first = LLONG_MAX;
    for (long long r = (long long)blockIdx.x * kSumThreads + threadIdx.x; r < rows;
         r += BP_CU_REDUCE_BLOCKS * kSumThreads) {
        int32_t label = labels[r];
        if ((label < 0 || label >= classes) && r < first) first = r;
    }
    first = group_allreduce<kSumThreads>(first, MinOp(), LLONG_MAX, red);
    if (threadIdx.x == 0) partials[blockIdx.x] = first;
}

__global__ void __launch_bounds__(BP_CU_REDUCE_BLOCKS)
    labels_final_kernel(const long long *__restrict__ partials, long long *__restrict__ out) {
    __shared__ long long red[BP_CU_REDUCE_BLOCKS / kWarp];
    long long v =
        group_allreduce<BP_CU_REDUCE_BLOCKS>(partials[threadIdx.x], MinOp(), LLONG_MAX, red);
    if (threadIdx.x == 0) *out = v;
}

static_assert(BP_CU_REDUCE_BLOCKS % kWarp == 0 && BP_CU_REDUCE_BLOCKS <= 1024,
              "the final pass runs one thread per partial in one block");
static_assert(sizeof(long long) == 8 && sizeof(double) == 8, "scratch holds 8-byte partials");

} // namespace
} // namespace bp_cu

using namespace bp_cu;

extern "C" cudaError_t bp_cu_col_sum(cudaStream_t stream, int rows, int cols, const float *x,
                                     float beta, float *out) {
    unsigned tiles = (unsigned)((cols + kColTile - 1) / kColTile);
    BP_LAUNCH(tiles, dim3(kColTile, kRowLanes), 0, stream, col_sum_kernel)
    (rows, cols, x, beta, out);
    return cudaGetLastError();
}

extern "C" cudaError_t bp_cu_sum(cudaStream_t stream, size_t n, const float *x, int squares,
                                 void *scratch, float *out) {
    double *partials = (double *)scratch;
    void (*partials_kernel)(size_t, const float *, double *) =
        squares ? sum_partials_kernel<true> : sum_partials_kernel<false>;
    BP_LAUNCH(BP_CU_REDUCE_BLOCKS, kSumThreads, 0, stream, partials_kernel)(n, x, partials);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    BP_LAUNCH(1, BP_CU_REDUCE_BLOCKS, 0, stream, sum_final_kernel)(partials, out);
    return cudaGetLastError();
}

extern "C" cudaError_t bp_cu_norm_decide(cudaStream_t stream, size_t n, const float *x,
                                         void *scratch, bp_step_state *state, float clip_norm) {
    double *partials = (double *)scratch;
    BP_LAUNCH(BP_CU_REDUCE_BLOCKS, kSumThreads, 0, stream, sum_partials_kernel<true>)
    (n, x, partials);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    BP_LAUNCH(1, BP_CU_REDUCE_BLOCKS, 0, stream, norm_decide_kernel)(partials, state, clip_norm);
    return cudaGetLastError();
}

extern "C" cudaError_t bp_cu_check_labels(cudaStream_t stream, int rows, const int32_t *labels,
                                          int classes, void *scratch, int64_t *result) {
    long long *partials = (long long *)scratch;
    long long *first = (long long *)result;
    BP_LAUNCH(BP_CU_REDUCE_BLOCKS, kSumThreads, 0, stream, labels_partials_kernel)
    (rows, labels, classes, partials);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    BP_LAUNCH(1, BP_CU_REDUCE_BLOCKS, 0, stream, labels_final_kernel)(partials, first);
    return cudaGetLastError();
}
