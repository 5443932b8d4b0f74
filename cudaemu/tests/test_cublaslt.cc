// cudaemu's cuBLASLt: every epilogue in fp32, TF32 and bf16 against a naive float64 reference
// (with its own roundings, not the emulator's), the ReLU mask as a bit mask at its leading
// dimension, the bias gradient from the unrounded values, the documented argument checks, the
// device-memory extents, the algorithms' alignments and workspace, and the queueing.
#include <gmock/gmock.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>

#include "cublasLt.h"
#include "emu_test.h"

using ::testing::HasSubstr;

namespace {

// ---- an independent reference: roundings by frexp/nearbyint, products in double ------------

// x rounded to `bits` significant bits, ties to even (the default rounding mode of nearbyint).
double round_bits(double x, int bits) {
    if (x == 0.0 || !std::isfinite(x)) return x;
    int e = 0;
    double f = std::frexp(x, &e);
    return std::ldexp(std::nearbyint(std::ldexp(f, bits)), e - bits);
}
double round_bf16(double x) {
    return round_bits(x, 8);
}
double round_tf32(double x) {
    return round_bits(x, 11);
}
// Half the spacing of bf16 values at x: the most a rounding to nearest may move it.
double half_ulp_bf16(double x) {
    if (x == 0.0) return std::ldexp(1.0, -134);
    int e = 0;
    std::frexp(x, &e);
    return std::ldexp(1.0, e - 9);
}

uint16_t bf16_bits(double x) { // x must be a bf16 value
    float f = (float)round_bf16(x);
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return (uint16_t)(u >> 16);
}
double from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

double ref_gelu(double x) {
    return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}
double ref_gelu_derivative(double x) {
    double c = std::sqrt(2.0 / M_PI), u = c * (x + 0.044715 * x * x * x), t = std::tanh(u);
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3.0 * 0.044715 * x * x);
}

std::vector<double> uniform(size_t n, double lo, double hi, unsigned seed) {
    std::mt19937 g(seed);
    std::uniform_real_distribution<double> d(lo, hi);
    std::vector<double> v(n);
    for (auto &x : v)
        x = (float)d(g);
    return v;
}

// ---- device matrices of either type ---------------------------------------------------------

struct Case;

class EmuLt : public Emu {
  protected:
    void SetUp() override {
        Emu::SetUp();
        ASSERT_EQ(cublasLtCreate(&h), CUBLAS_STATUS_SUCCESS);
    }
    void TearDown() override {
        cublasLtDestroy(h);
        Emu::TearDown();
    }
    // Fresh device memory (poisoned: 0xff bytes) holding v in type t (bf16: v's roundings).
    void *put(const std::vector<double> &v, cudaDataType_t t, size_t extra_bytes = 0) {
        size_t el = t == CUDA_R_16BF ? 2 : 4;
        void *d = nullptr;
        EXPECT_EQ(cudaMalloc(&d, v.size() * el + extra_bytes), cudaSuccess);
        if (t == CUDA_R_16BF) {
            std::vector<uint16_t> h(v.size());
            for (size_t i = 0; i < v.size(); ++i)
                h[i] = bf16_bits(v[i]);
            upload((uint16_t *)d, h);
        } else {
            std::vector<float> h(v.begin(), v.end());
            upload((float *)d, h);
        }
        return d;
    }
    std::vector<double> get(const void *d, size_t n, cudaDataType_t t) {
        std::vector<double> out(n);
        if (t == CUDA_R_16BF) {
            auto h = download((const uint16_t *)d, n);
            for (size_t i = 0; i < n; ++i)
                out[i] = from_bf16(h[i]);
        } else {
            auto h = download((const float *)d, n);
            for (size_t i = 0; i < n; ++i)
                out[i] = h[i];
        }
        return out;
    }
    // One call of the naive-reference sweep, checked element by element.
    void run_case(const Case &c);
    cublasLtHandle_t h = nullptr;
};

// Descriptors of one call, destroyed with it.
struct Call {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulPreference_t pref = nullptr;
    Call(cublasComputeType_t compute, cudaDataType_t ab, cudaDataType_t cd, int ta, int tb, int m,
         int n, int k, int lda, int ldb, int ldc) {
        EXPECT_EQ(cublasLtMatmulDescCreate(&desc, compute, CUDA_R_32F), CUBLAS_STATUS_SUCCESS);
        int32_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
        set(CUBLASLT_MATMUL_DESC_TRANSA, opa);
        set(CUBLASLT_MATMUL_DESC_TRANSB, opb);
        EXPECT_EQ(cublasLtMatrixLayoutCreate(&a, ab, ta ? k : m, ta ? m : k, lda),
                  CUBLAS_STATUS_SUCCESS);
        EXPECT_EQ(cublasLtMatrixLayoutCreate(&b, ab, tb ? n : k, tb ? k : n, ldb),
                  CUBLAS_STATUS_SUCCESS);
        EXPECT_EQ(cublasLtMatrixLayoutCreate(&c, cd, m, n, ldc), CUBLAS_STATUS_SUCCESS);
        EXPECT_EQ(cublasLtMatmulPreferenceCreate(&pref), CUBLAS_STATUS_SUCCESS);
        uint64_t ws = 1 << 20;
        EXPECT_EQ(cublasLtMatmulPreferenceSetAttribute(
                      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws),
                  CUBLAS_STATUS_SUCCESS);
    }
    ~Call() {
        cublasLtMatmulPreferenceDestroy(pref);
        cublasLtMatrixLayoutDestroy(a);
        cublasLtMatrixLayoutDestroy(b);
        cublasLtMatrixLayoutDestroy(c);
        cublasLtMatmulDescDestroy(desc);
    }
    template <typename T> cublasStatus_t set(cublasLtMatmulDescAttributes_t attr, T v) {
        return cublasLtMatmulDescSetAttribute(desc, attr, &v, sizeof v);
    }
    template <typename T> cublasStatus_t pref_set(cublasLtMatmulPreferenceAttributes_t attr, T v) {
        return cublasLtMatmulPreferenceSetAttribute(pref, attr, &v, sizeof v);
    }
    cublasStatus_t heuristic(cublasLtHandle_t h, cublasLtMatmulHeuristicResult_t *r, int *n,
                             int requested = 1) {
        return cublasLtMatmulAlgoGetHeuristic(h, desc, a, b, c, c, pref, requested, r, n);
    }
};

