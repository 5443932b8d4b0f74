// LayerNorm, RMSNorm and residual layers (docs/deep-mlp.md).
//
// The float64 reference (tests/ref_block.c) is held to central differences of its own loss;
// the library's forward, loss, parameter gradients and input gradient are held to that
// reference, for each of LayerNorm, RMSNorm and the residual alone and inside a network. Bad
// configurations are refused with a message naming the place.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "ref_block.h"
#include "support.h"
#include "support_model.h"

namespace {

using bpt::DevicePtr;
using bpt::ModelPtr;
using bpt::TensorPtr;

struct Net {
    const char *name;
    std::vector<int> widths;
    std::vector<bp_activation> acts;
    std::vector<bp_norm> norms;
    std::vector<int> residual;

    bpref_block_net ref() const {
        return {(int)acts.size(), widths.data(), acts.data(), norms.data(), residual.data(), 1e-5};
    }
};

std::vector<Net> nets() {
    const bp_activation I = BP_ACT_IDENTITY, R = BP_ACT_RELU, T = BP_ACT_TANH, G = BP_ACT_GELU;
    const bp_norm N0 = BP_NORM_NONE, LN = BP_NORM_LAYER, RMS = BP_NORM_RMS;
    return {
        {"layernorm_alone", {7, 5}, {I}, {LN}, {0}},
        {"rmsnorm_alone", {7, 5}, {I}, {RMS}, {0}},
        {"residual_alone", {6, 6}, {T}, {N0}, {1}},
        {"layernorm_residual_net", {5, 8, 8, 8, 3}, {R, G, T, I}, {N0, LN, LN, LN}, {0, 1, 1, 0}},
        {"rmsnorm_residual_net", {5, 8, 8, 8, 3}, {G, T, G, I}, {RMS, RMS, N0, RMS}, {0, 1, 1, 0}},
    };
}

const int kBatch = 6;

std::vector<double> random_double(size_t n, double lo, double hi, uint32_t seed) {
    return bpt::to_double(bpt::uniform(n, (float)lo, (float)hi, seed));
}

// Random norm weights and biases too (not 1 and 0), so their gradients have something to show.
std::vector<double> ref_params(const bpref_block_net &net, uint32_t seed) {
    return random_double(bpref_block_n_params(&net), -0.6, 0.9, seed);
}

// The reference's analytic gradients against its own central differences (h = 1e-6 in double:
// truncation ~h^2, rounding ~1e-16 / h, both far below the 1e-6 asked).
TEST(NormReference, GradientsMatchCentralDifferences) {
    for (const Net &n : nets()) {
        SCOPED_TRACE(n.name);
        bpref_block_net net = n.ref();
        std::vector<double> p = ref_params(net, 3);
        std::vector<double> x = random_double((size_t)kBatch * n.widths[0], -2, 2, 4);
        std::vector<double> t = random_double((size_t)kBatch * n.widths.back(), -1, 1, 5);
        std::vector<double> dp(p.size()), dx(x.size());
        ASSERT_TRUE(std::isfinite(bpref_block_loss(&net, p.data(), x.data(), kBatch, t.data(),
                                                   nullptr, dp.data(), dx.data())));
        const double h = 1e-6;
        auto check = [&](std::vector<double> &v, const std::vector<double> &grad, const char *w) {
            for (size_t i = 0; i < v.size(); ++i) {
                double keep = v[i];
                v[i] = keep + h;
                double up = bpref_block_loss(&net, p.data(), x.data(), kBatch, t.data(), nullptr,
                                             nullptr, nullptr);
                v[i] = keep - h;
                double down = bpref_block_loss(&net, p.data(), x.data(), kBatch, t.data(), nullptr,
                                               nullptr, nullptr);
                v[i] = keep;
                double fd = (up - down) / (2 * h);
                ASSERT_NEAR(fd, grad[i], 1e-6 + 1e-5 * std::fabs(fd)) << w << " " << i;
            }
        };
        check(p, dp, "param");
        check(x, dx, "input");
    }
}

bp_mlp_config config_of(const Net &n) {
    bp_mlp_config c = bp_mlp_config_default((int)n.acts.size(), n.widths.data());
    c.activations = n.acts.data();
    c.norms = n.norms.data();
    c.residual = n.residual.data();
    c.max_batch = kBatch;
    return c;
}

// The library (fp32, CPU) against the float64 reference: output, loss, every parameter
// gradient and the input gradient, at the same parameters.
TEST(Norm, CpuMatchesFloat64Reference) {
    DevicePtr dev(bp_device_open("cpu", nullptr));
    ASSERT_NE(nullptr, dev.get()) << bp_last_error();
    for (const Net &n : nets()) {
        SCOPED_TRACE(n.name);
        bpref_block_net net = n.ref();
        bp_mlp_config cfg = config_of(n);
        bp_status st = BP_OK;
        ModelPtr m(bp_model_create(dev.get(), &cfg, &st));
        ASSERT_NE(nullptr, m.get()) << bp_last_error();
        size_t np = bp_model_n_params(m.get());
        ASSERT_EQ(bpref_block_n_params(&net), np);
        std::vector<float> pf = bpt::uniform(np, -0.6f, 0.9f, 3);
        std::vector<float> xf = bpt::uniform((size_t)kBatch * n.widths[0], -2, 2, 4);
        std::vector<float> tf = bpt::uniform((size_t)kBatch * n.widths.back(), -1, 1, 5);
        BPT_OK(bp_model_set_params(m.get(), pf.data(), np));
        std::vector<double> p = bpt::to_double(pf), x = bpt::to_double(xf), t = bpt::to_double(tf);
        std::vector<double> out(tf.size()), dp(np), dx(xf.size());
        double ref_loss = bpref_block_loss(&net, p.data(), x.data(), kBatch, t.data(), out.data(),
                                           dp.data(), dx.data());

        TensorPtr xt, tt, ot, dxt;
        ASSERT_NO_FATAL_FAILURE(bpt::upload_f32(dev.get(), kBatch, n.widths[0], xf, &xt));
        ASSERT_NO_FATAL_FAILURE(bpt::upload_f32(dev.get(), kBatch, n.widths.back(), tf, &tt));
        ASSERT_NO_FATAL_FAILURE(bpt::new_tensor(dev.get(), BP_F32, kBatch, n.widths.back(), &ot));
        ASSERT_NO_FATAL_FAILURE(bpt::new_tensor(dev.get(), BP_F32, kBatch, n.widths[0], &dxt));
        bp_loss_config loss = {};
        loss.kind = BP_LOSS_MSE;
        float lib_loss = 0;
        BPT_OK(bp_model_zero_grad(m.get()));
        BPT_OK(bp_model_forward(m.get(), xt.get(), BP_MODE_TRAINING, ot.get()));
        BPT_OK(bp_model_loss(m.get(), &loss, tt.get(), &lib_loss));
        BPT_OK(bp_model_backward(m.get(), dxt.get()));
        std::vector<float> o(out.size()), g(np), gx(dx.size());
        BPT_OK(bp_tensor_download(ot.get(), o.data(), o.size()));
        BPT_OK(bp_model_get_grads(m.get(), g.data(), np));
        BPT_OK(bp_tensor_download(dxt.get(), gx.data(), gx.size()));
        EXPECT_NEAR(ref_loss, lib_loss, 1e-5 * std::fabs(ref_loss));
        EXPECT_LT(bpt::rel_err(o, out), 1e-5) << "output";
        EXPECT_LT(bpt::rel_err(g, dp), 1e-5) << "parameter gradients";
        EXPECT_LT(bpt::rel_err(gx, dx), 1e-5) << "input gradient";
    }
}

// A fresh model's norms start as PyTorch's: weight 1, bias 0; the linear layers' weights are
// those of the same model without norms (the norms draw nothing).
TEST(Norm, InitialNormsAreOneAndZero) {
    DevicePtr dev(bp_device_open("cpu", nullptr));
    Net n = nets()[3];
    bp_mlp_config cfg = config_of(n);
    bp_status st = BP_OK;
    ModelPtr m(bp_model_create(dev.get(), &cfg, &st));
    ASSERT_NE(nullptr, m.get()) << bp_last_error();
    bp_mlp_config plain = cfg;
    plain.norms = nullptr;
    plain.residual = nullptr;
    ModelPtr q(bp_model_create(dev.get(), &plain, &st));
    ASSERT_NE(nullptr, q.get()) << bp_last_error();
    std::vector<float> p = bpt::params_of(m.get()), pq = bpt::params_of(q.get());
    for (int l = 0; l < (int)n.acts.size(); ++l) {
        size_t w, b, wq, bq, nw, nb;
        BPT_OK(bp_model_layer_offsets(m.get(), l, &w, &b));
        BPT_OK(bp_model_layer_offsets(q.get(), l, &wq, &bq));
        for (int k = 0; k < n.widths[l] * n.widths[l + 1]; ++k)
            ASSERT_EQ(pq[wq + k], p[w + k]) << "layer " << l;
        if (n.norms[l] == BP_NORM_NONE) {
            EXPECT_EQ(BP_ERR_INVALID_ARGUMENT, bp_model_norm_offsets(m.get(), l, &nw, &nb));
            continue;
        }
        BPT_OK(bp_model_norm_offsets(m.get(), l, &nw, &nb));
        for (int k = 0; k < n.widths[l]; ++k) {
            EXPECT_EQ(1.0f, p[nw + k]);
            EXPECT_EQ(0.0f, p[nb + k]);
        }
    }
}

void expect_refused(const bp_mlp_config &cfg, const std::string &says) {
    DevicePtr dev(bp_device_open("cpu", nullptr));
    bp_status st = BP_OK;
    ModelPtr m(bp_model_create(dev.get(), &cfg, &st));
    EXPECT_EQ(nullptr, m.get());
    EXPECT_EQ(BP_ERR_INVALID_ARGUMENT, st);
    EXPECT_NE(std::string::npos, std::string(bp_last_error()).find(says)) << bp_last_error();
}

TEST(Norm, BadConfigurationsAreRefused) {
    Net n = nets()[3];
    bp_mlp_config cfg = config_of(n);
    std::vector<int> res = {0, 1, 1, 1}; // layer 3 maps 8 to 3
    cfg.residual = res.data();
    expect_refused(cfg, "layer 3 has a residual connection but maps 8 features to 3");
    cfg = config_of(n);
    for (float eps : {0.0f, -1e-5f, NAN}) {
        cfg.norm_eps = eps;
        expect_refused(cfg, "norm_eps is");
    }
    cfg = config_of(n);
    std::vector<bp_norm> bad = {BP_NORM_NONE, (bp_norm)7, BP_NORM_NONE, BP_NORM_NONE};
    cfg.norms = bad.data();
    expect_refused(cfg, "norms[1] is 7, not a norm");
    cfg = config_of(n);
    res = {0, 2, 0, 0};
    cfg.residual = res.data();
    expect_refused(cfg, "residual[1] is 2, expected 0 or 1");
    // eps is not asked for without a norm
    cfg = config_of(n);
    cfg.norms = nullptr;
    cfg.norm_eps = 0.0f;
    DevicePtr dev(bp_device_open("cpu", nullptr));
    bp_status st = BP_OK;
    ModelPtr m(bp_model_create(dev.get(), &cfg, &st));
    EXPECT_NE(nullptr, m.get()) << bp_last_error();
}

TEST(Norm, NamesParse) {
    bp_norm k = BP_NORM_NONE;
    BPT_OK(bp_norm_parse("rmsnorm", &k));
    EXPECT_EQ(BP_NORM_RMS, k);
    EXPECT_STREQ("layernorm", bp_norm_name(BP_NORM_LAYER));
    EXPECT_EQ(BP_ERR_INVALID_ARGUMENT, bp_norm_parse("batchnorm", &k));
}

} // namespace
