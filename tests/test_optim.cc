// Optimizers, clipping, schedules, optimizer state and gradient accumulation against the
// equations of include/backprop/optim.h, implemented here in double. Gradients come from real
// backward passes of a small MLP. Parametrised over every backend.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "ref_mlp.h"
#include "support.h"
#include "support_model.h"

namespace {

using bpt::DevicePtr;
using bpt::ModelPtr;
using bpt::OptimPtr;
using bpt::TensorPtr;

// ---- the optimizer of optim.h in double ----------------------------------------------------

const double kPi = 3.14159265358979323846;

// The learning rate at optimizer step t (0-based), the closed forms of optim.h.
double ref_lr(const bp_optim_config &c, int64_t t) {
    const bp_schedule &s = c.schedule;
    double lr = c.lr;
    if (s.warmup_steps > 0 && t < s.warmup_steps) return lr * (double)(t + 1) / s.warmup_steps;
    int64_t u = t - s.warmup_steps;
    switch (s.kind) {
    case BP_SCHEDULE_CONSTANT:
    case BP_SCHEDULE_PLATEAU: // lowered only by bp_optimizer_report_metric, into c.lr
        return lr;
    case BP_SCHEDULE_STEP:
        return lr * std::pow((double)s.gamma, (double)(u / s.step_size));
    case BP_SCHEDULE_COSINE: {
        double T = (double)(s.total_steps - s.warmup_steps);
        double frac = std::min((double)u, T) / T;
        return s.min_lr + (lr - (double)s.min_lr) * (1.0 + std::cos(kPi * frac)) / 2.0;
    }
    }
    return std::numeric_limits<double>::quiet_NaN();
}

struct RefOptimizer {
    bp_optim_config c;
    std::vector<double> m, v;
    int64_t t = 0; // steps taken
    // What the last step did, for the tests to check that clipping was exercised.
    double last_scale = 1.0;
    size_t last_clamped = 0;

    RefOptimizer(const bp_optim_config &config, size_t n) : c(config), m(n, 0.0), v(n, 0.0) {}

