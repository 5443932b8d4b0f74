// The API contract, function by function over every public header: a NULL or invalid argument
// never crashes; a call returning bp_status returns the documented code and leaves a message on
// this thread that names the call; a constructor returns NULL, sets *status and the message (and
// accepts a NULL status); a getter returns its neutral value (0, "", NULL, the first enum) and a
// free accepts NULL.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "contract.h"
#include "support.h"

namespace {

constexpr bp_status INVALID = BP_ERR_INVALID_ARGUMENT;

TEST(ApiContract, StatusStrings) {
    const bp_status all[] = {BP_OK,
                             BP_ERR_INVALID_ARGUMENT,
                             BP_ERR_SHAPE_MISMATCH,
                             BP_ERR_OUT_OF_MEMORY,
                             BP_ERR_DEVICE,
                             BP_ERR_IO,
                             BP_ERR_CORRUPT_FILE,
                             BP_ERR_UNSUPPORTED,
                             BP_ERR_NON_FINITE,
                             BP_ERR_REMOTE};
    for (bp_status s : all) {
        ASSERT_NE(bp_status_string(s), nullptr);
        EXPECT_STRNE(bp_status_string(s), "unknown status") << s;
    }
    EXPECT_STREQ(bp_status_string((bp_status)-1000), "unknown status");
    bp_device_set_memory_limit(nullptr, 0);
    EXPECT_STRNE(bp_last_error(), "");
    bp_clear_error();
    EXPECT_STREQ(bp_last_error(), "");
}

TEST(ApiContract, Device) {
    EXPECT_CTOR_FAILS(INVALID, "bp_device_open", bp_device_open(nullptr, &st),
                      bp_device_open(nullptr, nullptr));
    bp_clear_error();
    bp_status st = BP_OK;
    EXPECT_EQ(bp_device_open("tpu:7", &st), nullptr);
    EXPECT_NE(st, BP_OK);
    EXPECT_NE(std::string(bp_last_error()).find("tpu:7"), std::string::npos) << bp_last_error();
    bp_device_close(nullptr);
    EXPECT_EQ(bp_device_get_kind(nullptr), BP_DEVICE_CPU);
    EXPECT_STREQ(bp_device_name(nullptr), "");
    EXPECT_EQ(bp_device_available(nullptr), 0);
    EXPECT_EQ(bp_device_available("no-such-device"), 0);
    EXPECT_FAILS(INVALID, "bp_device_synchronize", bp_device_synchronize(nullptr));
    EXPECT_FAILS(INVALID, "bp_device_set_memory_limit", bp_device_set_memory_limit(nullptr, 64));
    bp_device_stats stats;
    EXPECT_FAILS(INVALID, "bp_device_get_stats", bp_device_get_stats(nullptr, &stats));
    bp_device *dev = bp_device_open("cpu", nullptr);
    ASSERT_NE(dev, nullptr) << bp_last_error();
    bpt::DeviceGuard guard{dev};
    EXPECT_FAILS(INVALID, "bp_device_get_stats", bp_device_get_stats(dev, nullptr));
}

TEST(ApiContract, DeviceOptions) {
    bp_device_options d = bp_device_options_default();
    EXPECT_EQ(d.threads, 0);
    EXPECT_EQ(d.check_memory, 1);
    bp_device_options o = d;
    o.threads = -1;
    EXPECT_CTOR_FAILS(INVALID, "options.threads", bp_device_open_ex("cpu", &o, &st),
                      bp_device_open_ex("cpu", &o, nullptr));
    o = d;
    o.threads = 1 << 20;
    EXPECT_CTOR_FAILS(INVALID, "options.threads", bp_device_open_ex("cpu", &o, &st),
                      bp_device_open_ex("cpu", &o, nullptr));
    o = d;
    o.check_memory = 2;
    EXPECT_CTOR_FAILS(INVALID, "options.check_memory", bp_device_open_ex("cpu", &o, &st),
                      bp_device_open_ex("cpu", &o, nullptr));
    EXPECT_CTOR_FAILS(INVALID, "bp_device_open", bp_device_open_ex(nullptr, &d, &st),
                      bp_device_open_ex(nullptr, &d, nullptr));
    // A getter on NULL gives the defaults; an opened device keeps what it was given.
    EXPECT_EQ(bp_device_get_options(nullptr).check_memory, 1);
    o = d;
    o.threads = 1;
    o.check_memory = 0;
    bp_device *dev = bp_device_open_ex("cpu", &o, nullptr);
    ASSERT_NE(dev, nullptr) << bp_last_error();
    bpt::DeviceGuard guard{dev};
    EXPECT_EQ(bp_device_get_options(dev).threads, 1);
    EXPECT_EQ(bp_device_get_options(dev).check_memory, 0);
    bp_device *plain = bp_device_open("cpu", nullptr);
    ASSERT_NE(plain, nullptr) << bp_last_error();
    bpt::DeviceGuard plain_guard{plain};
    EXPECT_EQ(bp_device_get_options(plain).threads, 0);
    EXPECT_EQ(bp_device_get_options(plain).check_memory, 1);
}

TEST(ApiContract, Tensor) {
    bp_device *dev = bp_device_open("cpu", nullptr);
    ASSERT_NE(dev, nullptr) << bp_last_error();
    bpt::DeviceGuard guard{dev};
    EXPECT_CTOR_FAILS(INVALID, "bp_tensor_create", bp_tensor_create(nullptr, BP_F32, 2, 2, &st),
                      bp_tensor_create(nullptr, BP_F32, 2, 2, nullptr));
    EXPECT_CTOR_FAILS(INVALID, "bp_tensor_create", bp_tensor_create(dev, BP_F32, 0, 2, &st),
                      bp_tensor_create(dev, BP_F32, -1, 2, nullptr));
    EXPECT_CTOR_FAILS(INVALID, "bp_tensor_create", bp_tensor_create(dev, BP_F32, 2, -3, &st),
                      bp_tensor_create(dev, (bp_dtype)99, 2, 2, nullptr));
    bp_tensor_free(nullptr);
    EXPECT_EQ(bp_tensor_rows(nullptr), 0);
    EXPECT_EQ(bp_tensor_cols(nullptr), 0);
    EXPECT_EQ(bp_tensor_dtype(nullptr), BP_F32);
    EXPECT_EQ(bp_tensor_device(nullptr), nullptr);
    float buf[4] = {1, 2, 3, 4};
    EXPECT_FAILS(INVALID, "bp_tensor_upload", bp_tensor_upload(nullptr, buf, 4));
    EXPECT_FAILS(INVALID, "bp_tensor_download", bp_tensor_download(nullptr, buf, 4));
    bp_tensor *t = bp_tensor_create(dev, BP_F32, 2, 2, nullptr);
    ASSERT_NE(t, nullptr) << bp_last_error();
    EXPECT_FAILS(INVALID, "bp_tensor_upload", bp_tensor_upload(t, nullptr, 4));
    EXPECT_FAILS(INVALID, "bp_tensor_download", bp_tensor_download(t, nullptr, 4));
    EXPECT_NE(bp_tensor_upload(t, buf, 3), BP_OK); // the count must be rows * cols
    EXPECT_NE(bp_tensor_download(t, buf, 5), BP_OK);
    bp_tensor_free(t);
}

TEST(ApiContract, ModelOptimizerTrain) {
    bp_device *dev = bp_device_open("cpu", nullptr);
    ASSERT_NE(dev, nullptr) << bp_last_error();
    bpt::DeviceGuard guard{dev};
    int widths[] = {3, 4, 2};
    bp_mlp_config cfg = bp_mlp_config_default(2, widths);
    EXPECT_CTOR_FAILS(INVALID, "bp_model_create", bp_model_create(nullptr, &cfg, &st),
                      bp_model_create(nullptr, &cfg, nullptr));
    EXPECT_CTOR_FAILS(INVALID, "bp_model_create", bp_model_create(dev, nullptr, &st),
                      bp_model_create(dev, nullptr, nullptr));
    bp_mlp_config bad = bp_mlp_config_default(0, widths);
    EXPECT_CTOR_FAILS(INVALID, "bp_model_create", bp_model_create(dev, &bad, &st),
                      bp_model_create(dev, &bad, nullptr));
    bad = bp_mlp_config_default(2, nullptr);
    EXPECT_CTOR_FAILS(INVALID, "bp_model_create", bp_model_create(dev, &bad, &st),
                      bp_model_create(dev, &bad, nullptr));
    bad = cfg;
    bad.precision = BP_PRECISION_COUNT_;
    EXPECT_CTOR_FAILS(INVALID, "bp_model_create", bp_model_create(dev, &bad, &st),
                      bp_model_create(dev, &bad, nullptr));
    EXPECT_STREQ(bp_precision_name(BP_PRECISION_COUNT_), "");
    EXPECT_STREQ(bp_precision_name(BP_PRECISION_BF16), "bf16");
    EXPECT_EQ(bp_model_precision(nullptr), BP_PRECISION_FP32);
    EXPECT_EQ(bp_mlp_config_default(2, widths).precision, BP_PRECISION_FP32);
    bp_model_free(nullptr);
    EXPECT_EQ(bp_model_device(nullptr), nullptr);
    EXPECT_EQ(bp_model_n_layers(nullptr), 0);
    EXPECT_EQ(bp_model_width(nullptr, 0), 0);
    EXPECT_EQ(bp_model_max_batch(nullptr), 0);
    EXPECT_EQ(bp_model_n_params(nullptr), 0u);
    EXPECT_EQ(bp_model_activation(nullptr, 0), BP_ACT_IDENTITY);
    EXPECT_EQ(bp_model_dropout(nullptr, 0), 0.0f);
    EXPECT_EQ(bp_model_leaky_slope(nullptr), 0.0f);
    EXPECT_EQ(bp_model_seed(nullptr), 0u);
    EXPECT_EQ(bp_model_rng_counter(nullptr), 0u);
    size_t wo = 0, bo = 0;
    float f[64] = {0};
    float v = 0;
    EXPECT_FAILS(INVALID, "bp_model_set_rng_counter", bp_model_set_rng_counter(nullptr, 1));
    EXPECT_FAILS(INVALID, "bp_model_layer_offsets", bp_model_layer_offsets(nullptr, 0, &wo, &bo));
    EXPECT_FAILS(INVALID, "bp_model_get_params", bp_model_get_params(nullptr, f, 1));
    EXPECT_FAILS(INVALID, "bp_model_set_params", bp_model_set_params(nullptr, f, 1));
    EXPECT_FAILS(INVALID, "bp_model_get_grads", bp_model_get_grads(nullptr, f, 1));
    EXPECT_FAILS(INVALID, "bp_model_forward",
                 bp_model_forward(nullptr, nullptr, BP_MODE_TRAINING, nullptr));
    bp_loss_config ce = {BP_LOSS_CROSS_ENTROPY, 0.0f};
    EXPECT_FAILS(INVALID, "bp_model_loss", bp_model_loss(nullptr, &ce, nullptr, &v));
    EXPECT_FAILS(INVALID, "bp_model_backward", bp_model_backward(nullptr, nullptr));
    EXPECT_FAILS(INVALID, "bp_model_zero_grad", bp_model_zero_grad(nullptr));
    EXPECT_FAILS(INVALID, "bp_model_grad_norm", bp_model_grad_norm(nullptr, &v));
    double norms[2];
    EXPECT_FAILS(INVALID, "bp_model_layer_grad_norms: model is NULL",
                 bp_model_layer_grad_norms(nullptr, norms, 2));

    bp_optim_config oc = bp_optim_config_default(BP_OPTIM_SGD);
    EXPECT_CTOR_FAILS(INVALID, "bp_optimizer_create", bp_optimizer_create(nullptr, &oc, &st),
                      bp_optimizer_create(nullptr, &oc, nullptr));
    bp_optimizer_free(nullptr);
    EXPECT_EQ(bp_optimizer_steps(nullptr), 0);
    EXPECT_EQ(bp_optimizer_lr(nullptr), 0.0f);
    EXPECT_EQ(bp_optimizer_state_size(nullptr), 0u);
    int64_t steps = 0;
    EXPECT_FAILS(INVALID, "bp_optimizer_step", bp_optimizer_step(nullptr));
    EXPECT_FAILS(INVALID, "bp_optimizer_get_state", bp_optimizer_get_state(nullptr, f, 1, &steps));
    EXPECT_FAILS(INVALID, "bp_optimizer_set_state", bp_optimizer_set_state(nullptr, f, 1, 0));
    EXPECT_FAILS(INVALID, "bp_train_step",
                 bp_train_step(nullptr, nullptr, &ce, nullptr, nullptr, &v));

    // With a real model: the remaining NULL pointers and out-of-range arguments.
    bp_model *m = bp_model_create(dev, &cfg, nullptr);
    ASSERT_NE(m, nullptr) << bp_last_error();
    EXPECT_CTOR_FAILS(INVALID, "bp_optimizer_create", bp_optimizer_create(m, nullptr, &st),
                      bp_optimizer_create(m, nullptr, nullptr));
    bp_optimizer *o = bp_optimizer_create(m, &oc, nullptr);
    ASSERT_NE(o, nullptr) << bp_last_error();
    EXPECT_EQ(bp_model_width(m, 99), 0);
    EXPECT_EQ(bp_model_width(m, -1), 0);
    EXPECT_FAILS(INVALID, "bp_model_layer_offsets", bp_model_layer_offsets(m, 7, &wo, &bo));
    EXPECT_FAILS(INVALID, "bp_model_get_params", bp_model_get_params(m, nullptr, 1));
    EXPECT_FAILS(INVALID, "bp_model_set_params", bp_model_set_params(m, nullptr, 1));
    EXPECT_NE(bp_model_get_params(m, f, 1), BP_OK); // count must be bp_model_n_params
    EXPECT_FAILS(INVALID, "bp_model_grad_norm", bp_model_grad_norm(m, nullptr));
    EXPECT_FAILS(INVALID, "bp_model_layer_grad_norms: norms is NULL",
                 bp_model_layer_grad_norms(m, nullptr, bp_model_n_layers(m)));
    EXPECT_FAILS(INVALID, "is not the model's",
                 bp_model_layer_grad_norms(m, norms, bp_model_n_layers(m) + 1));
    EXPECT_FAILS(INVALID, "bp_model_forward",
                 bp_model_forward(m, nullptr, BP_MODE_TRAINING, nullptr));
    EXPECT_FAILS(INVALID, "bp_optimizer_get_state", bp_optimizer_get_state(o, nullptr, 1, &steps));
    EXPECT_FAILS(INVALID, "bp_train_step", bp_train_step(m, o, nullptr, nullptr, nullptr, &v));
    bp_optimizer_free(o);
    bp_model_free(m);
}

TEST(ApiContract, DataAndLoader) {
    bp_device *dev = bp_device_open("cpu", nullptr);
    ASSERT_NE(dev, nullptr) << bp_last_error();
    bpt::DeviceGuard guard{dev};
    bp_csv_options co = bp_csv_options_default();
    EXPECT_CTOR_FAILS(INVALID, "bp_dataset_load_idx", bp_dataset_load_idx(nullptr, "x", &st),
                      bp_dataset_load_idx("x", nullptr, nullptr));
    EXPECT_CTOR_FAILS(INVALID, "bp_dataset_load_csv", bp_dataset_load_csv(nullptr, &co, &st),
                      bp_dataset_load_csv(nullptr, nullptr, nullptr));
    EXPECT_CTOR_FAILS(INVALID, "bp_dataset_load_npy",
                      bp_dataset_load_npy(nullptr, "y", BP_TARGET_CLASS, &st),
                      bp_dataset_load_npy(nullptr, nullptr, BP_TARGET_CLASS, nullptr));
    EXPECT_CTOR_FAILS(BP_ERR_IO, "bp_dataset_load_csv",
                      bp_dataset_load_csv("/nonexistent/dir/a.csv", &co, &st),
                      bp_dataset_load_csv("/nonexistent/dir/a.csv", &co, nullptr));
    float x[6] = {1, 2, 3, 4, 5, 6};
    int32_t y[3] = {0, 1, 0};
    EXPECT_CTOR_FAILS(INVALID, "bp_dataset_from_memory",
                      bp_dataset_from_memory(3, 2, nullptr, BP_TARGET_CLASS, 1, y, &st),
                      bp_dataset_from_memory(3, 2, x, BP_TARGET_CLASS, 1, nullptr, nullptr));
    EXPECT_CTOR_FAILS(INVALID, "bp_dataset_from_memory",
                      bp_dataset_from_memory(0, 2, x, BP_TARGET_CLASS, 1, y, &st),
                      bp_dataset_from_memory(3, -2, x, BP_TARGET_CLASS, 1, y, nullptr));
    bp_dataset_free(nullptr);
    EXPECT_EQ(bp_dataset_size(nullptr), 0);
    EXPECT_EQ(bp_dataset_features(nullptr), 0);
    EXPECT_EQ(bp_dataset_target_width(nullptr), 0);
    EXPECT_EQ(bp_dataset_classes(nullptr), 0);
    EXPECT_EQ(bp_dataset_features_data(nullptr), nullptr);
    EXPECT_EQ(bp_dataset_targets_data(nullptr), nullptr);
    EXPECT_EQ(bp_dataset_n_class_names(nullptr), 0);
    EXPECT_EQ(bp_dataset_class_name(nullptr, 0), nullptr);
    (void)bp_dataset_target_kind(nullptr); // any value; must not crash
    bp_dataset *tr = nullptr, *va = nullptr;
    float off[2], sc[2];
    EXPECT_FAILS(INVALID, "bp_dataset_split", bp_dataset_split(nullptr, 0.5, 1, &tr, &va));
    EXPECT_FAILS(INVALID, "bp_dataset_fit_scaling",
                 bp_dataset_fit_scaling(nullptr, BP_SCALE_STANDARD, off, sc));
    EXPECT_FAILS(INVALID, "bp_dataset_apply_scaling", bp_dataset_apply_scaling(nullptr, off, sc));

    bp_dataset *d = bp_dataset_from_memory(3, 2, x, BP_TARGET_CLASS, 1, y, nullptr);
    ASSERT_NE(d, nullptr) << bp_last_error();
    EXPECT_FAILS(INVALID, "bp_dataset_split", bp_dataset_split(d, 1.5, 1, &tr, &va));
    EXPECT_FAILS(INVALID, "bp_dataset_split", bp_dataset_split(d, 0.5, 1, nullptr, &va));
    EXPECT_FAILS(INVALID, "bp_dataset_fit_scaling",
                 bp_dataset_fit_scaling(d, BP_SCALE_STANDARD, nullptr, sc));
    EXPECT_FAILS(INVALID, "bp_dataset_apply_scaling", bp_dataset_apply_scaling(d, nullptr, sc));
    EXPECT_CTOR_FAILS(INVALID, "bp_loader_create", bp_loader_create(nullptr, dev, 2, 1, 1, &st),
                      bp_loader_create(nullptr, dev, 2, 1, 1, nullptr));
    EXPECT_CTOR_FAILS(INVALID, "bp_loader_create", bp_loader_create(d, nullptr, 2, 1, 1, &st),
                      bp_loader_create(d, nullptr, 2, 1, 1, nullptr));
    EXPECT_CTOR_FAILS(INVALID, "bp_loader_create", bp_loader_create(d, dev, 0, 1, 1, &st),
                      bp_loader_create(d, dev, -4, 1, 1, nullptr));
    bp_loader_free(nullptr);
    EXPECT_EQ(bp_loader_batches(nullptr), 0);
    const bp_tensor *bx = nullptr, *by = nullptr;
    EXPECT_FAILS(INVALID, "bp_loader_start_epoch", bp_loader_start_epoch(nullptr, 0, 0));
    EXPECT_FAILS(INVALID, "bp_loader_next", bp_loader_next(nullptr, &bx, &by));
    bp_loader *l = bp_loader_create(d, dev, 2, 1, 1, nullptr);
    ASSERT_NE(l, nullptr) << bp_last_error();
    EXPECT_FAILS(INVALID, "bp_loader_start_epoch", bp_loader_start_epoch(l, -1, 0));
    EXPECT_FAILS(INVALID, "bp_loader_start_epoch", bp_loader_start_epoch(l, 0, 99));
    EXPECT_FAILS(INVALID, "bp_loader_next", bp_loader_next(l, nullptr, &by));
    bp_loader_free(l);
    bp_dataset_free(d);
}

TEST(ApiContract, Checkpoint) {
    bp_device *dev = bp_device_open("cpu", nullptr);
    ASSERT_NE(dev, nullptr) << bp_last_error();
    bpt::DeviceGuard guard{dev};
    int widths[] = {3, 2};
    bp_mlp_config cfg = bp_mlp_config_default(1, widths);
    bp_model *m = bp_model_create(dev, &cfg, nullptr);
    ASSERT_NE(m, nullptr) << bp_last_error();
    EXPECT_FAILS(INVALID, "bp_checkpoint_save",
                 bp_checkpoint_save(nullptr, m, nullptr, nullptr, 0));
    EXPECT_FAILS(INVALID, "bp_checkpoint_save",
                 bp_checkpoint_save("/tmp/x.st", nullptr, nullptr, nullptr, 0));
    EXPECT_FAILS(INVALID, "bp_checkpoint_save",
                 bp_checkpoint_save("/tmp/x.st", m, nullptr, nullptr, 2)); // n_meta without meta
    EXPECT_FAILS(INVALID, "bp_checkpoint_save_arrays",
                 bp_checkpoint_save_arrays(nullptr, m, nullptr, nullptr, 0, nullptr, 0));
    EXPECT_FAILS(INVALID, "bp_checkpoint_save_arrays",
                 bp_checkpoint_save_arrays("/tmp/x.st", m, nullptr, nullptr, 0, nullptr, 3));
    EXPECT_FAILS(BP_ERR_IO, "bp_checkpoint_save",
                 bp_checkpoint_save("/nonexistent/dir/x.st", m, nullptr, nullptr, 0));
    EXPECT_CTOR_FAILS(INVALID, "bp_checkpoint_load_model",
                      bp_checkpoint_load_model(nullptr, dev, 1, &st),
                      bp_checkpoint_load_model(nullptr, dev, 1, nullptr));
    EXPECT_CTOR_FAILS(INVALID, "bp_checkpoint_load_model",
                      bp_checkpoint_load_model("/tmp/x.st", nullptr, 1, &st),
                      bp_checkpoint_load_model("/tmp/x.st", nullptr, 1, nullptr));
    EXPECT_CTOR_FAILS(BP_ERR_IO, "bp_checkpoint_load_model",
                      bp_checkpoint_load_model("/nonexistent/x.st", dev, 1, &st),
                      bp_checkpoint_load_model("/nonexistent/x.st", dev, 1, nullptr));
    EXPECT_CTOR_FAILS(INVALID, "bp_checkpoint_load_optimizer",
                      bp_checkpoint_load_optimizer(nullptr, m, &st),
                      bp_checkpoint_load_optimizer("/tmp/x.st", nullptr, nullptr));
    EXPECT_CTOR_FAILS(INVALID, "bp_checkpoint_get_meta", bp_checkpoint_get_meta(nullptr, "k", &st),
                      bp_checkpoint_get_meta("/tmp/x.st", nullptr, nullptr));
    size_t count = 0;
    EXPECT_CTOR_FAILS(INVALID, "bp_checkpoint_get_array",
                      bp_checkpoint_get_array(nullptr, "a", &count, &st),
                      bp_checkpoint_get_array("/tmp/x.st", nullptr, &count, nullptr));
    int verified = 7;
    EXPECT_FAILS(INVALID, "bp_checkpoint_verify", bp_checkpoint_verify(nullptr, &verified));
    EXPECT_EQ(0, verified) << "a failed bp_checkpoint_verify leaves *verified 0";
    EXPECT_FAILS(BP_ERR_IO, "bp_checkpoint_verify",
                 bp_checkpoint_verify("/nonexistent/x.st", nullptr)); // verified may be NULL
    bp_model_free(m);
}

// version.h: the run-time version is the headers' (this test is built with them), and the build
// line names the version and every part.
TEST(ApiContract, VersionAndBuildInfo) {
    ASSERT_NE(bp_version(), nullptr);
    EXPECT_STREQ(bp_version(), BP_VERSION_STRING);
    std::string info = bp_build_info();
    EXPECT_EQ(info.rfind(std::string("backprop ") + BP_VERSION_STRING, 0), 0u) << info;
    for (const char *part : {"cpu: ", "cuda: ", "data-parallel: "})
        EXPECT_NE(info.find(part), std::string::npos) << part << " missing from " << info;
}

// bp_tensor_view_rows: NULL base, rows outside the base, an empty view; a view of a view.
TEST(ApiContract, TensorViewRows) {
    bp_device *dev = bp_device_open("cpu", nullptr);
    ASSERT_NE(dev, nullptr);
    bp_tensor *t = bp_tensor_create(dev, BP_F32, 4, 3, nullptr);
    ASSERT_NE(t, nullptr);
    const char *fn = "bp_tensor_view_rows";
    EXPECT_CTOR_FAILS(INVALID, fn, bp_tensor_view_rows(nullptr, 0, 1, &st),
                      bp_tensor_view_rows(nullptr, 0, 1, nullptr));
    EXPECT_CTOR_FAILS(BP_ERR_SHAPE_MISMATCH, fn, bp_tensor_view_rows(t, 3, 2, &st),
                      bp_tensor_view_rows(t, 3, 2, nullptr));
    EXPECT_CTOR_FAILS(BP_ERR_SHAPE_MISMATCH, fn, bp_tensor_view_rows(t, -1, 1, &st),
                      bp_tensor_view_rows(t, -1, 1, nullptr));
    EXPECT_CTOR_FAILS(BP_ERR_SHAPE_MISMATCH, fn, bp_tensor_view_rows(t, 1, 0, &st),
                      bp_tensor_view_rows(t, 1, 0, nullptr));
    bp_status st = BP_ERR_IO;
    bp_tensor *v = bp_tensor_view_rows(t, 1, 3, &st);
    ASSERT_NE(v, nullptr) << bp_last_error();
    EXPECT_EQ(st, BP_OK);
    bp_tensor *vv = bp_tensor_view_rows(v, 2, 1, &st);
    ASSERT_NE(vv, nullptr) << bp_last_error();
    EXPECT_CTOR_FAILS(BP_ERR_SHAPE_MISMATCH, fn, bp_tensor_view_rows(v, 2, 2, &st),
                      bp_tensor_view_rows(v, 2, 2, nullptr));
    // The view of a view is row 3 of the base: an upload through it lands there.
    const float row[3] = {1, 2, 3};
    EXPECT_EQ(BP_OK, bp_tensor_upload(vv, row, 3));
    float all[12] = {0};
    const float zero[12] = {0};
    EXPECT_EQ(BP_OK, bp_tensor_upload(t, zero, 12));
    EXPECT_EQ(BP_OK, bp_tensor_upload(vv, row, 3));
    EXPECT_EQ(BP_OK, bp_tensor_download(t, all, 12));
    EXPECT_EQ(all[9], 1.0f);
    EXPECT_EQ(all[11], 3.0f);
    EXPECT_EQ(all[8], 0.0f);
    bp_tensor_free(vv);
    bp_tensor_free(v);
    bp_device_stats stats;
    EXPECT_EQ(BP_OK, bp_device_get_stats(dev, &stats));
    EXPECT_EQ(stats.bytes_in_use, (size_t)48) << "freeing a view freed its base's memory";
    bp_tensor_free(t);
    bp_device_close(dev);
}

TEST(ApiContract, TrainStepCorrect) {
    int64_t c = -1, n = -1;
    const char *fn = "bp_train_step_correct";
    EXPECT_FAILS(INVALID, fn, bp_train_step_correct(nullptr, &c, &n));
    bp_device *dev = bp_device_open("cpu", nullptr);
    ASSERT_NE(dev, nullptr);
    int widths[] = {3, 2};
    bp_mlp_config cfg = bp_mlp_config_default(1, widths);
    bp_model *m = bp_model_create(dev, &cfg, nullptr);
    ASSERT_NE(m, nullptr);
    EXPECT_FAILS(INVALID, fn, bp_train_step_correct(m, nullptr, &n));
    EXPECT_FAILS(INVALID, fn, bp_train_step_correct(m, &c, nullptr));
    EXPECT_EQ(c, -1) << "a failed call wrote its output";
    bp_model_free(m);
    bp_device_close(dev);
}

// bp_model_predict: NULL model, negative rows, an unknown output, NULL buffers with rows.
TEST(ApiContract, ModelPredict) {
    bp_device *dev = bp_device_open("cpu", nullptr);
    ASSERT_NE(dev, nullptr);
    int widths[] = {3, 2};
    bp_mlp_config cfg = bp_mlp_config_default(1, widths);
    bp_model *m = bp_model_create(dev, &cfg, nullptr);
    ASSERT_NE(m, nullptr);
    float x[6] = {1, 2, 3, 4, 5, 6}, out[4];
    const char *fn = "bp_model_predict";
    EXPECT_FAILS(INVALID, fn, bp_model_predict(nullptr, x, 2, BP_PREDICT_LOGITS, out));
    EXPECT_FAILS(INVALID, fn, bp_model_predict(m, x, -1, BP_PREDICT_LOGITS, out));
    EXPECT_FAILS(INVALID, fn, bp_model_predict(m, x, 2, (bp_predict_output)9, out));
    EXPECT_FAILS(INVALID, fn, bp_model_predict(m, nullptr, 2, BP_PREDICT_LOGITS, out));
    EXPECT_FAILS(INVALID, fn, bp_model_predict(m, x, 2, BP_PREDICT_CLASS, nullptr));
    EXPECT_EQ(BP_OK, bp_model_predict(m, nullptr, 0, BP_PREDICT_LOGITS, nullptr));
    bp_model_free(m);
    bp_device_close(dev);
}

// distributed.h with a NULL comm (no MPI is started: every call below refuses first). With MPI
// built, the unsupported path is the build without it; both are checked by their messages.
TEST(ApiContract, Distributed) {
    EXPECT_EQ(bp_comm_rank(nullptr), 0);
    EXPECT_EQ(bp_comm_size(nullptr), 1);
    EXPECT_EQ(bp_comm_local_rank(nullptr), 0);
    int64_t first = -1, count = -1;
    bp_comm_shard(nullptr, 10, &first, &count);
    EXPECT_EQ(first, 0);
    EXPECT_EQ(count, 10);
    bp_comm_shard(nullptr, 10, nullptr, nullptr);
    double secs = -1, bytes = -1;
    bp_comm_stats(nullptr, &secs, &bytes);
    EXPECT_EQ(secs, 0.0);
    EXPECT_EQ(bytes, 0.0);
    bp_comm_free(nullptr);
    bp_status want = bp_distributed_available() ? INVALID : BP_ERR_UNSUPPORTED;
    EXPECT_FAILS(want, "bp_comm_attach", bp_comm_attach(nullptr, nullptr, nullptr));
    EXPECT_FAILS(want, "bp_comm_agree", bp_comm_agree(nullptr, 1, "x"));
    EXPECT_FAILS(want, "bp_comm_check_same", bp_comm_check_same(nullptr, "a", "b"));
    double v = 1;
    EXPECT_FAILS(want, "bp_comm_sum", bp_comm_sum(nullptr, &v, 1));
    EXPECT_EQ(v, 1.0);
}

} // namespace
