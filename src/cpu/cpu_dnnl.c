/* The CPU backend's matrix engine on oneDNN: one matmul primitive per GEMM of a model, made
 * once when the model is created (gemm_plan), so that a training step only sets the operands'
 * addresses and runs it: no primitive is made and nothing is allocated in a step.
 *
 * bf16 operands are multiplied as bf16 with fp32 accumulation on the CPU's bf16 units (AMX,
 * AVX512-BF16); a CPU without them widens the operands to fp32 as the CBLAS build does
 * (bp_cpu_gemm_widen), because oneDNN's emulation of bf16 products is slower than that. TF32 has
 * no CPU units: that mode always widens (rounding each operand to TF32 first).
 *
 * Fused epilogues: the bias is a matmul bias (fp32, added to the fp32 sum before the output is
 * rounded). A ReLU layer saves its z (in the output's type, the composed path's z) as aux and
 * makes a = max(z, 0) from it, which is act(z) rounded as the composed path rounds it (a ReLU
 * commutes with rounding); its backward multiplies the dX product by z > 0 and sums the bias
 * gradient in one pass. Other activations are composed by the core. */
#include "cpu/cpu_internal.h"

#if BP_HAVE_ONEDNN

#include <dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "kernels/bp_math.h"

/* ---- the calls that differ between oneDNN 2.x and 3.x ------------------------------------
 * Everything version-specific is in this block: memory descriptors are values in 2.x and
 * handles in 3.x, an operation descriptor exists only in 2.x, and post-ops lost their scale
 * argument in 3.x. Porting to 3.x is a change of these functions alone. */
#if DNNL_VERSION_MAJOR >= 3
typedef dnnl_memory_desc_t md_t; /* a handle */
static dnnl_status_t md_make(md_t *md, dnnl_dim_t rows, dnnl_dim_t cols, dnnl_data_type_t type,
                             dnnl_dim_t row_stride, dnnl_dim_t col_stride) {
    dnnl_dims_t dims = {rows, cols}, strides = {row_stride, col_stride};
    return dnnl_memory_desc_create_with_strides(md, 2, dims, type, strides);
}
static void md_free(md_t md) {
    if (md) dnnl_memory_desc_destroy(md);
}
static const_dnnl_memory_desc_t md_ref(const md_t *md) {
    return *md;
}
static dnnl_status_t matmul_pd(dnnl_primitive_desc_t *pd, dnnl_engine_t engine, const md_t *a,
                               const md_t *b, const md_t *bias, const md_t *c,
                               const_dnnl_primitive_attr_t attr) {
    return dnnl_matmul_primitive_desc_create(pd, engine, *a, *b, bias ? *bias : NULL, *c, attr);
}
static dnnl_status_t post_linear(dnnl_post_ops_t po, float alpha) {
    return dnnl_post_ops_append_eltwise(po, dnnl_eltwise_linear, alpha, 0.0f);
}
static dnnl_status_t post_sum(dnnl_post_ops_t po, float beta) {
    return dnnl_post_ops_append_sum(po, beta, 0, dnnl_data_type_undef);
}
#else
typedef dnnl_memory_desc_t md_t; /* a value */
static dnnl_status_t md_make(md_t *md, dnnl_dim_t rows, dnnl_dim_t cols, dnnl_data_type_t type,
                             dnnl_dim_t row_stride, dnnl_dim_t col_stride) {
    dnnl_dims_t dims = {rows, cols}, strides = {row_stride, col_stride};
    return dnnl_memory_desc_init_by_strides(md, 2, dims, type, strides);
}
static void md_free(md_t md) {
    (void)md;
}
static const dnnl_memory_desc_t *md_ref(const md_t *md) {
    return md;
}
static dnnl_status_t matmul_pd(dnnl_primitive_desc_t *pd, dnnl_engine_t engine, const md_t *a,
                               const md_t *b, const md_t *bias, const md_t *c,
                               const_dnnl_primitive_attr_t attr) {
    dnnl_matmul_desc_t op;
    dnnl_status_t s = dnnl_matmul_desc_init(&op, a, b, bias, c);
    return s == dnnl_success ? dnnl_primitive_desc_create(pd, &op, attr, engine, NULL) : s;
}
static dnnl_status_t post_linear(dnnl_post_ops_t po, float alpha) {
    return dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_linear, alpha, 0.0f);
}
static dnnl_status_t post_sum(dnnl_post_ops_t po, float beta) {
    return dnnl_post_ops_append_sum(po, beta);
}
#endif

