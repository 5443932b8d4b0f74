/* Device memory and host<->device copies, all ordered on the device's stream. */
#include <string.h>

#include "cuda/cuda_internal.h"

/* One retry for a failed pool allocation: the pool keeps freed blocks (its release threshold is
 * UINT64_MAX), possibly in pieces too small for this request. Wait for the stream so that every
 * queued free has happened, hand all unused memory back to the driver, and ask again. */
static cudaError_t retry_after_trim(bp_cuda_impl *impl, size_t bytes, void **out) {
    (void)cudaGetLastError();
    bp_cu_note_wait();
    cudaError_t err = cudaStreamSynchronize(impl->stream);
    if (err == cudaSuccess) err = cudaMemPoolTrimTo(impl->pool, 0);
    if (err == cudaSuccess) err = cudaMallocFromPoolAsync(out, bytes, impl->pool, impl->stream);
    return err;
}

/* Stream-ordered: the block may be used by anything queued after this call on the device's
 * stream, which is everything the backend does. */
bp_status bp_cuda_alloc(bp_device *device, size_t bytes, void **out) {
    *out = NULL;
    BP_CUDA_ENTER(device);
    bp_cuda_impl *impl = bp_cuda_impl_of(device);
    if (!impl->pool) {
        BP_CUDA_TRY(device, cudaMalloc(out, bytes), "cudaMalloc(%zu bytes)", bytes);
        return BP_OK;
    }
    cudaError_t err = cudaMallocFromPoolAsync(out, bytes, impl->pool, impl->stream);
    if (err == cudaErrorMemoryAllocation) err = retry_after_trim(impl, bytes, out);
    if (err != cudaSuccess) {
        *out = NULL;
        return bp_cuda_fail(device, err, "cudaMallocFromPoolAsync(%zu bytes)", bytes);
    }
    return BP_OK;
}

/* The driver's free memory plus the blocks the pool holds unused (it keeps what is freed, so
 * the driver alone would count a model's own freed memory as taken). 0 when either cannot be
 * read: the caller then checks nothing. */
size_t bp_cuda_memory_free(bp_device *device, const char **source) {
    *source = "cudaMemGetInfo and the memory pool's unused blocks";
    if (bp_cuda_enter(device) != BP_OK) return 0;
    bp_cuda_impl *impl = bp_cuda_impl_of(device);
    size_t free_bytes = 0, total = 0;
    uint64_t reserved = 0, used = 0;
    cudaError_t err = cudaMemGetInfo(&free_bytes, &total);
    if (err == cudaSuccess && impl->pool)
        err = cudaMemPoolGetAttribute(impl->pool, cudaMemPoolAttrReservedMemCurrent, &reserved);
    if (err == cudaSuccess && impl->pool)
        err = cudaMemPoolGetAttribute(impl->pool, cudaMemPoolAttrUsedMemCurrent, &used);
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return free_bytes + (reserved > used ? (size_t)(reserved - used) : 0);
}

/* Stream-ordered too: work queued before the free may still use the block; the pool hands it
 * out again only to allocations ordered after it. A failure cannot be reported (free returns
 * nothing) and would be a lost context, which the next call that can report does. */
void bp_cuda_free(bp_device *device, void *ptr) {
    if (!ptr || bp_cuda_enter(device) != BP_OK) return;
    bp_cuda_impl *impl = bp_cuda_impl_of(device);
    cudaError_t err = impl->pool ? cudaFreeAsync(ptr, impl->stream) : cudaFree(ptr);
    if (err != cudaSuccess) (void)cudaGetLastError();
}

void bp_cuda_release_staging(bp_cuda_impl *impl) {
    for (int i = 0; i < BP_CUDA_STAGE_SLOTS; ++i) {
        if (impl->stage[i]) cudaFreeHost(impl->stage[i]);
        impl->stage[i] = NULL;
    }
}

/* The pinned staging slots, allocated on the first upload (a device used only for inference on
 * uploaded-once weights pins little). */
