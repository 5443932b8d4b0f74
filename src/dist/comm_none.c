/* A build without MPI (BP_MPI=OFF): no group can be made, so no model is ever attached and the
 * training step never reaches the functions of core/comm_internal.h. */
#include "core/comm_internal.h"
#include "core/error.h"

static bp_status no_mpi(const char *fn) {
    return bp_error(BP_ERR_UNSUPPORTED,
                    "%s: this backprop was built without MPI (configure with -DBP_MPI=ON and "
                    "OpenMPI installed: apt-get install libopenmpi-dev openmpi-bin)",
                    fn);
}

int bp_distributed_available(void) {
    return 0;
}

bp_comm *bp_comm_create(bp_status *status) {
    bp_set_status(status, no_mpi("bp_comm_create"));
    return NULL;
}

void bp_comm_free(bp_comm *comm) {
    (void)comm;
}

int bp_comm_rank(const bp_comm *comm) {
    (void)comm;
    return 0;
}

int bp_comm_size(const bp_comm *comm) {
    (void)comm;
    return 1;
}

int bp_comm_local_rank(const bp_comm *comm) {
    (void)comm;
    return 0;
}

void bp_comm_shard(const bp_comm *comm, int64_t rows, int64_t *first, int64_t *count) {
    (void)comm;
    if (first) *first = 0;
    if (count) *count = rows;
}

bp_status bp_comm_attach(bp_comm *comm, bp_model *model, bp_optimizer *optimizer) {
    (void)comm, (void)model, (void)optimizer;
    return no_mpi("bp_comm_attach");
}

bp_status bp_comm_agree(bp_comm *comm, int ok, const char *what) {
    (void)comm, (void)ok, (void)what;
    return no_mpi("bp_comm_agree");
}

bp_status bp_comm_check_same(bp_comm *comm, const char *text, const char *what) {
    (void)comm, (void)text, (void)what;
    return no_mpi("bp_comm_check_same");
}

bp_status bp_comm_sum(bp_comm *comm, double *values, int count) {
    (void)comm, (void)values, (void)count;
    return no_mpi("bp_comm_sum");
}

void bp_comm_stats(const bp_comm *comm, double *allreduce_seconds, double *bytes) {
    (void)comm;
    if (allreduce_seconds) *allreduce_seconds = 0.0;
    if (bytes) *bytes = 0.0;
}

void bp_comm_abort(bp_comm *comm, int code) {
    (void)comm, (void)code;
}

bp_status bp_comm_step_begin(bp_comm *comm, bp_status own, int64_t rows, int64_t *total,
                             int64_t *offset) {
    (void)comm, (void)own, (void)rows, (void)total, (void)offset;
    return no_mpi("bp_train_step");
}

bp_status bp_comm_sum_grads(bp_comm *comm, bp_model *model) {
    (void)comm, (void)model;
    return no_mpi("bp_train_step");
}
