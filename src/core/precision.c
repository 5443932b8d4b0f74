/* Precision modes: the GEMMs of each layer in the model's types, which layers fuse their bias
 * and activation into a GEMM's epilogue, and the backend plans made once per model. Where each
 * rounding happens is in docs/precision.md; the order of the ops is in pass.c. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backprop/status.h"
#include "core/device_internal.h"
#include "core/error.h"
#include "core/model_internal.h"

bp_precision bp_model_precision(const bp_model *model) {
    return model ? model->precision : BP_PRECISION_FP32;
}

bp_status bp_model_setup_precision(bp_model *m, bp_precision precision) {
    const bp_backend_ops *ops = m->device->ops;
    m->precision = precision;
    m->gemm_type = precision == BP_PRECISION_BF16 ? BP_EL_BF16 : BP_EL_F32;
    m->tf32 = precision == BP_PRECISION_TF32;
    if (precision != BP_PRECISION_FP32 &&
        (!ops->gemm_ex || !ops->cast || !ops->bias_act_forward_ex || !ops->act_backward_ex))
        return bp_error(BP_ERR_UNSUPPORTED,
                        "bp_model_create: the %s backend runs fp32 models only, not precision %s",
                        ops->name, bp_precision_name(precision));
    /* The hidden layers keep bf16 activations; the last layer's output stays fp32 for the
     * loss. */
    for (int l = 0; l < m->n_layers; ++l)
        m->layers[l].type =
            m->gemm_type == BP_EL_BF16 && l + 1 < m->n_layers ? BP_EL_BF16 : BP_EL_F32;
    return BP_OK;
}

/* base + bytes. The plans are made before the buffers exist (their sizes decide what the
 * model allocates), when base is NULL: then the offset alone stands for the pointer, whose
 * alignment is all a plan reads. */
static void *at(const void *base, size_t bytes) {
    return base ? (char *)base + bytes : (void *)(uintptr_t)bytes;
}

static float *param_at(const bp_model *m, size_t off) {
    return at(m->params, off * sizeof(float));
}

static float *grad_at(const bp_model *m, size_t off) {
    return at(m->grads, off * sizeof(float));
}

/* The weights of layer L as a GEMM operand: the bf16 copy in bf16 mode. */
static const void *weights(const bp_model *m, const bp_layer *L) {
    if (m->gemm_type == BP_EL_BF16) return at(m->params_bf16, L->w_off * sizeof(uint16_t));
    return param_at(m, L->w_off);
}

static bp_gemm_desc base_desc(const bp_model *m) {
    bp_gemm_desc g;
    memset(&g, 0, sizeof g);
    g.alpha = 1.0f;
    g.ab_type = m->gemm_type;
    g.tf32 = m->tf32;
    g.c_type = BP_EL_F32;
    g.slope = m->leaky_slope;
    g.scratch = m->scratch;
    return g;
}

/* z = in W^T (+ b, act when fused): [rows, out] from in [rows, in] and W [out, in]. Unfused, it
 * writes the fp32 product: into z itself for an fp32 layer, else into dbuf[0], from which
 * bias_act_forward_ex makes the bf16 z and a. */
bp_gemm_desc bp_gemm_forward(const bp_model *m, int l, int rows, const void *in) {
    const bp_layer *L = &m->layers[l];
    bp_gemm_desc g = base_desc(m);
    g.trans_b = 1;
    g.m = rows;
    g.n = L->out;
    g.k = L->in;
    g.a = in;
    g.lda = L->in;
    g.b = weights(m, L);
    g.ldb = L->in;
    g.ldc = L->out;
    if (L->fused_fwd) {
        g.epilogue = BP_EPI_BIAS_ACT;
        g.act = L->act;
        g.bias = param_at(m, L->b_off);
        g.aux = L->act != BP_ACT_IDENTITY ? L->z : NULL;
        g.c = bp_layer_has_own_output(L) ? L->a : L->z;
        g.c_type = L->type;
    } else {
        g.c = L->type == BP_EL_F32 ? L->z : (void *)m->dbuf[0];
    }
    return g;
}

/* dW (+)= dz^T in: [out, in] from dz [rows, out] and in [rows, in]. */
bp_gemm_desc bp_gemm_dw(const bp_model *m, int l, int rows, const void *dz, const void *in,
                        float beta) {
    const bp_layer *L = &m->layers[l];
    bp_gemm_desc g = base_desc(m);
    g.trans_a = 1;
    g.m = L->out;
    g.n = L->in;
    g.k = rows;
    g.beta = beta;
    g.a = dz;
    g.lda = L->out;
    g.b = in;
    g.ldb = L->in;
    g.c = grad_at(m, L->w_off);
    g.ldc = L->in;
    return g;
}

