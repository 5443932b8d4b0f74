// A checkpoint opened once (bp_checkpoint_open): what it hands out equals what the calls by path
// read, it reads from the file it opened, and every call keeps the API contract.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "contract.h"
#include "support.h"
#include "support_files.h"
#include "support_model.h"

namespace {

using bpt::ModelPtr;
using bpt::OptimPtr;

constexpr bp_status INVALID = BP_ERR_INVALID_ARGUMENT;

struct CheckpointDel {
    void operator()(bp_checkpoint *c) const {
        bp_checkpoint_close(c);
    }
};
using CheckpointPtr = std::unique_ptr<bp_checkpoint, CheckpointDel>;

class CheckpointHandle : public ::testing::Test {
  protected:
    void SetUp() override {
        dev_ = bp_device_open("cpu", nullptr);
        ASSERT_NE(dev_, nullptr) << bp_last_error();
        int widths[] = {4, 7, 3};
        bp_activation acts[] = {BP_ACT_GELU_TANH, BP_ACT_IDENTITY};
        float dropout[] = {0.125f, 0.0f};
        bp_mlp_config c = bp_mlp_config_default(2, widths);
        c.activations = acts;
        c.dropout = dropout;
        c.seed = 77;
        c.max_batch = 12;
        c.precision = BP_PRECISION_TF32;
        model_.reset(bp_model_create(dev_, &c, nullptr));
        ASSERT_TRUE(model_) << bp_last_error();
        bp_optim_config oc = bp_optim_config_default(BP_OPTIM_ADAM);
        oc.lr = 3e-3;
        opt_.reset(bp_optimizer_create(model_.get(), &oc, nullptr));
        ASSERT_TRUE(opt_) << bp_last_error();
        // A step, so the state and step count are not the initial ones.
        bpt::TensorPtr x, y;
        ASSERT_NO_FATAL_FAILURE(bpt::upload_f32(dev_, 5, 4, bpt::uniform(20, -1, 1, 3), &x));
        ASSERT_NO_FATAL_FAILURE(bpt::upload_f32(dev_, 5, 3, bpt::uniform(15, -1, 1, 4), &y));
        bp_loss_config mse = {BP_LOSS_MSE, 0.0f};
        ASSERT_EQ(BP_OK, bp_train_step(model_.get(), opt_.get(), &mse, x.get(), y.get(), nullptr))
            << bp_last_error();
        path_ = dir_.file("m.st");
        bp_meta_entry meta[] = {{"zeta", "last"}, {"alpha", "first"}, {"mid", "dle"}};
        std::vector<float> a = {1.5f, -2.0f, 3.25f}, b = {0.5f};
        bp_meta_array arrays[] = {{"scale", a.data(), a.size()}, {"offset", b.data(), b.size()}};
        ASSERT_EQ(BP_OK, bp_checkpoint_save_arrays(path_.c_str(), model_.get(), opt_.get(), meta, 3,
                                                   arrays, 2))
            << bp_last_error();
        plain_ = dir_.file("plain.st");
        ASSERT_EQ(BP_OK, bp_checkpoint_save(plain_.c_str(), model_.get(), nullptr, nullptr, 0))
            << bp_last_error();
    }
    void TearDown() override {
        opt_.reset();
        model_.reset();
        bp_device_close(dev_);
    }

