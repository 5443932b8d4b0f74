// Launch geometry and deterministic reductions shared by the kernels.
//
// Every reduction here combines values in an order fixed by the thread layout alone: a warp
// combines its lanes with an xor butterfly, then one warp combines the warps' results the same
// way. No atomics, so a kernel gives bitwise the same result on every run and every GPU.
#ifndef BP_KERNELS_COMMON_CUH
#define BP_KERNELS_COMMON_CUH

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "backprop/model.h"
#include "core/backend.h"
#include "kernels/bp_math.h"

// One launch site for two compilers. nvcc compiles BP_LAUNCH(grid, block, smem, stream, k)(args)
// to the usual k<<<grid, block, smem, stream>>>(args), the same launch as writing it out. The
// emulated device (cudaemu, built with the host compiler, which has no <<<>>>) turns it into a
// call that takes the kernel, the configuration and the launch site (named in the emulator's
// fault messages) and returns a callable taking the kernel's arguments. The kernel comes last so
// that a template argument list with commas (k<A, B>) is simply the rest of the macro's arguments.
// Each launch is counted (bp_cu_note_launch, src/cuda/launch.h) as its grid is evaluated.
#if defined(__CUDACC__)
#define BP_LAUNCH(grid, block, smem, stream, ...)                                                  \
    __VA_ARGS__<<<(bp_cu_note_launch(), (grid)), block, smem, stream>>>
#elif defined(CUDAEMU)
#define BP_LAUNCH(grid, block, smem, stream, ...)                                                  \
    ::cudaemu::launch(__VA_ARGS__, (bp_cu_note_launch(), (grid)), block, smem, stream, __FILE__,   \
                      __LINE__)
#else
#error "kernels/ build with nvcc, or with the host compiler against cudaemu/include"
#endif

