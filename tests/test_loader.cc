// The batch loader, on every backend: each sample once per epoch, the documented shuffle per
// (seed, epoch), in order without shuffle, the partial last batch, resuming mid-epoch, freeing
// mid-epoch, no allocation per step, and bad arguments.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <future>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "support.h"

namespace {

using ::testing::HasSubstr;

struct LoaderDel {
    void operator()(bp_loader *l) const {
        bp_loader_free(l);
    }
};
using bpt::DatasetPtr;
using LoaderPtr = std::unique_ptr<bp_loader, LoaderDel>;

const int kFeatures = 3;

// Sample i: features {i, -i, i + 0.5}, label i % 7, so every row names itself and a torn row
// (features from one sample, label from another) shows.
DatasetPtr numbered(int64_t n, int features = kFeatures) {
    std::vector<float> x;
    std::vector<int32_t> y;
    for (int64_t i = 0; i < n; ++i) {
        for (int j = 0; j < features; ++j)
            x.push_back(j == 0 ? (float)i : j == 1 ? (float)-i : (float)i + 0.5f);
        y.push_back((int32_t)(i % 7));
    }
    DatasetPtr d(
        bp_dataset_from_memory(n, features, x.data(), BP_TARGET_CLASS, 1, y.data(), nullptr));
    EXPECT_NE(d, nullptr) << bp_last_error();
    return d;
}

// The documented order of epoch `epoch`: Fisher-Yates on stream 0xC000000000000001 + epoch,
// computed word by word in bpt::documented_shuffle.
std::vector<int64_t> documented_order(int64_t n, uint64_t seed, int64_t epoch) {
    return bpt::documented_shuffle(n, seed, 0xC000000000000001ULL + (uint64_t)epoch);
}

class Loader : public ::testing::TestWithParam<std::string> {
  protected:
    bp_device *dev = nullptr;

