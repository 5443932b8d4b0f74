/* Data-parallel groups over MPI (see include/backprop/distributed.h): the module
 * libbackprop_mpi.so, whose table the core's public calls forward to (core/comm_internal.h).
 * The core answers for a NULL comm, so every function here gets a comm it made. */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backprop/version.h"
#include "core/comm_internal.h"
#include "core/error.h"
#include "core/model_internal.h"
#include "core/optim_internal.h"

struct bp_comm {
    MPI_Comm world; /* a duplicate of MPI_COMM_WORLD, errors returned rather than fatal */
    int rank, size, local_rank;
    int finalize; /* this comm started MPI, so it ends it */
    float *host;  /* staging for a device without collectives of its own */
    size_t host_count;
    bp_device *coll_device; /* the device coll serves (NCCL), or NULL */
    void *coll;
    double seconds, bytes; /* gradient sums so far */
};

/* "MPI_Allreduce failed on rank 1 of 2: <MPI's message>". */
static bp_status mpi_fail(const bp_comm *c, const char *fn, const char *call, int err) {
    char text[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    MPI_Error_string(err, text, &len);
    return bp_error(BP_ERR_DEVICE, "%s: %s failed on rank %d of %d: %s", fn, call, c->rank, c->size,
                    text);
}

#define MPI_TRY(c, fn, call)                                                                       \
    do {                                                                                           \
        int mpi_err_ = (call);                                                                     \
        if (mpi_err_ != MPI_SUCCESS) return mpi_fail(c, fn, #call, mpi_err_);                      \
    } while (0)

static bp_status start_mpi(int *finalize) {
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (finalized)
        return bp_error(BP_ERR_UNSUPPORTED,
                        "bp_comm_create: MPI has already been finalized in this process (a "
                        "process can start MPI once)");
    *finalize = 0;
    if (initialized) return BP_OK;
    int provided = 0;
    /* FUNNELED: the loader's worker thread never calls MPI. */
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return bp_error(BP_ERR_DEVICE, "bp_comm_create: MPI_Init_thread failed");
    *finalize = 1;
    return BP_OK;
}

static bp_status find_ranks(bp_comm *c) {
    const char *fn = "bp_comm_create";
    MPI_TRY(c, fn, MPI_Comm_dup(MPI_COMM_WORLD, &c->world));
    MPI_Comm_set_errhandler(c->world, MPI_ERRORS_RETURN);
    MPI_TRY(c, fn, MPI_Comm_rank(c->world, &c->rank));
    MPI_TRY(c, fn, MPI_Comm_size(c->world, &c->size));
    MPI_Comm node;
    MPI_TRY(c, fn, MPI_Comm_split_type(c->world, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
    int err = MPI_Comm_rank(node, &c->local_rank);
    MPI_Comm_free(&node);
    if (err != MPI_SUCCESS) return mpi_fail(c, fn, "MPI_Comm_rank", err);
    return BP_OK;
}

static void mpi_free(bp_comm *comm);

static bp_comm *mpi_create(bp_status *status) {
    bp_comm *c = calloc(1, sizeof *c);
    if (!c) {
        bp_set_status(status, bp_error(BP_ERR_OUT_OF_MEMORY, "bp_comm_create: out of memory"));
        return NULL;
    }
    c->world = MPI_COMM_NULL;
    bp_status st = start_mpi(&c->finalize);
    if (st == BP_OK) st = find_ranks(c);
    bp_set_status(status, st);
    if (st != BP_OK) {
        mpi_free(c);
        return NULL;
    }
    return c;
}

/* The device-side collective goes with whichever goes first, the comm or its device: a comm
 * is freed after everything else (distributed.h), so its device may be closed by then. */
static void free_coll(bp_comm *comm) {
    bp_device *d = comm->coll_device;
    d->ops->coll_free(d, comm->coll);
    d->on_close = NULL;
    d->on_close_ctx = NULL;
    comm->coll = NULL;
    comm->coll_device = NULL;
}

static void coll_device_closing(void *ctx, bp_device *device) {
    bp_comm *comm = ctx;
    if (comm->coll && comm->coll_device == device) free_coll(comm);
}

static void mpi_free(bp_comm *comm) {
    if (!comm) return;
    if (comm->coll) free_coll(comm);
    free(comm->host);
    if (comm->world != MPI_COMM_NULL) MPI_Comm_free(&comm->world);
    if (comm->finalize) MPI_Finalize();
    free(comm);
}

static int mpi_rank(const bp_comm *comm) {
    return comm->rank;
}

static int mpi_size(const bp_comm *comm) {
    return comm->size;
}

static int mpi_local_rank(const bp_comm *comm) {
    return comm->local_rank;
}

static void mpi_stats(const bp_comm *comm, double *allreduce_seconds, double *bytes) {
    if (allreduce_seconds) *allreduce_seconds = comm ? comm->seconds : 0.0;
    if (bytes) *bytes = comm ? comm->bytes : 0.0;
}

static void mpi_abort(bp_comm *comm, int code) {
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (initialized && !finalized) MPI_Abort(comm ? comm->world : MPI_COMM_WORLD, code);
}

/* The first rank whose flag is 0, or -1 when none: one all-reduce. */
static bp_status first_failed(bp_comm *c, const char *fn, int ok, int *failed) {
    int mine = ok ? c->size : c->rank, first = c->size;
    MPI_TRY(c, fn, MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, c->world));
    *failed = first < c->size ? first : -1;
    return BP_OK;
}

static bp_status mpi_agree(bp_comm *comm, int ok, const char *what) {
    const char *fn = "bp_comm_agree";
    if (!comm) return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: comm is NULL", fn);
    int failed = -1;
    bp_status st = first_failed(comm, fn, ok, &failed);
    if (st != BP_OK || failed < 0) return st;
    if (!ok) return BP_ERR_REMOTE; /* this rank's own message stays */
    return bp_error(BP_ERR_REMOTE, "%s failed on rank %d of %d (see its message)",
                    what ? what : "the work before this point", failed, comm->size);
}

static bp_status mpi_sum(bp_comm *comm, double *values, int count) {
    const char *fn = "bp_comm_sum";
    if (!comm || (!values && count > 0) || count < 0)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: %s", fn,
                        !comm ? "comm is NULL" : "values is NULL or count < 0");
    MPI_TRY(comm, fn, MPI_Allreduce(MPI_IN_PLACE, values, count, MPI_DOUBLE, MPI_SUM, comm->world));
    return BP_OK;
}

/* FNV-1a, 64 bits: enough to tell texts apart; the texts themselves are sent only on a
 * mismatch, to quote them. */
static uint64_t text_hash(const char *text) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)text; *p; ++p)
        h = (h ^ *p) * 0x100000001b3ull;
    return h;
}

