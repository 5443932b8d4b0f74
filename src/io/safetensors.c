/* safetensors reading and atomic writing. The reader parses the JSON header with a small strict
 * parser of its own (strings, integers, arrays, objects in the one shape the format has), and
 * checks every size and offset against the file before it allocates or reads by it. */
#define _POSIX_C_SOURCE   200809L
#define _FILE_OFFSET_BITS 64

#include "io/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "core/checked.h"
#include "core/error.h"
#include "io/atomic.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian and this reader copies it as it is"
#endif

bp_st_io_hooks bp_st_io = {fwrite, fsync, rename};

static const struct {
    const char *name;
    uint64_t size;
} dtypes[] = {{"F32", 4}, {"I32", 4}, {"I64", 8}};

const char *bp_st_dtype_name(bp_st_dtype dtype) {
    return (unsigned)dtype < 3 ? dtypes[dtype].name : "?";
}

/* ---- UTF-8 -------------------------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 when invalid: no overlongs, no
 * surrogates, nothing above U+10FFFF. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 0;
    if (len == 0 || c > 0xF4 || len > n) return 0;
    for (size_t k = 1; k < len; ++k)
        if ((s[k] & 0xC0) != 0x80) return 0;
    if (c == 0xE0 && s[1] < 0xA0) return 0; /* overlong */
    if (c == 0xED && s[1] > 0x9F) return 0; /* surrogate */
    if (c == 0xF0 && s[1] < 0x90) return 0; /* overlong */
    if (c == 0xF4 && s[1] > 0x8F) return 0; /* above U+10FFFF */
    return len;
}

/* Offset of the first invalid byte, or n when all of s is valid UTF-8. */
static size_t utf8_check(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        size_t len = utf8_seq(s + i, n - i);
        if (len == 0) return i;
        i += len;
    }
    return n;
}

static size_t utf8_put(char *out, unsigned long cp) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* ---- the JSON header parser --------------------------------------------------------------- */

typedef struct jp {
    const char *path;
    const unsigned char *s;
    size_t n, i;
} jp;

/* A parse error at the current position; positions count from the start of the file. */
static bp_status jp_fail(const jp *p, const char *fmt, ...) BP_PRINTF(2, 3);
static bp_status jp_fail(const jp *p, const char *fmt, ...) {
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return bp_error(BP_ERR_CORRUPT_FILE, "%s: header, byte %zu: %s", p->path, p->i + 8, what);
}

