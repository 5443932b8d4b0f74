// Convergence: small problems every backend must learn to a stated level.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "support.h"

namespace {

class Convergence : public ::testing::TestWithParam<std::string> {};

struct Trainer {
    bp_model *model = nullptr;
    bp_optimizer *opt = nullptr;
    bp_tensor *x = nullptr, *y = nullptr, *out = nullptr;
    ~Trainer() {
        bp_tensor_free(x);
        bp_tensor_free(y);
        bp_tensor_free(out);
        bp_optimizer_free(opt);
        bp_model_free(model);
    }
};

// Builds a model + optimizer + full-batch tensors; fails the test on any error.
void setup(Trainer &r, bp_device *dev, std::vector<int> widths, std::vector<bp_activation> acts,
           bp_optim_config oc, int rows, bp_dtype ydt, int ycols) {
    bp_mlp_config cfg = bp_mlp_config_default((int)widths.size() - 1, widths.data());
    cfg.activations = acts.data();
    cfg.seed = 3;
    cfg.max_batch = rows;
    r.model = bp_model_create(dev, &cfg, nullptr);
    ASSERT_NE(r.model, nullptr) << bp_last_error();
    r.opt = bp_optimizer_create(r.model, &oc, nullptr);
    ASSERT_NE(r.opt, nullptr) << bp_last_error();
    r.x = bp_tensor_create(dev, BP_F32, rows, widths[0], nullptr);
    r.y = bp_tensor_create(dev, ydt, rows, ycols, nullptr);
    r.out = bp_tensor_create(dev, BP_F32, rows, widths.back(), nullptr);
    ASSERT_TRUE(r.x && r.y && r.out) << bp_last_error();
}

double class_accuracy(Trainer &r, const std::vector<int32_t> &labels) {
    int rows = (int)labels.size();
    int classes = (int)bp_tensor_cols(r.out);
    std::vector<float> logits((size_t)rows * classes);
    EXPECT_EQ(bp_model_forward(r.model, r.x, BP_MODE_INFERENCE, r.out), BP_OK) << bp_last_error();
    EXPECT_EQ(bp_tensor_download(r.out, logits.data(), logits.size()), BP_OK);
    int right = 0;
    for (int i = 0; i < rows; ++i) {
        int best = 0;
        for (int c = 1; c < classes; ++c)
            if (logits[(size_t)i * classes + c] > logits[(size_t)i * classes + best]) best = c;
        right += best == labels[i];
    }
    return (double)right / rows;
}

TEST_P(Convergence, XorReachesFullAccuracy) {
    BPT_OPEN_OR_SKIP(dev, GetParam());
    bpt::DeviceGuard guard{dev};
    Trainer r;
    bp_optim_config oc = bp_optim_config_default(BP_OPTIM_SGD);
    oc.lr = 0.5f;
    oc.momentum = 0.9f;
    setup(r, dev, {2, 8, 2}, {BP_ACT_TANH, BP_ACT_IDENTITY}, oc, 4, BP_I32, 1);
    std::vector<float> x = {0, 0, 0, 1, 1, 0, 1, 1};
    std::vector<int32_t> y = {0, 1, 1, 0};
    ASSERT_EQ(bp_tensor_upload(r.x, x.data(), x.size()), BP_OK);
    ASSERT_EQ(bp_tensor_upload(r.y, y.data(), y.size()), BP_OK);
    bp_loss_config ce = {BP_LOSS_CROSS_ENTROPY, 0.0f};
    float loss = 0;
    for (int i = 0; i < 300; ++i)
        ASSERT_EQ(bp_train_step(r.model, r.opt, &ce, r.x, r.y, &loss), BP_OK);
    EXPECT_EQ(class_accuracy(r, y), 1.0);
    EXPECT_LT(loss, 0.05f); // well past the 0.69 of chance
}

// Two interleaved spirals, 1.75 turns each, 200 points per class.
void spirals(std::vector<float> &x, std::vector<int32_t> &y, int per_class) {
    for (int i = 0; i < 2 * per_class; ++i) {
        int c = i % 2;
        double t = 0.25 + 3.5 * (i / 2) / (double)per_class;
        double a = (t + c) * M_PI;
        x.push_back((float)(t * std::cos(a) / 3.75));
        x.push_back((float)(t * std::sin(a) / 3.75));
        y.push_back(c);
    }
}

TEST_P(Convergence, SpiralsReach99Percent) {
    BPT_OPEN_OR_SKIP(dev, GetParam());
    bpt::DeviceGuard guard{dev};
    std::vector<float> x;
    std::vector<int32_t> y;
    spirals(x, y, 200);
    Trainer r;
    bp_optim_config oc = bp_optim_config_default(BP_OPTIM_ADAM);
    oc.lr = 1e-2f;
    setup(r, dev, {2, 64, 64, 2}, {BP_ACT_RELU, BP_ACT_RELU, BP_ACT_IDENTITY}, oc, 400, BP_I32, 1);
    ASSERT_EQ(bp_tensor_upload(r.x, x.data(), x.size()), BP_OK);
    ASSERT_EQ(bp_tensor_upload(r.y, y.data(), y.size()), BP_OK);
    bp_loss_config ce = {BP_LOSS_CROSS_ENTROPY, 0.0f};
    for (int i = 0; i < 1500; ++i)
        ASSERT_EQ(bp_train_step(r.model, r.opt, &ce, r.x, r.y, nullptr), BP_OK) << bp_last_error();
    EXPECT_GE(class_accuracy(r, y), 0.99);
}

TEST_P(Convergence, SmoothRegressionReachesStatedMse) {
    BPT_OPEN_OR_SKIP(dev, GetParam());
    bpt::DeviceGuard guard{dev};
    const int n = 512;
    std::vector<float> x(2 * n), y(n);
    auto u = bpt::uniform(2 * n, -2.0f, 2.0f, 11);
    double var = 0, mean = 0;
    for (int i = 0; i < n; ++i) {
        x[2 * i] = u[2 * i];
        x[2 * i + 1] = u[2 * i + 1];
        y[i] = std::sin(x[2 * i]) * std::cos(x[2 * i + 1]);
        mean += y[i] / n;
    }
    for (int i = 0; i < n; ++i)
        var += (y[i] - mean) * (y[i] - mean) / n;
    Trainer r;
    bp_optim_config oc = bp_optim_config_default(BP_OPTIM_ADAM);
    oc.lr = 5e-3f;
    setup(r, dev, {2, 64, 64, 1}, {BP_ACT_TANH, BP_ACT_TANH, BP_ACT_IDENTITY}, oc, n, BP_F32, 1);
    ASSERT_EQ(bp_tensor_upload(r.x, x.data(), x.size()), BP_OK);
    ASSERT_EQ(bp_tensor_upload(r.y, y.data(), y.size()), BP_OK);
    bp_loss_config mse = {BP_LOSS_MSE, 0.0f};
    float loss = 0;
    for (int i = 0; i < 1500; ++i)
        ASSERT_EQ(bp_train_step(r.model, r.opt, &mse, r.x, r.y, &loss), BP_OK);
    // The target's variance is about 0.2; 1e-3 means the fit explains > 99.5% of it.
    EXPECT_LT(loss, 1e-3f) << "target variance " << var;
}

INSTANTIATE_TEST_SUITE_P(Backends, Convergence, ::testing::ValuesIn(bpt::all_backends()),
                         [](const auto &info) { return info.param; });

} // namespace
