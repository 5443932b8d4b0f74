#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/device_internal.h"
#include "core/error.h"
#include "core/model_internal.h"
#include "core/tensor_internal.h"

bp_mlp_config bp_mlp_config_default(int n_layers, const int *widths) {
    bp_mlp_config c;
    memset(&c, 0, sizeof c);
    c.n_layers = n_layers;
    c.widths = widths;
    c.leaky_slope = 0.01f;
    c.init = BP_INIT_TORCH_DEFAULT;
    c.max_batch = 256;
    c.norm_eps = 1e-5f;
    return c;
}

/* The largest width a model may have; keeps every size product inside int for BLAS. */
#define BP_MAX_WIDTH (1 << 24)

/* The norms and residuals: known norms, eps > 0 when one is used, and a residual only where
 * the layer keeps its width (the sum needs the same shape on both sides). */
static bp_status check_blocks(const bp_mlp_config *c) {
    const char *fn = "bp_model_create";
    int any_norm = 0;
    for (int i = 0; c->norms && i < c->n_layers; ++i) {
        if ((unsigned)c->norms[i] >= BP_NORM_COUNT_)
            return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: norms[%d] is %d, not a norm", fn, i,
                            (int)c->norms[i]);
        any_norm |= c->norms[i] != BP_NORM_NONE;
    }
    if (any_norm && !(c->norm_eps > 0.0f && isfinite(c->norm_eps)))
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: norm_eps is %g, expected a finite value > 0",
                        fn, (double)c->norm_eps);
    for (int i = 0; c->residual && i < c->n_layers; ++i) {
        if (c->residual[i] != 0 && c->residual[i] != 1)
            return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: residual[%d] is %d, expected 0 or 1", fn,
                            i, c->residual[i]);
        if (c->residual[i] && c->widths[i] != c->widths[i + 1])
            return bp_error(BP_ERR_INVALID_ARGUMENT,
                            "%s: layer %d has a residual connection but maps %d features to %d "
                            "(a residual needs the same width in and out)",
                            fn, i, c->widths[i], c->widths[i + 1]);
    }
    return BP_OK;
}

static bp_status check_config(const bp_mlp_config *c) {
    const char *fn = "bp_model_create";
    if (c->n_layers < 1 || c->n_layers > 1024)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: n_layers is %d, expected 1..1024", fn,
                        c->n_layers);
    if (!c->widths) return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: widths is NULL", fn);
    for (int i = 0; i <= c->n_layers; ++i)
        if (c->widths[i] < 1 || c->widths[i] > BP_MAX_WIDTH)
            return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: widths[%d] is %d, expected 1..%d", fn, i,
                            c->widths[i], BP_MAX_WIDTH);
    for (int i = 0; c->activations && i < c->n_layers; ++i)
        if ((unsigned)c->activations[i] >= BP_ACT_COUNT_)
            return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: activations[%d] is %d, not an activation",
                            fn, i, (int)c->activations[i]);
    for (int i = 0; c->dropout && i < c->n_layers; ++i)
        if (!(c->dropout[i] >= 0.0f && c->dropout[i] < 1.0f))
            return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: dropout[%d] is %g, expected [0, 1)", fn,
                            i, (double)c->dropout[i]);
    if ((unsigned)c->init >= BP_INIT_COUNT_)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: init is %d, not an init scheme", fn,
                        (int)c->init);
    if ((unsigned)c->precision >= BP_PRECISION_COUNT_)
        return bp_error(BP_ERR_INVALID_ARGUMENT,
                        "%s: precision is %d, not a precision (fp32, tf32 or bf16)", fn,
                        (int)c->precision);
    if (!isfinite(c->leaky_slope))
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: leaky_slope is not finite", fn);
    if (c->max_batch < 1 || c->max_batch > BP_MAX_WIDTH)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: max_batch is %d, expected 1..%d", fn,
                        c->max_batch, BP_MAX_WIDTH);
    return check_blocks(c);
}

