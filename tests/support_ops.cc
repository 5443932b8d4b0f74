#include "support_ops.h"

#include <algorithm>
#include <atomic>
#include <cstring>
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

namespace {

// A buffer's guard pattern: a quiet NaN whose payload (in the high 16 bits too, so a bf16 keeps
// it) differs from the previous 62 buffers'. A NaN read past an input carries the input's
// payload into whatever the op computes from it, so an output's guard must hold another one to
// show that write.
uint32_t next_guard_bits() {
    static std::atomic<uint32_t> count{0};
    return 0x7fc0a5a5u | (1u + count++ % 63u) << 16;
}

// The pattern as one element: the 32 bits (float, int32: a label far past any class count) or
// their high half (bf16).
template <class T> T guard_value(uint32_t bits) {
    T v;
    if (sizeof(T) == 4)
        std::memcpy(&v, &bits, 4);
    else {
        uint16_t hi = (uint16_t)(bits >> 16);
        std::memcpy(&v, &hi, sizeof v);
    }
    return v;
}

} // namespace

template <class T>
Guarded<T>::Guarded(bp_device *dev, const std::vector<T> &inside, size_t n)
    : dev_(dev), n_(n), bits_(next_guard_bits()), buf_(dev, (n + 2 * kGuardElems) * sizeof(T)) {
    std::vector<T> host(n + 2 * kGuardElems, guard_value<T>(bits_));
    if (inside.empty())
        std::memset(host.data() + kGuardElems, 0xff, n * sizeof(T));
    else
        std::copy(inside.begin(), inside.end(), host.begin() + kGuardElems);
    buf_.put(host);
}

template <class T> std::vector<T> Guarded<T>::all() const {
    std::vector<T> host(n_ + 2 * kGuardElems);
    bp_status st = dev_->ops->download(dev_, host.data(), buf_.f(), host.size() * sizeof(T));
    EXPECT_EQ(BP_OK, st) << bp_last_error();
    return host;
}

template <class T> void Guarded<T>::expect_guards(const char *what) const {
    const T want = guard_value<T>(bits_);
    std::vector<T> host = all();
    for (size_t i = 0; i < host.size(); ++i) {
        if (i == kGuardElems) i += n_; // the inside
        if (i < host.size() && std::memcmp(&host[i], &want, sizeof want) != 0) {
            bool before = i < kGuardElems;
            ADD_FAILURE() << what << ": the guard " << (before ? "before" : "after")
                          << " the buffer was written, first at element "
                          << (before ? (long long)i - (long long)kGuardElems
                                     : (long long)(i - kGuardElems))
                          << " of " << n_;
            return;
        }
    }
}

template class Guarded<float>;
template class Guarded<int32_t>;
template class Guarded<uint16_t>;

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
