// Datasets: the IDX, CSV and NPY loaders on files written here (plain and gzip), every kind of
// bad file giving one clear line with the file and the position, Fashion-MNIST when installed,
// the seeded split, feature scaling and datasets from memory.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <zlib.h>

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "support.h"
#include "support_files.h"

namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

using bpt::DatasetPtr;

using DataDir = bpt::TempDir;
using bpt::write_file;

void write_gzip(const std::string &path, const std::string &bytes) {
    gzFile gz = gzopen(path.c_str(), "wb1");
    ASSERT_NE(gz, nullptr) << path;
    ASSERT_EQ(gzwrite(gz, bytes.data(), (unsigned)bytes.size()), (int)bytes.size());
    ASSERT_EQ(gzclose(gz), Z_OK);
}

std::string read_file(const std::string &path) {
    std::ifstream f(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
}

void put_be32(std::string &s, uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8)
        s.push_back((char)(v >> shift));
}

// An IDX file: magic 00 00 type rank, big-endian sizes, then `data`.
std::string idx_bytes(uint8_t type, const std::vector<uint32_t> &dims, const std::string &data) {
    std::string s = {0, 0, (char)type, (char)dims.size()};
    for (uint32_t d : dims)
        put_be32(s, d);
    return s + data;
}

// n images of `features` pixels, pixel j of image i = (i * 31 + j * 7) % 256; labels i % 10.
std::string pixel_data(uint32_t n, uint32_t features) {
    std::string s(n * (size_t)features, '\0');
    for (size_t i = 0; i < n; ++i)
        for (size_t j = 0; j < features; ++j)
            s[i * features + j] = (char)((i * 31 + j * 7) % 256);
    return s;
}

std::string label_data(uint32_t n) {
    std::string s(n, '\0');
    for (size_t i = 0; i < n; ++i)
        s[i] = (char)(i % 10);
    return s;
}

// The loader's result must be NULL with `status`, and the message must name the file and hold
// each of `parts` (the position among them); one line.
void expect_failure(bp_dataset *d, bp_status got, bp_status want, const std::string &path,
                    const std::vector<std::string> &parts) {
    EXPECT_EQ(d, nullptr);
    bp_dataset_free(d);
    EXPECT_EQ(got, want) << bp_status_string(got) << ": " << bp_last_error();
    std::string msg = bp_last_error();
    EXPECT_THAT(msg, HasSubstr(path));
    for (const auto &p : parts)
        EXPECT_THAT(msg, HasSubstr(p));
    EXPECT_THAT(msg, Not(HasSubstr("\n")));
}

// ---- IDX ------------------------------------------------------------------------------------

class IdxData : public ::testing::Test {
  protected:
    DataDir dir;
    std::string images = dir.file("images.idx"), labels = dir.file("labels.idx");

    void write_pair(uint32_t n, uint32_t rows, uint32_t cols, bool gz) {
        auto w = gz ? write_gzip : write_file;
        w(images, idx_bytes(0x08, {n, rows, cols}, pixel_data(n, rows * cols)));
        w(labels, idx_bytes(0x08, {n}, label_data(n)));
    }
    // Loads images/labels expecting a failure of `want` naming `path` and `parts`.
    void expect_bad(bp_status want, const std::string &path,
                    const std::vector<std::string> &parts) {
        bp_status st = BP_OK;
        bp_dataset *d = bp_dataset_load_idx(images.c_str(), labels.c_str(), &st);
        expect_failure(d, st, want, path, parts);
    }
    void check_pair(const bp_dataset *d, uint32_t n, uint32_t features) {
        ASSERT_NE(d, nullptr) << bp_last_error();
        ASSERT_EQ(bp_dataset_size(d), (int64_t)n);
        ASSERT_EQ(bp_dataset_features(d), (int)features);
        EXPECT_EQ(bp_dataset_target_kind(d), BP_TARGET_CLASS);
        EXPECT_EQ(bp_dataset_target_width(d), 1);
        EXPECT_EQ(bp_dataset_classes(d), n >= 10 ? 10 : (int)n);
        std::string px = pixel_data(n, features);
        const float *x = bp_dataset_features_data(d);
        size_t wrong = 0;
        for (size_t i = 0; i < px.size(); ++i)
            wrong += x[i] != (float)(uint8_t)px[i];
        EXPECT_EQ(wrong, 0u) << "pixels differ from the file";
        const int32_t *y = (const int32_t *)bp_dataset_targets_data(d);
        for (uint32_t i = 0; i < n; ++i)
            ASSERT_EQ(y[i], (int32_t)(i % 10)) << "label " << i;
    }
};

TEST_F(IdxData, LoadsPlainFiles) {
    write_pair(23, 3, 4, false);
    bp_status st = BP_ERR_DEVICE;
    DatasetPtr d(bp_dataset_load_idx(images.c_str(), labels.c_str(), &st));
    EXPECT_EQ(st, BP_OK);
    check_pair(d.get(), 23, 12);
}

TEST_F(IdxData, LoadsGzipFiles) {
    write_pair(23, 3, 4, true);
    ASSERT_EQ((uint8_t)read_file(images)[0], 0x1f) << "the fixture is not gzip";
    DatasetPtr d(bp_dataset_load_idx(images.c_str(), labels.c_str(), nullptr));
    check_pair(d.get(), 23, 12);
}

// 20 MiB of pixels: more than the first 16 MiB chunk, so the buffer grows while reading.
TEST_F(IdxData, LoadsGzipLargerThanTheFirstChunk) {
    write_pair(20480, 32, 32, true);
    DatasetPtr d(bp_dataset_load_idx(images.c_str(), labels.c_str(), nullptr));
    check_pair(d.get(), 20480, 1024);
}

// A pipe has no size to check claims against: the plain reader keeps the two bytes it looked
// at for the gzip magic and grows its buffer as for gzip.
TEST_F(IdxData, LoadsFromAPipe) {
    write_pair(23, 3, 4, false);
    std::string bytes = read_file(images);
    images = dir.file("images.fifo");
    ASSERT_EQ(mkfifo(images.c_str(), 0600), 0);
    std::thread writer([&] {
        std::ofstream f(images, std::ios::binary); // blocks until the loader opens the pipe
        f.write(bytes.data(), (std::streamsize)bytes.size());
    });
    DatasetPtr d(bp_dataset_load_idx(images.c_str(), labels.c_str(), nullptr));
    writer.join();
    check_pair(d.get(), 23, 12);
}

TEST_F(IdxData, MissingFileIsIoError) {
    write_pair(5, 2, 2, false);
    images = dir.file("no_such_file.idx");
    expect_bad(BP_ERR_IO, images, {"cannot open"});
}

TEST_F(IdxData, DirectoryIsIoError) {
    write_pair(5, 2, 2, false);
    images = dir.path();
    expect_bad(BP_ERR_IO, images, {});
}

TEST_F(IdxData, WrongMagicNumber) {
    write_pair(5, 2, 2, false);
    write_file(images, "\x12\x34\x08\x03" + read_file(images).substr(4));
    expect_bad(BP_ERR_CORRUPT_FILE, images, {"byte offset 0", "0x12340803"});
}

TEST_F(IdxData, UnsupportedElementType) {
    write_pair(5, 2, 2, false);
    write_file(images, idx_bytes(0x0D, {5, 2, 2}, std::string(80, '\0')));
    expect_bad(BP_ERR_UNSUPPORTED, images, {"byte offset 2", "float32"});
}

TEST_F(IdxData, SwappedImagesAndLabels) {
    write_pair(5, 2, 2, false);
    std::swap(images, labels);
    expect_bad(BP_ERR_CORRUPT_FILE, images, {"byte offset 3", "rank 1"});
}

TEST_F(IdxData, TruncatedHeader) {
    write_pair(5, 2, 2, false);
    write_file(images, read_file(images).substr(0, 10));
    expect_bad(BP_ERR_CORRUPT_FILE, images, {"byte offset 4", "truncated"});
}

TEST_F(IdxData, TruncatedData) {
    write_pair(5, 2, 2, false);
    write_file(images, read_file(images).substr(0, 16 + 19));
    expect_bad(BP_ERR_CORRUPT_FILE, images, {"byte offset 16", "20 bytes", "only 19"});
}

TEST_F(IdxData, TruncatedGzipData) {
    write_pair(5, 2, 2, true);
    write_gzip(images, idx_bytes(0x08, {5, 2, 2}, pixel_data(5, 4)).substr(0, 16 + 19));
    expect_bad(BP_ERR_CORRUPT_FILE, images, {"uncompressed byte offset", "truncated"});
}

TEST_F(IdxData, CutGzipStream) {
    write_pair(300, 10, 10, true);
    std::string gz = read_file(images);
    write_file(images, gz.substr(0, gz.size() / 2));
    expect_bad(BP_ERR_CORRUPT_FILE, images, {"uncompressed byte offset"});
}

TEST_F(IdxData, CorruptGzipStream) {
    write_pair(300, 10, 10, true);
    std::string gz = read_file(images);
    for (size_t i = 20; i < gz.size() - 8; i += 3)
        gz[i] = (char)(gz[i] ^ 0x5a);
    write_file(images, gz);
    expect_bad(BP_ERR_CORRUPT_FILE, images, {"uncompressed byte offset"});
}

// 2^20 x 2^20 bytes claimed by 16 bytes of file: refused from the file size, never malloc'd (a
// terabyte malloc would fail with out of memory instead of a corrupt-file status).
TEST_F(IdxData, HeaderClaimingMoreThanTheFile) {
    write_pair(5, 2, 2, false);
    write_file(images, idx_bytes(0x08, {1u << 20, 1u << 10, 1u << 10}, std::string(64, 'x')));
    write_file(labels, idx_bytes(0x08, {1u << 20}, std::string(64, 'x')));
    expect_bad(BP_ERR_CORRUPT_FILE, images, {"byte offset 16", "claims 1099511627776 bytes"});
}

TEST_F(IdxData, GzipHeaderClaimingMoreThanTheData) {
    write_pair(5, 2, 2, false);
    write_gzip(images, idx_bytes(0x08, {1u << 20, 1u << 10, 1u << 10}, std::string(64, 'x')));
    write_file(labels, idx_bytes(0x08, {1u << 20}, std::string(64, 'x')));
    expect_bad(BP_ERR_CORRUPT_FILE, images, {"uncompressed byte offset 80", "truncated"});
}