    void step(std::vector<double> &p, const std::vector<float> &grad) {
        size_t n = p.size();
        std::vector<double> g(grad.begin(), grad.end());
        last_scale = 1.0;
        last_clamped = 0;
        if (c.clip_norm > 0) {
            double sq = 0.0;
            for (double x : g)
                sq += x * x;
            last_scale = std::min(1.0, (double)c.clip_norm / (std::sqrt(sq) + 1e-6));
            for (double &x : g)
                x *= last_scale;
        }
        if (c.clip_value > 0) {
            double cv = c.clip_value;
            for (double &x : g) {
                if (x > cv || x < -cv) ++last_clamped;
                x = std::min(std::max(x, -cv), cv);
            }
        }
        double lr = ref_lr(c, t);
        ++t;
        double wd = c.weight_decay;
        if (c.kind == BP_OPTIM_SGD) {
            double mom = c.momentum, damp = c.dampening;
            for (size_t i = 0; i < n; ++i) {
                double gi = g[i] + wd * p[i];
                if (mom != 0.0) {
                    m[i] = t == 1 ? gi : mom * m[i] + (1.0 - damp) * gi;
                    gi = c.nesterov ? gi + mom * m[i] : m[i];
                }
                p[i] -= lr * gi;
            }
        } else {
            double b1 = c.beta1, b2 = c.beta2, eps = c.eps;
            double bc1 = 1.0 - std::pow(b1, (double)t), bc2 = 1.0 - std::pow(b2, (double)t);
            for (size_t i = 0; i < n; ++i) {
                double gi = g[i];
                if (c.kind == BP_OPTIM_ADAMW)
                    p[i] *= 1.0 - lr * wd;
                else
                    gi += wd * p[i];
                m[i] += (1.0 - b1) * (gi - m[i]); // lerp(m, g, 1 - beta1)
                v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                p[i] -= lr / bc1 * m[i] / (std::sqrt(v[i]) / std::sqrt(bc2) + eps);
            }
        }
    }
};

// ---- a small network and its batches ------------------------------------------------------

const int kWidths[] = {13, 17, 11, 5};
const bp_activation kActs[] = {BP_ACT_TANH, BP_ACT_SILU, BP_ACT_IDENTITY};

struct Batch {
    int rows = 0;
    bp_loss_config loss{};
    std::vector<float> x, target;
    std::vector<int32_t> labels;
};

Batch make_batch(int rows, bp_loss_config loss, uint32_t seed) {
    Batch b;
    b.rows = rows;
    b.loss = loss;
    b.x = bpt::uniform((size_t)rows * kWidths[0], -1.0f, 1.0f, seed);
    if (loss.kind == BP_LOSS_CROSS_ENTROPY) {
        std::mt19937 gen(seed + 1);
        std::uniform_int_distribution<int32_t> dist(0, kWidths[3] - 1);
        b.labels.resize(rows);
        for (auto &l : b.labels)
            l = dist(gen);
    } else {
        b.target = bpt::uniform((size_t)rows * kWidths[3], loss.kind == BP_LOSS_MSE ? -1.0f : 0.0f,
                                1.0f, seed + 1);
    }
    return b;
}

void make_model(bp_device *dev, ModelPtr *model, std::vector<float> *params, uint32_t seed) {
    bp_mlp_config cfg = bp_mlp_config_default(3, kWidths);
    cfg.activations = kActs;
    cfg.max_batch = 16;
    bp_status st = BP_OK;
    model->reset(bp_model_create(dev, &cfg, &st));
    ASSERT_NE(nullptr, model->get()) << bp_last_error();
    // Fresh random parameters, set through the API.
    *params = bpt::uniform(bp_model_n_params(model->get()), -0.6f, 0.6f, seed);
    BPT_OK(bp_model_set_params(model->get(), params->data(), params->size()));
}

void make_optimizer(bp_model *m, const bp_optim_config &cfg, OptimPtr *opt) {
    bp_status st = BP_OK;
    opt->reset(bp_optimizer_create(m, &cfg, &st));
    ASSERT_NE(nullptr, opt->get()) << bp_status_string(st) << ": " << bp_last_error();
}

void upload_batch(bp_device *dev, const Batch &b, TensorPtr *x, TensorPtr *t) {
    ASSERT_NO_FATAL_FAILURE(bpt::upload_f32(dev, b.rows, kWidths[0], b.x, x));
    ASSERT_NO_FATAL_FAILURE(
        bpt::upload_target(dev, b.loss.kind, b.rows, kWidths[3], b.target, b.labels, t));
}

// zero_grad, forward (training), loss, backward; the gradients read back into *grads.
void compute_grads(bp_model *m, bp_device *dev, const Batch &b, std::vector<float> *grads) {
    TensorPtr x, t;
    ASSERT_NO_FATAL_FAILURE(upload_batch(dev, b, &x, &t));
    BPT_OK(bp_model_zero_grad(m));
    BPT_OK(bp_model_forward(m, x.get(), BP_MODE_TRAINING, nullptr));
    BPT_OK(bp_model_loss(m, &b.loss, t.get(), nullptr));
    BPT_OK(bp_model_backward(m, nullptr));
    grads->assign(bp_model_n_params(m), 0.0f);
    BPT_OK(bp_model_get_grads(m, grads->data(), grads->size()));
}

std::vector<float> get_params(bp_model *m) {
    std::vector<float> p(bp_model_n_params(m));
    EXPECT_EQ(BP_OK, bp_model_get_params(m, p.data(), p.size())) << bp_last_error();
    return p;
}

// ||(out - base) - (ref - base)|| / ||ref - base||: the displacement, so that a wrong update is
// not hidden behind the much larger parameters themselves. Infinity on NaN.
double disp_err(const std::vector<float> &out, const std::vector<double> &ref,
                const std::vector<float> &base) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < ref.size(); ++i) {
        if (!std::isfinite(out[i]) || !std::isfinite(ref[i]))
            return std::numeric_limits<double>::infinity();
        double a = (double)out[i] - base[i], b = ref[i] - base[i];
        num += (a - b) * (a - b);
        den += b * b;
    }
    return den > 0.0 ? std::sqrt(num / den) : std::sqrt(num);
}

double l2(const std::vector<float> &g) {
    double s = 0.0;
    for (float x : g)
        s += (double)x * x;
    return std::sqrt(s);
}

class OptimTest : public ::testing::TestWithParam<std::string> {};

TEST_P(OptimTest, ConfigDefaults) {
    bp_optim_config s = bp_optim_config_default(BP_OPTIM_SGD);
    bp_optim_config a = bp_optim_config_default(BP_OPTIM_ADAM);
    bp_optim_config w = bp_optim_config_default(BP_OPTIM_ADAMW);
    EXPECT_EQ(BP_OPTIM_SGD, s.kind);
    EXPECT_EQ(BP_OPTIM_ADAM, a.kind);
    EXPECT_EQ(BP_OPTIM_ADAMW, w.kind);
    EXPECT_FLOAT_EQ(0.01f, s.lr);
    EXPECT_FLOAT_EQ(0.001f, a.lr);
    EXPECT_FLOAT_EQ(0.001f, w.lr);
    EXPECT_EQ(0.0f, s.momentum);
    EXPECT_EQ(0.0f, s.weight_decay);
    EXPECT_EQ(0.0f, a.weight_decay);
    EXPECT_FLOAT_EQ(0.01f, w.weight_decay);
    for (const auto *c : {&a, &w}) {
        EXPECT_FLOAT_EQ(0.9f, c->beta1);
        EXPECT_FLOAT_EQ(0.999f, c->beta2);
        EXPECT_FLOAT_EQ(1e-8f, c->eps);
    }
    for (const auto *c : {&s, &a, &w}) {
        EXPECT_EQ(0.0f, c->clip_norm);
        EXPECT_EQ(0.0f, c->clip_value);
        EXPECT_EQ(1, c->accum_steps);
        EXPECT_EQ(BP_SCHEDULE_CONSTANT, c->schedule.kind);
        EXPECT_EQ(0, c->schedule.warmup_steps);
    }
}

