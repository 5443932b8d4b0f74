// The kernel scheduler: the threads of a block as fibers on Boost.Context's fcontext.
//
// Blocks run one after another. A thread runs as a plain call until it first reaches a sync
// point (__syncthreads, a shuffle); only then does it keep its own stack, and the rest of the
// block goes on on a fresh one. So a thread that never syncs (most element-wise threads) costs a
// function call, and one that does costs one context switch per sync point: the thread that
// stops switches straight to the next one that can run, never through a scheduler fiber.
//
// In-order schedule: threads start in index order; the threads released by a sync point go
// first, so a warp runs ahead through its shuffles to its next barrier before the next warp
// starts, which is one legal order of a GPU's (and the one that shows a reuse of shared memory
// without a barrier). Random schedule: the next thread is drawn from every thread that can run,
// and blocks run in a random order.
//
// Faults: a barrier that some thread of the block exits without reaching, threads waiting at two
// different barriers, a shuffle whose mask names a lane that exited or is elsewhere, and a block
// in which nothing can run while threads wait (a deadlock). Each names the file and line.
#include <sys/mman.h>
#include <unistd.h>

#include <boost/context/detail/fcontext.hpp>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "internal.h"

#if defined(__SANITIZE_ADDRESS__)
#define CUDAEMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CUDAEMU_ASAN 1
#endif
#endif
#ifdef CUDAEMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

uint3 threadIdx;
uint3 blockIdx;
int cudaemu::current_thread;
dim3 blockDim;
dim3 gridDim;

// The __shared__ variables of every kernel linked with this copy of cudaemu.
extern "C" char __start_cudaemu_shared[] __attribute__((weak, visibility("hidden")));
extern "C" char __stop_cudaemu_shared[] __attribute__((weak, visibility("hidden")));

namespace fc = boost::context::detail;

// The switch between two fibers. Boost's jump_fcontext returns with an indirect jump, so every
// switch leaves the CPU's return-address predictor one entry off and the next few returns
// mispredict; it also reloads the FP control words, which the threads of a kernel never change.
// On x86-64 the emulator switches with this routine instead: the same context layout as
// jump_fcontext's (so contexts from make_fcontext and jump_fcontext work with either), but a
// plain `ret`, and the control words are saved for jump_fcontext's sake but not reloaded. It
// halves the cost of a shuffle (29 to 15 ns a lane, measured on the project's machine).
#if defined(__x86_64__) && defined(__ELF__)
extern "C" fc::transfer_t cudaemu_switch_fcontext(fc::fcontext_t to, void *data);
asm(R"(
    .text
    .p2align 4
    .type cudaemu_switch_fcontext,@function
cudaemu_switch_fcontext:
    leaq  -0x38(%rsp), %rsp
    stmxcsr (%rsp)
    fnstcw  0x4(%rsp)
    movq  %r12, 0x8(%rsp)
    movq  %r13, 0x10(%rsp)
    movq  %r14, 0x18(%rsp)
    movq  %r15, 0x20(%rsp)
    movq  %rbx, 0x28(%rsp)
    movq  %rbp, 0x30(%rsp)
    movq  %rsp, %rax
    movq  %rdi, %rsp
    movq  0x8(%rsp), %r12
    movq  0x10(%rsp), %r13
    movq  0x18(%rsp), %r14
    movq  0x20(%rsp), %r15
    movq  0x28(%rsp), %rbx
    movq  0x30(%rsp), %rbp
    leaq  0x38(%rsp), %rsp
    movq  %rsi, %rdx
    movq  %rax, %rdi
    ret
    .size cudaemu_switch_fcontext,.-cudaemu_switch_fcontext
)");
#define CUDAEMU_JUMP cudaemu_switch_fcontext
#else
#define CUDAEMU_JUMP fc::jump_fcontext
#endif

