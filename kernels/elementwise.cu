// Element-wise kernels: fill, fused bias + activation, activation backward, dropout.
//
// The arithmetic of one element is bp_math.h's (bp_act_forward, bp_act_derivative,
// bp_random_block and bp_dropout_keep_word), the same functions src/cpu calls, so the two backends
// cannot drift.
#include "cuda/launch.h"
#include "kernels/bp_math.h"
#include "kernels/common.cuh"

namespace bp_cu {
namespace {

__global__ void fill_kernel(float *dst, float value, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = value;
}

// z[r,c] += bias[c] (when bias is given), a[r,c] = act(z[r,c]) over the flat rows*cols
// elements. Index is uint32_t when rows*cols fits, which makes i % cols a 32-bit division.
// z and a may alias (identity only), so neither is __restrict__.
template <int ACT, typename Index>
__global__ void bias_act_kernel(Index n, Index cols, const float *__restrict__ bias, float *z,
                                float *a, float slope) {
    for (Index i = (Index)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (Index)gridDim.x * blockDim.x) {
        float v = z[i];
        if (bias) {
            v += bias[i % cols];
            z[i] = v;
        }
        a[i] = bp_act_forward(v, (bp_activation)ACT, slope);
    }
}

// dz[i] = da[i] * act'(z[i]); dz may alias da.
template <int ACT>
__global__ void act_backward_kernel(size_t n, const float *__restrict__ z, const float *da,
                                    float *dz, float slope) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dz[i] = da[i] * bp_act_derivative(z[i], (bp_activation)ACT, slope);
}

// Inverted dropout; element i's mask is a function of (seed, stream, first + i) only, so it is
// bitwise the CPU's and the same call on the gradient applies the same mask. y may alias x.
//
// One Philox evaluation (bp_random_block) yields the words of four consecutive stream indices,
// so a thread takes the indices 4b .. 4b+3 of block b (from the block holding index first) and
// tests each word with bp_dropout_keep_word: the same draws as bp_dropout_keep(seed, stream, k),
// a quarter of the Philox work.
__global__ void dropout_kernel(size_t n, const float *x, float *y, uint64_t seed,
                               uint64_t rng_stream, uint64_t first, uint32_t threshold,
                               float scale) {
    const uint64_t b0 = first / 4, blocks = (first + n + 3) / 4 - b0;
    for (uint64_t t = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; t < blocks;
         t += (uint64_t)gridDim.x * blockDim.x) {
        uint32_t w[4];
        bp_random_block(seed, rng_stream, b0 + t, w);
#pragma unroll
        for (unsigned k = 0; k < 4; ++k) {
            uint64_t g = 4 * (b0 + t) + k; // index in the stream
            if (g >= first && g - first < n) {
                size_t i = (size_t)(g - first);
                y[i] = bp_dropout_keep_word(w[k], threshold) ? x[i] * scale : 0.0f;
            }
        }
    }
}

template <typename Index>
cudaError_t launch_bias_act(cudaStream_t stream, size_t n, int cols, const float *bias, float *z,
                            float *a, bp_activation act, float slope) {
    return dispatch_activation(act, [&](auto act_c) {
        BP_LAUNCH(grid_for(n), kThreads, 0, stream, bias_act_kernel<decltype(act_c)::value, Index>)
        ((Index)n, (Index)cols, bias, z, a, slope);
        return cudaGetLastError();
    });
}

} // namespace
} // namespace bp_cu

using namespace bp_cu;

extern "C" cudaError_t bp_cu_probe(void) {
    cudaFuncAttributes attr;
    return cudaFuncGetAttributes(&attr, fill_kernel);
}

extern "C" cudaError_t bp_cu_fill(cudaStream_t stream, float *dst, float value, size_t n) {
    BP_LAUNCH(grid_for(n), kThreads, 0, stream, fill_kernel)(dst, value, n);
    return cudaGetLastError();
}

extern "C" cudaError_t bp_cu_bias_act_forward(cudaStream_t stream, int rows, int cols,
                                              const float *bias, float *z, float *a,
                                              bp_activation act, float slope) {
    size_t n = (size_t)rows * (size_t)cols;
    if (n <= UINT32_MAX - (size_t)kThreads * kMaxBlocks) // i + stride never wraps
        return launch_bias_act<uint32_t>(stream, n, cols, bias, z, a, act, slope);
    return launch_bias_act<size_t>(stream, n, cols, bias, z, a, act, slope);
}

extern "C" cudaError_t bp_cu_act_backward(cudaStream_t stream, size_t n, const float *z,
                                          const float *da, float *dz, bp_activation act,
                                          float slope) {
    return dispatch_activation(act, [&](auto act_c) {
        BP_LAUNCH(grid_for(n), kThreads, 0, stream, act_backward_kernel<decltype(act_c)::value>)
        (n, z, da, dz, slope);
        return cudaGetLastError();
    });
}

extern "C" cudaError_t bp_cu_dropout(cudaStream_t stream, size_t n, const float *x, float *y,
                                     uint64_t seed, uint64_t rng_stream, uint64_t first,
                                     uint32_t threshold, float scale) {
    BP_LAUNCH(grid_for(n / 4 + 2), kThreads, 0, stream, dropout_kernel)
    (n, x, y, seed, rng_stream, first, threshold, scale);
    return cudaGetLastError();
}
