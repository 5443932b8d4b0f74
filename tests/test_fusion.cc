// The core's fused path, on the CPU: a test double of a fusing backend (the CPU's table plus
// gemm_plan and the epilogues of core/backend.h, with the activation's saved state in a format
// of its own, as cuBLASLt keeps a ReLU bit mask) must train bitwise as the CPU backend without
// its plans (the CPU's table less gemm_plan, which composes the same math from the plain
// entries; the CPU backend's own fused epilogues are held to the float64 reference in
// test_ops_precision.cc). This holds the core's choice of the fused
// layers, the buffers it hands the epilogues, the accumulating bias gradient and the short
// batches to the CUDA backend's contract without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/backend.h"
#include "kernels/bp_math.h"
#include "support.h"
#include "support_model.h"

namespace {

using bpt::ModelPtr;
using bpt::OptimPtr;
using bpt::TensorPtr;

// What the double was asked for, and what it refuses (to test the core's fallback).
struct FakeState {
    int bias_act_plans = 0, dact_plans = 0, refused = 0;
    bool refuse_gelu = false;
} g_fake;

struct FakePlan {
    std::vector<float> product; // the fp32 product of a fused GEMM, [m, n]
};

// The saved state of an activation, in the double's format: ReLU a bit per element, rows of
// ld bits (ld a multiple of 128, as cuBLASLt's mask); GELU (tanh) the pre-activation in the
// output's type, rows of ld elements (ld a multiple of 8).
int64_t aux_ld(bp_activation act, int n) {
    int64_t q = act == BP_ACT_RELU ? 128 : 8;
    return ((int64_t)n + q - 1) / q * q;
}

size_t aux_size(bp_activation act, bp_eltype type, int m, int n) {
    if (act == BP_ACT_IDENTITY) return 0;
    size_t ld = (size_t)aux_ld(act, n);
    return act == BP_ACT_RELU ? ld / 8 * (size_t)m : ld * (size_t)m * bp_eltype_size(type);
}

float load(const void *p, bp_eltype t, size_t i) {
    return t == BP_EL_BF16 ? bp_bf16_to_f32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

void store(void *p, bp_eltype t, size_t i, float v) {
    if (t == BP_EL_BF16)
        ((uint16_t *)p)[i] = bp_f32_to_bf16(v);
    else
        ((float *)p)[i] = v;
}

bool fusable(const bp_gemm_desc *g) {
    if (g->epilogue == BP_EPI_NONE) return true;
    if (g->act == BP_ACT_GELU_TANH) return !g_fake.refuse_gelu;
    return g->act == BP_ACT_RELU || (g->epilogue == BP_EPI_BIAS_ACT && g->act == BP_ACT_IDENTITY);
}

bp_status fake_plan(bp_device *, const bp_gemm_desc *g, void **plan, size_t *aux) {
    *plan = nullptr;
    *aux = 0;
    if (!fusable(g)) {
        ++g_fake.refused;
        return BP_ERR_UNSUPPORTED;
    }
    auto *p = new FakePlan;
    p->product.resize((size_t)g->m * (size_t)g->n);
    if (g->epilogue == BP_EPI_BIAS_ACT) {
        ++g_fake.bias_act_plans;
        *aux = aux_size(g->act, g->c_type, g->m, g->n);
    }
    if (g->epilogue == BP_EPI_DACT_BGRAD) ++g_fake.dact_plans;
    *plan = p;
    return BP_OK;
}

void fake_plan_free(bp_device *, void *plan) {
    delete (FakePlan *)plan;
}

bool bit(const void *aux, int64_t ld, int i, int j) {
    size_t b = (size_t)i * (size_t)ld + (size_t)j;
    return (((const uint8_t *)aux)[b / 8] >> (b % 8)) & 1u;
}

void set_bit(void *aux, int64_t ld, int i, int j, bool v) {
    size_t b = (size_t)i * (size_t)ld + (size_t)j;
    uint8_t &byte = ((uint8_t *)aux)[b / 8];
    byte = (uint8_t)(v ? byte | (1u << (b % 8)) : byte & ~(1u << (b % 8)));
}

void bias_act(const bp_gemm_desc *g, const float *P) {
    int64_t ld = aux_ld(g->act, g->n);
    for (int i = 0; i < g->m; ++i)
        for (int j = 0; j < g->n; ++j) {
            float v = P[(size_t)i * g->n + j];
            if (g->bias) v += g->bias[j];
            store(g->c, g->c_type, (size_t)i * g->ldc + j, bp_act_forward(v, g->act, g->slope));
            if (g->act == BP_ACT_RELU) set_bit(g->aux, ld, i, j, v > 0.0f);
            if (g->act == BP_ACT_GELU_TANH) store(g->aux, g->c_type, (size_t)i * ld + j, v);
        }
}

// d = P * act'(z); the bias gradient summed over rows in row order in double and rounded once,
// as the CPU's col_sum sums.
void dact_bgrad(const bp_gemm_desc *g, const float *P) {
    int64_t ld = aux_ld(g->act, g->n);
    for (int j = 0; j < g->n; ++j) {
        double sum = 0.0;
        for (int i = 0; i < g->m; ++i) {
            float z = g->act == BP_ACT_RELU ? (bit(g->aux, ld, i, j) ? 1.0f : 0.0f)
                                            : load(g->aux, g->c_type, (size_t)i * ld + j);
            float d = P[(size_t)i * g->n + j] * bp_act_derivative(z, g->act, g->slope);
            sum += d;
            store(g->c, g->c_type, (size_t)i * g->ldc + j, d);
        }
        g->bias_grad[j] = (float)sum;
    }
}

// The bytes [first, last] a row-major matrix of rows x cols with row stride ld spans.
struct Span {
    const char *lo, *hi;
};

Span span(const void *p, int rows, int cols, int ld, size_t elem) {
    const char *c = (const char *)p;
    return {c, c + ((size_t)(rows - 1) * (size_t)ld + (size_t)cols) * elem - 1};
}

bool overlap(Span a, Span b) {
    return a.lo <= b.hi && b.lo <= a.hi;
}

// Stricter than a real GEMM need be: an output that overlaps an input would race on a GPU.
bool aliased(const bp_gemm_desc *g) {
    size_t ab = bp_eltype_size(g->ab_type);
    Span a = g->trans_a ? span(g->a, g->k, g->m, g->lda, ab) : span(g->a, g->m, g->k, g->lda, ab);
    Span b = g->trans_b ? span(g->b, g->n, g->k, g->ldb, ab) : span(g->b, g->k, g->n, g->ldb, ab);
    Span c = span(g->c, g->m, g->n, g->ldc, bp_eltype_size(g->c_type));
    bool bad = overlap(c, a) || overlap(c, b);
    if (g->aux && g->act != BP_ACT_IDENTITY) {
        Span x = {(const char *)g->aux,
                  (const char *)g->aux + aux_size(g->act, g->c_type, g->m, g->n) - 1};
        bad = bad || overlap(x, c) || overlap(x, a) || overlap(x, b);
    }
    return bad;
}

bp_status fake_gemm_ex(bp_device *dev, const bp_gemm_desc *g, void *plan) {
    if (g->m > 0 && g->n > 0 && g->k > 0 && aliased(g)) {
        ADD_FAILURE() << "gemm_ex: the output overlaps an input (m=" << g->m << " n=" << g->n
                      << " k=" << g->k << ", epilogue " << g->epilogue << ")";
        return BP_ERR_INVALID_ARGUMENT;
    }
    if (g->epilogue == BP_EPI_NONE) return bp_cpu_ops.gemm_ex(dev, g, nullptr);
    if (!plan) return BP_ERR_UNSUPPORTED;
    auto *p = (FakePlan *)plan;
    if ((size_t)g->m * (size_t)g->n > p->product.size()) return BP_ERR_INVALID_ARGUMENT;
    bp_gemm_desc h = *g;
    h.epilogue = BP_EPI_NONE;
    h.c = p->product.data();
    h.c_type = BP_EL_F32;
    h.ldc = g->n;
    bp_status st = bp_cpu_ops.gemm_ex(dev, &h, nullptr);
    if (st != BP_OK) return st;
    if (g->epilogue == BP_EPI_BIAS_ACT)
        bias_act(g, p->product.data());
    else
        dact_bgrad(g, p->product.data());
    return BP_OK;
}

// The double's fused GEMMs multiply into its plan's own buffer (a plain CPU product), so they
// need the scratch of that product only.
size_t fake_scratch(const bp_gemm_desc *g) {
    bp_gemm_desc h = *g;
    h.epilogue = BP_EPI_NONE;
    h.c_type = BP_EL_F32;
    return bp_cpu_ops.gemm_scratch ? bp_cpu_ops.gemm_scratch(&h) : 0;
}

bp_backend_ops fake_ops() {
    bp_backend_ops ops = bp_cpu_ops;
    ops.gemm_scratch = fake_scratch;
    ops.name = "cpu-fusing-double";
    ops.gemm_ex = fake_gemm_ex;
    ops.gemm_plan = fake_plan;
    ops.gemm_plan_free = fake_plan_free;
    return ops;
}

const bp_backend_ops kFake = fake_ops();

// The CPU without plans: every layer composed from the plain entries.
bp_backend_ops composed_ops() {
    bp_backend_ops ops = bp_cpu_ops;
    ops.name = "cpu-composed";
    ops.gemm_plan = nullptr;
    ops.gemm_plan_free = nullptr;
    return ops;
}

const bp_backend_ops kComposed = composed_ops();

// A network with each kind of layer: fused ReLU and GELU (tanh) with their derivative in the
// next layer's dX GEMM, an unfusable tanh, a ReLU with dropout (never fused: the mask sits
// between the activation and the next GEMM), an identity hidden layer (bias fused, derivative
// not) and an identity output (bias fused).
const int kWidths[] = {19, 33, 24, 17, 21, 12, 7};
const bp_activation kActs[] = {BP_ACT_RELU, BP_ACT_GELU_TANH, BP_ACT_TANH,
                               BP_ACT_RELU, BP_ACT_IDENTITY,  BP_ACT_IDENTITY};
const float kDrop[] = {0.0f, 0.0f, 0.0f, 0.2f, 0.0f, 0.0f};
const int kLayers = 6, kMaxBatch = 24;

ModelPtr make(bp_device *dev, bp_precision p) {
    bp_mlp_config c = bp_mlp_config_default(kLayers, kWidths);
    c.activations = kActs;
    c.dropout = kDrop;
    c.seed = 77;
    c.max_batch = kMaxBatch;
    c.precision = p;
    return ModelPtr(bp_model_create(dev, &c, nullptr));
}

// Params, loss and gradients after steps of AdamW with 2 micro-batches (the second accumulates
// into the gradients the first wrote), on batches of `rows` (<= 2 kMaxBatch).
struct Trace {
    std::vector<float> params, grads, dx;
    std::vector<float> losses;
};

void train(bp_device *dev, bp_precision p, int rows, int steps, Trace *r) {
    ModelPtr m = make(dev, p);
    ASSERT_TRUE(m) << bp_last_error();
    bp_optim_config oc = bp_optim_config_default(BP_OPTIM_ADAMW);
    oc.accum_steps = 2;
    oc.clip_norm = 1.0;
    OptimPtr o(bp_optimizer_create(m.get(), &oc, nullptr));
    ASSERT_TRUE(o) << bp_last_error();
    TensorPtr x, y, dx;
    auto xs = bpt::uniform((size_t)rows * kWidths[0], -1.0f, 1.0f, 3);
    std::vector<int32_t> labels(rows);
    for (int i = 0; i < rows; ++i)
        labels[i] = (i * 5) % kWidths[kLayers];
    ASSERT_NO_FATAL_FAILURE(bpt::upload_f32(dev, rows, kWidths[0], xs, &x));
    ASSERT_NO_FATAL_FAILURE(
        bpt::upload_target(dev, BP_LOSS_CROSS_ENTROPY, rows, 1, {}, labels, &y));
    bp_loss_config ce = {BP_LOSS_CROSS_ENTROPY, 0.05f};
    for (int s = 0; s < steps; ++s) {
        float loss = NAN;
        BPT_OK(bp_train_step(m.get(), o.get(), &ce, x.get(), y.get(), &loss));
        r->losses.push_back(loss);
    }
    // Then the public backward twice on the first micro-batch's rows (adding, and dx).
    int half = rows / 2;
    TensorPtr xh(bp_tensor_view_rows(x.get(), 0, half, nullptr));
    TensorPtr yh(bp_tensor_view_rows(y.get(), 0, half, nullptr));
    ASSERT_TRUE(xh && yh);
    ASSERT_NO_FATAL_FAILURE(bpt::new_tensor(dev, BP_F32, half, kWidths[0], &dx));
    BPT_OK(bp_model_zero_grad(m.get()));
    for (int k = 0; k < 2; ++k) {
        BPT_OK(bp_model_forward(m.get(), xh.get(), BP_MODE_TRAINING, nullptr));
        BPT_OK(bp_model_loss(m.get(), &ce, yh.get(), nullptr));
        BPT_OK(bp_model_backward(m.get(), dx.get()));
    }
    r->params.resize(bp_model_n_params(m.get()));
    r->grads.resize(r->params.size());
    r->dx.resize((size_t)half * kWidths[0]);
    BPT_OK(bp_model_get_params(m.get(), r->params.data(), r->params.size()));
    BPT_OK(bp_model_get_grads(m.get(), r->grads.data(), r->grads.size()));
    BPT_OK(bp_tensor_download(dx.get(), r->dx.data(), r->dx.size()));
}

bool same_bits(const std::vector<float> &a, const std::vector<float> &b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

class Fusion : public ::testing::TestWithParam<bp_precision> {
  protected:
    void SetUp() override {
        plain = bp_device_open("cpu", nullptr);
        fused = bp_device_open("cpu", nullptr);
        ASSERT_TRUE(plain && fused);
        plain->ops = &kComposed; // both run in the CPU's device state, with its memory
        fused->ops = &kFake;
        g_fake = FakeState();
    }
    void TearDown() override {
        bp_device_close(plain);
        bp_device_close(fused);
    }
    bp_device *plain = nullptr, *fused = nullptr;
};

// Full batches (2 x 24 rows) and a short one (2 x 9): bitwise the composed CPU's losses,
// parameters, accumulated gradients and dx.
TEST_P(Fusion, FusedLayersTrainBitwiseAsTheComposedOnes) {
    for (int rows : {2 * kMaxBatch, 18}) {
        SCOPED_TRACE(::testing::Message() << rows << " rows");
        g_fake = FakeState();
        Trace a, b;
        ASSERT_NO_FATAL_FAILURE(train(plain, GetParam(), rows, 6, &a));
        ASSERT_NO_FATAL_FAILURE(train(fused, GetParam(), rows, 6, &b));
        // Layers 0 (ReLU) and 1 (GELU) fuse both ways; 4 and 5 (identity) fuse the bias.
        EXPECT_EQ(4, g_fake.bias_act_plans);
        EXPECT_EQ(2, g_fake.dact_plans);
        EXPECT_TRUE(same_bits(a.losses, b.losses)) << "losses";
        EXPECT_TRUE(same_bits(a.params, b.params)) << "parameters";
        EXPECT_TRUE(same_bits(a.grads, b.grads)) << "accumulated gradients";
        EXPECT_TRUE(same_bits(a.dx, b.dx)) << "dx";
        // The runs moved: a double that did nothing would not pass by accident.
        EXPECT_NE(a.losses.front(), a.losses.back());
    }
}

// A fusion the backend refuses is composed instead, with the same numbers.
TEST_P(Fusion, ARefusedFusionIsComposed) {
    g_fake.refuse_gelu = true;
    Trace a, b;
    ASSERT_NO_FATAL_FAILURE(train(plain, GetParam(), 2 * kMaxBatch, 3, &a));
    ASSERT_NO_FATAL_FAILURE(train(fused, GetParam(), 2 * kMaxBatch, 3, &b));
    EXPECT_GE(g_fake.refused, 1);
    EXPECT_EQ(3, g_fake.bias_act_plans); // the GELU layer is no longer among them
    EXPECT_EQ(1, g_fake.dact_plans);
    EXPECT_TRUE(same_bits(a.params, b.params));
    EXPECT_TRUE(same_bits(a.dx, b.dx));
}

// The fused ReLU layer keeps its mask (a bit per element) in place of z: the model is smaller,
// by what the double says the mask needs; and a step allocates nothing.
TEST_P(Fusion, TheSavedStateIsTheBackendsAndAStepAllocatesNothing) {
    bp_device_stats s0{}, s1{};
    ModelPtr mp = make(plain, GetParam()), mf = make(fused, GetParam());
    ASSERT_TRUE(mp && mf);
    ASSERT_EQ(BP_OK, bp_device_get_stats(plain, &s0));
    ASSERT_EQ(BP_OK, bp_device_get_stats(fused, &s1));
    size_t elem = GetParam() == BP_PRECISION_BF16 ? 2 : 4;
    auto aligned = [](size_t b) { return (b + 255) / 256 * 256; };
    size_t z_relu = aligned((size_t)kMaxBatch * kWidths[1] * elem);
    size_t mask = aligned(aux_size(BP_ACT_RELU, BP_EL_F32, kMaxBatch, kWidths[1]));
    bp_eltype type = GetParam() == BP_PRECISION_BF16 ? BP_EL_BF16 : BP_EL_F32;
    size_t z_gelu = aligned((size_t)kMaxBatch * kWidths[2] * elem);
    size_t aux_gelu = aligned(aux_size(BP_ACT_GELU_TANH, type, kMaxBatch, kWidths[2]));
    // The fused model also holds the fused bias gradient buffer (the widest layer, fp32).
    size_t bgrad = aligned(33 * sizeof(float));
    EXPECT_EQ(s0.bytes_in_use - z_relu - z_gelu + mask + aux_gelu + bgrad, s1.bytes_in_use);

    bp_optim_config oc = bp_optim_config_default(BP_OPTIM_SGD);
    oc.momentum = 0.9;
    OptimPtr o(bp_optimizer_create(mf.get(), &oc, nullptr));
    TensorPtr x, y;
    auto xs = bpt::uniform((size_t)kMaxBatch * kWidths[0], -1.0f, 1.0f, 9);
    std::vector<int32_t> labels(kMaxBatch, 3);
    ASSERT_NO_FATAL_FAILURE(bpt::upload_f32(fused, kMaxBatch, kWidths[0], xs, &x));
    ASSERT_NO_FATAL_FAILURE(
        bpt::upload_target(fused, BP_LOSS_CROSS_ENTROPY, kMaxBatch, 1, {}, labels, &y));
    bp_loss_config ce = {BP_LOSS_CROSS_ENTROPY, 0.0f};
    BPT_OK(bp_train_step(mf.get(), o.get(), &ce, x.get(), y.get(), nullptr));
    bp_device_stats before{}, after{};
    ASSERT_EQ(BP_OK, bp_device_get_stats(fused, &before));
    for (int s = 0; s < 3; ++s)
        BPT_OK(bp_train_step(mf.get(), o.get(), &ce, x.get(), y.get(), nullptr));
    ASSERT_EQ(BP_OK, bp_device_get_stats(fused, &after));
    EXPECT_EQ(before.alloc_count, after.alloc_count);
    EXPECT_EQ(before.bytes_in_use, after.bytes_in_use);
}

INSTANTIATE_TEST_SUITE_P(Modes, Fusion,
                         ::testing::Values(BP_PRECISION_FP32, BP_PRECISION_TF32, BP_PRECISION_BF16),
                         [](const ::testing::TestParamInfo<bp_precision> &i) {
                             return std::string(bp_precision_name(i.param));
                         });

} // namespace
