/* Forward pass, loss and backward pass: the order of the ops; the devices do the math. */
#include <math.h>
#include <stdio.h>

#include "core/error.h"
#include "core/model_internal.h"
#include "core/tensor_internal.h"

/* Dropout streams: one per training forward and layer; init uses streams with the top bit. */
static uint64_t dropout_stream(uint64_t call, int layer) {
    return (call << 16) | (uint64_t)layer;
}

bp_status bp_model_forward_rows(bp_model *m, const float *x, int rows, bp_mode mode, uint64_t call,
                                int64_t row0) {
    const bp_backend_ops *ops = m->device->ops;
    bp_device *d = m->device;
    int training = mode == BP_MODE_TRAINING;
    m->trained_forward = 0;
    m->have_loss = 0;
    const float *in = x;
    bp_status st = BP_OK;
    for (int l = 0; l < m->n_layers && st == BP_OK; ++l) {
        bp_layer *L = &m->layers[l];
        st = ops->gemm(d, 0, 1, rows, L->out, L->in, 1.0f, in, L->in, m->params + L->w_off, L->in,
                       0.0f, L->z, L->out);
        if (st == BP_OK)
            st = ops->bias_act_forward(d, rows, L->out, m->params + L->b_off, L->z, L->a, L->act,
                                       m->leaky_slope);
        if (st == BP_OK && training && L->drop_threshold)
            st = ops->dropout(d, (size_t)rows * (size_t)L->out, L->a, L->a, m->seed,
                              dropout_stream(call, l), (uint64_t)row0 * (uint64_t)L->out,
                              L->drop_threshold, L->drop_scale);
        in = L->a;
    }
    if (st != BP_OK) return st;
    m->x = x;
    m->batch = rows;
    m->trained_forward = training;
    m->dropout_stream = call;
    m->dropout_row0 = row0;
    return BP_OK;
}

bp_status bp_model_forward(bp_model *model, const bp_tensor *x, bp_mode mode, bp_tensor *out) {
    const char *fn = "bp_model_forward";
    if (!model) return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: model is NULL", fn);
    if (mode != BP_MODE_TRAINING && mode != BP_MODE_INFERENCE)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: mode is %d, not a mode", fn, (int)mode);
    bp_status st =
        bp_check_tensor(fn, "x", x, model->device, BP_F32, model->widths[0], model->max_batch);
    if (st == BP_OK && out) {
        st = bp_check_tensor(fn, "out", out, model->device, BP_F32, model->widths[model->n_layers],
                             model->max_batch);
        if (st == BP_OK && out->rows != x->rows)
            st = bp_error(BP_ERR_SHAPE_MISMATCH, "%s: out has %lld rows, x has %lld", fn,
                          (long long)out->rows, (long long)x->rows);
    }
    if (st == BP_OK) {
        uint64_t call = mode == BP_MODE_TRAINING ? model->forward_calls++ : 0;
        st = bp_model_forward_rows(model, x->data, (int)x->rows, mode, call, 0);
    }
    if (st == BP_OK && out) {
        const bp_layer *last = &model->layers[model->n_layers - 1];
        st = model->device->ops->copy(model->device, out->data, last->a, out->bytes);
    }
    return st;
}

bp_status bp_check_loss_args(const char *fn, const bp_model *m, const bp_loss_config *loss,
                             const bp_tensor *target, int64_t rows) {
    if (!loss) return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: loss is NULL", fn);
    int classes = m->widths[m->n_layers];
    bp_status st = BP_OK;
    switch (loss->kind) {
    case BP_LOSS_CROSS_ENTROPY:
        if (!(loss->label_smoothing >= 0.0f && loss->label_smoothing <= 1.0f))
            return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: label_smoothing is %g, expected [0, 1]",
                            fn, (double)loss->label_smoothing);
        st = bp_check_tensor(fn, "target", target, m->device, BP_I32, 1, INT64_MAX);
        break;
    case BP_LOSS_MSE:
    case BP_LOSS_BCE_LOGITS:
        st = bp_check_tensor(fn, "target", target, m->device, BP_F32, classes, INT64_MAX);
        break;
    default:
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: loss kind %d is not a loss", fn,
                        (int)loss->kind);
    }
    if (st == BP_OK && target->rows != rows)
        st = bp_error(BP_ERR_SHAPE_MISMATCH, "%s: target has %lld rows, the batch has %lld", fn,
                      (long long)target->rows, (long long)rows);
    if (st == BP_OK && loss->kind == BP_LOSS_CROSS_ENTROPY) {
        int64_t bad = -1;
        st = m->device->ops->check_labels(m->device, (int)rows, target->data, classes, &bad);
        if (st == BP_OK && bad >= 0) {
            int32_t label = 0;
            m->device->ops->download(m->device, &label, (const int32_t *)target->data + bad,
                                     sizeof label);
            st = bp_error(BP_ERR_INVALID_ARGUMENT,
                          "%s: target row %lld holds class %d, outside [0, %d) (the model has "
                          "%d outputs)",
                          fn, (long long)bad, (int)label, classes, classes);
        }
    }
    return st;
}

