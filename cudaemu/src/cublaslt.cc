// The emulated cuBLASLt: handles, matmul descriptors, layouts, preferences, a heuristic with two
// "algorithms" and cublasLtMatmul with the bias, ReLU and GELU epilogues forward and backward.
//
// The product is CBLAS's sgemm on fp32 copies of the operands (bf16 widened exactly, fp32 under
// CUBLAS_COMPUTE_32F_FAST_TF32 rounded to TF32 by kernels/bp_math.h's bp_round_tf32, the
// rounding the CPU backend's reference uses), then the epilogue runs element by element in
// fp32 and D is stored in its type (bf16 rounded to nearest even by bp_f32_to_bf16).
//
// Checks at the call, with cuBLASLt's statuses (a message on stderr says which check): the
// handle (NOT_INITIALIZED), descriptors, shapes, leading dimensions, the epilogue's pointers
// and aux leading dimension, the workspace, the algorithm record and the pointers' alignment
// against what the algorithm needs (INVALID_VALUE), type, compute and epilogue combinations
// cuBLASLt does not offer or cudaemu does not emulate (NOT_SUPPORTED). When the work runs: every
// matrix, vector and the workspace must be device memory of the handle's device over its whole
// extent, and D may overlap none of what the call reads or writes besides (a fault, sticky, as
// the GPU's out-of-bounds access or race would be).
//
// The two algorithms: a "vectorised" one that needs 16-byte aligned pointers and leading
// dimensions of whole 16-byte multiples, and an element-wise one that needs each pointer
// aligned to its element. The heuristic offers those the preference's alignments (and the
// descriptor's bias and aux pointers) allow, best first; both ask for a workspace (up to
// kWorkspaceBytes, within the preference's maximum), which cublasLtMatmul overwrites at every
// call, as a split-k algorithm's partial sums would.
#include <cblas.h>

#include <cmath>
#include <cstring>
#include <set>
#include <vector>

#include "cublasLt.h"
#include "internal.h"
#include "kernels/bp_math.h"
#include "variant.h"

struct cudaemu_cublaslt {
    cudaemu::Device *device;
};

struct cudaemu_lt_layout {
    uint32_t type;
    int32_t order = CUBLASLT_ORDER_COL;
    uint64_t rows, cols;
    int64_t ld;
    int32_t batch = 1;
    int64_t batch_stride = 0;
};

struct cudaemu_lt_matmul_desc {
    int32_t compute, scale;
    int32_t pointer_mode = CUBLASLT_POINTER_MODE_HOST;
    int32_t transa = CUBLAS_OP_N, transb = CUBLAS_OP_N, transc = CUBLAS_OP_N;
    int32_t fill = 2; // CUBLAS_FILL_MODE_FULL
    uint32_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
    void *bias = nullptr;
    int64_t bias_stride = 0;
    void *aux = nullptr;
    int64_t aux_ld = 0, aux_stride = 0;
    int32_t aux_type = -1, bias_type = -1; // -1: D's type
};

struct cudaemu_lt_preference {
    uint32_t search = CUBLASLT_SEARCH_BEST_FIT;
    uint64_t max_workspace = 0;
    uint32_t reduction = 0xffffffffu;
    uint32_t align[4] = {256, 256, 256, 256}; // A, B, C, D
    float max_waves = 0.0f;
    uint64_t impl = ~(uint64_t)0;
};

