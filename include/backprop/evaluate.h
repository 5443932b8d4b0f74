/* Evaluation of a model over a dataset: the mean loss and the accuracy, in batches.
 *
 * The loss is the one training computes (loss.h, on the device, by the same op), in inference
 * mode (no dropout), summed in double over the batches. The accuracy counts what
 * bp_train_step_correct counts during training: for cross-entropy the rows whose first largest
 * output (NaNs skipped) is their label; for BCE with logits each output on the right side of 0
 * (z > 0 where the target is > 0.5). MSE has no accuracy: its metric is the loss itself.
 *
 * Lifetime: nothing is kept; the model and the dataset are borrowed for the call.
 * Threads: the model (and its device) is used by one thread at a time, as for any call that runs
 * it; the dataset is only read, so several threads may evaluate models on one dataset. */
#ifndef BACKPROP_EVALUATE_H
#define BACKPROP_EVALUATE_H

#include <stdint.h>

#include "data.h"
#include "loss.h"
#include "model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bp_eval_result {
    int64_t rows;    /* samples evaluated: the dataset's */
    double loss;     /* the mean loss over them */
    int64_t correct; /* cross-entropy: rows classified right; BCE: outputs on the right side */
    int64_t scored;  /* what correct counts over: rows (ce), rows * outputs (bce), 0 (mse) */
    double accuracy; /* correct / scored; NaN for MSE */
} bp_eval_result;

/* Runs model over every row of data in batches of `batch` rows (0: the model's max_batch;
 * else 1..max_batch) and fills *result. outputs, when not NULL, receives the model's outputs
 * (logits) for every row, [rows, outputs] floats. The loss must fit the data: cross-entropy
 * takes class targets below the model's output count (a row holding another label is
 * BP_ERR_INVALID_ARGUMENT naming it); MSE and BCE take value targets as wide as the output.
 * Data without targets, or with another number of features than the model's input, is
 * BP_ERR_INVALID_ARGUMENT (BP_ERR_SHAPE_MISMATCH for the widths). A non-finite output is
 * reported in the loss (NaN or inf), not refused. It allocates one batch of inputs and targets
 * on the device for the call; the model's parameters are not changed, and the outputs of an
 * earlier forward are gone afterwards (bp_model_output_rows is 0). */
BP_API bp_status bp_evaluate(bp_model *model, const bp_dataset *data, const bp_loss_config *loss,
                             int batch, bp_eval_result *result, float *outputs);

#ifdef __cplusplus
}
#endif

#endif
