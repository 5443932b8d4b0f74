// cudaemu's kernels: launch configurations, the built-ins, barriers and shuffles, and the faults
// the emulator reports (partial barriers, exited lanes, deadlocks, host pointers, overruns).
#include <gmock/gmock.h>

#include <cmath>
#include <cstring>
#include <numeric>

#include "emu_test.h"

using ::testing::HasSubstr;

namespace {

__global__ void iota_kernel(int *out, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        out[i] = i;
}

// Each thread of a 3-D block in a 2-D grid writes its coordinates at its linear place.
__global__ void coords_kernel(int *out) {
    int block = blockIdx.x + gridDim.x * blockIdx.y;
    int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    int *o = out + 6 * (block * blockDim.x * blockDim.y * blockDim.z + t);
    o[0] = threadIdx.x, o[1] = threadIdx.y, o[2] = threadIdx.z;
    o[3] = blockIdx.x, o[4] = blockIdx.y, o[5] = blockIdx.z;
}

TEST_F(Emu, CudaEmuKernelsSeeTheirIndices) {
    int *d = device_array<int>(1000);
    EMU_LAUNCH(3, 128, 0, nullptr, iota_kernel)(d, 1000);
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    std::vector<int> want(1000);
    std::iota(want.begin(), want.end(), 0);
    EXPECT_EQ(download(d, 1000), want);

    const dim3 grid(2, 3), block(4, 2, 3);
    int *c = device_array<int>(6 * 6 * 24);
    EMU_LAUNCH(grid, block, 0, nullptr, coords_kernel)(c);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    auto h = download(c, 6 * 6 * 24);
    for (int by = 0; by < 3; ++by)
        for (int bx = 0; bx < 2; ++bx)
            for (int tz = 0; tz < 3; ++tz)
                for (int ty = 0; ty < 2; ++ty)
                    for (int tx = 0; tx < 4; ++tx) {
                        int at = 6 * ((bx + 2 * by) * 24 + tx + 4 * (ty + 2 * tz));
                        std::vector<int> got(h.begin() + at, h.begin() + at + 6);
                        EXPECT_EQ(got, (std::vector<int>{tx, ty, tz, bx, by, 0}));
                    }
}

// Flips the sign bit through the bit-pattern intrinsics, and reads the bits back as integers.
__global__ void sign_flip_kernel(const float *x, float *y, unsigned *bits, int *ibits) {
    int i = threadIdx.x;
    y[i] = __uint_as_float(__float_as_uint(x[i]) ^ 0x80000000u);
    bits[i] = __float_as_uint(x[i]);
    ibits[i] = __float_as_int(__int_as_float(__float_as_int(x[i])));
}

TEST_F(Emu, CudaEmuBitPatternIntrinsicsKeepEveryBit) {
    const float nan_payload = []() {
        float f;
        unsigned u = 0x7fc00123u;
        std::memcpy(&f, &u, sizeof f);
        return f;
    }();
    std::vector<float> x = {1.0f, -2.5f, 0.0f, 1e-40f /* subnormal */, nan_payload};
    int n = (int)x.size();
    float *dx = device_array<float>(n), *dy = device_array<float>(n);
    unsigned *db = device_array<unsigned>(n);
    int *di = device_array<int>(n);
    upload(dx, x);
    EMU_LAUNCH(1, n, 0, nullptr, sign_flip_kernel)(dx, dy, db, di);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    auto y = download(dy, n);
    auto b = download(db, n);
    auto ib = download(di, n);
    for (int i = 0; i < n; ++i) {
        unsigned ux, uy;
        std::memcpy(&ux, &x[i], 4);
        std::memcpy(&uy, &y[i], 4);
        EXPECT_EQ(uy, ux ^ 0x80000000u) << i;
        EXPECT_EQ(b[i], ux) << i;
        EXPECT_EQ((unsigned)ib[i], ux) << i;
    }
}

TEST_F(Emu, CudaEmuLaunchConfigurationsPastCudasLimitsAreRefused) {
    int *d = device_array<int>(4);
    struct Case {
        dim3 grid, block;
        size_t smem;
        cudaError_t want;
    } cases[] = {
        {1, 1025, 0, cudaErrorInvalidConfiguration},            // > 1024 threads
        {1, dim3(32, 32, 2), 0, cudaErrorInvalidConfiguration}, // 2048 threads
        {1, dim3(1, 1, 65), 0, cudaErrorInvalidConfiguration},  // z > 64
        {0, 32, 0, cudaErrorInvalidConfiguration},              // no blocks
        {dim3(1, 65536), 32, 0, cudaErrorInvalidConfiguration}, // grid y > 65535
        {1, 32, 49153, cudaErrorInvalidValue},                  // > 48 KiB of shared memory
        {dim3(1, 65535, 1), dim3(1), 0, cudaSuccess},           // the limits themselves
        {1, dim3(1024), 0, cudaSuccess},
        {1, dim3(1, 1, 64), 49152, cudaSuccess},
    };
    for (const Case &c : cases) {
        EMU_LAUNCH(c.grid, c.block, c.smem, nullptr, iota_kernel)(d, 0);
        EXPECT_EQ(cudaGetLastError(), c.want) << c.grid.x << "x" << c.grid.y << " blocks of "
                                              << c.block.x << "x" << c.block.y << "x" << c.block.z;
    }
    int bogus = 0;
    EMU_LAUNCH(1, 32, 0, (cudaStream_t)&bogus, iota_kernel)(d, 4);
    EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidResourceHandle);
    // Configuration errors are not sticky: the device still works.
    EMU_LAUNCH(1, 32, 0, nullptr, iota_kernel)(d, 4);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

// Block-wide sum through shared memory: a barrier after the writes.
__global__ void block_sum_kernel(const float *x, float *out) {
    __shared__ float part[256];
    part[threadIdx.x] = x[blockIdx.x * blockDim.x + threadIdx.x];
    __syncthreads();
    if (threadIdx.x == 0) {
        float s = 0;
        for (unsigned i = 0; i < blockDim.x; ++i)
            s += part[i];
        out[blockIdx.x] = s;
    }
}

// The same with the barrier forgotten: thread 0 reads slots other threads may not have written.
__global__ void missing_barrier_kernel(const float *x, float *out) {
    __shared__ float part[256];
    part[threadIdx.x] = x[blockIdx.x * blockDim.x + threadIdx.x];
    if (threadIdx.x == 0) {
        float s = 0;
        for (unsigned i = 0; i < blockDim.x; ++i)
            s += part[i];
        out[blockIdx.x] = s;
    }
}

TEST_F(Emu, CudaEmuBarriersOrderSharedMemory) {
    float *x = device_array<float>(4 * 256), *out = device_array<float>(4);
    upload(x, std::vector<float>(4 * 256, 1.0f));
    EMU_LAUNCH(4, 256, 0, nullptr, block_sum_kernel)(x, out);
    EXPECT_EQ(download(out, 4), std::vector<float>(4, 256.0f));
    // In random order too, for any seed.
    for (uint64_t seed = 1; seed <= 5; ++seed) {
        cudaemu_set_schedule(1, seed);
        EMU_LAUNCH(4, 256, 0, nullptr, block_sum_kernel)(x, out);
        EXPECT_EQ(download(out, 4), std::vector<float>(4, 256.0f)) << "seed " << seed;
    }
}

TEST_F(Emu, CudaEmuRandomScheduleExposesAMissingBarrier) {
    float *x = device_array<float>(4 * 256), *out = device_array<float>(4);
    upload(x, std::vector<float>(4 * 256, 1.0f));
    // In index order thread 0 runs first and sees only its own write; shared memory is poison
    // before it, so the sum is NaN, never a plausible value.
    EMU_LAUNCH(4, 256, 0, nullptr, missing_barrier_kernel)(x, out);
    for (float v : download(out, 4))
        EXPECT_TRUE(std::isnan(v));
    // A random schedule lets other warps run first: some blocks get the right sum by luck and
    // others not, which in-order execution never shows.
    int right = 0, wrong = 0;
    for (uint64_t seed = 1; seed <= 8; ++seed) {
        cudaemu_set_schedule(1, seed);
        EMU_LAUNCH(4, 256, 0, nullptr, missing_barrier_kernel)(x, out);
        for (float v : download(out, 4))
            (v == 256.0f ? right : wrong)++;
    }
    EXPECT_GT(wrong, 0);
}

// A barrier only part of the block reaches.
__global__ void partial_barrier_kernel(float *out) {
    if (threadIdx.x < 100) {
        __syncthreads();
        out[threadIdx.x] = 1.0f;
    }
}

TEST_F(Emu, CudaEmuBarrierReachedByPartOfTheBlockIsAStickyFault) {
    float *out = device_array<float>(128);
    EMU_LAUNCH(1, 128, 0, nullptr, partial_barrier_kernel)(out);
    EXPECT_EQ(cudaGetLastError(), cudaErrorLaunchFailure);
    EXPECT_THAT(cudaemu_last_fault(), HasSubstr("test_kernels.cc:"));
    EXPECT_THAT(cudaemu_last_fault(), HasSubstr("reached by only part of block (0,0,0)"));
    // Sticky, as on a GPU: every later call fails, until the device is reset.
    EXPECT_EQ(cudaGetLastError(), cudaErrorLaunchFailure);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorLaunchFailure);
    void *p = nullptr;
    EXPECT_EQ(cudaMalloc(&p, 16), cudaErrorLaunchFailure);
    ASSERT_EQ(cudaDeviceReset(), cudaSuccess);
    EXPECT_EQ(cudaMalloc(&p, 16), cudaSuccess);
    EXPECT_EQ(cudaFree(p), cudaSuccess);
}

