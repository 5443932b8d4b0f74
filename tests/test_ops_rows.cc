// The row kernels (softmax, the losses, class match, bias + activation, column sums, casts) in
// every launch layout the CUDA backend can choose for a row, with every operand placed inside a
// larger buffer between guard zones (support_ops.h's Guarded), on every backend.
//
// kernels/rows.cu gives a row one warp (eight rows to a 256-thread block) up to 512 columns,
// and a whole block past that. Each layout below is a parameter of its own, so a bug in one
// layout fails a case named after it. Row counts are 1, 3, 31, 33 and 257, never a multiple of
// a block's rows or of a warp: a kernel whose row guard lets one more row through writes into
// the guard after its output, which the check below sees on a GPU as on the emulated device (a
// model would not: its workspace is sized for its largest batch, so the extra row lands in
// memory the step never reads).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <ostream>
#include <string>
#include <tuple>
#include <vector>

#include "core/backend.h"
#include "kernels/bp_math.h"
#include "ref_ops.h"
#include "support_ops.h"

namespace {

using bpt::Guarded;
using bpt::random_labels;

struct RowLayout {
    const char *name;
    std::vector<int> rows, cols;
};

// The shapes of each layout of kernels/rows.cu's dispatch_rows.
const RowLayout kLayouts[] = {
    // One warp a row, fewer rows than a block holds: the block's other warps have no row.
    {"warp_rows_one_block", {1, 3}, {1, 3, 33, 512}},
    // One warp a row over several blocks of eight rows, the last one partly empty.
    {"warp_rows_many_blocks", {31, 33, 257}, {1, 3, 33, 512}},
    // One block a row (past 512 columns): block-wide reductions that reuse their scratch.
    {"block_per_row", {1, 3, 31, 33, 257}, {513, 1000}},
    // One block a row with more columns than the block has threads four times over.
    {"block_per_row_past_1024", {1, 3, 31, 33, 257}, {1025, 2049}},
};

// The layout's name where gtest prints a parameter (ctest's list, failure messages).
void PrintTo(const RowLayout &l, std::ostream *os) {
    *os << l.name;
}

using Param = std::tuple<std::string, RowLayout>;

class RowOps : public ::testing::TestWithParam<Param> {
  protected:
    void SetUp() override {
        BPT_OPEN_OR_SKIP(d, std::get<0>(GetParam()));
        dev = d;
        ops = dev->ops;
    }
    void TearDown() override {
        if (dev) {
            EXPECT_EQ(0u, dev->stats.bytes_in_use); // every guarded buffer freed
            bp_device_close(dev);
        }
    }
    // Calls f(rows, cols, seed) for every shape of the layout, each under a trace naming it.
    template <class F> void each_shape(F f) {
        const RowLayout &l = std::get<1>(GetParam());
        for (int rows : l.rows)
            for (int cols : l.cols) {
                SCOPED_TRACE(::testing::Message() << "rows=" << rows << " cols=" << cols);
                f(rows, cols, (uint32_t)(rows * 7919 + cols));
                if (HasFatalFailure()) return;
            }
    }
    bp_device *dev = nullptr;
    const bp_backend_ops *ops = nullptr;
};

bool all_finite(const std::vector<float> &v) {
    for (float x : v)
        if (!std::isfinite(x)) return false;
    return true;
}

// An input is read, never written: its inside bitwise as uploaded, its guards untouched.
template <class T>
void expect_unchanged(const Guarded<T> &b, const std::vector<T> &want, const char *what) {
    EXPECT_EQ(0, std::memcmp(want.data(), b.get().data(), want.size() * sizeof(T)))
        << what << " (an input) was written";
    b.expect_guards(what);
}

TEST_P(RowOps, Softmax) {
    each_shape([&](int rows, int cols, uint32_t seed) {
        size_t n = (size_t)rows * cols;
        auto x = bpt::uniform(n, -5.0f, 5.0f, seed);
        Guarded<float> dx(dev, x), dy(dev, n);
        BPT_OPS_OK(ops->softmax(dev, rows, cols, dx.p(), dy.p()));
        auto xd = bpt::to_double(x);
        std::vector<double> ref(n);
        bpref_softmax(rows, cols, xd.data(), ref.data());
        auto y = dy.get();
        EXPECT_TRUE(all_finite(y));
        // As OpsTest.Softmax: expf within 1-2 ulp, the row sum adds ~sqrt(cols) ulp: 1e-5.
        EXPECT_LE(bpt::rel_err(y, ref), 1e-5);
        dy.expect_guards("y");
        expect_unchanged(dx, x, "x");
    });
}

TEST_P(RowOps, SoftmaxXent) {
    each_shape([&](int rows, int cols, uint32_t seed) {
        size_t n = (size_t)rows * cols;
        auto z = bpt::uniform(n, -3.0f, 3.0f, seed);
        auto labels = random_labels(rows, cols, seed + 1);
        Guarded<float> dz(dev, z);
        Guarded<int32_t> dl(dev, labels);
        // With the gradient and no smoothing; then the loss alone, smoothed and scaled.
        for (int with_grad = 1; with_grad >= 0; --with_grad) {
            SCOPED_TRACE(with_grad ? "with grad" : "loss only");
            float smoothing = with_grad ? 0.0f : 0.1f, scale = with_grad ? 1.0f : 0.37f;
            Guarded<float> dg(dev, n), dloss(dev, rows);
            BPT_OPS_OK(ops->softmax_xent(dev, rows, cols, dz.p(), dl.p(), smoothing, scale,
                                         with_grad ? dg.p() : nullptr, dloss.p()));
            auto zd = bpt::to_double(z);
            std::vector<double> gref(n), lref(rows);
            bpref_softmax_xent(rows, cols, zd.data(), labels.data(), smoothing, scale, gref.data(),
                               lref.data());
            // As OpsTest.SoftmaxXent: 1e-5 for the row losses and the gradient.
            auto loss = dloss.get();
            EXPECT_TRUE(all_finite(loss));
            EXPECT_LE(bpt::rel_err(loss, lref), 1e-5) << "row_loss";
            dloss.expect_guards("row_loss");
            if (with_grad) {
                auto g = dg.get();
                EXPECT_TRUE(all_finite(g));
                EXPECT_LE(bpt::rel_err(g, gref), 1e-5) << "grad";
            }
            dg.expect_guards("grad");
        }
        expect_unchanged(dz, z, "logits");
        expect_unchanged(dl, labels, "labels");
    });
}

// The first largest logit against the label; a planted maximum on the label in every other
// row, so that both answers occur in every shape. Exact.
TEST_P(RowOps, ClassMatch) {
    each_shape([&](int rows, int cols, uint32_t seed) {
        size_t n = (size_t)rows * cols;
        auto z = bpt::uniform(n, -3.0f, 3.0f, seed);
        auto labels = random_labels(rows, cols, seed + 1);
        for (int r = 0; r < rows; r += 2)
            z[(size_t)r * cols + labels[r]] = 4.0f;
        Guarded<float> dz(dev, z), dm(dev, rows);
        Guarded<int32_t> dl(dev, labels);
        BPT_OPS_OK(ops->class_match(dev, rows, cols, dz.p(), dl.p(), dm.p()));
        std::vector<double> want(rows);
        bpref_class_match(rows, cols, z.data(), labels.data(), want.data());
        auto got = dm.get();
        int wrong = 0;
        for (int r = 0; r < rows; ++r)
            if (got[r] != want[r] && ++wrong <= 5)
                ADD_FAILURE() << "row " << r << ": " << got[r] << ", expected " << want[r];
        dm.expect_guards("match");
        expect_unchanged(dz, z, "logits");
        expect_unchanged(dl, labels, "labels");
    });
}

// MSE and BCE with logits: the same element-wise loss kernel, value and gradient.
void check_elem_loss(bp_device *dev, bool bce, int rows, int cols, uint32_t seed) {
    size_t n = (size_t)rows * cols;
    auto x = bpt::uniform(n, -4.0f, 4.0f, seed);
    auto t = bce ? bpt::uniform(n, 0.0f, 1.0f, seed + 1) : bpt::uniform(n, -2.0f, 2.0f, seed + 1);
    Guarded<float> dx(dev, x), dt(dev, t), dg(dev, n), dloss(dev, rows);
    const float scale = 0.37f;
    auto call = bce ? dev->ops->bce_logits : dev->ops->mse;
    BPT_OPS_OK(call(dev, rows, cols, dx.p(), dt.p(), scale, dg.p(), dloss.p()));
    auto xd = bpt::to_double(x), td = bpt::to_double(t);
    std::vector<double> gref(n), lref(rows);
    (bce ? bpref_bce_logits : bpref_mse)(rows, cols, xd.data(), td.data(), scale, gref.data(),
                                         lref.data());
    // Row losses: fp32 elements (a few ulp each: squares, or max(z,0) - z t + log1p(exp(-|z|)))
    // added in double on both backends: 1e-5. Gradients, 2 (p - t) scale or (sigmoid(z) - t)
    // scale: a few roundings, 1e-6.
    auto loss = dloss.get(), g = dg.get();
    EXPECT_TRUE(all_finite(loss) && all_finite(g));
    EXPECT_LE(bpt::rel_err(loss, lref), 1e-5) << "row_loss";
    EXPECT_LE(bpt::rel_err(g, gref), 1e-6) << "grad";
    dloss.expect_guards("row_loss");
    dg.expect_guards("grad");
    expect_unchanged(dx, x, "x");
    expect_unchanged(dt, t, "target");
}

TEST_P(RowOps, Mse) {
    each_shape(
        [&](int rows, int cols, uint32_t seed) { check_elem_loss(dev, false, rows, cols, seed); });
}

TEST_P(RowOps, BceLogits) {
    each_shape(
        [&](int rows, int cols, uint32_t seed) { check_elem_loss(dev, true, rows, cols, seed); });
}

// z += bias per column, a = act(z): ReLU (exact up to one rounding of the add: 1e-6) and the
// sigmoid (expf within 1-2 ulp, condition number <= 4 on [-4, 4]: 1e-5).
TEST_P(RowOps, BiasActForward) {
    each_shape([&](int rows, int cols, uint32_t seed) {
        size_t n = (size_t)rows * cols;
        for (bp_activation act : {BP_ACT_RELU, BP_ACT_SIGMOID}) {
            SCOPED_TRACE(bpt::act_name(act));
            auto z = bpt::uniform(n, -4.0f, 4.0f, seed + act);
            auto bias = bpt::uniform(cols, -1.0f, 1.0f, seed + 10 + act);
            Guarded<float> dz(dev, z), db(dev, bias), da(dev, n);
            BPT_OPS_OK(ops->bias_act_forward(dev, rows, cols, db.p(), dz.p(), da.p(), act, 0.07f));
            auto zr = bpt::to_double(z), bd = bpt::to_double(bias);
            std::vector<double> ar(n);
            bpref_bias_act_forward(rows, cols, bd.data(), zr.data(), ar.data(), act, 0.07f);
            EXPECT_LE(bpt::rel_err(dz.get(), zr), 1e-6) << "z after the bias add";
            EXPECT_LE(bpt::rel_err(da.get(), ar), act == BP_ACT_RELU ? 1e-6 : 1e-5) << "a";
            dz.expect_guards("z");
            da.expect_guards("a");
            expect_unchanged(db, bias, "bias");
        }
    });
}

// Column sums (the bias gradient), beta 0 over NaN and beta 1 over values: double sums rounded
// once on both backends, 1e-6 for columns of up to 257 terms.
TEST_P(RowOps, ColSum) {
    each_shape([&](int rows, int cols, uint32_t seed) {
        size_t n = (size_t)rows * cols;
        auto x = bpt::uniform(n, -1.0f, 1.0f, seed);
        Guarded<float> dx(dev, x);
        for (float beta : {0.0f, 1.0f}) {
            SCOPED_TRACE(::testing::Message() << "beta=" << beta);
            // beta = 0 must not read out: NaN there shows a read (0 * NaN is NaN).
            auto out0 = beta == 0.0f ? std::vector<float>(cols, NAN)
                                     : bpt::uniform(cols, -5.0f, 5.0f, seed + 1);
            Guarded<float> dout(dev, out0);
            BPT_OPS_OK(ops->col_sum(dev, rows, cols, dx.p(), beta, dout.p()));
            auto ref = bpt::to_double(out0), xd = bpt::to_double(x);
            bpref_col_sum(rows, cols, xd.data(), beta, ref.data());
            EXPECT_LE(bpt::rel_err(dout.get(), ref), 1e-6);
            dout.expect_guards("out");
        }
        expect_unchanged(dx, x, "x");
    });
}

// fp32 -> bf16 -> fp32 of a [rows, cols] tensor: bitwise bp_math.h's rounding, then exact.
TEST_P(RowOps, Cast) {
    each_shape([&](int rows, int cols, uint32_t seed) {
        size_t n = (size_t)rows * cols;
        auto v = bpt::uniform(n, -3.0f, 3.0f, seed);
        Guarded<float> src(dev, v), back(dev, n);
        Guarded<uint16_t> half(dev, n);
        BPT_OPS_OK(ops->cast(dev, n, src.p(), BP_EL_F32, half.p(), BP_EL_BF16));
        BPT_OPS_OK(ops->cast(dev, n, half.p(), BP_EL_BF16, back.p(), BP_EL_F32));
        auto h = half.get();
        auto f = back.get();
        size_t wrong = 0;
        for (size_t i = 0; i < n; ++i) {
            float want = bp_bf16_to_f32(bp_f32_to_bf16(v[i]));
            wrong += h[i] != bp_f32_to_bf16(v[i]) || std::memcmp(&want, &f[i], 4) != 0;
        }
        EXPECT_EQ(0u, wrong);
        half.expect_guards("bf16");
        back.expect_guards("fp32");
        expect_unchanged(src, v, "src");
    });
}

// loss_head (the fused loss of a training step), where the backend has it: against the float64
// reference as the separate entries are held (1e-5 row losses and cross-entropy gradients, 1e-6
// the element-wise gradients and the column sums), its gradient bitwise that of the separate
// entries and its bf16 copy that rounded, the matches exact, and accumulate adding into what is
// there. On CUDA the shapes of up to 2^16 logits and 512 columns run as one block, the others
// (257 rows of 512 columns, and every shape past 512 columns) in two launches.
struct HeadRun {
    bp_step_state state;
    std::vector<float> grad, bias;
    std::vector<uint16_t> grad_lp;
};

HeadRun run_head(bp_device *dev, bp_loss_kind kind, int rows, int cols, const void *logits,
                 const void *target, int accumulate, const bp_step_state &before,
                 const std::vector<float> &bias_before, int64_t first_row = 0) {
    size_t n = (size_t)rows * cols;
    HeadRun out;
    Guarded<float> dg(dev, n), db(dev, bias_before);
    Guarded<uint16_t> dlp(dev, n);
    Guarded<float> scratch(dev, 2 * (size_t)rows);
    bpt::DevBuf ds(dev, sizeof(bp_step_state));
    EXPECT_EQ(BP_OK, dev->ops->upload(dev, ds.f(), &before, sizeof before));
    bp_loss_head_args a = {kind,
                           rows,
                           cols,
                           (const float *)logits,
                           target,
                           0.1f,
                           0.37f,
                           dg.p(),
                           dlp.p(),
                           db.p(),
                           accumulate,
                           first_row,
                           (bp_step_state *)ds.f(),
                           scratch.p()};
    EXPECT_EQ(BP_OK, dev->ops->loss_head(dev, &a)) << bp_last_error();
    EXPECT_EQ(BP_OK, dev->ops->download(dev, &out.state, ds.f(), sizeof out.state));
    out.grad = dg.get();
    out.grad_lp = dlp.get();
    out.bias = db.get();
    dg.expect_guards("grad");
    dlp.expect_guards("grad_lp");
    db.expect_guards("bias_grad");
    scratch.expect_guards("row_scratch");
    return out;
}

bp_step_state head_state(float loss, float match, int64_t bad_row) {
    bp_step_state s;
    std::memset(&s, 0, sizeof s);
    s.loss = loss;
    s.match = match;
    s.bad_row = bad_row;
    s.norm2 = 7.0f; // not the head's: left alone
    return s;
}

TEST_P(RowOps, LossHead) {
    if (!ops->loss_head) GTEST_SKIP() << "this backend has no fused loss head";
    each_shape([&](int rows, int cols, uint32_t seed) {
        size_t n = (size_t)rows * cols;
        auto z = bpt::uniform(n, -3.0f, 3.0f, seed);
        auto labels = random_labels(rows, cols, seed + 1);
        for (int r = 0; r < rows; r += 2) // both answers of the match in every shape
            z[(size_t)r * cols + labels[r]] = 4.0f;
        auto t = bpt::uniform(n, 0.0f, 1.0f, seed + 2);
        Guarded<float> dz(dev, z), dt(dev, t);
        Guarded<int32_t> dl(dev, labels);
        auto zd = bpt::to_double(z), td = bpt::to_double(t);
        for (bp_loss_kind kind : {BP_LOSS_CROSS_ENTROPY, BP_LOSS_MSE, BP_LOSS_BCE_LOGITS}) {
            SCOPED_TRACE(::testing::Message() << "loss " << (int)kind);
            bool ce = kind == BP_LOSS_CROSS_ENTROPY;
            std::vector<double> gref(n), lref(rows), mref(rows), bref(cols);
            if (ce)
                bpref_softmax_xent(rows, cols, zd.data(), labels.data(), 0.1, 0.37f, gref.data(),
                                   lref.data());
            else
                (kind == BP_LOSS_MSE ? bpref_mse : bpref_bce_logits)(
                    rows, cols, zd.data(), td.data(), 0.37f, gref.data(), lref.data());
            bpref_class_match(rows, cols, z.data(), labels.data(), mref.data());
            double loss_ref = 0.0, match_ref = 0.0;
            for (int r = 0; r < rows; ++r)
                loss_ref += lref[r], match_ref += mref[r];
            bpref_col_sum(rows, cols, gref.data(), 0.0, bref.data());
            const void *target = ce ? (const void *)dl.p() : (const void *)dt.p();
            for (int accumulate = 0; accumulate <= 1; ++accumulate) {
                SCOPED_TRACE(accumulate ? "accumulate" : "write");
                // Written: NaN before (never read); added: onto values.
                bp_step_state before =
                    accumulate ? head_state(1.5f, 2.0f, INT64_MAX) : head_state(NAN, NAN, 5);
                auto bias0 = accumulate ? bpt::uniform(cols, -1.0f, 1.0f, seed + 3)
                                        : std::vector<float>(cols, NAN);
                HeadRun h =
                    run_head(dev, kind, rows, cols, dz.p(), target, accumulate, before, bias0, 40);
                std::vector<float> lsum = {h.state.loss}, msum = {h.state.match};
                double base = accumulate ? 1.5 : 0.0;
                EXPECT_LE(bpt::rel_err(lsum, std::vector<double>{base + loss_ref}), 1e-5)
                    << "loss sum";
                EXPECT_LE(bpt::rel_err(h.grad, gref), ce ? 1e-5 : 1e-6) << "grad";
                std::vector<double> bwant(cols);
                for (int c = 0; c < cols; ++c)
                    bwant[c] = bref[c] + (accumulate ? bias0[c] : 0.0);
                EXPECT_LE(bpt::rel_err(h.bias, bwant), 1e-6) << "bias gradient";
                EXPECT_EQ(h.state.norm2, 7.0f);
                if (ce) {
                    EXPECT_EQ(msum[0], (float)(match_ref + (accumulate ? 2.0 : 0.0)));
                    EXPECT_EQ(h.state.bad_row, INT64_MAX);
                } else { // the element-wise losses leave the classes' fields alone
                    EXPECT_EQ(0, std::memcmp(&h.state.match, &before.match, sizeof(float)));
                    EXPECT_EQ(h.state.bad_row, before.bad_row);
                }
                size_t lp_wrong = 0;
                for (size_t i = 0; i < n; ++i)
                    lp_wrong += h.grad_lp[i] != bp_f32_to_bf16(h.grad[i]);
                EXPECT_EQ(0u, lp_wrong) << "grad_lp is not grad rounded to bf16";
            }
            Guarded<float> sg(dev, n), sl(dev, rows);
            if (ce)
                BPT_OPS_OK(ops->softmax_xent(dev, rows, cols, dz.p(), dl.p(), 0.1f, 0.37f, sg.p(),
                                             sl.p()));
            else
                BPT_OPS_OK((kind == BP_LOSS_MSE ? ops->mse : ops->bce_logits)(
                    dev, rows, cols, dz.p(), dt.p(), 0.37f, sg.p(), sl.p()));
            HeadRun h = run_head(dev, kind, rows, cols, dz.p(), target, 0,
                                 head_state(0, 0, INT64_MAX), std::vector<float>(cols, 0.0f));
            auto g = sg.get();
            EXPECT_EQ(0, std::memcmp(g.data(), h.grad.data(), n * sizeof(float)))
                << "the gradient differs from the separate entry's";
        }
        expect_unchanged(dz, z, "logits");
        expect_unchanged(dl, labels, "labels");
        expect_unchanged(dt, t, "target");
    });
}

// The cases a step must get right: classes out of range (the first, by its index in the step's
// target, and the smaller of two micro-batches' when accumulating), a row of NaN logits (never a
// match, a NaN loss), a tie (the first largest), one class, and logits of 1e30 (finite losses).
class LossHeadOps : public bpt::BackendOpsTest {};

TEST_P(LossHeadOps, Edges) {
    if (!ops->loss_head) GTEST_SKIP() << "this backend has no fused loss head";
    const int rows = 6, cols = 4;
    std::vector<float> z = {
        1.0f,   2.0f,   3.0f,   0.5f,  // row 0: class 2 largest, label 2: a match
        1e30f,  -1e30f, 0.0f,   2.0f,  // row 1: class 0 by far, label 1: loss 2e30, finite
        5.0f,   1.0f,   5.0f,   -2.0f, // row 2: a tie of 0 and 2, label 2: no match
        0.0f,   0.0f,   0.0f,   0.0f,  // row 3: class 7, out of range
        1.0f,   1.0f,   1.0f,   9.0f,  // row 4: class -1, out of range
        -1e30f, -1e30f, -1e30f, 1e30f, // row 5: label 3 at 1e30: a match
    };
    std::vector<int32_t> labels = {2, 1, 2, 7, -1, 3};
    Guarded<float> dz(dev, z);
    Guarded<int32_t> dl(dev, labels);
    std::vector<float> zero(cols, 0.0f);
    HeadRun h = run_head(dev, BP_LOSS_CROSS_ENTROPY, rows, cols, dz.p(), dl.p(), 0,
                         head_state(0, 0, INT64_MAX), zero, 100);
    EXPECT_EQ(h.state.bad_row, 103) << "the first bad row, by its index in the step's target";
    EXPECT_EQ(h.state.match, 2.0f);
    EXPECT_TRUE(std::isfinite(h.state.loss));
    EXPECT_GE(h.state.loss, 1e30f);
    EXPECT_TRUE(all_finite(h.grad));
    // an earlier micro-batch's bad row stays; a later one's does not replace it
    h = run_head(dev, BP_LOSS_CROSS_ENTROPY, rows, cols, dz.p(), dl.p(), 1, head_state(0, 0, 60),
                 zero, 100);
    EXPECT_EQ(h.state.bad_row, 60);
    h = run_head(dev, BP_LOSS_CROSS_ENTROPY, 3, cols, dz.p(), dl.p(), 1, head_state(0, 0, 200),
                 zero, 0);
    EXPECT_EQ(h.state.bad_row, 200) << "no bad row in rows 0-2";
    // The same past 512 columns (CUDA's two launches): the first of two bad rows, the matches.
    {
        const int wide = 600;
        std::vector<float> zw = bpt::uniform((size_t)5 * wide, -1.0f, 1.0f, 12);
        std::vector<int32_t> lw = {1, 700, 3, -5, 2};
        zw[0 * wide + 1] = 2.0f;   // row 0 matches
        zw[2 * wide + 100] = 2.0f; // row 2 does not
        zw[4 * wide + 2] = 2.0f;   // row 4 matches
        Guarded<float> dzw(dev, zw);
        Guarded<int32_t> dlw(dev, lw);
        h = run_head(dev, BP_LOSS_CROSS_ENTROPY, 5, wide, dzw.p(), dlw.p(), 0,
                     head_state(0, 0, INT64_MAX), std::vector<float>(wide, 0.0f), 10);
        EXPECT_EQ(h.state.bad_row, 11);
        EXPECT_EQ(h.state.match, 2.0f);
        h = run_head(dev, BP_LOSS_CROSS_ENTROPY, 5, wide, dzw.p(), dlw.p(), 1, head_state(1, 1, 4),
                     std::vector<float>(wide, 0.0f), 10);
        EXPECT_EQ(h.state.bad_row, 4);
        EXPECT_EQ(h.state.match, 3.0f);
    }
    // Two bad rows met by the same thread or warp (a warp takes every 32nd row of a small head;
    // a thread of the sums every 512th of a large one): the first is reported.
    for (int wide : {4, 513}) {
        SCOPED_TRACE(::testing::Message() << wide << " columns");
        const int n_rows = wide == 4 ? 40 : 520, late = wide == 4 ? 35 : 515;
        std::vector<int32_t> lb(n_rows, 0);
        lb[3] = wide;
        lb[late] = -1;
        Guarded<float> dzb(dev, bpt::uniform((size_t)n_rows * wide, -1.0f, 1.0f, 13));
        Guarded<int32_t> dlb(dev, lb);
        h = run_head(dev, BP_LOSS_CROSS_ENTROPY, n_rows, wide, dzb.p(), dlb.p(), 0,
                     head_state(0, 0, INT64_MAX), std::vector<float>(wide, 0.0f));
        EXPECT_EQ(h.state.bad_row, 3);
    }
    // A row of NaN logits: no match, the loss NaN (the step is refused).
    std::vector<float> zn = z;
    for (int c = 0; c < cols; ++c)
        zn[c] = NAN;
    Guarded<float> dzn(dev, zn);
    h = run_head(dev, BP_LOSS_CROSS_ENTROPY, 3, cols, dzn.p(), dl.p(), 0,
                 head_state(0, 0, INT64_MAX), zero);
    EXPECT_EQ(h.state.match, 0.0f);
    EXPECT_TRUE(std::isnan(h.state.loss));
    // One class: every row matches it, the unsmoothed loss and gradient are 0; smoothing 0.1
    // over one class is no smoothing.
    std::vector<float> z1 = {3.0f, -7.0f, 1e30f};
    std::vector<int32_t> l1 = {0, 0, 0};
    Guarded<float> dz1(dev, z1);
    Guarded<int32_t> dl1(dev, l1);
    h = run_head(dev, BP_LOSS_CROSS_ENTROPY, 3, 1, dz1.p(), dl1.p(), 0, head_state(0, 0, INT64_MAX),
                 {0.0f});
    EXPECT_EQ(h.state.match, 3.0f);
    EXPECT_EQ(h.state.loss, 0.0f);
    EXPECT_EQ(h.state.bad_row, INT64_MAX);
    for (float g : h.grad)
        EXPECT_EQ(g, 0.0f);
    EXPECT_EQ(h.bias[0], 0.0f);
    // Every row of one class, the last layer's bias gradient its column sums: against the
    // reference, and the gradient's columns summing to 0 in the reference.
    std::vector<int32_t> same(rows, 1);
    Guarded<int32_t> dsame(dev, same);
    auto zs = bpt::uniform((size_t)rows * cols, -2.0f, 2.0f, 11);
    Guarded<float> dzs(dev, zs);
    h = run_head(dev, BP_LOSS_CROSS_ENTROPY, rows, cols, dzs.p(), dsame.p(), 0,
                 head_state(0, 0, INT64_MAX), zero);
    auto zsd = bpt::to_double(zs);
    std::vector<double> gref((size_t)rows * cols), lref(rows), bref(cols);
    bpref_softmax_xent(rows, cols, zsd.data(), same.data(), 0.1, 0.37f, gref.data(), lref.data());
    bpref_col_sum(rows, cols, gref.data(), 0.0, bref.data());
    EXPECT_LE(bpt::rel_err(h.bias, bref), 1e-6);
    EXPECT_EQ(h.state.bad_row, INT64_MAX);
}

std::vector<Param> params() {
    std::vector<Param> p;
    for (const std::string &b : bpt::all_backends())
        for (const RowLayout &l : kLayouts)
            p.emplace_back(b, l);
    return p;
}

INSTANTIATE_TEST_SUITE_P(Layouts, RowOps, ::testing::ValuesIn(params()),
                         [](const ::testing::TestParamInfo<Param> &i) {
                             return std::get<0>(i.param) + "_" + std::get<1>(i.param).name;
                         });

INSTANTIATE_TEST_SUITE_P(Backends, LossHeadOps, ::testing::ValuesIn(bpt::all_backends()),
                         bpt::backend_param_name);

} // namespace
