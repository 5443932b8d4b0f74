/* Mapping CUDA and cuBLAS statuses to bp_status with a message naming the failing call. */
#include <stdarg.h>
#include <stdio.h>

#include "cuda/cuda_internal.h"

/* Records "<call> on <device>: <message> (<name>)" as status, the call formatted from fmt and
 * ap. A non-sticky CUDA error stays recorded until read; read it now so the cudaGetLastError()
 * after some later launch does not report this failure a second time. A sticky error (the
 * context is lost) keeps coming back from every call, which is what we want. */
static bp_status fail_v(const bp_device *device, bp_status status, const char *message,
                        const char *name, const char *fmt, va_list ap) BP_PRINTF(5, 0);

static bp_status fail_v(const bp_device *device, bp_status status, const char *message,
                        const char *name, const char *fmt, va_list ap) {
    char call[256];
    vsnprintf(call, sizeof call, fmt, ap);
    (void)cudaGetLastError();
    return bp_error(status, "%s on %s: %s (%s)", call, device->name, message, name);
}

bp_status bp_cuda_fail(const bp_device *device, cudaError_t err, const char *fmt, ...) {
    bp_status status = err == cudaErrorMemoryAllocation ? BP_ERR_OUT_OF_MEMORY : BP_ERR_DEVICE;
    va_list ap;
    va_start(ap, fmt);
    status = fail_v(device, status, cudaGetErrorString(err), cudaGetErrorName(err), fmt, ap);
    va_end(ap);
    return status;
}

bp_status bp_cublas_fail(const bp_device *device, cublasStatus_t st, const char *fmt, ...) {
    bp_status status = BP_ERR_DEVICE;
    if (st == CUBLAS_STATUS_ALLOC_FAILED) status = BP_ERR_OUT_OF_MEMORY;
    if (st == CUBLAS_STATUS_INVALID_VALUE) status = BP_ERR_INVALID_ARGUMENT;
    va_list ap;
    va_start(ap, fmt);
    status = fail_v(device, status, cublasGetStatusString(st), cublasGetStatusName(st), fmt, ap);
    va_end(ap);
    return status;
}
