// cudaemu's runtime: devices, errors, memory, copies, pools, streams and events.
#include <gmock/gmock.h>

#include <cmath>
#include <cstring>

#include "emu_test.h"

using ::testing::HasSubstr;

namespace {

TEST_F(Emu, CudaEmuDevicesSayTheyAreEmulated) {
    int count = 0;
    ASSERT_EQ(cudaGetDeviceCount(&count), cudaSuccess);
    EXPECT_GE(count, 2); // two ranks of the MPI tests take one each
    cudaDeviceProp prop;
    ASSERT_EQ(cudaGetDeviceProperties(&prop, 0), cudaSuccess);
    EXPECT_STREQ(prop.name, "cudaemu: emulated CUDA device (not a GPU)");
    int major = 0, minor = -1, pools = 0;
    EXPECT_EQ(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0), cudaSuccess);
    EXPECT_EQ(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0), cudaSuccess);
    EXPECT_EQ(cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, 0), cudaSuccess);
    EXPECT_EQ(major * 10 + minor, 90);
    EXPECT_EQ(pools, 1);
    EXPECT_EQ(cudaSetDevice(count), cudaErrorInvalidDevice);
    EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidDevice);
    EXPECT_EQ(cudaGetLastError(), cudaSuccess); // not sticky: read once
    EXPECT_EQ(cudaDeviceGetAttribute(&major, (cudaDeviceAttr)100, 0), cudaErrorInvalidValue);
}

TEST_F(Emu, CudaEmuErrorCodesAndNamesAreCudas) {
    EXPECT_EQ((int)cudaErrorInvalidValue, 1);
    EXPECT_EQ((int)cudaErrorMemoryAllocation, 2);
    EXPECT_EQ((int)cudaErrorInvalidConfiguration, 9);
    EXPECT_EQ((int)cudaErrorInvalidResourceHandle, 400);
    EXPECT_EQ((int)cudaErrorIllegalAddress, 700);
    EXPECT_EQ((int)cudaErrorLaunchFailure, 719);
    EXPECT_STREQ(cudaGetErrorName(cudaErrorMemoryAllocation), "cudaErrorMemoryAllocation");
    EXPECT_STREQ(cudaGetErrorString(cudaErrorMemoryAllocation), "out of memory");
    EXPECT_STREQ(cudaGetErrorName(cudaErrorIllegalAddress), "cudaErrorIllegalAddress");
}

TEST_F(Emu, CudaEmuFreshDeviceMemoryIsPoisonedNotZero) {
    float *d = device_array<float>(64);
    for (float v : download(d, 64))
        EXPECT_TRUE(std::isnan(v));
    int *i = device_array<int>(4);
    for (int v : download(i, 4))
        EXPECT_EQ(v, -1);
    EXPECT_EQ(cudaFree(d), cudaSuccess);
    EXPECT_EQ(cudaFree(i), cudaSuccess);
}

TEST_F(Emu, CudaEmuCapacityIsFixedAndOutOfMemoryIsReported) {
    cudaemu_set_capacity((size_t)1 << 20);
    size_t free_bytes = 0, total = 0;
    ASSERT_EQ(cudaMemGetInfo(&free_bytes, &total), cudaSuccess);
    EXPECT_EQ(total, (size_t)1 << 20);
    void *a = nullptr, *b = nullptr;
    ASSERT_EQ(cudaMalloc(&a, 700 << 10), cudaSuccess);
    EXPECT_EQ(cudaMalloc(&b, 400 << 10), cudaErrorMemoryAllocation);
    EXPECT_EQ(b, nullptr);
    EXPECT_EQ(cudaGetLastError(), cudaErrorMemoryAllocation);
    EXPECT_EQ(cudaFree(a), cudaSuccess);
    EXPECT_EQ(cudaMalloc(&b, 400 << 10), cudaSuccess); // the memory came back
    EXPECT_EQ(cudaFree(b), cudaSuccess);
    void *huge = nullptr;
    EXPECT_EQ(cudaMalloc(&huge, (size_t)1 << 42), cudaErrorMemoryAllocation);
}

