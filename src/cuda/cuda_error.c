/* Mapping CUDA and cuBLAS statuses to bp_status with a message naming the failing call. */
#include <stdarg.h>
#include <stdio.h>

#include "cuda/cuda_internal.h"

bp_status bp_cuda_fail(const bp_device *device, cudaError_t err, const char *fmt, ...) {
    char call[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(call, sizeof call, fmt, ap);
    va_end(ap);
    /* A non-sticky error stays recorded until read; read it now so the cudaGetLastError()
     * after some later launch does not report this failure a second time. A sticky error (the
     * context is lost) keeps coming back from every call, which is what we want. */
    (void)cudaGetLastError();
    bp_status status = err == cudaErrorMemoryAllocation ? BP_ERR_OUT_OF_MEMORY : BP_ERR_DEVICE;
    return bp_error(status, "%s on %s: %s (%s)", call, device->name, cudaGetErrorString(err),
                    cudaGetErrorName(err));
}

bp_status bp_cublas_fail(const bp_device *device, cublasStatus_t st, const char *fmt, ...) {
    char call[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(call, sizeof call, fmt, ap);
    va_end(ap);
    (void)cudaGetLastError();
    bp_status status = BP_ERR_DEVICE;
    if (st == CUBLAS_STATUS_ALLOC_FAILED) status = BP_ERR_OUT_OF_MEMORY;
    if (st == CUBLAS_STATUS_INVALID_VALUE) status = BP_ERR_INVALID_ARGUMENT;
    return bp_error(status, "%s on %s: %s (%s)", call, device->name, cublasGetStatusString(st),
                    cublasGetStatusName(st));
}
