// Finite-difference checks of the library's derivatives, per backend.
//
// For every activation: the backend's act_backward (da = 1) against central differences of the
// backend's own bias_act_forward in fp32, and against central differences in double of the
// float64 reference's act. For every loss: the backend's gradient (grad_scale = 1) against
// central differences of the backend's row_loss summed over rows, in fp32, and against
// central differences in double of the reference loss. The reference's own derivatives are
// also held to its central differences, so the two halves of ref_ops.c agree.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "core/backend.h"
#include "ref_ops.h"
#include "support_ops.h"

namespace {

using bpt::act_name;
using bpt::DevBuf;

const float kSlope = 0.07f;

class GradCheckTest : public bpt::BackendOpsTest {};

// ---- activations --------------------------------------------------------------------------

// fp32 step per activation. The backend's act is evaluated at z +- h rounded to float, and the
// difference is divided by the actual (z+h) - (z-h) in double.
//   Piecewise linear (identity, ReLU, leaky ReLU): no truncation error away from the kink, so a
//   large h = 0.1 makes the rounding error small (2 ulp(|f| <= 4) / 2h ~ 2.4e-6); points
//   within 2h of the kink are moved off it.
//   Smooth ones: h = 1e-2 balances truncation (h^2 |f'''| / 6 <= 2e-5, third derivatives O(1)
//   on [-4, 4]) against rounding (2 ulp(|f|) / 2h ~ 2 * 2.4e-7 / 2e-2 = 2.4e-5).
float act_step(bp_activation act) {
    switch (act) {
    case BP_ACT_IDENTITY:
    case BP_ACT_RELU:
    case BP_ACT_LEAKY_RELU:
        return 0.1f;
    default:
        return 1e-2f;
    }
}
// double step for the reference: truncation ~h^2 / 6 = 1.7e-11, rounding ~1e-16 / h = 1e-11.
const double kActStepD = 1e-5;

TEST_P(GradCheckTest, EveryActivationDerivativeMatchesFiniteDifferences) {
    const size_t n = 2000;
    uint32_t seed = 3100;
    for (int ai = 0; ai < BP_ACT_COUNT_; ++ai) {
        bp_activation act = (bp_activation)ai;
        SCOPED_TRACE(act_name(act));
        bool kinked = act == BP_ACT_RELU || act == BP_ACT_LEAKY_RELU;
        const float h = act_step(act);
        // Points in [-4, 4]; for ReLU and leaky ReLU none within 2h of the kink at 0 (those are
        // moved to +-0.5), so no difference straddles it.
        auto z = bpt::uniform(n, -4.0f, 4.0f, seed += 2);
        if (kinked)
            for (float &x : z)
                if (std::fabs(x) < 2.0f * h) x = x < 0 ? -0.5f : 0.5f;
        std::vector<float> zp(n), zm(n);
        for (size_t i = 0; i < n; ++i) {
            zp[i] = z[i] + h;
            zm[i] = z[i] - h;
        }

        // The backend's derivative, da = 1.
        std::vector<float> ones(n, 1.0f);
        DevBuf dz(dev, z), dda(dev, ones), ddz(dev, n * sizeof(float));
        BPT_OPS_OK(ops->act_backward(dev, n, dz.f(), dda.f(), ddz.f(), act, kSlope));
        auto deriv = ddz.get(n);

        // Central differences of the backend's forward, in fp32.
        DevBuf dzp(dev, zp), dzm(dev, zm), dap(dev, n * sizeof(float)), dam(dev, n * sizeof(float));
        BPT_OPS_OK(ops->bias_act_forward(dev, 1, (int)n, nullptr, dzp.f(), dap.f(), act, kSlope));
        BPT_OPS_OK(ops->bias_act_forward(dev, 1, (int)n, nullptr, dzm.f(), dam.f(), act, kSlope));
        auto ap = dap.get(n), am = dam.get(n);
        std::vector<double> fd32(n), fd64(n), ref_deriv(n);
        for (size_t i = 0; i < n; ++i) {
            fd32[i] = ((double)ap[i] - (double)am[i]) / ((double)zp[i] - (double)zm[i]);
            double x = z[i];
            fd64[i] =
                (bpref_act(x + kActStepD, act, kSlope) - bpref_act(x - kActStepD, act, kSlope)) /
                (2.0 * kActStepD);
            ref_deriv[i] = bpref_act_derivative(x, act, kSlope);
        }
        // Backend derivative vs fp32 differences of the backend: truncation <= 2e-5 and
        // rounding ~2.4e-5 per element (see act_step) on derivatives of order 0.1..1:
        // norm-wise ~1e-4; tolerance 1e-3 (an error in a derivative formula is O(1e-1)).
        EXPECT_LE(bpt::rel_err(deriv, fd32), 1e-3) << "vs fp32 FD of the backend's forward";
        // Backend derivative vs double differences of the reference: the FD is good to 1e-10,
        // so what remains is the backend's fp32 derivative (act_tol in test_ops.cc): 1e-5.
        EXPECT_LE(bpt::rel_err(deriv, fd64), 1e-5) << "vs double FD of the reference";
        // The reference's own derivative vs its double differences: truncation and rounding
        // ~1e-10 (see kActStepD): 1e-8.
        double num = 0.0, den = 0.0;
        for (size_t i = 0; i < n; ++i) {
            num += (ref_deriv[i] - fd64[i]) * (ref_deriv[i] - fd64[i]);
            den += fd64[i] * fd64[i];
        }
        EXPECT_LE(std::sqrt(num / den), 1e-8) << "reference derivative vs its own FD";
    }
}

// ---- losses -------------------------------------------------------------------------------

enum LossKind { kXent, kXentSmooth, kMse, kBce };

const char *loss_name(LossKind k) {
    switch (k) {
    case kXent:
        return "softmax_xent";
    case kXentSmooth:
        return "softmax_xent smoothing 0.1";
    case kMse:
        return "mse";
    default:
        return "bce_logits";
    }
}

// Central differences of the backend's total loss (row losses summed in double; only the
// perturbed row changes, and the other rows' bits cancel exactly) in fp32, step h.
struct LossProblem {
    LossKind kind;
    int rows, cols;
    std::vector<float> x;       // logits or predictions
    std::vector<float> target;  // MSE, BCE
    std::vector<int32_t> label; // cross-entropy
    float smoothing() const {
        return kind == kXentSmooth ? 0.1f : 0.0f;
    }
};

bp_status backend_loss(bp_device *dev, const LossProblem &p, const float *x, const float *target,
                       const int32_t *label, float *grad, float *row_loss) {
    switch (p.kind) {
    case kXent:
    case kXentSmooth:
        return dev->ops->softmax_xent(dev, p.rows, p.cols, x, label, p.smoothing(), 1.0f, grad,
                                      row_loss);
    case kMse:
        return dev->ops->mse(dev, p.rows, p.cols, x, target, 1.0f, grad, row_loss);
    default:
        return dev->ops->bce_logits(dev, p.rows, p.cols, x, target, 1.0f, grad, row_loss);
    }
}

// The reference's total loss (and gradient when grad is not NULL) at x, in double.
double ref_loss(const LossProblem &p, const std::vector<double> &x, double *grad) {
    std::vector<double> rl(p.rows);
    std::vector<double> t = bpt::to_double(p.target);
    switch (p.kind) {
    case kXent:
    case kXentSmooth:
        bpref_softmax_xent(p.rows, p.cols, x.data(), p.label.data(), p.smoothing(), 1.0, grad,
                           rl.data());
        break;
    case kMse:
        bpref_mse(p.rows, p.cols, x.data(), t.data(), 1.0, grad, rl.data());
        break;
    default:
        bpref_bce_logits(p.rows, p.cols, x.data(), t.data(), 1.0, grad, rl.data());
        break;
    }
    double s = 0.0;
    for (double v : rl)
        s += v;
    return s;
}

TEST_P(GradCheckTest, EveryLossGradientMatchesFiniteDifferences) {
    const int rows = 5, cols = 7;
    const size_t n = (size_t)rows * cols;
    uint32_t seed = 3300;
    for (LossKind kind : {kXent, kXentSmooth, kMse, kBce}) {
        SCOPED_TRACE(loss_name(kind));
        LossProblem p;
        p.kind = kind;
        p.rows = rows;
        p.cols = cols;
        p.x = bpt::uniform(n, -2.0f, 2.0f, seed += 3);
        p.target = kind == kBce ? bpt::uniform(n, 0.0f, 1.0f, seed + 1)
                                : bpt::uniform(n, -1.0f, 1.0f, seed + 1);
        p.label = bpt::random_labels(rows, cols, seed + 2);

        DevBuf dx(dev, p.x), dt(dev, p.target), dl(dev, p.label), dg(dev, n * sizeof(float)),
            dloss(dev, rows * sizeof(float));
        BPT_OPS_OK(backend_loss(dev, p, dx.f(), dt.f(), dl.i32(), dg.f(), dloss.f()));
        auto grad = dg.get(n);

        // fp32 central differences of the backend's summed row losses, one element at a time.
        // h = 1e-2: truncation h^2 |f'''| / 6 ~ 2e-5 (third derivatives O(1) for inputs in
        // [-2, 2]; 0 for MSE), rounding ulp(row loss ~ 2..10) / 2h ~ 5e-5: norm-wise ~1e-4
        // on gradients of order 0.1..1; tolerance 1e-3.
        const float h = 1e-2f;
        std::vector<double> fd32(n);
        for (size_t i = 0; i < n; ++i) {
            auto xp = p.x, xm = p.x;
            xp[i] += h;
            xm[i] -= h;
            double lp = 0.0, lm = 0.0;
            dx.put(xp);
            BPT_OPS_OK(backend_loss(dev, p, dx.f(), dt.f(), dl.i32(), nullptr, dloss.f()));
            for (float v : dloss.get(rows))
                lp += v;
            dx.put(xm);
            BPT_OPS_OK(backend_loss(dev, p, dx.f(), dt.f(), dl.i32(), nullptr, dloss.f()));
            for (float v : dloss.get(rows))
                lm += v;
            fd32[i] = (lp - lm) / ((double)xp[i] - (double)xm[i]);
        }
        EXPECT_LE(bpt::rel_err(grad, fd32), 1e-3) << "vs fp32 FD of the backend's row_loss";

        // Double central differences of the reference loss, h = 1e-5: truncation h^2 |f'''| / 6
        // ~ 2e-11, rounding eps |loss| / h ~ 2e-16 * 10 / 1e-5 = 2e-10, on gradients of order
        // 0.1..1.
        const double hd = 1e-5;
        auto xd = bpt::to_double(p.x);
        std::vector<double> fd64(n), gref(n);
        ref_loss(p, xd, gref.data());
        for (size_t i = 0; i < n; ++i) {
            auto xp = xd, xm = xd;
            xp[i] += hd;
            xm[i] -= hd;
            fd64[i] = (ref_loss(p, xp, nullptr) - ref_loss(p, xm, nullptr)) / (2.0 * hd);
        }
        // The reference gradient vs its own differences: ~1e-8 per element: 1e-7.
        double num = 0.0, den = 0.0;
        for (size_t i = 0; i < n; ++i) {
            num += (gref[i] - fd64[i]) * (gref[i] - fd64[i]);
            den += fd64[i] * fd64[i];
        }
        EXPECT_LE(std::sqrt(num / den), 1e-7) << "reference gradient vs its own FD";
        // The backend's fp32 gradient vs the double differences: a few fp32 roundings of
        // softmax - q, sigmoid - t or 2 (p - t): 1e-5.
        EXPECT_LE(bpt::rel_err(grad, fd64), 1e-5) << "vs double FD of the reference loss";
    }
}

INSTANTIATE_TEST_SUITE_P(Backends, GradCheckTest, ::testing::ValuesIn(bpt::all_backends()),
                         bpt::backend_param_name);

} // namespace
