/* GEMM on row-major data through cuBLAS, which is column-major. */
#include "cuda/cuda_internal.h"

/* The vtable asks for C[m,n] = alpha op(A) op(B) + beta C with every matrix row-major.
 *
 * A row-major matrix X of r rows stored with row stride ld is, read column-major with leading
 * dimension ld, the matrix X^T (c x r). So the memory of C, read by cuBLAS, is C^T [n, m], and
 *
 *     C^T = (op(A) op(B))^T = op(B)^T op(A)^T.
 *
 * cuBLAS reads B's memory as B_s^T (B_s: B as stored) and A's as A_s^T. For op(B)^T:
 *   trans_b = 0: op(B) = B_s [k, n], op(B)^T = B_s^T, which is B's memory read as is: CUBLAS_OP_N,
 *                an n x k column-major matrix with leading dimension ldb (>= n, the row length);
 *   trans_b = 1: op(B) = B_s^T (B_s is [n, k]), op(B)^T = B_s = (B's memory read)^T: CUBLAS_OP_T.
 * The same holds for A. Hence one column-major call with the operands swapped:
 *
 *     cublasSgemm(opB, opA, n, m, k, alpha, B, ldb, A, lda, beta, C, ldc)
 *
 * where cuBLAS's "m, n" are our n, m and the leading dimensions are the row strides unchanged. */
static cublasOperation_t op_of(int trans) {
    return trans ? CUBLAS_OP_T : CUBLAS_OP_N;
}

/* An empty inner dimension leaves C = beta C, done here rather than left to cuBLAS's k = 0
 * path: beta = 0 writes zeros without reading C (it may hold NaN), beta = 1 does nothing, other
 * betas scale C in place with geam (C = beta C + 0 C; in place is allowed for op N with
 * ldc = lda = ldb). Row-major C [m, n] is column-major [n, m] with leading dimension ldc. */
static bp_status scale_c(bp_device *device, int m, int n, float beta, float *c, int ldc) {
    bp_cuda_impl *impl = bp_cuda_impl_of(device);
    if (beta == 1.0f) return BP_OK;
    if (beta == 0.0f) {
        size_t pitch = (size_t)ldc * sizeof(float), width = (size_t)n * sizeof(float);
        bp_cu_note_launch();
        BP_CUDA_TRY(device, cudaMemset2DAsync(c, pitch, 0, width, (size_t)m, impl->stream),
                    "gemm with k = 0: cudaMemset2DAsync(%d rows of %zu bytes, pitch %zu)", m, width,
                    pitch);
        return BP_OK;
    }
    const float zero = 0.0f;
    bp_cu_note_launch();
    BP_CUBLAS_TRY(device,
                  cublasSgeam(impl->blas, CUBLAS_OP_N, CUBLAS_OP_N, n, m, &beta, c, ldc, &zero, c,
                              ldc, c, ldc),
                  "gemm with k = 0: cublasSgeam(N, N, %d, %d, ldc=%d) scaling C by %g", n, m, ldc,
                  (double)beta);
    return BP_OK;
}

bp_status bp_cuda_gemm(bp_device *device, int trans_a, int trans_b, int m, int n, int k,
                       float alpha, const float *a, int lda, const float *b, int ldb, float beta,
                       float *c, int ldc) {
    if (m == 0 || n == 0) return BP_OK;
    BP_CUDA_ENTER(device);
    if (k == 0) return scale_c(device, m, n, beta, c, ldc);
    bp_cuda_impl *impl = bp_cuda_impl_of(device);
    bp_cu_note_launch();
    BP_CUBLAS_TRY(device,
                  cublasSgemm(impl->blas, op_of(trans_b), op_of(trans_a), n, m, k, &alpha, b, ldb,
                              a, lda, &beta, c, ldc),
                  "cublasSgemm(%c, %c, %d, %d, %d, lda=%d, ldb=%d, ldc=%d) for row-major "
                  "gemm(trans_a=%d, trans_b=%d, m=%d, n=%d, k=%d)",
                  trans_b ? 'T' : 'N', trans_a ? 'T' : 'N', n, m, k, ldb, lda, ldc, trans_a,
                  trans_b, m, n, k);
    return BP_OK;
}
