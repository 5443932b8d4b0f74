// PyTorch golden fixtures: five training steps of small MLPs under torch's own losses, optimizers,
// clipping and schedulers, replayed through bp_train_step on every backend present.
//
// The fixtures (tests/golden/<case>.txt) are written by tests/make_golden.py (format in its
// docstring) and committed; a missing or unlisted one fails GoldenFixtures, it never skips.
//
// Tolerances, each a relative error against torch's float32 run:
//   loss of each step              |ours - torch| / |torch|          <= 1e-5
//   parameters after each step     ||ours - torch|| / ||torch||      <= 1e-5
//   learning rate of each step     |ours - torch| / |torch|          <= 1e-6
// Why 1e-5: the script runs every case a second time in float64 from the same initial weights and
// refuses to write it unless the float32 trajectory (loss and parameters, every step) stays within
// 1e-6 of it; the committed cases stay within 1.6e-7 (each file's "conditioning" comment). That is
// the whole roundoff budget of a correct float32 implementation, so ours and torch's, both fp32
// but summing in other orders, differ by about twice that: 1e-5 leaves a margin of 30x. Our
// config holds hyperparameters as float (lr 0.1 -> 0.100000001) where torch holds doubles: a
// 1e-8 relative difference, well inside it.
// Adam needs no more: m / (sqrt(v) + eps) amplifies the relative error of a gradient element only
// where that element is near zero by cancellation (roundoff then decides the sign of a full lr
// step). The float64 check covers it: such an element would put the float64 run far from the
// float32 one, and the script would refuse the case. The first Adam step is lr * sign(g) up to
// eps, which shrinks errors rather than amplifying them.
// Why the check can fail: the script also reruns each case without the feature it tests
// (momentum, dampening, nesterov, weight decay, coupled vs decoupled decay, clipping, label
// smoothing, schedule, warm-up, micro-batch weighting...) and requires that to move the loss or
// the parameters by >= 1e-3, 100x the tolerance (switching GELU's erf and tanh forms: >= 1e-4,
// 10x); each file lists the effect of each ("sensitivity").
// The learning rate is compared at 1e-6: it is one float32 rounding of torch's double (6e-8) plus
// a float evaluation of cos (a few ulp).
#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "support.h"