/* dx = dz W: [rows, in]. When the layer below is fused backward, the epilogue turns it into
 * that layer's dz (in gemm_type) and bias gradient. */
bp_gemm_desc bp_gemm_dx(const bp_model *m, int l, int rows, const void *dz, void *out,
                        int overwrite) {
    const bp_layer *L = &m->layers[l];
    bp_gemm_desc g = base_desc(m);
    g.m = rows;
    g.n = L->in;
    g.k = L->out;
    g.a = dz;
    g.lda = L->out;
    g.b = weights(m, L);
    g.ldb = L->in;
    g.c = out;
    g.ldc = L->in;
    if (l > 0 && m->layers[l - 1].fused_bwd) {
        const bp_layer *below = &m->layers[l - 1];
        g.epilogue = BP_EPI_DACT_BGRAD;
        g.act = below->act;
        g.aux = below->z;
        g.bias_grad = overwrite ? grad_at(m, below->b_off) : m->bgrad;
        g.c_type = m->gemm_type;
    }
    return g;
}

static int plain_fp32(const bp_gemm_desc *g) {
    return g->ab_type == BP_EL_F32 && !g->tf32 && g->c_type == BP_EL_F32 &&
           g->epilogue == BP_EPI_NONE;
}

/* The plan of a plain GEMM the backend refused to plan (a cuBLASLt heuristic with nothing to
 * offer, or that answered INVALID_VALUE): the GEMM is composed of the plain entries instead. */
static char composed_marker;
#define BP_PLAN_COMPOSED ((void *)&composed_marker)

static size_t round256(size_t bytes) {
    return (bytes + 255) & ~(size_t)255;
}

/* Elements a row-major operand of rows x cols with row stride ld spans. */
static size_t extent(int rows, int cols, int ld) {
    return rows > 0 && cols > 0 ? (size_t)(rows - 1) * (size_t)ld + (size_t)cols : 0;
}

static size_t extent_a(const bp_gemm_desc *g) {
    return extent(g->trans_a ? g->k : g->m, g->trans_a ? g->m : g->k, g->lda);
}

static size_t extent_b(const bp_gemm_desc *g) {
    return extent(g->trans_b ? g->n : g->k, g->trans_b ? g->k : g->n, g->ldb);
}

/* Scratch a composed GEMM takes: bf16 operands widened to fp32, and the fp32 product of a bf16
 * output. */
static size_t composed_bytes(const bp_gemm_desc *g) {
    size_t bytes = 0;
    if (g->ab_type == BP_EL_BF16)
        bytes += round256(extent_a(g) * sizeof(float)) + round256(extent_b(g) * sizeof(float));
    if (g->c_type == BP_EL_BF16) bytes += round256((size_t)g->m * (size_t)g->ldc * sizeof(float));
    return bytes;
}

/* A plain GEMM from the plain entries: bf16 operands widened exactly (cast), the fp32 product
 * (gemm), a bf16 output rounded once (cast): the rounding points of gemm_ex. A TF32 GEMM runs
 * in fp32 here, unrounded: no entry rounds to TF32, and fp32 is nearer the exact product than
 * the mode asks for. */
static bp_status composed_gemm(bp_model *m, const bp_gemm_desc *g) {
    const bp_backend_ops *ops = m->device->ops;
    const float *a = (const float *)g->a, *b = (const float *)g->b;
    char *scratch = (char *)g->scratch;
    bp_status st = BP_OK;
    if (g->ab_type == BP_EL_BF16) {
        float *wa = (float *)scratch;
        float *wb = (float *)(scratch + round256(extent_a(g) * sizeof(float)));
        st = ops->cast(m->device, extent_a(g), g->a, BP_EL_BF16, wa, BP_EL_F32);
        if (st == BP_OK) st = ops->cast(m->device, extent_b(g), g->b, BP_EL_BF16, wb, BP_EL_F32);
        a = wa, b = wb;
        scratch += round256(extent_a(g) * sizeof(float)) + round256(extent_b(g) * sizeof(float));
    }
    if (st != BP_OK) return st;
    if (g->c_type == BP_EL_F32)
        return ops->gemm(m->device, g->trans_a, g->trans_b, g->m, g->n, g->k, g->alpha, a, g->lda,
                         b, g->ldb, g->beta, (float *)g->c, g->ldc);
    float *c = (float *)scratch; /* a bf16 output takes beta 0 */
    st = ops->gemm(m->device, g->trans_a, g->trans_b, g->m, g->n, g->k, g->alpha, a, g->lda, b,
                   g->ldb, 0.0f, c, g->ldc);
    for (int r = 0; r < g->m && st == BP_OK; r += g->ldc == g->n ? g->m : 1) {
        size_t count = g->ldc == g->n ? (size_t)g->m * (size_t)g->n : (size_t)g->n;
        st = ops->cast(m->device, count, c + (size_t)r * (size_t)g->ldc, BP_EL_F32,
                       (uint16_t *)g->c + (size_t)r * (size_t)g->ldc, BP_EL_BF16);
    }
    return st;
}

