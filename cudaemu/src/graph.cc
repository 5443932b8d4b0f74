// Stream capture and graphs: what a capturing stream records instead of running, CUDA's refusals
// during a capture, and the replay of an instantiated graph on a stream's queue.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <typeinfo>

#include "cudaemu.h"
#include "internal.h"

namespace cudaemu {

// ---- counts ----------------------------------------------------------------------------------

namespace {

struct Counters {
    std::atomic<uint64_t> host_syncs{0}, kernels{0}, library_calls{0}, copies{0}, graph_launches{0},
        graph_nodes_run{0};
};

Counters &counters() {
    static auto *c = new Counters; // never destroyed: counted from atexit handlers too
    return *c;
}

} // namespace

void count_host_sync() {
    counters().host_syncs++;
}
void count_graph_node_run() {
    counters().graph_nodes_run++;
}
void count_graph_launch() {
    counters().graph_launches++;
}

static void count_work(Work kind) {
    switch (kind) {
    case Work::kernel:
        counters().kernels++;
        break;
    case Work::library:
        counters().library_calls++;
        break;
    case Work::copy:
        counters().copies++;
        break;
    case Work::none:
        break;
    }
}

// ---- captures --------------------------------------------------------------------------------

static std::set<Capture *> &captures() {
    static auto *s = new std::set<Capture *>;
    return *s;
}

static std::string describe(const Capture *c) {
    return format("the capture begun on stream %p", (void *)c->origin);
}

void invalidate(Capture *c, const std::string &why) {
    if (c->invalid) return;
    c->invalid = true;
    c->why = why; // printed by the refusal now, and by cudaStreamEndCapture
}

cudaError_t refuse_in_capture(Stream *s, cudaError_t err, const char *fn) {
    Capture *c = s->capture;
    if (!c) return cudaSuccess;
    if (c->invalid) return record(cudaErrorStreamCaptureInvalidated);
    std::string why = format("%s on stream %p, which is capturing", fn, (void *)s);
    invalidate(c, why);
    return refuse(
        err, why + format(" (%s; %s is invalidated)", cudaGetErrorName(err), describe(c).c_str()));
}

cudaError_t refuse_unsafe(const char *fn) {
    std::thread::id me = std::this_thread::get_id();
    bool refused = false;
    for (Capture *c : captures()) {
        bool forbids = c->mode == cudaStreamCaptureModeGlobal ||
                       (c->mode == cudaStreamCaptureModeThreadLocal && c->thread == me);
        if (!forbids) continue;
        invalidate(c, format("%s, which CUDA calls unsafe during a capture", fn));
        refused = true;
    }
    if (!refused) return cudaSuccess;
    return refuse(cudaErrorStreamCaptureUnsupported,
                  format("%s refused while a stream captures in a mode that forbids it "
                         "(cudaErrorStreamCaptureUnsupported; the capture is invalidated)",
                         fn));
}

cudaError_t refuse_legacy(Device *dev, const char *fn) {
    for (Capture *c : captures()) {
        if (c->device != dev) continue;
        for (Stream *s : c->streams) {
            if (s->flags & cudaStreamNonBlocking) continue;
            std::string why =
                format("%s on the legacy stream while blocking stream %p captures", fn, (void *)s);
            invalidate(c, why);
            return refuse(cudaErrorStreamCaptureImplicit,
                          why + " (cudaErrorStreamCaptureImplicit)");
        }
    }
    return cudaSuccess;
}

cudaError_t refuse_device_sync(Device *dev, const char *fn) {
    bool refused = false;
    for (Capture *c : captures()) {
        if (c->device != dev) continue;
        invalidate(c, format("%s while a stream of the device captures", fn));
        refused = true;
    }
    if (!refused) return cudaSuccess;
    return refuse(cudaErrorStreamCaptureUnsupported,
                  format("%s refused while a stream of device %d captures "
                         "(cudaErrorStreamCaptureUnsupported)",
                         fn, dev->ordinal));
}

static void capture_node(Stream *s, std::shared_ptr<Op> op) {
    auto node = std::make_unique<GraphNode>();
    node->op = std::move(op);
    node->deps = s->tips;
    s->tips.assign(1, node.get());
    s->capture->graph->nodes.push_back(std::move(node));
}

cudaError_t submit_work(Stream *s, std::unique_ptr<Op> op, Work kind) {
    Device *dev = s->device;
    if (s == &dev->null_stream) {
        cudaError_t err = refuse_legacy(dev, op->what().c_str());
        if (err != cudaSuccess) return err;
    }
    if (s->capture) {
        if (s->capture->invalid) return record(cudaErrorStreamCaptureInvalidated);
        capture_node(s, std::shared_ptr<Op>(std::move(op)));
        return cudaSuccess;
    }
    count_work(kind);
    enqueue(s, std::move(op));
    return cudaSuccess;
}

// Takes every stream and event out of c and frees it; returns its graph.
static std::unique_ptr<Graph> end_capture(Capture *c) {
    for (Stream *s : c->streams) {
        s->capture = nullptr;
        s->tips.clear();
    }
    for (Event *e : c->device->events)
        if (e->capture == c) {
            e->capture = nullptr;
            e->tips.clear();
        }
    captures().erase(c);
    std::unique_ptr<Graph> g = std::move(c->graph);
    delete c;
    return g;
}

void leave_capture(Stream *s) {
    Capture *c = s->capture;
    if (!c) return;
    invalidate(c, format("stream %p was destroyed", (void *)s));
    if (c->origin == s) {
        end_capture(c);
        return;
    }
    c->streams.erase(s);
    s->capture = nullptr;
    s->tips.clear();
}

void drop_captures(Device *dev) {
    std::vector<Capture *> mine;
    for (Capture *c : captures())
        if (c->device == dev) mine.push_back(c);
    for (Capture *c : mine)
        end_capture(c);
}

// Every node the origin's next node would depend on, directly or not.
static std::set<const GraphNode *> joined(const Stream *origin) {
    std::set<const GraphNode *> seen;
    std::vector<const GraphNode *> todo(origin->tips.begin(), origin->tips.end());
    while (!todo.empty()) {
        const GraphNode *n = todo.back();
        todo.pop_back();
        if (!seen.insert(n).second) continue;
        todo.insert(todo.end(), n->deps.begin(), n->deps.end());
    }
    return seen;
}

// The stream forked into c whose work the origin has not waited for, or NULL.
static Stream *unjoined(const Capture *c) {
    std::set<const GraphNode *> done = joined(c->origin);
    for (Stream *s : c->streams)
        for (const GraphNode *n : s->tips)
            if (!done.count(n)) return s;
    return nullptr;
}

// Events: a record on a capturing stream marks a set of nodes; a wait on it forks a stream
// into the capture or joins it back.
cudaError_t capture_record(Event *e, Stream *s) {
    if (s->capture->invalid) return record(cudaErrorStreamCaptureInvalidated);
    e->capture = s->capture;
    e->tips = s->tips;
    e->stream = s;
    e->pending = false;
    return cudaSuccess;
}

cudaError_t capture_wait(Stream *s, Event *e) {
    Capture *c = e->capture;
    if (!c) { // a capturing stream waits for work outside its capture
        std::string why =
            format("cudaStreamWaitEvent: stream %p waits for event %p, recorded outside the "
                   "capture",
                   (void *)s, (void *)e);
        invalidate(s->capture, why);
        return refuse(cudaErrorStreamCaptureIsolation, why + " (cudaErrorStreamCaptureIsolation)");
    }
    if (c->invalid) return record(cudaErrorStreamCaptureInvalidated);
    if (s->capture && s->capture != c) {
        std::string why = format("cudaStreamWaitEvent: stream %p of one capture waits for event "
                                 "%p of another",
                                 (void *)s, (void *)e);
        invalidate(c, why);
        invalidate(s->capture, why);
        return refuse(cudaErrorStreamCaptureMerge, why + " (cudaErrorStreamCaptureMerge)");
    }
    if (!s->capture) { // a fork: s joins the capture after the event's nodes
        s->capture = c;
        s->tips = e->tips;
        c->streams.insert(s);
        return cudaSuccess;
    }
    for (GraphNode *n : e->tips)
        if (std::find(s->tips.begin(), s->tips.end(), n) == s->tips.end()) s->tips.push_back(n);
    return cudaSuccess;
}

// ---- graphs ----------------------------------------------------------------------------------

namespace {

// An instantiated graph: the nodes' work, shared with the graph it came from (work is never
// changed once recorded), and each node's dependencies as indices.
struct Exec {
    Device *device;
    std::vector<std::shared_ptr<Op>> ops;
    std::vector<std::vector<size_t>> deps;
};

// One node of a replay, queued on the launch stream.
struct ReplayOp final : Op {
    std::shared_ptr<Op> op;
    std::string what() const override {
        return op->what() + " (replayed by cudaGraphLaunch)";
    }
    cudaError_t run(std::string *message) override {
        count_graph_node_run();
        return op->run(message);
    }
};

std::set<Graph *> &all_graphs() {
    static auto *s = new std::set<Graph *>;
    return *s;
}

std::set<Exec *> &all_execs() {
    static auto *s = new std::set<Exec *>;
    return *s;
}

std::set<const GraphNode *> &all_nodes() {
    static auto *s = new std::set<const GraphNode *>;
    return *s;
}

Graph *find_graph(cudaGraph_t handle) {
    Graph *g = (Graph *)handle;
    return g && all_graphs().count(g) ? g : nullptr;
}

Exec *find_exec(cudaGraphExec_t handle) {
    Exec *x = (Exec *)handle;
    return x && all_execs().count(x) ? x : nullptr;
}

std::vector<std::vector<size_t>> dep_indices(const Graph &g) {
    std::map<const GraphNode *, size_t> index;
    for (size_t i = 0; i < g.nodes.size(); ++i)
        index[g.nodes[i].get()] = i;
    std::vector<std::vector<size_t>> deps(g.nodes.size());
    for (size_t i = 0; i < g.nodes.size(); ++i) {
        for (const GraphNode *d : g.nodes[i]->deps)
            deps[i].push_back(index.at(d));
        std::sort(deps[i].begin(), deps[i].end());
    }
    return deps;
}

// Why x cannot take g's nodes (cudaGraphExecUpdateSuccess when it can); *node: the node of g
// at fault, if one.
cudaGraphExecUpdateResult update_check(const Exec &x, const Graph &g, size_t *node) {
    *node = SIZE_MAX;
    if (g.nodes.size() != x.ops.size() || dep_indices(g) != x.deps)
        return cudaGraphExecUpdateErrorTopologyChanged;
    for (size_t i = 0; i < g.nodes.size(); ++i) {
        const Op &was = *x.ops[i], &is = *g.nodes[i]->op;
        *node = i;
        if (was.node_type() != is.node_type() || typeid(was) != typeid(is))
            return cudaGraphExecUpdateErrorNodeTypeChanged;
        if (was.function() != is.function()) return cudaGraphExecUpdateErrorFunctionChanged;
    }
    *node = SIZE_MAX;
    return cudaGraphExecUpdateSuccess;
}

cudaError_t enter_device(Device **out) {
    Device *dev = current_device();
    *out = dev;
    if (!dev) return record(cudaErrorInvalidDevice);
    if (dev->sticky != cudaSuccess) return record(dev->sticky);
    return cudaSuccess;
}

} // namespace

static void register_graph(Graph *g) {
    all_graphs().insert(g);
    for (auto &n : g->nodes)
        all_nodes().insert(n.get());
}

static void forget_graph(Graph *g) {
    for (auto &n : g->nodes)
        all_nodes().erase(n.get());
    all_graphs().erase(g);
    delete g;
}

} // namespace cudaemu

