/* The device-abstraction layer: one table of operations per backend.
 *
 * The core calls devices only through this table. Every pointer argument named "device memory"
 * is memory from ops->alloc on the same device. All operations may run asynchronously on the
 * device's queue; only download and synchronize wait. Entries marked optional may be NULL.
 *
 * Reductions (col_sum, sum, sum_squares, gemm_ex's bias gradient) must be deterministic: same
 * inputs and thread count, bitwise the same result, no atomics. On failure an entry sets
 * bp_last_error() (naming the failing call and its arguments) and returns the status. */
#ifndef BP_CORE_BACKEND_H
#define BP_CORE_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "backprop/backprop.h"
#include "core/module.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Element types of the device buffers the precision modes use (docs/precision.md). bf16 is
 * stored as uint16_t bit patterns, made and read only by the helpers of kernels/bp_math.h
 * (bp_f32_to_bf16, bp_bf16_to_f32), so every backend holds the same bits. */
typedef enum bp_eltype { BP_EL_F32 = 0, BP_EL_BF16 = 1 } bp_eltype;

static inline size_t bp_eltype_size(bp_eltype type) {
    return type == BP_EL_BF16 ? 2 : 4;
}

/* What gemm_ex does with the product P = op(A) op(B) ([m, n], row-major, accumulated in fp32).
 * The fused ones are the forward and backward of one layer (z = x W^T + b, y = act(z)). */
typedef enum bp_epilogue {
    /* C = alpha P + beta C. */
    BP_EPI_NONE = 0,
    /* z[i,j] = P[i,j] + bias[j] (fp32); C[i,j] = act(z[i,j]) computed in fp32, then stored in
     * c_type. With an activation other than identity, aux receives what BP_EPI_DACT_BGRAD needs
     * to differentiate act at z, in the backend's own format (gemm_plan sizes it). alpha is 1,
     * beta 0. */
    BP_EPI_BIAS_ACT = 1,
    /* The gradient through the layer whose BIAS_ACT wrote aux: g = P (fp32, never stored);
     * d[i,j] = g[i,j] * act'(z[i,j]); C = d stored in c_type; bias_grad[j] = sum_i d[i,j] over
     * the unrounded d, written (not added). alpha is 1, beta 0. */
    BP_EPI_DACT_BGRAD = 2
} bp_epilogue;

/* One GEMM for gemm_ex / gemm_plan. Shapes, transposes and strides mean what they mean for
 * gemm; a, b are ab_type, c is c_type (device memory). c overlaps neither a, b nor aux. */
typedef struct bp_gemm_desc {
    int trans_a, trans_b, m, n, k;
    float alpha, beta; /* beta != 0 only with BP_EPI_NONE and c_type BP_EL_F32 */
    bp_eltype ab_type; /* both operands */
    int tf32;          /* BP_EL_F32 operands: each rounded to TF32 (bp_round_tf32) first */
    const void *a;
    int lda;
    const void *b;
    int ldb;
    void *c;
    int ldc;
    bp_eltype c_type;
    bp_epilogue epilogue;
    bp_activation act; /* the fused epilogues' activation */
    float slope;
    const float *bias; /* BIAS_ACT: [n]; NULL adds none */
    void *aux;         /* BIAS_ACT: written; DACT_BGRAD: read (see gemm_plan) */
    float *bias_grad;  /* DACT_BGRAD: [n] */
    void *scratch;     /* gemm_scratch(desc) bytes of device memory (NULL when that is 0) */
} bp_gemm_desc;

/* What a training step leaves on the device (one block of device memory per model): its
 * scalars, which the step's own kernels write and the host reads back without waiting
 * (docs/design.md, "A step that does not wait"). The first three are the BP_SCALAR_* floats. */
typedef struct bp_step_state {
    float loss;      /* sum of the rows' losses */
    float norm2;     /* squared norm of the gradient */
    float match;     /* cross-entropy: rows classified right */
    float scale;     /* step_decide: the clip coefficient the update multiplies each gradient by */
    int64_t bad_row; /* check_labels_into: first target row whose class is out of range, or
                        INT64_MAX; INT64_MAX when the loss takes no classes */
    int32_t refused; /* step_decide: BP_REFUSED_*; once set, every later update skips until the
                        host clears it, so the steps queued after a refused one change nothing */
    /* The step's own scalars of bp_update_args, uploaded by the host before the step, so that a
     * captured step (a CUDA graph) replays with each step's values. */
    int32_t first_step;
    float lr, step_size, bc2_sqrt, decay_factor;
} bp_step_state;

