// bp_model_layer_output on every backend and precision: each layer's output against the float64
// reference, kept through a backward, dropout's zeros in training mode, gone after a prediction;
// and the API contract.
//
// Tolerances: fp32 and tf32 against float64, 1e-5 and 2e-3 (relative, per layer): a forward of
// widths <= 9 carries a few fp32 roundings (1e-6), and TF32 operands round to 10 bits (1e-3 per
// product, averaging down over the sums). bf16: 2e-2 (8-bit operands and bf16-kept outputs).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include "contract.h"
#include "ref_mlp.h"
#include "ref_ops.h"
#include "support.h"
#include "support_model.h"

namespace {

using bpt::DevicePtr;
using bpt::ModelPtr;
using bpt::TensorPtr;

constexpr bp_status INVALID = BP_ERR_INVALID_ARGUMENT;
const int kRows = 6;
int g_widths[] = {4, 9, 7, 3};
bp_activation g_acts[] = {BP_ACT_TANH, BP_ACT_RELU, BP_ACT_IDENTITY};

ModelPtr make_model(bp_device *dev, bp_precision p, const float *dropout) {
    bp_mlp_config c = bp_mlp_config_default(3, g_widths);
    c.activations = g_acts;
    c.dropout = dropout;
    c.seed = 9;
    c.max_batch = 8;
    c.precision = p;
    return ModelPtr(bp_model_create(dev, &c, nullptr));
}

// Layer l's output of the reference: act_l of its pre-activation.
std::vector<std::vector<double>> reference_outputs(bp_model *m, const std::vector<float> &x) {
    bpref_mlp net = {3, g_widths, g_acts, 0.01};
    std::vector<float> p(bp_model_n_params(m));
    EXPECT_EQ(BP_OK, bp_model_get_params(m, p.data(), p.size()));
    std::vector<double> pd(p.begin(), p.end()), xd(x.begin(), x.end());
    std::vector<double> z(bpref_mlp_n_preacts(&net, kRows));
    EXPECT_EQ(0, bpref_mlp_forward(&net, pd.data(), xd.data(), kRows, nullptr, z.data()));
    std::vector<std::vector<double>> out;
    size_t at = 0;
    for (int l = 0; l < 3; ++l) {
        std::vector<double> a((size_t)kRows * g_widths[l + 1]);
        for (size_t i = 0; i < a.size(); ++i)
            a[i] = bpref_act(z[at + i], g_acts[l], 0.01);
        at += a.size();
        out.push_back(a);
    }
    return out;
}

std::vector<float> layer_output(bp_model *m, int l) {
    std::vector<float> v((size_t)bp_model_output_rows(m) * g_widths[l + 1], NAN);
    EXPECT_EQ(BP_OK, bp_model_layer_output(m, l, v.data(), v.size())) << bp_last_error();
    return v;
}

class LayerOutput : public ::testing::TestWithParam<std::tuple<std::string, bp_precision>> {
  protected:
    void SetUp() override {
        std::string why;
        dev_.reset(bpt::open_or_reason(std::get<0>(GetParam()), &why));
        if (!dev_) GTEST_SKIP() << why;
        prec_ = std::get<1>(GetParam());
        tol_ = prec_ == BP_PRECISION_FP32 ? 1e-5 : prec_ == BP_PRECISION_TF32 ? 2e-3 : 2e-2;
    }
    DevicePtr dev_;
    bp_precision prec_ = BP_PRECISION_FP32;
    double tol_ = 0;
};

TEST_P(LayerOutput, EveryLayerMatchesTheReferenceAndOutlivesABackward) {
    ModelPtr m = make_model(dev_.get(), prec_, nullptr);
    if (!m && prec_ != BP_PRECISION_FP32) GTEST_SKIP() << bp_last_error();
    ASSERT_TRUE(m) << bp_last_error();
    EXPECT_EQ(bp_model_output_rows(m.get()), 0);
    std::vector<float> x = bpt::uniform((size_t)kRows * 4, -1.5f, 1.5f, 31);
    TensorPtr tx, ty, out;
    ASSERT_NO_FATAL_FAILURE(bpt::upload_f32(dev_.get(), kRows, 4, x, &tx));
    ASSERT_NO_FATAL_FAILURE(
        bpt::upload_f32(dev_.get(), kRows, 3, bpt::uniform(18, -1, 1, 32), &ty));
    ASSERT_NO_FATAL_FAILURE(bpt::new_tensor(dev_.get(), BP_F32, kRows, 3, &out));
    auto ref = reference_outputs(m.get(), x);
    BPT_OK(bp_model_forward(m.get(), tx.get(), BP_MODE_TRAINING, out.get()));
    EXPECT_EQ(bp_model_output_rows(m.get()), kRows);
    std::vector<std::vector<float>> before;
    for (int l = 0; l < 3; ++l) {
        SCOPED_TRACE("layer " + std::to_string(l));
        before.push_back(layer_output(m.get(), l));
        EXPECT_LT(bpt::rel_err(before[l].data(), ref[l].data(), ref[l].size()), tol_);
    }
    // The last layer's output is the forward's.
    std::vector<float> o(kRows * 3);
    BPT_OK(bp_tensor_download(out.get(), o.data(), o.size()));
    EXPECT_EQ(o, before[2]);
    // A loss and a backward leave them as they were.
    bp_loss_config mse = {BP_LOSS_MSE, 0.0f};
    BPT_OK(bp_model_loss(m.get(), &mse, ty.get(), nullptr));
    BPT_OK(bp_model_backward(m.get(), nullptr));
    for (int l = 0; l < 3; ++l)
        EXPECT_EQ(layer_output(m.get(), l), before[l]) << "layer " << l;
    // A prediction uses the same buffers: afterwards there are none to read.
    std::vector<float> p(kRows * 3);
    BPT_OK(bp_model_predict(m.get(), x.data(), kRows, BP_PREDICT_LOGITS, p.data()));
    EXPECT_EQ(bp_model_output_rows(m.get()), 0);
    std::vector<float> v(kRows * 9);
    EXPECT_FAILS(INVALID, "bp_model_layer_output",
                 bp_model_layer_output(m.get(), 0, v.data(), v.size()));
    EXPECT_ERROR_HAS("holds no outputs");
}

// In training mode a layer's output is after its dropout: each element is 0 or the inference
// output scaled by 1 / (1 - p); in inference mode there is no dropout.
TEST_P(LayerOutput, TrainingModeShowsDropout) {
    const float dropout[] = {0.5f, 0.0f, 0.0f};
    ModelPtr m = make_model(dev_.get(), prec_, dropout);
    if (!m && prec_ != BP_PRECISION_FP32) GTEST_SKIP() << bp_last_error();
    ASSERT_TRUE(m) << bp_last_error();
    std::vector<float> x = bpt::uniform((size_t)kRows * 4, -1.5f, 1.5f, 33);
    TensorPtr tx;
    ASSERT_NO_FATAL_FAILURE(bpt::upload_f32(dev_.get(), kRows, 4, x, &tx));
    BPT_OK(bp_model_forward(m.get(), tx.get(), BP_MODE_INFERENCE, nullptr));
    std::vector<float> plain = layer_output(m.get(), 0);
    BPT_OK(bp_model_forward(m.get(), tx.get(), BP_MODE_TRAINING, nullptr));
    std::vector<float> dropped = layer_output(m.get(), 0);
    int zeros = 0;
    for (size_t i = 0; i < plain.size(); ++i) {
        if (dropped[i] == 0.0f && plain[i] != 0.0f) {
            ++zeros;
            continue;
        }
        EXPECT_NEAR(dropped[i], 2.0 * plain[i], tol_ * (std::fabs(2.0 * plain[i]) + 1e-3)) << i;
    }
    EXPECT_GT(zeros, 0);
    EXPECT_LT(zeros, (int)plain.size());
}

std::string name(const ::testing::TestParamInfo<std::tuple<std::string, bp_precision>> &i) {
    return std::get<0>(i.param) + "_" + bp_precision_name(std::get<1>(i.param));
}

INSTANTIATE_TEST_SUITE_P(Modes, LayerOutput,
                         ::testing::Combine(::testing::ValuesIn(bpt::all_backends()),
                                            ::testing::Values(BP_PRECISION_FP32, BP_PRECISION_TF32,
                                                              BP_PRECISION_BF16)),
                         name);

TEST(ApiContract, LayerOutput) {
    bp_device *dev = bp_device_open("cpu", nullptr);
    ASSERT_NE(dev, nullptr) << bp_last_error();
    bpt::DeviceGuard guard{dev};
    EXPECT_EQ(bp_model_output_rows(nullptr), 0);
    std::vector<float> v(64);
    EXPECT_FAILS(INVALID, "bp_model_layer_output", bp_model_layer_output(nullptr, 0, v.data(), 9));
    ModelPtr m = make_model(dev, BP_PRECISION_FP32, nullptr);
    ASSERT_TRUE(m) << bp_last_error();
    EXPECT_FAILS(INVALID, "bp_model_layer_output", bp_model_layer_output(m.get(), 0, v.data(), 9));
    EXPECT_ERROR_HAS("holds no outputs");
    TensorPtr tx;
    ASSERT_NO_FATAL_FAILURE(bpt::upload_f32(dev, 2, 4, bpt::uniform(8, -1, 1, 1), &tx));
    BPT_OK(bp_model_forward(m.get(), tx.get(), BP_MODE_INFERENCE, nullptr));
    for (int bad : {-1, 3}) {
        EXPECT_FAILS(INVALID, "bp_model_layer_output",
                     bp_model_layer_output(m.get(), bad, v.data(), 18));
        EXPECT_ERROR_HAS("out of range [0, 3)");
    }
    EXPECT_FAILS(INVALID, "bp_model_layer_output", bp_model_layer_output(m.get(), 0, nullptr, 18));
    EXPECT_FAILS(BP_ERR_SHAPE_MISMATCH, "bp_model_layer_output",
                 bp_model_layer_output(m.get(), 0, v.data(), 17));
    EXPECT_ERROR_HAS("2 rows of 9");
    BPT_OK(bp_model_layer_output(m.get(), 0, v.data(), 18));
}

} // namespace
