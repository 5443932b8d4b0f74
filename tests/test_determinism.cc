// Determinism: the same seed and thread count give bitwise the same weights.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "support.h"

namespace {

class Determinism : public ::testing::TestWithParam<std::string> {};

// 100 AdamW steps with dropout, clipping and label smoothing on random data.
std::vector<float> train_100(bp_device *dev, uint64_t seed) {
    std::string err;
    std::vector<float> params =
        bpt::train_small(dev, {64, 20, 48, 32, 5, 100, seed, 5, 1, 0, 1.0f, 0.05f}, &err);
    EXPECT_FALSE(params.empty()) << err;
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
