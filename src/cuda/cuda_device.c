/* CUDA devices: discovery, the per-device state (stream, memory pool, cuBLAS handle, scratch)
 * and its teardown. */
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_internal.h"
#include "cuda/launch.h"

/* cuBLAS's recommended user workspace: 32 MiB on Hopper and later, 4 MiB before. Giving it
 * one of our own keeps GEMMs from allocating and keeps their results reproducible. */
#define BP_CUBLAS_WORKSPACE_HOPPER ((size_t)32 << 20)
#define BP_CUBLAS_WORKSPACE_OTHER  ((size_t)4 << 20)

int bp_cuda_device_count(void) {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
        /* No driver, no GPU, or a driver older than the runtime: none usable. Read the error
         * so no later cudaGetLastError() reports it. */
        (void)cudaGetLastError();
        return 0;
    }
    return count;
}

/* The counters of the handle this thread entered last: the launchers in kernels/ know only a
 * stream. */
static _Thread_local bp_cuda_impl *entered;

void bp_cu_note_launch(void) {
    if (entered && !entered->recording) entered->counters.launches++;
}

void bp_cu_note_wait(void) {
    if (entered) entered->counters.host_waits++;
}

void bp_cuda_counters(const bp_device *device, bp_device_counters *out) {
    *out = bp_cuda_impl_of(device)->counters;
}

bp_status bp_cuda_enter(const bp_device *device) {
    entered = bp_cuda_impl_of(device);
    int index = bp_cuda_impl_of(device)->index;
    BP_CUDA_TRY(device, cudaSetDevice(index), "cudaSetDevice(%d)", index);
    return BP_OK;
}

static bp_status check_index(const bp_device *device, int index) {
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        return bp_error(BP_ERR_DEVICE,
                        "no CUDA device found: cudaGetDeviceCount failed: %s (%s); use \"cpu\" or "
                        "\"auto\"",
                        cudaGetErrorString(err), cudaGetErrorName(err));
    }
    if (count == 0)
        return bp_error(BP_ERR_DEVICE, "no CUDA device found: cudaGetDeviceCount reports 0 "
                                       "devices; use \"cpu\" or \"auto\"");
    if (index < 0 || index >= count)
        return bp_error(BP_ERR_INVALID_ARGUMENT,
                        "bp_device_open: there is no %s; this machine has %d CUDA device%s "
                        "(cuda:0 to cuda:%d)",
                        device->name, count, count == 1 ? "" : "s", count - 1);
    return BP_OK;
}

/* A kernel image this GPU can run must be in the build (CMAKE_CUDA_ARCHITECTURES); find out
 * now rather than at the first launch. */
static bp_status probe_kernels(const bp_device *device, int index) {
    cudaError_t err = bp_cu_probe();
    if (err == cudaSuccess) return BP_OK;
    if (err != cudaErrorNoKernelImageForDevice && err != cudaErrorInvalidDeviceFunction)
        return bp_cuda_fail(device, err, "loading the backprop kernels");
    (void)cudaGetLastError();
    int major = 0, minor = 0;
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, index);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, index);
    return bp_error(BP_ERR_UNSUPPORTED,
                    "%s has compute capability %d.%d, and this build of backprop has no kernels "
                    "for it; rebuild with CMAKE_CUDA_ARCHITECTURES including %d%d",
                    device->name, major, minor, major, minor);
}

/* Memory: a pool of our own rather than the device's default one, because the default pool is
 * shared by the whole process (another library's allocations, other backprop devices), so
 * raising its release threshold would change their behaviour, and our pool's memory goes back
 * to the driver when the device is closed. With the threshold at UINT64_MAX the pool keeps
 * freed memory across synchronizations, so after the first training step every
 * cudaMallocFromPoolAsync is served from the pool and a step makes no driver allocation. */
static bp_status create_pool(const bp_device *device, bp_cuda_impl *impl) {
    int supported = 0;
    BP_CUDA_TRY(device,
                cudaDeviceGetAttribute(&supported, cudaDevAttrMemoryPoolsSupported, impl->index),
                "cudaDeviceGetAttribute(cudaDevAttrMemoryPoolsSupported)");
    if (!supported) return BP_OK;  /* e.g. some virtualised GPUs: plain cudaMalloc then */
    struct cudaMemPoolProps props; /* a plain struct tag in C */
    memset(&props, 0, sizeof props);
    props.allocType = cudaMemAllocationTypePinned;
    props.handleTypes = cudaMemHandleTypeNone;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = impl->index;
    BP_CUDA_TRY(device, cudaMemPoolCreate(&impl->pool, &props), "cudaMemPoolCreate(device %d)",
                impl->index);
    uint64_t keep_all = UINT64_MAX;
    BP_CUDA_TRY(device,
                cudaMemPoolSetAttribute(impl->pool, cudaMemPoolAttrReleaseThreshold, &keep_all),
                "cudaMemPoolSetAttribute(cudaMemPoolAttrReleaseThreshold, UINT64_MAX)");
    return BP_OK;
}

