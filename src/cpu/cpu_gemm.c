/* The plain fp32 GEMM through the build's engine (oneDNN's sgemm, or CBLAS), the widening GEMM
 * of the tf32 mode (and of bf16 where no bf16 products run), and gemm_ex's dispatch: to the
 * oneDNN plans (cpu_dnnl.c) in a oneDNN build, else to the widening GEMM. */
#include <stdio.h>

#if BP_HAVE_ONEDNN
#include <dnnl.h>
#else
#include <cblas.h>
#endif

#include "core/error.h"
#include "cpu/cpu_internal.h"
#include "kernels/bp_math.h"

/* C = beta * C for an empty inner dimension. OpenBLAS rejects lda = 0 there (printing to stderr),
 * and beta = 0 must not read C, which may be uninitialised. */
static void scale_c(int m, int n, float beta, float *c, int ldc) {
    for (int i = 0; i < m; ++i) {
        float *row = c + (size_t)i * (size_t)ldc;
        for (int j = 0; j < n; ++j)
            row[j] = beta == 0.0f ? 0.0f : beta * row[j];
    }
}

#if !BP_HAVE_ONEDNN && BP_OPENBLAS_PTHREADS
/* OpenBLAS's pthreads build keeps its own thread count (the OpenMP build reads the caller's). */
void openblas_set_num_threads(int num_threads);
#endif

void bp_cpu_sgemm(bp_device *device, int trans_a, int trans_b, int m, int n, int k, float alpha,
                  const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc) {
#if BP_HAVE_ONEDNN
    bp_dnnl_sgemm(device, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#else
    int threads = bp_cpu_gemm_threads(device, 2.0 * m * n * k);
    int prev = bp_cpu_threads_enter(threads);
#if BP_OPENBLAS_PTHREADS
    openblas_set_num_threads(threads);
#endif
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    bp_cpu_threads_leave(prev);
#endif
}

bp_status bp_cpu_gemm(bp_device *device, int trans_a, int trans_b, int m, int n, int k, float alpha,
                      const float *a, int lda, const float *b, int ldb, float beta, float *c,
                      int ldc) {
    if (m < 0 || n < 0 || k < 0)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "cpu gemm: negative size m=%d n=%d k=%d", m, n, k);
    if (m == 0 || n == 0) return BP_OK;
    if (k == 0) {
        scale_c(m, n, beta, c, ldc);
        return BP_OK;
    }
    bp_cpu_sgemm(device, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return BP_OK;
}

/* ---- the widening GEMM ---------------------------------------------------------------------
 *
 * The product of the rounded operands, accumulated in fp32: each operand is expanded block by
 * block into fp32 scratch (bf16 widened exactly, fp32 rounded to TF32), and sgemm multiplies
 * the blocks. So the CPU runs on exactly the values the GPU's tensor cores see, and the
 * scratch does not grow with the batch: GEMM_BM x GEMM_BK of A and GEMM_BK x n of B. Blocks
 * over k add into C in fp32, as a split-k GEMM does; their order is fixed, so the result is
 * deterministic. */
#define GEMM_BM 256
#define GEMM_BK 256

static int min_int(int a, int b) {
    return a < b ? a : b;
}

static int needs_expansion(const bp_gemm_desc *g) {
    return g->ab_type != BP_EL_F32 || g->tf32;
}

size_t bp_cpu_gemm_widen_scratch(const bp_gemm_desc *g) {
    if (!needs_expansion(g) || g->m <= 0 || g->n <= 0 || g->k <= 0) return 0;
    size_t bm = (size_t)min_int(g->m, GEMM_BM), bk = (size_t)min_int(g->k, GEMM_BK);
    return (bm * bk + bk * (size_t)g->n) * sizeof(float);
}

/* dst [rows, cols] = the operand's block at (r0, c0) of its stored [., ld] matrix, as fp32. */
static void expand(int nt, const bp_gemm_desc *g, const void *src, int ld, int r0, int c0, int rows,
                   int cols, float *dst) {
    int bf16 = g->ab_type == BP_EL_BF16, tf32 = g->tf32;
#pragma omp parallel for schedule(static) num_threads(nt) if (bp_cpu_parallel(rows, cols))
    for (int i = 0; i < rows; ++i) {
        size_t s = (size_t)(r0 + i) * (size_t)ld + (size_t)c0;
        float *out = dst + (size_t)i * (size_t)cols;
        if (bf16) {
            const uint16_t *in = (const uint16_t *)src + s;
            for (int j = 0; j < cols; ++j)
                out[j] = bp_bf16_to_f32(in[j]);
        } else {
            const float *in = (const float *)src + s;
            for (int j = 0; j < cols; ++j)
                out[j] = tf32 ? bp_round_tf32(in[j]) : in[j];
        }
    }
}

static bp_status check_ex(const bp_gemm_desc *g) {
    if (!BP_HAVE_ONEDNN && g->epilogue != BP_EPI_NONE)
        return bp_error(BP_ERR_UNSUPPORTED,
                        "cpu gemm_ex: epilogue %d is not fused on the CPU (the core composes it)",
                        (int)g->epilogue);
    if (!BP_HAVE_ONEDNN && g->c_type != BP_EL_F32)
        return bp_error(BP_ERR_UNSUPPORTED, "cpu gemm_ex: the output must be fp32 on the CPU");
    if (g->m < 0 || g->n < 0 || g->k < 0)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "cpu gemm_ex: negative size m=%d n=%d k=%d", g->m,
                        g->n, g->k);
    size_t need = bp_cpu_gemm_scratch(g);
    if (need && !g->scratch)
        return bp_error(BP_ERR_INVALID_ARGUMENT,
                        "cpu gemm_ex: scratch is NULL, this GEMM needs %zu bytes of it", need);
    return BP_OK;
}