using namespace cudaemu;

extern "C" {

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, enum cudaStreamCaptureMode mode) {
    CUDAEMU_LOCK;
    Device *dev = nullptr;
    Stream *s = nullptr;
    cudaError_t err = enter_device(&dev);
    if (err != cudaSuccess) return err;
    if ((err = resolve(stream, &s)) != cudaSuccess) return record(err);
    if ((unsigned)mode > cudaStreamCaptureModeRelaxed) return record(cudaErrorInvalidValue);
    if (s == &dev->null_stream)
        return refuse(cudaErrorStreamCaptureUnsupported,
                      "cudaStreamBeginCapture on the legacy stream refused");
    if (s->capture) return record(cudaErrorIllegalState);
    Capture *c = new Capture;
    c->device = dev;
    c->origin = s;
    c->mode = mode;
    c->thread = std::this_thread::get_id();
    c->graph = std::make_unique<Graph>();
    c->graph->device = dev;
    c->streams.insert(s);
    captures().insert(c);
    s->capture = c;
    s->tips.clear();
    return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t *graph) {
    CUDAEMU_LOCK;
    Stream *s = nullptr;
    cudaError_t err = resolve(stream, &s);
    if (err != cudaSuccess) return record(err);
    if (!graph) return record(cudaErrorInvalidValue);
    *graph = nullptr;
    Capture *c = s->capture;
    if (!c) return record(cudaErrorIllegalState);
    if (c->origin != s) {
        invalidate(c, format("cudaStreamEndCapture on stream %p, not the origin", (void *)s));
        return record(cudaErrorStreamCaptureUnmatched);
    }
    if (c->mode != cudaStreamCaptureModeRelaxed && c->thread != std::this_thread::get_id())
        return record(cudaErrorStreamCaptureWrongThread);
    Stream *loose = c->invalid ? nullptr : unjoined(c);
    bool invalid = c->invalid;
    std::string why = c->why;
    std::unique_ptr<Graph> g = end_capture(c);
    if (invalid)
        return refuse(cudaErrorStreamCaptureInvalidated,
                      format("cudaStreamEndCapture: no graph, the capture was invalidated by %s",
                             why.c_str()));
    if (loose)
        return refuse(cudaErrorStreamCaptureUnjoined,
                      format("cudaStreamEndCapture: stream %p was forked into the capture and its "
                             "work never joined back to stream %p",
                             (void *)loose, (void *)s));
    register_graph(g.get());
    *graph = (cudaGraph_t)g.release();
    return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t stream, enum cudaStreamCaptureStatus *status) {
    CUDAEMU_LOCK;
    Stream *s = nullptr;
    cudaError_t err = resolve(stream, &s);
    if (err != cudaSuccess) return record(err);
    if (!status) return record(cudaErrorInvalidValue);
    if (s == &s->device->null_stream) // CUDA: an error, and the blocking capture goes on
        for (Capture *c : captures())
            if (c->device == s->device)
                for (Stream *o : c->streams)
                    if (!(o->flags & cudaStreamNonBlocking))
                        return record(cudaErrorStreamCaptureImplicit);
    *status = !s->capture           ? cudaStreamCaptureStatusNone
              : s->capture->invalid ? cudaStreamCaptureStatusInvalidated
                                    : cudaStreamCaptureStatusActive;
    return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph,
                                 unsigned long long flags) {
    CUDAEMU_LOCK;
    if (!exec) return record(cudaErrorInvalidValue);
    *exec = nullptr;
    Graph *g = find_graph(graph);
    if (!g) return record(cudaErrorInvalidValue);
    const unsigned long long known =
        cudaGraphInstantiateFlagAutoFreeOnLaunch | cudaGraphInstantiateFlagUpload |
        cudaGraphInstantiateFlagDeviceLaunch | cudaGraphInstantiateFlagUseNodePriority;
    if (flags & ~known) return record(cudaErrorInvalidValue);
    Exec *x = new Exec;
    x->device = g->device;
    for (auto &n : g->nodes)
        x->ops.push_back(n->op);
    x->deps = dep_indices(*g);
    all_execs().insert(x);
    *exec = (cudaGraphExec_t)x;
    return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
    CUDAEMU_LOCK;
    Device *dev = nullptr;
    Stream *s = nullptr;
    cudaError_t err = enter_device(&dev);
    if (err != cudaSuccess) return err;
    Exec *x = find_exec(exec);
    if (!x) return record(cudaErrorInvalidValue);
    if ((err = resolve(stream, &s)) != cudaSuccess) return record(err);
    if (s->device != x->device) return record(cudaErrorInvalidResourceHandle);
    if (s == &dev->null_stream && (err = refuse_legacy(dev, "cudaGraphLaunch")) != cudaSuccess)
        return err;
    if (s->capture) { // the replay's work becomes nodes of that capture, in order
        if (s->capture->invalid) return record(cudaErrorStreamCaptureInvalidated);
        for (auto &op : x->ops)
            capture_node(s, op);
        return cudaSuccess;
    }
    count_graph_launch();
    for (auto &op : x->ops) {
        op->replay_queued();
        auto r = std::make_unique<ReplayOp>();
        r->op = op;
        enqueue(s, std::move(r));
    }
    return dev->sticky != cudaSuccess ? record(dev->sticky) : cudaSuccess;
}