/* A backend plan as the model keeps it, with what composing its GEMM takes should the backend
 * refuse it when it runs: the scratch for its bf16 operands' fp32 copies (compose_bytes at the
 * plan's shape; allocated on the first refusal that needs more than the model's scratch) and
 * whether the refusal was said. */
typedef struct model_plan {
    void *backend;
    size_t compose_bytes;
    void *scratch;
    int said;
} model_plan;

/* A fused bias without an activation (BP_EPI_BIAS_ACT, identity, nothing saved), composed: the
 * fp32 product, then the bias added in fp32 and the sum stored once in c's type, as the
 * epilogue does. A bf16 c takes the product in the scratch after the operands' copies. */
static bp_status composed_bias(bp_model *m, const bp_gemm_desc *g) {
    const bp_backend_ops *ops = m->device->ops;
    bp_gemm_desc p = *g;
    p.epilogue = BP_EPI_NONE;
    p.bias = NULL;
    p.c_type = BP_EL_F32;
    if (g->c_type == BP_EL_F32) {
        bp_status st = composed_gemm(m, &p);
        return st != BP_OK ? st
                           : ops->bias_act_forward(m->device, g->m, g->n, g->bias, (float *)g->c,
                                                   (float *)g->c, BP_ACT_IDENTITY, g->slope);
    }
    size_t operands = 0;
    if (g->ab_type == BP_EL_BF16)
        operands = round256(extent_a(g) * sizeof(float)) + round256(extent_b(g) * sizeof(float));
    float *acc = (float *)((char *)g->scratch + operands);
    p.c = acc;
    bp_status st = composed_gemm(m, &p);
    return st != BP_OK
               ? st
               : ops->bias_act_forward_ex(m->device, g->m, g->n, g->bias, acc, g->c, g->c_type,
                                          g->c, g->c_type, BP_ACT_IDENTITY, g->slope);
}

/* Whether a GEMM refused when it runs can be composed: one without an epilogue, or a bias
 * alone over rows of the output's width. */
static int composable(const bp_gemm_desc *g) {
    if (g->epilogue == BP_EPI_NONE) return 1;
    return g->epilogue == BP_EPI_BIAS_ACT && g->act == BP_ACT_IDENTITY && !g->aux && g->ldc == g->n;
}

/* A planned GEMM the backend refused when it ran: its heuristic, asked again for a shape or
 * alignment the plan was not made for (a short last batch, a caller's x or dx at another
 * alignment), offered nothing. Without an epilogue, or with a bias alone, it is composed, this
 * call only (the plan keeps its algorithm for the shapes it fits), and said once per plan. An
 * epilogue with an activation is not: the backend keeps the activation's state in its own
 * format (the forward's aux, which the fused backward reads), which no plain entry writes or
 * reads. Out of memory is never a refusal.
 * In a step recorded as a graph (train.c), the first step of a shape runs eagerly, so the
 * refusal, the scratch's allocation and the line on stderr happen there; the recording asks
 * the heuristic again, is refused again and records the composed GEMM, which its replays run
 * without asking. */
