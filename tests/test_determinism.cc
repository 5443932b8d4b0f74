// Determinism: the same seed and thread count give bitwise the same weights.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "support.h"

namespace {

class Determinism : public ::testing::TestWithParam<std::string> {};

// 100 Adam steps with dropout on random data; returns the final flat parameters.
std::vector<float> train_100(bp_device *dev, uint64_t seed) {
    const int rows = 64;
    int widths[] = {20, 48, 32, 5};
    float drop[] = {0.2f, 0.1f, 0.0f};
    bp_mlp_config cfg = bp_mlp_config_default(3, widths);
    cfg.dropout = drop;
    cfg.seed = seed;
    cfg.max_batch = rows;
    bp_model *m = bp_model_create(dev, &cfg, nullptr);
    bp_optim_config oc = bp_optim_config_default(BP_OPTIM_ADAMW);
    oc.clip_norm = 1.0f;
    bp_optimizer *o = m ? bp_optimizer_create(m, &oc, nullptr) : nullptr;
    bp_tensor *x = bp_tensor_create(dev, BP_F32, rows, 20, nullptr);
    bp_tensor *y = bp_tensor_create(dev, BP_I32, rows, 1, nullptr);
    std::vector<float> params;
    if (o && x && y) {
        auto xs = bpt::uniform((size_t)rows * 20, -1.0f, 1.0f, 5);
        std::vector<int32_t> ys(rows);
        for (int i = 0; i < rows; ++i)
            ys[i] = i % 5;
        bp_tensor_upload(x, xs.data(), xs.size());
        bp_tensor_upload(y, ys.data(), ys.size());
        bp_loss_config ce = {BP_LOSS_CROSS_ENTROPY, 0.05f};
        bool ok = true;
        for (int s = 0; s < 100 && ok; ++s)
            ok = bp_train_step(m, o, &ce, x, y, nullptr) == BP_OK;
        EXPECT_TRUE(ok) << bp_last_error();
        params.resize(bp_model_n_params(m));
        EXPECT_EQ(bp_model_get_params(m, params.data(), params.size()), BP_OK);
    }
    bp_tensor_free(x);
    bp_tensor_free(y);
    bp_optimizer_free(o);
    bp_model_free(m);
    return params;
}

TEST_P(Determinism, SameSeedGivesBitwiseSameWeightsAfter100Steps) {
    BPT_OPEN_OR_SKIP(dev, GetParam());
    bpt::DeviceGuard guard{dev};
    std::vector<float> a = train_100(dev, 77), b = train_100(dev, 77), c = train_100(dev, 78);
    ASSERT_FALSE(a.empty());
    ASSERT_EQ(a.size(), b.size());
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
    // A different seed must change the weights (else the check above proves nothing).
    EXPECT_NE(std::memcmp(a.data(), c.data(), a.size() * sizeof(float)), 0);
}

INSTANTIATE_TEST_SUITE_P(Backends, Determinism, ::testing::ValuesIn(bpt::all_backends()),
                         [](const auto &info) { return info.param; });

} // namespace
