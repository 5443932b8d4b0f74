/* Reading a file front to back, plain or gzip, with errors that say where. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/io_internal.h"

/* A stream of unknown length starts with this much buffer and doubles it as data arrives, so a
 * header that claims terabytes costs nothing until the bytes are really there. */
#define BP_IO_FIRST_CHUNK ((size_t)16 << 20)

/* gzread takes an unsigned count and returns an int: read at most this much per call. */
#define BP_IO_GZ_CHUNK ((size_t)1 << 30)

bp_status bp_reader_error(const bp_reader *r, bp_status status, uint64_t offset, const char *fmt,
                          ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return bp_error(status, "%s: '%s': %sbyte offset %llu: %s", r->fn, r->path,
                    r->gz ? "uncompressed " : "", (unsigned long long)offset, msg);
}

static int64_t regular_file_size(FILE *f) {
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) return -1;
    return (int64_t)sb.st_size;
}

static bp_status open_gzip(bp_reader *r) {
    fclose(r->file);
    r->file = NULL;
    r->n_ahead = 0;
    r->size = -1;
    errno = 0; /* zlib fails without errno only when out of memory */
    r->gz = gzopen(r->open_path, "rb");
    if (!r->gz)
        return bp_error(BP_ERR_IO, "%s: cannot open '%s' with zlib: %s", r->fn, r->path,
                        errno ? strerror(errno) : "out of memory");
    gzbuffer(r->gz, 1u << 17);
    return BP_OK;
}

bp_status bp_reader_open(bp_reader *r, const char *fn, const char *path, int allow_gzip) {
    bp_source src = {path, path};
    return bp_reader_open_source(r, fn, src, allow_gzip);
}

bp_status bp_reader_open_source(bp_reader *r, const char *fn, bp_source src, int allow_gzip) {
    memset(r, 0, sizeof *r);
    r->fn = fn;
    r->path = src.name ? src.name : "(null)";
    r->open_path = src.path;
    r->size = -1;
    if (!src.path) return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: the path is NULL", fn);
    r->file = fopen(src.path, "rb");
    if (!r->file)
        return bp_error(BP_ERR_IO, "%s: cannot open '%s': %s", fn, r->path, strerror(errno));
    r->size = regular_file_size(r->file);
    /* Look at the first two bytes for the gzip magic; keep them for the plain reader, since a
     * pipe cannot seek back. */
    size_t got = fread(r->ahead, 1, 2, r->file);
    if (ferror(r->file))
        return bp_error(BP_ERR_IO, "%s: cannot read '%s': %s", fn, r->path, strerror(errno));
    r->n_ahead = (int)got;
    if (allow_gzip && got == 2 && r->ahead[0] == 0x1f && r->ahead[1] == 0x8b) return open_gzip(r);
    return BP_OK;
}

void bp_reader_close(bp_reader *r) {
    if (r->file) fclose(r->file);
    if (r->gz) gzclose(r->gz);
    r->file = NULL;
    r->gz = NULL;
}

static bp_status read_gz(bp_reader *r, unsigned char *buf, size_t n, size_t *got) {
    while (*got < n) {
        size_t want = n - *got < BP_IO_GZ_CHUNK ? n - *got : BP_IO_GZ_CHUNK;
        int k = gzread(r->gz, buf + *got, (unsigned)want);
        int zerr = Z_OK;
        const char *zmsg = gzerror(r->gz, &zerr);
        if (k > 0) *got += (size_t)k;
        if (zerr == Z_ERRNO)
            return bp_reader_error(r, BP_ERR_IO, r->offset + *got, "read failed: %s",
                                   strerror(errno));
        if (zerr != Z_OK)
            return bp_reader_error(r, BP_ERR_CORRUPT_FILE, r->offset + *got,
                                   "the gzip stream is damaged: %s", zmsg);
        if (k <= 0 || (size_t)k < want) break; /* the end of the data */
    }
    return BP_OK;
}

bp_status bp_reader_read(bp_reader *r, void *buf, size_t n, size_t *got) {
    unsigned char *out = buf;
    *got = 0;
    bp_status st = BP_OK;
    if (r->gz) {
        st = read_gz(r, out, n, got);
    } else {
        while (r->n_ahead > 0 && *got < n) {
            out[(*got)++] = r->ahead[0];
            r->ahead[0] = r->ahead[1];
            r->n_ahead--;
        }
        *got += fread(out + *got, 1, n - *got, r->file);
        if (*got < n && ferror(r->file))
            st =
                bp_reader_error(r, BP_ERR_IO, r->offset + *got, "read failed: %s", strerror(errno));
    }
    r->offset += *got;
    return st;
}

bp_status bp_reader_read_exact(bp_reader *r, void *buf, size_t n, const char *what) {
    uint64_t start = r->offset;
    size_t got = 0;
    bp_status st = bp_reader_read(r, buf, n, &got);
    if (st != BP_OK) return st;
    if (got < n)
        return bp_reader_error(r, BP_ERR_CORRUPT_FILE, start,
                               "truncated: %zu bytes of %s expected here, the file ends after %zu",
                               n, what, got);
    return BP_OK;
}

