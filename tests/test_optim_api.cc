// Changing an optimizer between steps (learning rate, weight decay), the plateau schedule against
// PyTorch's ReduceLROnPlateau, and freeing a model and its optimizer in either order.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "contract.h"
#include "support.h"
#include "support_files.h"
#include "support_model.h"

namespace {

using bpt::DevicePtr;
using bpt::ModelPtr;
using bpt::OptimPtr;
using bpt::TensorPtr;

constexpr bp_status INVALID = BP_ERR_INVALID_ARGUMENT;

ModelPtr small_model(bp_device *dev, uint64_t seed) {
    int widths[] = {3, 5, 2};
    bp_mlp_config c = bp_mlp_config_default(2, widths);
    c.seed = seed;
    c.max_batch = 8;
    return ModelPtr(bp_model_create(dev, &c, nullptr));
}

bp_optim_config plateau_config() {
    bp_optim_config c = bp_optim_config_default(BP_OPTIM_SGD);
    c.schedule.kind = BP_SCHEDULE_PLATEAU;
    c.schedule.gamma = 0.5;
    return c;
}

TEST(ApiContract, OptimizerChanges) {
    bp_device *dev = bp_device_open("cpu", nullptr);
    ASSERT_NE(dev, nullptr) << bp_last_error();
    bpt::DeviceGuard guard{dev};
    ModelPtr model = small_model(dev, 1);
    ASSERT_TRUE(model) << bp_last_error();
    bp_optim_config oc = bp_optim_config_default(BP_OPTIM_ADAMW);
    OptimPtr opt(bp_optimizer_create(model.get(), &oc, nullptr));
    ASSERT_TRUE(opt) << bp_last_error();
    bp_optim_config got;
    EXPECT_FAILS(INVALID, "bp_optimizer_get_config", bp_optimizer_get_config(nullptr, &got));
    EXPECT_FAILS(INVALID, "bp_optimizer_get_config", bp_optimizer_get_config(opt.get(), nullptr));
    EXPECT_FAILS(INVALID, "bp_optimizer_set_lr", bp_optimizer_set_lr(nullptr, 0.1));
    for (double bad : {0.0, -1e-3, (double)NAN, (double)INFINITY}) {
        EXPECT_FAILS(INVALID, "bp_optimizer_set_lr", bp_optimizer_set_lr(opt.get(), bad));
        EXPECT_ERROR_HAS("lr is");
    }
    EXPECT_FAILS(INVALID, "bp_optimizer_set_weight_decay",
                 bp_optimizer_set_weight_decay(nullptr, 0.1));
    for (double bad : {-1e-3, (double)NAN, (double)INFINITY}) {
        EXPECT_FAILS(INVALID, "bp_optimizer_set_weight_decay",
                     bp_optimizer_set_weight_decay(opt.get(), bad));
        EXPECT_ERROR_HAS("weight_decay is");
    }
    // The failures changed nothing.
    BPT_OK(bp_optimizer_get_config(opt.get(), &got));
    EXPECT_EQ(got.lr, oc.lr);
    EXPECT_EQ(got.weight_decay, oc.weight_decay);
    BPT_OK(bp_optimizer_set_lr(opt.get(), 0.25));
    BPT_OK(bp_optimizer_set_weight_decay(opt.get(), 0.0));
    BPT_OK(bp_optimizer_get_config(opt.get(), &got));
    EXPECT_EQ(got.lr, 0.25);
    EXPECT_EQ(got.weight_decay, 0.0);
    EXPECT_EQ(bp_optimizer_lr(opt.get()), 0.25f);
    // A metric for a schedule that takes none.
    int reduced = 7;
    EXPECT_FAILS(INVALID, "bp_optimizer_report_metric",
                 bp_optimizer_report_metric(opt.get(), 1.0, &reduced));
    EXPECT_ERROR_HAS("'constant'");
    EXPECT_EQ(reduced, 0);
    EXPECT_FAILS(INVALID, "bp_optimizer_report_metric",
                 bp_optimizer_report_metric(nullptr, 1.0, nullptr));

    // Plateau fields out of range, each named.
    struct Bad {
        const char *field;
        void (*set)(bp_schedule *);
    };
    const Bad bads[] = {
        {"factor", [](bp_schedule *s) { s->gamma = 1.0; }},
        {"factor", [](bp_schedule *s) { s->gamma = 0.0; }},
        {"min_lr", [](bp_schedule *s) { s->min_lr = -1.0; }},
        {"plateau mode", [](bp_schedule *s) { s->mode = (bp_plateau_mode)2; }},
        {"threshold_mode", [](bp_schedule *s) { s->threshold_mode = (bp_threshold_mode)-1; }},
        {"threshold", [](bp_schedule *s) { s->threshold = -1e-4; }},
        {"threshold", [](bp_schedule *s) { s->threshold = NAN; }},
        {"patience", [](bp_schedule *s) { s->patience = -1; }},
        {"cooldown", [](bp_schedule *s) { s->cooldown = -2; }},
        {"plateau eps", [](bp_schedule *s) { s->eps = -1e-8; }},
    };
    for (const Bad &b : bads) {
        bp_optim_config c = plateau_config();
        b.set(&c.schedule);
        EXPECT_CTOR_FAILS(INVALID, "bp_optimizer_create", bp_optimizer_create(model.get(), &c, &st),
                          bp_optimizer_create(model.get(), &c, nullptr));
        EXPECT_ERROR_HAS(b.field);
    }
    // Defaults are PyTorch's.
    bp_schedule d = bp_optim_config_default(BP_OPTIM_SGD).schedule;
    EXPECT_EQ(d.mode, BP_PLATEAU_MIN);
    EXPECT_EQ(d.threshold, 1e-4);
    EXPECT_EQ(d.threshold_mode, BP_THRESHOLD_REL);
    EXPECT_EQ(d.patience, 10);
    EXPECT_EQ(d.cooldown, 0);
    EXPECT_EQ(d.eps, 1e-8);
    EXPECT_EQ(d.min_lr, 0.0);
}

class OptimChangeTest : public ::testing::TestWithParam<std::string> {};

// One forward, loss and backward on a fixed batch; *g receives the gradient.
void gradient(bp_model *m, const bp_tensor *x, const bp_tensor *y, std::vector<float> *g) {
    bp_loss_config loss = {BP_LOSS_MSE, 0.0f};
    BPT_OK(bp_model_zero_grad(m));
    BPT_OK(bp_model_forward(m, x, BP_MODE_TRAINING, nullptr));
    BPT_OK(bp_model_loss(m, &loss, y, nullptr));
    BPT_OK(bp_model_backward(m, nullptr));
    g->resize(bp_model_n_params(m));
    BPT_OK(bp_model_get_grads(m, g->data(), g->size()));
}

// SGD with momentum 0.9: step 1 with lr 0.1 and no decay, then lr 0.03 and weight decay 0.2 set
// between the steps. The second step must use both and keep the momentum buffer:
//   step 1: buf = g1,                       p1 = p0 - 0.1 buf
//   step 2: d = g2 + 0.2 p1, buf = 0.9 buf + d, p2 = p1 - 0.03 buf
// computed here in double from the gradients the library reports. Tolerance 1e-6 relative to
// the size of the terms: each side is a few float operations on values of order 1.
TEST_P(OptimChangeTest, NewLrAndWeightDecayTakeEffectAtTheNextStep) {
    BPT_OPEN_OR_SKIP(raw, GetParam());
    DevicePtr dev(raw);
    ModelPtr model = small_model(dev.get(), 3);
    ASSERT_TRUE(model) << bp_last_error();
    bp_optim_config oc = bp_optim_config_default(BP_OPTIM_SGD);
    oc.lr = 0.1;
    oc.momentum = 0.9;
    OptimPtr opt(bp_optimizer_create(model.get(), &oc, nullptr));
    ASSERT_TRUE(opt) << bp_last_error();
    TensorPtr x, y;
    ASSERT_NO_FATAL_FAILURE(bpt::upload_f32(dev.get(), 4, 3, bpt::uniform(12, -1, 1, 5), &x));
    ASSERT_NO_FATAL_FAILURE(bpt::upload_f32(dev.get(), 4, 2, bpt::uniform(8, -1, 1, 6), &y));
    size_t n = bp_model_n_params(model.get());
    std::vector<float> p0(n), p1(n), p2(n), g1, g2;
    BPT_OK(bp_model_get_params(model.get(), p0.data(), n));
    ASSERT_NO_FATAL_FAILURE(gradient(model.get(), x.get(), y.get(), &g1));
    BPT_OK(bp_optimizer_step(opt.get()));
    BPT_OK(bp_model_get_params(model.get(), p1.data(), n));
    BPT_OK(bp_optimizer_set_lr(opt.get(), 0.03));
    BPT_OK(bp_optimizer_set_weight_decay(opt.get(), 0.2));
    EXPECT_EQ(bp_optimizer_lr(opt.get()), 0.03f);
    ASSERT_NO_FATAL_FAILURE(gradient(model.get(), x.get(), y.get(), &g2));
    BPT_OK(bp_optimizer_step(opt.get()));
    BPT_OK(bp_model_get_params(model.get(), p2.data(), n));
    double worst = 0.0;
    for (size_t i = 0; i < n; ++i) {
        double buf = g1[i];
        double want1 = p0[i] - 0.1 * buf;
        double d = g2[i] + 0.2 * (double)p1[i];
        buf = 0.9 * buf + d;
        double want2 = (double)p1[i] - 0.03 * buf;
        double scale = std::fabs(p1[i]) + std::fabs(0.03 * buf) + 1e-3;
        worst = std::max(worst, std::fabs(p1[i] - want1) / (std::fabs(p0[i]) + 1e-3));
        worst = std::max(worst, std::fabs(p2[i] - want2) / scale);
    }
    EXPECT_LT(worst, 1e-6);
    EXPECT_EQ(bp_optimizer_steps(opt.get()), 2);
}

// Freeing the model first, then its optimizer: the optimizer frees its state through the
// device, not through the model (ASan and valgrind see a read of the freed model otherwise).
TEST_P(OptimChangeTest, ModelAndOptimizerFreeInEitherOrder) {
    BPT_OPEN_OR_SKIP(raw, GetParam());
    DevicePtr dev(raw);
    for (int model_first = 0; model_first < 2; ++model_first) {
        bp_device_stats before, after;
        BPT_OK(bp_device_get_stats(dev.get(), &before));
        bp_model *m = small_model(dev.get(), 4).release();
        ASSERT_NE(m, nullptr) << bp_last_error();
        bp_optim_config oc = bp_optim_config_default(BP_OPTIM_ADAM);
        bp_optimizer *o = bp_optimizer_create(m, &oc, nullptr);
        ASSERT_NE(o, nullptr) << bp_last_error();
        if (model_first) {
            bp_model_free(m);
            bp_optimizer_free(o);
        } else {
            bp_optimizer_free(o);
            bp_model_free(m);
        }
        BPT_OK(bp_device_get_stats(dev.get(), &after));
        EXPECT_EQ(after.bytes_in_use, before.bytes_in_use) << "model first: " << model_first;
        EXPECT_EQ(after.free_count - before.free_count, after.alloc_count - before.alloc_count);
    }
}

// ---- the plateau schedule against tests/golden/plateau/reduce_lr_on_plateau.txt ----

struct PlateauCase {
    std::string name;
    std::map<std::string, std::string> args;
    std::vector<double> metric, lr; // lr: torch's after each metric
};

double number(const std::string &s) {
    return std::strtod(s.c_str(), nullptr); // Python's repr: exact, and nan / inf / -inf
}

std::vector<PlateauCase> load_plateau_cases(std::string *err) {
    const std::string path =
        std::string(BP_SOURCE_DIR) + "/tests/golden/plateau/reduce_lr_on_plateau.txt";
    std::ifstream in(path);
    std::vector<PlateauCase> cases;
    if (!in) {
        *err = path + " is missing (tests/make_plateau.py writes it)";
        return cases;
    }
    std::string line;
    PlateauCase *c = nullptr;
    int left = 0;
    while (std::getline(in, line)) {
        if (line.empty() || line[0] == '#') continue;
        std::istringstream ss(line);
        std::string key, value;
        ss >> key >> value;
        if (left > 0 && c) {
            c->metric.push_back(number(key));
            c->lr.push_back(number(value));
            --left;
        } else if (key == "case") {
            cases.push_back(PlateauCase{value, {}, {}, {}});
            c = &cases.back();
        } else if (key == "steps") {
            left = std::atoi(value.c_str());
        } else if (c && key != "end") {
            c->args[key] = value;
        }
    }
    if (cases.empty()) *err = path + " holds no case";
    return cases;
}

bp_optim_config config_of(const PlateauCase &c) {
    bp_optim_config oc = bp_optim_config_default(BP_OPTIM_SGD);
    bp_schedule &s = oc.schedule;
    s.kind = BP_SCHEDULE_PLATEAU;
    oc.lr = number(c.args.at("lr"));
    EXPECT_EQ(bp_plateau_mode_parse(c.args.at("mode").c_str(), &s.mode), BP_OK);
    EXPECT_EQ(bp_threshold_mode_parse(c.args.at("threshold_mode").c_str(), &s.threshold_mode),
              BP_OK);
    s.threshold = number(c.args.at("threshold"));
    s.patience = std::atoll(c.args.at("patience").c_str());
    s.cooldown = std::atoll(c.args.at("cooldown").c_str());
    s.gamma = number(c.args.at("factor"));
    s.min_lr = number(c.args.at("min_lr"));
    s.eps = number(c.args.at("eps"));
    return oc;
}

// Reports metrics [from, to) of c and checks each rate against torch's: exactly, since both
// sides form max(lr * factor, min_lr) and compare in IEEE double.
void replay(bp_optimizer *opt, const PlateauCase &c, size_t from, size_t to) {
    for (size_t k = from; k < to; ++k) {
        bp_optim_config before, after;
        BPT_OK(bp_optimizer_get_config(opt, &before));
        int reduced = -1;
        BPT_OK(bp_optimizer_report_metric(opt, c.metric[k], &reduced));
        BPT_OK(bp_optimizer_get_config(opt, &after));
        ASSERT_EQ(after.lr, c.lr[k]) << c.name << ", metric " << k << " (" << c.metric[k] << ")";
        EXPECT_EQ(reduced, after.lr != before.lr ? 1 : 0) << c.name << ", metric " << k;
        EXPECT_EQ(bp_optimizer_lr(opt), (float)c.lr[k]);
    }
}

// The fixture's cases, and a model on the CPU for their optimizers (the schedule is host
// arithmetic: one backend says all).
class Plateau : public ::testing::Test {
  protected:
    void SetUp() override {
        std::string err;
        cases_ = load_plateau_cases(&err);
        ASSERT_FALSE(cases_.empty()) << err;
        dev_.reset(bp_device_open("cpu", nullptr));
        ASSERT_TRUE(dev_) << bp_last_error();
        model_ = small_model(dev_.get(), 5);
        ASSERT_TRUE(model_) << bp_last_error();
    }
    std::vector<PlateauCase> cases_;
    DevicePtr dev_;
    ModelPtr model_;
};

TEST_F(Plateau, EveryCaseMatchesTorchsReduceLROnPlateau) {
    for (const auto &c : cases_) {
        bp_optim_config oc = config_of(c);
        OptimPtr opt(bp_optimizer_create(model_.get(), &oc, nullptr));
        ASSERT_TRUE(opt) << c.name << ": " << bp_last_error();
        ASSERT_NO_FATAL_FAILURE(replay(opt.get(), c, 0, c.metric.size()));
    }
}

// A checkpoint halfway keeps the rate and the schedule's state (best, bad epochs, cooldown): the
// optimizer loaded from it goes on exactly as torch did.
TEST_F(Plateau, StateSurvivesACheckpoint) {
    bpt::TempDir tmp;
    bp_model *model = model_.get();
    for (const auto &c : cases_) {
        for (size_t cut : {c.metric.size() / 3, c.metric.size() / 2 + 1}) {
            SCOPED_TRACE(c.name + " cut at " + std::to_string(cut));
            bp_optim_config oc = config_of(c);
            OptimPtr opt(bp_optimizer_create(model, &oc, nullptr));
            ASSERT_TRUE(opt) << bp_last_error();
            ASSERT_NO_FATAL_FAILURE(replay(opt.get(), c, 0, cut));
            const std::string path = tmp.file(c.name + ".st");
            BPT_OK(bp_checkpoint_save(path.c_str(), model, opt.get(), nullptr, 0));
            OptimPtr loaded(bp_checkpoint_load_optimizer(path.c_str(), model, nullptr));
            ASSERT_TRUE(loaded) << bp_last_error();
            bp_optim_config a, b;
            BPT_OK(bp_optimizer_get_config(opt.get(), &a));
            BPT_OK(bp_optimizer_get_config(loaded.get(), &b));
            EXPECT_EQ(a.schedule.kind, b.schedule.kind);
            EXPECT_EQ(a.schedule.mode, b.schedule.mode);
            EXPECT_EQ(a.schedule.threshold_mode, b.schedule.threshold_mode);
            EXPECT_EQ(a.schedule.threshold, b.schedule.threshold);
            EXPECT_EQ(a.schedule.patience, b.schedule.patience);
            EXPECT_EQ(a.schedule.cooldown, b.schedule.cooldown);
            EXPECT_EQ(a.schedule.eps, b.schedule.eps);
            EXPECT_EQ(a.schedule.gamma, b.schedule.gamma);
            EXPECT_EQ(a.lr, b.lr);
            ASSERT_NO_FATAL_FAILURE(replay(loaded.get(), c, cut, c.metric.size()));
        }
    }
}

INSTANTIATE_TEST_SUITE_P(Backends, OptimChangeTest, ::testing::ValuesIn(bpt::all_backends()),
                         [](const ::testing::TestParamInfo<std::string> &i) { return i.param; });

} // namespace