// ---- every epilogue in every mode -------------------------------------------------------------

struct Mode {
    const char *name;
    cublasComputeType_t compute;
    cudaDataType_t ab, cd;
};
const Mode kModes[] = {{"fp32", CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_32F},
                       {"tf32", CUBLAS_COMPUTE_32F_FAST_TF32, CUDA_R_32F, CUDA_R_32F},
                       {"bf16 to bf16", CUBLAS_COMPUTE_32F, CUDA_R_16BF, CUDA_R_16BF},
                       {"bf16 to fp32", CUBLAS_COMPUTE_32F, CUDA_R_16BF, CUDA_R_32F}};

struct Epi {
    cublasLtEpilogue_t e;
    int bias, relu, gelu, aux, backward, bgrad;
};
const Epi kEpilogues[] = {
    {CUBLASLT_EPILOGUE_DEFAULT, 0, 0, 0, 0, 0, 0},
    {CUBLASLT_EPILOGUE_BIAS, 1, 0, 0, 0, 0, 0},
    {CUBLASLT_EPILOGUE_RELU, 0, 1, 0, 0, 0, 0},
    {CUBLASLT_EPILOGUE_RELU_BIAS, 1, 1, 0, 0, 0, 0},
    {CUBLASLT_EPILOGUE_RELU_AUX, 0, 1, 0, 1, 0, 0},
    {CUBLASLT_EPILOGUE_RELU_AUX_BIAS, 1, 1, 0, 1, 0, 0},
    {CUBLASLT_EPILOGUE_GELU, 0, 0, 1, 0, 0, 0},
    {CUBLASLT_EPILOGUE_GELU_BIAS, 1, 0, 1, 0, 0, 0},
    {CUBLASLT_EPILOGUE_GELU_AUX, 0, 0, 1, 1, 0, 0},
    {CUBLASLT_EPILOGUE_GELU_AUX_BIAS, 1, 0, 1, 1, 0, 0},
    {CUBLASLT_EPILOGUE_DRELU, 0, 1, 0, 1, 1, 0},
    {CUBLASLT_EPILOGUE_DRELU_BGRAD, 0, 1, 0, 1, 1, 1},
    {CUBLASLT_EPILOGUE_DGELU, 0, 0, 1, 1, 1, 0},
    {CUBLASLT_EPILOGUE_DGELU_BGRAD, 0, 0, 1, 1, 1, 1},
};

struct Case {
    Mode mode;
    Epi epi;
    int ta, tb, m, n, k;
    float alpha, beta;
    bool in_place;            // D = C
    cudaDataType_t bias_type; // CUDA_R_32F, or D's type
    unsigned seed;
};

// Element (i, j) of op(X) for X stored column-major with leading dimension ld.
double op_at(const std::vector<double> &x, int ld, bool trans, int i, int j) {
    return trans ? x[(size_t)j + (size_t)i * ld] : x[(size_t)i + (size_t)j * ld];
}