/* A backend without the norm and residual entries runs no model that has one. */
static bp_status check_backend_blocks(const bp_model *m) {
    const bp_backend_ops *ops = m->device->ops;
    if (ops->norm_forward && ops->norm_backward && ops->add) return BP_OK;
    for (int l = 0; l < m->n_layers; ++l) {
        const bp_layer *L = &m->layers[l];
        if (bp_layer_is_block(L))
            return bp_error(BP_ERR_UNSUPPORTED,
                            "bp_model_create: layer %d has %s%s%s, which the %s backend cannot "
                            "run yet (no normalization or residual kernels)",
                            l, L->norm ? bp_norm_name(L->norm) : "",
                            L->norm && L->residual ? " and " : "",
                            L->residual ? "a residual connection" : "", ops->name);
    }
    return BP_OK;
}

static void setup_layers(bp_model *m, const bp_mlp_config *c) {
    size_t off = 0;
    for (int l = 0; l < m->n_layers; ++l) {
        bp_layer *L = &m->layers[l];
        L->in = c->widths[l];
        L->out = c->widths[l + 1];
        L->act = c->activations ? c->activations[l]
                                : (l + 1 < m->n_layers ? BP_ACT_RELU : BP_ACT_IDENTITY);
        L->dropout = c->dropout ? c->dropout[l] : 0.0f;
        L->drop_threshold = (uint32_t)llround((double)L->dropout * 16777216.0);
        L->drop_scale = (float)(1.0 / (1.0 - (double)L->dropout));
        L->norm = c->norms ? c->norms[l] : BP_NORM_NONE;
        L->residual = c->residual ? c->residual[l] : 0;
        m->has_blocks |= bp_layer_is_block(L);
        /* state_dict order: the norm (a module before the Linear) first */
        L->nw_off = L->nb_off = SIZE_MAX;
        if (L->norm != BP_NORM_NONE) {
            L->nw_off = off;
            off += (size_t)L->in;
        }
        if (L->norm == BP_NORM_LAYER) {
            L->nb_off = off;
            off += (size_t)L->in;
        }
        L->w_off = off;
        off += (size_t)L->in * (size_t)L->out;
        L->b_off = off;
        off += (size_t)L->out;
    }
    m->n_params = off;
}

static int any_fused_bwd(const bp_model *m) {
    for (int l = 0; l < m->n_layers; ++l)
        if (m->layers[l].fused_bwd) return 1;
    return 0;
}

/* The next buffer of bytes from base + *off (NULL when only measuring), 256-byte aligned. */
static void *take(char *base, size_t *off, size_t bytes) {
    void *p = base ? base + *off : NULL;
    *off += (bytes + 255) & ~(size_t)255;
    return p;
}

/* Carves the workspace block into its buffers; with base NULL only measures. */
static size_t layout_workspace(bp_model *m, char *base) {
    size_t off = 0, b = (size_t)m->max_batch, widest = 0;
#define BP_TAKE(ptr, nbytes) ((ptr) = take(base, &off, (size_t)(nbytes)))
    for (int l = 0; l < m->n_layers; ++l) {
        bp_layer *L = &m->layers[l];
        BP_TAKE(L->z, L->z_bytes);
        if (L->norm != BP_NORM_NONE) {
            BP_TAKE(L->h, b * (size_t)L->in * bp_eltype_size(m->gemm_type));
            BP_TAKE(L->mean, b * sizeof(float));
            BP_TAKE(L->rstd, b * sizeof(float));
        }
        if (bp_layer_has_own_output(L))
            BP_TAKE(L->a, b * (size_t)L->out * bp_eltype_size(L->type));
        else
            L->a = L->z;
        if ((size_t)L->out > widest) widest = (size_t)L->out;
        /* a block's backward also holds the gradient of its input */
        if (m->has_blocks && (size_t)L->in > widest) widest = (size_t)L->in;
    }
    BP_TAKE(m->dout, b * (size_t)m->widths[m->n_layers] * sizeof(float));
    BP_TAKE(m->dbuf[0], b * widest * sizeof(float));
    if (m->gemm_type == BP_EL_BF16) {
        /* The bf16 gradients in place of the second fp32 one: the same bytes. */
        BP_TAKE(m->dz_lp[0], b * widest * 2);
        BP_TAKE(m->dz_lp[1], b * widest * 2);
        BP_TAKE(m->x_lp, b * (size_t)m->widths[0] * 2);
    }
    if (m->gemm_type != BP_EL_BF16 || m->has_blocks)
        BP_TAKE(m->dbuf[1], b * widest * sizeof(float));
    if (m->has_blocks) BP_TAKE(m->dbuf[2], b * widest * sizeof(float));
    if (any_fused_bwd(m)) BP_TAKE(m->bgrad, widest * sizeof(float));
    if (m->scratch_bytes) BP_TAKE(m->scratch, m->scratch_bytes);
    BP_TAKE(m->row_loss, 2 * b * sizeof(float));
    BP_TAKE(m->state, sizeof(bp_step_state));
    m->scalars = base ? (float *)m->state : NULL;
#undef BP_TAKE
    return off;
}

