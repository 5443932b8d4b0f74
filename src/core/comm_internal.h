/* Data-parallel groups: the core's side of the MPI module.
 *
 * The public calls of include/backprop/distributed.h live in the core (src/core/comm.c) and
 * forward to the module libbackprop_mpi.so (src/mpi/comm.c), which links MPI; the core loads
 * it on the first call that needs it, so a program that never makes a group needs no MPI
 * library to start. The training step reaches the group through the same table. */
#ifndef BP_CORE_COMM_INTERNAL_H
#define BP_CORE_COMM_INTERNAL_H

#include "backprop/distributed.h"
#include "core/module.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What the module's entry point (bp_mpi_module_entry) returns. Each entry is the public call
 * of the same name, called with a non-NULL comm (the core answers for NULL), plus the training
 * step's two parts below. */
typedef struct bp_comm_module {
    bp_module_header header;
    bp_comm *(*create)(bp_status *status);
    void (*free)(bp_comm *comm);
    int (*rank)(const bp_comm *comm);
    int (*size)(const bp_comm *comm);
    int (*local_rank)(const bp_comm *comm);
    bp_status (*attach)(bp_comm *comm, bp_model *model, bp_optimizer *optimizer);
    bp_status (*agree)(bp_comm *comm, int ok, const char *what);
    bp_status (*check_same)(bp_comm *comm, const char *text, const char *what);
    bp_status (*sum)(bp_comm *comm, double *values, int count);
    void (*stats)(const bp_comm *comm, double *allreduce_seconds, double *bytes);
    void (*abort)(bp_comm *comm, int code);
    /* Starts a step on every rank: own is this rank's verdict on its arguments (its message
     * already set when not BP_OK), rows its batch rows. On success *total is the rows of the
     * global batch and *offset this rank's first row in it (the ranks in order). When any
     * rank's verdict is not BP_OK every rank returns an error: that rank its own, the others
     * BP_ERR_REMOTE naming it. */
    bp_status (*step_begin)(bp_comm *comm, bp_status own, int64_t rows, int64_t *total,
                            int64_t *offset);
    /* Sums the model's flat gradient buffer over the ranks, in place. */
    bp_status (*sum_grads)(bp_comm *comm, bp_model *model);
} bp_comm_module;

/* The loaded module; only called with a comm, which only the module can have made. */
const bp_comm_module *bp_comm_module_of(void);

#ifdef __cplusplus
}
#endif

#endif
