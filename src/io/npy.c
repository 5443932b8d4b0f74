/* NumPy .npy files: "\x93NUMPY", the version (major, minor), the header length (uint16 little
 * endian for 1.x, uint32 for 2.x and 3.x), a Python dict literal
 * {'descr': '<f4', 'fortran_order': False, 'shape': (n, ...), } padded with spaces, then the
 * elements in C order. */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <errno.h>
#include <unistd.h>

#include "core/checked.h"
#include "io/atomic.h"
#include "io/io_internal.h"

#define NPY_MAX_HEADER   65536 /* NumPy itself refuses headers over 10000 bytes by default */
#define NPY_MAX_RANK     32    /* NumPy's own limit */
#define NPY_MAX_ELEMENTS (UINT64_C(1) << 48) /* far beyond any real file */

typedef struct npy_header {
    char kind;    /* 'f' float, 'i' signed, 'u' unsigned */
    int itemsize; /* bytes per element */
    int big;      /* 1: the bytes are big-endian */
    int rank;
    uint64_t dims[NPY_MAX_RANK];
    uint64_t count; /* elements */
    uint64_t bytes; /* of the data: count * itemsize */
    uint64_t data_offset;
    char descr[32];
} npy_header;

/* The header text being parsed: the cursor and the file offset of its first byte, for errors. */
typedef struct npy_text {
    bp_reader *r;
    const char *start, *p;
    uint64_t base;
} npy_text;

static bp_status text_error(const npy_text *t, const char *what) {
    return bp_reader_error(t->r, BP_ERR_CORRUPT_FILE, t->base + (uint64_t)(t->p - t->start),
                           "header: %s", what);
}

static void skip_ws(npy_text *t) {
    while (*t->p == ' ' || *t->p == '\t' || *t->p == '\n' || *t->p == '\r')
        t->p++;
}

/* A quoted string ('...' or "..."); *s and *len span its contents. */
static bp_status parse_string(npy_text *t, const char **s, size_t *len) {
    char q = *t->p;
    if (q != '\'' && q != '"') return text_error(t, "expected a quoted string");
    const char *end = strchr(t->p + 1, q);
    if (!end) return text_error(t, "unterminated string");
    *s = t->p + 1;
    *len = (size_t)(end - *s);
    t->p = end + 1;
    return BP_OK;
}

static int take(npy_text *t, const char *word) {
    size_t n = strlen(word);
    if (strncmp(t->p, word, n) != 0) return 0;
    t->p += n;
    return 1;
}

/* (d0, d1, ...): non-negative integers, an optional trailing comma, Python 2's L suffix. */
static bp_status parse_shape(npy_text *t, npy_header *h) {
    if (!take(t, "(")) return text_error(t, "'shape' is not a tuple");
    h->rank = 0;
    for (skip_ws(t); *t->p != ')'; skip_ws(t)) {
        if (h->rank == NPY_MAX_RANK) return text_error(t, "'shape' has more than 32 sizes");
        if (*t->p < '0' || *t->p > '9') return text_error(t, "'shape' holds a non-integer");
        char *end;
        unsigned long long v = strtoull(t->p, &end, 10);
        if (v >= (UINT64_C(1) << 48)) return text_error(t, "a 'shape' size is too large");
        h->dims[h->rank++] = v;
        t->p = end;
        if (*t->p == 'L') t->p++;
        skip_ws(t);
        if (*t->p == ',')
            t->p++;
        else if (*t->p != ')')
            return text_error(t, "expected ',' or ')' in 'shape'");
    }
    t->p++;
    return BP_OK;
}

