// The emulated CUDA runtime: devices, errors, memory, streams, events, pools and launch.
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "cudaemu.h"
#include "internal.h"

namespace cudaemu {

// ---- configuration ---------------------------------------------------------------------------

static size_t parse_bytes(const char *s, size_t fallback) {
    if (!s || !*s) return fallback;
    char *end = nullptr;
    double v = std::strtod(s, &end);
    if (end == s || v < 0) return fallback;
    switch (*end) {
    case 'k':
    case 'K':
        v *= 1024.0;
        break;
    case 'm':
    case 'M':
        v *= 1024.0 * 1024.0;
        break;
    case 'g':
    case 'G':
        v *= 1024.0 * 1024.0 * 1024.0;
        break;
    default:
        break;
    }
    return (size_t)v;
}

static Config load_config() {
    Config c;
    const char *s = std::getenv("CUDAEMU_SCHEDULE");
    c.random = s && std::strcmp(s, "random") == 0;
    if ((s = std::getenv("CUDAEMU_SEED")) && *s) c.seed = std::strtoull(s, nullptr, 0);
    s = std::getenv("CUDAEMU_EXEC");
    c.deferred = !(s && std::strcmp(s, "eager") == 0); // deferred unless asked for eager
    c.capacity = parse_bytes(std::getenv("CUDAEMU_MEMORY"), (size_t)4 << 30);
    if ((s = std::getenv("CUDAEMU_DEVICES")) && *s) c.devices = std::atoi(s);
    if (c.devices < 0) c.devices = 0;
    c.stack_bytes = parse_bytes(std::getenv("CUDAEMU_STACK"), (size_t)64 << 10);
    if (c.stack_bytes < 16384) c.stack_bytes = 16384;
    s = std::getenv("CUDAEMU_POOLS");
    c.pools = !(s && std::strcmp(s, "0") == 0);
    s = std::getenv("CUDAEMU_NCCL_TIMEOUT");
    c.nccl_timeout = s && *s ? std::atof(s) : 120.0;
    return c;
}

Config &config() {
    static Config c = load_config();
    return c;
}

std::recursive_mutex &lock() {
    static auto *m = new std::recursive_mutex; // never destroyed: usable from atexit handlers
    return *m;
}

std::string format(const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return buf;
}

static std::string &last_fault_text() {
    static auto *s = new std::string;
    return *s;
}

void set_last_fault(const std::string &message) {
    last_fault_text() = message;
}

// ---- devices and errors ----------------------------------------------------------------------

static std::vector<Device *> &devices() {
    static auto *v = [] {
        auto *d = new std::vector<Device *>;
        for (int i = 0; i < config().devices; ++i) {
            Device *dev = new Device;
            dev->ordinal = i;
            dev->capacity = config().capacity;
            dev->null_stream.device = dev;
            dev->null_stream.flags = 0;
            d->push_back(dev);
        }
        return d;
    }();
    return *v;
}

Device *device(int ordinal) {
    auto &d = devices();
    return ordinal >= 0 && ordinal < (int)d.size() ? d[ordinal] : nullptr;
}

ThreadState &thread_state() {
    static thread_local ThreadState t;
    return t;
}

Device *current_device() {
    return device(thread_state().device);
}

cudaError_t record(cudaError_t err) {
    if (err != cudaSuccess) thread_state().last = err;
    return err;
}

cudaError_t refuse(cudaError_t err, const std::string &message) {
    std::fprintf(stderr, "cudaemu: %s\n", message.c_str());
    set_last_fault(message);
    return record(err);
}

void fault(Device *dev, cudaError_t err, const std::string &message) {
    std::fprintf(stderr, "cudaemu: fault on device %d (%s, sticky until cudaDeviceReset): %s\n",
                 dev->ordinal, cudaGetErrorName(err), message.c_str());
    set_last_fault(message);
    if (dev->sticky == cudaSuccess) dev->sticky = err;
}

// The current device, or an error: none, or its sticky fault.
static cudaError_t enter(Device **out) {
    Device *dev = current_device();
    *out = dev;
    if (!dev) return record(config().devices == 0 ? cudaErrorNoDevice : cudaErrorInvalidDevice);
    if (dev->sticky != cudaSuccess) return record(dev->sticky);
    return cudaSuccess;
}

// ---- memory registry -------------------------------------------------------------------------

static std::map<uintptr_t, Alloc> &allocs() {
    static auto *m = new std::map<uintptr_t, Alloc>;
    return *m;
}

Alloc *find_alloc(const void *p, size_t bytes) {
    auto &m = allocs();
    uintptr_t a = (uintptr_t)p;
    auto it = m.upper_bound(a);
    if (it == m.begin()) return nullptr;
    --it;
    Alloc &al = it->second;
    if (a < (uintptr_t)al.base) return nullptr;
    uintptr_t off = a - (uintptr_t)al.base;
    if (off > al.size || bytes > al.size - off) return nullptr;
    if (off == al.size && bytes > 0) return nullptr;
    return &al;
}

std::string check_device_range(const void *p, size_t bytes, const Device *dev) {
    if (!p) return "NULL is not device memory";
    Alloc *al = find_alloc(p, 0);
    if (!al) {
        return format("%p is not device memory (a host pointer, or freed device memory)", p);
    }
    if (!al->device) return format("%p is pinned host memory, not device memory", p);
    if (al->device != dev)
        return format("%p is memory of device %d, not of device %d", p, al->device->ordinal,
                      dev->ordinal);
    size_t off = (size_t)((const char *)p - al->base);
    if (bytes > al->size - off)
        return format("%zu bytes at %p run %zu bytes past the end of its allocation (%zu bytes at "
                      "%p)",
                      bytes, p, bytes - (al->size - off), al->size, (void *)al->base);
    return "";
}

size_t canary_bytes() {
#if defined(__SANITIZE_ADDRESS__)
    return 0;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
    return 0;
#else
    return 64;
#endif
#else
    return 64;
#endif
}
static constexpr unsigned char kCanary = 0xa5;

// A fresh host allocation for bytes of device (or pinned) memory, filled with poison.
static char *host_alloc(size_t bytes) {
    void *p = nullptr;
    size_t extra = canary_bytes();
    if (bytes > SIZE_MAX - extra || posix_memalign(&p, 256, bytes + extra) != 0) return nullptr;
    std::memset(p, kPoison, bytes);
    std::memset((char *)p + bytes, kCanary, extra);
    return (char *)p;
}

static std::string check_canary(const Alloc &al) {
    size_t extra = al.device ? canary_bytes() : 0;
    for (size_t i = 0; i < extra; ++i)
        if ((unsigned char)al.base[al.size + i] != kCanary)
            return format("wrote past the end of an allocation of %zu bytes at %p (byte %zu after "
                          "its end)",
                          al.size, (void *)al.base, i);
    return "";
}

// Checks every allocation's canary; the first overrun found, or "".
static std::string check_canaries(const Device *dev) {
    if (!canary_bytes()) return "";
    for (auto &kv : allocs()) {
        if (kv.second.device != dev) continue;
        std::string bad = check_canary(kv.second);
        if (!bad.empty()) {
            std::memset(kv.second.base + kv.second.size, kCanary, canary_bytes());
            return bad;
        }
    }
    return "";
}

static void host_free(Alloc &al) {
    std::free(al.base);
}

static void pool_note(Pool *p) {
    if (p->reserved > p->reserved_high) p->reserved_high = p->reserved;
    if (p->used > p->used_high) p->used_high = p->used;
}

// Gives the device back pool blocks until the pool reserves at most keep bytes.
static void pool_trim(Pool *p, size_t keep) {
    while (!p->kept.empty() && p->reserved > keep) {
        auto it = std::prev(p->kept.end());
        p->device->used -= *it;
        p->reserved -= *it;
        p->kept.erase(it);
    }
}

static void pool_delete_if_done(Pool *p) {
    if (p->destroyed && p->live == 0) {
        pool_trim(p, 0);
        p->device->pools.erase(p);
        delete p;
    }
}

// Frees an allocation now (the stream order, if any, has been kept by the caller).
static void release(uintptr_t key) {
    auto &m = allocs();
    auto it = m.find(key);
    if (it == m.end()) return;
    Alloc al = it->second;
    m.erase(it);
    if (al.device && !al.pool) al.device->used -= al.charged;
    if (al.pool) {
        Pool *p = al.pool;
        p->used -= al.charged;
        p->live--;
        if (p->destroyed) {
            p->reserved -= al.charged;
            al.device->used -= al.charged;
        } else {
            p->kept.insert(al.charged);
        }
        pool_delete_if_done(p);
    }
    host_free(al);
}

// After a synchronisation the pools give back what they hold beyond their thresholds.
static void pools_settle(Device *dev) {
    for (Pool *p : dev->pools)
        if (p->reserved > p->threshold) pool_trim(p, p->threshold);
}

static cudaError_t device_alloc(Device *dev, Pool *pool, size_t bytes, void **out) {
    *out = nullptr;
    size_t charged = bytes;
    bool reuse = false;
    std::multiset<size_t>::iterator block;
    if (pool) {
        block = pool->kept.lower_bound(bytes);
        if (block != pool->kept.end()) {
            reuse = true;
            charged = *block;
        }
    }
    if (!reuse && (bytes > dev->capacity || dev->used > dev->capacity - bytes))
        return record(cudaErrorMemoryAllocation);
    char *p = host_alloc(bytes);
    if (!p) return record(cudaErrorMemoryAllocation);
    if (pool) {
        if (reuse) {
            pool->kept.erase(block);
        } else {
            dev->used += bytes;
            pool->reserved += bytes;
        }
        pool->used += charged;
        pool->live++;
        pool_note(pool);
    } else {
        dev->used += bytes;
    }
    allocs()[(uintptr_t)p] = Alloc{p, bytes, dev, pool, charged};
    *out = p;
    return cudaSuccess;
}

// ---- streams and their work ------------------------------------------------------------------

static std::set<Stream *> &all_streams() {
    static auto *s = new std::set<Stream *>;
    return *s;
}

cudaError_t resolve(cudaStream_t handle, Stream **out) {
    Device *dev = current_device();
    *out = nullptr;
    if (!dev) return cudaErrorInvalidDevice;
    if (!handle || handle == cudaStreamLegacy || handle == cudaStreamPerThread) {
        *out = &dev->null_stream;
        return cudaSuccess;
    }
    Stream *s = (Stream *)handle;
    if (!all_streams().count(s)) return cudaErrorInvalidResourceHandle;
    *out = s;
    return cudaSuccess;
}

static void run_op(Stream *s, Op &op) {
    Device *dev = s->device;
    if (dev->sticky != cudaSuccess) return; // a faulted context runs nothing more
    std::string message;
    cudaError_t err = op.run(&message);
    if (err == cudaSuccess) {
        std::string bad = check_canaries(dev);
        if (!bad.empty()) {
            err = cudaErrorIllegalAddress;
            message = op.what() + ": " + bad;
        }
    }
    if (err != cudaSuccess) fault(dev, err, message);
}

void flush_stream(Stream *s) {
    while (!s->queue.empty()) {
        std::unique_ptr<Op> op = std::move(s->queue.front());
        s->queue.pop_front();
        run_op(s, *op);
    }
}

void flush_device(Device *dev) {
    flush_stream(&dev->null_stream);
    for (Stream *s : dev->streams)
        flush_stream(s);
}

void enqueue(Stream *s, std::unique_ptr<Op> op) {
    if (!config().deferred) {
        run_op(s, *op);
        return;
    }
    // The legacy null stream waits for the blocking streams and they wait for it.
    Device *dev = s->device;
    if (s == &dev->null_stream) {
        for (Stream *o : dev->streams)
            if (!(o->flags & cudaStreamNonBlocking)) flush_stream(o);
    } else if (!(s->flags & cudaStreamNonBlocking)) {
        flush_stream(&dev->null_stream);
    }
    s->queue.push_back(std::move(op));
}

cudaError_t queue_library_work(Device *dev, cudaStream_t stream, std::unique_ptr<Op> op) {
    if (dev->sticky != cudaSuccess) return dev->sticky;
    int saved = thread_state().device;
    thread_state().device = dev->ordinal;
    Stream *s = nullptr;
    cudaError_t err = resolve(stream, &s);
    thread_state().device = saved;
    if (err != cudaSuccess) return err;
    if (s->device != dev) return cudaErrorInvalidResourceHandle;
    if ((err = submit_work(s, std::move(op), Work::library)) != cudaSuccess) return err;
    return dev->sticky;
}

static double now_seconds() {
    using namespace std::chrono;
    return duration<double>(steady_clock::now().time_since_epoch()).count();
}

namespace {

struct CopyOp final : Op {
    std::string what() const override {
        return "cudaMemcpyAsync";
    }
    void *dst;
    const void *src;
    size_t bytes;
    cudaMemcpyKind kind;        // resolved: never cudaMemcpyDefault
    std::vector<char> snapshot; // a pageable host source, read at the call as CUDA does
    cudaError_t run(std::string *) override {
        std::memmove(dst, snapshot.empty() ? src : snapshot.data(), bytes);
        return cudaSuccess;
    }
    cudaGraphNodeType node_type() const override {
        return cudaGraphNodeTypeMemcpy;
    }
    void replay_queued() override {
        poison_host_destination();
    }
    // Until the copy runs, the host sees poison rather than a plausible old value.
    void poison_host_destination() {
        if (config().deferred && kind == cudaMemcpyDeviceToHost) std::memset(dst, kPoison, bytes);
    }
};

struct Memset2DOp final : Op {
    char *ptr;
    size_t pitch, width, height;
    unsigned char value;
    cudaError_t run(std::string *) override {
        for (size_t r = 0; r < height; ++r)
            std::memset(ptr + r * pitch, value, width);
        return cudaSuccess;
    }
    cudaGraphNodeType node_type() const override {
        return cudaGraphNodeTypeMemset;
    }
};

struct RecordOp final : Op {
    Event *event;
    cudaError_t run(std::string *) override {
        event->pending = false;
        event->when = now_seconds();
        return cudaSuccess;
    }
};

struct FreeOp final : Op {
    uintptr_t key;
    cudaError_t run(std::string *) override {
        release(key);
        return cudaSuccess;
    }
};

struct WaitOp final : Op {
    Event *event;
    cudaError_t run(std::string *) override {
        if (event->pending && event->stream) flush_stream(event->stream);
        return cudaSuccess;
    }
};

struct KernelOp final : Op {
    LaunchConfig config;
    std::unique_ptr<Closure> closure;
    std::vector<PointerArg> pointers;
    Device *device;
    std::string what() const override {
        return format("kernel launched at %s:%d", config.file, config.line);
    }
    const void *function() const override {
        return closure->function();
    }
    cudaError_t run(std::string *message) override {
        for (const PointerArg &p : pointers) {
            if (!p.value) continue;
            std::string bad = check_device_range(p.value, 0, device);
            if (!bad.empty()) {
                *message = format("kernel launched at %s:%d: argument %d: %s", config.file,
                                  config.line, p.index + 1, bad.c_str());
                return cudaErrorIllegalAddress;
            }
        }
        return run_grid(Grid{config, closure.get()}, message);
    }
};

} // namespace

static bool is_pinned(const void *p) {
    Alloc *al = find_alloc(p, 0);
    return al && !al->device;
}

// Checks a copy's pointers against its direction; "" when fine.
static std::string check_copy(void *dst, const void *src, size_t bytes, cudaMemcpyKind *kind,
                              const Device *dev) {
    bool dst_dev = find_alloc(dst, 0) && find_alloc(dst, 0)->device;
    bool src_dev = find_alloc(src, 0) && find_alloc(src, 0)->device;
    if (*kind == cudaMemcpyDefault)
        *kind = src_dev ? (dst_dev ? cudaMemcpyDeviceToDevice : cudaMemcpyDeviceToHost)
                        : (dst_dev ? cudaMemcpyHostToDevice : cudaMemcpyHostToHost);
    bool want_dst = *kind == cudaMemcpyHostToDevice || *kind == cudaMemcpyDeviceToDevice;
    bool want_src = *kind == cudaMemcpyDeviceToHost || *kind == cudaMemcpyDeviceToDevice;
    std::string bad;
    if (want_dst)
        bad = check_device_range(dst, bytes, dev);
    else if (dst_dev)
        bad = format("the destination %p is device memory", dst);
    if (!bad.empty()) return "destination: " + bad;
    if (want_src)
        bad = check_device_range(src, bytes, dev);
    else if (src_dev)
        bad = format("the source %p is device memory", src);
    if (!bad.empty()) return "source: " + bad;
    if (!dst || !src) return "NULL host pointer";
    return "";
}

static const char *kind_name(cudaMemcpyKind k) {
    switch (k) {
    case cudaMemcpyHostToHost:
        return "host to host";
    case cudaMemcpyHostToDevice:
        return "host to device";
    case cudaMemcpyDeviceToHost:
        return "device to host";
    case cudaMemcpyDeviceToDevice:
        return "device to device";
    default:
        return "default";
    }
}

// A copy's host side in pageable memory: CUDA stages it synchronously, and cannot capture it.
static bool pageable_side(const void *dst, const void *src, cudaMemcpyKind k) {
    bool host_src = k == cudaMemcpyHostToDevice || k == cudaMemcpyHostToHost;
    bool host_dst = k == cudaMemcpyDeviceToHost || k == cudaMemcpyHostToHost;
    return (host_src && !is_pinned(src)) || (host_dst && !is_pinned(dst));
}

// asynchronous: a cudaMemcpyAsync (a pageable one counts as a host synchronisation).
static cudaError_t copy_async(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                              Stream *s, const char *fn, bool asynchronous) {
    if ((unsigned)kind > cudaMemcpyDefault) return record(cudaErrorInvalidMemcpyDirection);
    if (bytes == 0) return cudaSuccess;
    cudaMemcpyKind k = kind;
    std::string bad = check_copy(dst, src, bytes, &k, s->device);
    if (!bad.empty())
        return refuse(cudaErrorInvalidValue, format("%s(%p <- %p, %zu bytes, %s) refused: %s", fn,
                                                    dst, src, bytes, kind_name(kind), bad.c_str()));
    bool pageable = pageable_side(dst, src, k);
    if (pageable) {
        cudaError_t err = refuse_in_capture(s, cudaErrorStreamCaptureUnsupported,
                                            format("%s with pageable host memory", fn).c_str());
        if (err != cudaSuccess) return err;
    }
    auto op = std::make_unique<CopyOp>();
    op->dst = dst;
    op->src = src;
    op->bytes = bytes;
    op->kind = k;
    if (config().deferred && !s->capture) {
        bool host_src = k == cudaMemcpyHostToDevice || k == cudaMemcpyHostToHost;
        if (host_src && !is_pinned(src))
            op->snapshot.assign((const char *)src, (const char *)src + bytes);
        op->poison_host_destination();
    }
    bool captured = s->capture != nullptr;
    cudaError_t err = submit_work(s, std::move(op), Work::copy);
    if (err == cudaSuccess && asynchronous && pageable && k != cudaMemcpyHostToHost && !captured)
        count_host_sync();
    return err;
}

static cudaError_t memset_2d(void *ptr, size_t pitch, int value, size_t width, size_t height,
                             Stream *s, const char *fn) {
    if (width == 0 || height == 0) return cudaSuccess;
    if (height > 1 && pitch < width) return record(cudaErrorInvalidPitchValue);
    size_t extent = pitch * (height - 1) + width;
    std::string bad = check_device_range(ptr, extent, s->device);
    if (!bad.empty())
        return refuse(cudaErrorInvalidValue,
                      format("%s(%p, pitch %zu, %zu x %zu bytes) refused: %s", fn, ptr, pitch,
                             width, height, bad.c_str()));
    auto op = std::make_unique<Memset2DOp>();
    op->ptr = (char *)ptr;
    op->pitch = height > 1 ? pitch : width;
    op->width = width;
    op->height = height;
    op->value = (unsigned char)value;
    return submit_work(s, std::move(op), Work::copy);
}

// ---- launch ----------------------------------------------------------------------------------

static cudaError_t check_config(const LaunchConfig &c) {
    const dim3 &b = c.block, &g = c.grid;
    if (b.x == 0 || b.y == 0 || b.z == 0 || b.x > 1024 || b.y > 1024 || b.z > 64 ||
        (uint64_t)b.x * b.y * b.z > 1024)
        return cudaErrorInvalidConfiguration;
    if (g.x == 0 || g.y == 0 || g.z == 0 || g.x > 2147483647u || g.y > 65535 || g.z > 65535)
        return cudaErrorInvalidConfiguration;
    if (c.shared_bytes > 49152) return cudaErrorInvalidValue;
    return cudaSuccess;
}

void submit(const LaunchConfig &config, Closure *closure, const PointerArg *pointers, int count) {
    std::unique_ptr<Closure> owned(closure);
    CUDAEMU_LOCK;
    Device *dev = nullptr;
    if (enter(&dev) != cudaSuccess) return;
    Stream *s = nullptr;
    cudaError_t err = resolve(config.stream, &s);
    if (err == cudaSuccess) err = check_config(config);
    if (err != cudaSuccess) {
        record(err);
        return;
    }
    auto op = std::make_unique<KernelOp>();
    op->config = config;
    op->closure = std::move(owned);
    op->pointers.assign(pointers, pointers + count);
    op->device = dev;
    if (submit_work(s, std::move(op), Work::kernel) != cudaSuccess) return; // recorded
    // A fault of a kernel run at once is reported by the next call, as a GPU reports it.
    if (dev->sticky != cudaSuccess) record(dev->sticky);
}

} // namespace cudaemu

