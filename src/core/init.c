/* Initial weights, computed on the host in double from the counter-based generator so a seed
 * gives the same weights on every device. */
#include <math.h>

#include "core/model_internal.h"
#include "kernels/bp_math.h"

/* Streams of the generator used for init; dropout uses streams below 2^63. */
#define BP_INIT_STREAM (UINT64_C(1) << 63)

/* A double in [0, 1) from words 2i and 2i+1 of a stream (53 random bits). */
static double uniform01(uint64_t seed, uint64_t stream, uint64_t i) {
    uint64_t hi = bp_random_u32(seed, stream, 2 * i) >> 5;
    uint64_t lo = bp_random_u32(seed, stream, 2 * i + 1) >> 6;
    return (double)((hi << 26) | lo) * (1.0 / 9007199254740992.0);
}

/* A standard normal by Box-Muller from draws 2i and 2i+1. */
static double normal01(uint64_t seed, uint64_t stream, uint64_t i) {
    double u1 = 1.0 - uniform01(seed, stream, 2 * i); /* (0, 1]: log is finite */
    double u2 = uniform01(seed, stream, 2 * i + 1);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586476925 * u2);
}

static void fill_uniform(float *w, size_t n, double bound, uint64_t seed, uint64_t stream) {
    for (size_t i = 0; i < n; ++i)
        w[i] = (float)((2.0 * uniform01(seed, stream, i) - 1.0) * bound);
}

static void fill_normal(float *w, size_t n, double std, uint64_t seed, uint64_t stream) {
    for (size_t i = 0; i < n; ++i)
        w[i] = (float)(std * normal01(seed, stream, i));
}

static void init_layer(const bp_layer *L, int l, bp_init init, uint64_t seed, float *host) {
    double fan_in = L->in, fan_out = L->out;
    size_t nw = (size_t)L->in * (size_t)L->out;
    uint64_t ws = BP_INIT_STREAM | (uint64_t)(2 * l), bs = ws + 1;
    float *w = host + L->w_off, *b = host + L->b_off;
    switch (init) {
    case BP_INIT_HE_UNIFORM:
        fill_uniform(w, nw, sqrt(6.0 / fan_in), seed, ws);
        break;
    case BP_INIT_HE_NORMAL:
        fill_normal(w, nw, sqrt(2.0 / fan_in), seed, ws);
        break;
    case BP_INIT_XAVIER_UNIFORM:
        fill_uniform(w, nw, sqrt(6.0 / (fan_in + fan_out)), seed, ws);
        break;
    case BP_INIT_XAVIER_NORMAL:
        fill_normal(w, nw, sqrt(2.0 / (fan_in + fan_out)), seed, ws);
        break;
    default:
        fill_uniform(w, nw, 1.0 / sqrt(fan_in), seed, ws);
        break;
    }
    if (init == BP_INIT_TORCH_DEFAULT)
        fill_uniform(b, (size_t)L->out, 1.0 / sqrt(fan_in), seed, bs);
    else
        for (int i = 0; i < L->out; ++i)
            b[i] = 0.0f;
}

/* A norm starts as PyTorch's does: weight 1, bias 0 (no draws, so the linear layers' weights
 * are those of the same model without norms). */
static void init_norm(const bp_layer *L, float *host) {
    for (int i = 0; i < L->in; ++i)
        host[L->nw_off + (size_t)i] = 1.0f;
    for (int i = 0; L->norm == BP_NORM_LAYER && i < L->in; ++i)
        host[L->nb_off + (size_t)i] = 0.0f;
}

void bp_init_params(const bp_model *m, bp_init init, float *host) {
    for (int l = 0; l < m->n_layers; ++l) {
        init_layer(&m->layers[l], l, init, m->seed, host);
        if (m->layers[l].norm != BP_NORM_NONE) init_norm(&m->layers[l], host);
    }
}
