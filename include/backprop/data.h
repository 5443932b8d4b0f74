/* Datasets in host memory, and batches prepared for a device.
 *
 * A dataset holds n >= 1 samples: features as float32 [n, features] (row-major) and targets,
 * either class indices (int32 [n]) or values (float32 [n, width]) for regression and BCE, or
 * none (features to predict from). Every feature and target is finite. Class labels may have
 * names (a CSV column of text): then class i is the i-th name (bp_dataset_class_name).
 *
 * Loaders return NULL and set *status on failure, with one line in bp_last_error() naming the
 * call, the file and the position: "byte offset N" for binary files ("uncompressed byte offset"
 * inside gzip), "line L, column C" (1-based) for CSV. Statuses: BP_ERR_IO when the file cannot
 * be opened or read; BP_ERR_CORRUPT_FILE for bad content (wrong magic, truncated data, a header
 * claiming more data than the file holds, trailing bytes, a non-numeric cell, a row with the
 * wrong number of columns, label and sample counts that differ); BP_ERR_NON_FINITE for NaN or
 * Inf; BP_ERR_UNSUPPORTED for a valid file in a form not read here (an NPY dtype, Fortran
 * order); BP_ERR_INVALID_ARGUMENT for bad options. Nothing is allocated on a header's word
 * alone: claims are checked against the file's size, and compressed data is read in growing
 * chunks.
 *
 * Lifetime: a dataset owns its memory (a loader and an evaluation borrow it: free it after
 * them); what its getters return lives as long as it. The datasets a split makes are new ones.
 * Threads: a dataset may be read from several threads at once (loaders, bp_evaluate); changing
 * it (bp_dataset_apply_scaling) needs it to itself. A loader is used by one thread at a time. */
#ifndef BACKPROP_DATA_H
#define BACKPROP_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "device.h"
#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bp_dataset bp_dataset;

typedef enum bp_target_kind {
    BP_TARGET_CLASS = 0,  /* int32 class index per sample */
    BP_TARGET_VALUES = 1, /* float32 values per sample */
    BP_TARGET_NONE = 2    /* no targets (width 0): features to predict from; no loader takes them */
} bp_target_kind;

/* "class", "values", "none" (the name and parse pair of device.h). */
BP_API const char *bp_target_kind_name(bp_target_kind kind);
BP_API bp_status bp_target_kind_parse(const char *text, bp_target_kind *out);

/* IDX files (the MNIST format), gzip-compressed (detected by the bytes 1f 8b) or not. images:
 * unsigned-byte IDX of rank >= 2 (magic 0x00000803 for [n, rows, cols]; each sample flattened);
 * labels: unsigned-byte IDX vector [n] (magic 0x00000801). Pixel values are kept as they are
 * (0..255); scale with bp_dataset_fit_scaling. Classes: 1 + the largest label. */
BP_API bp_dataset *bp_dataset_load_idx(const char *images_path, const char *labels_path,
                                       bp_status *status);

typedef enum bp_csv_target {
    BP_CSV_CLASS_INDEX = 0, /* one target column of integers >= 0 */
    BP_CSV_ONE_HOT = 1,     /* the target columns are a one-hot row, turned into a class index */
    BP_CSV_VALUES = 2,      /* the target columns are regression values */
    BP_CSV_CLASS_NAME = 3,  /* one target column of class names: any non-empty text, each
                               distinct text a class (see class_names for their order) */
    BP_CSV_CLASS_AUTO = 4,  /* one target column: BP_CSV_CLASS_INDEX when every label is a
                               number, BP_CSV_CLASS_NAME when none is; a column holding both is
                               BP_ERR_CORRUPT_FILE naming a line of each */
    BP_CSV_NO_TARGETS = 5   /* every column is a feature (targets must be NULL):
                               BP_TARGET_NONE, data to predict from */
} bp_csv_target;

/* "class_index", "one_hot", "values", "class_name", "class_auto", "no_targets". */
BP_API const char *bp_csv_target_name(bp_csv_target kind);
BP_API bp_status bp_csv_target_parse(const char *text, bp_csv_target *out);

