// Kernels of the tf32 and bf16 modes: casts between fp32 and bf16, bias + activation from an
// fp32 accumulator (z and a stored in bf16 or fp32), activation backward from a bf16 z, and the
// optimizer step that also writes the bf16 copy of the weights.
//
// Every rounding is bp_math.h's (bp_f32_to_bf16, bp_bf16_to_f32), the one src/cpu calls, and
// bf16 lives in uint16_t: the CPU backend holds the same bits for the same values.
#include "cuda/launch.h"
#include "kernels/bp_math.h"
#include "kernels/common.cuh"
#include "kernels/elem.cuh"

namespace bp_cu {
namespace {

template <int SRC, int DST>
__global__ void cast_kernel(size_t n, const typename Elem<SRC>::type *__restrict__ src,
                            typename Elem<DST>::type *__restrict__ dst) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        Elem<DST>::store(dst, i, Elem<SRC>::load(src, i));
}

// v = acc[i] + bias[i % cols]; z[i] = v and a[i] = act(v), each stored in its type. a may alias
// acc (fp32) and z may alias a (identity, one type): element i is read before it is written and
// by one thread only, so none of the three is __restrict__.
template <int ACT, int ZT, int AT, typename Index>
__global__ void bias_act_ex_kernel(Index n, Index cols, const float *__restrict__ bias,
                                   const float *acc, typename Elem<ZT>::type *z,
                                   typename Elem<AT>::type *a, float slope) {
    for (Index i = (Index)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (Index)gridDim.x * blockDim.x) {
        float v = acc[i];
        if (bias) v += bias[i % cols];
        float y = bp_act_forward(v, (bp_activation)ACT, slope);
        Elem<ZT>::store(z, i, v);
        Elem<AT>::store(a, i, y);
    }
}

// dz[i] = da[i] * act'(z[i]) with z of type ZT; dz may alias da.
template <int ACT, int ZT>
__global__ void act_backward_ex_kernel(size_t n, const typename Elem<ZT>::type *__restrict__ z,
                                       const float *da, float *dz, float slope) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dz[i] = da[i] * bp_act_derivative(Elem<ZT>::load(z, i), (bp_activation)ACT, slope);
}

// The optimizer step of update.cu for a bf16 model: the same element rules, and each updated
// parameter's bf16 copy written in the same pass.
__global__ void sgd_bf16_kernel(bp_update_args a) {
    if (!bp_cu_take_gate(&a)) return;
    const bool use_buf = a.momentum != 0.0f && a.m != nullptr;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < a.n;
         i += (size_t)gridDim.x * blockDim.x) {
        float g = bp_grad_prepare(a.grad[i], a.grad_scale, a.clip_value);
        // On the first step the buffer is set to g, not read: it may be uninitialised.
        float buf = use_buf && !a.first_step ? a.m[i] : 0.0f;
        float p = bp_sgd_elem(a.param[i], g, &buf, a.lr, a.weight_decay, a.momentum,
                              a.one_minus_dampening, a.nesterov, a.first_step);
        a.param[i] = p;
        a.param_bf16[i] = bp_f32_to_bf16(p);
        if (use_buf) a.m[i] = buf;
    }
}

template <int DECOUPLED> __global__ void adam_bf16_kernel(bp_update_args a) {
    if (!bp_cu_take_gate(&a)) return;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < a.n;
         i += (size_t)gridDim.x * blockDim.x) {
        float g = bp_grad_prepare(a.grad[i], a.grad_scale, a.clip_value);
        float m = a.m[i], v = a.v[i];
        float p = bp_adam_elem(a.param[i], g, &m, &v, a.weight_decay, DECOUPLED, a.decay_factor,
                               a.one_minus_beta1, a.beta2, a.one_minus_beta2, a.eps, a.step_size,
                               a.bc2_sqrt);
        a.param[i] = p;
        a.param_bf16[i] = bp_f32_to_bf16(p);
        a.m[i] = m;
        a.v[i] = v;
    }
}

template <int SRC, int DST>
cudaError_t launch_cast(cudaStream_t stream, size_t n, const void *src, void *dst) {
    using S = typename Elem<SRC>::type;
    using D = typename Elem<DST>::type;
    BP_LAUNCH(grid_for(n), kThreads, 0, stream, cast_kernel<SRC, DST>)
    (n, (const S *)src, (D *)dst);
    return cudaGetLastError();
}

