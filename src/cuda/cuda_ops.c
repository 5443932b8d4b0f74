/* The kernel-backed entries of the table: each makes the device current, skips empty work (a
 * launch of zero blocks is an error) and queues its launcher from kernels/ on the device's
 * stream, naming the kernel and its sizes if the launch fails. Only check_labels waits. */
#include "cuda/cuda_internal.h"
#include "cuda/launch.h"

static cudaStream_t stream_of(const bp_device *device) {
    return bp_cuda_impl_of(device)->stream;
}

bp_status bp_cuda_fill(bp_device *device, float *dst, float value, size_t n) {
    if (n == 0) return BP_OK;
    BP_CUDA_ENTER(device);
    BP_CUDA_TRY(device, bp_cu_fill(stream_of(device), dst, value, n), "fill kernel (n=%zu)", n);
    return BP_OK;
}

bp_status bp_cuda_bias_act_forward(bp_device *device, int rows, int cols, const float *bias,
                                   float *z, float *a, bp_activation act, float slope) {
    if (rows <= 0 || cols <= 0) return BP_OK;
    if (!bias && act == BP_ACT_IDENTITY && a == z) return BP_OK; /* nothing to do */
    BP_CUDA_ENTER(device);
    BP_CUDA_TRY(device,
                bp_cu_bias_act_forward(stream_of(device), rows, cols, bias, z, a, act, slope),
                "bias_act_forward kernel (rows=%d, cols=%d, activation %d)", rows, cols, (int)act);
    return BP_OK;
}

bp_status bp_cuda_act_backward(bp_device *device, size_t n, const float *z, const float *da,
                               float *dz, bp_activation act, float slope) {
    if (n == 0) return BP_OK;
    BP_CUDA_ENTER(device);
    BP_CUDA_TRY(device, bp_cu_act_backward(stream_of(device), n, z, da, dz, act, slope),
                "act_backward kernel (n=%zu, activation %d)", n, (int)act);
    return BP_OK;
}

bp_status bp_cuda_col_sum(bp_device *device, int rows, int cols, const float *x, float beta,
                          float *out) {
    if (cols <= 0) return BP_OK;
    if (rows < 0) rows = 0; /* no rows: out = beta * out, still one pass over the columns */
    BP_CUDA_ENTER(device);
    BP_CUDA_TRY(device, bp_cu_col_sum(stream_of(device), rows, cols, x, beta, out),
                "col_sum kernel (rows=%d, cols=%d)", rows, cols);
    return BP_OK;
}

bp_status bp_cuda_softmax(bp_device *device, int rows, int cols, const float *x, float *y) {
    if (rows <= 0 || cols <= 0) return BP_OK;
    BP_CUDA_ENTER(device);
    BP_CUDA_TRY(device, bp_cu_softmax(stream_of(device), rows, cols, x, y),
                "softmax kernel (rows=%d, cols=%d)", rows, cols);
    return BP_OK;
}

bp_status bp_cuda_softmax_xent(bp_device *device, int rows, int cols, const float *logits,
                               const int32_t *labels, float smoothing, float grad_scale,
                               float *grad, float *row_loss) {
    if (rows <= 0 || cols <= 0) return BP_OK;
    BP_CUDA_ENTER(device);
    BP_CUDA_TRY(device,
                bp_cu_softmax_xent(stream_of(device), rows, cols, logits, labels, smoothing,
                                   grad_scale, grad, row_loss),
                "softmax_xent kernel (rows=%d, classes=%d)", rows, cols);
    return BP_OK;
}

bp_status bp_cuda_class_match(bp_device *device, int rows, int cols, const float *logits,
                              const int32_t *labels, float *match) {
    if (rows <= 0 || cols <= 0) return BP_OK;
    BP_CUDA_ENTER(device);
    BP_CUDA_TRY(device, bp_cu_class_match(stream_of(device), rows, cols, logits, labels, match),
                "class_match kernel (rows=%d, classes=%d)", rows, cols);
    return BP_OK;
}

bp_status bp_cuda_mse(bp_device *device, int rows, int cols, const float *pred, const float *target,
                      float grad_scale, float *grad, float *row_loss) {
    if (rows <= 0 || cols <= 0) return BP_OK;
    BP_CUDA_ENTER(device);
    BP_CUDA_TRY(device,
                bp_cu_mse(stream_of(device), rows, cols, pred, target, grad_scale, grad, row_loss),
                "mse kernel (rows=%d, cols=%d)", rows, cols);
    return BP_OK;
}

bp_status bp_cuda_bce_logits(bp_device *device, int rows, int cols, const float *logits,
                             const float *target, float grad_scale, float *grad, float *row_loss) {
    if (rows <= 0 || cols <= 0) return BP_OK;
    BP_CUDA_ENTER(device);
    BP_CUDA_TRY(
        device,
        bp_cu_bce_logits(stream_of(device), rows, cols, logits, target, grad_scale, grad, row_loss),
        "bce_logits kernel (rows=%d, cols=%d)", rows, cols);
    return BP_OK;
}

