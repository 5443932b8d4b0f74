// Our optimizer state is PyTorch's: a checkpoint's weights and AdamW or SGD-with-momentum
// state, loaded into torch.optim, continue 20 steps there to where we get in 20 steps here
// (tests/torch_optim.py does PyTorch's side and compares).
#include <gtest/gtest.h>

#include <vector>

#include "support.h"
#include "support_files.h"
#include "support_model.h"

namespace {

using bpt::ModelPtr;
using bpt::OptimPtr;
using bpt::TensorPtr;

const int kWidths[] = {6, 16, 12, 4};
const bp_activation kActs[] = {BP_ACT_TANH, BP_ACT_RELU, BP_ACT_IDENTITY};
const int kRows = 32, kBefore = 5, kAfter = 20;

// Hyper-parameters whose double and float values differ in the digits that matter (0.999 is
// the case PyTorch users have), including dampening and momentum for SGD.
bp_optim_config config_for(bp_optim_kind kind) {
    bp_optim_config oc = bp_optim_config_default(kind);
    if (kind == BP_OPTIM_ADAMW) {
        oc.lr = 0.01;
        oc.beta1 = 0.9;
        oc.beta2 = 0.999;
        oc.eps = 1e-8;
        oc.weight_decay = 0.05;
    } else {
        oc.lr = 0.05;
        oc.momentum = 0.9;
        oc.dampening = 0.1;
        oc.weight_decay = 1e-3;
    }
    return oc;
}

struct RunFiles {
    std::string ckpt, x, y, params, state;
};

// kBefore steps, a checkpoint, kAfter more steps; the files torch_optim.py reads.
void train_and_save(bp_device *dev, bp_optim_kind kind, const bpt::TempDir &dir, RunFiles *run) {
    bp_mlp_config cfg = bp_mlp_config_default(3, kWidths);
    cfg.activations = kActs;
    cfg.seed = 5;
    cfg.max_batch = kRows;
    bp_status st;
    ModelPtr m(bp_model_create(dev, &cfg, &st));
    ASSERT_TRUE(m) << bp_last_error();
    bp_optim_config oc = config_for(kind);
    OptimPtr o(bp_optimizer_create(m.get(), &oc, &st));
    ASSERT_TRUE(o) << bp_last_error();
    std::vector<float> x = bpt::uniform((size_t)kRows * kWidths[0], -1.5f, 1.5f, 808);
    std::vector<int32_t> y(kRows);
    for (int i = 0; i < kRows; ++i)
        y[i] = (i * 7 + 3) % kWidths[3];
    TensorPtr tx, ty;
    ASSERT_NO_FATAL_FAILURE(bpt::upload_f32(dev, kRows, kWidths[0], x, &tx));
    ASSERT_NO_FATAL_FAILURE(bpt::new_tensor(dev, BP_I32, kRows, 1, &ty));
    BPT_OK(bp_tensor_upload(ty.get(), y.data(), y.size()));
    bp_loss_config ce = {BP_LOSS_CROSS_ENTROPY, 0.0f};
    for (int s = 0; s < kBefore; ++s)
        BPT_OK(bp_train_step(m.get(), o.get(), &ce, tx.get(), ty.get(), nullptr));
    run->ckpt = dir.file("run.safetensors");
    BPT_OK(bp_checkpoint_save(run->ckpt.c_str(), m.get(), o.get(), nullptr, 0));
    for (int s = 0; s < kAfter; ++s)
        BPT_OK(bp_train_step(m.get(), o.get(), &ce, tx.get(), ty.get(), nullptr));
    std::vector<float> params(bp_model_n_params(m.get())), state(bp_optimizer_state_size(o.get()));
    BPT_OK(bp_model_get_params(m.get(), params.data(), params.size()));
    int64_t steps = 0;
    BPT_OK(bp_optimizer_get_state(o.get(), state.data(), state.size(), &steps));
    EXPECT_EQ(steps, kBefore + kAfter);
    run->x = dir.file("x.f32");
    run->y = dir.file("y.i32");
    run->params = dir.file("params.f32");
    run->state = dir.file("state.f32");
    bpt::write_raw(run->x, x);
    bpt::write_raw(run->y, y);
    bpt::write_raw(run->params, params);
    bpt::write_raw(run->state, state);
}

std::string command(const std::string &py, const RunFiles &r, const char *extra) {
    return "'" + py + "' '" BP_SOURCE_DIR "/tests/torch_optim.py' '" + r.ckpt + "' '" + r.x +
           "' '" + r.y + "' " + std::to_string(kRows) + " " + std::to_string(kAfter) + " '" +
           r.params + "' '" + r.state + "' " + extra;
}

class TorchOptim : public ::testing::TestWithParam<std::string> {};

TEST_P(TorchOptim, AdamWAndSgdStateContinueInTorchOptim) {
    BPT_OPEN_OR_SKIP(dev, GetParam());
    bpt::DeviceGuard guard{dev};
    std::string why, py = bpt::torch_python(&why);
    if (py.empty()) GTEST_SKIP() << why;
    for (bp_optim_kind kind : {BP_OPTIM_ADAMW, BP_OPTIM_SGD}) {
        SCOPED_TRACE(kind == BP_OPTIM_ADAMW ? "adamw" : "sgd momentum");
        bpt::TempDir dir;
        RunFiles run;
        ASSERT_NO_FATAL_FAILURE(train_and_save(dev, kind, dir, &run));
        EXPECT_EQ(0, bpt::run_exit_code(command(py, run, ""))) << command(py, run, "");
        // The control: PyTorch with beta2 rounded to float first (the error this test exists
        // for) must be told apart.
        if (kind == BP_OPTIM_ADAMW) {
            EXPECT_EQ(1, bpt::run_exit_code(command(py, run, "--beta2-float32")))
                << "a beta2 rounded to float was not detected";
        }
    }
}

INSTANTIATE_TEST_SUITE_P(Backends, TorchOptim, ::testing::ValuesIn(bpt::all_backends()),
                         [](const ::testing::TestParamInfo<std::string> &i) { return i.param; });

} // namespace