static void jp_ws(jp *p) {
    while (p->i < p->n &&
           (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
        p->i++;
}

static int jp_peek(jp *p) {
    jp_ws(p);
    return p->i < p->n ? p->s[p->i] : -1;
}

static bp_status jp_lit(jp *p, int c, const char *what) {
    if (jp_peek(p) != c) return jp_fail(p, "expected %s", what);
    p->i++;
    return BP_OK;
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* The 4 hex digits of a \u escape at s[i..i+3], all before end; -1 when malformed. */
static long hex4(const unsigned char *s, size_t i, size_t end) {
    if (i + 4 > end) return -1;
    long v = 0;
    for (size_t k = 0; k < 4; ++k) {
        int h = hexval(s[i + k]);
        if (h < 0) return -1;
        v = v * 16 + h;
    }
    return v;
}

/* Decodes the \u escape whose 'u' is at p->i (and the low surrogate after it, if any) into
 * out; advances past it. end: the string's closing quote. */
static bp_status jp_unicode(jp *p, size_t end, char *out, size_t *len) {
    long cp = hex4(p->s, p->i + 1, end);
    if (cp < 0) return jp_fail(p, "malformed \\u escape");
    p->i += 5;
    if (cp >= 0xDC00 && cp <= 0xDFFF) return jp_fail(p, "lone low surrogate in \\u escape");
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        long lo = p->i + 1 < end && p->s[p->i] == '\\' && p->s[p->i + 1] == 'u'
                      ? hex4(p->s, p->i + 2, end)
                      : -1;
        if (lo < 0xDC00 || lo > 0xDFFF) return jp_fail(p, "high surrogate without a low one");
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        p->i += 6;
    }
    if (cp == 0) return jp_fail(p, "\\u0000 in a string");
    *len = utf8_put(out, (unsigned long)cp);
    return BP_OK;
}

/* One escape sequence at p->i (the byte after the backslash). */
static bp_status jp_escape(jp *p, size_t end, char *out, size_t *len) {
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    int c = p->s[p->i];
    if (c == 'u') return jp_unicode(p, end, out, len);
    const char *k = c ? strchr(from, c) : NULL;
    if (!k) return jp_fail(p, "invalid escape '\\%c'", c >= 0x20 && c < 0x7F ? c : '?');
    *out = to[k - from];
    *len = 1;
    p->i++;
    return BP_OK;
}

/* A string into a malloc'd, NUL-terminated copy. The decoded text is never longer than the
 * quoted one, so one allocation of the quoted length suffices. */
static bp_status jp_string(jp *p, char **out) {
    *out = NULL;
    if (jp_peek(p) != '"') return jp_fail(p, "expected a string");
    size_t end = ++p->i;
    while (end < p->n && p->s[end] != '"')
        end += p->s[end] == '\\' ? 2 : 1;
    if (end >= p->n) return jp_fail(p, "unterminated string");
    char *buf = malloc(end - p->i + 1);
    if (!buf) return bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no memory for the header", p->path);
    size_t len = 0, k = 0;
    bp_status st = BP_OK;
    while (st == BP_OK && p->i < end) {
        unsigned char c = p->s[p->i];
        if (c < 0x20) {
            st = jp_fail(p, "control character 0x%02x in a string", c);
        } else if (c == '\\') {
            p->i++;
            st = jp_escape(p, end, buf + len, &k);
            len += k;
        } else {
            buf[len++] = (char)c;
            p->i++;
        }
    }
    if (st != BP_OK) {
        free(buf);
        return st;
    }
    buf[len] = '\0';
    p->i = end + 1;
    *out = buf;
    return BP_OK;
}

/* A non-negative integer without sign, fraction or exponent. */
static bp_status jp_uint(jp *p, uint64_t *out, const char *what) {
    int c = jp_peek(p);
    if (c == '-') return jp_fail(p, "%s must not be negative", what);
    if (c < '0' || c > '9') return jp_fail(p, "expected an integer in %s", what);
    if (c == '0' && p->i + 1 < p->n && p->s[p->i + 1] >= '0' && p->s[p->i + 1] <= '9')
        return jp_fail(p, "leading zero in %s", what);
    uint64_t v = 0;
    while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') {
        unsigned d = (unsigned)(p->s[p->i] - '0');
        if (v > (UINT64_MAX - d) / 10) return jp_fail(p, "integer in %s is too large", what);
        v = v * 10 + d;
        p->i++;
    }
    if (p->i < p->n && (p->s[p->i] == '.' || p->s[p->i] == 'e' || p->s[p->i] == 'E'))
        return jp_fail(p, "%s must hold integers", what);
    *out = v;
    return BP_OK;
}

/* An array of at most max non-negative integers. */
static bp_status jp_uint_array(jp *p, uint64_t *vals, int max, int *count, const char *what) {
    bp_status st = jp_lit(p, '[', "'[' to open the array");
    *count = 0;
    if (st != BP_OK) return st;
    if (jp_peek(p) == ']') {
        p->i++;
        return BP_OK;
    }
    for (;;) {
        if (*count == max) return jp_fail(p, "%s has more than %d entries", what, max);
        st = jp_uint(p, &vals[(*count)++], what);
        if (st != BP_OK) return st;
        int c = jp_peek(p);
        p->i++;
        if (c == ']') return BP_OK;
        if (c != ',') {
            p->i--;
            return jp_fail(p, "expected ',' or ']' in %s", what);
        }
    }
}

/* Calls member(p, key, ctx) for each member of an object; member owns key. */
typedef bp_status (*jp_member_fn)(jp *p, char *key, void *ctx);

static bp_status jp_object(jp *p, jp_member_fn member, void *ctx) {
    bp_status st = jp_lit(p, '{', "'{' to open an object");
    if (st != BP_OK) return st;
    if (jp_peek(p) == '}') {
        p->i++;
        return BP_OK;
    }
    for (;;) {
        char *key = NULL;
        st = jp_string(p, &key);
        if (st == BP_OK) st = jp_lit(p, ':', "':' after a key");
        if (st == BP_OK)
            st = member(p, key, ctx);
        else
            free(key);
        if (st != BP_OK) return st;
        int c = jp_peek(p);
        p->i++;
        if (c == '}') return BP_OK;
        if (c != ',') {
            p->i--;
            return jp_fail(p, "expected ',' or '}' in an object");
        }
    }
}

/* ---- the header's structure --------------------------------------------------------------- */

typedef struct parse_state {
    bp_st_file *f;
    size_t cap_tensors, cap_meta;
    int seen_meta;
} parse_state;

typedef struct tensor_ctx {
    bp_st_tensor *t;
    int have_dtype, have_shape, have_offsets;
} tensor_ctx;

static bp_status grow(const char *path, void **arr, size_t *cap, size_t n, size_t elem) {
    if (n < *cap) return BP_OK;
    size_t cap2 = *cap ? *cap * 2 : 16;
    void *p = realloc(*arr, cap2 * elem);
    if (!p) return bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no memory for the header", path);
    *arr = p;
    *cap = cap2;
    return BP_OK;
}

static bp_status field_dtype(jp *p, tensor_ctx *tc) {
    char *s = NULL;
    bp_status st = jp_string(p, &s);
    if (st != BP_OK) return st;
    int found = -1;
    for (int k = 0; k < 3; ++k)
        if (strcmp(s, dtypes[k].name) == 0) found = k;
    if (found < 0)
        st = jp_fail(p, "tensor '%s': dtype \"%.40s\" is not supported (F32, I32, I64)",
                     tc->t->name, s);
    else
        tc->t->dtype = (bp_st_dtype)found;
    free(s);
    return st;
}

static bp_status field_offsets(jp *p, tensor_ctx *tc) {
    uint64_t v[2];
    int k = 0;
    bp_status st = jp_uint_array(p, v, 2, &k, "data_offsets");
    if (st == BP_OK && k != 2)
        return jp_fail(p, "tensor '%s': data_offsets has %d entries, expected 2", tc->t->name, k);
    if (st == BP_OK) {
        tc->t->begin = v[0];
        tc->t->end = v[1];
    }
    return st;
}

static bp_status tensor_member(jp *p, char *key, void *ctx) {
    tensor_ctx *tc = ctx;
    bp_status st = BP_OK;
    int *seen = strcmp(key, "dtype") == 0          ? &tc->have_dtype
                : strcmp(key, "shape") == 0        ? &tc->have_shape
                : strcmp(key, "data_offsets") == 0 ? &tc->have_offsets
                                                   : NULL;
    if (!seen)
        st = jp_fail(p, "tensor '%s': unknown field \"%.40s\"", tc->t->name, key);
    else if (*seen)
        st = jp_fail(p, "tensor '%s': \"%s\" given twice", tc->t->name, key);
    else if (seen == &tc->have_dtype)
        st = field_dtype(p, tc);
    else if (seen == &tc->have_shape)
        st = jp_uint_array(p, tc->t->shape, BP_ST_MAX_DIMS, &tc->t->ndim, "shape");
    else
        st = field_offsets(p, tc);
    if (seen) *seen = 1;
    free(key);
    return st;
}

static bp_status parse_tensor(jp *p, char *name, parse_state *ps) {
    bp_st_file *f = ps->f;
    bp_status st =
        grow(f->path, (void **)&f->tensors, &ps->cap_tensors, f->n_tensors, sizeof *f->tensors);
    if (st != BP_OK) {
        free(name);
        return st;
    }
    bp_st_tensor *t = &f->tensors[f->n_tensors++];
    memset(t, 0, sizeof *t);
    t->name = name; /* owned by f from here on, freed with it */
    tensor_ctx tc = {t, 0, 0, 0};
    st = jp_object(p, tensor_member, &tc);
    if (st != BP_OK) return st;
    const char *missing = !tc.have_dtype     ? "dtype"
                          : !tc.have_shape   ? "shape"
                          : !tc.have_offsets ? "data_offsets"
                                             : NULL;
    if (missing) return jp_fail(p, "tensor '%s' has no \"%s\"", name, missing);
    return BP_OK;
}

static bp_status meta_member(jp *p, char *key, void *ctx) {
    parse_state *ps = ctx;
    bp_st_file *f = ps->f;
    char *value = NULL;
    bp_status st = jp_string(p, &value);
    if (st == BP_OK)
        st = grow(f->path, (void **)&f->meta, &ps->cap_meta, f->n_meta, sizeof *f->meta);
    if (st != BP_OK) {
        free(key);
        free(value);
        return st;
    }
    f->meta[f->n_meta].key = key;
    f->meta[f->n_meta++].value = value;
    return BP_OK;
}

static bp_status top_member(jp *p, char *key, void *ctx) {
    parse_state *ps = ctx;
    if (strcmp(key, "__metadata__") != 0) return parse_tensor(p, key, ps);
    free(key);
    if (ps->seen_meta) return jp_fail(p, "\"__metadata__\" given twice");
    ps->seen_meta = 1;
    return jp_object(p, meta_member, ps);
}

static bp_status parse_header(bp_st_file *f, const unsigned char *s, size_t n) {
    jp p = {f->path, s, n, 0};
    size_t bad = utf8_check(s, n);
    if (bad < n) {
        p.i = bad;
        return jp_fail(&p, "invalid UTF-8");
    }
    parse_state ps = {f, 0, 0, 0};
    bp_status st = jp_object(&p, top_member, &ps);
    if (st == BP_OK && jp_peek(&p) != -1)
        st = jp_fail(&p, "unexpected bytes after the header's closing '}'");
    return st;
}

/* ---- checks of the parsed header against the file ----------------------------------------- */

static int by_name(const void *a, const void *b) {
    return strcmp(((const bp_st_tensor *)a)->name, ((const bp_st_tensor *)b)->name);
}

static int by_key(const void *a, const void *b) {
    return strcmp(((const bp_st_kv *)a)->key, ((const bp_st_kv *)b)->key);
}

static int by_offset(const void *a, const void *b) {
    const bp_st_tensor *x = *(const bp_st_tensor *const *)a, *y = *(const bp_st_tensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* Sorts names and keys for lookups and rejects duplicates. */
static bp_status check_unique(bp_st_file *f) {
    if (f->n_tensors) qsort(f->tensors, f->n_tensors, sizeof *f->tensors, by_name);
    if (f->n_meta) qsort(f->meta, f->n_meta, sizeof *f->meta, by_key);
    for (size_t k = 1; k < f->n_tensors; ++k)
        if (strcmp(f->tensors[k - 1].name, f->tensors[k].name) == 0)
            return bp_error(BP_ERR_CORRUPT_FILE, "%s: tensor '%s' appears twice in the header",
                            f->path, f->tensors[k].name);
    for (size_t k = 1; k < f->n_meta; ++k)
        if (strcmp(f->meta[k - 1].key, f->meta[k].key) == 0)
            return bp_error(BP_ERR_CORRUPT_FILE, "%s: metadata key '%s' appears twice", f->path,
                            f->meta[k].key);
    return BP_OK;
}

static void format_shape(const bp_st_tensor *t, char *buf, size_t size) {
    size_t n = (size_t)snprintf(buf, size, "[");
    for (int d = 0; d < t->ndim && n < size; ++d)
        n += (size_t)snprintf(buf + n, size - n, "%s%llu", d ? ", " : "",
                              (unsigned long long)t->shape[d]);
    if (n < size) snprintf(buf + n, size - n, "]");
}

uint64_t bp_st_elements(const bp_st_tensor *t) {
    uint64_t count = 1;
    for (int d = 0; d < t->ndim; ++d)
        count *= t->shape[d]; /* cannot overflow once check_tensor has passed */
    return count;
}

/* A tensor's offsets lie in the buffer and span exactly its shape's bytes. */
static bp_status check_tensor(const bp_st_file *f, const bp_st_tensor *t) {
    char shape[160];
    format_shape(t, shape, sizeof shape);
    uint64_t bytes = dtypes[t->dtype].size;
    for (int d = 0; d < t->ndim; ++d)
        if (!bp_mul_u64(bytes, t->shape[d], &bytes))
            return bp_error(BP_ERR_CORRUPT_FILE,
                            "%s: tensor '%s': shape %s is more than 2^64 bytes (size %d)", f->path,
                            t->name, shape, d);
    unsigned long long b = t->begin, e = t->end;
    if (b > e)
        return bp_error(BP_ERR_CORRUPT_FILE,
                        "%s: tensor '%s': data_offsets [%llu, %llu] are reversed", f->path, t->name,
                        b, e);
    if (e > f->data_size)
        return bp_error(BP_ERR_CORRUPT_FILE,
                        "%s: tensor '%s': data_offsets [%llu, %llu] exceed the %llu-byte buffer",
                        f->path, t->name, b, e, (unsigned long long)f->data_size);
    if (e - b != bytes)
        return bp_error(BP_ERR_CORRUPT_FILE,
                        "%s: tensor '%s': shape %s of %s needs %llu bytes, data_offsets [%llu, "
                        "%llu] hold %llu",
                        f->path, t->name, shape, dtypes[t->dtype].name, (unsigned long long)bytes,
                        b, e, e - b);
    return BP_OK;
}

/* The tensors tile the buffer: no gap, no overlap, nothing left over. */
static bp_status check_tiling(const bp_st_file *f) {
    if (f->n_tensors == 0 && f->data_size == 0) return BP_OK;
    const bp_st_tensor **order = malloc((f->n_tensors ? f->n_tensors : 1) * sizeof *order);
    if (!order) return bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no memory for the header", f->path);
    for (size_t k = 0; k < f->n_tensors; ++k)
        order[k] = &f->tensors[k];
    if (f->n_tensors) qsort(order, f->n_tensors, sizeof *order, by_offset);
    uint64_t at = 0;
    bp_status st = BP_OK;
    for (size_t k = 0; k < f->n_tensors && st == BP_OK; ++k) {
        const bp_st_tensor *t = order[k];
        if (t->begin < at)
            st = bp_error(BP_ERR_CORRUPT_FILE, "%s: tensor '%s' overlaps tensor '%s'", f->path,
                          t->name, order[k - 1]->name);
        else if (t->begin > at)
            st = bp_error(BP_ERR_CORRUPT_FILE, "%s: %llu unused bytes before tensor '%s'", f->path,
                          (unsigned long long)(t->begin - at), t->name);
        at = t->end;
    }
    if (st == BP_OK && at != f->data_size)
        st = bp_error(BP_ERR_CORRUPT_FILE,
                      "%s: the tensors cover %llu bytes of the %llu-byte buffer", f->path,
                      (unsigned long long)at, (unsigned long long)f->data_size);
    free(order);
    return st;
}

static bp_status check_layout(bp_st_file *f) {
    bp_status st = check_unique(f);
    for (size_t k = 0; k < f->n_tensors && st == BP_OK; ++k)
        st = check_tensor(f, &f->tensors[k]);
    if (st == BP_OK) st = check_tiling(f);
    return st;
}

/* ---- opening ------------------------------------------------------------------------------ */

static bp_status io_fail(const char *path, const char *what, int err) {
    return bp_error(BP_ERR_IO, "%s: %s: %s", path, what, strerror(err ? err : EIO));
}

/* The file's size; it must be a regular file. */
static bp_status file_size(bp_st_file *f, uint64_t *size) {
    struct stat sb;
    if (fstat(fileno(f->fp), &sb) != 0) return io_fail(f->path, "cannot stat", errno);
    if (S_ISDIR(sb.st_mode)) return bp_error(BP_ERR_IO, "%s: is a directory", f->path);
    if (!S_ISREG(sb.st_mode)) return bp_error(BP_ERR_IO, "%s: is not a regular file", f->path);
    *size = (uint64_t)sb.st_size;
    return BP_OK;
}

static bp_status read_exact(bp_st_file *f, void *dst, size_t bytes, const char *what) {
    if (fread(dst, 1, bytes, f->fp) == bytes) return BP_OK;
    if (ferror(f->fp)) return io_fail(f->path, what, errno);
    return bp_error(BP_ERR_CORRUPT_FILE, "%s: the file ended while reading %s", f->path, what);
}

/* Reads the length field and checks it before the header is allocated. */
static bp_status header_length(bp_st_file *f, uint64_t size, uint64_t *n) {
    unsigned char le[8];
    if (size < 8)
        return bp_error(BP_ERR_CORRUPT_FILE,
                        "%s: %llu bytes is too short for a safetensors file (8-byte header "
                        "length first)",
                        f->path, (unsigned long long)size);
    bp_status st = read_exact(f, le, 8, "the header length");
    if (st != BP_OK) return st;
    *n = 0;
    for (int k = 7; k >= 0; --k)
        *n = *n << 8 | le[k];
    unsigned long long len = *n;
    if (*n > size - 8)
        return bp_error(BP_ERR_CORRUPT_FILE,
                        "%s: header length %llu exceeds the %llu bytes after the length field",
                        f->path, len, (unsigned long long)(size - 8));
    if (*n > BP_ST_MAX_HEADER)
        return bp_error(BP_ERR_CORRUPT_FILE, "%s: header length %llu exceeds the limit of %llu",
                        f->path, len, (unsigned long long)BP_ST_MAX_HEADER);
    if (*n < 2)
        return bp_error(BP_ERR_CORRUPT_FILE, "%s: header length %llu is too short for JSON",
                        f->path, len);
    return BP_OK;
}

static bp_status read_header(bp_st_file *f) {
    uint64_t size = 0, n = 0;
    bp_status st = file_size(f, &size);
    if (st == BP_OK) st = header_length(f, size, &n);
    if (st != BP_OK) return st;
    unsigned char *buf = malloc((size_t)n);
    if (!buf)
        return bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no memory for a %llu-byte header", f->path,
                        (unsigned long long)n);
    st = read_exact(f, buf, (size_t)n, "the header");
    f->data_start = 8 + n;
    f->data_size = size - 8 - n;
    if (st == BP_OK) st = parse_header(f, buf, (size_t)n);
    free(buf);
    if (st == BP_OK) st = check_layout(f);
    return st;
}

bp_status bp_st_open(const char *path, bp_st_file **out) {
    if (!out) return bp_error(BP_ERR_INVALID_ARGUMENT, "bp_st_open: out is NULL");
    *out = NULL;
    if (!path) return bp_error(BP_ERR_INVALID_ARGUMENT, "bp_st_open: path is NULL");
    bp_st_file *f = calloc(1, sizeof *f);
    if (f) f->path = strdup(path);
    if (!f || !f->path) {
        bp_st_close(f);
        return bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no memory to open it", path);
    }
    bp_status st = BP_OK;
    f->fp = fopen(path, "rb");
    if (!f->fp) st = io_fail(path, "cannot open", errno);
    if (st == BP_OK) st = read_header(f);
    if (st != BP_OK) {
        bp_st_close(f);
        return st;
    }
    *out = f;
    return BP_OK;
}

void bp_st_close(bp_st_file *f) {
    if (!f) return;
    if (f->fp) fclose(f->fp);
    for (size_t k = 0; k < f->n_tensors; ++k)
        free(f->tensors[k].name);
    for (size_t k = 0; k < f->n_meta; ++k) {
        free(f->meta[k].key);
        free(f->meta[k].value);
    }
    free(f->tensors);
    free(f->meta);
    free(f->path);
    free(f);
}

const bp_st_tensor *bp_st_find(const bp_st_file *f, const char *name) {
    if (!f || !name || !f->n_tensors) return NULL;
    bp_st_tensor key;
    key.name = (char *)name;
    return bsearch(&key, f->tensors, f->n_tensors, sizeof key, by_name);
}

const char *bp_st_get_meta(const bp_st_file *f, const char *key) {
    if (!f || !key || !f->n_meta) return NULL;
    bp_st_kv k = {(char *)key, NULL};
    const bp_st_kv *hit = bsearch(&k, f->meta, f->n_meta, sizeof k, by_key);
    return hit ? hit->value : NULL;
}

bp_status bp_st_read(bp_st_file *f, const bp_st_tensor *t, void *dst, size_t bytes) {
    if (!f || !t || (!dst && bytes))
        return bp_error(BP_ERR_INVALID_ARGUMENT, "bp_st_read: NULL argument");
    if (bytes != t->end - t->begin)
        return bp_error(BP_ERR_INVALID_ARGUMENT,
                        "bp_st_read: %s: tensor '%s' has %llu bytes, not %zu", f->path, t->name,
                        (unsigned long long)(t->end - t->begin), bytes);
    if (bytes == 0) return BP_OK;
    if (fseeko(f->fp, (off_t)(f->data_start + t->begin), SEEK_SET) != 0)
        return io_fail(f->path, "cannot seek", errno);
    char what[300];
    snprintf(what, sizeof what, "tensor '%.256s'", t->name);
    return read_exact(f, dst, bytes, what);
}

/* ---- writing ------------------------------------------------------------------------------ */

typedef struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t len) {
    if (b->oom) return;
    if (b->n + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + len + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, len);
    b->n += len;
    b->p[b->n] = '\0';
}

static void sb_puts(sbuf *b, const char *s) {
    sb_put(b, s, strlen(s));
}

static void sb_u64(sbuf *b, uint64_t v) {
    char tmp[24];
    sb_put(b, tmp, (size_t)snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v));
}

