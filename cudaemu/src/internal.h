// cudaemu's internals shared by the runtime, the scheduler, cuBLAS and NCCL.
//
// One lock serialises every call into the emulator, and every kernel, copy or GEMM runs on the
// thread that makes it run (at the call in eager mode, at the next synchronisation in deferred
// mode): nothing runs concurrently, so a mode and a seed give one execution.
#ifndef CUDAEMU_INTERNAL_H
#define CUDAEMU_INTERNAL_H

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cuda_runtime.h"

namespace cudaemu {

struct Config {
    bool random = false;     // CUDAEMU_SCHEDULE=random
    uint64_t seed = 1;       // CUDAEMU_SEED
    bool deferred = true;    // CUDAEMU_EXEC: deferred (default) or eager
    size_t capacity = 0;     // CUDAEMU_MEMORY, bytes per device
    int devices = 2;         // CUDAEMU_DEVICES
    size_t stack_bytes = 0;  // CUDAEMU_STACK, bytes per emulated thread
    bool pools = true;       // CUDAEMU_POOLS=0: the device reports no memory pools
    double nccl_timeout = 0; // CUDAEMU_NCCL_TIMEOUT, seconds
};
Config &config();

std::recursive_mutex &lock();
#define CUDAEMU_LOCK std::lock_guard<std::recursive_mutex> cudaemu_guard_(::cudaemu::lock())

// Fresh memory is filled with this byte: NaN as float and double, -1 as an integer.
constexpr unsigned char kPoison = 0xff;

struct Device;
struct Pool;

struct Alloc {
    char *base;
    size_t size;
    Device *device; // NULL for pinned host memory
    Pool *pool;     // the pool it came from, or NULL (cudaMalloc, pinned)
    size_t charged; // bytes it holds of the device's capacity (a pool block may be larger)
};

// Work queued on a stream. run() returns cudaSuccess or a fault, with its message.
struct Op {
    virtual ~Op() = default;
    virtual cudaError_t run(std::string *message) = 0;
    // What it is, for a fault found after it ran ("kernel launched at f:l", "cublasSgemm").
    virtual std::string what() const {
        return "device work";
    }
    // As a graph node: its type, and for a kernel the function (cudaGraphExecUpdate keeps a
    // node only when both stay).
    virtual cudaGraphNodeType node_type() const {
        return cudaGraphNodeTypeKernel;
    }
    virtual const void *function() const {
        return nullptr;
    }
    // Called when a graph replay queues the node (a copy to host memory poisons it, as a queued
    // copy does in deferred mode).
    virtual void replay_queued() {}
};

struct Capture;
struct GraphNode;

struct Stream {
    Device *device;
    unsigned flags;
    std::deque<std::unique_ptr<Op>> queue;
    Capture *capture = nullptr;    // the capture sequence it takes part in, or NULL
    std::vector<GraphNode *> tips; // while capturing: what its next node depends on
};

struct Event {
    Device *device;
    unsigned flags;
    Stream *stream = nullptr;      // where it was last recorded
    bool pending = false;          // recorded, not yet reached
    double when = 0;               // host seconds when reached
    Capture *capture = nullptr;    // recorded in this (live) capture: a set of nodes, not work
    std::vector<GraphNode *> tips; // the nodes it stands for then
};

// ---- graphs and stream capture (graph.cc) --------------------------------------------------
struct GraphNode {
    std::shared_ptr<Op> op; // shared with the executable graphs made from it
    std::vector<GraphNode *> deps;
};

struct Graph {
    Device *device;
    std::vector<std::unique_ptr<GraphNode>> nodes; // in capture order, a topological order
};

struct Capture {
    Device *device;
    Stream *origin;
    cudaStreamCaptureMode mode;
    std::thread::id thread;
    bool invalid = false;
    std::string why; // what invalidated it
    std::unique_ptr<Graph> graph;
    std::set<Stream *> streams; // the origin and the streams forked into it
};

// For a call that synchronises with or queries stream s: err (the capture invalidated) when s
// is capturing, cudaErrorStreamCaptureInvalidated when its capture already is, else cudaSuccess.
cudaError_t refuse_in_capture(Stream *s, cudaError_t err, const char *fn);
// For the calls CUDA calls potentially unsafe during a capture (cudaMalloc, cudaFree, the
// synchronous copies...): cudaErrorStreamCaptureUnsupported, invalidating the captures that
// forbid it (Global ones anywhere, ThreadLocal ones of this thread), or cudaSuccess.
cudaError_t refuse_unsafe(const char *fn);
// For the legacy stream of dev while a blocking stream of it captures:
// cudaErrorStreamCaptureImplicit (that capture invalidated), or cudaSuccess.
cudaError_t refuse_legacy(Device *dev, const char *fn);
// For a device-wide synchronisation: cudaErrorStreamCaptureUnsupported while a stream of dev
// captures (invalidated), or cudaSuccess.
cudaError_t refuse_device_sync(Device *dev, const char *fn);
void invalidate(Capture *c, const std::string &why);
// Ends every capture of dev and frees it (cudaDeviceReset).
void drop_captures(Device *dev);
// A destroyed stream leaves its capture, invalidating it (and ending it, if it began there).
void leave_capture(Stream *s);
// cudaEventRecord on a capturing stream s; cudaStreamWaitEvent on e recorded in a capture or by
// a capturing stream s (a fork, a join, or CUDA's refusal).
cudaError_t capture_record(Event *e, Stream *s);
cudaError_t capture_wait(Stream *s, Event *e);

// What cudaemu_get_counts reports.
enum class Work { kernel, library, copy, none };
void count_host_sync();
void count_graph_node_run();
void count_graph_launch();

struct Pool {
    Device *device;
    bool is_default = false, destroyed = false;
    uint64_t threshold = 0;
    std::multiset<size_t> kept; // freed blocks the pool holds on to
    size_t reserved = 0, used = 0, reserved_high = 0, used_high = 0;
    size_t live = 0; // allocations not yet freed
};

struct Device {
    int ordinal;
    size_t capacity, used = 0;
    cudaError_t sticky = cudaSuccess; // a kernel fault: every later call returns it
    Stream null_stream;
    std::set<Stream *> streams;
    std::set<Event *> events;
    std::set<Pool *> pools;
    Pool *default_pool = nullptr;
};

// Per host thread, as in CUDA: the current device and the last error.
struct ThreadState {
    int device = 0;
    cudaError_t last = cudaSuccess;
};
ThreadState &thread_state();

Device *device(int ordinal); // NULL when out of range
Device *current_device();

// Records err as the calling thread's last error (when not cudaSuccess) and returns it.
cudaError_t record(cudaError_t err);
// The same, printing "cudaemu: <message>" to stderr: for what the emulator refuses beyond an
// ordinary failure (a host pointer where device memory belongs, a copy past an allocation).
cudaError_t refuse(cudaError_t err, const std::string &message);
// A fault of device work: sticky on dev until cudaDeviceReset, printed to stderr.
void fault(Device *dev, cudaError_t err, const std::string &message);

// The allocation holding [p, p + bytes), or NULL. bytes may be 0 (p may then be its end).
Alloc *find_alloc(const void *p, size_t bytes = 0);
// "0x... is not device memory (...)" or "" when [p, p + bytes) is device memory of dev.
std::string check_device_range(const void *p, size_t bytes, const Device *dev);

// Resolves a stream handle of the current device (NULL and cudaStreamLegacy: its null stream).
cudaError_t resolve(cudaStream_t handle, Stream **out);
// Queues op on s, or runs it now in eager mode. A fault makes the device's error sticky.
void enqueue(Stream *s, std::unique_ptr<Op> op);
// The way work reaches a stream: recorded as a node when s is capturing (an error when the
// capture was invalidated, or s is the legacy stream while a blocking stream captures), else
// counted as kind and queued.
cudaError_t submit_work(Stream *s, std::unique_ptr<Op> op, Work kind);
// Runs everything queued on dev's streams (a synchronisation point).
void flush_device(Device *dev);
void flush_stream(Stream *s);
// Queues a library's work (cuBLAS, cuBLASLt) on stream of dev, whatever the calling thread's
// current device: cudaSuccess, cudaErrorInvalidResourceHandle for a stream that is not dev's,
// or the device's sticky fault (before, or from the work when it ran at once).
cudaError_t queue_library_work(Device *dev, cudaStream_t stream, std::unique_ptr<Op> op);

std::string format(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void set_last_fault(const std::string &message);

// ---- the kernel scheduler (sched.cc) ---------------------------------------------------------
struct Grid {
    LaunchConfig config;
    Closure *closure;
};
// Runs every block of the grid; cudaSuccess, or a fault with its message.
cudaError_t run_grid(const Grid &grid, std::string *message);
// Canary bytes after each device allocation (none under AddressSanitizer, which sees overruns
// itself): a kernel that writes past the end is caught when it ends.
size_t canary_bytes();

} // namespace cudaemu

#endif
