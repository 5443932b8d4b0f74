// The CPU backend's matrix engine (oneDNN where the build has it, else CBLAS): a training step
// makes no primitive and allocates nothing, the device's thread count is the one the engine
// uses, and at one thread count (and one ISA) a training run repeats bit for bit.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "support.h"
#include "support_model.h"

extern "C" {
#include "cpu/cpu_internal.h"
}

namespace {

constexpr int kWidths[] = {64, 96, 80, 10};
constexpr int kMaxBatch = 32;

bp_device *open_cpu(int threads) {
    bp_device_options o = bp_device_options_default();
    o.threads = threads;
    return bp_device_open_ex("cpu", &o, nullptr);
}

// A ReLU network without dropout, so every hidden layer is fused where the engine fuses.
struct Net {
    bpt::ModelPtr model;
    bpt::OptimPtr opt;
    bpt::TensorPtr x, y, xs, ys; // a full batch and a short one
};

void make_net(bp_device *dev, bp_precision prec, uint64_t seed, Net *n) {
    bp_mlp_config cfg = bp_mlp_config_default(3, kWidths);
    cfg.max_batch = kMaxBatch;
    cfg.seed = seed;
    cfg.precision = prec;
    n->model.reset(bp_model_create(dev, &cfg, nullptr));
    ASSERT_TRUE(n->model) << bp_last_error();
    bp_optim_config oc = bp_optim_config_default(BP_OPTIM_ADAMW);
    n->opt.reset(bp_optimizer_create(n->model.get(), &oc, nullptr));
    ASSERT_TRUE(n->opt) << bp_last_error();
    for (int rows : {kMaxBatch, 20}) {
        auto xv = bpt::uniform((size_t)rows * kWidths[0], -1.0f, 1.0f, 900 + rows);
        std::vector<int32_t> labels(rows);
        for (int i = 0; i < rows; ++i)
            labels[i] = (i * 7 + 3) % kWidths[3];
        bool full = rows == kMaxBatch;
        ASSERT_NO_FATAL_FAILURE(bpt::upload_f32(dev, rows, kWidths[0], xv, full ? &n->x : &n->xs));
        ASSERT_NO_FATAL_FAILURE(bpt::upload_target(dev, BP_LOSS_CROSS_ENTROPY, rows, 1, {}, labels,
                                                   full ? &n->y : &n->ys));
    }
}

void step(Net *n, bool short_batch) {
    bp_loss_config ce = {BP_LOSS_CROSS_ENTROPY, 0.0f};
    ASSERT_EQ(BP_OK, bp_train_step(n->model.get(), n->opt.get(), &ce,
                                   short_batch ? n->xs.get() : n->x.get(),
                                   short_batch ? n->ys.get() : n->y.get(), nullptr))
        << bp_last_error();
}

std::vector<float> params_of(const Net &n) {
    std::vector<float> p(bp_model_n_params(n.model.get()));
    EXPECT_EQ(BP_OK, bp_model_get_params(n.model.get(), p.data(), p.size())) << bp_last_error();
    return p;
}

const bp_precision kPrecisions[] = {BP_PRECISION_FP32, BP_PRECISION_BF16};

// Plans are made with the model; a step only runs them. A short batch makes its shapes once
// (at most one primitive per GEMM: three a layer), and never again.
TEST(CpuEngine, ATrainingStepMakesNoPrimitiveAndAllocatesNothing) {
    if (!BP_HAVE_ONEDNN)
        GTEST_SKIP() << "this build multiplies through CBLAS (BP_ONEDNN=OFF or no oneDNN): it "
                        "makes no primitives";
    for (bp_precision prec : kPrecisions) {
        SCOPED_TRACE(bp_precision_name(prec));
        bp_device *dev = open_cpu(0);
        ASSERT_TRUE(dev) << bp_last_error();
        bpt::DeviceGuard guard{dev};
        Net n;
        ASSERT_NO_FATAL_FAILURE(make_net(dev, prec, 5, &n));
        char engine[256]; // (asking makes a primitive of its own: before the count)
        ASSERT_EQ(BP_OK, bp_device_matrix_engine(dev, prec, engine, sizeof engine));
        uint64_t made = bp_dnnl_primitives_made(dev);
        // Widened to fp32 (a CPU without bf16 units) the plans make no primitives.
        if (std::strstr(engine, "matmul")) {
            EXPECT_GT(made, 0u) << "the model's plans made no primitive";
        }
        bp_device_stats before, after;
        ASSERT_EQ(BP_OK, bp_device_get_stats(dev, &before));
        for (int s = 0; s < 4; ++s)
            ASSERT_NO_FATAL_FAILURE(step(&n, false));
        EXPECT_EQ(made, bp_dnnl_primitives_made(dev)) << "a full-batch step made a primitive";
        ASSERT_NO_FATAL_FAILURE(step(&n, true));
        uint64_t after_short = bp_dnnl_primitives_made(dev);
        EXPECT_LE(after_short - made, 3u * 3u) << "more than one primitive per GEMM";
        for (int s = 0; s < 3; ++s) {
            ASSERT_NO_FATAL_FAILURE(step(&n, true));
            ASSERT_NO_FATAL_FAILURE(step(&n, false));
        }
        EXPECT_EQ(after_short, bp_dnnl_primitives_made(dev)) << "a repeated shape was made again";
        ASSERT_EQ(BP_OK, bp_device_get_stats(dev, &after));
        EXPECT_EQ(before.alloc_count, after.alloc_count) << "a step allocated device memory";
    }
}

// Each thread count, in each precision: two runs on two devices end bitwise the same. A
// different seed changes the result (else equality would prove nothing).
TEST(CpuEngine, TheSameThreadCountRepeatsBitwise) {
    for (bp_precision prec : kPrecisions) {
        for (int threads : {1, 2}) {
            SCOPED_TRACE(std::string(bp_precision_name(prec)) + ", threads " +
                         std::to_string(threads));
            std::vector<float> runs[3];
            for (int r = 0; r < 3; ++r) {
                bp_device *dev = open_cpu(threads);
                ASSERT_TRUE(dev) << bp_last_error();
                bpt::DeviceGuard guard{dev};
                Net n;
                ASSERT_NO_FATAL_FAILURE(make_net(dev, prec, r == 2 ? 6 : 5, &n));
                for (int s = 0; s < 12; ++s)
                    ASSERT_NO_FATAL_FAILURE(step(&n, s % 4 == 3));
                runs[r] = params_of(n);
            }
            ASSERT_EQ(runs[0].size(), runs[1].size());
            EXPECT_EQ(0, std::memcmp(runs[0].data(), runs[1].data(), runs[0].size() * 4));
            EXPECT_NE(0, std::memcmp(runs[0].data(), runs[2].data(), runs[0].size() * 4));
        }
    }
}

// The option is the engine's thread count, and bp_device_matrix_engine says so.
TEST(CpuEngine, TheThreadsOptionIsTheEnginesCount) {
    for (int threads : {1, 3}) {
        bp_device *dev = open_cpu(threads);
        ASSERT_TRUE(dev) << bp_last_error();
        bpt::DeviceGuard guard{dev};
        EXPECT_EQ(threads, bp_cpu_threads(dev));
        for (bp_precision prec : kPrecisions) {
            char text[256];
            ASSERT_EQ(BP_OK, bp_device_matrix_engine(dev, prec, text, sizeof text))
                << bp_last_error();
            EXPECT_NE(nullptr, std::strstr(text, ("threads: " + std::to_string(threads)).c_str()))
                << text;
        }
    }
    bp_device *dev = open_cpu(0);
    ASSERT_TRUE(dev);
    EXPECT_GE(bp_cpu_threads(dev), 1) << "the default count";
    char text[8];
    EXPECT_EQ(BP_ERR_INVALID_ARGUMENT, bp_device_matrix_engine(dev, (bp_precision)7, text, 8));
    EXPECT_EQ(BP_ERR_INVALID_ARGUMENT, bp_device_matrix_engine(dev, BP_PRECISION_FP32, text, 0));
    bp_device_close(dev);
}

// The default count leaves out the cores other processes keep busy, never those of this
// process's own threads: a thread of ours spinning (as an OpenMP team does after its last loop)
// must not take a core from the next device opened. With the machine quiet, counting it cost a
// core (2 -> 1 on 2 cores). Another process's load moves between calls, so a few tries; under a
// steady outside load that already leaves 1 core the case cannot tell and passes.
TEST(CpuEngine, TheDefaultCountDoesNotCountTheProcesssOwnThreads) {
    if (std::getenv("OMP_NUM_THREADS"))
        GTEST_SKIP() << "OMP_NUM_THREADS is set: it is the default count, nothing is measured";
    if (bp_cpu_default_threads() < 2 && std::thread::hardware_concurrency() < 2)
        GTEST_SKIP() << "one core: there is no second core to lose";
    // The default count while a thread of this process spins
    auto with_spinner = [] {
        std::atomic<bool> stop{false};
        std::thread spinner([&stop] {
            while (!stop.load(std::memory_order_relaxed)) {
            }
        });
        int n = bp_cpu_default_threads();
        stop = true;
        spinner.join();
        return n;
    };
    int without = 0, with = 0;
    for (int attempt = 0; attempt < 5 && (attempt == 0 || with != without); ++attempt) {
        with = with_spinner();
        without = bp_cpu_default_threads();
    }
    EXPECT_EQ(without, with) << "a spinning thread of this process took a core from the default";
}

} // namespace
