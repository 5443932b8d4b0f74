/* Batches for a device, gathered one ahead on a background thread.
 *
 * Two host staging slots: batch b of the epoch goes to slot b % 2. The worker gathers a batch
 * into a free slot (outside the lock) and marks it ready; bp_loader_next waits for its batch's
 * slot to be ready, uploads it on the caller's thread (the device handle is not shared across
 * threads) and frees the slot. So while the caller trains on batch b, the worker gathers b + 1.
 *
 * Everything the two threads share is guarded by one mutex; the slots' buffers are handed over
 * through their state (free: the worker's, ready: the caller's), and the epoch's order is
 * written only while the worker is idle and told to stay so, which keeps the design free of
 * data races under ThreadSanitizer. */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "io/io_internal.h"

enum { SLOT_FREE = 0, SLOT_READY = 1 };

typedef struct loader_slot {
    float *x;    /* [batch, features] */
    void *y;     /* [batch, width], int32 or float */
    int state;   /* under mu */
    int64_t idx; /* the batch it holds when ready; under mu */
} loader_slot;

struct bp_loader {
    const bp_dataset *data; /* borrowed */
    bp_device *device;
    int batch, shuffle;
    uint64_t seed;
    int shard, shards; /* this loader hands out piece `shard` of `shards` of each batch */
    int64_t batches;
    int64_t last_rows;          /* rows of the last (global) batch */
    bp_tensor *x_full, *y_full; /* for (pieces of) batches of `batch` rows (NULL: n < batch) */
    bp_tensor *x_last, *y_last; /* for a smaller last one (NULL when none) */
    int64_t *order;             /* the epoch's rows; see the header comment */
    int64_t order_epoch;        /* the epoch `order` holds; -1: identity */
    loader_slot slot[2];
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int thread_started, sync_ready;
    /* under mu */
    int running;              /* an epoch is under way: the worker may gather */
    int stop;                 /* the worker must return */
    int busy;                 /* the worker is gathering, outside the lock */
    int64_t produce, consume; /* the next batch to gather, and to hand out */
};

/* ---- the worker -------------------------------------------------------------------------- */

/* Rows of this loader's piece of a global batch of g rows, and where the piece starts. */
static int64_t shard_rows(const bp_loader *L, int64_t g) {
    return g * (L->shard + 1) / L->shards - g * L->shard / L->shards;
}

static int64_t global_rows(const bp_loader *L, int64_t b) {
    return b + 1 == L->batches ? L->last_rows : L->batch;
}

static int64_t batch_rows(const bp_loader *L, int64_t b) {
    return shard_rows(L, global_rows(L, b));
}

/* Copies the rows of (this loader's piece of) batch b, in the epoch's order, into slot s. */
static void gather(const bp_loader *L, int64_t b, loader_slot *s) {
    const bp_dataset *d = L->data;
    size_t xrow = (size_t)d->features, yrow = (size_t)d->width * 4;
    const int64_t *rows = L->order + b * L->batch + global_rows(L, b) * L->shard / L->shards;
    for (int64_t i = 0, n = batch_rows(L, b); i < n; ++i) {
        memcpy(s->x + (size_t)i * xrow, d->x + (size_t)rows[i] * xrow, xrow * sizeof(float));
        memcpy((char *)s->y + (size_t)i * yrow, (const char *)d->y + (size_t)rows[i] * yrow, yrow);
    }
}

/* Whether the worker has a batch to gather now (under mu). */
static int work_ready(const bp_loader *L) {
    return L->running && L->produce < L->batches && L->slot[L->produce % 2].state == SLOT_FREE;
}

static void *worker(void *arg) {
    bp_loader *L = arg;
    pthread_mutex_lock(&L->mu);
    for (;;) {
        while (!L->stop && !work_ready(L))
            pthread_cond_wait(&L->cv, &L->mu);
        if (L->stop) break;
        int64_t b = L->produce++;
        loader_slot *s = &L->slot[b % 2];
        L->busy = 1;
        pthread_mutex_unlock(&L->mu);
        gather(L, b, s);
        pthread_mutex_lock(&L->mu);
        L->busy = 0;
        s->idx = b;
        s->state = SLOT_READY;
        pthread_cond_broadcast(&L->cv);
    }
    pthread_mutex_unlock(&L->mu);
    return NULL;
}

/* ---- create and free --------------------------------------------------------------------- */

static bp_status check_create_args(const bp_dataset *d, bp_device *device, int batch) {
    const char *fn = "bp_loader_create";
    if (!d) return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: dataset is NULL", fn);
    if (d->kind == BP_TARGET_NONE)
        return bp_error(BP_ERR_INVALID_ARGUMENT,
                        "%s: the dataset has no targets (features to predict from): nothing to "
                        "train on",
                        fn);
    if (!device) return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: device is NULL", fn);
    if (batch < 1)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: batch is %d, expected >= 1", fn, batch);
    return BP_OK;
}

