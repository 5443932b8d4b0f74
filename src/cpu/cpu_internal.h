/* The CPU backend's entries, one file per concern; cpu_backend.c gathers them into bp_cpu_ops. */
#ifndef BP_CPU_INTERNAL_H
#define BP_CPU_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "core/backend.h"

/* Loops over fewer elements than this run on one thread. Element-wise work is a small share of
 * a step, and an OpenMP team that wakes for it keeps spinning afterwards on the cores the BLAS
 * threads need for the next GEMM: at 32768 elements a 784-512-256-10 step ran 4x slower than
 * on one thread (2 cores, OpenBLAS pthreads). */
#define BP_CPU_PAR_MIN ((size_t)1 << 20)

/* Whether a rows x cols loop is worth a thread team. */
static inline int bp_cpu_parallel(int rows, int cols) {
    return rows > 0 && cols > 0 && (size_t)rows * (size_t)cols >= BP_CPU_PAR_MIN;
}

/* Row maximum, for the stable softmax; cols >= 1. A NaN in x[0] carries through to the result,
 * so a NaN row stays NaN as in PyTorch. */
static inline float bp_cpu_row_max(const float *x, int cols) {
    float m = x[0];
    for (int j = 1; j < cols; ++j)
        m = x[j] > m ? x[j] : m;
    return m;
}

bp_status bp_cpu_gemm(bp_device *device, int trans_a, int trans_b, int m, int n, int k, float alpha,
                      const float *a, int lda, const float *b, int ldb, float beta, float *c,
                      int ldc);

bp_status bp_cpu_bias_act_forward(bp_device *device, int rows, int cols, const float *bias,
                                  float *z, float *a, bp_activation act, float slope);
bp_status bp_cpu_act_backward(bp_device *device, size_t n, const float *z, const float *da,
                              float *dz, bp_activation act, float slope);
bp_status bp_cpu_softmax(bp_device *device, int rows, int cols, const float *x, float *y);
bp_status bp_cpu_dropout(bp_device *device, size_t n, const float *x, float *y, uint64_t seed,
                         uint64_t stream, uint64_t first, uint32_t threshold, float scale);

bp_status bp_cpu_col_sum(bp_device *device, int rows, int cols, const float *x, float beta,
                         float *out);
bp_status bp_cpu_sum(bp_device *device, size_t n, const float *x, float *out);
bp_status bp_cpu_sum_squares(bp_device *device, size_t n, const float *x, float *out);
bp_status bp_cpu_check_labels(bp_device *device, int rows, const int32_t *labels, int classes,
                              int64_t *bad_index);

bp_status bp_cpu_class_match(bp_device *device, int rows, int cols, const float *logits,
                             const int32_t *labels, float *match);
bp_status bp_cpu_softmax_xent(bp_device *device, int rows, int cols, const float *logits,
                              const int32_t *labels, float smoothing, float grad_scale, float *grad,
                              float *row_loss);
bp_status bp_cpu_mse(bp_device *device, int rows, int cols, const float *pred, const float *target,
                     float grad_scale, float *grad, float *row_loss);
bp_status bp_cpu_bce_logits(bp_device *device, int rows, int cols, const float *logits,
                            const float *target, float grad_scale, float *grad, float *row_loss);

bp_status bp_cpu_update(bp_device *device, const bp_update_args *args);

/* The tf32 and bf16 modes (cpu_gemm.c, cpu_lowp.c). */
bp_status bp_cpu_gemm_ex(bp_device *device, const bp_gemm_desc *desc, void *plan);
size_t bp_cpu_gemm_scratch(const bp_gemm_desc *desc);
bp_status bp_cpu_cast(bp_device *device, size_t n, const void *src, bp_eltype src_type, void *dst,
                      bp_eltype dst_type);
bp_status bp_cpu_bias_act_forward_ex(bp_device *device, int rows, int cols, const float *bias,
                                     const float *acc, void *z, bp_eltype z_type, void *a,
                                     bp_eltype a_type, bp_activation act, float slope);
bp_status bp_cpu_act_backward_ex(bp_device *device, size_t n, const void *z, bp_eltype z_type,
                                 const float *da, float *dz, bp_activation act, float slope);

#endif
