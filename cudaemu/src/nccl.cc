// The emulated NCCL: communicators between the processes of one machine over POSIX shared
// memory, with a process-shared mutex and condition variable; no MPI.
//
// ncclGetUniqueId names a shared-memory object; every rank's ncclCommInitRank opens it (the first
// creates it) and waits for the others, and the last to join unlinks the name, so nothing is left
// behind even if a rank dies later. An all-reduce runs when its stream runs it: each rank copies a
// chunk of its buffer into its slot, and after a barrier every rank combines the slots in rank
// order, so every rank gets the same bits. A rank that does not arrive within
// CUDAEMU_NCCL_TIMEOUT seconds (a deadlock, a crashed peer, a mismatched call) makes the others
// fail instead of hang; calls whose count, type or operation differ between ranks are refused.
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "internal.h"
#include "nccl.h"

namespace cudaemu {
namespace {

constexpr uint32_t kMagic = 0x6e63636c; // "nccl"
constexpr size_t kChunk = (size_t)1 << 20;
constexpr int kMaxRanks = 64;
constexpr char kIdTag[] = "cudaemu-nccl:";

struct Desc {
    uint64_t seq;
    uint64_t count;
    int type, op;
};

struct Segment {
    std::atomic<uint32_t> magic;
    int nranks;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int joined;
    int arrived;
    uint64_t generation;
    int broken; // a rank died or timed out: every later wait fails
    Desc desc[kMaxRanks];
    // then nranks slots of kChunk bytes
};

size_t segment_bytes(int nranks) {
    size_t header = (sizeof(Segment) + 63) / 64 * 64;
    return header + (size_t)nranks * kChunk;
}

char *slot(Segment *s, int rank) {
    return (char *)s + (sizeof(Segment) + 63) / 64 * 64 + (size_t)rank * kChunk;
}

timespec deadline() {
    timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    double secs = config().nccl_timeout;
    t.tv_sec += (time_t)secs;
    t.tv_nsec += (long)((secs - (double)(time_t)secs) * 1e9);
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

int lock_segment(Segment *s) {
    int r = pthread_mutex_lock(&s->mu);
    if (r == EOWNERDEAD) { // a rank died holding it
        s->broken = 1;
        pthread_mutex_consistent(&s->mu);
        r = 0;
    }
    return r;
}

} // namespace
} // namespace cudaemu

struct cudaemu_nccl_comm {
    cudaemu::Segment *seg;
    size_t bytes;
    int rank, nranks;
    cudaemu::Device *device;
    uint64_t seq = 0;
    ncclResult_t async = ncclSuccess;
    std::string error;
};

namespace cudaemu {
namespace {

std::string &last_nccl_error() {
    static auto *s = new std::string;
    return *s;
}

ncclResult_t nccl_fail(ncclComm_t c, ncclResult_t r, const std::string &msg) {
    std::fprintf(stderr, "cudaemu: NCCL: %s\n", msg.c_str());
    last_nccl_error() = msg;
    if (c) c->error = msg;
    return r;
}

// Every rank waits here until all have arrived; false on a timeout or a dead peer.
bool barrier(ncclComm_t c, const char *what) {
    Segment *s = c->seg;
    if (lock_segment(s) != 0) return false;
    bool ok = !s->broken;
    if (ok) {
        uint64_t gen = s->generation;
        if (++s->arrived == s->nranks) {
            s->arrived = 0;
            s->generation++;
            pthread_cond_broadcast(&s->cv);
        } else {
            timespec until = deadline();
            while (s->generation == gen && !s->broken) {
                int r = pthread_cond_timedwait(&s->cv, &s->mu, &until);
                if (r == EOWNERDEAD) {
                    s->broken = 1;
                    pthread_mutex_consistent(&s->mu);
                }
                if (r == ETIMEDOUT) {
                    s->broken = 1;
                    pthread_cond_broadcast(&s->cv);
                }
            }
            ok = !s->broken;
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (!ok)
        nccl_fail(c, ncclSystemError,
                  format("rank %d of %d: %s: not every rank arrived within %g s (a rank died, "
                         "deadlocked, or called something else)",
                         c->rank, c->nranks, what, config().nccl_timeout));
    return ok;
}

size_t type_size(ncclDataType_t t) {
    switch (t) {
    case ncclInt8:
    case ncclUint8:
        return 1;
    case ncclInt32:
    case ncclUint32:
    case ncclFloat32:
        return 4;
    case ncclInt64:
    case ncclUint64:
    case ncclFloat64:
        return 8;
    default:
        return 0; // half precision is not emulated
    }
}

template <typename T> void combine(T *out, const T *in, size_t n, ncclRedOp_t op, bool first) {
    for (size_t i = 0; i < n; ++i) {
        if (first) {
            out[i] = in[i];
            continue;
        }
        switch (op) {
        case ncclSum:
        case ncclAvg:
            out[i] = out[i] + in[i];
            break;
        case ncclProd:
            out[i] = out[i] * in[i];
            break;
        case ncclMax:
            out[i] = in[i] > out[i] ? in[i] : out[i];
            break;
        case ncclMin:
            out[i] = in[i] < out[i] ? in[i] : out[i];
            break;
        }
    }
}

template <typename T>
void reduce_slots(Segment *s, int nranks, char *dst, size_t n, ncclRedOp_t op) {
    T *out = (T *)dst;
    for (int r = 0; r < nranks; ++r)
        combine(out, (const T *)slot(s, r), n, op, r == 0);
    if (op == ncclAvg)
        for (size_t i = 0; i < n; ++i)
            out[i] = (T)(out[i] / (T)nranks);
}

void reduce_chunk(Segment *s, int nranks, char *dst, size_t n, ncclDataType_t t, ncclRedOp_t op) {
    switch (t) {
    case ncclInt8:
        reduce_slots<int8_t>(s, nranks, dst, n, op);
        break;
    case ncclUint8:
        reduce_slots<uint8_t>(s, nranks, dst, n, op);
        break;
    case ncclInt32:
        reduce_slots<int32_t>(s, nranks, dst, n, op);
        break;
    case ncclUint32:
        reduce_slots<uint32_t>(s, nranks, dst, n, op);
        break;
    case ncclInt64:
        reduce_slots<int64_t>(s, nranks, dst, n, op);
        break;
    case ncclUint64:
        reduce_slots<uint64_t>(s, nranks, dst, n, op);
        break;
    case ncclFloat32:
        reduce_slots<float>(s, nranks, dst, n, op);
        break;
    case ncclFloat64:
        reduce_slots<double>(s, nranks, dst, n, op);
        break;
    default:
        break;
    }
}

struct AllReduceOp final : Op {
    ncclComm_t comm;
    const void *send;
    void *recv;
    size_t count;
    ncclDataType_t type;
    ncclRedOp_t op;

    ncclResult_t all_reduce() {
        Segment *s = comm->seg;
        Desc mine{++comm->seq, count, (int)type, (int)op};
        s->desc[comm->rank] = mine;
        if (!barrier(comm, "ncclAllReduce")) return ncclSystemError;
        for (int r = 0; r < comm->nranks; ++r) {
            const Desc &d = s->desc[r];
            if (d.seq != mine.seq || d.count != mine.count || d.type != mine.type ||
                d.op != mine.op)
                return nccl_fail(comm, ncclInvalidUsage,
                                 format("ncclAllReduce #%llu: rank %d asks for %llu elements of "
                                        "type %d with op %d, rank %d (call #%llu) for %llu of "
                                        "type %d with op %d",
                                        (unsigned long long)mine.seq, comm->rank,
                                        (unsigned long long)count, (int)type, (int)op, r,
                                        (unsigned long long)d.seq, (unsigned long long)d.count,
                                        d.type, d.op));
        }
        size_t esize = type_size(type), per_chunk = kChunk / esize;
        for (size_t done = 0; done < count; done += per_chunk) {
            size_t n = count - done < per_chunk ? count - done : per_chunk;
            std::memcpy(slot(s, comm->rank), (const char *)send + done * esize, n * esize);
            if (!barrier(comm, "ncclAllReduce")) return ncclSystemError;
            reduce_chunk(s, comm->nranks, (char *)recv + done * esize, n, type, op);
            if (!barrier(comm, "ncclAllReduce")) return ncclSystemError;
        }
        return ncclSuccess;
    }

    cudaError_t run(std::string *message) override {
        comm->async = all_reduce();
        if (comm->async == ncclSuccess) return cudaSuccess;
        *message = comm->error;
        return cudaErrorLaunchFailure;
    }
};

std::set<ncclComm_t> &comms() {
    static auto *s = new std::set<ncclComm_t>;
    return *s;
}

// Opens (or creates) the segment named in the id and maps it; NULL with a message on failure.
Segment *open_segment(const char *name, int nranks, size_t bytes, std::string *err) {
    int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
    bool creator = fd >= 0;
    timespec until = deadline();
    while (fd < 0) {
        fd = shm_open(name, O_RDWR, 0600);
        if (fd >= 0) break;
        timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        if (now.tv_sec > until.tv_sec) {
            *err = format("shm_open(%s): %s", name, std::strerror(errno));
            return nullptr;
        }
        usleep(1000);
    }
    if (creator && ftruncate(fd, (off_t)bytes) != 0) {
        *err = format("ftruncate(%s, %zu): %s", name, bytes, std::strerror(errno));
        close(fd);
        shm_unlink(name);
        return nullptr;
    }
    for (;;) { // a joiner waits until the creator has sized it
        struct stat st;
        if (fstat(fd, &st) == 0 && (size_t)st.st_size >= bytes) break;
        usleep(1000);
    }
    void *m = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        *err = format("mmap(%s): %s", name, std::strerror(errno));
        return nullptr;
    }
    Segment *s = (Segment *)m;
    if (creator) {
        pthread_mutexattr_t ma;
        pthread_mutexattr_init(&ma);
        pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
        pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
        pthread_mutex_init(&s->mu, &ma);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED);
        pthread_cond_init(&s->cv, &ca);
        s->nranks = nranks;
        s->magic.store(kMagic, std::memory_order_release);
    }
    while (s->magic.load(std::memory_order_acquire) != kMagic)
        usleep(1000);
    if (s->nranks != nranks) {
        *err = format("the ranks disagree on the number of ranks (%d here, %d at the first)",
                      nranks, s->nranks);
        munmap(m, bytes);
        return nullptr;
    }
    return s;
}

} // namespace
} // namespace cudaemu

using namespace cudaemu;

extern "C" {

ncclResult_t ncclGetUniqueId(ncclUniqueId *unique_id) {
    CUDAEMU_LOCK;
    if (!unique_id) return nccl_fail(nullptr, ncclInvalidArgument, "ncclGetUniqueId: id is NULL");
    static unsigned counter;
    timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    std::memset(unique_id, 0, sizeof *unique_id);
    std::snprintf(unique_id->internal, sizeof unique_id->internal, "%s/cudaemu-nccl-%d-%u-%ld",
                  kIdTag, (int)getpid(), counter++, (long)t.tv_nsec);
    return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId comm_id, int rank) {
    CUDAEMU_LOCK;
    if (!comm) return nccl_fail(nullptr, ncclInvalidArgument, "ncclCommInitRank: comm is NULL");
    *comm = nullptr;
    if (nranks < 1 || nranks > kMaxRanks || rank < 0 || rank >= nranks)
        return nccl_fail(
            nullptr, ncclInvalidArgument,
            format("ncclCommInitRank: rank %d of %d ranks (at most %d)", rank, nranks, kMaxRanks));
    comm_id.internal[NCCL_UNIQUE_ID_BYTES - 1] = '\0';
    if (std::strncmp(comm_id.internal, kIdTag, sizeof kIdTag - 1) != 0)
        return nccl_fail(nullptr, ncclInvalidArgument,
                         "ncclCommInitRank: the id is not one ncclGetUniqueId made");
    Device *dev = current_device();
    if (!dev) return nccl_fail(nullptr, ncclUnhandledCudaError, "ncclCommInitRank: no device");
    if (dev->sticky != cudaSuccess) return ncclUnhandledCudaError;
    const char *name = comm_id.internal + sizeof kIdTag - 1;
    size_t bytes = segment_bytes(nranks);
    std::string err;
    Segment *s = open_segment(name, nranks, bytes, &err);
    if (!s) return nccl_fail(nullptr, ncclSystemError, "ncclCommInitRank: " + err);
    auto *c = new cudaemu_nccl_comm;
    c->seg = s;
    c->bytes = bytes;
    c->rank = rank;
    c->nranks = nranks;
    c->device = dev;
    bool last = false;
    if (lock_segment(s) == 0) {
        last = ++s->joined == nranks;
        pthread_mutex_unlock(&s->mu);
    }
    if (last) shm_unlink(name); // everyone has it open
    if (!barrier(c, "ncclCommInitRank")) {
        munmap(s, bytes);
        delete c;
        return ncclSystemError;
    }
    comms().insert(c);
    *comm = c;
    return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
    CUDAEMU_LOCK;
    if (!comm || !comms().count(comm))
        return nccl_fail(nullptr, ncclInvalidArgument, "ncclCommDestroy: not a communicator");
    flush_device(comm->device); // queued collectives still run, on every rank
    comms().erase(comm);
    munmap(comm->seg, comm->bytes);
    delete comm;
    return ncclSuccess;
}

ncclResult_t ncclCommCount(ncclComm_t comm, int *count) {
    CUDAEMU_LOCK;
    if (!comm || !comms().count(comm) || !count) return ncclInvalidArgument;
    *count = comm->nranks;
    return ncclSuccess;
}

ncclResult_t ncclCommUserRank(ncclComm_t comm, int *rank) {
    CUDAEMU_LOCK;
    if (!comm || !comms().count(comm) || !rank) return ncclInvalidArgument;
    *rank = comm->rank;
    return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void *sendbuff, void *recvbuff, size_t count,
                           ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                           cudaStream_t stream) {
    CUDAEMU_LOCK;
    if (!comm || !comms().count(comm))
        return nccl_fail(nullptr, ncclInvalidArgument, "ncclAllReduce: not a communicator");
    if (comm->device->sticky != cudaSuccess) return ncclUnhandledCudaError;
    size_t esize = type_size(datatype);
    if (!esize || (unsigned)op > ncclAvg)
        return nccl_fail(comm, ncclInvalidArgument,
                         format("ncclAllReduce: datatype %d, op %d", (int)datatype, (int)op));
    if (count == 0) return ncclSuccess;
    std::string bad = check_device_range(sendbuff, count * esize, comm->device);
    if (bad.empty()) bad = check_device_range(recvbuff, count * esize, comm->device);
    if (!bad.empty()) return nccl_fail(comm, ncclInvalidArgument, "ncclAllReduce: buffer: " + bad);
    int saved = thread_state().device;
    thread_state().device = comm->device->ordinal;
    Stream *s = nullptr;
    cudaError_t err = resolve(stream, &s);
    thread_state().device = saved;
    if (err != cudaSuccess)
        return nccl_fail(comm, ncclInvalidArgument, "ncclAllReduce: invalid stream");
    auto work = std::make_unique<AllReduceOp>();
    work->comm = comm;
    work->send = sendbuff;
    work->recv = recvbuff;
    work->count = count;
    work->type = datatype;
    work->op = op;
    if (submit_work(s, std::move(work), Work::library) != cudaSuccess)
        return ncclUnhandledCudaError;
    if (!config().deferred && comm->async != ncclSuccess) return comm->async;
    return ncclSuccess;
}

const char *ncclGetErrorString(ncclResult_t result) {
    switch (result) {
    case ncclSuccess:
        return "no error";
    case ncclUnhandledCudaError:
        return "unhandled cuda error";
    case ncclSystemError:
        return "unhandled system error";
    case ncclInternalError:
        return "internal error";
    case ncclInvalidArgument:
        return "invalid argument";
    case ncclInvalidUsage:
        return "invalid usage";
    case ncclRemoteError:
        return "remote process exited or there was a network error";
    case ncclInProgress:
        return "NCCL operation in progress";
    default:
        return "unknown result code";
    }
}

const char *ncclGetLastError(ncclComm_t comm) {
    CUDAEMU_LOCK;
    if (comm && comms().count(comm)) return comm->error.c_str();
    return last_nccl_error().c_str();
}

} // extern "C"
