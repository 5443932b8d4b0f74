// Whole-network tests: the library's MLP forward, loss and backward against the float64
// reference in ref_mlp.c, finite differences of both, gradient accumulation, the parameter
// layout, the initialisation schemes and batch sizes. Parametrised over every backend.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "ref_mlp.h"
#include "ref_ops.h"
#include "support.h"
#include "support_model.h"

namespace {

using bpt::DevicePtr;
using bpt::ModelPtr;
using bpt::TensorPtr;
using bpt::upload_f32;

const bp_activation kActs[] = {BP_ACT_IDENTITY, BP_ACT_RELU, BP_ACT_LEAKY_RELU, BP_ACT_SIGMOID,
                               BP_ACT_TANH,     BP_ACT_GELU, BP_ACT_GELU_TANH,  BP_ACT_SILU};

const char *act_name(bp_activation a) {
    static const char *names[] = {"identity", "relu", "leaky_relu", "sigmoid",
                                  "tanh",     "gelu", "gelu_tanh",  "silu"};
    return (int)a >= 0 && (int)a < BP_ACT_COUNT_ ? names[a] : "?";
}

std::string sci(double v) {
    std::ostringstream o;
    o << std::scientific << v;
    return o.str();
}

bool has_kink(bp_activation a) {
    return a == BP_ACT_RELU || a == BP_ACT_LEAKY_RELU;
}

struct LossCase {
    bp_loss_kind kind;
    float smoothing;
    const char *name;
};
const LossCase kLosses[] = {{BP_LOSS_MSE, 0.0f, "mse"},
                            {BP_LOSS_CROSS_ENTROPY, 0.0f, "xent"},
                            {BP_LOSS_CROSS_ENTROPY, 0.1f, "xent_smooth0.1"},
                            {BP_LOSS_BCE_LOGITS, 0.0f, "bce_logits"}};

// One network, one batch and its target.
struct Case {
    std::vector<int> widths;
    std::vector<bp_activation> acts;
    float slope = 0.1f; // not the default 0.01, so a slope that is not passed on shows
    LossCase loss{};
    int batch = 0;
    std::vector<float> x;        // [batch, widths[0]]
    std::vector<float> target;   // MSE, BCE: [batch, out]
    std::vector<int32_t> labels; // cross-entropy: [batch]
    std::vector<float> params;   // fresh random parameters, set into the model
    int n_in() const {
        return widths.front();
    }
    int n_out() const {
        return widths.back();
    }
};

// Whether pred(k) holds for some pre-activation k of a ReLU or leaky-ReLU layer, k indexing
// the case's pre-activations as bpref_mlp_forward lays them out (layer by layer).
template <class Pred> bool any_kinked_preact(const Case &c, Pred pred) {
    size_t off = 0;
    for (size_t l = 0; l + 1 < c.widths.size(); ++l) {
        size_t n = (size_t)c.batch * c.widths[l + 1];
        if (has_kink(c.acts[l]))
            for (size_t k = off; k < off + n; ++k)
                if (pred(k)) return true;
        off += n;
    }
    return false;
}

size_t count_params(const std::vector<int> &w) {
    size_t n = 0;
    for (size_t l = 0; l + 1 < w.size(); ++l)
        n += (size_t)w[l + 1] * w[l] + w[l + 1];
    return n;
}

// Fresh random inputs, targets and parameters (weights and biases U(-0.6, 0.6): larger than
// torch's default 1/sqrt(in) so every layer's non-linearity is exercised away from zero).
Case make_case(std::vector<int> widths, std::vector<bp_activation> acts, LossCase loss, int batch,
               uint32_t seed) {
    Case c;
    c.widths = std::move(widths);
    c.acts = std::move(acts);
    c.loss = loss;
    c.batch = batch;
    c.x = bpt::uniform((size_t)batch * c.n_in(), -1.0f, 1.0f, seed);
    if (loss.kind == BP_LOSS_MSE)
        c.target = bpt::uniform((size_t)batch * c.n_out(), -1.0f, 1.0f, seed + 1);
    else if (loss.kind == BP_LOSS_BCE_LOGITS)
        c.target = bpt::uniform((size_t)batch * c.n_out(), 0.0f, 1.0f, seed + 1);
    else {
        std::mt19937 gen(seed + 1);
        std::uniform_int_distribution<int32_t> dist(0, c.n_out() - 1);
        c.labels.resize(batch);
        for (auto &l : c.labels)
            l = dist(gen);
    }
    c.params = bpt::uniform(count_params(c.widths), -0.6f, 0.6f, seed + 2);
    return c;
}

bpref_mlp ref_net(const Case &c) {
    return bpref_mlp{(int)c.widths.size() - 1, c.widths.data(), c.acts.data(), (double)c.slope};
}

struct RefOut {
    double loss = 0.0;
    std::vector<double> out, dparams, dx;
};

// The reference on the case's batch with the given parameters and inputs.
RefOut ref_eval(const Case &c, const std::vector<double> &params, const std::vector<double> &x) {
    bpref_mlp net = ref_net(c);
    std::vector<double> target(c.target.begin(), c.target.end());
    bpref_mlp_loss loss{c.loss.kind, (double)c.loss.smoothing, target.data(), c.labels.data()};
    RefOut r;
    r.out.resize((size_t)c.batch * c.n_out());
    r.dparams.resize(params.size());
    r.dx.resize(x.size());
    r.loss = bpref_mlp_backward(&net, params.data(), x.data(), c.batch, &loss, r.out.data(),
                                r.dparams.data(), r.dx.data());
    return r;
}

double ref_loss_only(const Case &c, const std::vector<double> &params,
                     const std::vector<double> &x) {
    bpref_mlp net = ref_net(c);
    std::vector<double> out((size_t)c.batch * c.n_out());
    if (bpref_mlp_forward(&net, params.data(), x.data(), c.batch, out.data(), nullptr) != 0)
        return std::numeric_limits<double>::quiet_NaN();
    std::vector<double> target(c.target.begin(), c.target.end());
    bpref_mlp_loss loss{c.loss.kind, (double)c.loss.smoothing, target.data(), c.labels.data()};
    return bpref_mlp_loss_value(&loss, c.batch, c.n_out(), out.data(), nullptr);
}

// (f(v + h e_i) - f(v - h e_i)) / 2h for every coordinate i of v, in double.
template <class F>
std::vector<double> central_differences(const std::vector<double> &v, double h, F f) {
    std::vector<double> fd(v.size()), w = v;
    for (size_t i = 0; i < v.size(); ++i) {
        w[i] = v[i] + h;
        double lp = f(w);
        w[i] = v[i] - h;
        double lm = f(w);
        w[i] = v[i];
        fd[i] = (lp - lm) / (2.0 * h);
    }
    return fd;
}

// ||a - b|| / ||b|| in double; infinity on NaN/Inf, as bpt::rel_err.
double rel_err_d(const std::vector<double> &a, const std::vector<double> &b) {
    if (a.size() != b.size()) return std::numeric_limits<double>::infinity();
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < a.size(); ++i) {
        if (!std::isfinite(a[i]) || !std::isfinite(b[i]))
            return std::numeric_limits<double>::infinity();
        num += (a[i] - b[i]) * (a[i] - b[i]);
        den += b[i] * b[i];
    }
    return den > 0.0 ? std::sqrt(num / den) : std::sqrt(num);
}

