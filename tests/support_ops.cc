#include "support_ops.h"

#include <limits>
#include <random>

#include "core/device_internal.h"

namespace bpt {

DevBuf::DevBuf(bp_device *dev, size_t bytes) : dev_(dev), bytes_(bytes) {
    bp_status st = bp_dev_alloc(dev, bytes, "op test buffer", &ptr_);
    if (st != BP_OK) {
        ADD_FAILURE() << "bp_dev_alloc(" << bytes << "): " << bp_last_error();
        ptr_ = nullptr;
    }
}

DevBuf::~DevBuf() {
    bp_dev_free(dev_, ptr_, bytes_);
}

std::vector<float> DevBuf::get(size_t n) const {
    std::vector<float> host(n, std::numeric_limits<float>::quiet_NaN());
    bp_status st = dev_->ops->download(dev_, host.data(), ptr_, n * sizeof(float));
    EXPECT_EQ(BP_OK, st) << bp_last_error();
    return host;
}

void BackendOpsTest::SetUp() {
    BPT_OPEN_OR_SKIP(d, GetParam());
    dev = d;
    ops = dev->ops;
}

void BackendOpsTest::TearDown() {
    if (dev) {
        // Every test frees what it allocates; a leak here is a bug in the test helpers.
        EXPECT_EQ(0u, dev->stats.bytes_in_use);
        bp_device_close(dev);
    }
}

std::string backend_param_name(const ::testing::TestParamInfo<std::string> &info) {
    return info.param;
}

const char *act_name(bp_activation act) {
    static const char *const names[] = {"identity", "relu", "leaky_relu", "sigmoid",
                                        "tanh",     "gelu", "gelu_tanh",  "silu"};
    return (int)act >= 0 && (int)act < BP_ACT_COUNT_ ? names[act] : "?";
}

std::vector<int32_t> random_labels(size_t n, int classes, uint32_t seed) {
    std::mt19937 gen(seed);
    std::uniform_int_distribution<int32_t> dist(0, classes - 1);
    std::vector<int32_t> v(n);
    for (auto &x : v)
        x = dist(gen);
    return v;
}

} // namespace bpt
