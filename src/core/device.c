#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "core/device_internal.h"
#include "core/error.h"
#include "core/module.h"

#ifndef BP_BUILT_CUDA
#define BP_BUILT_CUDA 0
#endif

static bp_module cuda_module = {
    .what = "the CUDA backend",
    .env = "BP_CUDA_MODULE",
    .file = "libbackprop_cuda.so",
    .entry = "bp_cuda_module_entry",
    .built = BP_BUILT_CUDA,
    .configure = "-DBP_CUDA=ON, with the CUDA toolkit installed",
    .runtime_hint = "are the CUDA runtime and cuBLAS, and NCCL when the module was built with it, "
                    "installed and on the library path?",
};

/* The CUDA backend's table, loading its module on first use; NULL (and cuda_module.reason)
 * when this build or this machine has none. */
static const bp_backend_ops *cuda_ops(void) {
    const bp_backend_module *mod = bp_module_load(&cuda_module);
    return mod ? mod->ops : NULL;
}

/* Parses "cpu", "cuda", "cuda:N", "auto" into ops and an index. */
static bp_status parse_name(const char *name, const bp_backend_ops **ops, int *index) {
    *index = 0;
    if (strcmp(name, "cpu") == 0) {
        *ops = &bp_cpu_ops;
        return BP_OK;
    }
    if (strcmp(name, "auto") == 0) {
        const bp_backend_ops *cuda = cuda_ops();
        *ops = cuda && cuda->device_count() > 0 ? cuda : &bp_cpu_ops;
        return BP_OK;
    }
    if (strncmp(name, "cuda", 4) == 0 && (name[4] == '\0' || name[4] == ':')) {
        if (name[4] == ':') {
            char *end = NULL;
            long n = strtol(name + 5, &end, 10);
            if (name[5] == '\0' || *end != '\0' || n < 0 || n > 1024)
                return bp_error(BP_ERR_INVALID_ARGUMENT,
                                "bp_device_open: '%s' is not a device; expected cuda:N with N a "
                                "GPU index",
                                name);
            *index = (int)n;
        }
        *ops = cuda_ops();
        if (!*ops)
            return bp_error(cuda_module.status, "bp_device_open: '%s' asked for CUDA, but %s", name,
                            cuda_module.reason);
        return BP_OK;
    }
    return bp_error(BP_ERR_INVALID_ARGUMENT,
                    "bp_device_open: unknown device '%s'; expected cpu, cuda, cuda:N or auto",
                    name);
}

bp_device_options bp_device_options_default(void) {
    bp_device_options o;
    memset(&o, 0, sizeof o);
    o.threads = 0;
    o.check_memory = 1;
    o.graphs = 1;
    return o;
}

/* The most threads a CPU device may be asked for: far above any machine, low enough that no
 * thread pool is sized from a hostile number. */
#define BP_MAX_THREADS 4096

static bp_status check_options(const bp_device_options *o) {
    if (o->threads < 0 || o->threads > BP_MAX_THREADS)
        return bp_error(BP_ERR_INVALID_ARGUMENT,
                        "bp_device_open: options.threads is %d, expected 0 (the default) .. %d",
                        o->threads, BP_MAX_THREADS);
    if (o->check_memory != 0 && o->check_memory != 1)
        return bp_error(BP_ERR_INVALID_ARGUMENT,
                        "bp_device_open: options.check_memory is %d, expected 0 or 1",
                        o->check_memory);
    if (o->graphs != 0 && o->graphs != 1)
        return bp_error(BP_ERR_INVALID_ARGUMENT,
                        "bp_device_open: options.graphs is %d, expected 0 or 1", o->graphs);
    return BP_OK;
}

bp_device *bp_device_open(const char *name, bp_status *status) {
    return bp_device_open_ex(name, NULL, status);
}

bp_device_options bp_device_get_options(const bp_device *device) {
    return device ? device->options : bp_device_options_default();
}

bp_device *bp_device_open_ex(const char *name, const bp_device_options *options,
                             bp_status *status) {
    if (!name) {
        bp_set_status(status, bp_error(BP_ERR_INVALID_ARGUMENT, "bp_device_open: name is NULL"));
        return NULL;
    }
    bp_device_options opts = options ? *options : bp_device_options_default();
    const bp_backend_ops *ops = NULL;
    int index = 0;
    bp_status st = check_options(&opts);
    if (st == BP_OK) st = parse_name(name, &ops, &index);
    if (st != BP_OK) {
        bp_set_status(status, st);
        return NULL;
    }
    bp_device *d = calloc(1, sizeof *d);
    if (!d) {
        bp_set_status(status, bp_error(BP_ERR_OUT_OF_MEMORY, "bp_device_open: no host memory"));
        return NULL;
    }
    d->ops = ops;
    d->index = index;
    d->options = opts;
    d->kind = ops == &bp_cpu_ops ? BP_DEVICE_CPU : BP_DEVICE_CUDA;
    if (d->kind == BP_DEVICE_CPU)
        snprintf(d->name, sizeof d->name, "cpu");
    else
        snprintf(d->name, sizeof d->name, "cuda:%d", index);
    st = ops->init(d, index);
    if (st != BP_OK && ops != &bp_cpu_ops && strcmp(name, "auto") == 0) {
        /* "auto" promises a working device: a GPU this build cannot use means the CPU. */
        d->ops = &bp_cpu_ops;
        d->kind = BP_DEVICE_CPU;
        snprintf(d->name, sizeof d->name, "cpu");
        st = bp_cpu_ops.init(d, 0);
    }
    if (st != BP_OK) {
        free(d);
        bp_set_status(status, st);
        return NULL;
    }
    bp_set_status(status, BP_OK);
    return d;
}