double rel_err_scalar(double out, double ref) {
    if (!std::isfinite(out) || !std::isfinite(ref)) return std::numeric_limits<double>::infinity();
    return std::fabs(out - ref) / std::max(std::fabs(ref), 1e-30);
}

void make_model(bp_device *dev, const Case &c, int max_batch, ModelPtr *model, uint64_t seed = 7) {
    bp_mlp_config cfg = bp_mlp_config_default((int)c.widths.size() - 1, c.widths.data());
    cfg.activations = c.acts.data();
    cfg.leaky_slope = c.slope;
    cfg.max_batch = max_batch;
    cfg.seed = seed;
    bp_status st = BP_OK;
    model->reset(bp_model_create(dev, &cfg, &st));
    ASSERT_NE(nullptr, model->get()) << bp_status_string(st) << ": " << bp_last_error();
}

// Library forward (in `mode`) and loss on inputs x; out and loss may be NULL. The model keeps
// a pointer to the input tensor for backward (src/core/pass.c), so a caller that will call
// backward passes keep_x to hold the tensor alive until then.
void lib_forward_loss(bp_model *m, bp_device *dev, const Case &c, const std::vector<float> &x,
                      bp_mode mode, std::vector<float> *out, float *loss,
                      TensorPtr *keep_x = nullptr) {
    TensorPtr tx, tout, tt;
    ASSERT_NO_FATAL_FAILURE(upload_f32(dev, c.batch, c.n_in(), x, &tx));
    ASSERT_NO_FATAL_FAILURE(bpt::new_tensor(dev, BP_F32, c.batch, c.n_out(), &tout));
    BPT_OK(bp_model_forward(m, tx.get(), mode, tout.get()));
    if (out) {
        out->assign((size_t)c.batch * c.n_out(), 0.0f);
        BPT_OK(bp_tensor_download(tout.get(), out->data(), out->size()));
    }
    if (loss) {
        ASSERT_NO_FATAL_FAILURE(
            bpt::upload_target(dev, c.loss.kind, c.batch, c.n_out(), c.target, c.labels, &tt));
        bp_loss_config lc{c.loss.kind, c.loss.smoothing};
        BPT_OK(bp_model_loss(m, &lc, tt.get(), loss));
    }
    if (keep_x) *keep_x = std::move(tx);
}

// Backward of the last forward+loss; grads (the whole gradient buffer) and dx may be NULL.
void lib_backward(bp_model *m, bp_device *dev, const Case &c, std::vector<float> *grads,
                  std::vector<float> *dx) {
    TensorPtr tdx;
    if (dx) {
        ASSERT_NO_FATAL_FAILURE(bpt::new_tensor(dev, BP_F32, c.batch, c.n_in(), &tdx));
    }
    BPT_OK(bp_model_backward(m, tdx.get()));
    if (grads) {
        grads->assign(bp_model_n_params(m), 0.0f);
        BPT_OK(bp_model_get_grads(m, grads->data(), grads->size()));
    }
    if (dx) {
        dx->assign((size_t)c.batch * c.n_in(), 0.0f);
        BPT_OK(bp_tensor_download(tdx.get(), dx->data(), dx->size()));
    }
}

struct LibOut {
    float loss = 0.0f;
    std::vector<float> out, grads, dx;
};

// zero_grad, forward (training), loss, backward.
void lib_eval(bp_model *m, bp_device *dev, const Case &c, LibOut *r) {
    BPT_OK(bp_model_zero_grad(m));
    TensorPtr x;
    ASSERT_NO_FATAL_FAILURE(
        lib_forward_loss(m, dev, c, c.x, BP_MODE_TRAINING, &r->out, &r->loss, &x));
    ASSERT_NO_FATAL_FAILURE(lib_backward(m, dev, c, &r->grads, &r->dx));
}

// Sets the case's parameters and reads them back (the reference runs on what the model holds).
void set_case_params(bp_model *m, const Case &c, std::vector<float> *held) {
    ASSERT_EQ(c.params.size(), bp_model_n_params(m));
    BPT_OK(bp_model_set_params(m, c.params.data(), c.params.size()));
    held->assign(c.params.size(), 0.0f);
    BPT_OK(bp_model_get_params(m, held->data(), held->size()));
    ASSERT_EQ(0, std::memcmp(held->data(), c.params.data(), c.params.size() * sizeof(float)))
        << "get_params does not return what set_params stored";
}

// A model for the case (make_model) holding the case's parameters (set_case_params).
void make_case_model(bp_device *dev, const Case &c, int max_batch, ModelPtr *model,
                     std::vector<float> *held) {
    ASSERT_NO_FATAL_FAILURE(make_model(dev, c, max_batch, model));
    ASSERT_NO_FATAL_FAILURE(set_case_params(model->get(), c, held));
}

std::string case_name(const Case &c) {
    std::string s = std::string(c.loss.name) + ", activations";
    for (auto a : c.acts)
        s += std::string(" ") + act_name(a);
    return s + ", batch " + std::to_string(c.batch);
}

// Every hidden activation with every loss (output identity), plus every activation on the
// output layer under MSE.
std::vector<Case> all_cases(int batch) {
    std::vector<Case> cases;
    uint32_t seed = 1000;
    for (auto act : kActs)
        for (const auto &loss : kLosses)
            cases.push_back(
                make_case({13, 17, 11, 5}, {act, act, BP_ACT_IDENTITY}, loss, batch, seed += 10));
    for (auto act : kActs)
        cases.push_back(make_case({13, 17, 11, 5}, {BP_ACT_TANH, BP_ACT_SILU, act}, kLosses[0],
                                  batch, seed += 10));
    return cases;
}

class MlpTest : public ::testing::TestWithParam<std::string> {};