/* The same call in both versions (a pointer to a descriptor in 2.x, a handle in 3.x). */
static size_t scratchpad_bytes(const_dnnl_primitive_desc_t pd) {
    return dnnl_memory_desc_get_size(dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0));
}

/* Whether the CPU (as oneDNN sees it, DNNL_MAX_CPU_ISA included) multiplies bf16 natively:
 * AVX512-BF16 or AMX. The ISA values are nested bit sets in both API versions. */
static int native_bf16(void) {
    unsigned isa = (unsigned)dnnl_get_effective_cpu_isa();
    unsigned need = (unsigned)dnnl_cpu_isa_avx512_core_bf16;
    return (isa & need) == need;
}

/* ---- the engine's state, per device --------------------------------------------------------- */
typedef struct engine {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    /* One scratchpad for every primitive of the device (they run one at a time), grown when a
     * primitive is made, never while one runs. */
    void *scratchpad;
    size_t scratchpad_bytes;
    dnnl_memory_t scratchpad_mem; /* over scratchpad, remade when it grows */
    uint64_t made;                /* primitives made so far (tests: a step makes none) */
} engine;

static engine *engine_of(bp_device *device) {
    bp_cpu_state *s = (bp_cpu_state *)device->impl;
    return s ? (engine *)s->engine : NULL;
}

static const char *dnnl_status_text(dnnl_status_t s) {
    switch (s) {
    case dnnl_success:
        return "success";
    case dnnl_out_of_memory:
        return "out of memory";
    case dnnl_invalid_arguments:
        return "invalid arguments";
    case dnnl_unimplemented:
        return "unimplemented";
    case dnnl_runtime_error:
        return "runtime error";
    default:
        return "error";
    }
}

static bp_status dnnl_fail(dnnl_status_t s, const char *call, const bp_gemm_desc *g) {
    bp_status st = s == dnnl_out_of_memory   ? BP_ERR_OUT_OF_MEMORY
                   : s == dnnl_unimplemented ? BP_ERR_UNSUPPORTED
                                             : BP_ERR_DEVICE;
    if (!g) return bp_error(st, "cpu oneDNN: %s failed: %s", call, dnnl_status_text(s));
    return bp_error(st,
                    "cpu oneDNN: %s failed for the GEMM m=%d n=%d k=%d (trans %d%d, %s operands, "
                    "epilogue %d): %s",
                    call, g->m, g->n, g->k, g->trans_a, g->trans_b,
                    g->ab_type == BP_EL_BF16 ? "bf16" : "fp32", (int)g->epilogue,
                    dnnl_status_text(s));
}

bp_status bp_dnnl_init(bp_device *device) {
    bp_cpu_state *s = (bp_cpu_state *)device->impl;
    engine *e = calloc(1, sizeof *e);
    if (!e) return bp_error(BP_ERR_OUT_OF_MEMORY, "cpu init: no host memory for oneDNN");
    dnnl_status_t r = dnnl_engine_create(&e->engine, dnnl_cpu, 0);
    if (r == dnnl_success) r = dnnl_stream_create(&e->stream, e->engine, dnnl_stream_default_flags);
    if (r != dnnl_success) {
        if (e->engine) dnnl_engine_destroy(e->engine);
        free(e);
        return dnnl_fail(r, "engine and stream creation", NULL);
    }
    s->engine = e;
    return BP_OK;
}

void bp_dnnl_destroy(bp_device *device) {
    engine *e = engine_of(device);
    if (!e) return;
    if (e->scratchpad_mem) dnnl_memory_destroy(e->scratchpad_mem);
    free(e->scratchpad);
    dnnl_stream_destroy(e->stream);
    dnnl_engine_destroy(e->engine);
    free(e);
    ((bp_cpu_state *)device->impl)->engine = NULL;
}