typedef struct bp_csv_options {
    char delimiter;      /* 0: ',' */
    int header;          /* -1: detect (a non-numeric cell in the first row), 0: no, 1: yes */
    const char *targets; /* target columns, comma-separated header names or 0-based
                            indices ("label", "0", "y1,y2"; a negative index counts from the
                            end, "-1" is the last); a header name wins over an index, and the
                            whole string is first tried as one name (for a name with a comma);
                            NULL: the last column. The other columns are the features. */
    bp_csv_target target_kind;
    /* Class names (BP_CSV_CLASS_NAME, and BP_CSV_CLASS_AUTO when the labels are names): the
     * classes 0..n_class_names-1 are these names in this order (distinct, not NULL), so a file
     * read later maps its labels onto a model's classes; names of the file that are not among
     * them take the next indices, in byte order (strcmp), so the caller sees and can name them.
     * NULL (n_class_names 0): the classes are the file's distinct names in byte order. */
    const char *const *class_names;
    int n_class_names;
} bp_csv_options;

/* delimiter ',', header -1 (detect), targets NULL (the last column), BP_CSV_CLASS_INDEX, no
 * class names. */
BP_API bp_csv_options bp_csv_options_default(void);

/* A CSV file (gzip-compressed or not): one sample per line; LF or CRLF line ends (lines ending
 * in CR alone are BP_ERR_CORRUPT_FILE, with the conversion to use); blank lines skipped; blanks
 * around cells ignored; fields may be quoted ("a, b", "" for a quote) but may not span lines.
 * A target named by a header name that several columns share is BP_ERR_INVALID_ARGUMENT. Every cell
 * but the header's and class names must be a number (strtod, so the C locale's decimal point).
 * Header detection (header -1): the first row is a header when one of its cells is not a number
 * and the cell under it in the second row is one (so a column of class names alone does not
 * make a header); a file of one row is a header when any cell is not a number. options NULL:
 * the defaults. Classes: the number of target columns for one-hot, the number of names for
 * class names, else 1 + the largest label. */
BP_API bp_dataset *bp_dataset_load_csv(const char *path, const bp_csv_options *options,
                                       bp_status *status);

/* NumPy .npy files (format 1.0, 2.0 or 3.0) in C order; fortran_order True is BP_ERR_UNSUPPORTED.
 * dtypes: float32, float64 and integers of 1, 2, 4 or 8 bytes, little- or big-endian ('<f4',
 * '<f8', '|u1', '<i4', '<i8', ...); others are BP_ERR_UNSUPPORTED. features: [n, ...] (each
 * sample flattened; [n] is one feature); targets: [n] or [n, 1] of integers >= 0 (or floats
 * holding such integers) for BP_TARGET_CLASS, or numbers [n] / [n, k, ...] (flattened to width
 * k...) for BP_TARGET_VALUES; BP_TARGET_NONE reads the features alone (targets_path must be
 * NULL). Classes: 1 + the largest label. */
BP_API bp_dataset *bp_dataset_load_npy(const char *features_path, const char *targets_path,
                                       bp_target_kind kind, bp_status *status);

/* ---- a dataset by its content ------------------------------------------------------------ */

typedef enum bp_data_format {
    BP_FORMAT_AUTO = 0, /* told by the content */
    BP_FORMAT_CSV = 1,
    BP_FORMAT_NPY = 2,
    BP_FORMAT_IDX = 3
} bp_data_format;

/* "auto", "csv", "npy", "idx". */
BP_API const char *bp_data_format_name(bp_data_format format);
BP_API bp_status bp_data_format_parse(const char *text, bp_data_format *out);

/* What a failed open most likely means, beyond its message (which says it too). */
typedef enum bp_data_hint {
    BP_HINT_NONE = 0,
    BP_HINT_DELIMITER = 1,   /* a CSV whose first line has none of the delimiter but another
                                common one (report.delimiter): the delimiter is wrong */
    BP_HINT_VALUES = 2,      /* class labels were asked for, and the targets read as values:
                                they are regression targets (BP_CSV_VALUES, BP_TARGET_VALUES) */
    BP_HINT_CLASS_NAMES = 3, /* BP_CSV_CLASS_AUTO met labels that mix numbers and names; they
                                read as names (BP_CSV_CLASS_NAME) */
    BP_HINT_CLASSES = 4,     /* a label outside options.max_classes */
    BP_HINT_CLASS_COUNT = 5, /* max_classes 0: the largest label makes over 1000 classes, few of
                                which appear: a typo? (a max_classes that holds it reads them) */
    BP_HINT_IDENTIFIERS = 6  /* max_classes 0: over 1000 class names in under twice as many
                                rows: a column of identifiers, not labels? */
} bp_data_hint;

