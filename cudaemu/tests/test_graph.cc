// cudaemu's counts, stream capture and graphs: what counts as a host synchronisation, a captured
// step replayed bitwise as run directly (deferred and eager), fork and join across streams,
// CUDA's refusals during a capture (each invalidating it), and cudaGraphExecUpdate.
#include <gmock/gmock.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <thread>

#include "cublasLt.h"
#include "emu_test.h"

namespace {

__global__ void fill_kernel(float *out, float value, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = value;
}

__global__ void scale_kernel(const float *in, float *out, float k, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = in[i] * k + 0.25f;
}

__global__ void accumulate_kernel(float *acc, const float *x, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) acc[i] = acc[i] * 0.5f + x[i];
}

__global__ void add_kernel(const float *a, const float *b, float *out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = a[i] + b[i];
}

cudaemu_counts counts() {
    cudaemu_counts c;
    cudaemu_get_counts(&c);
    return c;
}

uint64_t syncs() {
    return counts().host_syncs;
}

bool same_bits(const std::vector<float> &a, const float *b, size_t n) {
    return a.size() == n && std::memcmp(a.data(), b, n * sizeof(float)) == 0;
}

// An fp32 cuBLASLt GEMM D (m x n) = A (m x k) B (k x n), column-major, with its algorithm.
struct Gemm {
    int m, n, k;
    cublasLtHandle_t h = nullptr;
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
    cublasLtMatmulPreference_t pref = nullptr;
    cublasLtMatmulHeuristicResult_t r{};
    void *ws = nullptr;
    Gemm(int m_, int n_, int k_) : m(m_), n(n_), k(k_) {
        EXPECT_EQ(cublasLtCreate(&h), CUBLAS_STATUS_SUCCESS);
        EXPECT_EQ(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F),
                  CUBLAS_STATUS_SUCCESS);
        EXPECT_EQ(cublasLtMatrixLayoutCreate(&a, CUDA_R_32F, m, k, m), CUBLAS_STATUS_SUCCESS);
        EXPECT_EQ(cublasLtMatrixLayoutCreate(&b, CUDA_R_32F, k, n, k), CUBLAS_STATUS_SUCCESS);
        EXPECT_EQ(cublasLtMatrixLayoutCreate(&d, CUDA_R_32F, m, n, m), CUBLAS_STATUS_SUCCESS);
        EXPECT_EQ(cublasLtMatmulPreferenceCreate(&pref), CUBLAS_STATUS_SUCCESS);
        uint64_t max_ws = 1 << 20;
        EXPECT_EQ(cublasLtMatmulPreferenceSetAttribute(
                      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &max_ws, sizeof max_ws),
                  CUBLAS_STATUS_SUCCESS);
        int found = 0;
        EXPECT_EQ(cublasLtMatmulAlgoGetHeuristic(h, desc, a, b, d, d, pref, 1, &r, &found),
                  CUBLAS_STATUS_SUCCESS);
        EXPECT_EQ(found, 1);
        EXPECT_EQ(cudaMalloc(&ws, r.workspaceSize > 0 ? r.workspaceSize : 1), cudaSuccess);
    }
    ~Gemm() {
        cudaFree(ws);
        cublasLtMatmulPreferenceDestroy(pref);
        cublasLtMatrixLayoutDestroy(a);
        cublasLtMatrixLayoutDestroy(b);
        cublasLtMatrixLayoutDestroy(d);
        cublasLtMatmulDescDestroy(desc);
        cublasLtDestroy(h);
    }
    cublasStatus_t run(const float *A, const float *B, float *D, cudaStream_t s) {
        const float one = 1.0f, zero = 0.0f;
        return cublasLtMatmul(h, desc, &one, A, a, B, b, &zero, D, d, D, d, &r.algo, ws,
                              r.workspaceSize, s);
    }
};

