/* Inference over a whole dataset in batches, with the loss and the metric computed on the host
 * in double (one download of the outputs per batch, which prediction needs anyway). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int cli_metric_is_accuracy(bp_loss_kind kind) {
    return kind != BP_LOSS_MSE;
}

/* Cross-entropy of one row of logits against label with smoothing s; *right: argmax == label. */
static double ce_row(const float *z, int k, int label, double s, int *right) {
    int best = 0;
    double max = z[0], sum = 0.0, zsum = 0.0;
    for (int j = 1; j < k; ++j)
        if (z[j] > z[best]) best = j;
    max = z[best];
    for (int j = 0; j < k; ++j) {
        sum += exp((double)z[j] - max);
        zsum += (double)z[j];
    }
    double lse = max + log(sum);
    *right = best == label;
    if (label < 0 || label >= k) return NAN;
    return -((1.0 - s) * ((double)z[label] - lse) + s / k * (zsum - k * lse));
}

typedef struct sums {
    double loss, metric;
} sums;

static void score_rows(const float *z, int rows, int k, const bp_dataset *ds, int64_t r0,
                       const bp_loss_config *loss, sums *acc) {
    if (bp_dataset_target_kind(ds) == BP_TARGET_CLASS) {
        const int32_t *y = (const int32_t *)bp_dataset_targets_data(ds) + r0;
        for (int i = 0; i < rows; ++i) {
            int right;
            acc->loss += ce_row(z + (size_t)i * k, k, y[i], loss->label_smoothing, &right);
            acc->metric += right;
        }
        return;
    }
    const float *t = (const float *)bp_dataset_targets_data(ds) + r0 * k;
    for (size_t e = 0; e < (size_t)rows * (size_t)k; ++e) {
        double zi = z[e], ti = t[e];
        if (loss->kind == BP_LOSS_BCE_LOGITS) {
            acc->loss += fmax(zi, 0.0) - zi * ti + log1p(exp(-fabs(zi)));
            acc->metric += (zi > 0.0) == (ti > 0.5);
        } else {
            acc->loss += (zi - ti) * (zi - ti);
            acc->metric += (zi - ti) * (zi - ti);
        }
    }
}

typedef struct batch_tensors {
    bp_tensor *x, *out;
} batch_tensors;

static void free_batch(batch_tensors *b) {
    bp_tensor_free(b->x);
    bp_tensor_free(b->out);
    b->x = b->out = NULL;
}

static int make_batch(bp_device *dev, int rows, int in, int k, batch_tensors *b) {
    bp_status st;
    b->x = bp_tensor_create(dev, BP_F32, rows, in, &st);
    b->out = b->x ? bp_tensor_create(dev, BP_F32, rows, k, &st) : NULL;
    return b->out ? 0 : -1;
}

/* Forward of rows [r0, r0 + rows) into host memory z. */
static int forward_rows(bp_model *m, const bp_dataset *ds, int64_t r0, int rows, batch_tensors *b,
                        float *z) {
    int in = bp_model_width(m, 0), k = bp_model_width(m, bp_model_n_layers(m));
    const float *x = bp_dataset_features_data(ds) + r0 * in;
    if (bp_tensor_upload(b->x, x, (size_t)rows * (size_t)in) != BP_OK) return -1;
    if (bp_model_forward(m, b->x, BP_MODE_INFERENCE, b->out) != BP_OK) return -1;
    return bp_tensor_download(b->out, z, (size_t)rows * (size_t)k) == BP_OK ? 0 : -1;
}

int cli_evaluate(int cmd, bp_model *m, const bp_dataset *ds, const bp_loss_config *loss,
                 cli_eval *res, float *out) {
    int in = bp_model_width(m, 0), k = bp_model_width(m, bp_model_n_layers(m));
    int64_t n = bp_dataset_size(ds);
    int full = bp_model_max_batch(m);
    if (n == 0) {
        if (res) res->n = 0, res->loss = res->metric = NAN;
        return 0;
    }
    if (n < full) full = (int)n;
    batch_tensors whole = {0}, tail = {0};
    float *z = out ? NULL : malloc((size_t)full * (size_t)k * sizeof(float));
    int rc = (!out && !z) || make_batch(bp_model_device(m), full, in, k, &whole) ? -1 : 0;
    sums acc = {0.0, 0.0};
    for (int64_t r0 = 0; r0 < n && rc == 0; r0 += full) {
        int rows = n - r0 < full ? (int)(n - r0) : full;
        batch_tensors *b = &whole;
        if (rows < full) {
            b = &tail;
            if (make_batch(bp_model_device(m), rows, in, k, b)) rc = -1;
        }
        float *dst = out ? out + r0 * k : z;
        if (rc == 0) rc = forward_rows(m, ds, r0, rows, b, dst);
        if (rc == 0 && res) score_rows(dst, rows, k, ds, r0, loss, &acc);
    }
    free(z);
    free_batch(&whole);
    free_batch(&tail);
    if (rc) return cli_lib_fail(cmd, "evaluation");
    if (res) {
        double per = bp_dataset_target_kind(ds) == BP_TARGET_CLASS ? (double)n : (double)n * k;
        res->n = n;
        res->loss = n ? acc.loss / per : NAN;
        res->metric = n ? acc.metric / per : NAN;
    }
    return 0;
}
