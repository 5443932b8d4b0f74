/* Datasets in host memory, and batches prepared for a device.
 *
 * A dataset holds n samples: features as float32 [n, features] (row-major) and targets, either
 * class indices (int32 [n]) or values (float32 [n, width]) for regression and BCE. Loaders name
 * the file and the position (byte offset, row and column) of anything wrong in it. */
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
    BP_TARGET_CLASS = 0, /* int32 class index per sample */
    BP_TARGET_VALUES = 1 /* float32 values per sample */
} bp_target_kind;

/* IDX files (the MNIST format), gzip-compressed or not. images: unsigned-byte IDX of rank >= 2
 * ([n, ...], each sample flattened); labels: unsigned-byte IDX vector [n]. Pixel values are
 * kept as they are (0..255); scale with bp_dataset_fit_scaling. */
BP_API bp_dataset *bp_dataset_load_idx(const char *images_path, const char *labels_path,
                                       bp_status *status);

typedef enum bp_csv_target {
    BP_CSV_CLASS_INDEX = 0, /* one target column of integers >= 0 */
    BP_CSV_ONE_HOT = 1,     /* the target columns are a one-hot row, turned into a class index */
    BP_CSV_VALUES = 2       /* the target columns are regression values */
} bp_csv_target;

typedef struct bp_csv_options {
    char delimiter;           /* 0: ',' */
    int header;               /* -1: detect (a non-numeric cell in the first row), 0: no, 1: yes */
    const char *targets;      /* target columns, comma-separated header names or 0-based
                                 indices ("label", "0", "y1,y2"); NULL: the last column */
    bp_csv_target target_kind;
} bp_csv_options;

BP_API bp_csv_options bp_csv_options_default(void);

BP_API bp_dataset *bp_dataset_load_csv(const char *path, const bp_csv_options *options,
                                       bp_status *status);

/* NumPy .npy files in C order. features: float32, float64, uint8 or int64, [n, ...] (each
 * sample flattened); targets: integers [n] for BP_TARGET_CLASS, or numbers [n] / [n, k] for
 * BP_TARGET_VALUES. */
BP_API bp_dataset *bp_dataset_load_npy(const char *features_path, const char *targets_path,
                                       bp_target_kind kind, bp_status *status);

/* A dataset from caller memory (copied). targets: int32 [n] for classes, float [n, width] for
 * values (width 1 for classes). */
BP_API bp_dataset *bp_dataset_from_memory(int64_t n, int features, const float *x,
                                          bp_target_kind kind, int width, const void *targets,
                                          bp_status *status);

BP_API void bp_dataset_free(bp_dataset *dataset);

BP_API int64_t bp_dataset_size(const bp_dataset *dataset);
BP_API int bp_dataset_features(const bp_dataset *dataset);
BP_API bp_target_kind bp_dataset_target_kind(const bp_dataset *dataset);
BP_API int bp_dataset_target_width(const bp_dataset *dataset); /* 1 for classes */
BP_API int bp_dataset_classes(const bp_dataset *dataset);      /* 1 + largest label; 0: values */
BP_API const float *bp_dataset_features_data(const bp_dataset *dataset);
BP_API const void *bp_dataset_targets_data(const bp_dataset *dataset);

/* A seeded shuffle of the rows, then the first n - round(n * val_fraction) rows train and the
 * rest validate. Both outputs are new datasets; the input is unchanged. */
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

/* offset and scale: bp_dataset_features(train) floats each. Statistics in double. */
BP_API bp_status bp_dataset_fit_scaling(const bp_dataset *train, bp_scaling_kind kind,
                                        float *offset, float *scale);
BP_API bp_status bp_dataset_apply_scaling(bp_dataset *dataset, const float *offset,
                                          const float *scale);

/* Batches for a device. A background thread gathers the next batch (in the epoch's order)
 * while the current one trains. The epoch's order comes from the counter-based generator keyed
 * by (seed, epoch): the same on every device, and the same after a resume. */
typedef struct bp_loader bp_loader;

BP_API bp_loader *bp_loader_create(const bp_dataset *dataset, bp_device *device, int batch,
                                   int shuffle, uint64_t seed, bp_status *status);
BP_API void bp_loader_free(bp_loader *loader);

/* Batches per epoch: ceil(n / batch); the last one may be smaller. */
BP_API int64_t bp_loader_batches(const bp_loader *loader);

/* Starts epoch `epoch` (0-based) at batch `first_batch` (0 unless resuming mid-epoch). */
BP_API bp_status bp_loader_start_epoch(bp_loader *loader, int64_t epoch, int64_t first_batch);

/* The next batch of the epoch: *x ([rows, features]) and *y (int32 [rows, 1] or float
 * [rows, width]) are tensors the loader owns, valid until the next call. At the end of the epoch
 * returns BP_OK with *x and *y set to NULL. */
BP_API bp_status bp_loader_next(bp_loader *loader, const bp_tensor **x, const bp_tensor **y);

#ifdef __cplusplus
}
#endif

#endif