class EmuGraph : public Emu {
  protected:
    void SetUp() override {
        Emu::SetUp();
        cudaemu_reset_counts();
        ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
        ASSERT_EQ(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking), cudaSuccess);
        ASSERT_EQ(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), cudaSuccess);
        ASSERT_EQ(cudaEventCreateWithFlags(&e2, cudaEventDisableTiming), cudaSuccess);
    }
    void TearDown() override {
        cudaEventDestroy(e);
        cudaEventDestroy(e2);
        cudaStreamDestroy(s);
        cudaStreamDestroy(s2);
        Emu::TearDown();
    }
    cudaStreamCaptureStatus status(cudaStream_t st) {
        cudaStreamCaptureStatus out = cudaStreamCaptureStatusNone;
        EXPECT_EQ(cudaStreamIsCapturing(st, &out), cudaSuccess);
        return out;
    }
    cudaStream_t s = nullptr, s2 = nullptr;
    cudaEvent_t e = nullptr, e2 = nullptr;
};

// ---- counts ----------------------------------------------------------------------------------

TEST_F(EmuGraph, CudaEmuCountsSyncsButNotQueries) {
    for (int deferred = 0; deferred < 2; ++deferred) {
        SCOPED_TRACE(deferred ? "deferred" : "eager");
        cudaemu_set_deferred(deferred);
        float *d = device_array<float>(64);
        void *pinned = nullptr;
        ASSERT_EQ(cudaMallocHost(&pinned, 256), cudaSuccess);
        std::vector<float> pageable(64, 1.0f);
        cudaemu_reset_counts();

        EMU_LAUNCH(1, 64, 0, s, fill_kernel)(d, 2.0f, 64);
        ASSERT_EQ(cudaMemsetAsync(d, 0, 16, s), cudaSuccess);
        ASSERT_EQ(cudaMemcpyAsync(pinned, d, 256, cudaMemcpyDeviceToHost, s), cudaSuccess);
        ASSERT_EQ(cudaMemcpyAsync(d, pinned, 256, cudaMemcpyHostToDevice, s), cudaSuccess);
        ASSERT_EQ(cudaEventRecord(e, s), cudaSuccess);
        ASSERT_EQ(cudaStreamWaitEvent(s2, e, 0), cudaSuccess);
        EXPECT_EQ(cudaEventQuery(e), cudaSuccess);
        EXPECT_EQ(cudaStreamQuery(s), cudaSuccess);
        cudaemu_counts c = counts();
        EXPECT_EQ(c.host_syncs, 0u); // pinned copies, records, waits and queries do not wait
        EXPECT_EQ(c.kernels, 1u);
        EXPECT_EQ(c.copies, 3u);
        EXPECT_EQ(c.library_calls, 0u);
        EXPECT_EQ(((float *)pinned)[5], 2.0f); // the query ran the work before the event

        ASSERT_EQ(cudaMemcpyAsync(pageable.data(), d, 256, cudaMemcpyDeviceToHost, s), cudaSuccess);
        EXPECT_EQ(syncs(), 1u); // CUDA stages a pageable copy synchronously
        ASSERT_EQ(cudaMemcpyAsync(d, pageable.data(), 256, cudaMemcpyHostToDevice, s), cudaSuccess);
        EXPECT_EQ(syncs(), 2u);
        ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
        EXPECT_EQ(syncs(), 3u);
        ASSERT_EQ(cudaEventSynchronize(e), cudaSuccess);
        EXPECT_EQ(syncs(), 4u);
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        EXPECT_EQ(syncs(), 5u);
        ASSERT_EQ(cudaMemcpy(pageable.data(), d, 256, cudaMemcpyDeviceToHost), cudaSuccess);
        EXPECT_EQ(syncs(), 6u);
        ASSERT_EQ(cudaMemset(d, 0, 256), cudaSuccess);
        EXPECT_EQ(syncs(), 7u);
        ASSERT_EQ(cudaFree(d), cudaSuccess);
        EXPECT_EQ(syncs(), 8u);
        ASSERT_EQ(cudaFreeHost(pinned), cudaSuccess);
        EXPECT_EQ(syncs(), 9u);
        EXPECT_EQ(counts().copies, 7u);
        EXPECT_EQ(counts().graph_launches, 0u);
    }
}

