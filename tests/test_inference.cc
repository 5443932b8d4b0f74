// Inference from host memory (bp_model_predict) and row views of tensors (bp_tensor_view_rows),
// on every backend, against the float64 reference of tests/ref_mlp.h.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "ref_mlp.h"
#include "support.h"
#include "support_model.h"

namespace {

using bpt::DevicePtr;
using bpt::ModelPtr;
using bpt::OptimPtr;
using bpt::TensorPtr;

const int kWidths[] = {9, 14, 6};
const bp_activation kActs[] = {BP_ACT_TANH, BP_ACT_IDENTITY};
const int kMaxBatch = 8;

struct Net {
    ModelPtr model;
    std::vector<float> params;
};

void make_net(bp_device *dev, Net *net) {
    bp_mlp_config cfg = bp_mlp_config_default(2, kWidths);
    cfg.activations = kActs;
    cfg.seed = 11;
    cfg.max_batch = kMaxBatch;
    bp_status st;
    net->model.reset(bp_model_create(dev, &cfg, &st));
    ASSERT_NE(net->model, nullptr) << bp_last_error();
    net->params.resize(bp_model_n_params(net->model.get()));
    BPT_OK(bp_model_get_params(net->model.get(), net->params.data(), net->params.size()));
}

// The reference's logits of x (rows x 9) with the model's own parameters.
std::vector<double> ref_logits(const Net &net, const std::vector<float> &x, int rows) {
    bpref_mlp ref = {2, kWidths, kActs, 0.01};
    std::vector<double> out((size_t)rows * kWidths[2]);
    std::vector<double> p = bpt::to_double(net.params), xd = bpt::to_double(x);
    EXPECT_EQ(0, bpref_mlp_forward(&ref, p.data(), xd.data(), rows, out.data(), nullptr));
    return out;
}

class InferenceTest : public ::testing::TestWithParam<std::string> {};

// Every output kind, for row counts below, at and past max_batch (blocks with a short last
// one). Logits: 1e-5 relative, the forward's fp32 tolerance (test_mlp.cc says why); softmax and
// sigmoid are computed on the host in double from those logits, so they carry the same
// relative error. Classes must equal the reference's argmax exactly wherever the reference's
// two largest logits differ by more than the logit tolerance.
TEST_P(InferenceTest, PredictMatchesTheReferenceInEveryMode) {
    BPT_OPEN_OR_SKIP(raw, GetParam());
    DevicePtr dev(raw);
    Net net;
    ASSERT_NO_FATAL_FAILURE(make_net(dev.get(), &net));
    const int k = kWidths[2];
    uint32_t seed = 300;
    for (int rows : {1, 5, kMaxBatch, 2 * kMaxBatch + 3}) {
        SCOPED_TRACE("rows " + std::to_string(rows));
        std::vector<float> x = bpt::uniform((size_t)rows * kWidths[0], -2.0f, 2.0f, ++seed);
        std::vector<double> ref = ref_logits(net, x, rows);
        std::vector<float> logits(ref.size(), NAN), soft(ref.size(), NAN), sig(ref.size(), NAN);
        std::vector<int32_t> cls(rows, -7);
        BPT_OK(bp_model_predict(net.model.get(), x.data(), rows, BP_PREDICT_LOGITS, logits.data()));
        BPT_OK(bp_model_predict(net.model.get(), x.data(), rows, BP_PREDICT_SOFTMAX, soft.data()));
        BPT_OK(bp_model_predict(net.model.get(), x.data(), rows, BP_PREDICT_SIGMOID, sig.data()));
        BPT_OK(bp_model_predict(net.model.get(), x.data(), rows, BP_PREDICT_CLASS, cls.data()));
        EXPECT_LT(bpt::rel_err(logits, ref), 1e-5) << "logits";
        std::vector<double> ref_soft(ref.size()), ref_sig(ref.size());
        for (int i = 0; i < rows; ++i) {
            const double *z = &ref[(size_t)i * k];
            double max = z[0], sum = 0;
            int best = 0;
            for (int j = 1; j < k; ++j)
                if (z[j] > max) max = z[j], best = j;
            for (int j = 0; j < k; ++j)
                sum += std::exp(z[j] - max);
            double second = -INFINITY;
            for (int j = 0; j < k; ++j) {
                ref_soft[(size_t)i * k + j] = std::exp(z[j] - max) / sum;
                ref_sig[(size_t)i * k + j] = 1.0 / (1.0 + std::exp(-z[j]));
                if (j != best) second = std::max(second, z[j]);
            }
            if (max - second > 1e-4) {
                EXPECT_EQ(cls[i], best) << "row " << i;
            }
            EXPECT_GE(cls[i], 0) << "row " << i;
            EXPECT_LT(cls[i], k) << "row " << i;
        }
        EXPECT_LT(bpt::rel_err(soft, ref_soft), 1e-5) << "softmax";
        EXPECT_LT(bpt::rel_err(sig, ref_sig), 1e-5) << "sigmoid";
    }
}

// Predict leaves the parameters alone and refuses a loss until the next training forward.
TEST_P(InferenceTest, PredictChangesNoParameters) {
    BPT_OPEN_OR_SKIP(raw, GetParam());
    DevicePtr dev(raw);
    Net net;
    ASSERT_NO_FATAL_FAILURE(make_net(dev.get(), &net));
    std::vector<float> x = bpt::uniform(20 * kWidths[0], -1.0f, 1.0f, 41), out(20 * kWidths[2]);
    BPT_OK(bp_model_predict(net.model.get(), x.data(), 20, BP_PREDICT_LOGITS, out.data()));
    std::vector<float> after(net.params.size());
    BPT_OK(bp_model_get_params(net.model.get(), after.data(), after.size()));
    EXPECT_EQ(0, std::memcmp(after.data(), net.params.data(), after.size() * sizeof(float)));
    TensorPtr target;
    ASSERT_NO_FATAL_FAILURE(bpt::new_tensor(dev.get(), BP_I32, 4, 1, &target));
    bp_loss_config ce = {BP_LOSS_CROSS_ENTROPY, 0.0f};
    EXPECT_EQ(BP_ERR_INVALID_ARGUMENT, bp_model_loss(net.model.get(), &ce, target.get(), nullptr));
}

// A forward over a view of the first rows of larger tensors gives what a forward over tensors
// of exactly those rows gives (bitwise: the same kernels on the same rows), and writes only
// those rows of the output's base.
TEST_P(InferenceTest, ForwardOverRowViewsOfLargerTensors) {
    BPT_OPEN_OR_SKIP(raw, GetParam());
    DevicePtr dev(raw);
    Net net;
    ASSERT_NO_FATAL_FAILURE(make_net(dev.get(), &net));
    const int in = kWidths[0], k = kWidths[2], rows = 5;
    std::vector<float> x = bpt::uniform((size_t)kMaxBatch * in, -1.0f, 1.0f, 51);
    TensorPtr big_x, big_out, small_x, small_out;
    ASSERT_NO_FATAL_FAILURE(bpt::upload_f32(dev.get(), kMaxBatch, in, x, &big_x));
    std::vector<float> poison((size_t)kMaxBatch * k, 1234.5f);
    ASSERT_NO_FATAL_FAILURE(bpt::upload_f32(dev.get(), kMaxBatch, k, poison, &big_out));
    std::vector<float> first(x.begin(), x.begin() + (size_t)rows * in);
    ASSERT_NO_FATAL_FAILURE(bpt::upload_f32(dev.get(), rows, in, first, &small_x));
    ASSERT_NO_FATAL_FAILURE(bpt::new_tensor(dev.get(), BP_F32, rows, k, &small_out));
    bp_status st;
    TensorPtr vx(bp_tensor_view_rows(big_x.get(), 0, rows, &st));
    ASSERT_NE(vx, nullptr) << bp_last_error();
    TensorPtr vout(bp_tensor_view_rows(big_out.get(), 0, rows, &st));
    ASSERT_NE(vout, nullptr) << bp_last_error();
    EXPECT_EQ(bp_tensor_rows(vx.get()), rows);
    EXPECT_EQ(bp_tensor_cols(vx.get()), in);
    BPT_OK(bp_model_forward(net.model.get(), vx.get(), BP_MODE_INFERENCE, vout.get()));
    BPT_OK(bp_model_forward(net.model.get(), small_x.get(), BP_MODE_INFERENCE, small_out.get()));
    std::vector<float> a((size_t)kMaxBatch * k), b((size_t)rows * k);
    BPT_OK(bp_tensor_download(big_out.get(), a.data(), a.size()));
    BPT_OK(bp_tensor_download(small_out.get(), b.data(), b.size()));
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), b.size() * sizeof(float)));
    for (size_t i = b.size(); i < a.size(); ++i)
        ASSERT_EQ(a[i], 1234.5f) << "element " << i << " past the view was written";
}