void bp_device_close(bp_device *device) {
    if (!device) return;
    if (device->on_close) device->on_close(device->on_close_ctx, device);
    device->ops->destroy(device);
    free(device);
}

bp_device_kind bp_device_get_kind(const bp_device *device) {
    return device ? device->kind : BP_DEVICE_CPU;
}

const char *bp_device_name(const bp_device *device) {
    return device ? device->name : "";
}

bp_status bp_device_synchronize(bp_device *device) {
    if (!device) return bp_error(BP_ERR_INVALID_ARGUMENT, "bp_device_synchronize: device is NULL");
    return device->ops->synchronize(device);
}

int bp_device_available(const char *name) {
    const bp_backend_ops *ops = NULL;
    int index = 0;
    if (!name || parse_name(name, &ops, &index) != BP_OK) return 0;
    if (ops == &bp_cpu_ops) return 1;
    return ops->device_count() > index;
}

bp_status bp_device_set_memory_limit(bp_device *device, size_t bytes) {
    if (!device)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "bp_device_set_memory_limit: device is NULL");
    device->stats.memory_limit = bytes;
    return BP_OK;
}

bp_status bp_device_get_stats(const bp_device *device, bp_device_stats *stats) {
    if (!device || !stats)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "bp_device_get_stats: %s is NULL",
                        device ? "stats" : "device");
    *stats = device->stats;
    return BP_OK;
}

bp_status bp_device_get_counters(const bp_device *device, bp_device_counters *counters) {
    if (!device || !counters)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "bp_device_get_counters: %s is NULL",
                        device ? "counters" : "device");
    memset(counters, 0, sizeof *counters);
    if (device->ops->counters) device->ops->counters(device, counters);
    return BP_OK;
}

bp_status bp_dev_alloc(bp_device *device, size_t bytes, const char *what, void **out) {
    *out = NULL;
    bp_device_stats *s = &device->stats;
    if (s->memory_limit && (bytes > s->memory_limit || s->bytes_in_use > s->memory_limit - bytes))
        return bp_error(BP_ERR_OUT_OF_MEMORY,
                        "%s: %zu bytes on %s would exceed the memory limit of %zu bytes (%zu in "
                        "use)",
                        what, bytes, device->name, s->memory_limit, s->bytes_in_use);
    bp_status st = device->ops->alloc(device, bytes, out);
    if (st != BP_OK) {
        char detail[512];
        snprintf(detail, sizeof detail, "%s", bp_last_error());
        *out = NULL;
        return bp_error(st, "%s: allocating %zu bytes on %s failed: %s", what, bytes, device->name,
                        detail);
    }
    s->alloc_count++;
    s->bytes_in_use += bytes;
    if (s->bytes_in_use > s->peak_bytes) s->peak_bytes = s->bytes_in_use;
    return BP_OK;
}

bp_status bp_dev_check_fits(bp_device *device, const char *fn, const bp_mem_part *parts, int n) {
    if (!device->options.check_memory) return BP_OK;
    int cpu = device->kind == BP_DEVICE_CPU;
    size_t need = 0;
    int largest = -1;
    for (int i = 0; i < n; ++i) {
        if (parts[i].host && !cpu) continue;
        if (__builtin_add_overflow(need, parts[i].bytes, &need))
            return bp_error(BP_ERR_OUT_OF_MEMORY,
                            "%s: needs more than %zu bytes on %s (the %s alone are %zu bytes); "
                            "nothing was allocated",
                            fn, SIZE_MAX, device->name, parts[i].name, parts[i].bytes);
        if (largest < 0 || parts[i].bytes > parts[largest].bytes) largest = i;
    }
    /* The memory limit is held exactly by bp_dev_alloc, with its own message; this check is for
     * the machine's memory. Without a figure for it there is nothing to compare with. */
    const char *source = "";
    size_t avail = device->ops->memory_free ? device->ops->memory_free(device, &source) : 0;
    if (!avail) return BP_OK;
    if (largest < 0 || need <= avail) return BP_OK;
    char list[512];
    size_t used = 0;
    list[0] = '\0';
    for (int i = 0; i < n && used < sizeof list; ++i)
        if ((!parts[i].host || cpu) && parts[i].bytes)
            used += (size_t)snprintf(list + used, sizeof list - used, "%s%s %zu", used ? ", " : "",
                                     parts[i].name, parts[i].bytes);
    return bp_error(BP_ERR_OUT_OF_MEMORY,
                    "%s: needs %zu bytes on %s (%.1f GiB: %s), %zu are free (%.1f GiB, %s); the "
                    "largest part is the %s (%zu bytes); nothing was allocated (make the model or "
                    "batch smaller; options.check_memory 0, the command's --no-memory-check, "
                    "skips this check)",
                    fn, need, device->name, (double)need / 1073741824.0, list, avail,
                    (double)avail / 1073741824.0, source, parts[largest].name,
                    parts[largest].bytes);
}

void bp_dev_free(bp_device *device, void *ptr, size_t bytes) {
    if (!ptr) return;
    device->ops->free(device, ptr);
    device->stats.free_count++;
    device->stats.bytes_in_use -= bytes;
}
