#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char last_error[1024];

bp_status bp_error(bp_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return status;
}

const char *bp_last_error(void) {
    return last_error;
}

void bp_clear_error(void) {
    last_error[0] = '\0';
}

const char *bp_status_string(bp_status status) {
    switch (status) {
    case BP_OK:
        return "ok";
    case BP_ERR_INVALID_ARGUMENT:
        return "invalid argument";
    case BP_ERR_SHAPE_MISMATCH:
        return "shape mismatch";
    case BP_ERR_OUT_OF_MEMORY:
        return "out of memory";
    case BP_ERR_DEVICE:
        return "device error";
    case BP_ERR_IO:
        return "I/O error";
    case BP_ERR_CORRUPT_FILE:
        return "corrupt file";
    case BP_ERR_UNSUPPORTED:
        return "unsupported";
    case BP_ERR_NON_FINITE:
        return "non-finite value";
    case BP_ERR_REMOTE:
        return "another rank failed";
    }
    return "unknown status";
}