TEST_F(EmuGraph, CudaEmuCountsLibraryCalls) {
    Gemm g(4, 4, 4);
    float *a = device_array<float>(16), *d = device_array<float>(16);
    EMU_LAUNCH(1, 16, 0, s, fill_kernel)(a, 1.0f, 16);
    cudaemu_reset_counts();
    ASSERT_EQ(g.run(a, a, d, s), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(g.run(a, a, d, s), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(counts().library_calls, 2u);
    EXPECT_EQ(counts().kernels, 0u);
}

// In deferred mode a query is where queued work runs: pinned memory written by an async copy
// is poison until an event query says the copy is done.
TEST_F(EmuGraph, CudaEmuDeferredQueryIsAProgressPoint) {
    cudaemu_set_deferred(1);
    float *d = device_array<float>(4);
    void *pinned = nullptr;
    ASSERT_EQ(cudaMallocHost(&pinned, 16), cudaSuccess);
    float *h = (float *)pinned;
    EMU_LAUNCH(1, 4, 0, s, fill_kernel)(d, 7.0f, 4);
    ASSERT_EQ(cudaMemcpyAsync(h, d, 16, cudaMemcpyDeviceToHost, s), cudaSuccess);
    ASSERT_EQ(cudaEventRecord(e, s), cudaSuccess);
    EXPECT_TRUE(std::isnan(h[0])); // read before the event: poison
    EXPECT_EQ(cudaEventQuery(e), cudaSuccess);
    EXPECT_EQ(h[0], 7.0f);
    EXPECT_EQ(syncs(), 0u);
    EXPECT_EQ(cudaFreeHost(pinned), cudaSuccess);
}

// ---- capture and replay ----------------------------------------------------------------------

constexpr int kN = 8; // the step's matrices are kN x kN

// One step: x2 = 2 in + 0.25; y = x2 * w (cuBLASLt); acc = acc / 2 + y; out = copy of acc
// (device to device) and out to pinned host memory.
void step(Gemm &g, cudaStream_t st, const float *in, float *x2, const float *w, float *y,
          float *acc, float *out, float *host) {
    const int n = kN * kN;
    EMU_LAUNCH(1, n, 0, st, scale_kernel)(in, x2, 2.0f, n);
    ASSERT_EQ(g.run(x2, w, y, st), CUBLAS_STATUS_SUCCESS);
    EMU_LAUNCH(1, n, 0, st, accumulate_kernel)(acc, y, n);
    ASSERT_EQ(cudaMemcpyAsync(out, acc, n * sizeof(float), cudaMemcpyDeviceToDevice, st),
              cudaSuccess);
    ASSERT_EQ(cudaMemcpyAsync(host, out, n * sizeof(float), cudaMemcpyDeviceToHost, st),
              cudaSuccess);
}

class EmuReplay : public EmuGraph {
  protected:
    void replay_matches_direct(bool deferred);
};

void EmuReplay::replay_matches_direct(bool deferred) {
    EmuReplay *t = this;
    cudaStream_t st = s;
    cudaEvent_t ev = e;
    cudaemu_set_deferred(deferred);
    const int n = kN * kN;
    Gemm g(kN, kN, kN);
    float *in = t->device_array<float>(n), *x2 = t->device_array<float>(n);
    float *w = t->device_array<float>(n), *y = t->device_array<float>(n);
    float *acc = t->device_array<float>(n), *out = t->device_array<float>(n);
    void *pinned = nullptr;
    ASSERT_EQ(cudaMallocHost(&pinned, n * sizeof(float)), cudaSuccess);
    float *host = (float *)pinned;
    std::vector<float> hin(n), hw(n);
    for (int i = 0; i < n; ++i) {
        hin[i] = std::sin(0.37f * (float)i);
        hw[i] = std::cos(0.11f * (float)i) / 3.0f;
    }
    t->upload(in, hin);
    t->upload(w, hw);

    ASSERT_EQ(cudaMemset(acc, 0, n * sizeof(float)), cudaSuccess);
    std::vector<std::vector<float>> direct;
    for (int r = 0; r < 3; ++r) {
        step(g, st, in, x2, w, y, acc, out, host);
        ASSERT_EQ(cudaStreamSynchronize(st), cudaSuccess);
        direct.emplace_back(host, host + n);
    }

    ASSERT_EQ(cudaMemset(acc, 0, n * sizeof(float)), cudaSuccess);
    cudaemu_reset_counts();
    ASSERT_EQ(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal), cudaSuccess);
    step(g, st, in, x2, w, y, acc, out, host);
    cudaGraph_t graph = nullptr;
    ASSERT_EQ(cudaStreamEndCapture(st, &graph), cudaSuccess);
    ASSERT_NE(graph, nullptr);
    EXPECT_EQ(t->download(acc, n), std::vector<float>(n, 0.0f)); // captured, not run
    size_t nodes = 0;
    ASSERT_EQ(cudaGraphGetNodes(graph, nullptr, &nodes), cudaSuccess);
    EXPECT_EQ(nodes, 5u);
    std::vector<cudaGraphNode_t> handles(nodes);
    ASSERT_EQ(cudaGraphGetNodes(graph, handles.data(), &nodes), cudaSuccess);
    cudaGraphNodeType type = cudaGraphNodeTypeEmpty;
    ASSERT_EQ(cudaGraphNodeGetType(handles[3], &type), cudaSuccess);
    EXPECT_EQ(type, cudaGraphNodeTypeMemcpy);
    cudaGraphExec_t exec = nullptr;
    ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    ASSERT_EQ(cudaGraphDestroy(graph), cudaSuccess); // the executable graph keeps its nodes
    cudaemu_reset_counts();
    for (int r = 0; r < 3; ++r) {
        std::memset(host, 0, n * sizeof(float));
        ASSERT_EQ(cudaGraphLaunch(exec, st), cudaSuccess);
        ASSERT_EQ(cudaEventRecord(ev, st), cudaSuccess);
        if (deferred) {
            EXPECT_TRUE(std::isnan(host[0])) << "read before the event: poison";
        }
        ASSERT_EQ(cudaEventQuery(ev), cudaSuccess);
        EXPECT_TRUE(same_bits(direct[r], host, n)) << "replay " << r;
    }
    cudaemu_counts c = counts();
    EXPECT_EQ(c.graph_launches, 3u);
    EXPECT_EQ(c.graph_nodes_run, 15u);
    EXPECT_EQ(c.kernels, 0u);
    EXPECT_EQ(c.library_calls, 0u);
    EXPECT_EQ(c.copies, 0u);
    EXPECT_EQ(c.host_syncs, 0u);
    EXPECT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
    EXPECT_EQ(cudaFreeHost(pinned), cudaSuccess);
}

TEST_F(EmuReplay, CudaEmuReplayIsBitwiseTheDirectRunDeferred) {
    replay_matches_direct(true);
}

TEST_F(EmuReplay, CudaEmuReplayIsBitwiseTheDirectRunEager) {
    replay_matches_direct(false);
}

TEST_F(EmuGraph, CudaEmuCaptureForksAndJoinsAcrossStreams) {
    cudaemu_set_deferred(1);
    float *a = device_array<float>(4), *b = device_array<float>(4), *c = device_array<float>(4);
    ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
    ASSERT_EQ(cudaEventRecord(e, s), cudaSuccess);
    ASSERT_EQ(cudaStreamWaitEvent(s2, e, 0), cudaSuccess); // fork: s2 joins the capture
    EXPECT_EQ(status(s2), cudaStreamCaptureStatusActive);
    EMU_LAUNCH(1, 4, 0, s2, fill_kernel)(b, 2.0f, 4);
    EMU_LAUNCH(1, 4, 0, s, fill_kernel)(a, 1.0f, 4);
    ASSERT_EQ(cudaEventRecord(e2, s2), cudaSuccess);
    ASSERT_EQ(cudaStreamWaitEvent(s, e2, 0), cudaSuccess); // join
    EMU_LAUNCH(1, 4, 0, s, add_kernel)(a, b, c, 4);
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    cudaGraph_t graph = nullptr;
    ASSERT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
    EXPECT_EQ(status(s2), cudaStreamCaptureStatusNone);
    EXPECT_EQ(cudaEventQuery(e2), cudaSuccess); // no longer a captured event
    size_t nodes = 0;
    ASSERT_EQ(cudaGraphGetNodes(graph, nullptr, &nodes), cudaSuccess);
    EXPECT_EQ(nodes, 3u);
    cudaGraphExec_t exec = nullptr;
    ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    ASSERT_EQ(cudaGraphLaunch(exec, s2), cudaSuccess); // any stream of the device
    ASSERT_EQ(cudaStreamSynchronize(s2), cudaSuccess);
    EXPECT_EQ(download(c, 4), std::vector<float>(4, 3.0f));
    EXPECT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
    EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
}

TEST_F(EmuGraph, CudaEmuUnjoinedCaptureIsRefused) {
    float *a = device_array<float>(4);
    ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
    ASSERT_EQ(cudaEventRecord(e, s), cudaSuccess);
    ASSERT_EQ(cudaStreamWaitEvent(s2, e, 0), cudaSuccess);
    EMU_LAUNCH(1, 4, 0, s2, fill_kernel)(a, 2.0f, 4); // never joined back to s
    cudaGraph_t graph = (cudaGraph_t)&graph;
    EXPECT_EQ(cudaStreamEndCapture(s, &graph), cudaErrorStreamCaptureUnjoined);
    EXPECT_EQ(graph, nullptr);
    EXPECT_EQ(status(s), cudaStreamCaptureStatusNone);
    EXPECT_EQ(status(s2), cudaStreamCaptureStatusNone);

    // A fork with no work of its own needs no join.
    ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
    EMU_LAUNCH(1, 4, 0, s, fill_kernel)(a, 2.0f, 4);
    ASSERT_EQ(cudaEventRecord(e, s), cudaSuccess);
    ASSERT_EQ(cudaStreamWaitEvent(s2, e, 0), cudaSuccess);
    ASSERT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
    EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
    EXPECT_EQ(cudaStreamEndCapture(s2, &graph), cudaErrorIllegalState); // not capturing
}

// The capture ends on its origin stream, on the thread that began it (but Relaxed), and a
// stream destroyed while it takes part invalidates it.
TEST_F(EmuGraph, CudaEmuEndCaptureChecksItsStreamAndThread) {
    cudaGraph_t graph = nullptr;
    ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
    EXPECT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaErrorIllegalState);
    ASSERT_EQ(cudaEventRecord(e, s), cudaSuccess);
    ASSERT_EQ(cudaStreamWaitEvent(s2, e, 0), cudaSuccess);
    cudaError_t other = cudaSuccess;
    std::thread([&] { other = cudaStreamEndCapture(s, &graph); }).join();
    EXPECT_EQ(other, cudaErrorStreamCaptureWrongThread);
    EXPECT_EQ(status(s), cudaStreamCaptureStatusActive);
    EXPECT_EQ(cudaStreamEndCapture(s2, &graph), cudaErrorStreamCaptureUnmatched);
    EXPECT_EQ(cudaStreamEndCapture(s, &graph), cudaErrorStreamCaptureInvalidated);

    cudaStream_t doomed = nullptr;
    ASSERT_EQ(cudaStreamCreateWithFlags(&doomed, cudaStreamNonBlocking), cudaSuccess);
    ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
    ASSERT_EQ(cudaEventRecord(e, s), cudaSuccess);
    ASSERT_EQ(cudaStreamWaitEvent(doomed, e, 0), cudaSuccess);
    ASSERT_EQ(cudaStreamDestroy(doomed), cudaSuccess);
    EXPECT_EQ(status(s), cudaStreamCaptureStatusInvalidated);
    EXPECT_EQ(cudaStreamEndCapture(s, &graph), cudaErrorStreamCaptureInvalidated);

    ASSERT_EQ(cudaStreamCreateWithFlags(&doomed, cudaStreamNonBlocking), cudaSuccess);
    ASSERT_EQ(cudaStreamBeginCapture(doomed, cudaStreamCaptureModeGlobal), cudaSuccess);
    ASSERT_EQ(cudaEventRecord(e, doomed), cudaSuccess);
    ASSERT_EQ(cudaStreamWaitEvent(s, e, 0), cudaSuccess);
    ASSERT_EQ(cudaStreamDestroy(doomed), cudaSuccess); // the origin: the capture ends
    EXPECT_EQ(status(s), cudaStreamCaptureStatusNone);
    void *p = nullptr;
    EXPECT_EQ(cudaMalloc(&p, 16), cudaSuccess);
    EXPECT_EQ(cudaFree(p), cudaSuccess);
    cudaGetLastError();
}

