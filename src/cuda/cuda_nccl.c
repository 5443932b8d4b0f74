/* Gradient sums across processes with NCCL, on the device's own stream (built with BP_NCCL).
 * The core makes the group id travel over MPI; here are only the device's parts. */
#include <nccl.h>
#include <string.h>

#include "cuda/cuda_internal.h"

_Static_assert(sizeof(ncclUniqueId) <= BP_COLL_ID_BYTES, "an NCCL id must fit BP_COLL_ID_BYTES");

static bp_status nccl_fail(const bp_device *device, ncclResult_t r, const char *call) {
    return bp_error(BP_ERR_DEVICE, "%s on %s: %s (ncclResult %d)", call, device->name,
                    ncclGetErrorString(r), (int)r);
}

bp_status bp_cuda_coll_id(bp_device *device, void *id, size_t size) {
    if (size < sizeof(ncclUniqueId))
        return bp_error(BP_ERR_INVALID_ARGUMENT, "ncclGetUniqueId: %zu bytes for an id of %zu",
                        size, sizeof(ncclUniqueId));
    ncclUniqueId u;
    ncclResult_t r = ncclGetUniqueId(&u);
    if (r != ncclSuccess) return nccl_fail(device, r, "ncclGetUniqueId");
    memcpy(id, &u, sizeof u);
    return BP_OK;
}

bp_status bp_cuda_coll_init(bp_device *device, const void *id, int rank, int size, void **coll) {
    BP_CUDA_ENTER(device);
    ncclUniqueId u;
    memcpy(&u, id, sizeof u);
    ncclComm_t comm = NULL;
    ncclResult_t r = ncclCommInitRank(&comm, size, u, rank);
    if (r != ncclSuccess) return nccl_fail(device, r, "ncclCommInitRank");
    *coll = comm;
    return BP_OK;
}

/* Queued on the device's stream after the backward pass that wrote buf, so no wait here. NCCL's
 * ring sums each chunk once and then copies it to every rank: the same bits everywhere. */
bp_status bp_cuda_coll_sum(bp_device *device, void *coll, float *buf, size_t n) {
    BP_CUDA_ENTER(device);
    bp_cu_note_launch();
    ncclResult_t r = ncclAllReduce(buf, buf, n, ncclFloat, ncclSum, (ncclComm_t)coll,
                                   bp_cuda_impl_of(device)->stream);
    return r == ncclSuccess ? BP_OK : nccl_fail(device, r, "ncclAllReduce");
}

void bp_cuda_coll_free(bp_device *device, void *coll) {
    if (bp_cuda_enter(device) == BP_OK) ncclCommDestroy((ncclComm_t)coll);
}