/* s as a JSON string: quotes, backslashes and control characters escaped. */
static void sb_json(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (; *s; ++s) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            sb_put(b, esc, 2);
        } else if (c < 0x20) {
            sb_put(b, esc, (size_t)snprintf(esc, sizeof esc, "\\u%04x", c));
        } else {
            sb_put(b, (const char *)s, 1);
        }
    }
    sb_put(b, "\"", 1);
}

static uint64_t entry_bytes(const bp_st_entry *e) {
    uint64_t bytes = dtypes[e->dtype].size;
    for (int d = 0; d < e->ndim; ++d)
        bytes *= e->shape[d];
    return bytes;
}

static void sb_tensor(sbuf *b, const bp_st_entry *e, uint64_t begin) {
    sb_json(b, e->name);
    sb_puts(b, ":{\"dtype\":\"");
    sb_puts(b, dtypes[e->dtype].name);
    sb_puts(b, "\",\"shape\":[");
    for (int d = 0; d < e->ndim; ++d) {
        if (d) sb_put(b, ",", 1);
        sb_u64(b, e->shape[d]);
    }
    sb_puts(b, "],\"data_offsets\":[");
    sb_u64(b, begin);
    sb_put(b, ",", 1);
    sb_u64(b, begin + entry_bytes(e));
    sb_puts(b, "]}");
}

