/* The CPU backend's entries, one file per concern; cpu_backend.c gathers them into bp_cpu_ops. */
#ifndef BP_CPU_INTERNAL_H
#define BP_CPU_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "core/backend.h"
#include "kernels/bp_math.h"

#ifndef BP_HAVE_ONEDNN
#define BP_HAVE_ONEDNN 0

#endif

/* The CPU device's state (device->impl). */
typedef struct bp_cpu_state {
    int threads;  /* every thread team, matrix engine and BLAS call of this device */
    void *engine; /* the matrix engine's state (cpu_dnnl.c); NULL in a CBLAS build */
} bp_cpu_state;

/* The device's thread count (1 for a device without CPU state). */
static inline int bp_cpu_threads(const bp_device *device) {
    const bp_cpu_state *s = device ? (const bp_cpu_state *)device->impl : NULL;
    return s ? s->threads : 1;
}

/* A product of fewer FLOPs than this runs on one thread: a thread team's wake-up and barrier
 * cost more than they save there, and far more when another process holds one of the cores
 * (the team then waits for a thread the scheduler has put aside, for milliseconds). */
#define BP_CPU_GEMM_PAR_FLOPS 8.0e6

/* The matrix engine and BLAS take their thread count from the calling thread's OpenMP setting
 * (Debian's OpenBLAS OpenMP build and oneDNN both read omp_get_max_threads(); oneDNN when a
 * primitive is made): it is set to the device's count for a product of `flops` (1 below
 * BP_CPU_GEMM_PAR_FLOPS) and put back after, so the caller's own setting is untouched. */
int bp_cpu_gemm_threads(const bp_device *device, double flops);
int bp_cpu_threads_enter(int threads);
void bp_cpu_threads_leave(int previous);

/* The default thread count (cpu_threads.c): see there. */
int bp_cpu_default_threads(void);

/* Loops over fewer elements than this run on one thread. Element-wise work is a small share of
 * a step, and an OpenMP team that wakes for it keeps spinning afterwards on the cores the BLAS
 * threads need for the next GEMM: at 32768 elements a 784-512-256-10 step ran 4x slower than
 * on one thread (2 cores, OpenBLAS pthreads). */
#define BP_CPU_PAR_MIN ((size_t)1 << 20)

/* Whether a rows x cols loop is worth a thread team. */
static inline int bp_cpu_parallel(int rows, int cols) {
    return rows > 0 && cols > 0 && (size_t)rows * (size_t)cols >= BP_CPU_PAR_MIN;
}

/* Row maximum, for the stable softmax; cols >= 1. A NaN in x[0] carries through to the result,
 * so a NaN row stays NaN as in PyTorch. */
static inline float bp_cpu_row_max(const float *x, int cols) {
    float m = x[0];
    for (int j = 1; j < cols; ++j)
        m = x[j] > m ? x[j] : m;
    return m;
}

/* Element i of a buffer of type, as fp32 (bf16 widens exactly), and stored back (bf16 rounds
 * by bp_f32_to_bf16). */
