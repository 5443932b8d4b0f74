// The emulated device's variants (CUDAEMU_VARIANT, cudaemu/README.md "Variants") are real: under
// each, what it changes (a GEMM's summation order, the TF32 rounding, the last ulp of expf and
// its kin, the GELU epilogue's tanh, what cuBLASLt's heuristic offers) gives other bits than the
// CPU's arithmetic, within the bounds CUDA documents; under variant 0 it gives the same. Built
// with -DBP_CUDA=EMU only, linked to cudaemu directly (its controls set the variant in-process).
#include <gtest/gtest.h>

#include <cblas.h>
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudaemu.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/bp_math.h"

namespace {

std::vector<float> random_floats(size_t n, unsigned seed) {
    std::mt19937 gen(seed);
    std::uniform_real_distribution<float> d(-1.0f, 1.0f);
    std::vector<float> v(n);
    for (float &x : v)
        x = d(gen);
    return v;
}

bool same_bits(const std::vector<float> &a, const std::vector<float> &b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// One ulp of x in fp32.
double ulp(float x) {
    return std::nextafter(std::fabs(x), INFINITY) - std::fabs(x);
}

class EmuVariant : public ::testing::TestWithParam<int> {
  protected:
    void SetUp() override {
        ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
        cudaemu_set_variant(GetParam());
    }
    void TearDown() override {
        cudaemu_set_variant(0);
        cudaDeviceReset();
    }
    float *device(const std::vector<float> &h) {
        void *p = nullptr;
        EXPECT_EQ(cudaMalloc(&p, h.size() * sizeof(float)), cudaSuccess);
        EXPECT_EQ(cudaMemcpy(p, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice),
                  cudaSuccess);
        ptrs.push_back(p);
        return (float *)p;
    }
    std::vector<float> host(const float *d, size_t n) {
        std::vector<float> h(n);
        EXPECT_EQ(cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
        return h;
    }
    ~EmuVariant() override {
        for (void *p : ptrs)
            cudaFree(p);
    }
    std::vector<void *> ptrs;
};

// cublasSgemm against CBLAS's sgemm, the CPU's order: other bits under a variant (its own
// order), the same under variant 0; always within the k u sum|a||b| bound of any order.
TEST_P(EmuVariant, GemmSumsInTheVariantsOrder) {
    const int m = 24, n = 16, k = 300;
    std::vector<float> a = random_floats((size_t)m * k, 1), b = random_floats((size_t)k * n, 2);
    std::vector<float> cpu((size_t)m * n, 0.0f);
    cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a.data(), m, b.data(), k,
                0.0f, cpu.data(), m);
    cublasHandle_t h;
    ASSERT_EQ(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
    float *da = device(a), *db = device(b), *dc = device(cpu);
    const float one = 1.0f, zero = 0.0f;
    ASSERT_EQ(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, da, m, db, k, &zero, dc, m),
              CUBLAS_STATUS_SUCCESS);
    std::vector<float> emu = host(dc, cpu.size());
    cublasDestroy(h);
    EXPECT_EQ(GetParam() == 0, same_bits(emu, cpu)) << "variant " << GetParam();
    for (int j = 0; j < n; ++j)
        for (int i = 0; i < m; ++i) {
            double bound = 0.0;
            for (int p = 0; p < k; ++p)
                bound += std::fabs((double)a[(size_t)p * m + i] * b[(size_t)j * k + p]);
            bound *= 2.0 * k * std::ldexp(1.0, -24);
            ASSERT_LE(std::fabs((double)emu[(size_t)j * m + i] - cpu[(size_t)j * m + i]), bound);
        }
}

// expf, logf, tanhf, erff on the device against the host's: other bits for some inputs under a
// variant, within the CUDA C++ Programming Guide's bounds (2, 1, 2, 2 ulp; the host's libm is
// held to the same).
TEST_P(EmuVariant, MathFunctionsWithinTheirUlpBounds) {
    std::vector<float> x = random_floats(1000, 3);
    int differ = 0;
    for (float v : x) {
        float dev[4] = {cudaemu_expf(v), cudaemu_logf(v + 1.5f), cudaemu_tanhf(v), cudaemu_erff(v)};
        float cpu[4] = {(expf)(v), (logf)(v + 1.5f), (tanhf)(v), (erff)(v)};
        double exact[4] = {std::exp((double)v), std::log((double)(v + 1.5f)), std::tanh((double)v),
                           std::erf((double)v)};
        const double bound[4] = {2.0, 1.0, 2.0, 2.0};
        for (int f = 0; f < 4; ++f) {
            differ += dev[f] != cpu[f];
            ASSERT_LE(std::fabs(dev[f] - exact[f]), bound[f] * ulp(dev[f]))
                << "function " << f << " at " << v;
        }
    }
    if (GetParam() == 0)
        EXPECT_EQ(differ, 0);
    else
        EXPECT_GT(differ, 100);
}

// A FAST_TF32 matmul of one term (k = 1: the product of two TF32 values is exact in fp32) shows
// the operands' rounding: bp_round_tf32's nearest even in variants 0 and 3, truncation in 1,
// half away from zero in 2. Every other value is a tie (its 13 dropped bits 0x1000).
TEST_P(EmuVariant, Tf32RoundingIsTheVariants) {
    const int n = 64;
    std::vector<float> a = random_floats(n, 4), b(1, 1.0f), d(n, 0.0f);
    for (int i = 0; i < n; i += 2)
        a[i] = bp_f32_from_bits((bp_f32_bits(a[i]) & ~0x1fffu) | 0x1000u);
    cublasLtHandle_t lt;
    ASSERT_EQ(cublasLtCreate(&lt), CUBLAS_STATUS_SUCCESS);
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, ld;
    ASSERT_EQ(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F_FAST_TF32, CUDA_R_32F),
              CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(cublasLtMatrixLayoutCreate(&la, CUDA_R_32F, n, 1, n), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(cublasLtMatrixLayoutCreate(&lb, CUDA_R_32F, 1, 1, 1), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(cublasLtMatrixLayoutCreate(&ld, CUDA_R_32F, n, 1, n), CUBLAS_STATUS_SUCCESS);
    float *da = device(a), *db = device(b), *dd = device(d);
    const float one = 1.0f, zero = 0.0f;
    ASSERT_EQ(cublasLtMatmul(lt, desc, &one, da, la, db, lb, &zero, dd, ld, dd, ld, nullptr,
                             nullptr, 0, nullptr),
              CUBLAS_STATUS_SUCCESS);
    std::vector<float> emu = host(dd, n), cpu(n), trunc(n);
    for (int i = 0; i < n; ++i) {
        cpu[i] = bp_round_tf32(a[i]);
        uint32_t u = bp_f32_bits(a[i]);
        trunc[i] = bp_f32_from_bits(u & 0xffffe000u);
        ASSERT_LE(std::fabs(emu[i] - a[i]), std::ldexp(std::fabs(a[i]), -10)) << i;
    }
    bool nearest = GetParam() == 0 || GetParam() == 3;
    EXPECT_EQ(nearest, same_bits(emu, cpu));
    EXPECT_EQ(GetParam() == 1, same_bits(emu, trunc));
    cublasLtMatrixLayoutDestroy(la);
    cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatrixLayoutDestroy(ld);
    cublasLtMatmulDescDestroy(desc);
    cublasLtDestroy(lt);
}

// What the heuristic answers for one epilogue and types: its status and how many algorithms.
struct Answer {
    cublasStatus_t status;
    int found;
};

Answer ask(cublasLtEpilogue_t epilogue, cudaDataType_t ab, cudaDataType_t cd, int64_t ld,
           void *bias, void *aux) {
    cublasLtHandle_t lt;
    cublasLtCreate(&lt);
    cublasLtMatmulDesc_t desc;
    cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    uint32_t e = epilogue;
    cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &e, sizeof e);
    int32_t bias_type = CUDA_R_32F;
    cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type,
                                   sizeof bias_type);
    cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias);
    cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux,
                                   sizeof aux);
    int64_t aux_ld = 128;
    cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &aux_ld,
                                   sizeof aux_ld);
    cublasLtMatrixLayout_t la, lc;
    cublasLtMatrixLayoutCreate(&la, ab, ld, 32, ld);
    cublasLtMatrixLayoutCreate(&lc, cd, ld, 32, ld);
    cublasLtMatmulPreference_t pref;
    cublasLtMatmulPreferenceCreate(&pref);
    uint64_t ws = 1 << 20;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                         sizeof ws);
    cublasLtMatmulHeuristicResult_t r;
    Answer out{CUBLAS_STATUS_SUCCESS, 0};
    cublasLtMatrixLayout_t lb;
    cublasLtMatrixLayoutCreate(&lb, ab, 32, 32, 32);
    out.status = cublasLtMatmulAlgoGetHeuristic(lt, desc, la, lb, lc, lc, pref, 1, &r, &out.found);
    cublasLtMatrixLayoutDestroy(la);
    cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatrixLayoutDestroy(lc);
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatmulDescDestroy(desc);
    cublasLtDestroy(lt);
    return out;
}