namespace cudaemu {
namespace {

constexpr uint64_t kAlgoMagic = 0x746c756d65616475ull; // marks a record the heuristic wrote
constexpr int kAlgoVector = 1, kAlgoElement = 2;
constexpr size_t kWorkspaceBytes = (size_t)1 << 20;

template <typename T> std::set<T> &registry() {
    static auto *s = new std::set<T>;
    return *s;
}
template <typename T> bool live(T p) {
    return p && registry<T>().count(p);
}

cublasStatus_t lt_refuse(cublasStatus_t st, const std::string &message) {
    std::fprintf(stderr, "cudaemu: %s\n", message.c_str());
    set_last_fault(message);
    return st;
}

// ---- attributes: where each lives and how many bytes it holds -------------------------------
struct Field {
    void *p;
    size_t size;
};

Field desc_field(cudaemu_lt_matmul_desc *d, int attr) {
    switch (attr) {
    case CUBLASLT_MATMUL_DESC_COMPUTE_TYPE:
        return {&d->compute, sizeof d->compute};
    case CUBLASLT_MATMUL_DESC_SCALE_TYPE:
        return {&d->scale, sizeof d->scale};
    case CUBLASLT_MATMUL_DESC_POINTER_MODE:
        return {&d->pointer_mode, sizeof d->pointer_mode};
    case CUBLASLT_MATMUL_DESC_TRANSA:
        return {&d->transa, sizeof d->transa};
    case CUBLASLT_MATMUL_DESC_TRANSB:
        return {&d->transb, sizeof d->transb};
    case CUBLASLT_MATMUL_DESC_TRANSC:
        return {&d->transc, sizeof d->transc};
    case CUBLASLT_MATMUL_DESC_FILL_MODE:
        return {&d->fill, sizeof d->fill};
    case CUBLASLT_MATMUL_DESC_EPILOGUE:
        return {&d->epilogue, sizeof d->epilogue};
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER:
        return {&d->bias, sizeof d->bias};
    case CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE:
        return {&d->bias_stride, sizeof d->bias_stride};
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER:
        return {&d->aux, sizeof d->aux};
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD:
        return {&d->aux_ld, sizeof d->aux_ld};
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_BATCH_STRIDE:
        return {&d->aux_stride, sizeof d->aux_stride};
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE:
        return {&d->aux_type, sizeof d->aux_type};
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE:
        return {&d->bias_type, sizeof d->bias_type};
    }
    return {nullptr, 0};
}

Field layout_field(cudaemu_lt_layout *l, int attr) {
    switch (attr) {
    case CUBLASLT_MATRIX_LAYOUT_TYPE:
        return {&l->type, sizeof l->type};
    case CUBLASLT_MATRIX_LAYOUT_ORDER:
        return {&l->order, sizeof l->order};
    case CUBLASLT_MATRIX_LAYOUT_ROWS:
        return {&l->rows, sizeof l->rows};
    case CUBLASLT_MATRIX_LAYOUT_COLS:
        return {&l->cols, sizeof l->cols};
    case CUBLASLT_MATRIX_LAYOUT_LD:
        return {&l->ld, sizeof l->ld};
    case CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT:
        return {&l->batch, sizeof l->batch};
    case CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET:
        return {&l->batch_stride, sizeof l->batch_stride};
    }
    return {nullptr, 0};
}

Field pref_field(cudaemu_lt_preference *p, int attr) {
    switch (attr) {
    case CUBLASLT_MATMUL_PREF_SEARCH_MODE:
        return {&p->search, sizeof p->search};
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES:
        return {&p->max_workspace, sizeof p->max_workspace};
    case CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK:
        return {&p->reduction, sizeof p->reduction};
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES:
        return {&p->align[attr - CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES], sizeof p->align[0]};
    case CUBLASLT_MATMUL_PREF_MAX_WAVES_COUNT:
        return {&p->max_waves, sizeof p->max_waves};
    case CUBLASLT_MATMUL_PREF_IMPL_MASK:
        return {&p->impl, sizeof p->impl};
    }
    return {nullptr, 0};
}

// As documented: the buffer must be there and hold exactly the attribute's size.
cublasStatus_t set_field(Field f, const void *buf, size_t size, const char *fn, int attr) {
    if (!f.p)
        return lt_refuse(CUBLAS_STATUS_INVALID_VALUE, format("%s: unknown attribute %d", fn, attr));
    if (!buf || size != f.size)
        return lt_refuse(CUBLAS_STATUS_INVALID_VALUE,
                         format("%s: attribute %d holds %zu bytes, given %zu%s", fn, attr, f.size,
                                size, buf ? "" : " from NULL"));
    std::memcpy(f.p, buf, size);
    return CUBLAS_STATUS_SUCCESS;
}

// size 0 asks for the attribute's size in *written; otherwise buf must hold exactly that.
cublasStatus_t get_field(Field f, void *buf, size_t size, size_t *written) {
    if (!f.p) return CUBLAS_STATUS_INVALID_VALUE;
    if (size == 0) {
        if (!written) return CUBLAS_STATUS_INVALID_VALUE;
        *written = f.size;
        return CUBLAS_STATUS_SUCCESS;
    }
    if (!buf || size != f.size) return CUBLAS_STATUS_INVALID_VALUE;
    std::memcpy(buf, f.p, size);
    if (written) *written = size;
    return CUBLAS_STATUS_SUCCESS;
}

// ---- the problem a call describes --------------------------------------------------------------
// The epilogue in parts: what is added, which activation, what is saved or read.
struct Epilogue {
    bool bias = false, relu = false, gelu = false, aux = false, backward = false, bgrad = false;
};

// 0 when e is cuBLASLt's, with its parts in *out; else the status to refuse it with.
cublasStatus_t decode_epilogue(uint32_t e, Epilogue *out) {
    Epilogue p;
    switch (e) {
    case CUBLASLT_EPILOGUE_DEFAULT:
        break;
    case CUBLASLT_EPILOGUE_RELU_AUX_BIAS:
    case CUBLASLT_EPILOGUE_RELU_BIAS:
    case CUBLASLT_EPILOGUE_RELU_AUX:
    case CUBLASLT_EPILOGUE_RELU:
        p.relu = true, p.bias = (e & 4) != 0, p.aux = (e & 128) != 0;
        break;
    case CUBLASLT_EPILOGUE_GELU_AUX_BIAS:
    case CUBLASLT_EPILOGUE_GELU_BIAS:
    case CUBLASLT_EPILOGUE_GELU_AUX:
    case CUBLASLT_EPILOGUE_GELU:
        p.gelu = true, p.bias = (e & 4) != 0, p.aux = (e & 128) != 0;
        break;
    case CUBLASLT_EPILOGUE_BIAS:
        p.bias = true;
        break;
    case CUBLASLT_EPILOGUE_DRELU_BGRAD:
    case CUBLASLT_EPILOGUE_DRELU:
        p.relu = p.aux = p.backward = true, p.bgrad = (e & 16) != 0;
        break;
    case CUBLASLT_EPILOGUE_DGELU_BGRAD:
    case CUBLASLT_EPILOGUE_DGELU:
        p.gelu = p.aux = p.backward = true, p.bgrad = (e & 16) != 0;
        break;
    case CUBLASLT_EPILOGUE_BGRADA:
    case CUBLASLT_EPILOGUE_BGRADB:
        return CUBLAS_STATUS_NOT_SUPPORTED;
    default:
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    *out = p;
    return CUBLAS_STATUS_SUCCESS;
}

const char *epilogue_name(uint32_t e) {
    switch (e) {
    case CUBLASLT_EPILOGUE_DEFAULT:
        return "DEFAULT";
    case CUBLASLT_EPILOGUE_RELU:
        return "RELU";
    case CUBLASLT_EPILOGUE_RELU_AUX:
        return "RELU_AUX";
    case CUBLASLT_EPILOGUE_BIAS:
        return "BIAS";
    case CUBLASLT_EPILOGUE_RELU_BIAS:
        return "RELU_BIAS";
    case CUBLASLT_EPILOGUE_RELU_AUX_BIAS:
        return "RELU_AUX_BIAS";
    case CUBLASLT_EPILOGUE_DRELU:
        return "DRELU";
    case CUBLASLT_EPILOGUE_DRELU_BGRAD:
        return "DRELU_BGRAD";
    case CUBLASLT_EPILOGUE_GELU:
        return "GELU";
    case CUBLASLT_EPILOGUE_GELU_AUX:
        return "GELU_AUX";
    case CUBLASLT_EPILOGUE_GELU_BIAS:
        return "GELU_BIAS";
    case CUBLASLT_EPILOGUE_GELU_AUX_BIAS:
        return "GELU_AUX_BIAS";
    case CUBLASLT_EPILOGUE_DGELU:
        return "DGELU";
    case CUBLASLT_EPILOGUE_DGELU_BGRAD:
        return "DGELU_BGRAD";
    }
    return "OTHER";
}

bool is_bf16(uint32_t t) {
    return t == CUDA_R_16BF;
}
size_t type_size(uint32_t t) {
    return is_bf16(t) ? 2 : 4;
}
bool valid_op(int32_t op) {
    return op == CUBLAS_OP_N || op == CUBLAS_OP_T || op == CUBLAS_OP_C;
}

// What a matmul computes, read from its descriptor and layouts (a copy: the caller may change
// them while the work waits in its queue).
struct Problem {
    int64_t m = 0, n = 0, k = 0;
    bool trans_a = false, trans_b = false, tf32 = false;
    uint32_t ab_type = CUDA_R_32F, cd_type = CUDA_R_32F, bias_type = CUDA_R_32F;
    uint32_t epilogue_value = CUBLASLT_EPILOGUE_DEFAULT;
    Epilogue epi;
    cudaemu_lt_layout a, b, c, d;
    int64_t aux_ld = 0;
    const void *bias = nullptr; // from the descriptor (the bias gradient for a BGRAD epilogue)
    void *aux = nullptr;
    int32_t compute = CUBLAS_COMPUTE_32F;
};

// The number of bits of state the aux buffer holds per element (a ReLU mask: 1).
bool relu_mask(const Problem &p) {
    return p.epi.aux && p.epi.relu;
}

cublasStatus_t check_layout(const char *fn, const char *name, const cudaemu_lt_layout &l) {
    if (l.order != CUBLASLT_ORDER_COL)
        return lt_refuse(
            CUBLAS_STATUS_NOT_SUPPORTED,
            format("%s: matrix %s: only the column-major order is emulated", fn, name));
    if (l.batch != 1)
        return lt_refuse(
            CUBLAS_STATUS_NOT_SUPPORTED,
            format("%s: matrix %s: batch count %d; batches are not emulated", fn, name, l.batch));
    if (l.rows > INT32_MAX || l.cols > INT32_MAX)
        return lt_refuse(CUBLAS_STATUS_NOT_SUPPORTED,
                         format("%s: matrix %s: %llu x %llu is past the int32 sizes supported", fn,
                                name, (unsigned long long)l.rows, (unsigned long long)l.cols));
    if (l.ld < 1 || (uint64_t)l.ld < l.rows)
        return lt_refuse(
            CUBLAS_STATUS_INVALID_VALUE,
            format("%s: matrix %s: leading dimension %lld is smaller than its %llu rows", fn, name,
                   (long long)l.ld, (unsigned long long)l.rows));
    if (l.type != CUDA_R_32F && l.type != CUDA_R_16BF)
        return lt_refuse(CUBLAS_STATUS_NOT_SUPPORTED,
                         format("%s: matrix %s: data type %u is not emulated (CUDA_R_32F, "
                                "CUDA_R_16BF are)",
                                fn, name, l.type));
    return CUBLAS_STATUS_SUCCESS;
}

// The types, compute and epilogue of desc with layouts a, b, c, d, as cuBLASLt would take them.
cublasStatus_t describe(const char *fn, const cudaemu_lt_matmul_desc *desc,
                        const cudaemu_lt_layout *a, const cudaemu_lt_layout *b,
                        const cudaemu_lt_layout *c, const cudaemu_lt_layout *d, Problem *out) {
    const cudaemu_lt_layout *ls[4] = {a, b, c, d};
    const char *names[4] = {"A", "B", "C", "D"};
    for (int i = 0; i < 4; ++i) {
        cublasStatus_t st = check_layout(fn, names[i], *ls[i]);
        if (st != CUBLAS_STATUS_SUCCESS) return st;
    }
    Problem p;
    p.a = *a, p.b = *b, p.c = *c, p.d = *d;
    p.compute = desc->compute;
    if (desc->scale != CUDA_R_32F)
        return lt_refuse(
            CUBLAS_STATUS_NOT_SUPPORTED,
            format("%s: scale type %d (only CUDA_R_32F is emulated)", fn, desc->scale));
    if (desc->pointer_mode != CUBLASLT_POINTER_MODE_HOST)
        return lt_refuse(CUBLAS_STATUS_NOT_SUPPORTED,
                         format("%s: pointer mode %d (only host alpha and beta are emulated)", fn,
                                desc->pointer_mode));
    if (!valid_op(desc->transa) || !valid_op(desc->transb))
        return lt_refuse(CUBLAS_STATUS_INVALID_VALUE,
                         format("%s: TRANSA %d, TRANSB %d: not a cublasOperation_t", fn,
                                desc->transa, desc->transb));
    if (desc->transc != CUBLAS_OP_N || desc->fill != 2)
        return lt_refuse(CUBLAS_STATUS_NOT_SUPPORTED,
                         format("%s: TRANSC and FILL_MODE take only their defaults", fn));
    p.trans_a = desc->transa != CUBLAS_OP_N;
    p.trans_b = desc->transb != CUBLAS_OP_N;
    if (a->type != b->type || c->type != d->type)
        return lt_refuse(CUBLAS_STATUS_NOT_SUPPORTED,
                         format("%s: A and B (types %u, %u) or C and D (%u, %u) differ in type", fn,
                                a->type, b->type, c->type, d->type));
    p.ab_type = a->type;
    p.cd_type = d->type;
    // fp32 x fp32 -> fp32 (plain or TF32), bf16 x bf16 -> bf16 or fp32, accumulated in fp32.
    bool f32 = desc->compute == CUBLAS_COMPUTE_32F || desc->compute == CUBLAS_COMPUTE_32F_PEDANTIC;
    bool fast_tf32 = desc->compute == CUBLAS_COMPUTE_32F_FAST_TF32;
    if (!(f32 || (fast_tf32 && p.ab_type == CUDA_R_32F)) ||
        (p.ab_type == CUDA_R_32F && p.cd_type != CUDA_R_32F))
        return lt_refuse(CUBLAS_STATUS_NOT_SUPPORTED,
                         format("%s: compute type %d with A/B of type %u and C/D of type %u is not "
                                "a combination cuBLASLt offers (or cudaemu emulates)",
                                fn, desc->compute, p.ab_type, p.cd_type));
    p.tf32 = fast_tf32;
    // op(A) is m x k, op(B) k x n, C and D m x n.
    p.m = (int64_t)d->rows, p.n = (int64_t)d->cols;
    uint64_t a_rows = p.trans_a ? a->cols : a->rows, a_cols = p.trans_a ? a->rows : a->cols;
    uint64_t b_rows = p.trans_b ? b->cols : b->rows, b_cols = p.trans_b ? b->rows : b->cols;
    p.k = (int64_t)a_cols;
    if (a_rows != d->rows || b_cols != d->cols || b_rows != a_cols || c->rows != d->rows ||
        c->cols != d->cols)
        return lt_refuse(CUBLAS_STATUS_INVALID_VALUE,
                         format("%s: shapes disagree: op(A) %llu x %llu, op(B) %llu x %llu, C %llu "
                                "x %llu, D %llu x %llu",
                                fn, (unsigned long long)a_rows, (unsigned long long)a_cols,
                                (unsigned long long)b_rows, (unsigned long long)b_cols,
                                (unsigned long long)c->rows, (unsigned long long)c->cols,
                                (unsigned long long)d->rows, (unsigned long long)d->cols));
    cublasStatus_t st = decode_epilogue(desc->epilogue, &p.epi);
    if (st != CUBLAS_STATUS_SUCCESS)
        return lt_refuse(st,
                         format("%s: epilogue %u is %s", fn, desc->epilogue,
                                st == CUBLAS_STATUS_NOT_SUPPORTED ? "not emulated"
                                                                  : "not a cublasLtEpilogue_t"));
    p.epilogue_value = desc->epilogue;
    // The bias (and the bias gradient) is D's type, or fp32 with a bf16 D.
    p.bias_type = desc->bias_type == -1 ? p.cd_type : (uint32_t)desc->bias_type;
    if ((p.epi.bias || p.epi.bgrad) && p.bias_type != p.cd_type &&
        !(p.bias_type == CUDA_R_32F && p.cd_type == CUDA_R_16BF))
        return lt_refuse(
            CUBLAS_STATUS_NOT_SUPPORTED,
            format("%s: bias data type %d with D of type %u", fn, desc->bias_type, p.cd_type));
    if (p.epi.aux) {
        if (desc->aux_type != -1 && (uint32_t)desc->aux_type != p.cd_type)
            return lt_refuse(CUBLAS_STATUS_NOT_SUPPORTED,
                             format("%s: an aux data type other than D's is not emulated", fn));
        // The ReLU mask's leading dimension is in bits, a multiple of 128; GELU's input is in
        // D's elements, a multiple of 8. Either is at least D's row count.
        int64_t q = relu_mask(p) ? 128 : 8;
        if (desc->aux_ld < p.m || desc->aux_ld % q != 0)
            return lt_refuse(CUBLAS_STATUS_INVALID_VALUE,
                             format("%s: EPILOGUE_AUX_LD %lld: the %s needs a multiple of %lld of "
                                    "at least D's %lld rows",
                                    fn, (long long)desc->aux_ld,
                                    relu_mask(p) ? "ReLU bit mask" : "GELU input", (long long)q,
                                    (long long)p.m));
        p.aux_ld = desc->aux_ld;
    }
    p.bias = desc->bias;
    p.aux = desc->aux;
    *out = p;
    return CUBLAS_STATUS_SUCCESS;
}

// Largest power of two up to 256 that divides p (NULL: 256, it constrains nothing).
uint32_t alignment_of(const void *p) {
    uintptr_t v = (uintptr_t)p;
    uint32_t a = 256;
    while (a > 1 && (v & (a - 1)))
        a >>= 1;
    return a;
}

// What an algorithm needs of the pointers A, B, C, D, bias, aux (bytes), and of the leading
// dimensions (bytes a column's start advances must be a multiple of it).
struct Needs {
    uint32_t align[6];
    uint32_t ld_multiple;
};

Needs needs_of(int algo, const Problem &p) {
    Needs n;
    if (algo == kAlgoVector) {
        for (uint32_t &a : n.align)
            a = 16;
        n.ld_multiple = 16;
        return n;
    }
    // A variant may want more of bf16 matrices (variant_bf16_alignment), column strides too.
    uint32_t bf = variant_bf16_alignment();
    uint32_t ab = is_bf16(p.ab_type) ? bf : 4, cd = is_bf16(p.cd_type) ? bf : 4;
    n.align[0] = n.align[1] = ab;
    n.align[2] = n.align[3] = cd;
    n.align[4] = (uint32_t)type_size(p.bias_type);
    n.align[5] = relu_mask(p) ? 4 : (uint32_t)type_size(p.cd_type); // the mask: 32-bit words
    n.ld_multiple = is_bf16(p.ab_type) || is_bf16(p.cd_type) ? (bf > 2 ? bf : 1) : 1;
    return n;
}

const char *const kPointerNames[6] = {"A", "B", "C", "D", "bias", "aux"};

// "" when alignments have what algo needs, else what they lack. `has` holds the pointers'
// alignments (A, B, C, D, bias, aux), unused ones at 256.
std::string lacks(int algo, const Problem &p, const uint32_t has[6]) {
    Needs n = needs_of(algo, p);
    for (int i = 0; i < 6; ++i)
        if (has[i] < n.align[i])
            return format("%s is %u-byte aligned, the algorithm needs %u", kPointerNames[i], has[i],
                          n.align[i]);
    const cudaemu_lt_layout *ls[4] = {&p.a, &p.b, &p.c, &p.d};
    for (int i = 0; i < 4; ++i) {
        uint64_t bytes = (uint64_t)ls[i]->ld * type_size(ls[i]->type);
        if (bytes % n.ld_multiple != 0)
            return format("the columns of %s are %llu bytes apart, the algorithm needs a multiple "
                          "of %u",
                          kPointerNames[i], (unsigned long long)bytes, n.ld_multiple);
    }
    return "";
}

// Ties an algorithm to the problem family it was chosen for (types, compute, epilogue).
uint64_t signature(const Problem &p) {
    return (uint64_t)(uint32_t)p.compute | (uint64_t)p.ab_type << 8 | (uint64_t)p.cd_type << 16 |
           (uint64_t)p.bias_type << 24 | (uint64_t)p.epilogue_value << 32;
}

void write_algo(int algo, const Problem &p, size_t workspace, cublasLtMatmulHeuristicResult_t *r) {
    std::memset(r, 0, sizeof *r);
    r->algo.data[0] = kAlgoMagic;
    r->algo.data[1] = (uint64_t)algo;
    r->algo.data[2] = signature(p);
    r->algo.data[3] = workspace;
    r->workspaceSize = workspace;
    r->state = CUBLAS_STATUS_SUCCESS;
    r->wavesCount = 1.0f;
}

// ---- the work --------------------------------------------------------------------------------
float load(const void *p, uint32_t type, size_t i) {
    return is_bf16(type) ? bp_bf16_to_f32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}
void store(void *p, uint32_t type, size_t i, float v) {
    if (is_bf16(type))
        ((uint16_t *)p)[i] = bp_f32_to_bf16(v);
    else
        ((float *)p)[i] = v;
}

// The tanh form of GELU, as cuBLASLt's epilogue documents it, and its derivative; the tanh is
// the variant's (a fast approximation in some).
constexpr float kGeluScale = 0.7978845608028654f, kGeluCubic = 0.044715f;
float gelu(float x) {
    float t = variant_epilogue_tanh(kGeluScale * (x + kGeluCubic * x * x * x));
    return 0.5f * x * (1.0f + t);
}
float gelu_derivative(float x) {
    float t = variant_epilogue_tanh(kGeluScale * (x + kGeluCubic * x * x * x));
    return 0.5f * (1.0f + t) +
           0.5f * x * (1.0f - t * t) * kGeluScale * (1.0f + 3.0f * kGeluCubic * x * x);
}

// Elements (ReLU mask: bits) a column-major rows x cols matrix with leading dimension ld spans.
uint64_t extent(uint64_t rows, uint64_t cols, int64_t ld) {
    if (rows == 0 || cols == 0) return 0;
    return (cols - 1) * (uint64_t)ld + rows;
}

struct Range {
    const char *name;
    const void *p;
    uint64_t bytes;
};

struct MatmulOp final : Op {
    std::string what() const override {
        return "cublasLtMatmul";
    }
    Device *device;
    Problem p;
    float alpha, beta;
    const void *A, *B, *C;
    void *D;
    void *workspace;
    size_t workspace_bytes;

    bool reads_ab() const {
        return alpha != 0.0f && p.k > 0;
    }

    // Everything the call touches, for the device-memory and overlap checks.
    std::vector<Range> ranges() const {
        std::vector<Range> r;
        if (reads_ab()) {
            r.push_back({"A", A, extent(p.a.rows, p.a.cols, p.a.ld) * type_size(p.a.type)});
            r.push_back({"B", B, extent(p.b.rows, p.b.cols, p.b.ld) * type_size(p.b.type)});
        }
        if (beta != 0.0f && C != D)
            r.push_back({"C", C, extent(p.c.rows, p.c.cols, p.c.ld) * type_size(p.c.type)});
        if (p.epi.bias || p.epi.bgrad)
            r.push_back({p.epi.bgrad ? "the bias gradient" : "the bias", p.bias,
                         (uint64_t)p.m * type_size(p.bias_type)});
        if (p.epi.aux) {
            uint64_t e = extent((uint64_t)p.m, (uint64_t)p.n, p.aux_ld);
            r.push_back({"aux", p.aux, relu_mask(p) ? (e + 7) / 8 : e * type_size(p.cd_type)});
        }
        if (workspace_bytes) r.push_back({"the workspace", workspace, workspace_bytes});
        return r;
    }

    cudaError_t check(std::string *message) const {
        Range d{"D", D, extent(p.d.rows, p.d.cols, p.d.ld) * type_size(p.d.type)};
        std::vector<Range> r = ranges();
        r.push_back(d);
        for (const Range &x : r) {
            std::string bad = check_device_range(x.p, x.bytes, device);
            if (!bad.empty()) {
                *message = format("cublasLtMatmul: %s: %s", x.name, bad.c_str());
                return cudaErrorIllegalAddress;
            }
        }
        r.pop_back();
        uintptr_t d0 = (uintptr_t)D, d1 = d0 + d.bytes;
        for (const Range &x : r) {
            uintptr_t x0 = (uintptr_t)x.p, x1 = x0 + x.bytes;
            if (x0 < d1 && d0 < x1) {
                *message = format(
                    "cublasLtMatmul: D (%p, %llu bytes) overlaps %s (%p, %llu bytes): "
                    "the GPU's tiles would race on it",
                    D, (unsigned long long)d.bytes, x.name, x.p, (unsigned long long)x.bytes);
                return cudaErrorLaunchFailure;
            }
        }
        return cudaSuccess;
    }

    // An operand as fp32 values, column-major with ld = rows: bf16 widened, TF32 rounded. NULL
    // when the operand can be read as it is.
    const float *widen(const void *src, const cudaemu_lt_layout &l, std::vector<float> &buf,
                       int64_t *ld) const {
        if (!is_bf16(l.type) && !p.tf32) {
            *ld = l.ld;
            return (const float *)src;
        }
        buf.resize(l.rows * l.cols);
        for (uint64_t j = 0; j < l.cols; ++j)
            for (uint64_t i = 0; i < l.rows; ++i) {
                float v = load(src, l.type, j * (uint64_t)l.ld + i);
                buf[j * l.rows + i] = p.tf32 ? variant_tf32(v) : v;
            }
        *ld = (int64_t)(l.rows > 0 ? l.rows : 1);
        return buf.data();
    }

    void product(std::vector<float> &acc) const {
        acc.assign((size_t)p.m * p.n, 0.0f);
        if (!reads_ab()) return;
        std::vector<float> abuf, bbuf;
        int64_t lda = 0, ldb = 0;
        const float *a = widen(A, p.a, abuf, &lda), *b = widen(B, p.b, bbuf, &ldb);
        variant_sgemm(p.trans_a, p.trans_b, (int)p.m, (int)p.n, (int)p.k, alpha, a, (int)lda, b,
                      (int)ldb, 0.0f, acc.data(), (int)p.m);
    }

    cudaError_t run(std::string *message) override {
        cudaError_t err = check(message);
        if (err != cudaSuccess) return err;
        if (workspace_bytes)
            std::memset(workspace, kPoison, workspace_bytes); // scratch, as split-k's
        std::vector<float> acc;
        product(acc);
        std::vector<double> bgrad(p.epi.bgrad ? (size_t)p.m : 0, 0.0);
        unsigned char *mask = (unsigned char *)p.aux;
        for (int64_t j = 0; j < p.n; ++j)
            for (int64_t i = 0; i < p.m; ++i) {
                float t = acc[(size_t)j * p.m + i];
                if (beta != 0.0f) t += beta * load(C, p.c.type, (size_t)j * p.c.ld + i);
                size_t x = (size_t)j * (size_t)p.aux_ld + (size_t)i; // element (bit) of aux
                if (p.epi.backward) {
                    // D = t act'(z): z's ReLU mask bit, or GELU's saved input.
                    float der = p.epi.relu ? (float)((mask[x / 8] >> (x % 8)) & 1)
                                           : gelu_derivative(load(p.aux, p.cd_type, x));
                    t *= der;
                    if (p.epi.bgrad) bgrad[i] += t; // the unrounded value, in a fixed order
                } else {
                    if (p.epi.bias) t += load(p.bias, p.bias_type, (size_t)i);
                    if (p.epi.aux && p.epi.relu) {
                        unsigned char bit = (unsigned char)(1u << (x % 8));
                        mask[x / 8] = t > 0.0f ? mask[x / 8] | bit : mask[x / 8] & ~bit;
                    }
                    if (p.epi.aux && p.epi.gelu) store(p.aux, p.cd_type, x, t);
                    if (p.epi.relu) t = t < 0.0f ? 0.0f : t; // a NaN stays NaN
                    if (p.epi.gelu) t = gelu(t);
                }
                store(D, p.d.type, (size_t)j * p.d.ld + i, t);
            }
        for (size_t i = 0; i < bgrad.size(); ++i)
            store((void *)p.bias, p.bias_type, i, (float)bgrad[i]);
        return cudaSuccess;
    }
};

// The best algorithm the alignments allow, best first, at most `room` of them.
int candidates(const Problem &p, const uint32_t has[6], int out[2], std::string *why) {
    int count = 0;
    for (int algo : {kAlgoVector, kAlgoElement}) {
        std::string bad = lacks(algo, p, has);
        if (bad.empty())
            out[count++] = algo;
        else
            *why = bad;
    }
    return count;
}

} // namespace
} // namespace cudaemu

using namespace cudaemu;

extern "C" {

cublasStatus_t cublasLtCreate(cublasLtHandle_t *handle) {
    CUDAEMU_LOCK;
    if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
    Device *dev = current_device();
    if (!dev || dev->sticky != cudaSuccess) return CUBLAS_STATUS_NOT_INITIALIZED;
    auto *h = new cudaemu_cublaslt{dev};
    registry<cublasLtHandle_t>().insert(h);
    *handle = h;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) {
    CUDAEMU_LOCK;
    if (!live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
    flush_device(handle->device); // work queued with it finishes first
    registry<cublasLtHandle_t>().erase(handle);
    delete handle;
    return CUBLAS_STATUS_SUCCESS;
}

const char *cublasLtGetStatusName(cublasStatus_t status) {
    return cublasGetStatusName(status);
}

const char *cublasLtGetStatusString(cublasStatus_t status) {
    return cublasGetStatusString(status);
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *desc, cublasComputeType_t compute,
                                        cudaDataType_t scale) {
    CUDAEMU_LOCK;
    if (!desc) return CUBLAS_STATUS_INVALID_VALUE;
    auto *d = new cudaemu_lt_matmul_desc;
    d->compute = compute;
    d->scale = scale;
    registry<cublasLtMatmulDesc_t>().insert(d);
    *desc = d;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
    CUDAEMU_LOCK;
    if (!desc) return CUBLAS_STATUS_SUCCESS;
    if (!live(desc)) return CUBLAS_STATUS_INVALID_VALUE;
    registry<cublasLtMatmulDesc_t>().erase(desc);
    delete desc;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc,
                                              cublasLtMatmulDescAttributes_t attr, const void *buf,
                                              size_t size) {
    CUDAEMU_LOCK;
    if (!live(desc)) return CUBLAS_STATUS_INVALID_VALUE;
    return set_field(desc_field(desc, attr), buf, size, "cublasLtMatmulDescSetAttribute", attr);
}

cublasStatus_t cublasLtMatmulDescGetAttribute(cublasLtMatmulDesc_t desc,
                                              cublasLtMatmulDescAttributes_t attr, void *buf,
                                              size_t size, size_t *written) {
    CUDAEMU_LOCK;
    if (!live(desc)) return CUBLAS_STATUS_INVALID_VALUE;
    return get_field(desc_field(desc, attr), buf, size, written);
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *layout, cudaDataType_t type,
                                          uint64_t rows, uint64_t cols, int64_t ld) {
    CUDAEMU_LOCK;
    if (!layout) return CUBLAS_STATUS_INVALID_VALUE;
    auto *l = new cudaemu_lt_layout;
    l->type = (uint32_t)type;
    l->rows = rows, l->cols = cols, l->ld = ld;
    registry<cublasLtMatrixLayout_t>().insert(l);
    *layout = l;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
    CUDAEMU_LOCK;
    if (!layout) return CUBLAS_STATUS_SUCCESS;
    if (!live(layout)) return CUBLAS_STATUS_INVALID_VALUE;
    registry<cublasLtMatrixLayout_t>().erase(layout);
    delete layout;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t layout,
                                                cublasLtMatrixLayoutAttribute_t attr,
                                                const void *buf, size_t size) {
    CUDAEMU_LOCK;
    if (!live(layout)) return CUBLAS_STATUS_INVALID_VALUE;
    return set_field(layout_field(layout, attr), buf, size, "cublasLtMatrixLayoutSetAttribute",
                     attr);
}

cublasStatus_t cublasLtMatrixLayoutGetAttribute(cublasLtMatrixLayout_t layout,
                                                cublasLtMatrixLayoutAttribute_t attr, void *buf,
                                                size_t size, size_t *written) {
    CUDAEMU_LOCK;
    if (!live(layout)) return CUBLAS_STATUS_INVALID_VALUE;
    return get_field(layout_field(layout, attr), buf, size, written);
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *pref) {
    CUDAEMU_LOCK;
    if (!pref) return CUBLAS_STATUS_INVALID_VALUE;
    auto *p = new cudaemu_lt_preference;
    registry<cublasLtMatmulPreference_t>().insert(p);
    *pref = p;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
    CUDAEMU_LOCK;
    if (!pref) return CUBLAS_STATUS_SUCCESS;
    if (!live(pref)) return CUBLAS_STATUS_INVALID_VALUE;
    registry<cublasLtMatmulPreference_t>().erase(pref);
    delete pref;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void *buf, size_t size) {
    CUDAEMU_LOCK;
    if (!live(pref)) return CUBLAS_STATUS_INVALID_VALUE;
    return set_field(pref_field(pref, attr), buf, size, "cublasLtMatmulPreferenceSetAttribute",
                     attr);
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                              cublasLtMatmulPreference_t pref, int requested,
                                              cublasLtMatmulHeuristicResult_t results[],
                                              int *returned) {
    CUDAEMU_LOCK;
    const char *fn = "cublasLtMatmulAlgoGetHeuristic";
    if (!live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (returned) *returned = 0;
    if (!live(desc) || !live(a) || !live(b) || !live(c) || !live(d) || !live(pref) ||
        requested <= 0 || !results || !returned)
        return lt_refuse(CUBLAS_STATUS_INVALID_VALUE,
                         format("%s: a descriptor is not live, or requestedAlgoCount %d <= 0, or "
                                "no room for the results",
                                fn, requested));
    Problem p;
    cublasStatus_t st = describe(fn, desc, a, b, c, d, &p);
    if (st != CUBLAS_STATUS_SUCCESS) return st;
    // The preference says how aligned A..D will be; the bias and aux pointers are read from the
    // descriptor for theirs (cuBLASLt's heuristic does the same).
    uint32_t has[6] = {pref->align[0],
                       pref->align[1],
                       pref->align[2],
                       pref->align[3],
                       p.epi.bias || p.epi.bgrad ? alignment_of(p.bias) : 256,
                       p.epi.aux ? alignment_of(p.aux) : 256};
    int algos[2];
    std::string why;
    int count = candidates(p, has, algos, &why);
    // A variant's refusal (variant.h): cuBLASLt may offer nothing for a problem it documents.
    char how = 'u';
    std::string refused =
        variant_refusal(epilogue_name(p.epilogue_value), is_bf16(p.ab_type), p.tf32, &how);
    if (!refused.empty() && how == 'e') {
        std::fprintf(stderr, "cudaemu: %s: no algorithm: %s\n", fn, refused.c_str());
        return CUBLAS_STATUS_SUCCESS; // with *returned 0
    }
    if (!refused.empty())
        return lt_refuse(how == 'i' ? CUBLAS_STATUS_INVALID_VALUE : CUBLAS_STATUS_NOT_SUPPORTED,
                         format("%s: %s", fn, refused.c_str()));
    if (count == 0)
        return lt_refuse(CUBLAS_STATUS_NOT_SUPPORTED,
                         format("%s: no algorithm: %s", fn, why.c_str()));
    size_t ws =
        pref->max_workspace < kWorkspaceBytes ? (size_t)pref->max_workspace : kWorkspaceBytes;
    if (count > requested) count = requested;
    for (int i = 0; i < count; ++i)
        write_algo(algos[i], p, ws, &results[i]);
    *returned = count;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void *alpha,
                              const void *A, cublasLtMatrixLayout_t a_layout, const void *B,
                              cublasLtMatrixLayout_t b_layout, const void *beta, const void *C,
                              cublasLtMatrixLayout_t c_layout, void *D,
                              cublasLtMatrixLayout_t d_layout, const cublasLtMatmulAlgo_t *algo,
                              void *workspace, size_t workspace_bytes, cudaStream_t stream) {
    CUDAEMU_LOCK;
    const char *fn = "cublasLtMatmul";
    if (!live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!live(desc) || !live(a_layout) || !live(b_layout) || !live(c_layout) || !live(d_layout) ||
        !alpha || !beta)
        return lt_refuse(CUBLAS_STATUS_INVALID_VALUE,
                         format("%s: a descriptor is not live, or alpha or beta is NULL", fn));
    Problem p;
    cublasStatus_t st = describe(fn, desc, a_layout, b_layout, c_layout, d_layout, &p);
    if (st != CUBLAS_STATUS_SUCCESS) return st;
    float al = *(const float *)alpha, be = *(const float *)beta; // host pointer mode
    bool reads_ab = al != 0.0f && p.k > 0, reads_c = be != 0.0f;
    if (!D || (reads_ab && (!A || !B)) || (reads_c && !C))
        return lt_refuse(CUBLAS_STATUS_INVALID_VALUE,
                         format("%s: a matrix the call reads or writes is NULL", fn));
    if (C == D && (p.c.type != p.d.type || p.c.ld != p.d.ld))
        return lt_refuse(CUBLAS_STATUS_INVALID_VALUE,
                         format("%s: in place (C == D) with layouts that differ", fn));
    if ((p.epi.bias || p.epi.bgrad) && !p.bias)
        return lt_refuse(CUBLAS_STATUS_INVALID_VALUE,
                         format("%s: epilogue %u takes a %s, and BIAS_POINTER is NULL", fn,
                                p.epilogue_value, p.epi.bgrad ? "bias gradient" : "bias"));
    if (p.epi.aux && !p.aux)
        return lt_refuse(CUBLAS_STATUS_INVALID_VALUE,
                         format("%s: epilogue %u %s an aux buffer, and EPILOGUE_AUX_POINTER is "
                                "NULL",
                                fn, p.epilogue_value, p.epi.backward ? "reads" : "writes"));
    uint32_t has[6] = {alignment_of(A),
                       alignment_of(B),
                       reads_c ? alignment_of(C) : 256,
                       alignment_of(D),
                       p.epi.bias || p.epi.bgrad ? alignment_of(p.bias) : 256,
                       p.epi.aux ? alignment_of(p.aux) : 256};
    int chosen = 0;
    size_t needs_ws = 0;
    if (!algo) { // an implicit heuristic with no workspace, as documented
        int algos[2];
        std::string why;
        if (candidates(p, has, algos, &why) == 0)
            return lt_refuse(CUBLAS_STATUS_NOT_SUPPORTED,
                             format("%s: no algorithm: %s", fn, why.c_str()));
        chosen = algos[0];
    } else {
        if (algo->data[0] != kAlgoMagic ||
            (algo->data[1] != (uint64_t)kAlgoVector && algo->data[1] != (uint64_t)kAlgoElement))
            return lt_refuse(CUBLAS_STATUS_INVALID_VALUE,
                             format("%s: the algorithm record is not one the heuristic wrote", fn));
        if (algo->data[2] != signature(p))
            return lt_refuse(CUBLAS_STATUS_INVALID_VALUE,
                             format("%s: the algorithm was chosen for other types, compute type or "
                                    "epilogue",
                                    fn));
        chosen = (int)algo->data[1];
        needs_ws = (size_t)algo->data[3];
        std::string bad = lacks(chosen, p, has);
        if (!bad.empty())
            return lt_refuse(
                CUBLAS_STATUS_INVALID_VALUE,
                format("%s: %s (the heuristic chose it for better aligned pointers; ask "
                       "it again with the call's alignments)",
                       fn, bad.c_str()));
    }
    if (workspace_bytes < needs_ws || (workspace_bytes > 0 && !workspace))
        return lt_refuse(CUBLAS_STATUS_INVALID_VALUE,
                         format("%s: %zu bytes of workspace at %p, the algorithm needs %zu", fn,
                                workspace_bytes, workspace, needs_ws));
    if (p.m == 0 || p.n == 0) return CUBLAS_STATUS_SUCCESS;
    auto op = std::make_unique<MatmulOp>();
    op->device = handle->device;
    op->p = p;
    op->alpha = al, op->beta = be;
    op->A = A, op->B = B, op->C = reads_c ? C : nullptr, op->D = D;
    op->workspace = workspace;
    op->workspace_bytes = needs_ws; // the part the algorithm uses
    cudaError_t err = queue_library_work(handle->device, stream, std::move(op));
    return err != cudaSuccess ? CUBLAS_STATUS_EXECUTION_FAILED : CUBLAS_STATUS_SUCCESS;
}

} // extern "C"