// Two barriers at different places: legal only if every thread meets the same one.
__global__ void two_barriers_kernel(float *out) {
    if (threadIdx.x % 2) {
        __syncthreads();
    } else {
        __syncthreads();
    }
    out[threadIdx.x] = 1.0f;
}

TEST_F(Emu, CudaEmuThreadsAtTwoDifferentBarriersAreAFault) {
    float *out = device_array<float>(64);
    EMU_LAUNCH(1, 64, 0, nullptr, two_barriers_kernel)(out);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorLaunchFailure);
    EXPECT_THAT(cudaemu_last_fault(), HasSubstr("two different barriers"));
}

__device__ float warp_sum(float v) {
    for (int o = 16; o > 0; o /= 2)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__global__ void warp_sum_kernel(const float *x, float *out) {
    float v = warp_sum(x[threadIdx.x]);
    out[threadIdx.x] = v;
}

// Lanes that leave before a full-mask shuffle.
__global__ void lanes_leave_kernel(const float *x, float *out) {
    if (threadIdx.x % 32 >= 24) return;
    out[threadIdx.x] = warp_sum(x[threadIdx.x]);
}

TEST_F(Emu, CudaEmuShufflesExchangeLanesAndExitedLanesAreAFault) {
    float *x = device_array<float>(64), *out = device_array<float>(64);
    std::vector<float> h(64);
    std::iota(h.begin(), h.end(), 0.0f);
    upload(x, h);
    EMU_LAUNCH(1, 64, 0, nullptr, warp_sum_kernel)(x, out);
    auto got = download(out, 64);
    for (int i = 0; i < 64; ++i)
        EXPECT_EQ(got[i], i < 32 ? 496.0f : 1520.0f) << i; // 0+..+31, 32+..+63
    EMU_LAUNCH(1, 64, 0, nullptr, lanes_leave_kernel)(x, out);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorLaunchFailure);
    EXPECT_THAT(cudaemu_last_fault(), HasSubstr("exited"));
    EXPECT_THAT(cudaemu_last_fault(), HasSubstr("test_kernels.cc:"));
}