/* Grows the shared scratchpad to at least bytes (while no primitive runs). */
static bp_status grow_scratchpad(engine *e, size_t bytes) {
    if (bytes <= e->scratchpad_bytes) return BP_OK;
    size_t rounded = (bytes + 63) / 64 * 64;
    void *p = aligned_alloc(64, rounded);
    if (!p)
        return bp_error(BP_ERR_OUT_OF_MEMORY, "cpu oneDNN: %zu bytes of scratchpad failed",
                        rounded);
    md_t md;
    memset(&md, 0, sizeof md);
    dnnl_memory_t mem = NULL;
    dnnl_status_t r = md_make(&md, 1, (dnnl_dim_t)rounded, dnnl_u8, (dnnl_dim_t)rounded, 1);
    if (r == dnnl_success) r = dnnl_memory_create(&mem, md_ref(&md), e->engine, p);
    md_free(md);
    if (r != dnnl_success) {
        free(p);
        return dnnl_fail(r, "scratchpad memory", NULL);
    }
    if (e->scratchpad_mem) dnnl_memory_destroy(e->scratchpad_mem);
    free(e->scratchpad);
    e->scratchpad = p;
    e->scratchpad_bytes = rounded;
    e->scratchpad_mem = mem;
    return BP_OK;
}

/* ---- one primitive: a GEMM at one shape ----------------------------------------------------- */
struct prim;
struct prim_spec;
static bp_status prim_make_here(engine *e, const struct prim_spec *s, const bp_gemm_desc *g,
                                struct prim *p);
enum { ARG_A, ARG_B, ARG_C, ARG_BIAS, ARG_COUNT };

typedef struct prim {
    int m, n, k, lda, ldb, ldc; /* the shape it was made for */
    int threads;                /* it was made for (oneDNN fixes its partition then) */
    float alpha, beta;          /* its post-ops (fixed when it is made) */
    dnnl_primitive_t p;
    dnnl_memory_t mem[ARG_COUNT]; /* handles set per call; bias NULL without one */
    char impl[64];                /* oneDNN's implementation, e.g. brg:avx512_core_amx */
} prim;

static dnnl_data_type_t dt_of(bp_eltype t) {
    return t == BP_EL_BF16 ? dnnl_bf16 : dnnl_f32;
}

/* What a plan makes its matmul from: op(A) op(B) (+ bias), alpha and beta as post-ops, into an
 * output of out_type. */
typedef struct prim_spec {
    bp_eltype ab_type, out_type;
    int trans_a, trans_b, bias;
    float alpha, beta;
} prim_spec;

static void prim_free(prim *p) {
    for (int i = 0; i < ARG_COUNT; ++i)
        if (p->mem[i]) dnnl_memory_destroy(p->mem[i]);
    if (p->p) dnnl_primitive_destroy(p->p);
    memset(p, 0, sizeof *p);
}

static dnnl_status_t make_attr(const prim_spec *s, dnnl_primitive_attr_t *attr) {
    dnnl_post_ops_t po = NULL;
    dnnl_status_t r = dnnl_primitive_attr_create(attr);
    if (r == dnnl_success)
        r = dnnl_primitive_attr_set_scratchpad_mode(*attr, dnnl_scratchpad_mode_user);
    if (r == dnnl_success && (s->alpha != 1.0f || s->beta != 0.0f)) {
        r = dnnl_post_ops_create(&po);
        if (r == dnnl_success && s->alpha != 1.0f) r = post_linear(po, s->alpha);
        if (r == dnnl_success && s->beta != 0.0f) r = post_sum(po, s->beta);
        if (r == dnnl_success) r = dnnl_primitive_attr_set_post_ops(*attr, po);
        if (po) dnnl_post_ops_destroy(po);
    }
    return r;
}