    void SetUp() override {
        std::string why;
        dev = bpt::open_or_reason(GetParam(), &why);
        if (!dev) GTEST_SKIP() << why;
    }
    void TearDown() override {
        bp_device_close(dev);
    }
    LoaderPtr make(const bp_dataset *d, int batch, int shuffle, uint64_t seed) {
        bp_status st = BP_ERR_DEVICE;
        LoaderPtr l(bp_loader_create(d, dev, batch, shuffle, seed, &st));
        EXPECT_EQ(st, BP_OK) << bp_last_error();
        EXPECT_NE(l, nullptr);
        return l;
    }
    // The rows of one batch, checked whole (features and label of the same sample).
    std::vector<int64_t> rows_of(const bp_tensor *x, const bp_tensor *y) {
        int64_t rows = bp_tensor_rows(x);
        EXPECT_EQ(bp_tensor_cols(x), kFeatures);
        EXPECT_EQ(bp_tensor_rows(y), rows);
        EXPECT_EQ(bp_tensor_cols(y), 1);
        EXPECT_EQ(bp_tensor_dtype(y), BP_I32);
        std::vector<float> hx((size_t)rows * kFeatures);
        std::vector<int32_t> hy((size_t)rows);
        EXPECT_EQ(bp_tensor_download(x, hx.data(), hx.size()), BP_OK) << bp_last_error();
        EXPECT_EQ(bp_tensor_download(y, hy.data(), hy.size()), BP_OK) << bp_last_error();
        std::vector<int64_t> ids;
        for (int64_t r = 0; r < rows; ++r) {
            int64_t i = (int64_t)hx[r * kFeatures];
            EXPECT_EQ(hx[r * kFeatures + 1], (float)-i) << "row " << r;
            EXPECT_EQ(hx[r * kFeatures + 2], (float)i + 0.5f) << "row " << r;
            EXPECT_EQ(hy[r], (int32_t)(i % 7)) << "row " << r << " has another sample's label";
            ids.push_back(i);
        }
        return ids;
    }
    // The rest of the epoch from the current batch on: the rows in order, and the batch sizes.
    std::vector<int64_t> drain(bp_loader *l, std::vector<int64_t> *sizes = nullptr) {
        std::vector<int64_t> all;
        for (int guard = 0; guard < 100000; ++guard) {
            const bp_tensor *x = nullptr, *y = nullptr;
            EXPECT_EQ(bp_loader_next(l, &x, &y), BP_OK) << bp_last_error();
            if (!x) {
                EXPECT_EQ(y, nullptr);
                break;
            }
            std::vector<int64_t> ids = rows_of(x, y);
            if (sizes) sizes->push_back((int64_t)ids.size());
            all.insert(all.end(), ids.begin(), ids.end());
        }
        return all;
    }
    std::vector<int64_t> epoch(bp_loader *l, int64_t e, int64_t first = 0) {
        EXPECT_EQ(bp_loader_start_epoch(l, e, first), BP_OK) << bp_last_error();
        return drain(l);
    }
};

std::vector<int64_t> iota(int64_t from, int64_t to) {
    std::vector<int64_t> v;
    for (int64_t i = from; i < to; ++i)
        v.push_back(i);
    return v;
}

TEST_P(Loader, EverySampleOncePerEpochWithAPartialLastBatch) {
    DatasetPtr d = numbered(103);
    LoaderPtr l = make(d.get(), 10, 1, 42);
    ASSERT_NE(l, nullptr);
    EXPECT_EQ(bp_loader_batches(l.get()), 11);
    for (int64_t e = 0; e < 3; ++e) {
        std::vector<int64_t> sizes;
        ASSERT_EQ(bp_loader_start_epoch(l.get(), e, 0), BP_OK);
        std::vector<int64_t> rows = drain(l.get(), &sizes);
        EXPECT_EQ(rows.size(), 103u);
        std::vector<int64_t> sorted = rows;
        std::sort(sorted.begin(), sorted.end());
        EXPECT_EQ(sorted, iota(0, 103)) << "epoch " << e << ": a sample missing or repeated";
        std::vector<int64_t> want(10, 10);
        want.push_back(3);
        EXPECT_EQ(sizes, want);
    }
}

TEST_P(Loader, OrderFollowsSeedAndEpoch) {
    DatasetPtr d = numbered(103);
    LoaderPtr a = make(d.get(), 16, 1, 42), b = make(d.get(), 16, 1, 42),
              c = make(d.get(), 16, 1, 43);
    ASSERT_TRUE(a && b && c);
    std::vector<int64_t> a0 = epoch(a.get(), 0), a1 = epoch(a.get(), 1);
    EXPECT_EQ(a0, documented_order(103, 42, 0));
    EXPECT_EQ(a1, documented_order(103, 42, 1));
    EXPECT_NE(a0, a1) << "two epochs in the same order";
    EXPECT_NE(a0, iota(0, 103)) << "not shuffled";
    // Another loader with the same seed, visiting the epochs in another order.
    EXPECT_EQ(epoch(b.get(), 1), a1);
    EXPECT_EQ(epoch(b.get(), 0), a0);
    EXPECT_EQ(epoch(a.get(), 0), a0) << "epoch 0 again, after epoch 1";
    EXPECT_NE(epoch(c.get(), 0), a0) << "another seed, same order";
}

// bp_loader_epoch_order gives what a loader hands out (and the documented recipe), with and
// without shuffle, for sizes that need one and several Philox blocks.
TEST_P(Loader, EpochOrderIsWhatTheLoaderHandsOut) {
    for (int64_t n : {1, 2, 7, 103}) {
        DatasetPtr d = numbered(n);
        for (int shuffle = 0; shuffle < 2; ++shuffle) {
            LoaderPtr l = make(d.get(), 5, shuffle, 1234);
            ASSERT_NE(l, nullptr);
            for (int64_t e : {0, 1, 6}) {
                SCOPED_TRACE("n " + std::to_string(n) + " shuffle " + std::to_string(shuffle) +
                             " epoch " + std::to_string(e));
                std::vector<int64_t> order((size_t)n, -1);
                ASSERT_EQ(BP_OK, bp_loader_epoch_order(n, shuffle, 1234, e, order.data()))
                    << bp_last_error();
                EXPECT_EQ(order, epoch(l.get(), e));
                EXPECT_EQ(order, shuffle ? documented_order(n, 1234, e) : iota(0, n));
            }
        }
    }
}

TEST_P(Loader, InOrderWithoutShuffle) {
    DatasetPtr d = numbered(50);
    LoaderPtr l = make(d.get(), 7, 0, 42);
    ASSERT_NE(l, nullptr);
    EXPECT_EQ(epoch(l.get(), 0), iota(0, 50));
    EXPECT_EQ(epoch(l.get(), 5), iota(0, 50));
}

TEST_P(Loader, ResumesAtAGivenBatch) {
    DatasetPtr d = numbered(103);
    LoaderPtr l = make(d.get(), 10, 1, 9);
    ASSERT_NE(l, nullptr);
    std::vector<int64_t> full = epoch(l.get(), 2);
    std::vector<int64_t> tail(full.begin() + 40, full.end());
    LoaderPtr fresh = make(d.get(), 10, 1, 9);
    EXPECT_EQ(epoch(fresh.get(), 2, 4), tail);
    EXPECT_EQ(epoch(fresh.get(), 2, 10), std::vector<int64_t>(full.begin() + 100, full.end()));
    EXPECT_EQ(epoch(fresh.get(), 2, 11), std::vector<int64_t>()) << "nothing left";
}

// Restarting in the middle of an epoch drops what was gathered ahead of it.
TEST_P(Loader, RestartsMidEpoch) {
    DatasetPtr d = numbered(103);
    LoaderPtr l = make(d.get(), 10, 1, 9);
    ASSERT_NE(l, nullptr);
    ASSERT_EQ(bp_loader_start_epoch(l.get(), 0, 0), BP_OK);
    for (int i = 0; i < 3; ++i) {
        const bp_tensor *x, *y;
        ASSERT_EQ(bp_loader_next(l.get(), &x, &y), BP_OK);
        ASSERT_NE(x, nullptr);
    }
    EXPECT_EQ(epoch(l.get(), 1), documented_order(103, 9, 1));
}

TEST_P(Loader, BatchLargerThanTheDataset) {
    DatasetPtr d = numbered(5);
    LoaderPtr l = make(d.get(), 64, 0, 1);
    ASSERT_NE(l, nullptr);
    EXPECT_EQ(bp_loader_batches(l.get()), 1);
    std::vector<int64_t> sizes;
    ASSERT_EQ(bp_loader_start_epoch(l.get(), 0, 0), BP_OK);
    EXPECT_EQ(drain(l.get(), &sizes), iota(0, 5));
    EXPECT_EQ(sizes, std::vector<int64_t>{5});
}

TEST_P(Loader, RegressionTargets) {
    std::vector<float> x = {0, 1, 2, 3}, y = {0.5f, 1.5f, 2.5f, 3.5f, 4.5f, 5.5f, 6.5f, 7.5f};
    DatasetPtr d(bp_dataset_from_memory(4, 1, x.data(), BP_TARGET_VALUES, 2, y.data(), nullptr));
    ASSERT_NE(d, nullptr);
    LoaderPtr l = make(d.get(), 3, 1, 5);
    ASSERT_EQ(bp_loader_start_epoch(l.get(), 0, 0), BP_OK);
    const bp_tensor *tx, *ty;
    ASSERT_EQ(bp_loader_next(l.get(), &tx, &ty), BP_OK);
    ASSERT_NE(tx, nullptr);
    ASSERT_EQ(bp_tensor_dtype(ty), BP_F32);
    ASSERT_EQ(bp_tensor_cols(ty), 2);
    std::vector<float> hx(3), hy(6);
    ASSERT_EQ(bp_tensor_download(tx, hx.data(), 3), BP_OK);
    ASSERT_EQ(bp_tensor_download(ty, hy.data(), 6), BP_OK);
    for (int r = 0; r < 3; ++r) {
        EXPECT_EQ(hy[2 * r], 2 * hx[r] + 0.5f) << r;
        EXPECT_EQ(hy[2 * r + 1], 2 * hx[r] + 1.5f) << r;
    }
}

// The tensors are made once: the same two per batch size, and no device allocation per step.
TEST_P(Loader, AllocatesNothingPerStepAndFreesAll) {
    bp_device_stats s0{}, s1{}, s2{};
    ASSERT_EQ(bp_device_get_stats(dev, &s0), BP_OK);
    DatasetPtr d = numbered(103);
    LoaderPtr l = make(d.get(), 10, 1, 42);
    ASSERT_NE(l, nullptr);
    ASSERT_EQ(bp_device_get_stats(dev, &s1), BP_OK);
    EXPECT_EQ(s1.alloc_count - s0.alloc_count, 4u) << "x and y, full and last batch";
    std::set<const bp_tensor *> seen;
    for (int e = 0; e < 2; ++e) {
        ASSERT_EQ(bp_loader_start_epoch(l.get(), e, 0), BP_OK);
        const bp_tensor *x = nullptr, *y = nullptr;
        while (bp_loader_next(l.get(), &x, &y) == BP_OK && x)
            seen.insert(x), seen.insert(y);
    }
    EXPECT_EQ(seen.size(), 4u);
    ASSERT_EQ(bp_device_get_stats(dev, &s2), BP_OK);
    EXPECT_EQ(s2.alloc_count, s1.alloc_count) << "allocated while training";
    l.reset();
    ASSERT_EQ(bp_device_get_stats(dev, &s2), BP_OK);
    EXPECT_EQ(s2.free_count - s0.free_count, 4u);
    EXPECT_EQ(s2.bytes_in_use, s0.bytes_in_use);
}

// Freeing while the worker is gathering, right after a start, or before any epoch returns
// promptly; a hang fails after 30 s instead of blocking the suite.
TEST_P(Loader, FreesMidEpochWithoutHanging) {
    DatasetPtr d = numbered(20000, 256);
    for (int mode = 0; mode < 3; ++mode) {
        bp_loader *l = bp_loader_create(d.get(), dev, 4096, 1, 3, nullptr);
        ASSERT_NE(l, nullptr) << bp_last_error();
        if (mode >= 1) {
            ASSERT_EQ(bp_loader_start_epoch(l, 0, 0), BP_OK);
        }
        if (mode == 2) {
            const bp_tensor *x, *y;
            ASSERT_EQ(bp_loader_next(l, &x, &y), BP_OK);
        }
        std::promise<void> done;
        std::future<void> f = done.get_future();
        std::thread t([l, &done] {
            bp_loader_free(l);
            done.set_value();
        });
        if (f.wait_for(std::chrono::seconds(30)) != std::future_status::ready) {
            t.detach();
            FAIL() << "bp_loader_free hung (mode " << mode << ")";
        }
        t.join();
    }
}

TEST_P(Loader, ManyShortEpochs) {
    DatasetPtr d = numbered(37);
    LoaderPtr l = make(d.get(), 4, 1, 11);
    ASSERT_NE(l, nullptr);
    for (int e = 0; e < 50; ++e) {
        std::vector<int64_t> rows = epoch(l.get(), e, e % 3);
        ASSERT_EQ(rows.size(), 37u - 4u * (e % 3)) << "epoch " << e;
    }
}

// The last batch's tensors do not fit: NULL, out of memory, and the full batch's tensors (made
// first) are freed again.
TEST_P(Loader, FailsCleanlyUnderAMemoryLimit) {
    DatasetPtr d = numbered(103);
    bp_device_stats s0{}, s1{};
    ASSERT_EQ(bp_device_get_stats(dev, &s0), BP_OK);
    size_t full = 10 * kFeatures * 4 + 10 * 4; // x and y of a 10-row batch
    ASSERT_EQ(bp_device_set_memory_limit(dev, s0.bytes_in_use + full + 16), BP_OK);
    bp_status st = BP_OK;
    EXPECT_EQ(bp_loader_create(d.get(), dev, 10, 1, 1, &st), nullptr);
    EXPECT_EQ(st, BP_ERR_OUT_OF_MEMORY) << bp_last_error();
    ASSERT_EQ(bp_device_get_stats(dev, &s1), BP_OK);
    EXPECT_EQ(s1.bytes_in_use, s0.bytes_in_use);
    EXPECT_GE(s1.alloc_count - s0.alloc_count, 2u) << "the limit was not reached where meant";
    ASSERT_EQ(bp_device_set_memory_limit(dev, 0), BP_OK);
}

TEST_P(Loader, BadArguments) {
    DatasetPtr d = numbered(10);
    bp_status st = BP_OK;
    EXPECT_EQ(bp_loader_create(d.get(), dev, 0, 1, 1, &st), nullptr);
    EXPECT_EQ(st, BP_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(bp_loader_create(nullptr, dev, 4, 1, 1, &st), nullptr);
    EXPECT_EQ(st, BP_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(bp_loader_create(d.get(), nullptr, 4, 1, 1, &st), nullptr);
    EXPECT_EQ(st, BP_ERR_INVALID_ARGUMENT);
    LoaderPtr l = make(d.get(), 4, 1, 1);
    ASSERT_NE(l, nullptr);
    const bp_tensor *x = nullptr, *y = nullptr;
    EXPECT_EQ(bp_loader_next(l.get(), &x, &y), BP_ERR_INVALID_ARGUMENT);
    EXPECT_THAT(bp_last_error(), HasSubstr("bp_loader_start_epoch"));
    EXPECT_EQ(bp_loader_start_epoch(l.get(), 0, 4), BP_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(bp_loader_start_epoch(l.get(), 0, -1), BP_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(bp_loader_start_epoch(l.get(), -1, 0), BP_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(bp_loader_start_epoch(nullptr, 0, 0), BP_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(bp_loader_next(l.get(), nullptr, &y), BP_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(bp_loader_batches(nullptr), 0);
    bp_loader_free(nullptr);
}

// Shards for data-parallel ranks: piece r of every batch is rows [B*r/N, B*(r+1)/N) of the
// single loader's batch (same seed, same epoch order), so the ranks' pieces, in rank order,
// are the whole batch.
TEST_P(Loader, ShardsPieceTogetherTheWholeBatch) {
    DatasetPtr d = numbered(103);
    const int ranks = 3;
    LoaderPtr whole = make(d.get(), 10, 1, 42);
    std::vector<LoaderPtr> piece;
    for (int r = 0; r < ranks; ++r) {
        bp_status st = BP_ERR_DEVICE;
        piece.emplace_back(bp_loader_create_shard(d.get(), dev, 10, 1, 42, r, ranks, 1, &st));
        ASSERT_EQ(st, BP_OK) << bp_last_error();
        EXPECT_EQ(bp_loader_batches(piece[r].get()), 11);
    }
    for (int64_t e = 0; e < 2; ++e) {
        ASSERT_EQ(bp_loader_start_epoch(whole.get(), e, 0), BP_OK);
        for (auto &p : piece)
            ASSERT_EQ(bp_loader_start_epoch(p.get(), e, 0), BP_OK);
        for (int64_t b = 0; b < 11; ++b) {
            const bp_tensor *x = nullptr, *y = nullptr;
            ASSERT_EQ(bp_loader_next(whole.get(), &x, &y), BP_OK);
            std::vector<int64_t> want = rows_of(x, y), got;
            int64_t g = (int64_t)want.size();
            for (int r = 0; r < ranks; ++r) {
                ASSERT_EQ(bp_loader_next(piece[r].get(), &x, &y), BP_OK);
                std::vector<int64_t> ids = rows_of(x, y);
                EXPECT_EQ((int64_t)ids.size(), g * (r + 1) / ranks - g * r / ranks)
                    << "epoch " << e << ", batch " << b << ", rank " << r;
                got.insert(got.end(), ids.begin(), ids.end());
            }
            EXPECT_EQ(got, want) << "epoch " << e << ", batch " << b;
        }
    }
}

// A last batch too small to give every rank min_rows rows is left out: 103 rows in batches of
// 10 end with 3, fewer than 2 ranks x 2 rows.
TEST_P(Loader, ShardsLeaveOutATooSmallLastBatch) {
    DatasetPtr d = numbered(103);
    bp_status st = BP_ERR_DEVICE;
    LoaderPtr l(bp_loader_create_shard(d.get(), dev, 10, 0, 1, 1, 2, 2, &st));
    ASSERT_EQ(st, BP_OK) << bp_last_error();
    EXPECT_EQ(bp_loader_batches(l.get()), 10);
    std::vector<int64_t> sizes;
    ASSERT_EQ(bp_loader_start_epoch(l.get(), 0, 0), BP_OK);
    std::vector<int64_t> rows = drain(l.get(), &sizes);
    EXPECT_EQ(sizes, std::vector<int64_t>(10, 5));
    std::vector<int64_t> want;
    for (int64_t b = 0; b < 10; ++b)
        for (int64_t i = 5; i < 10; ++i)
            want.push_back(b * 10 + i);
    EXPECT_EQ(rows, want);
    // Bad shards: index out of range, min_rows < 1, a batch too small for the ranks.
    for (auto args : {std::vector<int>{2, 2, 1}, {-1, 2, 1}, {0, 0, 1}, {0, 2, 0}, {0, 4, 3}}) {
        EXPECT_EQ(bp_loader_create_shard(d.get(), dev, 10, 0, 1, args[0], args[1], args[2], &st),
                  nullptr);
        EXPECT_EQ(st, BP_ERR_INVALID_ARGUMENT);
        EXPECT_THAT(bp_last_error(), HasSubstr("bp_loader_create_shard"));
    }
}

INSTANTIATE_TEST_SUITE_P(Backends, Loader, ::testing::ValuesIn(bpt::all_backends()),
                         [](const auto &info) { return info.param; });

} // namespace