/* The JSON header, padded with spaces to a multiple of 8 bytes. */
static bp_status build_header(const char *path, const bp_st_entry *t, size_t n,
                              const bp_st_meta_entry *meta, size_t n_meta, sbuf *b) {
    sb_put(b, "{", 1);
    if (n_meta) {
        sb_puts(b, "\"__metadata__\":{");
        for (size_t k = 0; k < n_meta; ++k) {
            if (k) sb_put(b, ",", 1);
            sb_json(b, meta[k].key);
            sb_put(b, ":", 1);
            sb_json(b, meta[k].value);
        }
        sb_put(b, "}", 1);
    }
    uint64_t at = 0;
    for (size_t k = 0; k < n; ++k) {
        if (k || n_meta) sb_put(b, ",", 1);
        sb_tensor(b, &t[k], at);
        at += entry_bytes(&t[k]);
    }
    sb_put(b, "}", 1);
    while (!b->oom && b->n % 8)
        sb_put(b, " ", 1);
    if (b->oom) return bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no memory for the header", path);
    return BP_OK;
}

static int by_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Names must be unique; sorts a copy of the pointers to find duplicates in n log n. */
static bp_status check_distinct(const char *path, const char **names, size_t n, const char *what) {
    if (n < 2) return BP_OK;
    qsort(names, n, sizeof *names, by_str);
    for (size_t k = 1; k < n; ++k)
        if (strcmp(names[k - 1], names[k]) == 0)
            return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: %s '%s' is given twice", path, what,
                            names[k]);
    return BP_OK;
}

