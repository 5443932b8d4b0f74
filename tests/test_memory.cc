// Memory: a training step allocates nothing, and every allocation failure is reported cleanly,
// leaks nothing and leaves what existed as it was.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "support.h"

namespace {

using ::testing::HasSubstr;

class Memory : public ::testing::TestWithParam<std::string> {};

bp_device_stats stats_of(bp_device *dev) {
    bp_device_stats s{};
    EXPECT_EQ(bp_device_get_stats(dev, &s), BP_OK);
    return s;
}

TEST_P(Memory, TrainingStepAllocatesNothing) {
    BPT_OPEN_OR_SKIP(dev, GetParam());
    bpt::DeviceGuard guard{dev};
    int widths[] = {12, 32, 16, 3};
    float drop[] = {0.1f, 0.1f, 0.0f};
    bp_mlp_config cfg = bp_mlp_config_default(3, widths);
    cfg.dropout = drop;
    cfg.max_batch = 32;
    bp_model *m = bp_model_create(dev, &cfg, nullptr);
    ASSERT_NE(m, nullptr) << bp_last_error();
    bp_optim_config oc = bp_optim_config_default(BP_OPTIM_SGD);
    oc.momentum = 0.9f;
    oc.clip_norm = 0.5f;
    oc.accum_steps = 2;
    bp_optimizer *o = bp_optimizer_create(m, &oc, nullptr);
    bp_tensor *x = bp_tensor_create(dev, BP_F32, 64, 12, nullptr);
    bp_tensor *y = bp_tensor_create(dev, BP_I32, 64, 1, nullptr);
    ASSERT_TRUE(o && x && y);
    auto xs = bpt::uniform(64 * 12, -1, 1, 4);
    std::vector<int32_t> ys(64);
    for (int i = 0; i < 64; ++i)
        ys[i] = i % 3;
    ASSERT_EQ(bp_tensor_upload(x, xs.data(), xs.size()), BP_OK);
    ASSERT_EQ(bp_tensor_upload(y, ys.data(), ys.size()), BP_OK);
    bp_loss_config ce = {BP_LOSS_CROSS_ENTROPY, 0.1f};
    bp_device_stats before = stats_of(dev);
    float loss = 0, norm = 0;
    for (int s = 0; s < 5; ++s)
        ASSERT_EQ(bp_train_step(m, o, &ce, x, y, &loss), BP_OK);
    ASSERT_EQ(bp_model_grad_norm(m, &norm), BP_OK);
    bp_device_stats after = stats_of(dev);
    EXPECT_EQ(after.alloc_count, before.alloc_count);
    EXPECT_EQ(after.free_count, before.free_count);
    EXPECT_EQ(after.bytes_in_use, before.bytes_in_use);
    bp_tensor_free(x);
    bp_tensor_free(y);
    bp_optimizer_free(o);
    bp_model_free(m);
    EXPECT_EQ(stats_of(dev).bytes_in_use, 0u);
}

// Every allocation of model and optimizer creation, failed in turn through the memory limit,
// in each precision (bf16 adds the weights' copy, tf32 and bf16 the CPU's GEMM scratch).
TEST_P(Memory, AllocationFailureAtEachPointIsCleanAndNamesSizes) {
    BPT_OPEN_OR_SKIP(dev, GetParam());
    bpt::DeviceGuard guard{dev};
    for (bp_precision p : {BP_PRECISION_FP32, BP_PRECISION_TF32, BP_PRECISION_BF16}) {
        SCOPED_TRACE(bp_precision_name(p));
        ASSERT_EQ(bp_device_set_memory_limit(dev, 0), BP_OK);
        int widths[] = {100, 200, 10};
        bp_mlp_config cfg = bp_mlp_config_default(2, widths);
        cfg.max_batch = 64;
        cfg.precision = p;
        // Measure what a full model + Adam needs.
        bp_model *m = bp_model_create(dev, &cfg, nullptr);
        ASSERT_NE(m, nullptr);
        bp_optim_config oc = bp_optim_config_default(BP_OPTIM_ADAM);
        bp_optimizer *o = bp_optimizer_create(m, &oc, nullptr);
        ASSERT_NE(o, nullptr);
        size_t need = stats_of(dev).bytes_in_use;
        uint64_t allocs = stats_of(dev).alloc_count;
        bp_optimizer_free(o);
        bp_model_free(m);
        ASSERT_EQ(stats_of(dev).bytes_in_use, 0u);
        ASSERT_GE(allocs, 4u);
        int failures = 0;
        for (size_t limit = 64; limit < need; limit += need / 64) {
            ASSERT_EQ(bp_device_set_memory_limit(dev, limit), BP_OK);
            bp_status st = BP_OK;
            m = bp_model_create(dev, &cfg, &st);
            o = m ? bp_optimizer_create(m, &oc, &st) : nullptr;
            if (!o) {
                ++failures;
                EXPECT_EQ(st, BP_ERR_OUT_OF_MEMORY);
                EXPECT_THAT(std::string(bp_last_error()),
                            HasSubstr("would exceed the memory limit of " + std::to_string(limit) +
                                      " bytes"));
            }
            bp_optimizer_free(o);
            bp_model_free(m);
            EXPECT_EQ(stats_of(dev).bytes_in_use, 0u) << "leak at limit " << limit;
        }
        EXPECT_GE(failures, 60);
        ASSERT_EQ(bp_device_set_memory_limit(dev, need), BP_OK);
        m = bp_model_create(dev, &cfg, nullptr);
        EXPECT_NE(m, nullptr) << "exactly the needed bytes must be enough: " << bp_last_error();
        bp_model_free(m);
    }
}

TEST_P(Memory, TensorOverLimitFailsWithSizes) {
    BPT_OPEN_OR_SKIP(dev, GetParam());
    bpt::DeviceGuard guard{dev};
    ASSERT_EQ(bp_device_set_memory_limit(dev, 1000), BP_OK);
    bp_status st = BP_OK;
    EXPECT_EQ(bp_tensor_create(dev, BP_F32, 100, 100, &st), nullptr);
    EXPECT_EQ(st, BP_ERR_OUT_OF_MEMORY);
    EXPECT_THAT(std::string(bp_last_error()), HasSubstr("40000 bytes"));
    EXPECT_THAT(std::string(bp_last_error()), HasSubstr("memory limit of 1000 bytes"));
}

// 2^40 parameters (4 TiB of weights alone): more than any host or GPU has free, so the check
// before allocating refuses it, naming the figure it compared with, and nothing is allocated.
TEST_P(Memory, AModelThatCannotFitIsRefusedBeforeAnyAllocation) {
    BPT_OPEN_OR_SKIP(dev, GetParam());
    bpt::DeviceGuard guard{dev};
    int widths[] = {1 << 20, 1 << 20, 2};
    bp_mlp_config cfg = bp_mlp_config_default(2, widths);
    bp_device_stats before = stats_of(dev);
    bp_status st = BP_OK;
    EXPECT_EQ(bp_model_create(dev, &cfg, &st), nullptr);
    EXPECT_EQ(st, BP_ERR_OUT_OF_MEMORY);
    std::string why = bp_last_error();
    EXPECT_THAT(why, ::testing::HasSubstr("bp_model_create: needs"));
    EXPECT_THAT(why, ::testing::HasSubstr("the largest part is the parameters"));
    EXPECT_THAT(why, ::testing::HasSubstr(GetParam() == std::string("cpu") ? "MemAvailable"
                                                                           : "cudaMemGetInfo"));
    EXPECT_EQ(stats_of(dev).alloc_count, before.alloc_count);
}

INSTANTIATE_TEST_SUITE_P(Backends, Memory, ::testing::ValuesIn(bpt::all_backends()),
                         [](const auto &info) { return info.param; });

} // namespace
