// bp_evaluate over every backend: the loss and accuracy of a dataset against the float64
// reference, in any batch size, for the three losses; what it leaves behind; bad arguments.
//
// Tolerances: the loss of an fp32 forward against the float64 reference is within 1e-5
// (relative): a 2-layer forward of width <= 16 and a loss over <= 40 rows in fp32 carry a few
// 1e-7 of roundoff each; 1e-5 is a 10x margin. The same loss in other batch sizes differs only by
// how the per-batch fp32 sums are grouped: 1e-6. The accuracy is counted exactly from the
// outputs the call hands back (the counting rule is what is tested, not the roundoff).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "contract.h"
#include "ref_mlp.h"
#include "support.h"
#include "support_model.h"

namespace {

using bpt::DatasetPtr;
using bpt::DevicePtr;
using bpt::ModelPtr;

constexpr bp_status INVALID = BP_ERR_INVALID_ARGUMENT;
const int kIn = 5, kHidden = 9, kOut = 4, kRows = 37, kMaxBatch = 16;

ModelPtr make_model(bp_device *dev, uint64_t seed) {
    int widths[] = {kIn, kHidden, kOut};
    bp_activation acts[] = {BP_ACT_TANH, BP_ACT_IDENTITY};
    float dropout[] = {0.5f, 0.0f}; // evaluation is inference: no dropout may show
    bp_mlp_config c = bp_mlp_config_default(2, widths);
    c.activations = acts;
    c.dropout = dropout;
    c.seed = seed;
    c.max_batch = kMaxBatch;
    return ModelPtr(bp_model_create(dev, &c, nullptr));
}

DatasetPtr class_data(int classes) {
    std::vector<float> x = bpt::uniform((size_t)kRows * kIn, -2, 2, 11);
    std::vector<int32_t> y;
    for (int i = 0; i < kRows; ++i)
        y.push_back((i * 5 + 1) % classes);
    return DatasetPtr(
        bp_dataset_from_memory(kRows, kIn, x.data(), BP_TARGET_CLASS, 1, y.data(), nullptr));
}

DatasetPtr value_data(float lo, float hi, int width = kOut) {
    std::vector<float> x = bpt::uniform((size_t)kRows * kIn, -2, 2, 12);
    std::vector<float> t = bpt::uniform((size_t)kRows * width, lo, hi, 13);
    return DatasetPtr(
        bp_dataset_from_memory(kRows, kIn, x.data(), BP_TARGET_VALUES, width, t.data(), nullptr));
}

// The float64 reference's mean loss and outputs of the model's parameters on the data.
double reference_loss(bp_model *m, const bp_dataset *d, const bp_loss_config &loss,
                      std::vector<double> *out) {
    int widths[] = {kIn, kHidden, kOut};
    bp_activation acts[] = {BP_ACT_TANH, BP_ACT_IDENTITY};
    bpref_mlp net = {2, widths, acts, 0.01};
    std::vector<float> p(bp_model_n_params(m));
    EXPECT_EQ(BP_OK, bp_model_get_params(m, p.data(), p.size()));
    std::vector<double> pd(p.begin(), p.end());
    const float *xf = bp_dataset_features_data(d);
    std::vector<double> x(xf, xf + (size_t)kRows * kIn), t;
    out->assign((size_t)kRows * kOut, 0.0);
    EXPECT_EQ(0, bpref_mlp_forward(&net, pd.data(), x.data(), kRows, out->data(), nullptr));
    bpref_mlp_loss l = {loss.kind, loss.label_smoothing, nullptr, nullptr};
    if (bp_dataset_target_kind(d) == BP_TARGET_CLASS) {
        l.labels = (const int32_t *)bp_dataset_targets_data(d);
    } else {
        const float *tf = (const float *)bp_dataset_targets_data(d);
        t.assign(tf, tf + (size_t)kRows * kOut);
        l.target = t.data();
    }
    return bpref_mlp_loss_value(&l, kRows, kOut, out->data(), nullptr);
}

class Evaluate : public ::testing::TestWithParam<std::string> {
  protected:
    void SetUp() override {
        std::string why;
        dev_.reset(bpt::open_or_reason(GetParam(), &why));
        if (!dev_) GTEST_SKIP() << why;
        model_ = make_model(dev_.get(), 21);
        ASSERT_TRUE(model_) << bp_last_error();
    }