static bp_status refused_at_run_time(bp_model *m, const bp_gemm_desc *g, model_plan *p,
                                     bp_status st) {
    if (st == BP_ERR_OUT_OF_MEMORY) return st;
    char why[512];
    snprintf(why, sizeof why, "%s", bp_last_error());
    if (!composable(g))
        return bp_error(st,
                        "%s (a fused epilogue with an activation, refused when it ran: it is not "
                        "composed)",
                        why);
    bp_gemm_desc c = *g;
    size_t need = composed_bytes(g);
    if (need > m->scratch_bytes) {
        if (need > p->compose_bytes)
            return bp_error(st, "%s (refused when it ran, and larger than its plan)", why);
        if (!p->scratch) {
            bp_status a = bp_dev_alloc(m->device, p->compose_bytes,
                                       "a GEMM composed when its plan was refused", &p->scratch);
            if (a != BP_OK) return a;
        }
        c.scratch = p->scratch;
    }
    if (!p->said) {
        p->said = 1;
        fprintf(stderr,
                "backprop: a GEMM (m=%d n=%d k=%d) on %s was refused when it ran, composed of "
                "the plain entries for such calls instead (slower; the same roundings, a TF32 "
                "one in fp32): %s\n",
                g->m, g->n, g->k, m->device->name, why);
    }
    return c.epilogue == BP_EPI_NONE ? composed_gemm(m, &c) : composed_bias(m, &c);
}

bp_status bp_model_gemm(bp_model *m, const bp_gemm_desc *g, void *plan) {
    const bp_backend_ops *ops = m->device->ops;
    if (plan == BP_PLAN_COMPOSED) return composed_gemm(m, g);
    if (!plan && plain_fp32(g))
        return ops->gemm(m->device, g->trans_a, g->trans_b, g->m, g->n, g->k, g->alpha,
                         (const float *)g->a, g->lda, (const float *)g->b, g->ldb, g->beta,
                         (float *)g->c, g->ldc);
    if (!plan) return ops->gemm_ex(m->device, g, NULL);
    model_plan *p = (model_plan *)plan;
    bp_status st = ops->gemm_ex(m->device, g, p->backend);
    return st == BP_OK ? st : refused_at_run_time(m, g, p, st);
}

/* ---- plans ----------------------------------------------------------------------------- */

/* The activations a fused layer may have: those the backend's epilogues may offer (it says
 * per plan whether it does), plus the identity (bias only). */
static int may_fuse(const bp_model *m, int l) {
    const bp_layer *L = &m->layers[l];
    if (L->drop_threshold) return 0; /* dropout sits between the activation and the next GEMM */
    /* A block layer runs unfused, and the layer below one cannot take its derivative from the
     * block's dX GEMM (a norm and a residual sit between them). */
    if (bp_layer_is_block(L) || (l + 1 < m->n_layers && bp_layer_is_block(&m->layers[l + 1])))
        return 0;
    if (L->act == BP_ACT_IDENTITY) return 1;
    /* The derivative is fused into the dX GEMM of the layer above, so the last layer has none */
    return l + 1 < m->n_layers && (L->act == BP_ACT_RELU || L->act == BP_ACT_GELU_TANH);
}

static bp_status make_plan(bp_model *m, const bp_gemm_desc *g, void **plan, size_t *aux) {
    size_t unused = 0;
    void *backend = NULL;
    *plan = NULL;
    bp_status st = m->device->ops->gemm_plan(m->device, g, &backend, aux ? aux : &unused);
    if (st != BP_OK) return st;
    model_plan *p = calloc(1, sizeof *p);
    if (!p) {
        m->device->ops->gemm_plan_free(m->device, backend);
        return bp_error(BP_ERR_OUT_OF_MEMORY, "bp_model_create: no host memory for a GEMM plan");
    }
    p->backend = backend;
    if (composable(g)) p->compose_bytes = composed_bytes(g);
    *plan = p;
    return BP_OK;
}

static void free_plan(bp_model *m, void **plan) {
    if (*plan && *plan != BP_PLAN_COMPOSED) {
        model_plan *p = (model_plan *)*plan;
        m->device->ops->gemm_plan_free(m->device, p->backend);
        bp_dev_free(m->device, p->scratch, p->compose_bytes);
        free(p);
    }
    *plan = NULL;
}

/* A plan the backend refused, for a reason other than memory: the GEMM is composed instead.
 * The first reason is kept to be said once when the model's plans are made. */
typedef struct fallbacks {
    int count;
    char first[256];
} fallbacks;

static int falls_back(bp_status st, fallbacks *fb) {
    if (st == BP_OK || st == BP_ERR_OUT_OF_MEMORY) return 0;
    if (fb->count++ == 0) snprintf(fb->first, sizeof fb->first, "%s", bp_last_error());
    return 1;
}

/* Tries to fuse layer l: its forward epilogue, and (with an activation) its derivative in the
 * layer above's dX GEMM. Both or neither: a fused forward saves the activation's state in the
 * backend's format, which only the fused backward reads. */