static cudaError_t ensure_staging(bp_cuda_impl *impl) {
    if (impl->stage[0]) return cudaSuccess;
    for (int i = 0; i < BP_CUDA_STAGE_SLOTS; ++i) {
        cudaError_t err = cudaHostAlloc(&impl->stage[i], BP_CUDA_STAGE_BYTES, cudaHostAllocDefault);
        if (err != cudaSuccess) {
            impl->stage[i] = NULL;
            bp_cuda_release_staging(impl);
            (void)cudaGetLastError();
            return err;
        }
    }
    return cudaSuccess;
}

/* Copies one chunk (<= BP_CUDA_STAGE_BYTES) through the next staging slot: wait until the
 * slot's previous copy has left it, fill it, queue the copy, mark when it is done. */
static bp_status upload_chunk(const bp_device *device, bp_cuda_impl *impl, char *dst,
                              const char *host, size_t len) {
    int slot = impl->stage_next;
    impl->stage_next = (slot + 1) % BP_CUDA_STAGE_SLOTS;
    cudaError_t err = cudaEventQuery(impl->stage_done[slot]);
    if (err == cudaErrorNotReady) { /* the device is two chunks behind: only now wait */
        (void)cudaGetLastError();
        bp_cu_note_wait();
        err = cudaEventSynchronize(impl->stage_done[slot]);
    }
    BP_CUDA_TRY(device, err, "upload: waiting for staging slot %d", slot);
    memcpy(impl->stage[slot], host, len);
    bp_cu_note_launch();
    BP_CUDA_TRY(device,
                cudaMemcpyAsync(dst, impl->stage[slot], len, cudaMemcpyHostToDevice, impl->stream),
                "upload: cudaMemcpyAsync(host to device, %zu bytes to %p)", len, (void *)dst);
    BP_CUDA_TRY(device, cudaEventRecord(impl->stage_done[slot], impl->stream),
                "upload: cudaEventRecord(staging slot %d)", slot);
    return BP_OK;
}

/* Without pinned memory: copy from the caller's pageable buffer and wait, since the caller may
 * free it as soon as we return. */
static bp_status upload_direct(const bp_device *device, bp_cuda_impl *impl, void *dst,
                               const void *host, size_t bytes) {
    bp_cu_note_launch();
    bp_cu_note_wait();
    BP_CUDA_TRY(device, cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, impl->stream),
                "upload: cudaMemcpyAsync(host to device, %zu bytes to %p)", bytes, dst);
    BP_CUDA_TRY(device, cudaStreamSynchronize(impl->stream),
                "upload: cudaStreamSynchronize after copying %zu bytes", bytes);
    return BP_OK;
}

/* The caller's bytes are copied into pinned staging slots before this returns, so it may free
 * its buffer at once, yet the device copies run asynchronously: a training loop that uploads a
 * batch per step does not wait for the GPU to drain its queue (a pageable cudaMemcpyAsync plus
 * a synchronize would). Two slots used in turn overlap the host-side memcpy of one chunk with
 * the DMA of the other. Uploads wait only when a slot is still being copied from. */
bp_status bp_cuda_upload(bp_device *device, void *dst, const void *host, size_t bytes) {
    BP_CUDA_ENTER(device);
    bp_cuda_impl *impl = bp_cuda_impl_of(device);
    if (bytes == 0) return BP_OK;
    if (ensure_staging(impl) != cudaSuccess) return upload_direct(device, impl, dst, host, bytes);
    for (size_t done = 0; done < bytes; done += BP_CUDA_STAGE_BYTES) {
        size_t len = bytes - done < BP_CUDA_STAGE_BYTES ? bytes - done : BP_CUDA_STAGE_BYTES;
        bp_status st =
            upload_chunk(device, impl, (char *)dst + done, (const char *)host + done, len);
        if (st != BP_OK) return st;
    }
    return BP_OK;
}

bp_status bp_cuda_download(bp_device *device, void *host, const void *src, size_t bytes) {
    BP_CUDA_ENTER(device);
    bp_cuda_impl *impl = bp_cuda_impl_of(device);
    if (bytes == 0) return BP_OK;
    bp_cu_note_launch();
    bp_cu_note_wait();
    BP_CUDA_TRY(device, cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, impl->stream),
                "download: cudaMemcpyAsync(device to host, %zu bytes from %p)", bytes, src);
    /* Also reports an asynchronous failure of any earlier work on the stream. */
    BP_CUDA_TRY(device, cudaStreamSynchronize(impl->stream),
                "download: cudaStreamSynchronize after copying %zu bytes", bytes);
    return BP_OK;
}

