/* cudaemu: the cuBLASLt API of the emulated device (C11 and C++): handles, matmul descriptors,
 * matrix layouts, preferences, the algorithm heuristic and cublasLtMatmul with the bias, ReLU
 * and GELU epilogues forward and backward, for fp32, TF32 and bf16 operands with fp32
 * accumulation. Computed on the host (CBLAS for the product, then the epilogue element by
 * element), queued on the call's stream, with cuBLASLt's documented argument checks. Names,
 * enum values, attribute sizes and the layout of the algorithm and heuristic records are
 * cuBLASLt's, so code compiled against this header means what it means against the toolkit.
 * Only what backprop uses (and a little around it) is here: cudaemu/README.md says what is
 * emulated and what only a GPU shows. */
#ifndef CUDAEMU_CUBLASLT_H
#define CUDAEMU_CUBLASLT_H

#include <stddef.h>
#include <stdint.h>

#include "cublas_v2.h"
#include "cuda_runtime_api.h"
#include "library_types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Opaque handles: made by the Create functions, freed by the Destroy ones. */
typedef struct cudaemu_cublaslt *cublasLtHandle_t;
typedef struct cudaemu_lt_matmul_desc *cublasLtMatmulDesc_t;
typedef struct cudaemu_lt_layout *cublasLtMatrixLayout_t;
typedef struct cudaemu_lt_preference *cublasLtMatmulPreference_t;

/* An algorithm as the heuristic returns it: a plain record the caller keeps by value. */
typedef struct {
    uint64_t data[8];
} cublasLtMatmulAlgo_t;

/* One answer of cublasLtMatmulAlgoGetHeuristic. */
typedef struct {
    cublasLtMatmulAlgo_t algo;
    size_t workspaceSize; /* bytes of workspace cublasLtMatmul must be given for algo */
    cublasStatus_t state;
    float wavesCount;
    int reserved[4];
} cublasLtMatmulHeuristicResult_t;

typedef enum { CUBLASLT_ORDER_COL = 0, CUBLASLT_ORDER_ROW = 1 } cublasLtOrder_t;

typedef enum {
    CUBLASLT_POINTER_MODE_HOST = 0,
    CUBLASLT_POINTER_MODE_DEVICE = 1,
    CUBLASLT_POINTER_MODE_DEVICE_VECTOR = 2,
    CUBLASLT_POINTER_MODE_ALPHA_DEVICE_VECTOR_BETA_ZERO = 3,
    CUBLASLT_POINTER_MODE_ALPHA_DEVICE_VECTOR_BETA_HOST = 4
} cublasLtPointerMode_t;

/* CUDAEMU_*_RANGE_ (not cuBLASLt's): each enum a caller passes a value of spans every
 * non-negative int, so in C++ an unknown value (which the emulator refuses) is still a value of
 * the type, not undefined behaviour (UBSan checks loads of enums). */

/* Matrix layout attributes; the type each one holds is in the comment. */
typedef enum {
    CUBLASLT_MATRIX_LAYOUT_TYPE = 0,                 /* uint32_t, a cudaDataType_t */
    CUBLASLT_MATRIX_LAYOUT_ORDER = 1,                /* int32_t, cublasLtOrder_t */
    CUBLASLT_MATRIX_LAYOUT_ROWS = 2,                 /* uint64_t */
    CUBLASLT_MATRIX_LAYOUT_COLS = 3,                 /* uint64_t */
    CUBLASLT_MATRIX_LAYOUT_LD = 4,                   /* int64_t, in elements */
    CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT = 5,          /* int32_t */
    CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET = 6, /* int64_t */
    CUDAEMU_LT_LAYOUT_ATTRIBUTE_RANGE_ = 0x7fffffff
} cublasLtMatrixLayoutAttribute_t;

/* Matmul descriptor attributes; the type each one holds is in the comment. */
typedef enum {
    CUBLASLT_MATMUL_DESC_COMPUTE_TYPE = 0,          /* int32_t, cublasComputeType_t */
    CUBLASLT_MATMUL_DESC_SCALE_TYPE = 1,            /* int32_t, cudaDataType_t of alpha, beta */
    CUBLASLT_MATMUL_DESC_POINTER_MODE = 2,          /* int32_t, cublasLtPointerMode_t */
    CUBLASLT_MATMUL_DESC_TRANSA = 3,                /* int32_t, cublasOperation_t */
    CUBLASLT_MATMUL_DESC_TRANSB = 4,                /* int32_t, cublasOperation_t */
    CUBLASLT_MATMUL_DESC_TRANSC = 5,                /* int32_t, CUBLAS_OP_N only */
    CUBLASLT_MATMUL_DESC_FILL_MODE = 6,             /* int32_t */
    CUBLASLT_MATMUL_DESC_EPILOGUE = 7,              /* uint32_t, cublasLtEpilogue_t */
    CUBLASLT_MATMUL_DESC_BIAS_POINTER = 8,          /* void *: bias, or the bias gradient */
    CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE = 10,    /* int64_t */
    CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER = 11, /* void * */
    CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD = 12,      /* int64_t: bits (ReLU mask), else elements */
    CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_BATCH_STRIDE = 13, /* int64_t */
    CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE = 22,    /* int32_t, cudaDataType_t */
    CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE = 26,            /* int32_t, cudaDataType_t; -1: D's */
    CUDAEMU_LT_DESC_ATTRIBUTE_RANGE_ = 0x7fffffff
} cublasLtMatmulDescAttributes_t;

