/* A module's view of the core: bp_error forwards to the host's error slot, so a message set
 * inside a module is the one the caller's thread reads with bp_last_error(). Linked into every
 * module (libbackprop_cuda.so, libbackprop_mpi.so), never into the core, which has its own. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "backprop/version.h"
#include "core/error.h"
#include "core/module.h"

static const bp_module_host *host;

int bp_module_bind(const bp_module_host *h) {
    if (!h || h->abi != BP_MODULE_ABI || !h->version || strcmp(h->version, BP_VERSION_STRING) != 0)
        return 0;
    host = h;
    return 1;
}

bp_status bp_error(bp_status status, const char *fmt, ...) {
    char detail[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    return host ? host->set_error(status, detail) : status;
}
