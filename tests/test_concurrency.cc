// Concurrency: models on different threads do not interact. Two models trained at the same time
// on two std::threads end bitwise where the same two trainings end one after the other, and an
// error on one thread never shows in another thread's bp_last_error() (it is thread-local).
#include <gtest/gtest.h>

#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "support.h"

namespace {

class Concurrency : public ::testing::TestWithParam<std::string> {};

// 60 AdamW steps with dropout on random data, on a device of its own; the final flat
// parameters, or empty with *err set. Touches no gtest state, so it may run on any thread.
std::vector<float> train(const std::string &backend, uint64_t seed, std::string *err) {
    bp_device *dev = bp_device_open(backend.c_str(), nullptr);
    if (!dev) {
        *err = "cannot open " + backend + ": " + bp_last_error();
        return {};
    }
    std::vector<float> params = bpt::train_small(
        dev, {48, 12, 40, 24, 4, 60, seed, (uint32_t)seed, 7, (int)seed, 0.0f, 0.0f}, err);
    bp_device_close(dev);
    return params;
}

TEST_P(Concurrency, TwoThreadsTrainBitwiseAsOneAfterTheOther) {
    { // skip (with the reason) when the backend is absent
        BPT_OPEN_OR_SKIP(dev, GetParam());
        bp_device_close(dev);
    }
    std::string e1, e2;
    std::vector<float> a = train(GetParam(), 11, &e1);
    std::vector<float> b = train(GetParam(), 12, &e2);
    ASSERT_FALSE(a.empty()) << e1;
    ASSERT_FALSE(b.empty()) << e2;
    // The two runs differ, so a mix-up between the threads could not go unseen.
    ASSERT_EQ(a.size(), b.size());
    ASSERT_NE(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);

    std::vector<float> ca, cb;
    std::string ce1, ce2;
    std::thread t1([&] { ca = train(GetParam(), 11, &ce1); });
    std::thread t2([&] { cb = train(GetParam(), 12, &ce2); });
    t1.join();
    t2.join();
    ASSERT_EQ(ca.size(), a.size()) << ce1;
    ASSERT_EQ(cb.size(), b.size()) << ce2;
    EXPECT_EQ(std::memcmp(ca.data(), a.data(), a.size() * sizeof(float)), 0);
    EXPECT_EQ(std::memcmp(cb.data(), b.data(), b.size() * sizeof(float)), 0);
}

// Steps the two threads through a fixed interleaving: the thread whose turn it is runs.
struct Turns {
    std::mutex mu;
    std::condition_variable cv;
    int turn = 0;
    void wait_for(int t) {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return turn == t; });
    }
    void pass() {
        std::lock_guard<std::mutex> lock(mu);
        ++turn;
        cv.notify_all();
    }
};

TEST(Concurrency, AnErrorOnOneThreadNeverShowsOnAnother) {
    Turns turns;
    std::string b_before, b_after_a_failed, b_own, a_after_b_failed;
    bp_status a_status = BP_OK, b_status = BP_OK;
    std::string a_own;
    std::thread a([&] {
        turns.wait_for(0);
        bp_clear_error();
        a_status = bp_device_set_memory_limit(nullptr, 1); // fails: NULL device
        a_own = bp_last_error();
        turns.pass(); // -> 1: B looks at its own error
        turns.wait_for(2);
        a_after_b_failed = bp_last_error();
        turns.pass();
    });
    std::thread b([&] {
        bp_clear_error();
        b_before = bp_last_error();
        turns.wait_for(1);
        b_after_a_failed = bp_last_error();
        b_status = bp_tensor_upload(nullptr, nullptr, 3); // fails differently
        b_own = bp_last_error();
        turns.pass(); // -> 2: A looks again
        turns.wait_for(3);
    });
    a.join();
    b.join();
    ASSERT_NE(a_status, BP_OK);
    ASSERT_NE(b_status, BP_OK);
    ASSERT_FALSE(a_own.empty());
    ASSERT_FALSE(b_own.empty());
    ASSERT_NE(a_own, b_own);
    EXPECT_EQ(b_before, "");
    EXPECT_EQ(b_after_a_failed, "") << "A's error leaked into B: " << b_after_a_failed;
    EXPECT_EQ(a_after_b_failed, a_own) << "B's error replaced A's: " << a_after_b_failed;
}

INSTANTIATE_TEST_SUITE_P(Backends, Concurrency, ::testing::ValuesIn(bpt::all_backends()),
                         [](const auto &info) { return info.param; });

} // namespace