TEST_F(IdxData, LabelCountDiffers) {
    write_pair(5, 2, 2, false);
    write_file(labels, idx_bytes(0x08, {4}, label_data(4)));
    expect_bad(BP_ERR_CORRUPT_FILE, labels, {"byte offset 4", "4 labels", "5 images", images});
}

TEST_F(IdxData, TrailingBytes) {
    write_pair(5, 2, 2, false);
    write_file(labels, read_file(labels) + "xyz");
    expect_bad(BP_ERR_CORRUPT_FILE, labels, {"byte offset 13", "3 unexpected bytes"});
}

TEST_F(IdxData, ZeroSizedDimension) {
    write_pair(5, 2, 2, false);
    write_file(images, idx_bytes(0x08, {5, 0, 2}, ""));
    expect_bad(BP_ERR_CORRUPT_FILE, images, {"byte offset 8", "dimension 1 has size 0"});
}

// ---- Fashion-MNIST, when the Debian package is installed -------------------------------------

const char *const kFashion = "/usr/share/datasets/fashion-mnist/";

DatasetPtr load_fashion(const std::string &prefix) {
    std::string img = std::string(kFashion) + prefix + "-images-idx3-ubyte.gz";
    std::string lab = std::string(kFashion) + prefix + "-labels-idx1-ubyte.gz";
    bp_status st = BP_OK;
    DatasetPtr d(bp_dataset_load_idx(img.c_str(), lab.c_str(), &st));
    EXPECT_EQ(st, BP_OK) << bp_last_error();
    return d;
}

// Pixel sums (exact in double) from Python's gzip module, as a check of the decoding.
void check_fashion(const bp_dataset *d, int64_t n, int64_t per_class, double pixel_sum) {
    ASSERT_NE(d, nullptr);
    ASSERT_EQ(bp_dataset_size(d), n);
    ASSERT_EQ(bp_dataset_features(d), 784);
    EXPECT_EQ(bp_dataset_classes(d), 10);
    std::vector<int64_t> count(10, 0);
    const int32_t *y = (const int32_t *)bp_dataset_targets_data(d);
    for (int64_t i = 0; i < n; ++i) {
        ASSERT_TRUE(y[i] >= 0 && y[i] <= 9) << "label " << i << " is " << y[i];
        count[y[i]]++;
    }
    for (int c = 0; c < 10; ++c)
        EXPECT_EQ(count[c], per_class) << "class " << c;
    const float *x = bp_dataset_features_data(d);
    float lo = x[0], hi = x[0];
    for (int64_t i = 0; i < n * 784; ++i)
        lo = std::min(lo, x[i]), hi = std::max(hi, x[i]);
    EXPECT_EQ(lo, 0.0f);
    EXPECT_EQ(hi, 255.0f);
    double sum = 0;
    for (int64_t i = 0; i < n * 784; ++i)
        sum += x[i];
    EXPECT_EQ(sum, pixel_sum);
}

TEST(FashionMnistData, LoadsTrainAndTest) {
    if (!fs::exists(std::string(kFashion) + "train-images-idx3-ubyte.gz"))
        GTEST_SKIP() << "Fashion-MNIST is not installed at " << kFashion
                     << " (Debian package dataset-fashion-mnist)";
    DatasetPtr train = load_fashion("train");
    check_fashion(train.get(), 60000, 6000, 3431114169.0);
    // The first training image is an ankle boot (class 9), the second a T-shirt (class 0).
    const int32_t *y = (const int32_t *)bp_dataset_targets_data(train.get());
    EXPECT_EQ(y[0], 9);
    EXPECT_EQ(y[1], 0);
    double first = 0;
    for (int j = 0; j < 784; ++j)
        first += bp_dataset_features_data(train.get())[j];
    EXPECT_EQ(first, 76247.0);
    DatasetPtr test = load_fashion("t10k");
    check_fashion(test.get(), 10000, 1000, 573469082.0);
}

// ---- CSV ------------------------------------------------------------------------------------

class CsvData : public ::testing::Test {
  protected:
    DataDir dir;
    std::string path = dir.file("data.csv");
    bp_csv_options opt = bp_csv_options_default();

    DatasetPtr load(const std::string &text) {
        write_file(path, text);
        bp_status st = BP_ERR_DEVICE;
        DatasetPtr d(bp_dataset_load_csv(path.c_str(), &opt, &st));
        EXPECT_EQ(st, BP_OK) << bp_last_error();
        EXPECT_NE(d, nullptr);
        return d;
    }
    void expect_bad(const std::string &text, bp_status want,
                    const std::vector<std::string> &parts) {
        write_file(path, text);
        bp_status st = BP_OK;
        bp_dataset *d = bp_dataset_load_csv(path.c_str(), &opt, &st);
        expect_failure(d, st, want, path, parts);
    }
};

std::vector<float> features_of(const bp_dataset *d) {
    const float *x = bp_dataset_features_data(d);
    return std::vector<float>(x, x + bp_dataset_size(d) * bp_dataset_features(d));
}

std::vector<int32_t> labels_of(const bp_dataset *d) {
    const int32_t *y = (const int32_t *)bp_dataset_targets_data(d);
    return std::vector<int32_t>(y, y + bp_dataset_size(d));
}

TEST_F(CsvData, HeaderByNameCrlfQuotesAndBlankLines) {
    opt.targets = "label";
    DatasetPtr d = load("\"feat, one\",label,\"x\"\"2\"\r\n"
                        "1.5, 3 ,-2\r\n"
                        "\r\n"
                        "\"4\",0,1e-3\r\n"
                        "7,2,8\r\n"
                        "\r\n\r\n");
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(bp_dataset_size(d.get()), 3);
    EXPECT_EQ(bp_dataset_features(d.get()), 2);
    EXPECT_EQ(bp_dataset_classes(d.get()), 4);
    EXPECT_EQ(features_of(d.get()), (std::vector<float>{1.5f, -2.0f, 4.0f, 1e-3f, 7.0f, 8.0f}));
    EXPECT_EQ(labels_of(d.get()), (std::vector<int32_t>{3, 0, 2}));
}

TEST_F(CsvData, QuotedHeaderNameWithDelimiter) {
    opt.targets = "feat, one";
    DatasetPtr d = load("\"feat, one\",b\n1,2\n0,3\n");
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(features_of(d.get()), (std::vector<float>{2.0f, 3.0f}));
    EXPECT_EQ(labels_of(d.get()), (std::vector<int32_t>{1, 0}));
}

TEST_F(CsvData, NoHeaderLastColumnByDefault) {
    DatasetPtr d = load("1,2,3\n4,5,6");
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(bp_dataset_size(d.get()), 2);
    EXPECT_EQ(features_of(d.get()), (std::vector<float>{1, 2, 4, 5}));
    EXPECT_EQ(labels_of(d.get()), (std::vector<int32_t>{3, 6}));
}

TEST_F(CsvData, TargetByIndexAndFromTheEnd) {
    opt.targets = "0";
    DatasetPtr d = load("1,2,3\n4,5,6\n");
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(features_of(d.get()), (std::vector<float>{2, 3, 5, 6}));
    EXPECT_EQ(labels_of(d.get()), (std::vector<int32_t>{1, 4}));
    opt.targets = "-2";
    d = load("1,2,3\n4,5,6\n");
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(labels_of(d.get()), (std::vector<int32_t>{2, 5}));
}

TEST_F(CsvData, HeaderForcedOnAndOff) {
    opt.header = 1; // a numeric first row taken as the header
    DatasetPtr d = load("9,9\n1,2\n3,4\n");
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(bp_dataset_size(d.get()), 2);
    opt.header = 0;
    d = load("9,9\n1,2\n3,4\n");
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(bp_dataset_size(d.get()), 3);
}

TEST_F(CsvData, OneHotTargets) {
    opt.targets = "c0,c1,c2";
    opt.target_kind = BP_CSV_ONE_HOT;
    DatasetPtr d = load("c0,x,c1,c2\n0,1.5,0,1\n1,2.5,0,0\n0,3.5,1,0\n");
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(bp_dataset_classes(d.get()), 3);
    EXPECT_EQ(features_of(d.get()), (std::vector<float>{1.5f, 2.5f, 3.5f}));
    EXPECT_EQ(labels_of(d.get()), (std::vector<int32_t>{2, 0, 1}));
}

TEST_F(CsvData, RegressionValuesInTheNamedOrder) {
    opt.targets = "y2,y1";
    opt.target_kind = BP_CSV_VALUES;
    DatasetPtr d = load("y1,a,y2,b\n0.5,1,-0.25,2\n1.5,3,2.75,4\n");
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(bp_dataset_target_kind(d.get()), BP_TARGET_VALUES);
    EXPECT_EQ(bp_dataset_target_width(d.get()), 2);
    EXPECT_EQ(bp_dataset_classes(d.get()), 0);
    EXPECT_EQ(features_of(d.get()), (std::vector<float>{1, 2, 3, 4}));
    const float *y = (const float *)bp_dataset_targets_data(d.get());
    EXPECT_EQ(std::vector<float>(y, y + 4), (std::vector<float>{-0.25f, 0.5f, 2.75f, 1.5f}));
}

TEST_F(CsvData, SemicolonAndTabDelimiters) {
    opt.delimiter = ';';
    expect_bad("a;b;y\n1,5;2;1\n", BP_ERR_CORRUPT_FILE, {"line 2, column 1", "'1,5'"});
    opt.delimiter = '\t';
    DatasetPtr d = load("a\tb\ty\n1.5\t2\t1\n");
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(features_of(d.get()), (std::vector<float>{1.5f, 2.0f}));
}

TEST_F(CsvData, GzipFile) {
    write_gzip(path, "a,y\n1,0\n2,1\n");
    DatasetPtr d(bp_dataset_load_csv(path.c_str(), nullptr, nullptr));
    ASSERT_NE(d, nullptr) << bp_last_error();
    EXPECT_EQ(labels_of(d.get()), (std::vector<int32_t>{0, 1}));
}

TEST_F(CsvData, MissingFile) {
    bp_status st = BP_OK;
    std::string missing = dir.file("missing.csv");
    bp_dataset *d = bp_dataset_load_csv(missing.c_str(), nullptr, &st);
    expect_failure(d, st, BP_ERR_IO, missing, {"cannot open"});
}

