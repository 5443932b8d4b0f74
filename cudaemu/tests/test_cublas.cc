// cudaemu's cuBLAS: column-major Sgemm and Sgeam against a naive reference, the documented
// argument checks, and device-memory checks of the matrices.
#include <gmock/gmock.h>

#include <cmath>
#include <random>

#include "cublas_v2.h"
#include "emu_test.h"

using ::testing::HasSubstr;

namespace {

class EmuBlas : public Emu {
  protected:
    void SetUp() override {
        Emu::SetUp();
        ASSERT_EQ(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
    }
    void TearDown() override {
        cublasDestroy(h);
        Emu::TearDown();
    }
    cublasHandle_t h = nullptr;
};

std::vector<float> random_floats(size_t n, unsigned seed) {
    std::mt19937 g(seed);
    std::uniform_real_distribution<float> d(-1, 1);
    std::vector<float> v(n);
    for (auto &x : v)
        x = d(g);
    return v;
}

// Column-major: element (i, j) of an r x c matrix with leading dimension ld is at i + j * ld.
double at(const std::vector<float> &m, int ld, bool trans, int i, int j) {
    return trans ? m[(size_t)j + (size_t)i * ld] : m[(size_t)i + (size_t)j * ld];
}

TEST_F(EmuBlas, CudaEmuSgemmIsColumnMajorForEveryTranspose) {
    const int m = 5, n = 7, k = 3, lda = 9, ldb = 8, ldc = 6;
    for (int ta = 0; ta < 2; ++ta)
        for (int tb = 0; tb < 2; ++tb) {
            auto A = random_floats((size_t)lda * 9, 1), B = random_floats((size_t)ldb * 9, 2);
            auto C = random_floats((size_t)ldc * n, 3);
            float *dA = device_array<float>(A.size()), *dB = device_array<float>(B.size());
            float *dC = device_array<float>(C.size());
            upload(dA, A), upload(dB, B), upload(dC, C);
            const float alpha = 0.5f, beta = -2.0f;
            ASSERT_EQ(cublasSgemm(h, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                  m, n, k, &alpha, dA, lda, dB, ldb, &beta, dC, ldc),
                      CUBLAS_STATUS_SUCCESS);
            auto got = download(dC, C.size());
            for (int j = 0; j < n; ++j)
                for (int i = 0; i < ldc; ++i) {
                    double want = C[(size_t)i + (size_t)j * ldc];
                    if (i < m) {
                        double s = 0;
                        for (int p = 0; p < k; ++p)
                            s += at(A, lda, ta, i, p) * at(B, ldb, tb, p, j);
                        want = alpha * s + beta * want;
                    }
                    EXPECT_NEAR(got[(size_t)i + (size_t)j * ldc], want, 1e-5) << ta << tb << i << j;
                }
            cudaFree(dA), cudaFree(dB), cudaFree(dC);
        }
}

TEST_F(EmuBlas, CudaEmuSgemmWithBetaZeroNeverReadsC) {
    float *dA = device_array<float>(4), *dB = device_array<float>(4), *dC = device_array<float>(4);
    upload(dA, std::vector<float>{1, 2, 3, 4});
    upload(dB, std::vector<float>{1, 0, 0, 1});
    // dC is fresh: NaN everywhere.
    const float one = 1, zero = 0;
    ASSERT_EQ(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, dA, 2, dB, 2, &zero, dC, 2),
              CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(download(dC, 4), (std::vector<float>{1, 2, 3, 4}));
}

TEST_F(EmuBlas, CudaEmuSgemmChecksItsArgumentsAsDocumented) {
    float *d = device_array<float>(64);
    const float one = 1;
    auto gemm = [&](cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, int lda,
                    int ldb, int ldc) {
        return cublasSgemm(h, ta, tb, m, n, k, &one, d, lda, d, ldb, &one, d, ldc);
    };
    const auto N = CUBLAS_OP_N, T = CUBLAS_OP_T;
    EXPECT_EQ(gemm(N, N, -1, 2, 2, 2, 2, 2), CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_EQ(gemm(N, N, 2, -1, 2, 2, 2, 2), CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_EQ(gemm(N, N, 2, 2, -1, 2, 2, 2), CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_EQ(gemm(N, N, 4, 2, 2, 3, 2, 4), CUBLAS_STATUS_INVALID_VALUE); // lda < m
    EXPECT_EQ(gemm(T, N, 4, 2, 3, 2, 3, 4), CUBLAS_STATUS_INVALID_VALUE); // lda < k (A^T)
    EXPECT_EQ(gemm(N, N, 2, 2, 3, 2, 2, 2), CUBLAS_STATUS_INVALID_VALUE); // ldb < k
    EXPECT_EQ(gemm(N, T, 2, 3, 2, 2, 2, 2), CUBLAS_STATUS_INVALID_VALUE); // ldb < n (B^T)
    EXPECT_EQ(gemm(N, N, 3, 2, 2, 3, 2, 2), CUBLAS_STATUS_INVALID_VALUE); // ldc < m
    EXPECT_EQ(gemm((cublasOperation_t)3, N, 2, 2, 2, 2, 2, 2), CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_EQ(cublasSgemm(nullptr, N, N, 2, 2, 2, &one, d, 2, d, 2, &one, d, 2),
              CUBLAS_STATUS_NOT_INITIALIZED);
    EXPECT_EQ(gemm(N, N, 0, 2, 2, 1, 2, 1), CUBLAS_STATUS_SUCCESS); // empty: nothing to do
    EXPECT_STREQ(cublasGetStatusName(CUBLAS_STATUS_INVALID_VALUE), "CUBLAS_STATUS_INVALID_VALUE");
    EXPECT_EQ((int)CUBLAS_STATUS_INVALID_VALUE, 7);
    EXPECT_EQ((int)CUBLAS_STATUS_EXECUTION_FAILED, 13);
}

TEST_F(EmuBlas, CudaEmuSgemmOnHostMemoryOrPastAnAllocationIsAFault) {
    float *d = device_array<float>(16);
    std::vector<float> host(16, 1.0f);
    const float one = 1;
    EXPECT_EQ(
        cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 4, 4, &one, host.data(), 4, d, 4, &one, d, 4),
        CUBLAS_STATUS_EXECUTION_FAILED);
    EXPECT_THAT(cudaemu_last_fault(), HasSubstr("matrix A"));
    EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorIllegalAddress); // sticky, as a GPU fault is
    ASSERT_EQ(cudaDeviceReset(), cudaSuccess);
    ASSERT_EQ(cublasDestroy(h), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
    d = device_array<float>(16);
    // B spans (n - 1) * ldb + k = 3 * 5 + 4 = 19 floats of a 16-float allocation.
    EXPECT_EQ(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 4, 4, &one, d, 4, d, 5, &one, d, 4),
              CUBLAS_STATUS_EXECUTION_FAILED);
    EXPECT_THAT(cudaemu_last_fault(), HasSubstr("matrix B"));
    EXPECT_THAT(cudaemu_last_fault(), HasSubstr("past the end"));
}

TEST_F(EmuBlas, CudaEmuSgeamInPlaceFollowsTheDocumentedRules) {
    float *c = device_array<float>(6);
    upload(c, std::vector<float>{1, 2, 3, 4, 5, 6});
    const float two = 2, zero = 0;
    // C = 2 C in place: C == A with op N and ldc == lda is allowed.
    ASSERT_EQ(cublasSgeam(h, CUBLAS_OP_N, CUBLAS_OP_N, 3, 2, &two, c, 3, &zero, c, 3, c, 3),
              CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(download(c, 6), (std::vector<float>{2, 4, 6, 8, 10, 12}));
    EXPECT_EQ(cublasSgeam(h, CUBLAS_OP_T, CUBLAS_OP_N, 2, 2, &two, c, 3, &zero, c, 3, c, 3),
              CUBLAS_STATUS_INVALID_VALUE); // in place with a transpose
    float *a = device_array<float>(6), *out = device_array<float>(6);
    upload(a, std::vector<float>{1, 2, 3, 4, 5, 6});
    // out (2 x 3) = 2 A^T, A being 3 x 2 with lda 3.
    ASSERT_EQ(cublasSgeam(h, CUBLAS_OP_T, CUBLAS_OP_N, 2, 3, &two, a, 3, &zero, out, 2, out, 2),
              CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(download(out, 6), (std::vector<float>{2, 8, 4, 10, 6, 12}));
    EXPECT_EQ(cublasSgeam(h, CUBLAS_OP_N, CUBLAS_OP_N, 3, 2, &two, a, 2, &zero, a, 3, out, 3),
              CUBLAS_STATUS_INVALID_VALUE); // lda < m
}

TEST_F(EmuBlas, CudaEmuGemmIsQueuedOnTheHandlesStream) {
    cudaemu_set_deferred(1);
    cudaStream_t s = nullptr;
    ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
    ASSERT_EQ(cublasSetStream(h, s), CUBLAS_STATUS_SUCCESS);
    float *a = device_array<float>(1), *c = device_array<float>(1);
    ASSERT_EQ(cudaMemcpyAsync(a, std::vector<float>{3}.data(), 4, cudaMemcpyHostToDevice, s),
              cudaSuccess);
    const float one = 1, zero = 0;
    ASSERT_EQ(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, a, 1, a, 1, &zero, c, 1),
              CUBLAS_STATUS_SUCCESS);
    float got = 0;
    ASSERT_EQ(cudaMemcpyAsync(&got, c, 4, cudaMemcpyDeviceToHost, s), cudaSuccess);
    EXPECT_TRUE(std::isnan(got)); // not run yet
    ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
    EXPECT_EQ(got, 9.0f);
    // The workspace must be device memory, and the math modes are cuBLAS's.
    float *ws = device_array<float>(1024);
    EXPECT_EQ(cublasSetWorkspace(h, ws, 4096), CUBLAS_STATUS_SUCCESS);
    std::vector<float> host(1024);
    EXPECT_EQ(cublasSetWorkspace(h, host.data(), 4096), CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_EQ(cublasSetWorkspace(h, ws, 8192), CUBLAS_STATUS_INVALID_VALUE); // past its end
    EXPECT_EQ(cublasSetMathMode(h, CUBLAS_TF32_TENSOR_OP_MATH), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cublasSetMathMode(h, (cublasMath_t)9), CUBLAS_STATUS_INVALID_VALUE);
    ASSERT_EQ(cublasSetStream(h, nullptr), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
}

} // namespace