cudaError_t cudaGraphExecUpdate(cudaGraphExec_t exec, cudaGraph_t graph,
                                cudaGraphExecUpdateResultInfo *result_info) {
    CUDAEMU_LOCK;
    Exec *x = find_exec(exec);
    Graph *g = find_graph(graph);
    if (!x || !g) return record(cudaErrorInvalidValue);
    size_t at = SIZE_MAX;
    cudaGraphExecUpdateResult result =
        g->device != x->device ? cudaGraphExecUpdateErrorNotSupported : update_check(*x, *g, &at);
    if (result_info) {
        result_info->result = result;
        result_info->errorNode = at == SIZE_MAX ? nullptr : (cudaGraphNode_t)g->nodes[at].get();
        result_info->errorFromNode = nullptr;
    }
    if (result != cudaGraphExecUpdateSuccess) return record(cudaErrorGraphExecUpdateFailure);
    for (size_t i = 0; i < g->nodes.size(); ++i)
        x->ops[i] = g->nodes[i]->op;
    return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
    CUDAEMU_LOCK;
    Exec *x = find_exec(exec);
    if (!x) return record(cudaErrorInvalidValue);
    all_execs().erase(x); // replays still queued hold their nodes' work
    delete x;
    return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
    CUDAEMU_LOCK;
    Graph *g = find_graph(graph);
    if (!g) return record(cudaErrorInvalidValue);
    forget_graph(g);
    return cudaSuccess;
}