/* The device tensors for rows-row batches. */
static bp_status create_tensors(bp_loader *L, int64_t rows, bp_tensor **x, bp_tensor **y) {
    const bp_dataset *d = L->data;
    bp_status st = BP_OK;
    *x = bp_tensor_create(L->device, BP_F32, rows, d->features, &st);
    if (*x)
        *y = bp_tensor_create(L->device, d->kind == BP_TARGET_CLASS ? BP_I32 : BP_F32, rows,
                              d->width, &st);
    return st;
}

/* Host memory and device tensors, all sized now so a training step allocates nothing. */
static bp_status allocate(bp_loader *L) {
    const bp_dataset *d = L->data;
    int64_t full = shard_rows(L, L->batch), last = shard_rows(L, L->last_rows);
    int64_t rows = L->batches > 1 ? full : last; /* the largest batch */
    L->order = malloc((size_t)d->n * sizeof *L->order);
    for (int i = 0; i < 2; ++i) {
        L->slot[i].x = malloc((size_t)rows * (size_t)d->features * sizeof(float));
        L->slot[i].y = malloc((size_t)rows * (size_t)d->width * 4);
    }
    if (!L->order || !L->slot[0].x || !L->slot[0].y || !L->slot[1].x || !L->slot[1].y)
        return bp_error(BP_ERR_OUT_OF_MEMORY,
                        "bp_loader_create: no host memory for two batches of %lld x %d",
                        (long long)rows, d->features);
    for (int64_t i = 0; i < d->n; ++i)
        L->order[i] = i;
    L->order_epoch = -1;
    bp_status st = BP_OK;
    if (L->batches > 1 || L->last_rows == L->batch)
        st = create_tensors(L, full, &L->x_full, &L->y_full);
    if (st == BP_OK && (!L->x_full || last != full))
        st = create_tensors(L, last, &L->x_last, &L->y_last);
    return st;
}

static bp_status start_thread(bp_loader *L) {
    if (pthread_mutex_init(&L->mu, NULL) != 0)
        return bp_error(BP_ERR_OUT_OF_MEMORY, "bp_loader_create: pthread_mutex_init failed");
    if (pthread_cond_init(&L->cv, NULL) != 0) {
        pthread_mutex_destroy(&L->mu);
        return bp_error(BP_ERR_OUT_OF_MEMORY, "bp_loader_create: pthread_cond_init failed");
    }
    L->sync_ready = 1;
    if (pthread_create(&L->thread, NULL, worker, L) != 0)
        return bp_error(BP_ERR_OUT_OF_MEMORY, "bp_loader_create: cannot start a thread");
    L->thread_started = 1;
    return BP_OK;
}

static bp_status check_shard_args(const bp_dataset *d, int batch, int index, int count,
                                  int min_rows) {
    const char *fn = "bp_loader_create_shard";
    if (count < 1 || index < 0 || index >= count || min_rows < 1)
        return bp_error(BP_ERR_INVALID_ARGUMENT,
                        "%s: shard %d of %d with min_rows %d; expected 0 <= index < count and "
                        "min_rows >= 1",
                        fn, index, count, min_rows);
    if (batch / count < min_rows || d->n / count < min_rows)
        return bp_error(BP_ERR_INVALID_ARGUMENT,
                        "%s: a batch of %d rows (of %lld samples) cannot give each of %d ranks %d "
                        "rows",
                        fn, batch, (long long)d->n, count, min_rows);
    return BP_OK;
}

/* Batches per epoch, and the rows of the last, once a last batch too small to give every rank
 * min_rows rows is left out. */
static void count_batches(bp_loader *L, int64_t n, int min_rows) {
    L->batches = (n + L->batch - 1) / L->batch;
    L->last_rows = n - (L->batches - 1) * L->batch;
    if (L->batches > 1 && L->last_rows / L->shards < min_rows) {
        --L->batches;
        L->last_rows = L->batch;
    }
}

bp_loader *bp_loader_create_shard(const bp_dataset *dataset, bp_device *device, int batch,
                                  int shuffle, uint64_t seed, int index, int count, int min_rows,
                                  bp_status *status) {
    bp_status st = check_create_args(dataset, device, batch);
    if (st == BP_OK) st = check_shard_args(dataset, batch, index, count, min_rows);
    bp_loader *L = NULL;
    if (st == BP_OK && !(L = calloc(1, sizeof *L)))
        st = bp_error(BP_ERR_OUT_OF_MEMORY, "bp_loader_create: no host memory");
    if (st == BP_OK) {
        L->data = dataset;
        L->device = device;
        L->batch = batch;
        L->shuffle = shuffle != 0;
        L->seed = seed;
        L->shard = index;
        L->shards = count;
        count_batches(L, dataset->n, min_rows);
        st = allocate(L);
    }
    if (st == BP_OK) st = start_thread(L);
    if (st != BP_OK) {
        bp_loader_free(L);
        L = NULL;
    }
    bp_set_status(status, st);
    return L;
}

bp_loader *bp_loader_create(const bp_dataset *dataset, bp_device *device, int batch, int shuffle,
                            uint64_t seed, bp_status *status) {
    return bp_loader_create_shard(dataset, device, batch, shuffle, seed, 0, 1, 1, status);
}