void EmuLt::run_case(const Case &c) {
    const Mode &md = c.mode;
    const Epi &ep = c.epi;
    SCOPED_TRACE(::testing::Message()
                 << md.name << ", epilogue " << ep.e << ", ta " << c.ta << " tb " << c.tb << ", "
                 << c.m << "x" << c.n << "x" << c.k << ", alpha " << c.alpha << " beta " << c.beta
                 << (c.in_place ? ", in place" : ""));
    const int m = c.m, n = c.n, k = c.k;
    const int lda = (c.ta ? k : m) + 3, ldb = (c.tb ? n : k) + 1, ldc = m + 2;
    const bool d_bf16 = md.cd == CUDA_R_16BF, tf32 = md.compute == CUBLAS_COMPUTE_32F_FAST_TF32;
    auto A = uniform((size_t)lda * (c.ta ? m : k), -1, 1, c.seed);
    auto B = uniform((size_t)ldb * (c.tb ? k : n), -1, 1, c.seed + 1);
    auto C = uniform((size_t)ldc * n, -1, 1, c.seed + 2);
    auto bias = uniform(m, -0.5, 0.5, c.seed + 3);
    // The operands as the product sees them.
    auto seen = [&](std::vector<double> v, cudaDataType_t type) {
        for (auto &x : v)
            x = type == CUDA_R_16BF ? round_bf16(x) : tf32 ? round_tf32(x) : x;
        return v;
    };
    auto Ar = seen(A, md.ab), Br = seen(B, md.ab);
    auto Cr = d_bf16 ? seen(C, md.cd) : C;
    auto bias_r = c.bias_type == CUDA_R_16BF ? seen(bias, CUDA_R_16BF) : bias;

    Call call(md.compute, md.ab, md.cd, c.ta, c.tb, m, n, k, lda, ldb, ldc);
    void *dA = put(A, md.ab), *dB = put(B, md.ab), *dC = put(C, md.cd);
    void *dD = c.in_place ? dC : put(std::vector<double>((size_t)ldc * n, 7.0), md.cd);
    void *dbias = put(bias, c.bias_type);
    ASSERT_EQ(call.set(CUBLASLT_MATMUL_DESC_EPILOGUE, (uint32_t)ep.e), CUBLAS_STATUS_SUCCESS);
    if (ep.bias || ep.bgrad) {
        ASSERT_EQ(call.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, dbias), CUBLAS_STATUS_SUCCESS);
        ASSERT_EQ(call.set(CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, (int32_t)c.bias_type),
                  CUBLAS_STATUS_SUCCESS);
    }
    // The aux buffer: a ReLU bit mask (ld in bits, 128 more than needed) or GELU's input in D's
    // type. A backward epilogue reads one the test writes: random bits, or random z.
    const int64_t aux_ld = ep.relu ? 256 : 24;
    const size_t aux_bytes =
        ep.relu ? (size_t)aux_ld / 8 * n : (size_t)aux_ld * n * (d_bf16 ? 2 : 4);
    std::vector<unsigned char> mask_in(aux_bytes);
    std::vector<double> z_in((size_t)aux_ld * n);
    void *daux = nullptr;
    if (ep.aux) {
        std::mt19937 g(c.seed + 4);
        for (auto &byte : mask_in)
            byte = (unsigned char)g();
        z_in = uniform(z_in.size(), -3, 3, c.seed + 5);
        if (ep.relu) {
            EXPECT_EQ(cudaMalloc(&daux, aux_bytes), cudaSuccess); // poison: 0xff
            if (ep.backward) upload((unsigned char *)daux, mask_in);
        } else if (ep.backward) {
            daux = put(z_in, md.cd);
        } else {
            EXPECT_EQ(cudaMalloc(&daux, aux_bytes), cudaSuccess); // poison: the forward writes it
        }
        ASSERT_EQ(call.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, daux), CUBLAS_STATUS_SUCCESS);
        ASSERT_EQ(call.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, aux_ld), CUBLAS_STATUS_SUCCESS);
    }
    cublasLtMatmulHeuristicResult_t r[2];
    int found = 0;
    ASSERT_EQ(call.heuristic(h, r, &found, 2), CUBLAS_STATUS_SUCCESS);
    ASSERT_GE(found, 1);
    ASSERT_GT(r[0].workspaceSize, 0u);
    void *ws = nullptr;
    ASSERT_EQ(cudaMalloc(&ws, r[0].workspaceSize), cudaSuccess);
    ASSERT_EQ(cublasLtMatmul(h, call.desc, &c.alpha, dA, call.a, dB, call.b, &c.beta, dC, call.c,
                             dD, call.c, &r[0].algo, ws, r[0].workspaceSize, nullptr),
              CUBLAS_STATUS_SUCCESS)
        << cudaemu_last_fault();
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess) << cudaemu_last_fault();

    auto D = get(dD, (size_t)ldc * n, md.cd);
    auto bgrad = get(dbias, m, c.bias_type);
    std::vector<unsigned char> mask_out;
    std::vector<double> z_out;
    if (ep.aux && ep.relu) mask_out = download((const unsigned char *)daux, aux_bytes);
    if (ep.aux && ep.gelu) z_out = get(daux, z_in.size(), md.cd);
    std::vector<double> bg_ref(m, 0.0), bg_mag(m, 0.0);
    double worst = 0;
    for (int j = 0; j < n; ++j)
        for (int i = 0; i < ldc; ++i) {
            size_t q = (size_t)i + (size_t)j * ldc;
            if (i >= m) { // D's padding: never written
                double was = c.in_place ? (d_bf16 ? round_bf16(C[q]) : C[q]) : 7.0;
                EXPECT_EQ(D[q], was) << "padding of D at " << i << "," << j;
                continue;
            }
            double s = 0, mag = 0;
            for (int p = 0; p < k; ++p) {
                double term = op_at(Ar, lda, c.ta, i, p) * op_at(Br, ldb, c.tb, p, j);
                s += term;
                mag += std::fabs(term);
            }
            double v = c.alpha * s + c.beta * Cr[q];
            mag = std::fabs(c.alpha) * mag + std::fabs(c.beta * Cr[q]);
            size_t x = (size_t)j * aux_ld + i;
            double want;
            if (ep.backward) {
                double der;
                if (ep.relu) {
                    der = (mask_in[x / 8] >> (x % 8)) & 1;
                } else {
                    double z = d_bf16 ? round_bf16(z_in[x]) : z_in[x];
                    der = ref_gelu_derivative(z);
                }
                want = v * der;
                mag *= std::fabs(der) + 0.1; // der itself is an fp32 value, good to ~1e-7
                bg_ref[i] += want;
                bg_mag[i] += mag;
            } else {
                if (ep.bias) v += bias_r[i], mag += std::fabs(bias_r[i]);
                if (ep.aux && ep.relu) {
                    bool bit = (mask_out[x / 8] >> (x % 8)) & 1;
                    if (std::fabs(v) > 1e-5 * mag) {
                        EXPECT_EQ(bit, v > 0) << "mask bit " << i << "," << j;
                    }
                }
                if (ep.aux && ep.gelu) {
                    double tol = (d_bf16 ? half_ulp_bf16(v) : 0.0) + 1e-5 * mag;
                    EXPECT_NEAR(z_out[x], v, tol) << "saved GELU input " << i << "," << j;
                }
                want = ep.relu ? (v < 0 ? 0 : v) : ep.gelu ? ref_gelu(v) : v;
                mag *= ep.gelu ? 1.2 : 1.0;
            }
            // One rounding to bf16 (at most half a bf16 spacing) on top of the fp32 sums: a
            // truncation, or a second rounding, moves about half the elements further.
            double tol = (d_bf16 ? half_ulp_bf16(want) : 0.0) + 2e-6 * (mag + 1e-3);
            EXPECT_NEAR(D[q], want, tol) << "D at " << i << "," << j;
            worst = std::max(worst, std::fabs(D[q] - want));
        }
    if (ep.aux && ep.relu && !ep.backward) {
        // The mask owns m bits of every aux_ld: the rest stays as it was (0xff poison).
        for (int j = 0; j < n; ++j)
            for (int64_t i = m; i < aux_ld; ++i) {
                size_t x = (size_t)j * aux_ld + i;
                EXPECT_EQ((mask_out[x / 8] >> (x % 8)) & 1, 1) << "padding bit " << i << "," << j;
            }
    }
    if (ep.bgrad) {
        // fp32 (or bf16) sums of n unrounded fp32 terms; a sum of the rounded D would be off by
        // about sqrt(n) 2^-10 of a term.
        for (int i = 0; i < m; ++i) {
            double tol = (c.bias_type == CUDA_R_16BF ? half_ulp_bf16(bg_ref[i]) : 0.0) +
                         2e-6 * (bg_mag[i] + 1e-3);
            EXPECT_NEAR(bgrad[i], bg_ref[i], tol) << "bias gradient " << i;
        }
    } else {
        auto bias_now = get(dbias, m, c.bias_type);
        for (int i = 0; i < m; ++i)
            EXPECT_EQ(bias_now[i], bias_r[i]) << "the bias is read, never written";
    }
    cudaFree(dA), cudaFree(dB), cudaFree(dC), cudaFree(dbias), cudaFree(ws);
    if (!c.in_place) cudaFree(dD);
    if (daux) cudaFree(daux);
}