// Each variant's refusals (the others offer an algorithm for the same problem).
TEST_P(EmuVariant, TheHeuristicRefusesWhatTheVariantRefuses) {
    int v = GetParam();
    void *bias = device(std::vector<float>(256)), *aux = device(std::vector<float>(4096));
    Answer drelu = ask(CUBLASLT_EPILOGUE_DRELU_BGRAD, CUDA_R_32F, CUDA_R_32F, 32, bias, aux);
    EXPECT_EQ(drelu.status, v == 1 ? CUBLAS_STATUS_NOT_SUPPORTED : CUBLAS_STATUS_SUCCESS);
    Answer relu = ask(CUBLASLT_EPILOGUE_RELU_AUX_BIAS, CUDA_R_32F, CUDA_R_32F, 32, bias, aux);
    EXPECT_EQ(relu.status, CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(relu.found == 0, v == 2);
    Answer plain_bias = ask(CUBLASLT_EPILOGUE_BIAS, CUDA_R_32F, CUDA_R_32F, 32, bias, aux);
    EXPECT_EQ(plain_bias.status, v == 3 ? CUBLAS_STATUS_INVALID_VALUE : CUBLAS_STATUS_SUCCESS);
    // A bf16 GEMM with columns 20 bytes apart (ld 10): 16-byte columns in variant 2.
    Answer bf16 = ask(CUBLASLT_EPILOGUE_DEFAULT, CUDA_R_16BF, CUDA_R_16BF, 10, bias, aux);
    EXPECT_EQ(bf16.status, v == 2 ? CUBLAS_STATUS_NOT_SUPPORTED : CUBLAS_STATUS_SUCCESS);
}

INSTANTIATE_TEST_SUITE_P(Variants, EmuVariant, ::testing::Values(0, 1, 2, 3),
                         [](const ::testing::TestParamInfo<int> &i) {
                             return "variant" + std::to_string(i.param);
                         });

} // namespace