struct OptCase {
    const char *name;
    bp_optim_config cfg;
    double clip_norm_factor = 0.0;  // > 0: clip_norm = factor * the first gradient's norm
    bool clip_value_median = false; // clip_value = the median |g| of the first gradient
};

std::vector<OptCase> optimizer_cases() {
    std::vector<OptCase> v;
    auto sgd = [](float lr, float mom, float damp, int nest, float wd) {
        bp_optim_config c = bp_optim_config_default(BP_OPTIM_SGD);
        c.lr = lr;
        c.momentum = mom;
        c.dampening = damp;
        c.nesterov = nest;
        c.weight_decay = wd;
        return c;
    };
    auto adam = [](bp_optim_kind k, float lr, float wd) {
        bp_optim_config c = bp_optim_config_default(k);
        c.lr = lr;
        c.weight_decay = wd;
        return c;
    };
    v.push_back({"sgd", sgd(0.1f, 0, 0, 0, 0)});
    v.push_back({"sgd_momentum", sgd(0.1f, 0.9f, 0, 0, 0)});
    v.push_back({"sgd_momentum_dampening", sgd(0.1f, 0.9f, 0.3f, 0, 0)});
    v.push_back({"sgd_nesterov", sgd(0.1f, 0.9f, 0, 1, 0)});
    v.push_back({"sgd_weight_decay", sgd(0.1f, 0, 0, 0, 0.05f)});
    v.push_back({"sgd_nesterov_weight_decay", sgd(0.1f, 0.8f, 0, 1, 0.05f)});
    v.push_back({"sgd_clip_norm", sgd(0.1f, 0, 0, 0, 0), 0.5});
    v.push_back({"sgd_momentum_clip_norm", sgd(0.1f, 0.9f, 0, 0, 0.01f), 0.3});
    v.push_back({"sgd_clip_value", sgd(0.1f, 0, 0, 0, 0), 0.0, true});
    v.push_back({"adam", adam(BP_OPTIM_ADAM, 0.01f, 0)});
    v.push_back({"adam_weight_decay", adam(BP_OPTIM_ADAM, 0.01f, 0.05f)});
    {
        bp_optim_config c = adam(BP_OPTIM_ADAM, 0.02f, 0);
        c.beta1 = 0.8f;
        c.beta2 = 0.99f;
        c.eps = 1e-6f;
        v.push_back({"adam_betas_eps", c});
    }
    v.push_back({"adam_clip_value", adam(BP_OPTIM_ADAM, 0.01f, 0), 0.0, true});
    v.push_back({"adamw", adam(BP_OPTIM_ADAMW, 0.01f, 0.1f)});
    v.push_back({"adamw_default_wd", adam(BP_OPTIM_ADAMW, 0.01f, 0.01f)});
    return v;
}

