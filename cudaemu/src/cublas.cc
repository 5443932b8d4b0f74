// The emulated cuBLAS: handles, and Sgemm / Sgeam computed on the host (Sgemm by CBLAS, or in the
// variant's summation order: variant.h), column-major as cuBLAS is, queued on the handle's
// stream like the kernels cuBLAS would launch.
//
// The argument checks are cuBLAS's documented ones (they return CUBLAS_STATUS_INVALID_VALUE at
// the call). The matrices must be device memory of the handle's device covering every element
// the call touches; that is checked when the work runs, and a failure is a kernel fault
// (cudaErrorIllegalAddress, sticky), as the GPU's out-of-bounds read would be.
#include <cblas.h>

#include <cstring>
#include <vector>

#include "cublas_v2.h"
#include "internal.h"
#include "variant.h"

struct cudaemu_cublas {
    cudaemu::Device *device;
    cudaStream_t stream = nullptr;
    void *workspace = nullptr;
    size_t workspace_bytes = 0;
    cublasMath_t math = CUBLAS_DEFAULT_MATH;
};

namespace cudaemu {
namespace {

std::set<cublasHandle_t> &handles() {
    static auto *s = new std::set<cublasHandle_t>;
    return *s;
}

bool valid(cublasHandle_t h) {
    return h && handles().count(h);
}

bool valid_op(cublasOperation_t op) {
    return op == CUBLAS_OP_N || op == CUBLAS_OP_T || op == CUBLAS_OP_C;
}

// Elements a column-major rows x cols matrix with leading dimension ld spans.
size_t extent(int rows, int cols, int ld) {
    if (rows <= 0 || cols <= 0) return 0;
    return (size_t)(cols - 1) * (size_t)ld + (size_t)rows;
}

struct Matrix {
    const char *name;
    const float *p;
    size_t elems;
};

std::string check_matrices(const char *fn, const Matrix *ms, int n, const Device *dev) {
    for (int i = 0; i < n; ++i) {
        if (ms[i].elems == 0) continue;
        std::string bad = check_device_range(ms[i].p, ms[i].elems * sizeof(float), dev);
        if (!bad.empty()) return format("%s: matrix %s: %s", fn, ms[i].name, bad.c_str());
    }
    return "";
}

struct GemmOp final : Op {
    std::string what() const override {
        return "cublasSgemm";
    }
    Device *device;
    cublasOperation_t ta, tb;
    int m, n, k, lda, ldb, ldc;
    float alpha, beta;
    const float *A, *B;
    float *C;
    cudaError_t run(std::string *message) override {
        bool reads_ab = alpha != 0.0f && k > 0;
        Matrix ms[3] = {
            {"A", A,
             reads_ab ? extent(ta == CUBLAS_OP_N ? m : k, ta == CUBLAS_OP_N ? k : m, lda) : 0},
            {"B", B,
             reads_ab ? extent(tb == CUBLAS_OP_N ? k : n, tb == CUBLAS_OP_N ? n : k, ldb) : 0},
            {"C", C, extent(m, n, ldc)}};
        *message = check_matrices("cublasSgemm", ms, 3, device);
        if (!message->empty()) return cudaErrorIllegalAddress;
        if (!reads_ab) { // C = beta C; with beta 0, C is not read (it may hold NaN)
            for (int j = 0; j < n; ++j)
                for (int i = 0; i < m; ++i) {
                    float &c = C[(size_t)j * ldc + i];
                    c = beta == 0.0f ? 0.0f : beta * c;
                }
            return cudaSuccess;
        }
        if (beta == 0.0f) // BLAS does not read C then; make sure no NaN of it survives
            for (int j = 0; j < n; ++j)
                std::memset(C + (size_t)j * ldc, 0, (size_t)m * sizeof(float));
        variant_sgemm(ta != CUBLAS_OP_N, tb != CUBLAS_OP_N, m, n, k, alpha, A, lda, B, ldb, beta, C,
                      ldc);
        return cudaSuccess;
    }
};

struct GeamOp final : Op {
    std::string what() const override {
        return "cublasSgeam";
    }
    Device *device;
    cublasOperation_t ta, tb;
    int m, n, lda, ldb, ldc;
    float alpha, beta;
    const float *A, *B;
    float *C;
    cudaError_t run(std::string *message) override {
        bool ta_n = ta == CUBLAS_OP_N, tb_n = tb == CUBLAS_OP_N;
        Matrix ms[3] = {{"A", A, alpha != 0.0f ? extent(ta_n ? m : n, ta_n ? n : m, lda) : 0},
                        {"B", B, beta != 0.0f ? extent(tb_n ? m : n, tb_n ? n : m, ldb) : 0},
                        {"C", C, extent(m, n, ldc)}};
        *message = check_matrices("cublasSgeam", ms, 3, device);
        if (!message->empty()) return cudaErrorIllegalAddress;
        // In place (C == A or C == B, op N, same ld) reads each element before writing it.
        std::vector<float> out((size_t)m * n);
        for (int j = 0; j < n; ++j)
            for (int i = 0; i < m; ++i) {
                float v = 0.0f;
                if (alpha != 0.0f)
                    v += alpha * (ta_n ? A[(size_t)j * lda + i] : A[(size_t)i * lda + j]);
                if (beta != 0.0f)
                    v += beta * (tb_n ? B[(size_t)j * ldb + i] : B[(size_t)i * ldb + j]);
                out[(size_t)j * m + i] = v;
            }
        for (int j = 0; j < n; ++j)
            std::memcpy(C + (size_t)j * ldc, &out[(size_t)j * m], (size_t)m * sizeof(float));
        return cudaSuccess;
    }
};

// The handle's device must be usable, and its stream valid, to queue work.
cublasStatus_t queue_on(cublasHandle_t h, std::unique_ptr<Op> op) {
    cudaError_t err = queue_library_work(h->device, h->stream, std::move(op));
    return err != cudaSuccess ? CUBLAS_STATUS_EXECUTION_FAILED : CUBLAS_STATUS_SUCCESS;
}

} // namespace
} // namespace cudaemu

