/* A float64 reference for the tf32 and bf16 modes: the roundings of docs/precision.md, written
 * from the formats' definitions (nothing from kernels/bp_math.h or the library), and a whole MLP
 * that rounds at exactly the documented points and computes in double between them.
 *
 * It holds a backend's reduced-precision pipeline to its specification: the plain reference
 * (ref_mlp.h) tells how far a mode is from exact arithmetic; this one tells whether the library
 * rounds where it says, and only there. */
#ifndef BP_TESTS_REF_LOWP_H
#define BP_TESTS_REF_LOWP_H

#include "ref_mlp.h"

#ifdef __cplusplus
extern "C" {
#endif

/* x rounded to the nearest value with `bits` significant bits (the leading one included) and
 * fp32's exponent range (subnormals below 2^-126 on the same grid as the smallest normal
 * binade), ties to even; past the format's largest finite value, infinity. bf16 keeps 8 bits,
 * TF32 11. NaN and infinities are returned as they are. */
double bpref_round_bits(double x, int bits);
double bpref_round_bf16(double x); /* bpref_round_bits(x, 8) */
double bpref_round_tf32(double x); /* bpref_round_bits(x, 11) */

/* The roundings a GPU may give a TF32 operand (docs/precision.md): to nearest even (the
 * library's own, bp_round_tf32), toward zero (truncation: up to 2^-10 relative, not 2^-11),
 * to nearest with ties away from zero. */
typedef enum { BPREF_NEAREST_EVEN, BPREF_TOWARD_ZERO, BPREF_HALF_AWAY } bpref_rounding;
double bpref_round_bits_as(double x, int bits, bpref_rounding how);
double bpref_round_tf32_as(double x, bpref_rounding how); /* bits 11 */
/* The TF32 rounding bpref_mlp_backward_rounded applies from now on (nearest even at first). */
void bpref_set_tf32_rounding(bpref_rounding how);

/* bpref_mlp_backward for a model of the given precision (BP_PRECISION_*), no dropout:
 *   tf32: every GEMM operand (x or the previous activation, W, dz) rounded to TF32;
 *   bf16: x and W rounded to bf16 once; each hidden layer's z and a = act(z) (from the
 *         unrounded z) stored rounded; the last layer's output unrounded; backward, dz =
 *         da * act'(z as stored), the bias gradient from the unrounded dz, dz rounded to bf16
 *         for the dW and dX products; the products exact.
 * Returns the mean loss (NaN on bad arguments). out, dparams, dx as bpref_mlp_backward. */
double bpref_mlp_backward_rounded(const bpref_mlp *net, int precision, const double *params,
                                  const double *x, int batch, const bpref_mlp_loss *loss,
                                  double *out, double *dparams, double *dx);

#ifdef __cplusplus
}
#endif

#endif