    bpt::TempDir dir_;
    bp_device *dev_ = nullptr;
    ModelPtr model_;
    OptimPtr opt_;
    std::string path_, plain_;
};

using bpt::params_of;
using bpt::state_of;

// Everything the handle hands out equals what was saved and what the calls by path read.
TEST_F(CheckpointHandle, HandsOutWhatWasSaved) {
    bp_status st = BP_ERR_IO;
    CheckpointPtr ck(bp_checkpoint_open(path_.c_str(), &st));
    ASSERT_TRUE(ck) << bp_last_error();
    EXPECT_EQ(st, BP_OK);
    EXPECT_EQ(path_, bp_checkpoint_path(ck.get()));

    bp_mlp_config c;
    ASSERT_EQ(BP_OK, bp_checkpoint_model_config(ck.get(), &c)) << bp_last_error();
    ASSERT_EQ(c.n_layers, 2);
    EXPECT_EQ(c.widths[0], 4);
    EXPECT_EQ(c.widths[1], 7);
    EXPECT_EQ(c.widths[2], 3);
    EXPECT_EQ(c.activations[0], BP_ACT_GELU_TANH);
    EXPECT_EQ(c.activations[1], BP_ACT_IDENTITY);
    EXPECT_EQ(c.dropout[0], 0.125f);
    EXPECT_EQ(c.dropout[1], 0.0f);
    EXPECT_EQ(c.seed, 77u);
    EXPECT_EQ(c.max_batch, 12);
    EXPECT_EQ(c.precision, BP_PRECISION_TF32);

    ModelPtr m(bp_checkpoint_read_model(ck.get(), dev_, 0, &st));
    ASSERT_TRUE(m) << bp_last_error();
    EXPECT_EQ(params_of(m.get()), params_of(model_.get()));
    EXPECT_EQ(bp_model_rng_counter(m.get()), bp_model_rng_counter(model_.get()));
    ModelPtr by_path(bp_checkpoint_load_model(path_.c_str(), dev_, 0, nullptr));
    ASSERT_TRUE(by_path) << bp_last_error();
    EXPECT_EQ(params_of(m.get()), params_of(by_path.get()));

    EXPECT_EQ(bp_checkpoint_has_optimizer(ck.get()), 1);
    bp_optim_config oc;
    int64_t steps = -1;
    ASSERT_EQ(BP_OK, bp_checkpoint_optim_config(ck.get(), &oc, &steps)) << bp_last_error();
    EXPECT_EQ(oc.kind, BP_OPTIM_ADAM);
    EXPECT_EQ(oc.lr, 3e-3);
    EXPECT_EQ(steps, 1);
    OptimPtr o(bp_checkpoint_read_optimizer(ck.get(), m.get(), &st));
    ASSERT_TRUE(o) << bp_last_error();
    int64_t s1 = 0, s2 = 0;
    EXPECT_EQ(state_of(o.get(), &s1), state_of(opt_.get(), &s2));
    EXPECT_EQ(s1, s2);

    // The caller's entries, in key order, without the "run." prefix.
    ASSERT_EQ(bp_checkpoint_n_meta(ck.get()), 3u);
    const char *keys[] = {"alpha", "mid", "zeta"}, *values[] = {"first", "dle", "last"};
    for (size_t k = 0; k < 3; ++k) {
        bp_meta_entry e = bp_checkpoint_meta_at(ck.get(), k);
        EXPECT_STREQ(e.key, keys[k]);
        EXPECT_STREQ(e.value, values[k]);
        EXPECT_STREQ(bp_checkpoint_meta(ck.get(), keys[k]), values[k]);
    }
    bp_meta_entry none = bp_checkpoint_meta_at(ck.get(), 3);
    EXPECT_EQ(none.key, nullptr);
    EXPECT_EQ(none.value, nullptr);
    EXPECT_EQ(bp_checkpoint_meta(ck.get(), "absent"), nullptr);
    EXPECT_EQ(bp_checkpoint_meta(ck.get(), "run.alpha"), nullptr); // keys are without the prefix
    EXPECT_EQ(bp_checkpoint_meta(ck.get(), "format"), nullptr);    // the library's are not theirs

    ASSERT_EQ(bp_checkpoint_n_arrays(ck.get()), 2u);
    EXPECT_STREQ(bp_checkpoint_array_name(ck.get(), 0), "offset");
    EXPECT_STREQ(bp_checkpoint_array_name(ck.get(), 1), "scale");
    EXPECT_EQ(bp_checkpoint_array_name(ck.get(), 2), nullptr);
    size_t n = 0;
    float *a = bp_checkpoint_read_array(ck.get(), "scale", &n, &st);
    ASSERT_NE(a, nullptr) << bp_last_error();
    EXPECT_EQ(std::vector<float>(a, a + n), (std::vector<float>{1.5f, -2.0f, 3.25f}));
    std::free(a);
    n = 9;
    EXPECT_EQ(bp_checkpoint_read_array(ck.get(), "absent", &n, &st), nullptr);
    EXPECT_EQ(st, BP_OK);
    EXPECT_EQ(n, 0u);

    int verified = -1;
    EXPECT_EQ(BP_OK, bp_checkpoint_check(ck.get(), &verified)) << bp_last_error();
    EXPECT_EQ(verified, 1);
}

// The handle reads the file it opened: replacing the path afterwards changes nothing it hands
// out (the path calls would each open the new file).
TEST_F(CheckpointHandle, ReadsTheFileItOpened) {
    CheckpointPtr ck(bp_checkpoint_open(path_.c_str(), nullptr));
    ASSERT_TRUE(ck) << bp_last_error();
    ASSERT_EQ(0, std::rename(plain_.c_str(), path_.c_str()));
    EXPECT_EQ(bp_checkpoint_has_optimizer(ck.get()), 1);
    EXPECT_STREQ(bp_checkpoint_meta(ck.get(), "alpha"), "first");
    ModelPtr m(bp_checkpoint_read_model(ck.get(), dev_, 0, nullptr));
    ASSERT_TRUE(m) << bp_last_error();
    OptimPtr o(bp_checkpoint_read_optimizer(ck.get(), m.get(), nullptr));
    EXPECT_TRUE(o) << bp_last_error();
    EXPECT_EQ(BP_OK, bp_checkpoint_check(ck.get(), nullptr)) << bp_last_error();
    // The path now holds the checkpoint without an optimizer.
    bp_status st = BP_OK;
    EXPECT_EQ(bp_checkpoint_load_optimizer(path_.c_str(), m.get(), &st), nullptr);
    EXPECT_EQ(st, INVALID);
}

TEST_F(CheckpointHandle, ModelsReadTwiceAreEqualAndIndependent) {
    CheckpointPtr ck(bp_checkpoint_open(path_.c_str(), nullptr));
    ASSERT_TRUE(ck) << bp_last_error();
    ModelPtr a(bp_checkpoint_read_model(ck.get(), dev_, 5, nullptr));
    ModelPtr b(bp_checkpoint_read_model(ck.get(), dev_, 0, nullptr));
    ASSERT_TRUE(a && b) << bp_last_error();
    EXPECT_EQ(bp_model_max_batch(a.get()), 5);
    EXPECT_EQ(bp_model_max_batch(b.get()), 12);
    EXPECT_EQ(params_of(a.get()), params_of(b.get()));
    // The handle may close before the models it made.
    ck.reset();
    EXPECT_EQ(params_of(a.get()), params_of(model_.get()));
}

TEST(ApiContract, CheckpointHandle) {
    bp_device *dev = bp_device_open("cpu", nullptr);
    ASSERT_NE(dev, nullptr) << bp_last_error();
    bpt::DeviceGuard guard{dev};
    bpt::TempDir dir;
    EXPECT_CTOR_FAILS(INVALID, "bp_checkpoint_open", bp_checkpoint_open(nullptr, &st),
                      bp_checkpoint_open(nullptr, nullptr));
    const std::string absent = dir.file("absent.st");
    EXPECT_CTOR_FAILS(BP_ERR_IO, "bp_checkpoint_open", bp_checkpoint_open(absent.c_str(), &st),
                      bp_checkpoint_open(absent.c_str(), nullptr));
    EXPECT_ERROR_HAS(absent);
    const std::string junk = dir.file("junk.st");
    bpt::write_file(junk, "this is not a safetensors file at all");
    EXPECT_CTOR_FAILS(BP_ERR_CORRUPT_FILE, "bp_checkpoint_open",
                      bp_checkpoint_open(junk.c_str(), &st),
                      bp_checkpoint_open(junk.c_str(), nullptr));
    EXPECT_ERROR_HAS(junk);

    // NULL handles: getters give their neutral values, the rest fail naming the call.
    bp_checkpoint_close(nullptr);
    EXPECT_STREQ(bp_checkpoint_path(nullptr), "");
    EXPECT_EQ(bp_checkpoint_has_optimizer(nullptr), 0);
    EXPECT_EQ(bp_checkpoint_n_meta(nullptr), 0u);
    EXPECT_EQ(bp_checkpoint_meta_at(nullptr, 0).key, nullptr);
    EXPECT_EQ(bp_checkpoint_meta(nullptr, "k"), nullptr);
    EXPECT_EQ(bp_checkpoint_n_arrays(nullptr), 0u);
    EXPECT_EQ(bp_checkpoint_array_name(nullptr, 0), nullptr);
    bp_mlp_config mc;
    bp_optim_config oc;
    size_t n = 0;
    EXPECT_FAILS(INVALID, "bp_checkpoint_model_config", bp_checkpoint_model_config(nullptr, &mc));
    EXPECT_FAILS(INVALID, "bp_checkpoint_optim_config",
                 bp_checkpoint_optim_config(nullptr, &oc, nullptr));
    EXPECT_FAILS(INVALID, "bp_checkpoint_check", bp_checkpoint_check(nullptr, nullptr));
    EXPECT_CTOR_FAILS(INVALID, "bp_checkpoint_read_model",
                      bp_checkpoint_read_model(nullptr, dev, 0, &st),
                      bp_checkpoint_read_model(nullptr, dev, 0, nullptr));
    EXPECT_CTOR_FAILS(INVALID, "bp_checkpoint_read_array",
                      bp_checkpoint_read_array(nullptr, "a", &n, &st),
                      bp_checkpoint_read_array(nullptr, "a", &n, nullptr));

    // A real handle with NULL arguments, and a checkpoint without an optimizer.
    int widths[] = {2, 3};
    bp_mlp_config c = bp_mlp_config_default(1, widths);
    ModelPtr model(bp_model_create(dev, &c, nullptr));
    ASSERT_TRUE(model) << bp_last_error();
    const std::string path = dir.file("m.st");
    ASSERT_EQ(BP_OK, bp_checkpoint_save(path.c_str(), model.get(), nullptr, nullptr, 0));
    CheckpointPtr ck(bp_checkpoint_open(path.c_str(), nullptr));
    ASSERT_TRUE(ck) << bp_last_error();
    EXPECT_FAILS(INVALID, "bp_checkpoint_model_config",
                 bp_checkpoint_model_config(ck.get(), nullptr));
    EXPECT_FAILS(INVALID, "bp_checkpoint_optim_config",
                 bp_checkpoint_optim_config(ck.get(), nullptr, nullptr));
    EXPECT_FAILS(INVALID, "bp_checkpoint_optim_config",
                 bp_checkpoint_optim_config(ck.get(), &oc, nullptr));
    EXPECT_ERROR_HAS("holds no optimizer");
    EXPECT_EQ(bp_checkpoint_has_optimizer(ck.get()), 0);
    EXPECT_CTOR_FAILS(INVALID, "bp_checkpoint_read_model",
                      bp_checkpoint_read_model(ck.get(), nullptr, 0, &st),
                      bp_checkpoint_read_model(ck.get(), nullptr, 0, nullptr));
    EXPECT_ERROR_HAS("device is NULL");
    EXPECT_CTOR_FAILS(INVALID, "bp_checkpoint_read_optimizer",
                      bp_checkpoint_read_optimizer(ck.get(), nullptr, &st),
                      bp_checkpoint_read_optimizer(ck.get(), nullptr, nullptr));
    EXPECT_CTOR_FAILS(INVALID, "bp_checkpoint_read_optimizer",
                      bp_checkpoint_read_optimizer(ck.get(), model.get(), &st),
                      bp_checkpoint_read_optimizer(ck.get(), model.get(), nullptr));
    EXPECT_ERROR_HAS("holds no optimizer");
    EXPECT_CTOR_FAILS(INVALID, "bp_checkpoint_read_array",
                      bp_checkpoint_read_array(ck.get(), nullptr, &n, &st),
                      bp_checkpoint_read_array(ck.get(), nullptr, &n, nullptr));
    EXPECT_CTOR_FAILS(INVALID, "bp_checkpoint_read_array",
                      bp_checkpoint_read_array(ck.get(), "a", nullptr, &st),
                      bp_checkpoint_read_array(ck.get(), "a", nullptr, nullptr));
    EXPECT_EQ(bp_checkpoint_meta(ck.get(), nullptr), nullptr);
}

} // namespace
