/* bp_version and bp_build_info (include/backprop/version.h). */
#include "backprop/version.h"

/* Set by CMake: the BLAS, and what the modules were built against. */
#ifndef BP_BUILD_BLAS
#define BP_BUILD_BLAS "CBLAS"
#endif
#ifndef BP_BUILD_CUDA
#define BP_BUILD_CUDA "none (configured without CUDA)"
#endif
#ifndef BP_BUILD_MPI
#define BP_BUILD_MPI "none (configured without MPI)"
#endif

const char *bp_version(void) {
    return BP_VERSION_STRING;
}

const char *bp_build_info(void) {
    return "backprop " BP_VERSION_STRING "; cpu: " BP_BUILD_BLAS ", OpenMP; cuda: " BP_BUILD_CUDA
           "; data-parallel: " BP_BUILD_MPI;
}