TEST_F(CsvData, NonNumericCell) {
    expect_bad("a,b,y\n1,2,0\n3,abc,1\n", BP_ERR_CORRUPT_FILE,
               {"line 3, column 2", "'abc' is not a number"});
}

TEST_F(CsvData, EmptyCell) {
    expect_bad("1,2,0\n3,,1\n", BP_ERR_CORRUPT_FILE, {"line 2, column 2", "empty"});
    // A hole in the first row is reported, not taken for a header.
    expect_bad("1,,0\n3,4,1\n", BP_ERR_CORRUPT_FILE, {"line 1, column 2", "empty"});
}

// Rows as short as rows get ("1,2"), among many blank lines, with and without a final newline:
// the row bound the loader allocates by must hold (ASan builds check the writes).
TEST_F(CsvData, ShortRowsAmongBlankLines) {
    std::string text;
    for (int i = 0; i < 1000; ++i)
        text += std::to_string(i % 10) + "," + std::to_string(i % 3) + (i % 4 ? "\n" : "\n\n\n");
    DatasetPtr d = load(text);
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(bp_dataset_size(d.get()), 1000);
    text.pop_back(); // the final newline
    d = load(text);
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(bp_dataset_size(d.get()), 1000);
    std::vector<int32_t> y = labels_of(d.get());
    EXPECT_EQ(y[999], 0);
    EXPECT_EQ(y[998], 2);
}

TEST_F(CsvData, TooFewAndTooManyColumns) {
    expect_bad("a,b,y\n1,2,0\n\n3,4\n", BP_ERR_CORRUPT_FILE,
               {"line 4, column 3", "2 columns", "first row 3"});
    expect_bad("a,b,y\n1,2,0\n3,4,1,5\n", BP_ERR_CORRUPT_FILE, {"line 3, column 4", "4 columns"});
}

TEST_F(CsvData, TruncatedLastRow) {
    std::string text = "a,b,y\n1.25,2.5,0\n3.75,4.5,1\n";
    expect_bad(text.substr(0, text.size() - 4), BP_ERR_CORRUPT_FILE, {"line 3, column 3"});
}

TEST_F(CsvData, NanAndInf) {
    expect_bad("a,y\n1,0\nnan,1\n", BP_ERR_NON_FINITE, {"line 3, column 1", "NaN"});
    expect_bad("a,y\n-inf,0\n", BP_ERR_NON_FINITE, {"line 2, column 1", "Inf"});
    expect_bad("a,y\n1e39,0\n", BP_ERR_NON_FINITE, {"line 2, column 1", "float32"});
    opt.target_kind = BP_CSV_VALUES;
    expect_bad("a,y\n1,NaN\n", BP_ERR_NON_FINITE, {"line 2, column 2", "NaN"});
}

TEST_F(CsvData, BadClassIndex) {
    expect_bad("a,y\n1,1.5\n", BP_ERR_CORRUPT_FILE, {"line 2, column 2", "class index"});
    expect_bad("a,y\n1,-1\n", BP_ERR_CORRUPT_FILE, {"line 2, column 2", "class index"});
}

TEST_F(CsvData, BadOneHot) {
    opt.targets = "1,2";
    opt.target_kind = BP_CSV_ONE_HOT;
    expect_bad("5,1,1\n", BP_ERR_CORRUPT_FILE, {"line 1, column 3", "second 1"});
    expect_bad("5,0,0\n", BP_ERR_CORRUPT_FILE, {"line 1, column 2", "no 1"});
    expect_bad("5,0.5,0\n", BP_ERR_CORRUPT_FILE, {"line 1, column 2", "not 0 or 1"});
}

TEST_F(CsvData, UnterminatedQuoteAndTextAfterQuote) {
    expect_bad("\"a,b\n1,2\n", BP_ERR_CORRUPT_FILE, {"line 1, column 1", "unterminated"});
    expect_bad("a,\"b\"x\n1,2\n", BP_ERR_CORRUPT_FILE, {"line 1, column 2", "closing quote"});
}

TEST_F(CsvData, HeaderOnlyAndEmptyFile) {
    expect_bad("a,b,y\n\n", BP_ERR_CORRUPT_FILE, {"no data rows"});
    expect_bad("", BP_ERR_CORRUPT_FILE, {"no data rows"});
}

TEST_F(CsvData, BinaryFile) {
    expect_bad(idx_bytes(0x08, {3}, "abc"), BP_ERR_CORRUPT_FILE, {"line 1", "NUL byte"});
}

TEST_F(CsvData, BadTargetOptions) {
    opt.targets = "nope";
    expect_bad("a,y\n1,0\n", BP_ERR_INVALID_ARGUMENT, {"'nope'"});
    opt.targets = "label";
    expect_bad("1,0\n", BP_ERR_INVALID_ARGUMENT, {"no header"});
    opt.targets = "5";
    expect_bad("1,0\n", BP_ERR_INVALID_ARGUMENT, {"out of range"});
    opt.targets = "0,1";
    expect_bad("1,0,2\n", BP_ERR_INVALID_ARGUMENT, {"one target column"});
    opt.target_kind = BP_CSV_VALUES;
    expect_bad("1,0\n", BP_ERR_INVALID_ARGUMENT, {"no feature"});
    opt.targets = "1,1";
    expect_bad("1,0,2\n", BP_ERR_INVALID_ARGUMENT, {"twice"});
}

TEST_F(CsvData, DuplicateHeaderNamesAreRefusedWhenATargetNamesThem) {
    opt.targets = "a";
    expect_bad("a,b,a\n1,2,0\n", BP_ERR_INVALID_ARGUMENT,
               {"'a'", "columns 0 and 2", "0-based column index"});
    opt.targets = "b,a";
    expect_bad("a,b,a\n1,2,0\n", BP_ERR_INVALID_ARGUMENT, {"columns 0 and 2"});
    opt.targets = "x,y"; // a name with a comma in it, twice
    expect_bad("\"x,y\",b,\"x,y\"\n1,2,0\n", BP_ERR_INVALID_ARGUMENT, {"columns 0 and 2"});
    // Repeated names nobody asks for are fine, and an index picks one of them.
    opt.targets = "b";
    DatasetPtr d = load("a,b,a\n1,2,3\n");
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(features_of(d.get()), (std::vector<float>{1, 3}));
    opt.targets = "2";
    d = load("a,b,a\n1,2,3\n");
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(labels_of(d.get()), (std::vector<int32_t>{3}));
}

TEST_F(CsvData, LinesEndingInCarriageReturnAloneSayHowToConvert) {
    expect_bad("a,b,y\r1,2,0\r3,4,1\r", BP_ERR_CORRUPT_FILE,
               {"line 1", "carriage return (CR)", "CR alone", "tr '\\r' '\\n'"});
    expect_bad("a,b,y\n1,2\r3,0\n", BP_ERR_CORRUPT_FILE, {"line 2", "CR alone"});
    DatasetPtr d = load("a,b,y\r\n1,2,0\r\n3,4,1\r"); // CRLF, and a last line's lone CR
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(bp_dataset_size(d.get()), 2);
}

TEST_F(CsvData, OneColumnNamesTheDelimiterItLookedFor) {
    expect_bad("a;b;y\n1;2;0\n", BP_ERR_INVALID_ARGUMENT,
               {"line 1 has one column, with no ',' in it", "another delimiter?"});
    opt.delimiter = '\t';
    expect_bad("a,b,y\n1,2,0\n", BP_ERR_INVALID_ARGUMENT, {"with no '\\t' in it"});
}

// ---- NPY ------------------------------------------------------------------------------------

// A .npy file with the given header dict and data; padded so the data starts at a multiple of 64
// as NumPy does: at byte 128 for the dicts here.
std::string npy_bytes(const std::string &dict, const std::string &data, int major = 1) {
    size_t pre = major == 1 ? 10 : 12;
    std::string header = dict;
    while ((pre + header.size() + 1) % 64)
        header += ' ';
    header += '\n';
    std::string s = "\x93NUMPY";
    s += (char)major;
    s += '\0';
    uint32_t len = (uint32_t)header.size();
    s += (char)(len & 0xff);
    s += (char)(len >> 8);
    if (major != 1) s += std::string{(char)(len >> 16), (char)(len >> 24)};
    return s + header + data;
}

std::string npy_dict(const std::string &descr, const std::string &shape, bool fortran = false) {
    return "{'descr': '" + descr + "', 'fortran_order': " + (fortran ? "True" : "False") +
           ", 'shape': " + shape + ", }";
}

template <typename T> std::string raw(const std::vector<T> &v) {
    return std::string((const char *)v.data(), v.size() * sizeof(T));
}

template <typename T> std::string raw_big_endian(const std::vector<T> &v) {
    std::string s = raw(v);
    for (size_t i = 0; i < s.size(); i += sizeof(T))
        std::reverse(s.begin() + i, s.begin() + i + sizeof(T));
    return s;
}

class NpyData : public ::testing::Test {
  protected:
    DataDir dir;
    std::string xpath = dir.file("x.npy"), ypath = dir.file("y.npy");
    std::vector<float> xs = bpt::uniform(12, -3.0f, 3.0f, 41);

    void write_default() {
        write_file(xpath, npy_bytes(npy_dict("<f4", "(4, 3)"), raw(xs)));
        write_file(ypath,
                   npy_bytes(npy_dict("<i8", "(4,)"), raw(std::vector<int64_t>{2, 0, 1, 5})));
    }
    DatasetPtr load(bp_target_kind kind = BP_TARGET_CLASS) {
        bp_status st = BP_ERR_DEVICE;
        DatasetPtr d(bp_dataset_load_npy(xpath.c_str(), ypath.c_str(), kind, &st));
        EXPECT_EQ(st, BP_OK) << bp_last_error();
        EXPECT_NE(d, nullptr);
        return d;
    }
    void expect_bad(bp_status want, const std::string &path, const std::vector<std::string> &parts,
                    bp_target_kind kind = BP_TARGET_CLASS) {
        bp_status st = BP_OK;
        bp_dataset *d = bp_dataset_load_npy(xpath.c_str(), ypath.c_str(), kind, &st);
        expect_failure(d, st, want, path, parts);
    }
};

