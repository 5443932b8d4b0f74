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

/* The input of layer l as stored: the caller's fp32 x for layer 0, else the layer below's
 * output (bf16 below a bf16 model's hidden layer). */
static const void *layer_input(const bp_model *m, int l, const float *x, bp_eltype *type) {
    *type = l > 0 ? m->layers[l - 1].type : BP_EL_F32;
    return l > 0 ? m->layers[l - 1].a : (const void *)x;
}

/* What layer l's GEMMs multiply (gemm_type): its normalized input, else its input. */
static const void *gemm_input(const bp_model *m, int l, const float *x) {
    if (m->layers[l].norm != BP_NORM_NONE) return m->layers[l].h;
    if (l > 0) return m->layers[l - 1].a;
    return m->x_lp ? m->x_lp : (const void *)x;
}

static bp_status norm_forward(bp_model *m, int l, const float *x, int rows) {
    const bp_layer *L = &m->layers[l];
    bp_eltype type;
    const void *in = layer_input(m, l, x, &type);
    const float *bias = L->norm == BP_NORM_LAYER ? m->params + L->nb_off : NULL;
    return m->device->ops->norm_forward(m->device, L->norm, rows, L->in, in, type,
                                        m->params + L->nw_off, bias, m->norm_eps, L->h,
                                        m->gemm_type, L->mean, L->rstd);
}

/* a += the layer's input: the residual, added in fp32 after dropout. */
static bp_status residual_add(bp_model *m, int l, const float *x, int rows, float *a) {
    bp_eltype type;
    const void *in = layer_input(m, l, x, &type);
    return m->device->ops->add(m->device, (size_t)rows * (size_t)m->layers[l].in, in, type, a);
}

/* Layer l of a forward on rows rows of x (the model's input). The three forms round at the
 * same points (docs/precision.md): fused, the GEMM's epilogue adds the bias and applies act in
 * fp32 and stores a; an fp32 layer adds them in place on the fp32 product; a bf16 layer makes z
 * and a from the fp32 product in dbuf[0], applying dropout and the residual before a is
 * rounded. A norm first makes the GEMM's operand h from the layer's input. */
static bp_status layer_forward(bp_model *m, int l, const float *x, int rows, int training,
                               uint64_t call, int64_t row0) {
    const bp_backend_ops *ops = m->device->ops;
    bp_device *d = m->device;
    bp_layer *L = &m->layers[l];
    bp_status st = L->norm != BP_NORM_NONE ? norm_forward(m, l, x, rows) : BP_OK;
    bp_gemm_desc g = bp_gemm_forward(m, l, rows, gemm_input(m, l, x));
    if (st == BP_OK) st = bp_model_gemm(m, &g, L->plan[BP_GEMM_FWD]);
    if (st != BP_OK || L->fused_fwd) return st;
    size_t n = (size_t)rows * (size_t)L->out;
    int drop = training && L->drop_threshold;
    const float *bias = m->params + L->b_off;
    if (L->type == BP_EL_F32) {
        st = ops->bias_act_forward(d, rows, L->out, bias, L->z, L->a, L->act, m->leaky_slope);
        if (st == BP_OK && drop)
            st = ops->dropout(d, n, L->a, L->a, m->seed, dropout_stream(call, l),
                              (uint64_t)row0 * (uint64_t)L->out, L->drop_threshold, L->drop_scale);
        if (st == BP_OK && L->residual) st = residual_add(m, l, x, rows, L->a);
        return st;
    }
    float *acc = m->dbuf[0];
    int via_acc = drop || L->residual;
    st = ops->bias_act_forward_ex(d, rows, L->out, bias, acc, L->z, L->type, via_acc ? acc : L->a,
                                  via_acc ? BP_EL_F32 : L->type, L->act, m->leaky_slope);
    if (st == BP_OK && drop)
        st = ops->dropout(d, n, acc, acc, m->seed, dropout_stream(call, l),
                          (uint64_t)row0 * (uint64_t)L->out, L->drop_threshold, L->drop_scale);
    if (st == BP_OK && L->residual) st = residual_add(m, l, x, rows, acc);
    if (st == BP_OK && via_acc) st = ops->cast(d, n, acc, BP_EL_F32, L->a, L->type);
    return st;
}

