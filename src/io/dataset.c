/* Datasets in host memory: construction, accessors, the seeded split and feature scaling. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/checked.h"
#include "core/hostmem.h"
#include "io/io_internal.h"
#include "kernels/bp_math.h"

/* Bytes of an n x cols block of 4-byte elements; false when that does not fit in a size_t. */
static bool block_bytes(int64_t n, int cols, size_t *bytes) {
    uint64_t b = 0;
    if (n < 0 || cols < 0 || !bp_mul_u64((uint64_t)n, (uint64_t)cols, &b) ||
        !bp_mul_u64(b, 4, &b) || b > SIZE_MAX)
        return false;
    *bytes = (size_t)b;
    return true;
}

/* The bytes of a dataset's features and targets, checked before anything is allocated or read:
 * a valid size, and one the host has free. A dataset is written whole as soon as it is made, so
 * one that cannot fit would swap or be killed midway. */
bp_status bp_dataset_check_size(const char *fn, int64_t n, int features, int width, size_t *nx,
                                size_t *ny) {
    if (features < 1 || !block_bytes(n, features, nx) || !block_bytes(n, width, ny))
        return bp_error(BP_ERR_INVALID_ARGUMENT,
                        "%s: a dataset of %lld samples x %d features (%d targets each) is not a "
                        "valid size",
                        fn, (long long)n, features, width);
    size_t avail = bp_host_memory_available(), need = 0;
    if (__builtin_add_overflow(*nx, *ny, &need)) need = SIZE_MAX;
    if (avail && need > avail)
        return bp_error(BP_ERR_OUT_OF_MEMORY,
                        "%s: a dataset of %lld samples x %d features needs %zu bytes (%.1f GiB: "
                        "features %zu, targets %zu), %zu are free (MemAvailable in "
                        "/proc/meminfo); nothing was allocated",
                        fn, (long long)n, features, need, (double)need / 1073741824.0, *nx, *ny,
                        avail);
    return BP_OK;
}

bp_dataset *bp_dataset_new(const char *fn, int64_t n, int features, bp_target_kind kind, int width,
                           bp_status *status) {
    size_t nx = 0, ny = 0;
    bp_status st = bp_dataset_check_size(fn, n, features, width, &nx, &ny);
    if (st != BP_OK) {
        bp_set_status(status, st);
        return NULL;
    }
    bp_dataset *d = calloc(1, sizeof *d);
    if (d) {
        d->n = n;
        d->features = features;
        d->kind = kind;
        d->width = width;
        d->x = malloc(nx);
        d->y = ny ? malloc(ny) : NULL; /* int32 or float; none without targets */
    }
    if (!d || !d->x || (ny && !d->y)) {
        bp_dataset_free(d);
        bp_set_status(status, bp_error(BP_ERR_OUT_OF_MEMORY,
                                       "%s: no memory for a dataset of %lld samples x %d features",
                                       fn, (long long)n, features));
        return NULL;
    }
    return d;
}

bp_status bp_dataset_set_names(bp_dataset *d, const char *fn, const char *const *names, int n) {
    size_t bytes = 0;
    for (int i = 0; i < n; ++i)
        bytes += strlen(names[i]) + 1;
    char *text = malloc(bytes ? bytes : 1);
    char **v = malloc((size_t)(n ? n : 1) * sizeof *v);
    if (!text || !v) {
        free(text);
        free(v);
        return bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no memory for %d class names", fn, n);
    }
    size_t at = 0;
    for (int i = 0; i < n; ++i) {
        size_t len = strlen(names[i]) + 1;
        v[i] = memcpy(text + at, names[i], len);
        at += len;
    }
    free(d->names);
    free(d->name_text);
    d->names = v;
    d->name_text = text;
    d->n_names = n;
    d->classes = n;
    return BP_OK;
}

void bp_dataset_count_classes(bp_dataset *d) {
    if (d->kind != BP_TARGET_CLASS) {
        d->classes = 0;
        return;
    }
    const int32_t *y = d->y;
    int32_t top = 0;
    for (int64_t i = 0; i < d->n; ++i)
        if (y[i] > top) top = y[i];
    d->classes = top + 1;
}

const char *bp_io_class_index_problem(double v) {
    if (isnan(v)) return "is NaN, not a class index";
    if (isinf(v)) return "is Inf, not a class index";
    if (v != floor(v)) return "is not an integer, so not a class index";
    if (v < 0.0) return "is negative; a class index is an integer >= 0";
    if (v > INT32_MAX)
        return "is over 2147483647, the largest class index (labels are 32-bit integers)";
    return NULL;
}

