// Loads and stores of the element types of the precision modes (core/backend.h's bp_eltype) as
// fp32 values, with bp_math.h's roundings: the kernels of lowp.cu and norm.cu.
#ifndef BP_KERNELS_ELEM_CUH
#define BP_KERNELS_ELEM_CUH

#include "core/backend.h"
#include "kernels/bp_math.h"

namespace bp_cu {

// Loads and stores of one element type (bp_eltype T) as fp32 values.
template <int T> struct Elem;

template <> struct Elem<BP_EL_F32> {
    using type = float;
    static __device__ __forceinline__ float load(const float *p, size_t i) {
        return p[i];
    }
    static __device__ __forceinline__ void store(float *p, size_t i, float v) {
        p[i] = v;
    }
};

template <> struct Elem<BP_EL_BF16> {
    using type = uint16_t;
    static __device__ __forceinline__ float load(const uint16_t *p, size_t i) {
        return bp_bf16_to_f32(p[i]);
    }
    static __device__ __forceinline__ void store(uint16_t *p, size_t i, float v) {
        p[i] = bp_f32_to_bf16(v);
    }
};

} // namespace bp_cu

#endif