#define BP_TEXT_MAX 240

/* Rank `from`'s text (truncated to BP_TEXT_MAX) into out, on every rank. */
static bp_status share_text(bp_comm *c, const char *fn, const char *text, int from,
                            char out[BP_TEXT_MAX + 1]) {
    memset(out, 0, BP_TEXT_MAX + 1);
    if (c->rank == from) snprintf(out, BP_TEXT_MAX + 1, "%s", text);
    MPI_TRY(c, fn, MPI_Bcast(out, BP_TEXT_MAX + 1, MPI_CHAR, from, c->world));
    return BP_OK;
}

/* Fails on every rank, quoting rank 0's text and the first differing rank's, unless all agree. */
static bp_status same_text(bp_comm *c, const char *fn, const char *text, const char *what) {
    uint64_t mine = text_hash(text), zero = mine;
    MPI_TRY(c, fn, MPI_Bcast(&zero, 1, MPI_UINT64_T, 0, c->world));
    int differ = -1;
    bp_status st = first_failed(c, fn, mine == zero, &differ);
    if (st != BP_OK || differ < 0) return st;
    char t0[BP_TEXT_MAX + 1], td[BP_TEXT_MAX + 1];
    st = share_text(c, fn, text, 0, t0);
    if (st == BP_OK) st = share_text(c, fn, text, differ, td);
    if (st != BP_OK) return st;
    return bp_error(BP_ERR_INVALID_ARGUMENT,
                    "%s: the ranks disagree on %s: rank 0 has %s, rank %d has %s", fn, what, t0,
                    differ, td);
}