    // Evaluates in several batch sizes; checks the loss against the reference and the outputs
    // against its outputs, and that every batch size agrees. Returns the result of batch 0.
    bp_eval_result check(const bp_dataset *d, const bp_loss_config &loss) {
        std::vector<double> ref_out;
        double ref = reference_loss(model_.get(), d, loss, &ref_out);
        bp_eval_result first{};
        for (int batch : {0, 1, 5, kMaxBatch}) {
            SCOPED_TRACE("batch " + std::to_string(batch));
            bp_eval_result r;
            std::vector<float> out((size_t)kRows * kOut, NAN);
            EXPECT_EQ(BP_OK, bp_evaluate(model_.get(), d, &loss, batch, &r, out.data()))
                << bp_last_error();
            EXPECT_EQ(r.rows, kRows);
            EXPECT_LT(std::fabs(r.loss - ref) / std::fabs(ref), 1e-5) << r.loss << " vs " << ref;
            EXPECT_LT(bpt::rel_err(out.data(), ref_out.data(), out.size()), 1e-5);
            if (batch == 0) {
                first = r;
                outputs_ = out;
                continue;
            }
            EXPECT_LT(std::fabs(r.loss - first.loss) / std::fabs(first.loss), 1e-6);
            EXPECT_EQ(r.correct, first.correct);
            EXPECT_EQ(out, outputs_);
        }
        // Without outputs asked for, the same numbers.
        bp_eval_result r;
        EXPECT_EQ(BP_OK, bp_evaluate(model_.get(), d, &loss, 0, &r, nullptr)) << bp_last_error();
        EXPECT_EQ(r.loss, first.loss);
        EXPECT_EQ(r.correct, first.correct);
        return first;
    }