bp_status bp_model_forward_rows(bp_model *m, const float *x, int rows, bp_mode mode, uint64_t call,
                                int64_t row0) {
    int training = mode == BP_MODE_TRAINING;
    m->trained_forward = 0;
    m->have_loss = 0;
    m->head_done = 0;
    bp_status st = BP_OK;
    if (m->x_lp)
        st = m->device->ops->cast(m->device, (size_t)rows * (size_t)m->widths[0], x, BP_EL_F32,
                                  m->x_lp, BP_EL_BF16);
    for (int l = 0; l < m->n_layers && st == BP_OK; ++l)
        st = layer_forward(m, l, x, rows, training, call, row0);
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
        const bp_layer *last = &model->layers[model->n_layers - 1]; /* fp32 */
        st = model->device->ops->copy(model->device, out->data, last->a, out->bytes);
    }
    return st;
}

bp_status bp_check_loss_args(const char *fn, const bp_model *m, const bp_loss_config *loss,
                             const bp_tensor *target, int64_t rows, int labels) {
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
    if (st == BP_OK && labels && loss->kind == BP_LOSS_CROSS_ENTROPY) {
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
    /* The rows classified right, from the logits the loss just used: row_loss is free again
     * once its sum is queued (the device runs its work in order). */
    if (st == BP_OK && loss->kind == BP_LOSS_CROSS_ENTROPY)
        st = ops->class_match(d, rows, cols, last->a, target, m->row_loss);
    if (st == BP_OK && loss->kind == BP_LOSS_CROSS_ENTROPY)
        st = ops->col_sum(d, rows, 1, m->row_loss, accumulate ? 1.0f : 0.0f,
                          m->scalars + BP_SCALAR_MATCH);
    m->have_loss = st == BP_OK;
    m->head_done = 0;
    return st;
}

int bp_model_fused_head(const bp_model *m) {
    const bp_layer *last = &m->layers[m->n_layers - 1];
    return m->device->ops->loss_head && !bp_layer_has_own_output(last) && !bp_layer_is_block(last);
}

bp_status bp_model_loss_head(bp_model *m, const bp_loss_config *loss, const void *target,
                             float grad_scale, int accumulate, int64_t first_row) {
    const bp_layer *last = &m->layers[m->n_layers - 1];
    /* bf16 mode: dz_lp[0], the buffer the backward's first layer_grad_in would cast into */
    bp_loss_head_args a = {loss->kind,
                           m->batch,
                           last->out,
                           last->a,
                           target,
                           loss->label_smoothing,
                           grad_scale,
                           m->dout,
                           m->gemm_type == BP_EL_BF16 ? m->dz_lp[0] : NULL,
                           m->grads + last->b_off,
                           accumulate,
                           first_row,
                           m->state,
                           m->row_loss};
    bp_status st = m->device->ops->loss_head(m->device, &a);
    m->have_loss = m->head_done = st == BP_OK;
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
    bp_status st = bp_check_loss_args(fn, model, loss, target, model->batch, 1);
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

/* dz of layer L from the fp32 gradient of its output: undo dropout, then the activation. */
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
    if (st == BP_OK && L->act != BP_ACT_IDENTITY) {
        if (L->type == BP_EL_F32)
            st = ops->act_backward(m->device, n, L->z, src, dz, L->act, m->leaky_slope);
        else
            st = ops->act_backward_ex(m->device, n, L->z, L->type, src, dz, L->act, m->leaky_slope);
    }
    return st;
}

static float *other_dbuf(const bp_model *m, const void *p) {
    return p == m->dbuf[0] ? m->dbuf[1] : m->dbuf[0];
}

/* Where a backward pass stands between two layers: the gradient entering the next layer's
 * GEMMs (in gemm_type) when the layer above's epilogue made it, else the fp32 gradient of its
 * output. */
typedef struct grad_state {
    const float *src; /* fp32 dL/d(output of the layer), when dz is NULL */
    const void *dz;   /* dL/dz in gemm_type, bias gradient done, from a fused epilogue */
    int lp;           /* bf16 mode: which dz_lp buffer was written last */
} grad_state;

/* dz of layer l in gemm_type, and its bias gradient, from the fp32 gradient of its output. The
 * bias gradient is summed from the fp32 dz; in bf16 mode dz is rounded once, after that. */
static bp_status layer_grad_in(bp_model *m, int l, grad_state *gs, float beta) {
    const bp_layer *L = &m->layers[l];
    float *dz = (float *)gs->src;
    bp_status st = BP_OK;
    if (bp_layer_has_own_output(L)) {
        dz = gs->src == m->dout ? m->dbuf[0] : (float *)gs->src;
        st = layer_dz(m, L, l, gs->src, dz);
    }
    if (st == BP_OK)
        st = m->device->ops->col_sum(m->device, m->batch, L->out, dz, beta, m->grads + L->b_off);
    gs->dz = dz;
    if (st == BP_OK && m->gemm_type == BP_EL_BF16) {
        gs->lp ^= 1;
        st = m->device->ops->cast(m->device, (size_t)m->batch * (size_t)L->out, dz, BP_EL_F32,
                                  m->dz_lp[gs->lp], BP_EL_BF16);
        gs->dz = m->dz_lp[gs->lp];
    }
    return st;
}

/* The dX GEMM of layer l (l > 0): into the fp32 gradient of the layer below's output, or, when
 * that layer is fused backward, straight into its dz and bias gradient. */
static bp_status layer_dx(bp_model *m, int l, grad_state *gs, int overwrite) {
    const bp_layer *below = &m->layers[l - 1];
    void *out;
    if (!below->fused_bwd)
        out = m->gemm_type == BP_EL_BF16 ? m->dbuf[0] : other_dbuf(m, gs->dz);
    else if (m->gemm_type == BP_EL_BF16)
        out = m->dz_lp[gs->lp ^ 1];
    else
        out = other_dbuf(m, gs->dz);
    bp_gemm_desc g = bp_gemm_dx(m, l, m->batch, gs->dz, out, overwrite);
    bp_status st = bp_model_gemm(m, &g, m->layers[l].plan[BP_GEMM_DX]);
    if (!below->fused_bwd) {
        gs->src = out;
        gs->dz = NULL;
        return st;
    }
    if (m->gemm_type == BP_EL_BF16) gs->lp ^= 1;
    gs->dz = out;
    /* The epilogue writes the bias gradient; accumulating adds it (a one-row column sum). */
    if (st == BP_OK && !overwrite)
        st = m->device->ops->col_sum(m->device, 1, below->out, m->bgrad, 1.0f,
                                     m->grads + below->b_off);
    return st;
}

/* One of the three fp32 gradient buffers of a model with blocks that is neither a nor b. */
static float *spare_dbuf(const bp_model *m, const void *a, const void *b) {
    for (int k = 0; k < 2; ++k)
        if (m->dbuf[k] != a && m->dbuf[k] != b) return m->dbuf[k];
    return m->dbuf[2];
}

/* The gradient through a block layer's norm: into a spare buffer, from g. */
static bp_status norm_backward(bp_model *m, int l, const float *g, float *out, float beta) {
    const bp_layer *L = &m->layers[l];
    bp_eltype type;
    const void *in = layer_input(m, l, m->x, &type);
    float *dbias = L->norm == BP_NORM_LAYER ? m->grads + L->nb_off : NULL;
    return m->device->ops->norm_backward(m->device, L->norm, m->batch, L->in, in, type,
                                         m->params + L->nw_off, L->mean, L->rstd, g, out, beta,
                                         m->grads + L->nw_off, dbias);
}

/* The backward of a block layer (norm, residual, or both), unfused: S, the gradient of its
 * output, stays whole until the residual adds it to the gradient of its input; the dz, the
 * dX product and the norm's gradient each go to a buffer the step still needs none of. */
static bp_status block_backward(bp_model *m, int l, grad_state *gs, float *dx, int overwrite) {
    const bp_backend_ops *ops = m->device->ops;
    bp_device *d = m->device;
    const bp_layer *L = &m->layers[l];
    int rows = m->batch;
    float beta = overwrite ? 0.0f : 1.0f;
    const float *S = gs->src;
    float *D = (float *)S;
    bp_status st = BP_OK;
    if (L->act != BP_ACT_IDENTITY || L->drop_threshold) {
        D = spare_dbuf(m, S, NULL);
        st = layer_dz(m, L, l, S, D);
    }
    if (st == BP_OK) st = ops->col_sum(d, rows, L->out, D, beta, m->grads + L->b_off);
    const void *dz = D;
    if (st == BP_OK && m->gemm_type == BP_EL_BF16) {
        gs->lp ^= 1;
        st =
            ops->cast(d, (size_t)rows * (size_t)L->out, D, BP_EL_F32, m->dz_lp[gs->lp], BP_EL_BF16);
        dz = m->dz_lp[gs->lp];
    }
    bp_gemm_desc g = bp_gemm_dw(m, l, rows, dz, gemm_input(m, l, m->x), beta);
    if (st == BP_OK) st = bp_model_gemm(m, &g, L->plan[BP_GEMM_DW]);
    /* layer 0's norm still needs the gradient of h for its own weight and bias */
    if (st != BP_OK || (l == 0 && !dx && L->norm == BP_NORM_NONE)) return st;
    float *G = spare_dbuf(m, S, D), *E = G;
    g = bp_gemm_dx(m, l, rows, dz, G, 1);
    st = bp_model_gemm(m, &g, L->plan[BP_GEMM_DX]);
    if (st == BP_OK && L->norm != BP_NORM_NONE) {
        E = spare_dbuf(m, S, G);
        st = norm_backward(m, l, G, E, beta);
    }
    size_t n_in = (size_t)rows * (size_t)L->in;
    if (st == BP_OK && L->residual) st = ops->add(d, n_in, S, BP_EL_F32, E);
    if (st == BP_OK && l == 0 && dx) st = ops->copy(d, dx, E, n_in * sizeof(float));
    gs->src = E;
    gs->dz = NULL;
    return st;
}

bp_status bp_model_backward_rows(bp_model *m, float *dx, int overwrite) {
    int rows = m->batch;
    float beta = overwrite ? 0.0f : 1.0f;
    grad_state gs = {m->dout, NULL, 1};
    if (m->head_done) { /* as layer_grad_in of the last layer would leave it */
        gs.dz = m->gemm_type == BP_EL_BF16 ? m->dz_lp[0] : (const void *)m->dout;
        gs.lp = 0;
    }
    bp_status st = BP_OK;
    for (int l = m->n_layers - 1; l >= 0 && st == BP_OK; --l) {
        const bp_layer *L = &m->layers[l];
        if (bp_layer_is_block(L)) {
            st = block_backward(m, l, &gs, dx, overwrite);
            continue;
        }
        if (!gs.dz) st = layer_grad_in(m, l, &gs, beta);
        if (st == BP_OK) {
            bp_gemm_desc g = bp_gemm_dw(m, l, rows, gs.dz, gemm_input(m, l, m->x), beta);
            st = bp_model_gemm(m, &g, L->plan[BP_GEMM_DW]);
        }
        if (st == BP_OK && l > 0) {
            st = layer_dx(m, l, &gs, overwrite);
        } else if (st == BP_OK && dx) {
            bp_gemm_desc g = bp_gemm_dx(m, 0, rows, gs.dz, dx, overwrite);
            st = bp_model_gemm(m, &g, L->plan[BP_GEMM_DX]);
        }
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
    /* after a training step's fused head: its dz again from dout, its bias gradient added */
    model->head_done = 0;
    return bp_model_backward_rows(model, dx ? dx->data : NULL, 0);
}
