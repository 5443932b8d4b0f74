// LayerNorm, RMSNorm and residual layers (docs/deep-mlp.md).
//
// The float64 reference (tests/ref_block.c) is held to central differences of its own loss;
// the library's forward, loss, parameter gradients and input gradient are held to that
// reference, for each of LayerNorm, RMSNorm and the residual alone and inside a network. Bad
// configurations are refused with a message naming the place.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "ref_block.h"
#include "support.h"
#include "support_files.h"
#include "support_model.h"
#include "tf32_probe.h"

namespace {

using bpt::DevicePtr;
using bpt::ModelPtr;
using bpt::OptimPtr;
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

bp_mlp_config config_of(const Net &n, int batch = kBatch) {
    bp_mlp_config c = bp_mlp_config_default((int)n.acts.size(), n.widths.data());
    c.activations = n.acts.data();
    c.norms = n.norms.data();
    c.residual = n.residual.data();
    c.max_batch = batch;
    return c;
}

// The library (fp32, CPU) against the float64 reference on a batch of `batch` rows: output,
// loss, every parameter gradient and the input gradient, at the same parameters.
void expect_reference(bp_device *dev, const Net &n, int batch) {
    SCOPED_TRACE(n.name);
    bpref_block_net net = n.ref();
    bp_mlp_config cfg = config_of(n, batch);
    bp_status st = BP_OK;
    ModelPtr m(bp_model_create(dev, &cfg, &st));
    ASSERT_NE(nullptr, m.get()) << bp_last_error();
    size_t np = bp_model_n_params(m.get());
    ASSERT_EQ(bpref_block_n_params(&net), np);
    std::vector<float> pf = bpt::uniform(np, -0.6f, 0.9f, 3);
    std::vector<float> xf = bpt::uniform((size_t)batch * n.widths[0], -2, 2, 4);
    std::vector<float> tf = bpt::uniform((size_t)batch * n.widths.back(), -1, 1, 5);
    BPT_OK(bp_model_set_params(m.get(), pf.data(), np));
    std::vector<double> p = bpt::to_double(pf), x = bpt::to_double(xf), t = bpt::to_double(tf);
    std::vector<double> out(tf.size()), dp(np), dx(xf.size());
    double ref_loss = bpref_block_loss(&net, p.data(), x.data(), batch, t.data(), out.data(),
                                       dp.data(), dx.data());

    TensorPtr xt, tt, ot, dxt;
    ASSERT_NO_FATAL_FAILURE(bpt::upload_f32(dev, batch, n.widths[0], xf, &xt));
    ASSERT_NO_FATAL_FAILURE(bpt::upload_f32(dev, batch, n.widths.back(), tf, &tt));
    ASSERT_NO_FATAL_FAILURE(bpt::new_tensor(dev, BP_F32, batch, n.widths.back(), &ot));
    ASSERT_NO_FATAL_FAILURE(bpt::new_tensor(dev, BP_F32, batch, n.widths[0], &dxt));
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

TEST(Norm, CpuMatchesFloat64Reference) {
    DevicePtr dev(bp_device_open("cpu", nullptr));
    ASSERT_NE(nullptr, dev.get()) << bp_last_error();
    for (const Net &n : nets())
        expect_reference(dev.get(), n, kBatch);
}

// The same at shapes that take every loop of src/cpu/cpu_norm.c: 75 rows are two whole blocks
// of 32 and a part one (the weight and bias gradients are summed per block), 300 features a
// whole chunk of 256 and a part one whose 44 are two groups of 16 lanes and 12 left over.
TEST(Norm, CpuMatchesFloat64ReferenceOverRowBlocksAndFeatureChunks) {
    DevicePtr dev(bp_device_open("cpu", nullptr));
    ASSERT_NE(nullptr, dev.get()) << bp_last_error();
    const bp_activation I = BP_ACT_IDENTITY, T = BP_ACT_TANH;
    const bp_norm LN = BP_NORM_LAYER, RMS = BP_NORM_RMS;
    const std::vector<Net> wide = {{"layernorm_wide", {300, 300, 4}, {T, I}, {LN, LN}, {1, 0}},
                                   {"rmsnorm_wide", {300, 300, 4}, {T, I}, {RMS, RMS}, {1, 0}}};
    for (const Net &n : wide)
        expect_reference(dev.get(), n, 75);
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
    // Stored, never loaded here: C++ may not load a bp_norm of 7 (UBSan's enum check).
    bp_norm bad[4] = {BP_NORM_NONE, BP_NORM_NONE, BP_NORM_NONE, BP_NORM_NONE};
    bad[1] = (bp_norm)7;
    cfg.norms = bad;
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

// The reduced precisions keep the norm statistics in fp32: against the float64 reference within
// what the GEMM operands' rounding costs (TF32: 10 mantissa bits; bf16: 7, and bf16 activations).
TEST(Norm, CpuReducedPrecisionsStayNearTheReference) {
    DevicePtr dev(bp_device_open("cpu", nullptr));
    for (bp_precision prec : {BP_PRECISION_TF32, BP_PRECISION_BF16}) {
        for (const Net &n : nets()) {
            SCOPED_TRACE(std::string(n.name) + " " + bp_precision_name(prec));
            bpref_block_net net = n.ref();
            bp_mlp_config cfg = config_of(n);
            cfg.precision = prec;
            bp_status st = BP_OK;
            ModelPtr m(bp_model_create(dev.get(), &cfg, &st));
            ASSERT_NE(nullptr, m.get()) << bp_last_error();
            size_t np = bp_model_n_params(m.get());
            std::vector<float> pf = bpt::uniform(np, -0.6f, 0.9f, 3);
            std::vector<float> xf = bpt::uniform((size_t)kBatch * n.widths[0], -2, 2, 4);
            std::vector<float> tf = bpt::uniform((size_t)kBatch * n.widths.back(), -1, 1, 5);
            BPT_OK(bp_model_set_params(m.get(), pf.data(), np));
            std::vector<double> p = bpt::to_double(pf), x = bpt::to_double(xf),
                                t = bpt::to_double(tf), out(tf.size()), dp(np);
            double ref_loss = bpref_block_loss(&net, p.data(), x.data(), kBatch, t.data(),
                                               out.data(), dp.data(), nullptr);
            TensorPtr xt, tt, ot;
            ASSERT_NO_FATAL_FAILURE(bpt::upload_f32(dev.get(), kBatch, n.widths[0], xf, &xt));
            ASSERT_NO_FATAL_FAILURE(bpt::upload_f32(dev.get(), kBatch, n.widths.back(), tf, &tt));
            ASSERT_NO_FATAL_FAILURE(
                bpt::new_tensor(dev.get(), BP_F32, kBatch, n.widths.back(), &ot));
            bp_loss_config loss = {};
            loss.kind = BP_LOSS_MSE;
            float lib_loss = 0;
            BPT_OK(bp_model_forward(m.get(), xt.get(), BP_MODE_TRAINING, ot.get()));
            BPT_OK(bp_model_loss(m.get(), &loss, tt.get(), &lib_loss));
            BPT_OK(bp_model_backward(m.get(), nullptr));
            std::vector<float> o(out.size()), g(np);
            BPT_OK(bp_tensor_download(ot.get(), o.data(), o.size()));
            BPT_OK(bp_model_get_grads(m.get(), g.data(), np));
            double tol = prec == BP_PRECISION_BF16 ? 3e-2 : 4e-3;
            EXPECT_NEAR(ref_loss, lib_loss, tol * std::fabs(ref_loss));
            EXPECT_LT(bpt::rel_err(o, out), tol) << "output";
            EXPECT_LT(bpt::rel_err(g, dp), 2 * tol) << "parameter gradients";
        }
    }
}

// The PyTorch module of docs/deep-mlp.md for this net:
//   nn.Sequential(nn.Linear(5, 8), nn.ReLU(),
//                 Residual(nn.LayerNorm(8), nn.Linear(8, 8), nn.GELU(), nn.Dropout(0.1)),
//                 Residual(nn.RMSNorm(8), nn.Linear(8, 8), nn.Tanh()),
//                 nn.LayerNorm(8), nn.Linear(8, 3))
struct NamedNet {
    Net net{"named",
            {5, 8, 8, 8, 3},
            {BP_ACT_RELU, BP_ACT_GELU, BP_ACT_TANH, BP_ACT_IDENTITY},
            {BP_NORM_NONE, BP_NORM_LAYER, BP_NORM_RMS, BP_NORM_LAYER},
            {0, 1, 1, 0}};
    std::vector<float> dropout{0.0f, 0.1f, 0.0f, 0.0f};
    bp_mlp_config config(int max_batch) const {
        bp_mlp_config c = config_of(net);
        c.dropout = dropout.data();
        c.max_batch = max_batch;
        c.seed = 9;
        return c;
    }
};

// name, shape, and where the library keeps it: the state_dict of the module above.
struct Expected {
    std::string name;
    std::vector<uint64_t> shape;
};

TEST(NormCheckpoint, TensorNamesAreThoseOfTheTorchModule) {
    DevicePtr dev(bp_device_open("cpu", nullptr));
    bpt::TempDir dir;
    NamedNet nn;
    bp_mlp_config cfg = nn.config(4);
    cfg.norm_eps = 1e-6f;
    bp_status st = BP_OK;
    ModelPtr m(bp_model_create(dev.get(), &cfg, &st));
    ASSERT_NE(nullptr, m.get()) << bp_last_error();
    bp_optim_config adamw = bp_optim_config_default(BP_OPTIM_ADAMW);
    OptimPtr o(bp_optimizer_create(m.get(), &adamw, nullptr));
    ASSERT_NE(nullptr, o.get()) << bp_last_error();
    std::string path = dir.file("blocks.ckpt");
    BPT_OK(bp_checkpoint_save(path.c_str(), m.get(), o.get(), nullptr, 0));
    const std::vector<Expected> want = {{"0.weight", {8, 5}},
                                        {"0.bias", {8}},
                                        {"2.body.0.weight", {8}},
                                        {"2.body.0.bias", {8}},
                                        {"2.body.1.weight", {8, 8}},
                                        {"2.body.1.bias", {8}},
                                        {"3.body.0.weight", {8}},
                                        {"3.body.1.weight", {8, 8}},
                                        {"3.body.1.bias", {8}},
                                        {"4.weight", {8}},
                                        {"4.bias", {8}},
                                        {"5.weight", {3, 8}},
                                        {"5.bias", {3}}};
    bp_st_file *f = nullptr;
    BPT_OK(bp_st_open(path.c_str(), &f));
    std::unique_ptr<bp_st_file, void (*)(bp_st_file *)> guard(f, bp_st_close);
    EXPECT_EQ(want.size() * 3, f->n_tensors); // params, exp_avg, exp_avg_sq
    for (const Expected &e : want)
        for (const char *pre : {"", "optimizer."})
            for (const char *suf : {"", ".exp_avg", ".exp_avg_sq"}) {
                if (!*pre && *suf) continue;
                if (*pre && !*suf) continue;
                std::string name = pre + e.name + suf;
                const bp_st_tensor *t = bp_st_find(f, name.c_str());
                ASSERT_NE(nullptr, t) << name;
                ASSERT_EQ((int)e.shape.size(), t->ndim) << name;
                for (size_t k = 0; k < e.shape.size(); ++k)
                    EXPECT_EQ(e.shape[k], t->shape[k]) << name;
            }
    EXPECT_STREQ("none,layernorm,rmsnorm,layernorm", bp_st_get_meta(f, "model.norms"));
    EXPECT_STREQ("0,1,1,0", bp_st_get_meta(f, "model.residual"));
    EXPECT_STREQ("9.99999997e-07", bp_st_get_meta(f, "model.norm_eps"));

    // It loads back as the same model, bitwise.
    ModelPtr back(bp_checkpoint_load_model(path.c_str(), dev.get(), 0, &st));
    ASSERT_NE(nullptr, back.get()) << bp_last_error();
    for (int l = 0; l < 4; ++l) {
        EXPECT_EQ(nn.net.norms[l], bp_model_norm(back.get(), l));
        EXPECT_EQ(nn.net.residual[l], bp_model_residual(back.get(), l));
    }
    EXPECT_EQ(1e-6f, bp_model_norm_eps(back.get()));
    EXPECT_EQ(bpt::params_of(m.get()), bpt::params_of(back.get()));

    // The model lists those tensors in its flat buffer's order (bp_checkpoint_tensor).
    ASSERT_EQ((int)want.size(), bp_checkpoint_n_tensors(m.get()));
    size_t at = 0;
    for (int i = 0; i < (int)want.size(); ++i) {
        bp_param_tensor t;
        BPT_OK(bp_checkpoint_tensor(m.get(), i, &t));
        EXPECT_EQ(want[i].name, t.name);
        ASSERT_EQ((int)want[i].shape.size(), t.ndim) << t.name;
        EXPECT_EQ((int64_t)want[i].shape[0], t.shape[0]) << t.name;
        EXPECT_EQ(t.ndim == 2 ? (int64_t)want[i].shape[1] : 1, t.shape[1]) << t.name;
        EXPECT_EQ(at, t.offset) << t.name;
        at += (size_t)(t.shape[0] * t.shape[1]);
    }
    EXPECT_EQ(bp_model_n_params(m.get()), at);
    size_t w = 0, b = 0;
    BPT_OK(bp_model_layer_offsets(m.get(), 1, &w, &b));
    bp_param_tensor lin;
    BPT_OK(bp_checkpoint_tensor(m.get(), 4, &lin));
    EXPECT_STREQ("2.body.1.weight", lin.name);
    EXPECT_EQ(w, lin.offset); // layer 1's Linear
}

TEST(NormCheckpoint, ATensorOutOfRangeOrNullIsRefused) {
    DevicePtr dev(bp_device_open("cpu", nullptr));
    const int widths[] = {4, 6, 2};
    bp_mlp_config cfg = bp_mlp_config_default(2, widths);
    ModelPtr m(bp_model_create(dev.get(), &cfg, nullptr));
    ASSERT_NE(nullptr, m.get()) << bp_last_error();
    EXPECT_EQ(4, bp_checkpoint_n_tensors(m.get()));
    EXPECT_EQ(0, bp_checkpoint_n_tensors(nullptr));
    bp_param_tensor t;
    EXPECT_EQ(BP_ERR_INVALID_ARGUMENT, bp_checkpoint_tensor(nullptr, 0, &t));
    EXPECT_NE(nullptr, strstr(bp_last_error(), "bp_checkpoint_tensor: model is NULL"));
    EXPECT_EQ(BP_ERR_INVALID_ARGUMENT, bp_checkpoint_tensor(m.get(), 0, nullptr));
    EXPECT_NE(nullptr, strstr(bp_last_error(), "out is NULL"));
    for (int bad : {-1, 4}) {
        EXPECT_EQ(BP_ERR_INVALID_ARGUMENT, bp_checkpoint_tensor(m.get(), bad, &t));
        EXPECT_NE(nullptr, strstr(bp_last_error(), "is outside the model's 4 tensors"))
            << bp_last_error();
    }
    BPT_OK(bp_checkpoint_tensor(m.get(), 3, &t));
    EXPECT_STREQ("2.bias", t.name); // the ReLU module takes index 1
    EXPECT_EQ(1, t.ndim);
    EXPECT_EQ(2, t.shape[0]);
}

TEST(NormCheckpoint, APlainModelWritesNoNormKeys) {
    DevicePtr dev(bp_device_open("cpu", nullptr));
    bpt::TempDir dir;
    const int widths[] = {4, 6, 2};
    bp_mlp_config cfg = bp_mlp_config_default(2, widths);
    bp_status st = BP_OK;
    ModelPtr m(bp_model_create(dev.get(), &cfg, &st));
    ASSERT_NE(nullptr, m.get()) << bp_last_error();
    std::string path = dir.file("plain.ckpt");
    BPT_OK(bp_checkpoint_save(path.c_str(), m.get(), nullptr, nullptr, 0));
    bp_st_file *f = nullptr;
    BPT_OK(bp_st_open(path.c_str(), &f));
    std::unique_ptr<bp_st_file, void (*)(bp_st_file *)> guard(f, bp_st_close);
    EXPECT_EQ(nullptr, bp_st_get_meta(f, "model.norms"));
    EXPECT_EQ(nullptr, bp_st_get_meta(f, "model.residual"));
    EXPECT_EQ(nullptr, bp_st_get_meta(f, "model.norm_eps"));
    EXPECT_NE(nullptr, bp_st_find(f, "0.weight"));
    EXPECT_NE(nullptr, bp_st_find(f, "2.weight"));
}

// k steps, a checkpoint, more steps from it: bitwise where k + more uninterrupted steps end,
// in fp32 and bf16, with AdamW and dropout inside a residual block.
TEST(NormCheckpoint, ResumedTrainingIsBitwiseUninterrupted) {
    DevicePtr dev(bp_device_open("cpu", nullptr));
    bpt::TempDir dir;
    NamedNet nn;
    const int rows = 16, k = 5, more = 4;
    std::vector<float> xf = bpt::uniform((size_t)rows * 5, -1.5f, 1.5f, 21);
    std::vector<float> yf = bpt::uniform((size_t)rows * 3, -1, 1, 22);
    TensorPtr x, y;
    ASSERT_NO_FATAL_FAILURE(bpt::upload_f32(dev.get(), rows, 5, xf, &x));
    ASSERT_NO_FATAL_FAILURE(bpt::upload_f32(dev.get(), rows, 3, yf, &y));
    bp_loss_config loss = {};
    loss.kind = BP_LOSS_MSE;
    bp_optim_config oc = bp_optim_config_default(BP_OPTIM_ADAMW);
    oc.lr = 0.01;
    oc.weight_decay = 0.05;
    for (bp_precision prec : {BP_PRECISION_FP32, BP_PRECISION_BF16}) {
        SCOPED_TRACE(bp_precision_name(prec));
        bp_mlp_config cfg = nn.config(rows);
        cfg.precision = prec;
        auto train = [&](bp_model *m, bp_optimizer *o, int steps) {
            for (int s = 0; s < steps; ++s)
                BPT_OK(bp_train_step(m, o, &loss, x.get(), y.get(), nullptr));
        };
        bp_status st = BP_OK;
        ModelPtr a(bp_model_create(dev.get(), &cfg, &st));
        ASSERT_NE(nullptr, a.get()) << bp_last_error();
        OptimPtr oa(bp_optimizer_create(a.get(), &oc, nullptr));
        ASSERT_NO_FATAL_FAILURE(train(a.get(), oa.get(), k + more));
        std::string path = dir.file("resume.ckpt");
        {
            ModelPtr b(bp_model_create(dev.get(), &cfg, &st));
            OptimPtr ob(bp_optimizer_create(b.get(), &oc, nullptr));
            ASSERT_NO_FATAL_FAILURE(train(b.get(), ob.get(), k));
            BPT_OK(bp_checkpoint_save(path.c_str(), b.get(), ob.get(), nullptr, 0));
        }
        ModelPtr c(bp_checkpoint_load_model(path.c_str(), dev.get(), 0, &st));
        ASSERT_NE(nullptr, c.get()) << bp_last_error();
        OptimPtr occ(bp_checkpoint_load_optimizer(path.c_str(), c.get(), &st));
        ASSERT_NE(nullptr, occ.get()) << bp_last_error();
        ASSERT_NO_FATAL_FAILURE(train(c.get(), occ.get(), more));
        std::vector<float> pa = bpt::params_of(a.get()), pc = bpt::params_of(c.get());
        ASSERT_EQ(pa.size(), pc.size());
        EXPECT_EQ(0, std::memcmp(pa.data(), pc.data(), pa.size() * sizeof(float)));
        // and the steps moved the norms' parameters
        size_t nw = 0, nb = 0;
        BPT_OK(bp_model_norm_offsets(a.get(), 1, &nw, &nb));
        EXPECT_NE(1.0f, pa[nw]);
        EXPECT_NE(0.0f, pa[nb]);
    }
}

// One training forward, loss and backward of net n at the given parameters and input: the
// output, the parameter gradients and the input gradient, on the host.
struct Pass {
    std::vector<float> out, grads, dx;
};

void run_pass(bp_device *dev, const Net &n, bp_precision prec, int batch,
              const std::vector<float> &p, const std::vector<float> &x, const std::vector<float> &t,
              Pass *r) {
    bp_mlp_config cfg = config_of(n);
    cfg.precision = prec;
    cfg.max_batch = batch;
    bp_status st = BP_OK;
    ModelPtr m(bp_model_create(dev, &cfg, &st));
    ASSERT_NE(nullptr, m.get()) << bp_last_error();
    BPT_OK(bp_model_set_params(m.get(), p.data(), p.size()));
    TensorPtr xt, tt, ot, dxt;
    ASSERT_NO_FATAL_FAILURE(bpt::upload_f32(dev, batch, n.widths[0], x, &xt));
    ASSERT_NO_FATAL_FAILURE(bpt::upload_f32(dev, batch, n.widths.back(), t, &tt));
    ASSERT_NO_FATAL_FAILURE(bpt::new_tensor(dev, BP_F32, batch, n.widths.back(), &ot));
    ASSERT_NO_FATAL_FAILURE(bpt::new_tensor(dev, BP_F32, batch, n.widths[0], &dxt));
    bp_loss_config loss = {};
    loss.kind = BP_LOSS_MSE;
    BPT_OK(bp_model_zero_grad(m.get()));
    BPT_OK(bp_model_forward(m.get(), xt.get(), BP_MODE_TRAINING, ot.get()));
    BPT_OK(bp_model_loss(m.get(), &loss, tt.get(), nullptr));
    BPT_OK(bp_model_backward(m.get(), dxt.get()));
    r->out.resize(t.size());
    r->grads.resize(p.size());
    r->dx.resize(x.size());
    BPT_OK(bp_tensor_download(ot.get(), r->out.data(), r->out.size()));
    BPT_OK(bp_model_get_grads(m.get(), r->grads.data(), p.size()));
    BPT_OK(bp_tensor_download(dxt.get(), r->dx.data(), r->dx.size()));
}

// The CUDA kernels (a warp a row up to 1024 features, a block a row beyond) against the CPU in
// every precision: the same per-element math, statistics summed in double in another order,
// and the GEMMs of another engine.
TEST(CrossDeviceNorm, CudaMatchesTheCpuInEveryPrecision) {
    BPT_OPEN_OR_SKIP(raw, "cuda");
    DevicePtr cuda(raw);
    DevicePtr cpu(bp_device_open("cpu", nullptr));
    std::vector<Net> all = nets();
    bpt_tf32_rounding rounding = BPT_TF32_OTHER;
    float probe[4];
    BPT_OK(bpt_tf32_rounding_of(cuda.get(), 1, 4, 1, &rounding, probe));
    const bool truncated = rounding == BPT_TF32_TRUNCATION;
    all.push_back({"wide_block_rows",
                   {1100, 1100, 4},
                   {BP_ACT_GELU, BP_ACT_IDENTITY},
                   {BP_NORM_LAYER, BP_NORM_RMS},
                   {1, 0}});
    for (bp_precision prec : {BP_PRECISION_FP32, BP_PRECISION_TF32, BP_PRECISION_BF16}) {
        for (const Net &n : all) {
            SCOPED_TRACE(std::string(n.name) + " " + bp_precision_name(prec));
            const int batch = n.widths[0] > 1024 ? 3 : kBatch;
            bpref_block_net net = n.ref();
            size_t np = bpref_block_n_params(&net);
            std::vector<float> p = bpt::uniform(np, -0.6f, 0.9f, 3);
            if (n.widths[0] > 1024)
                for (float &v : p)
                    v *= 0.05f; // keep the 1100-wide sums of order 1
            std::vector<float> x = bpt::uniform((size_t)batch * n.widths[0], -2, 2, 4);
            std::vector<float> t = bpt::uniform((size_t)batch * n.widths.back(), -1, 1, 5);
            Pass a, b;
            ASSERT_NO_FATAL_FAILURE(run_pass(cpu.get(), n, prec, batch, p, x, t, &a));
            ASSERT_NO_FATAL_FAILURE(run_pass(cuda.get(), n, prec, batch, p, x, t, &b));
            double tol = prec == BP_PRECISION_BF16 ? 2e-2 : prec == BP_PRECISION_TF32 ? 2e-3 : 1e-5;
            double grad_tol = tol;
            // A GPU that truncates TF32 operands (cudaemu's variant 1) biases each product
            // toward zero by 2^-10 on average, where the CPU's nearest-even rounding has no
            // bias: the biases add along the chain of GEMMs, as test_precision.cc's plain_tol
            // says, 4 GEMMs to the output (4 x 2^-10 = 3.9e-3) and 8 to the first layer's
            // gradients and dx (7.8e-3). Was 2e-3 for all three; observed 2.0e-3 (gradients)
            // and 2.4e-3 (dx) on variant 1.
            if (prec == BP_PRECISION_TF32 && truncated) tol = 4 * 0x1p-10, grad_tol = 8 * 0x1p-10;
            EXPECT_LT(bpt::rel_err(b.out, a.out), tol) << "output";
            EXPECT_LT(bpt::rel_err(b.grads, a.grads), grad_tol) << "parameter gradients";
            EXPECT_LT(bpt::rel_err(b.dx, a.dx), grad_tol) << "input gradient";
        }
    }
}

// Final MSE of `steps` AdamW steps on a smooth regression (y = sin(2 x0) cos(x1) + x2 x3 / 2)
// for a depth-layer MLP of width 32: with pre-norm residual blocks or plain.
double train_deep(bp_device *dev, int depth, bool blocks, int steps) {
    const int rows = 64, width = 32;
    std::vector<int> widths(depth + 1, width);
    widths[0] = 4;
    widths[depth] = 1;
    std::vector<bp_activation> acts(depth, blocks ? BP_ACT_GELU : BP_ACT_RELU);
    acts[depth - 1] = BP_ACT_IDENTITY;
    std::vector<bp_norm> norms(depth, blocks ? BP_NORM_LAYER : BP_NORM_NONE);
    norms[0] = BP_NORM_NONE;
    std::vector<int> res(depth, blocks ? 1 : 0);
    res[0] = res[depth - 1] = 0;
    bp_mlp_config cfg = bp_mlp_config_default(depth, widths.data());
    cfg.activations = acts.data();
    cfg.norms = norms.data();
    cfg.residual = res.data();
    cfg.max_batch = rows;
    cfg.seed = 17;
    bp_status st = BP_OK;
    ModelPtr m(bp_model_create(dev, &cfg, &st));
    if (!m) return NAN;
    bp_optim_config oc = bp_optim_config_default(BP_OPTIM_ADAMW);
    oc.lr = 1e-3;
    OptimPtr o(bp_optimizer_create(m.get(), &oc, &st));
    std::vector<float> x = bpt::uniform((size_t)rows * 4, -1.5f, 1.5f, 31), y(rows);
    for (int r = 0; r < rows; ++r) {
        const float *v = &x[(size_t)r * 4];
        y[r] = std::sin(2 * v[0]) * std::cos(v[1]) + 0.5f * v[2] * v[3];
    }
    TensorPtr xt, yt;
    bpt::upload_f32(dev, rows, 4, x, &xt);
    bpt::upload_f32(dev, rows, 1, y, &yt);
    bp_loss_config loss = {};
    loss.kind = BP_LOSS_MSE;
    float value = NAN;
    for (int s = 0; s < steps && o; ++s)
        if (bp_train_step(m.get(), o.get(), &loss, xt.get(), yt.get(), &value) != BP_OK) return NAN;
    return value;
}

// What the blocks are for: at depth 24 the plain ReLU MLP barely moves from predicting the
// mean, while the pre-norm residual one fits the batch.
TEST(Norm, ADeepResidualMlpTrainsWhereAPlainOneStalls) {
    DevicePtr dev(bp_device_open("cpu", nullptr));
    const int depth = 24, steps = 300;
    double plain = train_deep(dev.get(), depth, false, steps);
    double blocks = train_deep(dev.get(), depth, true, steps);
    std::printf("depth %d, %d AdamW steps: final MSE plain %.4g, pre-norm residual %.4g\n", depth,
                steps, plain, blocks);
    EXPECT_LT(blocks, 0.02);
    EXPECT_LT(blocks * 10, plain);
}

// PyTorch parity: a 6-layer MLP (a plain input layer, four pre-norm residual blocks, a normed
// classifier) trains 2 AdamW steps here, is saved, and trains 50 more here and, from the
// checkpoint, in PyTorch (tests/torch_optim.py builds the module of docs/deep-mlp.md through
// torch_interop.build and loads it strictly). The parameters must agree to the plain MLP's
// tolerance, 2e-6 relative; the AdamW state to 5e-6. Measured after the 50 steps, as ours
// against PyTorch float32 (the check); PyTorch float32 and ours against PyTorch float64 from the
// same checkpoint (torch_optim.py --float64, printed by each test):
//
//                            parameters              exp_avg                 exp_avg_sq
//   LayerNorm blocks         2.7e-7; 1.1e-6, 1.1e-6  3.1e-6; 4.5e-6, 5.2e-6  7.9e-7; 1.3e-6, 1.3e-6
//   RMSNorm blocks           2.8e-7; 1.2e-6, 1.1e-6  2.6e-6; 3.3e-6, 4.1e-6  5.4e-7; 1.2e-6, 1.1e-6
//   no blocks (the control)  1.2e-6; 3.1e-6, 2.5e-6  1.8e-5; 2.7e-5, 2.5e-5  1.0e-4; 2.3e-4, 1.2e-4
//
// The plain MLP's 2e-6 (test_torch_optim.cc) is for 20 steps of a 3-layer net; after 20 steps
// these nets agree to it too (exp_avg at most 9.2e-7). Over 50 steps the batch is learnt (loss
// 2e-3), the gradients shrink, and the first moment, a running mean of them, keeps the rounding
// of every step: PyTorch's own float32 run ends 4.5e-6 from float64, and ours 5.2e-6. No float32
// implementation can be held to 2e-6 there, and the same net without the blocks drifts 6 to 190
// times further, so 5e-6 is what float32 allows, not room the norms need. The control runs that
// plain net with the state held to 1e-3, to print its numbers beside these. The Twenty... tests
// hold both nets to the plain MLP's own test: 20 steps, parameters and state to 2e-6.
void torch_parity(bp_norm norm, const std::string &py, int after = 50) {
    const int blocks = norm != BP_NORM_NONE;
    const int widths[] = {6, 16, 16, 16, 16, 16, 4};
    const bp_activation acts[] = {BP_ACT_TANH, BP_ACT_GELU, BP_ACT_GELU,
                                  BP_ACT_GELU, BP_ACT_GELU, BP_ACT_IDENTITY};
    const bp_norm norms[] = {BP_NORM_NONE, norm, norm, norm, norm, norm};
    const int residual[] = {0, blocks, blocks, blocks, blocks, 0};
    const int rows = 32, before = 2;
    DevicePtr dev(bp_device_open("cpu", nullptr));
    bp_mlp_config cfg = bp_mlp_config_default(6, widths);
    cfg.activations = acts;
    cfg.norms = blocks ? norms : nullptr;
    cfg.residual = residual;
    cfg.seed = 5;
    cfg.max_batch = rows;
    bp_status st = BP_OK;
    ModelPtr m(bp_model_create(dev.get(), &cfg, &st));
    ASSERT_NE(nullptr, m.get()) << bp_last_error();
    bp_optim_config oc = bp_optim_config_default(BP_OPTIM_ADAMW);
    oc.lr = 0.01;
    oc.beta2 = 0.999;
    oc.weight_decay = 0.05;
    OptimPtr o(bp_optimizer_create(m.get(), &oc, &st));
    ASSERT_NE(nullptr, o.get()) << bp_last_error();
    std::vector<float> x = bpt::uniform((size_t)rows * widths[0], -1.5f, 1.5f, 808);
    std::vector<int32_t> y(rows);
    for (int i = 0; i < rows; ++i)
        y[i] = (i * 7 + 3) % widths[6];
    TensorPtr tx, ty;
    ASSERT_NO_FATAL_FAILURE(bpt::upload_f32(dev.get(), rows, widths[0], x, &tx));
    ASSERT_NO_FATAL_FAILURE(bpt::new_tensor(dev.get(), BP_I32, rows, 1, &ty));
    BPT_OK(bp_tensor_upload(ty.get(), y.data(), y.size()));
    bp_loss_config ce = {BP_LOSS_CROSS_ENTROPY, 0.0f};
    bpt::TempDir dir;
    for (int s = 0; s < before; ++s)
        BPT_OK(bp_train_step(m.get(), o.get(), &ce, tx.get(), ty.get(), nullptr));
    std::string ckpt = dir.file("run.safetensors");
    BPT_OK(bp_checkpoint_save(ckpt.c_str(), m.get(), o.get(), nullptr, 0));
    for (int s = 0; s < after; ++s)
        BPT_OK(bp_train_step(m.get(), o.get(), &ce, tx.get(), ty.get(), nullptr));
    std::vector<float> params = bpt::params_of(m.get()), state(bp_optimizer_state_size(o.get()));
    int64_t steps = 0;
    BPT_OK(bp_optimizer_get_state(o.get(), state.data(), state.size(), &steps));
    bpt::write_raw(dir.file("x.f32"), x);
    bpt::write_raw(dir.file("y.i32"), y);
    bpt::write_raw(dir.file("params.f32"), params);
    bpt::write_raw(dir.file("state.f32"), state);
    std::string cmd = "'" + py + "' '" BP_SOURCE_DIR "/tests/torch_optim.py' '" + ckpt + "' '" +
                      dir.file("x.f32") + "' '" + dir.file("y.i32") + "' " + std::to_string(rows) +
                      " " + std::to_string(after) + " '" + dir.file("params.f32") + "' '" +
                      dir.file("state.f32") + "' --float64 --state-tolerance=" +
                      (!blocks       ? "1e-3"
                       : after <= 20 ? "2e-6"
                                     : "5e-6");
    EXPECT_EQ(0, bpt::run_exit_code(cmd)) << cmd;
}

TEST(NormTorch, FiftyAdamWStepsOfAResidualLayerNormMlpMatchPyTorch) {
    std::string why, py = bpt::torch_python(&why);
    if (py.empty()) GTEST_SKIP() << why;
    torch_parity(BP_NORM_LAYER, py);
}

TEST(NormTorch, FiftyAdamWStepsOfAResidualRmsNormMlpMatchPyTorch) {
    std::string why, py = bpt::torch_python(&why);
    if (py.empty()) GTEST_SKIP() << why;
    torch_parity(BP_NORM_RMS, py);
}

TEST(NormTorch, TwentyAdamWStepsOfBothBlockMlpsMatchPyTorchAtThePlainMlpsTolerance) {
    std::string why, py = bpt::torch_python(&why);
    if (py.empty()) GTEST_SKIP() << why;
    for (bp_norm norm : {BP_NORM_LAYER, BP_NORM_RMS}) {
        SCOPED_TRACE(bp_norm_name(norm));
        torch_parity(norm, py, 20);
    }
}

TEST(NormTorch, ControlFiftyAdamWStepsOfTheSameMlpWithoutBlocks) {
    std::string why, py = bpt::torch_python(&why);
    if (py.empty()) GTEST_SKIP() << why;
    torch_parity(BP_NORM_NONE, py);
}

TEST(Norm, NamesParse) {
    bp_norm k = BP_NORM_NONE;
    BPT_OK(bp_norm_parse("rmsnorm", &k));
    EXPECT_EQ(BP_NORM_RMS, k);
    EXPECT_STREQ("layernorm", bp_norm_name(BP_NORM_LAYER));
    EXPECT_EQ(BP_ERR_INVALID_ARGUMENT, bp_norm_parse("batchnorm", &k));
}

} // namespace
