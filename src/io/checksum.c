/* Checkpoint checksums (io/checksum.h): zlib's CRC-32 of tensors and metadata entries. */
#define _POSIX_C_SOURCE   200809L
#define _FILE_OFFSET_BITS 64

#include "io/checksum.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <zlib.h>

#include "core/error.h"

#define PIECE ((size_t)1 << 20) /* bytes read at a time when checking whole tensors */

uint32_t bp_cksum_bytes(uint32_t crc, const void *data, uint64_t n) {
    const unsigned char *p = data;
    uLong c = crc;
    while (n) { /* zlib takes uInt lengths */
        uInt k = n > (1u << 30) ? (1u << 30) : (uInt)n;
        c = crc32(c, p, k);
        p += k;
        n -= k;
    }
    return (uint32_t)c;
}

uint32_t bp_cksum_meta(const char *key, const char *value) {
    uint32_t c = bp_cksum_bytes(0, key, strlen(key) + 1); /* with its NUL: "ab"+"c" != "a"+"bc" */
    return bp_cksum_bytes(c, value, strlen(value));
}

void bp_cksum_text(uint32_t crc, char out[BP_CKSUM_TEXT]) {
    snprintf(out, BP_CKSUM_TEXT, "crc32:%08x", (unsigned)crc);
}