/* prim_make's work, with the thread count it is made for already set. */
static bp_status prim_make_here(engine *e, const prim_spec *s, const bp_gemm_desc *g, prim *p) {
    md_t md[ARG_COUNT];
    memset(md, 0, sizeof md);
    dnnl_data_type_t ab = dt_of(s->ab_type);
    /* Row-major op(A) [m, k] and op(B) [k, n]: a transpose is a swap of the strides. */
    dnnl_status_t r =
        md_make(&md[ARG_A], g->m, g->k, ab, s->trans_a ? 1 : g->lda, s->trans_a ? g->lda : 1);
    if (r == dnnl_success)
        r = md_make(&md[ARG_B], g->k, g->n, ab, s->trans_b ? 1 : g->ldb, s->trans_b ? g->ldb : 1);
    if (r == dnnl_success) r = md_make(&md[ARG_C], g->m, g->n, dt_of(s->out_type), g->ldc, 1);
    if (r == dnnl_success && s->bias) r = md_make(&md[ARG_BIAS], 1, g->n, dnnl_f32, g->n, 1);
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    if (r == dnnl_success) r = make_attr(s, &attr);
    if (r == dnnl_success)
        r = matmul_pd(&pd, e->engine, &md[ARG_A], &md[ARG_B], s->bias ? &md[ARG_BIAS] : NULL,
                      &md[ARG_C], attr);
    const char *impl = NULL;
    if (r == dnnl_success) r = dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
    if (r == dnnl_success) snprintf(p->impl, sizeof p->impl, "%s", impl ? impl : "?");
    bp_status st = r == dnnl_success ? grow_scratchpad(e, scratchpad_bytes(pd)) : BP_OK;
    if (r == dnnl_success && st == BP_OK) r = dnnl_primitive_create(&p->p, pd);
    for (int i = 0; i < ARG_COUNT && r == dnnl_success && st == BP_OK; ++i)
        if (i != ARG_BIAS || s->bias)
            r = dnnl_memory_create(&p->mem[i], md_ref(&md[i]), e->engine, DNNL_MEMORY_NONE);
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (attr) dnnl_primitive_attr_destroy(attr);
    for (int i = 0; i < ARG_COUNT; ++i)
        md_free(md[i]);
    if (r != dnnl_success) st = dnnl_fail(r, "making the matmul", g);
    if (st != BP_OK) {
        prim_free(p);
        return st;
    }
    p->m = g->m, p->n = g->n, p->k = g->k, p->lda = g->lda, p->ldb = g->ldb, p->ldc = g->ldc;
    p->alpha = s->alpha, p->beta = s->beta;
    return BP_OK;
}

static double gemm_flops(const bp_gemm_desc *g) {
    return 2.0 * g->m * g->n * g->k;
}

/* Makes p for g's shape under spec s, growing the device's scratchpad to what it needs. */
static bp_status prim_make(bp_device *device, const prim_spec *s, const bp_gemm_desc *g, prim *p) {
    engine *e = engine_of(device);
    memset(p, 0, sizeof *p);
    int threads = bp_cpu_gemm_threads(device, gemm_flops(g));
    int prev = bp_cpu_threads_enter(threads);
    bp_status st = prim_make_here(e, s, g, p);
    bp_cpu_threads_leave(prev);
    p->threads = threads;
    if (st == BP_OK) e->made++;
    return st;
}

static int prim_fits(const prim *p, const prim_spec *s, const bp_gemm_desc *g) {
    return p->p && p->alpha == s->alpha && p->beta == s->beta && p->m == g->m && p->n == g->n &&
           p->k == g->k && p->lda == g->lda && p->ldb == g->ldb && p->ldc == g->ldc;
}

/* Runs p on a, b (+ bias) into c with the device's threads. */
static bp_status prim_run(engine *e, prim *p, const bp_gemm_desc *g, const float *bias, void *c) {
    dnnl_exec_arg_t args[5];
    int n = 0;
    void *handles[ARG_COUNT] = {(void *)g->a, (void *)g->b, c, (void *)bias};
    static const int which[ARG_COUNT] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST,
                                         DNNL_ARG_BIAS};
    dnnl_status_t r = dnnl_success;
    for (int i = 0; i < ARG_COUNT && r == dnnl_success; ++i) {
        if (!p->mem[i]) continue;
        r = dnnl_memory_set_data_handle(p->mem[i], handles[i]);
        args[n].arg = which[i];
        args[n++].memory = p->mem[i];
    }
    if (e->scratchpad_mem) {
        args[n].arg = DNNL_ARG_SCRATCHPAD;
        args[n++].memory = e->scratchpad_mem;
    }
    if (r == dnnl_success) {
        int prev = bp_cpu_threads_enter(p->threads);
        r = dnnl_primitive_execute(p->p, e->stream, n, args);
        if (r == dnnl_success) r = dnnl_stream_wait(e->stream);
        bp_cpu_threads_leave(prev);
    }
    return r == dnnl_success ? BP_OK : dnnl_fail(r, "running the matmul", g);
}