cudaError_t cudaGraphGetNodes(cudaGraph_t graph, cudaGraphNode_t *nodes, size_t *count) {
    CUDAEMU_LOCK;
    Graph *g = find_graph(graph);
    if (!g || !count) return record(cudaErrorInvalidValue);
    size_t n = g->nodes.size();
    if (!nodes) {
        *count = n;
        return cudaSuccess;
    }
    size_t i = 0;
    for (; i < *count && i < n; ++i)
        nodes[i] = (cudaGraphNode_t)g->nodes[i].get();
    for (size_t j = i; j < *count; ++j)
        nodes[j] = nullptr;
    *count = i;
    return cudaSuccess;
}

cudaError_t cudaGraphNodeGetType(cudaGraphNode_t node, enum cudaGraphNodeType *type) {
    CUDAEMU_LOCK;
    const GraphNode *n = (const GraphNode *)node;
    if (!n || !all_nodes().count(n) || !type) return record(cudaErrorInvalidValue);
    *type = n->op->node_type();
    return cudaSuccess;
}

void cudaemu_get_counts(cudaemu_counts *out) {
    if (!out) return;
    Counters &c = counters();
    out->host_syncs = c.host_syncs.load();
    out->kernels = c.kernels.load();
    out->library_calls = c.library_calls.load();
    out->copies = c.copies.load();
    out->graph_launches = c.graph_launches.load();
    out->graph_nodes_run = c.graph_nodes_run.load();
}

void cudaemu_reset_counts(void) {
    Counters &c = counters();
    c.host_syncs = 0;
    c.kernels = 0;
    c.library_calls = 0;
    c.copies = 0;
    c.graph_launches = 0;
    c.graph_nodes_run = 0;
}

} // extern "C"