// Half the warp waits at a shuffle, the other half at a barrier: nothing can go on.
__global__ void deadlock_kernel(float *out) {
    float v = 1.0f;
    if (threadIdx.x < 16)
        v = __shfl_xor_sync(0xffffffffu, v, 1);
    else
        __syncthreads();
    out[threadIdx.x] = v;
}

TEST_F(Emu, CudaEmuDeadlockIsDetectedNotHung) {
    float *out = device_array<float>(32);
    EMU_LAUNCH(1, 32, 0, nullptr, deadlock_kernel)(out);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorLaunchFailure);
    // Whichever check sees it first names the shuffle and the barrier.
    EXPECT_THAT(cudaemu_last_fault(), HasSubstr("test_kernels.cc:"));
}

__global__ void wrong_mask_kernel(float *out) {
    float v = 1.0f;
    if (threadIdx.x == 0) v = __shfl_xor_sync(0x2u, v, 1); // the mask does not name lane 0
    out[threadIdx.x] = v;
}

TEST_F(Emu, CudaEmuShuffleMaskMustNameTheCaller) {
    float *out = device_array<float>(32);
    EMU_LAUNCH(1, 32, 0, nullptr, wrong_mask_kernel)(out);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorLaunchFailure);
    EXPECT_THAT(cudaemu_last_fault(), HasSubstr("does not name it"));
}

