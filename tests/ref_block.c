#include "ref_block.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ref_ops.h"

/* Offsets of layer l's parameters; returns the size of the layer's share. */
static size_t layer_offsets(const bpref_block_net *net, int l, size_t base, size_t *nw, size_t *nb,
                            size_t *w, size_t *b) {
    size_t in = (size_t)net->widths[l], out = (size_t)net->widths[l + 1], off = base;
    *nw = *nb = (size_t)-1;
    if (net->norms[l] != BP_NORM_NONE) *nw = off, off += in;
    if (net->norms[l] == BP_NORM_LAYER) *nb = off, off += in;
    *w = off;
    off += in * out;
    *b = off;
    off += out;
    return off - base;
}

size_t bpref_block_n_params(const bpref_block_net *net) {
    size_t total = 0, a, b, c, d;
    for (int l = 0; l < net->n_layers; ++l)
        total += layer_offsets(net, l, total, &a, &b, &c, &d);
    return total;
}

/* One layer's saved forward state, per row and feature. */
typedef struct layer_state {
    double *x, *xhat, *h, *z, *rstd; /* x [B, in] (its input), xhat, h [B, in], z [B, out] */
} layer_state;

static void norm_row(const bpref_block_net *net, int l, const double *p, size_t nw, size_t nb,
                     const double *x, double *xhat, double *h, double *rstd) {
    int n = net->widths[l];
    double mean = 0.0, var = 0.0;
    if (net->norms[l] == BP_NORM_LAYER) {
        for (int c = 0; c < n; ++c)
            mean += x[c];
        mean /= n;
    }
    for (int c = 0; c < n; ++c)
        var += (x[c] - mean) * (x[c] - mean);
    *rstd = 1.0 / sqrt(var / n + net->eps);
    for (int c = 0; c < n; ++c) {
        xhat[c] = (x[c] - mean) * *rstd;
        h[c] = xhat[c] * p[nw + (size_t)c] + (nb != (size_t)-1 ? p[nb + (size_t)c] : 0.0);
    }
}

static void layer_forward(const bpref_block_net *net, int l, const double *p, size_t base,
                          int batch, layer_state *s, double *y) {
    size_t nw, nb, w, b;
    layer_offsets(net, l, base, &nw, &nb, &w, &b);
    int in = net->widths[l], out = net->widths[l + 1];
    for (int r = 0; r < batch; ++r) {
        const double *x = s->x + (size_t)r * in;
        double *h = s->h + (size_t)r * in;
        if (net->norms[l] != BP_NORM_NONE)
            norm_row(net, l, p, nw, nb, x, s->xhat + (size_t)r * in, h, &s->rstd[r]);
        else
            memcpy(h, x, sizeof(double) * (size_t)in);
        for (int o = 0; o < out; ++o) {
            double z = p[b + (size_t)o];
            for (int i = 0; i < in; ++i)
                z += h[i] * p[w + (size_t)o * in + (size_t)i];
            s->z[(size_t)r * out + o] = z;
            y[(size_t)r * out + o] =
                bpref_act(z, net->activations[l], 0.01) + (net->residual[l] ? x[o] : 0.0);
        }
    }
}

