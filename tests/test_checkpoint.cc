// Checkpoints and the safetensors reader/writer: bitwise round trips, resumed training equal to
// uninterrupted training, atomic saves under injected failures, clean errors for corrupt files,
// a byte-flipping fuzz loop, and loading our files in PyTorch.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <clocale>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/optim_internal.h"
#include "io/atomic.h"
#include "io/safetensors.h"
#include "support.h"
#include "support_files.h"
#include "support_model.h"

namespace {

namespace fs = std::filesystem;

#define CK_OK(call) ASSERT_EQ(BP_OK, (call)) << #call << ": " << bp_last_error()

using bpt::ModelPtr;
using bpt::OptimPtr;
using bpt::params_of;
using bpt::state_of;
using bpt::TensorPtr;

// A fresh directory, removed with everything in it at the end of the scope.
struct TempDir {
    fs::path path;
    TempDir() {
        std::string tmpl = (fs::temp_directory_path() / "bp_ckpt_XXXXXX").string();
        std::vector<char> buf(tmpl.begin(), tmpl.end());
        buf.push_back('\0');
        if (mkdtemp(buf.data())) path = buf.data();
    }
    ~TempDir() {
        std::error_code ec;
        if (!path.empty()) {
            fs::permissions(path, fs::perms::owner_all, fs::perm_options::add, ec);
            fs::remove_all(path, ec);
        }
    }
    std::string file(const std::string &name) const {
        return (path / name).string();
    }
    std::vector<std::string> entries() const {
        std::vector<std::string> out;
        for (const auto &e : fs::directory_iterator(path))
            out.push_back(e.path().filename().string());
        std::sort(out.begin(), out.end());
        return out;
    }
};

std::string read_bytes(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

void write_bytes(const std::string &path, const std::string &bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), (std::streamsize)bytes.size());
}

bool contains(const std::string &s, const std::string &part) {
    return s.find(part) != std::string::npos;
}

// ---- models and training -------------------------------------------------------------------

struct Net {
    std::vector<int> widths;
    std::vector<bp_activation> acts;
    std::vector<float> dropout;
    float leaky_slope = 0.01f;
    uint64_t seed = 1234;
    int max_batch = 32;
};

ModelPtr make_model(bp_device *dev, const Net &n) {
    bp_mlp_config c = bp_mlp_config_default((int)n.widths.size() - 1, n.widths.data());
    c.activations = n.acts.empty() ? nullptr : n.acts.data();
    c.dropout = n.dropout.empty() ? nullptr : n.dropout.data();
    c.leaky_slope = n.leaky_slope;
    c.seed = n.seed;
    c.max_batch = n.max_batch;
    return ModelPtr(bp_model_create(dev, &c, nullptr));
}

// A classification batch: x [rows, in] uniform in [-1, 1), labels cycling through the classes.
struct Batch {
    TensorPtr x, y;
};

Batch make_batch(bp_device *dev, int rows, int in, int classes, uint32_t seed) {
    Batch b{TensorPtr(bp_tensor_create(dev, BP_F32, rows, in, nullptr)),
            TensorPtr(bp_tensor_create(dev, BP_I32, rows, 1, nullptr))};
    auto xs = bpt::uniform((size_t)rows * in, -1.0f, 1.0f, seed);
    std::vector<int32_t> ys(rows);
    for (int i = 0; i < rows; ++i)
        ys[i] = (i * 7 + (int)seed) % classes;
    if (b.x && b.y) {
        bp_tensor_upload(b.x.get(), xs.data(), xs.size());
        bp_tensor_upload(b.y.get(), ys.data(), ys.size());
    }
    return b;
}

bp_status train(bp_model *m, bp_optimizer *o, const Batch &b, int steps) {
    bp_loss_config ce = {BP_LOSS_CROSS_ENTROPY, 0.0f};
    for (int s = 0; s < steps; ++s) {
        bp_status st = bp_train_step(m, o, &ce, b.x.get(), b.y.get(), nullptr);
        if (st != BP_OK) return st;
    }
    return BP_OK;
}

