/* What the training step asks of a data-parallel group; implemented in src/dist (over MPI) or,
 * in a build without MPI, never reached (no model can be attached). */
#ifndef BP_CORE_COMM_INTERNAL_H
#define BP_CORE_COMM_INTERNAL_H

#include "backprop/distributed.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Starts a step on every rank: own is this rank's verdict on its arguments (its message already
 * set when not BP_OK), rows its batch rows. On success *total is the rows of the global batch
 * and *offset this rank's first row in it (the ranks in order). When any rank's verdict is not
 * BP_OK every rank returns an error: that rank its own, the others BP_ERR_REMOTE naming it. */
bp_status bp_comm_step_begin(bp_comm *comm, bp_status own, int64_t rows, int64_t *total,
                             int64_t *offset);

/* Sums the model's flat gradient buffer over the ranks, in place. */
bp_status bp_comm_sum_grads(bp_comm *comm, bp_model *model);

#ifdef __cplusplus
}
#endif

#endif