// Several steps of each optimizer against the double reference fed the same gradients.
TEST_P(OptimTest, UpdatesMatchReference) {
    BPT_OPEN_OR_SKIP(raw, GetParam());
    DevicePtr dev(raw);
    const int kSteps = 6;
    uint32_t seed = 300;
    for (OptCase oc : optimizer_cases()) {
        SCOPED_TRACE(oc.name);
        ModelPtr model;
        std::vector<float> p0;
        ASSERT_NO_FATAL_FAILURE(make_model(dev.get(), &model, &p0, seed += 10));
        // One fresh batch per step; the first one also sets the clipping thresholds.
        std::vector<Batch> batches;
        for (int s = 0; s < kSteps; ++s)
            batches.push_back(make_batch(8, {BP_LOSS_MSE, 0.0f}, seed + 100 + s));
        std::vector<float> g;
        ASSERT_NO_FATAL_FAILURE(compute_grads(model.get(), dev.get(), batches[0], &g));
        if (oc.clip_norm_factor > 0) oc.cfg.clip_norm = (float)(oc.clip_norm_factor * l2(g));
        if (oc.clip_value_median) {
            std::vector<float> a(g.size());
            for (size_t i = 0; i < g.size(); ++i)
                a[i] = std::fabs(g[i]);
            std::nth_element(a.begin(), a.begin() + a.size() / 2, a.end());
            oc.cfg.clip_value = a[a.size() / 2];
        }
        OptimPtr opt;
        ASSERT_NO_FATAL_FAILURE(make_optimizer(model.get(), oc.cfg, &opt));
        RefOptimizer ref(oc.cfg, p0.size());
        bp_optim_config unclipped_cfg = oc.cfg;
        unclipped_cfg.clip_norm = 0;
        unclipped_cfg.clip_value = 0;
        RefOptimizer unclipped(unclipped_cfg, p0.size());
        std::vector<double> p_ref = bpt::to_double(p0), p_unclipped = p_ref;
        for (int s = 0; s < kSteps; ++s) {
            SCOPED_TRACE("step " + std::to_string(s + 1));
            ASSERT_NO_FATAL_FAILURE(compute_grads(model.get(), dev.get(), batches[s], &g));
            EXPECT_EQ(s, bp_optimizer_steps(opt.get()));
            BPT_OK(bp_optimizer_step(opt.get()));
            ref.step(p_ref, g);
            unclipped.step(p_unclipped, g);
            std::vector<float> p = get_params(model.get());
            // Tolerance 1e-4 on the displacement from the initial parameters: each step rounds
            // the fp32 parameters (|p| < 1: <= 6e-8 absolute) and the fp32 state (~1e-7
            // relative) against displacements of ~1e-3..1e-1 (lr 0.01..0.1 times the
            // gradient or, for Adam, times ~1); 3e-7..8e-6 observed. A wrong term (momentum,
            // bias correction, decay) shows as >= 1e-2.
            double e = disp_err(p, p_ref, p0);
            EXPECT_LT(e, 1e-4) << "parameters after step " << s + 1;
            if (oc.clip_norm_factor > 0) {
                EXPECT_LT(ref.last_scale, 0.9) << "clip_norm did not trigger at this step";
                EXPECT_GT(disp_err(p, p_unclipped, p0), 0.05)
                    << "the update is not distinguishable from the unclipped one";
            }
            if (oc.clip_value_median && s == 0) {
                EXPECT_GT(ref.last_clamped, g.size() / 4) << "clip_value clamped too little";
            }
            // SGD moves by lr g, so clamping half the gradients shows at once; Adam's first
            // step is lr sign(g) whatever the clamp, so its difference shows only later.
            if (oc.clip_value_median && (oc.cfg.kind == BP_OPTIM_SGD || s == kSteps - 1)) {
                EXPECT_GT(disp_err(p, p_unclipped, p0), oc.cfg.kind == BP_OPTIM_SGD ? 0.05 : 1e-2)
                    << "the update is not distinguishable from the unclipped one";
            }
        }
        EXPECT_EQ(kSteps, bp_optimizer_steps(opt.get()));
    }
}

struct SchedCase {
    const char *name;
    bp_schedule s;
};

// A schedule from the defaults (the plateau fields at theirs) with the fields these cases vary.
bp_schedule schedule(bp_schedule_kind kind, int64_t warmup, int64_t step_size, double gamma,
                     int64_t total, double min_lr) {
    bp_schedule s = bp_optim_config_default(BP_OPTIM_SGD).schedule;
    s.kind = kind;
    s.warmup_steps = warmup;
    s.step_size = step_size;
    s.gamma = gamma;
    s.total_steps = total;
    s.min_lr = min_lr;
    return s;
}

// Every schedule: bp_optimizer_lr over 20 steps against the closed forms, and the step really
// uses that rate (plain SGD: p_t - p_{t+1} = lr_t g_t).
TEST_P(OptimTest, Schedules) {
    BPT_OPEN_OR_SKIP(raw, GetParam());
    DevicePtr dev(raw);
    const SchedCase cases[] = {
        {"constant", schedule(BP_SCHEDULE_CONSTANT, 0, 0, 0.0, 0, 0.0)},
        {"constant_warmup5", schedule(BP_SCHEDULE_CONSTANT, 5, 0, 0.0, 0, 0.0)},
        {"step4_gamma0.5", schedule(BP_SCHEDULE_STEP, 0, 4, 0.5, 0, 0.0)},
        {"warmup3_step3_gamma0.7", schedule(BP_SCHEDULE_STEP, 3, 3, 0.7, 0, 0.0)},
        {"cosine20_min0.02", schedule(BP_SCHEDULE_COSINE, 0, 0, 0.0, 20, 0.02)},
        // total 16: the last four of the 20 steps run past the end and stay at min_lr.
        {"warmup4_cosine16_min0", schedule(BP_SCHEDULE_COSINE, 4, 0, 0.0, 16, 0.0)},
        // No metric reported: the plateau's rate is lr after its warm-up.
        {"warmup3_plateau", schedule(BP_SCHEDULE_PLATEAU, 3, 0, 0.5, 0, 0.0)},
    };
    uint32_t seed = 700;
    for (const auto &sc : cases) {
        SCOPED_TRACE(sc.name);
        ModelPtr model;
        std::vector<float> p;
        ASSERT_NO_FATAL_FAILURE(make_model(dev.get(), &model, &p, seed += 10));
        bp_optim_config cfg = bp_optim_config_default(BP_OPTIM_SGD);
        cfg.lr = 0.2f;
        cfg.schedule = sc.s;
        OptimPtr opt;
        ASSERT_NO_FATAL_FAILURE(make_optimizer(model.get(), cfg, &opt));
        bool varied = false;
        for (int t = 0; t < 20; ++t) {
            SCOPED_TRACE("t = " + std::to_string(t));
            double want = ref_lr(cfg, t);
            float lr = bp_optimizer_lr(opt.get());
            // 1e-6 relative (the float rounding of the rate, plus float pow/cos if computed in
            // float), with a 1e-8 floor for the rate 0 that cosine reaches.
            EXPECT_NEAR(want, (double)lr, 1e-6 * want + 1e-8);
            EXPECT_EQ(t, bp_optimizer_steps(opt.get()));
            varied = varied || std::fabs(want - cfg.lr) > 1e-3;
            Batch b = make_batch(6, {BP_LOSS_CROSS_ENTROPY, 0.0f}, seed + 50 + t);
            std::vector<float> g;
            ASSERT_NO_FATAL_FAILURE(compute_grads(model.get(), dev.get(), b, &g));
            BPT_OK(bp_optimizer_step(opt.get()));
            std::vector<float> q = get_params(model.get());
            std::vector<double> want_p(p.size());
            for (size_t i = 0; i < p.size(); ++i)
                want_p[i] = p[i] - want * g[i];
            // The step against p - lr_t g: 1e-4 on the displacement (one fp32 rounding of
            // |p| < 1, ~6e-8, against lr_t |g| >= ~1e-4 per element, norm-wise ~1e-6).
            EXPECT_LT(disp_err(q, want_p, p), 1e-4) << "the step did not use lr " << want;
            p = q;
        }
        EXPECT_EQ(20, bp_optimizer_steps(opt.get()));
        if (sc.s.kind != BP_SCHEDULE_CONSTANT || sc.s.warmup_steps > 0) {
            EXPECT_TRUE(varied) << "the schedule never moved the rate: the case tests nothing";
        }
    }
}

