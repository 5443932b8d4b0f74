// The variants (variant.h, README.md "Variants"). Each one is a choice CUDA and cuBLAS leave to
// the GPU and its libraries, never one they rule out:
//   - the order of a GEMM's sums (cuBLAS documents none; split-K algorithms sum slices of k
//     apart and reduce them in a separate pass, tensor cores sum blocks of k);
//   - how an fp32 operand becomes TF32 (not documented: truncation, round-half-away or to
//     nearest even);
//   - the last ulp of expf, logf, log1pf, tanhf, erff (the CUDA C++ Programming Guide bounds
//     them by 2, 1, 1, 2 and 2 ulp; here one ulp at most, the other faithful rounding);
//   - the tanh of the GELU epilogue (PTX's tanh.approx.f32: relative error up to 2^-10.987);
//   - which epilogues, types and alignments cuBLASLt's heuristic offers algorithms for, and how
//     it says no (NOT_SUPPORTED, INVALID_VALUE, or success with no algorithm).
#include "variant.h"

#include <cblas.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "cudaemu.h"
#include "cudaemu_math.h"

namespace cudaemu {
namespace {

std::atomic<int> g_variant{-1}; // -1: CUDAEMU_VARIANT not read yet

enum class Order { Blas, SplitK, Blocked, Reversed };

Order order_of(int v) {
    switch (v) {
    case 1:
        return Order::SplitK;
    case 2:
        return Order::Blocked;
    case 3:
        return Order::Reversed;
    }
    return Order::Blas;
}

constexpr int kSplits = 4; // split-K: slices of k summed apart, then reduced
constexpr int kBlock = 8;  // blocked: k in blocks, each summed as a tree, then accumulated
constexpr float kTanhApprox = 1.0f / 2048.0f; // 2^-11 < tanh.approx.f32's 2^-10.987

// One dot product of x and y (contiguous, n long) in the order o, with fused multiply-adds.
float dot(Order o, const float *x, const float *y, int n) {
    if (o == Order::Reversed) {
        float s = 0.0f;
        for (int p = n - 1; p >= 0; --p)
            s = std::fma(x[p], y[p], s);
        return s;
    }
    if (o == Order::SplitK) {
        float part[kSplits] = {0.0f, 0.0f, 0.0f, 0.0f};
        int slice = (n + kSplits - 1) / kSplits;
        for (int s = 0; s < kSplits; ++s)
            for (int p = s * slice; p < n && p < (s + 1) * slice; ++p)
                part[s] = std::fma(x[p], y[p], part[s]);
        float s = part[0]; // the reduction pass, over the partial sums in the workspace
        for (int i = 1; i < kSplits; ++i)
            s += part[i];
        return s;
    }
    float s = 0.0f; // blocked
    for (int p0 = 0; p0 < n; p0 += kBlock) {
        float b[kBlock] = {0.0f};
        int w = n - p0 < kBlock ? n - p0 : kBlock;
        for (int i = 0; i < w; ++i)
            b[i] = x[p0 + i] * y[p0 + i];
        for (int step = 1; step < kBlock; step *= 2)
            for (int i = 0; i + step < kBlock; i += 2 * step)
                b[i] += b[i + step];
        s += b[0];
    }
    return s;
}

// The value nearest to exact t that is not its round-to-nearest: the other faithful rounding,
// less than one ulp from t. t itself when it is exact in fp32 or too close to one to tell.
float far_rounding(double t) {
    float r = (float)t;
    if (!std::isfinite(r) || r == 0.0f || std::fabs(t - (double)r) < std::fabs(t) * 0x1p-40)
        return r;
    float f = std::nextafter(r, t > (double)r ? INFINITY : -INFINITY);
    return std::isfinite(f) ? f : r;
}

// Whether the variant moves the result for input x (variant 2: only for odd bit patterns).
bool perturbs(float x) {
    int v = variant();
    if (v == 0) return false;
    if (v != 2) return true;
    uint32_t u;
    std::memcpy(&u, &x, sizeof u);
    return (u & 1u) != 0;
}

// "how:NAME[@types],NAME..." from CUDAEMU_LT_REFUSE, else the variant's own.
const char *refusals() {
    const char *env = std::getenv("CUDAEMU_LT_REFUSE");
    if (env) return env;
    switch (variant()) {
    case 1: // the backward epilogues refused at plain fp32 compute, NOT_SUPPORTED
        return "unsupported:DRELU_BGRAD@fp32,DGELU_BGRAD@fp32";
    case 2: // the forward activation epilogues: success with no algorithm
        return "empty:RELU_AUX_BIAS,GELU_AUX_BIAS";
    case 3: // the bias epilogue, and the fp32 bias beside bf16 operands: INVALID_VALUE
        return "invalid:BIAS,RELU_AUX_BIAS@bf16,GELU_AUX_BIAS@bf16,DRELU_BGRAD@bf16,"
               "DGELU_BGRAD@bf16";
    }
    return "";
}

} // namespace

int variant() {
    int v = g_variant.load(std::memory_order_relaxed);
    if (v >= 0) return v;
    const char *s = std::getenv("CUDAEMU_VARIANT");
    v = s && *s ? std::atoi(s) : 0;
    if (v < 0 || v > 3) v = 0;
    g_variant.store(v, std::memory_order_relaxed);
    return v;
}

void variant_sgemm(bool ta, bool tb, int m, int n, int k, float alpha, const float *A, int lda,
                   const float *B, int ldb, float beta, float *C, int ldc) {
    Order o = order_of(variant());
    if (o == Order::Blas) {
        cblas_sgemm(CblasColMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    // Rows of op(A) and columns of op(B), each contiguous over k.
    std::vector<float> a((size_t)m * k), b((size_t)n * k);
    for (int i = 0; i < m; ++i)
        for (int p = 0; p < k; ++p)
            a[(size_t)i * k + p] = ta ? A[(size_t)i * lda + p] : A[(size_t)p * lda + i];
    for (int j = 0; j < n; ++j)
        for (int p = 0; p < k; ++p)
            b[(size_t)j * k + p] = tb ? B[(size_t)p * ldb + j] : B[(size_t)j * ldb + p];
    for (int j = 0; j < n; ++j)
        for (int i = 0; i < m; ++i) {
            float v = alpha * dot(o, &a[(size_t)i * k], &b[(size_t)j * k], k);
            float &c = C[(size_t)j * ldc + i];
            c = beta == 0.0f ? v : v + beta * c;
        }
}

float variant_tf32(float x) {
    uint32_t u;
    std::memcpy(&u, &x, sizeof u);
    if ((u & 0x7f800000u) == 0x7f800000u) { // inf stays, NaN stays NaN
        if (u & 0x007fffffu) u |= 0x00400000u;
        std::memcpy(&x, &u, sizeof u);
        return x;
    }
    switch (variant()) {
    case 1: // truncation
        break;
    case 2: // round half away from zero
        u += 0x1000u;
        break;
    default: // nearest even, as bp_round_tf32
        u += 0x0fffu + ((u >> 13) & 1u);
    }
    u &= 0xffffe000u;
    std::memcpy(&x, &u, sizeof u);
    return x;
}

float variant_epilogue_tanh(float u) {
    float t = std::tanh(u);
    int v = variant();
    if (v != 1 && v != 3) return t;
    // tanh.approx's error, one sign per variant, never past +-1.
    float e = t * (1.0f + (v == 1 ? kTanhApprox : -kTanhApprox));
    return e > 1.0f ? 1.0f : (e < -1.0f ? -1.0f : e);
}

std::string variant_refusal(const char *epilogue, bool ab_bf16, bool tf32, char *how) {
    std::string list = refusals();
    size_t colon = list.find(':');
    if (colon == std::string::npos) return "";
    std::string kind = list.substr(0, colon);
    *how = kind == "invalid" ? 'i' : kind == "empty" ? 'e' : 'u';
    size_t pos = colon + 1;
    while (pos <= list.size()) {
        size_t end = list.find(',', pos);
        if (end == std::string::npos) end = list.size();
        std::string item = list.substr(pos, end - pos), types;
        size_t at = item.find('@');
        if (at != std::string::npos) types = item.substr(at + 1), item.resize(at);
        bool match = item == epilogue || item == "ALL";
        if (types == "fp32") match = match && !ab_bf16 && !tf32;
        if (types == "tf32") match = match && tf32;
        if (types == "bf16") match = match && ab_bf16;
        if (match)
            return std::string("epilogue ") + epilogue + (types.empty() ? "" : " with " + types) +
                   " refused (" + list + ")";
        pos = end + 1;
    }
    return "";
}

uint32_t variant_bf16_alignment() {
    const char *env = std::getenv("CUDAEMU_LT_BF16_ALIGN");
    if (env && *env) return (uint32_t)std::atoi(env);
    return variant() == 2 ? 16 : 2;
}

} // namespace cudaemu

using cudaemu::far_rounding;
using cudaemu::perturbs;

extern "C" {

void cudaemu_set_variant(int v) {
    cudaemu::g_variant.store(v >= 0 && v <= 3 ? v : 0, std::memory_order_relaxed);
}

int cudaemu_variant(void) {
    return cudaemu::variant();
}

float cudaemu_expf(float x) {
    return perturbs(x) ? far_rounding(std::exp((double)x)) : (expf)(x);
}
float cudaemu_logf(float x) {
    return perturbs(x) && x > 0.0f ? far_rounding(std::log((double)x)) : (logf)(x);
}
float cudaemu_log1pf(float x) {
    return perturbs(x) && x > -1.0f ? far_rounding(std::log1p((double)x)) : (log1pf)(x);
}
float cudaemu_tanhf(float x) {
    return perturbs(x) ? far_rounding(std::tanh((double)x)) : (tanhf)(x);
}
float cudaemu_erff(float x) {
    return perturbs(x) ? far_rounding(std::erf((double)x)) : (erff)(x);
}

} // extern "C"