/* A plain file: the claim must match the bytes left before anything is allocated. */
static bp_status read_body_sized(bp_reader *r, uint64_t bytes, const char *what, void **out) {
    uint64_t left = (uint64_t)r->size > r->offset ? (uint64_t)r->size - r->offset : 0;
    if (left < bytes)
        return bp_reader_error(r, BP_ERR_CORRUPT_FILE, r->offset,
                               "the header claims %llu bytes of %s, the file has only %llu left",
                               (unsigned long long)bytes, what, (unsigned long long)left);
    if (left > bytes)
        return bp_reader_error(r, BP_ERR_CORRUPT_FILE, r->offset + bytes,
                               "%llu unexpected bytes after the %llu bytes of %s",
                               (unsigned long long)(left - bytes), (unsigned long long)bytes, what);
    if (bytes > SIZE_MAX - 1)
        return bp_reader_error(r, BP_ERR_OUT_OF_MEMORY, r->offset, "%s is too large", what);
    *out = malloc(bytes ? (size_t)bytes : 1);
    if (!*out)
        return bp_reader_error(r, BP_ERR_OUT_OF_MEMORY, r->offset, "no memory for %llu bytes of %s",
                               (unsigned long long)bytes, what);
    bp_status st = bp_reader_read_exact(r, *out, (size_t)bytes, what);
    if (st != BP_OK) {
        free(*out);
        *out = NULL;
    }
    return st;
}

/* Makes room for at least `need` bytes (need <= limit): doubles the buffer, capped at limit, so
 * a growing stream costs O(bytes) copying in all. */
static int grow(unsigned char **buf, size_t *cap, size_t need, size_t limit) {
    if (need <= *cap) return 1;
    size_t c = *cap > limit / 2 ? limit : *cap * 2;
    if (c < need) c = need;
    unsigned char *p = realloc(*buf, c);
    if (!p) return 0;
    *buf = p;
    *cap = c;
    return 1;
}

/* A stream (gzip, pipe): read in chunks, growing the buffer only as far as data arrives. */
static bp_status read_body_stream(bp_reader *r, uint64_t bytes, const char *what, void **out) {
    if (bytes > SIZE_MAX - 1)
        return bp_reader_error(r, BP_ERR_OUT_OF_MEMORY, r->offset, "%s is too large", what);
    unsigned char *buf = NULL;
    size_t cap = 0, have = 0, limit = (size_t)bytes;
    uint64_t start = r->offset;
    bp_status st = BP_OK;
    while (st == BP_OK && have < limit) {
        size_t want = limit - have < BP_IO_FIRST_CHUNK ? limit - have : BP_IO_FIRST_CHUNK;
        if (!grow(&buf, &cap, have + want, limit)) {
            st = bp_reader_error(r, BP_ERR_OUT_OF_MEMORY, r->offset,
                                 "no memory for %zu bytes of %s", have + want, what);
            break;
        }
        size_t got = 0;
        st = bp_reader_read(r, buf + have, want, &got);
        have += got;
        if (st == BP_OK && got < want)
            st = bp_reader_error(r, BP_ERR_CORRUPT_FILE, r->offset,
                                 "truncated: the header claims %llu bytes of %s from byte %llu, "
                                 "the data ends after %zu",
                                 (unsigned long long)bytes, what, (unsigned long long)start, have);
    }
    unsigned char extra;
    size_t got = 0;
    if (st == BP_OK) st = bp_reader_read(r, &extra, 1, &got);
    if (st == BP_OK && got)
        st = bp_reader_error(r, BP_ERR_CORRUPT_FILE, r->offset - 1,
                             "unexpected bytes after the %llu bytes of %s",
                             (unsigned long long)bytes, what);
    if (st != BP_OK) {
        free(buf);
        return st;
    }
    *out = buf ? (void *)buf : malloc(1);
    return *out ? BP_OK : bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no memory", r->fn);
}

bp_status bp_reader_read_body(bp_reader *r, uint64_t bytes, const char *what, void **out) {
    *out = NULL;
    if (r->size >= 0) return read_body_sized(r, bytes, what, out);
    return read_body_stream(r, bytes, what, out);
}

bp_status bp_reader_read_all(bp_reader *r, char **out, size_t *len) {
    unsigned char *buf = NULL;
    size_t cap = 0, have = 0;
    *out = NULL;
    *len = 0;
    /* A plain file fits at once: its size, the NUL and one byte to see the end. */
    size_t step =
        r->size >= 0 && (uint64_t)r->size < SIZE_MAX / 4 ? (size_t)r->size + 2 : BP_IO_FIRST_CHUNK;
    for (;;) {
        if (!grow(&buf, &cap, have + step, SIZE_MAX / 2)) {
            free(buf);
            return bp_reader_error(r, BP_ERR_OUT_OF_MEMORY, r->offset, "no memory for %zu bytes",
                                   have + step);
        }
        size_t got = 0;
        bp_status st = bp_reader_read(r, buf + have, cap - have - 1, &got);
        have += got;
        if (st != BP_OK) {
            free(buf);
            return st;
        }
        if (have < cap - 1) break;
        step = cap; /* full: double */
    }
    buf[have] = '\0';
    *out = (char *)buf;
    *len = have;
    return BP_OK;
}
