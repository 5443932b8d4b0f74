/* The CPU backend: host memory is device memory, every op runs to completion before it
 * returns, so copies are memcpy and synchronize has nothing to wait for. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "core/error.h"
#include "core/hostmem.h"
#include "cpu/cpu_internal.h"

#define CPU_ALIGN ((size_t)64) /* a cache line, and the widest vector (AVX-512) */

static bp_status cpu_init(bp_device *device, int index) {
    if (index != 0)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "cpu init: device index %d, the CPU has only 0",
                        index);
    bp_cpu_state *s = calloc(1, sizeof *s);
    if (!s) return bp_error(BP_ERR_OUT_OF_MEMORY, "cpu init: no host memory");
    s->threads = device->options.threads > 0 ? device->options.threads : bp_cpu_default_threads();
    device->impl = s;
#if BP_HAVE_ONEDNN
    bp_status st = bp_dnnl_init(device);
    if (st != BP_OK) {
        free(s);
        device->impl = NULL;
        return st;
    }
#endif
    return BP_OK;
}

static void cpu_destroy(bp_device *device) {
#if BP_HAVE_ONEDNN
    if (device->impl) bp_dnnl_destroy(device);
#endif
    free(device->impl);
    device->impl = NULL;
}

static int cpu_device_count(void) {
    return 1;
}

static bp_status cpu_alloc(bp_device *device, size_t bytes, void **out) {
    (void)device;
    *out = NULL;
    /* aligned_alloc requires a size that is a multiple of the alignment. */
    if (bytes > SIZE_MAX - (CPU_ALIGN - 1))
        return bp_error(BP_ERR_OUT_OF_MEMORY, "cpu alloc: %zu bytes is too large", bytes);
    size_t rounded = (bytes + CPU_ALIGN - 1) / CPU_ALIGN * CPU_ALIGN;
    if (rounded == 0) rounded = CPU_ALIGN;
    void *p = aligned_alloc(CPU_ALIGN, rounded);
    if (!p)
        return bp_error(BP_ERR_OUT_OF_MEMORY, "cpu alloc: aligned_alloc(%zu bytes) failed",
                        rounded);
    *out = p;
    return BP_OK;
}

static void cpu_free(bp_device *device, void *ptr) {
    (void)device;
    free(ptr);
}

static bp_status cpu_upload(bp_device *device, void *dst, const void *host, size_t bytes) {
    (void)device;
    if (bytes) memcpy(dst, host, bytes);
    return BP_OK;
}

static bp_status cpu_download(bp_device *device, void *host, const void *src, size_t bytes) {
    (void)device;
    if (bytes) memcpy(host, src, bytes);
    return BP_OK;
}

/* memmove: a device-to-device copy onto itself or an overlapping view is not an error. */
static bp_status cpu_copy(bp_device *device, void *dst, const void *src, size_t bytes) {
    (void)device;
    if (bytes) memmove(dst, src, bytes);
    return BP_OK;
}

static bp_status cpu_fill(bp_device *device, float *dst, float value, size_t n) {
    int nt = bp_cpu_threads(device);
#pragma omp parallel for schedule(static) num_threads(nt) if (n >= BP_CPU_PAR_MIN)
    for (size_t i = 0; i < n; ++i)
        dst[i] = value;
    return BP_OK;
}

static bp_status cpu_synchronize(bp_device *device) {
    (void)device;
    return BP_OK;
}

static size_t cpu_memory_free(bp_device *device, const char **source) {
    (void)device;
    *source = "MemAvailable in /proc/meminfo";
    return bp_host_memory_available();
}

/* The CPU runs every op before the call returns: host memory is plain memory, a copy is done
 * when queued and every mark is passed when recorded. */
static bp_status cpu_host_alloc(bp_device *device, size_t bytes, void **out) {
    (void)device;
    *out = malloc(bytes);
    return *out ? BP_OK
                : bp_error(BP_ERR_OUT_OF_MEMORY, "cpu host_alloc: no memory for %zu bytes", bytes);
}

static bp_status cpu_mark_create(bp_device *device, void **mark) {
    static char passed; /* any non-NULL address: marks hold nothing */
    (void)device;
    *mark = &passed;
    return BP_OK;
}

static void cpu_mark_free(bp_device *device, void *mark) {
    (void)device;
    (void)mark;
}

static bp_status cpu_mark_record(bp_device *device, void *mark) {
    (void)device;
    (void)mark;
    return BP_OK;
}

static bp_status cpu_mark_done(bp_device *device, void *mark, int wait, int *done) {
    (void)device;
    (void)mark;
    (void)wait;
    *done = 1;
    return BP_OK;
}

const bp_backend_ops bp_cpu_ops = {
    .name = "cpu",
    .init = cpu_init,
    .destroy = cpu_destroy,
    .device_count = cpu_device_count,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_upload,
    .download = cpu_download,
    .copy = cpu_copy,
    .fill = cpu_fill,
    .synchronize = cpu_synchronize,
    .memory_free = cpu_memory_free,
    .gemm = bp_cpu_gemm,
    .bias_act_forward = bp_cpu_bias_act_forward,
    .act_backward = bp_cpu_act_backward,
    .col_sum = bp_cpu_col_sum,
    .softmax = bp_cpu_softmax,
    .softmax_xent = bp_cpu_softmax_xent,
    .class_match = bp_cpu_class_match,
    .mse = bp_cpu_mse,
    .bce_logits = bp_cpu_bce_logits,
    .check_labels = bp_cpu_check_labels,
    .sum = bp_cpu_sum,
    .sum_squares = bp_cpu_sum_squares,
    .dropout = bp_cpu_dropout,
    .update = bp_cpu_update,
    .check_labels_into = bp_cpu_check_labels_into,
    .step_decide = bp_cpu_step_decide,
    .host_alloc = cpu_host_alloc,
    .host_free = cpu_free,
    .download_async = cpu_download,
    .upload_async = cpu_upload,
    .mark_create = cpu_mark_create,
    .mark_free = cpu_mark_free,
    .mark_record = cpu_mark_record,
    .mark_done = cpu_mark_done,
    .gemm_ex = bp_cpu_gemm_ex,
    .gemm_scratch = bp_cpu_gemm_scratch,
    .cast = bp_cpu_cast,
    .bias_act_forward_ex = bp_cpu_bias_act_forward_ex,
    .act_backward_ex = bp_cpu_act_backward_ex,
    .norm_forward = bp_cpu_norm_forward,
    .norm_backward = bp_cpu_norm_backward,
    .add = bp_cpu_add,
#if BP_HAVE_ONEDNN
    .gemm_plan = bp_dnnl_gemm_plan,
    .gemm_plan_free = bp_dnnl_gemm_plan_free,
#endif
};
