/* The element-wise entries of the tf32 and bf16 modes: casts, bias + activation from an fp32
 * accumulator, and activation backward from a bf16 z. Every rounding is bp_math.h's, the one
 * the CUDA kernels call. */
#include <string.h>

#include "core/error.h"
#include "cpu/cpu_internal.h"
#include "kernels/bp_math.h"

#define load  bp_cpu_load
#define store bp_cpu_store

bp_status bp_cpu_cast(bp_device *device, size_t n, const void *src, bp_eltype src_type, void *dst,
                      bp_eltype dst_type) {
    (void)device;
    if (src_type == dst_type) {
        if (n) memcpy(dst, src, n * bp_eltype_size(src_type));
        return BP_OK;
    }
#pragma omp parallel for schedule(static)                                                          \
    num_threads(bp_cpu_threads(device)) if (n >= BP_CPU_PAR_MIN)
    for (size_t i = 0; i < n; ++i)
        store(dst, dst_type, i, load(src, src_type, i));
    return BP_OK;
}

/* Element i is read (acc) before either output is written, so a may be acc. */
bp_status bp_cpu_bias_act_forward_ex(bp_device *device, int rows, int cols, const float *bias,
                                     const float *acc, void *z, bp_eltype z_type, void *a,
                                     bp_eltype a_type, bp_activation act, float slope) {
    (void)device;
#pragma omp parallel for schedule(static)                                                          \
    num_threads(bp_cpu_threads(device)) if (bp_cpu_parallel(rows, cols))
    for (int r = 0; r < rows; ++r) {
        size_t o = (size_t)r * (size_t)cols;
        for (int j = 0; j < cols; ++j) {
            float v = bias ? acc[o + j] + bias[j] : acc[o + j];
            float y = bp_act_forward(v, act, slope);
            store(z, z_type, o + j, v);
            store(a, a_type, o + j, y);
        }
    }
    return BP_OK;
}

bp_status bp_cpu_act_backward_ex(bp_device *device, size_t n, const void *z, bp_eltype z_type,
                                 const float *da, float *dz, bp_activation act, float slope) {
    (void)device;
#pragma omp parallel for schedule(static)                                                          \
    num_threads(bp_cpu_threads(device)) if (n >= BP_CPU_PAR_MIN)
    for (size_t i = 0; i < n; ++i)
        dz[i] = da[i] * bp_act_derivative(load(z, z_type, i), act, slope);
    return BP_OK;
}