// Step counting, and a failed (non-finite) step counts nothing and changes nothing.
TEST_P(OptimTest, StepCountingAndNonFinite) {
    BPT_OPEN_OR_SKIP(raw, GetParam());
    DevicePtr dev(raw);
    ModelPtr model;
    std::vector<float> p0;
    ASSERT_NO_FATAL_FAILURE(make_model(dev.get(), &model, &p0, 900));
    bp_optim_config cfg = bp_optim_config_default(BP_OPTIM_ADAM);
    OptimPtr opt;
    ASSERT_NO_FATAL_FAILURE(make_optimizer(model.get(), cfg, &opt));
    EXPECT_EQ(0, bp_optimizer_steps(opt.get()));
    Batch b = make_batch(6, {BP_LOSS_MSE, 0.0f}, 901);
    std::vector<float> g;
    for (int s = 1; s <= 3; ++s) {
        ASSERT_NO_FATAL_FAILURE(compute_grads(model.get(), dev.get(), b, &g));
        BPT_OK(bp_optimizer_step(opt.get()));
        EXPECT_EQ(s, bp_optimizer_steps(opt.get()));
    }
    // train_step counts one optimizer step per call.
    TensorPtr x, t;
    ASSERT_NO_FATAL_FAILURE(upload_batch(dev.get(), b, &x, &t));
    float loss = 0;
    BPT_OK(bp_train_step(model.get(), opt.get(), &b.loss, x.get(), t.get(), &loss));
    EXPECT_EQ(4, bp_optimizer_steps(opt.get()));

    // A NaN in the input makes the gradients NaN: the step must fail with BP_ERR_NON_FINITE and
    // leave the parameters, the state and the count as they were.
    std::vector<float> before = get_params(model.get());
    std::vector<float> state(bp_optimizer_state_size(opt.get())), state_after(state.size());
    int64_t steps = -1;
    BPT_OK(bp_optimizer_get_state(opt.get(), state.data(), state.size(), &steps));
    Batch bad = b;
    bad.x[5] = std::numeric_limits<float>::quiet_NaN();
    TensorPtr xb, tb;
    ASSERT_NO_FATAL_FAILURE(upload_batch(dev.get(), bad, &xb, &tb));
    BPT_OK(bp_model_zero_grad(model.get()));
    BPT_OK(bp_model_forward(model.get(), xb.get(), BP_MODE_TRAINING, nullptr));
    if (bp_model_loss(model.get(), &bad.loss, tb.get(), nullptr) == BP_OK &&
        bp_model_backward(model.get(), nullptr) == BP_OK) {
        EXPECT_EQ(BP_ERR_NON_FINITE, bp_optimizer_step(opt.get()));
        EXPECT_EQ(4, bp_optimizer_steps(opt.get()));
        std::vector<float> after = get_params(model.get());
        EXPECT_EQ(0, std::memcmp(before.data(), after.data(), before.size() * sizeof(float)))
            << "a failed step changed the parameters";
        BPT_OK(bp_optimizer_get_state(opt.get(), state_after.data(), state.size(), &steps));
        EXPECT_EQ(0, std::memcmp(state.data(), state_after.data(), state.size() * sizeof(float)))
            << "a failed step changed the optimizer state";
        EXPECT_EQ(4, steps);
    }
    // The same through bp_train_step.
    EXPECT_EQ(BP_ERR_NON_FINITE,
              bp_train_step(model.get(), opt.get(), &bad.loss, xb.get(), tb.get(), &loss));
    EXPECT_EQ(4, bp_optimizer_steps(opt.get()));
    std::vector<float> after = get_params(model.get());
    EXPECT_EQ(0, std::memcmp(before.data(), after.data(), before.size() * sizeof(float)))
        << "a failed train_step changed the parameters";
}

