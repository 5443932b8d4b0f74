/* gemm_ex through cuBLASLt: fp32, TF32 and bf16 operands with fp32 accumulation, and the fused
 * epilogues of a layer (bias + ReLU or GELU forward, saving what backward needs; their
 * derivative and the bias gradient backward).
 *
 * Row-major to column-major as in cuda_blas.c: row-major C [m, n] is column-major C^T [n, m],
 * so one column-major matmul with the operands swapped computes it: cuBLASLt's A is our B,
 * its B our A, its (m, n, k) our (n, m, k). Per output column of our C (an output feature) is
 * per row of cuBLASLt's D: the bias vector and the bias gradient, both of length our n.
 *
 * A plan (gemm_plan) holds the descriptors and the algorithm chosen by the heuristic for the
 * model's largest batch; a call with another shape or less aligned pointers (a short last batch,
 * a micro-batch, a row view) asks the heuristic again, on the host only, and keeps the last
 * few such choices beside the first. The workspace is the device's cuBLAS workspace, allocated once
 * with the device. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_internal.h"

#define LT_CHOICES 4

/* An algorithm and what it was chosen for. */
typedef struct lt_choice {
    int valid;
    int timed; /* the candidates were timed on real operands (time_choice) */
    int m, n, k;
    uint32_t align; /* alignment_key() of the pointers */
    cublasLtMatmulAlgo_t algo;
    size_t workspace;
} lt_choice;

typedef struct lt_plan {
    bp_gemm_desc kind; /* types, transposes, epilogue and the largest shape */
    cublasLtEpilogue_t epilogue;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc; /* cuBLASLt's A (our B), B (our A), C = D */
    int m, n, k, lda, ldb, ldc;        /* what the layouts hold now */
    /* [0] the planned shape; the others the last shapes or alignments seen besides it (a
     * short last batch, the micro-batches of a step, row views), replaced in turn. */
    lt_choice choice[LT_CHOICES];
    int next; /* the slot the next new choice takes, 1..LT_CHOICES-1 */
} lt_plan;

static const char *eltype_name(bp_eltype t) {
    return t == BP_EL_BF16 ? "bf16" : "fp32";
}

static cudaDataType_t data_type(bp_eltype t) {
    return t == BP_EL_BF16 ? CUDA_R_16BF : CUDA_R_32F;
}

static const char *epilogue_name(cublasLtEpilogue_t e) {
    switch (e) {
    case CUBLASLT_EPILOGUE_BIAS:
        return "BIAS";
    case CUBLASLT_EPILOGUE_RELU_AUX:
        return "RELU_AUX";
    case CUBLASLT_EPILOGUE_RELU_AUX_BIAS:
        return "RELU_AUX_BIAS";
    case CUBLASLT_EPILOGUE_GELU_AUX:
        return "GELU_AUX";
    case CUBLASLT_EPILOGUE_GELU_AUX_BIAS:
        return "GELU_AUX_BIAS";
    case CUBLASLT_EPILOGUE_DRELU_BGRAD:
        return "DRELU_BGRAD";
    case CUBLASLT_EPILOGUE_DGELU_BGRAD:
        return "DGELU_BGRAD";
    default:
        return "DEFAULT";
    }
}

/* The cuBLASLt epilogue of desc; 0 with *why set when there is none. ReLU and the tanh form of
 * GELU are the activations cuBLASLt's epilogues offer. */
