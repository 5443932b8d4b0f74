// Data-parallel training over MPI, run as `mpirun -np 2 bp_mpi_tests` (any number of ranks works).
// Every rank runs every test; the tests are collective, so a test that returns early on one rank
// would leave the others waiting: ctest's timeout bounds that, and the checks below use EXPECT
// (not ASSERT) between collective calls.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "backprop/backprop.h"
#include "support.h"

namespace {

struct Plan {
    int in = 12, hidden1 = 24, hidden2 = 16, classes = 5;
    int global_batch = 64, steps = 50, accum = 1;
    bp_optim_kind kind = BP_OPTIM_SGD;
    float dropout = 0.0f;
    uint64_t seed = 7;
    bp_precision precision = BP_PRECISION_FP32;
    double tolerance = 1e-6; // one process against the group, relative, per layer
};

// The device every test uses: the CPU, or with BP_MPI_TEST_DEVICE=cuda this rank's GPU
// (cuda:<rank on its host>), which runs the NCCL path (scripts/gpu-check.sh does).
std::string g_device = "cpu";

// One model and optimizer, freed at the end of the scope.
struct Replica {
    bp_device *dev = nullptr;
    bp_model *model = nullptr;
    bp_optimizer *opt = nullptr;

    Replica(const Plan &s, int hidden1) {
        dev = bp_device_open(g_device.c_str(), nullptr);
        EXPECT_NE(dev, nullptr) << g_device << ": " << bp_last_error();
        int widths[] = {s.in, hidden1, s.hidden2, s.classes};
        float drop[] = {s.dropout, s.dropout, 0.0f};
        bp_mlp_config cfg = bp_mlp_config_default(3, widths);
        cfg.dropout = drop;
        cfg.seed = s.seed;
        cfg.max_batch = s.global_batch;
        cfg.precision = s.precision;
        model = dev ? bp_model_create(dev, &cfg, nullptr) : nullptr;
        bp_optim_config oc = bp_optim_config_default(s.kind);
        if (s.kind == BP_OPTIM_SGD) oc.momentum = 0.9f, oc.nesterov = 1, oc.lr = 0.05f;
        oc.accum_steps = s.accum;
        oc.clip_norm = 5.0f;
        opt = model ? bp_optimizer_create(model, &oc, nullptr) : nullptr;
    }
    explicit Replica(const Plan &s) : Replica(s, s.hidden1) {}
    ~Replica() {
        bp_optimizer_free(opt);
        bp_model_free(model);
        bp_device_close(dev);
    }
    std::vector<float> params() const {
        std::vector<float> p(bp_model_n_params(model));
        EXPECT_EQ(BP_OK, bp_model_get_params(model, p.data(), p.size())) << bp_last_error();
        return p;
    }
};

// Step s's global batch: the same on every rank (fixed seeds), labels spread over the classes.
struct Batch {
    std::vector<float> x;
    std::vector<int32_t> y;
};

Batch global_batch(const Plan &s, int step) {
    Batch b;
    b.x = bpt::uniform((size_t)s.global_batch * s.in, -1.0f, 1.0f, 9100 + step);
    b.y.resize(s.global_batch);
    for (int i = 0; i < s.global_batch; ++i)
        b.y[i] = (int32_t)((i * 7 + step * 3 + (int)(b.x[(size_t)i * s.in] > 0)) % s.classes);
    return b;
}

// Rows [first, first + count) of a batch as tensors on dev.
struct Shard {
    bp_tensor *x = nullptr, *y = nullptr;
    Shard(bp_device *dev, const Plan &s, const Batch &b, int64_t first, int64_t count) {
        x = bp_tensor_create(dev, BP_F32, count, s.in, nullptr);
        y = bp_tensor_create(dev, BP_I32, count, 1, nullptr);
        EXPECT_EQ(BP_OK, bp_tensor_upload(x, b.x.data() + first * s.in, (size_t)(count * s.in)));
        EXPECT_EQ(BP_OK, bp_tensor_upload(y, b.y.data() + first, (size_t)count));
    }
    ~Shard() {
        bp_tensor_free(x);
        bp_tensor_free(y);
    }
};

class Distributed : public ::testing::Test {
  protected:
    void SetUp() override {
        comm = bp_comm_create(nullptr);
        ASSERT_NE(comm, nullptr) << bp_last_error();
        rank = bp_comm_rank(comm);
        size = bp_comm_size(comm);
    }
    void TearDown() override {
        bp_comm_free(comm);
    }
    bp_comm *comm = nullptr;
    int rank = 0, size = 1;
};

// ||a - b|| / ||b|| over one layer's weight or bias (offsets from the model).
double layer_rel(const std::vector<float> &a, const std::vector<float> &b, size_t lo, size_t n) {
    double d = 0, r = 0;
    for (size_t i = lo; i < lo + n; ++i) {
        double e = (double)a[i] - b[i];
        if (!std::isfinite(a[i])) return INFINITY;
        d += e * e;
        r += (double)b[i] * b[i];
    }
    return std::sqrt(d / r);
}

// Trains s.steps steps on this rank's shards (attached) and, beside it, one process alone on
// the whole batches; the two must agree on every weight and bias to 1e-6 relative, and every
// rank must hold bitwise the same parameters as rank 0.
void expect_matches_single_process(bp_comm *comm, const Plan &s) {
    Replica dist(s), alone(s);
    ASSERT_NE(dist.opt, nullptr) << bp_last_error();
    ASSERT_NE(alone.opt, nullptr) << bp_last_error();
    ASSERT_EQ(BP_OK, bp_comm_attach(comm, dist.model, dist.opt)) << bp_last_error();
    bp_loss_config ce = {BP_LOSS_CROSS_ENTROPY, 0.1f};
    int64_t first = 0, count = 0;
    bp_comm_shard(comm, s.global_batch, &first, &count);
    for (int step = 0; step < s.steps; ++step) {
        Batch b = global_batch(s, step);
        Shard mine(dist.dev, s, b, first, count), whole(alone.dev, s, b, 0, s.global_batch);
        float l_dist = 0, l_alone = 0;
        bp_status a = bp_train_step(dist.model, dist.opt, &ce, mine.x, mine.y, &l_dist);
        bp_status c = bp_train_step(alone.model, alone.opt, &ce, whole.x, whole.y, &l_alone);
        EXPECT_EQ(BP_OK, a) << bp_last_error();
        EXPECT_EQ(BP_OK, c) << bp_last_error();
        // The loss is the global batch's mean on every rank.
        EXPECT_NEAR(l_alone, l_dist, 1e-6 * std::fabs(l_alone)) << "step " << step;
        // So is the train accuracy: the ranks' counts summed, of the global batch's rows (the
        // replicas' logits agree to rounding, and no row of these batches sits on a tie).
        int64_t cd = -1, nd = -1, ca = -2, na = -2;
        EXPECT_EQ(BP_OK, bp_train_step_correct(dist.model, &cd, &nd)) << bp_last_error();
        EXPECT_EQ(BP_OK, bp_train_step_correct(alone.model, &ca, &na)) << bp_last_error();
        EXPECT_EQ(cd, ca) << "step " << step;
        EXPECT_EQ(nd, (int64_t)s.global_batch) << "step " << step;
        EXPECT_EQ(na, (int64_t)s.global_batch) << "step " << step;
    }
    auto pd = dist.params(), pa = alone.params();
    for (int l = 0; l < bp_model_n_layers(dist.model); ++l) {
        size_t w = 0, bias = 0;
        ASSERT_EQ(BP_OK, bp_model_layer_offsets(dist.model, l, &w, &bias));
        int out = bp_model_width(dist.model, l + 1), in = bp_model_width(dist.model, l);
        // fp32 sums in another order (each rank's half, then the two halves): a few ulps per
        // step, 1e-6 after 50 steps.
        EXPECT_LE(layer_rel(pd, pa, w, (size_t)out * in), s.tolerance)
            << "layer " << l << " weight";
        EXPECT_LE(layer_rel(pd, pa, bias, (size_t)out), s.tolerance) << "layer " << l << " bias";
    }
    // Replicas: rank 0's parameters, bitwise, everywhere.
    std::vector<float> zero = pd;
    MPI_Bcast(zero.data(), (int)zero.size(), MPI_FLOAT, 0, MPI_COMM_WORLD);
    EXPECT_EQ(0, std::memcmp(zero.data(), pd.data(), pd.size() * sizeof(float)))
        << "rank's parameters differ from rank 0's";
    EXPECT_EQ(bp_optimizer_steps(alone.opt), bp_optimizer_steps(dist.opt));
}

// Attaches r to the group; returns step 0's global batch, and this rank's rows of it through
// first and count.
Batch attach_for_first_step(bp_comm *comm, Replica &r, const Plan &s, int64_t *first,
                            int64_t *count) {
    EXPECT_EQ(BP_OK, bp_comm_attach(comm, r.model, r.opt)) << bp_last_error();
    bp_comm_shard(comm, s.global_batch, first, count);
    return global_batch(s, 0);
}

TEST_F(Distributed, SgdNesterovMatchesOneProcess) {
    Plan s;
    expect_matches_single_process(comm, s);
}

// Uneven shards (61 rows), two micro-batches per rank and dropout: the masks follow the rows'
// places in the global batch, so they are the single process's.
TEST_F(Distributed, AdamWDropoutAccumulationMatchesOneProcess) {
    Plan s;
    s.kind = BP_OPTIM_ADAMW;
    s.global_batch = 61;
    s.accum = 2;
    s.dropout = 0.25f;
    expect_matches_single_process(comm, s);
}

// bf16: the same, with the group's weights rounded into each rank's bf16 copy by the update.
// The sums of the two halves differ from the one process's in their last bits (observed 7e-9
// after 30 steps); should a weight then lie on a bf16 rounding boundary, it rounds the other
// way in one of the two runs, and that ulp (2^-8) of one weight moves the later steps by up to
// ~1e-4: limit 1e-3.
TEST_F(Distributed, Bf16MatchesOneProcess) {
    Plan s;
    s.kind = BP_OPTIM_ADAMW;
    s.steps = 30;
    s.precision = BP_PRECISION_BF16;
    s.tolerance = 1e-3;
    expect_matches_single_process(comm, s);
}

// Attaching copies rank 0's weights into the bf16 copy the GEMMs read, not only into the fp32
// master weights: every rank's outputs are then rank 0's, bitwise.
TEST_F(Distributed, AttachRefreshesTheBf16Copy) {
    Plan s;
    s.precision = BP_PRECISION_BF16;
    s.seed = 200 + (uint64_t)rank;
    Replica r(s);
    ASSERT_NE(r.opt, nullptr) << bp_last_error();
    ASSERT_EQ(BP_OK, bp_comm_attach(comm, r.model, r.opt)) << bp_last_error();
    Plan s0 = s;
    s0.seed = 200;
    Replica zero(s0);
    ASSERT_NE(zero.model, nullptr) << bp_last_error();
    Batch b = global_batch(s, 0);
    std::vector<float> outs[2];
    Replica *models[2] = {&r, &zero};
    for (int k = 0; k < 2; ++k) {
        bp_tensor *x = bp_tensor_create(models[k]->dev, BP_F32, 8, s.in, nullptr);
        bp_tensor *y = bp_tensor_create(models[k]->dev, BP_F32, 8, s.classes, nullptr);
        ASSERT_TRUE(x && y);
        EXPECT_EQ(BP_OK, bp_tensor_upload(x, b.x.data(), (size_t)8 * s.in));
        EXPECT_EQ(BP_OK, bp_model_forward(models[k]->model, x, BP_MODE_INFERENCE, y));
        outs[k].resize((size_t)8 * s.classes);
        EXPECT_EQ(BP_OK, bp_tensor_download(y, outs[k].data(), outs[k].size()));
        bp_tensor_free(x);
        bp_tensor_free(y);
    }
    EXPECT_EQ(0, std::memcmp(outs[0].data(), outs[1].data(), outs[0].size() * sizeof(float)))
        << "rank " << rank << "'s GEMMs read other weights than rank 0's";
}

TEST_F(Distributed, AttachCopiesRankZerosReplica) {
    Plan s;
    s.seed = 100 + (uint64_t)rank; // different initial weights on every rank
    Replica r(s);
    ASSERT_NE(r.opt, nullptr) << bp_last_error();
    ASSERT_EQ(BP_OK, bp_model_set_rng_counter(r.model, 40 + (uint64_t)rank));
    ASSERT_EQ(BP_OK, bp_comm_attach(comm, r.model, r.opt)) << bp_last_error();
    Plan s0 = s;
    s0.seed = 100;
    Replica zero(s0);
    auto a = r.params(), b = zero.params();
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
    EXPECT_EQ(40u, bp_model_rng_counter(r.model));
}

TEST_F(Distributed, AttachRefusesDifferentModels) {
    if (size < 2) GTEST_SKIP() << "needs 2 ranks (mpirun -np 2)";
    Plan s;
    Replica r(s, rank == size - 1 ? 30 : s.hidden1);
    ASSERT_NE(r.opt, nullptr) << bp_last_error();
    auto before = r.params();
    EXPECT_EQ(BP_ERR_INVALID_ARGUMENT, bp_comm_attach(comm, r.model, r.opt));
    std::string msg = bp_last_error();
    EXPECT_NE(msg.find("disagree on the model"), std::string::npos) << msg;
    EXPECT_NE(msg.find("rank 0 has 12-24-16-5"), std::string::npos) << msg;
    EXPECT_NE(msg.find("rank " + std::to_string(size - 1) + " has 12-30-16-5"), std::string::npos)
        << msg;
    auto after = r.params();
    EXPECT_EQ(0, std::memcmp(before.data(), after.data(), before.size() * sizeof(float)));
}

// A step with bad arguments on one rank fails on every rank (no rank waits forever), changes
// nothing, and the group goes on.
TEST_F(Distributed, RefusedArgumentsFailEveryRank) {
    if (size < 2) GTEST_SKIP() << "needs 2 ranks (mpirun -np 2)";
    Plan s;
    Replica r(s);
    ASSERT_NE(r.opt, nullptr) << bp_last_error();
    int64_t first = 0, count = 0;
    Batch b = attach_for_first_step(comm, r, s, &first, &count);
    Shard mine(r.dev, s, b, first, count);
    bp_tensor *wrong = bp_tensor_create(r.dev, BP_F32, count, s.in + 1, nullptr);
    bp_loss_config ce = {BP_LOSS_CROSS_ENTROPY, 0.0f};
    auto before = r.params();
    bool bad = rank == 1;
    bp_status st = bp_train_step(r.model, r.opt, &ce, bad ? wrong : mine.x, mine.y, nullptr);
    std::string msg = bp_last_error();
    if (bad) {
        EXPECT_EQ(BP_ERR_SHAPE_MISMATCH, st) << msg;
        EXPECT_NE(msg.find("x has 13 columns"), std::string::npos) << msg;
    } else {
        EXPECT_EQ(BP_ERR_REMOTE, st) << msg;
        EXPECT_NE(msg.find("rank 1 of"), std::string::npos) << msg;
    }
    auto after = r.params();
    EXPECT_EQ(0, std::memcmp(before.data(), after.data(), before.size() * sizeof(float)));
    EXPECT_EQ(0, bp_optimizer_steps(r.opt));
    // Still one group: the next step runs everywhere.
    EXPECT_EQ(BP_OK, bp_train_step(r.model, r.opt, &ce, mine.x, mine.y, nullptr))
        << bp_last_error();
    bp_tensor_free(wrong);
}

// A non-finite input on one rank poisons the summed gradient: every rank refuses the step and
// keeps its parameters; the rank that holds it names the element.
TEST_F(Distributed, NonFiniteOnOneRankStopsEveryRank) {
    if (size < 2) GTEST_SKIP() << "needs 2 ranks (mpirun -np 2)";
    Plan s;
    s.kind = BP_OPTIM_ADAM;
    Replica r(s);
    ASSERT_NE(r.opt, nullptr) << bp_last_error();
    int64_t first = 0, count = 0;
    Batch b = attach_for_first_step(comm, r, s, &first, &count);
    if (rank == 1) b.x[(size_t)(first + 2) * s.in + 3] = NAN;
    Shard mine(r.dev, s, b, first, count);
    bp_loss_config ce = {BP_LOSS_CROSS_ENTROPY, 0.0f};
    auto before = r.params();
    EXPECT_EQ(BP_ERR_NON_FINITE, bp_train_step(r.model, r.opt, &ce, mine.x, mine.y, nullptr));
    std::string msg = bp_last_error();
    if (rank == 1)
        EXPECT_NE(msg.find("x[2, 3] is nan"), std::string::npos) << msg;
    else
        EXPECT_NE(msg.find("another rank's loss is non-finite"), std::string::npos) << msg;
    auto after = r.params();
    EXPECT_EQ(0, std::memcmp(before.data(), after.data(), before.size() * sizeof(float)));
    EXPECT_EQ(0, bp_optimizer_steps(r.opt));
}

TEST_F(Distributed, AgreeCheckSameAndSum) {
    // agree: one rank's failure reaches all, naming the first failing rank.
    bool ok = rank != size - 1;
    bp_status st = bp_comm_agree(comm, ok, "reading the data");
    if (size == 1) {
        EXPECT_EQ(BP_ERR_REMOTE, st);
    } else if (ok) {
        EXPECT_EQ(BP_ERR_REMOTE, st);
        std::string want = "reading the data failed on rank " + std::to_string(size - 1);
        EXPECT_NE(std::string(bp_last_error()).find(want), std::string::npos) << bp_last_error();
    } else {
        EXPECT_EQ(BP_ERR_REMOTE, st);
    }
    EXPECT_EQ(BP_OK, bp_comm_agree(comm, 1, "nothing")) << bp_last_error();

    // check_same: equal texts pass; a differing one is quoted with rank 0's.
    EXPECT_EQ(BP_OK, bp_comm_check_same(comm, "60000 x 784", "the data")) << bp_last_error();
    std::string mine = rank == 0 ? "60000 x 784" : "59999 x 784";
    st = bp_comm_check_same(comm, mine.c_str(), "the training data");
    if (size > 1) {
        EXPECT_EQ(BP_ERR_INVALID_ARGUMENT, st);
        std::string msg = bp_last_error();
        EXPECT_NE(msg.find("disagree on the training data: rank 0 has 60000 x 784, rank 1 has "
                           "59999 x 784"),
                  std::string::npos)
            << msg;
    }

    // sum: 1 + 2 + ... + size, and a rank-dependent fraction, the same bits on every rank.
    double v[2] = {(double)(rank + 1), 1.0 / (rank + 3)};
    ASSERT_EQ(BP_OK, bp_comm_sum(comm, v, 2)) << bp_last_error();
    EXPECT_EQ(size * (size + 1) / 2.0, v[0]);
    double want = 0;
    for (int r = 0; r < size; ++r)
        want += 1.0 / (r + 3);
    EXPECT_NEAR(want, v[1], 1e-15);
}

TEST_F(Distributed, ShardsCoverTheBatch) {
    for (int64_t rows : {1, 2, 7, 64, 61, 1000}) {
        int64_t first = -1, count = -1;
        bp_comm_shard(comm, rows, &first, &count);
        int64_t mine[2] = {first, count}, all[2 * 64];
        ASSERT_LE(size, 64);
        MPI_Allgather(mine, 2, MPI_INT64_T, all, 2, MPI_INT64_T, MPI_COMM_WORLD);
        int64_t next = 0;
        for (int r = 0; r < size; ++r) {
            EXPECT_EQ(next, all[2 * r]) << rows << " rows, rank " << r;
            EXPECT_GE(all[2 * r + 1], rows / size);
            next += all[2 * r + 1];
        }
        EXPECT_EQ(rows, next);
    }
}

} // namespace

// MPI starts before the tests (so every test's bp_comm_create finds it running) and ends after;
// the exit status is nonzero on any rank with a failure, which mpirun passes on.
int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    ::testing::InitGoogleTest(&argc, argv);
    const char *want = std::getenv("BP_MPI_TEST_DEVICE");
    if (want && std::string(want) == "cuda") {
        MPI_Comm node;
        int local = 0;
        MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
        MPI_Comm_rank(node, &local);
        MPI_Comm_free(&node);
        g_device = "cuda:" + std::to_string(local);
    }
    int rc = RUN_ALL_TESTS();
    int worst = 0;
    MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Finalize();
    return worst;
}
