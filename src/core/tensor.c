#include <stdlib.h>

#include "core/device_internal.h"
#include "core/error.h"
#include "core/tensor_internal.h"

/* Rows*cols 4-byte elements must fit a size_t and an int for BLAS. */
#define BP_MAX_DIM ((int64_t)1 << 31)

bp_tensor *bp_tensor_create(bp_device *device, bp_dtype dtype, int64_t rows, int64_t cols,
                            bp_status *status) {
    bp_status st = BP_OK;
    if (!device)
        st = bp_error(BP_ERR_INVALID_ARGUMENT, "bp_tensor_create: device is NULL");
    else if (dtype != BP_F32 && dtype != BP_I32)
        st = bp_error(BP_ERR_INVALID_ARGUMENT, "bp_tensor_create: unknown dtype %d", (int)dtype);
    else if (rows <= 0 || cols <= 0 || rows >= BP_MAX_DIM || cols >= BP_MAX_DIM)
        st = bp_error(BP_ERR_INVALID_ARGUMENT,
                      "bp_tensor_create: shape [%lld, %lld] is invalid; each size must be in "
                      "[1, 2^31)",
                      (long long)rows, (long long)cols);
    if (st != BP_OK) {
        bp_set_status(status, st);
        return NULL;
    }
    bp_tensor *t = calloc(1, sizeof *t);
    if (!t) {
        bp_set_status(status, bp_error(BP_ERR_OUT_OF_MEMORY, "bp_tensor_create: no host memory"));
        return NULL;
    }
    t->device = device;
    t->dtype = dtype;
    t->rows = rows;
    t->cols = cols;
    t->bytes = (size_t)rows * (size_t)cols * 4;
    st = bp_dev_alloc(device, t->bytes, "bp_tensor_create", &t->data);
    if (st != BP_OK) {
        free(t);
        bp_set_status(status, st);
        return NULL;
    }
    bp_set_status(status, BP_OK);
    return t;
}

void bp_tensor_free(bp_tensor *tensor) {
    if (!tensor) return;
    if (!tensor->is_view) bp_dev_free(tensor->device, tensor->data, tensor->bytes);
    free(tensor);
}

bp_tensor *bp_tensor_view_rows(bp_tensor *base, int64_t first, int64_t count, bp_status *status) {
    const char *fn = "bp_tensor_view_rows";
    bp_status st = BP_OK;
    if (!base)
        st = bp_error(BP_ERR_INVALID_ARGUMENT, "%s: base is NULL", fn);
    else if (first < 0 || count < 1 || first > base->rows || count > base->rows - first)
        st = bp_error(BP_ERR_SHAPE_MISMATCH,
                      "%s: rows [%lld, %lld) are not within the tensor's %lld rows (count must be "
                      "at least 1)",
                      fn, (long long)first, (long long)first + (long long)count,
                      (long long)base->rows);
    bp_tensor *v = st == BP_OK ? malloc(sizeof *v) : NULL;
    if (st == BP_OK && !v) st = bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no host memory", fn);
    bp_set_status(status, st);
    if (st != BP_OK) return NULL;
    *v = *base;
    v->is_view = 1;
    v->rows = count;
    v->bytes = (size_t)count * (size_t)base->cols * 4;
    v->data = (char *)base->data + (size_t)first * (size_t)base->cols * 4;
    return v;
}

int64_t bp_tensor_rows(const bp_tensor *tensor) {
    return tensor ? tensor->rows : 0;
}

int64_t bp_tensor_cols(const bp_tensor *tensor) {
    return tensor ? tensor->cols : 0;
}

bp_dtype bp_tensor_dtype(const bp_tensor *tensor) {
    return tensor ? tensor->dtype : BP_F32;
}

bp_device *bp_tensor_device(const bp_tensor *tensor) {
    return tensor ? tensor->device : NULL;
}

static bp_status check_copy(const char *fn, const bp_tensor *t, const void *host, size_t count) {
    if (!t) return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: tensor is NULL", fn);
    if (!host) return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: host pointer is NULL", fn);
    size_t n = (size_t)t->rows * (size_t)t->cols;
    if (count != n)
        return bp_error(BP_ERR_SHAPE_MISMATCH,
                        "%s: count is %zu, the tensor [%lld, %lld] holds %zu elements", fn, count,
                        (long long)t->rows, (long long)t->cols, n);
    return BP_OK;
}

bp_status bp_tensor_upload(bp_tensor *tensor, const void *host, size_t count) {
    bp_status st = check_copy("bp_tensor_upload", tensor, host, count);
    if (st != BP_OK) return st;
    return tensor->device->ops->upload(tensor->device, tensor->data, host, tensor->bytes);
}

bp_status bp_tensor_download(const bp_tensor *tensor, void *host, size_t count) {
    bp_status st = check_copy("bp_tensor_download", tensor, host, count);
    if (st != BP_OK) return st;
    return tensor->device->ops->download(tensor->device, host, tensor->data, tensor->bytes);
}

static const char *dtype_name(bp_dtype d) {
    return d == BP_F32 ? "f32" : "i32";
}

bp_status bp_check_tensor(const char *fn, const char *name, const bp_tensor *t,
                          const bp_device *device, bp_dtype dtype, int64_t cols, int64_t max_rows) {
    if (!t) return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn, name);
    if (t->device != device)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: %s is on %s, the model is on %s", fn, name,
                        t->device->name, device->name);
    if (t->dtype != dtype)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: %s has dtype %s, expected %s", fn, name,
                        dtype_name(t->dtype), dtype_name(dtype));
    if (cols >= 0 && t->cols != cols)
        return bp_error(BP_ERR_SHAPE_MISMATCH, "%s: %s has %lld columns, expected %lld", fn, name,
                        (long long)t->cols, (long long)cols);
    if (t->rows > max_rows)
        return bp_error(BP_ERR_SHAPE_MISMATCH,
                        "%s: %s has %lld rows, more than the model's max_batch %lld", fn, name,
                        (long long)t->rows, (long long)max_rows);
    return BP_OK;
}