static bp_status create_blas(const bp_device *device, bp_cuda_impl *impl) {
    cublasStatus_t st = cublasCreate(&impl->blas);
    if (st != CUBLAS_STATUS_SUCCESS) {
        impl->blas = NULL;
        return bp_cublas_fail(device, st, "cublasCreate");
    }
    BP_CUBLAS_TRY(device, cublasSetStream(impl->blas, impl->stream), "cublasSetStream");
    int major = 0;
    BP_CUDA_TRY(device,
                cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, impl->index),
                "cudaDeviceGetAttribute(cudaDevAttrComputeCapabilityMajor)");
    size_t bytes = major >= 9 ? BP_CUBLAS_WORKSPACE_HOPPER : BP_CUBLAS_WORKSPACE_OTHER;
    BP_CUDA_TRY(device, cudaMalloc(&impl->blas_workspace, bytes),
                "cudaMalloc(%zu bytes of cuBLAS workspace)", bytes);
    impl->blas_workspace_bytes = bytes;
    /* After cublasSetStream, which resets the handle to its default workspace. */
    BP_CUBLAS_TRY(device, cublasSetWorkspace(impl->blas, impl->blas_workspace, bytes),
                  "cublasSetWorkspace(%zu bytes)", bytes);
    /* Default math: fp32 GEMMs stay fp32 (no TF32 tensor cores) unless asked for. */
    impl->allow_tf32 = BP_CUDA_ALLOW_TF32_DEFAULT;
    cublasMath_t mode = impl->allow_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH;
    BP_CUBLAS_TRY(device, cublasSetMathMode(impl->blas, mode), "cublasSetMathMode(%s)",
                  impl->allow_tf32 ? "CUBLAS_TF32_TENSOR_OP_MATH" : "CUBLAS_DEFAULT_MATH");
    cublasStatus_t lt = cublasLtCreate(&impl->lt);
    if (lt != CUBLAS_STATUS_SUCCESS) {
        impl->lt = NULL;
        return bp_cublas_fail(device, lt, "cublasLtCreate");
    }
    return BP_OK;
}

static bp_status create_buffers(const bp_device *device, bp_cuda_impl *impl) {
    BP_CUDA_TRY(device, cudaMalloc(&impl->scratch, BP_CU_SCRATCH_BYTES),
                "cudaMalloc(%zu bytes of reduction scratch)", BP_CU_SCRATCH_BYTES);
    BP_CUDA_TRY(device, cudaMallocHost((void **)&impl->host_result, sizeof(int64_t)),
                "cudaMallocHost(%zu bytes)", sizeof(int64_t));
    for (int i = 0; i < BP_CUDA_STAGE_SLOTS; ++i)
        BP_CUDA_TRY(device, cudaEventCreateWithFlags(&impl->stage_done[i], cudaEventDisableTiming),
                    "cudaEventCreateWithFlags(cudaEventDisableTiming)");
    return BP_OK;
}

static bp_status setup(const bp_device *device, bp_cuda_impl *impl) {
    BP_CUDA_TRY(device, cudaSetDevice(impl->index), "cudaSetDevice(%d)", impl->index);
    bp_status st = probe_kernels(device, impl->index);
    if (st != BP_OK) return st;
    BP_CUDA_TRY(device, cudaStreamCreateWithFlags(&impl->stream, cudaStreamNonBlocking),
                "cudaStreamCreateWithFlags(cudaStreamNonBlocking)");
    st = create_pool(device, impl);
    if (st == BP_OK) st = create_blas(device, impl);
    if (st == BP_OK) st = create_buffers(device, impl);
    return st;
}

/* Frees whatever setup created, in any state of completion. Errors are ignored: there is no
 * one to report them to, and each release is independent of the others. */
static void teardown(bp_cuda_impl *impl) {
    cudaSetDevice(impl->index);
    /* Wait for queued work before releasing anything it may still use. */
    if (impl->stream) cudaStreamSynchronize(impl->stream);
    bp_cuda_release_staging(impl);
    for (int i = 0; i < BP_CUDA_STAGE_SLOTS; ++i)
        if (impl->stage_done[i]) cudaEventDestroy(impl->stage_done[i]);
    if (impl->host_result) cudaFreeHost(impl->host_result);
    if (impl->scratch) cudaFree(impl->scratch);
    if (impl->lt) cublasLtDestroy(impl->lt);
    if (impl->blas) cublasDestroy(impl->blas);
    if (impl->blas_workspace) cudaFree(impl->blas_workspace);
    if (impl->stream) cudaStreamDestroy(impl->stream);
    /* Blocks still allocated from the pool are released by the driver once freed. */
    if (impl->pool) cudaMemPoolDestroy(impl->pool);
    (void)cudaGetLastError();
}

bp_status bp_cuda_init(bp_device *device, int index) {
    bp_status st = check_index(device, index);
    if (st != BP_OK) return st;
    bp_cuda_impl *impl = calloc(1, sizeof *impl);
    if (!impl)
        return bp_error(BP_ERR_OUT_OF_MEMORY, "bp_device_open: no host memory for %s",
                        device->name);
    impl->index = index;
    device->impl = impl;
    st = setup(device, impl);
    if (st != BP_OK) {
        teardown(impl);
        free(impl);
        device->impl = NULL;
    }
    return st;
}

void bp_cuda_destroy(bp_device *device) {
    bp_cuda_impl *impl = bp_cuda_impl_of(device);
    if (!impl) return;
    teardown(impl);
    free(impl);
    device->impl = NULL;
}

bp_status bp_cuda_synchronize(bp_device *device) {
    BP_CUDA_ENTER(device);
    /* An asynchronous failure of earlier work (a kernel fault) is reported here. */
    bp_cu_note_wait();
    BP_CUDA_TRY(device, cudaStreamSynchronize(bp_cuda_impl_of(device)->stream),
                "cudaStreamSynchronize");
    return BP_OK;
}