// (a), (b), (c): forward output, loss value, parameter gradients and dx against the float64
// reference evaluated on the model's own parameters (read back with bp_model_get_params).
TEST_P(MlpTest, ForwardLossBackwardMatchReference) {
    BPT_OPEN_OR_SKIP(raw, GetParam());
    DevicePtr dev(raw);
    double worst_fwd = 0, worst_loss = 0, worst_grad = 0, worst_dx = 0;
    for (const Case &c : all_cases(6)) {
        SCOPED_TRACE(case_name(c));
        ModelPtr model;
        std::vector<float> params;
        ASSERT_NO_FATAL_FAILURE(make_case_model(dev.get(), c, 32, &model, &params));
        RefOut ref = ref_eval(c, bpt::to_double(params), bpt::to_double(c.x));
        ASSERT_TRUE(std::isfinite(ref.loss));

        // Inference and training forwards (no dropout) both match the reference. Tolerance
        // 1e-5 (norm-wise relative): fp32 dot products of length <= 17 over three layers and
        // fp32 transcendental functions (<= a few ulp) give ~1e-7..1e-6; a wrong formula,
        // transposed weight or misplaced bias gives errors >= 1e-2.
        std::vector<float> out_inf;
        ASSERT_NO_FATAL_FAILURE(
            lib_forward_loss(model.get(), dev.get(), c, c.x, BP_MODE_INFERENCE, &out_inf, nullptr));
        // fp32 products never fuse GELU (its epilogue's tanh may be a fast approximation,
        // src/cuda/cuda_lt.c), so one limit holds for every backend and every cudaemu variant
        // (variant 3's fast tanh, fused here, was 7.5e-4 forward and 9.6e-4 in a gradient).
        const double fwd_tol = 1e-5, grad_tol = 2e-5;
        EXPECT_LT(bpt::rel_err(out_inf, ref.out), fwd_tol) << "inference forward";

        LibOut lib;
        ASSERT_NO_FATAL_FAILURE(lib_eval(model.get(), dev.get(), c, &lib));
        double e_fwd = bpt::rel_err(lib.out, ref.out);
        EXPECT_LT(e_fwd, fwd_tol) << "training forward";
        // The mean loss: one fp32 reduction over <= 30 elements on top of the forward error.
        double e_loss = rel_err_scalar(lib.loss, ref.loss);
        EXPECT_LT(e_loss, fwd_tol) << "loss " << lib.loss << " vs reference " << ref.loss;
        // Gradients: 2e-5, a little looser than the forward since backward sums terms of both
        // signs (cancellation) and goes through three layers twice; observed ~1e-6.
        double e_grad = bpt::rel_err(lib.grads, ref.dparams);
        double e_dx = bpt::rel_err(lib.dx, ref.dx);
        EXPECT_LT(e_grad, grad_tol) << "parameter gradients";
        EXPECT_LT(e_dx, grad_tol) << "dx";
        // Per-layer gradient blocks too, so a small layer cannot hide in the global norm.
        bpref_mlp net = ref_net(c);
        for (int l = 0; l < net.n_layers; ++l) {
            size_t w_off, b_off;
            bpref_mlp_layer_offsets(&net, l, &w_off, &b_off);
            size_t end = b_off + c.widths[l + 1];
            std::vector<float> gw(lib.grads.begin() + w_off, lib.grads.begin() + b_off);
            std::vector<double> rw(ref.dparams.begin() + w_off, ref.dparams.begin() + b_off);
            std::vector<float> gb(lib.grads.begin() + b_off, lib.grads.begin() + end);
            std::vector<double> rb(ref.dparams.begin() + b_off, ref.dparams.begin() + end);
            EXPECT_LT(bpt::rel_err(gw, rw), grad_tol) << "dW" << l;
            EXPECT_LT(bpt::rel_err(gb, rb), grad_tol) << "db" << l;
        }
        worst_fwd = std::max(worst_fwd, e_fwd);
        worst_loss = std::max(worst_loss, e_loss);
        worst_grad = std::max(worst_grad, e_grad);
        worst_dx = std::max(worst_dx, e_dx);
    }
    RecordProperty("worst_forward_rel_err", sci(worst_fwd));
    RecordProperty("worst_loss_rel_err", sci(worst_loss));
    RecordProperty("worst_grad_rel_err", sci(worst_grad));
    RecordProperty("worst_dx_rel_err", sci(worst_dx));
}

