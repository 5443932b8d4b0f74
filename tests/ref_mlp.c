/* The whole-network float64 reference; see ref_mlp.h. Written from the formulas: naive loops,
 * no BLAS, nothing from kernels/ or the library; the activations are ref_ops.c's. */
#include "ref_mlp.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ref_ops.h"

static int mlp_valid(const bpref_mlp *net) {
    if (!net || net->n_layers < 1 || !net->widths || !net->activations) return 0;
    for (int l = 0; l <= net->n_layers; ++l)
        if (net->widths[l] < 1) return 0;
    return 1;
}

size_t bpref_mlp_n_params(const bpref_mlp *net) {
    size_t n = 0;
    for (int l = 0; l < net->n_layers; ++l)
        n += (size_t)net->widths[l + 1] * (size_t)net->widths[l] + (size_t)net->widths[l + 1];
    return n;
}

void bpref_mlp_layer_offsets(const bpref_mlp *net, int layer, size_t *weight_offset,
                             size_t *bias_offset) {
    size_t off = 0;
    for (int l = 0; l < layer; ++l)
        off += (size_t)net->widths[l + 1] * (size_t)net->widths[l] + (size_t)net->widths[l + 1];
    if (weight_offset) *weight_offset = off;
    if (bias_offset) *bias_offset = off + (size_t)net->widths[layer + 1] * net->widths[layer];
}

size_t bpref_mlp_n_preacts(const bpref_mlp *net, int batch) {
    size_t n = 0;
    for (int l = 1; l <= net->n_layers; ++l)
        n += (size_t)net->widths[l];
    return n * (size_t)batch;
}

/* z[b, o] = sum_i a[b, i] W[o, i] + bias[o] for one layer. */
static void mlp_linear(int batch, int in, int out, const double *w, const double *bias,
                       const double *a, double *z) {
    for (int b = 0; b < batch; ++b) {
        for (int o = 0; o < out; ++o) {
            double acc = bias[o];
            for (int i = 0; i < in; ++i)
                acc += a[(size_t)b * in + i] * w[(size_t)o * in + i];
            z[(size_t)b * out + o] = acc;
        }
    }
}

/* Runs the layers and keeps every layer's z and a in zs/as (each batch * sum(widths[1..])). */
static void mlp_run(const bpref_mlp *net, const double *params, const double *x, int batch,
                    double *zs, double *as) {
    const double *a_prev = x;
    size_t off = 0; /* into zs/as */
    for (int l = 0; l < net->n_layers; ++l) {
        int in = net->widths[l], out = net->widths[l + 1];
        size_t w_off, b_off;
        bpref_mlp_layer_offsets(net, l, &w_off, &b_off);
        double *z = zs + off, *a = as + off;
        mlp_linear(batch, in, out, params + w_off, params + b_off, a_prev, z);
        for (size_t k = 0; k < (size_t)batch * out; ++k)
            a[k] = bpref_act(z[k], net->activations[l], net->leaky_slope);
        a_prev = a;
        off += (size_t)batch * out;
    }
}

int bpref_mlp_forward(const bpref_mlp *net, const double *params, const double *x, int batch,
                      double *out, double *preacts) {
    if (!mlp_valid(net) || !params || !x || batch < 1) return -1;
    size_t n = bpref_mlp_n_preacts(net, batch);
    double *zs = malloc(n * sizeof *zs), *as = malloc(n * sizeof *as);
    if (!zs || !as) {
        free(zs);
        free(as);
        return -1;
    }
    mlp_run(net, params, x, batch, zs, as);
    size_t n_out = (size_t)batch * net->widths[net->n_layers];
    if (out) memcpy(out, as + (n - n_out), n_out * sizeof *out);
    if (preacts) memcpy(preacts, zs, n * sizeof *preacts);
    free(zs);
    free(as);
    return 0;
}