static bp_status check_text(const char *path, const char *s, const char *what) {
    if (!s) return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: a %s is NULL", path, what);
    size_t n = strlen(s);
    if (utf8_check((const unsigned char *)s, n) != n)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: %s '%s' is not valid UTF-8", path, what, s);
    return BP_OK;
}

static bp_status check_entry(const char *path, const bp_st_entry *e) {
    bp_status st = check_text(path, e->name, "tensor name");
    if (st != BP_OK) return st;
    if (strcmp(e->name, "__metadata__") == 0 || (unsigned)e->dtype > BP_ST_I64 || e->ndim < 0 ||
        e->ndim > BP_ST_MAX_DIMS)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: tensor '%s' has a bad name, dtype or rank",
                        path, e->name);
    uint64_t bytes = dtypes[e->dtype].size;
    for (int d = 0; d < e->ndim; ++d)
        if (!bp_mul_u64(bytes, e->shape[d], &bytes) || bytes > UINT64_MAX / 2)
            return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: tensor '%s' is too large", path, e->name);
    if (bytes && !e->data)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: tensor '%s' has no data", path, e->name);
    return BP_OK;
}

static bp_status check_save_args(const char *path, const bp_st_entry *t, size_t n,
                                 const bp_st_meta_entry *meta, size_t n_meta) {
    bp_status st = BP_OK;
    for (size_t k = 0; k < n && st == BP_OK; ++k)
        st = check_entry(path, &t[k]);
    for (size_t k = 0; k < n_meta && st == BP_OK; ++k) {
        st = check_text(path, meta[k].key, "metadata key");
        if (st == BP_OK) st = check_text(path, meta[k].value, "metadata value");
    }
    size_t most = n > n_meta ? n : n_meta;
    const char **names = malloc((most ? most : 1) * sizeof *names);
    if (st == BP_OK && !names) st = bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no memory", path);
    for (size_t k = 0; k < n && st == BP_OK; ++k)
        names[k] = t[k].name;
    if (st == BP_OK) st = check_distinct(path, names, n, "tensor");
    for (size_t k = 0; k < n_meta && st == BP_OK; ++k)
        names[k] = meta[k].key;
    if (st == BP_OK) st = check_distinct(path, names, n_meta, "metadata key");
    free(names);
    return st;
}