/* "none", "delimiter", "values", "class_names", "classes", "class_count", "identifiers". */
BP_API const char *bp_data_hint_name(bp_data_hint hint);
BP_API bp_status bp_data_hint_parse(const char *text, bp_data_hint *out);

typedef struct bp_open_options {
    bp_data_format format; /* BP_FORMAT_AUTO: from the content */
    /* The file of the targets for NPY features (NULL: none, the data is BP_TARGET_NONE) and of
     * the labels for IDX images (required); "-" is standard input. A CSV holds its targets in
     * columns: this is then ignored (report.targets_ignored). */
    const char *targets_path;
    bp_target_kind target_kind; /* NPY targets: BP_TARGET_CLASS or BP_TARGET_VALUES */
    bp_csv_options csv;         /* CSV: as bp_dataset_load_csv reads it */
    /* > 0: the input width of the model the data is for. A CSV with exactly this many columns
     * then holds features alone and is read as BP_CSV_NO_TARGETS (data to predict from);
     * naming target columns for it (csv.targets) is BP_ERR_INVALID_ARGUMENT. */
    int inputs;
    /* Class labels (every format). > 0: the classes the data is for (a model's outputs, a
     * count the caller fixes): a label at or past it (a name past class_names) is
     * BP_ERR_INVALID_ARGUMENT naming the file, the row and the label or name (hint
     * BP_HINT_CLASSES). 0: the data's own; then index labels whose largest makes over 1000
     * classes though fewer than a quarter of them appear, and over 1000 class names in fewer
     * than twice as many rows, are refused naming the file and the row of the largest label,
     * as BP_HINT_CLASS_COUNT and BP_HINT_IDENTIFIERS (one-hot targets are not checked). The
     * dataset's classes are the loader's either way. */
    int max_classes;
} bp_open_options;

/* format AUTO, no targets file, target_kind BP_TARGET_CLASS, csv = bp_csv_options_default()
 * with target_kind BP_CSV_CLASS_AUTO (indices or names, whichever the labels are), inputs 0,
 * max_classes 0. */
BP_API bp_open_options bp_open_options_default(void);

/* What bp_dataset_open found, filled on success and on failure as far as it got. */
typedef struct bp_open_report {
    bp_data_format format; /* what the file is (AUTO when it could not tell) */
    int gzip;              /* 1: the file was gzip-compressed */
    int columns;           /* CSV: the columns of its first non-blank line */
    int no_targets;        /* 1: read as features alone (NPY without targets; CSV as wide as
                              options.inputs) */
    int targets_ignored;   /* 1: targets_path was given for a CSV, which holds its own */
    bp_data_hint hint;     /* on failure: see bp_data_hint */
    char delimiter;        /* BP_HINT_DELIMITER: the delimiter the first line has */
    /* Class labels, once read: how many distinct ones appear (1: nothing to learn), and the
     * row (1-based, in file order) of the first largest; 0 for other targets. */
    int64_t distinct_labels, top_label_row;
} bp_open_report;

/* A dataset from path ("-": standard input, read once) by its content, not its name: gzip is
 * undone first (every format), then the NPY magic (\x93NUMPY) makes an NPY file, the IDX magic
 * (00 00 08 rank) an IDX file, and text a CSV file; binary data that is none of these is
 * BP_ERR_CORRUPT_FILE naming its first bytes. Each format is read as its loader above reads it,
 * with the same checks and statuses; messages start with "bp_dataset_open" and name the file
 * (standard input as 'standard input').
 *
 * It diagnoses what a loader alone cannot: a CSV whose first line has none of the delimiter but
 * another one is BP_ERR_INVALID_ARGUMENT naming both; class labels that fail to read are read
 * again as values (and, under BP_CSV_CLASS_AUTO, as names), and when that works the message says
 * so and report->hint names it. options NULL: the defaults; report may be NULL. NULL and *status
 * on failure. */