/* Everything creation allocates, checked against what the device has free before any of it
 * is (a model of 2e9 parameters is refused at once, not after minutes of allocating). The sizes
 * cannot overflow (widths and max_batch are at most 2^24, layers at most 1024), and the sum is
 * checked all the same. */
static bp_status check_fits(bp_model *m) {
    size_t bytes = m->n_params * sizeof(float);
    bp_mem_part parts[] = {
        {"parameters", bytes, 0},
        {"gradients", bytes, 0},
        {"bf16 copy of the weights", m->gemm_type == BP_EL_BF16 ? m->n_params * 2 : 0, 0},
        {"workspace", m->workspace_bytes, 0},
        {"host copy of the initial weights", bytes, 1},
    };
    return bp_dev_check_fits(m->device, "bp_model_create", parts,
                             (int)(sizeof parts / sizeof parts[0]));
}

static bp_status alloc_buffers(bp_model *m) {
    size_t bytes = m->n_params * sizeof(float);
    /* The plans decide the fused layers, whose saved state the workspace holds. */
    bp_status st = bp_model_make_plans(m);
    m->workspace_bytes = layout_workspace(m, NULL);
    if (st == BP_OK) st = check_fits(m);
    if (st == BP_OK)
        st = bp_dev_alloc(m->device, bytes, "bp_model_create: parameters", (void **)&m->params);
    if (st == BP_OK)
        st = bp_dev_alloc(m->device, bytes, "bp_model_create: gradients", (void **)&m->grads);
    if (st == BP_OK && m->gemm_type == BP_EL_BF16)
        st = bp_dev_alloc(m->device, m->n_params * sizeof(uint16_t),
                          "bp_model_create: bf16 copy of the weights", (void **)&m->params_bf16);
    if (st == BP_OK)
        st = bp_dev_alloc(m->device, m->workspace_bytes, "bp_model_create: workspace",
                          &m->workspace);
    if (st == BP_OK) layout_workspace(m, m->workspace);
    return st;
}

static bp_status init_weights(bp_model *m, bp_init init) {
    float *host = malloc(m->n_params * sizeof(float));
    if (!host) return bp_error(BP_ERR_OUT_OF_MEMORY, "bp_model_create: no host memory for init");
    bp_init_params(m, init, host);
    bp_status st = m->device->ops->upload(m->device, m->params, host, m->n_params * sizeof(float));
    free(host);
    if (st == BP_OK) st = bp_model_sync_lowp(m);
    if (st == BP_OK) st = m->device->ops->fill(m->device, m->grads, 0.0f, m->n_params);
    if (st == BP_OK) st = bp_model_clear_state(m);
    return st;
}

bp_status bp_model_clear_state(bp_model *m) {
    bp_step_state clear;
    memset(&clear, 0, sizeof clear);
    clear.bad_row = INT64_MAX;
    clear.scale = 1.0f;
    return m->device->ops->upload(m->device, m->state, &clear, sizeof clear);
}