static inline float bp_cpu_load(const void *p, bp_eltype type, size_t i) {
    return type == BP_EL_BF16 ? bp_bf16_to_f32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

static inline void bp_cpu_store(void *p, bp_eltype type, size_t i, float v) {
    if (type == BP_EL_BF16)
        ((uint16_t *)p)[i] = bp_f32_to_bf16(v);
    else
        ((float *)p)[i] = v;
}

/* fp32 C = alpha op(A) op(B) + beta C through the build's engine (oneDNN's sgemm, or CBLAS),
 * with the device's threads; no argument checks (bp_cpu_gemm has them). */
void bp_cpu_sgemm(bp_device *device, int trans_a, int trans_b, int m, int n, int k, float alpha,
                  const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);

/* The widening GEMM of the tf32 mode, and of bf16 where the CPU has no bf16 products
 * (cpu_gemm.c): fp32 output, epilogue NONE. */
bp_status bp_cpu_gemm_widen(bp_device *device, const bp_gemm_desc *desc);
size_t bp_cpu_gemm_widen_scratch(const bp_gemm_desc *desc);

bp_status bp_cpu_gemm(bp_device *device, int trans_a, int trans_b, int m, int n, int k, float alpha,
                      const float *a, int lda, const float *b, int ldb, float beta, float *c,
                      int ldc);

bp_status bp_cpu_bias_act_forward(bp_device *device, int rows, int cols, const float *bias,
                                  float *z, float *a, bp_activation act, float slope);
bp_status bp_cpu_act_backward(bp_device *device, size_t n, const float *z, const float *da,
                              float *dz, bp_activation act, float slope);
bp_status bp_cpu_softmax(bp_device *device, int rows, int cols, const float *x, float *y);
bp_status bp_cpu_dropout(bp_device *device, size_t n, const float *x, float *y, uint64_t seed,
                         uint64_t stream, uint64_t first, uint32_t threshold, float scale);

bp_status bp_cpu_col_sum(bp_device *device, int rows, int cols, const float *x, float beta,
                         float *out);
bp_status bp_cpu_sum(bp_device *device, size_t n, const float *x, float *out);
bp_status bp_cpu_sum_squares(bp_device *device, size_t n, const float *x, float *out);
bp_status bp_cpu_check_labels(bp_device *device, int rows, const int32_t *labels, int classes,
                              int64_t *bad_index);

bp_status bp_cpu_class_match(bp_device *device, int rows, int cols, const float *logits,
                             const int32_t *labels, float *match);
bp_status bp_cpu_softmax_xent(bp_device *device, int rows, int cols, const float *logits,
                              const int32_t *labels, float smoothing, float grad_scale, float *grad,
                              float *row_loss);
bp_status bp_cpu_mse(bp_device *device, int rows, int cols, const float *pred, const float *target,
                     float grad_scale, float *grad, float *row_loss);
bp_status bp_cpu_bce_logits(bp_device *device, int rows, int cols, const float *logits,
                            const float *target, float grad_scale, float *grad, float *row_loss);

bp_status bp_cpu_update(bp_device *device, const bp_update_args *args);
bp_status bp_cpu_step_decide(bp_device *device, bp_step_state *state, float clip_norm);
bp_status bp_cpu_check_labels_into(bp_device *device, int rows, const int32_t *labels, int classes,
                                   bp_step_state *state);

/* The tf32 and bf16 modes (cpu_gemm.c, cpu_lowp.c). */
bp_status bp_cpu_gemm_ex(bp_device *device, const bp_gemm_desc *desc, void *plan);
size_t bp_cpu_gemm_scratch(const bp_gemm_desc *desc);

/* The oneDNN engine (cpu_dnnl.c; only in a oneDNN build). */
bp_status bp_dnnl_init(bp_device *device);
void bp_dnnl_destroy(bp_device *device);
bp_status bp_dnnl_gemm_ex(bp_device *device, const bp_gemm_desc *desc, void *plan);
size_t bp_dnnl_gemm_scratch(const bp_gemm_desc *desc);
bp_status bp_dnnl_gemm_plan(bp_device *device, const bp_gemm_desc *desc, void **plan,
                            size_t *aux_bytes);
void bp_dnnl_gemm_plan_free(bp_device *device, void *plan);
/* What multiplies in a mode (bf16: bf16 operands; tf32: TF32 ones), e.g. "oneDNN 2.6.3 matmul,
 * brg:avx512_core_amx ...", into buf. */
bp_status bp_dnnl_describe(bp_device *device, int bf16, int tf32, char *buf, size_t size);
/* Primitives the device's engine has made (a training step makes none). */
uint64_t bp_dnnl_primitives_made(bp_device *device);
void bp_dnnl_sgemm(bp_device *device, int trans_a, int trans_b, int m, int n, int k, float alpha,
                   const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);
bp_status bp_cpu_cast(bp_device *device, size_t n, const void *src, bp_eltype src_type, void *dst,
                      bp_eltype dst_type);
bp_status bp_cpu_bias_act_forward_ex(bp_device *device, int rows, int cols, const float *bias,
                                     const float *acc, void *z, bp_eltype z_type, void *a,
                                     bp_eltype a_type, bp_activation act, float slope);
bp_status bp_cpu_act_backward_ex(bp_device *device, size_t n, const void *z, bp_eltype z_type,
                                 const float *da, float *dz, bp_activation act, float slope);

/* Normalization and residual layers (cpu_norm.c). */
bp_status bp_cpu_norm_forward(bp_device *device, bp_norm kind, int rows, int cols, const void *x,
                              bp_eltype x_type, const float *weight, const float *bias, float eps,
                              void *y, bp_eltype y_type, float *mean, float *rstd);
bp_status bp_cpu_norm_backward(bp_device *device, bp_norm kind, int rows, int cols, const void *x,
                               bp_eltype x_type, const float *weight, const float *mean,
                               const float *rstd, const float *dy, float *dx, float beta,
                               float *dweight, float *dbias);
bp_status bp_cpu_add(bp_device *device, size_t n, const void *x, bp_eltype x_type, float *y);

#endif