static int lt_epilogue(const bp_gemm_desc *g, cublasLtEpilogue_t *out, const char **why) {
    int relu = g->act == BP_ACT_RELU, gelu = g->act == BP_ACT_GELU_TANH;
    /* cuBLASLt does not document the accuracy of its GELU epilogue's tanh; it may be
     * tanh.approx.f32 (relative error up to 2^-10.987), which fp32 products cannot hide, while
     * TF32's and bf16's own operand roundings (2^-11, 2^-8) already dominate it. So fp32 keeps
     * GELU composed, with the accurate tanhf of the backend's own kernels. */
    if (gelu && g->ab_type == BP_EL_F32 && !g->tf32) {
        *why = "fp32 products keep GELU unfused (the epilogue's tanh is not documented to fp32)";
        return 0;
    }
    switch (g->epilogue) {
    case BP_EPI_NONE:
        *out = CUBLASLT_EPILOGUE_DEFAULT;
        return 1;
    case BP_EPI_BIAS_ACT:
        if (g->act == BP_ACT_IDENTITY) {
            *out = g->bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
            return 1;
        }
        if (relu) *out = g->bias ? CUBLASLT_EPILOGUE_RELU_AUX_BIAS : CUBLASLT_EPILOGUE_RELU_AUX;
        if (gelu) *out = g->bias ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX;
        break;
    case BP_EPI_DACT_BGRAD:
        if (relu) *out = CUBLASLT_EPILOGUE_DRELU_BGRAD;
        if (gelu) *out = CUBLASLT_EPILOGUE_DGELU_BGRAD;
        break;
    default:
        *why = "an unknown epilogue";
        return 0;
    }
    if (relu || gelu) return 1;
    *why = "no cuBLASLt epilogue for this activation";
    return 0;
}

static int has_aux(cublasLtEpilogue_t e) {
    return e == CUBLASLT_EPILOGUE_RELU_AUX || e == CUBLASLT_EPILOGUE_RELU_AUX_BIAS ||
           e == CUBLASLT_EPILOGUE_GELU_AUX || e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS ||
           e == CUBLASLT_EPILOGUE_DRELU_BGRAD || e == CUBLASLT_EPILOGUE_DGELU_BGRAD;
}

static int is_relu(cublasLtEpilogue_t e) {
    return e == CUBLASLT_EPILOGUE_RELU_AUX || e == CUBLASLT_EPILOGUE_RELU_AUX_BIAS ||
           e == CUBLASLT_EPILOGUE_DRELU_BGRAD;
}

static int uses_bias_pointer(cublasLtEpilogue_t e) {
    return e == CUBLASLT_EPILOGUE_BIAS || e == CUBLASLT_EPILOGUE_RELU_AUX_BIAS ||
           e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS || e == CUBLASLT_EPILOGUE_DRELU_BGRAD ||
           e == CUBLASLT_EPILOGUE_DGELU_BGRAD;
}

/* The aux matrix has cuBLASLt's D shape ([n rows, m columns], column-major). Its leading
 * dimension: in bits for the ReLU mask (a multiple of 128), in elements of D's type for the
 * GELU input (a multiple of 8). The forward and the backward of one layer have the same n (the
 * layer's width), hence the same leading dimension. */
static int64_t aux_ld(cublasLtEpilogue_t e, int n) {
    int64_t q = is_relu(e) ? 128 : 8;
    return ((int64_t)n + q - 1) / q * q;
}

static size_t aux_bytes(cublasLtEpilogue_t e, const bp_gemm_desc *g) {
    if (!has_aux(e)) return 0;
    size_t ld = (size_t)aux_ld(e, g->n);
    return is_relu(e) ? ld / 8 * (size_t)g->m : ld * (size_t)g->m * bp_eltype_size(g->c_type);
}

/* Alignment of p in bytes, up to cuBLASLt's default assumption of 256; NULL counts as 256 (a
 * buffer of the model's workspace, not yet laid out, always is). */
static uint32_t alignment(const void *p) {
    uintptr_t v = (uintptr_t)p;
    uint32_t a = 256;
    while (a > 1 && (v & (a - 1)))
        a >>= 1;
    return a;
}

static uint32_t log2u(uint32_t a) {
    uint32_t l = 0;
    while (a > 1)
        a >>= 1, ++l;
    return l;
}

