// The optimizer step: one launch over the whole flat parameter buffer.
//
// Per element: g = bp_grad_prepare(grad) (norm scale, then value clamp), then bp_sgd_elem or
// bp_adam_elem with the fields the host precomputed in bp_update_args (bias corrections in
// double, rounded to float, as PyTorch does). The gradient buffer is left unchanged.
#include "cuda/launch.h"
#include "kernels/bp_math.h"
#include "kernels/common.cuh"

namespace bp_cu {
namespace {

// SGD, with or without momentum (a.m may be NULL only when momentum is 0).
__global__ void sgd_kernel(bp_update_args a) {
    if (!bp_cu_take_gate(&a)) return;
    const bool use_buf = a.momentum != 0.0f && a.m != nullptr;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < a.n;
         i += (size_t)gridDim.x * blockDim.x) {
        float g = bp_grad_prepare(a.grad[i], a.grad_scale, a.clip_value);
        // On the first step the buffer is set to g, not read: it may be uninitialised.
        float buf = use_buf && !a.first_step ? a.m[i] : 0.0f;
        a.param[i] = bp_sgd_elem(a.param[i], g, &buf, a.lr, a.weight_decay, a.momentum,
                                 a.one_minus_dampening, a.nesterov, a.first_step);
        if (use_buf) a.m[i] = buf;
    }
}

// Adam (DECOUPLED = 0) and AdamW (DECOUPLED = 1).
template <int DECOUPLED> __global__ void adam_kernel(bp_update_args a) {
    if (!bp_cu_take_gate(&a)) return;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < a.n;
         i += (size_t)gridDim.x * blockDim.x) {
        float g = bp_grad_prepare(a.grad[i], a.grad_scale, a.clip_value);
        float m = a.m[i], v = a.v[i];
        a.param[i] = bp_adam_elem(a.param[i], g, &m, &v, a.weight_decay, DECOUPLED, a.decay_factor,
                                  a.one_minus_beta1, a.beta2, a.one_minus_beta2, a.eps, a.step_size,
                                  a.bc2_sqrt);
        a.m[i] = m;
        a.v[i] = v;
    }
}

__global__ void step_decide_kernel(bp_step_state *s, float clip_norm) {
    bp_cu_decide(s, clip_norm);
}

} // namespace
} // namespace bp_cu

using namespace bp_cu;

extern "C" cudaError_t bp_cu_step_decide(cudaStream_t stream, bp_step_state *state,
                                         float clip_norm) {
    BP_LAUNCH(1, 1, 0, stream, step_decide_kernel)(state, clip_norm);
    return cudaGetLastError();
}

extern "C" cudaError_t bp_cu_update(cudaStream_t stream, const bp_update_args *args) {
    if (args->param_bf16) return bp_cu_update_bf16(stream, args); // kernels/lowp.cu
    const unsigned blocks = grid_for(args->n);
    switch (args->kind) {
    case BP_OPTIM_ADAM:
        BP_LAUNCH(blocks, kThreads, 0, stream, adam_kernel<0>)(*args);
        break;
    case BP_OPTIM_ADAMW:
        BP_LAUNCH(blocks, kThreads, 0, stream, adam_kernel<1>)(*args);
        break;
    default:
        BP_LAUNCH(blocks, kThreads, 0, stream, sgd_kernel)(*args);
        break;
    }
    return cudaGetLastError();
}