TEST_F(EmuLt, CudaEmuLtEveryEpilogueInEveryModeMatchesANaiveReference) {
    unsigned seed = 100;
    int cases = 0;
    for (const Mode &md : kModes)
        for (const Epi &ep : kEpilogues)
            for (int ta = 0; ta < 2; ++ta)
                for (int tb = 0; tb < 2; ++tb) {
                    bool plain = ta == tb; // alpha 1, beta 0 as a layer runs it; else scaled
                    Case c{md,
                           ep,
                           ta,
                           tb,
                           19,
                           23,
                           37,
                           plain ? 1.0f : 0.75f,
                           plain ? 0.0f : -0.5f,
                           ta == 1 && tb == 0,
                           md.cd == CUDA_R_16BF && ta ? CUDA_R_16BF : CUDA_R_32F,
                           seed += 10};
                    run_case(c);
                    ++cases;
                    if (HasFatalFailure()) return;
                }
    EXPECT_EQ(cases, 4 * 14 * 4);
}

// ---- the roundings, exactly ---------------------------------------------------------------------

TEST_F(EmuLt, CudaEmuLtTf32RoundsOperandsToNearestEven) {
    // k = 1: D = a * 1. The TF32 spacing at 1 is 2^-10.
    const double u = std::ldexp(1.0, -10);
    const std::vector<double> a = {1 + u / 4,     // below half: down
                                   1 + u / 2,     // a tie, 1 is even: down
                                   1 + 3 * u / 2, // a tie, 1 + u is odd: up to 1 + 2u
                                   1 + 3 * u / 4, // above half: up
                                   -(1 + 3 * u / 4)};
    const std::vector<double> want = {1, 1, 1 + 2 * u, 1 + u, -(1 + u)};
    for (cublasComputeType_t compute : {CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_COMPUTE_32F}) {
        int n = (int)a.size();
        Call call(compute, CUDA_R_32F, CUDA_R_32F, 0, 0, 1, n, 1, 1, 1, 1);
        void *dA = put({1.0}, CUDA_R_32F), *dB = put(a, CUDA_R_32F);
        void *dD = put(std::vector<double>(n, 0.0), CUDA_R_32F);
        const float one = 1, zero = 0;
        ASSERT_EQ(cublasLtMatmul(h, call.desc, &one, dA, call.a, dB, call.b, &zero, dD, call.c, dD,
                                 call.c, nullptr, nullptr, 0, nullptr),
                  CUBLAS_STATUS_SUCCESS);
        auto got = get(dD, n, CUDA_R_32F);
        for (int i = 0; i < n; ++i)
            EXPECT_EQ(got[i], compute == CUBLAS_COMPUTE_32F ? a[i] : want[i])
                << compute << " " << i;
    }
}