// (e): central finite differences of the library's own fp32 loss against its gradients, for
// ~30 parameters (spread over every layer's weights and biases) and every input.
TEST_P(MlpTest, FiniteDifferencesOfLibraryLoss) {
    BPT_OPEN_OR_SKIP(raw, GetParam());
    DevicePtr dev(raw);
    double worst = 0.0;
    for (const Case &c : all_cases(6)) {
        SCOPED_TRACE(case_name(c));
        ModelPtr model;
        std::vector<float> params;
        ASSERT_NO_FATAL_FAILURE(make_case_model(dev.get(), c, 8, &model, &params));
        LibOut lib;
        ASSERT_NO_FATAL_FAILURE(lib_eval(model.get(), dev.get(), c, &lib));

        bpref_mlp net = ref_net(c);
        bool kinked = false;
        for (auto a : c.acts)
            kinked = kinked || has_kink(a);
        // h = 1e-2 for smooth networks; 3e-3 with (leaky) ReLUs, so that fewer differences
        // straddle a kink (those are left out below) at the price of 3x the rounding noise.
        const float h = kinked ? 3e-3f : 1e-2f;
        std::vector<double> z0(bpref_mlp_n_preacts(&net, c.batch)), z1(z0.size());
        ASSERT_EQ(0, bpref_mlp_forward(&net, bpt::to_double(params).data(),
                                       bpt::to_double(c.x).data(), c.batch, nullptr, z0.data()));
        // Whether the double reference sees a ReLU/leaky-ReLU pre-activation change sign between
        // the base point and (p, x): a difference across a kink is no derivative, so such a
        // coordinate is left out (and counted).
        auto crosses_kink = [&](const std::vector<float> &p, const std::vector<float> &x) {
            if (!kinked) return false;
            bpref_mlp_forward(&net, bpt::to_double(p).data(), bpt::to_double(x).data(), c.batch,
                              nullptr, z1.data());
            return any_kinked_preact(c, [&](size_t k) { return (z0[k] > 0.0) != (z1[k] > 0.0); });
        };

        // ~30 parameters: every 17th (prime stride, so rows, columns and biases of every layer
        // are hit), plus the first and last of each bias.
        std::vector<size_t> idx;
        for (size_t i = 3; i < params.size(); i += 17)
            idx.push_back(i);
        for (int l = 0; l < net.n_layers; ++l) {
            size_t w_off, b_off;
            bpref_mlp_layer_offsets(&net, l, &w_off, &b_off);
            idx.push_back(b_off);
            idx.push_back(b_off + c.widths[l + 1] - 1);
        }
        std::vector<double> fd_p, an_p, fd_x, an_x;
        int skipped = 0, total = 0;
        for (size_t i : idx) {
            std::vector<float> pp = params, pm = params;
            pp[i] = params[i] + h;
            pm[i] = params[i] - h;
            ++total;
            if (crosses_kink(pp, c.x) || crosses_kink(pm, c.x)) {
                ++skipped;
                continue;
            }
            float lp = 0, lm = 0;
            BPT_OK(bp_model_set_params(model.get(), pp.data(), pp.size()));
            ASSERT_NO_FATAL_FAILURE(
                lib_forward_loss(model.get(), dev.get(), c, c.x, BP_MODE_TRAINING, nullptr, &lp));
            BPT_OK(bp_model_set_params(model.get(), pm.data(), pm.size()));
            ASSERT_NO_FATAL_FAILURE(
                lib_forward_loss(model.get(), dev.get(), c, c.x, BP_MODE_TRAINING, nullptr, &lm));
            // The step actually taken, in case p +- h rounded.
            fd_p.push_back(((double)lp - lm) / ((double)pp[i] - pm[i]));
            an_p.push_back(lib.grads[i]);
        }
        BPT_OK(bp_model_set_params(model.get(), params.data(), params.size()));
        for (size_t i = 0; i < c.x.size(); ++i) {
            std::vector<float> xp = c.x, xm = c.x;
            xp[i] = c.x[i] + h;
            xm[i] = c.x[i] - h;
            ++total;
            if (crosses_kink(params, xp) || crosses_kink(params, xm)) {
                ++skipped;
                continue;
            }
            float lp = 0, lm = 0;
            ASSERT_NO_FATAL_FAILURE(
                lib_forward_loss(model.get(), dev.get(), c, xp, BP_MODE_TRAINING, nullptr, &lp));
            ASSERT_NO_FATAL_FAILURE(
                lib_forward_loss(model.get(), dev.get(), c, xm, BP_MODE_TRAINING, nullptr, &lm));
            fd_x.push_back(((double)lp - lm) / ((double)xp[i] - xm[i]));
            an_x.push_back(lib.dx[i]);
        }
        // Most coordinates must be checked, or the test would prove nothing.
        EXPECT_LE(skipped * 4, total) << skipped << " of " << total << " cross a kink";
        // Tolerance 1e-2 (norm-wise): the truncation error is ~h^2 f'''/6 ~ 1e-5 relative;
        // the fp32 loss (rounding ~1e-7 |L|, |L| ~ 1) divided by 2h gives ~1e-5 absolute per
        // coordinate, against gradients of ~1e-3..1e-1 (smallest for dx through two sigmoid
        // layers, whose derivative is <= 1/4). Observed 3e-5..7e-4, worst 2.3e-3 (sigmoid
        // hidden layers, dx). A wrong derivative or a missing term is off by >= 1e-1.
        double ep = rel_err_d(fd_p, an_p), ex = rel_err_d(fd_x, an_x);
        EXPECT_LT(ep, 1e-2) << "parameters";
        EXPECT_LT(ex, 1e-2) << "inputs";
        worst = std::max({worst, ep, ex});
    }
    RecordProperty("worst_fd_rel_err", sci(worst));
}

// (f): backward adds into the gradient buffer; zero_grad zeroes it; dx is overwritten.
TEST_P(MlpTest, GradientAccumulationAndZeroGrad) {
    BPT_OPEN_OR_SKIP(raw, GetParam());
    DevicePtr dev(raw);
    for (const Case &c : {make_case({13, 17, 11, 5}, {BP_ACT_TANH, BP_ACT_GELU, BP_ACT_IDENTITY},
                                    kLosses[2], 6, 51),
                          make_case({13, 17, 11, 5}, {BP_ACT_RELU, BP_ACT_SIGMOID, BP_ACT_IDENTITY},
                                    kLosses[0], 6, 52)}) {
        SCOPED_TRACE(case_name(c));
        ModelPtr model;
        std::vector<float> params;
        ASSERT_NO_FATAL_FAILURE(make_case_model(dev.get(), c, 8, &model, &params));
        LibOut once;
        ASSERT_NO_FATAL_FAILURE(lib_eval(model.get(), dev.get(), c, &once));
        // A second forward/loss/backward without zero_grad: the gradient doubles. Tolerance
        // 1e-6: the same values recomputed and added once in fp32 (<= 1 ulp each).
        std::vector<float> twice, dx2;
        float loss2 = 0;
        TensorPtr x2, x3;
        ASSERT_NO_FATAL_FAILURE(lib_forward_loss(model.get(), dev.get(), c, c.x, BP_MODE_TRAINING,
                                                 nullptr, &loss2, &x2));
        ASSERT_NO_FATAL_FAILURE(lib_backward(model.get(), dev.get(), c, &twice, &dx2));
        std::vector<float> doubled(once.grads.size());
        for (size_t i = 0; i < doubled.size(); ++i)
            doubled[i] = 2.0f * once.grads[i];
        EXPECT_LT(bpt::rel_err(twice, doubled), 1e-6) << "two backwards do not add up";
        EXPECT_EQ(once.loss, loss2) << "same forward, same loss, bitwise (deterministic)";
        // dx is the gradient of this pass, not accumulated.
        EXPECT_LT(bpt::rel_err(dx2, once.dx), 1e-6) << "dx must be overwritten, not accumulated";
        // Three in a row: 3x.
        std::vector<float> thrice;
        float loss3 = 0;
        ASSERT_NO_FATAL_FAILURE(lib_forward_loss(model.get(), dev.get(), c, c.x, BP_MODE_TRAINING,
                                                 nullptr, &loss3, &x3));
        ASSERT_NO_FATAL_FAILURE(lib_backward(model.get(), dev.get(), c, &thrice, nullptr));
        for (size_t i = 0; i < doubled.size(); ++i)
            doubled[i] = 3.0f * once.grads[i];
        EXPECT_LT(bpt::rel_err(thrice, doubled), 1e-6) << "three backwards do not add up";

        // zero_grad: every gradient exactly zero.
        BPT_OK(bp_model_zero_grad(model.get()));
        std::vector<float> g(once.grads.size(), 1.0f);
        BPT_OK(bp_model_get_grads(model.get(), g.data(), g.size()));
        size_t nonzero = 0;
        for (float v : g)
            nonzero += v != 0.0f;
        EXPECT_EQ(0u, nonzero) << "gradients left after zero_grad";
        float norm = -1.0f;
        BPT_OK(bp_model_grad_norm(model.get(), &norm));
        EXPECT_EQ(0.0f, norm);
        // After zero_grad, one more pass gives the single-pass gradient again, bitwise (the
        // design promises determinism).
        LibOut again;
        ASSERT_NO_FATAL_FAILURE(lib_eval(model.get(), dev.get(), c, &again));
        EXPECT_EQ(0, std::memcmp(again.grads.data(), once.grads.data(),
                                 once.grads.size() * sizeof(float)))
            << "same inputs and params after zero_grad: gradients not bitwise the same";
        // bp_model_grad_norm against the double norm of the gradients read back: 1e-6 (one
        // fp32 rounding of a sum accumulated in double).
        double sq = 0.0;
        for (float v : once.grads)
            sq += (double)v * v;
        BPT_OK(bp_model_grad_norm(model.get(), &norm));
        EXPECT_LT(rel_err_scalar(norm, std::sqrt(sq)), 1e-6);
        // bp_model_layer_grad_norms: each layer's weight and bias, in double, exactly the sums
        // taken here; their squares add up to the global norm's.
        int layers = bp_model_n_layers(model.get());
        std::vector<double> norms(layers, -1.0);
        BPT_OK(bp_model_layer_grad_norms(model.get(), norms.data(), layers));
        double total = 0.0;
        for (int l = 0; l < layers; ++l) {
            size_t w, b, out = (size_t)bp_model_width(model.get(), l + 1);
            BPT_OK(bp_model_layer_offsets(model.get(), l, &w, &b));
            double s = 0.0;
            for (size_t i = 0; i < out * (size_t)bp_model_width(model.get(), l); ++i)
                s += (double)once.grads[w + i] * once.grads[w + i];
            for (size_t i = 0; i < out; ++i)
                s += (double)once.grads[b + i] * once.grads[b + i];
            EXPECT_EQ(std::sqrt(s), norms[l]) << "layer " << l;
            total += norms[l] * norms[l];
        }
        EXPECT_LT(rel_err_scalar(norm, std::sqrt(total)), 1e-6);
    }
}

