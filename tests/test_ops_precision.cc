// The entries of the tf32 and bf16 modes (core/backend.h), on every backend, against the
// float64 reference: gemm_ex in each mode and shape, its fused epilogues where the backend has
// them, cast, bias_act_forward_ex, act_backward_ex and the update that writes the bf16 copy.
// Each tolerance is stated, with its reason, next to its check.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "core/backend.h"
#include "kernels/bp_math.h"
#include "ref_lowp.h"
#include "ref_ops.h"
#include "support_ops.h"

namespace {

using bpt::DevBuf;

std::string sci(double v) {
    std::ostringstream o;
    o << std::scientific << v;
    return o.str();
}

class PrecisionOps : public bpt::BackendOpsTest {};

struct Mode {
    const char *name;
    bp_eltype type;
    int tf32;
};
const Mode kModes[] = {{"fp32", BP_EL_F32, 0}, {"tf32", BP_EL_F32, 1}, {"bf16", BP_EL_BF16, 0}};

std::vector<uint16_t> to_bf16(const std::vector<float> &v) {
    std::vector<uint16_t> h(v.size());
    for (size_t i = 0; i < v.size(); ++i)
        h[i] = bp_f32_to_bf16(v[i]);
    return h;
}

// The values an operand holds as the mode's GEMM sees them: bf16 and fp32 as stored, a TF32
// operand rounded by `how` (the device's own: nearest even, toward zero or half away).
std::vector<double> as_seen(const std::vector<float> &v, const Mode &m,
                            bpref_rounding how = BPREF_NEAREST_EVEN) {
    std::vector<double> d(v.size());
    for (size_t i = 0; i < v.size(); ++i)
        d[i] = m.type == BP_EL_BF16 ? bpref_round_bf16(v[i])
               : m.tf32             ? bpref_round_tf32_as(v[i], how)
                                    : (double)v[i];
    return d;
}

// The least of err(how) over the roundings the mode's operands may have had: one, or for TF32
// the three a GPU may use (docs/precision.md). The device rounds by one of them, so against
// that one only the fp32 sum is left; a rounding left out or moved stays far from all three.
template <class Err> bpref_rounding closest_rounding(const Mode &m, Err err) {
    bpref_rounding best = BPREF_NEAREST_EVEN;
    if (!m.tf32) return best;
    double e = err(best);
    for (bpref_rounding how : {BPREF_TOWARD_ZERO, BPREF_HALF_AWAY}) {
        double eh = err(how);
        if (eh < e) e = eh, best = how;
    }
    return best;
}
template <class Err> double least_over_roundings(const Mode &m, Err err) {
    return err(closest_rounding(m, err));
}

// Whether a fusing backend refused g where the model composes it instead (core/precision.c:
// any failure of a plan but out of memory; cuBLASLt may answer any problem with
// NOT_SUPPORTED, INVALID_VALUE or no algorithm, cudaemu's variants do). Recorded by the
// caller; never so where the backend has no plans.
bool refused_and_composed(const bp_backend_ops *ops, bp_status st) {
    return st != BP_OK && st != BP_ERR_OUT_OF_MEMORY && ops->gemm_plan != nullptr;
}

// An operand on the device in the mode's type.
void put_operand(DevBuf &buf, const std::vector<float> &v, const Mode &m) {
    if (m.type == BP_EL_BF16)
        buf.put(to_bf16(v));
    else
        buf.put(v);
}

std::vector<uint16_t> get_u16(bp_device *dev, const void *p, size_t n) {
    std::vector<uint16_t> h(n);
    EXPECT_EQ(BP_OK, dev->ops->download(dev, h.data(), p, n * sizeof(uint16_t)));
    return h;
}

std::vector<float> widen(const std::vector<uint16_t> &h) {
    std::vector<float> f(h.size());
    for (size_t i = 0; i < h.size(); ++i)
        f[i] = bp_bf16_to_f32(h[i]);
    return f;
}

struct Shape {
    int m, n, k;
};

bp_gemm_desc desc_of(const Mode &mode, int ta, int tb, Shape s, float alpha, float beta) {
    bp_gemm_desc g;
    std::memset(&g, 0, sizeof g);
    g.trans_a = ta;
    g.trans_b = tb;
    g.m = s.m;
    g.n = s.n;
    g.k = s.k;
    g.alpha = alpha;
    g.beta = beta;
    g.ab_type = mode.type;
    g.tf32 = mode.tf32;
    g.c_type = BP_EL_F32;
    return g;
}

// Scratch for g on dev (none when the backend needs none), freed with the buffer.
struct Scratch {
    Scratch(bp_device *dev, const bp_gemm_desc &g)
        : bytes(dev->ops->gemm_scratch ? dev->ops->gemm_scratch(&g) : 0),
          buf(dev, bytes ? bytes : 1) {}
    size_t bytes;
    DevBuf buf;
    void *ptr() const {
        return bytes ? buf.f() : nullptr;
    }
};

void gemm_case(bp_device *dev, const Mode &mode, int ta, int tb, Shape s, float alpha, float beta,
               int pad, uint32_t seed, double *worst_plain, double *worst_rounded, int *refused) {
    SCOPED_TRACE(::testing::Message()
                 << mode.name << " ta=" << ta << " tb=" << tb << " m=" << s.m << " n=" << s.n
                 << " k=" << s.k << " alpha=" << alpha << " beta=" << beta << " pad=" << pad);
    int a_rows = ta ? s.k : s.m, a_cols = ta ? s.m : s.k;
    int b_rows = tb ? s.n : s.k, b_cols = tb ? s.k : s.n;
    int lda = a_cols + pad, ldb = b_cols + pad, ldc = s.n + pad;
    auto a = bpt::uniform((size_t)a_rows * lda, -1.0f, 1.0f, seed);
    auto b = bpt::uniform((size_t)b_rows * ldb, -1.0f, 1.0f, seed + 1);
    auto c = bpt::uniform((size_t)s.m * ldc, -1.0f, 1.0f, seed + 2);
    size_t el = bp_eltype_size(mode.type);
    DevBuf da(dev, a.size() * el), db(dev, b.size() * el), dc(dev, c);
    put_operand(da, a, mode);
    put_operand(db, b, mode);
    bp_gemm_desc g = desc_of(mode, ta, tb, s, alpha, beta);
    g.a = da.f();
    g.lda = lda;
    g.b = db.f();
    g.ldb = ldb;
    g.c = dc.f();
    g.ldc = ldc;
    Scratch scratch(dev, g);
    g.scratch = scratch.ptr();
    bp_status st = dev->ops->gemm_ex(dev, &g, nullptr);
    if (refused_and_composed(dev->ops, st)) {
        ++*refused;
        return;
    }
    ASSERT_EQ(BP_OK, st) << bp_last_error();
    auto out = dc.get(c.size());

    // Against the product of the operands as the mode sees them: only the fp32 accumulation is
    // left, as for gemm (test_ops.cc): 1e-6 up to k = 16, 1e-5 beyond, in any summation order.
    auto ap = bpt::to_double(a), bp = bpt::to_double(b);
    double rounded = least_over_roundings(mode, [&](bpref_rounding how) {
        auto ref_r = bpt::to_double(c);
        auto ar = as_seen(a, mode, how), br = as_seen(b, mode, how);
        bpref_gemm(ta, tb, s.m, s.n, s.k, alpha, ar.data(), lda, br.data(), ldb, beta, ref_r.data(),
                   ldc);
        return bpt::rel_err(out, ref_r);
    });
    EXPECT_LE(rounded, s.k <= 16 ? 1e-6 : 1e-5) << "vs the rounded operands";
    *worst_rounded = std::max(*worst_rounded, rounded);
    auto ref_p = bpt::to_double(c);
    bpref_gemm(ta, tb, s.m, s.n, s.k, alpha, ap.data(), lda, bp.data(), ldb, beta, ref_p.data(),
               ldc);
    // Against the exact product of the fp32 operands: the mode's own error. Each operand holds
    // a relative rounding error u, so each term a b of a sum is off by at most (2u + u^2) |a b|:
    // the error is measured against the norm of the sums of |terms| (|alpha| |A| |B| +
    // |beta| |C|), not of the result, which cancellation (k = 1, beta < 0) can make as small as
    // it likes, and the bound is 2u + u^2 plus the fp32 sum's 1e-5. u is 2^-9 for bf16 (stored
    // rounded to nearest by the host): 3.9e-3, observed up to 3.4e-3 (k = 1), limit 1e-2 (was
    // so). TF32 rounded by the device to nearest has u = 2^-11, but truncation, which a GPU
    // may use, has u = 2^-10: bound 2^-9 + 2^-20 + 1e-5 = 1.98e-3 (was 1e-3, nearest's 9.8e-4
    // bound); observed 4.9e-4 nearest, 6.7e-4 truncated (k = 1; less for long sums).
    std::vector<double> mag(c.size(), 0.0), aa(ap.size()), ba(bp.size());
    for (size_t i = 0; i < ap.size(); ++i)
        aa[i] = std::fabs(ap[i]);
    for (size_t i = 0; i < bp.size(); ++i)
        ba[i] = std::fabs(bp[i]);
    for (size_t i = 0; i < c.size(); ++i)
        mag[i] = std::fabs(beta * c[i]);
    bpref_gemm(ta, tb, s.m, s.n, s.k, std::fabs(alpha), aa.data(), lda, ba.data(), ldb, 1.0,
               mag.data(), ldc);
    double num = 0.0, den = 0.0;
    for (int i = 0; i < s.m; ++i)
        for (int j = 0; j < s.n; ++j) {
            size_t q = (size_t)i * ldc + j;
            double d = std::isfinite(out[q]) ? out[q] - ref_p[q] : INFINITY;
            num += d * d;
            den += mag[q] * mag[q];
        }
    double plain = std::sqrt(num / den);
    double tol = mode.type == BP_EL_BF16 ? 1e-2 : mode.tf32 ? 0x1p-9 + 0x1p-20 + 1e-5 : 1e-5;
    EXPECT_LE(plain, tol) << "vs the exact product";
    *worst_plain = std::max(*worst_plain, plain);
    for (int i = 0; i < s.m; ++i)
        for (int j = s.n; j < ldc; ++j)
            ASSERT_EQ(c[(size_t)i * ldc + j], out[(size_t)i * ldc + j]) << "padding of C written";
}

// Shapes past the CPU's blocks (256 rows, 256 of k) as well as small ones.
TEST_P(PrecisionOps, GemmExEveryModeTransposeAndShape) {
    const Shape shapes[] = {{1, 1, 1}, {7, 13, 5}, {33, 65, 129}, {300, 20, 600}};
    const float ab[][2] = {{1.0f, 0.0f}, {0.75f, -0.5f}};
    uint32_t seed = 7000;
    for (const Mode &mode : kModes) {
        double worst = 0.0, worst_rounded = 0.0;
        int refused = 0, cases = 0;
        for (Shape s : shapes)
            for (int ta = 0; ta < 2; ++ta)
                for (int tb = 0; tb < 2; ++tb)
                    for (auto &albe : ab)
                        for (int pad : {0, 3}) {
                            ++cases;
                            gemm_case(dev, mode, ta, tb, s, albe[0], albe[1], pad, seed += 3,
                                      &worst, &worst_rounded, &refused);
                        }
        // A refusal (a bf16 leading dimension less aligned than an algorithm wants) is the
        // model's to compose; the aligned cases run.
        EXPECT_LT(refused, cases) << mode.name << ": every case refused";
        RecordProperty(std::string("refused_") + mode.name, std::to_string(refused));
        RecordProperty(std::string("worst_plain_rel_err_") + mode.name, sci(worst));
        RecordProperty(std::string("worst_rounded_rel_err_") + mode.name, sci(worst_rounded));
    }
}

// beta = 0 does not read C (NaN there stays out); k = 0 scales C by beta.
TEST_P(PrecisionOps, GemmExBetaZeroAndEmptyK) {
    for (const Mode &mode : kModes) {
        SCOPED_TRACE(mode.name);
        const int m = 5, n = 6, k = 7;
        auto a = bpt::uniform(m * k, -1.0f, 1.0f, 7100), b = bpt::uniform(k * n, -1.0f, 1.0f, 7101);
        size_t el = bp_eltype_size(mode.type);
        DevBuf da(dev, a.size() * el), db(dev, b.size() * el);
        DevBuf dc(dev, std::vector<float>(m * n, std::numeric_limits<float>::quiet_NaN()));
        put_operand(da, a, mode);
        put_operand(db, b, mode);
        bp_gemm_desc g = desc_of(mode, 0, 0, {m, n, k}, 1.0f, 0.0f);
        g.a = da.f(), g.lda = k, g.b = db.f(), g.ldb = n, g.c = dc.f(), g.ldc = n;
        Scratch scratch(dev, g);
        g.scratch = scratch.ptr();
        bp_status st = ops->gemm_ex(dev, &g, nullptr);
        if (refused_and_composed(ops, st)) { // ld 7 of bf16: less than 16-byte aligned
            RecordProperty(std::string("refused_") + mode.name, bp_last_error());
            continue;
        }
        ASSERT_EQ(BP_OK, st) << bp_last_error();
        auto out = dc.get(m * n);
        double e = least_over_roundings(mode, [&](bpref_rounding how) {
            std::vector<double> ref(m * n);
            auto ar = as_seen(a, mode, how), br = as_seen(b, mode, how);
            bpref_gemm(0, 0, m, n, k, 1.0, ar.data(), k, br.data(), n, 0.0, ref.data(), n);
            return bpt::rel_err(out, ref);
        });
        EXPECT_LE(e, 1e-6); // k = 7 fp32 sums in any order; NaN fails
        auto c = bpt::uniform(m * n, -1.0f, 1.0f, 7102);
        dc.put(c);
        g.k = 0;
        g.beta = 0.5f;
        BPT_OPS_OK(ops->gemm_ex(dev, &g, nullptr));
        auto scaled = dc.get(m * n);
        for (int i = 0; i < m * n; ++i)
            EXPECT_EQ(0.5f * c[i], scaled[i]) << i; // exact: one multiply
    }
}

// A bf16 output is optional for a plain GEMM: refused with BP_ERR_UNSUPPORTED by a backend
// without plans, refused by a fusing backend's heuristic (refused_and_composed), or the product
// rounded once (one bf16 rounding, 2^-9 relative at most: 4e-3 norm-wise on top of the fp32
// sum's 1e-5).
TEST_P(PrecisionOps, GemmExBf16OutputIsRoundedOnceOrRefused) {
    const Mode mode = kModes[2];
    const int m = 9, n = 21, k = 40;
    auto a = bpt::uniform(m * k, -1.0f, 1.0f, 7200), b = bpt::uniform(k * n, -1.0f, 1.0f, 7201);
    DevBuf da(dev, a.size() * 2), db(dev, b.size() * 2), dc(dev, (size_t)m * n * 2);
    put_operand(da, a, mode);
    put_operand(db, b, mode);
    bp_gemm_desc g = desc_of(mode, 0, 0, {m, n, k}, 1.0f, 0.0f);
    g.a = da.f(), g.lda = k, g.b = db.f(), g.ldb = n, g.c = dc.f(), g.ldc = n;
    g.c_type = BP_EL_BF16;
    Scratch scratch(dev, g);
    g.scratch = scratch.ptr();
    bp_status st = ops->gemm_ex(dev, &g, nullptr);
    if (st == BP_ERR_UNSUPPORTED && ops->gemm_plan == nullptr) return;
    if (refused_and_composed(ops, st)) { // the model composes it: one rounding of the fp32 sum
        RecordProperty("refused", bp_last_error());
        return;
    }
    ASSERT_EQ(BP_OK, st) << bp_last_error();
    std::vector<double> ref(m * n);
    auto ar = as_seen(a, mode), br = as_seen(b, mode);
    bpref_gemm(0, 0, m, n, k, 1.0, ar.data(), k, br.data(), n, 0.0, ref.data(), n);
    EXPECT_LE(bpt::rel_err(widen(get_u16(dev, dc.f(), (size_t)m * n)), ref), 4e-3);
}

// ---- the fused epilogues, where the backend has them ------------------------------------------

double gelu_or_relu(double z, bp_activation act) {
    return bpref_act(z, act, 0.0);
}

// The tanh-form GELU's tanh may come from a fast approximation (PTX's tanh.approx.f32: relative
// error up to 2^-10.987 by the PTX ISA guide; cudaemu's variants 1 and 3 move it by 2^-11).
// gelu(z) = z/2 (1 + t), t = tanh(u), u = s (z + c z^3), so an error dt of t moves
// gelu by z/2 dt, and gelu'(z) = (1 + t)/2 + z/2 (1 - t^2) u'(z), u' = s (1 + 3 c z^2), by
// dt (1/2 - z t u') - z u' dt^2 / 2. These are the bounds of those moves for |dt| <= 2^-10.987 |t|.
const double kFastTanhErr = std::exp2(-10.987);
const double kGeluS = 0.7978845608028654, kGeluC = 0.044715; // sqrt(2/pi), the cubic's c

double fast_tanh_gelu_bound(double z) {
    double t = std::tanh(kGeluS * (z + kGeluC * z * z * z));
    return 0.5 * std::fabs(z * t) * kFastTanhErr;
}

double fast_tanh_gelu_derivative_bound(double z) {
    double t = std::tanh(kGeluS * (z + kGeluC * z * z * z));
    double du = kGeluS * (1.0 + 3.0 * kGeluC * z * z), dt = std::fabs(t) * kFastTanhErr;
    return dt * (std::fabs(0.5 - z * t * du) + 0.5 * std::fabs(z * du) * dt);
}

// ||bound|| / ||ref||: the most a norm-wise relative error can grow by element-wise moves of at
// most bound[i] (the triangle inequality).
double norm_ratio(const std::vector<double> &bound, const std::vector<double> &ref) {
    double b = 0.0, r = 0.0;
    for (size_t i = 0; i < ref.size(); ++i)
        b += bound[i] * bound[i], r += ref[i] * ref[i];
    return std::sqrt(b / r);
}

// Forward BIAS_ACT then backward DACT_BGRAD on its saved state, as one layer of a model runs
// them: against the reference of the same roundings. A plan is made for 24 rows; the calls use
// 24 and then 11 (a short batch reuses the plan). A plan the backend refuses (forward, or the
// backward alone) is one the model composes (refused_and_composed); some must fuse.
TEST_P(PrecisionOps, FusedEpiloguesMatchTheReference) {
    if (!ops->gemm_plan)
        GTEST_SKIP() << "the " << ops->name
                     << " backend composes the fused epilogues from the plain entries "
                        "(tests/test_fusion.cc holds the core's fused path to their contract)";
    const int max_rows = 24, in = 37, out = 45, next = 19;
    uint32_t seed = 7300;
    int fused_forward = 0, fused_with_aux = 0, fused_backward = 0;
    for (const Mode &mode : kModes) {
        for (bp_activation act : {BP_ACT_IDENTITY, BP_ACT_RELU, BP_ACT_GELU_TANH}) {
            for (int rows : {max_rows, 11}) {
                SCOPED_TRACE(::testing::Message()
                             << mode.name << " activation " << act << ", " << rows << " rows");
                size_t el = bp_eltype_size(mode.type);
                auto x = bpt::uniform((size_t)max_rows * in, -1.0f, 1.0f, seed += 5);
                auto w = bpt::uniform((size_t)out * in, -0.3f, 0.3f, seed + 1);
                auto bias = bpt::uniform(out, -0.5f, 0.5f, seed + 2);
                DevBuf dx(dev, x.size() * el), dw(dev, w.size() * el), dbias(dev, bias);
                put_operand(dx, x, mode);
                put_operand(dw, w, mode);
                DevBuf da(dev, (size_t)max_rows * out * el);
                bp_gemm_desc f = desc_of(mode, 0, 1, {max_rows, out, in}, 1.0f, 0.0f);
                f.a = dx.f(), f.lda = in, f.b = dw.f(), f.ldb = in, f.c = da.f(), f.ldc = out;
                f.c_type = mode.type;
                f.epilogue = BP_EPI_BIAS_ACT;
                f.act = act;
                f.bias = dbias.f();
                void *plan = nullptr;
                size_t aux_bytes = 0;
                bp_status st = ops->gemm_plan(dev, &f, &plan, &aux_bytes);
                if (refused_and_composed(ops, st)) {
                    RecordProperty(std::string("not_fused_") + mode.name + "_" +
                                       std::to_string(act),
                                   bp_last_error());
                    continue;
                }
                ++fused_forward;
                fused_with_aux += act != BP_ACT_IDENTITY;
                ASSERT_EQ(BP_OK, st) << bp_last_error();
                DevBuf daux(dev, aux_bytes ? aux_bytes : 1);
                f.aux = daux.f();
                Scratch fs(dev, f); // what gemm_scratch asks for, as a model gives it
                f.scratch = fs.ptr();
                f.m = rows;
                st = ops->gemm_ex(dev, &f, plan);
                ops->gemm_plan_free(dev, plan);
                ASSERT_EQ(BP_OK, st) << bp_last_error();
                // z = x W^T + b from the rounded operands in double (TF32: by the rounding that
                // fits best, closest_rounding); a = act(z) rounded to the output type. One
                // rounding of a (bf16: 2^-9 per element at most, 4e-3 norm-wise; fp32: 1e-5, the
                // sum and the epilogue's own activation formula), plus for GELU the fast tanh's
                // bound (fast_tanh_gelu_bound, 3.5e-4 to 4e-4 here; was not allowed for).
                std::vector<float> a_out = mode.type == BP_EL_BF16
                                               ? widen(get_u16(dev, da.f(), (size_t)rows * out))
                                               : da.get((size_t)rows * out);
                std::vector<double> z((size_t)rows * out), a_ref(z.size()), a_bound(z.size());
                auto forward_ref = [&](bpref_rounding how) {
                    auto xr = as_seen(x, mode, how), wr = as_seen(w, mode, how);
                    bpref_gemm(0, 1, rows, out, in, 1.0, xr.data(), in, wr.data(), in, 0.0,
                               z.data(), out);
                    for (size_t i = 0; i < z.size(); ++i) {
                        z[i] += bias[i % out];
                        a_ref[i] = gelu_or_relu(z[i], act);
                    }
                    return bpt::rel_err(a_out, a_ref);
                };
                bpref_rounding how = closest_rounding(mode, forward_ref);
                forward_ref(how);
                for (size_t i = 0; i < z.size(); ++i)
                    a_bound[i] = act == BP_ACT_GELU_TANH ? fast_tanh_gelu_bound(z[i]) : 0.0;
                double tol = mode.type == BP_EL_BF16 ? 4e-3 : 1e-5;
                EXPECT_LE(bpt::rel_err(a_out, a_ref), tol + norm_ratio(a_bound, a_ref))
                    << "forward output";
                RecordProperty(std::string("fwd_rel_err_") + mode.name + "_act" +
                                   std::to_string(act) + "_rows" + std::to_string(rows),
                               sci(bpt::rel_err(a_out, a_ref)));
                if (act == BP_ACT_IDENTITY) continue;

                // Backward: g = dz_next W2 from random operands; d = g * act'(z as saved); the
                // bias gradient sums the unrounded d. The saved z is rounded like the output
                // (bf16), so the reference takes act' there; ReLU's mask is z > 0 either way.
                auto dzn = bpt::uniform((size_t)max_rows * next, -1.0f, 1.0f, seed + 3);
                auto w2 = bpt::uniform((size_t)next * out, -0.3f, 0.3f, seed + 4);
                DevBuf ddzn(dev, dzn.size() * el), dw2(dev, w2.size() * el),
                    dd(dev, (size_t)max_rows * out * el), dbg(dev, (size_t)out * 4);
                put_operand(ddzn, dzn, mode);
                put_operand(dw2, w2, mode);
                bp_gemm_desc b = desc_of(mode, 0, 0, {max_rows, out, next}, 1.0f, 0.0f);
                b.a = ddzn.f(), b.lda = next, b.b = dw2.f(), b.ldb = out, b.c = dd.f(), b.ldc = out;
                b.c_type = mode.type;
                b.epilogue = BP_EPI_DACT_BGRAD;
                b.act = act;
                b.aux = daux.f();
                b.bias_grad = dbg.f();
                size_t unused = 0;
                st = ops->gemm_plan(dev, &b, &plan, &unused);
                if (refused_and_composed(ops, st)) { // forward fused, backward composed
                    RecordProperty(std::string("backward_not_fused_") + mode.name + "_" +
                                       std::to_string(act),
                                   bp_last_error());
                    continue;
                }
                ++fused_backward;
                ASSERT_EQ(BP_OK, st) << bp_last_error();
                Scratch bs(dev, b);
                b.scratch = bs.ptr();
                b.m = rows;
                st = ops->gemm_ex(dev, &b, plan);
                ops->gemm_plan_free(dev, plan);
                ASSERT_EQ(BP_OK, st) << bp_last_error();
                auto dr = as_seen(dzn, mode, how), w2r = as_seen(w2, mode, how);
                std::vector<double> g((size_t)rows * out), d_ref(g.size()), bg_ref(out, 0.0);
                std::vector<double> d_bound(g.size()), bg_bound(out, 0.0);
                bpref_gemm(0, 0, rows, out, next, 1.0, dr.data(), next, w2r.data(), out, 0.0,
                           g.data(), out);
                for (size_t i = 0; i < g.size(); ++i) {
                    double zs = mode.type == BP_EL_BF16 ? bpref_round_bf16(z[i]) : z[i];
                    d_ref[i] = g[i] * bpref_act_derivative(zs, act, 0.0);
                    bg_ref[i % out] += d_ref[i];
                    d_bound[i] = act == BP_ACT_GELU_TANH
                                     ? std::fabs(g[i]) * fast_tanh_gelu_derivative_bound(zs)
                                     : 0.0;
                    bg_bound[i % out] += d_bound[i];
                }
                std::vector<float> d_out = mode.type == BP_EL_BF16
                                               ? widen(get_u16(dev, dd.f(), g.size()))
                                               : dd.get(g.size());
                EXPECT_LE(bpt::rel_err(d_out, d_ref), tol + norm_ratio(d_bound, d_ref))
                    << "backward dz";
                // The bias gradient is fp32 in every mode: a sum of `rows` fp32 terms, 1e-5,
                // plus the sum of its column's fast-tanh bounds.
                EXPECT_LE(bpt::rel_err(dbg.get(out), bg_ref), 1e-5 + norm_ratio(bg_bound, bg_ref))
                    << "bias gradient";
            }
        }
    }
    EXPECT_GT(fused_forward, 0) << "every forward epilogue refused";
    if (fused_with_aux > 0) { // the backward needs the forward's aux
        EXPECT_GT(fused_backward, 0) << "every backward epilogue refused";
    }
}

// ---- casts and the element-wise entries ---------------------------------------------------------

TEST_P(PrecisionOps, CastIsTheSharedRoundingBitwise) {
    auto v = bpt::uniform(100003, -3.0f, 3.0f, 7400);
    // Ties, NaN, infinities, the largest float (to infinity), a subnormal, signed zeros.
    const uint32_t special[] = {0x3f808000u, 0x3f818000u, 0x7fc00000u, 0xff800001u, 0x7f800000u,
                                0xff800000u, 0x7f7fffffu, 0x00000001u, 0x80000000u, 0x00000000u};
    for (size_t i = 0; i < sizeof special / sizeof *special; ++i)
        std::memcpy(&v[i * 7], &special[i], 4);
    DevBuf src(dev, v), dst(dev, v.size() * 2), back(dev, v.size() * 4);
    BPT_OPS_OK(ops->cast(dev, v.size(), src.f(), BP_EL_F32, dst.f(), BP_EL_BF16));
    auto h = get_u16(dev, dst.f(), v.size());
    size_t wrong = 0;
    for (size_t i = 0; i < v.size(); ++i) {
        uint16_t want = bp_f32_to_bf16(v[i]);
        bool nan = std::isnan(v[i]);
        wrong += nan ? !std::isnan(bp_bf16_to_f32(h[i])) : h[i] != want;
    }
    EXPECT_EQ(0u, wrong) << "fp32 -> bf16";
    BPT_OPS_OK(ops->cast(dev, v.size(), dst.f(), BP_EL_BF16, back.f(), BP_EL_F32));
    auto f = back.get(v.size());
    wrong = 0;
    for (size_t i = 0; i < v.size(); ++i) {
        float want = bp_bf16_to_f32(h[i]);
        wrong += std::memcmp(&want, &f[i], 4) != 0;
    }
    EXPECT_EQ(0u, wrong) << "bf16 -> fp32 is exact";
    BPT_OPS_OK(ops->cast(dev, v.size(), src.f(), BP_EL_F32, back.f(), BP_EL_F32));
    EXPECT_EQ(0, std::memcmp(v.data(), back.get(v.size()).data(), v.size() * 4)) << "same type";
}

const bp_activation kActs[] = {BP_ACT_IDENTITY, BP_ACT_RELU, BP_ACT_LEAKY_RELU, BP_ACT_SIGMOID,
                               BP_ACT_TANH,     BP_ACT_GELU, BP_ACT_GELU_TANH,  BP_ACT_SILU};
const float kSlope = 0.07f;

// The fp32 tolerance of an activation (test_ops.cc's act_tol: 1e-6 piecewise linear, 1e-5 the
// transcendental ones on inputs in [-4, 4]).
double act_tol(bp_activation act) {
    return act == BP_ACT_IDENTITY || act == BP_ACT_RELU || act == BP_ACT_LEAKY_RELU ? 1e-6 : 1e-5;
}

TEST_P(PrecisionOps, BiasActForwardExEveryActivationAndType) {
    const int rows = 301, cols = 37; // 11137 elements: the norm-wise measure is stable
    const size_t n = (size_t)rows * cols;
    struct Types {
        bp_eltype z, a;
        bool in_place; // a written over the accumulator (fp32)
    };
    const Types types[] = {{BP_EL_BF16, BP_EL_BF16, false},
                           {BP_EL_BF16, BP_EL_F32, true},
                           {BP_EL_F32, BP_EL_F32, false},
                           {BP_EL_F32, BP_EL_BF16, false}};
    uint32_t seed = 7500;
    double worst_bf16 = 0.0, worst_f32 = 0.0;
    for (bp_activation act : kActs) {
        for (const Types &t : types) {
            for (int with_bias = 0; with_bias < 2; ++with_bias) {
                SCOPED_TRACE(::testing::Message() << bpt::act_name(act) << " z " << t.z << " a "
                                                  << t.a << " bias " << with_bias);
                auto acc = bpt::uniform(n, -3.5f, 3.5f, seed += 3);
                auto bias = bpt::uniform(cols, -0.5f, 0.5f, seed + 1);
                DevBuf dacc(dev, acc), dbias(dev, bias), dz(dev, n * 4), da(dev, n * 4);
                void *a = t.in_place ? (void *)dacc.f() : (void *)da.f();
                BPT_OPS_OK(ops->bias_act_forward_ex(dev, rows, cols,
                                                    with_bias ? dbias.f() : nullptr, dacc.f(),
                                                    dz.f(), t.z, a, t.a, act, kSlope));
                // z: one fp32 add and one rounding, the same IEEE operations everywhere:
                // bitwise bp_math.h's.
                size_t wrong = 0;
                std::vector<double> ref(n);
                std::vector<float> zf =
                    t.z == BP_EL_BF16 ? widen(get_u16(dev, dz.f(), n)) : dz.get(n);
                for (size_t i = 0; i < n; ++i) {
                    float v = with_bias ? acc[i] + bias[i % cols] : acc[i];
                    float want = t.z == BP_EL_BF16 ? bp_round_bf16(v) : v;
                    wrong += std::memcmp(&want, &zf[i], 4) != 0;
                    ref[i] = bpref_act((double)v, act, kSlope); // from the unrounded v
                }
                EXPECT_EQ(0u, wrong) << "z";
                std::vector<float> af = t.a == BP_EL_BF16 ? widen(get_u16(dev, a, n))
                                        : t.in_place      ? dacc.get(n)
                                                          : da.get(n);
                // a: the activation's fp32 error, then (bf16) one rounding: 2^-9 relative per
                // element at most, about 1.1e-3 norm-wise; limit 3e-3. A rounding of v before
                // the activation would add another ~1e-3 on the curved ones.
                double tol = t.a == BP_EL_BF16 ? 3e-3 : act_tol(act);
                double e = bpt::rel_err(af, ref);
                EXPECT_LE(e, tol) << "a";
                if (t.a == BP_EL_BF16) {
                    // And against act(v) rounded once: only the elements whose fp32 activation
                    // lies within its few-ulp error of a bf16 boundary may round the other way
                    // (one bf16 ulp each, rare): observed <= 6e-5. Rounding v first, or twice,
                    // moves most elements: ~1e-3.
                    std::vector<double> once(n);
                    for (size_t i = 0; i < n; ++i)
                        once[i] = bpref_round_bf16(ref[i]);
                    EXPECT_LE(bpt::rel_err(af, once), 3e-4) << "a, against act(v) rounded once";
                }
                double &w = t.a == BP_EL_BF16 ? worst_bf16 : worst_f32;
                w = std::max(w, e);
            }
        }
    }
    RecordProperty("worst_rel_err_a_bf16", sci(worst_bf16));
    RecordProperty("worst_rel_err_a_fp32", sci(worst_f32));
}

TEST_P(PrecisionOps, ActBackwardExFromBf16z) {
    const size_t n = 20011;
    uint32_t seed = 7600;
    for (bp_activation act : kActs) {
        for (bp_eltype zt : {BP_EL_BF16, BP_EL_F32}) {
            SCOPED_TRACE(::testing::Message() << bpt::act_name(act) << " z " << zt);
            auto z = bpt::uniform(n, -4.0f, 4.0f, seed += 2);
            auto g = bpt::uniform(n, -2.0f, 2.0f, seed + 1);
            DevBuf dz(dev, n * 4), dg(dev, g), dout(dev, n * 4);
            std::vector<double> ref(n);
            if (zt == BP_EL_BF16) {
                auto h = to_bf16(z);
                dz.put(h);
                for (size_t i = 0; i < n; ++i)
                    ref[i] = g[i] * bpref_act_derivative(bp_bf16_to_f32(h[i]), act, kSlope);
            } else {
                dz.put(z);
                for (size_t i = 0; i < n; ++i)
                    ref[i] = g[i] * bpref_act_derivative(z[i], act, kSlope);
            }
            BPT_OPS_OK(ops->act_backward_ex(dev, n, dz.f(), zt, dg.f(), dout.f(), act, kSlope));
            // The derivative at the stored z (the bf16 value itself): the fp32 tolerance.
            EXPECT_LE(bpt::rel_err(dout.get(n), ref), act_tol(act));
            // In place (dz == da) gives the same bits.
            auto first = dout.get(n);
            BPT_OPS_OK(ops->act_backward_ex(dev, n, dz.f(), zt, dg.f(), dg.f(), act, kSlope));
            EXPECT_EQ(0, std::memcmp(first.data(), dg.get(n).data(), n * 4)) << "in place";
        }
    }
}

// The update with the bf16 copy: the parameters bitwise those of the update without it, and
// the copy bitwise their rounding, for each optimizer.
TEST_P(PrecisionOps, UpdateWritesTheBf16CopyInTheSamePass) {
    const size_t n = 40009;
    for (bp_optim_kind kind : {BP_OPTIM_SGD, BP_OPTIM_ADAM, BP_OPTIM_ADAMW}) {
        for (float momentum : {0.0f, 0.9f}) {
            if (kind != BP_OPTIM_SGD && momentum != 0.0f) continue;
            SCOPED_TRACE(::testing::Message() << "optimizer " << kind << " momentum " << momentum);
            auto p0 = bpt::uniform(n, -1.0f, 1.0f, 7700 + kind);
            auto g = bpt::uniform(n, -1.0f, 1.0f, 7710 + kind);
            std::vector<float> zeros(n, 0.0f);
            DevBuf p1(dev, p0), p2(dev, p0), dg(dev, g), m1(dev, zeros), m2(dev, zeros),
                v1(dev, zeros), v2(dev, zeros), copy(dev, n * 2);
            for (int t = 1; t <= 2; ++t) {
                bp_update_args a;
                std::memset(&a, 0, sizeof a);
                a.kind = kind;
                a.n = n;
                a.grad = dg.f();
                a.grad_scale = 0.8f;
                a.lr = 0.05f;
                a.weight_decay = 0.01f;
                a.momentum = momentum;
                a.one_minus_dampening = 1.0f;
                a.first_step = t == 1;
                a.beta2 = 0.999f;
                a.eps = 1e-8f;
                a.one_minus_beta1 = (float)(1.0 - 0.9);
                a.one_minus_beta2 = (float)(1.0 - 0.999);
                a.step_size = (float)(0.05 / (1.0 - std::pow(0.9, t)));
                a.bc2_sqrt = (float)std::sqrt(1.0 - std::pow(0.999, t));
                a.decay_factor = (float)(1.0 - 0.05 * 0.01);
                bool state = kind != BP_OPTIM_SGD || momentum != 0.0f;
                bp_update_args b = a;
                a.param = p1.f(), a.m = state ? m1.f() : nullptr;
                a.v = kind != BP_OPTIM_SGD ? v1.f() : nullptr;
                b.param = p2.f(), b.m = state ? m2.f() : nullptr;
                b.v = kind != BP_OPTIM_SGD ? v2.f() : nullptr;
                b.param_bf16 = (uint16_t *)copy.f();
                BPT_OPS_OK(ops->update(dev, &a));
                BPT_OPS_OK(ops->update(dev, &b));
            }
            auto pa = p1.get(n), pb = p2.get(n);
            EXPECT_EQ(0, std::memcmp(pa.data(), pb.data(), n * 4)) << "the fp32 parameters";
            EXPECT_NE(0, std::memcmp(pa.data(), p0.data(), n * 4)) << "the update moved them";
            auto h = get_u16(dev, copy.f(), n);
            size_t wrong = 0;
            for (size_t i = 0; i < n; ++i)
                wrong += h[i] != bp_f32_to_bf16(pb[i]);
            EXPECT_EQ(0u, wrong) << "the bf16 copy";
        }
    }
}

INSTANTIATE_TEST_SUITE_P(Backends, PrecisionOps, ::testing::ValuesIn(bpt::all_backends()),
                         bpt::backend_param_name);

} // namespace