// Each call CUDA refuses during a capture returns CUDA's code, and invalidates the capture:
// later work on the stream is refused, and cudaStreamEndCapture gives no graph.
TEST_F(EmuGraph, CudaEmuRefusalsInvalidateTheCapture) {
    float *a = device_array<float>(4);
    void *pinned = nullptr;
    ASSERT_EQ(cudaMallocHost(&pinned, 16), cudaSuccess);
    std::vector<float> pageable(4);
    struct Case {
        const char *name;
        cudaError_t want;
        std::function<cudaError_t()> call;
    };
    void *got = nullptr;
    cudaEvent_t outside = nullptr;
    ASSERT_EQ(cudaEventCreate(&outside), cudaSuccess);
    ASSERT_EQ(cudaEventRecord(outside, s2), cudaSuccess);
    const Case cases[] = {
        {"cudaStreamSynchronize", cudaErrorStreamCaptureUnsupported,
         [&] { return cudaStreamSynchronize(s); }},
        {"cudaStreamQuery", cudaErrorStreamCaptureUnsupported, [&] { return cudaStreamQuery(s); }},
        {"cudaEventSynchronize", cudaErrorCapturedEvent,
         [&] {
             cudaEventRecord(e, s);
             return cudaEventSynchronize(e);
         }},
        {"cudaEventQuery", cudaErrorCapturedEvent,
         [&] {
             cudaEventRecord(e, s);
             return cudaEventQuery(e);
         }},
        {"cudaDeviceSynchronize", cudaErrorStreamCaptureUnsupported,
         [&] { return cudaDeviceSynchronize(); }},
        {"cudaMemcpy", cudaErrorStreamCaptureUnsupported,
         [&] { return cudaMemcpy(pageable.data(), a, 16, cudaMemcpyDeviceToHost); }},
        {"cudaMemset", cudaErrorStreamCaptureUnsupported, [&] { return cudaMemset(a, 0, 16); }},
        {"cudaMalloc", cudaErrorStreamCaptureUnsupported, [&] { return cudaMalloc(&got, 16); }},
        {"cudaFree", cudaErrorStreamCaptureUnsupported, [&] { return cudaFree(a); }},
        {"cudaMallocHost", cudaErrorStreamCaptureUnsupported,
         [&] { return cudaMallocHost(&got, 16); }},
        {"cudaMemcpyAsync pageable", cudaErrorStreamCaptureUnsupported,
         [&] { return cudaMemcpyAsync(pageable.data(), a, 16, cudaMemcpyDeviceToHost, s); }},
        {"cudaMallocAsync", cudaErrorStreamCaptureUnsupported,
         [&] { return cudaMallocAsync(&got, 16, s); }},
        {"cudaFreeAsync", cudaErrorStreamCaptureUnsupported, [&] { return cudaFreeAsync(a, s); }},
        {"cudaStreamWaitEvent outside", cudaErrorStreamCaptureIsolation,
         [&] { return cudaStreamWaitEvent(s, outside, 0); }},
    };
    for (const Case &c : cases) {
        SCOPED_TRACE(c.name);
        ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
        EMU_LAUNCH(1, 4, 0, s, fill_kernel)(a, 5.0f, 4);
        ASSERT_EQ(cudaMemcpyAsync(pinned, a, 16, cudaMemcpyDeviceToHost, s), cudaSuccess);
        EXPECT_EQ(status(s), cudaStreamCaptureStatusActive);
        EXPECT_EQ(c.call(), c.want);
        EXPECT_EQ(status(s), cudaStreamCaptureStatusInvalidated);
        EMU_LAUNCH(1, 4, 0, s, fill_kernel)(a, 6.0f, 4);
        EXPECT_EQ(cudaGetLastError(), cudaErrorStreamCaptureInvalidated);
        cudaGraph_t graph = (cudaGraph_t)&graph;
        EXPECT_EQ(cudaStreamEndCapture(s, &graph), cudaErrorStreamCaptureInvalidated);
        EXPECT_EQ(graph, nullptr);
        EXPECT_EQ(status(s), cudaStreamCaptureStatusNone);
        cudaGetLastError();
    }
    // Nothing captured ever ran, and the refused calls did nothing.
    EXPECT_EQ(got, nullptr);
    std::vector<float> h = download(a, 4);
    EXPECT_TRUE(std::isnan(h[0]));
    EXPECT_EQ(cudaEventDestroy(outside), cudaSuccess);
    EXPECT_EQ(cudaFreeHost(pinned), cudaSuccess);
}