TEST_F(NpyData, LoadsFloat32AndInt64Version1) {
    write_default();
    DatasetPtr d = load();
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(bp_dataset_size(d.get()), 4);
    EXPECT_EQ(bp_dataset_features(d.get()), 3);
    EXPECT_EQ(bp_dataset_classes(d.get()), 6);
    EXPECT_EQ(features_of(d.get()), xs);
    EXPECT_EQ(labels_of(d.get()), (std::vector<int32_t>{2, 0, 1, 5}));
}

TEST_F(NpyData, Version2HeaderFloat64AndFlattenedSamples) {
    std::vector<double> xd(xs.begin(), xs.end());
    xd[5] = 0.1; // not exact in float: must be rounded, not truncated
    write_file(xpath, npy_bytes(npy_dict("<f8", "(4, 1, 3)"), raw(xd), 2));
    write_file(ypath, npy_bytes(npy_dict("|u1", "(4, 1)"), std::string("\x03\x01\x00\x02", 4), 2));
    DatasetPtr d = load();
    ASSERT_NE(d, nullptr);
    std::vector<float> want(xd.begin(), xd.end());
    EXPECT_EQ(features_of(d.get()), want);
    EXPECT_EQ(labels_of(d.get()), (std::vector<int32_t>{3, 1, 0, 2}));
}

TEST_F(NpyData, Int32AndUint8FeaturesAndBigEndian) {
    write_file(xpath,
               npy_bytes(npy_dict("<i4", "(2, 2)"), raw(std::vector<int32_t>{-7, 3, 0, 1 << 20})));
    write_file(ypath, npy_bytes(npy_dict(">f4", "(2, 2)"),
                                raw_big_endian(std::vector<float>{0.5f, -1.5f, 2.0f, 3.0f})));
    DatasetPtr d = load(BP_TARGET_VALUES);
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(features_of(d.get()), (std::vector<float>{-7, 3, 0, 1 << 20}));
    EXPECT_EQ(bp_dataset_target_width(d.get()), 2);
    const float *y = (const float *)bp_dataset_targets_data(d.get());
    EXPECT_EQ(std::vector<float>(y, y + 4), (std::vector<float>{0.5f, -1.5f, 2.0f, 3.0f}));
    write_file(xpath, npy_bytes(npy_dict("|u1", "(2,)"), "\xff\x07"));
    d = load(BP_TARGET_VALUES);
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(bp_dataset_features(d.get()), 1);
    EXPECT_EQ(features_of(d.get()), (std::vector<float>{255, 7}));
}

TEST_F(NpyData, MissingFile) {
    write_default();
    ypath = dir.file("missing.npy");
    expect_bad(BP_ERR_IO, ypath, {"cannot open"});
}

TEST_F(NpyData, BadMagic) {
    write_default();
    std::string s = read_file(xpath);
    s[1] = 'X';
    write_file(xpath, s);
    expect_bad(BP_ERR_CORRUPT_FILE, xpath, {"byte offset 0", "not a .npy file"});
}

TEST_F(NpyData, UnsupportedDtypes) {
    write_default();
    for (const char *descr : {"<c8", "<f2", "|b1", "<U3", "|O"}) {
        write_file(xpath, npy_bytes(npy_dict(descr, "(4, 3)"), std::string(96, '\0')));
        expect_bad(BP_ERR_UNSUPPORTED, xpath, {"byte offset", std::string("'") + descr + "'"});
    }
}

TEST_F(NpyData, FortranOrder) {
    write_default();
    write_file(xpath, npy_bytes(npy_dict("<f4", "(4, 3)", true), raw(xs)));
    expect_bad(BP_ERR_UNSUPPORTED, xpath, {"byte offset 44:", "fortran_order"});
}

TEST_F(NpyData, HeaderClaimingMoreThanTheFile) {
    write_default();
    write_file(xpath, npy_bytes(npy_dict("<f4", "(1048576, 262144)"), raw(xs)));
    write_file(ypath, npy_bytes(npy_dict("|u1", "(1048576,)"), "abc"));
    expect_bad(BP_ERR_CORRUPT_FILE, xpath, {"byte offset 128", "claims 1099511627776 bytes"});
}

TEST_F(NpyData, TruncatedDataAndHeader) {
    write_default();
    std::string s = read_file(xpath);
    write_file(xpath, s.substr(0, s.size() - 1));
    expect_bad(BP_ERR_CORRUPT_FILE, xpath, {"byte offset 128", "48 bytes", "only 47"});
    write_file(xpath, s.substr(0, 30));
    expect_bad(BP_ERR_CORRUPT_FILE, xpath, {"byte offset 10", "truncated"});
}

TEST_F(NpyData, TrailingBytes) {
    write_default();
    write_file(xpath, read_file(xpath) + "zz");
    expect_bad(BP_ERR_CORRUPT_FILE, xpath, {"byte offset 176", "2 unexpected bytes"});
}

TEST_F(NpyData, NanAndInfInFeatures) {
    write_default();
    xs[7] = std::numeric_limits<float>::quiet_NaN();
    write_file(xpath, npy_bytes(npy_dict("<f4", "(4, 3)"), raw(xs)));
    expect_bad(BP_ERR_NON_FINITE, xpath, {"byte offset 156", "[2, 1]", "NaN"});
    std::vector<double> big(12, 1.0);
    big[0] = 1e300;
    write_file(xpath, npy_bytes(npy_dict("<f8", "(4, 3)"), raw(big)));
    expect_bad(BP_ERR_NON_FINITE, xpath, {"byte offset 128", "float32"});
}

TEST_F(NpyData, TargetCountDiffers) {
    write_default();
    write_file(ypath, npy_bytes(npy_dict("<i8", "(3,)"), raw(std::vector<int64_t>{1, 2, 3})));
    expect_bad(BP_ERR_CORRUPT_FILE, ypath, {"byte offset 128", "3 samples", "features 4"});
}

TEST_F(NpyData, BadClassTargets) {
    write_default();
    write_file(ypath, npy_bytes(npy_dict("<i8", "(4,)"), raw(std::vector<int64_t>{1, -2, 3, 0})));
    expect_bad(BP_ERR_CORRUPT_FILE, ypath, {"byte offset 136", "class index"});
    write_file(ypath, npy_bytes(npy_dict("<f4", "(4,)"), raw(std::vector<float>{1, 2.5f, 3, 0})));
    expect_bad(BP_ERR_CORRUPT_FILE, ypath, {"byte offset 132", "class index"});
    write_file(ypath, npy_bytes(npy_dict("<i8", "(4, 2)"), std::string(64, '\0')));
    expect_bad(BP_ERR_CORRUPT_FILE, ypath, {"(4, 2)"});
}

TEST_F(NpyData, MalformedHeaders) {
    write_default();
    for (const char *dict :
         {"{'descr': '<f4', 'shape': (4, 3), }",
          "{'descr': '<f4', 'fortran_order': False, 'shape': (4, x), }",
          "{'descr': '<f4', 'fortran_order': Maybe, 'shape': (4, 3), }",
          "{'descr': '<f4' 'fortran_order': False, 'shape': (4, 3), }", "['descr', '<f4']",
          "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 3), 'x': 1}"}) {
        write_file(xpath, npy_bytes(dict, raw(xs)));
        expect_bad(BP_ERR_CORRUPT_FILE, xpath, {"byte offset", "header"});
    }
}

// ---- the NPY writer ---------------------------------------------------------------------------

// bp_npy_save writes what NumPy writes: the header byte for byte as npy_bytes builds it from the
// format's description, then the elements little-endian.
TEST(NpySave, WritesTheFormatByteForByte) {
    DataDir dir;
    std::vector<float> x = bpt::uniform(6, -2.0f, 2.0f, 51);
    std::vector<int32_t> y = {3, -1, 7, 0, 2};
    const int64_t xshape[] = {3, 2}, yshape[] = {5}, zshape[] = {2, 0, 4};
    const std::string xp = dir.file("x.npy"), yp = dir.file("y.npy"), zp = dir.file("z.npy");
    ASSERT_EQ(BP_OK, bp_npy_save(xp.c_str(), BP_F32, 2, xshape, x.data())) << bp_last_error();
    ASSERT_EQ(BP_OK, bp_npy_save(yp.c_str(), BP_I32, 1, yshape, y.data())) << bp_last_error();
    ASSERT_EQ(BP_OK, bp_npy_save(zp.c_str(), BP_F32, 3, zshape, nullptr)) << bp_last_error();
    EXPECT_EQ(read_file(xp), npy_bytes(npy_dict("<f4", "(3, 2)"), raw(x)));
    EXPECT_EQ(read_file(yp), npy_bytes(npy_dict("<i4", "(5,)"), raw(y)));
    EXPECT_EQ(read_file(zp), npy_bytes(npy_dict("<f4", "(2, 0, 4)"), ""));
    // And the reader takes it back.
    bp_status st;
    DatasetPtr d(bp_dataset_load_npy(xp.c_str(), nullptr, BP_TARGET_NONE, &st));
    ASSERT_NE(d, nullptr) << bp_last_error();
    EXPECT_EQ(features_of(d.get()), x);
}

// NumPy reads it: shape, dtype and every value (skipped, saying so, without numpy).
TEST(NpySave, NumpyLoadsIt) {
    if (bpt::run_exit_code(std::string(BP_PYTHON) + " -c 'import numpy' 2>/dev/null") != 0)
        GTEST_SKIP() << BP_PYTHON << " has no numpy (Debian's python3-numpy)";
    DataDir dir;
    std::vector<float> x = {1.5f, -0.25f, 3e-8f, 65504.0f, -1e30f, 0.0f};
    const int64_t shape[] = {2, 3};
    const std::string p = dir.file("x.npy");
    ASSERT_EQ(BP_OK, bp_npy_save(p.c_str(), BP_F32, 2, shape, x.data())) << bp_last_error();
    std::string check = std::string(BP_PYTHON) + " -c \"import numpy as np, sys; a = np.load('" +
                        p + "'); ok = a.dtype == np.float32 and a.shape == (2, 3) and " +
                        "a.tolist() == [[1.5, -0.25, float(np.float32(3e-8))], [65504.0, " +
                        "float(np.float32(-1e30)), 0.0]]; sys.exit(0 if ok else 1)\"";
    EXPECT_EQ(0, bpt::run_exit_code(check)) << check;
}