/* The dtype string: byte order, kind, size ("<f4", "|u1"). Anything else is unsupported. */
static bp_status parse_descr(npy_text *t, npy_header *h, const char *s, size_t len) {
    uint16_t one = 1;
    int host_big = *(const unsigned char *)&one == 0;
    snprintf(h->descr, sizeof h->descr, "%.*s", (int)(len < 31 ? len : 31), s);
    h->kind = len == 3 ? s[1] : 0;
    h->itemsize = len == 3 ? s[2] - '0' : 0;
    int size_ok = h->kind == 'f' ? (h->itemsize == 4 || h->itemsize == 8)
                                 : (h->kind == 'i' || h->kind == 'u') &&
                                       (h->itemsize == 1 || h->itemsize == 2 || h->itemsize == 4 ||
                                        h->itemsize == 8);
    int order_ok = len == 3 && (strchr("<>=", s[0]) || (s[0] == '|' && h->itemsize == 1));
    if (!size_ok || !order_ok)
        return bp_reader_error(t->r, BP_ERR_UNSUPPORTED, t->base + (uint64_t)(t->p - t->start),
                               "dtype '%s' is not supported; use float32, float64, uint8, int32 "
                               "or int64 (any int or uint of 1-8 bytes)",
                               h->descr);
    h->big = s[0] == '>' || (s[0] == '=' && host_big);
    return BP_OK;
}

/* One key: value pair of the header dict; *seen gets bit 1, 2 or 4 for the key. */
static bp_status parse_entry(npy_text *t, npy_header *h, int *seen) {
    const char *key, *s;
    size_t klen, len;
    bp_status st = parse_string(t, &key, &klen);
    skip_ws(t);
    if (st == BP_OK && !take(t, ":")) st = text_error(t, "expected ':' after a key");
    if (st != BP_OK) return st;
    skip_ws(t);
    if (klen == 5 && !strncmp(key, "descr", 5)) {
        *seen |= 1;
        if (*t->p == '[')
            return bp_reader_error(t->r, BP_ERR_UNSUPPORTED, t->base + (uint64_t)(t->p - t->start),
                                   "a structured dtype is not supported");
        st = parse_string(t, &s, &len);
        return st == BP_OK ? parse_descr(t, h, s, len) : st;
    }
    if (klen == 13 && !strncmp(key, "fortran_order", 13)) {
        *seen |= 2;
        if (take(t, "False")) return BP_OK;
        if (take(t, "True"))
            return bp_reader_error(t->r, BP_ERR_UNSUPPORTED,
                                   t->base + (uint64_t)(t->p - 4 - t->start),
                                   "fortran_order True is not supported; save a C-order array "
                                   "(np.ascontiguousarray)");
        return text_error(t, "'fortran_order' is neither True nor False");
    }
    if (klen == 5 && !strncmp(key, "shape", 5)) {
        *seen |= 4;
        return parse_shape(t, h);
    }
    t->p = key;
    return text_error(t, "unknown key (expected 'descr', 'fortran_order' and 'shape')");
}

static bp_status parse_dict(npy_text *t, npy_header *h) {
    int seen = 0;
    skip_ws(t);
    if (!take(t, "{")) return text_error(t, "expected '{'");
    for (skip_ws(t); *t->p != '}'; skip_ws(t)) {
        bp_status st = parse_entry(t, h, &seen);
        if (st != BP_OK) return st;
        skip_ws(t);
        if (*t->p == ',')
            t->p++;
        else if (*t->p != '}')
            return text_error(t, "expected ',' or '}'");
    }
    if (seen != 7)
        return text_error(t, !(seen & 1)   ? "'descr' is missing"
                             : !(seen & 2) ? "'fortran_order' is missing"
                                           : "'shape' is missing");
    return BP_OK;
}

/* The magic, version and header length; then the header text. */
static bp_status npy_read_header(bp_reader *r, npy_header *h) {
    unsigned char pre[12];
    bp_status st = bp_reader_read_exact(r, pre, 8, "the .npy magic and version");
    if (st != BP_OK) return st;
    if (memcmp(pre, "\x93NUMPY", 6) != 0)
        return bp_reader_error(r, BP_ERR_CORRUPT_FILE, 0, "not a .npy file (no \\x93NUMPY magic)");
    int major = pre[6], lenbytes = major == 1 ? 2 : 4;
    if (major < 1 || major > 3)
        return bp_reader_error(r, BP_ERR_UNSUPPORTED, 6, ".npy version %d.%d is not supported",
                               major, pre[7]);
    st = bp_reader_read_exact(r, pre + 8, (size_t)lenbytes, "the .npy header length");
    if (st != BP_OK) return st;
    uint32_t hlen = (uint32_t)pre[8] | (uint32_t)pre[9] << 8;
    if (lenbytes == 4) hlen |= (uint32_t)pre[10] << 16 | (uint32_t)pre[11] << 24;
    if (hlen > NPY_MAX_HEADER)
        return bp_reader_error(r, BP_ERR_CORRUPT_FILE, 8, "header length %u is over %d bytes", hlen,
                               NPY_MAX_HEADER);
    char *text = malloc((size_t)hlen + 1);
    if (!text) return bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no memory", r->fn);
    npy_text t = {r, text, text, 8 + (uint64_t)lenbytes};
    st = bp_reader_read_exact(r, text, hlen, "the .npy header");
    if (st == BP_OK) {
        text[hlen] = '\0';
        if (strlen(text) != hlen) {
            t.p = text + strlen(text);
            st = text_error(&t, "a NUL byte");
        } else {
            st = parse_dict(&t, h);
        }
    }
    free(text);
    h->data_offset = r->offset;
    return st;
}