BP_API bp_dataset *bp_dataset_open(const char *path, const bp_open_options *options,
                                   bp_open_report *report, bp_status *status);

/* Checks that every class label of dataset is one of `classes` (>= 1) classes, as a model with
 * that many outputs needs (data of other targets passes): BP_ERR_INVALID_ARGUMENT naming name
 * (the data's file, for the message; NULL: "the dataset"), the first row outside (1-based) and
 * its label, or its class name with the classes' first names. bp_dataset_open's max_classes
 * makes the same check as it reads. */
BP_API bp_status bp_dataset_check_classes(const bp_dataset *dataset, int classes, const char *name);

/* Writes an array as a NumPy .npy file (format 1.0, C order, little-endian): dtype BP_F32
 * ('<f4') or BP_I32 ('<i4'), ndim 1..32 sizes in shape (each >= 0), the elements of data in C
 * order (their product, which must stay below 2^60 bytes). path "-" writes standard output;
 * any other path is written atomically, as checkpoints are (beside it, flushed and renamed, so
 * a failure leaves the previous file). NumPy's np.load reads it; so does bp_dataset_load_npy.
 * BP_ERR_INVALID_ARGUMENT for bad arguments, BP_ERR_IO when writing fails (nothing is left at
 * path then). */
BP_API bp_status bp_npy_save(const char *path, bp_dtype dtype, int ndim, const int64_t *shape,
                             const void *data);

/* A dataset from caller memory (copied). targets: int32 [n] for classes, float [n, width] for
 * values (width 1 for classes); BP_TARGET_NONE takes width 0 and ignores targets (NULL). Class
 * indices must be >= 0 (BP_ERR_INVALID_ARGUMENT), features and values finite
 * (BP_ERR_NON_FINITE naming the row and column). */
BP_API bp_dataset *bp_dataset_from_memory(int64_t n, int features, const float *x,
                                          bp_target_kind kind, int width, const void *targets,
                                          bp_status *status);

BP_API void bp_dataset_free(bp_dataset *dataset);

BP_API int64_t bp_dataset_size(const bp_dataset *dataset);
BP_API int bp_dataset_features(const bp_dataset *dataset);
BP_API bp_target_kind bp_dataset_target_kind(const bp_dataset *dataset);
BP_API int bp_dataset_target_width(const bp_dataset *dataset); /* 1 for classes, 0: none */
BP_API int bp_dataset_classes(const bp_dataset *dataset);      /* see the loaders; 0: values */
/* Class names (BP_CSV_CLASS_NAME): how many (bp_dataset_classes), 0 when the classes are
 * indices; name `index` (0-based), owned by the dataset, NULL out of range. */
BP_API int bp_dataset_n_class_names(const bp_dataset *dataset);
BP_API const char *bp_dataset_class_name(const bp_dataset *dataset, int index);
BP_API const float *bp_dataset_features_data(const bp_dataset *dataset);
BP_API const void *bp_dataset_targets_data(const bp_dataset *dataset);

/* A seeded shuffle of the rows, then the first n - round(n * val_fraction) rows train and the
 * rest validate. val_fraction in (0, 1), and each part must get at least one row. Both outputs
 * are new datasets that keep the input's class count and names; the input is unchanged.
 *
 * The shuffle (also the loader's, with another stream, see bp_loader_epoch_order) is
 * Fisher-Yates over the identity 0..n-1 driven by the library's counter-based generator
 * (Philox4x32-10): step k = 0..n-2 swaps position i = n-1-k with j = r mod (i + 1), where
 * r = word 2k | word 2k+1 << 32 of the stream (seed, 0xC000000000000000). */
BP_API bp_status bp_dataset_split(const bp_dataset *dataset, double val_fraction, uint64_t seed,
                                  bp_dataset **train, bp_dataset **val);

/* Feature scaling x' = (x - offset[j]) * scale[j], fitted on the training set and kept with the
 * model (in checkpoints) so evaluation and prediction see the same transform. */
