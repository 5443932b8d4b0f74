// Checks of the API contract shared by the test files: a failing call returns the documented
// status and leaves a message on this thread that names the call (and the argument).
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "backprop/backprop.h"

// Expects `call` (a bp_status expression) to fail with `code` and a message naming `fn`.
#define EXPECT_FAILS(code, fn, call)                                                               \
    do {                                                                                           \
        bp_clear_error();                                                                          \
        bp_status got_ = (call);                                                                   \
        EXPECT_EQ(got_, code) << #call << ": " << bp_status_string(got_);                          \
        std::string msg_ = bp_last_error();                                                        \
        EXPECT_NE(msg_.find(fn), std::string::npos) << #call << ": message '" << msg_ << "'";      \
    } while (0)

// Expects `call` (a constructor taking &st last) to return NULL, set st to `code` and name `fn`;
// then calls it once more with a NULL status, which must be allowed.
#define EXPECT_CTOR_FAILS(code, fn, call_with_status, call_without_status)                         \
    do {                                                                                           \
        bp_clear_error();                                                                          \
        bp_status st = BP_OK;                                                                      \
        auto *p_ = (call_with_status);                                                             \
        EXPECT_EQ(p_, nullptr) << #call_with_status;                                               \
        EXPECT_EQ(st, code) << #call_with_status << ": " << bp_status_string(st);                  \
        std::string msg_ = bp_last_error();                                                        \
        EXPECT_NE(msg_.find(fn), std::string::npos)                                                \
            << #call_with_status << ": message '" << msg_ << "'";                                  \
        EXPECT_EQ((call_without_status), nullptr) << #call_without_status;                         \
    } while (0)

// The last error holds `text`.
#define EXPECT_ERROR_HAS(text)                                                                     \
    EXPECT_NE(std::string(bp_last_error()).find(text), std::string::npos)                          \
        << "message '" << bp_last_error() << "' lacks '" << (text) << "'"
