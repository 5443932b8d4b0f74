/* Status codes and error details.
 *
 * Every fallible call returns a bp_status. On failure, bp_last_error() returns a message for the
 * calling thread that names the call, the argument, what was expected and what came.
 *
 * Threads: the detail is per thread, so an error on one thread never shows on another, and
 * these calls (like bp_status_string and the enum names) may run on any thread at any time. */
#ifndef BACKPROP_STATUS_H
#define BACKPROP_STATUS_H

#include "export.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum bp_status {
    BP_OK = 0,
    BP_ERR_INVALID_ARGUMENT = -1,
    BP_ERR_SHAPE_MISMATCH = -2,
    BP_ERR_OUT_OF_MEMORY = -3,
    BP_ERR_DEVICE = -4,
    BP_ERR_IO = -5,
    BP_ERR_CORRUPT_FILE = -6,
    BP_ERR_UNSUPPORTED = -7,
    BP_ERR_NON_FINITE = -8,
    BP_ERR_REMOTE = -9 /* another rank of a data-parallel group failed (distributed.h) */
} bp_status;

/* A short, static description of a status ("invalid argument"). Never NULL. */
BP_API const char *bp_status_string(bp_status status);

/* The detail of the last failure on this thread; "" when none. The pointer stays valid until the
 * next call into the library on the same thread. */
BP_API const char *bp_last_error(void);

/* Forget the last error of this thread. */
BP_API void bp_clear_error(void);

#ifdef __cplusplus
}
#endif

#endif
