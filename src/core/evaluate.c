/* bp_evaluate: a model over a whole dataset, a batch at a time, with the training loss op. */
#include "backprop/evaluate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/device_internal.h"
#include "core/error.h"
#include "core/model_internal.h"

static const char *const fn = "bp_evaluate";

static bp_status check_labels(const bp_dataset *d, int classes) {
    const int32_t *y = bp_dataset_targets_data(d);
    for (int64_t i = 0; i < bp_dataset_size(d); ++i)
        if (y[i] < 0 || y[i] >= classes)
            return bp_error(BP_ERR_INVALID_ARGUMENT,
                            "%s: row %lld of the data holds class %d, outside [0, %d) (the model "
                            "has %d outputs)",
                            fn, (long long)i, (int)y[i], classes, classes);
    return BP_OK;
}

/* The loss fits the targets: class labels for cross-entropy, values as wide as the output for
 * MSE and BCE. */
static bp_status check_targets(const bp_model *m, const bp_dataset *d, const bp_loss_config *l) {
    int k = m->widths[m->n_layers];
    bp_target_kind kind = bp_dataset_target_kind(d);
    if (kind == BP_TARGET_NONE)
        return bp_error(BP_ERR_INVALID_ARGUMENT,
                        "%s: the data has no targets to evaluate against (bp_model_predict "
                        "takes features alone)",
                        fn);
    if (l->kind == BP_LOSS_CROSS_ENTROPY) {
        if (!(l->label_smoothing >= 0.0f && l->label_smoothing <= 1.0f))
            return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: label_smoothing is %g, expected [0, 1]",
                            fn, (double)l->label_smoothing);
        if (kind != BP_TARGET_CLASS)
            return bp_error(BP_ERR_INVALID_ARGUMENT,
                            "%s: cross-entropy needs class targets; the data holds values (use "
                            "MSE or BCE)",
                            fn);
        return check_labels(d, k);
    }
    if (l->kind != BP_LOSS_MSE && l->kind != BP_LOSS_BCE_LOGITS)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: loss kind %d is not a loss", fn,
                        (int)l->kind);
    if (kind != BP_TARGET_VALUES)
        return bp_error(BP_ERR_INVALID_ARGUMENT,
                        "%s: %s needs value targets; the data holds class labels (use "
                        "cross-entropy)",
                        fn, bp_loss_kind_name(l->kind));
    if (bp_dataset_target_width(d) != k)
        return bp_error(BP_ERR_SHAPE_MISMATCH,
                        "%s: the data has %d target columns, the model %d outputs", fn,
                        bp_dataset_target_width(d), k);
    return BP_OK;
}

static bp_status check_args(const bp_model *m, const bp_dataset *d, const bp_loss_config *l,
                            int batch, const bp_eval_result *r) {
    if (!m || !d || !l || !r)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn,
                        !m   ? "model"
                        : !d ? "data"
                        : !l ? "loss"
                             : "result");
    if (batch < 0 || batch > m->max_batch)
        return bp_error(BP_ERR_INVALID_ARGUMENT,
                        "%s: batch is %d, expected 0 (the model's max_batch) or 1..%d", fn, batch,
                        m->max_batch);
    if (bp_dataset_features(d) != m->widths[0])
        return bp_error(BP_ERR_SHAPE_MISMATCH, "%s: the data has %d features, the model %d inputs",
                        fn, bp_dataset_features(d), m->widths[0]);
    return check_targets(m, d, l);
}

/* What one evaluation holds: the device blocks and the host outputs of a batch. */
typedef struct eval_run {
    bp_model *m;
    const bp_dataset *d;
    const bp_loss_config *loss;
    int block, in, k, width; /* width: targets per row (1 for classes) */
    void *dev_x, *dev_t;
    float *z; /* the batch's outputs on the host: BCE's accuracy, or the caller's outputs */
    double loss_sum;
    int64_t correct;
} eval_run;

static size_t x_bytes(const eval_run *e) {
    return (size_t)e->block * (size_t)e->in * sizeof(float);
}

static size_t t_bytes(const eval_run *e) {
    return (size_t)e->block * (size_t)e->width * 4; /* int32 labels or float values */
}

/* BCE: outputs on the right side of 0 against rows [r0, r0 + rows) of the targets. */
static int64_t bce_right(const eval_run *e, int64_t r0, int rows) {
    const float *t = (const float *)bp_dataset_targets_data(e->d) + r0 * e->k;
    int64_t right = 0;
    for (size_t i = 0; i < (size_t)rows * (size_t)e->k; ++i)
        right += (e->z[i] > 0.0f) == (t[i] > 0.5f);
    return right;
}

