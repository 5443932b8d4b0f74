// Helpers shared by the op tests (test_ops.cc, test_gradcheck_ops.cc), which call the backend
// vtable directly: device buffers, a fixture holding the parameter's backend, names for traces.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "backprop/backprop.h"
#include "core/backend.h"
#include "support.h"

// Asserts that a vtable call returns BP_OK, naming the call and the library's last error.
#define BPT_OPS_OK(expr)                                                                           \
    do {                                                                                           \
        bp_status st_ = (expr);                                                                    \
        ASSERT_EQ(BP_OK, st_) << #expr << ": " << bp_last_error();                                 \
    } while (0)

namespace bpt {

// A block of device memory from bp_dev_alloc, freed on scope exit. A failed allocation is a
// test failure (and leaves the buffer NULL).
class DevBuf {
  public:
    DevBuf(bp_device *dev, size_t bytes);
    // Allocates host.size() elements and uploads them.
    template <class T>
    DevBuf(bp_device *dev, const std::vector<T> &host) : DevBuf(dev, host.size() * sizeof(T)) {
        put(host);
    }
    DevBuf(const DevBuf &) = delete;
    DevBuf &operator=(const DevBuf &) = delete;
    ~DevBuf();

    float *f() const {
        return static_cast<float *>(ptr_);
    }
    int32_t *i32() const {
        return static_cast<int32_t *>(ptr_);
    }

    // Uploads host to the start of the buffer (fatal failure when it does not fit or fails).
    template <class T> void put(const std::vector<T> &host) {
        ASSERT_LE(host.size() * sizeof(T), bytes_);
        bp_status st = dev_->ops->upload(dev_, ptr_, host.data(), host.size() * sizeof(T));
        ASSERT_EQ(BP_OK, st) << bp_last_error();
    }
    // Downloads the first n floats (NaN where the download failed).
    std::vector<float> get(size_t n) const;

  private:
    bp_device *dev_;
    void *ptr_ = nullptr;
    size_t bytes_;
};

// A device buffer of n elements of T between two guard zones of kGuardElems elements each, so
// that an op handed the inside shows a write before or past its output on any device (a GPU
// has no canary past an allocation, and in a model such a write lands in a neighbouring buffer
// of the workspace). The guards hold a quiet NaN with a payload of the buffer's own (for int32:
// a label far past any class count), so a read past an input poisons the result too, and what
// an op computes from another buffer's guard never matches this one's. The inside starts as the
// given values, or as NaN bytes (0xff) where an output was never written.
// 4096 elements: a whole row of any shape the op tests use, so a write one row too far lands
// in the guard, not past the allocation.
constexpr size_t kGuardElems = 4096;

template <class T> class Guarded {
  public:
    Guarded(bp_device *dev, size_t n) : Guarded(dev, std::vector<T>(), n) {}
    Guarded(bp_device *dev, const std::vector<T> &inside) : Guarded(dev, inside, inside.size()) {}
    T *p() const {
        return reinterpret_cast<T *>(buf_.f()) + kGuardElems;
    }
    // The inside, downloaded.
    std::vector<T> get() const {
        return slice(all(), kGuardElems, n_);
    }
    // Adds a failure naming `what`, the side and the first changed element when a guard is no
    // longer bitwise its pattern.
    void expect_guards(const char *what) const;

  private:
    Guarded(bp_device *dev, const std::vector<T> &inside, size_t n);
    std::vector<T> all() const;
    static std::vector<T> slice(const std::vector<T> &v, size_t from, size_t n) {
        return std::vector<T>(v.begin() + from, v.begin() + from + n);
    }
    bp_device *dev_;
    size_t n_;
    uint32_t bits_; // this buffer's guard pattern
    DevBuf buf_;
};
extern template class Guarded<float>;
extern template class Guarded<int32_t>;
extern template class Guarded<uint16_t>;

// A test parametrised over backend names: opens the parameter's backend (or skips), and at the
// end checks that the test freed every byte it allocated before closing the device.
class BackendOpsTest : public ::testing::TestWithParam<std::string> {
  protected:
    void SetUp() override;
    void TearDown() override;
    bp_device *dev = nullptr;
    const bp_backend_ops *ops = nullptr;
};

// The backend name itself, as the name of an INSTANTIATE_TEST_SUITE_P instance.
std::string backend_param_name(const ::testing::TestParamInfo<std::string> &info);

// "relu", "gelu_tanh", ... ("?" outside the enum), for SCOPED_TRACE.
const char *act_name(bp_activation act);

// n class labels uniform in [0, classes), from a fixed seed per call site.
std::vector<int32_t> random_labels(size_t n, int classes, uint32_t seed);

} // namespace bpt
