/* The tensor handle, for the core. */
#ifndef BP_CORE_TENSOR_INTERNAL_H
#define BP_CORE_TENSOR_INTERNAL_H

#include "core/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

struct bp_tensor {
    bp_device *device;
    bp_dtype dtype;
    int64_t rows, cols;
    void *data; /* device memory, rows*cols elements of 4 bytes */
    size_t bytes;
    int is_view; /* shares another tensor's memory: freeing it frees the handle only */
};

/* Checks a tensor argument of call `fn` named `name`: not NULL, on device, of dtype, with
 * `cols` columns (cols < 0: any) and at most max_rows rows. */
bp_status bp_check_tensor(const char *fn, const char *name, const bp_tensor *t,
                          const bp_device *device, bp_dtype dtype, int64_t cols, int64_t max_rows);

#ifdef __cplusplus
}
#endif

#endif
