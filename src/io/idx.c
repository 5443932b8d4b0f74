/* IDX files (the MNIST format): the magic 00 00 <type> <rank>, then rank big-endian uint32
 * sizes, then the elements in C order. Only unsigned bytes (type 0x08) are read. */
#include <limits.h>
#include <stdlib.h>

#include "core/checked.h"
#include "io/io_internal.h"

#define IDX_UBYTE        0x08
#define IDX_MAX_ELEMENTS (UINT64_C(1) << 48)

typedef struct idx_header {
    int rank;
    uint32_t dims[255];
    uint64_t count; /* elements: the product of the sizes */
} idx_header;

static uint32_t be32(const unsigned char *b) {
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | (uint32_t)b[3];
}

static const char *idx_type_name(int type) {
    switch (type) {
    case 0x08:
        return "unsigned byte";
    case 0x09:
        return "signed byte";
    case 0x0B:
        return "int16";
    case 0x0C:
        return "int32";
    case 0x0D:
        return "float32";
    case 0x0E:
        return "float64";
    }
    return NULL;
}

/* The 4-byte magic: zero, zero, the element type, the rank (rank_min..rank_max wanted). */
static bp_status idx_check_magic(bp_reader *r, const unsigned char m[4], const char *what,
                                 int rank_min, int rank_max) {
    uint32_t magic = be32(m);
    if (m[0] != 0 || m[1] != 0)
        return bp_reader_error(r, BP_ERR_CORRUPT_FILE, 0,
                               "magic number 0x%08x is not IDX (expected 0x00000803 for images, "
                               "0x00000801 for labels)",
                               magic);
    const char *type = idx_type_name(m[2]);
    if (!type)
        return bp_reader_error(r, BP_ERR_CORRUPT_FILE, 2,
                               "magic number 0x%08x has element type 0x%02x, not an IDX type",
                               magic, m[2]);
    if (m[2] != IDX_UBYTE)
        return bp_reader_error(r, BP_ERR_UNSUPPORTED, 2,
                               "magic number 0x%08x has element type 0x%02x (%s); %s must be "
                               "unsigned bytes (0x08)",
                               magic, m[2], type, what);
    if (m[3] < rank_min || m[3] > rank_max)
        return bp_reader_error(r, BP_ERR_CORRUPT_FILE, 3,
                               "magic number 0x%08x has rank %d; %s need rank %s%d (magic "
                               "0x%08x)",
                               magic, m[3], what, rank_min == rank_max ? "" : ">= ", rank_min,
                               0x800u | (unsigned)rank_min);
    return BP_OK;
}

static bp_status idx_read_header(bp_reader *r, const char *what, int rank_min, int rank_max,
                                 idx_header *h) {
    unsigned char m[4], sizes[4 * 255];
    bp_status st = bp_reader_read_exact(r, m, 4, "IDX magic number");
    if (st == BP_OK) st = idx_check_magic(r, m, what, rank_min, rank_max);
    if (st != BP_OK) return st;
    h->rank = m[3];
    st = bp_reader_read_exact(r, sizes, 4 * (size_t)h->rank, "IDX dimension sizes");
    if (st != BP_OK) return st;
    h->count = 1;
    for (int i = 0; i < h->rank; ++i) {
        h->dims[i] = be32(sizes + 4 * i);
        if (h->dims[i] == 0)
            return bp_reader_error(r, BP_ERR_CORRUPT_FILE, 4 + 4 * (uint64_t)i,
                                   "dimension %d has size 0; %s must not be empty", i, what);
        /* 2^48 elements is far beyond any real file; each step is checked, so a product
         * that wraps (65537 x 65536 x 4294901761 = 2^64 + 65536) is refused too. */
        if (!bp_mul_u64(h->count, h->dims[i], &h->count) || h->count > IDX_MAX_ELEMENTS)
            return bp_reader_error(r, BP_ERR_CORRUPT_FILE, 4 + 4 * (uint64_t)i,
                                   "dimension %d (size %u) takes the product of the sizes over "
                                   "2^48 elements",
                                   i, h->dims[i]);
    }
    if (h->count / h->dims[0] > INT_MAX)
        return bp_reader_error(r, BP_ERR_UNSUPPORTED, 8,
                               "one sample has %llu elements, more than %d",
                               (unsigned long long)(h->count / h->dims[0]), INT_MAX);
    return BP_OK;
}

/* Both headers, checked against each other before any data is read. */
static bp_status idx_read_headers(bp_reader *ri, bp_reader *rl, idx_header *hi, idx_header *hl) {
    bp_status st = idx_read_header(ri, "images", 2, 255, hi);
    if (st == BP_OK) st = idx_read_header(rl, "labels", 1, 1, hl);
    if (st == BP_OK && hl->dims[0] != hi->dims[0])
        st = bp_reader_error(rl, BP_ERR_CORRUPT_FILE, 4, "%u labels, but '%s' has %u images",
                             hl->dims[0], ri->path, hi->dims[0]);
    return st;
}

static bp_dataset *idx_build(const char *fn, const unsigned char *pixels,
                             const unsigned char *labels, const idx_header *hi, bp_status *status) {
    int64_t n = hi->dims[0];
    int features = (int)(hi->count / hi->dims[0]);
    bp_dataset *d = bp_dataset_new(fn, n, features, BP_TARGET_CLASS, 1, status);
    if (!d) return NULL;
    for (uint64_t i = 0; i < hi->count; ++i)
        d->x[i] = pixels[i];
    int32_t *y = d->y;
    for (int64_t i = 0; i < n; ++i)
        y[i] = labels[i];
    bp_dataset_count_classes(d);
    return d;
}

bp_dataset *bp_dataset_load_idx(const char *images_path, const char *labels_path,
                                bp_status *status) {
    bp_source images = {images_path, images_path ? images_path : "(null)"};
    bp_source labels = {labels_path, labels_path ? labels_path : "(null)"};
    return bp_io_load_idx("bp_dataset_load_idx", images, labels, status);
}

bp_dataset *bp_io_load_idx(const char *fn, bp_source images, bp_source labels_src,
                           bp_status *status) {
    bp_reader ri = {0}, rl = {0};
    void *pixels = NULL, *labels = NULL;
    idx_header hi, hl;
    bp_dataset *d = NULL;
    bp_status st = bp_reader_open_source(&ri, fn, images, 1);
    if (st == BP_OK) st = bp_reader_open_source(&rl, fn, labels_src, 1);
    if (st == BP_OK) st = idx_read_headers(&ri, &rl, &hi, &hl);
    if (st == BP_OK) st = bp_reader_read_body(&ri, hi.count, "image data", &pixels);
    if (st == BP_OK) st = bp_reader_read_body(&rl, hl.count, "label data", &labels);
    if (st == BP_OK) d = idx_build(fn, pixels, labels, &hi, &st);
    free(pixels);
    free(labels);
    bp_reader_close(&ri);
    bp_reader_close(&rl);
    bp_set_status(status, st);
    return d;
}