/* Step k of the shuffle (swapping position i = n-1-k) draws the 64-bit number made of words 2k
 * (low half) and 2k+1 of the stream; one Philox block serves two steps. */
void bp_io_permutation(int64_t *perm, int64_t n, uint64_t seed, uint64_t stream) {
    for (int64_t i = 0; i < n; ++i)
        perm[i] = i;
    uint32_t w[4];
    for (int64_t k = 0; k + 1 < n; ++k) {
        if ((k & 1) == 0) bp_random_block(seed, stream, (uint64_t)k >> 1, w);
        int h = (int)(k & 1) * 2;
        uint64_t r = (uint64_t)w[h] | ((uint64_t)w[h + 1] << 32);
        int64_t i = n - 1 - k;
        int64_t j = (int64_t)(r % (uint64_t)(i + 1));
        int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

/* ---- from memory ------------------------------------------------------------------------- */

static bp_status check_memory_args(int64_t n, int features, const float *x, bp_target_kind kind,
                                   int width, const void *targets) {
    const char *fn = "bp_dataset_from_memory";
    if (n < 1 || n > BP_IO_MAX_SAMPLES)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: n is %lld, expected 1..2^40", fn,
                        (long long)n);
    if (features < 1)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: features is %d, expected >= 1", fn, features);
    if (!x || (!targets && kind != BP_TARGET_NONE))
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn, x ? "targets" : "x");
    if (kind != BP_TARGET_CLASS && kind != BP_TARGET_VALUES && kind != BP_TARGET_NONE)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: kind is %d, not a target kind", fn,
                        (int)kind);
    int want = kind == BP_TARGET_CLASS ? 1 : 0;
    if (kind == BP_TARGET_VALUES ? width < 1 : width != want)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: width is %d, expected %s", fn, width,
                        kind == BP_TARGET_CLASS    ? "1 for classes"
                        : kind == BP_TARGET_VALUES ? ">= 1"
                                                   : "0 without targets");
    return BP_OK;
}

/* Every float finite; the first one that is not is named by row and column. */
static bp_status check_finite(const char *fn, const char *what, const float *v, int64_t n,
                              int cols) {
    for (int64_t i = 0; i < n * cols; ++i)
        if (!isfinite(v[i]))
            return bp_error(BP_ERR_NON_FINITE, "%s: %s[%lld, %d] is %s", fn, what,
                            (long long)(i / cols), (int)(i % cols), isnan(v[i]) ? "NaN" : "Inf");
    return BP_OK;
}

static bp_status check_labels(const char *fn, const int32_t *y, int64_t n) {
    for (int64_t i = 0; i < n; ++i)
        if (y[i] < 0)
            return bp_error(BP_ERR_INVALID_ARGUMENT,
                            "%s: targets[%lld] is %d, a class index must be >= 0", fn, (long long)i,
                            (int)y[i]);
    return BP_OK;
}

bp_dataset *bp_dataset_from_memory(int64_t n, int features, const float *x, bp_target_kind kind,
                                   int width, const void *targets, bp_status *status) {
    const char *fn = "bp_dataset_from_memory";
    size_t nx = 0, ny = 0;
    bp_status st = check_memory_args(n, features, x, kind, width, targets);
    if (st == BP_OK) st = bp_dataset_check_size(fn, n, features, width, &nx, &ny);
    if (st == BP_OK) st = check_finite(fn, "x", x, n, features);
    if (st == BP_OK && kind != BP_TARGET_NONE)
        st = kind == BP_TARGET_CLASS ? check_labels(fn, targets, n)
                                     : check_finite(fn, "targets", targets, n, width);
    if (st != BP_OK) {
        bp_set_status(status, st);
        return NULL;
    }
    bp_dataset *d = bp_dataset_new(fn, n, features, kind, width, status);
    if (!d) return NULL;
    memcpy(d->x, x, (size_t)n * (size_t)features * sizeof(float));
    if (d->y) memcpy(d->y, targets, (size_t)n * (size_t)width * 4);
    bp_dataset_count_classes(d);
    bp_set_status(status, BP_OK);
    return d;
}

void bp_dataset_free(bp_dataset *dataset) {
    if (!dataset) return;
    free(dataset->x);
    free(dataset->y);
    free(dataset->names);
    free(dataset->name_text);
    free(dataset);
}

/* ---- accessors (NULL-safe: 0 / NULL) ------------------------------------------------------ */

int64_t bp_dataset_size(const bp_dataset *dataset) {
    return dataset ? dataset->n : 0;
}

int bp_dataset_features(const bp_dataset *dataset) {
    return dataset ? dataset->features : 0;
}