namespace cudaemu {
namespace {

constexpr int kMaxThreads = 1024;

struct Stack {
    char *base; // lowest usable byte (a guard page lies below)
    size_t size;
    char *top;
};

enum : uint8_t { kUnstarted, kRunning, kBarrier, kShuffle, kExited };

struct Thread {
    fc::fcontext_t ctx;
    Stack *stack;
    uint3 idx;
    uint8_t state;
    const char *file; // the barrier it waits at
    int line;
};

struct Warp {
    uint64_t in[32], out[32]; // the pending shuffle's values, offered and received
    int8_t src[32];
    int8_t order[32]; // lanes in the order they arrived
    int narrived;
    unsigned gone;    // lanes that exited, or that the block does not have
    unsigned arrived; // lanes waiting at the pending shuffle
    unsigned mask;
    const char *file;
    int line;
    // Paired (full-mask xor) shuffles: lanes waiting for their partner, and at which of their
    // shuffles (lanes count them), the furthest any lane has gone, and where.
    unsigned paired;
    uint32_t seq[32], wait_seq[32];
    const char *wait_file[32];
    int wait_line[32];
    uint32_t max_seq;
    const char *max_file;
    int max_line;
    uint32_t gone_min_seq; // the fewest paired shuffles a gone lane made (0: a missing lane)
};

struct Sched {
    // the launch
    const Grid *grid;
    unsigned nthreads, nwarps;
    uint64_t nblocks, next_block;
    std::vector<uint32_t> order; // random schedule: the order of the blocks
    bool random;
    uint64_t rng;
    bool poison_shared; // the kernel writes shared memory: refill it before each block
    // the block
    Thread th[kMaxThreads];
    Warp warps[kMaxThreads / 32];
    unsigned next_unstarted, exited, at_barrier;
    int first_exited;
    const char *bar_file;
    int bar_line;
    int ready[2 * kMaxThreads]; // a stack of released threads: the top runs next
    int bar_wait[kMaxThreads];  // the threads at the barrier, in the order they came
    int nready;
    int start_next; // a thread a fresh fiber must start first, or -1
    // Runners parked in run_free (a free stack that resumed a thread): reused before a new one
    // is made, from launch to launch.
    struct Parked {
        fc::fcontext_t ctx;
        Stack *stack;
    } parked[2 * kMaxThreads];
    int nparked;
    // control
    Stack *cur_stack;
    fc::fcontext_t host;
    fc::fcontext_t *save_to; // where the next landing stores the context it came from
    Stack *release;          // a stack the next landing gives back
    bool faulted;
    cudaError_t fault_code;
    std::string fault_msg;
#ifdef CUDAEMU_ASAN
    const void *host_bottom;
    size_t host_size;
    bool from_host;
#endif
};

Sched S;
std::vector<Stack *> &g_free_stacks = *new std::vector<Stack *>; // never destroyed: reachable
unsigned g_stack_count;

// ---- stacks ------------------------------------------------------------------------------------

Stack *stack_get() {
    Stack *s;
    if (!g_free_stacks.empty()) {
        s = g_free_stacks.back();
        g_free_stacks.pop_back();
    } else {
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        size_t size = (config().stack_bytes + page - 1) / page * page;
        char *m = (char *)mmap(nullptr, size + page, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) {
            std::fprintf(stderr, "cudaemu: no memory for another thread stack (%zu bytes)\n", size);
            std::abort();
        }
        mprotect(m, page, PROT_NONE); // an overflow faults rather than corrupting a neighbour
        s = new Stack;
        s->base = m + page;
        s->size = size;
        // Stack tops a multiple of the stack size apart would share cache sets: stagger them.
        s->top = s->base + size - 256 * (g_stack_count++ % 32);
    }
#ifdef CUDAEMU_ASAN
    // A fiber abandoned mid-call (a fault, or a thread that ended on another's frames) leaves
    // its frames' poison behind.
    ASAN_UNPOISON_MEMORY_REGION(s->base, s->size);
#endif
    return s;
}

void stack_put(Stack *s) {
    g_free_stacks.push_back(s);
}

// ---- switching ---------------------------------------------------------------------------------

void land(fc::transfer_t t) {
    if (S.save_to) {
        *S.save_to = t.fctx;
        S.save_to = nullptr;
    }
    if (S.release) {
        stack_put(S.release);
        S.release = nullptr;
    }
}

// Jumps to ctx running on stack `to` (NULL: the host). dying: this fiber never runs again.
fc::transfer_t jump(fc::fcontext_t ctx, Stack *to, bool dying) {
#ifdef CUDAEMU_ASAN
    void *fake = nullptr;
    if (to)
        __sanitizer_start_switch_fiber(dying ? nullptr : &fake, to->base, to->size);
    else
        __sanitizer_start_switch_fiber(dying ? nullptr : &fake, S.host_bottom, S.host_size);
    fc::transfer_t t = CUDAEMU_JUMP(ctx, nullptr);
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
    return t;
#else
    (void)to, (void)dying;
    return CUDAEMU_JUMP(ctx, nullptr);
#endif
}

void fiber_main(fc::transfer_t t);

void set_fault(cudaError_t code, const std::string &msg) {
    if (S.faulted) return;
    S.faulted = true;
    S.fault_code = code;
    S.fault_msg = msg;
}

std::string block_name() {
    return format("block (%u,%u,%u)", blockIdx.x, blockIdx.y, blockIdx.z);
}

std::string thread_name(int k) {
    const uint3 &i = S.th[k].idx;
    return format("thread (%u,%u,%u)", i.x, i.y, i.z);
}

uint64_t next_random() { // splitmix64
    uint64_t z = (S.rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

int pop_ready() {
    if (S.nready == 0) return -1;
    if (!S.random) return S.ready[--S.nready];
    int i = (int)(next_random() % (uint64_t)S.nready);
    int k = S.ready[i];
    S.ready[i] = S.ready[--S.nready];
    return k;
}

uint3 index_of(unsigned k) {
    const dim3 &b = S.grid->config.block;
    if (b.y == 1 && b.z == 1) return uint3{k, 0, 0};
    return uint3{k % b.x, (k / b.x) % b.y, k / (b.x * b.y)};
}

size_t shared_bytes() {
    uintptr_t a = (uintptr_t)__start_cudaemu_shared, b = (uintptr_t)__stop_cudaemu_shared;
    return a && b > a ? (size_t)(b - a) : 0;
}

void poison_shared() {
    if (size_t n = shared_bytes()) std::memset(__start_cudaemu_shared, kPoison, n);
}

bool shared_untouched() {
    size_t n = shared_bytes();
    for (size_t i = 0; i < n; ++i)
        if ((unsigned char)__start_cudaemu_shared[i] != kPoison) return false;
    return true;
}

void setup_block(uint64_t linear) {
    const dim3 &g = S.grid->config.grid;
    uint64_t b = S.random ? S.order[linear] : linear;
    blockIdx = uint3{(unsigned)(b % g.x), (unsigned)((b / g.x) % g.y),
                     (unsigned)(b / ((uint64_t)g.x * g.y))};
    S.next_unstarted = 0;
    S.exited = 0;
    S.at_barrier = 0;
    S.first_exited = -1;
    S.nready = 0;
    for (unsigned w = 0; w < S.nwarps; ++w) {
        unsigned lanes = S.nthreads - w * 32 < 32 ? S.nthreads - w * 32 : 32;
        S.warps[w].gone = lanes == 32 ? 0u : ~((1u << lanes) - 1u);
        Warp &wp = S.warps[w];
        wp.arrived = 0;
        wp.narrived = 0;
        wp.paired = 0;
        wp.max_seq = 0;
        wp.gone_min_seq = lanes == 32 ? UINT32_MAX : 0;
        std::memset(wp.seq, 0, sizeof wp.seq);
    }
    if (S.random) {
        for (unsigned k = 0; k < S.nthreads; ++k) {
            S.th[k].state = kUnstarted;
            S.ready[S.nready++] = (int)k;
        }
        S.next_unstarted = S.nthreads;
    }
    if (S.poison_shared) poison_shared();
}

// A thread's end: the checks that an exit can fail.
void thread_exited(int k) {
    S.th[k].state = kExited;
    S.exited++;
    if (S.first_exited < 0) S.first_exited = k;
    Warp &w = S.warps[k / 32];
    unsigned bit = 1u << (k % 32);
    w.gone |= bit;
    if (w.seq[k % 32] < w.gone_min_seq) w.gone_min_seq = w.seq[k % 32];
    if (S.at_barrier > 0)
        set_fault(cudaErrorLaunchFailure,
                  format("__syncthreads() at %s:%d was reached by only part of %s: %u of %u "
                         "threads wait there, and %s exited without reaching it",
                         S.bar_file, S.bar_line, block_name().c_str(), S.at_barrier, S.nthreads,
                         thread_name(k).c_str()));
    else if (w.arrived && (w.mask & bit))
        set_fault(cudaErrorLaunchFailure,
                  format("the shuffle at %s:%d (mask 0x%08x) in %s names lane %d, which exited "
                         "before reaching it",
                         w.file, w.line, w.mask, block_name().c_str(), k % 32));
    else if (w.max_seq > w.seq[k % 32])
        set_fault(cudaErrorLaunchFailure,
                  format("the full-mask shuffle at %s:%d in %s names lane %d, which exited "
                         "before reaching it",
                         w.max_file, w.max_line, block_name().c_str(), k % 32));
}

void start_thread(int k) {
    Thread &t = S.th[k];
    t.state = kRunning;
    t.idx = index_of((unsigned)k);
    current_thread = k;
    threadIdx = t.idx;
    S.grid->closure->run_thread();
    thread_exited(k);
}

std::string describe_deadlock() {
    std::string waits;
    int shown = 0;
    const char *last_file = nullptr;
    int last_line = -1;
    for (unsigned k = 0; k < S.nthreads && shown < 4; ++k) {
        const Thread &t = S.th[k];
        if (t.state != kBarrier && t.state != kShuffle) continue;
        const Warp &w = S.warps[k / 32];
        bool paired = (w.paired >> (k % 32)) & 1u;
        const char *file = t.state == kBarrier ? t.file : paired ? w.wait_file[k % 32] : w.file;
        int line = t.state == kBarrier ? t.line : paired ? w.wait_line[k % 32] : w.line;
        if (file == last_file && line == last_line) continue;
        last_file = file;
        last_line = line;
        waits += format("%s%s waits at %s at %s:%d", shown ? "; " : "", thread_name((int)k).c_str(),
                        t.state == kBarrier ? "__syncthreads()" : "a shuffle", file, line);
        shown++;
    }
    return format("deadlock in %s: no thread can go on (%s)", block_name().c_str(), waits.c_str());
}

// What a free stack does next: start threads here, resume one, or end the grid. Never returns.
[[noreturn]] void run_free(Stack *mine) {
    for (;;) {
        if (S.faulted) break;
        int k = -1;
        bool fresh = true;
        if (S.start_next >= 0) {
            k = S.start_next;
            S.start_next = -1;
        } else if ((k = pop_ready()) >= 0) {
            fresh = S.th[k].state == kUnstarted; // the random schedule draws unstarted ones too
        } else if (S.next_unstarted < S.nthreads) {
            k = (int)S.next_unstarted++;
        }
        if (k >= 0) {
            if (fresh) {
                start_thread(k);
                continue;
            }
            // A released thread: resume it, and park here until a thread needs a free stack.
            Thread &t = S.th[k];
            S.cur_stack = t.stack;
            if (S.nparked == (int)(sizeof S.parked / sizeof S.parked[0])) {
                S.release = mine; // (never with blocks of at most 1024 threads)
                jump(t.ctx, t.stack, true);
                __builtin_unreachable();
            }
            S.parked[S.nparked] = {nullptr, mine};
            S.save_to = &S.parked[S.nparked++].ctx;
            land(jump(t.ctx, t.stack, false));
            continue;
        }
        if (S.exited < S.nthreads) {
            set_fault(cudaErrorLaunchFailure, describe_deadlock());
            break;
        }
        if (S.next_block == 1 && !S.poison_shared && !shared_untouched()) S.poison_shared = true;
        if (S.next_block >= S.nblocks) break;
        setup_block(S.next_block++);
    }
    S.release = mine;
    S.cur_stack = nullptr;
    jump(S.host, nullptr, true);
    __builtin_unreachable();
}

void fiber_main(fc::transfer_t t) {
#ifdef CUDAEMU_ASAN
    const void *bottom = nullptr;
    size_t size = 0;
    __sanitizer_finish_switch_fiber(nullptr, &bottom, &size);
    if (S.from_host) {
        S.from_host = false;
        S.host_bottom = bottom;
        S.host_size = size;
    }
#endif
    land(t);
    run_free(S.cur_stack);
}

// The running thread k stops at a sync point (its state says where); the next thread runs.
// Returns when k is resumed.
void switch_next(int k) {
    Thread &me = S.th[k];
    me.stack = S.cur_stack;
    if (__builtin_expect(S.faulted, 0)) {
        S.cur_stack = nullptr;
        jump(S.host, nullptr, true); // this stack is freed with the block's waiting threads
        __builtin_unreachable();
    }
    int j = S.random ? pop_ready() : (S.nready ? S.ready[--S.nready] : -1);
    if (j == k) {
        me.state = kRunning;
        return;
    }
    S.save_to = &me.ctx;
    fc::transfer_t t;
    if (__builtin_expect(j >= 0 && S.th[j].state != kUnstarted, 1)) {
        Thread &next = S.th[j];
        S.cur_stack = next.stack;
        t = jump(next.ctx, next.stack, false);
    } else {
        S.start_next = j; // -1: the free fiber picks
        if (S.nparked > 0) {
            Sched::Parked p = S.parked[--S.nparked];
            S.cur_stack = p.stack;
            t = jump(p.ctx, p.stack, false);
        } else {
            Stack *s = stack_get();
            S.cur_stack = s;
            t = jump(fc::make_fcontext(s->top, (size_t)(s->top - s->base), fiber_main), s, false);
        }
    }
    land(t);
    current_thread = k;
    threadIdx = me.idx;
    me.state = kRunning;
}

} // namespace

// ---- the sync points ---------------------------------------------------------------------------

// Whether a lane of w waits at a paired shuffle for `lane`.
static bool waits_for(const Warp &w, int lane) {
    for (unsigned m = w.paired; m; m &= m - 1) {
        int l = __builtin_ctz(m);
        if ((l ^ lane) != l && w.src[l] == lane) return true;
    }
    return false;
}

void syncthreads(const char *file, int line) {
    int k = current_thread;
    Thread &me = S.th[k];
    me.state = kBarrier;
    me.file = file;
    me.line = line;
    Warp &w = S.warps[k / 32];
    if (S.exited > 0) {
        set_fault(cudaErrorLaunchFailure,
                  format("__syncthreads() at %s:%d was reached by only part of %s: %s exited "
                         "without reaching it",
                         file, line, block_name().c_str(), thread_name(S.first_exited).c_str()));
    } else if (S.at_barrier > 0 &&
               (S.bar_line != line || (S.bar_file != file && std::strcmp(S.bar_file, file) != 0))) {
        set_fault(cudaErrorLaunchFailure,
                  format("the threads of %s wait at two different barriers: __syncthreads() at "
                         "%s:%d and at %s:%d (%s)",
                         block_name().c_str(), S.bar_file, S.bar_line, file, line,
                         thread_name(k).c_str()));
    } else if (w.paired && waits_for(w, k % 32)) {
        set_fault(cudaErrorLaunchFailure,
                  format("%s reached __syncthreads() at %s:%d while its partner lane waits for it "
                         "at the shuffle at %s:%d",
                         thread_name(k).c_str(), file, line, w.max_file, w.max_line));
    } else if (w.arrived && (w.mask & (1u << (k % 32)))) {
        set_fault(cudaErrorLaunchFailure,
                  format("%s reached __syncthreads() at %s:%d while lanes of its warp wait for "
                         "it at the shuffle at %s:%d",
                         thread_name(k).c_str(), file, line, w.file, w.line));
    } else {
        if (S.at_barrier == 0) {
            S.bar_file = file;
            S.bar_line = line;
        }
        S.bar_wait[S.at_barrier++] = k;
        // Released last-come first: the thread that arrived last goes on without a switch, and
        // the stacks used most recently (still in cache) run next.
        if (S.at_barrier == S.nthreads) {
            std::memcpy(S.ready + S.nready, S.bar_wait, S.nthreads * sizeof(int));
            S.nready += (int)S.nthreads;
            S.at_barrier = 0;
        }
    }
    switch_next(k);
}

// Leaves the fiber of thread k for good after a fault (its frames are abandoned, so the message
// is built and stored before, in a statement of its own).
[[noreturn]] static void abandon(int k) {
    switch_next(k);
    __builtin_unreachable();
}

#define SHUFFLE_FAULT(k, ...)                                                                      \
    do {                                                                                           \
        set_fault(cudaErrorLaunchFailure, format(__VA_ARGS__));                                    \
        abandon(k);                                                                                \
    } while (0)

uint64_t shuffle(const char *file, int line, unsigned mask, uint64_t value, int src) {
    int k = current_thread, lane = k & 31;
    Warp &w = S.warps[k >> 5];
    unsigned bit = 1u << lane;
    S.th[k].state = kShuffle;
    w.in[lane] = value;
    w.src[lane] = (int8_t)(src < 0 ? lane : src);
    if (__builtin_expect(!(mask & bit), 0))
        SHUFFLE_FAULT(k,
                      "the shuffle at %s:%d in %s: lane %d calls it with mask 0x%08x, "
                      "which does not name it",
                      file, line, block_name().c_str(), lane, mask);
    if (__builtin_expect(mask & w.gone, 0))
        SHUFFLE_FAULT(k,
                      "the shuffle at %s:%d in %s (mask 0x%08x) names lanes that exited "
                      "or do not exist (0x%08x), %s",
                      file, line, block_name().c_str(), mask, mask & w.gone,
                      thread_name(k).c_str());
    if (__builtin_expect(w.paired != 0, 0))
        SHUFFLE_FAULT(k,
                      "the lanes of a warp of %s meet at two different shuffles: %s:%d "
                      "and %s:%d (mask 0x%08x)",
                      block_name().c_str(), w.max_file, w.max_line, file, line, mask);
    if (!w.arrived) {
        w.mask = mask;
        w.file = file;
        w.line = line;
    } else if (__builtin_expect(w.mask != mask || w.line != line ||
                                    (w.file != file && std::strcmp(w.file, file) != 0),
                                0)) {
        SHUFFLE_FAULT(k,
                      "the lanes of a warp of %s meet at two different shuffles: %s:%d "
                      "(mask 0x%08x) and %s:%d (mask 0x%08x)",
                      block_name().c_str(), w.file, w.line, w.mask, file, line, mask);
    }
    w.arrived |= bit;
    w.order[w.narrived++] = (int8_t)lane;
    if (w.arrived == mask) {
        int base = k - lane;
        if (mask == 0xffffffffu) {
            for (int l = 0; l < 32; ++l)
                w.out[l] = w.in[w.src[l]];
        } else {
            for (int l = 0; l < 32; ++l) {
                if (!(mask & (1u << l))) continue;
                if (!(mask & (1u << w.src[l])))
                    SHUFFLE_FAULT(k,
                                  "the shuffle at %s:%d in %s: lane %d reads lane %d, "
                                  "which is not in the mask 0x%08x",
                                  file, line, block_name().c_str(), l, w.src[l], mask);
                w.out[l] = w.in[w.src[l]];
            }
        }
        for (int i = 0; i < w.narrived; ++i) // last-come first, as at a barrier
            S.ready[S.nready++] = base + w.order[i];
        w.arrived = 0;
        w.narrived = 0;
    }
    switch_next(k);
    return w.out[lane];
}

// A full-mask xor shuffle: the lane meets its partner (lane ^ lane_mask) at their n-th paired
// shuffle. The first of the two to arrive waits; the second takes the first's value, leaves its
// own, releases the first and goes on without a switch. Lanes that exit before a paired shuffle
// another lane has reached are a fault (thread_exited), as is meeting at different sites.
uint64_t shuffle_xor(const char *file, int line, uint64_t value, int lane_mask) {
    int k = current_thread, lane = k & 31, partner = lane ^ lane_mask;
    Warp &w = S.warps[k >> 5];
    uint32_t seq = ++w.seq[lane];
    if (__builtin_expect(w.gone_min_seq < seq || w.arrived != 0, 0)) {
        // Lanes that exited after this shuffle are fine; one that left before it is not.
        unsigned early = 0;
        for (unsigned m = w.gone; m; m &= m - 1)
            if (w.seq[__builtin_ctz(m)] < seq) early |= m & -m;
        if (early || w.arrived) {
            S.th[k].state = kShuffle;
            w.src[lane] = (int8_t)partner;
        }
        if (early)
            SHUFFLE_FAULT(k,
                          "the full-mask shuffle at %s:%d in %s names lanes that exited "
                          "before reaching it or do not exist (0x%08x), %s",
                          file, line, block_name().c_str(), early, thread_name(k).c_str());
        if (w.arrived)
            SHUFFLE_FAULT(k,
                          "the lanes of a warp of %s meet at two different shuffles: "
                          "%s:%d (mask 0x%08x) and %s:%d",
                          block_name().c_str(), w.file, w.line, w.mask, file, line);
    }
    if (seq > w.max_seq) {
        w.max_seq = seq;
        w.max_file = file;
        w.max_line = line;
    }
    unsigned pbit = 1u << partner;
    if ((w.paired & pbit) && w.wait_seq[partner] == seq && w.src[partner] == lane) {
        if (__builtin_expect(
                w.wait_line[partner] != line ||
                    (w.wait_file[partner] != file && std::strcmp(w.wait_file[partner], file) != 0),
                0)) {
            S.th[k].state = kShuffle;
            w.src[lane] = (int8_t)partner;
            SHUFFLE_FAULT(k,
                          "lanes %d and %d of a warp of %s meet at two different "
                          "shuffles: %s:%d and %s:%d",
                          partner, lane, block_name().c_str(), w.wait_file[partner],
                          w.wait_line[partner], file, line);
        }
        w.paired &= ~pbit;
        w.out[partner] = value;
        S.ready[S.nready++] = k - lane + partner;
        return w.in[partner];
    }
    S.th[k].state = kShuffle;
    w.in[lane] = value;
    w.src[lane] = (int8_t)partner;
    w.wait_seq[lane] = seq;
    w.wait_file[lane] = file;
    w.wait_line[lane] = line;
    w.paired |= 1u << lane;
    switch_next(k);
    return w.out[lane];
}

void syncwarp(const char *file, int line, unsigned mask) {
    shuffle(file, line, mask, 0, -1);
}

cudaError_t run_grid(const Grid &grid, std::string *message) {
    const LaunchConfig &c = grid.config;
    S.grid = &grid;
    S.nthreads = c.block.x * c.block.y * c.block.z;
    S.nwarps = (S.nthreads + 31) / 32;
    S.nblocks = (uint64_t)c.grid.x * c.grid.y * c.grid.z;
    S.random = config().random;
    S.order.clear();
    if (S.random) {
        S.rng = config().seed;
        config().seed = next_random(); // the next launch draws another order
        S.order.resize(S.nblocks);
        for (uint64_t i = 0; i < S.nblocks; ++i)
            S.order[i] = (uint32_t)i;
        for (uint64_t i = S.nblocks; i > 1; --i)
            std::swap(S.order[i - 1], S.order[next_random() % i]);
    }
    gridDim = c.grid;
    blockDim = c.block;
    S.faulted = false;
    S.start_next = -1;
    S.poison_shared = false;
    poison_shared();
    setup_block(0);
    S.next_block = 1;

    Stack *s = stack_get();
    S.cur_stack = s;
    S.save_to = &S.host;
    S.release = nullptr;
#ifdef CUDAEMU_ASAN
    S.from_host = true;
#endif
    fc::transfer_t t =
        jump(fc::make_fcontext(s->top, (size_t)(s->top - s->base), fiber_main), s, false);
    land(t);
    if (!S.faulted) return cudaSuccess;
    // Give back the stacks of the threads left waiting.
    for (unsigned k = 0; k < S.nthreads; ++k) {
        uint8_t st = S.th[k].state;
        if ((st == kBarrier || st == kShuffle) && S.th[k].stack) stack_put(S.th[k].stack);
        S.th[k].stack = nullptr;
        S.th[k].state = kExited;
    }
    *message = format("kernel launched at %s:%d: %s", c.file, c.line, S.fault_msg.c_str());
    return S.fault_code;
}

} // namespace cudaemu