// get_state / set_state: restoring the state and the parameters reproduces the next step
// bitwise, on the same optimizer and on a new one.
TEST_P(OptimTest, StateRoundTrip) {
    BPT_OPEN_OR_SKIP(raw, GetParam());
    DevicePtr dev(raw);
    struct {
        const char *name;
        bp_optim_kind kind;
        float momentum;
        size_t state_per_param;
    } cases[] = {{"sgd", BP_OPTIM_SGD, 0.0f, 0},
                 {"sgd_momentum", BP_OPTIM_SGD, 0.9f, 1},
                 {"adam", BP_OPTIM_ADAM, 0.0f, 2},
                 {"adamw", BP_OPTIM_ADAMW, 0.0f, 2}};
    uint32_t seed = 1100;
    for (const auto &oc : cases) {
        SCOPED_TRACE(oc.name);
        ModelPtr model;
        std::vector<float> p0;
        ASSERT_NO_FATAL_FAILURE(make_model(dev.get(), &model, &p0, seed += 10));
        size_t n = p0.size();
        bp_optim_config cfg = bp_optim_config_default(oc.kind);
        cfg.momentum = oc.momentum;
        // A schedule, so that the restored step count visibly matters for the rate.
        cfg.schedule.kind = BP_SCHEDULE_COSINE;
        cfg.schedule.warmup_steps = 2;
        cfg.schedule.total_steps = 10;
        OptimPtr opt;
        ASSERT_NO_FATAL_FAILURE(make_optimizer(model.get(), cfg, &opt));
        ASSERT_EQ(oc.state_per_param * n, bp_optimizer_state_size(opt.get()));
        std::vector<float> g;
        for (int s = 0; s < 3; ++s) {
            Batch b = make_batch(6, {BP_LOSS_CROSS_ENTROPY, 0.1f}, seed + s);
            ASSERT_NO_FATAL_FAILURE(compute_grads(model.get(), dev.get(), b, &g));
            BPT_OK(bp_optimizer_step(opt.get()));
        }
        // Saved: parameters, state, steps.
        std::vector<float> p3 = get_params(model.get());
        std::vector<float> state(bp_optimizer_state_size(opt.get()) + 1, 0.0f);
        int64_t steps = -1;
        BPT_OK(bp_optimizer_get_state(opt.get(), state.data(), state.size() - 1, &steps));
        state.pop_back();
        EXPECT_EQ(3, steps);
        float lr3 = bp_optimizer_lr(opt.get());
        if (oc.state_per_param > 0) {
            size_t nonzero = 0;
            for (float v : state)
                nonzero += v != 0.0f;
            EXPECT_GT(nonzero, state.size() / 2) << "the state after 3 steps is mostly zero";
        }
        // The step after the save.
        Batch next = make_batch(6, {BP_LOSS_CROSS_ENTROPY, 0.1f}, seed + 3);
        ASSERT_NO_FATAL_FAILURE(compute_grads(model.get(), dev.get(), next, &g));
        BPT_OK(bp_optimizer_step(opt.get()));
        std::vector<float> p4 = get_params(model.get());
        // One more step so the optimizer's state has moved on before the restore.
        ASSERT_NO_FATAL_FAILURE(compute_grads(model.get(), dev.get(), next, &g));
        BPT_OK(bp_optimizer_step(opt.get()));

        // Restore into the same optimizer.
        BPT_OK(bp_model_set_params(model.get(), p3.data(), n));
        BPT_OK(bp_optimizer_set_state(opt.get(), state.data(), state.size(), 3));
        EXPECT_EQ(3, bp_optimizer_steps(opt.get()));
        EXPECT_EQ(lr3, bp_optimizer_lr(opt.get()));
        std::vector<float> state_back(state.size() + 1);
        int64_t steps_back = -1;
        BPT_OK(bp_optimizer_get_state(opt.get(), state_back.data(), state.size(), &steps_back));
        EXPECT_TRUE(std::equal(state.begin(), state.end(), state_back.begin()))
            << "get_state after set_state returns something else";
        EXPECT_EQ(3, steps_back);
        ASSERT_NO_FATAL_FAILURE(compute_grads(model.get(), dev.get(), next, &g));
        BPT_OK(bp_optimizer_step(opt.get()));
        std::vector<float> p4_same = get_params(model.get());
        EXPECT_EQ(0, std::memcmp(p4.data(), p4_same.data(), n * sizeof(float)))
            << "restored state on the same optimizer: the next step differs";

        // Restore into a new optimizer (a checkpoint loaded into a fresh run).
        OptimPtr fresh;
        ASSERT_NO_FATAL_FAILURE(make_optimizer(model.get(), cfg, &fresh));
        BPT_OK(bp_model_set_params(model.get(), p3.data(), n));
        BPT_OK(bp_optimizer_set_state(fresh.get(), state.data(), state.size(), 3));
        EXPECT_EQ(3, bp_optimizer_steps(fresh.get()));
        EXPECT_EQ(lr3, bp_optimizer_lr(fresh.get()));
        ASSERT_NO_FATAL_FAILURE(compute_grads(model.get(), dev.get(), next, &g));
        BPT_OK(bp_optimizer_step(fresh.get()));
        std::vector<float> p4_fresh = get_params(model.get());
        EXPECT_EQ(0, std::memcmp(p4.data(), p4_fresh.data(), n * sizeof(float)))
            << "restored state on a new optimizer: the next step differs";

        // A wrong count is refused.
        std::vector<float> wrong(state.size() + 1, 0.0f);
        EXPECT_NE(BP_OK, bp_optimizer_set_state(fresh.get(), wrong.data(), wrong.size(), 3));
        EXPECT_EQ(4, bp_optimizer_steps(fresh.get())) << "a refused set_state changed the count";
    }
}