    DevicePtr dev_;
    ModelPtr model_;
    std::vector<float> outputs_; // of the last check, batch 0
};

TEST_P(Evaluate, CrossEntropyLossAndAccuracy) {
    DatasetPtr d = class_data(kOut);
    ASSERT_TRUE(d) << bp_last_error();
    bp_loss_config loss = {BP_LOSS_CROSS_ENTROPY, 0.1f};
    bp_eval_result r = check(d.get(), loss);
    // The rows whose first largest output is their label, counted here from the outputs.
    const int32_t *y = (const int32_t *)bp_dataset_targets_data(d.get());
    int64_t right = 0;
    for (int i = 0; i < kRows; ++i) {
        const float *z = &outputs_[(size_t)i * kOut];
        int best = 0;
        for (int j = 1; j < kOut; ++j)
            if (z[j] > z[best]) best = j;
        right += best == y[i];
    }
    EXPECT_EQ(r.correct, right);
    EXPECT_EQ(r.scored, kRows);
    EXPECT_DOUBLE_EQ(r.accuracy, (double)right / kRows);
    EXPECT_GT(right, 0); // random weights on 4 classes: some right, some wrong
    EXPECT_LT(right, kRows);
}

TEST_P(Evaluate, BceLossAndAccuracy) {
    DatasetPtr d = value_data(0.0f, 1.0f);
    ASSERT_TRUE(d) << bp_last_error();
    bp_loss_config loss = {BP_LOSS_BCE_LOGITS, 0.0f};
    bp_eval_result r = check(d.get(), loss);
    const float *t = (const float *)bp_dataset_targets_data(d.get());
    int64_t right = 0;
    for (size_t i = 0; i < outputs_.size(); ++i)
        right += (outputs_[i] > 0.0f) == (t[i] > 0.5f);
    EXPECT_EQ(r.correct, right);
    EXPECT_EQ(r.scored, (int64_t)kRows * kOut);
    EXPECT_DOUBLE_EQ(r.accuracy, (double)right / ((double)kRows * kOut));
}

TEST_P(Evaluate, MseLossHasNoAccuracy) {
    DatasetPtr d = value_data(-1.0f, 1.0f);
    ASSERT_TRUE(d) << bp_last_error();
    bp_loss_config loss = {BP_LOSS_MSE, 0.0f};
    bp_eval_result r = check(d.get(), loss);
    EXPECT_EQ(r.correct, 0);
    EXPECT_EQ(r.scored, 0);
    EXPECT_TRUE(std::isnan(r.accuracy));
}

// The loss is the training loss op's: bp_model_loss after an inference forward of all rows at
// once gives the same number (1e-6: one fp32 sum against the double of fp32 batch sums).
TEST_P(Evaluate, EqualsTheModelsOwnLossAndChangesNothing) {
    DatasetPtr d = class_data(kOut);
    ASSERT_TRUE(d) << bp_last_error();
    int widths[] = {kIn, kHidden, kOut};
    bp_mlp_config c = bp_mlp_config_default(2, widths);
    c.max_batch = kRows;
    ModelPtr whole(bp_model_create(dev_.get(), &c, nullptr));
    ASSERT_TRUE(whole) << bp_last_error();
    std::vector<float> p(bp_model_n_params(whole.get()));
    BPT_OK(bp_model_get_params(whole.get(), p.data(), p.size()));
    bp_loss_config loss = {BP_LOSS_CROSS_ENTROPY, 0.0f};
    bpt::TensorPtr x, y;
    const float *xf = bp_dataset_features_data(d.get());
    ASSERT_NO_FATAL_FAILURE(
        bpt::upload_f32(dev_.get(), kRows, kIn, std::vector<float>(xf, xf + kRows * kIn), &x));
    ASSERT_NO_FATAL_FAILURE(bpt::new_tensor(dev_.get(), BP_I32, kRows, 1, &y));
    BPT_OK(bp_tensor_upload(y.get(), bp_dataset_targets_data(d.get()), kRows));
    BPT_OK(bp_model_forward(whole.get(), x.get(), BP_MODE_INFERENCE, nullptr));
    float direct = 0.0f;
    BPT_OK(bp_model_loss(whole.get(), &loss, y.get(), &direct));
    EXPECT_EQ(bp_model_output_rows(whole.get()), kRows);
    bp_eval_result r;
    BPT_OK(bp_evaluate(whole.get(), d.get(), &loss, 7, &r, nullptr));
    EXPECT_LT(std::fabs(r.loss - direct) / direct, 1e-6) << r.loss << " vs " << direct;
    std::vector<float> after(p.size());
    BPT_OK(bp_model_get_params(whole.get(), after.data(), after.size()));
    EXPECT_EQ(p, after);
    EXPECT_EQ(bp_model_output_rows(whole.get()), 0); // the earlier forward's outputs are gone
    float v = 0.0f;
    EXPECT_FAILS(INVALID, "bp_model_loss", bp_model_loss(whole.get(), &loss, y.get(), &v));
    EXPECT_FAILS(INVALID, "bp_model_backward", bp_model_backward(whole.get(), nullptr));
}

INSTANTIATE_TEST_SUITE_P(Backends, Evaluate, ::testing::ValuesIn(bpt::all_backends()),
                         [](const ::testing::TestParamInfo<std::string> &i) { return i.param; });

TEST(ApiContract, Evaluate) {
    bp_device *dev = bp_device_open("cpu", nullptr);
    ASSERT_NE(dev, nullptr) << bp_last_error();
    bpt::DeviceGuard guard{dev};
    ModelPtr m = make_model(dev, 1);
    ASSERT_TRUE(m) << bp_last_error();
    DatasetPtr classes = class_data(kOut), values = value_data(0, 1), narrow = value_data(0, 1, 2);
    DatasetPtr wide_labels = class_data(kOut + 3);
    std::vector<float> xs = bpt::uniform(3 * 7, -1, 1, 4);
    DatasetPtr features_only(
        bp_dataset_from_memory(3, kIn, xs.data(), BP_TARGET_NONE, 0, nullptr, nullptr));
    DatasetPtr seven(bp_dataset_from_memory(3, 7, xs.data(), BP_TARGET_NONE, 0, nullptr, nullptr));
    ASSERT_TRUE(classes && values && narrow && wide_labels && features_only && seven);
    bp_loss_config ce = {BP_LOSS_CROSS_ENTROPY, 0.0f}, mse = {BP_LOSS_MSE, 0.0f};
    bp_eval_result r;
    EXPECT_FAILS(INVALID, "bp_evaluate", bp_evaluate(nullptr, classes.get(), &ce, 0, &r, nullptr));
    EXPECT_ERROR_HAS("model is NULL");
    EXPECT_FAILS(INVALID, "bp_evaluate", bp_evaluate(m.get(), nullptr, &ce, 0, &r, nullptr));
    EXPECT_ERROR_HAS("data is NULL");
    EXPECT_FAILS(INVALID, "bp_evaluate",
                 bp_evaluate(m.get(), classes.get(), nullptr, 0, &r, nullptr));
    EXPECT_FAILS(INVALID, "bp_evaluate",
                 bp_evaluate(m.get(), classes.get(), &ce, 0, nullptr, nullptr));
    EXPECT_ERROR_HAS("result is NULL");
    for (int batch : {-1, kMaxBatch + 1}) {
        EXPECT_FAILS(INVALID, "bp_evaluate",
                     bp_evaluate(m.get(), classes.get(), &ce, batch, &r, nullptr));
        EXPECT_ERROR_HAS("batch is " + std::to_string(batch));
    }
    EXPECT_FAILS(BP_ERR_SHAPE_MISMATCH, "bp_evaluate",
                 bp_evaluate(m.get(), seven.get(), &mse, 0, &r, nullptr));
    EXPECT_ERROR_HAS("7 features");
    EXPECT_FAILS(INVALID, "bp_evaluate",
                 bp_evaluate(m.get(), features_only.get(), &mse, 0, &r, nullptr));
    EXPECT_ERROR_HAS("no targets");
    EXPECT_FAILS(INVALID, "bp_evaluate", bp_evaluate(m.get(), values.get(), &ce, 0, &r, nullptr));
    EXPECT_ERROR_HAS("class targets");
    EXPECT_FAILS(INVALID, "bp_evaluate", bp_evaluate(m.get(), classes.get(), &mse, 0, &r, nullptr));
    EXPECT_ERROR_HAS("value targets");
    EXPECT_FAILS(BP_ERR_SHAPE_MISMATCH, "bp_evaluate",
                 bp_evaluate(m.get(), narrow.get(), &mse, 0, &r, nullptr));
    EXPECT_ERROR_HAS("2 target columns");
    // Row 1 of class_data(7) holds label (1 * 5 + 1) % 7 = 6, the first past 4 outputs.
    EXPECT_FAILS(INVALID, "bp_evaluate",
                 bp_evaluate(m.get(), wide_labels.get(), &ce, 0, &r, nullptr));
    EXPECT_ERROR_HAS("row 1 of the data holds class 6, outside [0, 4)");
    bp_loss_config smooth = {BP_LOSS_CROSS_ENTROPY, 1.5f}, odd = {(bp_loss_kind)9, 0.0f};
    EXPECT_FAILS(INVALID, "bp_evaluate",
                 bp_evaluate(m.get(), classes.get(), &smooth, 0, &r, nullptr));
    EXPECT_ERROR_HAS("label_smoothing");
    EXPECT_FAILS(INVALID, "bp_evaluate", bp_evaluate(m.get(), values.get(), &odd, 0, &r, nullptr));
    EXPECT_ERROR_HAS("not a loss");
}

} // namespace
