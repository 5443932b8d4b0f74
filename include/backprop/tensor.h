/* Tensors: 2-D row-major arrays ([rows, cols]) on a device.
 *
 * A tensor owns its memory, except a row view (bp_tensor_view_rows), which shares the rows of
 * another tensor. Data moves between host and device only through the copy calls.
 *
 * Lifetime: a tensor is freed before its device; a view before its base.
 * Threads: a tensor is used by one thread at a time (with the device it lives on). */
#ifndef BACKPROP_TENSOR_H
#define BACKPROP_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "device.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bp_tensor bp_tensor;

typedef enum bp_dtype {
    BP_F32 = 0, /* features, targets for MSE and BCE */
    BP_I32 = 1  /* class indices for cross-entropy: [rows, 1] */
} bp_dtype;

/* "f32", "i32" (the name and parse pair of device.h). */
BP_API const char *bp_dtype_name(bp_dtype dtype);
BP_API bp_status bp_dtype_parse(const char *text, bp_dtype *out);

/* A rows x cols tensor of dtype on device, uninitialised. NULL and *status on failure. */
BP_API bp_tensor *bp_tensor_create(bp_device *device, bp_dtype dtype, int64_t rows, int64_t cols,
                                   bp_status *status);
BP_API void bp_tensor_free(bp_tensor *tensor);

/* A tensor of rows [first, first + count) of base, sharing base's memory: every call that takes a
 * tensor takes it (a forward over a short last batch, a micro-batch), and what is written
 * through it lands in base. Freeing the view frees only the handle; base must outlive it (free
 * the views first). A view of a view is a view of its base. NULL and *status when the rows do
 * not lie within base (count >= 1). */
BP_API bp_tensor *bp_tensor_view_rows(bp_tensor *base, int64_t first, int64_t count,
                                      bp_status *status);

BP_API int64_t bp_tensor_rows(const bp_tensor *tensor);
BP_API int64_t bp_tensor_cols(const bp_tensor *tensor);
BP_API bp_dtype bp_tensor_dtype(const bp_tensor *tensor);
BP_API bp_device *bp_tensor_device(const bp_tensor *tensor);

/* Copies count elements (must equal rows*cols) from host memory into the tensor. */
BP_API bp_status bp_tensor_upload(bp_tensor *tensor, const void *host, size_t count);

/* Copies the whole tensor (count must equal rows*cols) into host memory; waits for the device. */
BP_API bp_status bp_tensor_download(const bp_tensor *tensor, void *host, size_t count);

#ifdef __cplusplus
}
#endif

#endif
