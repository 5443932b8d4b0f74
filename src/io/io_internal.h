/* Datasets and file reading, for the loaders in src/io. */
#ifndef BP_IO_INTERNAL_H
#define BP_IO_INTERNAL_H

#include <stdint.h>
#include <stdio.h>

#include <zlib.h>

#include "backprop/data.h"
#include "core/error.h"

struct bp_dataset {
    int64_t n;           /* samples, >= 1 */
    int features;        /* floats per sample, >= 1 */
    bp_target_kind kind; /* BP_TARGET_CLASS: y is int32 [n]; VALUES: float [n, width]; NONE: NULL */
    int width;           /* target columns; 1 for classes, 0 for none */
    int classes;         /* BP_TARGET_CLASS: the class count; 0 for values */
    float *x;            /* [n, features], row-major */
    void *y;
    int n_names;     /* class names (n_names == classes), or 0 */
    char **names;    /* [n_names], pointing into name_text */
    char *name_text; /* the names, each NUL-terminated */
};

/* Streams of the counter-based generator (kernels/bp_math.h) that datasets use. Dropout uses
 * streams below 2^63 and weight init 2^63 plus small numbers, so datasets take the quarter
 * from 3 * 2^62 up: the split first, then one stream per epoch. Documented in data.h. */
#define BP_IO_SPLIT_STREAM        (UINT64_C(3) << 62)
#define BP_IO_EPOCH_STREAM(epoch) (BP_IO_SPLIT_STREAM + 1 + (uint64_t)(epoch))

/* The most samples a dataset may hold; keeps every index product far from overflow and the
 * Fisher-Yates draws (64-bit, reduced modulo i + 1) within 2^-24 of uniform. */
#define BP_IO_MAX_SAMPLES (INT64_C(1) << 40)

/* The bytes of n rows of features and of width targets, refused (BP_ERR_INVALID_ARGUMENT or
 * BP_ERR_OUT_OF_MEMORY, naming fn) when they are no valid size or more than the host has free. */
bp_status bp_dataset_check_size(const char *fn, int64_t n, int features, int width, size_t *nx,
                                size_t *ny);

/* A dataset of n samples with storage for features and targets, uninitialised; classes 0.
 * `fn` names the caller in the out-of-memory message. NULL and the status on failure. */
bp_dataset *bp_dataset_new(const char *fn, int64_t n, int features, bp_target_kind kind, int width,
                           bp_status *status);

/* Sets classes to 1 + the largest label of a class dataset. */
void bp_dataset_count_classes(bp_dataset *d);

/* Gives d copies of the n class names (replacing any), and classes = n. BP_OK or
 * BP_ERR_OUT_OF_MEMORY naming fn. */
bp_status bp_dataset_set_names(bp_dataset *d, const char *fn, const char *const *names, int n);

/* Why v is not a class index (an int32 label >= 0), as a phrase that follows the value ("is
 * negative", "is over 2147483647, ..."); NULL when it is one. */
const char *bp_io_class_index_problem(double v);

/* perm[0..n) = a permutation of 0..n-1: Fisher-Yates over the identity, driven by the words of
 * the stream (seed, stream) as documented in data.h. */
void bp_io_permutation(int64_t *perm, int64_t n, uint64_t seed, uint64_t stream);

/* ---- reading files ----------------------------------------------------------------------- */

/* A file read front to back, through stdio or, when it starts with the gzip magic 1f 8b and
 * gzip is allowed, through zlib. Errors name the file and the byte offset. */
typedef struct bp_reader {
    const char *fn;        /* the public call, for messages */
    const char *path;      /* the file's name in messages: as the caller gave it */
    const char *open_path; /* what is opened: path, or another name of the same file */
    FILE *file;
    gzFile gz;
    uint64_t offset;        /* bytes consumed; of the uncompressed stream for gzip */
    int64_t size;           /* bytes in the file when it is a plain regular file, else -1 */
    unsigned char ahead[2]; /* bytes read to detect gzip, not yet consumed */
    int n_ahead;
} bp_reader;

/* Opens path; BP_ERR_IO naming it when it cannot be opened. Close even after a failure. */
bp_status bp_reader_open(bp_reader *r, const char *fn, const char *path, int allow_gzip);

/* A file a loader reads: the path it opens and the name its messages call it by (the path
 * itself, or "standard input" for the copy of it that bp_dataset_open makes). */
typedef struct bp_source {
    const char *path, *name;
} bp_source;

/* bp_reader_open of src.path, named src.name in messages. */
bp_status bp_reader_open_source(bp_reader *r, const char *fn, bp_source src, int allow_gzip);

/* ---- the loaders, for the public calls and bp_dataset_open (fn names the caller) --------- */

/* Reads the whole file (through gzip when it starts with its magic) into a new NUL-terminated
 * buffer; *len excludes the NUL. */
bp_status bp_io_read_text(const char *fn, bp_source src, char **text, size_t *len);

/* Parses CSV text read from the file `name` (split in place: text is changed). */
bp_dataset *bp_io_csv_parse(const char *fn, const char *name, char *text, size_t len,
                            const bp_csv_options *options, bp_status *status);

/* bp_dataset_load_npy of sources (targets NULL for BP_TARGET_NONE); allow_gzip: also read
 * gzip-compressed files. */
bp_dataset *bp_io_load_npy(const char *fn, bp_source features, const bp_source *targets,
                           bp_target_kind kind, int allow_gzip, bp_status *status);

/* bp_dataset_load_idx of sources. */
bp_dataset *bp_io_load_idx(const char *fn, bp_source images, bp_source labels, bp_status *status);
void bp_reader_close(bp_reader *r);

/* Reads up to n bytes into buf; *got receives the count (short only at the end of the file).
 * BP_ERR_IO on a read error, BP_ERR_CORRUPT_FILE on bad gzip data. */
bp_status bp_reader_read(bp_reader *r, void *buf, size_t n, size_t *got);

/* Reads exactly n bytes of `what` (for the message); a short read is BP_ERR_CORRUPT_FILE. */
bp_status bp_reader_read_exact(bp_reader *r, void *buf, size_t n, const char *what);

/* Reads the rest of the file, which must be exactly `bytes` bytes of `what` as a header claims,
 * into a new buffer (*out, free it). Nothing is allocated on the header's word alone: a plain
 * file is checked against its size first; a stream grows its buffer as data arrives. A short or
 * long file is BP_ERR_CORRUPT_FILE naming where it ends. */
bp_status bp_reader_read_body(bp_reader *r, uint64_t bytes, const char *what, void **out);

/* Reads everything left (a text file), NUL-terminated; *len excludes the NUL. */
bp_status bp_reader_read_all(bp_reader *r, char **out, size_t *len);

/* Records "fn: path: byte offset N: <message>" (the uncompressed offset for gzip). */
bp_status bp_reader_error(const bp_reader *r, bp_status status, uint64_t offset, const char *fmt,
                          ...) BP_PRINTF(4, 5);

#endif