/* ---- plans -------------------------------------------------------------------------------- */

/* Shapes a plan keeps beside its own: a short last batch, a row view. Made on first use, so
 * a training loop pays for one once per shape, never per step. */
#define PLAN_SHAPES 4

typedef enum plan_kind {
    PLAN_MATMUL = 0, /* oneDNN does the whole desc */
    PLAN_WIDEN = 1,  /* bp_cpu_gemm_widen (tf32; bf16 without bf16 units) */
    PLAN_RELU_FWD,   /* matmul + bias into aux (z), then a = max(z, 0) */
    PLAN_RELU_BWD    /* matmul, then d = P (z > 0) and the bias gradient, one pass */
} plan_kind;

typedef struct plan {
    plan_kind kind;
    prim_spec spec;
    int next; /* the slot a new shape replaces (1 .. PLAN_SHAPES-1, round robin) */
    prim shapes[PLAN_SHAPES];
} plan;

static int wants_widening(const bp_gemm_desc *g) {
    return g->tf32 || (g->ab_type == BP_EL_BF16 && !native_bf16());
}

/* The kind of plan g takes, or -1 (and a message) when it is not fused here. */
static int plan_kind_of(const bp_gemm_desc *g) {
    if (g->epilogue == BP_EPI_NONE) return wants_widening(g) ? PLAN_WIDEN : PLAN_MATMUL;
    if (wants_widening(g)) {
        bp_error(BP_ERR_UNSUPPORTED,
                 "cpu gemm_plan: epilogue %d is not fused in %s on this CPU (the core composes it)",
                 (int)g->epilogue, g->tf32 ? "tf32" : "bf16 without bf16 units");
        return -1;
    }
    if (g->epilogue == BP_EPI_BIAS_ACT && g->act == BP_ACT_IDENTITY) return PLAN_MATMUL;
    if (g->act == BP_ACT_RELU)
        return g->epilogue == BP_EPI_BIAS_ACT ? PLAN_RELU_FWD : PLAN_RELU_BWD;
    bp_error(BP_ERR_UNSUPPORTED,
             "cpu gemm_plan: activation %d is not fused on the CPU (the core composes it)",
             (int)g->act);
    return -1;
}

static prim_spec spec_of(const bp_gemm_desc *g, plan_kind kind) {
    prim_spec s = {g->ab_type, g->c_type, g->trans_a, g->trans_b, 0, g->alpha, g->beta};
    if (g->epilogue == BP_EPI_BIAS_ACT) s.bias = 1, s.alpha = 1.0f, s.beta = 0.0f;
    if (kind == PLAN_RELU_BWD) s.out_type = BP_EL_F32, s.alpha = 1.0f, s.beta = 0.0f;
    return s;
}

/* The primitive for g's shape, alpha and beta in p, made on first use. */
static bp_status plan_prim(bp_device *device, plan *p, const bp_gemm_desc *g, prim **out) {
    prim_spec s = p->spec;
    if (g->epilogue == BP_EPI_NONE) s.alpha = g->alpha, s.beta = g->beta;
    for (int i = 0; i < PLAN_SHAPES; ++i)
        if (prim_fits(&p->shapes[i], &s, g)) {
            *out = &p->shapes[i];
            return BP_OK;
        }
    prim *slot = &p->shapes[p->shapes[0].p ? p->next : 0];
    if (slot != &p->shapes[0]) p->next = p->next + 1 < PLAN_SHAPES ? p->next + 1 : 1;
    prim_free(slot);
    *out = slot;
    return prim_make(device, &s, g, slot);
}