// "-" is standard output: the same bytes, nothing left behind.
TEST(NpySave, DashIsStandardOutput) {
    DataDir dir;
    std::vector<int32_t> y = {4, 5, 6};
    const int64_t shape[] = {3};
    const std::string out = dir.file("stdout.bin");
    fflush(stdout);
    int saved = dup(1), fd = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT_GE(saved, 0);
    ASSERT_GE(fd, 0);
    dup2(fd, 1);
    close(fd);
    bp_status st = bp_npy_save("-", BP_I32, 1, shape, y.data());
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    ASSERT_EQ(BP_OK, st) << bp_last_error();
    EXPECT_EQ(read_file(out), npy_bytes(npy_dict("<i4", "(3,)"), raw(y)));
    EXPECT_FALSE(fs::exists("-"));
}

TEST(NpySave, AFailedWriteLeavesThePreviousFile) {
    DataDir dir;
    const std::string p = dir.file("keep.npy");
    write_file(p, "previous");
    const int64_t bad[] = {2, -1};
    std::vector<float> x(4, 1.0f);
    EXPECT_EQ(BP_ERR_INVALID_ARGUMENT, bp_npy_save(p.c_str(), BP_F32, 2, bad, x.data()));
    EXPECT_EQ(read_file(p), "previous");
    const std::string missing = dir.file("no/such/dir/x.npy");
    const int64_t shape[] = {4};
    EXPECT_EQ(BP_ERR_IO, bp_npy_save(missing.c_str(), BP_F32, 1, shape, x.data()));
    EXPECT_THAT(bp_last_error(), HasSubstr("bp_npy_save"));
    EXPECT_THAT(bp_last_error(), HasSubstr(missing));
    EXPECT_FALSE(fs::exists(missing));
    std::vector<std::string> left;
    for (const auto &e : fs::directory_iterator(dir.path()))
        left.push_back(e.path().filename().string());
    EXPECT_EQ(left, std::vector<std::string>{"keep.npy"}); // no temporary file
}

TEST(ApiContract, NpySave) {
    const int64_t shape[] = {2, 2}, negative[] = {2, -3}, huge[] = {INT64_C(1) << 40, 1 << 20};
    float x[4] = {0, 1, 2, 3};
    struct Case {
        const char *path;
        int dtype; // an int: 7 is no bp_dtype, and C++ may not hold it in one
        int ndim;
        const int64_t *shape;
        const void *data;
        const char *part;
    };
    const Case cases[] = {
        {nullptr, BP_F32, 2, shape, x, "path is NULL"},
        {"", BP_F32, 2, shape, x, "path is empty"},
        {"x.npy", 7, 2, shape, x, "dtype is 7"},
        {"x.npy", BP_F32, 0, shape, x, "ndim is 0, expected 1..32"},
        {"x.npy", BP_F32, 33, shape, x, "ndim is 33"},
        {"x.npy", BP_F32, 2, nullptr, x, "shape is NULL"},
        {"x.npy", BP_F32, 2, negative, x, "shape[1] is -3"},
        {"x.npy", BP_F32, 2, huge, x, "2^58 elements"},
        {"x.npy", BP_I32, 2, shape, nullptr, "data is NULL"},
    };
    for (const Case &c : cases) {
        SCOPED_TRACE(c.part);
        bp_clear_error();
        EXPECT_EQ(BP_ERR_INVALID_ARGUMENT,
                  bp_npy_save(c.path, (bp_dtype)c.dtype, c.ndim, c.shape, c.data));
        EXPECT_THAT(bp_last_error(), HasSubstr("bp_npy_save"));
        EXPECT_THAT(bp_last_error(), HasSubstr(c.part));
    }
    EXPECT_FALSE(fs::exists("x.npy")); // nothing written in the working folder
}

// ---- a dataset by its content -----------------------------------------------------------------

class OpenData : public ::testing::Test {
  protected:
    DataDir dir;
    std::vector<float> xs = bpt::uniform(12, -3.0f, 3.0f, 61);
    std::vector<int32_t> labels = {2, 0, 1, 2};

    // bp_dataset_open of path; *report filled; st the status.
    DatasetPtr open(const std::string &path, const bp_open_options &o, bp_open_report *report,
                    bp_status *st) {
        *st = BP_ERR_DEVICE;
        return DatasetPtr(bp_dataset_open(path.c_str(), &o, report, st));
    }
    std::string csv_text() const {
        std::string s = "a,b,c,label\n";
        for (int i = 0; i < 4; ++i)
            s += std::to_string(xs[i * 3]) + "," + std::to_string(xs[i * 3 + 1]) + "," +
                 std::to_string(xs[i * 3 + 2]) + "," + std::to_string(labels[i]) + "\n";
        return s;
    }
    void write_npy_pair(const std::string &x, const std::string &y) {
        const int64_t xshape[] = {4, 3}, yshape[] = {4};
        ASSERT_EQ(BP_OK, bp_npy_save(x.c_str(), BP_F32, 2, xshape, xs.data()));
        ASSERT_EQ(BP_OK, bp_npy_save(y.c_str(), BP_I32, 1, yshape, labels.data()));
    }
    // Runs f with standard input reading `file` (a pipe when pipe is set: not seekable).
    template <class F> void with_stdin(const std::string &bytes, bool pipe, F f) {
        int saved = dup(0);
        ASSERT_GE(saved, 0);
        std::thread writer;
        if (pipe) {
            int p[2];
            ASSERT_EQ(0, ::pipe(p));
            dup2(p[0], 0);
            close(p[0]);
            writer = std::thread([fd = p[1], bytes] {
                size_t at = 0;
                while (at < bytes.size()) {
                    ssize_t k = write(fd, bytes.data() + at, bytes.size() - at);
                    if (k <= 0) break;
                    at += (size_t)k;
                }
                close(fd);
            });
        } else {
            const std::string path = dir.file("stdin.bin");
            write_file(path, bytes);
            int fd = ::open(path.c_str(), O_RDONLY);
            ASSERT_GE(fd, 0);
            dup2(fd, 0);
            close(fd);
        }
        clearerr(stdin);
        f();
        if (writer.joinable()) writer.join();
        dup2(saved, 0);
        close(saved);
        clearerr(stdin);
    }
};

// Each format by its content, whatever the name says, plain and gzip: the same dataset as its
// loader reads.
TEST_F(OpenData, EachFormatByItsContentPlainAndGzip) {
    const std::string csv = csv_text();
    for (int gz = 0; gz < 2; ++gz) {
        SCOPED_TRACE(gz ? "gzip" : "plain");
        const std::string c = dir.file("csv.npy"), x = dir.file("x.csv"), y = dir.file("y.idx");
        if (gz)
            write_gzip(c, csv);
        else
            write_file(c, csv);
        write_npy_pair(x, y);
        if (gz) {
            write_gzip(x, read_file(x));
            write_gzip(y, read_file(y));
        }
        bp_open_options o = bp_open_options_default();
        bp_open_report r;
        bp_status st;
        DatasetPtr d = open(c, o, &r, &st);
        ASSERT_NE(d, nullptr) << bp_last_error();
        EXPECT_EQ(r.format, BP_FORMAT_CSV);
        EXPECT_EQ(r.gzip, gz);
        EXPECT_EQ(r.columns, 4);
        EXPECT_EQ(r.no_targets, 0);
        EXPECT_EQ(labels_of(d.get()), labels);
        EXPECT_EQ(bp_dataset_features(d.get()), 3);

        o.targets_path = y.c_str();
        d = open(x, o, &r, &st);
        ASSERT_NE(d, nullptr) << bp_last_error();
        EXPECT_EQ(r.format, BP_FORMAT_NPY);
        EXPECT_EQ(r.gzip, gz);
        EXPECT_EQ(features_of(d.get()), xs);
        EXPECT_EQ(labels_of(d.get()), labels);
        o.targets_path = nullptr; // features alone
        d = open(x, o, &r, &st);
        ASSERT_NE(d, nullptr) << bp_last_error();
        EXPECT_EQ(bp_dataset_target_kind(d.get()), BP_TARGET_NONE);
        EXPECT_EQ(r.no_targets, 1);

        const std::string im = dir.file("images.csv"), lb = dir.file("labels.npy");
        std::string pixels = pixel_data(5, 6), lab = label_data(5);
        std::string ib = idx_bytes(0x08, {5, 2, 3}, pixels), lbb = idx_bytes(0x08, {5}, lab);
        if (gz) {
            write_gzip(im, ib);
            write_gzip(lb, lbb);
        } else {
            write_file(im, ib);
            write_file(lb, lbb);
        }
        o.targets_path = lb.c_str();
        d = open(im, o, &r, &st);
        ASSERT_NE(d, nullptr) << bp_last_error();
        EXPECT_EQ(r.format, BP_FORMAT_IDX);
        DatasetPtr ref(bp_dataset_load_idx(im.c_str(), lb.c_str(), nullptr));
        ASSERT_NE(ref, nullptr) << bp_last_error();
        EXPECT_EQ(features_of(d.get()), features_of(ref.get()));
        EXPECT_EQ(labels_of(d.get()), labels_of(ref.get()));
        o.targets_path = nullptr;
        d = open(im, o, &r, &st);
        EXPECT_EQ(d, nullptr);
        EXPECT_EQ(st, BP_ERR_INVALID_ARGUMENT);
        EXPECT_THAT(bp_last_error(), HasSubstr("is an IDX file: give its labels file"));
    }
}

// "-" reads standard input, from a file or a pipe, named so in messages.
TEST_F(OpenData, DashIsStandardInputEvenAPipe) {
    const std::string csv = csv_text();
    for (bool pipe : {false, true}) {
        SCOPED_TRACE(pipe ? "pipe" : "file");
        with_stdin(csv, pipe, [&] {
            bp_status st;
            bp_open_report r;
            DatasetPtr d = open("-", bp_open_options_default(), &r, &st);
            ASSERT_NE(d, nullptr) << bp_last_error();
            EXPECT_EQ(labels_of(d.get()), labels);
        });
        // A diagnosis reads standard input twice: the copy makes that possible.
        with_stdin("a,b\n1,0.5\n2,1.5\n", pipe, [&] {
            bp_status st;
            bp_open_report r;
            DatasetPtr d = open("-", bp_open_options_default(), &r, &st);
            EXPECT_EQ(d, nullptr);
            EXPECT_EQ(st, BP_ERR_CORRUPT_FILE);
            EXPECT_EQ(r.hint, BP_HINT_VALUES);
            EXPECT_THAT(bp_last_error(),
                        HasSubstr("bp_dataset_open: 'standard input': line 2, column 2"));
            EXPECT_THAT(bp_last_error(), Not(HasSubstr("/proc/")));
        });
    }
    // NPY on standard input, targets from a file.
    const std::string x = dir.file("x.npy"), y = dir.file("y.npy");
    write_npy_pair(x, y);
    with_stdin(read_file(x), true, [&] {
        bp_open_options o = bp_open_options_default();
        o.targets_path = y.c_str();
        bp_status st;
        bp_open_report r;
        DatasetPtr d = open("-", o, &r, &st);
        ASSERT_NE(d, nullptr) << bp_last_error();
        EXPECT_EQ(features_of(d.get()), xs);
    });
}