static void shape_string(const npy_header *h, char *buf, size_t size) {
    size_t at = (size_t)snprintf(buf, size, "(");
    for (int i = 0; i < h->rank && at < size; ++i)
        at += (size_t)snprintf(buf + at, size - at, "%s%llu", i ? ", " : "",
                               (unsigned long long)h->dims[i]);
    if (at < size) snprintf(buf + at, size - at, h->rank == 1 ? ",)" : ")");
}

/* Rank, sizes and element count: samples along the first axis, each of at most INT_MAX. */
static bp_status npy_check_shape(bp_reader *r, npy_header *h) {
    char shape[256];
    shape_string(h, shape, sizeof shape);
    if (h->rank == 0)
        return bp_reader_error(r, BP_ERR_CORRUPT_FILE, h->data_offset,
                               "shape () is a scalar; expected (n, ...)");
    h->count = 1;
    for (int i = 0; i < h->rank; ++i) {
        if (h->dims[i] == 0)
            return bp_reader_error(r, BP_ERR_CORRUPT_FILE, h->data_offset, "shape %s is empty",
                                   shape);
        /* Each step checked: (2^32 + 65536, 2^32 - 65535) must not wrap to 65536. */
        if (!bp_mul_u64(h->count, h->dims[i], &h->count) || h->count > NPY_MAX_ELEMENTS)
            return bp_reader_error(r, BP_ERR_CORRUPT_FILE, h->data_offset,
                                   "shape %s: size %d (%llu) takes the element count over 2^48",
                                   shape, i, (unsigned long long)h->dims[i]);
    }
    if (!bp_mul_u64(h->count, (uint64_t)h->itemsize, &h->bytes))
        return bp_reader_error(r, BP_ERR_CORRUPT_FILE, h->data_offset,
                               "shape %s of '%s' is more than 2^64 bytes", shape, h->descr);
    if (h->count / h->dims[0] > INT_MAX)
        return bp_reader_error(r, BP_ERR_UNSUPPORTED, h->data_offset,
                               "shape %s: one sample has more than %d elements", shape, INT_MAX);
    if (h->dims[0] > (uint64_t)BP_IO_MAX_SAMPLES)
        return bp_reader_error(r, BP_ERR_UNSUPPORTED, h->data_offset,
                               "shape %s has more than 2^40 samples", shape);
    return BP_OK;
}

/* ---- elements ---------------------------------------------------------------------------- */

/* The element's bits as a number, assembled from the file's byte order, so the decoding is the
 * same on any host. */
static uint64_t load_bits(const unsigned char *p, const npy_header *h) {
    uint64_t v = 0;
    for (int b = 0; b < h->itemsize; ++b) {
        int at = h->big ? b : h->itemsize - 1 - b; /* most significant first */
        v = v << 8 | p[at];
    }
    return v;
}