/* Rows [r0, r0 + rows): forward, the loss op, and what it counted. out: where the outputs go
 * on the host (NULL when nobody needs them). */
static bp_status run_batch(eval_run *e, int64_t r0, int rows, float *out) {
    bp_model *m = e->m;
    const bp_backend_ops *ops = m->device->ops;
    const float *x = bp_dataset_features_data(e->d) + r0 * e->in;
    const char *t = (const char *)bp_dataset_targets_data(e->d) + (size_t)r0 * e->width * 4;
    bp_status st = ops->upload(m->device, e->dev_x, x, (size_t)rows * e->in * sizeof(float));
    if (st == BP_OK) st = ops->upload(m->device, e->dev_t, t, (size_t)rows * e->width * 4);
    if (st == BP_OK) st = bp_model_forward_rows(m, e->dev_x, rows, BP_MODE_INFERENCE, 0, 0);
    if (st == BP_OK) st = bp_model_loss_rows(m, e->loss, e->dev_t, 1.0f, 0);
    if (st == BP_OK && out)
        st = ops->download(m->device, out, m->layers[m->n_layers - 1].a,
                           (size_t)rows * e->k * sizeof(float));
    float s[BP_SCALAR_COUNT];
    if (st == BP_OK) st = bp_model_read_scalars(m, s);
    if (st != BP_OK) return st;
    e->loss_sum += (double)s[BP_SCALAR_LOSS];
    if (e->loss->kind == BP_LOSS_CROSS_ENTROPY) e->correct += (int64_t)s[BP_SCALAR_MATCH];
    if (e->loss->kind == BP_LOSS_BCE_LOGITS) e->correct += bce_right(e, r0, rows);
    return BP_OK;
}

static bp_status run_all(eval_run *e, float *outputs) {
    int64_t n = bp_dataset_size(e->d);
    int need_z = !outputs && e->loss->kind == BP_LOSS_BCE_LOGITS;
    bp_status st = bp_dev_alloc(e->m->device, x_bytes(e), fn, &e->dev_x);
    if (st == BP_OK) st = bp_dev_alloc(e->m->device, t_bytes(e), fn, &e->dev_t);
    if (st == BP_OK && need_z && !(e->z = malloc((size_t)e->block * e->k * sizeof(float))))
        st = bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no host memory for %d rows of outputs", fn,
                      e->block);
    for (int64_t r0 = 0; st == BP_OK && r0 < n; r0 += e->block) {
        int rows = n - r0 < e->block ? (int)(n - r0) : e->block;
        float *out = outputs ? outputs + r0 * e->k : e->z;
        if (outputs) e->z = out;
        st = run_batch(e, r0, rows, out);
    }
    if (outputs) e->z = NULL;
    return st;
}

static void fill_result(const eval_run *e, bp_eval_result *r) {
    int64_t n = bp_dataset_size(e->d);
    int ce = e->loss->kind == BP_LOSS_CROSS_ENTROPY;
    memset(r, 0, sizeof *r);
    r->rows = n;
    r->loss = e->loss_sum / (ce ? (double)n : (double)n * e->k);
    r->correct = e->correct;
    r->scored = ce ? n : e->loss->kind == BP_LOSS_BCE_LOGITS ? n * e->k : 0;
    r->accuracy = r->scored ? (double)r->correct / (double)r->scored : NAN;
}

bp_status bp_evaluate(bp_model *model, const bp_dataset *data, const bp_loss_config *loss,
                      int batch, bp_eval_result *result, float *outputs) {
    bp_status st = check_args(model, data, loss, batch, result);
    if (st != BP_OK) return st;
    eval_run e;
    memset(&e, 0, sizeof e);
    e.m = model;
    e.d = data;
    e.loss = loss;
    e.in = model->widths[0];
    e.k = model->widths[model->n_layers];
    e.width = bp_dataset_target_kind(data) == BP_TARGET_CLASS ? 1 : e.k;
    e.block = batch ? batch : model->max_batch;
    if (bp_dataset_size(data) < e.block) e.block = (int)bp_dataset_size(data);
    st = run_all(&e, outputs);
    model->batch = 0; /* the workspace holds no forward a loss or backward could use */
    bp_dev_free(model->device, e.dev_x, x_bytes(&e));
    bp_dev_free(model->device, e.dev_t, t_bytes(&e));
    free(e.z);
    if (st == BP_OK) fill_result(&e, result);
    return st;
}
