/* The device-abstraction layer: one table of operations per backend.
 *
 * The core calls devices only through this table. Every pointer argument named "device memory"
 * is memory from ops->alloc on the same device. All operations may run asynchronously on the
 * device's queue; only download and synchronize wait. Entries marked optional may be NULL.
 *
 * Reductions (col_sum, sum, sum_squares) must be deterministic: same inputs and thread count,
 * bitwise the same result, no atomics. On failure an entry sets bp_last_error() (naming the
 * failing call and its arguments) and returns the status. */
#ifndef BP_CORE_BACKEND_H
#define BP_CORE_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "backprop/backprop.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Arguments of one optimizer update over a flat buffer of n floats. */
typedef struct bp_update_args {
    bp_optim_kind kind;
    size_t n;
    float *param;      /* device memory, updated in place */
    const float *grad; /* device memory, left unchanged */
    float *m;          /* SGD momentum buffer or Adam first moment; NULL for plain SGD */
    float *v;          /* Adam second moment; NULL for SGD */
    float grad_scale;  /* multiplies each gradient first (norm clipping); 1 for none */
    float clip_value;  /* > 0: then clamps each gradient to [-clip_value, clip_value] */
    float lr;
    float weight_decay;
    /* SGD */
    float momentum, dampening;
    int nesterov;
    int first_step; /* SGD: 1 on the first step (momentum buffer = g) */
    /* Adam, AdamW: step_size = lr / (1 - beta1^t), bc2_sqrt = sqrt(1 - beta2^t), from the host
     * in double then rounded to float, as PyTorch does */
    float beta1, beta2, eps;
    float one_minus_beta1, one_minus_beta2; /* 1 - beta in double, rounded */
    float step_size, bc2_sqrt;
    float decay_factor; /* AdamW: 1 - lr * weight_decay in double, rounded */
} bp_update_args;

typedef struct bp_backend_ops {
    const char *name; /* "cpu", "cuda" */

    /* Lifetime. init fills device->impl for device index `index`. device_count: how many
     * devices of this kind can run here (0 when none). */
    bp_status (*init)(bp_device *device, int index);
    void (*destroy)(bp_device *device);
    int (*device_count)(void);

    /* Memory. alloc never returns NULL with BP_OK; a zero-byte request is never made. */
    bp_status (*alloc)(bp_device *device, size_t bytes, void **out);
    void (*free)(bp_device *device, void *ptr);
    bp_status (*upload)(bp_device *device, void *dst, const void *host, size_t bytes);
    bp_status (*download)(bp_device *device, void *host, const void *src, size_t bytes);
    bp_status (*copy)(bp_device *device, void *dst, const void *src, size_t bytes);
    bp_status (*fill)(bp_device *device, float *dst, float value, size_t n);
    bp_status (*synchronize)(bp_device *device);

    /* C[m,n] = alpha * op(A) op(B) + beta * C, row-major; op(A) is [m,k], op(B) is [k,n];
     * lda, ldb, ldc are the row strides of A, B, C as stored. With beta 0, C is not read. */
    bp_status (*gemm)(bp_device *device, int trans_a, int trans_b, int m, int n, int k, float alpha,
                      const float *a, int lda, const float *b, int ldb, float beta, float *c,
                      int ldc);

    /* z[r,c] += bias[c]; a[r,c] = act(z[r,c]). bias may be NULL (no bias). a may equal z only
     * for BP_ACT_IDENTITY. */
    bp_status (*bias_act_forward)(bp_device *device, int rows, int cols, const float *bias,
                                  float *z, float *a, bp_activation act, float slope);

    /* dz[i] = da[i] * act'(z[i]) for n elements; dz may equal da. */
    bp_status (*act_backward)(bp_device *device, size_t n, const float *z, const float *da,
                              float *dz, bp_activation act, float slope);

    /* out[c] = beta * out[c] + sum_r x[r,c]; beta is 0 or 1, and with 0 out is not read. */
    bp_status (*col_sum)(bp_device *device, int rows, int cols, const float *x, float beta,
                         float *out);

    /* y = softmax(x) over each row. y may equal x. */
    bp_status (*softmax)(bp_device *device, int rows, int cols, const float *x, float *y);

    /* Losses, one pass: row_loss[r] = the loss of row r summed over its columns (not
     * averaged); grad = grad_scale * d(row_loss)/d(input). grad may be NULL (value only). */
    bp_status (*softmax_xent)(bp_device *device, int rows, int cols, const float *logits,
                              const int32_t *labels, float smoothing, float grad_scale, float *grad,
                              float *row_loss);
    bp_status (*mse)(bp_device *device, int rows, int cols, const float *pred, const float *target,
                     float grad_scale, float *grad, float *row_loss);
    bp_status (*bce_logits)(bp_device *device, int rows, int cols, const float *logits,
                            const float *target, float grad_scale, float *grad, float *row_loss);

    /* Checks labels are in [0, classes); *bad_index receives the first bad row or -1. Reads
     * back to the host (waits). */
    bp_status (*check_labels)(bp_device *device, int rows, const int32_t *labels, int classes,
                              int64_t *bad_index);

    /* *out (device memory, one float) = sum of x[0..n) (sum); sum of squares (sum_squares).
     * Accumulated in double. */
    bp_status (*sum)(bp_device *device, size_t n, const float *x, float *out);
    bp_status (*sum_squares)(bp_device *device, size_t n, const float *x, float *out);

    /* Inverted dropout: y[i] = keep(first + i) ? x[i] * scale : 0, keep(k) from
     * bp_dropout_keep(seed, stream, k, threshold) in kernels/bp_math.h. y may equal x. The same
     * call on the gradient applies the same mask. first places x in a larger batch (a
     * micro-batch, a rank's shard), so the pieces draw the masks of the whole. */
    bp_status (*dropout)(bp_device *device, size_t n, const float *x, float *y, uint64_t seed,
                         uint64_t stream, uint64_t first, uint32_t threshold, float scale);

    /* One pass of the optimizer over the flat buffer. */
    bp_status (*update)(bp_device *device, const bp_update_args *args);

    /* Collectives across the processes of a data-parallel group, on the device (optional: all
     * NULL means the core sums through host memory over MPI). coll_id makes the group's id on
     * rank 0 (at most BP_COLL_ID_BYTES); the core sends it to the other ranks, and every rank
     * calls coll_init with it. coll_sum sums buf over the ranks in place, queued on the device
     * like any op, the same result on every rank. */
    bp_status (*coll_id)(bp_device *device, void *id, size_t size);
    bp_status (*coll_init)(bp_device *device, const void *id, int rank, int size, void **coll);
    bp_status (*coll_sum)(bp_device *device, void *coll, float *buf, size_t n);
    void (*coll_free)(bp_device *device, void *coll);
} bp_backend_ops;

#define BP_COLL_ID_BYTES 128

struct bp_device {
    const bp_backend_ops *ops;
    bp_device_kind kind;
    int index;
    char name[32];
    void *impl; /* the backend's own state */
    bp_device_stats stats;
    /* Called by bp_device_close before the backend lets go of the device: a data-parallel comm
     * whose collectives (an NCCL communicator) live on this device frees them here when the
     * device closes first. NULL when none. */
    void (*on_close)(void *ctx, bp_device *device);
    void *on_close_ctx;
};

extern const bp_backend_ops bp_cpu_ops;
#ifdef BP_HAVE_CUDA
extern const bp_backend_ops bp_cuda_ops;
#endif

#ifdef __cplusplus
}
#endif

#endif
