// Files crafted against the loaders: headers whose sizes multiply past 2^64 and wrap to a small
// number that a short body then matches. Each must be refused with a message that names the file
// and the field, before anything is allocated from the wrapped size (under AddressSanitizer a
// loader that trusts the wrapped product writes past its block and the test dies).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdint>
#include <string>
#include <vector>

#include "backprop/backprop.h"
#include "support.h"
#include "support_files.h"

namespace {

using bpt::write_file;
using ::testing::HasSubstr;

// (2^32 + 65536) x (2^32 - 65535) = 2^64 + 65536: the product wraps to 65536 in 64 bits.
constexpr uint64_t kWrapA = (UINT64_C(1) << 32) + 65536, kWrapB = (UINT64_C(1) << 32) - 65535;
constexpr size_t kWrapped = 65536;

void write_gzip(const std::string &path, const std::string &bytes) {
    gzFile gz = gzopen(path.c_str(), "wb9");
    ASSERT_NE(gz, nullptr) << path;
    ASSERT_EQ(gzwrite(gz, bytes.data(), (unsigned)bytes.size()), (int)bytes.size());
    ASSERT_EQ(gzclose(gz), Z_OK);
}

std::string idx_file(const std::vector<uint32_t> &dims, size_t body) {
    std::string s = {0, 0, 0x08, (char)dims.size()};
    for (uint32_t d : dims)
        for (int shift = 24; shift >= 0; shift -= 8)
            s.push_back((char)(d >> shift));
    return s + std::string(body, '\0');
}

std::string npy_file(const std::string &descr, const std::string &shape, size_t body) {
    std::string dict =
        "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
    dict += std::string((64 - (10 + dict.size() + 1) % 64) % 64, ' ') + "\n";
    std::string s = "\x93NUMPY\x01";
    s += '\0';
    s += (char)(dict.size() & 0xff);
    s += (char)(dict.size() >> 8);
    return s + dict + std::string(body, '\0');
}

std::string wrap_shape() {
    return "(" + std::to_string(kWrapA) + ", " + std::to_string(kWrapB) + ")";
}

class CraftedFiles : public ::testing::Test {
  protected:
    bpt::TempDir dir;