bp_status bp_cuda_loss_head(bp_device *device, const bp_loss_head_args *a) {
    if (a->rows <= 0 || a->cols <= 0) return BP_OK;
    BP_CUDA_ENTER(device);
    BP_CUDA_TRY(device, bp_cu_loss_head(stream_of(device), a),
                "loss_head kernels (loss %d, rows=%d, cols=%d)", (int)a->kind, a->rows, a->cols);
    return BP_OK;
}

/* A scan on the device, then an 8-byte read back into pinned memory (this entry waits). */
bp_status bp_cuda_check_labels(bp_device *device, int rows, const int32_t *labels, int classes,
                               int64_t *bad_index) {
    *bad_index = -1;
    if (rows <= 0) return BP_OK;
    BP_CUDA_ENTER(device);
    bp_cuda_impl *impl = bp_cuda_impl_of(device);
    int64_t *first = (int64_t *)impl->scratch + BP_CU_REDUCE_BLOCKS;
    BP_CUDA_TRY(device,
                bp_cu_check_labels(impl->stream, rows, labels, classes, impl->scratch, first),
                "check_labels kernels (rows=%d, classes=%d)", rows, classes);
    bp_cu_note_launch();
    bp_cu_note_wait();
    BP_CUDA_TRY(device,
                cudaMemcpyAsync(impl->host_result, first, sizeof *first, cudaMemcpyDeviceToHost,
                                impl->stream),
                "check_labels: cudaMemcpyAsync(device to host, %zu bytes)", sizeof *first);
    BP_CUDA_TRY(device, cudaStreamSynchronize(impl->stream), "check_labels: cudaStreamSynchronize");
    *bad_index = *impl->host_result == INT64_MAX ? -1 : *impl->host_result;
    return BP_OK;
}

/* The same scan into the step's state, without the read back. rows > 0 (a step has rows). */
bp_status bp_cuda_check_labels_into(bp_device *device, int rows, const int32_t *labels, int classes,
                                    bp_step_state *state) {
    BP_CUDA_ENTER(device);
    bp_cuda_impl *impl = bp_cuda_impl_of(device);
    BP_CUDA_TRY(
        device,
        bp_cu_check_labels(impl->stream, rows, labels, classes, impl->scratch, &state->bad_row),
        "check_labels kernels (rows=%d, classes=%d)", rows, classes);
    return BP_OK;
}

bp_status bp_cuda_step_decide(bp_device *device, bp_step_state *state, float clip_norm) {
    BP_CUDA_ENTER(device);
    BP_CUDA_TRY(device, bp_cu_step_decide(stream_of(device), state, clip_norm),
                "step_decide kernel (clip_norm %g)", (double)clip_norm);
    return BP_OK;
}

bp_status bp_cuda_norm_decide(bp_device *device, size_t n, const float *grads, bp_step_state *state,
                              float clip_norm) {
    BP_CUDA_ENTER(device);
    bp_cuda_impl *impl = bp_cuda_impl_of(device);
    BP_CUDA_TRY(device, bp_cu_norm_decide(impl->stream, n, grads, impl->scratch, state, clip_norm),
                "norm_decide kernels (n=%zu, clip_norm %g)", n, (double)clip_norm);
    return BP_OK;
}

/* n = 0 still launches (the grid is fixed), so *out becomes 0. */
static bp_status reduce(bp_device *device, size_t n, const float *x, int squares, float *out) {
    BP_CUDA_ENTER(device);
    bp_cuda_impl *impl = bp_cuda_impl_of(device);
    BP_CUDA_TRY(device, bp_cu_sum(impl->stream, n, x, squares, impl->scratch, out),
                "%s kernels (n=%zu)", squares ? "sum_squares" : "sum", n);
    return BP_OK;
}

bp_status bp_cuda_sum(bp_device *device, size_t n, const float *x, float *out) {
    return reduce(device, n, x, 0, out);
}

bp_status bp_cuda_sum_squares(bp_device *device, size_t n, const float *x, float *out) {
    return reduce(device, n, x, 1, out);
}

bp_status bp_cuda_dropout(bp_device *device, size_t n, const float *x, float *y, uint64_t seed,
                          uint64_t stream, uint64_t first, uint32_t threshold, float scale) {
    if (n == 0) return BP_OK;
    BP_CUDA_ENTER(device);
    BP_CUDA_TRY(device,
                bp_cu_dropout(stream_of(device), n, x, y, seed, stream, first, threshold, scale),
                "dropout kernel (n=%zu, first=%llu)", n, (unsigned long long)first);
    return BP_OK;
}