__global__ void write_kernel(float *p, int n) {
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        p[i] = 2.0f;
}

TEST_F(Emu, CudaEmuHostPointerKernelArgumentIsAFault) {
    std::vector<float> host(32, 0.0f);
    EMU_LAUNCH(1, 32, 0, nullptr, write_kernel)(host.data(), 32);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorIllegalAddress);
    EXPECT_THAT(cudaemu_last_fault(), HasSubstr("argument 1"));
    EXPECT_THAT(cudaemu_last_fault(), HasSubstr("not device memory"));
    EXPECT_EQ(host, std::vector<float>(32, 0.0f)); // the kernel never ran
    ASSERT_EQ(cudaDeviceReset(), cudaSuccess);
    // NULL is a legal pointer argument (a kernel may test it).
    EMU_LAUNCH(1, 32, 0, nullptr, write_kernel)(nullptr, 0);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

TEST_F(Emu, CudaEmuKernelWritingPastAnAllocationIsCaught) {
    float *d = device_array<float>(30);
#ifdef EMU_TEST_ASAN
    // Under AddressSanitizer device memory has ASan's redzones: the write itself is reported.
    EXPECT_DEATH(
        {
            EMU_LAUNCH(1, 32, 0, nullptr, write_kernel)(d, 32);
            cudaDeviceSynchronize();
        },
        "heap-buffer-overflow");
#else
    EMU_LAUNCH(1, 32, 0, nullptr, write_kernel)(d, 32);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorIllegalAddress);
    EXPECT_THAT(cudaemu_last_fault(), HasSubstr("kernel launched at"));
    EXPECT_THAT(cudaemu_last_fault(),
                HasSubstr("wrote past the end of an allocation of 120 bytes"));
#endif
}

__global__ void read_shared_kernel(float *out) {
    __shared__ float s[32];
    if (blockIdx.x == 0) s[threadIdx.x] = 1.0f;
    __syncthreads();
    out[blockIdx.x * 32 + threadIdx.x] = s[threadIdx.x];
}

TEST_F(Emu, CudaEmuSharedMemoryStartsPoisonedInEveryBlock) {
    float *out = device_array<float>(64);
    EMU_LAUNCH(2, 32, 0, nullptr, read_shared_kernel)(out);
    auto h = download(out, 64);
    for (int i = 0; i < 32; ++i)
        EXPECT_EQ(h[i], 1.0f);
    for (int i = 32; i < 64; ++i) // block 1 never wrote: not block 0's leftovers
        EXPECT_TRUE(std::isnan(h[i])) << i;
}

TEST_F(Emu, CudaEmuDeferredKernelRunsAtTheSynchronization) {
    cudaemu_set_deferred(1);
    int *d = device_array<int>(64);
    std::vector<int> h(64, 0);
    EMU_LAUNCH(1, 64, 0, nullptr, iota_kernel)(d, 64);
    ASSERT_EQ(cudaMemcpyAsync(h.data(), d, 64 * sizeof(int), cudaMemcpyDeviceToHost, nullptr),
              cudaSuccess);
    EXPECT_EQ(h, std::vector<int>(64, -1)); // poison: the copy has not run
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    for (int i = 0; i < 64; ++i)
        EXPECT_EQ(h[i], i);
}

} // namespace
