/* Modules: the parts of backprop that need a library a CPU-only program must not need (the CUDA
 * backend: CUDA runtime, cuBLAS, NCCL; data-parallel training: MPI) are shared objects loaded
 * at run time, the first time a program asks for them. The core links none of those libraries,
 * so a program that never opens "cuda" or creates a bp_comm starts and runs on a machine that
 * has none of them, whether it linked backprop shared or static.
 *
 * A module is built from the same source tree as the core and only works with it: the core
 * hands it a small table of services (setting the thread's error detail) and the module hands
 * back its table of operations, each stamped with BP_MODULE_ABI and the project version. The
 * module links nothing of the core, so it serves a shared and a static core alike.
 *
 * Where a module is looked for, first match wins, always by an absolute path (never the
 * current folder, never a relative path: a file planted where a program runs is not loaded):
 *   1. the file named by its environment variable (BP_CUDA_MODULE, BP_MPI_MODULE), which must
 *      be absolute;
 *   2. <dir>/backprop/<file>, <dir>/<file> and <dir>/../lib/backprop/<file> (the installed
 *      layout, from bin/), <dir> being the absolute folder of the image that holds the core
 *      (libbackprop.so when linked shared, the program when linked static);
 *   3. <folder>/<file> for each absolute folder of the dynamic loader's search list for that
 *      image (its run path, LD_LIBRARY_PATH, the system folders); empty and relative entries
 *      are skipped.
 * A candidate that is there but is a folder, not a regular file or not an ELF file is reported
 * as such (not passed to dlopen, whose message would blame the runtime libraries). */
#ifndef BP_CORE_MODULE_H
#define BP_CORE_MODULE_H

#include <stdint.h>

#include "backprop/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped whenever a struct shared with the modules (bp_backend_ops, bp_device, bp_model,
 * bp_optimizer, bp_comm_ops, bp_module_host) changes. */
#define BP_MODULE_ABI 6

/* What the core offers a module. */
typedef struct bp_module_host {
    uint32_t abi;        /* BP_MODULE_ABI */
    const char *version; /* the core's BP_VERSION_STRING */
    /* Records detail as the calling thread's bp_last_error() and returns status. */
    bp_status (*set_error)(bp_status status, const char *detail);
} bp_module_host;

/* Every module exports one function of this type; it returns its table (whose first member is
 * a bp_module_header), or NULL when it cannot serve this host (it then says why through
 * host->set_error). */
typedef const void *(*bp_module_entry)(const bp_module_host *host);

/* The first member of every module's table. */
typedef struct bp_module_header {
    uint32_t abi;        /* BP_MODULE_ABI the module was built with */
    const char *version; /* BP_VERSION_STRING the module was built with */
    const char *detail;  /* what it was built against, for bp_build_info ("CUDA 13.0") */
} bp_module_header;

/* A module the core knows, and what became of loading it. */
typedef struct bp_module {
    const char *what;         /* "the CUDA backend", for messages */
    const char *env;          /* "BP_CUDA_MODULE" */
    const char *file;         /* "libbackprop_cuda.so" */
    const char *entry;        /* "bp_cuda_module_entry" */
    int global;               /* load with RTLD_GLOBAL (MPI's own plugins need libmpi's symbols) */
    int built;                /* this build made the module */
    const char *configure;    /* how to build it, for the message when it was not: "-DBP_CUDA=ON" */
    const char *runtime_hint; /* what to check when it does not load ("the CUDA runtime ...") */
    /* Filled by bp_module_load. */
    int tried;
    bp_status status;
    const void *table;
    void *handle;
    char path[1024];
    char reason[1024];
} bp_module;

/* Loads the module once per process (thread-safe) and returns its table; or NULL, the same on
 * every later call, with m->status and m->reason saying why ("the CUDA backend module
 * /opt/bp/lib/backprop/libbackprop_cuda.so cannot be loaded: libcudart.so.13: cannot open
 * shared object file: ..."). Sets nothing for bp_last_error(): the caller words the error. */
const void *bp_module_load(bp_module *m);

/* Inside a module (src/module/host.c, linked into each module and not into the core): keeps the
 * host's table for the module's bp_error, after checking it is this module's version. 0 when
 * it is not (the module's entry then returns NULL). */
int bp_module_bind(const bp_module_host *host);

/* The folder of the image that holds the core ("" when unknown), for bp_build_info. */
const char *bp_core_image_dir(void);

#ifdef __cplusplus
}
#endif

#endif