bp_status bp_model_loss_rows(bp_model *m, const bp_loss_config *loss, const void *target,
                             float grad_scale, int accumulate) {
    const bp_backend_ops *ops = m->device->ops;
    bp_device *d = m->device;
    const bp_layer *last = &m->layers[m->n_layers - 1];
    int rows = m->batch, cols = last->out;
    bp_status st;
    if (loss->kind == BP_LOSS_CROSS_ENTROPY)
        st = ops->softmax_xent(d, rows, cols, last->a, target, loss->label_smoothing, grad_scale,
                               m->dout, m->row_loss);
    else if (loss->kind == BP_LOSS_MSE)
        st = ops->mse(d, rows, cols, last->a, target, grad_scale, m->dout, m->row_loss);
    else
        st = ops->bce_logits(d, rows, cols, last->a, target, grad_scale, m->dout, m->row_loss);
    if (st == BP_OK)
        st = ops->col_sum(d, rows, 1, m->row_loss, accumulate ? 1.0f : 0.0f,
                          m->scalars + BP_SCALAR_LOSS);
    m->have_loss = st == BP_OK;
    return st;
}

static double loss_denominator(const bp_loss_config *loss, int64_t rows, int cols) {
    return loss->kind == BP_LOSS_CROSS_ENTROPY ? (double)rows : (double)rows * cols;
}

bp_status bp_model_loss(bp_model *model, const bp_loss_config *loss, const bp_tensor *target,
                        float *value) {
    const char *fn = "bp_model_loss";
    if (!model) return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: model is NULL", fn);
    if (model->batch == 0)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: no forward pass has run on this model", fn);
    bp_status st = bp_check_loss_args(fn, model, loss, target, model->batch);
    if (st != BP_OK) return st;
    double denom = loss_denominator(loss, model->batch, model->widths[model->n_layers]);
    st = bp_model_loss_rows(model, loss, target->data, (float)(1.0 / denom), 0);
    if (st != BP_OK || !value) return st;
    float s[BP_SCALAR_COUNT];
    st = bp_model_read_scalars(model, s);
    if (st != BP_OK) return st;
    *value = (float)((double)s[BP_SCALAR_LOSS] / denom);
    if (!isfinite(*value))
        return bp_error(BP_ERR_NON_FINITE, "%s: the loss is %g (non-finite output or target)", fn,
                        (double)*value);
    return BP_OK;
}

/* dz of layer L from the gradient of its output: undo dropout, then the activation. */
static bp_status layer_dz(bp_model *m, const bp_layer *L, int l, const float *src, float *dz) {
    const bp_backend_ops *ops = m->device->ops;
    size_t n = (size_t)m->batch * (size_t)L->out;
    bp_status st = BP_OK;
    if (L->drop_threshold) {
        st = ops->dropout(m->device, n, src, dz, m->seed, dropout_stream(m->dropout_stream, l),
                          (uint64_t)m->dropout_row0 * (uint64_t)L->out, L->drop_threshold,
                          L->drop_scale);
        src = dz;
    }
    if (st == BP_OK && L->act != BP_ACT_IDENTITY)
        st = ops->act_backward(m->device, n, L->z, src, dz, L->act, m->leaky_slope);
    return st;
}

bp_status bp_model_backward_rows(bp_model *m, float *dx, int overwrite) {
    const bp_backend_ops *ops = m->device->ops;
    bp_device *d = m->device;
    int rows = m->batch;
    const float *src = m->dout; /* dLoss / d(output of layer l) */
    bp_status st = BP_OK;
    for (int l = m->n_layers - 1; l >= 0 && st == BP_OK; --l) {
        const bp_layer *L = &m->layers[l];
        float *dz = (float *)src;
        if (bp_layer_has_own_output(L)) {
            dz = src == m->dout ? m->dbuf[0] : (float *)src;
            st = layer_dz(m, L, l, src, dz);
        }
        const float *in = l > 0 ? m->layers[l - 1].a : m->x;
        float beta = overwrite ? 0.0f : 1.0f;
        if (st == BP_OK)
            st = ops->gemm(d, 1, 0, L->out, L->in, rows, 1.0f, dz, L->out, in, L->in, beta,
                           m->grads + L->w_off, L->in);
        if (st == BP_OK) st = ops->col_sum(d, rows, L->out, dz, beta, m->grads + L->b_off);
        float *next = l > 0 ? (dz == m->dbuf[0] ? m->dbuf[1] : m->dbuf[0]) : dx;
        if (st == BP_OK && next)
            st = ops->gemm(d, 0, 0, rows, L->in, L->out, 1.0f, dz, L->out, m->params + L->w_off,
                           L->in, 0.0f, next, L->in);
        src = next;
    }
    return st;
}

bp_status bp_model_backward(bp_model *model, bp_tensor *dx) {
    const char *fn = "bp_model_backward";
    if (!model) return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: model is NULL", fn);
    if (!model->trained_forward || !model->have_loss)
        return bp_error(BP_ERR_INVALID_ARGUMENT,
                        "%s: needs a training-mode bp_model_forward and then bp_model_loss first",
                        fn);
    if (dx) {
        bp_status st = bp_check_tensor(fn, "dx", dx, model->device, BP_F32, model->widths[0],
                                       model->max_batch);
        if (st != BP_OK) return st;
        if (dx->rows != model->batch)
            return bp_error(BP_ERR_SHAPE_MISMATCH, "%s: dx has %lld rows, the batch has %d", fn,
                            (long long)dx->rows, model->batch);
    }
    return bp_model_backward_rows(model, dx ? dx->data : NULL, 0);
}