TEST_F(EmuGraph, CudaEmuLegacyStreamDuringABlockingCaptureIsImplicit) {
    cudaStream_t blocking = nullptr;
    ASSERT_EQ(cudaStreamCreate(&blocking), cudaSuccess);
    float *a = device_array<float>(4);
    ASSERT_EQ(cudaStreamBeginCapture(blocking, cudaStreamCaptureModeGlobal), cudaSuccess);
    cudaStreamCaptureStatus st;
    EXPECT_EQ(cudaStreamIsCapturing(nullptr, &st), cudaErrorStreamCaptureImplicit);
    EXPECT_EQ(status(blocking), cudaStreamCaptureStatusActive); // a question invalidates nothing
    EMU_LAUNCH(1, 4, 0, nullptr, fill_kernel)(a, 1.0f, 4);
    EXPECT_EQ(cudaGetLastError(), cudaErrorStreamCaptureImplicit);
    EXPECT_EQ(status(blocking), cudaStreamCaptureStatusInvalidated);
    cudaGraph_t graph = nullptr;
    EXPECT_EQ(cudaStreamEndCapture(blocking, &graph), cudaErrorStreamCaptureInvalidated);
    EXPECT_EQ(cudaStreamDestroy(blocking), cudaSuccess);
}

// Global forbids unsafe calls on every thread; ThreadLocal on the capturing thread only;
// Relaxed nowhere. Synchronising the capturing stream is refused in every mode.
TEST_F(EmuGraph, CudaEmuCaptureModesForbidWhatCudaForbids) {
    auto malloc_on_other_thread = [] {
        cudaError_t err = cudaErrorUnknown;
        std::thread t([&] {
            void *p = nullptr;
            cudaSetDevice(0);
            err = cudaMalloc(&p, 16);
            if (err == cudaSuccess) cudaFree(p);
        });
        t.join();
        return err;
    };
    for (cudaStreamCaptureMode mode :
         {cudaStreamCaptureModeGlobal, cudaStreamCaptureModeThreadLocal,
          cudaStreamCaptureModeRelaxed}) {
        SCOPED_TRACE(mode);
        bool relaxed = mode == cudaStreamCaptureModeRelaxed;
        ASSERT_EQ(cudaStreamBeginCapture(s, mode), cudaSuccess);
        EXPECT_EQ(malloc_on_other_thread(), mode == cudaStreamCaptureModeGlobal
                                                ? cudaErrorStreamCaptureUnsupported
                                                : cudaSuccess);
        void *p = nullptr;
        EXPECT_EQ(cudaMalloc(&p, 16), relaxed ? cudaSuccess : cudaErrorStreamCaptureUnsupported);
        cudaGraph_t graph = nullptr;
        if (relaxed) {
            EXPECT_EQ(status(s), cudaStreamCaptureStatusActive);
            EXPECT_EQ(cudaStreamSynchronize(s), cudaErrorStreamCaptureUnsupported);
        }
        EXPECT_EQ(cudaStreamEndCapture(s, &graph), cudaErrorStreamCaptureInvalidated);
        if (p) {
            EXPECT_EQ(cudaFree(p), cudaSuccess);
        }
        cudaGetLastError();
    }
}