/* From gy [B, out] (the gradient of the layer's output): dparams and gx [B, in]. */
static void layer_backward(const bpref_block_net *net, int l, const double *p, size_t base,
                           int batch, const layer_state *s, const double *gy, double *dp,
                           double *gx) {
    size_t nw, nb, w, b;
    layer_offsets(net, l, base, &nw, &nb, &w, &b);
    int in = net->widths[l], out = net->widths[l + 1];
    double *gh = malloc(sizeof(double) * (size_t)in);
    for (int r = 0; r < batch && gh; ++r) {
        const double *h = s->h + (size_t)r * in;
        for (int i = 0; i < in; ++i)
            gh[i] = 0.0;
        for (int o = 0; o < out; ++o) {
            size_t k = (size_t)r * out + o;
            double gz = gy[k] * bpref_act_derivative(s->z[k], net->activations[l], 0.01);
            dp[b + (size_t)o] += gz;
            for (int i = 0; i < in; ++i) {
                dp[w + (size_t)o * in + (size_t)i] += gz * h[i];
                gh[i] += gz * p[w + (size_t)o * in + (size_t)i];
            }
        }
        double *g = gx + (size_t)r * in;
        if (net->norms[l] == BP_NORM_NONE) {
            memcpy(g, gh, sizeof(double) * (size_t)in);
        } else {
            const double *xhat = s->xhat + (size_t)r * in;
            double mg = 0.0, mgx = 0.0;
            for (int i = 0; i < in; ++i) {
                dp[nw + (size_t)i] += gh[i] * xhat[i];
                if (nb != (size_t)-1) dp[nb + (size_t)i] += gh[i];
                double gi = gh[i] * p[nw + (size_t)i];
                mg += gi / in;
                mgx += gi * xhat[i] / in;
            }
            if (net->norms[l] != BP_NORM_LAYER) mg = 0.0;
            for (int i = 0; i < in; ++i)
                g[i] = s->rstd[r] * (gh[i] * p[nw + (size_t)i] - mg - xhat[i] * mgx);
        }
        if (net->residual[l])
            for (int i = 0; i < in; ++i)
                g[i] += gy[(size_t)r * out + i];
    }
    free(gh);
}

double bpref_block_loss(const bpref_block_net *net, const double *params, const double *x,
                        int batch, const double *target, double *out, double *dparams, double *dx) {
    int n = net->n_layers, widest = 0;
    for (int l = 0; l <= n; ++l)
        widest = net->widths[l] > widest ? net->widths[l] : widest;
    size_t row = (size_t)batch * (size_t)widest;
    layer_state *s = calloc((size_t)n + 1, sizeof *s);
    size_t *base = calloc((size_t)n + 1, sizeof *base);
    double *g0 = malloc(sizeof(double) * row), *g1 = malloc(sizeof(double) * row);
    int ok = s && base && g0 && g1;
    for (int l = 0; ok && l <= n; ++l) {
        s[l].x = calloc(row, sizeof(double));
        s[l].xhat = calloc(row, sizeof(double));
        s[l].h = calloc(row, sizeof(double));
        s[l].z = calloc(row, sizeof(double));
        s[l].rstd = calloc((size_t)batch, sizeof(double));
        ok = s[l].x && s[l].xhat && s[l].h && s[l].z && s[l].rstd;
    }
    double loss = NAN;
    if (ok) {
        size_t a, b, c, d;
        for (int l = 0; l < n; ++l)
            base[l + 1] = base[l] + layer_offsets(net, l, base[l], &a, &b, &c, &d);
        memcpy(s[0].x, x, sizeof(double) * (size_t)batch * (size_t)net->widths[0]);
        for (int l = 0; l < n; ++l)
            layer_forward(net, l, params, base[l], batch, &s[l], s[l + 1].x);
        size_t m = (size_t)batch * (size_t)net->widths[n];
        loss = 0.0;
        for (size_t i = 0; i < m; ++i) {
            double e = s[n].x[i] - target[i];
            loss += e * e / (double)m;
            g0[i] = 2.0 * e / (double)m;
        }
        if (out) memcpy(out, s[n].x, sizeof(double) * m);
        if (dparams) memset(dparams, 0, sizeof(double) * base[n]);
        double *dp = dparams ? dparams : calloc(base[n], sizeof(double));
        for (int l = n - 1; l >= 0 && dp; --l) {
            layer_backward(net, l, params, base[l], batch, &s[l], g0, dp, g1);
            double *t = g0;
            g0 = g1;
            g1 = t;
        }
        if (dx) memcpy(dx, g0, sizeof(double) * (size_t)batch * (size_t)net->widths[0]);
        if (!dparams) free(dp);
    }
    for (int l = 0; s && l <= n; ++l) {
        free(s[l].x);
        free(s[l].xhat);
        free(s[l].h);
        free(s[l].z);
        free(s[l].rstd);
    }
    free(s);
    free(base);
    free(g0);
    free(g1);
    return loss;
}
