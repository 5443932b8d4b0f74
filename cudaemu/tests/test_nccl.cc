// cudaemu's NCCL: communicators between processes over shared memory. Each test forks the
// ranks; a rank reports through its exit status.
#include <gmock/gmock.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <functional>

#include "emu_test.h"
#include "nccl.h"

namespace {

// Runs body(rank) in `ranks` child processes; returns their exit statuses.
std::vector<int> run_ranks(int ranks, const std::function<int(int)> &body) {
    std::vector<pid_t> pids;
    for (int r = 0; r < ranks; ++r) {
        pid_t p = fork();
        if (p == 0) _exit(body(r));
        pids.push_back(p);
    }
    std::vector<int> codes;
    for (pid_t p : pids) {
        int st = 0;
        waitpid(p, &st, 0);
        codes.push_back(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    }
    return codes;
}

TEST_F(Emu, CudaEmuNcclAllReduceSumsOverProcesses) {
    ncclUniqueId id;
    ASSERT_EQ(ncclGetUniqueId(&id), ncclSuccess);
    const size_t n = (size_t)600 << 10; // more than one 1 MiB chunk of floats
    auto codes = run_ranks(2, [&](int rank) {
        if (cudaSetDevice(rank) != cudaSuccess) return 10;
        ncclComm_t comm = nullptr;
        if (ncclCommInitRank(&comm, 2, id, rank) != ncclSuccess) return 11;
        std::vector<float> h(n);
        for (size_t i = 0; i < n; ++i)
            h[i] = (float)(rank + 1) * (float)(i % 7);
        float *d = nullptr;
        cudaMalloc((void **)&d, n * sizeof(float));
        cudaMemcpy(d, h.data(), n * sizeof(float), cudaMemcpyHostToDevice);
        if (ncclAllReduce(d, d, n, ncclFloat, ncclSum, comm, nullptr) != ncclSuccess) return 12;
        cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost);
        for (size_t i = 0; i < n; ++i)
            if (h[i] != 3.0f * (float)(i % 7)) return 13;
        return ncclCommDestroy(comm) == ncclSuccess ? 0 : 14;
    });
    EXPECT_EQ(codes, (std::vector<int>{0, 0}));
}

// A collective on a capturing stream is a node of the graph: each replay reduces again, and
// only the replays count.
TEST_F(Emu, CudaEmuNcclAllReduceIsCapturedAndReplayed) {
    ncclUniqueId id;
    ASSERT_EQ(ncclGetUniqueId(&id), ncclSuccess);
    auto codes = run_ranks(2, [&](int rank) {
        if (cudaSetDevice(rank) != cudaSuccess) return 10;
        ncclComm_t comm = nullptr;
        if (ncclCommInitRank(&comm, 2, id, rank) != ncclSuccess) return 11;
        cudaStream_t s = nullptr;
        cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
        std::vector<float> h(64, (float)(rank + 1));
        float *d = nullptr;
        cudaMalloc((void **)&d, 64 * sizeof(float));
        cudaMemcpy(d, h.data(), 64 * sizeof(float), cudaMemcpyHostToDevice);
        cudaemu_reset_counts();
        cudaGraph_t g = nullptr;
        cudaGraphExec_t x = nullptr;
        if (cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal) != cudaSuccess) return 12;
        if (ncclAllReduce(d, d, 64, ncclFloat, ncclSum, comm, s) != ncclSuccess) return 13;
        if (cudaStreamEndCapture(s, &g) != cudaSuccess) return 14;
        if (cudaGraphInstantiate(&x, g, 0) != cudaSuccess) return 15;
        for (int r = 0; r < 2; ++r)
            if (cudaGraphLaunch(x, s) != cudaSuccess) return 16;
        if (cudaStreamSynchronize(s) != cudaSuccess) return 17;
        cudaemu_counts c;
        cudaemu_get_counts(&c);
        if (c.library_calls != 0 || c.graph_launches != 2 || c.graph_nodes_run != 2) return 18;
        cudaMemcpy(h.data(), d, 64 * sizeof(float), cudaMemcpyDeviceToHost);
        if (h != std::vector<float>(64, 6.0f)) return 19; // (1 + 2) + (1 + 2)
        cudaGraphExecDestroy(x);
        cudaGraphDestroy(g);
        return ncclCommDestroy(comm) == ncclSuccess ? 0 : 20;
    });
    EXPECT_EQ(codes, (std::vector<int>{0, 0}));
}

TEST_F(Emu, CudaEmuNcclRanksThatDisagreeAreRefused) {
    ncclUniqueId id;
    ASSERT_EQ(ncclGetUniqueId(&id), ncclSuccess);
    auto codes = run_ranks(2, [&](int rank) {
        cudaSetDevice(rank);
        ncclComm_t comm = nullptr;
        if (ncclCommInitRank(&comm, 2, id, rank) != ncclSuccess) return 11;
        float *d = nullptr;
        cudaMalloc((void **)&d, 64 * sizeof(float));
        ncclResult_t r =
            ncclAllReduce(d, d, rank == 0 ? 16 : 17, ncclFloat, ncclSum, comm, nullptr);
        return r == ncclInvalidUsage ? 0 : 20 + (int)r;
    });
    EXPECT_EQ(codes, (std::vector<int>{0, 0}));
}

TEST_F(Emu, CudaEmuNcclMissingRankTimesOutInsteadOfHanging) {
    cudaemu_set_nccl_timeout(1.0);
    ncclUniqueId id;
    ASSERT_EQ(ncclGetUniqueId(&id), ncclSuccess);
    auto codes = run_ranks(1, [&](int rank) {
        ncclComm_t comm = nullptr;
        ncclResult_t r = ncclCommInitRank(&comm, 2, id, rank); // rank 1 never comes
        return r == ncclSystemError ? 0 : 30 + (int)r;
    });
    EXPECT_EQ(codes, (std::vector<int>{0}));
    cudaemu_set_nccl_timeout(120.0);
    ncclComm_t comm = nullptr;
    EXPECT_EQ(ncclCommInitRank(&comm, 2, id, 2), ncclInvalidArgument); // rank out of range
    ncclUniqueId junk;
    std::memset(&junk, 0, sizeof junk);
    EXPECT_EQ(ncclCommInitRank(&comm, 1, junk, 0), ncclInvalidArgument);
    EXPECT_STREQ(ncclGetErrorString(ncclInvalidUsage), "invalid usage");
}

} // namespace