using namespace cudaemu;

// ---- the C API -------------------------------------------------------------------------------

extern "C" {

const char *cudaGetErrorName(cudaError_t e) {
    switch (e) {
#define CUDAEMU_NAME(x)                                                                            \
    case x:                                                                                        \
        return #x;
        CUDAEMU_NAME(cudaSuccess)
        CUDAEMU_NAME(cudaErrorInvalidValue)
        CUDAEMU_NAME(cudaErrorMemoryAllocation)
        CUDAEMU_NAME(cudaErrorInitializationError)
        CUDAEMU_NAME(cudaErrorCudartUnloading)
        CUDAEMU_NAME(cudaErrorInvalidConfiguration)
        CUDAEMU_NAME(cudaErrorInvalidPitchValue)
        CUDAEMU_NAME(cudaErrorInvalidSymbol)
        CUDAEMU_NAME(cudaErrorInvalidHostPointer)
        CUDAEMU_NAME(cudaErrorInvalidDevicePointer)
        CUDAEMU_NAME(cudaErrorInvalidMemcpyDirection)
        CUDAEMU_NAME(cudaErrorInsufficientDriver)
        CUDAEMU_NAME(cudaErrorMissingConfiguration)
        CUDAEMU_NAME(cudaErrorInvalidDeviceFunction)
        CUDAEMU_NAME(cudaErrorNoDevice)
        CUDAEMU_NAME(cudaErrorInvalidDevice)
        CUDAEMU_NAME(cudaErrorInvalidKernelImage)
        CUDAEMU_NAME(cudaErrorNoKernelImageForDevice)
        CUDAEMU_NAME(cudaErrorInvalidResourceHandle)
        CUDAEMU_NAME(cudaErrorNotReady)
        CUDAEMU_NAME(cudaErrorIllegalAddress)
        CUDAEMU_NAME(cudaErrorLaunchOutOfResources)
        CUDAEMU_NAME(cudaErrorLaunchTimeout)
        CUDAEMU_NAME(cudaErrorIllegalInstruction)
        CUDAEMU_NAME(cudaErrorMisalignedAddress)
        CUDAEMU_NAME(cudaErrorLaunchFailure)
        CUDAEMU_NAME(cudaErrorNotPermitted)
        CUDAEMU_NAME(cudaErrorNotSupported)
        CUDAEMU_NAME(cudaErrorIllegalState)
        CUDAEMU_NAME(cudaErrorStreamCaptureUnsupported)
        CUDAEMU_NAME(cudaErrorStreamCaptureInvalidated)
        CUDAEMU_NAME(cudaErrorStreamCaptureMerge)
        CUDAEMU_NAME(cudaErrorStreamCaptureUnmatched)
        CUDAEMU_NAME(cudaErrorStreamCaptureUnjoined)
        CUDAEMU_NAME(cudaErrorStreamCaptureIsolation)
        CUDAEMU_NAME(cudaErrorStreamCaptureImplicit)
        CUDAEMU_NAME(cudaErrorCapturedEvent)
        CUDAEMU_NAME(cudaErrorStreamCaptureWrongThread)
        CUDAEMU_NAME(cudaErrorGraphExecUpdateFailure)
        CUDAEMU_NAME(cudaErrorUnknown)
#undef CUDAEMU_NAME
    }
    return "cudaErrorUnknown";
}

const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess:
        return "no error";
    case cudaErrorInvalidValue:
        return "invalid argument";
    case cudaErrorMemoryAllocation:
        return "out of memory";
    case cudaErrorInitializationError:
        return "initialization error";
    case cudaErrorInvalidConfiguration:
        return "invalid configuration argument";
    case cudaErrorInvalidPitchValue:
        return "invalid pitch argument";
    case cudaErrorInvalidMemcpyDirection:
        return "invalid copy direction for memcpy";
    case cudaErrorInvalidDeviceFunction:
        return "invalid device function";
    case cudaErrorNoDevice:
        return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice:
        return "invalid device ordinal";
    case cudaErrorNoKernelImageForDevice:
        return "no kernel image is available for the device";
    case cudaErrorInvalidResourceHandle:
        return "invalid resource handle";
    case cudaErrorNotReady:
        return "device not ready";
    case cudaErrorIllegalAddress:
        return "an illegal memory access was encountered";
    case cudaErrorLaunchOutOfResources:
        return "too many resources requested for launch";
    case cudaErrorLaunchFailure:
        return "unspecified launch failure";
    case cudaErrorNotSupported:
        return "operation not supported";
    case cudaErrorStreamCaptureUnsupported:
        return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated:
        return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureUnjoined:
        return "capture sequence contains a fork that was not joined to the primary stream";
    case cudaErrorStreamCaptureImplicit:
        return "operation would make the legacy stream depend on a capturing blocking stream";
    case cudaErrorCapturedEvent:
        return "operation not permitted on an event last recorded in a capturing stream";
    case cudaErrorGraphExecUpdateFailure:
        return "the graph update was not performed because it included changes which violated "
               "constraints specific to instantiated graph update";
    default:
        return "unknown error";
    }
}