using namespace cudaemu;

extern "C" {

cublasStatus_t cublasCreate(cublasHandle_t *handle) {
    CUDAEMU_LOCK;
    if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
    Device *dev = current_device();
    if (!dev || dev->sticky != cudaSuccess) return CUBLAS_STATUS_NOT_INITIALIZED;
    auto *h = new cudaemu_cublas;
    h->device = dev;
    handles().insert(h);
    *handle = h;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t handle) {
    CUDAEMU_LOCK;
    if (!valid(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
    flush_device(handle->device); // cuBLAS waits for the device here
    handles().erase(handle);
    delete handle;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
    CUDAEMU_LOCK;
    if (!valid(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
    int saved = thread_state().device;
    thread_state().device = handle->device->ordinal;
    Stream *s = nullptr;
    cudaError_t err = resolve(stream, &s);
    thread_state().device = saved;
    if (err != cudaSuccess) return CUBLAS_STATUS_INVALID_VALUE;
    handle->stream = stream;
    // As documented: a new stream resets the handle to cuBLAS's own workspace.
    handle->workspace = nullptr;
    handle->workspace_bytes = 0;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetStream(cublasHandle_t handle, cudaStream_t *stream) {
    CUDAEMU_LOCK;
    if (!valid(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!stream) return CUBLAS_STATUS_INVALID_VALUE;
    *stream = handle->stream;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetWorkspace(cublasHandle_t handle, void *workspace, size_t bytes) {
    CUDAEMU_LOCK;
    if (!valid(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (bytes > 0 && !workspace) return CUBLAS_STATUS_INVALID_VALUE;
    if (workspace && ((uintptr_t)workspace % 256 != 0 ||
                      !check_device_range(workspace, bytes, handle->device).empty()))
        return CUBLAS_STATUS_INVALID_VALUE;
    handle->workspace = workspace;
    handle->workspace_bytes = bytes;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
    CUDAEMU_LOCK;
    if (!valid(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
    unsigned base = (unsigned)mode & ~(unsigned)CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION;
    if (base > CUBLAS_TF32_TENSOR_OP_MATH) return CUBLAS_STATUS_INVALID_VALUE;
    handle->math = mode; // kept, not applied: the emulator computes plain fp32
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetMathMode(cublasHandle_t handle, cublasMath_t *mode) {
    CUDAEMU_LOCK;
    if (!valid(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!mode) return CUBLAS_STATUS_INVALID_VALUE;
    *mode = handle->math;
    return CUBLAS_STATUS_SUCCESS;
}

const char *cublasGetStatusName(cublasStatus_t status) {
    switch (status) {
    case CUBLAS_STATUS_SUCCESS:
        return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED:
        return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED:
        return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE:
        return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH:
        return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR:
        return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED:
        return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR:
        return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED:
        return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR:
        return "CUBLAS_STATUS_LICENSE_ERROR";
    }
    return "CUBLAS_STATUS_UNKNOWN";
}

const char *cublasGetStatusString(cublasStatus_t status) {
    switch (status) {
    case CUBLAS_STATUS_SUCCESS:
        return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED:
        return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED:
        return "the resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE:
        return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_ARCH_MISMATCH:
        return "an absent device architectural feature is required";
    case CUBLAS_STATUS_MAPPING_ERROR:
        return "an access to GPU memory space failed";
    case CUBLAS_STATUS_EXECUTION_FAILED:
        return "the GPU program failed to execute";
    case CUBLAS_STATUS_INTERNAL_ERROR:
        return "an internal operation failed";
    case CUBLAS_STATUS_NOT_SUPPORTED:
        return "the functionality requested is not supported";
    case CUBLAS_STATUS_LICENSE_ERROR:
        return "an error was detected when checking the license";
    }
    return "unknown error";
}

cublasStatus_t cublasSgemm(cublasHandle_t handle, cublasOperation_t transa,
                           cublasOperation_t transb, int m, int n, int k, const float *alpha,
                           const float *A, int lda, const float *B, int ldb, const float *beta,
                           float *C, int ldc) {
    CUDAEMU_LOCK;
    if (!valid(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
    // cuBLAS's documented checks.
    int rows_a = transa == CUBLAS_OP_N ? m : k, rows_b = transb == CUBLAS_OP_N ? k : n;
    if (!valid_op(transa) || !valid_op(transb) || m < 0 || n < 0 || k < 0 ||
        lda < (rows_a > 1 ? rows_a : 1) || ldb < (rows_b > 1 ? rows_b : 1) ||
        ldc < (m > 1 ? m : 1) || !alpha || !beta)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (m == 0 || n == 0 || ((*alpha == 0.0f || k == 0) && *beta == 1.0f))
        return CUBLAS_STATUS_SUCCESS;
    auto op = std::make_unique<GemmOp>();
    op->device = handle->device;
    op->ta = transa;
    op->tb = transb;
    op->m = m, op->n = n, op->k = k, op->lda = lda, op->ldb = ldb, op->ldc = ldc;
    op->alpha = *alpha; // host pointer mode: read at the call
    op->beta = *beta;
    op->A = A, op->B = B, op->C = C;
    return queue_on(handle, std::move(op));
}

cublasStatus_t cublasSgeam(cublasHandle_t handle, cublasOperation_t transa,
                           cublasOperation_t transb, int m, int n, const float *alpha,
                           const float *A, int lda, const float *beta, const float *B, int ldb,
                           float *C, int ldc) {
    CUDAEMU_LOCK;
    if (!valid(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
    int rows_a = transa == CUBLAS_OP_N ? m : n, rows_b = transb == CUBLAS_OP_N ? m : n;
    if (!valid_op(transa) || !valid_op(transb) || m < 0 || n < 0 ||
        lda < (rows_a > 1 ? rows_a : 1) || ldb < (rows_b > 1 ? rows_b : 1) ||
        ldc < (m > 1 ? m : 1) || !alpha || !beta)
        return CUBLAS_STATUS_INVALID_VALUE;
    // In place only as documented: C = A needs ldc = lda and op N, and the same for B.
    if ((C == A && (ldc != lda || transa != CUBLAS_OP_N)) ||
        (C == B && (ldc != ldb || transb != CUBLAS_OP_N)))
        return CUBLAS_STATUS_INVALID_VALUE;
    if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
    auto op = std::make_unique<GeamOp>();
    op->device = handle->device;
    op->ta = transa;
    op->tb = transb;
    op->m = m, op->n = n, op->lda = lda, op->ldb = ldb, op->ldc = ldc;
    op->alpha = *alpha;
    op->beta = *beta;
    op->A = A, op->B = B, op->C = C;
    return queue_on(handle, std::move(op));
}

} // extern "C"