static int starts_with(const char *s, const char *prefix) {
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

int bp_cksum_present(const bp_st_file *f) {
    for (size_t k = 0; k < f->n_meta; ++k)
        if (starts_with(f->meta[k].key, BP_CKSUM_PREFIX)) return 1;
    return 0;
}

static int hex_digit(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* A stored checksum "crc32:xxxxxxxx" into *crc. what: "tensor 'x'" or "metadata 'k'". */
static bp_status parse_stored(const bp_st_file *f, const char *what, const char *v, uint32_t *crc) {
    const char *colon = strchr(v, ':');
    if (colon && strncmp(v, "crc32:", 6) != 0 && colon - v < 16)
        return bp_error(BP_ERR_UNSUPPORTED,
                        "%s: the checksum of %s is '%.40s', an algorithm this library does not "
                        "read (crc32)",
                        f->path, what, v);
    uint32_t c = 0;
    int ok = colon && strlen(v) == 14;
    for (int i = 6; ok && i < 14; ++i) {
        int h = hex_digit((unsigned char)v[i]);
        ok = h >= 0;
        c = c << 4 | (uint32_t)(h < 0 ? 0 : h);
    }
    if (!ok)
        return bp_error(BP_ERR_CORRUPT_FILE,
                        "%s: the checksum of %s is '%.40s', not crc32:<8 hex digits>: the file "
                        "was changed or damaged after it was saved",
                        f->path, what, v);
    *crc = c;
    return BP_OK;
}

/* The stored checksum of an entry (prefix + name), or NULL when absent; *buf is freed by the
 * caller. */
static const char *stored(const bp_st_file *f, const char *prefix, const char *name, char **buf) {
    size_t a = strlen(prefix), b = strlen(name);
    *buf = malloc(a + b + 1);
    if (!*buf) return NULL;
    memcpy(*buf, prefix, a);
    memcpy(*buf + a, name, b + 1);
    return bp_st_get_meta(f, *buf);
}

static bp_status mismatch(const bp_st_file *f, const char *what, uint32_t want, uint32_t got) {
    return bp_error(BP_ERR_CORRUPT_FILE,
                    "%s: %s does not match its checksum (stored crc32:%08x, the file's bytes give "
                    "crc32:%08x): the file was changed or damaged after it was saved",
                    f->path, what, (unsigned)want, (unsigned)got);
}

/* One ordinary metadata entry against "checksum.meta.<key>". */
static bp_status check_entry(const bp_st_file *f, const bp_st_kv *e) {
    char what[300], *key = NULL;
    snprintf(what, sizeof what, "metadata '%.256s'", e->key);
    const char *v = stored(f, BP_CKSUM_META, e->key, &key);
    bp_status st = BP_OK;
    uint32_t want = 0;
    if (!key)
        st = bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no memory", f->path);
    else if (!v)
        st = bp_error(BP_ERR_CORRUPT_FILE,
                      "%s: %s has no checksum: it was added or renamed after the file was saved",
                      f->path, what);
    else if ((st = parse_stored(f, what, v, &want)) == BP_OK &&
             want != bp_cksum_meta(e->key, e->value))
        st = mismatch(f, what, want, bp_cksum_meta(e->key, e->value));
    free(key);
    return st;
}

/* A "checksum.*" entry names something that is there. */
static bp_status check_owner(const bp_st_file *f, const char *key) {
    if (starts_with(key, BP_CKSUM_META) && !bp_st_get_meta(f, key + strlen(BP_CKSUM_META)))
        return bp_error(BP_ERR_CORRUPT_FILE,
                        "%s: metadata '%.256s' is missing, but its checksum is stored: it was "
                        "removed or renamed after the file was saved",
                        f->path, key + strlen(BP_CKSUM_META));
    if (starts_with(key, BP_CKSUM_TENSOR) && !bp_st_find(f, key + strlen(BP_CKSUM_TENSOR)))
        return bp_error(BP_ERR_CORRUPT_FILE,
                        "%s: tensor '%.256s' is missing, but its checksum is stored: it was "
                        "removed or renamed after the file was saved",
                        f->path, key + strlen(BP_CKSUM_TENSOR));
    return BP_OK;
}

bp_status bp_cksum_check_meta(const bp_st_file *f) {
    if (!bp_cksum_present(f)) return BP_OK;
    bp_status st = BP_OK;
    for (size_t k = 0; k < f->n_meta && st == BP_OK; ++k) {
        const bp_st_kv *e = &f->meta[k];
        st = starts_with(e->key, BP_CKSUM_PREFIX) ? check_owner(f, e->key) : check_entry(f, e);
    }
    for (size_t k = 0; k < f->n_tensors && st == BP_OK; ++k) {
        char *key = NULL;
        const char *v = stored(f, BP_CKSUM_TENSOR, f->tensors[k].name, &key);
        if (!key)
            st = bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no memory", f->path);
        else if (!v)
            st = bp_error(BP_ERR_CORRUPT_FILE,
                          "%s: tensor '%.256s' has no checksum: it was added or renamed after "
                          "the file was saved",
                          f->path, f->tensors[k].name);
        free(key);
    }
    return st;
}

/* The computed crc of tensor t against its stored checksum. */
static bp_status check_crc(const bp_st_file *f, const bp_st_tensor *t, uint32_t got) {
    char what[300], *key = NULL;
    snprintf(what, sizeof what, "tensor '%.256s'", t->name);
    const char *v = stored(f, BP_CKSUM_TENSOR, t->name, &key);
    uint32_t want = 0;
    bp_status st = key ? BP_OK : bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no memory", f->path);
    if (st == BP_OK && v && (st = parse_stored(f, what, v, &want)) == BP_OK && want != got)
        st = mismatch(f, what, want, got);
    free(key);
    return st;
}

bp_status bp_cksum_read(bp_st_file *f, const bp_st_tensor *t, void *dst, size_t bytes) {
    bp_status st = bp_st_read(f, t, dst, bytes);
    if (st != BP_OK || !bp_cksum_present(f)) return st;
    return check_crc(f, t, bp_cksum_bytes(0, dst, bytes));
}

/* The CRC of a tensor's bytes, read PIECE at a time. */
static bp_status crc_of(bp_st_file *f, const bp_st_tensor *t, unsigned char *buf, uint32_t *out) {
    uint64_t left = t->end - t->begin;
    uint32_t c = 0;
    if (left && fseeko(f->fp, (off_t)(f->data_start + t->begin), SEEK_SET) != 0)
        return bp_error(BP_ERR_IO, "%s: cannot seek: %s", f->path, strerror(errno));
    while (left) {
        size_t k = left > PIECE ? PIECE : (size_t)left;
        if (fread(buf, 1, k, f->fp) != k)
            return bp_error(ferror(f->fp) ? BP_ERR_IO : BP_ERR_CORRUPT_FILE,
                            "%s: reading tensor '%.256s' failed: %s", f->path, t->name,
                            ferror(f->fp) ? strerror(errno) : "the file ended");
        c = bp_cksum_bytes(c, buf, k);
        left -= k;
    }
    *out = c;
    return BP_OK;
}

bp_status bp_cksum_check_tensors(bp_st_file *f) {
    if (!bp_cksum_present(f)) return BP_OK;
    unsigned char *buf = malloc(PIECE);
    if (!buf) return bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no memory", f->path);
    bp_status st = BP_OK;
    for (size_t k = 0; k < f->n_tensors && st == BP_OK; ++k) {
        uint32_t c = 0;
        st = crc_of(f, &f->tensors[k], buf, &c);
        if (st == BP_OK) st = check_crc(f, &f->tensors[k], c);
    }
    free(buf);
    return st;
}
