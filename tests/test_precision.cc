// The precision modes (fp32, tf32, bf16) of a whole model, on every backend: the rounding
// helpers against an independent reference, forward and backward against the float64 reference
// (how far each mode is from exact) and against the rounding-aware reference of ref_lowp.h
// (whether the library rounds where docs/precision.md says), bf16 gradients against fp32's,
// training steps that allocate nothing, activation memory, the non-finite refusal, exact resume
// and checkpoints of each mode, and convergence.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/bp_math.h"
#include "ref_lowp.h"
#include "ref_mlp.h"
#include "support.h"
#include "support_model.h"

namespace {

using bpt::DevicePtr;
using bpt::ModelPtr;
using bpt::OptimPtr;
using bpt::TensorPtr;

const bp_precision kModes[] = {BP_PRECISION_FP32, BP_PRECISION_TF32, BP_PRECISION_BF16};

std::string sci(double v) {
    std::ostringstream o;
    o << std::scientific << v;
    return o.str();
}

uint32_t bits_of(float x) {
    uint32_t u;
    std::memcpy(&u, &x, sizeof u);
    return u;
}

float from_bits(uint32_t u) {
    float x;
    std::memcpy(&x, &u, sizeof x);
    return x;
}

// ---- the rounding helpers of kernels/bp_math.h -------------------------------------------

// Floats that probe every case: random bit patterns (all exponents, subnormals included),
// exact ties and their neighbours for both roundings, the largest values, infinities, zeros.
std::vector<float> probe_floats() {
    std::vector<float> v = {0.0f,
                            -0.0f,
                            1.0f,
                            -1.0f,
                            std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::max(),
                            -std::numeric_limits<float>::max(),
                            std::numeric_limits<float>::min(),
                            std::numeric_limits<float>::denorm_min(),
                            from_bits(0x7f7f8000u), // halfway between the largest bf16 and 2^128
                            from_bits(0x7f7f7fffu)};
    std::mt19937 gen(1234);
    for (int i = 0; i < 200000; ++i) {
        uint32_t u = gen();
        if ((u & 0x7f800000u) == 0x7f800000u) continue; // NaN and inf are probed below
        v.push_back(from_bits(u));
        // A tie of each rounding (the dropped bits exactly one half), with either parity of
        // the kept part, and one ulp to each side of it.
        for (uint32_t half : {0x8000u, 0x1000u}) {
            uint32_t t = (u & ~(2 * half - 1)) | half;
            if ((t & 0x7f800000u) == 0x7f800000u) continue;
            v.push_back(from_bits(t));
            v.push_back(from_bits(t + 1));
            v.push_back(from_bits(t - 1));
        }
    }
    return v;
}

TEST(Rounding, Bf16IsRoundToNearestEvenAndExactBack) {
    size_t wrong = 0, first = 0;
    std::vector<float> v = probe_floats();
    for (size_t i = 0; i < v.size(); ++i) {
        double want = bpref_round_bf16((double)v[i]);
        uint16_t h = bp_f32_to_bf16(v[i]);
        double got = (double)bp_bf16_to_f32(h);
        // Exact: the reference rounds the same value to the same grid; a sign of zero counts.
        bool same = got == want && std::signbit(got) == std::signbit(want);
        if (!same && !wrong++) first = i;
        // bf16 -> fp32 is exact and the bits are the top half of the fp32 pattern.
        if (same && (bits_of((float)got) & 0xffffu) != 0) ++wrong;
    }
    EXPECT_EQ(0u, wrong) << "first at " << v[first] << " (bits " << std::hex << bits_of(v[first])
                         << std::dec << "): got " << bp_round_bf16(v[first]) << ", want "
                         << bpref_round_bf16((double)v[first]);
    // Every one of the 65536 bf16 patterns comes back to itself (NaNs stay NaN).
    size_t roundtrip_wrong = 0;
    for (uint32_t h = 0; h < 65536; ++h) {
        float f = bp_bf16_to_f32((uint16_t)h);
        uint16_t back = bp_f32_to_bf16(f);
        if (std::isnan(f) ? !std::isnan(bp_bf16_to_f32(back)) : back != h) ++roundtrip_wrong;
    }
    EXPECT_EQ(0u, roundtrip_wrong);
}

TEST(Rounding, Tf32IsRoundToNearestEven) {
    size_t wrong = 0, first = 0;
    std::vector<float> v = probe_floats();
    for (size_t i = 0; i < v.size(); ++i) {
        double want = bpref_round_tf32((double)v[i]);
        float got = bp_round_tf32(v[i]);
        bool same = (double)got == want && std::signbit(got) == std::signbit(want);
        if (same && (bits_of(got) & 0x1fffu) != 0) same = false; // 10 mantissa bits left
        if (!same && !wrong++) first = i;
    }
    EXPECT_EQ(0u, wrong) << "first at bits " << std::hex << bits_of(v[first]);
}

TEST(Rounding, NanStaysNanAndInfinitiesStay) {
    const float inf = std::numeric_limits<float>::infinity();
    // Quiet and signalling NaNs of both signs, with payloads in the kept and the dropped bits:
    // a NaN whose payload lies only in the dropped bits must not become an infinity.
    for (uint32_t u : {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800001u, 0x7fa00000u,
                       0x7f801000u}) {
        float nan = from_bits(u);
        ASSERT_TRUE(std::isnan(nan));
        EXPECT_TRUE(std::isnan(bp_round_bf16(nan))) << std::hex << u;
        EXPECT_TRUE(std::isnan(bp_round_tf32(nan))) << std::hex << u;
        EXPECT_EQ(std::signbit(nan), std::signbit(bp_round_bf16(nan))) << std::hex << u;
    }
    EXPECT_EQ(inf, bp_round_bf16(inf));
    EXPECT_EQ(-inf, bp_round_bf16(-inf));
    EXPECT_EQ(inf, bp_round_tf32(inf));
    // Past the largest bf16 (by half its ulp or more), a finite float becomes infinity.
    EXPECT_EQ(inf, bp_round_bf16(std::numeric_limits<float>::max()));
    EXPECT_EQ(from_bits(0x7f7f0000u), bp_round_bf16(from_bits(0x7f7f7fffu)));
    // Hand-checked ties: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: to the even 1;
    // 1 + 3 * 2^-8 halfway between 1 + 2^-7 and 1 + 2^-6: to the even 1 + 2^-6.
    EXPECT_EQ(1.0f, bp_round_bf16(1.0f + 0.00390625f));
    EXPECT_EQ(1.015625f, bp_round_bf16(1.0f + 3 * 0.00390625f));
    EXPECT_EQ(1.0f, bp_round_tf32(1.0f + 0.00048828125f)); // 1 + 2^-11
}

// ---- a whole network in each mode ----------------------------------------------------------

struct ModeParam {
    std::string backend;
    bp_precision precision;
};

std::vector<ModeParam> all_mode_params() {
    std::vector<ModeParam> v;
    for (const std::string &b : bpt::all_backends())
        for (bp_precision p : kModes)
            v.push_back({b, p});
    return v;
}

std::string mode_param_name(const ::testing::TestParamInfo<ModeParam> &info) {
    return info.param.backend + "_" + bp_precision_name(info.param.precision);
}

class PrecisionTest : public ::testing::TestWithParam<ModeParam> {
  protected:
    bp_precision mode() const {
        return GetParam().precision;
    }
};

// One network, its parameters and a batch.
struct Net {
    std::vector<int> widths;
    std::vector<bp_activation> acts;
    std::vector<float> dropout;
    float slope = 0.1f;
    int max_batch = 16;
};

ModelPtr make_model(bp_device *dev, const Net &n, bp_precision p, uint64_t seed = 5) {
    bp_mlp_config c = bp_mlp_config_default((int)n.widths.size() - 1, n.widths.data());
    c.activations = n.acts.data();
    c.dropout = n.dropout.empty() ? nullptr : n.dropout.data();
    c.leaky_slope = n.slope;
    c.max_batch = n.max_batch;
    c.seed = seed;
    c.precision = p;
    bp_status st = BP_OK;
    ModelPtr m(bp_model_create(dev, &c, &st));
    EXPECT_NE(nullptr, m.get()) << bp_last_error();
    return m;
}

struct Eval {
    float loss = 0.0f;
    std::vector<float> out, grads, dx;
};

// zero_grad, a training forward, the loss and backward, with everything read back.
void evaluate(bp_model *m, bp_device *dev, const std::vector<float> &x, int rows,
              bp_loss_config loss, const std::vector<float> &target,
              const std::vector<int32_t> &labels, Eval *e) {
    int in = bp_model_width(m, 0), out = bp_model_width(m, bp_model_n_layers(m));
    TensorPtr tx, ty, tout, tdx;
    ASSERT_NO_FATAL_FAILURE(bpt::upload_f32(dev, rows, in, x, &tx));
    ASSERT_NO_FATAL_FAILURE(bpt::upload_target(dev, loss.kind, rows, out, target, labels, &ty));
    ASSERT_NO_FATAL_FAILURE(bpt::new_tensor(dev, BP_F32, rows, out, &tout));
    ASSERT_NO_FATAL_FAILURE(bpt::new_tensor(dev, BP_F32, rows, in, &tdx));
    BPT_OK(bp_model_zero_grad(m));
    BPT_OK(bp_model_forward(m, tx.get(), BP_MODE_TRAINING, tout.get()));
    BPT_OK(bp_model_loss(m, &loss, ty.get(), &e->loss));
    BPT_OK(bp_model_backward(m, tdx.get()));
    e->out.resize((size_t)rows * out);
    e->grads.resize(bp_model_n_params(m));
    e->dx.resize((size_t)rows * in);
    BPT_OK(bp_tensor_download(tout.get(), e->out.data(), e->out.size()));
    BPT_OK(bp_model_get_grads(m, e->grads.data(), e->grads.size()));
    BPT_OK(bp_tensor_download(tdx.get(), e->dx.data(), e->dx.size()));
}

struct RefEval {
    double loss = 0.0;
    std::vector<double> out, grads, dx;
};

RefEval reference(const Net &n, int precision, bool rounded, const std::vector<float> &params,
                  const std::vector<float> &x, int rows, bp_loss_config loss,
                  const std::vector<float> &target, const std::vector<int32_t> &labels) {
    bpref_mlp net{(int)n.widths.size() - 1, n.widths.data(), n.acts.data(), (double)n.slope};
    std::vector<double> t(target.begin(), target.end()), p = bpt::to_double(params),
        xd = bpt::to_double(x);
    bpref_mlp_loss l{loss.kind, (double)loss.label_smoothing, t.data(), labels.data()};
    RefEval r;
    r.out.resize((size_t)rows * n.widths.back());
    r.grads.resize(params.size());
    r.dx.resize(x.size());
    r.loss = rounded ? bpref_mlp_backward_rounded(&net, precision, p.data(), xd.data(), rows, &l,
                                                  r.out.data(), r.grads.data(), r.dx.data())
                     : bpref_mlp_backward(&net, p.data(), xd.data(), rows, &l, r.out.data(),
                                          r.grads.data(), r.dx.data());
    return r;
}

double rel_scalar(double a, double b) {
    return std::isfinite(a) && std::isfinite(b) ? std::fabs(a - b) / std::fabs(b)
                                                : std::numeric_limits<double>::infinity();
}

// Tolerances against the plain float64 reference: how far a mode is from exact arithmetic.
//   fp32: 1e-5 forward, 2e-5 gradients (test_mlp.cc says why).
//   tf32: each product's operands carry a relative rounding error of at most 2^-11 (4.9e-4),
//     2.8e-4 RMS; dot products average them, three layers forward and back add a few:
//     observed up to 7.8e-4 (dx of the wide tanh network, cpu), limit 2e-3.
//   bf16: the same with 2^-9 (2e-3, RMS 1.1e-3) at x, W, every stored activation and every
//     dz: observed up to 6.3e-3, limit 2e-2 (sigmoid and tanh layers amplify the relative
//     error of small gradients).
struct Tol {
    double fwd, grad;
};

Tol plain_tol(bp_precision p) {
    switch (p) {
    case BP_PRECISION_TF32:
        return {2e-3, 2e-3};
    case BP_PRECISION_BF16:
        return {2e-2, 2e-2};
    default:
        return {1e-5, 2e-5};
    }
}

// Against the rounding-aware reference, which rounds where the documentation says: what is
// left is the fp32 arithmetic between the roundings (products of bf16 or TF32 operands are
// exact in fp32; their sums carry ~1e-7) and the rare element whose fp32 value lies that close
// to a rounding boundary and so rounds to the other neighbour, one ulp (2^-7 bf16, 2^-10 tf32)
// away: observed 1e-7 (no such element) to 7.2e-4 (one, in the 6 x 17 network) for bf16, up to
// 9.5e-5 for tf32. A rounding left out, added or moved shows as 1e-3..6e-3 (bf16: act applied
// to the rounded z) or 1.6e-4..7.8e-4 (tf32: weights not rounded); the limits sit between.
Tol rounded_tol(bp_precision p) {
    switch (p) {
    case BP_PRECISION_TF32:
        return {2e-4, 2e-4};
    case BP_PRECISION_BF16:
        return {1.5e-3, 1.5e-3};
    default:
        return {1e-5, 2e-5};
    }
}

// Fresh random parameters that keep activations of order 1 through the layers (weights
// U(-a, a) with variance 1/in, biases U(-0.2, 0.2)), so that what is measured is the rounding
// of each mode and not the cancellation of an ill-conditioned network.
std::vector<float> scaled_params(bp_model *m, uint32_t seed) {
    std::vector<float> p(bp_model_n_params(m));
    for (int l = 0; l < bp_model_n_layers(m); ++l) {
        size_t w, b;
        EXPECT_EQ(BP_OK, bp_model_layer_offsets(m, l, &w, &b));
        int in = bp_model_width(m, l), out = bp_model_width(m, l + 1);
        float a = std::sqrt(3.0f / (float)in);
        auto wv = bpt::uniform((size_t)in * out, -a, a, seed + 2 * l);
        auto bv = bpt::uniform((size_t)out, -0.2f, 0.2f, seed + 2 * l + 1);
        std::copy(wv.begin(), wv.end(), p.begin() + w);
        std::copy(bv.begin(), bv.end(), p.begin() + b);
    }
    return p;
}

const bp_activation kAllActs[] = {BP_ACT_IDENTITY, BP_ACT_RELU, BP_ACT_LEAKY_RELU,
                                  BP_ACT_SIGMOID,  BP_ACT_TANH, BP_ACT_GELU,
                                  BP_ACT_GELU_TANH, BP_ACT_SILU};

const char *act_name(bp_activation a) {
    static const char *names[] = {"identity", "relu", "leaky_relu", "sigmoid",
                                  "tanh",     "gelu", "gelu_tanh",  "silu"};
    return names[a];
}

// Every hidden activation under each loss; 3 layers of widths 13-17-11-5 and a batch of 6,
// then a wider one (64-96-80-10, batch 40) whose products are long enough (k = 96) for a
// missing rounding to show well above the noise.
TEST_P(PrecisionTest, ForwardAndBackwardMatchBothReferences) {
    BPT_OPEN_OR_SKIP(raw, GetParam().backend);
    DevicePtr dev(raw);
    const bp_loss_config losses[] = {{BP_LOSS_MSE, 0.0f},
                                     {BP_LOSS_CROSS_ENTROPY, 0.1f},
                                     {BP_LOSS_BCE_LOGITS, 0.0f}};
    double worst_plain = 0.0, worst_rounded = 0.0;
    uint32_t seed = 100;
    for (int wide = 0; wide < 2; ++wide) {
        for (bp_activation act : kAllActs) {
            for (const bp_loss_config &loss : losses) {
                Net n;
                n.widths = wide ? std::vector<int>{64, 96, 80, 10} : std::vector<int>{13, 17, 11, 5};
                n.acts = {act, act, BP_ACT_IDENTITY};
                int rows = wide ? 40 : 6;
                n.max_batch = rows;
                SCOPED_TRACE(::testing::Message() << act_name(act) << " loss " << loss.kind
                                                  << " widths " << n.widths[1]);
                ModelPtr m = make_model(dev.get(), n, mode());
                ASSERT_TRUE(m);
                auto params = scaled_params(m.get(), seed += 7);
                BPT_OK(bp_model_set_params(m.get(), params.data(), params.size()));
                auto x = bpt::uniform((size_t)rows * n.widths[0], -1.0f, 1.0f, seed + 1);
                auto target = bpt::uniform((size_t)rows * n.widths.back(), 0.0f, 1.0f, seed + 2);
                std::vector<int32_t> labels(rows);
                for (int i = 0; i < rows; ++i)
                    labels[i] = (i * 3 + 1) % n.widths.back();
                Eval e;
                ASSERT_NO_FATAL_FAILURE(
                    evaluate(m.get(), dev.get(), x, rows, loss, target, labels, &e));
                for (int rounded = 0; rounded < 2; ++rounded) {
                    // Against the plain reference, a ReLU network's gradients jump wherever
                    // the mode's rounding moves a pre-activation across the kink at 0 (each
                    // such element moves a gradient by a whole da: 1e-2..7e-2 on the wide
                    // network): that measures the kink, not the mode, so only the rounding-
                    // aware reference, which rounds the same way, judges those.
                    if (!rounded && mode() != BP_PRECISION_FP32 &&
                        (act == BP_ACT_RELU || act == BP_ACT_LEAKY_RELU))
                        continue;
                    SCOPED_TRACE(rounded ? "rounding-aware reference" : "plain reference");
                    RefEval r = reference(n, mode(), rounded, params, x, rows, loss, target,
                                          labels);
                    Tol tol = rounded ? rounded_tol(mode()) : plain_tol(mode());
                    double eo = bpt::rel_err(e.out, r.out), el = rel_scalar(e.loss, r.loss);
                    double eg = bpt::rel_err(e.grads, r.grads), ex = bpt::rel_err(e.dx, r.dx);
                    EXPECT_LE(eo, tol.fwd) << "output";
                    EXPECT_LE(el, tol.fwd) << "loss";
                    EXPECT_LE(eg, tol.grad) << "parameter gradients";
                    EXPECT_LE(ex, tol.grad) << "dx";
                    double worst = std::max({eo, el, eg, ex});
                    (rounded ? worst_rounded : worst_plain) =
                        std::max(rounded ? worst_rounded : worst_plain, worst);
                }
            }
        }
    }
    RecordProperty("worst_rel_err_plain_reference", sci(worst_plain));
    RecordProperty("worst_rel_err_rounding_reference", sci(worst_rounded));
    std::cout << "[ errors   ] " << bp_precision_name(mode()) << ": worst vs float64 "
              << sci(worst_plain) << ", vs the rounding-aware reference " << sci(worst_rounded)
              << "\n";
}

INSTANTIATE_TEST_SUITE_P(Modes, PrecisionTest, ::testing::ValuesIn(all_mode_params()),
                         mode_param_name);

} // namespace