cudaError_t cudaGetLastError(void) {
    CUDAEMU_LOCK;
    Device *dev = current_device();
    if (dev && dev->sticky != cudaSuccess) return dev->sticky;
    cudaError_t e = thread_state().last;
    thread_state().last = cudaSuccess;
    return e;
}

cudaError_t cudaPeekAtLastError(void) {
    CUDAEMU_LOCK;
    Device *dev = current_device();
    if (dev && dev->sticky != cudaSuccess) return dev->sticky;
    return thread_state().last;
}

cudaError_t cudaRuntimeGetVersion(int *version) {
    if (!version) return record(cudaErrorInvalidValue);
    *version = 12000;
    return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int *version) {
    return cudaRuntimeGetVersion(version);
}

cudaError_t cudaGetDeviceCount(int *count) {
    CUDAEMU_LOCK;
    if (!count) return record(cudaErrorInvalidValue);
    *count = (int)devices().size();
    return *count ? cudaSuccess : record(cudaErrorNoDevice);
}

cudaError_t cudaSetDevice(int ordinal) {
    CUDAEMU_LOCK;
    if (!device(ordinal))
        return record(devices().empty() ? cudaErrorNoDevice : cudaErrorInvalidDevice);
    thread_state().device = ordinal;
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *ordinal) {
    if (!ordinal) return record(cudaErrorInvalidValue);
    *ordinal = thread_state().device;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int *value, enum cudaDeviceAttr attr, int ordinal) {
    CUDAEMU_LOCK;
    if (!value) return record(cudaErrorInvalidValue);
    if (!device(ordinal)) return record(cudaErrorInvalidDevice);
    switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock:
        *value = 1024;
        break;
    case cudaDevAttrMaxBlockDimX:
        *value = 1024;
        break;
    case cudaDevAttrMaxBlockDimY:
        *value = 1024;
        break;
    case cudaDevAttrMaxBlockDimZ:
        *value = 64;
        break;
    case cudaDevAttrMaxGridDimX:
        *value = 2147483647;
        break;
    case cudaDevAttrMaxGridDimY:
        *value = 65535;
        break;
    case cudaDevAttrMaxGridDimZ:
        *value = 65535;
        break;
    case cudaDevAttrMaxSharedMemoryPerBlock:
        *value = 49152;
        break;
    case cudaDevAttrTotalConstantMemory:
        *value = 65536;
        break;
    case cudaDevAttrWarpSize:
        *value = 32;
        break;
    case cudaDevAttrMultiProcessorCount:
        *value = 1;
        break; // one block at a time
    case cudaDevAttrComputeCapabilityMajor:
        *value = 9;
        break;
    case cudaDevAttrComputeCapabilityMinor:
        *value = 0;
        break;
    case cudaDevAttrMemoryPoolsSupported:
        *value = config().pools ? 1 : 0;
        break;
    default:
        return record(cudaErrorInvalidValue);
    }
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *prop, int ordinal) {
    CUDAEMU_LOCK;
    if (!prop) return record(cudaErrorInvalidValue);
    Device *dev = device(ordinal);
    if (!dev) return record(cudaErrorInvalidDevice);
    std::memset(prop, 0, sizeof *prop);
    std::snprintf(prop->name, sizeof prop->name, "cudaemu: emulated CUDA device (not a GPU)");
    prop->totalGlobalMem = dev->capacity;
    prop->sharedMemPerBlock = 49152;
    prop->warpSize = 32;
    prop->maxThreadsPerBlock = 1024;
    prop->maxThreadsDim[0] = 1024, prop->maxThreadsDim[1] = 1024, prop->maxThreadsDim[2] = 64;
    prop->maxGridSize[0] = 2147483647, prop->maxGridSize[1] = 65535, prop->maxGridSize[2] = 65535;
    prop->major = 9;
    prop->minor = 0;
    prop->multiProcessorCount = 1;
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) {
    CUDAEMU_LOCK;
    Device *dev = nullptr;
    cudaError_t err = enter(&dev);
    if (err != cudaSuccess) return err;
    if ((err = refuse_device_sync(dev, "cudaDeviceSynchronize")) != cudaSuccess) return err;
    count_host_sync();
    flush_device(dev);
    pools_settle(dev);
    return dev->sticky != cudaSuccess ? record(dev->sticky) : cudaSuccess;
}

