// Bad input: every wrong argument gives a clear status and message, aborts nothing, and leaves
// the model and the optimizer as they were.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "support.h"

namespace {

using ::testing::HasSubstr;

// A 6-10-4 model with Adam, a batch of 8 and its labels, and a snapshot of the state.
class BadInput : public ::testing::TestWithParam<std::string> {
  protected:
    void SetUp() override {
        std::string why;
        dev = bpt::open_or_reason(GetParam(), &why);
        if (!dev) GTEST_SKIP() << why;
        bp_mlp_config cfg = bp_mlp_config_default(2, widths);
        cfg.max_batch = 8;
        cfg.seed = 9;
        model = bp_model_create(dev, &cfg, nullptr);
        ASSERT_NE(model, nullptr) << bp_last_error();
        bp_optim_config oc = bp_optim_config_default(BP_OPTIM_ADAM);
        opt = bp_optimizer_create(model, &oc, nullptr);
        ASSERT_NE(opt, nullptr) << bp_last_error();
        x = bp_tensor_create(dev, BP_F32, 8, 6, nullptr);
        y = bp_tensor_create(dev, BP_I32, 8, 1, nullptr);
        ASSERT_TRUE(x && y);
        xs = bpt::uniform(48, -1.0f, 1.0f, 1);
        ys = {0, 1, 2, 3, 0, 1, 2, 3};
        ASSERT_EQ(bp_tensor_upload(x, xs.data(), xs.size()), BP_OK);
        ASSERT_EQ(bp_tensor_upload(y, ys.data(), ys.size()), BP_OK);
        // One good step so the optimizer has non-trivial state to protect.
        ASSERT_EQ(bp_train_step(model, opt, &ce, x, y, nullptr), BP_OK) << bp_last_error();
        snapshot(params0, state0, steps0);
    }
    void TearDown() override {
        bp_tensor_free(x);
        bp_tensor_free(y);
        bp_optimizer_free(opt);
        bp_model_free(model);
        bp_device_close(dev);
    }
    void snapshot(std::vector<float> &p, std::vector<float> &s, int64_t &steps) {
        p.resize(bp_model_n_params(model));
        s.resize(bp_optimizer_state_size(opt));
        ASSERT_EQ(bp_model_get_params(model, p.data(), p.size()), BP_OK);
        ASSERT_EQ(bp_optimizer_get_state(opt, s.data(), s.size(), &steps), BP_OK);
    }
    // The model and optimizer are bitwise as they were after SetUp.
    void expect_unchanged() {
        std::vector<float> p, s;
        int64_t steps = -1;
        snapshot(p, s, steps);
        EXPECT_EQ(std::memcmp(p.data(), params0.data(), p.size() * sizeof(float)), 0)
            << "parameters changed";
        EXPECT_EQ(std::memcmp(s.data(), state0.data(), s.size() * sizeof(float)), 0)
            << "optimizer state changed";
        EXPECT_EQ(steps, steps0);
    }
    // The call failed with `status` and a message containing `text`.
    void expect_error(bp_status got, bp_status want, const std::string &text) {
        EXPECT_EQ(got, want) << bp_last_error();
        EXPECT_THAT(std::string(bp_last_error()), HasSubstr(text));
    }

