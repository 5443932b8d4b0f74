/* The library's version, at compile time and at run time, and what the build contains.
 * Lifetime and threads: the strings are static, and every call here may run on any thread. */
#ifndef BACKPROP_VERSION_H
#define BACKPROP_VERSION_H

#include "export.h"

/* CMakeLists.txt reads the project's version from these three lines. */
#define BP_VERSION_MAJOR 0
#define BP_VERSION_MINOR 2
#define BP_VERSION_PATCH 0

#define BP_VERSION_STR_(x) #x
#define BP_VERSION_STR(x)  BP_VERSION_STR_(x)
#define BP_VERSION_STRING                                                                          \
    BP_VERSION_STR(BP_VERSION_MAJOR)                                                               \
    "." BP_VERSION_STR(BP_VERSION_MINOR) "." BP_VERSION_STR(BP_VERSION_PATCH)

#ifdef __cplusplus
extern "C" {
#endif

/* The version of the library the program runs against, "MAJOR.MINOR.PATCH" (compare with
 * BP_VERSION_STRING, the headers it was compiled with). Never NULL. */
BP_API const char *bp_version(void);

/* One line on what this build holds: the backends and how they load, the BLAS, the CUDA
 * toolkit, NCCL and MPI it was built against, e.g. "backprop 0.2.0; cpu (OpenBLAS, OpenMP);
 * cuda: module libbackprop_cuda.so (CUDA 13.0, NCCL); data-parallel: module
 * libbackprop_mpi.so (MPI 3.1)". It says what was built, not what this machine can run (for
 * that, bp_device_available). Never NULL. */
BP_API const char *bp_build_info(void);

#ifdef __cplusplus
}
#endif

#endif