template <int ZT, int AT, typename Index>
cudaError_t launch_bias_act_ex(cudaStream_t stream, size_t n, int cols, const float *bias,
                               const float *acc, void *z, void *a, bp_activation act, float slope) {
    using Z = typename Elem<ZT>::type;
    using A = typename Elem<AT>::type;
    return dispatch_activation(act, [&](auto act_c) {
        BP_LAUNCH(grid_for(n), kThreads, 0, stream,
                  bias_act_ex_kernel<decltype(act_c)::value, ZT, AT, Index>)
        ((Index)n, (Index)cols, bias, acc, (Z *)z, (A *)a, slope);
        return cudaGetLastError();
    });
}

template <typename Index>
cudaError_t bias_act_ex_types(cudaStream_t stream, size_t n, int cols, const float *bias,
                              const float *acc, void *z, bp_eltype zt, void *a, bp_eltype at,
                              bp_activation act, float slope) {
    if (zt == BP_EL_BF16 && at == BP_EL_BF16)
        return launch_bias_act_ex<BP_EL_BF16, BP_EL_BF16, Index>(stream, n, cols, bias, acc, z, a,
                                                                 act, slope);
    if (zt == BP_EL_BF16)
        return launch_bias_act_ex<BP_EL_BF16, BP_EL_F32, Index>(stream, n, cols, bias, acc, z, a,
                                                                act, slope);
    if (at == BP_EL_BF16)
        return launch_bias_act_ex<BP_EL_F32, BP_EL_BF16, Index>(stream, n, cols, bias, acc, z, a,
                                                                act, slope);
    return launch_bias_act_ex<BP_EL_F32, BP_EL_F32, Index>(stream, n, cols, bias, acc, z, a, act,
                                                           slope);
}

template <int ZT>
cudaError_t launch_act_backward_ex(cudaStream_t stream, size_t n, const void *z, const float *da,
                                   float *dz, bp_activation act, float slope) {
    using Z = typename Elem<ZT>::type;
    return dispatch_activation(act, [&](auto act_c) {
        BP_LAUNCH(grid_for(n), kThreads, 0, stream,
                  act_backward_ex_kernel<decltype(act_c)::value, ZT>)
        (n, (const Z *)z, da, dz, slope);
        return cudaGetLastError();
    });
}

} // namespace
} // namespace bp_cu

using namespace bp_cu;

extern "C" cudaError_t bp_cu_cast(cudaStream_t stream, size_t n, const void *src,
                                  bp_eltype src_type, void *dst, bp_eltype dst_type) {
    if (src_type == BP_EL_F32 && dst_type == BP_EL_BF16)
        return launch_cast<BP_EL_F32, BP_EL_BF16>(stream, n, src, dst);
    if (src_type == BP_EL_BF16 && dst_type == BP_EL_F32)
        return launch_cast<BP_EL_BF16, BP_EL_F32>(stream, n, src, dst);
    if (src_type == BP_EL_BF16) return launch_cast<BP_EL_BF16, BP_EL_BF16>(stream, n, src, dst);
    return launch_cast<BP_EL_F32, BP_EL_F32>(stream, n, src, dst);
}

extern "C" cudaError_t bp_cu_bias_act_forward_ex(cudaStream_t stream, int rows, int cols,
                                                 const float *bias, const float *acc, void *z,
                                                 bp_eltype z_type, void *a, bp_eltype a_type,
                                                 bp_activation act, float slope) {
    size_t n = (size_t)rows * (size_t)cols;
    if (n <= UINT32_MAX - (size_t)kThreads * kMaxBlocks) // i + stride never wraps
        return bias_act_ex_types<uint32_t>(stream, n, cols, bias, acc, z, z_type, a, a_type, act,
                                           slope);
    return bias_act_ex_types<size_t>(stream, n, cols, bias, acc, z, z_type, a, a_type, act, slope);
}

extern "C" cudaError_t bp_cu_act_backward_ex(cudaStream_t stream, size_t n, const void *z,
                                             bp_eltype z_type, const float *da, float *dz,
                                             bp_activation act, float slope) {
    if (z_type == BP_EL_BF16)
        return launch_act_backward_ex<BP_EL_BF16>(stream, n, z, da, dz, act, slope);
    return launch_act_backward_ex<BP_EL_F32>(stream, n, z, da, dz, act, slope);
}

extern "C" cudaError_t bp_cu_update_bf16(cudaStream_t stream, const bp_update_args *args) {
    const unsigned blocks = grid_for(args->n);
    switch (args->kind) {
    case BP_OPTIM_ADAM:
        BP_LAUNCH(blocks, kThreads, 0, stream, adam_bf16_kernel<0>)(*args);
        break;
    case BP_OPTIM_ADAMW:
        BP_LAUNCH(blocks, kThreads, 0, stream, adam_bf16_kernel<1>)(*args);
        break;
    default:
        BP_LAUNCH(blocks, kThreads, 0, stream, sgd_bf16_kernel)(*args);
        break;
    }
    return cudaGetLastError();
}
