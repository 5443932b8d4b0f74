/* bp_model_predict: host rows in, logits, probabilities or classes out, a block at a time. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/device_internal.h"
#include "core/error.h"
#include "core/model_internal.h"

static const char *const fn = "bp_model_predict";

static bp_status check_args(const bp_model *m, const float *x, int64_t rows,
                            bp_predict_output output, const void *out) {
    if (!m) return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: model is NULL", fn);
    if (rows < 0)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: rows is %lld, expected >= 0", fn,
                        (long long)rows);
    if ((unsigned)output >= BP_PREDICT_COUNT_)
        return bp_error(BP_ERR_INVALID_ARGUMENT,
                        "%s: output is %d; expected BP_PREDICT_LOGITS, _SOFTMAX, _SIGMOID or "
                        "_CLASS",
                        fn, (int)output);
    if (rows > 0 && (!x || !out))
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn, x ? "out" : "x");
    return BP_OK;
}

/* The index of the largest of z[0..k): NaN first, then the first of equal maxima. */
static int32_t argmax(const float *z, int k) {
    int32_t best = 0;
    for (int j = 0; j < k; ++j) {
        if (isnan(z[j])) return j;
        if (z[j] > z[best]) best = j;
    }
    return best;
}

static void softmax_row(float *z, int k) {
    double max = -INFINITY, sum = 0.0;
    for (int j = 0; j < k; ++j)
        if (z[j] > max) max = z[j];
    for (int j = 0; j < k; ++j)
        sum += exp((double)z[j] - max);
    for (int j = 0; j < k; ++j)
        z[j] = (float)(exp((double)z[j] - max) / sum);
}

/* Turns one block of downloaded outputs z [rows, k] into what output asks for, in place or
 * into the int32 classes. */
static void finish_block(float *z, int64_t rows, int k, bp_predict_output output,
                         int32_t *classes) {
    for (int64_t i = 0; i < rows; ++i) {
        float *row = z + i * k;
        if (output == BP_PREDICT_CLASS)
            classes[i] = argmax(row, k);
        else if (output == BP_PREDICT_SOFTMAX)
            softmax_row(row, k);
        else if (output == BP_PREDICT_SIGMOID)
            for (int j = 0; j < k; ++j)
                row[j] = (float)(1.0 / (1.0 + exp(-(double)row[j])));
    }
}

/* Runs rows [lo, lo + n) of x; float outputs land in out directly, classes via z. */
static bp_status run_block(bp_model *m, float *dev_x, const float *x, int64_t lo, int n,
                           bp_predict_output output, void *out, float *z) {
    const bp_backend_ops *ops = m->device->ops;
    int in = m->widths[0], k = m->widths[m->n_layers];
    bp_status st = ops->upload(m->device, dev_x, x + lo * in, (size_t)n * in * sizeof(float));
    if (st == BP_OK) st = bp_model_forward_rows(m, dev_x, n, BP_MODE_INFERENCE, 0, 0);
    float *dst = output == BP_PREDICT_CLASS ? z : (float *)out + lo * k;
    const float *last = m->layers[m->n_layers - 1].a;
    if (st == BP_OK) st = ops->download(m->device, dst, last, (size_t)n * k * sizeof(float));
    if (st == BP_OK) finish_block(dst, n, k, output, (int32_t *)out + lo);
    return st;
}

bp_status bp_model_predict(bp_model *model, const float *x, int64_t rows, bp_predict_output output,
                           void *out) {
    bp_status st = check_args(model, x, rows, output, out);
    if (st != BP_OK || rows == 0) return st;
    int block = rows < model->max_batch ? (int)rows : model->max_batch;
    int in = model->widths[0], k = model->widths[model->n_layers];
    float *z = NULL;
    if (output == BP_PREDICT_CLASS && !(z = malloc((size_t)block * k * sizeof(float))))
        return bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no host memory for %d rows of outputs", fn,
                        block);
    void *dev_x = NULL;
    st = bp_dev_alloc(model->device, (size_t)block * in * sizeof(float), fn, &dev_x);
    for (int64_t lo = 0; st == BP_OK && lo < rows; lo += block) {
        int n = rows - lo < block ? (int)(rows - lo) : block;
        st = run_block(model, dev_x, x, lo, n, output, out, z);
    }
    model->batch = 0; /* the workspace no longer holds a forward that loss could use */
    bp_dev_free(model->device, dev_x, (size_t)block * in * sizeof(float));
    free(z);
    return st;
}
