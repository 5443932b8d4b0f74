/* One call for a whole training step.
 *
 * Lifetime: nothing is kept but what the model and optimizer hold; x and target are borrowed for
 * the call. Threads: a step uses the model, its optimizer and their device from one thread at a
 * time; steps of different models on different threads do not interact. */
#ifndef BACKPROP_TRAIN_H
#define BACKPROP_TRAIN_H

#include "model.h"
#include "optim.h"

#ifdef __cplusplus
extern "C" {
#endif

/* For each of the optimizer's accum_steps micro-batches (the rows of x split as evenly as
 * possible) runs forward (training mode), loss and backward, weighting each so the gradient is
 * that of the mean loss over all rows (the first micro-batch overwrites the gradient buffer, so
 * there is nothing to zero first); then bp_optimizer_step.
 * *loss, when not NULL, receives the mean loss over the batch.
 *
 * Checks that the loss and the gradient norm are finite (one small read from the device per
 * step); when not, returns BP_ERR_NON_FINITE with the place (a non-finite input names its row
 * and column) and leaves the parameters and optimizer as they were. */
BP_API bp_status bp_train_step(bp_model *model, bp_optimizer *optimizer, const bp_loss_config *loss,
                               const bp_tensor *x, const bp_tensor *target, float *loss_value);

/* The train accuracy of the model's last bp_train_step, when it succeeded with a cross-entropy
 * loss: *correct of the step's *rows rows (the global batch over a data-parallel group) had
 * their first largest output at their label. It is counted on the device from the logits the
 * step computed for its loss (training mode: with dropout, before the update) and read back
 * with the loss, so it costs no forward pass and no extra wait. rows may be NULL.
 * BP_ERR_INVALID_ARGUMENT when there is no such step. */
BP_API bp_status bp_train_step_correct(const bp_model *model, int64_t *correct, int64_t *rows);

#ifdef __cplusplus
}
#endif

#endif
