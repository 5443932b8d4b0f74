/* cudaemu's own controls (C11 and C++): what its environment variables set, for tests that
 * change them in-process, and the text of the last kernel fault. See cudaemu/README.md. */
#ifndef CUDAEMU_H
#define CUDAEMU_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* CUDAEMU_SCHEDULE=random and CUDAEMU_SEED: threads run in a random order drawn from seed;
 * 0 restores the in-order schedule. */
void cudaemu_set_schedule(int random, uint64_t seed);
/* CUDAEMU_EXEC=deferred (the default): queued work runs only at the next synchronisation
 * point; 0 (CUDAEMU_EXEC=eager) runs it at once. */
void cudaemu_set_deferred(int on);
int cudaemu_deferred(void);
/* CUDAEMU_MEMORY: the capacity of every emulated device in bytes. */
void cudaemu_set_capacity(size_t bytes);
/* CUDAEMU_NCCL_TIMEOUT: seconds a rank waits for the others in a collective. */
void cudaemu_set_nccl_timeout(double seconds);
/* CUDAEMU_VARIANT: which variant of the device's arithmetic and cuBLASLt's offers (0..3,
 * README.md "Variants"); 0 is the default. */
void cudaemu_set_variant(int variant);
int cudaemu_variant(void);
/* The message of the last kernel fault or refused call ("" when none); stays until the next. */
const char *cudaemu_last_fault(void);
/* 1 when ptr lies in a live device allocation. */
int cudaemu_is_device_pointer(const void *ptr);

/* What the process has asked of the emulated devices since the start or the last reset
 * (atomic counters, per process). */
typedef struct cudaemu_counts {
    /* calls that made the host wait for device work: cudaDeviceSynchronize,
     * cudaStreamSynchronize, cudaEventSynchronize, cudaMemcpy, cudaMemset, cudaFree and
     * cudaFreeHost of a non-NULL pointer, cudaMemcpyAsync between device and pageable host
     * memory (CUDA stages those synchronously). Not cudaEventQuery nor cudaStreamQuery. */
    uint64_t host_syncs;
    uint64_t kernels;         /* kernel launches queued directly on a stream (not replays) */
    uint64_t library_calls;   /* cuBLAS/cuBLASLt GEMMs (and Sgeam), NCCL collectives queued */
    uint64_t copies;          /* copies and memsets queued (cudaMemcpy and cudaMemset too) */
    uint64_t graph_launches;  /* cudaGraphLaunch calls */
    uint64_t graph_nodes_run; /* work items run by graph replays */
} cudaemu_counts;
/* Exported from a module that links cudaemu statically (backprop's CUDA backend), so a test can
 * find them there with dlsym and count what the backend asked of the emulated device. */
__attribute__((visibility("default"))) void cudaemu_get_counts(cudaemu_counts *out);
__attribute__((visibility("default"))) void cudaemu_reset_counts(void);

#ifdef __cplusplus
}
#endif

#endif