TEST_F(OpenData, DiagnosesAWrongDelimiter) {
    const std::string p = dir.file("semi.csv");
    write_file(p, "\n  \na;b;c\n1;2;0\n");
    bp_status st;
    bp_open_report r;
    DatasetPtr d = open(p, bp_open_options_default(), &r, &st);
    EXPECT_EQ(d, nullptr);
    EXPECT_EQ(st, BP_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(r.hint, BP_HINT_DELIMITER);
    EXPECT_EQ(r.delimiter, ';');
    EXPECT_THAT(bp_last_error(), HasSubstr("the first line has no ',' but 2 of ';'"));
    bp_open_options o = bp_open_options_default();
    o.csv.delimiter = ';';
    d = open(p, o, &r, &st);
    ASSERT_NE(d, nullptr) << bp_last_error();
    EXPECT_EQ(r.hint, BP_HINT_NONE);
    EXPECT_EQ(r.columns, 3);
    // A delimiter inside quotes is not one.
    write_file(p, "\"x;y\",z\n1,0\n");
    d = open(p, bp_open_options_default(), &r, &st);
    EXPECT_NE(d, nullptr) << bp_last_error();
}

TEST_F(OpenData, DiagnosesValuesAndMixedLabels) {
    const std::string p = dir.file("v.csv");
    write_file(p, "a,y\n1,0.25\n2,3\n");
    bp_status st;
    bp_open_report r;
    DatasetPtr d = open(p, bp_open_options_default(), &r, &st);
    EXPECT_EQ(d, nullptr);
    EXPECT_EQ(st, BP_ERR_CORRUPT_FILE);
    EXPECT_EQ(r.hint, BP_HINT_VALUES);
    EXPECT_THAT(bp_last_error(), HasSubstr("line 2"));
    EXPECT_THAT(bp_last_error(), HasSubstr("the targets are values, not class labels"));
    bp_open_options o = bp_open_options_default();
    o.csv.target_kind = BP_CSV_VALUES;
    d = open(p, o, &r, &st);
    EXPECT_NE(d, nullptr) << bp_last_error();

    write_file(p, "a,y\n1,cat\n2,3\n3,dog\n");
    d = open(p, bp_open_options_default(), &r, &st);
    EXPECT_EQ(d, nullptr);
    EXPECT_EQ(r.hint, BP_HINT_CLASS_NAMES);
    EXPECT_THAT(bp_last_error(), HasSubstr("read every label as a class name"));
    o.csv.target_kind = BP_CSV_CLASS_NAME;
    d = open(p, o, &r, &st);
    ASSERT_NE(d, nullptr) << bp_last_error();
    EXPECT_EQ(bp_dataset_n_class_names(d.get()), 3);

    // A file bad in a way no other reading mends gets no hint.
    write_file(p, "a,y\n1,0\n2\n");
    d = open(p, bp_open_options_default(), &r, &st);
    EXPECT_EQ(d, nullptr);
    EXPECT_EQ(r.hint, BP_HINT_NONE);
    EXPECT_THAT(bp_last_error(), Not(HasSubstr("read them as values")));

    // NPY class targets that are values.
    const std::string x = dir.file("x.npy"), y = dir.file("y.npy");
    const int64_t xshape[] = {4, 3}, yshape[] = {4};
    std::vector<float> ys = {0.5f, 1.0f, 2.0f, 3.0f};
    ASSERT_EQ(BP_OK, bp_npy_save(x.c_str(), BP_F32, 2, xshape, xs.data()));
    ASSERT_EQ(BP_OK, bp_npy_save(y.c_str(), BP_F32, 1, yshape, ys.data()));
    o = bp_open_options_default();
    o.targets_path = y.c_str();
    d = open(x, o, &r, &st);
    EXPECT_EQ(d, nullptr);
    EXPECT_EQ(r.hint, BP_HINT_VALUES);
    o.target_kind = BP_TARGET_VALUES;
    d = open(x, o, &r, &st);
    EXPECT_NE(d, nullptr) << bp_last_error();
}

// A CSV as wide as the model's input holds features alone; one wider has a target column.
TEST_F(OpenData, ACsvAsWideAsTheInputsHasNoTargets) {
    const std::string p = dir.file("f.csv");
    write_file(p, csv_text());
    bp_open_options o = bp_open_options_default();
    o.inputs = 4;
    bp_status st;
    bp_open_report r;
    DatasetPtr d = open(p, o, &r, &st);
    ASSERT_NE(d, nullptr) << bp_last_error();
    EXPECT_EQ(r.no_targets, 1);
    EXPECT_EQ(bp_dataset_target_kind(d.get()), BP_TARGET_NONE);
    EXPECT_EQ(bp_dataset_features(d.get()), 4);
    o.inputs = 3;
    d = open(p, o, &r, &st);
    ASSERT_NE(d, nullptr) << bp_last_error();
    EXPECT_EQ(r.no_targets, 0);
    EXPECT_EQ(labels_of(d.get()), labels);
    o.inputs = 4;
    o.csv.targets = "label";
    d = open(p, o, &r, &st);
    EXPECT_EQ(d, nullptr);
    EXPECT_EQ(st, BP_ERR_INVALID_ARGUMENT);
    EXPECT_THAT(bp_last_error(), HasSubstr("no column is left for the targets 'label'"));
    // A targets file for a CSV is ignored, and said so.
    o = bp_open_options_default();
    o.targets_path = p.c_str();
    d = open(p, o, &r, &st);
    ASSERT_NE(d, nullptr) << bp_last_error();
    EXPECT_EQ(r.targets_ignored, 1);
}

// A CSV of one feature and these labels, one per row.
std::string labels_csv(const std::vector<std::string> &labels) {
    std::string s = "x,label\n";
    for (size_t i = 0; i < labels.size(); ++i)
        s += std::to_string(i) + "," + labels[i] + "\n";
    return s;
}

TEST_F(OpenData, ReportsTheLabelsItRead) {
    const std::string p = dir.file("l.csv");
    write_file(p, labels_csv({"1", "4", "1", "4", "0"}));
    bp_status st;
    bp_open_report r;
    DatasetPtr d = open(p, bp_open_options_default(), &r, &st);
    ASSERT_NE(d, nullptr) << bp_last_error();
    EXPECT_EQ(r.distinct_labels, 3);
    EXPECT_EQ(r.top_label_row, 2); // the first 4
    bp_open_options o = bp_open_options_default();
    o.csv.target_kind = BP_CSV_VALUES;
    d = open(p, o, &r, &st);
    ASSERT_NE(d, nullptr) << bp_last_error();
    EXPECT_EQ(r.distinct_labels, 0);
    EXPECT_EQ(r.top_label_row, 0);
}

TEST_F(OpenData, ALabelPastMaxClassesIsNamedByFileRowAndLabel) {
    const std::string p = dir.file("l.csv");
    write_file(p, labels_csv({"0", "1", "2", "5", "7"}));
    bp_open_options o = bp_open_options_default();
    o.max_classes = 3;
    bp_status st;
    bp_open_report r;
    DatasetPtr d = open(p, o, &r, &st);
    EXPECT_EQ(d, nullptr);
    EXPECT_EQ(st, BP_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(r.hint, BP_HINT_CLASSES);
    EXPECT_THAT(bp_last_error(),
                HasSubstr("'" + p + "': row 4 has label 5, outside the 3 classes (labels 0 to 2)"));
    o.max_classes = 8;
    d = open(p, o, &r, &st);
    ASSERT_NE(d, nullptr) << bp_last_error();
    EXPECT_EQ(bp_dataset_classes(d.get()), 8); // the loader's count: 1 + the largest label
    EXPECT_EQ(r.hint, BP_HINT_NONE);

    // NPY labels, and class names past the names a caller gives.
    const std::string x = dir.file("x.npy"), y = dir.file("y.npy");
    write_npy_pair(x, y); // labels 2, 0, 1, 2
    o = bp_open_options_default();
    o.targets_path = y.c_str();
    o.max_classes = 2;
    d = open(x, o, &r, &st);
    EXPECT_EQ(d, nullptr);
    EXPECT_THAT(bp_last_error(), HasSubstr("'" + x + "': row 1 has label 2, outside the 2"));
    write_file(p, labels_csv({"cat", "dog", "emu"}));
    const char *const known[] = {"dog", "cat"};
    o = bp_open_options_default();
    o.csv.class_names = known;
    o.csv.n_class_names = 2;
    o.max_classes = 2;
    d = open(p, o, &r, &st);
    EXPECT_EQ(d, nullptr);
    EXPECT_EQ(r.hint, BP_HINT_CLASSES);
    EXPECT_THAT(bp_last_error(),
                HasSubstr("row 3 has class 'emu', which is not one of the 2 classes (dog, cat)"));
}

TEST_F(OpenData, CheckClassesNamesTheRowAndTheLabel) {
    const std::string p = dir.file("l.csv");
    write_file(p, labels_csv({"0", "2", "1", "3"}));
    bp_status st;
    bp_open_report r;
    DatasetPtr d = open(p, bp_open_options_default(), &r, &st);
    ASSERT_NE(d, nullptr) << bp_last_error();
    EXPECT_EQ(BP_OK, bp_dataset_check_classes(d.get(), 4, "l.csv"));
    EXPECT_EQ(BP_ERR_INVALID_ARGUMENT, bp_dataset_check_classes(d.get(), 3, "l.csv"));
    EXPECT_THAT(bp_last_error(), HasSubstr("bp_dataset_check_classes: 'l.csv': row 4 has label 3, "
                                           "outside the 3 classes (labels 0 to 2)"));
    EXPECT_EQ(BP_ERR_INVALID_ARGUMENT, bp_dataset_check_classes(d.get(), 2, nullptr));
    EXPECT_THAT(bp_last_error(), HasSubstr("'the dataset': row 2 has label 2"));
    EXPECT_EQ(BP_ERR_INVALID_ARGUMENT, bp_dataset_check_classes(d.get(), 0, "l.csv"));
    EXPECT_THAT(bp_last_error(), HasSubstr("classes is 0, expected >= 1"));
    EXPECT_EQ(BP_ERR_INVALID_ARGUMENT, bp_dataset_check_classes(nullptr, 3, "l.csv"));
    EXPECT_THAT(bp_last_error(), HasSubstr("bp_dataset_check_classes: dataset is NULL"));
    bp_open_options o = bp_open_options_default();
    o.csv.target_kind = BP_CSV_VALUES; // values: no classes to be outside of
    d = open(p, o, &r, &st);
    ASSERT_NE(d, nullptr) << bp_last_error();
    EXPECT_EQ(BP_OK, bp_dataset_check_classes(d.get(), 1, "l.csv"));
    // Names: the first of the classes' names, "..." past eight.
    std::vector<std::string> names;
    for (char c = 'a'; c <= 'k'; ++c)
        names.push_back(std::string(1, c));
    write_file(p, labels_csv(names));
    d = open(p, bp_open_options_default(), &r, &st);
    ASSERT_NE(d, nullptr) << bp_last_error();
    EXPECT_EQ(BP_ERR_INVALID_ARGUMENT, bp_dataset_check_classes(d.get(), 10, "l.csv"));
    EXPECT_THAT(bp_last_error(), HasSubstr("row 11 has class 'k', which is not one of the 10 "
                                           "classes (a, b, c, d, e, f, g, h, ...)"));
}

TEST_F(OpenData, ALikelyTypoInALabelIsRefused) {
    std::vector<std::string> labels;
    for (int i = 0; i < 300; ++i)
        labels.push_back(std::to_string(i % 3));
    labels[56] = "1000000";
    const std::string p = dir.file("typo.csv");
    write_file(p, labels_csv(labels));
    bp_status st;
    bp_open_report r;
    DatasetPtr d = open(p, bp_open_options_default(), &r, &st);
    EXPECT_EQ(d, nullptr);
    EXPECT_EQ(st, BP_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(r.hint, BP_HINT_CLASS_COUNT);
    EXPECT_EQ(r.top_label_row, 57);
    EXPECT_THAT(bp_last_error(), HasSubstr("'" + p +
                                           "': row 57 has label 1000000, which makes 1000001 "
                                           "classes, but only 4 distinct labels appear"));
    bp_open_options o = bp_open_options_default();
    o.max_classes = 1000001; // the caller means it
    d = open(p, o, &r, &st);
    ASSERT_NE(d, nullptr) << bp_last_error();
    EXPECT_EQ(bp_dataset_classes(d.get()), 1000001);
    // 1000 classes are not suspect, nor are 1001 of which a quarter appear.
    labels[56] = "999";
    write_file(p, labels_csv(labels));
    d = open(p, bp_open_options_default(), &r, &st);
    EXPECT_NE(d, nullptr) << bp_last_error();
    labels.clear();
    for (int i = 0; i < 251; ++i)
        labels.push_back(std::to_string(i * 4));
    write_file(p, labels_csv(labels)); // 1001 classes, 251 distinct
    d = open(p, bp_open_options_default(), &r, &st);
    EXPECT_NE(d, nullptr) << bp_last_error();
    labels.pop_back();
    labels.push_back("1000");
    labels.push_back("1000");
    labels[0] = "4"; // 250 distinct: under a quarter
    write_file(p, labels_csv(labels));
    d = open(p, bp_open_options_default(), &r, &st);
    EXPECT_EQ(d, nullptr);
    EXPECT_EQ(r.hint, BP_HINT_CLASS_COUNT);
}

TEST_F(OpenData, AColumnOfIdentifiersIsRefused) {
    std::vector<std::string> labels;
    for (int i = 0; i < 1001; ++i)
        labels.push_back("id" + std::to_string(i));
    const std::string p = dir.file("ids.csv");
    write_file(p, labels_csv(labels));
    bp_status st;
    bp_open_report r;
    DatasetPtr d = open(p, bp_open_options_default(), &r, &st);
    EXPECT_EQ(d, nullptr);
    EXPECT_EQ(r.hint, BP_HINT_IDENTIFIERS);
    EXPECT_THAT(bp_last_error(), HasSubstr("'" + p +
                                           "': the target column holds 1001 distinct names in "
                                           "1001 rows: a column of identifiers"));
    for (int i = 0; i < 1001; ++i)
        labels.push_back(labels[(size_t)i]); // each name twice: classes
    write_file(p, labels_csv(labels));
    d = open(p, bp_open_options_default(), &r, &st);
    ASSERT_NE(d, nullptr) << bp_last_error();
    EXPECT_EQ(r.distinct_labels, 1001);
}

TEST_F(OpenData, BinaryThatIsNoFormatIsNamed) {
    const std::string p = dir.file("blob");
    write_file(p, std::string("\x7f"
                              "ELF\x02\x01\x01\x00",
                              8) +
                      std::string(64, '\0'));
    bp_status st;
    bp_open_report r;
    DatasetPtr d = open(p, bp_open_options_default(), &r, &st);
    EXPECT_EQ(d, nullptr);
    EXPECT_EQ(st, BP_ERR_CORRUPT_FILE);
    EXPECT_THAT(bp_last_error(), HasSubstr("not CSV text, an NPY file"));
    EXPECT_THAT(bp_last_error(), HasSubstr("it starts 7f 45 4c 46"));
    EXPECT_EQ(r.format, BP_FORMAT_AUTO);
}

TEST(ApiContract, DatasetOpen) {
    DataDir dir;
    bp_open_options o = bp_open_options_default();
    EXPECT_EQ(o.format, BP_FORMAT_AUTO);
    EXPECT_EQ(o.targets_path, nullptr);
    EXPECT_EQ(o.target_kind, BP_TARGET_CLASS);
    EXPECT_EQ(o.csv.target_kind, BP_CSV_CLASS_AUTO);
    EXPECT_EQ(o.csv.delimiter, ',');
    EXPECT_EQ(o.inputs, 0);
    EXPECT_EQ(o.max_classes, 0);
    const std::string absent = dir.file("absent.csv");
    struct Case {
        const char *path;
        void (*change)(bp_open_options *);
        bp_status want;
        const char *part;
    };
    const Case cases[] = {
        {nullptr, nullptr, BP_ERR_INVALID_ARGUMENT, "path is NULL"},
        {"x", [](bp_open_options *p) { p->format = (bp_data_format)9; }, BP_ERR_INVALID_ARGUMENT,
         "options.format is 9"},
        {"x", [](bp_open_options *p) { p->target_kind = BP_TARGET_NONE; }, BP_ERR_INVALID_ARGUMENT,
         "options.target_kind"},
        {"x", [](bp_open_options *p) { p->inputs = -1; }, BP_ERR_INVALID_ARGUMENT,
         "options.inputs is -1"},
        {"x", [](bp_open_options *p) { p->max_classes = -1; }, BP_ERR_INVALID_ARGUMENT,
         "options.max_classes is -1"},
        {"-", [](bp_open_options *p) { p->targets_path = "-"; }, BP_ERR_INVALID_ARGUMENT,
         "both standard input"},
        {absent.c_str(), nullptr, BP_ERR_IO, "No such file"},
    };
    for (const Case &c : cases) {
        SCOPED_TRACE(c.part);
        bp_open_options oc = bp_open_options_default();
        if (c.change) c.change(&oc);
        bp_open_report r;
        bp_status st = BP_OK;
        bp_clear_error();
        EXPECT_EQ(bp_dataset_open(c.path, &oc, &r, &st), nullptr);
        EXPECT_EQ(st, c.want);
        EXPECT_THAT(bp_last_error(), HasSubstr("bp_dataset_open"));
        EXPECT_THAT(bp_last_error(), HasSubstr(c.part));
        EXPECT_EQ(bp_dataset_open(c.path, &oc, nullptr, nullptr), nullptr); // NULLs allowed
    }
}

// ---- datasets from memory, split, scaling -----------------------------------------------------

// n samples with 3 features: x[i] = {i, -i, 0.5}, labels i % 7 (so the row is identifiable).
DatasetPtr numbered(int64_t n) {
    std::vector<float> x;
    std::vector<int32_t> y;
    for (int64_t i = 0; i < n; ++i) {
        x.insert(x.end(), {(float)i, (float)-i, 0.5f});
        y.push_back((int32_t)(i % 7));
    }
    bp_status st = BP_ERR_DEVICE;
    DatasetPtr d(bp_dataset_from_memory(n, 3, x.data(), BP_TARGET_CLASS, 1, y.data(), &st));
    EXPECT_EQ(st, BP_OK) << bp_last_error();
    return d;
}

// The rows of d by their first feature.
std::vector<int64_t> row_ids(const bp_dataset *d) {
    std::vector<int64_t> ids;
    const float *x = bp_dataset_features_data(d);
    const int32_t *y = (const int32_t *)bp_dataset_targets_data(d);
    for (int64_t i = 0; i < bp_dataset_size(d); ++i) {
        ids.push_back((int64_t)x[3 * i]);
        EXPECT_EQ(x[3 * i + 1], -x[3 * i]) << "row " << i << " is torn";
        EXPECT_EQ(y[i], (int32_t)(ids.back() % 7)) << "row " << i << " lost its label";
    }
    return ids;
}

TEST(DataFromMemory, CopiesAndReportsShape) {
    std::vector<float> x = {1, 2, 3, 4, 5, 6};
    std::vector<float> y = {0.5f, -0.5f, 1.5f, 2.5f};
    DatasetPtr d(bp_dataset_from_memory(2, 3, x.data(), BP_TARGET_VALUES, 2, y.data(), nullptr));
    ASSERT_NE(d, nullptr) << bp_last_error();
    x[0] = 99;
    y[0] = 99;
    EXPECT_EQ(features_of(d.get()), (std::vector<float>{1, 2, 3, 4, 5, 6}));
    EXPECT_EQ(((const float *)bp_dataset_targets_data(d.get()))[0], 0.5f);
    EXPECT_EQ(bp_dataset_target_width(d.get()), 2);
    EXPECT_EQ(bp_dataset_classes(d.get()), 0);
    EXPECT_EQ(bp_dataset_size(nullptr), 0);
    EXPECT_EQ(bp_dataset_features_data(nullptr), nullptr);
}

TEST(DataFromMemory, BadArguments) {
    std::vector<float> x = {1, 2, 3, 4};
    std::vector<int32_t> y = {0, -1};
    bp_status st = BP_OK;
    EXPECT_EQ(bp_dataset_from_memory(2, 2, x.data(), BP_TARGET_CLASS, 1, y.data(), &st), nullptr);
    EXPECT_EQ(st, BP_ERR_INVALID_ARGUMENT);
    EXPECT_THAT(bp_last_error(), HasSubstr("targets[1] is -1"));
    y[1] = 1;
    x[3] = std::numeric_limits<float>::infinity();
    EXPECT_EQ(bp_dataset_from_memory(2, 2, x.data(), BP_TARGET_CLASS, 1, y.data(), &st), nullptr);
    EXPECT_EQ(st, BP_ERR_NON_FINITE);
    EXPECT_THAT(bp_last_error(), HasSubstr("x[1, 1] is Inf"));
    EXPECT_EQ(bp_dataset_from_memory(0, 2, x.data(), BP_TARGET_CLASS, 1, y.data(), &st), nullptr);
    EXPECT_EQ(st, BP_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(bp_dataset_from_memory(2, 2, x.data(), BP_TARGET_CLASS, 2, y.data(), &st), nullptr);
    EXPECT_EQ(st, BP_ERR_INVALID_ARGUMENT);
}

TEST(DataSplit, PartitionsDeterministically) {
    DatasetPtr d = numbered(103);
    ASSERT_NE(d, nullptr);
    bp_dataset *tr = nullptr, *va = nullptr;
    ASSERT_EQ(bp_dataset_split(d.get(), 0.2, 7, &tr, &va), BP_OK) << bp_last_error();
    DatasetPtr train(tr), val(va);
    EXPECT_EQ(bp_dataset_size(train.get()), 82); // 103 - round(20.6)
    EXPECT_EQ(bp_dataset_size(val.get()), 21);
    EXPECT_EQ(bp_dataset_classes(train.get()), 7);
    EXPECT_EQ(bp_dataset_classes(val.get()), 7);
    std::vector<int64_t> a = row_ids(train.get()), b = row_ids(val.get());
    std::vector<int64_t> all(a);
    all.insert(all.end(), b.begin(), b.end());
    EXPECT_EQ(std::set<int64_t>(all.begin(), all.end()).size(), 103u) << "a row is missing";
    std::vector<int64_t> in_order(103);
    for (int64_t i = 0; i < 103; ++i)
        in_order[i] = i;
    EXPECT_NE(all, in_order) << "not shuffled";
    EXPECT_EQ(row_ids(d.get()), in_order) << "the input changed";

    ASSERT_EQ(bp_dataset_split(d.get(), 0.2, 7, &tr, &va), BP_OK);
    DatasetPtr train2(tr), val2(va);
    EXPECT_EQ(row_ids(train2.get()), a) << "same seed, different split";
    ASSERT_EQ(bp_dataset_split(d.get(), 0.2, 8, &tr, &va), BP_OK);
    DatasetPtr train3(tr), val3(va);
    EXPECT_NE(row_ids(train3.get()), a) << "another seed, same split";
}

// The split follows the recipe data.h documents, computed here word by word.
TEST(DataSplit, MatchesTheDocumentedShuffle) {
    const int64_t n = 50;
    const uint64_t seed = 0x123456789abcdefULL, stream = 0xC000000000000000ULL;
    std::vector<int64_t> perm = bpt::documented_shuffle(n, seed, stream);
    DatasetPtr d = numbered(n);
    bp_dataset *tr = nullptr, *va = nullptr;
    ASSERT_EQ(bp_dataset_split(d.get(), 0.1, seed, &tr, &va), BP_OK);
    DatasetPtr train(tr), val(va);
    std::vector<int64_t> got = row_ids(train.get()), v = row_ids(val.get());
    got.insert(got.end(), v.begin(), v.end());
    EXPECT_EQ(got, perm);
}

TEST(DataSplit, BadFractions) {
    DatasetPtr d = numbered(10);
    bp_dataset *tr = nullptr, *va = nullptr;
    for (double f : {0.0, 1.0, -0.5, 0.01, 0.97, std::nan("")}) {
        EXPECT_EQ(bp_dataset_split(d.get(), f, 1, &tr, &va), BP_ERR_INVALID_ARGUMENT) << f;
        EXPECT_EQ(tr, nullptr);
        EXPECT_EQ(va, nullptr);
    }
    EXPECT_EQ(bp_dataset_split(nullptr, 0.5, 1, &tr, &va), BP_ERR_INVALID_ARGUMENT);
}

// Features far from zero against their spread, where float accumulation would lose the
// variance: 1000 + U[-1, 1], 200 samples x 5 features, and one constant feature.
class DataScaling : public ::testing::Test {
  protected:
    static const int n = 200, f = 6;
    std::vector<float> x = make_x();
    std::vector<int32_t> y = std::vector<int32_t>(n, 0);
    DatasetPtr d{bp_dataset_from_memory(n, f, x.data(), BP_TARGET_CLASS, 1, y.data(), nullptr)};
    std::vector<float> offset = std::vector<float>(f), scale = std::vector<float>(f);

    static std::vector<float> make_x() {
        std::vector<float> v = bpt::uniform((size_t)n * f, -1.0f, 1.0f, 77);
        for (int i = 0; i < n; ++i) {
            for (int j = 0; j < f - 1; ++j)
                v[i * f + j] += 1000.0f;
            v[i * f + f - 1] = 3.0f;
        }
        return v;
    }
    double column_mean(const std::vector<float> &v, int j) const {
        double s = 0;
        for (int i = 0; i < n; ++i)
            s += v[i * f + j];
        return s / n;
    }
    double column_sd(const std::vector<float> &v, int j) const {
        double m = column_mean(v, j), s = 0;
        for (int i = 0; i < n; ++i)
            s += (v[i * f + j] - m) * (v[i * f + j] - m);
        return std::sqrt(s / n);
    }
    std::vector<float> scaled() {
        EXPECT_EQ(bp_dataset_apply_scaling(d.get(), offset.data(), scale.data()), BP_OK)
            << bp_last_error();
        return features_of(d.get());
    }
};

TEST_F(DataScaling, Standard) {
    ASSERT_EQ(bp_dataset_fit_scaling(d.get(), BP_SCALE_STANDARD, offset.data(), scale.data()),
              BP_OK);
    for (int j = 0; j < f - 1; ++j) {
        EXPECT_NEAR(offset[j], column_mean(x, j), 1e-4) << j; // float rounding of ~1000
        EXPECT_NEAR(scale[j] * column_sd(x, j), 1.0, 1e-6) << j;
    }
    EXPECT_EQ(offset[f - 1], 3.0f);
    EXPECT_EQ(scale[f - 1], 1.0f) << "a constant feature keeps scale 1";
    std::vector<float> s = scaled();
    for (int j = 0; j < f - 1; ++j) {
        // (x - offset) is exact-ish; offset's rounding (<= 3e-5) shifts the mean by 3e-5 / sd.
        EXPECT_NEAR(column_mean(s, j), 0.0, 2e-4) << j;
        EXPECT_NEAR(column_sd(s, j), 1.0, 1e-4) << j;
    }
}

TEST_F(DataScaling, MinMax) {
    ASSERT_EQ(bp_dataset_fit_scaling(d.get(), BP_SCALE_MINMAX, offset.data(), scale.data()), BP_OK);
    EXPECT_EQ(scale[f - 1], 1.0f);
    std::vector<float> s = scaled();
    for (int j = 0; j < f - 1; ++j) {
        float lo = 1e9f, hi = -1e9f;
        for (int i = 0; i < n; ++i)
            lo = std::min(lo, s[i * f + j]), hi = std::max(hi, s[i * f + j]);
        EXPECT_EQ(lo, 0.0f) << j;
        EXPECT_NEAR(hi, 1.0f, 1e-6) << j;
    }
    EXPECT_EQ(s[f - 1], 0.0f) << "a constant feature becomes 0";
}

TEST_F(DataScaling, GlobalAndNone) {
    ASSERT_EQ(bp_dataset_fit_scaling(d.get(), BP_SCALE_GLOBAL, offset.data(), scale.data()), BP_OK);
    double sum = 0, ss = 0;
    for (float v : x)
        sum += v;
    double mean = sum / x.size();
    for (float v : x)
        ss += (v - mean) * (v - mean);
    for (int j = 0; j < f; ++j) {
        EXPECT_NEAR(offset[j], mean, 1e-4);
        EXPECT_NEAR(scale[j] * std::sqrt(ss / x.size()), 1.0, 1e-6);
    }
    ASSERT_EQ(bp_dataset_fit_scaling(d.get(), BP_SCALE_NONE, offset.data(), scale.data()), BP_OK);
    EXPECT_EQ(offset, std::vector<float>(f, 0.0f));
    EXPECT_EQ(scale, std::vector<float>(f, 1.0f));
    EXPECT_EQ(scaled(), x);
}

TEST_F(DataScaling, BadScaleChangesNothing) {
    ASSERT_EQ(bp_dataset_fit_scaling(d.get(), BP_SCALE_STANDARD, offset.data(), scale.data()),
              BP_OK);
    std::vector<float> before = features_of(d.get());
    scale[2] = std::numeric_limits<float>::infinity();
    EXPECT_EQ(bp_dataset_apply_scaling(d.get(), offset.data(), scale.data()), BP_ERR_NON_FINITE);
    EXPECT_THAT(bp_last_error(), HasSubstr("scale[2]"));
    scale[2] = 3e38f; // finite, but (x - offset) * scale overflows for some x
    offset[2] = -1e3f;
    EXPECT_EQ(bp_dataset_apply_scaling(d.get(), offset.data(), scale.data()), BP_ERR_NON_FINITE);
    EXPECT_EQ(features_of(d.get()), before) << "a failed call changed the dataset";
    EXPECT_EQ(bp_dataset_fit_scaling(d.get(), (bp_scaling_kind)9, offset.data(), scale.data()),
              BP_ERR_INVALID_ARGUMENT);
}

} // namespace
