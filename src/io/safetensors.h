/* The safetensors file format: a reader that trusts nothing in the file, and an atomic writer.
 *
 * Layout: an 8-byte little-endian header length N, N bytes of JSON
 *   {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}, ...,
 *    "__metadata__": {"key": "value", ...}}
 * (padded with spaces), then the data buffer. Offsets are relative to the buffer; the tensors
 * cover it exactly, without gaps or overlaps. Data is little-endian, like every host we build
 * for.
 *
 * Errors name the file and the place: "m.ckpt: tensor '2.weight': data_offsets [0, 4000]
 * exceed the 3000-byte buffer" (BP_ERR_CORRUPT_FILE), or the file and the errno text
 * (BP_ERR_IO). */
#ifndef BP_IO_SAFETENSORS_H
#define BP_IO_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "backprop/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BP_ST_MAX_DIMS   8
#define BP_ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000) /* bytes of JSON we agree to read */

typedef enum bp_st_dtype { BP_ST_F32 = 0, BP_ST_I32 = 1, BP_ST_I64 = 2 } bp_st_dtype;

/* "F32", "I32", "I64". */
const char *bp_st_dtype_name(bp_st_dtype dtype);

typedef struct bp_st_tensor {
    char *name;
    bp_st_dtype dtype;
    int ndim;
    uint64_t shape[BP_ST_MAX_DIMS];
    uint64_t begin, end; /* byte offsets into the data buffer; end - begin = elements * size */
} bp_st_tensor;

typedef struct bp_st_kv {
    char *key, *value;
} bp_st_kv;

/* An open file whose header has been parsed and checked against the file size. */
typedef struct bp_st_file {
    char *path;
    FILE *fp;
    uint64_t data_start, data_size; /* the buffer's place in the file */
    bp_st_tensor *tensors;          /* sorted by name */
    size_t n_tensors;
    bp_st_kv *meta; /* sorted by key */
    size_t n_meta;
} bp_st_file;

/* Opens and validates path. *out is NULL on failure. */
bp_status bp_st_open(const char *path, bp_st_file **out);
void bp_st_close(bp_st_file *file);

/* NULL when absent. */
const bp_st_tensor *bp_st_find(const bp_st_file *file, const char *name);
const char *bp_st_get_meta(const bp_st_file *file, const char *key);

/* Elements of a tensor (the product of its shape; 1 for a scalar). */
uint64_t bp_st_elements(const bp_st_tensor *tensor);

/* Reads a tensor's bytes (bytes must be end - begin) into dst. */
bp_status bp_st_read(bp_st_file *file, const bp_st_tensor *tensor, void *dst, size_t bytes);

/* One tensor to write: data holds elements * dtype size bytes. */
typedef struct bp_st_entry {
    const char *name;
    bp_st_dtype dtype;
    int ndim;
    uint64_t shape[BP_ST_MAX_DIMS];
    const void *data;
} bp_st_entry;

typedef struct bp_st_meta_entry {
    const char *key, *value;
} bp_st_meta_entry;

/* Writes the tensors (in the given order) and the metadata to path atomically (io/atomic.h):
 * into an unnamed file (O_TMPFILE) or "<path>.tmp.<pid>" beside it, flushed and fsync'd,
 * renamed over path, then the directory fsync'd; stale temporaries of path left by dead
 * writers are removed first. On failure the temporary file is removed and a previous file at
 * path is untouched. Names and keys must be valid UTF-8 and unique. */
bp_status bp_st_save(const char *path, const bp_st_entry *tensors, size_t n_tensors,
                     const bp_st_meta_entry *meta, size_t n_meta);

/* Test seam: the calls an atomic save makes, so tests can inject a full disk or a failing
 * fsync or rename. Not thread-safe to change; the defaults are fwrite, fsync and rename. */
typedef struct bp_st_io_hooks {
    size_t (*write)(const void *data, size_t size, size_t count, FILE *fp);
    int (*fsync)(int fd);
    int (*rename)(const char *from, const char *to);
} bp_st_io_hooks;

extern bp_st_io_hooks bp_st_io;

#ifdef __cplusplus
}
#endif

#endif