/* Writes bytes through the hook in pieces, so a short write is seen where it happens. */
static int write_all(FILE *fp, const void *data, uint64_t bytes) {
    const char *p = data;
    while (bytes) {
        size_t k = bytes > ((size_t)1 << 26) ? (size_t)1 << 26 : (size_t)bytes;
        if (bp_st_io.write(p, 1, k, fp) != k) return -1;
        p += k;
        bytes -= k;
    }
    return 0;
}

static int write_file(FILE *fp, const sbuf *header, const bp_st_entry *t, size_t n) {
    unsigned char le[8];
    uint64_t len = header->n;
    for (int k = 0; k < 8; ++k)
        le[k] = (unsigned char)(len >> (8 * k));
    if (write_all(fp, le, 8) || write_all(fp, header->p, header->n)) return -1;
    for (size_t k = 0; k < n; ++k)
        if (write_all(fp, t[k].data, entry_bytes(&t[k]))) return -1;
    return 0;
}

/* Writes the file through the write hook into the atomic file's descriptor. */
static bp_status write_atomic(const char *path, const sbuf *header, const bp_st_entry *t,
                              size_t n) {
    bp_atomic_file a;
    bp_status st = bp_atomic_open(&a, path);
    if (st != BP_OK) return st;
    int fd = dup(a.fd);
    FILE *fp = fd >= 0 ? fdopen(fd, "wb") : NULL;
    int err = 0;
    if (!fp) {
        err = errno;
        if (fd >= 0) close(fd);
    } else {
        if (write_file(fp, header, t, n) != 0 || fflush(fp) != 0) err = errno ? errno : EIO;
        if (fclose(fp) != 0 && !err) err = errno ? errno : EIO;
    }
    if (err) {
        st = bp_error(BP_ERR_IO, "%s: writing %s failed: %s; %s is unchanged", path, a.tmp,
                      strerror(err), path);
        bp_atomic_abort(&a);
        return st;
    }
    return bp_atomic_commit(&a, bp_st_io.fsync, bp_st_io.rename);
}

bp_status bp_st_save(const char *path, const bp_st_entry *tensors, size_t n_tensors,
                     const bp_st_meta_entry *meta, size_t n_meta) {
    if (!path || !*path)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "bp_st_save: path is %s", path ? "empty" : "NULL");
    if ((!tensors && n_tensors) || (!meta && n_meta))
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: tensors or metadata is NULL", path);
    bp_status st = check_save_args(path, tensors, n_tensors, meta, n_meta);
    sbuf header = {NULL, 0, 0, 0};
    if (st == BP_OK) st = build_header(path, tensors, n_tensors, meta, n_meta, &header);
    if (st == BP_OK) st = write_atomic(path, &header, tensors, n_tensors);
    free(header.p);
    return st;
}
