// cudaemu: the CUDA runtime of the emulated device for C++ code, with the device side: the
// execution-space specifiers, dim3/uint3, the built-in indices, __syncthreads, the warp
// shuffles and kernel launch through cudaemu::launch (see BP_LAUNCH in kernels/common.cuh).
//
// A kernel's threads run on the host as fibers, one block at a time, switching only at
// __syncthreads and the warp shuffles; cudaemu/README.md says what that can and cannot show.
#ifndef CUDAEMU_CUDA_RUNTIME_H
#define CUDAEMU_CUDA_RUNTIME_H

#ifndef __cplusplus
#error "cuda_runtime.h is the C++ header of cudaemu; C code includes cuda_runtime_api.h"
#endif

#include <math.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

#include "cuda_runtime_api.h"

// ---- execution spaces and qualifiers -------------------------------------------------------
// Everything is host code here. __shared__ variables (static storage inside kernels) live in one
// section, which the emulator fills with NaN bytes before each block that uses it, so a block
// never sees a value from the one before.
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__    __attribute__((noinline))
#define __launch_bounds__(...)
#define __shared__ static __attribute__((section("cudaemu_shared")))

struct uint3 {
    unsigned int x, y, z;
};

struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1)
        : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const {
        return uint3{x, y, z};
    }
};

// The built-in variables of the thread that runs now (the emulator sets them at each switch).
extern __attribute__((visibility("hidden"))) uint3 threadIdx;
extern __attribute__((visibility("hidden"))) uint3 blockIdx;
extern __attribute__((visibility("hidden"))) dim3 blockDim;
extern __attribute__((visibility("hidden"))) dim3 gridDim;
constexpr int warpSize = 32;

// The bit-pattern reinterpretations of the device's intrinsics (no conversion of the value).
inline unsigned int __float_as_uint(float x) {
    unsigned int u;
    std::memcpy(&u, &x, sizeof u);
    return u;
}
inline float __uint_as_float(unsigned int u) {
    float x;
    std::memcpy(&x, &u, sizeof x);
    return x;
}
inline int __float_as_int(float x) {
    int i;
    std::memcpy(&i, &x, sizeof i);
    return i;
}
inline float __int_as_float(int i) {
    float x;
    std::memcpy(&x, &i, sizeof x);
    return x;
}

namespace cudaemu {

// Sync points: each names its call site, so a fault says where.
void syncthreads(const char *file, int line);
void syncwarp(const char *file, int line, unsigned mask = 0xffffffffu);
// One shuffle: every lane of `mask` offers `value` and receives the value of lane `src` (its
// own when src < 0, as for a source outside its segment).
std::uint64_t shuffle(const char *file, int line, unsigned mask, std::uint64_t value, int src);
// The linear index of the thread that runs now (set by the emulator).
extern __attribute__((visibility("hidden"))) int current_thread;
inline int lane_id() {
    return current_thread & 31;
}

template <typename T> inline T shuffle_as(const char *file, int line, unsigned mask, T v, int src) {
    static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 8,
                  "a shuffled value is a scalar of at most 8 bytes");
    std::uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof v);
    bits = shuffle(file, line, mask, bits, src);
    std::memcpy(&v, &bits, sizeof v);
    return v;
}

// CUDA's lane arithmetic for a segment of `width` lanes (a power of two up to 32).
inline int segment_base(int lane, int width) {
    return lane & ~(width - 1);
}

// A full-mask xor shuffle over the whole warp pairs the lanes: each lane needs only its
// partner, so the emulator lets the second of a pair go on at once (shuffle_xor).
std::uint64_t shuffle_xor(const char *file, int line, std::uint64_t value, int lane_mask);

template <typename T>
inline T shfl_xor_sync(const char *f, int l, unsigned mask, T v, int lane_mask, int width = 32) {
    if (mask == 0xffffffffu && width == 32 && lane_mask > 0 && lane_mask < 32) {
        static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 8,
                      "a shuffled value is a scalar of at most 8 bytes");
        std::uint64_t bits = 0;
        std::memcpy(&bits, &v, sizeof v);
        bits = shuffle_xor(f, l, bits, lane_mask);
        std::memcpy(&v, &bits, sizeof v);
        return v;
    }
    int lane = lane_id(), src = lane ^ lane_mask;
    if (segment_base(src, width) != segment_base(lane, width)) src = -1;
    return shuffle_as(f, l, mask, v, src);
}

template <typename T>
inline T shfl_sync(const char *f, int l, unsigned mask, T v, int src_lane, int width = 32) {
    int lane = lane_id();
    return shuffle_as(f, l, mask, v, segment_base(lane, width) + (src_lane & (width - 1)));
}