/* The alignments of every pointer the algorithm touches, 4 bits each. */
static uint32_t alignment_key(const bp_gemm_desc *g, cublasLtEpilogue_t e) {
    const void *bias = g->epilogue == BP_EPI_DACT_BGRAD ? (const void *)g->bias_grad : g->bias;
    return log2u(alignment(g->a)) | log2u(alignment(g->b)) << 4 | log2u(alignment(g->c)) << 8 |
           (uses_bias_pointer(e) ? log2u(alignment(bias)) : 8) << 12 |
           (has_aux(e) ? log2u(alignment(g->aux)) : 8) << 16;
}

static void destroy_plan(lt_plan *p) {
    if (!p) return;
    if (p->la) cublasLtMatrixLayoutDestroy(p->la);
    if (p->lb) cublasLtMatrixLayoutDestroy(p->lb);
    if (p->lc) cublasLtMatrixLayoutDestroy(p->lc);
    if (p->op) cublasLtMatmulDescDestroy(p->op);
    free(p);
}

#define LT_SET(device, what, obj, attr, value)                                                     \
    BP_CUBLAS_TRY(device, what##SetAttribute(obj, attr, &(value), sizeof(value)),                  \
                  #what "SetAttribute(" #attr ")")

/* The matmul descriptor: compute and scale types, transposes, epilogue, bias type, aux LD. */
static bp_status make_op(bp_device *device, lt_plan *p) {
    const bp_gemm_desc *g = &p->kind;
    cublasComputeType_t compute =
        g->ab_type == BP_EL_F32 && g->tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    BP_CUBLAS_TRY(device, cublasLtMatmulDescCreate(&p->op, compute, CUDA_R_32F),
                  "cublasLtMatmulDescCreate(%s, CUDA_R_32F)",
                  compute == CUBLAS_COMPUTE_32F ? "CUBLAS_COMPUTE_32F"
                                                : "CUBLAS_COMPUTE_32F_FAST_TF32");
    int32_t ta = g->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
            tb = g->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    LT_SET(device, cublasLtMatmulDesc, p->op, CUBLASLT_MATMUL_DESC_TRANSA, ta);
    LT_SET(device, cublasLtMatmulDesc, p->op, CUBLASLT_MATMUL_DESC_TRANSB, tb);
    uint32_t epi = (uint32_t)p->epilogue;
    if (p->epilogue != CUBLASLT_EPILOGUE_DEFAULT)
        LT_SET(device, cublasLtMatmulDesc, p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, epi);
    if (uses_bias_pointer(p->epilogue)) {
        /* fp32 bias (and bias gradient) whatever D's type: bias arithmetic stays fp32. */
        int32_t bias_type = CUDA_R_32F;
        LT_SET(device, cublasLtMatmulDesc, p->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, bias_type);
    }
    if (has_aux(p->epilogue)) {
        int64_t ld = aux_ld(p->epilogue, g->n);
        LT_SET(device, cublasLtMatmulDesc, p->op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, ld);
    }
    return BP_OK;
}

/* Column-major layouts of cuBLASLt's A (our B), B (our A) and C = D for g's shape. */
static bp_status make_layouts(bp_device *device, lt_plan *p, const bp_gemm_desc *g) {
    cudaDataType_t ab = data_type(g->ab_type), c = data_type(g->c_type);
    uint64_t ar = g->trans_b ? g->k : g->n, ac = g->trans_b ? g->n : g->k;
    uint64_t br = g->trans_a ? g->m : g->k, bc = g->trans_a ? g->k : g->m;
    BP_CUBLAS_TRY(device, cublasLtMatrixLayoutCreate(&p->la, ab, ar, ac, g->ldb),
                  "cublasLtMatrixLayoutCreate(A: %s, %llu x %llu, ld %d)", eltype_name(g->ab_type),
                  (unsigned long long)ar, (unsigned long long)ac, g->ldb);
    BP_CUBLAS_TRY(device, cublasLtMatrixLayoutCreate(&p->lb, ab, br, bc, g->lda),
                  "cublasLtMatrixLayoutCreate(B: %s, %llu x %llu, ld %d)", eltype_name(g->ab_type),
                  (unsigned long long)br, (unsigned long long)bc, g->lda);
    BP_CUBLAS_TRY(device,
                  cublasLtMatrixLayoutCreate(&p->lc, c, (uint64_t)g->n, (uint64_t)g->m, g->ldc),
                  "cublasLtMatrixLayoutCreate(C: %s, %d x %d, ld %d)", eltype_name(g->c_type), g->n,
                  g->m, g->ldc);
    p->m = g->m, p->n = g->n, p->k = g->k, p->lda = g->lda, p->ldb = g->ldb, p->ldc = g->ldc;
    return BP_OK;
}

static bp_status set_layout(bp_device *device, cublasLtMatrixLayout_t l, uint64_t rows,
                            uint64_t cols, int64_t ld) {
    LT_SET(device, cublasLtMatrixLayout, l, CUBLASLT_MATRIX_LAYOUT_ROWS, rows);
    LT_SET(device, cublasLtMatrixLayout, l, CUBLASLT_MATRIX_LAYOUT_COLS, cols);
    LT_SET(device, cublasLtMatrixLayout, l, CUBLASLT_MATRIX_LAYOUT_LD, ld);
    return BP_OK;
}

/* The layouts for g's shape (no allocation: attributes of the existing ones). */
static bp_status reshape(bp_device *device, lt_plan *p, const bp_gemm_desc *g) {
    if (p->m == g->m && p->n == g->n && p->k == g->k && p->lda == g->lda && p->ldb == g->ldb &&
        p->ldc == g->ldc)
        return BP_OK;
    bp_status st = set_layout(device, p->la, (uint64_t)(g->trans_b ? g->k : g->n),
                              (uint64_t)(g->trans_b ? g->n : g->k), g->ldb);
    if (st == BP_OK)
        st = set_layout(device, p->lb, (uint64_t)(g->trans_a ? g->m : g->k),
                        (uint64_t)(g->trans_a ? g->k : g->m), g->lda);
    if (st == BP_OK) st = set_layout(device, p->lc, (uint64_t)g->n, (uint64_t)g->m, g->ldc);
    if (st != BP_OK) return st;
    p->m = g->m, p->n = g->n, p->k = g->k, p->lda = g->lda, p->ldb = g->ldb, p->ldc = g->ldc;
    return BP_OK;
}

/* The bias (or bias gradient) and aux pointers: the heuristic reads them for their alignment,
 * the matmul for their data. */
static bp_status set_pointers(bp_device *device, lt_plan *p, const bp_gemm_desc *g) {
    if (uses_bias_pointer(p->epilogue)) {
        const void *bias =
            g->epilogue == BP_EPI_DACT_BGRAD ? (const void *)g->bias_grad : (const void *)g->bias;
        LT_SET(device, cublasLtMatmulDesc, p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias);
    }
    if (has_aux(p->epilogue)) {
        void *aux = g->aux;
        LT_SET(device, cublasLtMatmulDesc, p->op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, aux);
    }
    return BP_OK;
}

static void describe(const bp_gemm_desc *g, cublasLtEpilogue_t e, char *buf, size_t size) {
    snprintf(buf, size,
             "row-major gemm(trans_a=%d, trans_b=%d, m=%d, n=%d, k=%d) of %s%s operands into %s, "
             "epilogue %s",
             g->trans_a, g->trans_b, g->m, g->n, g->k, eltype_name(g->ab_type),
             g->tf32 ? " (TF32)" : "", eltype_name(g->c_type), epilogue_name(e));
}

/* Asks the heuristic for its best algorithms for g (up to max, best first) within the
 * device's workspace; *found of them. */
static bp_status ask(bp_device *device, lt_plan *p, const bp_gemm_desc *g, int max,
                     cublasLtMatmulHeuristicResult_t *result, int *found) {
    bp_cuda_impl *impl = bp_cuda_impl_of(device);
    cublasLtMatmulPreference_t pref = NULL;
    BP_CUBLAS_TRY(device, cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate");
    uint64_t ws = impl->blas_workspace_bytes;
    /* Our A is cuBLASLt's B and the other way round. */
    uint32_t al[4] = {alignment(g->b), alignment(g->a), alignment(g->c), alignment(g->c)};
    const cublasLtMatmulPreferenceAttributes_t attrs[4] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    cublasStatus_t s = cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    for (int i = 0; i < 4 && s == CUBLAS_STATUS_SUCCESS; ++i)
        s = cublasLtMatmulPreferenceSetAttribute(pref, attrs[i], &al[i], sizeof al[i]);
    memset(result, 0, sizeof *result * (size_t)max);
    *found = 0;
    char what[256];
    describe(g, p->epilogue, what, sizeof what);
    if (s != CUBLAS_STATUS_SUCCESS) {
        cublasLtMatmulPreferenceDestroy(pref);
        return bp_cublas_fail(device, s, "cublasLtMatmulPreferenceSetAttribute for %s", what);
    }
    s = cublasLtMatmulAlgoGetHeuristic(impl->lt, p->op, p->la, p->lb, p->lc, p->lc, pref, max,
                                       result, found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (s == CUBLAS_STATUS_NOT_SUPPORTED || (s == CUBLAS_STATUS_SUCCESS && *found == 0))
        return bp_error(BP_ERR_UNSUPPORTED,
                        "cublasLtMatmulAlgoGetHeuristic on %s: no algorithm for %s within %llu "
                        "bytes of workspace",
                        device->name, what, (unsigned long long)ws);
    if (s != CUBLAS_STATUS_SUCCESS)
        return bp_cublas_fail(device, s, "cublasLtMatmulAlgoGetHeuristic for %s", what);
    return BP_OK;
}

/* The heuristic's best algorithm for g (timed later, on the first run with real operands). */
static bp_status choose(bp_device *device, lt_plan *p, const bp_gemm_desc *g, lt_choice *out) {
    cublasLtMatmulHeuristicResult_t result;
    int found = 0;
    bp_status st = ask(device, p, g, 1, &result, &found);
    if (st != BP_OK) return st;
    out->valid = 1;
    out->timed = 0;
    out->m = g->m, out->n = g->n, out->k = g->k;
    out->align = alignment_key(g, p->epilogue);
    out->algo = result.algo;
    out->workspace = result.workspaceSize;
    return BP_OK;
}

static cublasStatus_t matmul(bp_cuda_impl *impl, lt_plan *p, const bp_gemm_desc *g,
                             const cublasLtMatmulAlgo_t *algo, size_t workspace) {
    bp_cu_note_launch();
    return cublasLtMatmul(impl->lt, p->op, &g->alpha, g->b, p->la, g->a, p->lb, &g->beta, g->c,
                          p->lc, g->c, p->lc, algo, impl->blas_workspace, workspace, impl->stream);
}

/* Seconds of LT_TIMED_RUNS runs of one candidate, between two events (this waits). */
#define LT_CANDIDATES 4
#define LT_TIMED_RUNS 3
static float time_candidate(bp_cuda_impl *impl, lt_plan *p, const bp_gemm_desc *g,
                            const cublasLtMatmulHeuristicResult_t *r, cudaEvent_t ev[2]) {
    float ms = -1.0f;
    int ok = cudaEventRecord(ev[0], impl->stream) == cudaSuccess;
    for (int i = 0; i < LT_TIMED_RUNS && ok; ++i)
        ok = matmul(impl, p, g, &r->algo, r->workspaceSize) == CUBLAS_STATUS_SUCCESS;
    if (ok) ok = cudaEventRecord(ev[1], impl->stream) == cudaSuccess;
    bp_cu_note_wait();
    if (ok) ok = cudaEventSynchronize(ev[1]) == cudaSuccess;
    if (ok && cudaEventElapsedTime(&ms, ev[0], ev[1]) != cudaSuccess) ms = -1.0f;
    (void)cudaGetLastError(); /* a candidate that fails is only not chosen */
    return ms;
}

/* Once per choice, on its first run with real operands: the heuristic's first LT_CANDIDATES
 * algorithms each run and timed, and the fastest kept (the heuristic's first is a model's
 * guess). Not while the stream is being recorded (a graph), where waiting is refused, nor for
 * a product that adds into C (beta != 0), which the trial runs would change: those keep the
 * heuristic's first. The trial runs write what the real run then writes again. */
static void time_choice(bp_device *device, lt_plan *p, const bp_gemm_desc *g, lt_choice *c) {
    bp_cuda_impl *impl = bp_cuda_impl_of(device);
    c->timed = 1;
    enum cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
    if (g->beta != 0.0f || cudaStreamIsCapturing(impl->stream, &capturing) != cudaSuccess ||
        capturing != cudaStreamCaptureStatusNone)
        return;
    cublasLtMatmulHeuristicResult_t r[LT_CANDIDATES];
    int found = 0;
    cudaEvent_t ev[2] = {NULL, NULL};
    if (ask(device, p, g, LT_CANDIDATES, r, &found) != BP_OK || found < 2 ||
        cudaEventCreate(&ev[0]) != cudaSuccess || cudaEventCreate(&ev[1]) != cudaSuccess) {
        if (ev[0]) cudaEventDestroy(ev[0]);
        (void)cudaGetLastError();
        return;
    }
    float best = -1.0f;
    for (int i = 0; i < found; ++i) {
        float ms = time_candidate(impl, p, g, &r[i], ev);
        if (ms >= 0.0f && (best < 0.0f || ms < best)) {
            best = ms;
            c->algo = r[i].algo;
            c->workspace = r[i].workspaceSize;
        }
    }
    cudaEventDestroy(ev[0]);
    cudaEventDestroy(ev[1]);
}

/* The plan's choice for g, asking the heuristic when neither fits. */
static bp_status find_choice(bp_device *device, lt_plan *p, const bp_gemm_desc *g,
                             lt_choice **out) {
    uint32_t key = alignment_key(g, p->epilogue);
    for (int i = 0; i < LT_CHOICES; ++i) {
        lt_choice *c = &p->choice[i];
        if (c->valid && c->m == g->m && c->n == g->n && c->k == g->k && c->align == key) {
            *out = c;
            return BP_OK;
        }
    }
    lt_choice *slot = &p->choice[p->next];
    p->next = p->next + 1 < LT_CHOICES ? p->next + 1 : 1;
    slot->valid = 0;
    bp_status st = choose(device, p, g, slot);
    *out = slot;
    return st;
}

static bp_status new_plan(bp_device *device, const bp_gemm_desc *g, lt_plan **out) {
    *out = NULL;
    cublasLtEpilogue_t e = CUBLASLT_EPILOGUE_DEFAULT;
    const char *why = "";
    if (!lt_epilogue(g, &e, &why))
        return bp_error(BP_ERR_UNSUPPORTED, "cuda gemm_ex: epilogue %d with activation %d: %s",
                        (int)g->epilogue, (int)g->act, why);
    if (g->epilogue != BP_EPI_NONE && (g->beta != 0.0f || g->alpha != 1.0f))
        return bp_error(BP_ERR_INVALID_ARGUMENT,
                        "cuda gemm_ex: a fused epilogue takes alpha 1 and beta 0, not %g and %g",
                        (double)g->alpha, (double)g->beta);
    lt_plan *p = calloc(1, sizeof *p);
    if (!p) return bp_error(BP_ERR_OUT_OF_MEMORY, "cuda gemm_ex: no host memory for a plan");
    p->kind = *g;
    p->epilogue = e;
    p->next = 1;
    bp_status st = make_op(device, p);
    if (st == BP_OK) st = make_layouts(device, p, g);
    if (st == BP_OK) st = set_pointers(device, p, g);
    if (st == BP_OK) st = choose(device, p, g, &p->choice[0]);
    if (st != BP_OK) {
        destroy_plan(p);
        return st;
    }
    *out = p;
    return BP_OK;
}

/* A call belongs to the plan: same kind, no larger shape (the aux buffer was sized for it). */
static bp_status check_fits(const lt_plan *p, const bp_gemm_desc *g) {
    const bp_gemm_desc *k = &p->kind;
    int same = k->trans_a == g->trans_a && k->trans_b == g->trans_b && k->ab_type == g->ab_type &&
               k->tf32 == g->tf32 && k->c_type == g->c_type && k->epilogue == g->epilogue &&
               (k->epilogue == BP_EPI_NONE || k->act == g->act) &&
               (k->bias != NULL) == (g->bias != NULL);
    if (!same)
        return bp_error(BP_ERR_INVALID_ARGUMENT,
                        "cuda gemm_ex: the call differs from its plan in type, transpose or "
                        "epilogue");
    if (g->m > k->m || g->n > k->n || g->k > k->k)
        return bp_error(BP_ERR_INVALID_ARGUMENT,
                        "cuda gemm_ex: m=%d n=%d k=%d is larger than its plan's m=%d n=%d k=%d",
                        g->m, g->n, g->k, k->m, k->n, k->k);
    return BP_OK;
}

static bp_status run(bp_device *device, lt_plan *p, const bp_gemm_desc *g) {
    bp_cuda_impl *impl = bp_cuda_impl_of(device);
    bp_status st = reshape(device, p, g);
    if (st == BP_OK) st = set_pointers(device, p, g);
    lt_choice *c = NULL;
    if (st == BP_OK) st = find_choice(device, p, g, &c);
    if (st != BP_OK) return st;
    if (!c->timed) time_choice(device, p, g, c);
    cublasStatus_t s = matmul(impl, p, g, &c->algo, c->workspace);
    if (s == CUBLAS_STATUS_SUCCESS) return BP_OK;
    char what[256];
    describe(g, p->epilogue, what, sizeof what);
    return bp_cublas_fail(device, s, "cublasLtMatmul for %s", what);
}

bp_status bp_cuda_gemm_ex(bp_device *device, const bp_gemm_desc *g, void *plan) {
    if (g->m == 0 || g->n == 0) return BP_OK;
    if (g->m < 0 || g->n < 0 || g->k < 0)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "cuda gemm_ex: negative size m=%d n=%d k=%d", g->m,
                        g->n, g->k);
    BP_CUDA_ENTER(device);
    if (g->k == 0) {
        if (g->epilogue != BP_EPI_NONE || g->c_type != BP_EL_F32)
            return bp_error(BP_ERR_UNSUPPORTED,
                            "cuda gemm_ex: k = 0 with an epilogue or a bf16 output");
        return bp_cuda_gemm(device, 0, 0, g->m, g->n, 0, g->alpha, NULL, 1, NULL, 1, g->beta,
                            (float *)g->c, g->ldc);
    }
    if (plan) {
        bp_status st = check_fits((lt_plan *)plan, g);
        return st == BP_OK ? run(device, (lt_plan *)plan, g) : st;
    }
    /* No plan (a direct call, not a model's step): one for this call alone. */
    lt_plan *p = NULL;
    bp_status st = new_plan(device, g, &p);
    if (st == BP_OK) st = run(device, p, g);
    destroy_plan(p);
    return st;
}

bp_status bp_cuda_gemm_plan(bp_device *device, const bp_gemm_desc *g, void **plan, size_t *aux) {
    *plan = NULL;
    *aux = 0;
    if (g->m <= 0 || g->n <= 0 || g->k <= 0)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "cuda gemm_plan: m=%d n=%d k=%d, expected >= 1",
                        g->m, g->n, g->k);
    BP_CUDA_ENTER(device);
    lt_plan *p = NULL;
    bp_status st = new_plan(device, g, &p);
    if (st != BP_OK) return st;
    *plan = p;
    *aux = aux_bytes(p->epilogue, g);
    return BP_OK;
}

void bp_cuda_gemm_plan_free(bp_device *device, void *plan) {
    (void)device;
    destroy_plan((lt_plan *)plan);
}