// ---- cudaGraphExecUpdate ---------------------------------------------------------------------

TEST_F(EmuGraph, CudaEmuExecUpdateTakesNewParametersNotNewTopology) {
    float *a = device_array<float>(4), *b = device_array<float>(4);
    auto capture = [&](const std::function<void()> &work) {
        cudaGraph_t g = nullptr;
        EXPECT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
        work();
        EXPECT_EQ(cudaStreamEndCapture(s, &g), cudaSuccess);
        return g;
    };
    cudaGraph_t first = capture([&] {
        EMU_LAUNCH(1, 4, 0, s, fill_kernel)(a, 1.0f, 4);
        cudaMemcpyAsync(b, a, 16, cudaMemcpyDeviceToDevice, s);
    });
    cudaGraphExec_t exec = nullptr;
    ASSERT_EQ(cudaGraphInstantiate(&exec, first, 0), cudaSuccess);

    cudaGraph_t other_args = capture([&] {
        EMU_LAUNCH(1, 4, 0, s, fill_kernel)(b, 2.0f, 4);
        cudaMemcpyAsync(a, b, 16, cudaMemcpyDeviceToDevice, s);
    });
    cudaGraphExecUpdateResultInfo info;
    info.result = cudaGraphExecUpdateError;
    ASSERT_EQ(cudaGraphExecUpdate(exec, other_args, &info), cudaSuccess);
    EXPECT_EQ(info.result, cudaGraphExecUpdateSuccess);
    ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
    EXPECT_EQ(download(a, 4), std::vector<float>(4, 2.0f));

    struct Refused {
        const char *name;
        cudaGraphExecUpdateResult want;
        std::function<void()> work;
    };
    const Refused refused[] = {
        {"one node more", cudaGraphExecUpdateErrorTopologyChanged,
         [&] {
             EMU_LAUNCH(1, 4, 0, s, fill_kernel)(b, 3.0f, 4);
             EMU_LAUNCH(1, 4, 0, s, fill_kernel)(b, 3.0f, 4);
             cudaMemcpyAsync(a, b, 16, cudaMemcpyDeviceToDevice, s);
         }},
        {"a fork", cudaGraphExecUpdateErrorTopologyChanged,
         [&] {
             cudaEventRecord(e, s);
             cudaStreamWaitEvent(s2, e, 0);
             EMU_LAUNCH(1, 4, 0, s2, fill_kernel)(b, 3.0f, 4);
             cudaMemcpyAsync(a, b, 16, cudaMemcpyDeviceToDevice, s);
             cudaEventRecord(e2, s2);
             cudaStreamWaitEvent(s, e2, 0);
         }},
        {"a memset for the kernel", cudaGraphExecUpdateErrorNodeTypeChanged,
         [&] {
             cudaMemsetAsync(b, 0, 16, s);
             cudaMemcpyAsync(a, b, 16, cudaMemcpyDeviceToDevice, s);
         }},
        {"another kernel", cudaGraphExecUpdateErrorFunctionChanged,
         [&] {
             EMU_LAUNCH(1, 4, 0, s, accumulate_kernel)(b, a, 4);
             cudaMemcpyAsync(a, b, 16, cudaMemcpyDeviceToDevice, s);
         }},
    };
    for (const Refused &r : refused) {
        SCOPED_TRACE(r.name);
        cudaGraph_t g = capture(r.work);
        info.result = cudaGraphExecUpdateSuccess;
        EXPECT_EQ(cudaGraphExecUpdate(exec, g, &info), cudaErrorGraphExecUpdateFailure);
        EXPECT_EQ(info.result, r.want);
        EXPECT_EQ(cudaGraphDestroy(g), cudaSuccess);
        cudaGetLastError();
    }
    // A refused update leaves the executable graph as it was.
    ASSERT_EQ(cudaMemset(a, 0, 16), cudaSuccess);
    ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
    EXPECT_EQ(download(a, 4), std::vector<float>(4, 2.0f));
    EXPECT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
    EXPECT_EQ(cudaGraphDestroy(first), cudaSuccess);
    EXPECT_EQ(cudaGraphDestroy(other_args), cudaSuccess);
}

TEST_F(EmuGraph, CudaEmuLaunchIntoACaptureAddsTheGraphsNodes) {
    float *a = device_array<float>(4);
    cudaGraph_t inner = nullptr, outer = nullptr;
    ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
    EMU_LAUNCH(1, 4, 0, s, fill_kernel)(a, 4.0f, 4);
    ASSERT_EQ(cudaStreamEndCapture(s, &inner), cudaSuccess);
    cudaGraphExec_t exec = nullptr;
    ASSERT_EQ(cudaGraphInstantiate(&exec, inner, 0), cudaSuccess);
    ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
    ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
    ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
    ASSERT_EQ(cudaStreamEndCapture(s, &outer), cudaSuccess);
    size_t nodes = 0;
    ASSERT_EQ(cudaGraphGetNodes(outer, nullptr, &nodes), cudaSuccess);
    EXPECT_EQ(nodes, 2u);
    EXPECT_EQ(counts().graph_launches, 0u);
    EXPECT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
    EXPECT_EQ(cudaGraphDestroy(inner), cudaSuccess);
    EXPECT_EQ(cudaGraphDestroy(outer), cudaSuccess);
}

} // namespace