bp_status bp_dnnl_gemm_plan(bp_device *device, const bp_gemm_desc *g, void **out,
                            size_t *aux_bytes) {
    *out = NULL;
    *aux_bytes = 0;
    int kind = plan_kind_of(g);
    if (kind < 0) return BP_ERR_UNSUPPORTED;
    plan *p = calloc(1, sizeof *p);
    if (!p) return bp_error(BP_ERR_OUT_OF_MEMORY, "cpu gemm_plan: no host memory");
    p->kind = (plan_kind)kind;
    p->spec = spec_of(g, p->kind);
    p->next = 1;
    if (p->kind != PLAN_WIDEN && g->m > 0 && g->n > 0 && g->k > 0) {
        prim *unused;
        bp_status st = plan_prim(device, p, g, &unused);
        /* The weight gradient's form (op(A) transposed) also runs with beta 1, when a backward
         * adds into the gradients (bp_model_backward, micro-batches after the first): made
         * now too, so that no step makes it. */
        if (st == BP_OK && g->epilogue == BP_EPI_NONE && g->trans_a && g->beta == 0.0f) {
            bp_gemm_desc adding = *g;
            adding.beta = 1.0f;
            st = plan_prim(device, p, &adding, &unused);
        }
        if (st != BP_OK) {
            bp_dnnl_gemm_plan_free(device, p);
            return st;
        }
    }
    if (p->kind == PLAN_RELU_FWD)
        *aux_bytes = (size_t)g->m * (size_t)g->n * bp_eltype_size(g->c_type);
    *out = p;
    return BP_OK;
}

void bp_dnnl_gemm_plan_free(bp_device *device, void *pv) {
    (void)device;
    plan *p = pv;
    if (!p) return;
    for (int i = 0; i < PLAN_SHAPES; ++i)
        prim_free(&p->shapes[i]);
    free(p);
}

size_t bp_dnnl_gemm_scratch(const bp_gemm_desc *g) {
    if (g->m <= 0 || g->n <= 0 || g->k <= 0) return 0;
    /* A widened product with a bf16 output is made in fp32 after the widening's scratch, then
     * rounded once. */
    if (wants_widening(g))
        return bp_cpu_gemm_widen_scratch(g) +
               (g->c_type == BP_EL_F32 ? 0 : (size_t)g->m * (size_t)g->n * sizeof(float));
    /* A bf16 ReLU backward keeps its fp32 product until the pass rounds it. */
    if (g->epilogue == BP_EPI_DACT_BGRAD && g->act == BP_ACT_RELU && g->c_type != BP_EL_F32)
        return (size_t)g->m * (size_t)g->n * sizeof(float);
    return 0;
}

/* ---- the ReLU epilogues' passes --------------------------------------------------------- */

/* a = act(z) from the saved z, with bp_math.h's ReLU: for a bf16 z that is the composed path's
 * bf16(act(z)), since rounding to bf16 and max(z, 0) commute. */
static void relu_forward(bp_device *device, const bp_gemm_desc *g) {
    int nt = bp_cpu_threads(device), rows = g->m, cols = g->n;
#pragma omp parallel for schedule(static) num_threads(nt) if (bp_cpu_parallel(rows, cols))
    for (int r = 0; r < rows; ++r) {
        size_t zo = (size_t)r * (size_t)cols, ao = (size_t)r * (size_t)g->ldc;
        if (g->c_type == BP_EL_BF16) {
            const uint16_t *z = (const uint16_t *)g->aux + zo;
            uint16_t *a = (uint16_t *)g->c + ao;
#pragma omp simd
            for (int j = 0; j < cols; ++j)
                a[j] = bp_f32_to_bf16(bp_act_forward(bp_bf16_to_f32(z[j]), BP_ACT_RELU, 0.0f));
        } else {
            const float *z = (const float *)g->aux + zo;
            float *a = (float *)g->c + ao;
#pragma omp simd
            for (int j = 0; j < cols; ++j)
                a[j] = bp_act_forward(z[j], BP_ACT_RELU, 0.0f);
        }
    }
}

