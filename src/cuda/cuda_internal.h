/* The CUDA backend's private state and error helpers (host side, C11). */
#ifndef BP_CUDA_INTERNAL_H
#define BP_CUDA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "core/backend.h"
#include "core/error.h"

/* Host-to-device copies go through BP_CUDA_STAGE_SLOTS pinned buffers of BP_CUDA_STAGE_BYTES
 * each, used in turn (see cuda_memory.c). */
#define BP_CUDA_STAGE_SLOTS 2
#define BP_CUDA_STAGE_BYTES ((size_t)4 << 20)

/* TF32 for the cuBLAS handle's GEMMs (CUBLAS_TF32_TENSOR_OP_MATH): off, so the gemm entry is
 * plain fp32. A model's precision (bp_mlp_config.precision) chooses TF32 for its own GEMMs,
 * which go through cuBLASLt (cuda_lt.c). */
#define BP_CUDA_ALLOW_TF32_DEFAULT 0

typedef struct bp_cuda_impl {
    int index;            /* the CUDA device ordinal */
    cudaStream_t stream;  /* non-blocking: every op of this device is queued here */
    cublasHandle_t blas;  /* bound to stream */
    cublasLtHandle_t lt;  /* gemm_ex; its matmuls run on stream with blas_workspace */
    int allow_tf32;       /* see BP_CUDA_ALLOW_TF32_DEFAULT */
    void *blas_workspace; /* of the cuBLAS handle and of every cuBLASLt matmul (one stream) */
    size_t blas_workspace_bytes;
    /* Own stream-ordered pool (NULL where the device has none: plain cudaMalloc/cudaFree). */
    cudaMemPool_t pool;
    void *scratch; /* BP_CU_SCRATCH_BYTES: partials of sum, sum_squares, check_labels */
    /* Pinned staging for uploads, allocated on the first upload. */
    void *stage[BP_CUDA_STAGE_SLOTS];
    cudaEvent_t stage_done[BP_CUDA_STAGE_SLOTS]; /* recorded after the slot's last copy */
    int stage_next;
    int64_t *host_result;        /* pinned, one value read back by check_labels */
    bp_device_counters counters; /* bp_cu_note_launch and bp_cu_note_wait add to them */
    int recording; /* a graph is being recorded: its launches are counted when it replays */
} bp_cuda_impl;

/* Count one queued work item (a kernel: every BP_LAUNCH; a GEMM; a copy) or one wait for the
 * device, on the handle the calling thread entered last (bp_cuda_enter). */
void bp_cu_note_launch(void);
void bp_cu_note_wait(void);
void bp_cuda_counters(const bp_device *device, bp_device_counters *out);

static inline bp_cuda_impl *bp_cuda_impl_of(const bp_device *device) {
    return (bp_cuda_impl *)device->impl;
}

/* Sets bp_last_error() to "<call> on <device>: <CUDA's message> (<error name>)", with the call
 * formatted from fmt, clears CUDA's record of the (non-sticky) error so later launch checks do
 * not see it again, and returns BP_ERR_OUT_OF_MEMORY for cudaErrorMemoryAllocation, else
 * BP_ERR_DEVICE. */
bp_status bp_cuda_fail(const bp_device *device, cudaError_t err, const char *fmt, ...)
    BP_PRINTF(3, 4);

/* The same for a cuBLAS status: ALLOC_FAILED is BP_ERR_OUT_OF_MEMORY, INVALID_VALUE
 * BP_ERR_INVALID_ARGUMENT, the rest BP_ERR_DEVICE. */
bp_status bp_cublas_fail(const bp_device *device, cublasStatus_t st, const char *fmt, ...)
    BP_PRINTF(3, 4);

/* Returns from the calling function with bp_cuda_fail(...) when expr is not cudaSuccess. */
#define BP_CUDA_TRY(device, expr, ...)                                                             \
    do {                                                                                           \
        cudaError_t bp_cuda_err_ = (expr);                                                         \
        if (bp_cuda_err_ != cudaSuccess) return bp_cuda_fail((device), bp_cuda_err_, __VA_ARGS__); \
    } while (0)

/* The same for an expression of type cublasStatus_t. */
#define BP_CUBLAS_TRY(device, expr, ...)                                                           \
    do {                                                                                           \
        cublasStatus_t bp_cublas_st_ = (expr);                                                     \
        if (bp_cublas_st_ != CUBLAS_STATUS_SUCCESS)                                                \
            return bp_cublas_fail((device), bp_cublas_st_, __VA_ARGS__);                           \
    } while (0)

/* Makes the device current on the calling thread (the runtime's current device is per thread,
 * and the stream, pool and cuBLAS handle belong to this one). Every entry point calls it. */
bp_status bp_cuda_enter(const bp_device *device);

/* Returns from the calling function when bp_cuda_enter fails. */
#define BP_CUDA_ENTER(device)                                                                      \
    do {                                                                                           \
        bp_status bp_enter_st_ = bp_cuda_enter(device);                                            \
        if (bp_enter_st_ != BP_OK) return bp_enter_st_;                                            \
    } while (0)

/* Entry points, in cuda_device.c, cuda_memory.c, cuda_blas.c and cuda_ops.c. */
bp_status bp_cuda_init(bp_device *device, int index);
void bp_cuda_destroy(bp_device *device);
int bp_cuda_device_count(void);
bp_status bp_cuda_synchronize(bp_device *device);