size_t bp_cpu_gemm_scratch(const bp_gemm_desc *g) {
#if BP_HAVE_ONEDNN
    return bp_dnnl_gemm_scratch(g);
#else
    return bp_cpu_gemm_widen_scratch(g);
#endif
}

/* fp32 output, no epilogue; operands widened when the mode needs it. */
bp_status bp_cpu_gemm_widen(bp_device *device, const bp_gemm_desc *g) {
    if (!needs_expansion(g))
        return bp_cpu_gemm(device, g->trans_a, g->trans_b, g->m, g->n, g->k, g->alpha,
                           (const float *)g->a, g->lda, (const float *)g->b, g->ldb, g->beta,
                           (float *)g->c, g->ldc);
    if (g->m == 0 || g->n == 0) return BP_OK;
    float *c = (float *)g->c;
    if (g->k == 0) {
        scale_c(g->m, g->n, g->beta, c, g->ldc);
        return BP_OK;
    }
    int nt = bp_cpu_threads(device);
    int bm_max = min_int(g->m, GEMM_BM), n = g->n;
    float *as = (float *)g->scratch, *bs = as + (size_t)bm_max * (size_t)min_int(g->k, GEMM_BK);
    for (int k0 = 0; k0 < g->k; k0 += GEMM_BK) {
        int kb = min_int(GEMM_BK, g->k - k0);
        /* op(B) rows k0..k0+kb: stored [k, n] (rows k0..) or, transposed, [n, k] (columns k0..) */
        if (g->trans_b)
            expand(nt, g, g->b, g->ldb, 0, k0, n, kb, bs);
        else
            expand(nt, g, g->b, g->ldb, k0, 0, kb, n, bs);
        float beta = k0 == 0 ? g->beta : 1.0f;
        for (int m0 = 0; m0 < g->m; m0 += GEMM_BM) {
            int mb = min_int(GEMM_BM, g->m - m0);
            if (g->trans_a)
                expand(nt, g, g->a, g->lda, k0, m0, kb, mb, as);
            else
                expand(nt, g, g->a, g->lda, m0, k0, mb, kb, as);
            bp_cpu_sgemm(device, g->trans_a, g->trans_b, mb, n, kb, g->alpha, as,
                         g->trans_a ? mb : kb, bs, g->trans_b ? kb : n, beta,
                         c + (size_t)m0 * (size_t)g->ldc, g->ldc);
        }
    }
    return BP_OK;
}

bp_status bp_cpu_gemm_ex(bp_device *device, const bp_gemm_desc *g, void *plan) {
    bp_status st = check_ex(g);
    if (st != BP_OK) return st;
    if (g->m == 0 || g->n == 0) return BP_OK;
    if (g->k == 0 && g->epilogue == BP_EPI_NONE && g->c_type == BP_EL_F32) {
        scale_c(g->m, g->n, g->beta, (float *)g->c, g->ldc);
        return BP_OK;
    }
#if BP_HAVE_ONEDNN
    return bp_dnnl_gemm_ex(device, g, plan);
#else
    (void)plan;
    return bp_cpu_gemm_widen(device, g);
#endif
}
