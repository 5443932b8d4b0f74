/* See ref_lowp.h. */
#include "ref_lowp.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ref_ops.h"

/* Round half to even of a double that is an integer or half-integer away from one. */
static double round_half_even(double v) {
    double f = floor(v), d = v - f;
    if (d > 0.5) return f + 1.0;
    if (d < 0.5) return f;
    return fmod(f, 2.0) == 0.0 ? f : f + 1.0;
}

/* v (a multiple of a half) to an integer by how. */
static double round_as(double v, bpref_rounding how) {
    if (how == BPREF_TOWARD_ZERO) return trunc(v);
    if (how == BPREF_HALF_AWAY) return round(v);
    return round_half_even(v);
}

double bpref_round_bits(double x, int bits) {
    return bpref_round_bits_as(x, bits, BPREF_NEAREST_EVEN);
}

double bpref_round_bits_as(double x, int bits, bpref_rounding how) {
    if (!isfinite(x) || x == 0.0) return x;
    int e;
    frexp(x, &e);           /* |x| in [2^(e-1), 2^e) */
    if (e < -125) e = -125; /* subnormals: the grid of the smallest normal binade, 2^-126 */
    double ulp = ldexp(1.0, e - bits);
    double r = copysign(round_as(x / ulp, how) * ulp, x); /* -tiny rounds to -0 */
    double max = ldexp(2.0 - ldexp(1.0, 1 - bits), 127);
    if (fabs(r) > max) return x > 0 ? INFINITY : -INFINITY;
    return r;
}

double bpref_round_bf16(double x) {
    return bpref_round_bits(x, 8);
}

double bpref_round_tf32(double x) {
    return bpref_round_bits(x, 11);
}

double bpref_round_tf32_as(double x, bpref_rounding how) {
    return bpref_round_bits_as(x, 11, how);
}

/* The TF32 rounding of bpref_mlp_backward_rounded (tests run one thread). */
static bpref_rounding tf32_how = BPREF_NEAREST_EVEN;

void bpref_set_tf32_rounding(bpref_rounding how) {
    tf32_how = how;
}

static double tf32_operand(double x) {
    return bpref_round_tf32_as(x, tf32_how);
}

typedef double (*rounder)(double);

static double keep(double x) {
    return x;
}

static void round_all(double *v, size_t n, rounder r) {
    for (size_t i = 0; i < n; ++i)
        v[i] = r(v[i]);
}

/* The buffers of one evaluation, sized for the widest layer. */
typedef struct work {
    double **z;  /* per layer: z as kept for the derivative */
    double **in; /* per layer: its input as its GEMMs see it */
    double *w;   /* all parameters with the weights as the GEMMs see them */
    double *out, *da, *dz, *dzg;
} work;

static void free_work(work *k, int n_layers) {
    for (int l = 0; k->z && l < n_layers; ++l)
        free(k->z[l]);
    for (int l = 0; k->in && l <= n_layers; ++l)
        free(k->in[l]);
    free(k->z);
    free(k->in);
    free(k->w);
    free(k->out);
    free(k->da);
    free(k->dz);
    free(k->dzg);
}

static int alloc_work(work *k, const bpref_mlp *net, int batch, size_t n_params) {
    int n = net->n_layers, widest = 0;
    memset(k, 0, sizeof *k);
    for (int l = 0; l <= n; ++l)
        widest = net->widths[l] > widest ? net->widths[l] : widest;
    size_t cap = (size_t)batch * (size_t)widest;
    k->z = calloc((size_t)n, sizeof *k->z);
    k->in = calloc((size_t)n + 1, sizeof *k->in);
    k->w = malloc(n_params * sizeof *k->w);
    k->out = malloc(cap * sizeof *k->out);
    k->da = malloc(cap * sizeof *k->da);
    k->dz = malloc(cap * sizeof *k->dz);
    k->dzg = malloc(cap * sizeof *k->dzg);
    if (!k->z || !k->in || !k->w || !k->out || !k->da || !k->dz || !k->dzg) return -1;
    for (int l = 0; l < n; ++l)
        if (!(k->z[l] = malloc(cap * sizeof(double)))) return -1;
    for (int l = 0; l <= n; ++l)
        if (!(k->in[l] = malloc(cap * sizeof(double)))) return -1;
    return 0;
}