typedef enum bp_scaling_kind {
    BP_SCALE_NONE = 0,     /* offset 0, scale 1 */
    BP_SCALE_MINMAX = 1,   /* to [0, 1] per feature; a constant feature gets scale 1 */
    BP_SCALE_STANDARD = 2, /* zero mean, unit variance per feature; a constant feature scale 1 */
    BP_SCALE_GLOBAL = 3    /* one mean and one standard deviation over all features (images) */
} bp_scaling_kind;

/* "none", "minmax", "standard", "global". */
BP_API const char *bp_scaling_kind_name(bp_scaling_kind kind);
BP_API bp_status bp_scaling_kind_parse(const char *text, bp_scaling_kind *out);

/* offset and scale: bp_dataset_features(train) floats each. Statistics in double. */
BP_API bp_status bp_dataset_fit_scaling(const bp_dataset *train, bp_scaling_kind kind,
                                        float *offset, float *scale);
BP_API bp_status bp_dataset_apply_scaling(bp_dataset *dataset, const float *offset,
                                          const float *scale);

/* Batches for a device. A background thread gathers the next batch (in the epoch's order) into
 * host memory while the current one trains; bp_loader_next uploads it on the caller's thread.
 * Without shuffle the order is 0..n-1; with shuffle it is the permutation of the split's recipe
 * above on the stream 0xC000000000000001 + epoch: the same on every device, and the same after a
 * resume. The dataset is borrowed: it must outlive the loader and not change while an epoch
 * runs; one without targets (BP_TARGET_NONE) is BP_ERR_INVALID_ARGUMENT. Every buffer and device
 * tensor is allocated in bp_loader_create, so a training loop allocates nothing per step. Call a
 * loader's functions from one thread at a time. */
typedef struct bp_loader bp_loader;

BP_API bp_loader *bp_loader_create(const bp_dataset *dataset, bp_device *device, int batch,
                                   int shuffle, uint64_t seed, bp_status *status);
BP_API void bp_loader_free(bp_loader *loader);

/* A loader for rank `index` of `count` data-parallel ranks (distributed.h): every rank walks the
 * same batches of `batch` rows in the same order (the same seed), and this one hands out only
 * its piece of each, rows [B*index/count, B*(index+1)/count) of a batch of B rows, as
 * bp_comm_shard cuts it. A last batch too small to give every rank min_rows rows (the
 * optimizer's accum_steps) is left out of every epoch. Index 0 of 1 with min_rows 1 is
 * bp_loader_create. */
BP_API bp_loader *bp_loader_create_shard(const bp_dataset *dataset, bp_device *device, int batch,
                                         int shuffle, uint64_t seed, int index, int count,
                                         int min_rows, bp_status *status);

/* The order in which a loader over n rows created with shuffle and seed hands out the rows of
 * epoch `epoch`: order[0..n) receives the row indices (0..n-1 without shuffle), batch b being
 * order[b * batch ..]. It is the loader's own computation, so a program can reproduce (or
 * check) what a loader feeds it without a device. n in 1..2^40 and epoch in 0..2^40-1, else
 * BP_ERR_INVALID_ARGUMENT. */
BP_API bp_status bp_loader_epoch_order(int64_t n, int shuffle, uint64_t seed, int64_t epoch,
                                       int64_t *order);

/* Batches per epoch: ceil(n / batch) (less a last one left out, see above); the last one may
 * be smaller. */
BP_API int64_t bp_loader_batches(const bp_loader *loader);

/* Starts epoch `epoch` (0-based, < 2^40) at batch `first_batch` (0 unless resuming mid-epoch;
 * 0..bp_loader_batches(), the last meaning nothing is left). Drops whatever the previous epoch
 * had not handed out. */
BP_API bp_status bp_loader_start_epoch(bp_loader *loader, int64_t epoch, int64_t first_batch);

/* The next batch of the epoch: *x ([rows, features]) and *y (int32 [rows, 1] or float
 * [rows, width]) are tensors the loader owns, valid until the next call. At the end of the epoch
 * returns BP_OK with *x and *y set to NULL. Before the first bp_loader_start_epoch:
 * BP_ERR_INVALID_ARGUMENT. When the upload fails the batch stays current (a retry sends it). */
BP_API bp_status bp_loader_next(bp_loader *loader, const bp_tensor **x, const bp_tensor **y);

#ifdef __cplusplus
}
#endif

#endif
