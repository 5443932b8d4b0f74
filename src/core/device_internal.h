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

#ifdef __cplusplus
}
#endif

#endif