bp_status bp_cuda_copy(bp_device *device, void *dst, const void *src, size_t bytes) {
    BP_CUDA_ENTER(device);
    if (bytes == 0 || dst == src) return BP_OK;
    bp_cu_note_launch();
    BP_CUDA_TRY(
        device,
        cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, bp_cuda_impl_of(device)->stream),
        "copy: cudaMemcpyAsync(device to device, %zu bytes from %p to %p)", bytes, src, dst);
    return BP_OK;
}

/* ---- host memory and marks for a step that does not wait ---------------------------------- */

bp_status bp_cuda_host_alloc(bp_device *device, size_t bytes, void **out) {
    *out = NULL;
    BP_CUDA_ENTER(device);
    BP_CUDA_TRY(device, cudaHostAlloc(out, bytes, cudaHostAllocDefault), "cudaHostAlloc(%zu bytes)",
                bytes);
    return BP_OK;
}

void bp_cuda_host_free(bp_device *device, void *ptr) {
    if (!ptr || bp_cuda_enter(device) != BP_OK) return;
    if (cudaFreeHost(ptr) != cudaSuccess) (void)cudaGetLastError();
}

/* One copy between device memory and pinned host memory (host_alloc's), queued: nothing
 * waits. An upload's host bytes stay unchanged until the copy has run (the caller's mark says
 * when). */
static bp_status copy_async(bp_device *device, void *dst, const void *src, size_t bytes,
                            enum cudaMemcpyKind kind, const char *what) {
    BP_CUDA_ENTER(device);
    bp_cu_note_launch();
    BP_CUDA_TRY(device, cudaMemcpyAsync(dst, src, bytes, kind, bp_cuda_impl_of(device)->stream),
                "%s: cudaMemcpyAsync(%zu bytes from %p to %p)", what, bytes, src, dst);
    return BP_OK;
}

bp_status bp_cuda_download_async(bp_device *device, void *host, const void *src, size_t bytes) {
    return copy_async(device, host, src, bytes, cudaMemcpyDeviceToHost, "download_async");
}

bp_status bp_cuda_upload_async(bp_device *device, void *dst, const void *host, size_t bytes) {
    return copy_async(device, dst, host, bytes, cudaMemcpyHostToDevice, "upload_async");
}

bp_status bp_cuda_mark_create(bp_device *device, void **mark) {
    *mark = NULL;
    BP_CUDA_ENTER(device);
    cudaEvent_t ev = NULL;
    BP_CUDA_TRY(device, cudaEventCreateWithFlags(&ev, cudaEventDisableTiming),
                "cudaEventCreateWithFlags(disable timing)");
    *mark = ev;
    return BP_OK;
}

void bp_cuda_mark_free(bp_device *device, void *mark) {
    if (!mark || bp_cuda_enter(device) != BP_OK) return;
    if (cudaEventDestroy((cudaEvent_t)mark) != cudaSuccess) (void)cudaGetLastError();
}

bp_status bp_cuda_mark_record(bp_device *device, void *mark) {
    BP_CUDA_ENTER(device);
    BP_CUDA_TRY(device, cudaEventRecord((cudaEvent_t)mark, bp_cuda_impl_of(device)->stream),
                "mark: cudaEventRecord");
    return BP_OK;
}

/* A query never waits; cudaErrorNotReady is its "not yet", not a failure. */
bp_status bp_cuda_mark_done(bp_device *device, void *mark, int wait, int *done) {
    *done = 0;
    BP_CUDA_ENTER(device);
    if (wait) {
        bp_cu_note_wait();
        BP_CUDA_TRY(device, cudaEventSynchronize((cudaEvent_t)mark), "mark: cudaEventSynchronize");
        *done = 1;
        return BP_OK;
    }
    cudaError_t err = cudaEventQuery((cudaEvent_t)mark);
    if (err == cudaErrorNotReady) {
        (void)cudaGetLastError();
        return BP_OK;
    }
    BP_CUDA_TRY(device, err, "mark: cudaEventQuery");
    *done = 1;
    return BP_OK;
}