namespace bp_cu {

constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;

// Element-wise kernels: 256 threads a block, grid-stride loops over at most kMaxBlocks
// blocks (enough to fill any current GPU several times over; more blocks only add overhead).
constexpr int kThreads = 256;
constexpr unsigned kMaxBlocks = 8192;

inline unsigned grid_for(size_t n) {
    size_t blocks = (n + kThreads - 1) / kThreads;
    return blocks < kMaxBlocks ? (unsigned)blocks : kMaxBlocks;
}

// The update kernels' prologue: false when step_decide refused the step (the kernel then
// writes nothing); else a->grad_scale becomes the clip coefficient it decided. Every thread
// reads the same word, written by an earlier kernel, so the blocks agree.
__device__ __forceinline__ bool bp_cu_take_gate(bp_update_args *a) {
    if (!a->gate) return true;
    if (a->gate->refused) return false;
    a->grad_scale = a->gate->scale;
    a->first_step = a->gate->first_step;
    a->lr = a->gate->lr;
    a->step_size = a->gate->step_size;
    a->bc2_sqrt = a->gate->bc2_sqrt;
    a->decay_factor = a->gate->decay_factor;
    return true;
}

// step_decide of core/backend.h, by one thread: the refusal (unless one is set already) and the
// clip coefficient, from the state's loss, squared norm and first bad row.
__device__ __forceinline__ void bp_cu_decide(bp_step_state *s, float clip_norm) {
    if (!s->refused) s->refused = bp_step_refusal(s->bad_row, s->loss, s->norm2);
    s->scale = bp_clip_scale(s->norm2, clip_norm);
}

struct SumOp {
    template <typename T> __device__ __forceinline__ T operator()(T a, T b) const {
        return a + b;
    }
};

struct MaxOp {
    __device__ __forceinline__ float operator()(float a, float b) const {
        return fmaxf(a, b);
    }
};

struct MinOp {
    __device__ __forceinline__ long long operator()(long long a, long long b) const {
        return a < b ? a : b;
    }
};

// Combines v over the 32 lanes of a warp; every lane gets the result. With an xor butterfly
// lane i computes op(v_i, v_j) while lane j computes op(v_j, v_i): the operations used here
// commute bitwise, so all lanes hold the same bits at every step.
template <typename T, typename Op> __device__ __forceinline__ T warp_allreduce(T v, Op op) {
#pragma unroll
    for (int offset = kWarp / 2; offset > 0; offset /= 2)
        v = op(v, __shfl_xor_sync(kFullMask, v, offset));
    return v;
}

// Combines v over a group of GROUP threads (32: one warp; a multiple of 32 up to 1024: the
// whole block, GROUP == blockDim.x); every thread gets the result. `smem` holds GROUP / 32
// values and may be reused by the next call: the leading barrier keeps a fast warp from
// overwriting it while a slow one still reads the previous result.
template <int GROUP, typename T, typename Op>
__device__ __forceinline__ T group_allreduce(T v, Op op, T identity, T *smem) {
    static_assert(GROUP % kWarp == 0 && GROUP <= 1024, "GROUP is whole warps of one block");
    v = warp_allreduce(v, op);
    if constexpr (GROUP == kWarp) {
        (void)identity;
        (void)smem;
        return v;
    } else {
        const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
        __syncthreads();
        if (lane == 0) smem[warp] = v;
        __syncthreads();
        T w = lane < GROUP / kWarp ? smem[lane] : identity;
        return warp_allreduce(w, op);
    }
}

// Column sums, out[c] = beta * out[c] + sum_r x[r, c] (beta 0 or 1; with 0, out is not read, as
// in BLAS), for the tile of kColTile columns of block blockIdx.x, whose kRowLanes x kColTile
// threads all call it: its kRowLanes rows of threads each sum the rows r = lane, lane +
// kRowLanes, ... of a column, then lane 0 adds the kRowLanes partials in order. A warp reads 32
// neighbouring columns of one row: coalesced. Sums are kept in double, as the CPU backend keeps
// them, and rounded to float once.
constexpr int kColTile = 32;
constexpr int kRowLanes = 16;

__device__ __forceinline__ void col_sum_tile(int rows, int cols, const float *__restrict__ x,
                                             float beta, float *__restrict__ out,
                                             double (*partial)[kColTile]) {
    const int c = blockIdx.x * kColTile + threadIdx.x;
    double acc = 0.0;
    if (c < cols)
        for (unsigned r = threadIdx.y; r < (unsigned)rows; r += kRowLanes) // no int overflow
            acc += x[(size_t)r * cols + c];
    partial[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y != 0 || c >= cols) return;
    double s = partial[0][threadIdx.x];
#pragma unroll
    for (int k = 1; k < kRowLanes; ++k)
        s += partial[k][threadIdx.x];
    out[c] = beta != 0.0f ? beta * out[c] + (float)s : (float)s;
}

// Row kernels: a group of threads owns a row, one warp (8 rows per kRowThreads-thread block)
// when the row is short, the whole kRowThreads-thread block when it is long.
constexpr int kRowThreads = 256;

template <int GROUP> __device__ __forceinline__ int group_row() {
    if constexpr (GROUP == kWarp)
        return blockIdx.x * (kRowThreads / kWarp) + threadIdx.x / kWarp;
    else
        return blockIdx.x;
}

// Calls launch(std::integral_constant<int, GROUP>{}, blocks) with the layout for cols: a warp a
// row up to WARP_COLS_MAX columns, a block a row beyond.
template <int WARP_COLS_MAX, typename Launch>
cudaError_t dispatch_rows(int rows, int cols, Launch &&launch) {
    if (cols <= WARP_COLS_MAX) {
        constexpr int per_block = kRowThreads / kWarp;
        unsigned blocks = (unsigned)((rows + per_block - 1) / per_block);
        return launch(std::integral_constant<int, kWarp>{}, blocks);
    }
    return launch(std::integral_constant<int, kRowThreads>{}, (unsigned)rows);
}

// Calls launch(std::integral_constant<int, ACT>{}) with the activation as a compile-time
// constant, so each kernel instance folds bp_act_forward's switch away. Unknown values take the
// identity, as bp_act_forward's default does.
template <typename Launch> cudaError_t dispatch_activation(bp_activation act, Launch &&launch) {
    switch (act) {
    case BP_ACT_RELU:
        return launch(std::integral_constant<int, BP_ACT_RELU>{});
    case BP_ACT_LEAKY_RELU:
        return launch(std::integral_constant<int, BP_ACT_LEAKY_RELU>{});
    case BP_ACT_SIGMOID:
        return launch(std::integral_constant<int, BP_ACT_SIGMOID>{});
    case BP_ACT_TANH:
        return launch(std::integral_constant<int, BP_ACT_TANH>{});
    case BP_ACT_GELU:
        return launch(std::integral_constant<int, BP_ACT_GELU>{});
    case BP_ACT_GELU_TANH:
        return launch(std::integral_constant<int, BP_ACT_GELU_TANH>{});
    case BP_ACT_SILU:
        return launch(std::integral_constant<int, BP_ACT_SILU>{});
    default:
        return launch(std::integral_constant<int, BP_ACT_IDENTITY>{});
    }
}

} // namespace bp_cu

#endif