    // A load that must fail with status `want` and a message holding each of `parts`.
    void expect_refused(bp_dataset *d, bp_status st, bp_status want,
                        const std::vector<std::string> &parts) {
        EXPECT_EQ(d, nullptr);
        bp_dataset_free(d);
        EXPECT_EQ(st, want) << bp_last_error();
        for (const auto &p : parts)
            EXPECT_THAT(bp_last_error(), HasSubstr(p));
    }
};

// 65537 x 65536 x 4294901761 = 2^64 + 65536 elements: 65536 after wrapping, which the body has.
TEST_F(CraftedFiles, IdxDimensionsThatWrap) {
    std::string images = dir.file("images.idx"), labels = dir.file("labels.idx");
    std::string bytes = idx_file({65537, 65536, 4294901761u}, kWrapped);
    write_file(labels, idx_file({65537}, 65537));
    for (int gz = 0; gz < 2; ++gz) {
        SCOPED_TRACE(gz ? "gzip" : "plain");
        if (gz)
            write_gzip(images, bytes);
        else
            write_file(images, bytes);
        bp_status st = BP_OK;
        bp_dataset *d = bp_dataset_load_idx(images.c_str(), labels.c_str(), &st);
        expect_refused(d, st, BP_ERR_CORRUPT_FILE,
                       {images, "byte offset 12", "dimension 2 (size 4294901761)", "2^48"});
        bp_open_options o = bp_open_options_default();
        o.targets_path = labels.c_str();
        d = bp_dataset_open(images.c_str(), &o, nullptr, &st);
        expect_refused(d, st, BP_ERR_CORRUPT_FILE, {images, "dimension 2"});
    }
}

// The features' shape wraps to 65536 elements, 256 KiB of float32: exactly the body.
TEST_F(CraftedFiles, NpyShapeThatWraps) {
    std::string x = dir.file("x.npy");
    std::string bytes = npy_file("<f4", wrap_shape(), 4 * kWrapped);
    for (int gz = 0; gz < 2; ++gz) {
        SCOPED_TRACE(gz ? "gzip" : "plain");
        if (gz)
            write_gzip(x, bytes);
        else
            write_file(x, bytes);
        bp_status st = BP_OK;
        bp_dataset *d = gz ? nullptr : bp_dataset_load_npy(x.c_str(), nullptr, BP_TARGET_NONE, &st);
        if (!gz)
            expect_refused(
                d, st, BP_ERR_CORRUPT_FILE,
                {x, "shape " + wrap_shape(), "size 1 (" + std::to_string(kWrapB) + ")", "2^48"});
        bp_open_options o = bp_open_options_default();
        d = bp_dataset_open(x.c_str(), &o, nullptr, &st);
        expect_refused(d, st, BP_ERR_CORRUPT_FILE, {x, "shape " + wrap_shape(), "2^48"});
    }
}

// Value targets that wrap, beside features whose header is sound: the targets' header is
// checked before either body is read.
TEST_F(CraftedFiles, NpyTargetsThatWrap) {
    std::string x = dir.file("x.npy"), y = dir.file("y.npy");
    write_file(x, npy_file("<f4", "(" + std::to_string(kWrapA) + ", 1)", 0));
    write_file(y, npy_file("<f4", wrap_shape(), 4 * kWrapped));
    bp_status st = BP_OK;
    bp_dataset *d = bp_dataset_load_npy(x.c_str(), y.c_str(), BP_TARGET_VALUES, &st);
    expect_refused(d, st, BP_ERR_CORRUPT_FILE, {y, "shape " + wrap_shape(), "2^48"});
}

// A safetensors tensor of float32 whose bytes, 4 x (2^64 + 65536), wrap to 262144: the buffer
// it claims.
TEST_F(CraftedFiles, SafetensorsShapeThatWraps) {
    std::string path = dir.file("crafted.st");
    std::string json = "{\"w\":{\"dtype\":\"F32\",\"shape\":[" + std::to_string(kWrapA) + "," +
                       std::to_string(kWrapB) + "],\"data_offsets\":[0," +
                       std::to_string(4 * kWrapped) + "]}}";
    json += std::string((8 - json.size() % 8) % 8, ' ');
    std::string bytes;
    for (int i = 0; i < 8; ++i)
        bytes.push_back((char)((uint64_t)json.size() >> (8 * i)));
    write_file(path, bytes + json + std::string(4 * kWrapped, '\0'));
    bp_status st = BP_OK;
    bp_checkpoint *ck = bp_checkpoint_open(path.c_str(), &st);
    EXPECT_EQ(ck, nullptr);
    bp_checkpoint_close(ck);
    EXPECT_EQ(st, BP_ERR_CORRUPT_FILE) << bp_last_error();
    EXPECT_THAT(bp_last_error(), HasSubstr(path));
    EXPECT_THAT(bp_last_error(), HasSubstr("tensor 'w'"));
    EXPECT_THAT(bp_last_error(), HasSubstr("2^64 bytes"));
}

// Class labels past int32 are out of range, not "not a class index" (they are integers >= 0).
TEST_F(CraftedFiles, ClassLabelOutOfRange) {
    std::string csv = dir.file("big.csv");
    write_file(csv, "a,y\n1,0\n2,2147483648\n3,1\n");
    bp_csv_options o = bp_csv_options_default();
    o.target_kind = BP_CSV_CLASS_INDEX;
    bp_status st = BP_OK;
    bp_dataset *d = bp_dataset_load_csv(csv.c_str(), &o, &st);
    expect_refused(d, st, BP_ERR_CORRUPT_FILE,
                   {csv, "line 3, column 2", "'2147483648' is over 2147483647", "32-bit"});
    std::string x = dir.file("x.npy"), y = dir.file("y.npy");
    write_file(x, npy_file("<f4", "(2, 1)", 8));
    std::string yb = npy_file("<i8", "(2,)", 0);
    for (uint64_t v : {UINT64_C(0), UINT64_C(2147483648)})
        for (int i = 0; i < 8; ++i)
            yb.push_back((char)(v >> (8 * i)));
    write_file(y, yb);
    d = bp_dataset_load_npy(x.c_str(), y.c_str(), BP_TARGET_CLASS, &st);
    expect_refused(d, st, BP_ERR_CORRUPT_FILE, {y, "target 1, 2147483648, is over 2147483647"});
}

// A label that reads as NaN may be a name: the message says how to read labels as names.
TEST_F(CraftedFiles, NanLabelPointsAtNames) {
    std::string csv = dir.file("nan.csv");
    write_file(csv, "a,y\n1,0\n2,nan\n3,1\n");
    for (bp_csv_target kind : {BP_CSV_CLASS_INDEX, BP_CSV_CLASS_AUTO}) {
        bp_csv_options o = bp_csv_options_default();
        o.target_kind = kind;
        bp_status st = BP_OK;
        bp_dataset *d = bp_dataset_load_csv(csv.c_str(), &o, &st);
        expect_refused(
            d, st, BP_ERR_NON_FINITE,
            {csv, "line 3, column 2", "'nan' is NaN", "class_name", "--target-kind names"});
    }
}

// 2^40 rows of 1024 features (4 PiB): more than any host has free, so the dataset is refused
// before its first byte is allocated or the caller's rows are read (x holds one row).
TEST_F(CraftedFiles, ADatasetLargerThanFreeMemoryIsRefusedFirst) {
    std::vector<float> x(1024, 0.5f);
    bp_status st = BP_OK;
    bp_dataset *d =
        bp_dataset_from_memory((int64_t)1 << 40, 1024, x.data(), BP_TARGET_NONE, 0, nullptr, &st);
    expect_refused(d, st, BP_ERR_OUT_OF_MEMORY,
                   {"needs 4503599627370496 bytes", "MemAvailable", "nothing was allocated"});
}

} // namespace
