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
 * there is nothing to zero first); then the optimizer's update.
 *
 * A step whose loss or gradient norm is not finite, or (cross-entropy) whose target holds a
 * class outside [0, outputs), is refused: it leaves the parameters and the optimizer as they
 * were. The device decides that itself, so a step need not wait for it:
 * - loss_value not NULL: the call waits for the step, stores its mean loss over the batch, and
 *   reports its refusal (BP_ERR_NON_FINITE with the place, a non-finite input naming its row
 *   and column; BP_ERR_INVALID_ARGUMENT naming the target row) as before.
 * - loss_value NULL: on a backend that can (both of this library's; bp_train_results says how
 *   it went), the call queues the step and returns without waiting for the device. A refused
 *   step is then reported by the next call that reads results (bp_train_step with a loss_value,
 *   bp_train_results, bp_optimizer_get_state, or a later bp_train_step that finds it while
 *   queueing, which then queues nothing), naming the step. The steps queued behind a refused
 *   one change nothing either, and the optimizer goes back to the refused step's count.
 * A model in a data-parallel group (distributed.h) always waits: its loss is summed over the
 * ranks on the host. */
BP_API bp_status bp_train_step(bp_model *model, bp_optimizer *optimizer, const bp_loss_config *loss,
                               const bp_tensor *x, const bp_tensor *target, float *loss_value);

/* One step's results as the device reported them. */
typedef struct bp_step_result {
    int64_t step;    /* the optimizer's step count before it */
    float loss;      /* mean loss over its batch */
    int64_t correct; /* cross-entropy: rows classified right (training mode); else 0 */
    int64_t rows;    /* rows of its batch (over a data-parallel group: all ranks') */
} bp_step_result;

/* The steps read since the last bp_train_results. */
typedef struct bp_step_totals {
    int64_t steps;
    double loss_sum;       /* of their mean losses */
    int64_t correct, rows; /* sums over the cross-entropy steps */
    bp_step_result last;   /* the newest (all zero when steps is 0) */
} bp_step_totals;

/* Reads the results of the optimizer's steps that the device has finished (wait 0: without
 * waiting; wait 1: waits for every queued step), adds them into *totals and forgets them, so
 * each step is counted by one call. Reports a refused step among them as bp_train_step
 * describes (the totals then hold the steps before it). */
BP_API bp_status bp_train_results(bp_optimizer *optimizer, int wait, bp_step_totals *totals);

/* The train accuracy of the model's newest step whose results the host has read (after a
 * bp_train_step with a loss_value, or bp_train_results with wait 1: the last step), when it
 * succeeded with a cross-entropy loss: *correct of the step's *rows rows (the global batch over
 * a data-parallel group) had their first largest output at their label. It is counted on the
 * device from the logits the step computed for its loss (training mode: with dropout, before
 * the update) and read back with the loss, so it costs no forward pass and no extra wait. rows
 * may be NULL. BP_ERR_INVALID_ARGUMENT when there is no such step. */
BP_API bp_status bp_train_step_correct(const bp_model *model, int64_t *correct, int64_t *rows);

#ifdef __cplusplus
}
#endif

#endif
