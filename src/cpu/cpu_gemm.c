/* GEMM through CBLAS (OpenBLAS). */
#include <cblas.h>

#include "core/error.h"
#include "cpu/cpu_internal.h"

/* C = beta * C for an empty inner dimension. OpenBLAS rejects lda = 0 there (printing to stderr),
 * and beta = 0 must not read C, which may be uninitialised. */
static void scale_c(int m, int n, float beta, float *c, int ldc) {
    for (int i = 0; i < m; ++i) {
        float *row = c + (size_t)i * (size_t)ldc;
        for (int j = 0; j < n; ++j)
            row[j] = beta == 0.0f ? 0.0f : beta * row[j];
    }
}

bp_status bp_cpu_gemm(bp_device *device, int trans_a, int trans_b, int m, int n, int k, float alpha,
                      const float *a, int lda, const float *b, int ldb, float beta, float *c,
                      int ldc) {
    (void)device;
    if (m < 0 || n < 0 || k < 0)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "cpu gemm: negative size m=%d n=%d k=%d", m, n, k);
    if (m == 0 || n == 0) return BP_OK;
    if (k == 0) {
        scale_c(m, n, beta, c, ldc);
        return BP_OK;
    }
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return BP_OK;
}