template <typename T>
inline T shfl_down_sync(const char *f, int l, unsigned mask, T v, unsigned delta, int width = 32) {
    int lane = lane_id(), src = lane + (int)delta;
    if (segment_base(src, width) != segment_base(lane, width) || src > 31) src = -1;
    return shuffle_as(f, l, mask, v, src);
}

template <typename T>
inline T shfl_up_sync(const char *f, int l, unsigned mask, T v, unsigned delta, int width = 32) {
    int lane = lane_id(), src = lane - (int)delta;
    if (src < segment_base(lane, width)) src = -1;
    return shuffle_as(f, l, mask, v, src);
}

// ---- launch --------------------------------------------------------------------------------
// One thread of a launch: runs the kernel on its own copy of the arguments.
struct Closure {
    virtual ~Closure() = default;
    virtual void run_thread() = 0;
    // The kernel's address (a graph update keeps a kernel node only for the same function).
    virtual const void *function() const = 0;
};

template <typename... P> struct KernelClosure final : Closure {
    void (*kernel)(P...);
    std::tuple<P...> args;
    template <typename... A>
    explicit KernelClosure(void (*k)(P...), A &&...a) : kernel(k), args(std::forward<A>(a)...) {}
    void run_thread() override {
        std::apply(kernel, args);
    }
    const void *function() const override {
        return reinterpret_cast<const void *>(kernel);
    }
};

// A pointer-typed kernel argument, checked against device memory when the kernel runs.
struct PointerArg {
    int index;
    const void *value;
};

struct LaunchConfig {
    dim3 grid, block;
    std::size_t shared_bytes;
    cudaStream_t stream;
    const char *file;
    int line;
};

// Validates the configuration (CUDA's error codes, recorded for cudaGetLastError) and queues the
// launch on its stream; takes ownership of closure.
void submit(const LaunchConfig &config, Closure *closure, const PointerArg *pointers, int count);

template <typename... P> class Launch {
  public:
    Launch(void (*kernel)(P...), const LaunchConfig &config) : kernel_(kernel), config_(config) {}

    template <typename... A> void operator()(A &&...args) const {
        static_assert(sizeof...(A) == sizeof...(P), "the kernel takes another number of arguments");
        auto *closure = new KernelClosure<P...>(kernel_, std::forward<A>(args)...);
        PointerArg pointers[sizeof...(P) + 1];
        int count = 0;
        collect(closure->args, pointers, count, std::index_sequence_for<P...>{});
        submit(config_, closure, pointers, count);
    }

  private:
    template <std::size_t... I>
    static void collect(const std::tuple<P...> &args, PointerArg *out, int &count,
                        std::index_sequence<I...>) {
        (add<I>(std::get<I>(args), out, count), ...);
    }
    template <std::size_t I, typename T> static void add(const T &v, PointerArg *out, int &count) {
        if constexpr (std::is_pointer<T>::value) out[count++] = PointerArg{(int)I, (const void *)v};
        (void)v, (void)out, (void)count;
    }
    void (*kernel_)(P...);
    LaunchConfig config_;
};

template <typename... P>
Launch<P...> launch(void (*kernel)(P...), dim3 grid, dim3 block, std::size_t shared_bytes,
                    cudaStream_t stream, const char *file, int line) {
    return Launch<P...>(kernel, LaunchConfig{grid, block, shared_bytes, stream, file, line});
}

} // namespace cudaemu

#define __syncthreads()       ::cudaemu::syncthreads(__FILE__, __LINE__)
#define __syncwarp(...)       ::cudaemu::syncwarp(__FILE__, __LINE__, ##__VA_ARGS__)
#define __shfl_xor_sync(...)  ::cudaemu::shfl_xor_sync(__FILE__, __LINE__, __VA_ARGS__)
#define __shfl_sync(...)      ::cudaemu::shfl_sync(__FILE__, __LINE__, __VA_ARGS__)
#define __shfl_down_sync(...) ::cudaemu::shfl_down_sync(__FILE__, __LINE__, __VA_ARGS__)
#define __shfl_up_sync(...)   ::cudaemu::shfl_up_sync(__FILE__, __LINE__, __VA_ARGS__)

// The C++ overload CUDA declares for a kernel's address.
template <typename T> inline cudaError_t cudaFuncGetAttributes(cudaFuncAttributes *attr, T *entry) {
    return ::cudaFuncGetAttributes(attr, reinterpret_cast<const void *>(entry));
}

#endif