// (g): layer offsets follow W0, b0, W1, b1, ... with W_l [out, in].
TEST_P(MlpTest, LayerOffsetsMatchLayout) {
    BPT_OPEN_OR_SKIP(raw, GetParam());
    DevicePtr dev(raw);
    Case c =
        make_case({13, 17, 11, 5}, {BP_ACT_TANH, BP_ACT_TANH, BP_ACT_IDENTITY}, kLosses[0], 4, 61);
    ModelPtr model;
    ASSERT_NO_FATAL_FAILURE(make_model(dev.get(), c, 8, &model));
    EXPECT_EQ(3, bp_model_n_layers(model.get()));
    for (int i = 0; i < 4; ++i)
        EXPECT_EQ(c.widths[i], bp_model_width(model.get(), i));
    EXPECT_EQ(8, bp_model_max_batch(model.get()));
    // By hand: W0 17x13 = 221, b0 17, W1 11x17 = 187, b1 11, W2 5x11 = 55, b2 5.
    const size_t expect_w[] = {0, 238, 436}, expect_b[] = {221, 425, 491};
    EXPECT_EQ(496u, bp_model_n_params(model.get()));
    bpref_mlp net = ref_net(c);
    EXPECT_EQ(496u, bpref_mlp_n_params(&net));
    for (int l = 0; l < 3; ++l) {
        size_t w = 12345, b = 12345, rw, rb;
        BPT_OK(bp_model_layer_offsets(model.get(), l, &w, &b));
        EXPECT_EQ(expect_w[l], w) << "layer " << l;
        EXPECT_EQ(expect_b[l], b) << "layer " << l;
        bpref_mlp_layer_offsets(&net, l, &rw, &rb);
        EXPECT_EQ(rw, w);
        EXPECT_EQ(rb, b);
    }
    size_t w = 0, b = 0;
    EXPECT_NE(BP_OK, bp_model_layer_offsets(model.get(), -1, &w, &b));
    EXPECT_NE(BP_OK, bp_model_layer_offsets(model.get(), 3, &w, &b));

    // Meaning, not only numbers: with every weight zero and an identity last layer, each output
    // row is the last bias; with W2[o, i] = 1 only at (o, i) = (2, 4) and b2 = 0, output column 2
    // is a1[:, 4] (a tanh, so in (-1, 1)) and the others are 0.
    std::vector<float> p(496, 0.0f);
    auto bias = bpt::uniform(5, 0.5f, 1.5f, 62);
    std::copy(bias.begin(), bias.end(), p.begin() + 491);
    auto b0 = bpt::uniform(17, -1.0f, 1.0f, 63); // gives layer 1 a non-zero input
    std::copy(b0.begin(), b0.end(), p.begin() + 221);
    BPT_OK(bp_model_set_params(model.get(), p.data(), p.size()));
    std::vector<float> out;
    ASSERT_NO_FATAL_FAILURE(
        lib_forward_loss(model.get(), dev.get(), c, c.x, BP_MODE_INFERENCE, &out, nullptr));
    for (int r = 0; r < c.batch; ++r)
        for (int o = 0; o < 5; ++o)
            EXPECT_EQ(bias[o], out[(size_t)r * 5 + o]) << r << "," << o;
    std::fill(p.begin() + 491, p.end(), 0.0f);
    p[436 + 2 * 11 + 4] = 1.0f;
    auto b1 = bpt::uniform(11, -1.0f, 1.0f, 64);
    std::copy(b1.begin(), b1.end(), p.begin() + 425);
    BPT_OK(bp_model_set_params(model.get(), p.data(), p.size()));
    ASSERT_NO_FATAL_FAILURE(
        lib_forward_loss(model.get(), dev.get(), c, c.x, BP_MODE_INFERENCE, &out, nullptr));
    // a0 = tanh(b0) for every row, a1[:, 4] = tanh(b1[4]) (W1 is zero).
    float expect = (float)std::tanh((double)b1[4]);
    for (int r = 0; r < c.batch; ++r)
        for (int o = 0; o < 5; ++o)
            EXPECT_NEAR(o == 2 ? expect : 0.0f, out[(size_t)r * 5 + o], 1e-6) << r << "," << o;
}