bp_target_kind bp_dataset_target_kind(const bp_dataset *dataset) {
    return dataset ? dataset->kind : BP_TARGET_CLASS;
}

int bp_dataset_target_width(const bp_dataset *dataset) {
    return dataset ? dataset->width : 0;
}

int bp_dataset_classes(const bp_dataset *dataset) {
    return dataset ? dataset->classes : 0;
}

const float *bp_dataset_features_data(const bp_dataset *dataset) {
    return dataset ? dataset->x : NULL;
}

const void *bp_dataset_targets_data(const bp_dataset *dataset) {
    return dataset ? dataset->y : NULL;
}

int bp_dataset_n_class_names(const bp_dataset *dataset) {
    return dataset ? dataset->n_names : 0;
}

const char *bp_dataset_class_name(const bp_dataset *dataset, int index) {
    if (!dataset || index < 0 || index >= dataset->n_names) return NULL;
    return dataset->names[index];
}

/* ---- split -------------------------------------------------------------------------------- */

/* A new dataset of the rows rows[0..count) of d, in that order; keeps d's class count so train
 * and validation agree on it even when a class is missing from one of them. */
static bp_dataset *gather_rows(const bp_dataset *d, const int64_t *rows, int64_t count,
                               bp_status *status) {
    bp_dataset *out =
        bp_dataset_new("bp_dataset_split", count, d->features, d->kind, d->width, status);
    if (!out) return NULL;
    size_t xrow = (size_t)d->features * sizeof(float), yrow = (size_t)d->width * 4;
    for (int64_t i = 0; i < count; ++i) {
        memcpy(out->x + (size_t)i * d->features, d->x + (size_t)rows[i] * d->features, xrow);
        if (yrow)
            memcpy((char *)out->y + (size_t)i * yrow, (const char *)d->y + (size_t)rows[i] * yrow,
                   yrow);
    }
    if (d->n_names) {
        bp_status st = bp_dataset_set_names(out, "bp_dataset_split", (const char *const *)d->names,
                                            d->n_names);
        if (st != BP_OK) {
            bp_dataset_free(out);
            bp_set_status(status, st);
            return NULL;
        }
    }
    out->classes = d->classes;
    return out;
}

bp_status bp_dataset_split(const bp_dataset *dataset, double val_fraction, uint64_t seed,
                           bp_dataset **train, bp_dataset **val) {
    const char *fn = "bp_dataset_split";
    if (!dataset || !train || !val)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn,
                        !dataset ? "dataset"
                        : !train ? "train"
                                 : "val");
    *train = *val = NULL;
    if (!(val_fraction > 0.0 && val_fraction < 1.0))
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: val_fraction is %g, expected (0, 1)", fn,
                        val_fraction);
    int64_t n = dataset->n, n_val = (int64_t)llround((double)n * val_fraction);
    if (n_val < 1 || n_val >= n)
        return bp_error(BP_ERR_INVALID_ARGUMENT,
                        "%s: val_fraction %g of %lld samples leaves %lld for validation and %lld "
                        "for training; each needs at least 1",
                        fn, val_fraction, (long long)n, (long long)n_val, (long long)(n - n_val));
    int64_t *perm = malloc((size_t)n * sizeof *perm);
    if (!perm)
        return bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no memory for %lld indices", fn, (long long)n);
    bp_io_permutation(perm, n, seed, BP_IO_SPLIT_STREAM);
    bp_status st = BP_OK;
    *train = gather_rows(dataset, perm, n - n_val, &st);
    if (*train) *val = gather_rows(dataset, perm + (n - n_val), n_val, &st);
    free(perm);
    if (!*val) {
        bp_dataset_free(*train);
        *train = NULL;
    }
    return st;
}

/* ---- scaling ------------------------------------------------------------------------------ */

/* Per-feature minimum and maximum, visiting the rows in memory order. */
static void fit_minmax(const bp_dataset *d, float *offset, float *scale, double *hi) {
    int f = d->features;
    for (int j = 0; j < f; ++j)
        offset[j] = d->x[j], hi[j] = d->x[j];
    for (int64_t i = 1; i < d->n; ++i) {
        const float *row = d->x + (size_t)i * f;
        for (int j = 0; j < f; ++j) {
            offset[j] = row[j] < offset[j] ? row[j] : offset[j];
            hi[j] = row[j] > hi[j] ? row[j] : hi[j];
        }
    }
    for (int j = 0; j < f; ++j) {
        double range = hi[j] - offset[j];
        scale[j] = range > 0.0 && isfinite(1.0 / range) ? (float)(1.0 / range) : 1.0f;
    }
}