// A view in the middle: uploads and downloads through it reach exactly its rows, and a
// training step on views of x and labels equals the step on tensors holding those rows.
TEST_P(InferenceTest, TrainingStepOnRowViewsEqualsOnCopies) {
    BPT_OPEN_OR_SKIP(raw, GetParam());
    DevicePtr dev(raw);
    Net a, b;
    ASSERT_NO_FATAL_FAILURE(make_net(dev.get(), &a));
    ASSERT_NO_FATAL_FAILURE(make_net(dev.get(), &b));
    const int in = kWidths[0], k = kWidths[2], first = 2, rows = 4;
    std::vector<float> x = bpt::uniform((size_t)kMaxBatch * in, -1.0f, 1.0f, 61);
    std::vector<int32_t> labels(kMaxBatch);
    for (int i = 0; i < kMaxBatch; ++i)
        labels[i] = (i * 5 + 1) % k;
    TensorPtr bx, by, cx, cy;
    ASSERT_NO_FATAL_FAILURE(bpt::new_tensor(dev.get(), BP_F32, kMaxBatch, in, &bx));
    ASSERT_NO_FATAL_FAILURE(bpt::new_tensor(dev.get(), BP_I32, kMaxBatch, 1, &by));
    bp_status st;
    TensorPtr vx(bp_tensor_view_rows(bx.get(), first, rows, &st));
    TensorPtr vy(bp_tensor_view_rows(by.get(), first, rows, &st));
    ASSERT_TRUE(vx && vy) << bp_last_error();
    // Fill the bases, then overwrite the view's rows through the view.
    BPT_OK(bp_tensor_upload(bx.get(), x.data(), x.size()));
    std::vector<int32_t> zeros(kMaxBatch, 0);
    BPT_OK(bp_tensor_upload(by.get(), zeros.data(), zeros.size()));
    std::vector<float> xr(x.begin() + first * in, x.begin() + (first + rows) * in);
    std::vector<int32_t> yr(labels.begin() + first, labels.begin() + first + rows);
    BPT_OK(bp_tensor_upload(vy.get(), yr.data(), yr.size()));
    std::vector<int32_t> all_y(kMaxBatch);
    BPT_OK(bp_tensor_download(by.get(), all_y.data(), all_y.size()));
    for (int i = 0; i < kMaxBatch; ++i)
        EXPECT_EQ(all_y[i], i >= first && i < first + rows ? labels[i] : 0) << "label row " << i;
    std::vector<float> back(xr.size());
    BPT_OK(bp_tensor_download(vx.get(), back.data(), back.size()));
    EXPECT_EQ(back, xr);

    ASSERT_NO_FATAL_FAILURE(bpt::upload_f32(dev.get(), rows, in, xr, &cx));
    ASSERT_NO_FATAL_FAILURE(bpt::new_tensor(dev.get(), BP_I32, rows, 1, &cy));
    BPT_OK(bp_tensor_upload(cy.get(), yr.data(), yr.size()));
    bp_optim_config oc = bp_optim_config_default(BP_OPTIM_ADAM);
    OptimPtr oa(bp_optimizer_create(a.model.get(), &oc, &st));
    OptimPtr ob(bp_optimizer_create(b.model.get(), &oc, &st));
    ASSERT_TRUE(oa && ob) << bp_last_error();
    bp_loss_config ce = {BP_LOSS_CROSS_ENTROPY, 0.0f};
    float la = 0, lb = 0;
    BPT_OK(bp_train_step(a.model.get(), oa.get(), &ce, vx.get(), vy.get(), &la));
    BPT_OK(bp_train_step(b.model.get(), ob.get(), &ce, cx.get(), cy.get(), &lb));
    EXPECT_EQ(la, lb);
    std::vector<float> pa(a.params.size()), pb(b.params.size());
    BPT_OK(bp_model_get_params(a.model.get(), pa.data(), pa.size()));
    BPT_OK(bp_model_get_params(b.model.get(), pb.data(), pb.size()));
    EXPECT_EQ(0, std::memcmp(pa.data(), pb.data(), pa.size() * sizeof(float)));
}