struct Stats {
    size_t n = 0;
    double mean = 0, var = 0, kurtosis = 0, max_abs = 0;
};

Stats stats_of(const float *v, size_t n) {
    Stats s;
    s.n = n;
    for (size_t i = 0; i < n; ++i)
        s.mean += v[i];
    s.mean /= (double)n;
    double m2 = 0, m4 = 0;
    for (size_t i = 0; i < n; ++i) {
        double d = v[i] - s.mean;
        m2 += d * d;
        m4 += d * d * d * d;
        s.max_abs = std::max(s.max_abs, std::fabs((double)v[i]));
    }
    s.var = m2 / (double)n;
    s.kurtosis = (m4 / (double)n) / (s.var * s.var);
    return s;
}

// Checks a sample against U(-a, a) (normal == false) or N(0, a^2) (normal == true). The
// tolerances are five standard errors of each estimate for n samples (kurtosis kappa: 1.8
// uniform, 3 normal): mean 5 sigma/sqrt(n); variance 5 sqrt((kappa - 1)/n) relative; kurtosis
// 5 sqrt(24/n) (the normal's standard error, larger than the uniform's). Kurtosis tells the
// two shapes apart (1.8 vs 3).
void check_distribution(const float *v, size_t n, double a, bool normal, const char *what) {
    SCOPED_TRACE(what);
    Stats s = stats_of(v, n);
    double var = normal ? a * a : a * a / 3.0, kappa = normal ? 3.0 : 1.8;
    EXPECT_LT(std::fabs(s.mean), 5.0 * std::sqrt(var / (double)n)) << "mean " << s.mean;
    EXPECT_LT(std::fabs(s.var / var - 1.0), 5.0 * std::sqrt((kappa - 1.0) / (double)n))
        << "variance " << s.var << ", expected " << var;
    EXPECT_LT(std::fabs(s.kurtosis - kappa), 5.0 * std::sqrt(24.0 / (double)n))
        << "kurtosis " << s.kurtosis << ", expected " << kappa;
    if (normal) {
        // The largest of n >= 32768 |N(0,1)| exceeds 3.5 with probability 1 - 3e-7, and none
        // exceeds 7 with probability 1 - 1e-7.
        EXPECT_GT(s.max_abs, 3.5 * a);
        EXPECT_LT(s.max_abs, 7.0 * a);
    } else {
        // Within the bound (up to its float rounding); the largest of n >= 32768 draws comes
        // within 1% of it with probability 1 - 0.99^32768.
        EXPECT_LE(s.max_abs, a * (1.0 + 1e-6)) << "a weight beyond the bound " << a;
        EXPECT_GE(s.max_abs, 0.99 * a);
    }
}

// (h): each init scheme's weights follow its definition; biases as documented; seeds.
TEST_P(MlpTest, InitSchemes) {
    BPT_OPEN_OR_SKIP(raw, GetParam());
    DevicePtr dev(raw);
    DevicePtr cpu;
    if (GetParam() != "cpu") cpu.reset(bp_device_open("cpu", nullptr));
    const int widths[] = {512, 256, 128};
    const char *names[] = {"torch_default", "he_uniform", "he_normal", "xavier_uniform",
                           "xavier_normal"};
    for (int init = 0; init < BP_INIT_COUNT_; ++init) {
        SCOPED_TRACE(names[init]);
        auto create = [&](bp_device *d, uint64_t seed, ModelPtr *m) {
            bp_mlp_config cfg = bp_mlp_config_default(2, widths);
            cfg.init = (bp_init)init;
            cfg.seed = seed;
            cfg.max_batch = 4;
            bp_status st = BP_OK;
            m->reset(bp_model_create(d, &cfg, &st));
            ASSERT_NE(nullptr, m->get()) << bp_last_error();
        };
        ModelPtr model, same, other;
        ASSERT_NO_FATAL_FAILURE(create(dev.get(), 42, &model));
        size_t n = bp_model_n_params(model.get());
        ASSERT_EQ((size_t)512 * 256 + 256 + 256 * 128 + 128, n);
        std::vector<float> p(n);
        BPT_OK(bp_model_get_params(model.get(), p.data(), n));
        std::vector<size_t> w_off(2), b_off(2);
        for (int l = 0; l < 2; ++l) {
            BPT_OK(bp_model_layer_offsets(model.get(), l, &w_off[l], &b_off[l]));
            double in = widths[l], out = widths[l + 1];
            size_t nw = (size_t)widths[l] * widths[l + 1];
            const float *w = p.data() + w_off[l], *b = p.data() + b_off[l];
            std::string what = "layer " + std::to_string(l) + " weights";
            switch ((bp_init)init) {
            case BP_INIT_TORCH_DEFAULT:
                check_distribution(w, nw, 1.0 / std::sqrt(in), false, what.c_str());
                break;
            case BP_INIT_HE_UNIFORM:
                check_distribution(w, nw, std::sqrt(6.0 / in), false, what.c_str());
                break;
            case BP_INIT_HE_NORMAL:
                check_distribution(w, nw, std::sqrt(2.0 / in), true, what.c_str());
                break;
            case BP_INIT_XAVIER_UNIFORM:
                check_distribution(w, nw, std::sqrt(6.0 / (in + out)), false, what.c_str());
                break;
            case BP_INIT_XAVIER_NORMAL:
                check_distribution(w, nw, std::sqrt(2.0 / (in + out)), true, what.c_str());
                break;
            default:
                break;
            }
            if (init == BP_INIT_TORCH_DEFAULT) {
                // b ~ U(-1/sqrt(in), 1/sqrt(in)): only `out` (128..256) draws, so bounds, a
                // spread (the largest |b| is below 0.8 a with probability 0.8^128 ~ 4e-13) and the
                // variance within 40% (5 standard errors of sqrt(0.8/128)).
                double a = 1.0 / std::sqrt(in);
                Stats s = stats_of(b, widths[l + 1]);
                EXPECT_LE(s.max_abs, a * (1.0 + 1e-6)) << "layer " << l << " bias";
                EXPECT_GE(s.max_abs, 0.8 * a) << "layer " << l << " bias";
                EXPECT_LT(std::fabs(s.var / (a * a / 3.0) - 1.0), 0.4) << "layer " << l;
                // Drawn apart from the weights: not a copy of the first (or last) row of W.
                size_t same_first = 0, same_last = 0;
                for (int o = 0; o < widths[l + 1]; ++o) {
                    same_first += b[o] == w[o];
                    same_last += b[o] == w[nw - widths[l + 1] + o];
                }
                EXPECT_LT(same_first + same_last, 2u) << "layer " << l << " bias repeats W";
            } else {
                for (int o = 0; o < widths[l + 1]; ++o)
                    ASSERT_EQ(0.0f, b[o]) << "layer " << l << " bias " << o << " must be 0";
            }
        }
        // The two layers draw independent numbers (not one stream rescaled): the correlation
        // of the first 32768 weights of each, divided by their scales, is ~N(0, 1/32768);
        // |r| < 0.05 is 9 standard errors.
        {
            size_t m = (size_t)256 * 128;
            const float *w0 = p.data() + w_off[0], *w1 = p.data() + w_off[1];
            double s01 = 0, s00 = 0, s11 = 0;
            for (size_t i = 0; i < m; ++i) {
                s01 += (double)w0[i] * w1[i];
                s00 += (double)w0[i] * w0[i];
                s11 += (double)w1[i] * w1[i];
            }
            EXPECT_LT(std::fabs(s01 / std::sqrt(s00 * s11)), 0.05) << "layers share a stream";
        }
        // Same seed: bitwise the same parameters; another seed: different ones.
        ASSERT_NO_FATAL_FAILURE(create(dev.get(), 42, &same));
        std::vector<float> q(n);
        BPT_OK(bp_model_get_params(same.get(), q.data(), n));
        EXPECT_EQ(0, std::memcmp(p.data(), q.data(), n * sizeof(float))) << "same seed";
        ASSERT_NO_FATAL_FAILURE(create(dev.get(), 43, &other));
        BPT_OK(bp_model_get_params(other.get(), q.data(), n));
        size_t equal = 0;
        for (size_t i = 0; i < n; ++i)
            equal += p[i] == q[i] && p[i] != 0.0f;
        EXPECT_LT(equal, n / 100) << "seed 43 gives (nearly) the seed-42 weights";
        // The same on every device: this backend's initial weights equal the CPU's bitwise.
        if (cpu) {
            ModelPtr on_cpu;
            ASSERT_NO_FATAL_FAILURE(create(cpu.get(), 42, &on_cpu));
            BPT_OK(bp_model_get_params(on_cpu.get(), q.data(), n));
            EXPECT_EQ(0, std::memcmp(p.data(), q.data(), n * sizeof(float)))
                << GetParam() << " and cpu initial weights differ";
        }
    }
}