cudaError_t cudaDeviceReset(void) {
    CUDAEMU_LOCK;
    Device *dev = current_device();
    if (!dev) return record(cudaErrorInvalidDevice);
    drop_captures(dev);
    for (Stream *s : dev->streams) {
        s->queue.clear();
        all_streams().erase(s);
        delete s;
    }
    dev->streams.clear();
    dev->null_stream.queue.clear();
    for (Event *e : dev->events)
        delete e;
    dev->events.clear();
    std::vector<uintptr_t> mine;
    for (auto &kv : allocs())
        if (kv.second.device == dev) mine.push_back(kv.first);
    for (uintptr_t k : mine) {
        host_free(allocs()[k]);
        allocs().erase(k);
    }
    for (Pool *p : dev->pools)
        delete p;
    dev->pools.clear();
    dev->default_pool = nullptr;
    dev->used = 0;
    dev->sticky = cudaSuccess;
    thread_state().last = cudaSuccess;
    return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
    CUDAEMU_LOCK;
    Device *dev = nullptr;
    cudaError_t err = enter(&dev);
    if (err != cudaSuccess) return err;
    if (!free_bytes || !total_bytes) return record(cudaErrorInvalidValue);
    *total_bytes = dev->capacity;
    *free_bytes = dev->capacity > dev->used ? dev->capacity - dev->used : 0;
    return cudaSuccess;
}