/* What happens to the product after it is scaled: D = epilogue(alpha op(A) op(B) + beta C). */
typedef enum {
    CUBLASLT_EPILOGUE_DEFAULT = 1,
    CUBLASLT_EPILOGUE_RELU = 2,
    CUBLASLT_EPILOGUE_RELU_AUX = 2 | 128,
    CUBLASLT_EPILOGUE_BIAS = 4,
    CUBLASLT_EPILOGUE_RELU_BIAS = 2 | 4,
    CUBLASLT_EPILOGUE_RELU_AUX_BIAS = 2 | 128 | 4,
    CUBLASLT_EPILOGUE_DRELU = 8 | 128,
    CUBLASLT_EPILOGUE_DRELU_BGRAD = 8 | 128 | 16,
    CUBLASLT_EPILOGUE_GELU = 32,
    CUBLASLT_EPILOGUE_GELU_AUX = 32 | 128,
    CUBLASLT_EPILOGUE_GELU_BIAS = 32 | 4,
    CUBLASLT_EPILOGUE_GELU_AUX_BIAS = 32 | 128 | 4,
    CUBLASLT_EPILOGUE_DGELU = 64 | 128,
    CUBLASLT_EPILOGUE_DGELU_BGRAD = 64 | 128 | 16,
    CUBLASLT_EPILOGUE_BGRADA = 256,
    CUBLASLT_EPILOGUE_BGRADB = 512,
    CUDAEMU_LT_EPILOGUE_RANGE_ = 0x7fffffff
} cublasLtEpilogue_t;

typedef enum {
    CUBLASLT_SEARCH_BEST_FIT = 0,
    CUBLASLT_SEARCH_LIMITED_BY_ALGO_ID = 1
} cublasLtMatmulSearch_t;

/* Preference attributes of the heuristic; the type each one holds is in the comment. */
typedef enum {
    CUBLASLT_MATMUL_PREF_SEARCH_MODE = 0,           /* uint32_t, cublasLtMatmulSearch_t */
    CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES = 1,   /* uint64_t, default 0 */
    CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK = 3, /* uint32_t */
    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES = 5, /* uint32_t, default 256 */
    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES = 6, /* uint32_t, default 256 */
    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES = 7, /* uint32_t, default 256 */
    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES = 8, /* uint32_t, default 256 */
    CUBLASLT_MATMUL_PREF_MAX_WAVES_COUNT = 9,       /* float */
    CUBLASLT_MATMUL_PREF_IMPL_MASK = 12,            /* uint64_t */
    CUDAEMU_LT_PREFERENCE_ATTRIBUTE_RANGE_ = 0x7fffffff
} cublasLtMatmulPreferenceAttributes_t;

cublasStatus_t cublasLtCreate(cublasLtHandle_t *handle);
cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle);
const char *cublasLtGetStatusName(cublasStatus_t status);
const char *cublasLtGetStatusString(cublasStatus_t status);

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *desc, cublasComputeType_t compute,
                                        cudaDataType_t scale);
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc);
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc,
                                              cublasLtMatmulDescAttributes_t attr, const void *buf,
                                              size_t size);
/* size 0 with written non-NULL: *written receives the attribute's size. */
cublasStatus_t cublasLtMatmulDescGetAttribute(cublasLtMatmulDesc_t desc,
                                              cublasLtMatmulDescAttributes_t attr, void *buf,
                                              size_t size, size_t *written);

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *layout, cudaDataType_t type,
                                          uint64_t rows, uint64_t cols, int64_t ld);
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout);
cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t layout,
                                                cublasLtMatrixLayoutAttribute_t attr,
                                                const void *buf, size_t size);
cublasStatus_t cublasLtMatrixLayoutGetAttribute(cublasLtMatrixLayout_t layout,
                                                cublasLtMatrixLayoutAttribute_t attr, void *buf,
                                                size_t size, size_t *written);

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *pref);
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref);
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void *buf, size_t size);

/* Up to `requested` algorithms for the problem, best first, in results[0 .. *returned). */
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                              cublasLtMatmulPreference_t pref, int requested,
                                              cublasLtMatmulHeuristicResult_t results[],
                                              int *returned);

/* D = epilogue(alpha op(A) op(B) + beta C), column-major; D may be C (the same layout). */
cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void *alpha,
                              const void *A, cublasLtMatrixLayout_t a_layout, const void *B,
                              cublasLtMatrixLayout_t b_layout, const void *beta, const void *C,
                              cublasLtMatrixLayout_t c_layout, void *D,
                              cublasLtMatrixLayout_t d_layout, const cublasLtMatmulAlgo_t *algo,
                              void *workspace, size_t workspace_bytes, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
