// The variants of the emulated device (CUDAEMU_VARIANT, cudaemu/README.md "Variants"): where a
// GPU is free to differ from the CPU within what CUDA and cuBLAS document, each variant takes
// another of the allowed choices, so a test that holds the two backends to a tolerance finds
// out whether the tolerance covers them. Variant 0 is the default: CBLAS's order, TF32 rounded
// to nearest even, the host's libm, every epilogue offered.
#ifndef CUDAEMU_VARIANT_H
#define CUDAEMU_VARIANT_H

#include <cstdint>
#include <string>

namespace cudaemu {

int variant(); // 0..3

// C = alpha op(A) op(B) + beta C, column-major (cuBLAS's semantics; beta 0 never reads C), in
// the variant's summation order: CBLAS's in variant 0.
void variant_sgemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *A,
                   int lda, const float *B, int ldb, float beta, float *C, int ldc);

// An fp32 operand as the tensor cores take it under CUBLAS_COMPUTE_32F_FAST_TF32.
float variant_tf32(float x);

// tanh as cuBLASLt's GELU epilogue computes it.
float variant_epilogue_tanh(float u);

// Whether cuBLASLt's heuristic refuses a problem: "" when it offers algorithms, else the
// reason, with *how one of 'u' (CUBLAS_STATUS_NOT_SUPPORTED), 'i' (CUBLAS_STATUS_INVALID_VALUE)
// or 'e' (success with an empty list). epilogue is cuBLASLt's name of it ("DRELU_BGRAD").
// CUDAEMU_LT_REFUSE ("how:NAME[@fp32|@tf32|@bf16],..."; how: unsupported, invalid, empty;
// NAME an epilogue or ALL), read at each call, overrides the variant's own list.
std::string variant_refusal(const char *epilogue, bool ab_bf16, bool tf32, char *how);

// The alignment (bytes) the element-wise algorithm needs of a bf16 matrix and of its column
// stride: 2 (its element) in variant 0, 16 where the variant is stricter.
uint32_t variant_bf16_alignment();

} // namespace cudaemu

#endif