// accum_steps: bp_train_step over 2 or 3 micro-batches gives the update of one full batch
// (the gradient of the mean loss over all rows), and that update is lr times the reference
// gradient. The gradient buffer holds stale gradients beforehand: train_step must zero it.
TEST_P(OptimTest, AccumStepsMatchFullBatch) {
    BPT_OPEN_OR_SKIP(raw, GetParam());
    DevicePtr dev(raw);
    const bp_loss_config losses[] = {
        {BP_LOSS_MSE, 0.0f}, {BP_LOSS_CROSS_ENTROPY, 0.1f}, {BP_LOSS_BCE_LOGITS, 0.0f}};
    uint32_t seed = 1300;
    for (const auto &lc : losses) {
        for (int rows : {12, 7}) { // 7 rows in 2 or 3 micro-batches: uneven splits
            SCOPED_TRACE("loss " + std::to_string(lc.kind) + ", rows " + std::to_string(rows));
            Batch b = make_batch(rows, lc, seed += 10);
            // The reference gradient of the mean loss over all rows, at fresh parameters p0.
            bpref_mlp net{3, kWidths, kActs, 0.01};
            std::vector<float> p0 = bpt::uniform(bpref_mlp_n_params(&net), -0.6f, 0.6f, seed + 1);
            std::vector<double> target(b.target.begin(), b.target.end());
            bpref_mlp_loss rl{lc.kind, (double)lc.label_smoothing, target.data(), b.labels.data()};
            std::vector<double> ref_g(p0.size());
            double ref_loss =
                bpref_mlp_backward(&net, bpt::to_double(p0).data(), bpt::to_double(b.x).data(),
                                   rows, &rl, nullptr, ref_g.data(), nullptr);
            ASSERT_TRUE(std::isfinite(ref_loss));
            const float lr = 1.0f; // large, so the displacement dwarfs the fp32 rounding of p
            std::vector<double> ref_p(p0.size());
            for (size_t i = 0; i < p0.size(); ++i)
                ref_p[i] = p0[i] - lr * ref_g[i];

            std::vector<float> p_full;
            float loss_full = 0;
            for (int accum : {1, 2, 3}) {
                SCOPED_TRACE("accum_steps " + std::to_string(accum));
                ModelPtr model;
                std::vector<float> unused;
                ASSERT_NO_FATAL_FAILURE(make_model(dev.get(), &model, &unused, seed + 2));
                BPT_OK(bp_model_set_params(model.get(), p0.data(), p0.size()));
                // Stale gradients from another batch.
                std::vector<float> stale;
                ASSERT_NO_FATAL_FAILURE(
                    compute_grads(model.get(), dev.get(), make_batch(5, lc, seed + 3), &stale));
                bp_optim_config cfg = bp_optim_config_default(BP_OPTIM_SGD);
                cfg.lr = lr;
                cfg.accum_steps = accum;
                OptimPtr opt;
                ASSERT_NO_FATAL_FAILURE(make_optimizer(model.get(), cfg, &opt));
                TensorPtr x, t;
                ASSERT_NO_FATAL_FAILURE(upload_batch(dev.get(), b, &x, &t));
                float loss = -1.0f;
                BPT_OK(bp_train_step(model.get(), opt.get(), &lc, x.get(), t.get(), &loss));
                EXPECT_EQ(1, bp_optimizer_steps(opt.get()));
                std::vector<float> p = get_params(model.get());
                // Against the reference: the gradient tolerance of test_mlp (2e-5) plus the
                // rounding of p (6e-8 against displacements ~1e-2..1e-1): 3e-5.
                EXPECT_LT(disp_err(p, ref_p, p0), 3e-5) << "update vs lr * reference gradient";
                // The mean loss over all rows (1e-5 as in test_mlp).
                EXPECT_NEAR(ref_loss, loss, 1e-5 * std::fabs(ref_loss)) << "reported loss";
                if (accum == 1) {
                    p_full = p;
                    loss_full = loss;
                } else {
                    // Against accum_steps = 1: only the summation order of the rows differs
                    // (fp32, ~1e-7 relative per gradient); 1e-5 on the displacement.
                    EXPECT_LT(disp_err(p, bpt::to_double(p_full), p0), 1e-5)
                        << "accumulated update differs from the full-batch one";
                    EXPECT_NEAR(loss_full, loss, 1e-6 * std::fabs(loss_full));
                }
            }
        }
    }
}