/* Columns per task of the backward pass, as col_sum's (cpu_reduce.c): each column is summed
 * over the rows in row order, so the bias gradient does not depend on the thread count. */
#define RELU_COLS 256

static void relu_backward_block(const bp_gemm_desc *g, const float *prod, int c0, int w) {
    double acc[RELU_COLS] = {0};
    int bf16 = g->c_type == BP_EL_BF16;
    for (int r = 0; r < g->m; ++r) {
        const float *p = prod + (size_t)r * (size_t)(bf16 ? g->n : g->ldc) + c0;
        size_t zo = (size_t)r * (size_t)g->n + (size_t)c0, co = (size_t)r * (size_t)g->ldc + c0;
        if (bf16) {
            const uint16_t *z = (const uint16_t *)g->aux + zo;
            uint16_t *d = (uint16_t *)g->c + co;
            for (int j = 0; j < w; ++j) {
                float v = p[j] * bp_act_derivative(bp_bf16_to_f32(z[j]), BP_ACT_RELU, 0.0f);
                d[j] = bp_f32_to_bf16(v);
                acc[j] += v;
            }
        } else {
            const float *z = (const float *)g->aux + zo;
            float *d = (float *)g->c + co;
            for (int j = 0; j < w; ++j) {
                float v = p[j] * bp_act_derivative(z[j], BP_ACT_RELU, 0.0f);
                d[j] = v;
                acc[j] += v;
            }
        }
    }
    for (int j = 0; j < w; ++j)
        g->bias_grad[c0 + j] = (float)acc[j];
}

static void relu_backward(bp_device *device, const bp_gemm_desc *g, const float *prod) {
    int nt = bp_cpu_threads(device), blocks = (g->n + RELU_COLS - 1) / RELU_COLS;
#pragma omp parallel for schedule(static) num_threads(nt) if (bp_cpu_parallel(g->m, g->n))
    for (int b = 0; b < blocks; ++b) {
        int c0 = b * RELU_COLS;
        relu_backward_block(g, prod, c0, g->n - c0 < RELU_COLS ? g->n - c0 : RELU_COLS);
    }
}

/* ---- gemm_ex --------------------------------------------------------------------------- */

/* The widening GEMM; a bf16 output is the fp32 product (in scratch past the widening's own)
 * rounded once. */
static bp_status widen(bp_device *device, const bp_gemm_desc *g) {
    if (g->c_type == BP_EL_F32) return bp_cpu_gemm_widen(device, g);
    if (g->beta != 0.0f)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "cpu gemm_ex: beta %g with a bf16 output",
                        (double)g->beta);
    bp_gemm_desc h = *g;
    h.c = (char *)g->scratch + bp_cpu_gemm_widen_scratch(g);
    h.c_type = BP_EL_F32;
    h.ldc = g->n;
    bp_status st = bp_cpu_gemm_widen(device, &h);
    for (int r = 0; r < g->m && st == BP_OK; ++r)
        st = bp_cpu_cast(device, (size_t)g->n, (const float *)h.c + (size_t)r * (size_t)g->n,
                         BP_EL_F32, (uint16_t *)g->c + (size_t)r * (size_t)g->ldc, BP_EL_BF16);
    return st;
}

/* A GEMM without a plan (benchmarks, tests, a backend test double): a plan for this call alone.
 * oneDNN's primitive cache keeps what it made, so a repeat is cheaper than the first. */
static bp_status run_unplanned(bp_device *device, const bp_gemm_desc *g) {
    void *p = NULL;
    size_t aux = 0;
    bp_status st = bp_dnnl_gemm_plan(device, g, &p, &aux);
    if (st == BP_OK) st = bp_dnnl_gemm_ex(device, g, p);
    bp_dnnl_gemm_plan_free(device, p);
    return st;
}