cudaError_t cudaMalloc(void **ptr, size_t size) {
    CUDAEMU_LOCK;
    Device *dev = nullptr;
    cudaError_t err = enter(&dev);
    if (err != cudaSuccess) return err;
    if (!ptr) return record(cudaErrorInvalidValue);
    *ptr = nullptr;
    if ((err = refuse_unsafe("cudaMalloc")) != cudaSuccess) return err;
    if (size == 0) return cudaSuccess;
    return device_alloc(dev, nullptr, size, ptr);
}

cudaError_t cudaFree(void *ptr) {
    CUDAEMU_LOCK;
    Device *dev = nullptr;
    cudaError_t err = enter(&dev);
    if (err != cudaSuccess) return err;
    if ((err = refuse_unsafe("cudaFree")) != cudaSuccess) return err;
    if (!ptr) return cudaSuccess;
    Alloc *al = find_alloc(ptr, 0);
    if (!al || al->base != ptr || !al->device)
        return refuse(cudaErrorInvalidValue,
                      format("cudaFree(%p) refused: not the start of a device allocation", ptr));
    count_host_sync();
    flush_device(al->device); // cudaFree waits for the device
    std::string bad = check_canary(*al);
    if (!bad.empty()) fault(al->device, cudaErrorIllegalAddress, "found by cudaFree: " + bad);
    release((uintptr_t)ptr);
    return cudaSuccess;
}

