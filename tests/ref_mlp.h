/* An independent float64 reference for a whole MLP: forward, the three losses, backward.
 *
 * Written from the math in include/backprop/model.h and loss.h; nothing here calls
 * kernels/bp_math.h or the library (only the public enums are shared). The activations and their
 * derivatives are those of the op reference, bpref_act and bpref_act_derivative in
 * tests/ref_ops.h, likewise written from the formulas. Layer l computes z = a W_l^T + b_l with
 * W_l stored [out, in] row-major, then a = act_l(z); there is no dropout. Parameters are one
 * flat buffer in PyTorch state_dict order: W0, b0, W1, b1, ... Row-major [batch, features]
 * throughout. */
#ifndef BP_TESTS_REF_MLP_H
#define BP_TESTS_REF_MLP_H

#include <stddef.h>
#include <stdint.h>

#include "backprop/loss.h"
#include "backprop/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The network's shape; the arrays are borrowed, not copied. */
typedef struct bpref_mlp {
    int n_layers;                     /* >= 1 */
    const int *widths;                /* n_layers + 1 widths */
    const bp_activation *activations; /* n_layers entries */
    double leaky_slope;               /* negative slope of BP_ACT_LEAKY_RELU */
} bpref_mlp;

/* A loss and its target. */
typedef struct bpref_mlp_loss {
    bp_loss_kind kind;
    double label_smoothing; /* cross-entropy only */
    const double *target;   /* MSE, BCE: [batch, out] */
    const int32_t *labels;  /* cross-entropy: [batch] class indices in [0, out) */
} bpref_mlp_loss;

/* Number of parameters: sum over layers of out*in + out. */
size_t bpref_mlp_n_params(const bpref_mlp *net);

/* Offsets (in doubles/floats) of layer's weight [out, in] and bias [out] in the flat buffer. */
void bpref_mlp_layer_offsets(const bpref_mlp *net, int layer, size_t *weight_offset,
                             size_t *bias_offset);

/* Number of pre-activations of all layers for a batch: batch * (widths[1] + ... + widths[n]). */
size_t bpref_mlp_n_preacts(const bpref_mlp *net, int batch);

/* Forward pass of x [batch, widths[0]]. out (may be NULL) receives [batch, widths[n]];
 * preacts (may be NULL) receives the pre-activations z of every layer, layer by layer, each
 * [batch, widths[l+1]] (bpref_mlp_n_preacts doubles). Returns 0, or -1 on bad arguments or
 * when memory runs out. */
int bpref_mlp_forward(const bpref_mlp *net, const double *params, const double *x, int batch,
                      double *out, double *preacts);

/* Mean loss of out [batch, cols] as loss.h defines it; dout (may be NULL) receives d loss /
 * d out. NaN on bad arguments (e.g. a label out of range).
 *   MSE:  mean over batch*cols of (out - target)^2.
 *   CE:   mean over rows of -sum_j q_j log softmax(out)_j, q = (1-s) onehot + s/cols.
 *   BCE:  mean over batch*cols of -(t log sigmoid(z) + (1-t) log(1 - sigmoid(z))). */
double bpref_mlp_loss_value(const bpref_mlp_loss *loss, int batch, int cols, const double *out,
                            double *dout);

/* Forward, loss and backward in one call. Returns the mean loss (NaN on bad arguments or when
 * memory runs out). out (may be NULL) receives the network output; dparams (may be NULL)
 * receives d loss / d params in the flat layout (overwritten, not accumulated); dx (may be NULL)
 * receives d loss / d x [batch, widths[0]]. */
double bpref_mlp_backward(const bpref_mlp *net, const double *params, const double *x, int batch,
                          const bpref_mlp_loss *loss, double *out, double *dparams, double *dx);

#ifdef __cplusplus
}
#endif

#endif