namespace {

// Every fixture the script writes; GoldenFixtures checks the directory holds exactly these.
const std::vector<std::string> &case_names() {
    static const std::vector<std::string> names = {
        "sgd_momentum_ce",
        "sgd_nesterov_wd_mse",
        "sgd_dampening_ce",
        "sgd_plain_sigmoid_leaky_mse",
        "adam_wd_ce",
        "adamw_clipnorm_ce",
        "sgd_clipnorm_mse",
        "adam_clipvalue_mse",
        "sgd_label_smoothing_ce",
        "adam_bce",
        "adam_gelu_silu_ce",
        "sgd_gelu_tanh_mse",
        "sgd_cosine_ce",
        "adam_steplr_mse",
        "sgd_warmup_cosine_ce",
        "sgd_accum3_ce",
    };
    return names;
}

const double kLossTol = 1e-5;
const double kParamTol = 1e-5;
const double kLrTol = 1e-6;

std::string golden_dir() {
    return std::string(BP_SOURCE_DIR) + "/tests/golden";
}

std::string golden_path(const std::string &name) {
    return golden_dir() + "/" + name + ".txt";
}

// One parsed fixture: `key value...` lines and `array NAME COUNT` blocks, all kept as tokens.
struct Fixture {
    std::map<std::string, std::vector<std::string>> keys;
    std::map<std::string, std::vector<std::string>> arrays;
};

const char *const kRequiredKeys[] = {
    "format",      "torch",           "name",      "widths",       "activations", "leaky_slope",
    "loss",        "label_smoothing", "optimizer", "lr",           "momentum",    "dampening",
    "nesterov",    "weight_decay",    "beta1",     "beta2",        "eps",         "clip_norm",
    "clip_value",  "accum_steps",     "schedule",  "warmup_steps", "step_size",   "gamma",
    "total_steps", "min_lr",          "batch",     "steps",
};

bool parse_float(const std::string &s, float *out) {
    errno = 0;
    char *end = nullptr;
    *out = std::strtof(s.c_str(), &end);
    return errno == 0 && end != s.c_str() && *end == '\0' && std::isfinite(*out);
}

bool parse_int(const std::string &s, long long *out) {
    errno = 0;
    char *end = nullptr;
    *out = std::strtoll(s.c_str(), &end, 10);
    return errno == 0 && end != s.c_str() && *end == '\0';
}

// Reads path into *f; returns "" or what is wrong with the file.
std::string load_fixture(const std::string &path, Fixture *f) {
    std::ifstream in(path);
    if (!in)
        return "cannot open " + path + " (the fixtures are committed; rerun tests/make_golden.py)";
    std::string line;
    int lineno = 0;
    bool ended = false;
    std::string pending; // array being filled
    size_t want = 0;
    while (std::getline(in, line)) {
        ++lineno;
        const std::string where = path + ":" + std::to_string(lineno) + ": ";
        if (ended) {
            if (line.find_first_not_of(" \t\r") != std::string::npos)
                return where + "text after `end`";
            continue;
        }
        if (line.empty() || line[0] == '#') continue;
        std::istringstream ss(line);
        std::vector<std::string> tok;
        for (std::string t; ss >> t;)
            tok.push_back(t);
        if (tok.empty()) continue;
        if (!pending.empty()) {
            auto &arr = f->arrays[pending];
            for (const auto &t : tok)
                arr.push_back(t);
            if (arr.size() > want)
                return where + "array " + pending + " has more values than its count";
            if (arr.size() == want) pending.clear();
            continue;
        }
        if (tok[0] == "end") {
            if (tok.size() != 1) return where + "`end` takes no value";
            ended = true;
        } else if (tok[0] == "array") {
            long long n = 0;
            if (tok.size() != 3 || !parse_int(tok[2], &n) || n < 0)
                return where + "expected `array NAME COUNT`";
            if (f->arrays.count(tok[1])) return where + "array " + tok[1] + " given twice";
            f->arrays[tok[1]];
            want = (size_t)n;
            if (want > 0) pending = tok[1];
        } else {
            if (f->keys.count(tok[0])) return where + "key " + tok[0] + " given twice";
            f->keys[tok[0]] = std::vector<std::string>(tok.begin() + 1, tok.end());
        }
    }
    if (!pending.empty()) return path + ": array " + pending + " is cut short";
    if (!ended) return path + ": no `end` line (file cut short?)";
    for (const char *k : kRequiredKeys)
        if (!f->keys.count(k)) return path + ": missing key " + k;
    if (f->keys["format"] != std::vector<std::string>{"1"}) return path + ": format is not 1";
    return "";
}

// Typed access; each records a failure (and returns 0 / empty) on a malformed value.
struct Reader {
    const Fixture &f;
    std::string path;