cudaError_t cudaHostAlloc(void **ptr, size_t size, unsigned int flags) {
    CUDAEMU_LOCK;
    Device *dev = nullptr;
    cudaError_t err = enter(&dev);
    if (err != cudaSuccess) return err;
    if (!ptr || flags > 0x0f) return record(cudaErrorInvalidValue);
    *ptr = nullptr;
    if ((err = refuse_unsafe("cudaHostAlloc")) != cudaSuccess) return err;
    if (size == 0) return cudaSuccess;
    void *p = nullptr;
    if (posix_memalign(&p, 256, size) != 0) return record(cudaErrorMemoryAllocation);
    std::memset(p, kPoison, size);
    allocs()[(uintptr_t)p] = Alloc{(char *)p, size, nullptr, nullptr, 0};
    *ptr = p;
    return cudaSuccess;
}

cudaError_t cudaMallocHost(void **ptr, size_t size) {
    return cudaHostAlloc(ptr, size, cudaHostAllocDefault);
}

cudaError_t cudaFreeHost(void *ptr) {
    CUDAEMU_LOCK;
    cudaError_t err = refuse_unsafe("cudaFreeHost");
    if (err != cudaSuccess) return err;
    if (!ptr) return cudaSuccess;
    Alloc *al = find_alloc(ptr, 0);
    if (!al || al->base != ptr || al->device)
        return refuse(cudaErrorInvalidValue,
                      format("cudaFreeHost(%p) refused: not pinned host memory", ptr));
    count_host_sync();
    for (Device *d : devices())
        flush_device(d);
    release((uintptr_t)ptr);
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind,
                            cudaStream_t stream) {
    CUDAEMU_LOCK;
    Device *dev = nullptr;
    Stream *s = nullptr;
    cudaError_t err = enter(&dev);
    if (err != cudaSuccess) return err;
    if ((err = resolve(stream, &s)) != cudaSuccess) return record(err);
    return copy_async(dst, src, count, kind, s, "cudaMemcpyAsync", true);
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind) {
    CUDAEMU_LOCK;
    Device *dev = nullptr;
    cudaError_t err = enter(&dev);
    if (err != cudaSuccess) return err;
    if ((err = refuse_legacy(dev, "cudaMemcpy")) != cudaSuccess) return err;
    if ((err = refuse_unsafe("cudaMemcpy")) != cudaSuccess) return err;
    err = copy_async(dst, src, count, kind, &dev->null_stream, "cudaMemcpy", false);
    if (err != cudaSuccess) return err;
    count_host_sync();
    flush_device(dev);
    return dev->sticky != cudaSuccess ? record(dev->sticky) : cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *ptr, int value, size_t count, cudaStream_t stream) {
    CUDAEMU_LOCK;
    Device *dev = nullptr;
    Stream *s = nullptr;
    cudaError_t err = enter(&dev);
    if (err != cudaSuccess) return err;
    if ((err = resolve(stream, &s)) != cudaSuccess) return record(err);
    return memset_2d(ptr, count, value, count, 1, s, "cudaMemsetAsync");
}

cudaError_t cudaMemset(void *ptr, int value, size_t count) {
    CUDAEMU_LOCK;
    Device *dev = nullptr;
    cudaError_t err = enter(&dev);
    if (err != cudaSuccess) return err;
    if ((err = refuse_legacy(dev, "cudaMemset")) != cudaSuccess) return err;
    if ((err = refuse_unsafe("cudaMemset")) != cudaSuccess) return err;
    err = memset_2d(ptr, count, value, count, 1, &dev->null_stream, "cudaMemset");
    if (err != cudaSuccess) return err;
    count_host_sync();
    flush_device(dev);
    pools_settle(dev);
    return dev->sticky != cudaSuccess ? record(dev->sticky) : cudaSuccess;
}

cudaError_t cudaMemset2DAsync(void *ptr, size_t pitch, int value, size_t width, size_t height,
                              cudaStream_t stream) {
    CUDAEMU_LOCK;
    Device *dev = nullptr;
    Stream *s = nullptr;
    cudaError_t err = enter(&dev);
    if (err != cudaSuccess) return err;
    if ((err = resolve(stream, &s)) != cudaSuccess) return record(err);
    return memset_2d(ptr, pitch, value, width, height, s, "cudaMemset2DAsync");
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned int flags) {
    CUDAEMU_LOCK;
    Device *dev = nullptr;
    cudaError_t err = enter(&dev);
    if (err != cudaSuccess) return err;
    if (!stream || flags > cudaStreamNonBlocking) return record(cudaErrorInvalidValue);
    Stream *s = new Stream;
    s->device = dev;
    s->flags = flags;
    dev->streams.insert(s);
    all_streams().insert(s);
    *stream = (cudaStream_t)s;
    return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t *stream) {
    return cudaStreamCreateWithFlags(stream, cudaStreamDefault);
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
    CUDAEMU_LOCK;
    Stream *s = nullptr;
    if (!stream || resolve(stream, &s) != cudaSuccess || s == &s->device->null_stream)
        return record(cudaErrorInvalidResourceHandle);
    leave_capture(s);
    flush_stream(s); // its queued work still runs, as on a GPU
    for (Event *e : s->device->events)
        if (e->stream == s) e->stream = nullptr;
    s->device->streams.erase(s);
    all_streams().erase(s);
    delete s;
    return cudaSuccess;
}

// Runs what is queued on the stream; fn: the caller, for refusals; a host synchronisation when
// counted (cudaStreamSynchronize), else a query.
static cudaError_t stream_wait(cudaStream_t stream, const char *fn, bool counted) {
    CUDAEMU_LOCK;
    Device *dev = nullptr;
    Stream *s = nullptr;
    cudaError_t err = enter(&dev);
    if (err != cudaSuccess) return err;
    if ((err = resolve(stream, &s)) != cudaSuccess) return record(err);
    if (s == &dev->null_stream && (err = refuse_legacy(dev, fn)) != cudaSuccess) return err;
    if ((err = refuse_in_capture(s, cudaErrorStreamCaptureUnsupported, fn)) != cudaSuccess)
        return err;
    if (counted) count_host_sync();
    if (s == &dev->null_stream)
        flush_device(dev);
    else
        flush_stream(s);
    pools_settle(dev);
    return dev->sticky != cudaSuccess ? record(dev->sticky) : cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
    return stream_wait(stream, "cudaStreamSynchronize", true);
}

// A progress point: the emulator has no background progress, so a query runs the stream's work
// (a GPU would have run it on its own) and answers that it is done. Not a host synchronisation.
cudaError_t cudaStreamQuery(cudaStream_t stream) {
    return stream_wait(stream, "cudaStreamQuery", false);
}

static std::set<Event *> &all_events() {
    static auto *s = new std::set<Event *>;
    return *s;
}

