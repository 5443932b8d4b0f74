// bp_bench_run on every backend: every op kind and a list run and come back with consistent
// statistics and the napkin math of bench.h (computed here from its formulas), the operands are
// freed, a memory limit is kept, and bad arguments are named. bp_bench_train: the steps it
// takes, its counters, a refused step. Speed itself is never asserted.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "contract.h"
#include "support.h"
#include "support_model.h"

namespace {

using bpt::DevicePtr;

constexpr bp_status INVALID = BP_ERR_INVALID_ARGUMENT;

bp_bench_options quick() {
    bp_bench_options o = bp_bench_options_default();
    o.warmup = 1;
    o.repeats = 3;
    o.min_sample_seconds = 0.001;
    o.max_inner = 20;
    return o;
}

void expect_sane(const bp_bench_result &r, const bp_bench_options &o) {
    EXPECT_EQ(r.samples, o.repeats);
    EXPECT_GE(r.inner, 1);
    EXPECT_LE(r.inner, o.max_inner);
    const bp_bench_stats &s = r.seconds;
    EXPECT_GT(s.min, 0.0);
    EXPECT_LE(s.min, s.q1);
    EXPECT_LE(s.q1, s.median);
    EXPECT_LE(s.median, s.q3);
    EXPECT_LE(s.q3, s.max);
    EXPECT_TRUE(std::isfinite(s.max));
}

class Bench : public ::testing::TestWithParam<std::string> {
  protected:
    void SetUp() override {
        std::string why;
        dev_.reset(bpt::open_or_reason(GetParam(), &why));
        if (!dev_) GTEST_SKIP() << why;
    }
    // Runs ops; checks the statistics, the napkin math against want_flops and want_bytes, and
    // that every operand is freed.
    void run(const std::vector<bp_bench_op> &ops, double want_flops, double want_bytes) {
        bp_device_stats before, after;
        BPT_OK(bp_device_get_stats(dev_.get(), &before));
        bp_bench_options o = quick();
        bp_bench_result r;
        BPT_OK(bp_bench_run(dev_.get(), ops.data(), (int)ops.size(), &o, &r));
        expect_sane(r, o);
        EXPECT_EQ(r.flops, want_flops);
        EXPECT_EQ(r.bytes, want_bytes);
        BPT_OK(bp_device_get_stats(dev_.get(), &after));
        EXPECT_EQ(after.bytes_in_use, before.bytes_in_use);
        EXPECT_GT(after.alloc_count, before.alloc_count); // the operands were made
        EXPECT_EQ(after.alloc_count - before.alloc_count, after.free_count - before.free_count);
    }
    DevicePtr dev_;
};

TEST_P(Bench, EveryOpKindWithItsNapkinMath) {
    const double m = 33, n = 20, k = 17, e = m * n;
    for (int ta = 0; ta < 2; ++ta)
        for (int tb = 0; tb < 2; ++tb) {
            SCOPED_TRACE("gemm trans " + std::to_string(ta) + std::to_string(tb));
            bp_bench_op g = bp_bench_op_default(BP_BENCH_GEMM, 33, 20, 17);
            g.trans_a = ta;
            g.trans_b = tb;
            run({g}, 2 * m * n * k, 4 * (m * k + k * n) + 4 * e);
        }
    struct Case {
        bp_bench_kind kind;
        double bytes;
    };
    const Case cases[] = {
        {BP_BENCH_BIAS_ACT, 12 * e + 4 * n},
        {BP_BENCH_ACT_BACKWARD, 12 * e},
        {BP_BENCH_COL_SUM, 4 * e + 4 * n},
        {BP_BENCH_SOFTMAX_XENT, 8 * e + 8 * m},
        {BP_BENCH_COPY, 8 * e},
    };
    for (const Case &c : cases) {
        SCOPED_TRACE(bp_bench_kind_name(c.kind));
        run({bp_bench_op_default(c.kind, 33, 20, 0)}, 0, c.bytes);
    }
    for (bp_norm k : {BP_NORM_LAYER, BP_NORM_RMS}) {
        SCOPED_TRACE(bp_norm_name(k));
        bp_bench_op op = bp_bench_op_default(BP_BENCH_NORM, 33, 20, 0);
        op.norm = k;
        run({op}, 0, 20 * e + 16 * m + (k == BP_NORM_LAYER ? 20 : 12) * n);
    }
    for (bp_activation a : {BP_ACT_GELU, BP_ACT_SIGMOID}) {
        bp_bench_op op = bp_bench_op_default(BP_BENCH_BIAS_ACT, 33, 20, 0);
        op.activation = a;
        run({op}, 0, 12 * e + 4 * n);
    }
    const bp_optim_kind opts[] = {BP_OPTIM_SGD, BP_OPTIM_ADAM, BP_OPTIM_ADAMW};
    const double per[] = {20, 28, 28};
    for (int i = 0; i < 3; ++i) {
        SCOPED_TRACE(bp_optim_kind_name(opts[i]));
        bp_bench_op op = bp_bench_op_default(BP_BENCH_UPDATE, 33, 20, 0);
        op.optimizer = opts[i];
        run({op}, 0, per[i] * e);
    }
}

// The precision modes' GEMMs: bf16 operands count 2 bytes each.
TEST_P(Bench, GemmInEachPrecision) {
    const double m = 24, n = 40, k = 32;
    for (bp_precision p : {BP_PRECISION_TF32, BP_PRECISION_BF16}) {
        SCOPED_TRACE(bp_precision_name(p));
        bp_bench_op g = bp_bench_op_default(BP_BENCH_GEMM, 24, 40, 32);
        g.precision = p;
        g.trans_b = 1;
        double ab = p == BP_PRECISION_BF16 ? 2 : 4;
        run({g}, 2 * m * n * k, ab * (m * k + k * n) + 4 * m * n);
    }
}

// A training step's GEMMs as one list (784-64-10, batch 32: forward NT per layer, dW TN per
// layer, dX NN past the first), their sums, in the memory of the largest.
TEST_P(Bench, AListOfGemmsAsAStepRunsThem) {
    const int w[] = {784, 64, 10}, b = 32;
    std::vector<bp_bench_op> ops;
    double flops = 0, bytes = 0;
    for (int l = 0; l < 2; ++l) {
        bp_bench_op f = bp_bench_op_default(BP_BENCH_GEMM, b, w[l + 1], w[l]);
        f.trans_b = 1;
        bp_bench_op dw = bp_bench_op_default(BP_BENCH_GEMM, w[l + 1], w[l], b);
        dw.trans_a = 1;
        ops.push_back(f);
        ops.push_back(dw);
        if (l > 0) ops.push_back(bp_bench_op_default(BP_BENCH_GEMM, b, w[l], w[l + 1]));
    }
    for (const auto &g : ops) {
        double m = (double)g.m, n = (double)g.n, k = (double)g.k;
        flops += 2 * m * n * k;
        bytes += 4 * (m * k + k * n) + 4 * m * n;
    }
    run(ops, flops, bytes);
}

// inner is what the options ask: 1 when any sample length will do, max_inner when none will.
TEST_P(Bench, SamplesFollowTheOptions) {
    bp_bench_op op = bp_bench_op_default(BP_BENCH_COPY, 64, 64, 0);
    bp_bench_options o = quick();
    o.min_sample_seconds = 0.0;
    o.repeats = 5;
    bp_bench_result r;
    BPT_OK(bp_bench_run(dev_.get(), &op, 1, &o, &r));
    EXPECT_EQ(r.inner, 1);
    EXPECT_EQ(r.samples, 5);
    o.min_sample_seconds = 3600.0;
    o.max_inner = 3;
    BPT_OK(bp_bench_run(dev_.get(), &op, 1, &o, &r));
    EXPECT_EQ(r.inner, 3);
    expect_sane(r, o);
}

// Operands past a memory limit: the allocation's status, nothing kept.
TEST_P(Bench, AMemoryLimitIsKept) {
    bp_device_stats before, after;
    BPT_OK(bp_device_get_stats(dev_.get(), &before));
    BPT_OK(bp_device_set_memory_limit(dev_.get(), before.bytes_in_use + 4096));
    bp_bench_op op = bp_bench_op_default(BP_BENCH_GEMM, 256, 256, 256);
    bp_bench_result r;
    bp_bench_options o = quick();
    EXPECT_FAILS(BP_ERR_OUT_OF_MEMORY, "bp_bench_run", bp_bench_run(dev_.get(), &op, 1, &o, &r));
    BPT_OK(bp_device_get_stats(dev_.get(), &after));
    EXPECT_EQ(after.bytes_in_use, before.bytes_in_use);
    BPT_OK(bp_device_set_memory_limit(dev_.get(), 0));
}

// ---- bp_bench_train ----

// A 4-8-3 classifier, Adam, and a batch of 16 for it (labels: bad_label in row 5 when >= 0).
struct TrainSetup {
    bpt::ModelPtr model;
    bpt::OptimPtr opt;
    bpt::TensorPtr x, y;
    bp_loss_config loss = {BP_LOSS_CROSS_ENTROPY, 0.0f};