bp_model *bp_model_create(bp_device *device, const bp_mlp_config *config, bp_status *status) {
    bp_status st = BP_OK;
    if (!device)
        st = bp_error(BP_ERR_INVALID_ARGUMENT, "bp_model_create: device is NULL");
    else if (!config)
        st = bp_error(BP_ERR_INVALID_ARGUMENT, "bp_model_create: config is NULL");
    else
        st = check_config(config);
    bp_model *m = NULL;
    if (st == BP_OK) {
        m = calloc(1, sizeof *m);
        if (m) m->widths = malloc(sizeof(int) * (size_t)(config->n_layers + 1));
        if (m) m->layers = calloc((size_t)config->n_layers, sizeof(bp_layer));
        if (!m || !m->widths || !m->layers)
            st = bp_error(BP_ERR_OUT_OF_MEMORY, "bp_model_create: no host memory");
    }
    if (st == BP_OK) {
        m->device = device;
        m->n_layers = config->n_layers;
        memcpy(m->widths, config->widths, sizeof(int) * (size_t)(config->n_layers + 1));
        m->leaky_slope = config->leaky_slope;
        m->seed = config->seed;
        m->max_batch = config->max_batch;
        m->norm_eps = config->norm_eps;
        setup_layers(m, config);
        st = check_backend_blocks(m);
        if (st == BP_OK) st = bp_model_setup_precision(m, config->precision);
        if (st == BP_OK) st = alloc_buffers(m);
    }
    if (st == BP_OK) st = init_weights(m, config->init);
    bp_set_status(status, st);
    if (st != BP_OK) {
        bp_model_free(m);
        return NULL;
    }
    return m;
}

void bp_model_free(bp_model *model) {
    if (!model) return;
    if (model->device) {
        size_t bytes = model->n_params * sizeof(float);
        bp_model_free_plans(model);
        bp_dev_free(model->device, model->params, bytes);
        bp_dev_free(model->device, model->grads, bytes);
        bp_dev_free(model->device, model->params_bf16, model->n_params * sizeof(uint16_t));
        bp_dev_free(model->device, model->workspace, model->workspace_bytes);
    }
    free(model->widths);
    free(model->layers);
    free(model);
}

bp_device *bp_model_device(const bp_model *model) {
    return model ? model->device : NULL;
}

int bp_model_n_layers(const bp_model *model) {
    return model ? model->n_layers : 0;
}

int bp_model_width(const bp_model *model, int index) {
    if (!model || index < 0 || index > model->n_layers) return 0;
    return model->widths[index];
}

int bp_model_max_batch(const bp_model *model) {
    return model ? model->max_batch : 0;
}

size_t bp_model_n_params(const bp_model *model) {
    return model ? model->n_params : 0;
}

bp_activation bp_model_activation(const bp_model *model, int layer) {
    if (!model || layer < 0 || layer >= model->n_layers) return BP_ACT_IDENTITY;
    return model->layers[layer].act;
}

float bp_model_dropout(const bp_model *model, int layer) {
    if (!model || layer < 0 || layer >= model->n_layers) return 0.0f;
    return model->layers[layer].dropout;
}

float bp_model_leaky_slope(const bp_model *model) {
    return model ? model->leaky_slope : 0.0f;
}

bp_norm bp_model_norm(const bp_model *model, int layer) {
    if (!model || layer < 0 || layer >= model->n_layers) return BP_NORM_NONE;
    return model->layers[layer].norm;
}

int bp_model_residual(const bp_model *model, int layer) {
    if (!model || layer < 0 || layer >= model->n_layers) return 0;
    return model->layers[layer].residual;
}

float bp_model_norm_eps(const bp_model *model) {
    return model ? model->norm_eps : 0.0f;
}