static bp_status check_update(const bp_update_args *args) {
    if (!args->param || !args->grad)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "update: %s is NULL",
                        args->param ? "grad" : "param");
    int adam = args->kind == BP_OPTIM_ADAM || args->kind == BP_OPTIM_ADAMW;
    if (!adam && args->kind != BP_OPTIM_SGD)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "update: unknown optimizer kind %d",
                        (int)args->kind);
    if (adam && (!args->m || !args->v))
        return bp_error(BP_ERR_INVALID_ARGUMENT, "update: Adam needs both moment buffers");
    if (!adam && args->momentum != 0.0f && !args->m)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "update: SGD with momentum needs its buffer");
    return BP_OK;
}

bp_status bp_cuda_update(bp_device *device, const bp_update_args *args) {
    bp_status st = check_update(args);
    if (st != BP_OK || args->n == 0) return st;
    BP_CUDA_ENTER(device);
    BP_CUDA_TRY(device, bp_cu_update(stream_of(device), args),
                "update kernel (optimizer %d, n=%zu)", (int)args->kind, args->n);
    return BP_OK;
}

/* ---- the tf32 and bf16 modes ---------------------------------------------------------------- */

static const char *eltype_name(bp_eltype type) {
    return type == BP_EL_BF16 ? "bf16" : "fp32";
}

bp_status bp_cuda_cast(bp_device *device, size_t n, const void *src, bp_eltype src_type, void *dst,
                       bp_eltype dst_type) {
    if (n == 0) return BP_OK;
    BP_CUDA_ENTER(device);
    BP_CUDA_TRY(device, bp_cu_cast(stream_of(device), n, src, src_type, dst, dst_type),
                "cast kernel (n=%zu, %s to %s)", n, eltype_name(src_type), eltype_name(dst_type));
    return BP_OK;
}

bp_status bp_cuda_bias_act_forward_ex(bp_device *device, int rows, int cols, const float *bias,
                                      const float *acc, void *z, bp_eltype z_type, void *a,
                                      bp_eltype a_type, bp_activation act, float slope) {
    if (rows <= 0 || cols <= 0) return BP_OK;
    BP_CUDA_ENTER(device);
    BP_CUDA_TRY(device,
                bp_cu_bias_act_forward_ex(stream_of(device), rows, cols, bias, acc, z, z_type, a,
                                          a_type, act, slope),
                "bias_act_forward_ex kernel (rows=%d, cols=%d, activation %d, z %s, a %s)", rows,
                cols, (int)act, eltype_name(z_type), eltype_name(a_type));
    return BP_OK;
}

bp_status bp_cuda_act_backward_ex(bp_device *device, size_t n, const void *z, bp_eltype z_type,
                                  const float *da, float *dz, bp_activation act, float slope) {
    if (n == 0) return BP_OK;
    BP_CUDA_ENTER(device);
    BP_CUDA_TRY(device, bp_cu_act_backward_ex(stream_of(device), n, z, z_type, da, dz, act, slope),
                "act_backward_ex kernel (n=%zu, activation %d, z %s)", n, (int)act,
                eltype_name(z_type));
    return BP_OK;
}

bp_status bp_cuda_norm_forward(bp_device *device, bp_norm kind, int rows, int cols, const void *x,
                               bp_eltype x_type, const float *weight, const float *bias, float eps,
                               void *y, bp_eltype y_type, float *mean, float *rstd) {
    if (rows <= 0 || cols <= 0) return BP_OK;
    BP_CUDA_ENTER(device);
    BP_CUDA_TRY(device,
                bp_cu_norm_forward(stream_of(device), kind, rows, cols, x, x_type, weight, bias,
                                   eps, y, y_type, mean, rstd),
                "norm_forward kernel (%s, rows=%d, cols=%d, x %s, y %s)",
                kind == BP_NORM_LAYER ? "layernorm" : "rmsnorm", rows, cols, eltype_name(x_type),
                eltype_name(y_type));
    return BP_OK;
}

bp_status bp_cuda_norm_backward(bp_device *device, bp_norm kind, int rows, int cols, const void *x,
                                bp_eltype x_type, const float *weight, const float *mean,
                                const float *rstd, const float *dy, float *dx, float beta,
                                float *dweight, float *dbias) {
    if (rows <= 0 || cols <= 0) return BP_OK;
    BP_CUDA_ENTER(device);
    BP_CUDA_TRY(device,
                bp_cu_norm_backward(stream_of(device), kind, rows, cols, x, x_type, weight, mean,
                                    rstd, dy, dx, beta, dweight, dbias),
                "norm_backward kernels (%s, rows=%d, cols=%d, x %s)",
                kind == BP_NORM_LAYER ? "layernorm" : "rmsnorm", rows, cols, eltype_name(x_type));
    return BP_OK;
}

bp_status bp_cuda_add(bp_device *device, size_t n, const void *x, bp_eltype x_type, float *y) {
    if (n == 0) return BP_OK;
    BP_CUDA_ENTER(device);
    BP_CUDA_TRY(device, bp_cu_add(stream_of(device), n, x, x_type, y), "add kernel (n=%zu, x %s)",
                n, eltype_name(x_type));
    return BP_OK;
}