// (i): batches below max_batch, odd sizes 1 and 7, the full max_batch, and one past it.
TEST_P(MlpTest, BatchSizesUpToMaxBatch) {
    BPT_OPEN_OR_SKIP(raw, GetParam());
    DevicePtr dev(raw);
    const int max_batch = 16;
    Case base = make_case({13, 17, 11, 5}, {BP_ACT_SILU, BP_ACT_LEAKY_RELU, BP_ACT_IDENTITY},
                          kLosses[2], 1, 71);
    ModelPtr model;
    std::vector<float> params;
    ASSERT_NO_FATAL_FAILURE(make_case_model(dev.get(), base, max_batch, &model, &params));
    uint32_t seed = 80;
    // 7 after 16: a smaller batch after a larger one must not read stale rows.
    for (int batch : {1, 7, 16, 7, 1, 3}) {
        Case c = make_case(base.widths, base.acts, base.loss, batch, seed += 3);
        c.params = params;
        SCOPED_TRACE(case_name(c));
        RefOut ref = ref_eval(c, bpt::to_double(params), bpt::to_double(c.x));
        LibOut lib;
        ASSERT_NO_FATAL_FAILURE(lib_eval(model.get(), dev.get(), c, &lib));
        // Same tolerances and reasons as ForwardLossBackwardMatchReference.
        EXPECT_LT(bpt::rel_err(lib.out, ref.out), 1e-5);
        EXPECT_LT(rel_err_scalar(lib.loss, ref.loss), 1e-5);
        EXPECT_LT(bpt::rel_err(lib.grads, ref.dparams), 2e-5);
        EXPECT_LT(bpt::rel_err(lib.dx, ref.dx), 2e-5);
    }
    // One row past max_batch is refused.
    Case big = make_case(base.widths, base.acts, base.loss, max_batch + 1, 99);
    TensorPtr tx, tout;
    ASSERT_NO_FATAL_FAILURE(upload_f32(dev.get(), big.batch, big.n_in(), big.x, &tx));
    ASSERT_NO_FATAL_FAILURE(bpt::new_tensor(dev.get(), BP_F32, big.batch, big.n_out(), &tout));
    EXPECT_NE(BP_OK, bp_model_forward(model.get(), tx.get(), BP_MODE_TRAINING, tout.get()))
        << "a batch of max_batch + 1 rows was accepted";
}

// Output layers past 512 units, with every loss: on CUDA the loss kernels then give each row a
// whole block and block-wide reductions (kernels/rows.cu), a layout no other model here takes.
// An odd batch, under max_batch.
TEST_P(MlpTest, OutputsPast512) {
    BPT_OPEN_OR_SKIP(raw, GetParam());
    DevicePtr dev(raw);
    uint32_t seed = 3000;
    for (int out : {600, 1100}) {
        for (const auto &loss : kLosses) {
            Case c = make_case({13, 9, out}, {BP_ACT_TANH, BP_ACT_IDENTITY}, loss, 5, seed += 10);
            SCOPED_TRACE(case_name(c) + ", " + std::to_string(out) + " outputs");
            ModelPtr model;
            std::vector<float> params;
            ASSERT_NO_FATAL_FAILURE(make_case_model(dev.get(), c, 8, &model, &params));
            RefOut ref = ref_eval(c, bpt::to_double(params), bpt::to_double(c.x));
            LibOut lib;
            ASSERT_NO_FATAL_FAILURE(lib_eval(model.get(), dev.get(), c, &lib));
            // As ForwardLossBackwardMatchReference: dot products of length <= 13, a loss summed
            // over up to 1100 classes in double (the row sums) then over 5 rows: 1e-5; the
            // gradients 2e-5.
            EXPECT_LT(bpt::rel_err(lib.out, ref.out), 1e-5) << "forward";
            EXPECT_LT(rel_err_scalar(lib.loss, ref.loss), 1e-5) << "loss";
            EXPECT_LT(bpt::rel_err(lib.grads, ref.dparams), 2e-5) << "parameter gradients";
            EXPECT_LT(bpt::rel_err(lib.dx, ref.dx), 2e-5) << "dx";
        }
    }
}

INSTANTIATE_TEST_SUITE_P(Backends, MlpTest, ::testing::ValuesIn(bpt::all_backends()),
                         [](const ::testing::TestParamInfo<std::string> &i) { return i.param; });

