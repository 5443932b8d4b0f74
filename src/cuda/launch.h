/* Kernel launchers: the seam between the host code in src/cuda (C11) and the device code in
 * kernels/ (CUDA C++). Each launcher queues its kernel(s) on `stream` and returns
 * cudaGetLastError() taken right after the launch, so a bad configuration is reported by the
 * launcher that caused it. They never synchronize and never allocate.
 *
 * Callers pass sizes > 0 (a launch of zero blocks is an error); the entry points in src/cuda
 * return early on empty work. */
#ifndef BP_CUDA_LAUNCH_H
#define BP_CUDA_LAUNCH_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#include "core/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Blocks of the first pass of sum, sum_squares and check_labels. A constant, not a function of
 * the GPU, so the partition of the input (hence the rounding) is the same on every device. */
#define BP_CU_REDUCE_BLOCKS 512

/* Bytes of scratch the reductions need: one 8-byte partial per block and one 8-byte result. */
#define BP_CU_SCRATCH_BYTES ((size_t)(BP_CU_REDUCE_BLOCKS + 1) * 8)

/* Counts a launch on the handle entered last (cuda_device.c); BP_LAUNCH calls it. */
void bp_cu_note_launch(void);

/* cudaSuccess when this build holds a kernel image the current device can run. */
cudaError_t bp_cu_probe(void);

cudaError_t bp_cu_fill(cudaStream_t stream, float *dst, float value, size_t n);

cudaError_t bp_cu_bias_act_forward(cudaStream_t stream, int rows, int cols, const float *bias,
                                   float *z, float *a, bp_activation act, float slope);

cudaError_t bp_cu_act_backward(cudaStream_t stream, size_t n, const float *z, const float *da,
                               float *dz, bp_activation act, float slope);

cudaError_t bp_cu_dropout(cudaStream_t stream, size_t n, const float *x, float *y, uint64_t seed,
                          uint64_t rng_stream, uint64_t first, uint32_t threshold, float scale);

cudaError_t bp_cu_col_sum(cudaStream_t stream, int rows, int cols, const float *x, float beta,
                          float *out);

/* *out = sum of x (squares = 0) or of x^2 (squares = 1); scratch: BP_CU_SCRATCH_BYTES. */
cudaError_t bp_cu_sum(cudaStream_t stream, size_t n, const float *x, int squares, void *scratch,
                      float *out);

/* sum_squares of x into state->norm2, then step_decide (norm_decide of core/backend.h). */
cudaError_t bp_cu_norm_decide(cudaStream_t stream, size_t n, const float *x, void *scratch,
                              bp_step_state *state, float clip_norm);

/* *result (device memory) = the first row with a label outside [0, classes), or INT64_MAX
 * when none; scratch: BP_CU_SCRATCH_BYTES. */
cudaError_t bp_cu_check_labels(cudaStream_t stream, int rows, const int32_t *labels, int classes,
                               void *scratch, int64_t *result);

cudaError_t bp_cu_softmax(cudaStream_t stream, int rows, int cols, const float *x, float *y);

cudaError_t bp_cu_softmax_xent(cudaStream_t stream, int rows, int cols, const float *logits,
                               const int32_t *labels, float smoothing, float grad_scale,
                               float *grad, float *row_loss);

/* match[r] = 1.0f when row r's first largest logit is at labels[r], else 0. */
cudaError_t bp_cu_class_match(cudaStream_t stream, int rows, int cols, const float *logits,
                              const int32_t *labels, float *match);

/* loss_head of core/backend.h: one kernel for a small head, two for a larger one. */
cudaError_t bp_cu_loss_head(cudaStream_t stream, const bp_loss_head_args *a);

cudaError_t bp_cu_mse(cudaStream_t stream, int rows, int cols, const float *pred,
                      const float *target, float grad_scale, float *grad, float *row_loss);

cudaError_t bp_cu_bce_logits(cudaStream_t stream, int rows, int cols, const float *logits,
                             const float *target, float grad_scale, float *grad, float *row_loss);

cudaError_t bp_cu_update(cudaStream_t stream, const bp_update_args *args);

/* step_decide of core/backend.h: one thread. */
cudaError_t bp_cu_step_decide(cudaStream_t stream, bp_step_state *state, float clip_norm);

/* The tf32 and bf16 modes (kernels/lowp.cu); semantics of the entries of the same names in
 * core/backend.h. bp_cu_update_bf16 is bp_cu_update writing args->param_bf16 too. */
cudaError_t bp_cu_cast(cudaStream_t stream, size_t n, const void *src, bp_eltype src_type,
                       void *dst, bp_eltype dst_type);
cudaError_t bp_cu_bias_act_forward_ex(cudaStream_t stream, int rows, int cols, const float *bias,
                                      const float *acc, void *z, bp_eltype z_type, void *a,
                                      bp_eltype a_type, bp_activation act, float slope);
cudaError_t bp_cu_act_backward_ex(cudaStream_t stream, size_t n, const void *z, bp_eltype z_type,
                                  const float *da, float *dz, bp_activation act, float slope);
cudaError_t bp_cu_update_bf16(cudaStream_t stream, const bp_update_args *args);

/* Norm and residual layers (kernels/norm.cu); semantics of norm_forward, norm_backward and add
 * in core/backend.h. */
cudaError_t bp_cu_norm_forward(cudaStream_t stream, bp_norm kind, int rows, int cols, const void *x,
                               bp_eltype x_type, const float *weight, const float *bias, float eps,
                               void *y, bp_eltype y_type, float *mean, float *rstd);
cudaError_t bp_cu_norm_backward(cudaStream_t stream, bp_norm kind, int rows, int cols,
                                const void *x, bp_eltype x_type, const float *weight,
                                const float *mean, const float *rstd, const float *dy, float *dx,
                                float beta, float *dweight, float *dbias);
cudaError_t bp_cu_add(cudaStream_t stream, size_t n, const void *x, bp_eltype x_type, float *y);

#ifdef __cplusplus
}
#endif

#endif