static bp_status mpi_check_same(bp_comm *comm, const char *text, const char *what) {
    const char *fn = "bp_comm_check_same";
    if (!comm || !text)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn, comm ? "text" : "comm");
    return same_text(comm, fn, text, what ? what : "a value");
}

/* ---- attaching a model ---------------------------------------------------------------- */

static const char *act_name(bp_activation a) {
    static const char *names[] = {"identity", "relu", "leaky_relu", "sigmoid",
                                  "tanh",     "gelu", "gelu_tanh",  "silu"};
    return (unsigned)a < sizeof names / sizeof *names ? names[a] : "?";
}

/* "784-128-10 relu,identity dropout 0,0 slope 0.01; sgd accum 1" */
static void describe(const bp_model *m, const bp_optimizer *o, char *buf, size_t size) {
    size_t n = 0;
    for (int l = 0; l <= m->n_layers && n < size; ++l)
        n += (size_t)snprintf(buf + n, size - n, "%s%d", l ? "-" : "", m->widths[l]);
    for (int l = 0; l < m->n_layers && n < size; ++l)
        n += (size_t)snprintf(buf + n, size - n, "%s%s", l ? "," : " ", act_name(m->layers[l].act));
    for (int l = 0; l < m->n_layers && n < size; ++l)
        n += (size_t)snprintf(buf + n, size - n, "%s%g", l ? "," : " dropout ",
                              (double)m->layers[l].dropout);
    if (n < size) n += (size_t)snprintf(buf + n, size - n, " slope %g", (double)m->leaky_slope);
    static const char *precisions[] = {"fp32", "tf32", "bf16"};
    if (n < size)
        n += (size_t)snprintf(buf + n, size - n, " %s", precisions[(unsigned)m->precision % 3]);
    static const char *kinds[] = {"sgd", "adam", "adamw"};
    if (o && n < size)
        snprintf(buf + n, size - n, "; %s%s accum %d", kinds[o->config.kind % 3],
                 o->state_size ? " with state" : "", o->config.accum_steps);
}

/* Sends rank 0's count floats (device memory at dev_ptr) to every rank, through host. */
static bp_status broadcast_floats(bp_comm *c, const char *fn, bp_device *d, float *dev_ptr,
                                  size_t count, float *host) {
    bp_status st = BP_OK;
    if (c->rank == 0) st = d->ops->download(d, host, dev_ptr, count * sizeof(float));
    int ok = st == BP_OK, failed = -1;
    bp_status agreed = first_failed(c, fn, ok, &failed);
    if (st != BP_OK || agreed != BP_OK) return st != BP_OK ? st : agreed;
    if (failed >= 0) return bp_error(BP_ERR_REMOTE, "%s: rank 0 could not read its parameters", fn);
    for (size_t done = 0; done < count;) {
        int chunk = count - done > (size_t)1 << 28 ? 1 << 28 : (int)(count - done);
        MPI_TRY(c, fn, MPI_Bcast(host + done, chunk, MPI_FLOAT, 0, c->world));
        done += (size_t)chunk;
    }
    return c->rank == 0 ? BP_OK : d->ops->upload(d, dev_ptr, host, count * sizeof(float));
}

static bp_status ensure_host(bp_comm *c, size_t count) {
    if (c->host_count >= count) return BP_OK;
    float *h = realloc(c->host, count * sizeof(float));
    if (!h)
        return bp_error(BP_ERR_OUT_OF_MEMORY, "bp_comm_attach: out of host memory for %zu floats",
                        count);
    c->host = h;
    c->host_count = count;
    return BP_OK;
}

