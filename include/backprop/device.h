/* Devices: where tensors live and kernels run.
 *
 * Names: "cpu", "cuda" (GPU 0), "cuda:N", "auto" (CUDA when a GPU is present, else the CPU).
 *
 * Lifetime: a device outlives everything created on it (tensors, models, optimizers, loaders,
 * checkpoint handles' models): free those first, then bp_device_close.
 * Threads: one handle is used by one thread at a time; handles used on different threads do not
 * interact (two devices opened on the same GPU included). The functions that take no handle
 * (bp_device_available, the enum names) may be called from any thread. */
#ifndef BACKPROP_DEVICE_H
#define BACKPROP_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#include "export.h"
#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bp_device bp_device;

typedef enum bp_device_kind { BP_DEVICE_CPU = 0, BP_DEVICE_CUDA = 1 } bp_device_kind;

/* The names of the enums, one spelling each, and back: every public enum has this pair.
 * bp_X_name gives "" for a value outside the enum; bp_X_parse stores the value of text into *out
 * (unchanged on failure) or fails with BP_ERR_INVALID_ARGUMENT naming the text and listing the
 * names it accepts. Device kinds: "cpu", "cuda". */
BP_API const char *bp_device_kind_name(bp_device_kind kind);
BP_API bp_status bp_device_kind_parse(const char *text, bp_device_kind *out);

/* Memory counters of a device handle, for tests and benchmarks. */
typedef struct bp_device_stats {
    uint64_t alloc_count; /* successful allocations since the device was opened */
    uint64_t free_count;
    size_t bytes_in_use;
    size_t peak_bytes;
    size_t memory_limit; /* 0: none */
} bp_device_stats;

/* Opens a device by name. Returns NULL and sets *status (when not NULL) on failure, e.g. "cuda"
 * in a build without CUDA, or on a machine without a GPU. The same as bp_device_open_ex with
 * the default options. */
BP_API bp_device *bp_device_open(const char *name, bp_status *status);

/* How a device runs. Start from bp_device_options_default() and set the fields you need: later
 * versions add fields, which the default function fills. */
typedef struct bp_device_options {
    /* CPU: the threads the backend's loops, matrix engine and BLAS use, >= 0; 0: the backend
     * chooses (see the CPU backend's notes in README.md). Ignored by CUDA. */
    int threads;
    /* 1 (default): bp_model_create and bp_optimizer_create compare the bytes they are about to
     * allocate with the memory the device reports free, and refuse with BP_ERR_OUT_OF_MEMORY
     * (naming the bytes needed, the bytes free and the largest part) before allocating anything;
     * 0: skip that check and let the allocations decide. */
    int check_memory;
    /* CUDA: 1 (default): bp_train_step captures its step as a CUDA graph once its shapes and
     * buffers repeat, and replays it with one launch; 0: queues each op as it goes. The two
     * give bitwise the same results. Ignored by the CPU. */
    int graphs;
} bp_device_options;

/* threads 0, check_memory 1, graphs 1. */
BP_API bp_device_options bp_device_options_default(void);

/* bp_device_open with options (NULL: the defaults). A field out of its range is
 * BP_ERR_INVALID_ARGUMENT naming it. */
BP_API bp_device *bp_device_open_ex(const char *name, const bp_device_options *options,
                                    bp_status *status);

/* The options the device was opened with (the defaults for NULL). */
BP_API bp_device_options bp_device_get_options(const bp_device *device);

/* Closes a device. Everything created on it must be freed first. NULL is allowed. */
BP_API void bp_device_close(bp_device *device);

BP_API bp_device_kind bp_device_get_kind(const bp_device *device);

/* The resolved name, e.g. "cpu" or "cuda:0" (never "auto"). */
BP_API const char *bp_device_name(const bp_device *device);

/* Waits until all work queued on the device has finished. */
BP_API bp_status bp_device_synchronize(bp_device *device);

/* 1 when the build has the backend and it can run here (a GPU is present for "cuda"). */
BP_API int bp_device_available(const char *name);

/* Caps the bytes this handle may hold at once (0 removes the cap). An allocation past the cap
 * fails with BP_ERR_OUT_OF_MEMORY and a message naming the sizes. */
BP_API bp_status bp_device_set_memory_limit(bp_device *device, size_t bytes);

BP_API bp_status bp_device_get_stats(const bp_device *device, bp_device_stats *stats);

/* What a handle has asked of its device since it was opened, for benchmarks and tests (CUDA;
 * on the CPU, which runs every op as it is called, all are 0). */
typedef struct bp_device_counters {
    uint64_t launches;       /* work queued: kernels, cuBLAS/cuBLASLt GEMMs, copies */
    uint64_t host_waits;     /* calls that waited for the device (synchronize, a read back, ...) */
    uint64_t graph_launches; /* captured training steps replayed (bp_device_options.graphs) */
} bp_device_counters;

BP_API bp_status bp_device_get_counters(const bp_device *device, bp_device_counters *counters);

#ifdef __cplusplus
}
#endif

#endif