bp_status bp_model_norm_offsets(const bp_model *model, int layer, size_t *weight_offset,
                                size_t *bias_offset) {
    const char *fn = "bp_model_norm_offsets";
    if (!model) return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: model is NULL", fn);
    if (layer < 0 || layer >= model->n_layers)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: layer %d is out of range [0, %d)", fn, layer,
                        model->n_layers);
    const bp_layer *L = &model->layers[layer];
    if (L->norm == BP_NORM_NONE)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: layer %d has no norm", fn, layer);
    if (weight_offset) *weight_offset = L->nw_off;
    if (bias_offset) *bias_offset = L->nb_off;
    return BP_OK;
}

uint64_t bp_model_seed(const bp_model *model) {
    return model ? model->seed : 0;
}

uint64_t bp_model_rng_counter(const bp_model *model) {
    return model ? model->forward_calls : 0;
}

bp_status bp_model_set_rng_counter(bp_model *model, uint64_t counter) {
    if (!model) return bp_error(BP_ERR_INVALID_ARGUMENT, "bp_model_set_rng_counter: model is NULL");
    model->forward_calls = counter;
    return BP_OK;
}

bp_status bp_model_layer_offsets(const bp_model *model, int layer, size_t *weight_offset,
                                 size_t *bias_offset) {
    if (!model) return bp_error(BP_ERR_INVALID_ARGUMENT, "bp_model_layer_offsets: model is NULL");
    if (layer < 0 || layer >= model->n_layers)
        return bp_error(BP_ERR_INVALID_ARGUMENT,
                        "bp_model_layer_offsets: layer %d is out of range [0, %d)", layer,
                        model->n_layers);
    if (weight_offset) *weight_offset = model->layers[layer].w_off;
    if (bias_offset) *bias_offset = model->layers[layer].b_off;
    return BP_OK;
}

static bp_status check_flat(const char *fn, const bp_model *m, const void *host, size_t count) {
    if (!m) return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: model is NULL", fn);
    if (!host) return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: host pointer is NULL", fn);
    if (count != m->n_params)
        return bp_error(BP_ERR_SHAPE_MISMATCH, "%s: count is %zu, the model has %zu parameters", fn,
                        count, m->n_params);
    return BP_OK;
}

bp_status bp_model_get_params(const bp_model *model, float *host, size_t count) {
    bp_status st = check_flat("bp_model_get_params", model, host, count);
    if (st != BP_OK) return st;
    return model->device->ops->download(model->device, host, model->params, count * sizeof(float));
}

bp_status bp_model_get_grads(const bp_model *model, float *host, size_t count) {
    bp_status st = check_flat("bp_model_get_grads", model, host, count);
    if (st != BP_OK) return st;
    return model->device->ops->download(model->device, host, model->grads, count * sizeof(float));
}

/* Names flat index i as "layer L weight [r, c]", "layer L bias [r]" or "layer L norm weight
 * [c]" / "layer L norm bias [c]". */
static void name_param(const bp_model *m, size_t i, char *buf, size_t size) {
    for (int l = 0; l < m->n_layers; ++l) {
        const bp_layer *L = &m->layers[l];
        if (L->norm != BP_NORM_NONE && i < L->w_off) {
            int is_w = i < L->nw_off + (size_t)L->in;
            snprintf(buf, size, "layer %d norm %s [%zu]", l, is_w ? "weight" : "bias",
                     i - (is_w ? L->nw_off : L->nb_off));
            return;
        }
        if (i < L->b_off) {
            size_t k = i - L->w_off;
            snprintf(buf, size, "layer %d weight [%zu, %zu]", l, k / (size_t)L->in,
                     k % (size_t)L->in);
            return;
        }
        if (i < L->b_off + (size_t)L->out) {
            snprintf(buf, size, "layer %d bias [%zu]", l, i - L->b_off);
            return;
        }
    }
    snprintf(buf, size, "index %zu", i);
}

