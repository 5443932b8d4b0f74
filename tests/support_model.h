// Helpers shared by the whole-network tests (test_mlp.cc, test_optim.cc): owning handles for
// devices, models, optimizers and tensors, and the tensors of a batch.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backprop/backprop.h"

// Asserts that a library call returns BP_OK, naming the call and the library's last error.
#define BPT_OK(call) ASSERT_EQ(BP_OK, (call)) << #call << ": " << bp_last_error()

namespace bpt {

struct DeviceDel {
    void operator()(bp_device *d) const {
        bp_device_close(d);
    }
};
struct ModelDel {
    void operator()(bp_model *m) const {
        bp_model_free(m);
    }
};
struct OptimDel {
    void operator()(bp_optimizer *o) const {
        bp_optimizer_free(o);
    }
};
struct TensorDel {
    void operator()(bp_tensor *t) const {
        bp_tensor_free(t);
    }
};
using DevicePtr = std::unique_ptr<bp_device, DeviceDel>;
using ModelPtr = std::unique_ptr<bp_model, ModelDel>;
using OptimPtr = std::unique_ptr<bp_optimizer, OptimDel>;
using TensorPtr = std::unique_ptr<bp_tensor, TensorDel>;

// A new, uninitialised rows x cols tensor of dtype into *t (a fatal failure when refused).
void new_tensor(bp_device *dev, bp_dtype dtype, int64_t rows, int64_t cols, TensorPtr *t);

// A rows x cols BP_F32 tensor holding host (rows * cols floats).
void upload_f32(bp_device *dev, int64_t rows, int64_t cols, const std::vector<float> &host,
                TensorPtr *t);

// The target tensor of a batch of `rows` for a loss: for cross-entropy the labels as a
// [rows, 1] BP_I32 tensor, otherwise target as a [rows, cols] BP_F32 tensor.
void upload_target(bp_device *dev, bp_loss_kind kind, int64_t rows, int64_t cols,
                   const std::vector<float> &target, const std::vector<int32_t> &labels,
                   TensorPtr *t);

// What a fused GELU epilogue's fast tanh may add on `backend` (test_precision.cc derives it):
// relative, norm-wise, on a network's output (fwd) and on its gradients (grad), for `layers`
// GELU (tanh form) layers in precision p; zero but on the CUDA backend.
struct FastTanh {
    double fwd, grad;
};
FastTanh fast_tanh_allowance(const std::string &backend, bp_precision p, bp_activation act,
                             int layers);

// The model's flat parameters, and the optimizer's state and step count, on the host.
std::vector<float> params_of(const bp_model *m);
std::vector<float> state_of(const bp_optimizer *o, int64_t *steps);

} // namespace bpt