TEST_F(Emu, CudaEmuCopiesRefuseHostPointersAndOverruns) {
    float *d = device_array<float>(16);
    std::vector<float> h(32, 1.0f);
    // A host pointer where the device pointer belongs, and the other way round.
    EXPECT_EQ(cudaMemcpy(h.data(), h.data() + 16, 64, cudaMemcpyHostToDevice),
              cudaErrorInvalidValue);
    EXPECT_THAT(cudaemu_last_fault(), HasSubstr("not device memory"));
    EXPECT_EQ(cudaMemcpy(d, d, 64, cudaMemcpyHostToDevice), cudaErrorInvalidValue);
    EXPECT_THAT(cudaemu_last_fault(), HasSubstr("is device memory"));
    // 17 floats into 16.
    EXPECT_EQ(cudaMemcpy(d, h.data(), 17 * sizeof(float), cudaMemcpyHostToDevice),
              cudaErrorInvalidValue);
    EXPECT_THAT(cudaemu_last_fault(), HasSubstr("past the end of its allocation"));
    EXPECT_EQ(cudaMemcpy(h.data(), d + 8, 9 * sizeof(float), cudaMemcpyDeviceToHost),
              cudaErrorInvalidValue);
    EXPECT_EQ(cudaMemsetAsync(d + 1, 0, 16 * sizeof(float), nullptr), cudaErrorInvalidValue);
    // Within bounds all goes through, and the refused calls changed nothing.
    EXPECT_EQ(cudaMemcpy(d, h.data(), 16 * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
    EXPECT_EQ(download(d, 16), std::vector<float>(16, 1.0f));
    EXPECT_EQ(cudaFree(h.data()), cudaErrorInvalidValue);
    EXPECT_EQ(cudaFree(d), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(h.data(), d, 4, cudaMemcpyDeviceToHost), cudaErrorInvalidValue); // freed
}

TEST_F(Emu, CudaEmuMemset2DWritesOnlyItsRectangle) {
    unsigned char *d = device_array<unsigned char>(4 * 10);
    ASSERT_EQ(cudaMemset(d, 7, 40), cudaSuccess);
    ASSERT_EQ(cudaMemset2DAsync(d, 10, 0, 6, 4, nullptr), cudaSuccess);
    auto h = download(d, 40);
    for (int r = 0; r < 4; ++r)
        for (int c = 0; c < 10; ++c)
            EXPECT_EQ(h[r * 10 + c], c < 6 ? 0 : 7) << r << "," << c;
    EXPECT_EQ(cudaMemset2DAsync(d, 10, 0, 6, 5, nullptr), cudaErrorInvalidValue); // a 5th row
    EXPECT_EQ(cudaMemset2DAsync(d, 4, 0, 6, 2, nullptr), cudaErrorInvalidPitchValue);
    EXPECT_EQ(cudaFree(d), cudaSuccess);
}

TEST_F(Emu, CudaEmuPoolsKeepFreedBlocksUntilTrimmed) {
    cudaemu_set_capacity((size_t)1 << 20);
    cudaMemPoolProps props;
    std::memset(&props, 0, sizeof props);
    props.allocType = cudaMemAllocationTypePinned;
    props.handleTypes = cudaMemHandleTypeNone;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = 0;
    cudaMemPool_t pool = nullptr;
    ASSERT_EQ(cudaMemPoolCreate(&pool, &props), cudaSuccess);
    uint64_t keep = UINT64_MAX;
    ASSERT_EQ(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep), cudaSuccess);
    cudaStream_t s = nullptr;
    ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
    void *a = nullptr, *b = nullptr;
    ASSERT_EQ(cudaMallocFromPoolAsync(&a, 600 << 10, pool, s), cudaSuccess);
    ASSERT_EQ(cudaFreeAsync(a, s), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
    uint64_t reserved = 0;
    ASSERT_EQ(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &reserved),
              cudaSuccess);
    EXPECT_EQ(reserved, 600u << 10); // held by the pool, not given back
    // A request the kept block cannot serve does not fit next to it, until the pool is trimmed.
    EXPECT_EQ(cudaMallocFromPoolAsync(&b, 700 << 10, pool, s), cudaErrorMemoryAllocation);
    ASSERT_EQ(cudaMemPoolTrimTo(pool, 0), cudaSuccess);
    EXPECT_EQ(cudaMallocFromPoolAsync(&b, 700 << 10, pool, s), cudaSuccess);
    float *f = (float *)b;
    EXPECT_TRUE(std::isnan(download(f, 1)[0])); // fresh from a pool too: poisoned
    EXPECT_EQ(cudaFreeAsync(b, s), cudaSuccess);
    EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
    EXPECT_EQ(cudaMemPoolDestroy(pool), cudaSuccess);
    EXPECT_EQ(cudaMallocFromPoolAsync(&b, 16, pool, nullptr), cudaErrorInvalidValue);
}

TEST_F(Emu, CudaEmuStreamsAndEventsCheckTheirHandles) {
    cudaStream_t s = nullptr;
    ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
    cudaEvent_t e = nullptr;
    ASSERT_EQ(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), cudaSuccess);
    EXPECT_EQ(cudaEventRecord(e, s), cudaSuccess);
    EXPECT_EQ(cudaEventSynchronize(e), cudaSuccess);
    float ms = 0;
    EXPECT_EQ(cudaEventElapsedTime(&ms, e, e), cudaErrorInvalidResourceHandle);
    EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
    EXPECT_EQ(cudaStreamSynchronize(s), cudaErrorInvalidResourceHandle); // destroyed
    int dummy = 0;
    EXPECT_EQ(cudaStreamSynchronize((cudaStream_t)&dummy), cudaErrorInvalidResourceHandle);
    EXPECT_EQ(cudaEventDestroy(e), cudaSuccess);
    EXPECT_EQ(cudaEventSynchronize(e), cudaErrorInvalidResourceHandle);
}