bp_status bp_model_set_params(bp_model *model, const float *host, size_t count) {
    bp_status st = check_flat("bp_model_set_params", model, host, count);
    if (st != BP_OK) return st;
    for (size_t i = 0; i < count; ++i)
        if (!isfinite(host[i])) {
            char where[96];
            name_param(model, i, where, sizeof where);
            return bp_error(BP_ERR_NON_FINITE,
                            "bp_model_set_params: value %zu (%s) is %g; parameters unchanged", i,
                            where, (double)host[i]);
        }
    st = model->device->ops->upload(model->device, model->params, host, count * sizeof(float));
    return st == BP_OK ? bp_model_sync_lowp(model) : st;
}

int bp_model_find_nonfinite_grad(bp_model *m, char *buf, size_t size) {
    float *host = malloc(m->n_params * sizeof(float));
    if (!host) return 0;
    int found = 0;
    if (m->device->ops->download(m->device, host, m->grads, m->n_params * sizeof(float)) != BP_OK) {
        free(host);
        return 0;
    }
    for (size_t i = 0; i < m->n_params && !found; ++i)
        if (!isfinite(host[i])) {
            name_param(m, i, buf, size);
            found = 1;
        }
    if (!found && m->n_params > 0) {
        /* Every element is finite but the squared norm overflowed float (|g| past ~1e19):
         * name the largest element, where the run blew up, rather than no place at all. */
        size_t big = 0;
        for (size_t i = 1; i < m->n_params; ++i)
            if (fabsf(host[i]) > fabsf(host[big])) big = i;
        char name[96];
        name_param(m, big, name, sizeof name);
        snprintf(buf, size, "%s (|g| = %.3g; the squared norm overflows float)", name,
                 (double)fabsf(host[big]));
        found = 1;
    }
    free(host);
    return found;
}

bp_status bp_model_read_scalars(bp_model *m, float out[BP_SCALAR_COUNT]) {
    return m->device->ops->download(m->device, out, m->scalars, sizeof(float) * BP_SCALAR_COUNT);
}

bp_status bp_model_zero_grad(bp_model *model) {
    if (!model) return bp_error(BP_ERR_INVALID_ARGUMENT, "bp_model_zero_grad: model is NULL");
    return model->device->ops->fill(model->device, model->grads, 0.0f, model->n_params);
}

bp_status bp_model_grad_norm(bp_model *model, float *norm) {
    if (!model || !norm)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "bp_model_grad_norm: %s is NULL",
                        model ? "norm" : "model");
    const bp_backend_ops *ops = model->device->ops;
    float s[BP_SCALAR_COUNT];
    bp_status st = ops->sum_squares(model->device, model->n_params, model->grads,
                                    model->scalars + BP_SCALAR_NORM2);
    if (st == BP_OK) st = bp_model_read_scalars(model, s);
    if (st == BP_OK) *norm = (float)sqrt((double)s[BP_SCALAR_NORM2]);
    return st;
}

bp_status bp_model_layer_grad_norms(const bp_model *model, double *norms, int count) {
    const char *fn = "bp_model_layer_grad_norms";
    if (!model || !norms)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn, model ? "norms" : "model");
    if (count != model->n_layers)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: count %d is not the model's %d layers", fn,
                        count, model->n_layers);
    float *g = malloc(model->n_params * sizeof(float) + 1);
    if (!g)
        return bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no host memory for %zu floats", fn,
                        model->n_params);
    bp_status st = bp_model_get_grads(model, g, model->n_params);
    for (int l = 0; st == BP_OK && l < model->n_layers; ++l) {
        size_t w, b, out = (size_t)model->widths[l + 1], nw = out * (size_t)model->widths[l];
        bp_model_layer_offsets(model, l, &w, &b);
        double sum = 0.0; /* in double: a layer may hold millions of squares */
        for (size_t i = 0; i < nw; ++i)
            sum += (double)g[w + i] * g[w + i];
        for (size_t i = 0; i < out; ++i)
            sum += (double)g[b + i] * g[b + i];
        norms[l] = sqrt(sum);
    }
    free(g);
    return st;
}