TEST_F(EmuLt, CudaEmuLtBf16OutputRoundsToNearestEven) {
    // D = 0 x 0 + bias: the fp32 bias, rounded once into a bf16 D. The bf16 spacing at 1 is 2^-7.
    const double u = std::ldexp(1.0, -7);
    const std::vector<double> bias = {1 + u / 2,    1 + 3 * u / 2, 1 + u / 2 + std::ldexp(1, -20),
                                      -(1 + u / 4), FLT_MAX,       1 + u * 0.999};
    const std::vector<double> want = {1, 1 + 2 * u, 1 + u, -1, INFINITY, 1 + u};
    int m = (int)bias.size();
    Call call(CUBLAS_COMPUTE_32F, CUDA_R_16BF, CUDA_R_16BF, 0, 0, m, 1, 1, m, 1, m);
    void *dA = put(std::vector<double>(m, 0.0), CUDA_R_16BF), *dB = put({0.0}, CUDA_R_16BF);
    void *dD = put(std::vector<double>(m, 0.0), CUDA_R_16BF), *db = put(bias, CUDA_R_32F);
    ASSERT_EQ(call.set(CUBLASLT_MATMUL_DESC_EPILOGUE, (uint32_t)CUBLASLT_EPILOGUE_BIAS),
              CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(call.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, db), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(call.set(CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, (int32_t)CUDA_R_32F),
              CUBLAS_STATUS_SUCCESS);
    const float one = 1, zero = 0;
    ASSERT_EQ(cublasLtMatmul(h, call.desc, &one, dA, call.a, dB, call.b, &zero, dD, call.c, dD,
                             call.c, nullptr, nullptr, 0, nullptr),
              CUBLAS_STATUS_SUCCESS);
    auto got = get(dD, m, CUDA_R_16BF);
    for (int i = 0; i < m; ++i)
        EXPECT_EQ(got[i], want[i]) << i;
}

// ---- the argument checks
// --------------------------------------------------------------------------

class EmuLtChecks : public EmuLt {
  protected:
    // A 4 x 4 x 4 fp32 problem with its buffers and an algorithm from the heuristic.
    void SetUp() override {
        EmuLt::SetUp();
        call = std::make_unique<Call>(CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_32F, 0, 0, 4, 4, 4, 4,
                                      4, 4);
        a = device_array<float>(64), b = device_array<float>(64), d = device_array<float>(64);
        bias = device_array<float>(16), aux = device_array<float>(256);
        ws = device_array<char>(1 << 20);
        upload(a, std::vector<float>(64, 1.0f));
        upload(b, std::vector<float>(64, 1.0f));
    }
    void TearDown() override {
        call.reset();
        EmuLt::TearDown();
    }
    cublasStatus_t heuristic(cublasLtMatmulHeuristicResult_t *r) {
        int found = 0;
        cublasStatus_t st = call->heuristic(h, r, &found);
        if (st == CUBLAS_STATUS_SUCCESS && found != 1) return CUBLAS_STATUS_INTERNAL_ERROR;
        return st;
    }
    cublasStatus_t matmul(const cublasLtMatmulAlgo_t *algo, size_t ws_bytes, const void *A,
                          const void *B, void *D) {
        return cublasLtMatmul(h, call->desc, &one, A, call->a, B, call->b, &zero, D, call->c, D,
                              call->c, algo, ws, ws_bytes, nullptr);
    }
    cublasStatus_t matmul_with_new_algo() {
        cublasLtMatmulHeuristicResult_t r;
        cublasStatus_t st = heuristic(&r);
        return st != CUBLAS_STATUS_SUCCESS ? st : matmul(&r.algo, r.workspaceSize, a, b, d);
    }
    void epilogue(cublasLtEpilogue_t e) {
        ASSERT_EQ(call->set(CUBLASLT_MATMUL_DESC_EPILOGUE, (uint32_t)e), CUBLAS_STATUS_SUCCESS);
    }
    std::unique_ptr<Call> call;
    float *a, *b, *d, *bias, *aux;
    char *ws;
    const float one = 1, zero = 0;
};

TEST_F(EmuLtChecks, CudaEmuLtHandlesAndDescriptorsAsDocumented) {
    cublasLtMatmulHeuristicResult_t r;
    ASSERT_EQ(heuristic(&r), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(matmul(&r.algo, r.workspaceSize, a, b, d), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(download(d, 16), std::vector<float>(16, 4.0f));
    EXPECT_EQ(cublasLtMatmul(nullptr, call->desc, &one, a, call->a, b, call->b, &zero, d, call->c,
                             d, call->c, &r.algo, ws, r.workspaceSize, nullptr),
              CUBLAS_STATUS_NOT_INITIALIZED);
    cublasLtHandle_t gone = nullptr;
    ASSERT_EQ(cublasLtCreate(&gone), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(cublasLtDestroy(gone), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cublasLtDestroy(gone), CUBLAS_STATUS_NOT_INITIALIZED);
    int found = 0;
    EXPECT_EQ(call->heuristic(gone, &r, &found), CUBLAS_STATUS_NOT_INITIALIZED);
    EXPECT_EQ(call->heuristic(h, &r, &found, 0), CUBLAS_STATUS_INVALID_VALUE); // requested 0
    EXPECT_EQ(cublasLtMatmul(h, call->desc, nullptr, a, call->a, b, call->b, &zero, d, call->c, d,
                             call->c, &r.algo, ws, r.workspaceSize, nullptr),
              CUBLAS_STATUS_INVALID_VALUE); // no alpha
    // Attributes: exactly their size, from a buffer; unknown ones refused; sizes readable.
    int64_t wide = CUBLAS_OP_T;
    EXPECT_EQ(cublasLtMatmulDescSetAttribute(call->desc, CUBLASLT_MATMUL_DESC_TRANSA, &wide, 8),
              CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_EQ(cublasLtMatmulDescSetAttribute(call->desc, CUBLASLT_MATMUL_DESC_TRANSA, nullptr, 4),
              CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_EQ(
        cublasLtMatmulDescSetAttribute(call->desc, (cublasLtMatmulDescAttributes_t)999, &wide, 4),
        CUBLAS_STATUS_INVALID_VALUE);
    uint32_t rows32 = 4;
    EXPECT_EQ(cublasLtMatrixLayoutSetAttribute(call->a, CUBLASLT_MATRIX_LAYOUT_ROWS, &rows32, 4),
              CUBLAS_STATUS_INVALID_VALUE); // ROWS is uint64_t
    size_t size = 0;
    EXPECT_EQ(cublasLtMatmulDescGetAttribute(call->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD,
                                             nullptr, 0, &size),
              CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(size, 8u);
    uint32_t epi = 0;
    EXPECT_EQ(cublasLtMatmulDescGetAttribute(call->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi,
                                             sizeof epi, &size),
              CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(epi, (uint32_t)CUBLASLT_EPILOGUE_DEFAULT);
    EXPECT_EQ(cublasLtMatmulDescDestroy(call->desc), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(heuristic(&r), CUBLAS_STATUS_INVALID_VALUE); // a destroyed descriptor
    call->desc = nullptr;
    // cuBLASLt's values, as the toolkit defines them.
    EXPECT_EQ((int)CUBLASLT_EPILOGUE_DRELU_BGRAD, 152);
    EXPECT_EQ((int)CUBLASLT_EPILOGUE_GELU_AUX_BIAS, 164);
    EXPECT_EQ((int)CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, 26);
    EXPECT_EQ((int)CUBLAS_COMPUTE_32F_FAST_TF32, 77);
    EXPECT_EQ((int)CUDA_R_16BF, 14);
    EXPECT_STREQ(cublasLtGetStatusName(CUBLAS_STATUS_NOT_SUPPORTED), "CUBLAS_STATUS_NOT_SUPPORTED");
}

TEST_F(EmuLtChecks, CudaEmuLtRefusesTypesAndEpiloguesItDoesNotOffer) {
    auto with_types = [&](cublasComputeType_t compute, cudaDataType_t ta, cudaDataType_t tb,
                          cudaDataType_t tc) {
        Call c(compute, ta, tc, 0, 0, 4, 4, 4, 4, 4, 4);
        int32_t t = tb;
        EXPECT_EQ(cublasLtMatrixLayoutSetAttribute(c.b, CUBLASLT_MATRIX_LAYOUT_TYPE, &t, 4),
                  CUBLAS_STATUS_SUCCESS);
        cublasLtMatmulHeuristicResult_t r;
        int found = 0;
        return c.heuristic(h, &r, &found);
    };
    const auto F32 = CUDA_R_32F, BF = CUDA_R_16BF;
    EXPECT_EQ(with_types(CUBLAS_COMPUTE_32F, F32, F32, F32), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(with_types(CUBLAS_COMPUTE_32F, BF, BF, F32), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(with_types(CUBLAS_COMPUTE_32F, BF, BF, BF), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(with_types(CUBLAS_COMPUTE_32F, F32, BF, F32), CUBLAS_STATUS_NOT_SUPPORTED);
    EXPECT_EQ(with_types(CUBLAS_COMPUTE_32F, F32, F32, BF), CUBLAS_STATUS_NOT_SUPPORTED);
    EXPECT_EQ(with_types(CUBLAS_COMPUTE_32F_FAST_TF32, BF, BF, BF), CUBLAS_STATUS_NOT_SUPPORTED);
    EXPECT_EQ(with_types(CUBLAS_COMPUTE_16F, F32, F32, F32), CUBLAS_STATUS_NOT_SUPPORTED);
    EXPECT_EQ(with_types(CUBLAS_COMPUTE_32F, CUDA_R_16F, CUDA_R_16F, CUDA_R_16F),
              CUBLAS_STATUS_NOT_SUPPORTED);
    cublasLtMatmulHeuristicResult_t r;
    epilogue(CUBLASLT_EPILOGUE_BGRADA);
    EXPECT_EQ(heuristic(&r), CUBLAS_STATUS_NOT_SUPPORTED);
    epilogue((cublasLtEpilogue_t)12345);
    EXPECT_EQ(heuristic(&r), CUBLAS_STATUS_INVALID_VALUE);
    epilogue(CUBLASLT_EPILOGUE_BIAS);
    EXPECT_EQ(call->set(CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, (int32_t)CUDA_R_16BF),
              CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(heuristic(&r), CUBLAS_STATUS_NOT_SUPPORTED); // a bf16 bias with an fp32 D
    EXPECT_EQ(call->set(CUBLASLT_MATMUL_DESC_SCALE_TYPE, (int32_t)CUDA_R_16BF),
              CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(heuristic(&r), CUBLAS_STATUS_NOT_SUPPORTED);
    int32_t bad_op = 7;
    EXPECT_EQ(call->set(CUBLASLT_MATMUL_DESC_TRANSA, bad_op), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(matmul(&r.algo, 0, a, b, d), CUBLAS_STATUS_NOT_SUPPORTED); // the scale type first
}

TEST_F(EmuLtChecks, CudaEmuLtChecksShapesLeadingDimensionsAndTheEpiloguesPointers) {
    cublasLtMatmulHeuristicResult_t r;
    // A leading dimension smaller than the rows.
    int64_t ld = 3;
    ASSERT_EQ(cublasLtMatrixLayoutSetAttribute(call->a, CUBLASLT_MATRIX_LAYOUT_LD, &ld, 8),
              CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(heuristic(&r), CUBLAS_STATUS_INVALID_VALUE);
    ld = 4;
    ASSERT_EQ(cublasLtMatrixLayoutSetAttribute(call->a, CUBLASLT_MATRIX_LAYOUT_LD, &ld, 8),
              CUBLAS_STATUS_SUCCESS);
    // Shapes that do not multiply: B with 5 rows.
    uint64_t rows = 5;
    ASSERT_EQ(cublasLtMatrixLayoutSetAttribute(call->b, CUBLASLT_MATRIX_LAYOUT_ROWS, &rows, 8),
              CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(heuristic(&r), CUBLAS_STATUS_INVALID_VALUE);
    rows = 4;
    ASSERT_EQ(cublasLtMatrixLayoutSetAttribute(call->b, CUBLASLT_MATRIX_LAYOUT_ROWS, &rows, 8),
              CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(heuristic(&r), CUBLAS_STATUS_SUCCESS);

    // A bias epilogue without a bias; with one it runs.
    epilogue(CUBLASLT_EPILOGUE_BIAS);
    EXPECT_EQ(matmul_with_new_algo(), CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_THAT(cudaemu_last_fault(), HasSubstr("BIAS_POINTER is NULL"));
    ASSERT_EQ(call->set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, (void *)bias), CUBLAS_STATUS_SUCCESS);
    upload(bias, std::vector<float>(16, 0.5f));
    EXPECT_EQ(matmul_with_new_algo(), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(download(d, 16), std::vector<float>(16, 4.5f));
    // The backward epilogue needs its bias-gradient pointer too (set) and its aux.
    epilogue(CUBLASLT_EPILOGUE_DRELU_BGRAD);
    int64_t aux_ld = 128;
    ASSERT_EQ(call->set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, aux_ld), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(matmul_with_new_algo(), CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_THAT(cudaemu_last_fault(), HasSubstr("EPILOGUE_AUX_POINTER is NULL"));
    ASSERT_EQ(call->set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, (void *)aux),
              CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(matmul_with_new_algo(), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(call->set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, (void *)nullptr), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(matmul_with_new_algo(), CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_THAT(cudaemu_last_fault(), HasSubstr("bias gradient"));
    ASSERT_EQ(call->set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, (void *)bias), CUBLAS_STATUS_SUCCESS);
    // The aux leading dimension: ReLU's in bits, a multiple of 128; GELU's a multiple of 8.
    for (int64_t bad : {int64_t(0), int64_t(64), int64_t(130)}) {
        ASSERT_EQ(call->set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, bad), CUBLAS_STATUS_SUCCESS);
        EXPECT_EQ(matmul_with_new_algo(), CUBLAS_STATUS_INVALID_VALUE) << bad;
    }
    epilogue(CUBLASLT_EPILOGUE_GELU_AUX_BIAS);
    for (int64_t bad : {int64_t(4), int64_t(12), int64_t(128 + 4)}) {
        ASSERT_EQ(call->set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, bad), CUBLAS_STATUS_SUCCESS);
        EXPECT_EQ(matmul_with_new_algo(), CUBLAS_STATUS_INVALID_VALUE) << bad;
    }
    aux_ld = 16;
    ASSERT_EQ(call->set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, aux_ld), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(matmul_with_new_algo(), CUBLAS_STATUS_SUCCESS);
    // In place needs C's layout to be D's.
    epilogue(CUBLASLT_EPILOGUE_DEFAULT);
    cublasLtMatrixLayout_t wide_c = nullptr;
    ASSERT_EQ(cublasLtMatrixLayoutCreate(&wide_c, CUDA_R_32F, 4, 4, 8), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(heuristic(&r), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cublasLtMatmul(h, call->desc, &one, a, call->a, b, call->b, &one, d, wide_c, d,
                             call->c, &r.algo, ws, r.workspaceSize, nullptr),
              CUBLAS_STATUS_INVALID_VALUE);
    cublasLtMatrixLayoutDestroy(wide_c);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

TEST_F(EmuLtChecks, CudaEmuLtChecksTheWorkspaceAndTheAlgorithmRecord) {
    cublasLtMatmulHeuristicResult_t r;
    // The workspace the heuristic asks for stays within the preference's maximum.
    for (uint64_t max : {uint64_t(0), uint64_t(4096), uint64_t(64) << 20}) {
        ASSERT_EQ(call->pref_set(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, max),
                  CUBLAS_STATUS_SUCCESS);
        ASSERT_EQ(heuristic(&r), CUBLAS_STATUS_SUCCESS);
        EXPECT_EQ(r.workspaceSize, max == 0 ? 0u : max == 4096 ? 4096u : size_t(1) << 20);
    }
    ASSERT_GT(r.workspaceSize, 0u);
    EXPECT_EQ(matmul(&r.algo, r.workspaceSize - 1, a, b, d), CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_EQ(cublasLtMatmul(h, call->desc, &one, a, call->a, b, call->b, &zero, d, call->c, d,
                             call->c, &r.algo, nullptr, r.workspaceSize, nullptr),
              CUBLAS_STATUS_INVALID_VALUE); // no workspace
    // The algorithm uses its workspace: every byte of it is overwritten.
    ASSERT_EQ(cudaMemset(ws, 0, r.workspaceSize), cudaSuccess);
    ASSERT_EQ(matmul(&r.algo, r.workspaceSize, a, b, d), CUBLAS_STATUS_SUCCESS);
    auto scratch = download(ws, r.workspaceSize);
    EXPECT_EQ(std::count(scratch.begin(), scratch.end(), (char)0), 0);
    // A record the heuristic did not write, or wrote for another problem.
    cublasLtMatmulAlgo_t junk;
    std::memset(&junk, 0x5a, sizeof junk);
    EXPECT_EQ(matmul(&junk, r.workspaceSize, a, b, d), CUBLAS_STATUS_INVALID_VALUE);
    epilogue(CUBLASLT_EPILOGUE_RELU);
    EXPECT_EQ(matmul(&r.algo, r.workspaceSize, a, b, d), CUBLAS_STATUS_INVALID_VALUE);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

TEST_F(EmuLtChecks, CudaEmuLtAlgorithmsNeedTheAlignmentTheyWereChosenFor) {
    cublasLtMatmulHeuristicResult_t r[2];
    int found = 0;
    // Default preference (256-byte pointers), 16-byte columns: both algorithms, best first.
    ASSERT_EQ(call->heuristic(h, r, &found, 2), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(found, 2);
    float *a4 = a + 1; // 4-byte aligned; still 16 floats of the 64 after it
    EXPECT_EQ(matmul(&r[0].algo, r[0].workspaceSize, a4, b, d), CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_THAT(cudaemu_last_fault(), HasSubstr("A is 4-byte aligned, the algorithm needs 16"));
    EXPECT_EQ(matmul(&r[1].algo, r[1].workspaceSize, a4, b, d), CUBLAS_STATUS_SUCCESS);
    // Told A may be only 4-byte aligned, the heuristic offers the element-wise one only.
    ASSERT_EQ(call->pref_set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, uint32_t(4)),
              CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(call->heuristic(h, r, &found, 2), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(found, 1);
    EXPECT_EQ(matmul(&r[0].algo, r[0].workspaceSize, a4, b, d), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(download(d, 16), std::vector<float>(16, 4.0f));
    // 2 bytes is less than an fp32 element: no algorithm at all.
    ASSERT_EQ(call->pref_set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, uint32_t(2)),
              CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(call->heuristic(h, r, &found, 2), CUBLAS_STATUS_NOT_SUPPORTED);
    EXPECT_EQ(found, 0);
    ASSERT_EQ(call->pref_set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, uint32_t(256)),
              CUBLAS_STATUS_SUCCESS);
    // The heuristic reads the bias pointer's alignment from the descriptor.
    epilogue(CUBLASLT_EPILOGUE_BIAS);
    ASSERT_EQ(call->set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, (void *)(bias + 1)),
              CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(call->heuristic(h, r, &found, 2), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(found, 1);
    // Columns 20 bytes apart (ld 5) are not 16-byte columns either.
    epilogue(CUBLASLT_EPILOGUE_DEFAULT);
    int64_t ld = 5;
    ASSERT_EQ(cublasLtMatrixLayoutSetAttribute(call->a, CUBLASLT_MATRIX_LAYOUT_LD, &ld, 8),
              CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(call->heuristic(h, r, &found, 2), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(found, 1);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

// ---- what the work touches --------------------------------------------------------------------

TEST_F(EmuLtChecks, CudaEmuLtMatricesOutsideDeviceMemoryAreAFault) {
    cublasLtMatmulHeuristicResult_t r;
    ASSERT_EQ(heuristic(&r), CUBLAS_STATUS_SUCCESS);
    auto expect_fault = [&](cublasStatus_t st, const char *what, cudaError_t err) {
        EXPECT_EQ(st, CUBLAS_STATUS_EXECUTION_FAILED) << what;
        EXPECT_THAT(cudaemu_last_fault(), HasSubstr(what));
        EXPECT_EQ(cudaDeviceSynchronize(), err) << what; // sticky, as a GPU fault is
        TearDown();                                      // resets the device
        SetUp();
        ASSERT_EQ(heuristic(&r), CUBLAS_STATUS_SUCCESS);
    };
    std::vector<float> host(64, 1.0f);
    expect_fault(matmul(&r.algo, r.workspaceSize, host.data(), b, d),
                 "A: ", cudaErrorIllegalAddress);
    // B spans (cols - 1) ld + rows = 3 x 21 + 4 = 67 floats of a 64-float allocation.
    int64_t ld = 21;
    ASSERT_EQ(cublasLtMatrixLayoutSetAttribute(call->b, CUBLASLT_MATRIX_LAYOUT_LD, &ld, 8),
              CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(heuristic(&r), CUBLAS_STATUS_SUCCESS);
    expect_fault(matmul(&r.algo, r.workspaceSize, a, b, d), "B: ", cudaErrorIllegalAddress);
    // The workspace, the bias and the aux buffer over their whole extents.
    float *small = device_array<float>(4);
    expect_fault(cublasLtMatmul(h, call->desc, &one, a, call->a, b, call->b, &zero, d, call->c, d,
                                call->c, &r.algo, small, r.workspaceSize, nullptr),
                 "the workspace", cudaErrorIllegalAddress);
    epilogue(CUBLASLT_EPILOGUE_RELU_AUX_BIAS);
    small = device_array<float>(1);
    ASSERT_EQ(call->set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, (void *)small), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(call->set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, (void *)aux),
              CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(call->set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, int64_t(128)), CUBLAS_STATUS_SUCCESS);
    expect_fault(matmul_with_new_algo(), "the bias", cudaErrorIllegalAddress);
    epilogue(CUBLASLT_EPILOGUE_RELU_AUX_BIAS);
    ASSERT_EQ(call->set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, (void *)bias), CUBLAS_STATUS_SUCCESS);
    char *mask = device_array<char>(16 * 3 + 1); // 4 columns of 128 bits need 3 x 16 + 1 bytes
    ASSERT_EQ(call->set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, (void *)mask),
              CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(call->set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, int64_t(128)), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(matmul_with_new_algo(), CUBLAS_STATUS_SUCCESS) << cudaemu_last_fault();
    ASSERT_EQ(call->set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, int64_t(256)), CUBLAS_STATUS_SUCCESS);
    expect_fault(matmul_with_new_algo(), "aux", cudaErrorIllegalAddress);
    // D may not overlap what the call reads.
    expect_fault(matmul(&r.algo, r.workspaceSize, a, b, a + 8), "overlaps A",
                 cudaErrorLaunchFailure);
}

TEST_F(EmuLtChecks, CudaEmuLtWithBetaZeroNeverReadsC) {
    // d is fresh (NaN); C = D in place with beta 0, and a separate NULL C.
    cublasLtMatmulHeuristicResult_t r;
    ASSERT_EQ(heuristic(&r), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(matmul(&r.algo, r.workspaceSize, a, b, d), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(download(d, 16), std::vector<float>(16, 4.0f));
    float *d2 = device_array<float>(16);
    EXPECT_EQ(cublasLtMatmul(h, call->desc, &one, a, call->a, b, call->b, &zero, nullptr, call->c,
                             d2, call->c, &r.algo, ws, r.workspaceSize, nullptr),
              CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(download(d2, 16), std::vector<float>(16, 4.0f));
    EXPECT_EQ(cublasLtMatmul(h, call->desc, &one, a, call->a, b, call->b, &one, nullptr, call->c,
                             d2, call->c, &r.algo, ws, r.workspaceSize, nullptr),
              CUBLAS_STATUS_INVALID_VALUE); // beta 1 reads C
}

TEST_F(EmuLtChecks, CudaEmuLtIsQueuedOnItsStreamWithTheDescriptorsOfTheCall) {
    cudaemu_set_deferred(1);
    cudaStream_t s = nullptr;
    ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
    epilogue(CUBLASLT_EPILOGUE_BIAS);
    upload(bias, std::vector<float>(16, 1.0f));
    ASSERT_EQ(call->set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, (void *)bias), CUBLAS_STATUS_SUCCESS);
    cublasLtMatmulHeuristicResult_t r;
    ASSERT_EQ(heuristic(&r), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(cublasLtMatmul(h, call->desc, &one, a, call->a, b, call->b, &zero, d, call->c, d,
                             call->c, &r.algo, ws, r.workspaceSize, s),
              CUBLAS_STATUS_SUCCESS);
    // Changed after the call: the queued work keeps what the call described.
    ASSERT_EQ(call->set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, (void *)nullptr), CUBLAS_STATUS_SUCCESS);
    uint64_t rows = 2;
    ASSERT_EQ(cublasLtMatrixLayoutSetAttribute(call->c, CUBLASLT_MATRIX_LAYOUT_ROWS, &rows, 8),
              CUBLAS_STATUS_SUCCESS);
    std::vector<float> got(16, 0.0f);
    ASSERT_EQ(cudaMemcpyAsync(got.data(), d, 64, cudaMemcpyDeviceToHost, s), cudaSuccess);
    EXPECT_TRUE(std::isnan(got[0])); // not run yet
    ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
    EXPECT_EQ(got, std::vector<float>(16, 5.0f));
    EXPECT_EQ(cublasLtMatmul(h, call->desc, &one, a, call->a, b, call->b, &zero, d, call->c, d,
                             call->c, nullptr, nullptr, 0, s),
              CUBLAS_STATUS_INVALID_VALUE); // the shapes now disagree (C has 2 rows)
    rows = 4;
    ASSERT_EQ(cublasLtMatrixLayoutSetAttribute(call->c, CUBLASLT_MATRIX_LAYOUT_ROWS, &rows, 8),
              CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(call->set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, (void *)bias), CUBLAS_STATUS_SUCCESS);
    int bogus = 0;
    EXPECT_EQ(cublasLtMatmul(h, call->desc, &one, a, call->a, b, call->b, &zero, d, call->c, d,
                             call->c, nullptr, nullptr, 0, (cudaStream_t)&bogus),
              CUBLAS_STATUS_EXECUTION_FAILED); // not a stream
    EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
}

} // namespace
