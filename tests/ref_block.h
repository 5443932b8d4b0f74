/* An independent float64 reference for an MLP of pre-norm residual blocks (docs/deep-mlp.md).
 *
 * Written from the math in include/backprop/model.h; nothing here calls kernels/bp_math.h or
 * the library (only the public enums are shared; the activations are ref_ops.h's). Layer l
 * maps its input x to out = (residual ? x : 0) + act(norm(x) W^T + b), norm being none,
 * LayerNorm ((x - mean) / sqrt(var + eps) * w + beta, var biased) or RMSNorm
 * (x / sqrt(mean(x^2) + eps) * w), over each row. No dropout. Parameters are one flat buffer:
 * per layer the norm's w (and beta for LayerNorm), then W [out, in], then b. The loss is MSE:
 * the mean over batch * out of (out - target)^2. */
#ifndef BP_TESTS_REF_BLOCK_H
#define BP_TESTS_REF_BLOCK_H

#include <stddef.h>

#include "backprop/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bpref_block_net {
    int n_layers;
    const int *widths;                /* n_layers + 1 */
    const bp_activation *activations; /* n_layers */
    const bp_norm *norms;             /* n_layers */
    const int *residual;              /* n_layers */
    double eps;
} bpref_block_net;

size_t bpref_block_n_params(const bpref_block_net *net);

/* The MSE loss of the network on x [batch, widths[0]] against target [batch, widths[n]]; out,
 * dparams and dx may be NULL (dparams overwritten). NaN when memory runs out. */
double bpref_block_loss(const bpref_block_net *net, const double *params, const double *x,
                        int batch, const double *target, double *out, double *dparams, double *dx);

#ifdef __cplusplus
}
#endif

#endif