static bp_status copy_replica(bp_comm *c, bp_model *m, bp_optimizer *o) {
    const char *fn = "bp_comm_attach";
    size_t need = m->n_params > (o ? o->state_size : 0) ? m->n_params : o->state_size;
    int ok = ensure_host(c, need) == BP_OK, failed = -1;
    bp_status st = first_failed(c, fn, ok, &failed);
    if (st != BP_OK) return st;
    if (failed >= 0)
        return ok ? bp_error(BP_ERR_REMOTE, "%s: rank %d is out of host memory", fn, failed)
                  : BP_ERR_OUT_OF_MEMORY;
    st = broadcast_floats(c, fn, m->device, m->params, m->n_params, c->host);
    if (st == BP_OK) st = bp_model_sync_lowp(m); /* rank 0's weights into the bf16 copy too */
    if (st == BP_OK && o && o->state_size)
        st = broadcast_floats(c, fn, m->device, o->state, o->state_size, c->host);
    int64_t counters[2] = {(int64_t)m->forward_calls, o ? o->steps : 0};
    if (st == BP_OK) MPI_TRY(c, fn, MPI_Bcast(counters, 2, MPI_INT64_T, 0, c->world));
    if (st != BP_OK) return st;
    m->forward_calls = (uint64_t)counters[0];
    if (o) o->steps = counters[1];
    return BP_OK;
}

/* Device collectives (NCCL) for m's device, once per comm. */
static bp_status setup_coll(bp_comm *c, bp_model *m) {
    const char *fn = "bp_comm_attach";
    bp_device *d = m->device;
    if (!d->ops->coll_init) return BP_OK;
    if (c->coll)
        return c->coll_device == d ? BP_OK
                                   : bp_error(BP_ERR_UNSUPPORTED,
                                              "%s: this comm already serves models on %s; one "
                                              "comm serves one device",
                                              fn, c->coll_device->name);
    unsigned char id[BP_COLL_ID_BYTES] = {0};
    bp_status st = BP_OK;
    if (d->on_close) /* refused on every rank alike, through the agreement below */
        st = bp_error(BP_ERR_UNSUPPORTED,
                      "%s: %s already holds another comm's collectives; one device serves one "
                      "comm (free the other first)",
                      fn, d->name);
    else if (c->rank == 0)
        st = d->ops->coll_id(d, id, sizeof id);
    int failed = -1;
    bp_status agreed = first_failed(c, fn, st == BP_OK, &failed);
    if (st != BP_OK || agreed != BP_OK) return st != BP_OK ? st : agreed;
    if (failed >= 0) return bp_error(BP_ERR_REMOTE, "%s: rank 0 could not make the group id", fn);
    MPI_TRY(c, fn, MPI_Bcast(id, (int)sizeof id, MPI_BYTE, 0, c->world));
    st = d->ops->coll_init(d, id, c->rank, c->size, &c->coll);
    agreed = first_failed(c, fn, st == BP_OK, &failed);
    if (st == BP_OK && agreed == BP_OK && failed < 0) {
        c->coll_device = d;
        d->on_close = coll_device_closing;
        d->on_close_ctx = c;
        return BP_OK;
    }
    if (st == BP_OK && c->coll) d->ops->coll_free(d, c->coll);
    c->coll = NULL;
    if (st != BP_OK) return st;
    return agreed != BP_OK
               ? agreed
               : bp_error(BP_ERR_REMOTE, "%s: rank %d could not join the group", fn, failed);
}

static bp_status mpi_attach(bp_comm *comm, bp_model *model, bp_optimizer *optimizer) {
    const char *fn = "bp_comm_attach";
    if (!comm || !model)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn, comm ? "model" : "comm");
    if (optimizer && optimizer->model != model)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: the optimizer was created for another model",
                        fn);
    char text[BP_TEXT_MAX + 1];
    describe(model, optimizer, text, sizeof text);
    bp_status st = same_text(comm, fn, text, "the model");
    if (st == BP_OK) st = setup_coll(comm, model);
    if (st == BP_OK && model->device->kind != BP_DEVICE_CPU && !comm->coll)
        st = ensure_host(comm, model->n_params);
    if (st == BP_OK) st = copy_replica(comm, model, optimizer);
    if (st == BP_OK) model->comm = comm;
    return st;
}