bool bitwise_equal(const std::vector<float> &a, const std::vector<float> &b) {
    return a.size() == b.size() &&
           (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

// The bits of a float, so configs compare exactly.
uint32_t bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}

void expect_same_config(const bp_optim_config &a, const bp_optim_config &b) {
    EXPECT_EQ(a.kind, b.kind);
    const double fa[] = {a.lr,
                         a.momentum,
                         a.dampening,
                         a.weight_decay,
                         a.beta1,
                         a.beta2,
                         a.eps,
                         a.clip_norm,
                         a.clip_value,
                         a.schedule.gamma,
                         a.schedule.min_lr,
                         a.schedule.threshold,
                         a.schedule.eps};
    const double fb[] = {b.lr,
                         b.momentum,
                         b.dampening,
                         b.weight_decay,
                         b.beta1,
                         b.beta2,
                         b.eps,
                         b.clip_norm,
                         b.clip_value,
                         b.schedule.gamma,
                         b.schedule.min_lr,
                         b.schedule.threshold,
                         b.schedule.eps};
    for (size_t k = 0; k < sizeof fa / sizeof fa[0]; ++k) {
        uint64_t ua, ub;
        std::memcpy(&ua, &fa[k], sizeof ua);
        std::memcpy(&ub, &fb[k], sizeof ub);
        EXPECT_EQ(ua, ub) << "double field " << k << ": " << fa[k] << " vs " << fb[k];
    }
    EXPECT_EQ(a.nesterov, b.nesterov);
    EXPECT_EQ(a.accum_steps, b.accum_steps);
    EXPECT_EQ(a.schedule.kind, b.schedule.kind);
    EXPECT_EQ(a.schedule.warmup_steps, b.schedule.warmup_steps);
    EXPECT_EQ(a.schedule.step_size, b.schedule.step_size);
    EXPECT_EQ(a.schedule.total_steps, b.schedule.total_steps);
    if (a.schedule.kind != BP_SCHEDULE_PLATEAU) return;
    EXPECT_EQ(a.schedule.mode, b.schedule.mode);
    EXPECT_EQ(a.schedule.threshold_mode, b.schedule.threshold_mode);
    EXPECT_EQ(a.schedule.patience, b.schedule.patience);
    EXPECT_EQ(a.schedule.cooldown, b.schedule.cooldown);
}

// Optimizer configurations whose every field differs from the defaults, with values that need
// all 17 significant digits of a double to come back exactly.
std::vector<bp_optim_config> optim_configs() {
    std::vector<bp_optim_config> out;
    bp_optim_config adam = bp_optim_config_default(BP_OPTIM_ADAM);
    adam.lr = 0.0012345679012345678;
    adam.beta1 = 0.87654323456789012;
    adam.beta2 = 0.99876540987654321;
    adam.eps = 1.2345678901234567e-7;
    adam.weight_decay = 0.00032100000000000001;
    adam.clip_norm = 0.76543210987654321;
    adam.accum_steps = 2;
    adam.schedule.kind = BP_SCHEDULE_COSINE;
    adam.schedule.warmup_steps = 3;
    adam.schedule.total_steps = 40;
    adam.schedule.min_lr = 1.0000000000000001e-5;
    out.push_back(adam);
    bp_optim_config sgd = bp_optim_config_default(BP_OPTIM_SGD);
    sgd.lr = 1.0 / 30.0;
    sgd.momentum = 0.9;
    sgd.nesterov = 1;
    sgd.weight_decay = 1e-4;
    sgd.clip_value = 0.25;
    sgd.schedule.kind = BP_SCHEDULE_STEP;
    sgd.schedule.step_size = 4;
    sgd.schedule.gamma = 0.7;
    out.push_back(sgd);
    bp_optim_config damp = bp_optim_config_default(BP_OPTIM_SGD);
    damp.momentum = 0.5;
    damp.dampening = 0.3;
    out.push_back(damp);
    out.push_back(bp_optim_config_default(BP_OPTIM_SGD)); // plain: no state tensors
    bp_optim_config adamw = bp_optim_config_default(BP_OPTIM_ADAMW);
    adamw.schedule.warmup_steps = 2;
    out.push_back(adamw);
    bp_optim_config plateau = bp_optim_config_default(BP_OPTIM_SGD);
    plateau.lr = 0.07654321098765432;
    plateau.schedule.kind = BP_SCHEDULE_PLATEAU;
    plateau.schedule.gamma = 0.3333333333333333;
    plateau.schedule.min_lr = 1.2345678901234567e-6;
    plateau.schedule.mode = BP_PLATEAU_MAX;
    plateau.schedule.threshold = 0.012345678901234567;
    plateau.schedule.threshold_mode = BP_THRESHOLD_ABS;
    plateau.schedule.patience = 3;
    plateau.schedule.cooldown = 2;
    plateau.schedule.eps = 3.2109876543210987e-9;
    out.push_back(plateau);
    return out;
}

Net small_net() {
    Net n;
    n.widths = {6, 10, 8, 4};
    n.acts = {BP_ACT_LEAKY_RELU, BP_ACT_TANH, BP_ACT_IDENTITY};
    n.dropout = {0.25f, 0.1f, 0.0f};
    n.leaky_slope = 0.123456791f;
    n.seed = 0xFEEDFACECAFEBEEFull; // above 2^63: the seed must round-trip as unsigned
    n.max_batch = 24;
    return n;
}

// ---- round trips and resuming, over the backends ---------------------------------------------

class Checkpoint : public ::testing::TestWithParam<std::string> {};

TEST_P(Checkpoint, RoundTripOfModelOptimizerAndMetadataIsBitwise) {
    BPT_OPEN_OR_SKIP(dev, GetParam());
    bpt::DeviceGuard guard{dev};
    TempDir dir;
    ASSERT_FALSE(dir.path.empty());
    Net net = small_net();
    Batch b = make_batch(dev, 24, 6, 4, 3);
    ASSERT_TRUE(b.x && b.y);
    for (const bp_optim_config &oc : optim_configs()) {
        SCOPED_TRACE("optimizer kind " + std::to_string(oc.kind) + " momentum " +
                     std::to_string(oc.momentum));
        ModelPtr m = make_model(dev, net);
        ASSERT_TRUE(m) << bp_last_error();
        OptimPtr o(bp_optimizer_create(m.get(), &oc, nullptr));
        ASSERT_TRUE(o) << bp_last_error();
        CK_OK(train(m.get(), o.get(), b, 5)); // non-zero state, counter and step
        std::string path = dir.file("rt.ckpt");
        bp_meta_entry meta[] = {{"epoch", "3"}, {"note", "quote \" backslash \\ tab \t é"}};
        std::vector<float> scale = bpt::uniform(6, 0.5f, 2.0f, 9);
        bp_meta_array arrays[] = {{"scale", scale.data(), scale.size()}, {"empty", nullptr, 0}};
        CK_OK(bp_checkpoint_save_arrays(path.c_str(), m.get(), o.get(), meta, 2, arrays, 2));

        bp_status st = BP_ERR_IO;
        ModelPtr m2(bp_checkpoint_load_model(path.c_str(), dev, 0, &st));
        ASSERT_TRUE(m2) << bp_last_error();
        EXPECT_EQ(BP_OK, st);
        OptimPtr o2(bp_checkpoint_load_optimizer(path.c_str(), m2.get(), &st));
        ASSERT_TRUE(o2) << bp_last_error();

        EXPECT_TRUE(bitwise_equal(params_of(m.get()), params_of(m2.get())));
        int64_t s1 = -1, s2 = -2;
        EXPECT_TRUE(bitwise_equal(state_of(o.get(), &s1), state_of(o2.get(), &s2)));
        EXPECT_EQ(5, s2);
        EXPECT_EQ(s1, s2);
        expect_same_config(oc, o2->config);
        EXPECT_EQ(bits(bp_optimizer_lr(o.get())), bits(bp_optimizer_lr(o2.get())));
        EXPECT_EQ(bp_model_rng_counter(m.get()), bp_model_rng_counter(m2.get()));
        EXPECT_GT(bp_model_rng_counter(m2.get()), 0u);
        EXPECT_EQ(net.seed, bp_model_seed(m2.get()));
        EXPECT_EQ(bits(net.leaky_slope), bits(bp_model_leaky_slope(m2.get())));
        EXPECT_EQ(net.max_batch, bp_model_max_batch(m2.get()));
        ASSERT_EQ(3, bp_model_n_layers(m2.get()));
        for (int l = 0; l < 3; ++l) {
            EXPECT_EQ(net.acts[l], bp_model_activation(m2.get(), l));
            EXPECT_EQ(bits(net.dropout[l]), bits(bp_model_dropout(m2.get(), l)));
        }
        for (int i = 0; i <= 3; ++i)
            EXPECT_EQ(net.widths[i], bp_model_width(m2.get(), i));

        char *v = bp_checkpoint_get_meta(path.c_str(), "note", &st);
        ASSERT_TRUE(v) << bp_last_error();
        EXPECT_STREQ(meta[1].value, v);
        std::free(v);
        v = bp_checkpoint_get_meta(path.c_str(), "missing", &st);
        EXPECT_EQ(nullptr, v);
        EXPECT_EQ(BP_OK, st);
        size_t count = 99;
        float *arr = bp_checkpoint_get_array(path.c_str(), "scale", &count, &st);
        ASSERT_TRUE(arr) << bp_last_error();
        EXPECT_TRUE(bitwise_equal(scale, std::vector<float>(arr, arr + count)));
        std::free(arr);
        arr = bp_checkpoint_get_array(path.c_str(), "empty", &count, &st);
        EXPECT_EQ(0u, count);
        EXPECT_EQ(BP_OK, st);
        std::free(arr);
        arr = bp_checkpoint_get_array(path.c_str(), "nope", &count, &st);
        EXPECT_EQ(nullptr, arr);
        EXPECT_EQ(BP_OK, st);
    }
}

TEST_P(Checkpoint, LoadedModelUsesTheGivenMaxBatch) {
    BPT_OPEN_OR_SKIP(dev, GetParam());
    bpt::DeviceGuard guard{dev};
    TempDir dir;
    ModelPtr m = make_model(dev, small_net());
    ASSERT_TRUE(m) << bp_last_error();
    std::string path = dir.file("mb.ckpt");
    CK_OK(bp_checkpoint_save(path.c_str(), m.get(), nullptr, nullptr, 0));
    ModelPtr m2(bp_checkpoint_load_model(path.c_str(), dev, 77, nullptr));
    ASSERT_TRUE(m2) << bp_last_error();
    EXPECT_EQ(77, bp_model_max_batch(m2.get()));
}

// k steps, save, load model and optimizer into fresh handles, m more steps: bitwise the same
// weights as k + m steps in one go. Dropout, a warm-up + cosine schedule and clipping are on,
// so the dropout counter, the step count and the moments all have to come back.
TEST_P(Checkpoint, ResumedTrainingEqualsUninterruptedTraining) {
    BPT_OPEN_OR_SKIP(dev, GetParam());
    bpt::DeviceGuard guard{dev};
    TempDir dir;
    const int k = 7, more = 6;
    Net net = small_net();
    Batch b = make_batch(dev, 24, 6, 4, 11);
    ASSERT_TRUE(b.x && b.y);
    for (const bp_optim_config &oc : optim_configs()) {
        SCOPED_TRACE("optimizer kind " + std::to_string(oc.kind));
        ModelPtr ma = make_model(dev, net);
        ASSERT_TRUE(ma) << bp_last_error();
        OptimPtr oa(bp_optimizer_create(ma.get(), &oc, nullptr));
        ASSERT_TRUE(oa) << bp_last_error();
        CK_OK(train(ma.get(), oa.get(), b, k + more));

        std::string path = dir.file("resume.ckpt");
        {
            ModelPtr mb = make_model(dev, net);
            ASSERT_TRUE(mb) << bp_last_error();
            OptimPtr ob(bp_optimizer_create(mb.get(), &oc, nullptr));
            ASSERT_TRUE(ob) << bp_last_error();
            CK_OK(train(mb.get(), ob.get(), b, k));
            CK_OK(bp_checkpoint_save(path.c_str(), mb.get(), ob.get(), nullptr, 0));
        }
        ModelPtr mc(bp_checkpoint_load_model(path.c_str(), dev, 0, nullptr));
        ASSERT_TRUE(mc) << bp_last_error();
        OptimPtr oc2(bp_checkpoint_load_optimizer(path.c_str(), mc.get(), nullptr));
        ASSERT_TRUE(oc2) << bp_last_error();
        CK_OK(train(mc.get(), oc2.get(), b, more));
        EXPECT_TRUE(bitwise_equal(params_of(ma.get()), params_of(mc.get())));
        EXPECT_EQ(bp_optimizer_steps(oa.get()), bp_optimizer_steps(oc2.get()));

        // The control: the same resume with the dropout counter rewound draws other masks and
        // ends elsewhere, so the equality above depends on the saved counter.
        ModelPtr md(bp_checkpoint_load_model(path.c_str(), dev, 0, nullptr));
        ASSERT_TRUE(md) << bp_last_error();
        OptimPtr od(bp_checkpoint_load_optimizer(path.c_str(), md.get(), nullptr));
        ASSERT_TRUE(od) << bp_last_error();
        CK_OK(bp_model_set_rng_counter(md.get(), 0));
        CK_OK(train(md.get(), od.get(), b, more));
        EXPECT_FALSE(bitwise_equal(params_of(ma.get()), params_of(md.get())));
    }
}

// Names follow nn.Sequential: Linear, then the activation module unless identity, then Dropout
// when p > 0. Optimizer state mirrors the parameter names.
TEST_P(Checkpoint, TensorNamesFollowTheSequentialIndices) {
    BPT_OPEN_OR_SKIP(dev, GetParam());
    bpt::DeviceGuard guard{dev};
    TempDir dir;
    Net net;
    net.widths = {5, 7, 6, 4, 3};
    net.acts = {BP_ACT_RELU, BP_ACT_IDENTITY, BP_ACT_TANH, BP_ACT_IDENTITY};
    net.dropout = {0.1f, 0.2f, 0.0f, 0.0f};
    ModelPtr m = make_model(dev, net);
    ASSERT_TRUE(m) << bp_last_error();
    bp_optim_config adam = bp_optim_config_default(BP_OPTIM_ADAM);
    OptimPtr o(bp_optimizer_create(m.get(), &adam, nullptr));
    ASSERT_TRUE(o) << bp_last_error();
    std::string path = dir.file("names.ckpt");
    CK_OK(bp_checkpoint_save(path.c_str(), m.get(), o.get(), nullptr, 0));
    // Linear 0, ReLU 1, Dropout 2 | Linear 3, Dropout 4 | Linear 5, Tanh 6 | Linear 7.
    const int seq[] = {0, 3, 5, 7};
    bp_st_file *f = nullptr;
    CK_OK(bp_st_open(path.c_str(), &f));
    std::unique_ptr<bp_st_file, void (*)(bp_st_file *)> guard_f(f, bp_st_close);
    EXPECT_EQ(4u * 2u * 3u, f->n_tensors); // params, exp_avg, exp_avg_sq
    for (int l = 0; l < 4; ++l) {
        std::string w = std::to_string(seq[l]) + ".weight", bias = std::to_string(seq[l]) + ".bias";
        for (const std::string &pre : {std::string(), std::string("optimizer.")})
            for (const std::string &suf :
                 pre.empty() ? std::vector<std::string>{""}
                             : std::vector<std::string>{".exp_avg", ".exp_avg_sq"}) {
                const bp_st_tensor *tw = bp_st_find(f, (pre + w + suf).c_str());
                const bp_st_tensor *tb = bp_st_find(f, (pre + bias + suf).c_str());
                ASSERT_TRUE(tw && tb) << pre + w + suf;
                ASSERT_EQ(2, tw->ndim);
                EXPECT_EQ((uint64_t)net.widths[l + 1], tw->shape[0]);
                EXPECT_EQ((uint64_t)net.widths[l], tw->shape[1]);
                ASSERT_EQ(1, tb->ndim);
                EXPECT_EQ((uint64_t)net.widths[l + 1], tb->shape[0]);
            }
    }
    EXPECT_STREQ("5,7,6,4,3", bp_st_get_meta(f, "model.widths"));
    EXPECT_STREQ("relu,identity,tanh,identity", bp_st_get_meta(f, "model.activations"));
    EXPECT_STREQ("adam", bp_st_get_meta(f, "optimizer.kind"));
    EXPECT_STREQ("backprop-checkpoint", bp_st_get_meta(f, "format"));
    EXPECT_EQ(0u, f->data_start % 8) << "the header is padded to a multiple of 8";
}

// ---- atomic saves ----------------------------------------------------------------------------

// Injected failures: a disk that fills after `budget` bytes, a failing fsync or rename.
struct Inject {
    static inline long long budget = -1; // bytes the next writes may write; -1: no limit
    static inline int fsync_errno = 0, rename_errno = 0;

    static size_t write(const void *data, size_t size, size_t count, FILE *fp) {
        size_t want = size * count;
        if (budget < 0) return std::fwrite(data, size, count, fp);
        size_t ok = want < (size_t)budget ? want : (size_t)budget;
        size_t wrote = std::fwrite(data, 1, ok, fp);
        budget -= (long long)wrote;
        if (wrote == want) return count;
        errno = ENOSPC;
        return wrote / (size ? size : 1);
    }
    static int fsync(int fd) {
        if (fsync_errno) {
            errno = fsync_errno;
            return -1;
        }
        return ::fsync(fd);
    }
    static int rename(const char *a, const char *b) {
        if (rename_errno) {
            errno = rename_errno;
            return -1;
        }
        return std::rename(a, b);
    }
};

// Installs the injecting hooks for a scope, and restores the real calls after.
struct HookGuard {
    bp_st_io_hooks saved = bp_st_io;
    HookGuard() {
        bp_st_io = {Inject::write, Inject::fsync, Inject::rename};
        Inject::budget = -1;
        Inject::fsync_errno = Inject::rename_errno = 0;
    }
    ~HookGuard() {
        bp_st_io = saved;
    }
};

class CheckpointAtomic : public ::testing::Test {
  protected:
    void SetUp() override {
        std::string why;
        dev_ = bpt::open_or_reason("cpu", &why);
        ASSERT_TRUE(dev_) << why;
        ASSERT_FALSE(dir_.path.empty());
        model_ = make_model(dev_, small_net());
        ASSERT_TRUE(model_) << bp_last_error();
        bp_optim_config adam = bp_optim_config_default(BP_OPTIM_ADAM);
        optim_.reset(bp_optimizer_create(model_.get(), &adam, nullptr));
        ASSERT_TRUE(optim_) << bp_last_error();
        path_ = dir_.file("model.ckpt");
        bp_meta_entry first = {"version", "first"};
        ASSERT_EQ(BP_OK, bp_checkpoint_save(path_.c_str(), model_.get(), nullptr, &first, 1))
            << bp_last_error();
        before_ = read_bytes(path_);
        ASSERT_GT(before_.size(), 100u);
        // The model changes, so a save that went through would change the file.
        Batch b = make_batch(dev_, 8, 6, 4, 5);
        ASSERT_EQ(BP_OK, train(model_.get(), optim_.get(), b, 1)) << bp_last_error();
    }
    void TearDown() override {
        optim_.reset();
        model_.reset();
        bp_device_close(dev_);
    }

    bp_status save() {
        bp_meta_entry second = {"version", "second"};
        return bp_checkpoint_save(path_.c_str(), model_.get(), optim_.get(), &second, 1);
    }

    // The failed save left the old bytes and no temporary file.
    void expect_untouched(bp_status st, const std::string &why) {
        std::string msg = bp_last_error();
        EXPECT_EQ(BP_ERR_IO, st) << msg;
        EXPECT_TRUE(contains(msg, path_)) << msg;
        EXPECT_TRUE(contains(msg, why)) << msg;
        EXPECT_EQ(before_, read_bytes(path_)) << "the previous checkpoint changed";
        EXPECT_EQ(std::vector<std::string>{"model.ckpt"}, dir_.entries());
    }

    TempDir dir_;
    bp_device *dev_ = nullptr;
    ModelPtr model_;
    OptimPtr optim_;
    std::string path_, before_;
};

TEST_F(CheckpointAtomic, ASuccessfulSaveReplacesTheFileAndLeavesNoTemporary) {
    HookGuard hooks; // the hooks pass everything through
    ASSERT_EQ(BP_OK, save()) << bp_last_error();
    EXPECT_NE(before_, read_bytes(path_));
    EXPECT_EQ(std::vector<std::string>{"model.ckpt"}, dir_.entries());
    bp_status st;
    char *v = bp_checkpoint_get_meta(path_.c_str(), "version", &st);
    ASSERT_TRUE(v) << bp_last_error();
    EXPECT_STREQ("second", v);
    std::free(v);
}

TEST_F(CheckpointAtomic, AFullDiskAtAnyPointLeavesThePreviousFile) {
    HookGuard hooks;
    // In the length field, the header, the first tensor and the last bytes.
    for (long long budget : {0LL, 5LL, 8LL, 100LL, 700LL, (long long)before_.size()}) {
        SCOPED_TRACE("disk full after " + std::to_string(budget) + " bytes");
        Inject::budget = budget;
        expect_untouched(save(), "No space left on device");
    }
}

TEST_F(CheckpointAtomic, AFailingFsyncLeavesThePreviousFile) {
    HookGuard hooks;
    Inject::fsync_errno = EIO;
    expect_untouched(save(), "Input/output error");
}

TEST_F(CheckpointAtomic, AFailingRenameLeavesThePreviousFile) {
    HookGuard hooks;
    Inject::rename_errno = EXDEV;
    expect_untouched(save(), "Invalid cross-device link");
}

TEST_F(CheckpointAtomic, APathThatIsADirectoryFailsCleanly) {
    std::string sub = dir_.file("subdir");
    ASSERT_TRUE(fs::create_directory(sub));
    bp_status st = bp_checkpoint_save(sub.c_str(), model_.get(), optim_.get(), nullptr, 0);
    std::string msg = bp_last_error();
    EXPECT_EQ(BP_ERR_IO, st);
    EXPECT_TRUE(contains(msg, sub)) << msg;
    EXPECT_TRUE(contains(msg, "Is a directory")) << msg;
    EXPECT_TRUE(fs::is_directory(sub));
    EXPECT_EQ((std::vector<std::string>{"model.ckpt", "subdir"}), dir_.entries());
}

TEST_F(CheckpointAtomic, AMissingDirectoryFailsCleanly) {
    std::string p = dir_.file("no/such/dir/m.ckpt");
    bp_status st = bp_checkpoint_save(p.c_str(), model_.get(), optim_.get(), nullptr, 0);
    std::string msg = bp_last_error();
    EXPECT_EQ(BP_ERR_IO, st);
    EXPECT_TRUE(contains(msg, p)) << msg;
    EXPECT_TRUE(contains(msg, "No such file or directory")) << msg;
}

TEST_F(CheckpointAtomic, AnUnwritableDirectoryLeavesThePreviousFile) {
    if (geteuid() == 0) GTEST_SKIP() << "running as root: directory permissions do not apply";
    fs::permissions(dir_.path, fs::perms::owner_read | fs::perms::owner_exec);
    bp_status st = save();
    fs::permissions(dir_.path, fs::perms::owner_all);
    expect_untouched(st, "Permission denied");
}

TEST_F(CheckpointAtomic, BadArgumentsAreRefused) {
    bp_meta_entry dup[] = {{"a", "1"}, {"a", "2"}};
    EXPECT_EQ(BP_ERR_INVALID_ARGUMENT,
              bp_checkpoint_save(path_.c_str(), model_.get(), nullptr, dup, 2));
    EXPECT_TRUE(contains(bp_last_error(), "'run.a' is given twice")) << bp_last_error();
    bp_meta_entry empty = {"", "x"};
    EXPECT_EQ(BP_ERR_INVALID_ARGUMENT,
              bp_checkpoint_save(path_.c_str(), model_.get(), nullptr, &empty, 1));
    bp_meta_entry bad_utf8 = {"k", "\xff"};
    EXPECT_EQ(BP_ERR_INVALID_ARGUMENT,
              bp_checkpoint_save(path_.c_str(), model_.get(), nullptr, &bad_utf8, 1));
    EXPECT_EQ(BP_ERR_INVALID_ARGUMENT,
              bp_checkpoint_save(path_.c_str(), nullptr, nullptr, nullptr, 0));
    EXPECT_EQ(BP_ERR_INVALID_ARGUMENT, bp_checkpoint_save("", model_.get(), nullptr, nullptr, 0));
    ModelPtr other = make_model(dev_, small_net());
    ASSERT_TRUE(other);
    EXPECT_EQ(BP_ERR_INVALID_ARGUMENT,
              bp_checkpoint_save(path_.c_str(), other.get(), optim_.get(), nullptr, 0));
    EXPECT_TRUE(contains(bp_last_error(), "another model")) << bp_last_error();
    EXPECT_EQ(before_, read_bytes(path_));
    EXPECT_EQ(std::vector<std::string>{"model.ckpt"}, dir_.entries());
}

// A locale with a decimal comma must not leak into the metadata ("0,25" would split a list).
TEST(CheckpointLocale, NumbersAreWrittenAndReadInTheCLocale) {
    std::string old = std::setlocale(LC_NUMERIC, nullptr);
    const char *comma = nullptr;
    for (const char *name : {"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "fr_FR.utf8"})
        if (std::setlocale(LC_NUMERIC, name)) {
            comma = name;
            break;
        }
    if (!comma) GTEST_SKIP() << "no decimal-comma locale is installed (e.g. de_DE.UTF-8)";
    char buf[16];
    std::snprintf(buf, sizeof buf, "%.1f", 0.5);
    std::string printed = buf;
    std::string why;
    bp_device *dev = bpt::open_or_reason("cpu", &why);
    TempDir dir;
    std::string path = dir.file("locale.ckpt");
    ModelPtr m = dev ? make_model(dev, small_net()) : nullptr;
    bp_status saved = m ? bp_checkpoint_save(path.c_str(), m.get(), nullptr, nullptr, 0) : BP_OK;
    std::string err = bp_last_error();
    ModelPtr m2(m && saved == BP_OK ? bp_checkpoint_load_model(path.c_str(), dev, 0, nullptr)
                                    : nullptr);
    std::string err2 = bp_last_error();
    std::setlocale(LC_NUMERIC, old.c_str());
    EXPECT_EQ("0,5", printed) << comma << " prints a comma, so the check below means something";
    ASSERT_TRUE(m) << why;
    ASSERT_EQ(BP_OK, saved) << err;
    ASSERT_TRUE(m2) << err2;
    EXPECT_TRUE(bitwise_equal(params_of(m.get()), params_of(m2.get())));
    EXPECT_EQ(bits(0.25f), bits(bp_model_dropout(m2.get(), 0)));
    m2.reset();
    m.reset();
    bp_device_close(dev);
}

// ---- the safetensors reader on hand-made files -------------------------------------------------

// A safetensors file: the length field, header (as given, unpadded) and data_bytes of data.
std::string st_bytes(const std::string &header, size_t data_bytes) {
    std::string out(8, '\0');
    uint64_t n = header.size();
    for (int k = 0; k < 8; ++k)
        out[k] = (char)(n >> (8 * k));
    out += header;
    for (size_t k = 0; k < data_bytes; ++k)
        out += (char)(k % 4 == 3 ? 0x3f : 0); // 1.0f-like little-endian bytes
    return out;
}

struct BadHeader {
    std::string header;
    size_t data_bytes;
    std::string message; // a part the error must contain
};

std::string tensor_json(const std::string &name, const std::string &body) {
    return "\"" + name + "\":{" + body + "}";
}

TEST(Safetensors, ReadsAValidHandMadeFileWithEscapes) {
    TempDir dir;
    std::string name = "a\\\"b\\\\c\\u00e9\\ud83d\\ude00/\\n";
    std::string header =
        "{ \"__metadata__\" : {\"k\":\"v\\tw\"},\n" +
        tensor_json(name, "\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]") +
        ",\"s\":{\"shape\":[],\"data_offsets\":[8,16],\"dtype\":\"I64\"},"
        "\"z\":{\"dtype\":\"I32\",\"shape\":[0,3],\"data_offsets\":[16,16]}}  ";
    std::string path = dir.file("ok.safetensors");
    write_bytes(path, st_bytes(header, 16));
    bp_st_file *f = nullptr;
    ASSERT_EQ(BP_OK, bp_st_open(path.c_str(), &f)) << bp_last_error();
    std::unique_ptr<bp_st_file, void (*)(bp_st_file *)> guard(f, bp_st_close);
    ASSERT_EQ(3u, f->n_tensors);
    const bp_st_tensor *t = bp_st_find(f, "a\"b\\c\xc3\xa9\xf0\x9f\x98\x80/\n");
    ASSERT_TRUE(t);
    EXPECT_EQ(2u, bp_st_elements(t));
    float v[2];
    ASSERT_EQ(BP_OK, bp_st_read(f, t, v, sizeof v)) << bp_last_error();
    EXPECT_EQ(0x3f000000u, bits(v[0]));
    const bp_st_tensor *s = bp_st_find(f, "s");
    ASSERT_TRUE(s);
    EXPECT_EQ(0, s->ndim);
    EXPECT_EQ(BP_ST_I64, s->dtype);
    EXPECT_STREQ("v\tw", bp_st_get_meta(f, "k"));
    EXPECT_EQ(nullptr, bp_st_get_meta(f, "missing"));
}

TEST(Safetensors, RejectsMalformedHeadersWithThePlace) {
    const std::string ok = "\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]";
    auto one = [](const std::string &body) { return "{" + tensor_json("a", body) + "}"; };
    const std::vector<BadHeader> cases = {
        {"{" + tensor_json("a", ok), 8, "expected ',' or '}'"},
        {"{" + tensor_json("a", ok) + ",}", 8, "expected a string"},
        {one("\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]"), 8, "must hold integers"},
        {one("\"dtype\":\"F32\",\"shape\":[2e0],\"data_offsets\":[0,8]"), 8, "must hold integers"},
        {one("\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]"), 8, "must not be negative"},
        {one("\"dtype\":\"F32\",\"shape\":[02],\"data_offsets\":[0,8]"), 8, "leading zero"},
        {one("\"dtype\":\"F32\",\"shape\":true,\"data_offsets\":[0,8]"), 8, "expected '['"},
        {one("\"dtype\":null,\"shape\":[2],\"data_offsets\":[0,8]"), 8, "expected a string"},
        {one("\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]"), 4, "not supported"},
        {one(ok + ",\"foo\":1"), 8, "unknown field \"foo\""},
        {one(ok + ",\"shape\":[2]"), 8, "\"shape\" given twice"},
        {one("\"dtype\":\"F32\",\"shape\":[2]"), 8, "has no \"data_offsets\""},
        {one("\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]"), 8, "has 1 entries"},
        {one("\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,9]"), 8, "more than 2"},
        {one("\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,2],\"data_offsets\":[0,8]"), 8,
         "more than 8"},
        {one("\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,8]"), 8,
         "too large"},
        {"{\"a", 0, "unterminated string"},
        {"{\"a\\q\":{}}", 0, "invalid escape"},
        {"{\"a\\u12g4\":{}}", 0, "malformed \\u escape"},
        {"{\"a\\udc00\":{}}", 0, "lone low surrogate"},
        {"{\"a\\ud800x\":{}}", 0, "high surrogate"},
        {"{\"a\\u0000\":{}}", 0, "\\u0000"},
        {"{\"a\tb\":{}}", 0, "control character"},
        {"{\"a\xff\":{}}", 0, "invalid UTF-8"},
        {"{\"a\xc0\xaf\":{}}", 0, "invalid UTF-8"},
        {"{" + tensor_json("a", ok) + "}x", 8, "unexpected bytes after"},
        {"{" + tensor_json("a", ok) + "," + tensor_json("a", ok) + "}", 8, "appears twice"},
        {"{\"__metadata__\":{\"k\":1}}", 0, "expected a string"},
        {"{\"__metadata__\":{},\"__metadata__\":{}}", 0, "\"__metadata__\" given twice"},
        {"{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", 0, "key 'k' appears twice"},
        {"  ", 0, "expected '{'"},
        {"[]", 0, "expected '{'"},
        {"{\"a\":true}", 0, "expected '{'"},
        {"{\"a\" {}}", 0, "expected ':'"},
        // Offsets and shapes against the buffer.
        {"{" +
             tensor_json("2.weight",
                         "\"dtype\":\"F32\",\"shape\":[1000],\"data_offsets\":[0,4000]") +
             "}",
         3000, "tensor '2.weight': data_offsets [0, 4000] exceed the 3000-byte buffer"},
        {one("\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]"), 8, "are reversed"},
        {one("\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]"), 8,
         "shape [3] of F32 needs 12 bytes, data_offsets [0, 8] hold 8"},
        {one("\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4],\"data_offsets\":[0,8]"), 8,
         "shape [4294967296, 4294967296, 4] is more than 2^64 bytes"},
        {one("\"dtype\":\"F32\",\"shape\":[1000000000000],\"data_offsets\":[0,4000000000000]"), 8,
         "exceed the 8-byte buffer"},
        {"{" + tensor_json("a", ok) + "," +
             tensor_json("b", "\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]") + "}",
         20, "4 unused bytes before tensor 'b'"},
        {"{" + tensor_json("a", ok) + "," +
             tensor_json("b", "\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]") + "}",
         12, "overlaps"},
        {"{" + tensor_json("a", ok) + "}", 12, "cover 8 bytes of the 12-byte buffer"},
    };
    TempDir dir;
    std::string path = dir.file("bad.safetensors");
    // The control: the well-formed version of the first cases opens.
    write_bytes(path, st_bytes(one(ok), 8));
    bp_st_file *f = nullptr;
    ASSERT_EQ(BP_OK, bp_st_open(path.c_str(), &f)) << bp_last_error();
    bp_st_close(f);
    for (const BadHeader &c : cases) {
        SCOPED_TRACE(c.header);
        write_bytes(path, st_bytes(c.header, c.data_bytes));
        f = reinterpret_cast<bp_st_file *>(1);
        bp_status st = bp_st_open(path.c_str(), &f);
        std::string msg = bp_last_error();
        EXPECT_EQ(BP_ERR_CORRUPT_FILE, st) << msg;
        EXPECT_EQ(nullptr, f);
        EXPECT_EQ(0u, msg.rfind(path + ": ", 0)) << msg;
        EXPECT_TRUE(contains(msg, c.message)) << msg;
        bp_st_close(f);
    }
}

TEST(Safetensors, RejectsBadLengthFieldsBeforeAllocating) {
    TempDir dir;
    std::string path = dir.file("len.safetensors");
    struct Case {
        std::string bytes, message;
    };
    std::string valid = st_bytes("{}", 0);
    std::string beyond = valid;
    beyond[0] = 3; // 3 > the 2 bytes after the field
    std::string huge = valid;
    huge[7] = 0x7f;
    const std::vector<Case> cases = {
        {"", "0 bytes is too short"},
        {std::string("\x02\0\0\0", 4), "4 bytes is too short"},
        {beyond, "header length 3 exceeds the 2 bytes"},
        {huge, "exceeds the 2 bytes"},
        {st_bytes("{", 0), "header length 1 is too short"},
    };
    for (const Case &c : cases) {
        write_bytes(path, c.bytes);
        bp_st_file *f = nullptr;
        EXPECT_EQ(BP_ERR_CORRUPT_FILE, bp_st_open(path.c_str(), &f));
        EXPECT_TRUE(contains(bp_last_error(), c.message)) << bp_last_error();
        EXPECT_TRUE(contains(bp_last_error(), path)) << bp_last_error();
    }
    // A header length within a (sparse) 150 MB file, but beyond the 100 MB limit.
    {
        std::string bytes = valid;
        uint64_t n = 120ull * 1000 * 1000;
        for (int k = 0; k < 8; ++k)
            bytes[k] = (char)(n >> (8 * k));
        write_bytes(path, bytes);
        ASSERT_EQ(0, truncate(path.c_str(), 150ll * 1000 * 1000));
        bp_st_file *f = nullptr;
        EXPECT_EQ(BP_ERR_CORRUPT_FILE, bp_st_open(path.c_str(), &f));
        EXPECT_TRUE(contains(bp_last_error(), "exceeds the limit of 100000000")) << bp_last_error();
    }
    bp_st_file *f = nullptr;
    EXPECT_EQ(BP_ERR_IO, bp_st_open(dir.file("absent").c_str(), &f));
    EXPECT_TRUE(contains(bp_last_error(), "No such file or directory")) << bp_last_error();
    EXPECT_EQ(BP_ERR_IO, bp_st_open(dir.path.c_str(), &f));
    EXPECT_TRUE(contains(bp_last_error(), "is a directory")) << bp_last_error();
}

// ---- corrupt checkpoints -----------------------------------------------------------------------

// A checkpoint as tensors and metadata in memory, to alter and write back.
struct Contents {
    struct T {
        bp_st_dtype dtype;
        std::vector<uint64_t> shape;
        std::string bytes;
    };
    std::map<std::string, T> tensors;
    std::map<std::string, std::string> meta;
};

Contents read_contents(const std::string &path) {
    Contents c;
    bp_st_file *f = nullptr;
    EXPECT_EQ(BP_OK, bp_st_open(path.c_str(), &f)) << bp_last_error();
    if (!f) return c;
    for (size_t k = 0; k < f->n_tensors; ++k) {
        const bp_st_tensor &t = f->tensors[k];
        Contents::T ct{t.dtype, std::vector<uint64_t>(t.shape, t.shape + t.ndim),
                       std::string(t.end - t.begin, '\0')};
        EXPECT_EQ(BP_OK, bp_st_read(f, &t, ct.bytes.data(), ct.bytes.size()));
        c.tensors[t.name] = ct;
    }
    for (size_t k = 0; k < f->n_meta; ++k)
        c.meta[f->meta[k].key] = f->meta[k].value;
    bp_st_close(f);
    return c;
}

bp_status write_contents(const std::string &path, const Contents &c) {
    std::vector<bp_st_entry> e;
    for (const auto &[name, t] : c.tensors) {
        bp_st_entry x{};
        x.name = name.c_str();
        x.dtype = t.dtype;
        x.ndim = (int)t.shape.size();
        for (size_t d = 0; d < t.shape.size(); ++d)
            x.shape[d] = t.shape[d];
        x.data = t.bytes.data();
        e.push_back(x);
    }
    std::vector<bp_st_meta_entry> m;
    for (const auto &[k, v] : c.meta)
        m.push_back({k.c_str(), v.c_str()});
    return bp_st_save(path.c_str(), e.data(), e.size(), m.data(), m.size());
}

void strip_checksums(Contents &c) {
    for (auto it = c.meta.begin(); it != c.meta.end();)
        it = it->first.rfind("checksum.", 0) == 0 ? c.meta.erase(it) : std::next(it);
}

class CheckpointCorrupt : public ::testing::Test {
  protected:
    void SetUp() override {
        std::string why;
        dev_ = bpt::open_or_reason("cpu", &why);
        ASSERT_TRUE(dev_) << why;
        ModelPtr m = make_model(dev_, small_net()); // widths 6-10-8-4: names 0, 3, 6
        ASSERT_TRUE(m) << bp_last_error();
        bp_optim_config adam = bp_optim_config_default(BP_OPTIM_ADAM);
        OptimPtr o(bp_optimizer_create(m.get(), &adam, nullptr));
        ASSERT_TRUE(o) << bp_last_error();
        Batch b = make_batch(dev_, 8, 6, 4, 2);
        ASSERT_EQ(BP_OK, train(m.get(), o.get(), b, 2)) << bp_last_error();
        good_ = dir_.file("good.ckpt");
        bad_ = dir_.file("bad.ckpt");
        bp_meta_entry meta = {"k", "v"};
        ASSERT_EQ(BP_OK, bp_checkpoint_save(good_.c_str(), m.get(), o.get(), &meta, 1))
            << bp_last_error();
        bytes_ = read_bytes(good_);
        contents_ = read_contents(good_);
        ASSERT_EQ(18u, contents_.tensors.size()); // 6 parameters, 2 moments of each
    }
    void TearDown() override {
        bp_device_close(dev_);
    }

    // The failure's status and a message holding the call, the path and `part`.
    void expect_failure(bp_status want, bp_status st, const char *fn, const std::string &part) {
        std::string msg = bp_last_error();
        EXPECT_EQ(want, st) << msg;
        EXPECT_TRUE(contains(msg, fn)) << msg;
        EXPECT_TRUE(contains(msg, bad_)) << msg;
        EXPECT_TRUE(contains(msg, part)) << msg;
    }

    // Loading bad_ fails with status and a message holding the path and `part`: by path, and
    // through a handle (which fails at open for what open checks, else at the read).
    void expect_model_error(bp_status want, const std::string &part) {
        bp_status st = BP_OK;
        bp_model *m = bp_checkpoint_load_model(bad_.c_str(), dev_, 0, &st);
        EXPECT_EQ(nullptr, m);
        bp_model_free(m);
        expect_failure(want, st, "bp_checkpoint_load_model", part);
        bp_checkpoint *ck = bp_checkpoint_open(bad_.c_str(), &st);
        if (!ck) return expect_failure(want, st, "bp_checkpoint_open", part);
        m = bp_checkpoint_read_model(ck, dev_, 0, &st);
        EXPECT_EQ(nullptr, m);
        bp_model_free(m);
        expect_failure(want, st, "bp_checkpoint_read_model", part);
        bp_mlp_config config;
        bp_status cst = bp_checkpoint_model_config(ck, &config);
        if (want != BP_ERR_NON_FINITE && cst != BP_OK) // a tensor's fault is not the config's
            expect_failure(want, cst, "bp_checkpoint_model_config", part);
        bp_checkpoint_close(ck);
    }

    void expect_optim_error(bp_status want, const std::string &part) {
        ModelPtr m(bp_checkpoint_load_model(bad_.c_str(), dev_, 0, nullptr));
        ASSERT_TRUE(m) << bp_last_error();
        bp_status st = BP_OK;
        bp_optimizer *o = bp_checkpoint_load_optimizer(bad_.c_str(), m.get(), &st);
        EXPECT_EQ(nullptr, o);
        bp_optimizer_free(o);
        expect_failure(want, st, "bp_checkpoint_load_optimizer", part);
        bp_checkpoint *ck = bp_checkpoint_open(bad_.c_str(), &st);
        ASSERT_NE(ck, nullptr) << bp_last_error();
        o = bp_checkpoint_read_optimizer(ck, m.get(), &st);
        EXPECT_EQ(nullptr, o);
        bp_optimizer_free(o);
        expect_failure(want, st, "bp_checkpoint_read_optimizer", part);
        bp_checkpoint_close(ck);
    }

    // Writes contents_ altered by change to bad_, without its checksums: the structural checks
    // below are those a file saved before checksums existed still gets (the checksums would
    // report any change first; CheckpointChecksum tests them).
    void alter(const std::function<void(Contents &)> &change) {
        Contents c = contents_;
        strip_checksums(c);
        change(c);
        ASSERT_EQ(BP_OK, write_contents(bad_, c)) << bp_last_error();
    }

    TempDir dir_;
    bp_device *dev_ = nullptr;
    std::string good_, bad_, bytes_;
    Contents contents_;
};

TEST_F(CheckpointCorrupt, TheUnalteredCopyLoads) {
    alter([](Contents &) {});
    bp_status st = BP_ERR_IO;
    ModelPtr m(bp_checkpoint_load_model(bad_.c_str(), dev_, 0, &st));
    ASSERT_TRUE(m) << bp_last_error();
    OptimPtr o(bp_checkpoint_load_optimizer(bad_.c_str(), m.get(), &st));
    ASSERT_TRUE(o) << bp_last_error();
}

TEST_F(CheckpointCorrupt, TruncatedFilesFailCleanly) {
    uint64_t header = 0;
    for (int k = 7; k >= 0; --k)
        header = header << 8 | (unsigned char)bytes_[k];
    const size_t size = bytes_.size(), end = 8 + (size_t)header;
    for (size_t cut : {(size_t)0, (size_t)3, (size_t)8, (size_t)9, (size_t)40, end - 1, end,
                       end + 1, end + 50, (end + size) / 2, size - 4, size - 1}) {
        SCOPED_TRACE("truncated to " + std::to_string(cut) + " of " + std::to_string(size));
        write_bytes(bad_, bytes_.substr(0, cut));
        expect_model_error(BP_ERR_CORRUPT_FILE, "");
    }
}

TEST_F(CheckpointCorrupt, MissingOrMisshapenTensorsAreNamed) {
    alter([](Contents &c) { c.tensors.erase("3.bias"); });
    expect_model_error(BP_ERR_CORRUPT_FILE, "tensor '3.bias' is missing");
    alter([](Contents &c) { c.meta["model.widths"] = "6,10,9,4"; });
    expect_model_error(BP_ERR_CORRUPT_FILE,
                       "tensor '3.weight' has shape [8, 10], the 6-10-9-4 model of the metadata "
                       "needs [9, 10]");
    alter([](Contents &c) { c.tensors["0.bias"].shape = {2, 5}; });
    expect_model_error(BP_ERR_CORRUPT_FILE, "tensor '0.bias' has shape [2, 5]");
    alter([](Contents &c) { c.tensors["0.bias"].dtype = BP_ST_I32; });
    expect_model_error(BP_ERR_CORRUPT_FILE, "tensor '0.bias' is I32, expected F32");
    alter([](Contents &c) { c.tensors["9.weight"] = c.tensors["0.bias"]; });
    expect_model_error(BP_ERR_CORRUPT_FILE, "tensor '9.weight' is not part of the 6-10-8-4 model");
    alter([](Contents &c) { c.meta["model.dropout"] = "0,0.1,0"; }); // moves the indices
    expect_model_error(BP_ERR_CORRUPT_FILE, "is missing");
    alter([](Contents &c) {
        float nan = std::nanf("");
        std::memcpy(c.tensors["6.weight"].bytes.data() + 4, &nan, 4);
    });
    expect_model_error(BP_ERR_NON_FINITE, "layer 2 weight [0, 1]");
}

TEST_F(CheckpointCorrupt, BadMetadataIsNamed) {
    struct Case {
        std::string key, value, part;
    };
    const std::vector<Case> cases = {
        {"format", "something-else", "not a backprop checkpoint"},
        {"model.n_layers", "0", "'model.n_layers' is '0', expected an integer in [1, 1024]"},
        {"model.n_layers", " 3", "'model.n_layers' is ' 3'"},
        {"model.n_layers", "2", "'model.widths' is '6,10,8,4', expected 3 comma-separated"},
        {"model.widths", "6,10,8,4,", "'model.widths'"},
        {"model.widths", "6,0,8,4", "'model.widths'"},
        {"model.widths", "6,10,-8,4", "'model.widths'"},
        {"model.activations", "relu,foo,identity", "'model.activations'"},
        {"model.dropout", "0.5,1,0", "'model.dropout'"},
        {"model.dropout", "0.5,nan,0", "'model.dropout'"},
        {"model.leaky_slope", "inf", "'model.leaky_slope'"},
        {"model.seed", "-1", "'model.seed'"},
        {"model.rng_counter", "18446744073709551616", "'model.rng_counter'"},
        {"model.max_batch", "", "'model.max_batch'"},
        {"model.precision", "fp16", "'model.precision' is 'fp16', expected fp32, tf32 or bf16"},
    };
    for (const Case &c : cases) {
        SCOPED_TRACE(c.key + " = '" + c.value + "'");
        alter([&](Contents &x) { x.meta[c.key] = c.value; });
        expect_model_error(BP_ERR_CORRUPT_FILE, c.part);
    }
    alter([](Contents &c) { c.meta.erase("model.widths"); });
    expect_model_error(BP_ERR_CORRUPT_FILE, "metadata 'model.widths' is missing");
    alter([](Contents &c) { c.meta.erase("format"); });
    expect_model_error(BP_ERR_CORRUPT_FILE, "'format' is missing");
    alter([](Contents &c) { c.meta["version"] = "2"; });
    expect_model_error(BP_ERR_UNSUPPORTED, "format version 2 is newer");
}

// A checkpoint from before the precision modes has no model.precision: it is fp32.
TEST_F(CheckpointCorrupt, ACheckpointWithoutPrecisionIsFp32) {
    EXPECT_EQ("fp32", contents_.meta["model.precision"]);
    alter([](Contents &c) { c.meta.erase("model.precision"); });
    ModelPtr m(bp_checkpoint_load_model(bad_.c_str(), dev_, 0, nullptr));
    ASSERT_TRUE(m) << bp_last_error();
    EXPECT_EQ(BP_PRECISION_FP32, bp_model_precision(m.get()));
    alter([](Contents &c) { c.meta["model.precision"] = "bf16"; });
    m.reset(bp_checkpoint_load_model(bad_.c_str(), dev_, 0, nullptr));
    ASSERT_TRUE(m) << bp_last_error();
    EXPECT_EQ(BP_PRECISION_BF16, bp_model_precision(m.get()));
}

TEST_F(CheckpointCorrupt, BadOptimizerStateIsNamed) {
    alter([](Contents &c) { c.tensors.erase("optimizer.3.weight.exp_avg_sq"); });
    expect_optim_error(BP_ERR_CORRUPT_FILE, "tensor 'optimizer.3.weight.exp_avg_sq' is missing");
    alter([](Contents &c) {
        c.tensors["optimizer.3.weight.momentum_buffer"] = c.tensors["3.weight"];
    });
    expect_optim_error(BP_ERR_CORRUPT_FILE, "'optimizer.3.weight.momentum_buffer' is not part");
    alter([](Contents &c) { c.meta["optimizer.lr"] = "-0.5"; });
    expect_optim_error(BP_ERR_CORRUPT_FILE, "lr is -0.5");
    alter([](Contents &c) { c.meta["optimizer.kind"] = "lbfgs"; });
    expect_optim_error(BP_ERR_CORRUPT_FILE, "'optimizer.kind' is 'lbfgs'");
    alter([](Contents &c) { c.meta.erase("optimizer.schedule.gamma"); });
    expect_optim_error(BP_ERR_CORRUPT_FILE, "'optimizer.schedule.gamma' is missing");
    alter([](Contents &c) { c.meta["optimizer.steps"] = "-3"; });
    expect_optim_error(BP_ERR_CORRUPT_FILE, "'optimizer.steps'");
    alter([](Contents &c) {
        for (auto it = c.meta.begin(); it != c.meta.end();)
            it = it->first.rfind("optimizer.", 0) == 0 ? c.meta.erase(it) : std::next(it);
    });
    expect_optim_error(BP_ERR_INVALID_ARGUMENT, "holds no optimizer");
}

// A plateau schedule's keys are read only with that schedule (older files have none), and then
// each one must be there and well formed.
TEST_F(CheckpointCorrupt, BadPlateauMetadataIsNamed) {
    const std::map<std::string, std::string> plateau = {
        {"optimizer.schedule.kind", "plateau"},
        {"optimizer.schedule.gamma", "0.5"},
        {"optimizer.schedule.mode", "min"},
        {"optimizer.schedule.threshold", "0.0001"},
        {"optimizer.schedule.threshold_mode", "rel"},
        {"optimizer.schedule.patience", "2"},
        {"optimizer.schedule.cooldown", "0"},
        {"optimizer.schedule.eps", "1e-08"},
        {"optimizer.plateau.best", "inf"},
        {"optimizer.plateau.bad_epochs", "1"},
        {"optimizer.plateau.cooldown_left", "0"},
    };
    auto with = [&](const std::string &key, const std::string *value) {
        alter([&](Contents &c) {
            for (const auto &[k, v] : plateau)
                c.meta[k] = v;
            if (value)
                c.meta[key] = *value;
            else
                c.meta.erase(key);
        });
    };
    with("optimizer.schedule.kind", &plateau.at("optimizer.schedule.kind"));
    ModelPtr m(bp_checkpoint_load_model(bad_.c_str(), dev_, 0, nullptr));
    ASSERT_TRUE(m) << bp_last_error();
    OptimPtr o(bp_checkpoint_load_optimizer(bad_.c_str(), m.get(), nullptr));
    ASSERT_TRUE(o) << bp_last_error(); // the complete set loads
    struct Case {
        std::string key, value, part;
    };
    const std::vector<Case> cases = {
        {"optimizer.schedule.kind", "plateaux",
         "'optimizer.schedule.kind' is 'plateaux', "
         "expected constant, step, cosine or plateau"},
        {"optimizer.schedule.mode", "sideways", "expected min or max"},
        {"optimizer.schedule.threshold_mode", "relative", "expected rel or abs"},
        {"optimizer.schedule.patience", "-1", "'optimizer.schedule.patience'"},
        {"optimizer.schedule.gamma", "1.5", "gamma (factor) is 1.5"},
        {"optimizer.plateau.best", "nan", "'optimizer.plateau.best' is 'nan'"},
        {"optimizer.plateau.cooldown_left", "x", "'optimizer.plateau.cooldown_left'"},
    };
    for (const Case &c : cases) {
        SCOPED_TRACE(c.key + " = " + c.value);
        with(c.key, &c.value);
        expect_optim_error(BP_ERR_CORRUPT_FILE, c.part);
    }
    for (const char *key : {"optimizer.schedule.eps", "optimizer.plateau.bad_epochs"}) {
        SCOPED_TRACE(key);
        with(key, nullptr);
        expect_optim_error(BP_ERR_CORRUPT_FILE, std::string("'") + key + "' is missing");
    }
}

TEST_F(CheckpointCorrupt, AnOptimizerForAnotherModelIsRefused) {
    Net other = small_net();
    other.widths = {6, 11, 8, 4};
    ModelPtr m = make_model(dev_, other);
    ASSERT_TRUE(m);
    bp_status st = BP_OK;
    EXPECT_EQ(nullptr, bp_checkpoint_load_optimizer(good_.c_str(), m.get(), &st));
    EXPECT_EQ(BP_ERR_SHAPE_MISMATCH, st);
    EXPECT_TRUE(contains(bp_last_error(), "6-10-8-4")) << bp_last_error();
}

TEST_F(CheckpointCorrupt, MissingFilesAndNullArgumentsFailCleanly) {
    bp_status st = BP_OK;
    std::string absent = dir_.file("absent.ckpt");
    EXPECT_EQ(nullptr, bp_checkpoint_load_model(absent.c_str(), dev_, 0, &st));
    EXPECT_EQ(BP_ERR_IO, st);
    EXPECT_TRUE(contains(bp_last_error(), absent + ": cannot open: No such file"))
        << bp_last_error();
    EXPECT_EQ(nullptr, bp_checkpoint_load_model(nullptr, dev_, 0, &st));
    EXPECT_EQ(BP_ERR_INVALID_ARGUMENT, st);
    EXPECT_EQ(nullptr, bp_checkpoint_load_model(good_.c_str(), nullptr, 0, &st));
    EXPECT_EQ(BP_ERR_INVALID_ARGUMENT, st);
    EXPECT_EQ(nullptr, bp_checkpoint_load_optimizer(good_.c_str(), nullptr, &st));
    EXPECT_EQ(BP_ERR_INVALID_ARGUMENT, st);
    EXPECT_EQ(nullptr, bp_checkpoint_get_meta(absent.c_str(), "k", &st));
    EXPECT_EQ(BP_ERR_IO, st);
    EXPECT_EQ(nullptr, bp_checkpoint_get_meta(good_.c_str(), nullptr, &st));
    EXPECT_EQ(BP_ERR_INVALID_ARGUMENT, st);
    EXPECT_EQ(nullptr, bp_checkpoint_get_array(good_.c_str(), "x", nullptr, &st));
    EXPECT_EQ(BP_ERR_INVALID_ARGUMENT, st);
    // A run array of the wrong rank is a corrupt file.
    alter([](Contents &c) { c.tensors["run.scale"] = c.tensors["0.weight"]; });
    size_t n = 5;
    EXPECT_EQ(nullptr, bp_checkpoint_get_array(bad_.c_str(), "scale", &n, &st));
    EXPECT_EQ(BP_ERR_CORRUPT_FILE, st);
    EXPECT_TRUE(contains(bp_last_error(), "tensor 'run.scale' is F32 of rank 2"))
        << bp_last_error();
}

// Random byte flips (mostly in the header, where the parser is) and truncations: every load
// either succeeds or fails with a message; none crashes or leaks (run under ASan too, with
// BP_FUZZ_ROUNDS=100000 for a longer run).
TEST_F(CheckpointCorrupt, RandomByteFlipsNeverCrash) {
    std::mt19937 gen(20240611);
    uint64_t header = 0;
    for (int k = 7; k >= 0; --k)
        header = header << 8 | (unsigned char)bytes_[k];
    const size_t end = 8 + (size_t)header;
    int failures = 0, successes = 0;
    const char *env = std::getenv("BP_FUZZ_ROUNDS"); // more under a sanitizer, by hand
    const int rounds = env ? std::atoi(env) : 1500;
    for (int r = 0; r < rounds; ++r) {
        std::string b = bytes_;
        int flips = 1 + (int)(gen() % 4);
        for (int k = 0; k < flips; ++k) {
            size_t at = gen() % 10 < 8 ? gen() % end : gen() % b.size();
            b[at] = (char)(gen() % 3 == 0 ? b[at] ^ (1u << (gen() % 8)) : (char)gen());
        }
        if (gen() % 10 == 0) b.resize(gen() % b.size());
        write_bytes(bad_, b);
        bp_status st = BP_OK;
        ModelPtr m(bp_checkpoint_load_model(bad_.c_str(), dev_, 0, &st));
        if (m) {
            OptimPtr o(bp_checkpoint_load_optimizer(bad_.c_str(), m.get(), &st));
            if (!o) {
                EXPECT_NE(std::string(), bp_last_error());
            }
        } else {
            EXPECT_NE(BP_OK, st);
            EXPECT_TRUE(contains(bp_last_error(), bad_)) << bp_last_error();
        }
        (m ? successes : failures)++;
        char *v = bp_checkpoint_get_meta(bad_.c_str(), "k", &st);
        std::free(v);
        size_t n = 0;
        std::free(bp_checkpoint_get_array(bad_.c_str(), "k", &n, &st));
    }
    // Both outcomes happen, so the loop reaches past the parser's first checks.
    EXPECT_GT(failures, rounds / 2);
    EXPECT_GT(successes, 0);
}

// ---- checksums -------------------------------------------------------------------------------

// zlib's CRC-32 as the test computes it, apart from the library: of a tensor's bytes, and of a
// metadata entry as key, NUL, value.
std::string crc_text(const std::string &bytes) {
    uLong c = crc32(0L, reinterpret_cast<const Bytef *>(bytes.data()), (uInt)bytes.size());
    char buf[32];
    std::snprintf(buf, sizeof buf, "crc32:%08lx", c);
    return buf;
}

std::string entry_bytes(const std::string &key, const std::string &value) {
    return key + std::string(1, '\0') + value;
}

// Where each tensor's bytes lie in the file.
std::map<std::string, std::pair<uint64_t, uint64_t>> tensor_spans(const std::string &path) {
    std::map<std::string, std::pair<uint64_t, uint64_t>> out;
    bp_st_file *f = nullptr;
    EXPECT_EQ(BP_OK, bp_st_open(path.c_str(), &f)) << bp_last_error();
    for (size_t k = 0; f && k < f->n_tensors; ++k)
        out[f->tensors[k].name] = {f->data_start + f->tensors[k].begin,
                                   f->data_start + f->tensors[k].end};
    bp_st_close(f);
    return out;
}

class CheckpointChecksum : public CheckpointCorrupt {
  protected:
    void SetUp() override {
        CheckpointCorrupt::SetUp();
        if (HasFatalFailure()) return;
        // A caller array too, so every kind of tensor is covered.
        ModelPtr m(bp_checkpoint_load_model(good_.c_str(), dev_, 0, nullptr));
        ASSERT_TRUE(m) << bp_last_error();
        OptimPtr o(bp_checkpoint_load_optimizer(good_.c_str(), m.get(), nullptr));
        ASSERT_TRUE(o) << bp_last_error();
        std::vector<float> scale = {0.5f, 2.0f, 3.0f};
        bp_meta_entry meta[] = {{"k", "v"}, {"scale_offset", "0.25,1,2"}};
        bp_meta_array arr = {"scale", scale.data(), scale.size()};
        ASSERT_EQ(BP_OK,
                  bp_checkpoint_save_arrays(good_.c_str(), m.get(), o.get(), meta, 2, &arr, 1))
            << bp_last_error();
        bytes_ = read_bytes(good_);
        contents_ = read_contents(good_);
    }
    // Writes contents_ altered by change, checksums kept as they are.
    void alter_keeping(const std::function<void(Contents &)> &change) {
        Contents c = contents_;
        change(c);
        ASSERT_EQ(BP_OK, write_contents(bad_, c)) << bp_last_error();
    }
    // bp_checkpoint_verify of bad_ fails with want and a message holding bad_ and part.
    void expect_verify_error(bp_status want, const std::string &part) {
        int verified = 1;
        bp_status st = bp_checkpoint_verify(bad_.c_str(), &verified);
        std::string msg = bp_last_error();
        EXPECT_EQ(want, st) << msg;
        EXPECT_EQ(0, verified);
        EXPECT_TRUE(contains(msg, "bp_checkpoint_verify")) << msg;
        EXPECT_TRUE(contains(msg, bad_)) << msg;
        EXPECT_TRUE(contains(msg, part)) << msg;
    }
};

TEST_F(CheckpointChecksum, EveryTensorAndMetadataEntryCarriesItsCrc32) {
    size_t entries = 0;
    for (const auto &[name, t] : contents_.tensors) {
        ASSERT_TRUE(contents_.meta.count("checksum.tensor." + name)) << name;
        EXPECT_EQ(crc_text(t.bytes), contents_.meta["checksum.tensor." + name]) << name;
    }
    for (const auto &[key, value] : contents_.meta) {
        if (key.rfind("checksum.", 0) == 0) continue;
        ++entries;
        ASSERT_TRUE(contents_.meta.count("checksum.meta." + key)) << key;
        EXPECT_EQ(crc_text(entry_bytes(key, value)), contents_.meta["checksum.meta." + key]) << key;
    }
    EXPECT_EQ(19u, contents_.tensors.size()); // 6 parameters, 12 moments, run.scale
    EXPECT_GT(entries, 30u);
    EXPECT_EQ(contents_.tensors.size() + 2 * entries, contents_.meta.size()) << "nothing else";
    int verified = 0;
    ASSERT_EQ(BP_OK, bp_checkpoint_verify(good_.c_str(), &verified)) << bp_last_error();
    EXPECT_EQ(1, verified);
}

// Damage on disk: one byte of each tensor flipped in place, the header untouched. Whichever
// call reads that tensor names it; bp_checkpoint_verify names it whatever it is.
TEST_F(CheckpointChecksum, AByteFlippedInAnyTensorIsNamed) {
    auto spans = tensor_spans(good_);
    ASSERT_EQ(contents_.tensors.size(), spans.size());
    for (const auto &[name, span] : spans) {
        SCOPED_TRACE(name);
        for (uint64_t at : {span.first, (span.first + span.second) / 2, span.second - 1}) {
            std::string b = bytes_;
            b[at] = (char)(b[at] ^ 0x10); // a finite float stays finite: only the CRC sees it
            write_bytes(bad_, b);
            std::string part = "tensor '" + name + "' does not match its checksum";
            expect_verify_error(BP_ERR_CORRUPT_FILE, part);
            bp_status st = BP_OK;
            if (name.rfind("optimizer.", 0) == 0) {
                expect_optim_error(BP_ERR_CORRUPT_FILE, part);
            } else if (name.rfind("run.", 0) == 0) {
                size_t n = 0;
                EXPECT_EQ(nullptr, bp_checkpoint_get_array(bad_.c_str(), "scale", &n, &st));
                EXPECT_EQ(BP_ERR_CORRUPT_FILE, st);
                EXPECT_TRUE(contains(bp_last_error(), part)) << bp_last_error();
            } else {
                expect_model_error(BP_ERR_CORRUPT_FILE, part);
            }
        }
    }
}

// Each metadata entry edited (its value, as a person with an editor or a bad disk would): every
// reader refuses the file, naming the key, before it uses any of it.
TEST_F(CheckpointChecksum, AnEditedMetadataEntryIsNamed) {
    size_t tried = 0;
    for (const auto &entry : contents_.meta) {
        const std::string &key = entry.first, &value = entry.second; // lambdas capture these
        SCOPED_TRACE(key + " = '" + value + "'");
        std::string edited = value.empty() ? "1" : value;
        edited[edited.size() / 2] = edited[edited.size() / 2] == '1' ? '2' : '1';
        alter_keeping([&](Contents &c) { c.meta[key] = edited; });
        std::string part = "metadata '" + key + "' does not match its checksum";
        if (key.rfind("checksum.meta.", 0) == 0) // the checksum itself edited: its entry named
            part = "metadata '" + key.substr(14) + "' does not match its checksum";
        else if (key.rfind("checksum.tensor.", 0) == 0)
            part = "tensor '" + key.substr(16) + "' does not match its checksum";
        expect_verify_error(BP_ERR_CORRUPT_FILE, part);
        if (key.rfind("checksum.tensor.", 0) != 0) { // read at open, by every call
            bp_status st = BP_OK;
            EXPECT_EQ(nullptr, bp_checkpoint_get_meta(bad_.c_str(), "k", &st));
            EXPECT_EQ(BP_ERR_CORRUPT_FILE, st);
            EXPECT_TRUE(contains(bp_last_error(), part)) << bp_last_error();
            expect_model_error(BP_ERR_CORRUPT_FILE, part);
        }
        ++tried;
    }
    EXPECT_EQ(contents_.meta.size(), tried);
}

TEST_F(CheckpointChecksum, AddedRemovedAndRenamedEntriesAreNamed) {
    alter_keeping([](Contents &c) { c.meta["run.extra"] = "1"; });
    expect_verify_error(BP_ERR_CORRUPT_FILE, "metadata 'run.extra' has no checksum");
    alter_keeping([](Contents &c) { c.meta.erase("run.k"); });
    expect_verify_error(BP_ERR_CORRUPT_FILE,
                        "metadata 'run.k' is missing, but its checksum is stored");
    alter_keeping([](Contents &c) {
        c.meta["run.kk"] = c.meta["run.k"];
        c.meta.erase("run.k");
    });
    expect_verify_error(BP_ERR_CORRUPT_FILE, "metadata 'run.k");
    alter_keeping([](Contents &c) { c.tensors.erase("3.bias"); });
    expect_verify_error(BP_ERR_CORRUPT_FILE,
                        "tensor '3.bias' is missing, but its checksum is stored");
    alter_keeping([](Contents &c) { c.tensors["run.other"] = c.tensors["run.scale"]; });
    expect_verify_error(BP_ERR_CORRUPT_FILE, "tensor 'run.other' has no checksum");
    alter_keeping([](Contents &c) { c.meta["checksum.meta.run.k"] = "crc32:12"; });
    expect_verify_error(BP_ERR_CORRUPT_FILE, "not crc32:<8 hex digits>");
    alter_keeping([](Contents &c) { c.meta["checksum.meta.run.k"] = "sha256:0123abcd"; });
    expect_verify_error(BP_ERR_UNSUPPORTED, "an algorithm this library does not read");
    // A kind of checksum entry this version does not know is left alone.
    alter_keeping([](Contents &c) { c.meta["checksum.file"] = "future"; });
    int verified = 0;
    EXPECT_EQ(BP_OK, bp_checkpoint_verify(bad_.c_str(), &verified)) << bp_last_error();
    EXPECT_EQ(1, verified);
}

// A checkpoint saved before checksums existed loads as before, and says it is unverified.
TEST_F(CheckpointChecksum, FilesWithoutChecksumsLoadUnverified) {
    alter([](Contents &) {}); // checksums stripped
    int verified = 1;
    ASSERT_EQ(BP_OK, bp_checkpoint_verify(bad_.c_str(), &verified)) << bp_last_error();
    EXPECT_EQ(0, verified);
    ModelPtr m(bp_checkpoint_load_model(bad_.c_str(), dev_, 0, nullptr));
    ASSERT_TRUE(m) << bp_last_error();
    OptimPtr o(bp_checkpoint_load_optimizer(bad_.c_str(), m.get(), nullptr));
    EXPECT_TRUE(o) << bp_last_error();
    size_t n = 0;
    float *a = bp_checkpoint_get_array(bad_.c_str(), "scale", &n, nullptr);
    EXPECT_EQ(3u, n);
    std::free(a);
}

// ---- no litter -------------------------------------------------------------------------------

// A pid that no process has now: a child's, reaped.
long dead_pid() {
    pid_t p = fork();
    if (p == 0) _exit(0);
    int status = 0;
    waitpid(p, &status, 0);
    return (long)p;
}

class CheckpointLitter : public ::testing::TestWithParam<int> {
  protected:
    void SetUp() override {
        saved_ = bp_atomic_use_tmpfile;
        bp_atomic_use_tmpfile = GetParam();
        ASSERT_FALSE(dir_.path.empty());
    }
    void TearDown() override {
        bp_atomic_use_tmpfile = saved_;
    }
    // A file of n bytes through the library's atomic writer, as a checkpoint is.
    bp_status save(const std::string &path, const std::vector<float> &data) {
        bp_st_entry e{};
        e.name = "w";
        e.dtype = BP_ST_F32;
        e.ndim = 1;
        e.shape[0] = data.size();
        e.data = data.data();
        bp_st_meta_entry m = {"format", "test"};
        return bp_st_save(path.c_str(), &e, 1, &m, 1);
    }
    TempDir dir_;
    int saved_ = 1;
};

TEST_P(CheckpointLitter, StaleTemporariesOfDeadWritersAreRemovedByTheNextSave) {
    std::string target = dir_.file("m.st");
    long dead = dead_pid();
    std::string stale = target + ".tmp." + std::to_string(dead);
    std::string live = target + ".tmp." + std::to_string((long)getppid()); // a running process
    std::string other = dir_.file("other.st.tmp." + std::to_string(dead)); // another target's
    std::string odd = target + ".tmp." + std::to_string(dead) + "x";       // not the pattern
    std::string locked = target + ".tmp." + std::to_string(dead_pid());    // its writer lives on
    ASSERT_NE(stale, locked);
    for (const std::string &p : {stale, live, other, odd, locked})
        write_bytes(p, "partial");
    int lock_fd = open(locked.c_str(), O_RDONLY); // held as a writer on another host holds it
    ASSERT_GE(lock_fd, 0);
    ASSERT_EQ(0, flock(lock_fd, LOCK_EX));
    std::vector<float> data(1000, 0.5f);
    ASSERT_EQ(BP_OK, save(target, data)) << bp_last_error();
    close(lock_fd);
    auto names = dir_.entries();
    auto has = [&](const std::string &p) {
        return std::count(names.begin(), names.end(), fs::path(p).filename().string()) == 1;
    };
    EXPECT_FALSE(has(stale)) << "the dead writer's temporary file was left";
    EXPECT_TRUE(has(live)) << "a running process's temporary file was removed";
    EXPECT_TRUE(has(other)) << "another target's temporary file was removed";
    EXPECT_TRUE(has(odd));
    EXPECT_TRUE(has(locked)) << "a locked temporary file was removed";
    EXPECT_TRUE(has(target));
    EXPECT_EQ(5u, names.size());
}

// A saver killed with SIGKILL at many points of its saves: the target is always a complete file
// (the previous one or the new one), and the next save leaves no temporary file.
TEST_P(CheckpointLitter, SaversKilledAtAnyPointLeaveNothingAfterTheNextSave) {
    std::string target = dir_.file("big.st");
    std::vector<float> data((size_t)4 << 20, 0.25f); // 16 MiB: a save takes milliseconds
    ASSERT_EQ(BP_OK, save(target, data)) << bp_last_error();
    const std::string full = read_bytes(target);
    std::mt19937 gen(7);
    int litter_seen = 0, kills = 0;
    for (int round = 0; round < 24; ++round) {
        pid_t child = fork();
        ASSERT_GE(child, 0);
        if (child == 0) { // saves over and over until killed
            for (;;)
                if (save(target, data) != BP_OK) _exit(3);
        }
        usleep(2000 + (useconds_t)(gen() % 40000));
        kill(child, SIGKILL);
        int status = 0;
        ASSERT_EQ(child, waitpid(child, &status, 0));
        kills += WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
        EXPECT_EQ(full, read_bytes(target)) << "round " << round << ": the target is not whole";
        litter_seen += dir_.entries().size() > 1;
        ASSERT_EQ(BP_OK, save(target, data)) << bp_last_error();
        EXPECT_EQ(std::vector<std::string>{"big.st"}, dir_.entries()) << "round " << round;
    }
    EXPECT_EQ(24, kills);
    if (!GetParam()) { // named temporaries: most kills land mid-write and leave one behind
        EXPECT_GT(litter_seen, 0) << "no kill landed during a save: the test proves nothing";
    }
    std::printf("  %d of 24 kills left a temporary file for the next save to remove\n",
                litter_seen);
}

INSTANTIATE_TEST_SUITE_P(Schemes, CheckpointLitter, ::testing::Values(1, 0), [](const auto &info) {
    return std::string(info.param ? "Tmpfile" : "NamedTemporary");
});

// ---- PyTorch interop
// -----------------------------------------------------------------------------

void write_floats(const std::string &path, const std::vector<float> &v) {
    write_bytes(path, std::string(reinterpret_cast<const char *>(v.data()), v.size() * 4));
}

// Our checkpoint loads into the equivalent nn.Sequential with load_state_dict(strict=True), and
// PyTorch's outputs match ours to ||out - ref|| / ||ref|| <= 1e-5 (fp32 on both sides).
TEST_P(Checkpoint, LoadsIntoPyTorchAndPredictsTheSame) {
    BPT_OPEN_OR_SKIP(dev, GetParam());
    bpt::DeviceGuard guard{dev};
    std::string why, py = bpt::torch_python(&why);
    if (py.empty()) GTEST_SKIP() << why;
    TempDir dir;
    Net net;
    net.widths = {7, 16, 16, 12, 12, 10, 10, 8, 5};
    net.acts = {BP_ACT_RELU, BP_ACT_LEAKY_RELU, BP_ACT_SIGMOID, BP_ACT_TANH,
                BP_ACT_GELU, BP_ACT_GELU_TANH,  BP_ACT_SILU,    BP_ACT_IDENTITY};
    net.dropout = {0.1f, 0.0f, 0.2f, 0.0f, 0.0f, 0.3f, 0.0f, 0.0f};
    net.leaky_slope = 0.2f;
    net.max_batch = 32;
    ModelPtr m = make_model(dev, net);
    ASSERT_TRUE(m) << bp_last_error();
    bp_optim_config adam = bp_optim_config_default(BP_OPTIM_ADAM);
    OptimPtr o(bp_optimizer_create(m.get(), &adam, nullptr));
    ASSERT_TRUE(o) << bp_last_error();
    Batch b = make_batch(dev, 32, 7, 5, 4);
    CK_OK(train(m.get(), o.get(), b, 3));
    std::string ckpt = dir.file("interop.ckpt"), in = dir.file("x.f32"), out = dir.file("y.f32"),
                bad = dir.file("y_bad.f32");
    std::vector<float> scale = {1.0f, 2.0f};
    bp_meta_entry meta = {"epoch", "1"};
    bp_meta_array arr = {"scale", scale.data(), scale.size()};
    CK_OK(bp_checkpoint_save_arrays(ckpt.c_str(), m.get(), o.get(), &meta, 1, &arr, 1));

    const int rows = 32;
    std::vector<float> xs = bpt::uniform((size_t)rows * 7, -2.0f, 2.0f, 77), ys((size_t)rows * 5);
    TensorPtr x(bp_tensor_create(dev, BP_F32, rows, 7, nullptr));
    TensorPtr y(bp_tensor_create(dev, BP_F32, rows, 5, nullptr));
    ASSERT_TRUE(x && y);
    CK_OK(bp_tensor_upload(x.get(), xs.data(), xs.size()));
    CK_OK(bp_model_forward(m.get(), x.get(), BP_MODE_INFERENCE, y.get()));
    CK_OK(bp_tensor_download(y.get(), ys.data(), ys.size()));
    write_floats(in, xs);
    write_floats(out, ys);
    std::string cmd = "'" + py + "' '" BP_SOURCE_DIR "/tests/torch_interop.py' '" + ckpt + "' '" +
                      in + "' '" + out + "' " + std::to_string(rows);
    EXPECT_EQ(0, bpt::run_exit_code(cmd)) << cmd;
    // The control: predictions off by 1e-4 (relative) must fail the script.
    std::vector<float> off = ys;
    for (float &v : off)
        v *= 1.0001f;
    write_floats(bad, off);
    std::string bad_cmd = "'" + py + "' '" BP_SOURCE_DIR "/tests/torch_interop.py' '" + ckpt +
                          "' '" + in + "' '" + bad + "' " + std::to_string(rows);
    EXPECT_EQ(1, bpt::run_exit_code(bad_cmd)) << bad_cmd;
}

INSTANTIATE_TEST_SUITE_P(Backends, Checkpoint, ::testing::ValuesIn(bpt::all_backends()),
                         [](const auto &info) { return info.param; });

} // namespace