/* The forward: k->z[l], k->in[l + 1] (the next layer's GEMM input) and the output. */
static void forward(const bpref_mlp *net, int precision, const double *x, int batch, work *k) {
    int bf16 = precision == BP_PRECISION_BF16, n = net->n_layers;
    rounder operand = bf16                             ? bpref_round_bf16
                      : precision == BP_PRECISION_TF32 ? tf32_operand
                                                       : keep;
    memcpy(k->in[0], x, (size_t)batch * net->widths[0] * sizeof(double));
    round_all(k->in[0], (size_t)batch * net->widths[0], operand);
    for (int l = 0; l < n; ++l) {
        int in = net->widths[l], out = net->widths[l + 1], hidden = l + 1 < n;
        size_t w_off, b_off;
        bpref_mlp_layer_offsets(net, l, &w_off, &b_off);
        double *a = hidden ? k->in[l + 1] : k->out;
        for (int b = 0; b < batch; ++b)
            for (int o = 0; o < out; ++o) {
                double acc = 0.0;
                for (int i = 0; i < in; ++i)
                    acc += k->in[l][(size_t)b * in + i] * k->w[w_off + (size_t)o * in + i];
                double z = acc + k->w[b_off + o];
                double y = bpref_act(z, net->activations[l], net->leaky_slope);
                size_t q = (size_t)b * out + o;
                /* bf16 keeps a hidden layer's z and a rounded; tf32 rounds a only as the next
                 * GEMM's operand */
                k->z[l][q] = bf16 && hidden ? bpref_round_bf16(z) : z;
                a[q] = hidden ? operand(y) : y;
            }
    }
}

double bpref_mlp_backward_rounded(const bpref_mlp *net, int precision, const double *params,
                                  const double *x, int batch, const bpref_mlp_loss *loss,
                                  double *out, double *dparams, double *dx) {
    if (!net || !params || !x || !loss || batch < 1 || net->n_layers < 1) return NAN;
    int n = net->n_layers, n_out = net->widths[n];
    rounder operand = precision == BP_PRECISION_BF16   ? bpref_round_bf16
                      : precision == BP_PRECISION_TF32 ? tf32_operand
                                                       : keep;
    size_t n_params = bpref_mlp_n_params(net);
    work k;
    double value = NAN;
    if (alloc_work(&k, net, batch, n_params) != 0) goto done;
    memcpy(k.w, params, n_params * sizeof(double));
    for (int l = 0; l < n; ++l) {
        size_t w_off, b_off;
        bpref_mlp_layer_offsets(net, l, &w_off, &b_off);
        round_all(k.w + w_off, b_off - w_off, operand); /* the biases stay as they are */
    }
    forward(net, precision, x, batch, &k);
    if (out) memcpy(out, k.out, (size_t)batch * n_out * sizeof(double));
    value = bpref_mlp_loss_value(loss, batch, n_out, k.out, k.da);
    if (isnan(value)) goto done;
    for (int l = n - 1; l >= 0; --l) {
        int in = net->widths[l], outw = net->widths[l + 1];
        size_t w_off, b_off, m = (size_t)batch * outw;
        bpref_mlp_layer_offsets(net, l, &w_off, &b_off);
        for (size_t q = 0; q < m; ++q) {
            k.dz[q] =
                k.da[q] * bpref_act_derivative(k.z[l][q], net->activations[l], net->leaky_slope);
            k.dzg[q] = operand(k.dz[q]);
        }
        for (int o = 0; dparams && o < outw; ++o) {
            double db = 0.0;
            for (int b = 0; b < batch; ++b)
                db += k.dz[(size_t)b * outw + o]; /* the unrounded dz */
            dparams[b_off + o] = db;
            for (int i = 0; i < in; ++i) {
                double acc = 0.0;
                for (int b = 0; b < batch; ++b)
                    acc += k.dzg[(size_t)b * outw + o] * k.in[l][(size_t)b * in + i];
                dparams[w_off + (size_t)o * in + i] = acc;
            }
        }
        double *dst = l > 0 ? k.da : dx;
        for (int b = 0; dst && b < batch; ++b)
            for (int i = 0; i < in; ++i) {
                double acc = 0.0;
                for (int o = 0; o < outw; ++o)
                    acc += k.dzg[(size_t)b * outw + o] * k.w[w_off + (size_t)o * in + i];
                dst[(size_t)b * in + i] = acc;
            }
    }
done:
    free_work(&k, n);
    return value;
}