/* 1/sd, or 1 for a constant feature (or one so narrow that 1/sd overflows). */
static float inverse_sd(double ss, double count) {
    double sd = sqrt(ss / count);
    return sd > 0.0 && isfinite(1.0 / sd) && 1.0 / sd < 3e38 ? (float)(1.0 / sd) : 1.0f;
}

/* Mean and population standard deviation per feature, two passes in double: the second sums
 * squared deviations, which stays accurate when the mean is large against the spread. */
static void fit_standard(const bp_dataset *d, float *offset, float *scale, double *acc) {
    int f = d->features;
    for (int j = 0; j < f; ++j)
        acc[j] = 0.0;
    for (int64_t i = 0; i < d->n; ++i)
        for (int j = 0; j < f; ++j)
            acc[j] += d->x[(size_t)i * f + j];
    for (int j = 0; j < f; ++j) {
        acc[f + j] = acc[j] / (double)d->n; /* the mean */
        acc[j] = 0.0;
    }
    for (int64_t i = 0; i < d->n; ++i)
        for (int j = 0; j < f; ++j) {
            double dv = d->x[(size_t)i * f + j] - acc[f + j];
            acc[j] += dv * dv;
        }
    for (int j = 0; j < f; ++j) {
        offset[j] = (float)acc[f + j];
        scale[j] = inverse_sd(acc[j], (double)d->n);
    }
}

/* One mean and standard deviation over every feature of every sample. */
static void fit_global(const bp_dataset *d, float *offset, float *scale) {
    size_t count = (size_t)d->n * (size_t)d->features;
    double sum = 0.0, ss = 0.0;
    for (size_t i = 0; i < count; ++i)
        sum += d->x[i];
    double mean = sum / (double)count;
    for (size_t i = 0; i < count; ++i)
        ss += (d->x[i] - mean) * (d->x[i] - mean);
    float s = inverse_sd(ss, (double)count);
    for (int j = 0; j < d->features; ++j) {
        offset[j] = (float)mean;
        scale[j] = s;
    }
}

bp_status bp_dataset_fit_scaling(const bp_dataset *train, bp_scaling_kind kind, float *offset,
                                 float *scale) {
    const char *fn = "bp_dataset_fit_scaling";
    if (!train || !offset || !scale)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn,
                        !train    ? "train"
                        : !offset ? "offset"
                                  : "scale");
    if ((unsigned)kind > BP_SCALE_GLOBAL)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: kind is %d, not a scaling kind", fn,
                        (int)kind);
    double *acc = NULL;
    if (kind == BP_SCALE_MINMAX || kind == BP_SCALE_STANDARD) {
        acc = malloc(2 * (size_t)train->features * sizeof *acc);
        if (!acc) return bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no memory for statistics", fn);
    }
    for (int j = 0; kind == BP_SCALE_NONE && j < train->features; ++j) {
        offset[j] = 0.0f;
        scale[j] = 1.0f;
    }
    if (kind == BP_SCALE_MINMAX) fit_minmax(train, offset, scale, acc);
    if (kind == BP_SCALE_STANDARD) fit_standard(train, offset, scale, acc);
    if (kind == BP_SCALE_GLOBAL) fit_global(train, offset, scale);
    free(acc);
    return BP_OK;
}

bp_status bp_dataset_apply_scaling(bp_dataset *dataset, const float *offset, const float *scale) {
    const char *fn = "bp_dataset_apply_scaling";
    if (!dataset || !offset || !scale)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn,
                        !dataset  ? "dataset"
                        : !offset ? "offset"
                                  : "scale");
    int f = dataset->features;
    for (int j = 0; j < f; ++j)
        if (!isfinite(offset[j]) || !isfinite(scale[j]))
            return bp_error(BP_ERR_NON_FINITE, "%s: %s[%d] is not finite", fn,
                            isfinite(offset[j]) ? "scale" : "offset", j);
    /* Check every result first, so a failure leaves the dataset as it was. */
    for (int64_t i = 0; i < dataset->n; ++i) {
        const float *row = dataset->x + (size_t)i * f;
        for (int j = 0; j < f; ++j)
            if (!isfinite((row[j] - offset[j]) * scale[j]))
                return bp_error(
                    BP_ERR_NON_FINITE, "%s: sample %lld, feature %d overflows: (%g - %g) * %g", fn,
                    (long long)i, j, (double)row[j], (double)offset[j], (double)scale[j]);
    }
    for (int64_t i = 0; i < dataset->n; ++i) {
        float *row = dataset->x + (size_t)i * f;
        for (int j = 0; j < f; ++j)
            row[j] = (row[j] - offset[j]) * scale[j];
    }
    return BP_OK;
}
