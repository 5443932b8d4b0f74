// CUDA held to the CPU: the same seed gives the same initial weights and dropout masks, and a
// whole training run follows the CPU's losses step by step. Skipped without a GPU.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "support.h"

namespace {

struct Trace {
    std::vector<float> losses, params;
};

// 50 steps of AdamW with dropout and clipping, batch `rows`, on `dev`.
Trace train(bp_device *dev, int rows, int steps, bp_loss_kind kind,
            bp_precision precision = BP_PRECISION_FP32) {
    Trace run;
    int widths[] = {37, 65, 33, 10}; // widths not multiples of 32
    float drop[] = {0.25f, 0.1f, 0.0f};
    bp_activation acts[] = {BP_ACT_GELU, BP_ACT_SILU, BP_ACT_IDENTITY};
    bp_mlp_config cfg = bp_mlp_config_default(3, widths);
    cfg.dropout = drop;
    cfg.activations = acts;
    cfg.seed = 2024;
    cfg.max_batch = rows;
    cfg.precision = precision;
    bp_model *m = bp_model_create(dev, &cfg, nullptr);
    bp_optim_config oc = bp_optim_config_default(BP_OPTIM_ADAMW);
    oc.clip_norm = 1.0f;
    bp_optimizer *o = m ? bp_optimizer_create(m, &oc, nullptr) : nullptr;
    bp_tensor *x = bp_tensor_create(dev, BP_F32, rows, 37, nullptr);
    bool ce = kind == BP_LOSS_CROSS_ENTROPY;
    bp_tensor *y = bp_tensor_create(dev, ce ? BP_I32 : BP_F32, rows, ce ? 1 : 10, nullptr);
    EXPECT_TRUE(o && x && y) << bp_last_error();
    if (o && x && y) {
        auto xs = bpt::uniform((size_t)rows * 37, -1.0f, 1.0f, 17);
        std::vector<int32_t> labels(rows);
        for (int i = 0; i < rows; ++i)
            labels[i] = (i * 7) % 10;
        auto values = bpt::uniform((size_t)rows * 10, 0.0f, 1.0f, 18);
        EXPECT_EQ(bp_tensor_upload(x, xs.data(), xs.size()), BP_OK);
        if (ce)
            EXPECT_EQ(bp_tensor_upload(y, labels.data(), labels.size()), BP_OK);
        else
            EXPECT_EQ(bp_tensor_upload(y, values.data(), values.size()), BP_OK);
        bp_loss_config loss = {kind, ce ? 0.1f : 0.0f};
        for (int s = 0; s < steps; ++s) {
            float v = NAN;
            EXPECT_EQ(bp_train_step(m, o, &loss, x, y, &v), BP_OK) << bp_last_error();
            run.losses.push_back(v);
        }
        run.params.resize(bp_model_n_params(m));
        EXPECT_EQ(bp_model_get_params(m, run.params.data(), run.params.size()), BP_OK);
    }
    bp_tensor_free(x);
    bp_tensor_free(y);
    bp_optimizer_free(o);
    bp_model_free(m);
    return run;
}

// Both devices open, or the case skips with the reason CUDA is unavailable.
template <class Param> class TwoDevices : public ::testing::TestWithParam<Param> {
  protected:
    void SetUp() override {
        std::string why;
        cuda = bpt::open_or_reason("cuda", &why);
        if (!cuda) GTEST_SKIP() << why;
        cpu = bp_device_open("cpu", nullptr);
        ASSERT_NE(cpu, nullptr);
    }
    void TearDown() override {
        bp_device_close(cuda);
        bp_device_close(cpu);
    }
    bp_device *cuda = nullptr, *cpu = nullptr;
};

class CrossDevice : public TwoDevices<int> {};

TEST_P(CrossDevice, SameSeedSameInitialWeights) {
    Trace a = train(cpu, GetParam(), 0, BP_LOSS_CROSS_ENTROPY);
    Trace b = train(cuda, GetParam(), 0, BP_LOSS_CROSS_ENTROPY);
    ASSERT_EQ(a.params.size(), b.params.size());
    // Init runs on the host for every device: bitwise equal.
    EXPECT_EQ(std::memcmp(a.params.data(), b.params.data(), a.params.size() * sizeof(float)), 0);
}

TEST_P(CrossDevice, FiftyStepsFollowTheCpu) {
    for (bp_loss_kind kind : {BP_LOSS_CROSS_ENTROPY, BP_LOSS_MSE}) {
        Trace a = train(cpu, GetParam(), 50, kind);
        Trace b = train(cuda, GetParam(), 50, kind);
        ASSERT_EQ(a.losses.size(), 50u);
        ASSERT_EQ(b.losses.size(), 50u);
        // fp32 on both, the same dropout masks: only summation order and libm ulps differ (a
        // GPU's GEMM order, split-K or blocked, its expf/logf a faithful rounding away). The
        // first step's losses agree to 1e-5 relative (the bound for fp32). Each later
        // step adds its own such difference, of the same size and independent of the last
        // (another order of other sums), on top of the parameters' drift, which Adam's
        // normalised update keeps from growing faster than the steps' own differences add: as
        // a random walk, step s within 1e-5 x sqrt(s + 1) (7e-5 at step 49; was 1e-5 flat).
        for (int s = 0; s < 50; ++s)
            EXPECT_NEAR(b.losses[s], a.losses[s],
                        1e-5 * std::sqrt(s + 1.0) * std::fabs(a.losses[s]))
                << "loss kind " << kind << ", step " << s;
        // Weights drift a little more than losses over 50 Adam steps: 1e-4 relative.
        EXPECT_LT(bpt::rel_err(b.params, a.params), 1e-4);
    }
}

TEST_P(CrossDevice, TwoCudaRunsAreBitwiseEqual) {
    Trace a = train(cuda, GetParam(), 20, BP_LOSS_CROSS_ENTROPY);
    Trace b = train(cuda, GetParam(), 20, BP_LOSS_CROSS_ENTROPY);
    ASSERT_FALSE(a.params.empty());
    EXPECT_EQ(std::memcmp(a.params.data(), b.params.data(), a.params.size() * sizeof(float)), 0);
    EXPECT_EQ(std::memcmp(a.losses.data(), b.losses.data(), a.losses.size() * sizeof(float)), 0);
}

// Odd batch sizes: 1, 7, 1000 and 4097 rows.
INSTANTIATE_TEST_SUITE_P(Rows, CrossDevice, ::testing::Values(1, 7, 1000, 4097));

// The reduced modes round at the same points on both backends (docs/precision.md), so CUDA
// follows the CPU in the same mode. What differs is the order of the fp32 sums and, now and
// then, an element that lies on a rounding boundary and rounds the other way on one of them
// (one ulp: 2^-7 bf16, 2^-10 tf32); a GPU's tensor cores also convert fp32 to TF32 their own
// way, which may not be to nearest even. The CPU run against itself with other blocks of its
// GEMMs (another summation order) moved losses by up to 1.4e-4 (tf32) and 4e-5 (bf16) per
// step and the weights after 50 steps by 1.6e-5 and 5.5e-5. Limits: losses 2e-3 (tf32) and
// 5e-3 (bf16) relative per step, weights 5e-3 and 2e-2: about each mode's own error.
class CrossDevicePrecision : public TwoDevices<bp_precision> {};

TEST_P(CrossDevicePrecision, FiftyStepsFollowTheCpuInTheSameMode) {
    bool bf16 = GetParam() == BP_PRECISION_BF16;
    double loss_tol = bf16 ? 5e-3 : 2e-3, param_tol = bf16 ? 2e-2 : 5e-3;
    for (int rows : {7, 1000}) {
        for (bp_loss_kind kind : {BP_LOSS_CROSS_ENTROPY, BP_LOSS_MSE}) {
            Trace a = train(cpu, rows, 50, kind, GetParam());
            Trace b = train(cuda, rows, 50, kind, GetParam());
            ASSERT_EQ(a.losses.size(), 50u);
            ASSERT_EQ(b.losses.size(), 50u);
            for (int s = 0; s < 50; ++s)
                EXPECT_NEAR(b.losses[s], a.losses[s], loss_tol * std::fabs(a.losses[s]))
                    << "rows " << rows << ", loss kind " << kind << ", step " << s;
            EXPECT_LT(bpt::rel_err(b.params, a.params), param_tol) << "rows " << rows;
        }
    }
}

TEST_P(CrossDevicePrecision, TwoCudaRunsAreBitwiseEqual) {
    Trace a = train(cuda, 1000, 20, BP_LOSS_CROSS_ENTROPY, GetParam());
    Trace b = train(cuda, 1000, 20, BP_LOSS_CROSS_ENTROPY, GetParam());
    ASSERT_FALSE(a.params.empty());
    EXPECT_EQ(std::memcmp(a.params.data(), b.params.data(), a.params.size() * sizeof(float)), 0);
}

INSTANTIATE_TEST_SUITE_P(Modes, CrossDevicePrecision,
                         ::testing::Values(BP_PRECISION_TF32, BP_PRECISION_BF16),
                         [](const ::testing::TestParamInfo<bp_precision> &i) {
                             return std::string(bp_precision_name(i.param));
                         });

TEST(CudaDevice, OutOfMemoryIsAClearError) {
    std::string why;
    bp_device *cuda = bpt::open_or_reason("cuda", &why);
    if (!cuda) GTEST_SKIP() << why;
    bp_status st = BP_OK;
    // 2^30 x 2^10 floats = 4 TiB: more than any GPU holds.
    bp_tensor *t = bp_tensor_create(cuda, BP_F32, (int64_t)1 << 30, 1024, &st);
    EXPECT_EQ(t, nullptr);
    EXPECT_EQ(st, BP_ERR_OUT_OF_MEMORY) << bp_last_error();
    EXPECT_THAT(std::string(bp_last_error()), ::testing::HasSubstr("4398046511104 bytes"));
    // The device still works afterwards.
    bp_tensor *small = bp_tensor_create(cuda, BP_F32, 4, 4, &st);
    EXPECT_NE(small, nullptr) << bp_last_error();
    bp_tensor_free(small);
    bp_device_close(cuda);
}

TEST(CudaDevice, AutoPicksCudaWhenPresent) {
    bp_device *dev = bp_device_open("auto", nullptr);
    ASSERT_NE(dev, nullptr);
    EXPECT_EQ(bp_device_get_kind(dev),
              bp_device_available("cuda") ? BP_DEVICE_CUDA : BP_DEVICE_CPU);
    bp_device_close(dev);
}

} // namespace
