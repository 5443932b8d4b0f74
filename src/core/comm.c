/* The public data-parallel calls: answered here for a NULL comm, forwarded to the MPI module
 * (see core/comm_internal.h) otherwise. */
#include <stddef.h>

#include "core/comm_internal.h"
#include "core/error.h"

#ifndef BP_BUILT_MPI
#define BP_BUILT_MPI 0
#endif

static bp_module mpi_module = {
    .what = "data-parallel training",
    .env = "BP_MPI_MODULE",
    .file = "libbackprop_mpi.so",
    .entry = "bp_mpi_module_entry",
    .global = 1, /* Open MPI's plugins resolve libmpi's symbols globally */
    .built = BP_BUILT_MPI,
    .configure = "-DBP_MPI=ON, with OpenMPI installed: apt-get install libopenmpi-dev openmpi-bin",
    .runtime_hint = "is the MPI library it was built with (libmpi) installed?",
};

const bp_comm_module *bp_comm_module_of(void) {
    return bp_module_load(&mpi_module);
}

/* The module, or NULL with the reason set for fn. */
static const bp_comm_module *module_for(const char *fn) {
    const bp_comm_module *mod = bp_comm_module_of();
    if (!mod) bp_error(mpi_module.status, "%s: %s", fn, mpi_module.reason);
    return mod;
}

/* The module for a call on comm: BP_ERR_UNSUPPORTED without one, BP_ERR_INVALID_ARGUMENT for a
 * NULL comm. */
static bp_status need(const char *fn, const bp_comm *comm, const bp_comm_module **mod) {
    *mod = module_for(fn);
    if (!*mod) return mpi_module.status;
    if (!comm) return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: comm is NULL", fn);
    return BP_OK;
}

int bp_distributed_available(void) {
    return bp_comm_module_of() != NULL;
}

bp_comm *bp_comm_create(bp_status *status) {
    const bp_comm_module *mod = module_for("bp_comm_create");
    if (!mod) {
        bp_set_status(status, mpi_module.status);
        return NULL;
    }
    return mod->create(status);
}

void bp_comm_free(bp_comm *comm) {
    if (comm) bp_comm_module_of()->free(comm);
}

int bp_comm_rank(const bp_comm *comm) {
    return comm ? bp_comm_module_of()->rank(comm) : 0;
}

int bp_comm_size(const bp_comm *comm) {
    return comm ? bp_comm_module_of()->size(comm) : 1;
}

int bp_comm_local_rank(const bp_comm *comm) {
    return comm ? bp_comm_module_of()->local_rank(comm) : 0;
}

void bp_comm_shard(const bp_comm *comm, int64_t rows, int64_t *first, int64_t *count) {
    int r = bp_comm_rank(comm), n = bp_comm_size(comm);
    int64_t lo = rows * r / n, hi = rows * (r + 1) / n;
    if (first) *first = lo;
    if (count) *count = hi - lo;
}

bp_status bp_comm_attach(bp_comm *comm, bp_model *model, bp_optimizer *optimizer) {
    const bp_comm_module *mod;
    bp_status st = need("bp_comm_attach", comm, &mod);
    return st == BP_OK ? mod->attach(comm, model, optimizer) : st;
}

bp_status bp_comm_agree(bp_comm *comm, int ok, const char *what) {
    const bp_comm_module *mod;
    bp_status st = need("bp_comm_agree", comm, &mod);
    return st == BP_OK ? mod->agree(comm, ok, what) : st;
}

bp_status bp_comm_check_same(bp_comm *comm, const char *text, const char *what) {
    const bp_comm_module *mod;
    bp_status st = need("bp_comm_check_same", comm, &mod);
    return st == BP_OK ? mod->check_same(comm, text, what) : st;
}

bp_status bp_comm_sum(bp_comm *comm, double *values, int count) {
    const bp_comm_module *mod;
    bp_status st = need("bp_comm_sum", comm, &mod);
    return st == BP_OK ? mod->sum(comm, values, count) : st;
}

void bp_comm_stats(const bp_comm *comm, double *allreduce_seconds, double *bytes) {
    if (comm) {
        bp_comm_module_of()->stats(comm, allreduce_seconds, bytes);
        return;
    }
    if (allreduce_seconds) *allreduce_seconds = 0.0;
    if (bytes) *bytes = 0.0;
}

void bp_comm_abort(bp_comm *comm, int code) {
    /* Without a comm there may still be an MPI job (the CLI aborts before its comm exists). */
    const bp_comm_module *mod = bp_comm_module_of();
    if (mod) mod->abort(comm, code);
}
