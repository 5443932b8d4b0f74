// The emulator's cost per thread and per sync point, and of one fixed-grid reduction launch
// (512 blocks x 256 threads, kernels/common.cuh's group_allreduce, as kernels/reduce.cu runs it
// for every sum and gradient norm). CPU time of the calling thread, so other load on the
// machine counts less. Run: build-emu/cudaemu/cudaemu_bench. Nothing here is a GPU figure.
#include <cuda_runtime.h>

#include <cstdio>
#include <ctime>

#include "kernels/common.cuh"

using namespace bp_cu;

namespace {

__global__ void none_kernel(double *out) {
    if (threadIdx.x == 0) out[blockIdx.x] = 1;
}

__global__ void barriers_kernel(double *out) {
    for (int i = 0; i < 5; ++i)
        __syncthreads();
    if (threadIdx.x == 0) out[blockIdx.x] = 1;
}

__global__ void shuffles_kernel(double *out) {
    double v = warp_allreduce(1.0, SumOp());
    v = warp_allreduce(v, SumOp());
    if (threadIdx.x == 0) out[blockIdx.x] = v;
}

// kernels/reduce.cu's first pass, on a short input: most blocks reduce zeros.
__global__ void partials_kernel(size_t n, const float *x, double *partials) {
    __shared__ double red[256 / kWarp];
    double acc = 0.0;
    for (size_t i = (size_t)blockIdx.x * 256 + threadIdx.x; i < n; i += (size_t)512 * 256)
        acc += x[i];
    acc = group_allreduce<256>(acc, SumOp(), 0.0, red);
    if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

double cpu_ms() {
    timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

template <typename Launch> void measure(const char *name, int sync_points, Launch launch) {
    const int reps = 10;
    double t0 = cpu_ms();
    for (int i = 0; i < reps; ++i)
        launch();
    double ms = (cpu_ms() - t0) / reps;
    double threads = 512.0 * 256.0;
    std::printf("%-34s %8.2f ms a launch  %6.1f ns a thread", name, ms, ms * 1e6 / threads);
    if (sync_points)
        std::printf("  %5.1f ns a thread and sync point", ms * 1e6 / threads / sync_points);
    std::printf("%s\n", cudaGetLastError() == cudaSuccess ? "" : "  (failed)");
}

} // namespace

int main() {
    double *out = nullptr;
    float *x = nullptr;
    const size_t n = 1000;
    cudaMalloc((void **)&out, 512 * sizeof(double));
    cudaMalloc((void **)&x, n * sizeof(float));
    cudaMemset(x, 0, n * sizeof(float));
    std::printf("cudaemu, 512 blocks x 256 threads a launch, CPU time of this thread\n");
    measure("no sync point", 0, [&] { BP_LAUNCH(512, 256, 0, nullptr, none_kernel)(out); });
    measure("5 barriers", 5, [&] { BP_LAUNCH(512, 256, 0, nullptr, barriers_kernel)(out); });
    measure("10 full-mask xor shuffles", 10, [&] {
        BP_LAUNCH(512, 256, 0, nullptr, shuffles_kernel)(out);
    });
    measure("sum partials (group_allreduce)", 12, [&] {
        BP_LAUNCH(512, 256, 0, nullptr, partials_kernel)(n, x, out);
    });
    return 0;
}
