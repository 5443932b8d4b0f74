// The name and parse pair of every public enum: one spelling per value (the checkpoint's), ""
// out of range, and a parse error that names the call and the text and lists the names.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "contract.h"
#include "support.h"

namespace {

template <class E>
void check_pair(const char *(*name)(E), bp_status (*parse)(const char *, E *), const char *fn,
                const std::vector<std::string> &want) {
    SCOPED_TRACE(fn);
    const int n = (int)want.size();
    for (int k = 0; k < n; ++k) {
        EXPECT_EQ(want[k], name((E)k)) << k;
        E got = (E)(n - 1 - k);
        EXPECT_EQ(parse(want[k].c_str(), &got), BP_OK) << want[k] << ": " << bp_last_error();
        EXPECT_EQ((int)got, k) << want[k];
    }
    EXPECT_STREQ(name((E)n), "");
    EXPECT_STREQ(name((E)-1), "");
    // Bad text: the status, the call, the text, every accepted name; *out unchanged.
    for (const char *bad : {"bogus", "", "CPU-ish", "relu ", "leaky-relu"}) {
        bool valid = false;
        for (const auto &w : want)
            valid |= w == bad;
        if (valid) continue;
        E out = (E)0;
        EXPECT_FAILS(BP_ERR_INVALID_ARGUMENT, fn, parse(bad, &out));
        EXPECT_ERROR_HAS(std::string("'") + bad + "'");
        for (const auto &w : want)
            EXPECT_ERROR_HAS(w);
        EXPECT_EQ((int)out, 0);
    }
    // Upper case is another spelling.
    std::string upper = want[0];
    for (auto &c : upper)
        c = (char)std::toupper((unsigned char)c);
    E out = (E)0;
    EXPECT_FAILS(BP_ERR_INVALID_ARGUMENT, fn, parse(upper.c_str(), &out));
    EXPECT_FAILS(BP_ERR_INVALID_ARGUMENT, fn, parse(nullptr, &out));
    EXPECT_ERROR_HAS("text is NULL");
    EXPECT_FAILS(BP_ERR_INVALID_ARGUMENT, fn, parse(want[0].c_str(), nullptr));
    EXPECT_ERROR_HAS("out is NULL");
}

TEST(EnumNames, Core) {
    check_pair(bp_device_kind_name, bp_device_kind_parse, "bp_device_kind_parse", {"cpu", "cuda"});
    check_pair(bp_dtype_name, bp_dtype_parse, "bp_dtype_parse", {"f32", "i32"});
    check_pair(bp_activation_name, bp_activation_parse, "bp_activation_parse",
               {"identity", "relu", "leaky_relu", "sigmoid", "tanh", "gelu", "gelu_tanh", "silu"});
    check_pair(bp_init_name, bp_init_parse, "bp_init_parse",
               {"torch_default", "he_uniform", "he_normal", "xavier_uniform", "xavier_normal"});
    check_pair(bp_mode_name, bp_mode_parse, "bp_mode_parse", {"inference", "training"});
    check_pair(bp_precision_name, bp_precision_parse, "bp_precision_parse",
               {"fp32", "tf32", "bf16"});
    check_pair(bp_predict_output_name, bp_predict_output_parse, "bp_predict_output_parse",
               {"logits", "softmax", "sigmoid", "class"});
    check_pair(bp_loss_kind_name, bp_loss_kind_parse, "bp_loss_kind_parse", {"mse", "ce", "bce"});
    check_pair(bp_optim_kind_name, bp_optim_kind_parse, "bp_optim_kind_parse",
               {"sgd", "adam", "adamw"});
    check_pair(bp_schedule_kind_name, bp_schedule_kind_parse, "bp_schedule_kind_parse",
               {"constant", "step", "cosine", "plateau"});
    check_pair(bp_plateau_mode_name, bp_plateau_mode_parse, "bp_plateau_mode_parse",
               {"min", "max"});
    check_pair(bp_threshold_mode_name, bp_threshold_mode_parse, "bp_threshold_mode_parse",
               {"rel", "abs"});
}

TEST(EnumNames, Data) {
    check_pair(bp_target_kind_name, bp_target_kind_parse, "bp_target_kind_parse",
               {"class", "values", "none"});
    check_pair(bp_csv_target_name, bp_csv_target_parse, "bp_csv_target_parse",
               {"class_index", "one_hot", "values", "class_name", "class_auto", "no_targets"});
    check_pair(bp_scaling_kind_name, bp_scaling_kind_parse, "bp_scaling_kind_parse",
               {"none", "minmax", "standard", "global"});
    check_pair(bp_data_format_name, bp_data_format_parse, "bp_data_format_parse",
               {"auto", "csv", "npy", "idx"});
    check_pair(
        bp_data_hint_name, bp_data_hint_parse, "bp_data_hint_parse",
        {"none", "delimiter", "values", "class_names", "classes", "class_count", "identifiers"});
}

TEST(EnumNames, Bench) {
    check_pair(
        bp_bench_kind_name, bp_bench_kind_parse, "bp_bench_kind_parse",
        {"gemm", "bias_act", "act_backward", "col_sum", "softmax_xent", "update", "copy", "norm"});
    EXPECT_STREQ(bp_bench_kind_name(BP_BENCH_KIND_COUNT_), "");
}

// The enum counts the headers declare agree with the tables.
TEST(EnumNames, CountsMatchTheEnums) {
    EXPECT_STRNE(bp_activation_name((bp_activation)(BP_ACT_COUNT_ - 1)), "");
    EXPECT_STREQ(bp_activation_name(BP_ACT_COUNT_), "");
    EXPECT_STRNE(bp_init_name((bp_init)(BP_INIT_COUNT_ - 1)), "");
    EXPECT_STREQ(bp_init_name(BP_INIT_COUNT_), "");
    EXPECT_STRNE(bp_precision_name((bp_precision)(BP_PRECISION_COUNT_ - 1)), "");
    EXPECT_STREQ(bp_precision_name(BP_PRECISION_COUNT_), "");
    EXPECT_STRNE(bp_predict_output_name((bp_predict_output)(BP_PREDICT_COUNT_ - 1)), "");
    EXPECT_STREQ(bp_predict_output_name(BP_PREDICT_COUNT_), "");
}

} // namespace
