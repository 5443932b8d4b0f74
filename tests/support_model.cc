#include "support_model.h"

#include <cmath>

namespace bpt {

void new_tensor(bp_device *dev, bp_dtype dtype, int64_t rows, int64_t cols, TensorPtr *t) {
    bp_status st = BP_OK;
    t->reset(bp_tensor_create(dev, dtype, rows, cols, &st));
    ASSERT_NE(nullptr, t->get()) << bp_last_error();
}

void upload_f32(bp_device *dev, int64_t rows, int64_t cols, const std::vector<float> &host,
                TensorPtr *t) {
    ASSERT_NO_FATAL_FAILURE(new_tensor(dev, BP_F32, rows, cols, t));
    BPT_OK(bp_tensor_upload(t->get(), host.data(), host.size()));
}

void upload_target(bp_device *dev, bp_loss_kind kind, int64_t rows, int64_t cols,
                   const std::vector<float> &target, const std::vector<int32_t> &labels,
                   TensorPtr *t) {
    if (kind == BP_LOSS_CROSS_ENTROPY) {
        ASSERT_NO_FATAL_FAILURE(new_tensor(dev, BP_I32, rows, 1, t));
        BPT_OK(bp_tensor_upload(t->get(), labels.data(), labels.size()));
    } else {
        ASSERT_NO_FATAL_FAILURE(upload_f32(dev, rows, cols, target, t));
    }
}

FastTanh fast_tanh_allowance(const std::string &backend, bp_precision p, bp_activation act,
                             int layers) {
    // fp32 products never fuse GELU (src/cuda/cuda_lt.c, lt_epilogue), so no allowance there
    if (backend != "cuda" || act != BP_ACT_GELU_TANH || p == BP_PRECISION_FP32) return {0.0, 0.0};
    double d = std::exp2(-10.987);
    if (p == BP_PRECISION_BF16) d = std::sqrt(d * 0x1p-8);
    return {layers * d, 2 * layers * d};
}

std::vector<float> params_of(const bp_model *m) {
    std::vector<float> p(bp_model_n_params(m));
    EXPECT_EQ(BP_OK, bp_model_get_params(m, p.data(), p.size())) << bp_last_error();
    return p;
}

std::vector<float> state_of(const bp_optimizer *o, int64_t *steps) {
    std::vector<float> s(bp_optimizer_state_size(o));
    EXPECT_EQ(BP_OK, bp_optimizer_get_state(o, s.data(), s.size(), steps)) << bp_last_error();
    return s;
}

} // namespace bpt