double bpref_mlp_loss_value(const bpref_mlp_loss *loss, int batch, int cols, const double *out,
                            double *dout) {
    if (!loss || !out || batch < 1 || cols < 1) return NAN;
    size_t n = (size_t)batch * cols;
    double total = 0.0;
    switch (loss->kind) {
    case BP_LOSS_MSE: {
        if (!loss->target) return NAN;
        for (size_t k = 0; k < n; ++k) {
            double d = out[k] - loss->target[k];
            total += d * d;
            if (dout) dout[k] = 2.0 * d / (double)n;
        }
        return total / (double)n;
    }
    case BP_LOSS_CROSS_ENTROPY: {
        if (!loss->labels) return NAN;
        double s = loss->label_smoothing;
        for (int b = 0; b < batch; ++b) {
            const double *z = out + (size_t)b * cols;
            int label = loss->labels[b];
            if (label < 0 || label >= cols) return NAN;
            double mx = z[0];
            for (int j = 1; j < cols; ++j)
                mx = z[j] > mx ? z[j] : mx;
            double se = 0.0;
            for (int j = 0; j < cols; ++j)
                se += exp(z[j] - mx);
            double lse = mx + log(se);
            for (int j = 0; j < cols; ++j) {
                double q = (j == label ? 1.0 - s : 0.0) + s / (double)cols;
                total += q * (lse - z[j]); /* -q_j log p_j */
                if (dout) dout[(size_t)b * cols + j] = (exp(z[j] - lse) - q) / (double)batch;
            }
        }
        return total / (double)batch;
    }
    case BP_LOSS_BCE_LOGITS: {
        if (!loss->target) return NAN;
        for (size_t k = 0; k < n; ++k) {
            double z = out[k], t = loss->target[k];
            /* -(t log s + (1-t) log(1-s)) with log s = -log(1+e^-z), log(1-s) = -z - log(1+e^-z),
             * rewritten as max(z,0) - z t + log(1 + e^-|z|) so nothing overflows */
            total += (z > 0.0 ? z : 0.0) - z * t + log1p(exp(-fabs(z)));
            if (dout) dout[k] = (bpref_act(z, BP_ACT_SIGMOID, 0.0) - t) / (double)n;
        }
        return total / (double)n;
    }
    default:
        return NAN;
    }
}

double bpref_mlp_backward(const bpref_mlp *net, const double *params, const double *x, int batch,
                          const bpref_mlp_loss *loss, double *out, double *dparams, double *dx) {
    if (!mlp_valid(net) || !params || !x || !loss || batch < 1) return NAN;
    int n_layers = net->n_layers;
    int max_w = 0;
    for (int l = 0; l <= n_layers; ++l)
        max_w = net->widths[l] > max_w ? net->widths[l] : max_w;
    size_t n = bpref_mlp_n_preacts(net, batch);
    double *zs = malloc(n * sizeof *zs), *as = malloc(n * sizeof *as);
    double *delta = malloc((size_t)batch * max_w * sizeof *delta);
    double *da = malloc((size_t)batch * max_w * sizeof *da);
    double value = NAN;
    if (!zs || !as || !delta || !da) goto done;

    mlp_run(net, params, x, batch, zs, as);
    int n_out = net->widths[n_layers];
    size_t out_off = n - (size_t)batch * n_out;
    if (out) memcpy(out, as + out_off, (size_t)batch * n_out * sizeof *out);
    /* da = d loss / d (last activation output) */
    value = bpref_mlp_loss_value(loss, batch, n_out, as + out_off, da);
    if (isnan(value)) goto done;

    size_t off = out_off;
    for (int l = n_layers - 1; l >= 0; --l) {
        int in = net->widths[l], outw = net->widths[l + 1];
        const double *z = zs + off;
        const double *a_prev = l > 0 ? as + (off - (size_t)batch * in) : x;
        size_t w_off, b_off;
        bpref_mlp_layer_offsets(net, l, &w_off, &b_off);
        const double *w = params + w_off;
        /* delta = dL/dz = dL/da * act'(z) */
        for (size_t k = 0; k < (size_t)batch * outw; ++k)
            delta[k] = da[k] * bpref_act_derivative(z[k], net->activations[l], net->leaky_slope);
        if (dparams) {
            /* dW[o, i] = sum_b delta[b, o] a_prev[b, i]; db[o] = sum_b delta[b, o] */
            for (int o = 0; o < outw; ++o) {
                double db = 0.0;
                for (int b = 0; b < batch; ++b)
                    db += delta[(size_t)b * outw + o];
                dparams[b_off + o] = db;
                for (int i = 0; i < in; ++i) {
                    double acc = 0.0;
                    for (int b = 0; b < batch; ++b)
                        acc += delta[(size_t)b * outw + o] * a_prev[(size_t)b * in + i];
                    dparams[w_off + (size_t)o * in + i] = acc;
                }
            }
        }
        if (l > 0 || dx) {
            /* dL/da_prev[b, i] = sum_o delta[b, o] W[o, i] */
            double *dst = l > 0 ? da : dx;
            for (int b = 0; b < batch; ++b) {
                for (int i = 0; i < in; ++i) {
                    double acc = 0.0;
                    for (int o = 0; o < outw; ++o)
                        acc += delta[(size_t)b * outw + o] * w[(size_t)o * in + i];
                    dst[(size_t)b * in + i] = acc;
                }
            }
        }
        if (l > 0) off -= (size_t)batch * in;
    }

done:
    free(zs);
    free(as);
    free(delta);
    free(da);
    return value;
}