    void make(bp_device *dev, int bad_label = -1) {
        const int widths[] = {4, 8, 3};
        bp_mlp_config mc = bp_mlp_config_default(2, widths);
        mc.max_batch = 16;
        bp_status st = BP_OK;
        model.reset(bp_model_create(dev, &mc, &st));
        ASSERT_TRUE(model) << bp_last_error();
        bp_optim_config oc = bp_optim_config_default(BP_OPTIM_ADAM);
        opt.reset(bp_optimizer_create(model.get(), &oc, &st));
        ASSERT_TRUE(opt) << bp_last_error();
        std::vector<float> hx(16 * 4);
        std::vector<int32_t> labels(16);
        for (size_t i = 0; i < hx.size(); ++i)
            hx[i] = (float)((i * 7) % 11) / 11.0f - 0.5f;
        for (int r = 0; r < 16; ++r)
            labels[r] = r == 5 && bad_label >= 0 ? bad_label : r % 3;
        bpt::upload_f32(dev, 16, 4, hx, &x);
        bpt::upload_target(dev, BP_LOSS_CROSS_ENTROPY, 16, 3, {}, labels, &y);
    }
};

TEST_P(Bench, TrainTimesStepsAndCountsTheDevicesWork) {
    TrainSetup t;
    ASSERT_NO_FATAL_FAILURE(t.make(dev_.get()));
    bp_bench_options o = quick();
    bp_bench_train_result r;
    BPT_OK(bp_bench_train(t.model.get(), t.opt.get(), &t.loss, t.x.get(), t.y.get(), &o, &r));
    EXPECT_EQ(r.samples, o.repeats);
    EXPECT_GE(r.inner, 1);
    EXPECT_LE(r.inner, o.max_inner);
    for (const bp_bench_stats *s :
         {&r.seconds, &r.forward_seconds, &r.backward_seconds, &r.update_seconds}) {
        EXPECT_GT(s->min, 0.0);
        EXPECT_LE(s->min, s->median);
        EXPECT_LE(s->median, s->max);
    }
    EXPECT_DOUBLE_EQ(r.samples_per_second, 16.0 / r.seconds.median);
    // The warm-up, the sizing step, the samples' steps and their parts' updates.
    EXPECT_EQ(bp_optimizer_steps(t.opt.get()), o.warmup + 1 + 2 * o.repeats * r.inner);
    // Each sample read its steps' results (that is its wait): none is left unread.
    bp_step_totals left{};
    BPT_OK(bp_train_results(t.opt.get(), 1, &left));
    EXPECT_EQ(left.steps, 0);
    if (bp_device_get_kind(dev_.get()) == BP_DEVICE_CUDA) {
        // A steady step replays its graph: the scalars' upload and the state's copy back are
        // its only launches outside it, and the timed steps never wait (the sample's one wait
        // is the benchmark's and not counted).
        EXPECT_EQ(r.graph_launches_per_step, 1.0);
        EXPECT_EQ(r.launches_per_step, 2.0);
        EXPECT_EQ(r.host_waits_per_step, 0.0);
    } else {
        EXPECT_EQ(r.launches_per_step, 0.0);
        EXPECT_EQ(r.host_waits_per_step, 0.0);
        EXPECT_EQ(r.graph_launches_per_step, 0.0);
    }
    for (double v : {r.launches_per_step, r.host_waits_per_step, r.graph_launches_per_step})
        EXPECT_TRUE(std::isfinite(v));
}

// A refused step (a label outside the classes) fails the call with the step's status.
TEST_P(Bench, TrainReportsARefusedStep) {
    TrainSetup t;
    ASSERT_NO_FATAL_FAILURE(t.make(dev_.get(), 7));
    bp_bench_options o = quick();
    bp_bench_train_result r;
    EXPECT_FAILS(INVALID, "target row 5 holds a class outside [0, 3)",
                 bp_bench_train(t.model.get(), t.opt.get(), &t.loss, t.x.get(), t.y.get(), &o, &r));
}

INSTANTIATE_TEST_SUITE_P(Backends, Bench, ::testing::ValuesIn(bpt::all_backends()),
                         [](const ::testing::TestParamInfo<std::string> &i) { return i.param; });

TEST(ApiContract, Bench) {
    bp_device *dev = bp_device_open("cpu", nullptr);
    ASSERT_NE(dev, nullptr) << bp_last_error();
    bpt::DeviceGuard guard{dev};
    bp_bench_options d = bp_bench_options_default();
    EXPECT_EQ(d.warmup, 2);
    EXPECT_EQ(d.repeats, 10);
    EXPECT_EQ(d.min_sample_seconds, 0.02);
    EXPECT_EQ(d.max_inner, 1000);
    bp_bench_op op = bp_bench_op_default(BP_BENCH_COPY, 4, 4, 0);
    EXPECT_EQ(op.precision, BP_PRECISION_FP32);
    EXPECT_EQ(op.activation, BP_ACT_RELU);
    EXPECT_EQ(op.optimizer, BP_OPTIM_SGD);
    EXPECT_EQ(op.norm, BP_NORM_LAYER);
    bp_bench_result r;
    EXPECT_FAILS(INVALID, "bp_bench_run", bp_bench_run(nullptr, &op, 1, nullptr, &r));
    EXPECT_ERROR_HAS("device is NULL");
    EXPECT_FAILS(INVALID, "bp_bench_run", bp_bench_run(dev, nullptr, 1, nullptr, &r));
    EXPECT_FAILS(INVALID, "bp_bench_run", bp_bench_run(dev, &op, 1, nullptr, nullptr));
    EXPECT_ERROR_HAS("result is NULL");
    EXPECT_FAILS(INVALID, "bp_bench_run", bp_bench_run(dev, &op, 0, nullptr, &r));
    EXPECT_ERROR_HAS("n_ops is 0");

    struct BadOp {
        const char *part;
        void (*change)(bp_bench_op *);
    };
    const BadOp bad_ops[] = {
        {"ops[1].kind is 8", [](bp_bench_op *o) { o->kind = BP_BENCH_KIND_COUNT_; }},
        {"ops[1].m is 0", [](bp_bench_op *o) { o->m = 0; }},
        {"ops[1].n is 2147483648", [](bp_bench_op *o) { o->n = INT64_C(1) << 31; }},
        {"over 2^40", [](bp_bench_op *o) { o->m = o->n = INT64_C(1) << 21; }},
        {"ops[1].k is 0", [](bp_bench_op *o) { *o = bp_bench_op_default(BP_BENCH_GEMM, 2, 2, 0); }},
        {"trans_a and trans_b are 0 or 1",
         [](bp_bench_op *o) {
             *o = bp_bench_op_default(BP_BENCH_GEMM, 2, 2, 2);
             o->trans_b = 2;
         }},
        {"ops[1].precision is 9",
         [](bp_bench_op *o) {
             *o = bp_bench_op_default(BP_BENCH_GEMM, 2, 2, 2);
             o->precision = (bp_precision)9;
         }},
        {"ops[1].activation is 99",
         [](bp_bench_op *o) {
             o->kind = BP_BENCH_ACT_BACKWARD;
             o->activation = (bp_activation)99;
         }},
        {"ops[1].optimizer is 7",
         [](bp_bench_op *o) {
             o->kind = BP_BENCH_UPDATE;
             o->optimizer = (bp_optim_kind)7;
         }},
        {"ops[1].norm is 0, expected BP_NORM_LAYER or BP_NORM_RMS",
         [](bp_bench_op *o) {
             o->kind = BP_BENCH_NORM;
             o->norm = BP_NORM_NONE;
         }},
    };
    for (const BadOp &b : bad_ops) {
        SCOPED_TRACE(b.part);
        bp_bench_op ops[2] = {op, op};
        b.change(&ops[1]);
        EXPECT_FAILS(INVALID, "bp_bench_run", bp_bench_run(dev, ops, 2, nullptr, &r));
        EXPECT_ERROR_HAS(b.part);
    }
    struct BadOption {
        const char *part;
        void (*change)(bp_bench_options *);
    };
    const BadOption bad_options[] = {
        {"options.warmup is -1", [](bp_bench_options *o) { o->warmup = -1; }},
        {"options.repeats is 0", [](bp_bench_options *o) { o->repeats = 0; }},
        {"options.min_sample_seconds is -1",
         [](bp_bench_options *o) { o->min_sample_seconds = -1; }},
        {"options.min_sample_seconds is nan",
         [](bp_bench_options *o) { o->min_sample_seconds = NAN; }},
        {"options.max_inner is 0", [](bp_bench_options *o) { o->max_inner = 0; }},
    };
    for (const BadOption &b : bad_options) {
        SCOPED_TRACE(b.part);
        bp_bench_options o = bp_bench_options_default();
        b.change(&o);
        EXPECT_FAILS(INVALID, "bp_bench_run", bp_bench_run(dev, &op, 1, &o, &r));
        EXPECT_ERROR_HAS(b.part);
    }
}

TEST(ApiContract, BenchTrain) {
    bp_device *dev = bp_device_open("cpu", nullptr);
    ASSERT_NE(dev, nullptr) << bp_last_error();
    bpt::DeviceGuard guard{dev};
    TrainSetup t;
    ASSERT_NO_FATAL_FAILURE(t.make(dev));
    bp_model *m = t.model.get();
    bp_optimizer *o = t.opt.get();
    const bp_tensor *x = t.x.get(), *y = t.y.get();
    const bp_loss_config *l = &t.loss;
    bp_bench_train_result r;
    EXPECT_FAILS(INVALID, "model is NULL", bp_bench_train(nullptr, o, l, x, y, nullptr, &r));
    EXPECT_FAILS(INVALID, "optimizer is NULL", bp_bench_train(m, nullptr, l, x, y, nullptr, &r));
    EXPECT_FAILS(INVALID, "loss is NULL", bp_bench_train(m, o, nullptr, x, y, nullptr, &r));
    EXPECT_FAILS(INVALID, "x is NULL", bp_bench_train(m, o, l, nullptr, y, nullptr, &r));
    EXPECT_FAILS(INVALID, "target is NULL", bp_bench_train(m, o, l, x, nullptr, nullptr, &r));
    EXPECT_FAILS(INVALID, "result is NULL", bp_bench_train(m, o, l, x, y, nullptr, nullptr));
    bp_bench_options bad = bp_bench_options_default();
    bad.repeats = 0;
    EXPECT_FAILS(INVALID, "bp_bench_train: options.repeats is 0",
                 bp_bench_train(m, o, l, x, y, &bad, &r));
    EXPECT_EQ(bp_optimizer_steps(o), 0); // nothing ran
}

} // namespace
