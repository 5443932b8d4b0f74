/* Setting the thread's error detail. */
#ifndef BP_CORE_ERROR_H
#define BP_CORE_ERROR_H

#include "backprop/status.h"

#if defined(__GNUC__)
#define BP_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define BP_PRINTF(f, a)
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Records the detail for bp_last_error() and returns status, so a failure reads
 * `return bp_error(BP_ERR_INVALID_ARGUMENT, "bp_x: y is NULL");`. */
bp_status bp_error(bp_status status, const char *fmt, ...) BP_PRINTF(2, 3);

/* Stores status through out when out is not NULL; for constructors. */
static inline void bp_set_status(bp_status *out, bp_status status) {
    if (out) *out = status;
}

#ifdef __cplusplus
}
#endif

#endif