TEST_F(Emu, CudaEmuPinnedMemoryIsHostMemory) {
    void *p = nullptr;
    ASSERT_EQ(cudaMallocHost(&p, 256), cudaSuccess);
    EXPECT_FALSE(cudaemu_is_device_pointer(p));
    float *d = device_array<float>(64);
    EXPECT_TRUE(cudaemu_is_device_pointer(d));
    EXPECT_EQ(cudaMemcpyAsync(p, d, 256, cudaMemcpyDeviceToHost, nullptr), cudaSuccess);
    EXPECT_EQ(cudaMemcpyAsync(d, p, 256, cudaMemcpyDeviceToDevice, nullptr), cudaErrorInvalidValue);
    EXPECT_EQ(cudaFreeHost(d), cudaErrorInvalidValue);
    EXPECT_EQ(cudaFreeHost(p), cudaSuccess);
    EXPECT_EQ(cudaFree(d), cudaSuccess);
}

// Deferred mode: work queued on a stream runs at the next synchronisation, and a host buffer an
// asynchronous download will fill holds poison until then.
TEST_F(Emu, CudaEmuDeferredDownloadIsPoisonUntilSynchronized) {
    cudaemu_set_deferred(1);
    cudaStream_t s = nullptr;
    ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
    float *d = device_array<float>(8);
    std::vector<float> src(8, 3.0f), dst(8, 0.0f);
    ASSERT_EQ(cudaMemcpyAsync(d, src.data(), 32, cudaMemcpyHostToDevice, s), cudaSuccess);
    src.assign(8, -1.0f); // a pageable source is read at the call, as CUDA does
    ASSERT_EQ(cudaMemcpyAsync(dst.data(), d, 32, cudaMemcpyDeviceToHost, s), cudaSuccess);
    for (float v : dst)
        EXPECT_TRUE(std::isnan(v)); // read without a sync: poison, not a plausible value
    ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
    EXPECT_EQ(dst, std::vector<float>(8, 3.0f));
    EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
}

TEST_F(Emu, CudaEmuDeferredEventSynchronizeRunsWorkUpToTheEvent) {
    cudaemu_set_deferred(1);
    cudaStream_t s = nullptr;
    ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
    cudaEvent_t e = nullptr;
    ASSERT_EQ(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), cudaSuccess);
    float *d = device_array<float>(2);
    void *pinned = nullptr;
    ASSERT_EQ(cudaMallocHost(&pinned, 8), cudaSuccess);
    float *h = (float *)pinned;
    h[0] = h[1] = 5.0f;
    ASSERT_EQ(cudaMemcpyAsync(d, h, 8, cudaMemcpyHostToDevice, s), cudaSuccess);
    ASSERT_EQ(cudaEventRecord(e, s), cudaSuccess);
    // A pinned source is read when the copy runs: writing it before the event is a race,
    // and the emulator shows it.
    h[0] = 6.0f;
    ASSERT_EQ(cudaEventSynchronize(e), cudaSuccess);
    h[1] = 7.0f; // after the event: the copy has its bytes
    ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
    std::vector<float> got = download(d, 2);
    EXPECT_EQ(got[0], 6.0f);
    EXPECT_EQ(got[1], 5.0f);
    EXPECT_EQ(cudaFreeHost(pinned), cudaSuccess);
    EXPECT_EQ(cudaEventDestroy(e), cudaSuccess);
    EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
}

} // namespace