/* Element i as a double: exact for every type but 64-bit integers above 2^53. */
static double element(const unsigned char *data, uint64_t i, const npy_header *h) {
    uint64_t v = load_bits(data + i * (uint64_t)h->itemsize, h);
    int bits = 8 * h->itemsize;
    if (h->kind == 'f' && h->itemsize == 4) {
        uint32_t u = (uint32_t)v;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    if (h->kind == 'f') {
        double f;
        memcpy(&f, &v, 8);
        return f;
    }
    if (h->kind == 'u') return (double)v;
    if (bits < 64 && (v >> (bits - 1)) & 1) v |= ~UINT64_C(0) << bits; /* sign-extend */
    return (double)(int64_t)v;
}

static bp_status convert_features(bp_reader *r, const npy_header *h, const unsigned char *data,
                                  bp_dataset *d) {
    for (uint64_t i = 0; i < h->count; ++i) {
        double v = element(data, i, h);
        if (!isfinite(v) || fabs(v) > FLT_MAX)
            return bp_reader_error(r, BP_ERR_NON_FINITE, h->data_offset + i * (uint64_t)h->itemsize,
                                   "element [%llu, %llu] is %s",
                                   (unsigned long long)(i / d->features),
                                   (unsigned long long)(i % d->features),
                                   isnan(v)   ? "NaN"
                                   : isinf(v) ? "Inf"
                                              : "beyond float32's range");
        d->x[i] = (float)v;
    }
    return BP_OK;
}

static bp_status convert_targets(bp_reader *r, const npy_header *h, const unsigned char *data,
                                 bp_dataset *d) {
    for (uint64_t i = 0; i < h->count; ++i) {
        double v = element(data, i, h);
        uint64_t at = h->data_offset + i * (uint64_t)h->itemsize;
        if (!isfinite(v) || fabs(v) > FLT_MAX)
            return bp_reader_error(r, BP_ERR_NON_FINITE, at, "target %llu is %s",
                                   (unsigned long long)i,
                                   isnan(v)   ? "NaN"
                                   : isinf(v) ? "Inf"
                                              : "beyond float32's range");
        if (d->kind == BP_TARGET_VALUES) {
            ((float *)d->y)[i] = (float)v;
        } else if (bp_io_class_index_problem(v)) {
            return bp_reader_error(r, BP_ERR_CORRUPT_FILE, at, "target %llu, %.17g, %s",
                                   (unsigned long long)i, v, bp_io_class_index_problem(v));
        } else {
            ((int32_t *)d->y)[i] = (int32_t)v;
        }
    }
    return BP_OK;
}

/* ---- the loader -------------------------------------------------------------------------- */

static bp_status check_targets_shape(bp_reader *rt, const npy_header *hf, const npy_header *ht,
                                     bp_target_kind kind) {
    char shape[256];
    shape_string(ht, shape, sizeof shape);
    if (ht->dims[0] != hf->dims[0])
        return bp_reader_error(rt, BP_ERR_CORRUPT_FILE, ht->data_offset,
                               "targets of shape %s are %llu samples, the features %llu", shape,
                               (unsigned long long)ht->dims[0], (unsigned long long)hf->dims[0]);
    if (kind == BP_TARGET_CLASS && ht->count != ht->dims[0])
        return bp_reader_error(rt, BP_ERR_CORRUPT_FILE, ht->data_offset,
                               "class targets must have shape (n,) or (n, 1), not %s", shape);
    return BP_OK;
}

typedef struct npy_files {
    bp_reader rf, rt;
    npy_header hf, ht;
    void *xf, *xt; /* the raw data */
} npy_files;

static bp_status npy_read(const char *fn, npy_files *f, bp_source features,
                          const bp_source *targets_src, bp_target_kind kind, int gz) {
    if (kind != BP_TARGET_CLASS && kind != BP_TARGET_VALUES && kind != BP_TARGET_NONE)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: kind is %d, not a target kind", fn,
                        (int)kind);
    int targets = kind != BP_TARGET_NONE;
    if (!targets && targets_src)
        return bp_error(BP_ERR_INVALID_ARGUMENT,
                        "%s: BP_TARGET_NONE reads features alone, but targets_path is '%s'", fn,
                        targets_src->name);
    bp_source none = {NULL, "(null)"};
    bp_status st = bp_reader_open_source(&f->rf, fn, features, gz);
    if (st == BP_OK && targets)
        st = bp_reader_open_source(&f->rt, fn, targets_src ? *targets_src : none, gz);
    if (st == BP_OK) st = npy_read_header(&f->rf, &f->hf);
    if (st == BP_OK) st = npy_check_shape(&f->rf, &f->hf);
    if (st == BP_OK && targets) st = npy_read_header(&f->rt, &f->ht);
    if (st == BP_OK && targets) st = npy_check_shape(&f->rt, &f->ht);
    if (st == BP_OK && targets) st = check_targets_shape(&f->rt, &f->hf, &f->ht, kind);
    if (st == BP_OK) st = bp_reader_read_body(&f->rf, f->hf.bytes, "array data", &f->xf);
    if (st == BP_OK && targets) st = bp_reader_read_body(&f->rt, f->ht.bytes, "array data", &f->xt);
    return st;
}

