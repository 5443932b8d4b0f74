// Helpers shared by the test files: the backends to run over, skipping, error norms.
#pragma once

#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backprop/backprop.h"

namespace bpt {

// Every backend the suite knows; a test parametrised over them skips the absent ones.
std::vector<std::string> all_backends();

// Opens `name`; on failure returns NULL and fills *why with the reason to skip.
bp_device *open_or_reason(const std::string &name, std::string *why);

// ||out - ref|| / ||ref|| in double; infinity when out holds a NaN or Inf. ref all-zero: the
// absolute norm of out.
double rel_err(const float *out, const double *ref, size_t n);
double rel_err(const std::vector<float> &out, const std::vector<double> &ref);
double rel_err(const std::vector<float> &out, const std::vector<float> &ref);

// Fresh random inputs: uniform in [lo, hi), from a fixed seed per call site.
std::vector<float> uniform(size_t n, float lo, float hi, uint32_t seed);

std::vector<double> to_double(const std::vector<float> &v);

// The shuffle data.h documents, computed word by word from the generator: Fisher-Yates where
// step k swaps i = n-1-k with j = (word 2k | word 2k+1 << 32) mod (i+1) of (seed, stream).
std::vector<int64_t> documented_shuffle(int64_t n, uint64_t seed, uint64_t stream);

// A small classifier trained with AdamW and dropout on random data, for determinism and
// concurrency checks: widths in-h1-h2-classes, labels (i * label_stride + label_offset) % classes.
struct SmallRun {
    int rows, in, h1, h2, classes, steps;
    uint64_t seed;      // initial weights and dropout
    uint32_t data_seed; // inputs
    int label_stride, label_offset;
    float clip_norm, label_smoothing;
};

// The final flat parameters, or empty with *err set. Touches no gtest state, so it may run on
// any thread.
std::vector<float> train_small(bp_device *dev, const SmallRun &run, std::string *err);

// Closes a device at the end of a scope; declare it before anything created on the device.
struct DeviceGuard {
    bp_device *device;
    ~DeviceGuard() {
        bp_device_close(device);
    }
};

struct DatasetFree {
    void operator()(bp_dataset *d) const {
        bp_dataset_free(d);
    }
};
// A dataset freed at the end of its scope.
using DatasetPtr = std::unique_ptr<bp_dataset, DatasetFree>;

} // namespace bpt

// Opens the parameter's backend into `dev`, or skips the test with the reason.
#define BPT_OPEN_OR_SKIP(dev, name)                                                                \
    bp_device *dev = nullptr;                                                                      \
    do {                                                                                           \
        std::string why_;                                                                          \
        dev = bpt::open_or_reason(name, &why_);                                                    \
        if (!dev) GTEST_SKIP() << why_;                                                            \
    } while (0)
