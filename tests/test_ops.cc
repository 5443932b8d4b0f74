// Every entry of the backend vtable, on every backend present, against the float64 reference
// in ref_ops.c. Inputs are fresh uniform random numbers (never zeros); each tolerance is a
// relative error ||out - ref|| / ||ref|| stated with its reason next to the check.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/backend.h"
#include "kernels/bp_math.h"
#include "ref_ops.h"
#include "support_ops.h"

namespace {

using bpt::act_name;
using bpt::DevBuf;
using bpt::random_labels;

// Tolerance of an element-wise activation (forward or derivative) in fp32 against float64.
// Piecewise-linear ones: one rounding of z + bias and of slope * z or da * slope, so a few ulp
// (1e-6). Transcendental ones: expf/tanhf/erff are within 1-2 ulp but their error is
// amplified by the condition number of the function (|x f'(x)/f(x)|, up to ~10 for x in
// [-4, 4]) and by the cancellation in 1 + tanh(u) (GELU tanh form) for negative x: 1e-5.
//
// The measure is norm-wise, so it needs more than a handful of elements where some functions
// are ill-conditioned: a lone element near a root of f' (GELU' at -0.75, SiLU' at -1.28) or
// where 1 + erf / 1 + tanh / 1 - tanh^2 cancel (x < -3, |x| > 3.5) carries a per-element
// relative error up to ~5e-3 in any correct fp32 implementation. Sizes below 100 therefore draw
// from act_inputs(), away from those points; the large sizes cover [-4, 4].
double act_tol(bp_activation act) {
    switch (act) {
    case BP_ACT_IDENTITY:
    case BP_ACT_RELU:
    case BP_ACT_LEAKY_RELU:
        return 1e-6;
    default:
        return 1e-5;
    }
}

const float kSlope = 0.07f; // leaky ReLU slope, not 0.01 so a wrong default shows

// Inputs of an activation test with n elements: [-4, 4] for n >= 100, else [-0.5, 2] (see
// act_tol), which still holds both signs for ReLU and leaky ReLU.
std::vector<float> act_inputs(size_t n, uint32_t seed) {
    return n >= 100 ? bpt::uniform(n, -4.0f, 4.0f, seed) : bpt::uniform(n, -0.5f, 2.0f, seed);
}

bool all_finite(const std::vector<float> &v) {
    for (float x : v)
        if (!std::isfinite(x)) return false;
    return true;
}

// A shape and the half-width of the interval its inputs are drawn from.
struct RangeCase {
    int rows, cols;
    float range;
};

// The row losses and, when dg is not NULL, the gradient that a loss op wrote: all finite, and
// within loss_tol and grad_tol (norm-wise relative) of the reference's lref [rows], gref [n].
void expect_loss_outputs(const DevBuf &dloss, const std::vector<double> &lref, double loss_tol,
                         const DevBuf *dg, const std::vector<double> &gref, double grad_tol) {
    auto loss = dloss.get(lref.size());
    EXPECT_TRUE(all_finite(loss));
    EXPECT_LE(bpt::rel_err(loss, lref), loss_tol) << "row_loss";
    if (dg) {
        auto g = dg->get(gref.size());
        EXPECT_TRUE(all_finite(g));
        EXPECT_LE(bpt::rel_err(g, gref), grad_tol) << "grad";
    }
}

class OpsTest : public bpt::BackendOpsTest {};

// ---- memory: upload, download, copy, fill, synchronize ------------------------------------

TEST_P(OpsTest, MemoryRoundTripCopyFillSynchronize) {
    EXPECT_GE(ops->device_count(), 1) << "a backend that opened has at least one device";
    for (size_t n : {size_t(1), size_t(7), size_t(4097), size_t(100003)}) {
        SCOPED_TRACE(::testing::Message() << "n=" << n);
        auto x = bpt::uniform(n, -3.0f, 3.0f, 50 + (uint32_t)n);
        DevBuf a(dev, x), b(dev, n * sizeof(float));
        // upload then download: bitwise the same.
        EXPECT_EQ(0, std::memcmp(x.data(), a.get(n).data(), n * sizeof(float))) << "round trip";
        // copy: bitwise (below: a copy into an offset leaves what lies before it alone).
        BPT_OPS_OK(ops->copy(dev, b.f(), a.f(), n * sizeof(float)));
        EXPECT_EQ(0, std::memcmp(x.data(), b.get(n).data(), n * sizeof(float))) << "copy";
        // fill: every element is the value, nothing past n is written.
        const float value = -1.75f;
        BPT_OPS_OK(ops->fill(dev, b.f(), value, n - n / 2));
        auto filled = b.get(n);
        size_t wrong = 0;
        for (size_t i = 0; i < n; ++i)
            wrong += filled[i] != (i < n - n / 2 ? value : x[i]);
        EXPECT_EQ(0u, wrong) << "fill of the first " << n - n / 2 << " elements";
        if (n > 1) {
            BPT_OPS_OK(ops->copy(dev, b.f() + n / 2, a.f(), (n - n / 2) * sizeof(float)));
            auto part = b.get(n);
            wrong = 0;
            for (size_t i = 0; i < n; ++i)
                wrong += part[i] != (i < n / 2 ? value : x[i - n / 2]);
            EXPECT_EQ(0u, wrong) << "copy into an offset";
        }
        BPT_OPS_OK(ops->synchronize(dev));
    }
}

// ---- GEMM -------------------------------------------------------------------------------

struct GemmShape {
    int m, n, k;
};

void run_gemm_case(bp_device *dev, int ta, int tb, GemmShape s, float alpha, float beta, int pad,
                   uint32_t seed) {
    SCOPED_TRACE(::testing::Message()
                 << "gemm ta=" << ta << " tb=" << tb << " m=" << s.m << " n=" << s.n << " k=" << s.k
                 << " alpha=" << alpha << " beta=" << beta << " pad=" << pad);
    // Stored shapes: A is [m,k] or (transposed) [k,m]; B is [k,n] or [n,k]; row strides padded.
    int a_rows = ta ? s.k : s.m, a_cols = ta ? s.m : s.k;
    int b_rows = tb ? s.n : s.k, b_cols = tb ? s.k : s.n;
    int lda = a_cols + pad, ldb = b_cols + pad, ldc = s.n + pad;
    auto a = bpt::uniform((size_t)a_rows * lda, -1.0f, 1.0f, seed);
    auto b = bpt::uniform((size_t)b_rows * ldb, -1.0f, 1.0f, seed + 1);
    auto c = bpt::uniform((size_t)s.m * ldc, -1.0f, 1.0f, seed + 2);
    DevBuf da(dev, a), db(dev, b), dc(dev, c);
    BPT_OPS_OK(dev->ops->gemm(dev, ta, tb, s.m, s.n, s.k, alpha, da.f(), lda, db.f(), ldb, beta,
                              dc.f(), ldc));
    auto out = dc.get(c.size());

    auto ref = bpt::to_double(c);
    auto ad = bpt::to_double(a), bd = bpt::to_double(b);
    bpref_gemm(ta, tb, s.m, s.n, s.k, alpha, ad.data(), lda, bd.data(), ldb, beta, ref.data(), ldc);
    // fp32 dot products of length k: rounding error grows like sqrt(k) ulp in practice (k ulp
    // at worst); 1e-6 up to k = 13, 1e-5 for k >= 65 (K = 4097 included: blocked/pairwise
    // accumulation in BLAS keeps it near sqrt(k) * 6e-8 ~ 4e-6).
    double tol = s.k <= 16 ? 1e-6 : 1e-5;
    EXPECT_LE(bpt::rel_err(out, ref), tol);
    // The padding columns of C are outside the product and must not be touched (bitwise).
    for (int i = 0; i < s.m; ++i)
        for (int j = s.n; j < ldc; ++j)
            ASSERT_EQ(c[(size_t)i * ldc + j], out[(size_t)i * ldc + j])
                << "padding of C written at (" << i << "," << j << ")";
}

TEST_P(OpsTest, GemmAllTransposesAndShapes) {
    const GemmShape shapes[] = {{1, 1, 1}, {7, 13, 5}, {33, 65, 129}};
    const float ab[][2] = {{1.0f, 0.0f}, {0.75f, -0.5f}, {-1.25f, 1.0f}};
    uint32_t seed = 100;
    for (GemmShape s : shapes)
        for (int ta = 0; ta < 2; ++ta)
            for (int tb = 0; tb < 2; ++tb)
                for (auto &albe : ab)
                    for (int pad : {0, 3})
                        run_gemm_case(dev, ta, tb, s, albe[0], albe[1], pad, seed += 3);
}

TEST_P(OpsTest, GemmLongK) {
    uint32_t seed = 200;
    for (int ta = 0; ta < 2; ++ta)
        for (int tb = 0; tb < 2; ++tb)
            run_gemm_case(dev, ta, tb, {64, 48, 4097}, 0.5f, 0.25f, 1, seed += 3);
}

// beta = 0 means C is not read (the BLAS convention): workspace that was never written, here
// NaN, must not leak into the product. The core passes beta = 0 on uninitialised workspace.
TEST_P(OpsTest, GemmBetaZeroDoesNotReadC) {
    const int m = 7, n = 13, k = 5;
    auto a = bpt::uniform(m * k, -1.0f, 1.0f, 301);
    auto b = bpt::uniform(k * n, -1.0f, 1.0f, 302);
    std::vector<float> c(m * n, std::numeric_limits<float>::quiet_NaN());
    DevBuf da(dev, a), db(dev, b), dc(dev, c);
    BPT_OPS_OK(ops->gemm(dev, 0, 0, m, n, k, 1.0f, da.f(), k, db.f(), n, 0.0f, dc.f(), n));
    std::vector<double> ref(m * n, 0.0);
    auto ad = bpt::to_double(a), bd = bpt::to_double(b);
    bpref_gemm(0, 0, m, n, k, 1.0, ad.data(), k, bd.data(), n, 0.0, ref.data(), n);
    EXPECT_LE(bpt::rel_err(dc.get(m * n), ref), 1e-6); // k = 5 fp32 dot products; NaN fails
}

// An empty inner dimension (k = 0) leaves C = beta * C: scaled for beta != 0, zeros for
// beta = 0 even over NaN. Exact: one multiply per element.
TEST_P(OpsTest, GemmEmptyK) {
    const int m = 3, n = 4;
    auto c = bpt::uniform(m * n, -1.0f, 1.0f, 310);
    std::vector<float> a(1, 1.0f), b(1, 1.0f); // never read
    DevBuf da(dev, a), db(dev, b), dc(dev, c);
    BPT_OPS_OK(ops->gemm(dev, 0, 0, m, n, 0, 1.0f, da.f(), 1, db.f(), n, 0.5f, dc.f(), n));
    auto out = dc.get(m * n);
    for (int i = 0; i < m * n; ++i)
        EXPECT_EQ(0.5f * c[i], out[i]) << i;
    dc.put(std::vector<float>(m * n, std::numeric_limits<float>::quiet_NaN()));
    BPT_OPS_OK(ops->gemm(dev, 0, 0, m, n, 0, 1.0f, da.f(), 1, db.f(), n, 0.0f, dc.f(), n));
    out = dc.get(m * n);
    for (int i = 0; i < m * n; ++i)
        EXPECT_EQ(0.0f, out[i]) << i;
}

// ---- bias + activation forward, activation backward -------------------------------------

TEST_P(OpsTest, BiasActForwardEveryActivation) {
    const int shapes[][2] = {{1, 1}, {7, 13}, {1000, 33}, {4097, 3}};
    uint32_t seed = 400;
    for (int ai = 0; ai < BP_ACT_COUNT_; ++ai) {
        bp_activation act = (bp_activation)ai;
        for (auto &sh : shapes) {
            for (int with_bias = 0; with_bias < 2; ++with_bias) {
                int rows = sh[0], cols = sh[1];
                size_t n = (size_t)rows * cols;
                SCOPED_TRACE(::testing::Message() << act_name(act) << " rows=" << rows
                                                  << " cols=" << cols << " bias=" << with_bias);
                auto z = act_inputs(n, seed += 2);
                auto bias = n >= 100 ? bpt::uniform(cols, -1.0f, 1.0f, seed + 1)
                                     : bpt::uniform(cols, -0.25f, 0.25f, seed + 1);
                DevBuf dz(dev, z), db(dev, bias), da(dev, n * sizeof(float));
                BPT_OPS_OK(ops->bias_act_forward(dev, rows, cols, with_bias ? db.f() : nullptr,
                                                 dz.f(), da.f(), act, kSlope));
                auto zr = bpt::to_double(z), bd = bpt::to_double(bias);
                std::vector<double> ar(n);
                bpref_bias_act_forward(rows, cols, with_bias ? bd.data() : nullptr, zr.data(),
                                       ar.data(), act, kSlope);
                // z + bias: one fp32 rounding per element, 1e-6.
                EXPECT_LE(bpt::rel_err(dz.get(n), zr), 1e-6) << "z after the bias add";
                EXPECT_LE(bpt::rel_err(da.get(n), ar), act_tol(act)) << "a = act(z)"; // act_tol
            }
        }
    }
}

TEST_P(OpsTest, BiasActForwardIdentityInPlace) {
    for (int rows : {1, 7, 1000}) {
        const int cols = 17;
        size_t n = (size_t)rows * cols;
        auto z = bpt::uniform(n, -3.0f, 3.0f, 500 + rows);
        auto bias = bpt::uniform(cols, -1.0f, 1.0f, 600 + rows);
        DevBuf dz(dev, z), db(dev, bias);
        BPT_OPS_OK(ops->bias_act_forward(dev, rows, cols, db.f(), dz.f(), dz.f(), BP_ACT_IDENTITY,
                                         kSlope));
        auto zr = bpt::to_double(z), bd = bpt::to_double(bias);
        bpref_bias_act_forward(rows, cols, bd.data(), zr.data(), zr.data(), BP_ACT_IDENTITY,
                               kSlope);
        EXPECT_LE(bpt::rel_err(dz.get(n), zr), 1e-6) << rows; // one rounding of z + b
    }
}

TEST_P(OpsTest, ActBackwardEveryActivation) {
    uint32_t seed = 700;
    for (int ai = 0; ai < BP_ACT_COUNT_; ++ai) {
        bp_activation act = (bp_activation)ai;
        for (size_t n : {1, 7, 1000, 4097}) {
            for (int alias = 0; alias < 2; ++alias) {
                SCOPED_TRACE(::testing::Message()
                             << act_name(act) << " n=" << n << " dz==da: " << alias);
                auto z = act_inputs(n, seed += 2);
                auto g = bpt::uniform(n, -2.0f, 2.0f, seed + 1);
                DevBuf dzb(dev, z), dab(dev, g), dout(dev, n * sizeof(float));
                float *dz = alias ? dab.f() : dout.f();
                BPT_OPS_OK(ops->act_backward(dev, n, dzb.f(), dab.f(), dz, act, kSlope));
                auto zr = bpt::to_double(z), gr = bpt::to_double(g);
                std::vector<double> ref(n);
                bpref_act_backward(n, zr.data(), gr.data(), ref.data(), act, kSlope);
                auto out = alias ? dab.get(n) : dout.get(n);
                EXPECT_LE(bpt::rel_err(out, ref), act_tol(act)); // act_tol: see above
                // z is an input and stays as it was (bitwise).
                EXPECT_EQ(0, std::memcmp(z.data(), dzb.get(n).data(), n * sizeof(float)));
            }
        }
    }
}

// ---- column sums, softmax -----------------------------------------------------------------

TEST_P(OpsTest, ColSum) {
    const int shapes[][2] = {{1, 1}, {7, 13}, {1000, 65}, {4097, 3}};
    uint32_t seed = 900;
    for (auto &sh : shapes) {
        for (float beta : {0.0f, 1.0f}) {
            int rows = sh[0], cols = sh[1];
            size_t n = (size_t)rows * cols;
            SCOPED_TRACE(::testing::Message()
                         << "rows=" << rows << " cols=" << cols << " beta=" << beta);
            auto x = bpt::uniform(n, -1.0f, 1.0f, seed += 2);
            // beta = 0 must not read out (0 * NaN is NaN): the core may hand it a buffer never
            // written, here NaN; for beta = 1 out holds random values to add to.
            auto out0 = beta == 0.0f
                            ? std::vector<float>(cols, std::numeric_limits<float>::quiet_NaN())
                            : bpt::uniform(cols, -5.0f, 5.0f, seed + 1);
            DevBuf dx(dev, x), dout(dev, out0);
            BPT_OPS_OK(ops->col_sum(dev, rows, cols, dx.f(), beta, dout.f()));
            auto out = dout.get(cols);
            auto ref = bpt::to_double(out0);
            auto xd = bpt::to_double(x);
            bpref_col_sum(rows, cols, xd.data(), beta, ref.data());
            // fp32 accumulation of up to 4097 terms of +-1: ~ sqrt(rows) ulp of the partial
            // sums; 1e-6 for short columns, 1e-5 from 1000 rows.
            EXPECT_LE(bpt::rel_err(out, ref), rows < 1000 ? 1e-6 : 1e-5);
            // Deterministic: a second identical call gives the same bits.
            dout.put(out0);
            BPT_OPS_OK(ops->col_sum(dev, rows, cols, dx.f(), beta, dout.f()));
            EXPECT_EQ(0, std::memcmp(out.data(), dout.get(cols).data(), cols * sizeof(float)));
        }
    }
}

TEST_P(OpsTest, Softmax) {
    const RangeCase cases[] = {{1, 1, 5.0f},    {7, 10, 5.0f},  {1000, 13, 5.0f},
                               {3, 1000, 5.0f}, {7, 13, 80.0f}, {4097, 3, 10.0f}};
    uint32_t seed = 1100;
    for (const RangeCase &cs : cases) {
        for (int in_place = 0; in_place < 2; ++in_place) {
            size_t n = (size_t)cs.rows * cs.cols;
            SCOPED_TRACE(::testing::Message() << "rows=" << cs.rows << " cols=" << cs.cols
                                              << " range=" << cs.range << " in place " << in_place);
            auto x = bpt::uniform(n, -cs.range, cs.range, seed += 2);
            DevBuf dx(dev, x), dy(dev, n * sizeof(float));
            float *y = in_place ? dx.f() : dy.f();
            BPT_OPS_OK(ops->softmax(dev, cs.rows, cs.cols, dx.f(), y));
            auto out = in_place ? dx.get(n) : dy.get(n);
            auto xd = bpt::to_double(x);
            std::vector<double> ref(n);
            bpref_softmax(cs.rows, cs.cols, xd.data(), ref.data());
            // expf is within 1-2 ulp; x - max is exact for the classes that carry the mass
            // (Sterbenz); the row sum of up to 1000 fp32 terms adds ~sqrt(cols) ulp: 1e-5.
            EXPECT_TRUE(all_finite(out));
            EXPECT_LE(bpt::rel_err(out, ref), 1e-5);
        }
    }
}

// ---- losses -------------------------------------------------------------------------------

TEST_P(OpsTest, SoftmaxXent) {
    // 1000 classes: rows longer than a warp's share go one block per row, where the block-wide
    // reductions reuse their shared scratch (group_allreduce's leading barrier guards it).
    const RangeCase cases[] = {{1, 1, 3.0f},   {7, 10, 3.0f},   {1000, 13, 3.0f}, {4097, 3, 3.0f},
                               {7, 13, 80.0f}, {5, 100, 80.0f}, {3, 1000, 3.0f}};
    uint32_t seed = 1300;
    for (const RangeCase &cs : cases) {
        for (float smoothing : {0.0f, 0.1f}) {
            for (float scale : {1.0f, 0.37f}) {
                for (int with_grad = 0; with_grad < 2; ++with_grad) {
                    size_t n = (size_t)cs.rows * cs.cols;
                    SCOPED_TRACE(::testing::Message()
                                 << "rows=" << cs.rows << " cols=" << cs.cols
                                 << " range=" << cs.range << " smoothing=" << smoothing
                                 << " scale=" << scale << " grad=" << with_grad);
                    auto z = bpt::uniform(n, -cs.range, cs.range, seed += 2);
                    auto labels = random_labels(cs.rows, cs.cols, seed + 1);
                    DevBuf dz(dev, z), dl(dev, labels), dg(dev, n * sizeof(float)),
                        dloss(dev, cs.rows * sizeof(float));
                    BPT_OPS_OK(ops->softmax_xent(dev, cs.rows, cs.cols, dz.f(), dl.i32(), smoothing,
                                                 scale, with_grad ? dg.f() : nullptr, dloss.f()));
                    auto zd = bpt::to_double(z);
                    std::vector<double> gref(n), lref(cs.rows);
                    bpref_softmax_xent(cs.rows, cs.cols, zd.data(), labels.data(), smoothing, scale,
                                       gref.data(), lref.data());
                    // Row loss: lse - z_j in fp32 with logits up to |80| (ulp(80)/2 = 4e-6
                    // absolute on losses of order 1..100) and a log of a sum of cols terms: 1e-5.
                    // Gradient, softmax - q: expf(z - lse) within a few ulp of its argument's
                    // rounding: 1e-5.
                    expect_loss_outputs(dloss, lref, 1e-5, with_grad ? &dg : nullptr, gref, 1e-5);
                }
            }
        }
    }
}

// class_match: the first largest logit of each row against its label, with ties (the label
// on the first and on a later copy of the maximum), NaNs, infinities, and rows short enough for
// the one-warp path and long enough (1000 classes) for the one-block path on CUDA. Exact.
TEST_P(OpsTest, ClassMatch) {
    const int shapes[][2] = {{1, 1}, {7, 10}, {1000, 13}, {4097, 3}, {5, 1000}};
    uint32_t seed = 1400;
    for (auto &sh : shapes) {
        int rows = sh[0], cols = sh[1];
        SCOPED_TRACE(::testing::Message() << "rows=" << rows << " cols=" << cols);
        auto z = bpt::uniform((size_t)rows * cols, -3.0f, 3.0f, seed += 2);
        auto labels = random_labels(rows, cols, seed + 1);
        // Plant the cases random data misses, on every row where the shape allows.
        for (int r = 0; r < rows && cols >= 3; ++r) {
            float *row = &z[(size_t)r * cols];
            int kind = r % 6, a = labels[r], b = (labels[r] + 1) % cols;
            if (kind == 0) row[a] = 5.0f;               // right
            if (kind == 1) row[a] = row[b] = 5.0f;      // a tie: right only if a < b
            if (kind == 2) row[b] = NAN, row[a] = 4.0f; // a NaN is never the largest
            if (kind == 3) row[a] = INFINITY;           // right
            if (kind == 4) row[b] = INFINITY;           // wrong
            if (kind == 5) row[a] = -INFINITY;          // wrong
        }
        if (rows > 1 && cols >= 3)
            for (int j = 0; j < cols; ++j)
                z[(size_t)1 * cols + j] = NAN; // a row of NaNs never matches
        DevBuf dz(dev, z), dl(dev, labels), dm(dev, rows * sizeof(float));
        BPT_OPS_OK(ops->class_match(dev, rows, cols, dz.f(), dl.i32(), dm.f()));
        std::vector<float> got = dm.get(rows);
        std::vector<double> want(rows);
        bpref_class_match(rows, cols, z.data(), labels.data(), want.data());
        int mismatches = 0;
        for (int r = 0; r < rows; ++r)
            if (got[r] != want[r] && ++mismatches <= 5)
                ADD_FAILURE() << "row " << r << ": " << got[r] << ", expected " << want[r];
        EXPECT_EQ(mismatches, 0);
    }
}

TEST_P(OpsTest, Mse) {
    const int shapes[][2] = {{1, 1}, {7, 13}, {1000, 10}, {4097, 3}};
    uint32_t seed = 1500;
    for (auto &sh : shapes) {
        for (float scale : {1.0f, 0.37f}) {
            for (int with_grad = 0; with_grad < 2; ++with_grad) {
                int rows = sh[0], cols = sh[1];
                size_t n = (size_t)rows * cols;
                SCOPED_TRACE(::testing::Message() << "rows=" << rows << " cols=" << cols
                                                  << " scale=" << scale << " grad=" << with_grad);
                auto p = bpt::uniform(n, -2.0f, 2.0f, seed += 2);
                auto t = bpt::uniform(n, -2.0f, 2.0f, seed + 1);
                DevBuf dp(dev, p), dt(dev, t), dg(dev, n * sizeof(float)),
                    dloss(dev, rows * sizeof(float));
                BPT_OPS_OK(ops->mse(dev, rows, cols, dp.f(), dt.f(), scale,
                                    with_grad ? dg.f() : nullptr, dloss.f()));
                auto pd = bpt::to_double(p), td = bpt::to_double(t);
                std::vector<double> gref(n), lref(rows);
                bpref_mse(rows, cols, pd.data(), td.data(), scale, gref.data(), lref.data());
                // Squares summed over <= 13 columns in fp32: a few ulp, 1e-6.
                EXPECT_LE(bpt::rel_err(dloss.get(rows), lref), 1e-6) << "row_loss";
                // 2 (p - t) scale: two roundings, 1e-6.
                if (with_grad) {
                    EXPECT_LE(bpt::rel_err(dg.get(n), gref), 1e-6) << "grad";
                }
            }
        }
    }
}

TEST_P(OpsTest, BceLogits) {
    const RangeCase cases[] = {
        {1, 1, 4.0f}, {7, 13, 4.0f}, {1000, 10, 4.0f}, {4097, 3, 4.0f}, {7, 13, 100.0f}};
    uint32_t seed = 1700;
    for (const RangeCase &cs : cases) {
        for (float scale : {1.0f, 0.37f}) {
            for (int with_grad = 0; with_grad < 2; ++with_grad) {
                size_t n = (size_t)cs.rows * cs.cols;
                SCOPED_TRACE(::testing::Message()
                             << "rows=" << cs.rows << " cols=" << cs.cols << " range=" << cs.range
                             << " scale=" << scale << " grad=" << with_grad);
                auto z = bpt::uniform(n, -cs.range, cs.range, seed += 2);
                auto t = bpt::uniform(n, 0.0f, 1.0f, seed + 1);
                DevBuf dz(dev, z), dt(dev, t), dg(dev, n * sizeof(float)),
                    dloss(dev, cs.rows * sizeof(float));
                BPT_OPS_OK(ops->bce_logits(dev, cs.rows, cs.cols, dz.f(), dt.f(), scale,
                                           with_grad ? dg.f() : nullptr, dloss.f()));
                auto zd = bpt::to_double(z), td = bpt::to_double(t);
                std::vector<double> gref(n), lref(cs.rows);
                bpref_bce_logits(cs.rows, cs.cols, zd.data(), td.data(), scale, gref.data(),
                                 lref.data());
                // Row loss, max(z,0) - z t + log1p(exp(-|z|)): a few ulp of terms up to |z|
                // (100), summed over <= 13 columns; log1pf/expf 1-2 ulp: 1e-5. Gradient,
                // sigmoid(z) - t: expf 1-2 ulp, one subtraction: 1e-6.
                expect_loss_outputs(dloss, lref, 1e-5, with_grad ? &dg : nullptr, gref, 1e-6);
            }
        }
    }
}

TEST_P(OpsTest, CheckLabels) {
    const int rows = 1000, classes = 10;
    auto good = random_labels(rows, classes, 1900);
    good[0] = 0; // the boundaries are valid
    good[rows - 1] = classes - 1;
    DevBuf dl(dev, good);
    int64_t bad = 12345;
    BPT_OPS_OK(ops->check_labels(dev, rows, dl.i32(), classes, &bad));
    EXPECT_EQ(-1, bad) << "all labels in [0, classes)";

    auto neg = good;
    neg[517] = -1;
    neg[800] = -7; // the first bad row is reported
    dl.put(neg);
    bad = 12345;
    BPT_OPS_OK(ops->check_labels(dev, rows, dl.i32(), classes, &bad));
    EXPECT_EQ(517, bad) << "negative label";

    auto big = good;
    big[3] = classes; // one past the end
    big[600] = 1 << 30;
    dl.put(big);
    bad = 12345;
    BPT_OPS_OK(ops->check_labels(dev, rows, dl.i32(), classes, &bad));
    EXPECT_EQ(3, bad) << "label == classes";

    auto last = good;
    last[rows - 1] = classes + 4; // the very last row is checked too
    dl.put(last);
    bad = 12345;
    BPT_OPS_OK(ops->check_labels(dev, rows, dl.i32(), classes, &bad));
    EXPECT_EQ(rows - 1, bad) << "bad label on the last row";

    std::vector<int32_t> one = {classes - 1};
    DevBuf d1(dev, one);
    bad = 12345;
    BPT_OPS_OK(ops->check_labels(dev, 1, d1.i32(), classes, &bad));
    EXPECT_EQ(-1, bad) << "one row, label classes - 1";
}

// ---- reductions ---------------------------------------------------------------------------

TEST_P(OpsTest, SumAndSumSquares) {
    uint32_t seed = 2100;
    for (size_t n : {size_t(1), size_t(4097), size_t(1000000)}) {
        SCOPED_TRACE(::testing::Message() << "n=" << n);
        // Mixed signs with a positive mean: a float accumulator over 1e6 terms would be off by
        // ~1e-4 relative, so "accumulated in double" is what passes.
        auto x = bpt::uniform(n, -1.0f, 2.0f, seed += 2);
        DevBuf dx(dev, x), dout(dev, sizeof(float));
        auto xd = bpt::to_double(x);

        BPT_OPS_OK(ops->sum(dev, n, dx.f(), dout.f()));
        auto s1 = dout.get(1);
        BPT_OPS_OK(ops->sum(dev, n, dx.f(), dout.f()));
        auto s2 = dout.get(1);
        std::vector<double> ref = {bpref_sum(n, xd.data())};
        // Accumulated in double (error ~n * 1e-16 = 1e-10), then rounded once to float: half
        // an ulp, 6e-8 relative. 2e-7 (under two ulp) catches fp32 accumulation anywhere.
        EXPECT_LE(bpt::rel_err(s1, ref), 2e-7) << "sum";
        EXPECT_EQ(0, std::memcmp(s1.data(), s2.data(), sizeof(float))) << "sum not deterministic";

        BPT_OPS_OK(ops->sum_squares(dev, n, dx.f(), dout.f()));
        auto q1 = dout.get(1);
        BPT_OPS_OK(ops->sum_squares(dev, n, dx.f(), dout.f()));
        auto q2 = dout.get(1);
        std::vector<double> qref = {bpref_sum_squares(n, xd.data())};
        EXPECT_LE(bpt::rel_err(q1, qref), 2e-7) << "sum_squares"; // as for sum
        EXPECT_EQ(0, std::memcmp(q1.data(), q2.data(), sizeof(float)))
            << "sum_squares not deterministic";
    }
}

// ---- dropout ------------------------------------------------------------------------------

TEST_P(OpsTest, Dropout) {
    const size_t n = 1000003; // not a multiple of 4: the last Philox block is partial
    const double p = 0.3;
    const uint32_t threshold = (uint32_t)std::lround(p * 16777216.0);
    const float scale = (float)(1.0 / (1.0 - p));
    const uint64_t seed = 0x1234567890abcdefull, stream = 42;
    // Bounded away from 0, so a kept element is never 0 and y != 0 identifies the mask.
    auto x = bpt::uniform(n, 0.25f, 2.0f, 2300);
    DevBuf dx(dev, x), dy(dev, n * sizeof(float));

    BPT_OPS_OK(ops->dropout(dev, n, dx.f(), dy.f(), seed, stream, 0, threshold, scale));
    auto y = dy.get(n);

    // Known values: element i is kept iff bp_dropout_keep(seed, stream, i, threshold), the
    // shared counter-based draw evaluated here on the host; a kept element is x * scale
    // exactly (one fp32 multiply, correctly rounded everywhere), a dropped one is 0.
    size_t mismatches = 0, kept = 0, first_bad = n;
    for (size_t i = 0; i < n; ++i) {
        bool keep = bp_dropout_keep(seed, stream, i, threshold);
        float want = keep ? x[i] * scale : 0.0f;
        if (std::memcmp(&want, &y[i], sizeof(float)) != 0) {
            if (first_bad == n) first_bad = i;
            ++mismatches;
        }
        kept += y[i] != 0.0f;
    }
    EXPECT_EQ(0u, mismatches) << "first at " << first_bad;

    // Kept fraction: Binomial(n, q), q = 1 - threshold / 2^24; within 5 standard deviations
    // (a false failure has probability ~6e-7; sd = sqrt(n q (1-q)) ~ 458 here).
    double q = 1.0 - threshold / 16777216.0;
    double sd = std::sqrt(n * q * (1.0 - q));
    EXPECT_LE(std::fabs((double)kept - n * q), 5.0 * sd) << "kept " << kept << " of " << n;

    // The same (seed, stream) gives the same mask, bitwise.
    DevBuf dy2(dev, n * sizeof(float));
    BPT_OPS_OK(ops->dropout(dev, n, dx.f(), dy2.f(), seed, stream, 0, threshold, scale));
    auto y2 = dy2.get(n);
    EXPECT_EQ(0, std::memcmp(y.data(), y2.data(), n * sizeof(float))) << "same seed, stream";

    // Another stream (and another seed) gives another mask: two independent masks differ in
    // 2 q (1-q) n positions (42% here, sd ~ 0.05%); accept 40%..44%.
    for (int which = 0; which < 2; ++which) {
        uint64_t s2 = which ? seed + 1 : seed, st2 = which ? stream : stream + 1;
        BPT_OPS_OK(ops->dropout(dev, n, dx.f(), dy2.f(), s2, st2, 0, threshold, scale));
        auto y3 = dy2.get(n);
        size_t differ = 0;
        for (size_t i = 0; i < n; ++i)
            differ += (y[i] != 0.0f) != (y3[i] != 0.0f);
        double frac = (double)differ / n, want = 2.0 * q * (1.0 - q);
        EXPECT_NEAR(want, frac, 0.02) << (which ? "other seed" : "other stream");
    }

    // The same call on the gradient, in place, applies the same mask: g * scale where y was
    // kept, 0 where it was dropped.
    auto g = bpt::uniform(n, -2.0f, -0.25f, 2301);
    DevBuf dg(dev, g);
    BPT_OPS_OK(ops->dropout(dev, n, dg.f(), dg.f(), seed, stream, 0, threshold, scale));
    auto gy = dg.get(n);
    mismatches = 0;
    for (size_t i = 0; i < n; ++i) {
        float want = y[i] != 0.0f ? g[i] * scale : 0.0f;
        mismatches += std::memcmp(&want, &gy[i], sizeof(float)) != 0;
    }
    EXPECT_EQ(0u, mismatches) << "gradient mask differs from the forward mask";

    // threshold 0 keeps everything: y = x * scale.
    BPT_OPS_OK(ops->dropout(dev, 7, dx.f(), dy2.f(), seed, stream, 0, 0, 2.0f));
    auto all = dy2.get(7);
    for (size_t i = 0; i < 7; ++i)
        EXPECT_EQ(x[i] * 2.0f, all[i]) << i;

    // An offset: pieces starting at `first` (not a multiple of 4, so the first and last Philox
    // blocks are partial) draw the mask the whole call drew at the same stream indices.
    for (uint64_t first : {0ull, 1ull, 5ull, 4093ull, 500002ull}) {
        for (size_t len : {(size_t)1, (size_t)3, (size_t)7, (size_t)4099}) {
            DevBuf piece(dev, len * sizeof(float));
            BPT_OPS_OK(ops->dropout(dev, len, dx.f() + first, piece.f(), seed, stream, first,
                                    threshold, scale));
            auto got = piece.get(len);
            EXPECT_EQ(0, std::memcmp(got.data(), y.data() + first, len * sizeof(float)))
                << "first " << first << ", " << len << " elements";
        }
    }
}

// ---- optimizer update ---------------------------------------------------------------------

struct OptimCase {
    const char *name;
    bp_optim_kind kind;
    float lr, weight_decay, momentum, dampening;
    int nesterov;
    float grad_scale, clip_value;
};

// Adam's hyper-parameters in every case (the defaults).
const float kBeta1 = 0.9f, kBeta2 = 0.999f, kEps = 1e-8f;

// The vtable arguments for step t, computed on the host as the core does (in double, then
// rounded to float).
bp_update_args make_args(const OptimCase &c, int64_t t, size_t n, float *p, const float *g,
                         float *m, float *v) {
    bp_update_args a;
    std::memset(&a, 0, sizeof a);
    a.kind = c.kind;
    a.n = n;
    a.param = p;
    a.grad = g;
    a.m = m;
    a.v = v;
    a.grad_scale = c.grad_scale;
    a.clip_value = c.clip_value;
    a.lr = c.lr;
    a.weight_decay = c.weight_decay;
    a.momentum = c.momentum;
    a.one_minus_dampening = (float)(1.0 - (double)c.dampening);
    a.nesterov = c.nesterov;
    a.first_step = t == 1;
    a.beta2 = kBeta2;
    a.eps = kEps;
    a.one_minus_beta1 = (float)(1.0 - (double)kBeta1);
    a.one_minus_beta2 = (float)(1.0 - (double)kBeta2);
    a.step_size = (float)((double)c.lr / (1.0 - std::pow((double)kBeta1, (double)t)));
    a.bc2_sqrt = (float)std::sqrt(1.0 - std::pow((double)kBeta2, (double)t));
    a.decay_factor = (float)(1.0 - (double)c.lr * (double)c.weight_decay);
    return a;
}

bpref_optim ref_config(const OptimCase &c) {
    bpref_optim o;
    std::memset(&o, 0, sizeof o);
    o.kind = c.kind;
    o.lr = c.lr;
    o.weight_decay = c.weight_decay;
    o.momentum = c.momentum;
    o.dampening = c.dampening;
    o.nesterov = c.nesterov;
    o.beta1 = kBeta1; // the float hyper-parameters, exactly as the device sees them
    o.beta2 = kBeta2;
    o.eps = kEps;
    o.grad_scale = c.grad_scale;
    o.clip_value = c.clip_value;
    return o;
}

TEST_P(OpsTest, UpdateThreeStepsEveryOptimizer) {
    const OptimCase cases[] = {
        {"sgd plain", BP_OPTIM_SGD, 0.1f, 0.0f, 0.0f, 0.0f, 0, 1.0f, 0.0f},
        {"sgd weight decay", BP_OPTIM_SGD, 0.1f, 0.1f, 0.0f, 0.0f, 0, 1.0f, 0.0f},
        {"sgd momentum", BP_OPTIM_SGD, 0.1f, 0.0f, 0.9f, 0.0f, 0, 1.0f, 0.0f},
        {"sgd momentum dampening", BP_OPTIM_SGD, 0.1f, 0.0f, 0.9f, 0.3f, 0, 1.0f, 0.0f},
        {"sgd nesterov", BP_OPTIM_SGD, 0.1f, 0.0f, 0.9f, 0.0f, 1, 1.0f, 0.0f},
        {"sgd momentum weight decay", BP_OPTIM_SGD, 0.1f, 0.1f, 0.9f, 0.0f, 0, 1.0f, 0.0f},
        {"sgd scale clip", BP_OPTIM_SGD, 0.1f, 0.1f, 0.9f, 0.0f, 1, 0.5f, 0.3f},
        {"adam", BP_OPTIM_ADAM, 0.1f, 0.0f, 0.0f, 0.0f, 0, 1.0f, 0.0f},
        {"adam weight decay", BP_OPTIM_ADAM, 0.1f, 0.1f, 0.0f, 0.0f, 0, 1.0f, 0.0f},
        {"adam scale clip", BP_OPTIM_ADAM, 0.1f, 0.1f, 0.0f, 0.0f, 0, 0.5f, 0.3f},
        {"adamw", BP_OPTIM_ADAMW, 0.1f, 0.1f, 0.0f, 0.0f, 0, 1.0f, 0.0f},
        {"adamw scale clip", BP_OPTIM_ADAMW, 0.1f, 0.1f, 0.0f, 0.0f, 0, 0.5f, 0.3f},
    };
    uint32_t seed = 2500;
    for (const OptimCase &c : cases) {
        for (size_t n : {size_t(1), size_t(7), size_t(4097)}) {
            SCOPED_TRACE(::testing::Message() << c.name << " n=" << n);
            bool sgd = c.kind == BP_OPTIM_SGD, has_m = !sgd || c.momentum != 0.0f;
            auto p0 = bpt::uniform(n, -1.0f, 1.0f, seed += 10);
            // SGD's momentum buffer starts as garbage: the first step must overwrite it, not
            // read it. Adam's moments start at zero, as the optimizer creates them.
            std::vector<float> m0 =
                sgd ? bpt::uniform(n, -3.0f, 3.0f, seed + 1) : std::vector<float>(n, 0.0f);
            std::vector<float> v0(n, 0.0f);
            DevBuf dp(dev, p0), dm(dev, m0), dv(dev, v0), dg(dev, n * sizeof(float));
            auto pr = bpt::to_double(p0), mr = bpt::to_double(m0), vr = bpt::to_double(v0);
            bpref_optim ro = ref_config(c);
            for (int64_t t = 1; t <= 3; ++t) {
                SCOPED_TRACE(::testing::Message() << "step " << t);
                auto g = bpt::uniform(n, -1.0f, 1.0f, seed + 2 + (uint32_t)t);
                dg.put(g);
                auto gd = bpt::to_double(g);
                bp_update_args args = make_args(c, t, n, dp.f(), dg.f(), has_m ? dm.f() : nullptr,
                                                sgd ? nullptr : dv.f());
                BPT_OPS_OK(ops->update(dev, &args));
                bpref_optim_step(&ro, t, n, pr.data(), gd.data(), mr.data(), vr.data());
                // Parameters: a few fp32 roundings per step on values of order 1: 1e-6.
                EXPECT_LE(bpt::rel_err(dp.get(n), pr), 1e-6) << "param";
                // Moments / momentum buffer: one or two roundings per step: 1e-6.
                if (has_m) {
                    EXPECT_LE(bpt::rel_err(dm.get(n), mr), 1e-6) << "m";
                }
                if (!sgd) {
                    EXPECT_LE(bpt::rel_err(dv.get(n), vr), 1e-6) << "v";
                }
                // The gradient is an input and stays as it was (bitwise).
                EXPECT_EQ(0, std::memcmp(g.data(), dg.get(n).data(), n * sizeof(float)))
                    << "grad modified";
            }
            // The total change p - p0 (of order lr) is checked on its own, so an error small
            // next to |p| still shows: rounding of p (ulp(1)/2 = 6e-8) over a change ~0.1..0.3
            // is ~1e-6 relative; tolerance 1e-5.
            auto p = dp.get(n);
            std::vector<float> dlt(n);
            std::vector<double> dref(n);
            for (size_t i = 0; i < n; ++i) {
                dlt[i] = (float)((double)p[i] - (double)p0[i]);
                dref[i] = pr[i] - (double)p0[i];
            }
            EXPECT_LE(bpt::rel_err(dlt, dref), 1e-5) << "p - p0";
        }
    }
}

// At exactly z = 0 the derivative is PyTorch's: 0 for ReLU, the slope for leaky ReLU (and both
// signed zeros behave alike). Exact: one multiply by 0, 1 or the slope.
TEST_P(OpsTest, ActBackwardAtTheKink) {
    for (bp_activation act : {BP_ACT_RELU, BP_ACT_LEAKY_RELU}) {
        SCOPED_TRACE(act_name(act));
        std::vector<float> z = {0.0f, -0.0f, 0.5f, -0.5f, 0.0f};
        auto da = bpt::uniform(z.size(), 0.5f, 2.0f, 2700);
        DevBuf dz(dev, z), dda(dev, da), dout(dev, z.size() * sizeof(float));
        BPT_OPS_OK(ops->act_backward(dev, z.size(), dz.f(), dda.f(), dout.f(), act, kSlope));
        auto out = dout.get(z.size());
        for (size_t i = 0; i < z.size(); ++i) {
            float want = da[i] * (float)bpref_act_derivative(z[i], act, kSlope);
            EXPECT_EQ(want, out[i]) << "z = " << z[i];
        }
    }
}

INSTANTIATE_TEST_SUITE_P(Backends, OpsTest, ::testing::ValuesIn(bpt::all_backends()),
                         bpt::backend_param_name);

} // namespace