bp_dataset *bp_dataset_load_npy(const char *features_path, const char *targets_path,
                                bp_target_kind kind, bp_status *status) {
    bp_source features = {features_path, features_path ? features_path : "(null)"};
    bp_source targets = {targets_path, targets_path ? targets_path : "(null)"};
    return bp_io_load_npy("bp_dataset_load_npy", features, targets_path ? &targets : NULL, kind, 0,
                          status);
}

bp_dataset *bp_io_load_npy(const char *fn, bp_source features, const bp_source *targets,
                           bp_target_kind kind, int allow_gzip, bp_status *status) {
    npy_files f;
    memset(&f, 0, sizeof f);
    bp_dataset *d = NULL;
    bp_status st = npy_read(fn, &f, features, targets, kind, allow_gzip);
    if (st == BP_OK) {
        int64_t n = (int64_t)f.hf.dims[0];
        int width = kind == BP_TARGET_CLASS  ? 1
                    : kind == BP_TARGET_NONE ? 0
                                             : (int)(f.ht.count / f.ht.dims[0]);
        d = bp_dataset_new(fn, n, (int)(f.hf.count / f.hf.dims[0]), kind, width, &st);
    }
    if (d) st = convert_features(&f.rf, &f.hf, f.xf, d);
    if (d && st == BP_OK && kind != BP_TARGET_NONE) st = convert_targets(&f.rt, &f.ht, f.xt, d);
    if (d && st == BP_OK) bp_dataset_count_classes(d);
    if (st != BP_OK) {
        bp_dataset_free(d);
        d = NULL;
    }
    free(f.xf);
    free(f.xt);
    bp_reader_close(&f.rf);
    bp_reader_close(&f.rt);
    bp_set_status(status, st);
    return d;
}

/* ---- writing ------------------------------------------------------------------------------ */

#define NPY_MAX_BYTES (UINT64_C(1) << 60)

/* The header of format 1.0: magic, version, the little-endian length of the dict, and the dict
 * padded with spaces and a newline so the data starts at a multiple of 64 bytes. Returns its
 * length (buf holds at least 2048 bytes: 32 sizes of 20 digits fit). */
static size_t npy_header_text(char *buf, const char *descr, int ndim, const int64_t *shape) {
    char dict[1536];
    size_t n = (size_t)snprintf(dict, sizeof dict,
                                "{'descr': '%s', 'fortran_order': False, "
                                "'shape': (",
                                descr);
    for (int d = 0; d < ndim; ++d)
        n += (size_t)snprintf(dict + n, sizeof dict - n, "%lld,%s", (long long)shape[d],
                              d + 1 < ndim ? " " : "");
    if (ndim > 1) n--; /* (a, b) but (a,) */
    n += (size_t)snprintf(dict + n, sizeof dict - n, "), }");
    size_t total = 10 + n + 1, pad = (64 - total % 64) % 64, hlen = n + pad + 1;
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (char)(hlen & 0xff);
    buf[9] = (char)(hlen >> 8);
    memcpy(buf + 10, dict, n);
    memset(buf + 10 + n, ' ', pad);
    buf[10 + n + pad] = '\n';
    return 10 + hlen;
}

