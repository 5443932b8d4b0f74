/* bp_device_matrix_engine: what runs a device's matrix products in each precision. */
#include <stdio.h>

#include "core/error.h"
#include "cpu/cpu_internal.h"

#ifndef BP_BUILD_BLAS
#define BP_BUILD_BLAS "CBLAS"
#endif

bp_status bp_device_matrix_engine(bp_device *device, bp_precision precision, char *buf,
                                  size_t size) {
    const char *fn = "bp_device_matrix_engine";
    if (!device || !buf || size == 0)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: %s", fn,
                        !device ? "device is NULL"
                        : !buf  ? "buf is NULL"
                                : "size is 0");
    if ((unsigned)precision >= BP_PRECISION_COUNT_)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: precision %d is not a precision", fn,
                        (int)precision);
    buf[0] = '\0';
    int bf16 = precision == BP_PRECISION_BF16, tf32 = precision == BP_PRECISION_TF32;
    if (device->kind != BP_DEVICE_CPU) {
        snprintf(buf, size, "cuBLASLt (%s)",
                 bf16   ? "bf16 products, fp32 accumulation"
                 : tf32 ? "TF32 tensor cores, fp32 accumulation"
                        : "fp32");
        return BP_OK;
    }
#if BP_HAVE_ONEDNN
    return bp_dnnl_describe(device, bf16, tf32, buf, size);
#else
    if (precision == BP_PRECISION_FP32)
        snprintf(buf, size, "%s sgemm (fp32), threads: %d", BP_BUILD_BLAS, bp_cpu_threads(device));
    else
        snprintf(buf, size, "%s sgemm on %s operands widened to fp32, threads: %d", BP_BUILD_BLAS,
                 bp_precision_name(precision), bp_cpu_threads(device));
    return BP_OK;
#endif
}
