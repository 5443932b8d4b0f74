// cudaemu's runtime: devices, errors, memory and copies.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "cudaemu.h"
#include "cuda_runtime.h"

namespace {

TEST(CudaEmuRuntime, FreshDeviceMemoryIsPoisonedNotZero) {
    ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
    float *d = nullptr;
    ASSERT_EQ(cudaMalloc((void **)&d, 64 * sizeof(float)), cudaSuccess);
    std::vector<float> h(64, 1.0f);
    ASSERT_EQ(cudaMemcpy(h.data(), d, 64 * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
    for (float v : h)
        EXPECT_TRUE(std::isnan(v));
    EXPECT_EQ(cudaFree(d), cudaSuccess);
}

} // namespace
