/* Device memory through the core: every allocation is counted and held to the memory limit. */
#ifndef BP_CORE_DEVICE_INTERNAL_H
#define BP_CORE_DEVICE_INTERNAL_H

#include <stddef.h>

#include "core/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Allocates bytes (> 0) on device; `what` names the buffer in the error message. */
bp_status bp_dev_alloc(bp_device *device, size_t bytes, const char *what, void **out);

/* Frees a bp_dev_alloc'd block of `bytes`; NULL is allowed. */
void bp_dev_free(bp_device *device, void *ptr, size_t bytes);

/* One buffer of a planned set of allocations, for bp_dev_check_fits. */
typedef struct bp_mem_part {
    const char *name; /* "parameters" */
    size_t bytes;
    int host; /* held in host memory (a staging copy): counted on the CPU only */
} bp_mem_part;

/* Before allocating the parts: when the device's options.check_memory is 1, their sum
 * (overflow-checked) is compared with the memory the device reports free (its backend's
 * memory_free: MemAvailable on the CPU, cudaMemGetInfo and the pool's unused blocks on CUDA; a
 * device that cannot tell is not checked); BP_ERR_OUT_OF_MEMORY naming fn, the bytes needed
 * and free and the largest part when it does not fit. Nothing is allocated. The memory limit
 * is not this check's: bp_dev_alloc holds it exactly. */
bp_status bp_dev_check_fits(bp_device *device, const char *fn, const bp_mem_part *parts, int n);

#ifdef __cplusplus
}
#endif

#endif