/* ---- the training step's part ----------------------------------------------------------- */

static bp_status mpi_step_begin(bp_comm *comm, bp_status own, int64_t rows, int64_t *total,
                                int64_t *offset) {
    const char *fn = "bp_train_step";
    /* Every rank's (rows, verdict) in one all-gather: the global batch, this rank's place in
     * it, and who refused. */
    int64_t mine[2] = {rows, own == BP_OK}, *all = malloc((size_t)comm->size * sizeof mine);
    if (!all) return bp_error(BP_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
    int err = MPI_Allgather(mine, 2, MPI_INT64_T, all, 2, MPI_INT64_T, comm->world);
    int failed = -1;
    *total = *offset = 0;
    for (int r = 0; err == MPI_SUCCESS && r < comm->size; ++r) {
        if (!all[2 * r + 1] && failed < 0) failed = r;
        if (r < comm->rank) *offset += all[2 * r];
        *total += all[2 * r];
    }
    free(all);
    if (err != MPI_SUCCESS) return mpi_fail(comm, fn, "MPI_Allgather", err);
    if (own != BP_OK) return own;
    if (failed >= 0)
        return bp_error(BP_ERR_REMOTE,
                        "%s: rank %d of %d refused its arguments (see its message); nothing "
                        "changed",
                        fn, failed, comm->size);
    return BP_OK;
}

/* MPI counts are ints: big buffers go in pieces. */
static bp_status host_sum(bp_comm *c, float *buf, size_t n) {
    const char *fn = "bp_train_step";
    for (size_t done = 0; done < n;) {
        int chunk = n - done > (size_t)1 << 30 ? 1 << 30 : (int)(n - done);
        MPI_TRY(c, fn,
                MPI_Allreduce(MPI_IN_PLACE, buf + done, chunk, MPI_FLOAT, MPI_SUM, c->world));
        done += (size_t)chunk;
    }
    return BP_OK;
}

static bp_status mpi_sum_grads(bp_comm *comm, bp_model *m) {
    double t0 = MPI_Wtime();
    bp_device *d = m->device;
    size_t n = m->n_params;
    bp_status st;
    if (comm->coll)
        st = d->ops->coll_sum(d, comm->coll, m->grads, n);
    else if (d->kind == BP_DEVICE_CPU)
        st = host_sum(comm, m->grads, n);
    else {
        st = d->ops->download(d, comm->host, m->grads, n * sizeof(float));
        if (st == BP_OK) st = host_sum(comm, comm->host, n);
        if (st == BP_OK) st = d->ops->upload(d, m->grads, comm->host, n * sizeof(float));
    }
    comm->seconds += MPI_Wtime() - t0;
    comm->bytes += (double)n * sizeof(float);
    return st;
}

/* ---- the module's entry point ------------------------------------------------------------ */

#define BP_MPI_DETAIL_(major, minor) "MPI " #major "." #minor
#define BP_MPI_DETAIL(major, minor)  BP_MPI_DETAIL_(major, minor)

static const bp_comm_module mpi_module = {
    .header = {BP_MODULE_ABI, BP_VERSION_STRING, BP_MPI_DETAIL(MPI_VERSION, MPI_SUBVERSION)},
    .create = mpi_create,
    .free = mpi_free,
    .rank = mpi_rank,
    .size = mpi_size,
    .local_rank = mpi_local_rank,
    .attach = mpi_attach,
    .agree = mpi_agree,
    .check_same = mpi_check_same,
    .sum = mpi_sum,
    .stats = mpi_stats,
    .abort = mpi_abort,
    .step_begin = mpi_step_begin,
    .sum_grads = mpi_sum_grads,
};

BP_API const void *bp_mpi_module_entry(const bp_module_host *host);

const void *bp_mpi_module_entry(const bp_module_host *host) {
    return bp_module_bind(host) ? &mpi_module : NULL;
}