// (d): the reference's backward against central differences of the reference's own loss, in
// double, for every parameter and input: this is what makes the reference worth comparing
// against. Independent of any backend.
TEST(MlpReference, BackwardMatchesFiniteDifferences) {
    const double h = 1e-5;
    double worst = 0.0;
    for (const Case &c0 : all_cases(5)) {
        SCOPED_TRACE(case_name(c0));
        // Pick the first seed whose ReLU/leaky-ReLU pre-activations all stay >= 1e-3 from the
        // kink: a step of h = 1e-5 moves them by < 1e-4, so no difference crosses a kink.
        Case c = c0;
        bpref_mlp net = ref_net(c);
        bool ok = false;
        for (uint32_t s = 0; s < 50 && !ok; ++s) {
            if (s > 0) {
                c = make_case(c0.widths, c0.acts, c0.loss, c0.batch, 5000 + 7 * s);
                net = ref_net(c);
            }
            std::vector<double> z(bpref_mlp_n_preacts(&net, c.batch));
            ASSERT_EQ(0, bpref_mlp_forward(&net, bpt::to_double(c.params).data(),
                                           bpt::to_double(c.x).data(), c.batch, nullptr, z.data()));
            ok = !any_kinked_preact(c, [&](size_t k) { return !(std::fabs(z[k]) >= 1e-3); });
        }
        ASSERT_TRUE(ok) << "no seed keeps the pre-activations away from the kinks";
        std::vector<double> p = bpt::to_double(c.params), x = bpt::to_double(c.x);
        RefOut ref = ref_eval(c, p, x);
        ASSERT_TRUE(std::isfinite(ref.loss));
        EXPECT_DOUBLE_EQ(ref.loss, ref_loss_only(c, p, x));
        std::vector<double> fd_p = central_differences(
            p, h, [&](const std::vector<double> &q) { return ref_loss_only(c, q, x); });
        std::vector<double> fd_x = central_differences(
            x, h, [&](const std::vector<double> &y) { return ref_loss_only(c, p, y); });
        // Tolerance 1e-7: truncation h^2 f'''/6 ~ 1e-11 and rounding 1e-16 |L| / h ~ 1e-11 per
        // coordinate, against gradient norms ~1e-1: ~1e-9 observed. Any wrong derivative term
        // is off by far more.
        double ep = rel_err_d(ref.dparams, fd_p), ex = rel_err_d(ref.dx, fd_x);
        EXPECT_LT(ep, 1e-7) << "d loss / d params";
        EXPECT_LT(ex, 1e-7) << "d loss / d x";
        worst = std::max({worst, ep, ex});
    }
    RecordProperty("worst_reference_fd_rel_err", sci(worst));
}

// The reference's activations and losses at a few points worked out by hand, so the reference
// does not merely agree with itself.
TEST(MlpReference, HandComputedValues) {
    const double s = 0.1;
    EXPECT_DOUBLE_EQ(-0.2, bpref_act(-2.0, BP_ACT_LEAKY_RELU, s));
    EXPECT_DOUBLE_EQ(0.0, bpref_act(-2.0, BP_ACT_RELU, s));
    EXPECT_DOUBLE_EQ(0.5, bpref_act(0.0, BP_ACT_SIGMOID, s));
    // Phi(1) = 0.8413447460685429; 0.5 (1 + tanh(sqrt(2/pi) 1.044715)) = 0.8411919906082768.
    EXPECT_NEAR(0.8413447460685429, bpref_act(1.0, BP_ACT_GELU, s), 1e-15);
    EXPECT_NEAR(0.8411919906082768, bpref_act(1.0, BP_ACT_GELU_TANH, s), 1e-15);
    EXPECT_NEAR(0.7310585786300049, bpref_act(1.0, BP_ACT_SILU, s), 1e-15);
    EXPECT_DOUBLE_EQ(0.0, bpref_act_derivative(0.0, BP_ACT_RELU, s));
    EXPECT_DOUBLE_EQ(s, bpref_act_derivative(0.0, BP_ACT_LEAKY_RELU, s));
    EXPECT_DOUBLE_EQ(0.5, bpref_act_derivative(0.0, BP_ACT_GELU, s));
    // Cross-entropy of logits (0, 0) with label 1: log 2; with smoothing 0.2 still log 2 (both
    // classes equally likely); logits (0, log 3), label 1, s = 0.2: q = (0.1, 0.9),
    // p = (1/4, 3/4): -(0.1 log 0.25 + 0.9 log 0.75).
    int32_t label = 1;
    double z[2] = {0.0, 0.0}, g[2];
    bpref_mlp_loss ce{BP_LOSS_CROSS_ENTROPY, 0.0, nullptr, &label};
    EXPECT_NEAR(std::log(2.0), bpref_mlp_loss_value(&ce, 1, 2, z, g), 1e-15);
    EXPECT_NEAR(0.5, g[0], 1e-15);
    EXPECT_NEAR(-0.5, g[1], 1e-15);
    ce.label_smoothing = 0.2;
    z[1] = std::log(3.0);
    EXPECT_NEAR(-(0.1 * std::log(0.25) + 0.9 * std::log(0.75)),
                bpref_mlp_loss_value(&ce, 1, 2, z, g), 1e-15);
    EXPECT_NEAR(0.25 - 0.1, g[0], 1e-15);
    // MSE of (1, 3) against (0, 0): mean of (1, 9) = 5; gradient 2 d / n = (1, 3).
    double t[2] = {0.0, 0.0}, o[2] = {1.0, 3.0};
    bpref_mlp_loss mse{BP_LOSS_MSE, 0.0, t, nullptr};
    EXPECT_DOUBLE_EQ(5.0, bpref_mlp_loss_value(&mse, 1, 2, o, g));
    EXPECT_DOUBLE_EQ(1.0, g[0]);
    EXPECT_DOUBLE_EQ(3.0, g[1]);
    // BCE with logits: z = 0, t = 1: log 2; z = 100, t = 0: 100 (no overflow); rows*cols mean.
    double tb[2] = {1.0, 0.0}, zb[2] = {0.0, 100.0};
    bpref_mlp_loss bce{BP_LOSS_BCE_LOGITS, 0.0, tb, nullptr};
    EXPECT_NEAR((std::log(2.0) + 100.0) / 2.0, bpref_mlp_loss_value(&bce, 2, 1, zb, g), 1e-12);
    EXPECT_NEAR(-0.25, g[0], 1e-15);
    EXPECT_NEAR(0.5, g[1], 1e-15);
}

} // namespace
