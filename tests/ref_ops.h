/* An independent float64 reference for every backend operation, written from the math.
 *
 * Nothing here calls kernels/bp_math.h: the tests hold the backends (which share that header)
 * to these double-precision formulas. Row-major throughout; no state; no allocation. */
#ifndef BP_TESTS_REF_OPS_H
#define BP_TESTS_REF_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "backprop/model.h"
#include "backprop/optim.h"

#ifdef __cplusplus
extern "C" {
#endif

/* C[m,n] = alpha * op(A) op(B) + beta * C; op(A) is [m,k], op(B) is [k,n]; lda, ldb, ldc are the
 * row strides of A, B, C as stored (A is [m,k] or, transposed, [k,m]). beta == 0 does not read
 * C. */
void bpref_gemm(int trans_a, int trans_b, int m, int n, int k, double alpha, const double *a,
                int lda, const double *b, int ldb, double beta, double *c, int ldc);

/* act(x) and d act / dx at x. ReLU' (0) = 0, leaky ReLU' (0) = slope, as PyTorch. GELU is the
 * erf form 0.5 x (1 + erf(x / sqrt 2)); GELU_TANH is 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715
 * x^3))); SiLU is x sigmoid(x). The whole-network reference (ref_mlp.c) uses these too. */
double bpref_act(double x, bp_activation act, double slope);
double bpref_act_derivative(double x, bp_activation act, double slope);

/* z[r,c] += bias[c] (bias may be NULL); a[r,c] = act(z[r,c]). a may equal z. */
void bpref_bias_act_forward(int rows, int cols, const double *bias, double *z, double *a,
                            bp_activation act, double slope);

/* dz[i] = da[i] * act'(z[i]); dz may equal da. */
void bpref_act_backward(size_t n, const double *z, const double *da, double *dz, bp_activation act,
                        double slope);

/* out[c] = beta * out[c] + sum_r x[r,c] (beta == 0 does not read out). */
void bpref_col_sum(int rows, int cols, const double *x, double beta, double *out);

/* y = softmax(x) over each row; y may equal x. */
void bpref_softmax(int rows, int cols, const double *x, double *y);

/* Per-row losses, summed over the row's columns (not averaged); grad (may be NULL) receives
 * grad_scale * d row_loss / d input.
 *   softmax_xent: q = (1 - s) onehot(label) + s / cols, loss = -sum_j q_j log softmax_j.
 *   mse:          loss = sum_j (pred_j - target_j)^2.
 *   bce_logits:   loss = sum_j -(t log sigmoid(z) + (1 - t) log(1 - sigmoid(z))), in the form
 *                 that never overflows. */
void bpref_softmax_xent(int rows, int cols, const double *logits, const int32_t *labels,
                        double smoothing, double grad_scale, double *grad, double *row_loss);
/* match[r] = 1 when labels[r] is the smallest index j whose logits[r, j] is the row's
 * maximum over the non-NaN entries, else 0 (a row of NaNs: 0). */
void bpref_class_match(int rows, int cols, const float *logits, const int32_t *labels,
                       double *match);
void bpref_mse(int rows, int cols, const double *pred, const double *target, double grad_scale,
               double *grad, double *row_loss);
void bpref_bce_logits(int rows, int cols, const double *logits, const double *target,
                      double grad_scale, double *grad, double *row_loss);

/* Sum and sum of squares of x[0..n), with compensated (Kahan-Babuska) summation. */
double bpref_sum(size_t n, const double *x);
double bpref_sum_squares(size_t n, const double *x);

/* One optimizer, as described in include/backprop/optim.h. */
typedef struct bpref_optim {
    bp_optim_kind kind;
    double lr;
    double weight_decay;
    double momentum, dampening; /* SGD */
    int nesterov;               /* SGD */
    double beta1, beta2, eps;   /* Adam, AdamW */
    double grad_scale;          /* multiplies each gradient first; 1 for none */
    double clip_value;          /* > 0: then clamps each gradient to [-clip_value, clip_value] */
} bpref_optim;

/* Step t (1-based) of the optimizer over n parameters: param updated in place; m (SGD momentum
 * buffer, Adam first moment) and v (Adam second moment) are read and written when used and may
 * be NULL otherwise. grad is left unchanged. */
void bpref_optim_step(const bpref_optim *opt, int64_t t, size_t n, double *param,
                      const double *grad, double *m, double *v);

#ifdef __cplusplus
}
#endif

#endif