void bp_loader_free(bp_loader *loader) {
    if (!loader) return;
    bp_loader *L = loader;
    if (L->thread_started) {
        /* The worker finishes at most the batch it is gathering, then returns. */
        pthread_mutex_lock(&L->mu);
        L->stop = 1;
        pthread_cond_broadcast(&L->cv);
        pthread_mutex_unlock(&L->mu);
        pthread_join(L->thread, NULL);
    }
    if (L->sync_ready) {
        pthread_cond_destroy(&L->cv);
        pthread_mutex_destroy(&L->mu);
    }
    bp_tensor_free(L->x_full);
    bp_tensor_free(L->y_full);
    bp_tensor_free(L->x_last);
    bp_tensor_free(L->y_last);
    for (int i = 0; i < 2; ++i) {
        free(L->slot[i].x);
        free(L->slot[i].y);
    }
    free(L->order);
    free(L);
}

int64_t bp_loader_batches(const bp_loader *loader) {
    return loader ? loader->batches : 0;
}

/* ---- epochs ------------------------------------------------------------------------------ */

bp_status bp_loader_start_epoch(bp_loader *loader, int64_t epoch, int64_t first_batch) {
    const char *fn = "bp_loader_start_epoch";
    if (!loader) return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: loader is NULL", fn);
    bp_loader *L = loader;
    if (epoch < 0 || epoch >= (INT64_C(1) << 40))
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: epoch is %lld, expected 0..2^40-1", fn,
                        (long long)epoch);
    if (first_batch < 0 || first_batch > L->batches)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: first_batch is %lld, expected 0..%lld", fn,
                        (long long)first_batch, (long long)L->batches);
    pthread_mutex_lock(&L->mu);
    L->running = 0; /* the worker takes no new batch ... */
    while (L->busy) /* ... and finishes the one it has */
        pthread_cond_wait(&L->cv, &L->mu);
    if (L->shuffle && L->order_epoch != epoch) {
        bp_io_permutation(L->order, L->data->n, L->seed, BP_IO_EPOCH_STREAM(epoch));
        L->order_epoch = epoch;
    }
    L->slot[0].state = L->slot[1].state = SLOT_FREE;
    L->produce = L->consume = first_batch;
    L->running = 1;
    pthread_cond_broadcast(&L->cv);
    pthread_mutex_unlock(&L->mu);
    return BP_OK;
}

/* Waits for batch b's slot to be ready (under mu). */
static loader_slot *wait_ready(bp_loader *L, int64_t b) {
    loader_slot *s = &L->slot[b % 2];
    while (!(s->state == SLOT_READY && s->idx == b))
        pthread_cond_wait(&L->cv, &L->mu);
    return s;
}

bp_status bp_loader_next(bp_loader *loader, const bp_tensor **x, const bp_tensor **y) {
    const char *fn = "bp_loader_next";
    if (!loader || !x || !y)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn,
                        !loader ? "loader"
                        : !x    ? "x"
                                : "y");
    bp_loader *L = loader;
    *x = *y = NULL;
    pthread_mutex_lock(&L->mu);
    int running = L->running;
    int64_t b = L->consume;
    loader_slot *s = running && b < L->batches ? wait_ready(L, b) : NULL;
    pthread_mutex_unlock(&L->mu);
    if (!running)
        return bp_error(BP_ERR_INVALID_ARGUMENT,
                        "%s: no epoch started; call "
                        "bp_loader_start_epoch first",
                        fn);
    if (!s) return BP_OK; /* the end of the epoch */
    int64_t rows = batch_rows(L, b);
    int full = L->x_full && rows == shard_rows(L, L->batch);
    bp_tensor *tx = full ? L->x_full : L->x_last, *ty = full ? L->y_full : L->y_last;
    const bp_dataset *d = L->data;
    /* On failure the slot stays ready and the batch current, so a retry sends it again. */
    bp_status st = bp_tensor_upload(tx, s->x, (size_t)rows * (size_t)d->features);
    if (st == BP_OK) st = bp_tensor_upload(ty, s->y, (size_t)rows * (size_t)d->width);
    if (st != BP_OK) return st;
    pthread_mutex_lock(&L->mu);
    s->state = SLOT_FREE;
    L->consume = b + 1;
    pthread_cond_broadcast(&L->cv);
    pthread_mutex_unlock(&L->mu);
    *x = tx;
    *y = ty;
    return BP_OK;
}

bp_status bp_loader_epoch_order(int64_t n, int shuffle, uint64_t seed, int64_t epoch,
                                int64_t *order) {
    const char *fn = "bp_loader_epoch_order";
    if (n < 1 || n > BP_IO_MAX_SAMPLES)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: n is %lld, expected 1..2^40", fn,
                        (long long)n);
    if (epoch < 0 || epoch >= (INT64_C(1) << 40))
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: epoch is %lld, expected 0..2^40-1", fn,
                        (long long)epoch);
    if (!order) return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: order is NULL", fn);
    if (shuffle) {
        bp_io_permutation(order, n, seed, BP_IO_EPOCH_STREAM(epoch));
        return BP_OK;
    }
    for (int64_t i = 0; i < n; ++i)
        order[i] = i;
    return BP_OK;
}