static bp_status check_save_args(const char *fn, const char *path, bp_dtype dtype, int ndim,
                                 const int64_t *shape, const void *data, uint64_t *bytes) {
    if (!path || !*path)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: path is %s", fn, path ? "empty" : "NULL");
    if (dtype != BP_F32 && dtype != BP_I32)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: '%s': dtype is %d, expected BP_F32 or BP_I32",
                        fn, path, (int)dtype);
    if (ndim < 1 || ndim > NPY_MAX_RANK)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: '%s': ndim is %d, expected 1..%d", fn, path,
                        ndim, NPY_MAX_RANK);
    if (!shape) return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: '%s': shape is NULL", fn, path);
    uint64_t count = 1;
    for (int d = 0; d < ndim; ++d) {
        if (shape[d] < 0)
            return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: '%s': shape[%d] is %lld, expected >= 0",
                            fn, path, d, (long long)shape[d]);
        if (!bp_mul_u64(count, (uint64_t)shape[d], &count) || count > NPY_MAX_BYTES / 4)
            return bp_error(BP_ERR_INVALID_ARGUMENT,
                            "%s: '%s': the shape holds more than 2^58 elements", fn, path);
    }
    if (count && !data)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: '%s': data is NULL", fn, path);
    *bytes = count * 4;
    return BP_OK;
}

/* Where the file goes: standard output through stdio, or the atomic file's descriptor. */
typedef struct npy_sink {
    FILE *out;
    int fd;
} npy_sink;

static int sink_write(const npy_sink *s, const void *p, size_t n) {
    if (s->out) return fwrite(p, 1, n, s->out) == n ? 0 : -1;
    const char *c = p;
    while (n > 0) {
        ssize_t k = write(s->fd, c, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        c += k;
        n -= (size_t)k;
    }
    return 0;
}

/* The elements as little-endian 4-byte words, a chunk at a time (swapped on a big-endian
 * host). */
static int write_words(const npy_sink *s, const unsigned char *data, uint64_t bytes) {
    uint16_t one = 1;
    if (*(const unsigned char *)&one) return sink_write(s, data, (size_t)bytes);
    unsigned char chunk[1 << 16];
    for (uint64_t at = 0; at < bytes;) {
        size_t n = bytes - at < sizeof chunk ? (size_t)(bytes - at) : sizeof chunk;
        for (size_t i = 0; i < n; i += 4)
            for (int b = 0; b < 4; ++b)
                chunk[i + (size_t)b] = data[at + i + 3 - (size_t)b];
        if (sink_write(s, chunk, n)) return -1;
        at += n;
    }
    return 0;
}

static bp_status npy_write(const char *fn, const char *path, const npy_sink *s, bp_dtype dtype,
                           int ndim, const int64_t *shape, const void *data, uint64_t bytes) {
    char header[2048];
    size_t hn = npy_header_text(header, dtype == BP_F32 ? "<f4" : "<i4", ndim, shape);
    if (sink_write(s, header, hn) || write_words(s, data, bytes))
        return bp_error(BP_ERR_IO, "%s: '%s': writing failed: %s", fn, path, strerror(errno));
    return BP_OK;
}

bp_status bp_npy_save(const char *path, bp_dtype dtype, int ndim, const int64_t *shape,
                      const void *data) {
    const char *fn = "bp_npy_save";
    uint64_t bytes = 0;
    bp_status st = check_save_args(fn, path, dtype, ndim, shape, data, &bytes);
    if (st != BP_OK) return st;
    if (strcmp(path, "-") == 0) {
        npy_sink s = {stdout, -1};
        st = npy_write(fn, "standard output", &s, dtype, ndim, shape, data, bytes);
        if (st == BP_OK && fflush(stdout) != 0)
            st = bp_error(BP_ERR_IO, "%s: writing standard output failed: %s", fn, strerror(errno));
        return st;
    }
    bp_atomic_file a;
    st = bp_atomic_open(&a, path);
    if (st != BP_OK) {
        char why[768];
        snprintf(why, sizeof why, "%s", bp_last_error());
        return bp_error(st, "%s: %s", fn, why);
    }
    npy_sink s = {NULL, a.fd};
    st = npy_write(fn, path, &s, dtype, ndim, shape, data, bytes);
    if (st != BP_OK) {
        bp_atomic_abort(&a);
        return st;
    }
    st = bp_atomic_commit(&a, NULL, NULL);
    if (st != BP_OK) {
        char why[768];
        snprintf(why, sizeof why, "%s", bp_last_error());
        return bp_error(st, "%s: %s", fn, why);
    }
    return BP_OK;
}