INSTANTIATE_TEST_SUITE_P(Backends, OptimTest, ::testing::ValuesIn(bpt::all_backends()),
                         [](const ::testing::TestParamInfo<std::string> &i) { return i.param; });

// The double reference optimizer itself against values worked out by hand, so that agreement
// with it means something.
TEST(OptimReference, HandComputedSteps) {
    // SGD momentum 0.9, dampening 0.5, lr 0.1, wd 0.1, p = 1, g = 1 then 2:
    //   step 1: g' = 1 + 0.1 = 1.1, buf = 1.1, p = 1 - 0.11 = 0.89
    //   step 2: g' = 2 + 0.089 = 2.089, buf = 0.99 + 0.5 * 2.089 = 2.0345, p = 0.89 - 0.20345
    bp_optim_config c = bp_optim_config_default(BP_OPTIM_SGD);
    c.lr = 0.1f;
    c.momentum = 0.9f;
    c.dampening = 0.5f;
    c.weight_decay = 0.1f;
    // The config holds floats: compare with the float-rounded constants' exact doubles.
    RefOptimizer sgd(c, 1);
    std::vector<double> p{1.0};
    sgd.step(p, {1.0f});
    double lr = c.lr, wd = c.weight_decay, mom = c.momentum, damp = c.dampening;
    double buf = 1.0 + wd;
    EXPECT_NEAR(1.0 - lr * buf, p[0], 1e-15);
    double p1 = 1.0 - lr * buf;
    double g2 = 2.0 + wd * p1;
    buf = mom * buf + (1.0 - damp) * g2;
    sgd.step(p, {2.0f});
    EXPECT_NEAR(p1 - lr * buf, p[0], 1e-15);
    EXPECT_NEAR(0.89 - 0.20345, p[0], 1e-7); // the decimal values above

    // Adam, first step: m = 0.1 g, v = 0.001 g^2, update = lr * g / (|g| + eps') = lr sign(g)
    // (eps' = eps sqrt(1 - beta2) is negligible at g = 0.5).
    bp_optim_config a = bp_optim_config_default(BP_OPTIM_ADAM);
    a.lr = 0.01f;
    RefOptimizer adam(a, 1);
    p = {0.3};
    adam.step(p, {0.5f});
    EXPECT_NEAR(0.3 - (double)a.lr, p[0], 1e-9);
    // AdamW: the decay multiplies first: p = 0.3 (1 - lr wd) - lr sign(g).
    a.kind = BP_OPTIM_ADAMW;
    a.weight_decay = 0.1f;
    RefOptimizer adamw(a, 1);
    p = {0.3};
    adamw.step(p, {-0.5f});
    EXPECT_NEAR(0.3 * (1.0 - (double)a.lr * a.weight_decay) + (double)a.lr, p[0], 1e-9);

    // Schedules: warm-up 4 then step 2 / gamma 0.5 at t = 0..7 (u = t - 4 = 0, 1, 2, 3 after
    // the warm-up): lr * (1/4, 2/4, 3/4, 1, 1, 1, 0.5, 0.5); cosine 0..10, min 0.1: halfway
    // (t = 5) = 0.55.
    bp_optim_config s = bp_optim_config_default(BP_OPTIM_SGD);
    s.lr = 1.0f;
    s.schedule = schedule(BP_SCHEDULE_STEP, 4, 2, 0.5, 0, 0.0);
    const double want[] = {0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 0.5, 0.5};
    for (int t = 0; t < 8; ++t)
        EXPECT_DOUBLE_EQ(want[t], ref_lr(s, t)) << t;
    s.schedule = schedule(BP_SCHEDULE_COSINE, 0, 0, 0.0, 10, 0.1);
    EXPECT_NEAR(0.55, ref_lr(s, 5), 1e-7);
    EXPECT_NEAR(1.0, ref_lr(s, 0), 1e-7);
    EXPECT_NEAR(0.1, ref_lr(s, 10), 1e-7);
    EXPECT_NEAR(0.1, ref_lr(s, 15), 1e-7);
}

} // namespace