    int widths[3] = {6, 10, 4};
    bp_device *dev = nullptr;
    bp_model *model = nullptr;
    bp_optimizer *opt = nullptr;
    bp_tensor *x = nullptr, *y = nullptr;
    std::vector<float> xs, params0, state0;
    std::vector<int32_t> ys;
    int64_t steps0 = 0;
    bp_loss_config ce = {BP_LOSS_CROSS_ENTROPY, 0.0f};
    float loss = 0.0f; // a loss_value makes a step report its own refusal (train.h)
};

TEST_P(BadInput, NullHandles) {
    expect_error(bp_train_step(nullptr, opt, &ce, x, y, nullptr), BP_ERR_INVALID_ARGUMENT,
                 "model is NULL");
    expect_error(bp_train_step(model, nullptr, &ce, x, y, nullptr), BP_ERR_INVALID_ARGUMENT,
                 "optimizer is NULL");
    expect_error(bp_train_step(model, opt, nullptr, x, y, nullptr), BP_ERR_INVALID_ARGUMENT,
                 "loss is NULL");
    expect_error(bp_train_step(model, opt, &ce, nullptr, y, nullptr), BP_ERR_INVALID_ARGUMENT,
                 "x is NULL");
    expect_error(bp_train_step(model, opt, &ce, x, nullptr, nullptr), BP_ERR_INVALID_ARGUMENT,
                 "target is NULL");
    expect_error(bp_model_forward(nullptr, x, BP_MODE_TRAINING, nullptr), BP_ERR_INVALID_ARGUMENT,
                 "model is NULL");
    expect_error(bp_model_forward(model, nullptr, BP_MODE_TRAINING, nullptr),
                 BP_ERR_INVALID_ARGUMENT, "x is NULL");
    expect_error(bp_model_backward(nullptr, nullptr), BP_ERR_INVALID_ARGUMENT, "model is NULL");
    expect_error(bp_optimizer_step(nullptr), BP_ERR_INVALID_ARGUMENT, "optimizer is NULL");
    expect_error(bp_tensor_upload(nullptr, xs.data(), 1), BP_ERR_INVALID_ARGUMENT,
                 "tensor is NULL");
    expect_error(bp_tensor_upload(x, nullptr, 48), BP_ERR_INVALID_ARGUMENT, "host pointer");
    bp_status st = BP_OK;
    EXPECT_EQ(bp_model_create(nullptr, nullptr, &st), nullptr);
    expect_error(st, BP_ERR_INVALID_ARGUMENT, "device is NULL");
    EXPECT_EQ(bp_optimizer_create(nullptr, nullptr, &st), nullptr);
    expect_error(st, BP_ERR_INVALID_ARGUMENT, "is NULL");
    EXPECT_EQ(bp_device_open(nullptr, &st), nullptr);
    expect_error(st, BP_ERR_INVALID_ARGUMENT, "name is NULL");
    bp_model_free(nullptr);
    bp_optimizer_free(nullptr);
    bp_tensor_free(nullptr);
    bp_device_close(nullptr);
    expect_unchanged();
}

TEST_P(BadInput, UnknownDeviceName) {
    bp_status st = BP_OK;
    EXPECT_EQ(bp_device_open("tpu", &st), nullptr);
    expect_error(st, BP_ERR_INVALID_ARGUMENT, "unknown device 'tpu'");
    EXPECT_EQ(bp_device_open("cuda:x", &st), nullptr);
    EXPECT_NE(st, BP_OK);
}

TEST_P(BadInput, ZeroOrNegativeSizes) {
    bp_status st = BP_OK;
    EXPECT_EQ(bp_tensor_create(dev, BP_F32, 0, 3, &st), nullptr);
    expect_error(st, BP_ERR_INVALID_ARGUMENT, "shape [0, 3]");
    EXPECT_EQ(bp_tensor_create(dev, BP_F32, 3, -1, &st), nullptr);
    expect_error(st, BP_ERR_INVALID_ARGUMENT, "shape [3, -1]");
    int bad_widths[] = {6, 0, 4};
    bp_mlp_config cfg = bp_mlp_config_default(2, bad_widths);
    EXPECT_EQ(bp_model_create(dev, &cfg, &st), nullptr);
    expect_error(st, BP_ERR_INVALID_ARGUMENT, "widths[1] is 0");
    cfg = bp_mlp_config_default(0, widths);
    EXPECT_EQ(bp_model_create(dev, &cfg, &st), nullptr);
    expect_error(st, BP_ERR_INVALID_ARGUMENT, "n_layers is 0");
    cfg = bp_mlp_config_default(2, widths);
    cfg.max_batch = -5;
    EXPECT_EQ(bp_model_create(dev, &cfg, &st), nullptr);
    expect_error(st, BP_ERR_INVALID_ARGUMENT, "max_batch is -5");
    float drop[] = {1.0f, 0.0f};
    cfg = bp_mlp_config_default(2, widths);
    cfg.dropout = drop;
    EXPECT_EQ(bp_model_create(dev, &cfg, &st), nullptr);
    expect_error(st, BP_ERR_INVALID_ARGUMENT, "dropout[0] is 1");
    bp_optim_config oc = bp_optim_config_default(BP_OPTIM_SGD);
    oc.lr = -1.0f;
    EXPECT_EQ(bp_optimizer_create(model, &oc, &st), nullptr);
    expect_error(st, BP_ERR_INVALID_ARGUMENT, "lr is -1");
    oc = bp_optim_config_default(BP_OPTIM_SGD);
    oc.accum_steps = 0;
    EXPECT_EQ(bp_optimizer_create(model, &oc, &st), nullptr);
    expect_error(st, BP_ERR_INVALID_ARGUMENT, "accum_steps is 0");
    expect_unchanged();
}

TEST_P(BadInput, ShapeMismatches) {
    bp_tensor *x5 = bp_tensor_create(dev, BP_F32, 8, 5, nullptr);
    bp_tensor *y7 = bp_tensor_create(dev, BP_I32, 7, 1, nullptr);
    bp_tensor *big = bp_tensor_create(dev, BP_F32, 9, 6, nullptr);
    bp_tensor *yf = bp_tensor_create(dev, BP_F32, 8, 1, nullptr);
    ASSERT_TRUE(x5 && y7 && big && yf);
    expect_error(bp_train_step(model, opt, &ce, x5, y, nullptr), BP_ERR_SHAPE_MISMATCH,
                 "x has 5 columns, expected 6");
    expect_error(bp_train_step(model, opt, &ce, x, y7, nullptr), BP_ERR_SHAPE_MISMATCH,
                 "target has 7 rows, the batch has 8");
    expect_error(bp_model_forward(model, big, BP_MODE_INFERENCE, nullptr), BP_ERR_SHAPE_MISMATCH,
                 "more than the model's max_batch 8");
    expect_error(bp_train_step(model, opt, &ce, x, yf, nullptr), BP_ERR_INVALID_ARGUMENT,
                 "target has dtype f32, expected i32");
    bp_loss_config mse = {BP_LOSS_MSE, 0.0f};
    expect_error(bp_train_step(model, opt, &mse, x, yf, nullptr), BP_ERR_SHAPE_MISMATCH,
                 "target has 1 columns, expected 4");
    std::vector<float> small(3);
    expect_error(bp_model_set_params(model, small.data(), small.size()), BP_ERR_SHAPE_MISMATCH,
                 "count is 3");
    bp_tensor_free(x5);
    bp_tensor_free(y7);
    bp_tensor_free(big);
    bp_tensor_free(yf);
    expect_unchanged();
}

TEST_P(BadInput, LabelOutOfRange) {
    std::vector<int32_t> bad = ys;
    bad[5] = 4; // the model has 4 outputs: classes 0..3
    ASSERT_EQ(bp_tensor_upload(y, bad.data(), bad.size()), BP_OK);
    expect_error(bp_train_step(model, opt, &ce, x, y, &loss), BP_ERR_INVALID_ARGUMENT,
                 "target row 5 holds class 4, outside [0, 4)");
    bad[5] = -1;
    ASSERT_EQ(bp_tensor_upload(y, bad.data(), bad.size()), BP_OK);
    expect_error(bp_train_step(model, opt, &ce, x, y, &loss), BP_ERR_INVALID_ARGUMENT,
                 "target row 5 holds class -1");
    expect_unchanged();
}

TEST_P(BadInput, NonFiniteInputNamesRowAndColumn) {
    std::vector<float> bad = xs;
    bad[2 * 6 + 3] = std::numeric_limits<float>::quiet_NaN();
    ASSERT_EQ(bp_tensor_upload(x, bad.data(), bad.size()), BP_OK);
    expect_error(bp_train_step(model, opt, &ce, x, y, &loss), BP_ERR_NON_FINITE, "x[2, 3] is nan");
    bad[2 * 6 + 3] = std::numeric_limits<float>::infinity();
    ASSERT_EQ(bp_tensor_upload(x, bad.data(), bad.size()), BP_OK);
    expect_error(bp_train_step(model, opt, &ce, x, y, &loss), BP_ERR_NON_FINITE, "x[2, 3] is inf");
    expect_unchanged();
}

TEST_P(BadInput, NonFiniteTargetAndLoss) {
    bp_tensor *yf = bp_tensor_create(dev, BP_F32, 8, 4, nullptr);
    ASSERT_NE(yf, nullptr);
    auto t = bpt::uniform(32, 0.0f, 1.0f, 2);
    t[9] = std::numeric_limits<float>::infinity();
    ASSERT_EQ(bp_tensor_upload(yf, t.data(), t.size()), BP_OK);
    bp_loss_config mse = {BP_LOSS_MSE, 0.0f};
    expect_error(bp_train_step(model, opt, &mse, x, yf, &loss), BP_ERR_NON_FINITE,
                 "target[2, 1] is inf");
    // Inputs so large the outputs overflow: the loss itself is not finite.
    std::vector<float> huge(48, 3e38f);
    ASSERT_EQ(bp_tensor_upload(x, huge.data(), huge.size()), BP_OK);
    t[9] = 0.5f;
    ASSERT_EQ(bp_tensor_upload(yf, t.data(), t.size()), BP_OK);
    bp_status st = bp_train_step(model, opt, &mse, x, yf, &loss);
    EXPECT_EQ(st, BP_ERR_NON_FINITE) << bp_last_error();
    EXPECT_THAT(std::string(bp_last_error()), HasSubstr("parameters and optimizer unchanged"));
    bp_tensor_free(yf);
    expect_unchanged();
}

TEST_P(BadInput, NonFiniteParametersRejected) {
    std::vector<float> p = params0;
    size_t w1 = 0;
    ASSERT_EQ(bp_model_layer_offsets(model, 1, &w1, nullptr), BP_OK);
    p[w1 + 10 + 2] = std::numeric_limits<float>::quiet_NaN(); // layer 1 weight [1, 2]
    expect_error(bp_model_set_params(model, p.data(), p.size()), BP_ERR_NON_FINITE,
                 "layer 1 weight [1, 2]");
    expect_unchanged();
}

TEST_P(BadInput, BackwardWithoutForward) {
    bp_mlp_config cfg = bp_mlp_config_default(2, widths);
    bp_model *fresh = bp_model_create(dev, &cfg, nullptr);
    ASSERT_NE(fresh, nullptr);
    expect_error(bp_model_backward(fresh, nullptr), BP_ERR_INVALID_ARGUMENT,
                 "needs a training-mode bp_model_forward");
    expect_error(bp_model_loss(fresh, &ce, y, nullptr), BP_ERR_INVALID_ARGUMENT, "no forward pass");
    bp_model_free(fresh);
}

TEST_P(BadInput, OptimizerOfAnotherModel) {
    bp_mlp_config cfg = bp_mlp_config_default(2, widths);
    cfg.max_batch = 8;
    bp_model *other = bp_model_create(dev, &cfg, nullptr);
    ASSERT_NE(other, nullptr);
    expect_error(bp_train_step(other, opt, &ce, x, y, nullptr), BP_ERR_INVALID_ARGUMENT,
                 "created for another model");
    bp_model_free(other);
    expect_unchanged();
}

INSTANTIATE_TEST_SUITE_P(Backends, BadInput, ::testing::ValuesIn(bpt::all_backends()),
                         [](const auto &info) { return info.param; });

} // namespace