/* Why step_decide refused a step (bp_step_state.refused), in the order it looks. */
enum {
    BP_REFUSED_NONE = 0,
    BP_REFUSED_LABEL = 1, /* bad_row holds a class outside the model's outputs */
    BP_REFUSED_LOSS = 2,  /* the loss sum is not finite */
    BP_REFUSED_GRAD = 3   /* the gradient's squared norm is not finite */
};

/* The loss head of a training step in one op (loss_head): what softmax_xent, mse or bce_logits,
 * the column sums of the row losses and of class_match, the label check, the last layer's bias
 * gradient and the bf16 cast of its gradient do in turn, for a last layer whose output is its
 * z (no activation, dropout, norm or residual). */
typedef struct bp_loss_head_args {
    bp_loss_kind kind;
    int rows, cols;
    const float *logits;
    const void *target; /* cross-entropy: int32 classes [rows]; else fp32 [rows, cols] */
    float smoothing;    /* cross-entropy's label smoothing */
    float grad_scale;
    float *grad;       /* [rows, cols]: grad_scale * d(row loss)/d(logits) */
    uint16_t *grad_lp; /* NULL, or [rows, cols]: grad rounded by bp_f32_to_bf16 */
    float *bias_grad;  /* [cols]: the column sums of grad (added with accumulate) */
    int accumulate;    /* add into state->loss, match and bias_grad; else write them */
    int64_t first_row; /* the rows' first index in the step's target (for bad_row) */
    bp_step_state *state;
    float *row_scratch; /* [2 * rows] floats the backend may use */
} bp_loss_head_args;

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
    float momentum;
    float one_minus_dampening; /* 1 - dampening in double, rounded */
    int nesterov;
    int first_step; /* SGD: 1 on the first step (momentum buffer = g) */
    /* Adam, AdamW: step_size = lr / (1 - beta1^t), bc2_sqrt = sqrt(1 - beta2^t), from the host
     * in double then rounded to float, as PyTorch does */
    float beta2, eps;
    float one_minus_beta1, one_minus_beta2; /* 1 - beta in double, rounded */
    float step_size, bc2_sqrt;
    float decay_factor; /* AdamW: 1 - lr * weight_decay in double, rounded */
    /* When not NULL: also receives bp_f32_to_bf16 of every updated parameter, in the same pass
     * (the bf16 copy of a bf16 model's weights). */
    uint16_t *param_bf16;
    /* When not NULL (device memory, step_decide's): the update does nothing when gate->refused
     * is set, and takes grad_scale from gate->scale and the step's scalars (first_step, lr,
     * step_size, bc2_sqrt, decay_factor) from the gate's fields of those names. */
    const bp_step_state *gate;
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
    /* The bytes an allocation can still get: the host's MemAvailable, the GPU's free memory
     * and what its pool holds unused. 0 when the device cannot tell (nothing is then checked);
     * *source names where the figure comes from, for messages. */
    size_t (*memory_free)(bp_device *device, const char **source);
    /* The handle's counters (optional: NULL counts nothing). */
    void (*counters)(const bp_device *device, bp_device_counters *out);

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

    /* match[r] = 1.0f when the first largest of logits[r, 0..cols) is at labels[r], else 0:
     * whether row r is classified right (a NaN logit is never the largest; a row of NaNs never
     * matches). The training step counts the train accuracy with it from the logits it already
     * made, so the count costs a pass over [rows, cols], no forward. */
    bp_status (*class_match)(bp_device *device, int rows, int cols, const float *logits,
                             const int32_t *labels, float *match);

    /* Checks labels are in [0, classes); *bad_index receives the first bad row or -1. Reads
     * back to the host (waits). */
    bp_status (*check_labels)(bp_device *device, int rows, const int32_t *labels, int classes,
                              int64_t *bad_index);

    /* ---- a step that does not wait (optional: without all of them, bp_train_step reads its
     * scalars back and decides on the host) ---------------------------------------------------- */

    /* check_labels without the read back: state->bad_row = the first row with a label outside
     * [0, classes), or INT64_MAX. */
    bp_status (*check_labels_into)(bp_device *device, int rows, const int32_t *labels, int classes,
                                   bp_step_state *state);
    /* On the device, from state's loss, norm2 and bad_row: sets state->refused (unless set
     * already) and state->scale = min(clip_norm / (sqrt(norm2) + 1e-6), 1) in fp32 as PyTorch's
     * clip_grad_norm_ (1 when clip_norm is 0). */
    bp_status (*step_decide)(bp_device *device, bp_step_state *state, float clip_norm);
    /* Optional (NULL: the core calls the separate entries). The loss head of bp_loss_head_args,
     * its sums as the separate entries make them (the rows' fp32 losses, the matches and each
     * column of grad summed in double, rounded once), bitwise the same at every call:
     * state->loss and, for cross-entropy, state->match = the sums (added with accumulate);
     * state->bad_row = first_row + the first row whose class is outside [0, cols), or
     * INT64_MAX (with accumulate, the smaller of that and the value there); the other losses
     * leave match and bad_row alone. */
    bp_status (*loss_head)(bp_device *device, const bp_loss_head_args *args);
    /* Optional (NULL: the core calls sum_squares into state->norm2, then step_decide): the two
     * in one entry, with their results. The refusal needs the whole gradient's norm before the
     * update writes anything, so the norm is a pass of its own, not part of the update. */
    bp_status (*norm_decide)(bp_device *device, size_t n, const float *grads, bp_step_state *state,
                             float clip_norm);
    /* Host memory the device copies into without waiting (pinned on a GPU), and back. */
    bp_status (*host_alloc)(bp_device *device, size_t bytes, void **out);
    void (*host_free)(bp_device *device, void *ptr);
    /* Queue copies between device memory and host_alloc's memory; nothing waits. */
    bp_status (*download_async)(bp_device *device, void *host, const void *src, size_t bytes);
    bp_status (*upload_async)(bp_device *device, void *dst, const void *host, size_t bytes);
    /* Marks: mark_record marks the point the device's queue has reached; mark_done sets *done
     * to whether the device has passed it, waiting for that when wait is 1. */
    bp_status (*mark_create)(bp_device *device, void **mark);
    void (*mark_free)(bp_device *device, void *mark);
    bp_status (*mark_record)(bp_device *device, void *mark);
    bp_status (*mark_done)(bp_device *device, void *mark, int wait, int *done);

    /* Graphs (optional): graph_begin records the device's queue instead of running it, until
     * graph_end, which makes an executable graph of what was recorded into *exec (updating the
     * one *exec holds when it can; a failed recording leaves *exec NULL and returns the first
     * failure); graph_launch queues it as one launch; graph_free frees it. */
    bp_status (*graph_begin)(bp_device *device);
    bp_status (*graph_end)(bp_device *device, void **exec);
    bp_status (*graph_launch)(bp_device *device, void *exec);
    void (*graph_free)(bp_device *device, void *exec);

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

    /* One pass of the optimizer over the flat buffer (writing args->param_bf16 when set). */
    bp_status (*update)(bp_device *device, const bp_update_args *args);

    /* ---- the tf32 and bf16 modes (docs/precision.md) --------------------------------------
     * gemm_ex, cast, bias_act_forward_ex and act_backward_ex are what a backend needs to run
     * them; without those four a backend runs fp32 models only (bp_model_create refuses the
     * others). gemm_scratch, gemm_plan and gemm_plan_free are optional. */

    /* The GEMM of desc (see bp_gemm_desc and bp_epilogue). plan is NULL or gemm_plan's for a
     * desc of the same kind (types, transposes, epilogue, activation) and no larger shape. A
     * backend that cannot run desc returns BP_ERR_UNSUPPORTED. */
    bp_status (*gemm_ex)(bp_device *device, const bp_gemm_desc *desc, void *plan);

    /* Bytes of scratch gemm_ex needs for desc (NULL entry or 0: none). The core gives each
     * model one block of the largest size its GEMMs need. */
    size_t (*gemm_scratch)(const bp_gemm_desc *desc);

    /* Prepares gemm_ex for calls like desc with at most its m, n, k (the largest batch): picks
     * the algorithm once, so that a training step only looks it up. *aux_bytes receives the
     * size of a BIAS_ACT epilogue's aux buffer at desc's shape (0 for the others); any smaller
     * batch needs no more. BP_ERR_UNSUPPORTED (and a message) when the backend cannot fuse
     * desc's epilogue for its types and activation: the core then composes the plain entries,
     * so an unsupported fusion costs speed, never correctness. */
    bp_status (*gemm_plan)(bp_device *device, const bp_gemm_desc *desc, void **plan,
                           size_t *aux_bytes);
    void (*gemm_plan_free)(bp_device *device, void *plan);

    /* dst[i] = src[i] converted: BP_EL_F32 -> BP_EL_BF16 rounds (bp_f32_to_bf16), BP_EL_BF16 ->
     * BP_EL_F32 is exact, the same type copies. src and dst do not overlap. */
    bp_status (*cast)(bp_device *device, size_t n, const void *src, bp_eltype src_type, void *dst,
                      bp_eltype dst_type);

    /* bias_act_forward from an fp32 accumulator: v = acc[r,c] + bias[c] (fp32; bias may be
     * NULL); z[r,c] = v stored in z_type; a[r,c] = act(v) computed from the unrounded v, stored
     * in a_type. a may be acc when a_type is BP_EL_F32 (element r,c is read before it is
     * written); a may be z for BP_ACT_IDENTITY with a_type == z_type; z is never acc. */
    bp_status (*bias_act_forward_ex)(bp_device *device, int rows, int cols, const float *bias,
                                     const float *acc, void *z, bp_eltype z_type, void *a,
                                     bp_eltype a_type, bp_activation act, float slope);

    /* act_backward with z of z_type: dz[i] = da[i] * act'(z[i]) in fp32; dz may equal da. */
    bp_status (*act_backward_ex)(bp_device *device, size_t n, const void *z, bp_eltype z_type,
                                 const float *da, float *dz, bp_activation act, float slope);

    /* ---- normalization and residual layers (docs/deep-mlp.md); optional: without them a
     * backend runs no model with a norm or a residual (bp_model_create refuses it) ---------- */

    /* Normalizes each of rows rows of cols features of x (x_type) as `kind` (model.h):
     * y[r,c] = bp_norm_forward_elem(x, mean[r], rstd[r], weight[c], bias[c]) stored in y_type;
     * bias is NULL for RMSNorm (0). The statistics are accumulated in fp32 or wider; mean[r]
     * (0 for RMSNorm) and rstd[r] are written for norm_backward. */
    bp_status (*norm_forward)(bp_device *device, bp_norm kind, int rows, int cols, const void *x,
                              bp_eltype x_type, const float *weight, const float *bias, float eps,
                              void *y, bp_eltype y_type, float *mean, float *rstd);

    /* The gradient through norm_forward from dy (fp32): dx (fp32; not dy) by
     * bp_norm_backward_elem; dweight[c] = beta * dweight[c] + sum_r dy * xhat and (LayerNorm,
     * dbias not NULL) dbias[c] = beta * dbias[c] + sum_r dy, beta 0 or 1, deterministic. */
    bp_status (*norm_backward)(bp_device *device, bp_norm kind, int rows, int cols, const void *x,
                               bp_eltype x_type, const float *weight, const float *mean,
                               const float *rstd, const float *dy, float *dx, float beta,
                               float *dweight, float *dbias);

    /* y[i] += x[i] (x of x_type, the sum in fp32) for n elements: a residual connection, and
     * its gradient. */
    bp_status (*add)(bp_device *device, size_t n, const void *x, bp_eltype x_type, float *y);

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
    bp_device_options options; /* as opened (bp_device_open_ex), validated */
    void *impl;                /* the backend's own state */
    bp_device_stats stats;
    /* Called by bp_device_close before the backend lets go of the device: a data-parallel comm
     * whose collectives (an NCCL communicator) live on this device frees them here when the
     * device closes first. NULL when none. */
    void (*on_close)(void *ctx, bp_device *device);
    void *on_close_ctx;
};

extern const bp_backend_ops bp_cpu_ops;

/* What a backend module's entry point (core/module.h) returns: the CUDA backend is the module
 * libbackprop_cuda.so, entry bp_cuda_module_entry. */
typedef struct bp_backend_module {
    bp_module_header header;
    const bp_backend_ops *ops;
} bp_backend_module;

#ifdef __cplusplus
}
#endif

#endif
