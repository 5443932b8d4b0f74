// Shared by cudaemu's tests: a fixture that starts each test on a fresh device 0 in the default
// modes and resets it afterwards (a test may leave a sticky fault behind on purpose).
#ifndef CUDAEMU_TESTS_EMU_TEST_H
#define CUDAEMU_TESTS_EMU_TEST_H

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "cuda_runtime.h"
#include "cudaemu.h"

class Emu : public ::testing::Test {
  protected:
    void SetUp() override {
        ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
        ASSERT_EQ(cudaDeviceReset(), cudaSuccess);
        cudaemu_set_schedule(0, 1);
        cudaemu_set_deferred(0);
    }
    void TearDown() override {
        cudaemu_set_deferred(0);
        cudaemu_set_schedule(0, 1);
        cudaemu_set_capacity((size_t)4 << 30);
        cudaDeviceReset();
    }
    template <typename T> T *device_array(size_t n) {
        void *p = nullptr;
        EXPECT_EQ(cudaMalloc(&p, n * sizeof(T)), cudaSuccess);
        return (T *)p;
    }
    template <typename T> std::vector<T> download(const T *d, size_t n) {
        std::vector<T> h(n);
        EXPECT_EQ(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
        return h;
    }
    template <typename T> void upload(T *d, const std::vector<T> &h) {
        EXPECT_EQ(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice),
                  cudaSuccess);
    }
};

#if defined(__SANITIZE_ADDRESS__)
#define EMU_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EMU_TEST_ASAN 1
#endif
#endif

#define EMU_LAUNCH(grid, block, smem, stream, ...)                                                 \
    ::cudaemu::launch(__VA_ARGS__, grid, block, smem, stream, __FILE__, __LINE__)

#endif
