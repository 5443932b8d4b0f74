// The training step that does not wait (train.h): with no loss_value, bp_train_step queues the
// step; its results are read later (bp_train_results), and a refused step is reported by the
// next call that reads, naming the step, having changed nothing. On every backend.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <dlfcn.h>
#include <link.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/backend.h"
#include "cudaemu/include/cudaemu.h"
#include "support.h"
#include "support_model.h"

namespace {

using bpt::DevicePtr;
using bpt::ModelPtr;
using bpt::OptimPtr;
using bpt::TensorPtr;
using ::testing::HasSubstr;

const int kWidths[] = {6, 12, 4};
const int kRows = 8;

struct Trainer {
    ModelPtr model;
    OptimPtr opt;
    TensorPtr x, y;
};

// Adam with norm clipping at 0.05, so the device's clip coefficient is below 1 in every step.
void make_run(bp_device *dev, Trainer *r, int accum = 1, bp_precision precision = BP_PRECISION_FP32,
              int outputs = kWidths[2]) {
    const int widths[] = {kWidths[0], kWidths[1], outputs};
    bp_mlp_config cfg = bp_mlp_config_default(2, widths);
    cfg.seed = 5;
    cfg.max_batch = kRows;
    cfg.precision = precision;
    bp_status st;
    r->model.reset(bp_model_create(dev, &cfg, &st));
    ASSERT_TRUE(r->model) << bp_last_error();
    bp_optim_config oc = bp_optim_config_default(BP_OPTIM_ADAM);
    oc.lr = 0.01;
    oc.clip_norm = 0.05;
    oc.accum_steps = accum;
    r->opt.reset(bp_optimizer_create(r->model.get(), &oc, &st));
    ASSERT_TRUE(r->opt) << bp_last_error();
    ASSERT_NO_FATAL_FAILURE(bpt::new_tensor(dev, BP_F32, kRows, kWidths[0], &r->x));
    ASSERT_NO_FATAL_FAILURE(bpt::new_tensor(dev, BP_I32, kRows, 1, &r->y));
}

std::vector<float> batch_x(int step) {
    return bpt::uniform((size_t)kRows * kWidths[0], -1.0f, 1.0f, 100 + (uint32_t)step);
}

std::vector<int32_t> batch_y(int step) {
    std::vector<int32_t> y(kRows);
    for (int i = 0; i < kRows; ++i)
        y[i] = (i * 3 + step) % kWidths[2];
    return y;
}

void upload_batch(Trainer *r, const std::vector<float> &x, const std::vector<int32_t> &y) {
    BPT_OK(bp_tensor_upload(r->x.get(), x.data(), x.size()));
    BPT_OK(bp_tensor_upload(r->y.get(), y.data(), y.size()));
}

// Parameters, then the optimizer state, then its step count as a float.
std::vector<float> snapshot(Trainer *r) {
    size_t n = bp_model_n_params(r->model.get()), s = bp_optimizer_state_size(r->opt.get());
    std::vector<float> out(n + s + 1);
    int64_t steps = -1;
    EXPECT_EQ(bp_model_get_params(r->model.get(), out.data(), n), BP_OK) << bp_last_error();
    EXPECT_EQ(bp_optimizer_get_state(r->opt.get(), out.data() + n, s, &steps), BP_OK)
        << bp_last_error();
    out[n + s] = (float)steps;
    return out;
}

bool same_bits(const std::vector<float> &a, const std::vector<float> &b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

const bp_loss_config kCe = {BP_LOSS_CROSS_ENTROPY, 0.0f};

class StepQueue : public ::testing::TestWithParam<std::string> {};

// 20 steps asked for their loss and 20 queued give the same bits: parameters, Adam's state,
// the step count, and the losses (the queued ones summed by bp_train_results).
TEST_P(StepQueue, WaitingAndQueuedStepsAreBitwiseEqual) {
    BPT_OPEN_OR_SKIP(raw, GetParam());
    DevicePtr dev(raw);
    Trainer a, b;
    ASSERT_NO_FATAL_FAILURE(make_run(dev.get(), &a));
    ASSERT_NO_FATAL_FAILURE(make_run(dev.get(), &b));
    double sum = 0.0;
    float last = 0.0f;
    for (int step = 0; step < 20; ++step) {
        upload_batch(&a, batch_x(step), batch_y(step));
        upload_batch(&b, batch_x(step), batch_y(step));
        BPT_OK(bp_train_step(a.model.get(), a.opt.get(), &kCe, a.x.get(), a.y.get(), &last));
        sum += (double)last;
        BPT_OK(bp_train_step(b.model.get(), b.opt.get(), &kCe, b.x.get(), b.y.get(), nullptr));
    }
    EXPECT_EQ(bp_optimizer_steps(b.opt.get()), 20);
    bp_step_totals tot;
    BPT_OK(bp_train_results(b.opt.get(), 1, &tot));
    EXPECT_EQ(tot.steps, 20);
    EXPECT_EQ(tot.loss_sum, sum);
    EXPECT_EQ(tot.last.step, 19);
    EXPECT_EQ(tot.last.loss, last);
    EXPECT_EQ(tot.rows, 20 * kRows);
    EXPECT_TRUE(same_bits(snapshot(&a), snapshot(&b)));
    BPT_OK(bp_train_results(b.opt.get(), 1, &tot));
    EXPECT_EQ(tot.steps, 0) << "each step is counted by one call";
}

// Runs two good steps, then the bad batch queued, then a good one queued; exactly one of the
// later calls reports the bad step (want, naming "step 2"), and the model and optimizer are as
// after the two good steps. A step after that trains again.
void expect_reported_later(Trainer *r, const std::vector<float> &bad_x,
                           const std::vector<int32_t> &bad_y, bp_status want,
                           const std::string &text) {
    for (int step = 0; step < 2; ++step) {
        upload_batch(r, batch_x(step), batch_y(step));
        BPT_OK(bp_train_step(r->model.get(), r->opt.get(), &kCe, r->x.get(), r->y.get(), nullptr));
    }
    std::vector<float> before = snapshot(r);
    upload_batch(r, bad_x, bad_y);
    BPT_OK(bp_train_step(r->model.get(), r->opt.get(), &kCe, r->x.get(), r->y.get(), nullptr));
    upload_batch(r, batch_x(3), batch_y(3));
    int reports = 0;
    // On a device that has run the bad step by now, this call finds it and queues nothing.
    bp_status st =
        bp_train_step(r->model.get(), r->opt.get(), &kCe, r->x.get(), r->y.get(), nullptr);
    if (st != BP_OK) {
        ++reports;
        EXPECT_EQ(st, want);
        EXPECT_THAT(std::string(bp_last_error()), HasSubstr("step 2 was refused"));
        EXPECT_THAT(std::string(bp_last_error()), HasSubstr(text));
    }
    bp_step_totals tot;
    st = bp_train_results(r->opt.get(), 1, &tot);
    if (st != BP_OK) {
        ++reports;
        EXPECT_EQ(st, want);
        EXPECT_THAT(std::string(bp_last_error()), HasSubstr("step 2 was refused"));
        EXPECT_THAT(std::string(bp_last_error()), HasSubstr(text));
    }
    EXPECT_EQ(reports, 1) << "the refusal is reported once";
    EXPECT_EQ(bp_optimizer_steps(r->opt.get()), 2);
    EXPECT_TRUE(same_bits(before, snapshot(r))) << "the refused step changed something";
    float loss = 0.0f;
    BPT_OK(bp_train_step(r->model.get(), r->opt.get(), &kCe, r->x.get(), r->y.get(), &loss));
    EXPECT_TRUE(std::isfinite(loss));
    EXPECT_EQ(bp_optimizer_steps(r->opt.get()), 3);
    EXPECT_FALSE(same_bits(before, snapshot(r))) << "training did not go on after the refusal";
}

TEST_P(StepQueue, AQueuedNonFiniteStepIsReportedLaterAndChangesNothing) {
    BPT_OPEN_OR_SKIP(raw, GetParam());
    DevicePtr dev(raw);
    Trainer r;
    ASSERT_NO_FATAL_FAILURE(make_run(dev.get(), &r));
    std::vector<float> x = batch_x(2);
    x[3 * kWidths[0] + 1] = std::numeric_limits<float>::quiet_NaN();
    expect_reported_later(&r, x, batch_y(2), BP_ERR_NON_FINITE, "the loss is nan");
}

TEST_P(StepQueue, AQueuedBadLabelIsReportedLaterNamingTheRow) {
    BPT_OPEN_OR_SKIP(raw, GetParam());
    DevicePtr dev(raw);
    Trainer r;
    ASSERT_NO_FATAL_FAILURE(make_run(dev.get(), &r));
    std::vector<int32_t> y = batch_y(2);
    y[5] = kWidths[2];
    expect_reported_later(&r, batch_x(2), y, BP_ERR_INVALID_ARGUMENT,
                          "target row 5 holds a class outside [0, 4)");
}

// The same in the second of two micro-batches: its row is named by its index in the step's
// batch (the loss head of the second micro-batch sees it as its own row 1).
TEST_P(StepQueue, ABadLabelInALaterMicroBatchIsNamedByItsRowInTheBatch) {
    BPT_OPEN_OR_SKIP(raw, GetParam());
    DevicePtr dev(raw);
    Trainer r;
    ASSERT_NO_FATAL_FAILURE(make_run(dev.get(), &r, 2));
    std::vector<int32_t> y = batch_y(2);
    y[5] = -1;
    y[7] = kWidths[2];
    expect_reported_later(&r, batch_x(2), y, BP_ERR_INVALID_ARGUMENT,
                          "target row 5 holds a class outside [0, 4)");
}

TEST_P(StepQueue, ResultsContract) {
    BPT_OPEN_OR_SKIP(raw, GetParam());
    DevicePtr dev(raw);
    Trainer r;
    ASSERT_NO_FATAL_FAILURE(make_run(dev.get(), &r));
    bp_step_totals tot;
    EXPECT_EQ(bp_train_results(nullptr, 1, &tot), BP_ERR_INVALID_ARGUMENT);
    EXPECT_THAT(std::string(bp_last_error()), HasSubstr("bp_train_results: optimizer is NULL"));
    EXPECT_EQ(bp_train_results(r.opt.get(), 1, nullptr), BP_ERR_INVALID_ARGUMENT);
    EXPECT_THAT(std::string(bp_last_error()), HasSubstr("totals is NULL"));
    EXPECT_EQ(bp_train_results(r.opt.get(), 2, &tot), BP_ERR_INVALID_ARGUMENT);
    EXPECT_THAT(std::string(bp_last_error()), HasSubstr("wait is 2, expected 0 or 1"));
    tot.steps = -1;
    BPT_OK(bp_train_results(r.opt.get(), 0, &tot));
    EXPECT_EQ(tot.steps, 0) << "no step yet";
}

// ---- graphs (bp_device_options.graphs) ----

// The emulated device's own counts, when the CUDA backend runs on it (found in the loaded
// module, which links cudaemu; absent on a GPU build): an account of the host's waits that does
// not rely on the backend counting its own calls. Only its declarations are included here.
using EmuCounts = cudaemu_counts;
using EmuGetCounts = decltype(&cudaemu_get_counts);

int find_module(struct dl_phdr_info *info, size_t, void *out) {
    const char *name = info->dlpi_name ? info->dlpi_name : "";
    size_t len = std::strlen(name), want = std::strlen("libbackprop_cuda.so");
    if (len >= want && std::strcmp(name + len - want, "libbackprop_cuda.so") == 0) {
        *(std::string *)out = name;
        return 1;
    }
    return 0;
}

EmuGetCounts emu_counts() {
    std::string path;
    dl_iterate_phdr(find_module, &path);
    void *h = path.empty() ? nullptr : dlopen(path.c_str(), RTLD_NOW | RTLD_NOLOAD);
    void *f = h ? dlsym(h, "cudaemu_get_counts") : nullptr;
    if (h) dlclose(h);
    return reinterpret_cast<EmuGetCounts>(f);
}

DevicePtr open_with_graphs(const std::string &name, int graphs) {
    bp_device_options o = bp_device_options_default();
    EXPECT_EQ(o.graphs, 1) << "graphs are on by default";
    o.graphs = graphs;
    bp_status st;
    return DevicePtr(bp_device_open_ex(name.c_str(), &o, &st));
}

// Steps with a schedule, a learning rate and a weight decay changed between steps, and
// gradient accumulation: the same bits with graphs on and off. On CUDA the graphed run records
// its step and replays it (counted); a changed weight decay records it again.
TEST_P(StepQueue, GraphsOnAndOffAreBitwiseEqual) {
    if (!bp_device_available(GetParam().c_str())) GTEST_SKIP() << GetParam() << " not available";
    int cuda = GetParam() == "cuda";
    for (int accum : {1, 2}) {
        SCOPED_TRACE("accum_steps " + std::to_string(accum));
        DevicePtr on = open_with_graphs(GetParam(), 1), off = open_with_graphs(GetParam(), 0);
        ASSERT_TRUE(on && off) << bp_last_error();
        Trainer a, b;
        ASSERT_NO_FATAL_FAILURE(make_run(on.get(), &a));
        ASSERT_NO_FATAL_FAILURE(make_run(off.get(), &b));
        for (Trainer *t : {&a, &b}) {
            // Adam's weight decay is a kernel argument (AdamW's reaches the update through the
            // step's scalars), so changing it must record the step again.
            bp_optim_config oc = bp_optim_config_default(BP_OPTIM_ADAM);
            oc.lr = 0.02;
            oc.accum_steps = accum;
            oc.clip_norm = 0.05;
            oc.schedule.kind = BP_SCHEDULE_COSINE;
            oc.schedule.warmup_steps = 3;
            oc.schedule.total_steps = 20;
            bp_status st;
            t->opt.reset(bp_optimizer_create(t->model.get(), &oc, &st));
            ASSERT_TRUE(t->opt) << bp_last_error();
        }
        bp_device_counters c0, c1;
        BPT_OK(bp_device_get_counters(on.get(), &c0));
        for (int step = 0; step < 20; ++step) {
            for (Trainer *t : {&a, &b}) {
                upload_batch(t, batch_x(step), batch_y(step));
                if (step == 7) {
                    BPT_OK(bp_optimizer_set_lr(t->opt.get(), 0.005));
                }
                if (step == 12) {
                    BPT_OK(bp_optimizer_set_weight_decay(t->opt.get(), 0.1));
                }
                BPT_OK(bp_train_step(t->model.get(), t->opt.get(), &kCe, t->x.get(), t->y.get(),
                                     nullptr));
            }
        }
        BPT_OK(bp_device_get_counters(on.get(), &c1));
        bp_step_totals ta, tb;
        BPT_OK(bp_train_results(a.opt.get(), 1, &ta));
        BPT_OK(bp_train_results(b.opt.get(), 1, &tb));
        EXPECT_EQ(ta.steps, 20);
        EXPECT_EQ(ta.loss_sum, tb.loss_sum);
        EXPECT_TRUE(same_bits(snapshot(&a), snapshot(&b)));
        // Recorded at steps 1 and 13 (the weight decay is part of what a recording holds), run
        // eagerly at steps 0 and 12: 18 replays.
        EXPECT_EQ(c1.graph_launches - c0.graph_launches, cuda ? 18u : 0u);
    }
}

// A steady step on CUDA: one replay, one upload of its scalars and one copy of its state back,
// and no wait for the device, by the backend's count and by the emulated device's own.
TEST_P(StepQueue, ASteadyStepWaitsForNothing) {
    if (GetParam() != "cuda") GTEST_SKIP() << "the CPU runs each op as it is called";
    BPT_OPEN_OR_SKIP(raw, GetParam());
    DevicePtr dev(raw);
    Trainer r;
    ASSERT_NO_FATAL_FAILURE(make_run(dev.get(), &r));
    upload_batch(&r, batch_x(0), batch_y(0));
    for (int step = 0; step < 3; ++step) // recorded at the second
        BPT_OK(bp_train_step(r.model.get(), r.opt.get(), &kCe, r.x.get(), r.y.get(), nullptr));
    EmuGetCounts emu = emu_counts();
    EmuCounts e0{}, e1{};
    if (emu) emu(&e0);
    bp_device_counters c0, c1;
    BPT_OK(bp_device_get_counters(dev.get(), &c0));
    const int steps = 10;
    for (int step = 0; step < steps; ++step)
        BPT_OK(bp_train_step(r.model.get(), r.opt.get(), &kCe, r.x.get(), r.y.get(), nullptr));
    BPT_OK(bp_device_get_counters(dev.get(), &c1));
    if (emu) emu(&e1);
    EXPECT_EQ(c1.host_waits - c0.host_waits, 0u);
    EXPECT_EQ(c1.graph_launches - c0.graph_launches, (uint64_t)steps);
    EXPECT_EQ(c1.launches - c0.launches, 2u * steps) << "more than the scalars' and state's copies";
    if (!emu) {
        std::printf("[ note ] not on the emulated device: its own counts were not read\n");
        return;
    }
    EXPECT_EQ(e1.host_syncs - e0.host_syncs, 0u);
    EXPECT_EQ(e1.graph_launches - e0.graph_launches, (uint64_t)steps);
    EXPECT_EQ(e1.kernels - e0.kernels, 0u);
    EXPECT_EQ(e1.library_calls - e0.library_calls, 0u);
    bp_step_totals tot;
    BPT_OK(bp_train_results(r.opt.get(), 1, &tot));
    EXPECT_EQ(tot.steps, 13);
}

// The fused loss head and norm_decide (core/backend.h's loss_head, norm_decide) against the
// separate entries they stand for, on the same backend: a second device whose table lacks them.
// With 8 rows every double sum of both (row losses, matches, bias-gradient columns) is exact, and
// the gradients are made by the same expressions, so the two train bitwise alike, in fp32 and bf16,
// with and without accumulation and label smoothing. The fused step makes fewer launches: the label
// check's two, and per micro-batch the loss, its sum, the matches, their sum, the bias gradient
// (and in bf16 the gradient's cast) for the head's one.
TEST_P(StepQueue, TheFusedEntriesTrainAsTheSeparateOnes) {
    if (!bp_device_available(GetParam().c_str())) GTEST_SKIP() << GetParam() << " not available";
    // graphs off: a replay counts as one launch, whatever it holds
    DevicePtr fused = open_with_graphs(GetParam(), 0);
    ASSERT_TRUE(fused) << bp_last_error();
    if (!fused->ops->loss_head || !fused->ops->norm_decide)
        GTEST_SKIP() << GetParam() << " has no fused entries";
    bp_backend_ops plain_ops = *fused->ops;
    plain_ops.loss_head = nullptr;
    plain_ops.norm_decide = nullptr;
    const bp_loss_config smoothed = {BP_LOSS_CROSS_ENTROPY, 0.1f};
    for (int outputs : {kWidths[2], 600}) // one kernel; two past 512 columns
        for (bp_precision precision : {BP_PRECISION_FP32, BP_PRECISION_BF16})
            for (int accum : {1, 2}) {
                SCOPED_TRACE(::testing::Message()
                             << outputs << " outputs, " << bp_precision_name(precision)
                             << ", accum_steps " << accum);
                DevicePtr plain = open_with_graphs(GetParam(), 0);
                ASSERT_TRUE(plain) << bp_last_error();
                plain->ops = &plain_ops; // the same backend, composing the head from its entries
                Trainer a, b;
                ASSERT_NO_FATAL_FAILURE(make_run(fused.get(), &a, accum, precision, outputs));
                ASSERT_NO_FATAL_FAILURE(make_run(plain.get(), &b, accum, precision, outputs));
                bp_device_counters fa0, fa1, pb0, pb1;
                BPT_OK(bp_device_get_counters(fused.get(), &fa0));
                BPT_OK(bp_device_get_counters(plain.get(), &pb0));
                const int steps = 6;
                for (int step = 0; step < steps; ++step)
                    for (Trainer *t : {&a, &b}) {
                        upload_batch(t, batch_x(step), batch_y(step));
                        BPT_OK(bp_train_step(t->model.get(), t->opt.get(), &smoothed, t->x.get(),
                                             t->y.get(), nullptr));
                    }
                BPT_OK(bp_device_get_counters(fused.get(), &fa1));
                BPT_OK(bp_device_get_counters(plain.get(), &pb1));
                bp_step_totals ta, tb;
                BPT_OK(bp_train_results(a.opt.get(), 1, &ta));
                BPT_OK(bp_train_results(b.opt.get(), 1, &tb));
                EXPECT_EQ(ta.steps, steps);
                EXPECT_EQ(ta.loss_sum, tb.loss_sum);
                EXPECT_EQ(ta.correct, tb.correct);
                EXPECT_TRUE(same_bits(snapshot(&a), snapshot(&b)));
                // and norm_decide's one for the norm's final pass and step_decide's
                uint64_t saved = 3 + (uint64_t)accum * (precision == BP_PRECISION_BF16 ? 5 : 4) -
                                 (outputs > 512 ? (uint64_t)accum : 0);
                EXPECT_EQ((pb1.launches - pb0.launches) - (fa1.launches - fa0.launches),
                          saved * steps)
                    << "launches a step saved";
            }
}

INSTANTIATE_TEST_SUITE_P(Backends, StepQueue, ::testing::ValuesIn(bpt::all_backends()),
                         [](const ::testing::TestParamInfo<std::string> &i) { return i.param; });

} // namespace