bp_status bp_dnnl_gemm_ex(bp_device *device, const bp_gemm_desc *g, void *pv) {
    /* Without a plan a plain fp32 product is the gemm entry's, as bp_model_gemm runs it. */
    if (!pv && g->ab_type == BP_EL_F32 && !g->tf32 && g->c_type == BP_EL_F32 &&
        g->epilogue == BP_EPI_NONE)
        return bp_cpu_gemm(device, g->trans_a, g->trans_b, g->m, g->n, g->k, g->alpha,
                           (const float *)g->a, g->lda, (const float *)g->b, g->ldb, g->beta,
                           (float *)g->c, g->ldc);
    if (!pv) return run_unplanned(device, g);
    plan *p = pv;
    if (p->kind == PLAN_WIDEN) return widen(device, g);
    engine *e = engine_of(device);
    prim *pr = NULL;
    bp_status st = plan_prim(device, p, g, &pr);
    if (st != BP_OK) return st;
    if ((p->kind == PLAN_RELU_FWD || p->kind == PLAN_RELU_BWD) && g->ldc != g->n)
        return bp_error(BP_ERR_UNSUPPORTED,
                        "cpu gemm_ex: a fused ReLU needs ldc == n (its saved z has n columns), "
                        "ldc is %d, n %d",
                        g->ldc, g->n);
    switch (p->kind) {
    case PLAN_RELU_FWD:
        st = prim_run(e, pr, g, g->bias, g->aux);
        if (st == BP_OK) relu_forward(device, g);
        return st;
    case PLAN_RELU_BWD: {
        if (g->c_type != BP_EL_F32 && !g->scratch)
            return bp_error(BP_ERR_INVALID_ARGUMENT,
                            "cpu gemm_ex: scratch is NULL, this GEMM needs %zu bytes of it",
                            bp_dnnl_gemm_scratch(g));
        float *prod = g->c_type == BP_EL_F32 ? (float *)g->c : (float *)g->scratch;
        st = prim_run(e, pr, g, NULL, prod);
        if (st == BP_OK) relu_backward(device, g, prod);
        return st;
    }
    default:
        return prim_run(e, pr, g, g->epilogue == BP_EPI_BIAS_ACT ? g->bias : NULL, g->c);
    }
}

uint64_t bp_dnnl_primitives_made(bp_device *device) {
    engine *e = engine_of(device);
    return e ? e->made : 0;
}

void bp_dnnl_sgemm(bp_device *device, int trans_a, int trans_b, int m, int n, int k, float alpha,
                   const float *a, int lda, const float *b, int ldb, float beta, float *c,
                   int ldc) {
    int prev = bp_cpu_threads_enter(bp_cpu_gemm_threads(device, 2.0 * m * n * k));
    dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb, beta, c,
               ldc);
    bp_cpu_threads_leave(prev);
}

/* ---- what runs the products ----------------------------------------------------------------- */

bp_status bp_dnnl_describe(bp_device *device, int bf16, int tf32, char *buf, size_t size) {
    const dnnl_version_t *v = dnnl_version();
    if (tf32 || (bf16 && !native_bf16())) {
        snprintf(buf, size,
                 "oneDNN %d.%d.%d sgemm on %s operands widened to fp32 (%s), threads: %d", v->major,
                 v->minor, v->patch, tf32 ? "tf32" : "bf16",
                 tf32 ? "the CPU has no TF32 units" : "the CPU has no bf16 units",
                 bp_cpu_threads(device));
        return BP_OK;
    }
    bp_gemm_desc g;
    memset(&g, 0, sizeof g);
    g.trans_b = 1;
    g.m = g.n = g.k = g.lda = g.ldb = g.ldc = 1024;
    g.alpha = 1.0f;
    g.ab_type = bf16 ? BP_EL_BF16 : BP_EL_F32;
    g.c_type = BP_EL_F32;
    prim pr;
    prim_spec s = spec_of(&g, PLAN_MATMUL);
    bp_status st = prim_make(device, &s, &g, &pr);
    if (st != BP_OK) return st;
    snprintf(buf, size, "oneDNN %d.%d.%d matmul, %s (%s products, fp32 accumulation), threads: %d",
             v->major, v->minor, v->patch, pr.impl, bf16 ? "bf16" : "fp32", bp_cpu_threads(device));
    prim_free(&pr);
    return BP_OK;
}

#endif