static bp_status try_fuse(bp_model *m, int l, fallbacks *fb) {
    int rows = m->max_batch;
    bp_layer *L = &m->layers[l];
    L->fused_fwd = 1;
    L->fused_bwd = L->act != BP_ACT_IDENTITY;
    bp_gemm_desc f = bp_gemm_forward(m, l, rows, NULL);
    size_t aux = 0;
    bp_status st = make_plan(m, &f, &L->plan[BP_GEMM_FWD], &aux);
    if (st == BP_OK && L->fused_bwd) {
        bp_gemm_desc d = bp_gemm_dx(m, l + 1, rows, NULL, NULL, 1);
        st = make_plan(m, &d, &m->layers[l + 1].plan[BP_GEMM_DX], NULL);
    }
    if (st == BP_OK) {
        if (L->fused_bwd) L->z_bytes = aux;
        return BP_OK;
    }
    free_plan(m, &L->plan[BP_GEMM_FWD]);
    L->fused_fwd = L->fused_bwd = 0;
    /* Not fusable: composed instead. A backend that fuses nothing for these types says so
     * with BP_ERR_UNSUPPORTED, which is no news; any other refusal is. */
    if (st == BP_ERR_UNSUPPORTED) return BP_OK;
    return falls_back(st, fb) ? BP_OK : st;
}

/* Largest scratch any of the model's GEMMs needs: gemm_ex's, or a composed GEMM's. */
static void size_scratch(bp_model *m) {
    const bp_backend_ops *ops = m->device->ops;
    m->scratch_bytes = 0;
    int rows = m->max_batch;
    for (int l = 0; l < m->n_layers; ++l) {
        bp_gemm_desc g[3] = {bp_gemm_forward(m, l, rows, NULL),
                             bp_gemm_dw(m, l, rows, NULL, NULL, 0),
                             bp_gemm_dx(m, l, rows, NULL, NULL, 1)};
        for (int k = 0; k < 3; ++k) {
            size_t need = 0;
            if (m->layers[l].plan[k] == BP_PLAN_COMPOSED)
                need = composed_bytes(&g[k]);
            else if (ops->gemm_scratch && m->precision != BP_PRECISION_FP32)
                need = ops->gemm_scratch(&g[k]);
            if (need > m->scratch_bytes) m->scratch_bytes = need;
        }
    }
}

bp_status bp_model_make_plans(bp_model *m) {
    int rows = m->max_batch;
    for (int l = 0; l < m->n_layers; ++l) {
        bp_layer *L = &m->layers[l];
        L->z_bytes = (size_t)rows * (size_t)L->out * bp_eltype_size(L->type);
    }
    if (!m->device->ops->gemm_plan) {
        size_scratch(m);
        return BP_OK;
    }
    bp_status st = BP_OK;
    fallbacks fb = {0, ""};
    for (int l = 0; l < m->n_layers && st == BP_OK; ++l)
        if (may_fuse(m, l)) st = try_fuse(m, l, &fb);
    for (int l = 0; l < m->n_layers && st == BP_OK; ++l) {
        bp_layer *L = &m->layers[l];
        bp_gemm_desc g[BP_GEMM_COUNT] = {bp_gemm_forward(m, l, rows, NULL),
                                         bp_gemm_dw(m, l, rows, NULL, NULL, 0),
                                         bp_gemm_dx(m, l, rows, NULL, NULL, 1)};
        for (int k = 0; k < BP_GEMM_COUNT && st == BP_OK; ++k) {
            if (L->plan[k]) continue;
            st = make_plan(m, &g[k], &L->plan[k], NULL);
            /* A plain GEMM the backend will not plan is composed: a plan failure never refuses
             * a model. */
            if (falls_back(st, &fb)) L->plan[k] = BP_PLAN_COMPOSED, st = BP_OK;
        }
    }
    /* Said once per model: the GEMMs run, slower, through the plain entries. */
    if (fb.count)
        fprintf(stderr,
                "backprop: bp_model_create on %s: %d GEMM plan(s) refused, composed of the plain "
                "entries instead (slower; the same roundings); the first: %s\n",
                m->device->name, fb.count, fb.first);
    /* After the fusion choices: a fused epilogue may need scratch of its own. */
    size_scratch(m);
    return st;
}

void bp_model_free_plans(bp_model *m) {
    if (!m->layers || !m->device || !m->device->ops->gemm_plan_free) return;
    for (int l = 0; l < m->n_layers; ++l)
        for (int k = 0; k < BP_GEMM_COUNT; ++k)
            free_plan(m, &m->layers[l].plan[k]);
}