    const std::vector<std::string> &key(const std::string &k) const {
        static const std::vector<std::string> none;
        auto it = f.keys.find(k);
        if (it == f.keys.end()) {
            ADD_FAILURE() << path << ": missing key " << k;
            return none;
        }
        return it->second;
    }
    std::string str(const std::string &k) const {
        const auto &v = key(k);
        if (v.size() != 1) {
            ADD_FAILURE() << path << ": key " << k << " needs one value";
            return "";
        }
        return v[0];
    }
    float f32(const std::string &k) const {
        float x = 0.0f;
        if (!parse_float(str(k), &x)) ADD_FAILURE() << path << ": key " << k << " is not a float";
        return x;
    }
    long long i64(const std::string &k) const {
        long long x = 0;
        if (!parse_int(str(k), &x)) ADD_FAILURE() << path << ": key " << k << " is not an integer";
        return x;
    }
    std::vector<int> ints_key(const std::string &k) const {
        std::vector<int> out;
        for (const auto &t : key(k)) {
            long long x = 0;
            if (!parse_int(t, &x)) ADD_FAILURE() << path << ": key " << k << ": bad integer " << t;
            out.push_back((int)x);
        }
        return out;
    }
    const std::vector<std::string> *array(const std::string &name, size_t count) const {
        auto it = f.arrays.find(name);
        if (it == f.arrays.end()) {
            ADD_FAILURE() << path << ": missing array " << name;
            return nullptr;
        }
        if (it->second.size() != count) {
            ADD_FAILURE() << path << ": array " << name << " has " << it->second.size()
                          << " values, expected " << count;
            return nullptr;
        }
        return &it->second;
    }
    std::vector<float> floats(const std::string &name, size_t count) const {
        std::vector<float> out;
        const auto *a = array(name, count);
        if (!a) return out;
        for (const auto &t : *a) {
            float x = 0.0f;
            if (!parse_float(t, &x)) {
                ADD_FAILURE() << path << ": array " << name << ": bad float " << t;
                return {};
            }
            out.push_back(x);
        }
        return out;
    }
    std::vector<int32_t> labels(const std::string &name, size_t count) const {
        std::vector<int32_t> out;
        const auto *a = array(name, count);
        if (!a) return out;
        for (const auto &t : *a) {
            long long x = 0;
            if (!parse_int(t, &x)) {
                ADD_FAILURE() << path << ": array " << name << ": bad integer " << t;
                return {};
            }
            out.push_back((int32_t)x);
        }
        return out;
    }
};

bool activation_of(const std::string &s, bp_activation *out) {
    static const std::map<std::string, bp_activation> m = {
        {"identity", BP_ACT_IDENTITY},   {"relu", BP_ACT_RELU}, {"leaky_relu", BP_ACT_LEAKY_RELU},
        {"sigmoid", BP_ACT_SIGMOID},     {"tanh", BP_ACT_TANH}, {"gelu", BP_ACT_GELU},
        {"gelu_tanh", BP_ACT_GELU_TANH}, {"silu", BP_ACT_SILU}};
    auto it = m.find(s);
    if (it == m.end()) return false;
    *out = it->second;
    return true;
}

// Where flat parameter i lives, in state_dict terms ("layer 1 W[3,4]").
std::string where_param(const std::vector<int> &widths, size_t i) {
    size_t off = 0;
    for (size_t l = 0; l + 1 < widths.size(); ++l) {
        const size_t in = (size_t)widths[l], out = (size_t)widths[l + 1];
        if (i < off + out * in) {
            const size_t j = i - off;
            return "layer " + std::to_string(l) + " W[" + std::to_string(j / in) + "," +
                   std::to_string(j % in) + "]";
        }
        off += out * in;
        if (i < off + out)
            return "layer " + std::to_string(l) + " b[" + std::to_string(i - off) + "]";
        off += out;
    }
    return "past the end";
}

// Per-tensor relative errors and the worst element, for the message of a failed comparison.
std::string describe_diff(const std::vector<int> &widths, const std::vector<float> &ours,
                          const std::vector<float> &ref) {
    std::ostringstream os;
    os.precision(9);
    const std::vector<double> ref64 = bpt::to_double(ref);
    size_t off = 0, worst = 0;
    double worst_abs = -1.0;
    for (size_t i = 0; i < ours.size() && i < ref.size(); ++i) {
        const double d = std::fabs((double)ours[i] - (double)ref[i]);
        if (!(d <= worst_abs)) {
            worst_abs = d;
            worst = i;
        }
    }
    os << "per tensor ||ours - torch|| / ||torch||:";
    for (size_t l = 0; l + 1 < widths.size(); ++l) {
        const size_t nw = (size_t)widths[l] * (size_t)widths[l + 1], nb = (size_t)widths[l + 1];
        if (off + nw + nb > ours.size() || off + nw + nb > ref.size()) break;
        const double ew = bpt::rel_err(ours.data() + off, ref64.data() + off, nw);
        const double eb = bpt::rel_err(ours.data() + off + nw, ref64.data() + off + nw, nb);
        os << " W" << l << " " << ew << ", b" << l << " " << eb << ";";
        off += nw + nb;
    }
    if (worst < ours.size() && worst < ref.size())
        os << " worst element " << where_param(widths, worst) << ": ours " << ours[worst]
           << ", torch " << ref[worst];
    return os.str();
}

struct DeviceCloser {
    void operator()(bp_device *d) const {
        bp_device_close(d);
    }
};
struct ModelFree {
    void operator()(bp_model *m) const {
        bp_model_free(m);
    }
};
struct OptimizerFree {
    void operator()(bp_optimizer *o) const {
        bp_optimizer_free(o);
    }
};
struct TensorFree {
    void operator()(bp_tensor *t) const {
        bp_tensor_free(t);
    }
};

// The fixtures are part of the suite: absent, unreadable or unlisted ones fail, never skip.
TEST(GoldenFixtures, EveryListedFixtureIsPresentAndWellFormed) {
    for (const std::string &name : case_names()) {
        Fixture f;
        const std::string err = load_fixture(golden_path(name), &f);
        EXPECT_EQ(err, "") << name;
        if (!err.empty()) continue;
        EXPECT_EQ(f.keys["name"], std::vector<std::string>{name}) << golden_path(name);
        EXPECT_EQ(f.keys["torch"].size(), 1u) << golden_path(name) << ": torch version";
    }
}

TEST(GoldenFixtures, EveryFixtureOnDiskIsListed) {
    namespace fs = std::filesystem;
    std::error_code ec;
    ASSERT_TRUE(fs::is_directory(golden_dir(), ec))
        << golden_dir() << " is missing: the fixtures are committed (tests/make_golden.py)";
    const std::set<std::string> listed(case_names().begin(), case_names().end());
    size_t n = 0;
    for (const auto &e : fs::directory_iterator(golden_dir())) {
        if (e.path().extension() != ".txt") continue;
        ++n;
        EXPECT_TRUE(listed.count(e.path().stem().string()))
            << e.path() << " is not in case_names() of tests/test_golden.cc, so nothing replays it";
    }
    EXPECT_EQ(n, listed.size());
}

class GoldenTest : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {};

TEST_P(GoldenTest, FiveStepsMatchTorch) {
    const std::string backend = std::get<0>(GetParam());
    const std::string name = std::get<1>(GetParam());
    const std::string path = golden_path(name);
    Fixture fx;
    const std::string err = load_fixture(path, &fx);
    ASSERT_EQ(err, "") << "the fixture is committed; rerun tests/make_golden.py";
    const Reader r{fx, path};

    // Model: widths, activations, the fixture's initial weights.
    const std::vector<int> widths = r.ints_key("widths");
    ASSERT_GE(widths.size(), 2u) << path;
    const int n_layers = (int)widths.size() - 1;
    std::vector<bp_activation> acts;
    for (const auto &a : r.key("activations")) {
        bp_activation act;
        ASSERT_TRUE(activation_of(a, &act)) << path << ": unknown activation " << a;
        acts.push_back(act);
    }
    ASSERT_EQ(acts.size(), (size_t)n_layers) << path;
    const int batch = (int)r.i64("batch");
    const int steps = (int)r.i64("steps");
    ASSERT_GT(batch, 0);
    ASSERT_GT(steps, 0);
    size_t n_params = 0;
    for (int l = 0; l < n_layers; ++l)
        n_params += (size_t)widths[l + 1] * (widths[l] + 1);

    // Loss.
    bp_loss_config loss_cfg{};
    const std::string loss = r.str("loss");
    if (loss == "mse")
        loss_cfg.kind = BP_LOSS_MSE;
    else if (loss == "cross_entropy")
        loss_cfg.kind = BP_LOSS_CROSS_ENTROPY;
    else if (loss == "bce_logits")
        loss_cfg.kind = BP_LOSS_BCE_LOGITS;
    else
        FAIL() << path << ": unknown loss " << loss;
    loss_cfg.label_smoothing = r.f32("label_smoothing");

    // Optimizer: the defaults of its kind, then every field the fixture gives.
    bp_optim_kind kind = BP_OPTIM_SGD;
    const std::string opt_name = r.str("optimizer");
    if (opt_name == "sgd")
        kind = BP_OPTIM_SGD;
    else if (opt_name == "adam")
        kind = BP_OPTIM_ADAM;
    else if (opt_name == "adamw")
        kind = BP_OPTIM_ADAMW;
    else
        FAIL() << path << ": unknown optimizer " << opt_name;
    bp_optim_config oc = bp_optim_config_default(kind);
    oc.lr = r.f32("lr");
    oc.momentum = r.f32("momentum");
    oc.dampening = r.f32("dampening");
    oc.nesterov = (int)r.i64("nesterov");
    oc.weight_decay = r.f32("weight_decay");
    oc.beta1 = r.f32("beta1");
    oc.beta2 = r.f32("beta2");
    oc.eps = r.f32("eps");
    oc.clip_norm = r.f32("clip_norm");
    oc.clip_value = r.f32("clip_value");
    oc.accum_steps = (int)r.i64("accum_steps");
    const std::string sched = r.str("schedule");
    if (sched == "constant")
        oc.schedule.kind = BP_SCHEDULE_CONSTANT;
    else if (sched == "step")
        oc.schedule.kind = BP_SCHEDULE_STEP;
    else if (sched == "cosine")
        oc.schedule.kind = BP_SCHEDULE_COSINE;
    else
        FAIL() << path << ": unknown schedule " << sched;
    oc.schedule.warmup_steps = r.i64("warmup_steps");
    oc.schedule.step_size = r.i64("step_size");
    oc.schedule.gamma = r.f32("gamma");
    oc.schedule.total_steps = r.i64("total_steps");
    oc.schedule.min_lr = r.f32("min_lr");

    // Data and expected trajectory.
    const std::vector<float> x = r.floats("x", (size_t)batch * widths[0]);
    std::vector<float> y_f32;
    std::vector<int32_t> y_i32;
    if (loss_cfg.kind == BP_LOSS_CROSS_ENTROPY)
        y_i32 = r.labels("target", (size_t)batch);
    else
        y_f32 = r.floats("target", (size_t)batch * widths[n_layers]);
    const std::vector<float> p0 = r.floats("params.0", n_params);
    const std::vector<float> lrs = r.floats("lr", (size_t)steps);
    const std::vector<float> losses = r.floats("loss", (size_t)steps);
    std::vector<std::vector<float>> params_after;
    for (int k = 1; k <= steps; ++k)
        params_after.push_back(r.floats("params." + std::to_string(k), n_params));
    ASSERT_FALSE(HasFailure()) << path << " is malformed";

    BPT_OPEN_OR_SKIP(dev_raw, backend);
    std::unique_ptr<bp_device, DeviceCloser> dev(dev_raw);

    bp_mlp_config mc = bp_mlp_config_default(n_layers, widths.data());
    mc.activations = acts.data();
    mc.leaky_slope = r.f32("leaky_slope");
    mc.max_batch = batch;
    bp_status st = BP_OK;
    std::unique_ptr<bp_model, ModelFree> model(bp_model_create(dev.get(), &mc, &st));
    ASSERT_NE(model, nullptr) << bp_status_string(st) << ": " << bp_last_error();
    ASSERT_EQ(bp_model_n_params(model.get()), n_params);
    // The flat layout must be torch's state_dict order, or every comparison below is moot.
    size_t off = 0;
    for (int l = 0; l < n_layers; ++l) {
        size_t wo = 0, bo = 0;
        ASSERT_EQ(bp_model_layer_offsets(model.get(), l, &wo, &bo), BP_OK) << bp_last_error();
        EXPECT_EQ(wo, off) << "layer " << l << " weight offset";
        off += (size_t)widths[l + 1] * widths[l];
        EXPECT_EQ(bo, off) << "layer " << l << " bias offset";
        off += (size_t)widths[l + 1];
    }
    ASSERT_EQ(bp_model_set_params(model.get(), p0.data(), p0.size()), BP_OK) << bp_last_error();

    std::unique_ptr<bp_optimizer, OptimizerFree> opt(bp_optimizer_create(model.get(), &oc, &st));
    ASSERT_NE(opt, nullptr) << bp_status_string(st) << ": " << bp_last_error();

    std::unique_ptr<bp_tensor, TensorFree> xt(
        bp_tensor_create(dev.get(), BP_F32, batch, widths[0], &st));
    ASSERT_NE(xt, nullptr) << bp_last_error();
    ASSERT_EQ(bp_tensor_upload(xt.get(), x.data(), x.size()), BP_OK) << bp_last_error();
    std::unique_ptr<bp_tensor, TensorFree> yt;
    if (loss_cfg.kind == BP_LOSS_CROSS_ENTROPY) {
        yt.reset(bp_tensor_create(dev.get(), BP_I32, batch, 1, &st));
        ASSERT_NE(yt, nullptr) << bp_last_error();
        ASSERT_EQ(bp_tensor_upload(yt.get(), y_i32.data(), y_i32.size()), BP_OK) << bp_last_error();
    } else {
        yt.reset(bp_tensor_create(dev.get(), BP_F32, batch, widths[n_layers], &st));
        ASSERT_NE(yt, nullptr) << bp_last_error();
        ASSERT_EQ(bp_tensor_upload(yt.get(), y_f32.data(), y_f32.size()), BP_OK) << bp_last_error();
    }

    std::vector<float> got(n_params);
    double worst_loss = 0.0, worst_params = 0.0;
    for (int k = 0; k < steps; ++k) {
        SCOPED_TRACE(name + " on " + backend + ", optimizer step " + std::to_string(k) +
                     " (0-based)");
        EXPECT_EQ(bp_optimizer_steps(opt.get()), (int64_t)k);
        const double lr = bp_optimizer_lr(opt.get());
        EXPECT_LE(std::fabs(lr - lrs[k]), kLrTol * std::fabs(lrs[k]))
            << "learning rate of the step: ours " << lr << ", torch " << lrs[k];

        float loss_value = std::nanf("");
        ASSERT_EQ(bp_train_step(model.get(), opt.get(), &loss_cfg, xt.get(), yt.get(), &loss_value),
                  BP_OK)
            << bp_last_error();
        const double loss_err =
            std::isfinite(loss_value)
                ? std::fabs((double)loss_value - losses[k]) / std::fabs((double)losses[k])
                : INFINITY;
        EXPECT_LE(loss_err, kLossTol)
            << "loss before the update: ours " << loss_value << ", torch " << losses[k];

        ASSERT_EQ(bp_model_get_params(model.get(), got.data(), got.size()), BP_OK)
            << bp_last_error();
        const double perr = bpt::rel_err(got, params_after[k]);
        EXPECT_LE(perr, kParamTol)
            << "parameters after the update; " << describe_diff(widths, got, params_after[k]);
        worst_loss = std::max(worst_loss, loss_err);
        worst_params = std::max(worst_params, perr);
        if (HasFailure()) break; // later steps only repeat the first divergence
    }
    if (!HasFailure()) {
        EXPECT_EQ(bp_optimizer_steps(opt.get()), (int64_t)steps);
    }
    // The margins actually seen, in the XML report (--gtest_output=xml).
    RecordProperty("max_loss_rel_err", std::to_string(worst_loss));
    RecordProperty("max_param_rel_err", std::to_string(worst_params));
    if (std::getenv("BP_GOLDEN_VERBOSE"))
        std::printf("%-8s %-28s max loss rel err %.2e, max param rel err %.2e\n", backend.c_str(),
                    name.c_str(), worst_loss, worst_params);
}

std::string
golden_test_name(const ::testing::TestParamInfo<std::tuple<std::string, std::string>> &info) {
    return std::get<0>(info.param) + "_" + std::get<1>(info.param);
}

INSTANTIATE_TEST_SUITE_P(Torch, GoldenTest,
                         ::testing::Combine(::testing::ValuesIn(bpt::all_backends()),
                                            ::testing::ValuesIn(case_names())),
                         golden_test_name);

} // namespace