static cudaError_t find_event(cudaEvent_t handle, Event **out) {
    Event *e = (Event *)handle;
    if (!e || !all_events().count(e)) return record(cudaErrorInvalidResourceHandle);
    *out = e;
    return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned int flags) {
    CUDAEMU_LOCK;
    Device *dev = nullptr;
    cudaError_t err = enter(&dev);
    if (err != cudaSuccess) return err;
    if (!event || flags > 0x07) return record(cudaErrorInvalidValue);
    Event *e = new Event;
    e->device = dev;
    e->flags = flags;
    dev->events.insert(e);
    all_events().insert(e);
    *event = (cudaEvent_t)e;
    return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t *event) {
    return cudaEventCreateWithFlags(event, cudaEventDefault);
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
    CUDAEMU_LOCK;
    Device *dev = nullptr;
    Event *e = nullptr;
    Stream *s = nullptr;
    cudaError_t err = enter(&dev);
    if (err != cudaSuccess) return err;
    if ((err = find_event(event, &e)) != cudaSuccess) return err;
    if ((err = resolve(stream, &s)) != cudaSuccess) return record(err);
    if (s->device != e->device) return record(cudaErrorInvalidResourceHandle);
    if (s == &dev->null_stream && (err = refuse_legacy(dev, "cudaEventRecord")) != cudaSuccess)
        return err;
    if (s->capture) return capture_record(e, s);
    e->capture = nullptr;
    e->tips.clear();
    e->stream = s;
    e->pending = true;
    auto op = std::make_unique<RecordOp>();
    op->event = e;
    enqueue(s, std::move(op));
    return cudaSuccess;
}

// Runs the work queued before the event's record; counted as a host synchronisation or not
// (a query), refused for an event recorded in a live capture.
static cudaError_t event_wait(cudaEvent_t event, const char *fn, bool counted) {
    CUDAEMU_LOCK;
    Event *e = nullptr;
    cudaError_t err = find_event(event, &e);
    if (err != cudaSuccess) return err;
    Device *dev = e->device;
    if (dev->sticky != cudaSuccess) return record(dev->sticky);
    if (e->capture) {
        std::string why =
            format("%s on event %p, last recorded in a capturing stream", fn, (void *)e);
        invalidate(e->capture, why);
        return refuse(cudaErrorCapturedEvent, why + " (cudaErrorCapturedEvent)");
    }
    if (counted) count_host_sync();
    while (e->pending && e->stream && !e->stream->queue.empty()) {
        std::unique_ptr<Op> op = std::move(e->stream->queue.front());
        e->stream->queue.pop_front();
        run_op(e->stream, *op);
    }
    pools_settle(dev);
    return dev->sticky != cudaSuccess ? record(dev->sticky) : cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
    return event_wait(event, "cudaEventSynchronize", true);
}

// A progress point, as cudaStreamQuery: runs the work before the event and answers cudaSuccess.
cudaError_t cudaEventQuery(cudaEvent_t event) {
    return event_wait(event, "cudaEventQuery", false);
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end) {
    CUDAEMU_LOCK;
    Event *a = nullptr, *b = nullptr;
    cudaError_t err = find_event(start, &a);
    if (err == cudaSuccess) err = find_event(end, &b);
    if (err != cudaSuccess) return err;
    if (!ms) return record(cudaErrorInvalidValue);
    if ((a->flags | b->flags) & cudaEventDisableTiming)
        return record(cudaErrorInvalidResourceHandle);
    if (a->pending || b->pending) return record(cudaErrorNotReady);
    *ms = (float)((b->when - a->when) * 1e3); // host time: the emulator's, not a GPU's
    return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
    CUDAEMU_LOCK;
    Event *e = nullptr;
    cudaError_t err = find_event(event, &e);
    if (err != cudaSuccess) return err;
    // A pending record still runs; it must not touch the freed event, so complete it now.
    if (e->pending && e->stream) flush_stream(e->stream);
    e->device->events.erase(e);
    all_events().erase(e);
    delete e;
    return cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags) {
    CUDAEMU_LOCK;
    Device *dev = nullptr;
    Stream *s = nullptr;
    Event *e = nullptr;
    cudaError_t err = enter(&dev);
    if (err != cudaSuccess) return err;
    if ((err = resolve(stream, &s)) != cudaSuccess) return record(err);
    if ((err = find_event(event, &e)) != cudaSuccess) return err;
    if (flags != 0) return record(cudaErrorInvalidValue);
    if (s == &dev->null_stream && (err = refuse_legacy(dev, "cudaStreamWaitEvent")) != cudaSuccess)
        return err;
    if (e->capture || s->capture) return capture_wait(s, e);
    auto op = std::make_unique<WaitOp>();
    op->event = e;
    enqueue(s, std::move(op));
    return cudaSuccess;
}

static std::set<Pool *> &all_pools() {
    static auto *s = new std::set<Pool *>;
    return *s;
}

static cudaError_t find_pool(cudaMemPool_t handle, Pool **out) {
    Pool *p = (Pool *)handle;
    if (!p || !all_pools().count(p) || p->destroyed) return record(cudaErrorInvalidValue);
    *out = p;
    return cudaSuccess;
}

static Pool *new_pool(Device *dev, bool is_default) {
    Pool *p = new Pool;
    p->device = dev;
    p->is_default = is_default;
    dev->pools.insert(p);
    all_pools().insert(p);
    return p;
}

cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t *pool, int ordinal) {
    CUDAEMU_LOCK;
    Device *dev = device(ordinal);
    if (!dev) return record(cudaErrorInvalidDevice);
    if (!pool) return record(cudaErrorInvalidValue);
    if (!config().pools) return record(cudaErrorNotSupported);
    if (!dev->default_pool) dev->default_pool = new_pool(dev, true);
    *pool = (cudaMemPool_t)dev->default_pool;
    return cudaSuccess;
}

cudaError_t cudaMemPoolCreate(cudaMemPool_t *pool, const struct cudaMemPoolProps *props) {
    CUDAEMU_LOCK;
    if (!pool || !props) return record(cudaErrorInvalidValue);
    if (!config().pools) return record(cudaErrorNotSupported);
    if (props->allocType != cudaMemAllocationTypePinned ||
        props->handleTypes != cudaMemHandleTypeNone ||
        props->location.type != cudaMemLocationTypeDevice)
        return record(cudaErrorInvalidValue);
    Device *dev = device(props->location.id);
    if (!dev) return record(cudaErrorInvalidDevice);
    if (dev->sticky != cudaSuccess) return record(dev->sticky);
    *pool = (cudaMemPool_t)new_pool(dev, false);
    return cudaSuccess;
}

cudaError_t cudaMemPoolDestroy(cudaMemPool_t pool) {
    CUDAEMU_LOCK;
    Pool *p = nullptr;
    cudaError_t err = find_pool(pool, &p);
    if (err != cudaSuccess) return err;
    if (p->is_default) return record(cudaErrorInvalidValue);
    p->destroyed = true;
    all_pools().erase(p);
    pool_delete_if_done(p);
    return cudaSuccess;
}

cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t pool, enum cudaMemPoolAttr attr, void *value) {
    CUDAEMU_LOCK;
    Pool *p = nullptr;
    cudaError_t err = find_pool(pool, &p);
    if (err != cudaSuccess) return err;
    if (!value) return record(cudaErrorInvalidValue);
    switch (attr) {
    case cudaMemPoolAttrReleaseThreshold:
        p->threshold = *(uint64_t *)value;
        return cudaSuccess;
    case cudaMemPoolReuseFollowEventDependencies:
    case cudaMemPoolReuseAllowOpportunistic:
    case cudaMemPoolReuseAllowInternalDependencies:
        return cudaSuccess;
    case cudaMemPoolAttrReservedMemHigh:
        if (*(uint64_t *)value != 0) return record(cudaErrorInvalidValue);
        p->reserved_high = p->reserved;
        return cudaSuccess;
    case cudaMemPoolAttrUsedMemHigh:
        if (*(uint64_t *)value != 0) return record(cudaErrorInvalidValue);
        p->used_high = p->used;
        return cudaSuccess;
    default:
        return record(cudaErrorInvalidValue);
    }
}

cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t pool, enum cudaMemPoolAttr attr, void *value) {
    CUDAEMU_LOCK;
    Pool *p = nullptr;
    cudaError_t err = find_pool(pool, &p);
    if (err != cudaSuccess) return err;
    if (!value) return record(cudaErrorInvalidValue);
    uint64_t *v = (uint64_t *)value;
    switch (attr) {
    case cudaMemPoolAttrReleaseThreshold:
        *v = p->threshold;
        break;
    case cudaMemPoolAttrReservedMemCurrent:
        *v = p->reserved;
        break;
    case cudaMemPoolAttrReservedMemHigh:
        *v = p->reserved_high;
        break;
    case cudaMemPoolAttrUsedMemCurrent:
        *v = p->used;
        break;
    case cudaMemPoolAttrUsedMemHigh:
        *v = p->used_high;
        break;
    default:
        *(int *)value = 1;
        break;
    }
    return cudaSuccess;
}

cudaError_t cudaMemPoolTrimTo(cudaMemPool_t pool, size_t min_bytes_to_keep) {
    CUDAEMU_LOCK;
    Pool *p = nullptr;
    cudaError_t err = find_pool(pool, &p);
    if (err != cudaSuccess) return err;
    pool_trim(p, min_bytes_to_keep);
    return cudaSuccess;
}

cudaError_t cudaMallocFromPoolAsync(void **ptr, size_t size, cudaMemPool_t pool,
                                    cudaStream_t stream) {
    CUDAEMU_LOCK;
    Device *dev = nullptr;
    Stream *s = nullptr;
    Pool *p = nullptr;
    cudaError_t err = enter(&dev);
    if (err != cudaSuccess) return err;
    if ((err = find_pool(pool, &p)) != cudaSuccess) return err;
    if ((err = resolve(stream, &s)) != cudaSuccess) return record(err);
    if (!ptr) return record(cudaErrorInvalidValue);
    *ptr = nullptr;
    // CUDA records an allocation node; the emulator refuses instead (README.md).
    if ((err = refuse_in_capture(s, cudaErrorStreamCaptureUnsupported, "cudaMallocAsync")) !=
        cudaSuccess)
        return err;
    if (size == 0) return cudaSuccess;
    return device_alloc(p->device, p, size, ptr);
}

cudaError_t cudaMallocAsync(void **ptr, size_t size, cudaStream_t stream) {
    CUDAEMU_LOCK;
    cudaMemPool_t pool = nullptr;
    cudaError_t err = cudaDeviceGetDefaultMemPool(&pool, thread_state().device);
    if (err != cudaSuccess) return err;
    return cudaMallocFromPoolAsync(ptr, size, pool, stream);
}

cudaError_t cudaFreeAsync(void *ptr, cudaStream_t stream) {
    CUDAEMU_LOCK;
    Device *dev = nullptr;
    Stream *s = nullptr;
    cudaError_t err = enter(&dev);
    if (err != cudaSuccess) return err;
    if ((err = resolve(stream, &s)) != cudaSuccess) return record(err);
    if ((err = refuse_in_capture(s, cudaErrorStreamCaptureUnsupported, "cudaFreeAsync")) !=
        cudaSuccess)
        return err;
    if (!ptr) return cudaSuccess;
    Alloc *al = find_alloc(ptr, 0);
    if (!al || al->base != ptr || !al->device)
        return refuse(
            cudaErrorInvalidValue,
            format("cudaFreeAsync(%p) refused: not the start of a device allocation", ptr));
    auto op = std::make_unique<FreeOp>();
    op->key = (uintptr_t)ptr;
    return submit_work(s, std::move(op), Work::none);
}

cudaError_t cudaFuncGetAttributes(struct cudaFuncAttributes *attr, const void *func) {
    CUDAEMU_LOCK;
    Device *dev = nullptr;
    cudaError_t err = enter(&dev);
    if (err != cudaSuccess) return err;
    if (!attr) return record(cudaErrorInvalidValue);
    if (!func) return record(cudaErrorInvalidDeviceFunction);
    std::memset(attr, 0, sizeof *attr);
    attr->maxThreadsPerBlock = 1024;
    attr->ptxVersion = 90;
    attr->binaryVersion = 90;
    attr->maxDynamicSharedSizeBytes = 49152;
    attr->preferredShmemCarveout = -1;
    return cudaSuccess;
}

// ---- cudaemu's own controls --------------------------------------------------------------------

void cudaemu_set_schedule(int random, uint64_t seed) {
    CUDAEMU_LOCK;
    config().random = random != 0;
    config().seed = seed;
}

void cudaemu_set_deferred(int on) {
    CUDAEMU_LOCK;
    if (!on)
        for (Device *d : devices())
            flush_device(d);
    config().deferred = on != 0;
}

int cudaemu_deferred(void) {
    return config().deferred ? 1 : 0;
}

void cudaemu_set_capacity(size_t bytes) {
    CUDAEMU_LOCK;
    config().capacity = bytes;
    for (Device *d : devices())
        d->capacity = bytes;
}

void cudaemu_set_nccl_timeout(double seconds) {
    CUDAEMU_LOCK;
    config().nccl_timeout = seconds;
}

const char *cudaemu_last_fault(void) {
    return last_fault_text().c_str();
}

int cudaemu_is_device_pointer(const void *ptr) {
    CUDAEMU_LOCK;
    Alloc *al = find_alloc(ptr, 0);
    return al && al->device && (const char *)ptr < al->base + al->size;
}

} // extern "C"