bp_status bp_cuda_alloc(bp_device *device, size_t bytes, void **out);
size_t bp_cuda_memory_free(bp_device *device, const char **source);
void bp_cuda_free(bp_device *device, void *ptr);
bp_status bp_cuda_upload(bp_device *device, void *dst, const void *host, size_t bytes);
bp_status bp_cuda_download(bp_device *device, void *host, const void *src, size_t bytes);
bp_status bp_cuda_copy(bp_device *device, void *dst, const void *src, size_t bytes);
void bp_cuda_release_staging(bp_cuda_impl *impl);
bp_status bp_cuda_host_alloc(bp_device *device, size_t bytes, void **out);
void bp_cuda_host_free(bp_device *device, void *ptr);
bp_status bp_cuda_download_async(bp_device *device, void *host, const void *src, size_t bytes);
bp_status bp_cuda_upload_async(bp_device *device, void *dst, const void *host, size_t bytes);
bp_status bp_cuda_graph_begin(bp_device *device);
bp_status bp_cuda_graph_end(bp_device *device, void **exec);
bp_status bp_cuda_graph_launch(bp_device *device, void *exec);
void bp_cuda_graph_free(bp_device *device, void *exec);
bp_status bp_cuda_mark_create(bp_device *device, void **mark);
void bp_cuda_mark_free(bp_device *device, void *mark);
bp_status bp_cuda_mark_record(bp_device *device, void *mark);
bp_status bp_cuda_mark_done(bp_device *device, void *mark, int wait, int *done);

bp_status bp_cuda_gemm(bp_device *device, int trans_a, int trans_b, int m, int n, int k,
                       float alpha, const float *a, int lda, const float *b, int ldb, float beta,
                       float *c, int ldc);

/* cuda_lt.c: gemm_ex through cuBLASLt. */
bp_status bp_cuda_gemm_ex(bp_device *device, const bp_gemm_desc *desc, void *plan);
bp_status bp_cuda_gemm_plan(bp_device *device, const bp_gemm_desc *desc, void **plan,
                            size_t *aux_bytes);
void bp_cuda_gemm_plan_free(bp_device *device, void *plan);

bp_status bp_cuda_fill(bp_device *device, float *dst, float value, size_t n);
bp_status bp_cuda_bias_act_forward(bp_device *device, int rows, int cols, const float *bias,
                                   float *z, float *a, bp_activation act, float slope);
bp_status bp_cuda_act_backward(bp_device *device, size_t n, const float *z, const float *da,
                               float *dz, bp_activation act, float slope);
bp_status bp_cuda_col_sum(bp_device *device, int rows, int cols, const float *x, float beta,
                          float *out);
bp_status bp_cuda_softmax(bp_device *device, int rows, int cols, const float *x, float *y);
bp_status bp_cuda_softmax_xent(bp_device *device, int rows, int cols, const float *logits,
                               const int32_t *labels, float smoothing, float grad_scale,
                               float *grad, float *row_loss);
bp_status bp_cuda_class_match(bp_device *device, int rows, int cols, const float *logits,
                              const int32_t *labels, float *match);
bp_status bp_cuda_mse(bp_device *device, int rows, int cols, const float *pred, const float *target,
                      float grad_scale, float *grad, float *row_loss);
bp_status bp_cuda_bce_logits(bp_device *device, int rows, int cols, const float *logits,
                             const float *target, float grad_scale, float *grad, float *row_loss);
bp_status bp_cuda_check_labels(bp_device *device, int rows, const int32_t *labels, int classes,
                               int64_t *bad_index);
bp_status bp_cuda_loss_head(bp_device *device, const bp_loss_head_args *args);
bp_status bp_cuda_check_labels_into(bp_device *device, int rows, const int32_t *labels, int classes,
                                    bp_step_state *state);
bp_status bp_cuda_step_decide(bp_device *device, bp_step_state *state, float clip_norm);
bp_status bp_cuda_norm_decide(bp_device *device, size_t n, const float *grads, bp_step_state *state,
                              float clip_norm);
bp_status bp_cuda_sum(bp_device *device, size_t n, const float *x, float *out);
bp_status bp_cuda_sum_squares(bp_device *device, size_t n, const float *x, float *out);
bp_status bp_cuda_dropout(bp_device *device, size_t n, const float *x, float *y, uint64_t seed,
                          uint64_t stream, uint64_t first, uint32_t threshold, float scale);
bp_status bp_cuda_update(bp_device *device, const bp_update_args *args);
bp_status bp_cuda_cast(bp_device *device, size_t n, const void *src, bp_eltype src_type, void *dst,
                       bp_eltype dst_type);
bp_status bp_cuda_bias_act_forward_ex(bp_device *device, int rows, int cols, const float *bias,
                                      const float *acc, void *z, bp_eltype z_type, void *a,
                                      bp_eltype a_type, bp_activation act, float slope);
bp_status bp_cuda_act_backward_ex(bp_device *device, size_t n, const void *z, bp_eltype z_type,
                                  const float *da, float *dz, bp_activation act, float slope);
bp_status bp_cuda_norm_forward(bp_device *device, bp_norm kind, int rows, int cols, const void *x,
                               bp_eltype x_type, const float *weight, const float *bias, float eps,
                               void *y, bp_eltype y_type, float *mean, float *rstd);
bp_status bp_cuda_norm_backward(bp_device *device, bp_norm kind, int rows, int cols, const void *x,
                                bp_eltype x_type, const float *weight, const float *mean,
                                const float *rstd, const float *dy, float *dx, float beta,
                                float *dweight, float *dbias);
bp_status bp_cuda_add(bp_device *device, size_t n, const void *x, bp_eltype x_type, float *y);

/* In cuda_nccl.c, built with NCCL only. */
bp_status bp_cuda_coll_id(bp_device *device, void *id, size_t size);
bp_status bp_cuda_coll_init(bp_device *device, const void *id, int rank, int size, void **coll);
bp_status bp_cuda_coll_sum(bp_device *device, void *coll, float *buf, size_t n);
void bp_cuda_coll_free(bp_device *device, void *coll);

#endif