// bp_train_step_correct counts what the step's own logits say: the rows whose first largest
// training-mode output (no dropout here, so the inference forward's) before the update is at
// the label, with micro-batches (accum 3, the counts added up) too. Exact.
TEST_P(InferenceTest, TrainStepCountsTheRowsClassifiedRight) {
    BPT_OPEN_OR_SKIP(raw, GetParam());
    DevicePtr dev(raw);
    const int in = kWidths[0], k = kWidths[2], rows = kMaxBatch * 3;
    for (int accum : {1, 3}) {
        SCOPED_TRACE("accum_steps " + std::to_string(accum));
        Net net;
        ASSERT_NO_FATAL_FAILURE(make_net(dev.get(), &net));
        bp_optim_config oc = bp_optim_config_default(BP_OPTIM_SGD);
        oc.lr = 0.5;
        oc.accum_steps = accum;
        bp_status st;
        OptimPtr opt(bp_optimizer_create(net.model.get(), &oc, &st));
        ASSERT_TRUE(opt) << bp_last_error();
        int64_t correct = -1, n = -1;
        EXPECT_EQ(BP_ERR_INVALID_ARGUMENT, bp_train_step_correct(net.model.get(), &correct, &n))
            << "a count before any step";
        int batch = accum == 1 ? kMaxBatch : rows;
        TensorPtr tx, ty;
        ASSERT_NO_FATAL_FAILURE(bpt::new_tensor(dev.get(), BP_F32, batch, in, &tx));
        ASSERT_NO_FATAL_FAILURE(bpt::new_tensor(dev.get(), BP_I32, batch, 1, &ty));
        bp_loss_config ce = {BP_LOSS_CROSS_ENTROPY, 0.1f};
        uint32_t seed = 700 + (uint32_t)accum;
        int64_t total_right = 0;
        for (int step = 0; step < 6; ++step) {
            std::vector<float> x = bpt::uniform((size_t)batch * in, -2.0f, 2.0f, ++seed);
            std::vector<int32_t> y(batch), cls(batch);
            for (int i = 0; i < batch; ++i)
                y[i] = (i * 7 + step) % k;
            BPT_OK(bp_tensor_upload(tx.get(), x.data(), x.size()));
            BPT_OK(bp_tensor_upload(ty.get(), y.data(), y.size()));
            BPT_OK(
                bp_model_predict(net.model.get(), x.data(), batch, BP_PREDICT_CLASS, cls.data()));
            int64_t want = 0;
            for (int i = 0; i < batch; ++i)
                want += cls[i] == y[i];
            BPT_OK(bp_train_step(net.model.get(), opt.get(), &ce, tx.get(), ty.get(), nullptr));
            // A step that did not wait is counted once its results are read.
            bp_step_totals tot;
            BPT_OK(bp_train_results(opt.get(), 1, &tot));
            EXPECT_EQ(tot.steps, 1) << "step " << step;
            EXPECT_EQ(tot.correct, want) << "step " << step;
            EXPECT_EQ(tot.rows, batch) << "step " << step;
            BPT_OK(bp_train_step_correct(net.model.get(), &correct, &n));
            EXPECT_EQ(correct, want) << "step " << step;
            EXPECT_EQ(n, batch) << "step " << step;
            total_right += correct;
        }
        EXPECT_GT(total_right, 0) << "no row was ever right: the count is not exercised";
        // An MSE step has no count.
        TensorPtr tt;
        std::vector<float> t((size_t)batch * k, 0.5f);
        ASSERT_NO_FATAL_FAILURE(bpt::upload_f32(dev.get(), batch, k, t, &tt));
        bp_loss_config mse = {BP_LOSS_MSE, 0.0f};
        BPT_OK(bp_train_step(net.model.get(), opt.get(), &mse, tx.get(), tt.get(), nullptr));
        bp_step_totals tot;
        BPT_OK(bp_train_results(opt.get(), 1, &tot));
        EXPECT_EQ(tot.rows, 0) << "an MSE step has no rows to count";
        EXPECT_EQ(BP_ERR_INVALID_ARGUMENT, bp_train_step_correct(net.model.get(), &correct, &n));
    }
}

INSTANTIATE_TEST_SUITE_P(Backends, InferenceTest, ::testing::ValuesIn(bpt::all_backends()),
                         [](const ::testing::TestParamInfo<std::string> &i) { return i.param; });

} // namespace
