// Class names and unlabelled data: CSV labels as names (their order, the names a caller gives,
// names it does not know, labels that mix names and numbers), header detection over a column of
// names, features-only CSV and NPY files, and what the rest of the data API does with them
// (split, scaling, loaders, datasets from memory).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "support.h"
#include "support_files.h"

namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

using bpt::DatasetPtr;

using Dir = bpt::TempDir;
using bpt::write_file;

std::vector<int32_t> labels_of(const bp_dataset *d) {
    const int32_t *y = (const int32_t *)bp_dataset_targets_data(d);
    return std::vector<int32_t>(y, y + bp_dataset_size(d));
}

std::vector<float> features_of(const bp_dataset *d) {
    const float *x = bp_dataset_features_data(d);
    return std::vector<float>(x, x + bp_dataset_size(d) * bp_dataset_features(d));
}

std::vector<std::string> names_of(const bp_dataset *d) {
    std::vector<std::string> v;
    for (int i = 0; i < bp_dataset_n_class_names(d); ++i)
        v.push_back(bp_dataset_class_name(d, i));
    return v;
}

class CsvLabels : public ::testing::Test {
  protected:
    Dir dir;
    std::string path = dir.file("data.csv");
    bp_csv_options opt = bp_csv_options_default();

    void SetUp() override {
        opt.target_kind = BP_CSV_CLASS_AUTO;
    }
    DatasetPtr load(const std::string &text) {
        write_file(path, text);
        bp_status st = BP_ERR_DEVICE;
        DatasetPtr d(bp_dataset_load_csv(path.c_str(), &opt, &st));
        EXPECT_EQ(st, BP_OK) << bp_last_error();
        EXPECT_NE(d, nullptr);
        return d;
    }
    // The message names the call, and the file unless the options alone are wrong.
    std::string fails(const std::string &text, bp_status want) {
        write_file(path, text);
        bp_status st = BP_OK;
        bp_dataset *d = bp_dataset_load_csv(path.c_str(), &opt, &st);
        EXPECT_EQ(d, nullptr);
        EXPECT_EQ(st, want) << bp_last_error();
        bp_dataset_free(d);
        std::string msg = bp_last_error();
        EXPECT_THAT(msg, HasSubstr("bp_dataset_load_csv"));
        bool options_only = msg.find("class_names") != std::string::npos ||
                            msg.find("targets is") != std::string::npos;
        if (!options_only) {
            EXPECT_THAT(msg, HasSubstr(path));
        }
        return msg;
    }
};

// The documented order: byte order (strcmp), so upper case comes before lower case and the
// order does not depend on the rows' order.
TEST_F(CsvLabels, NamesAreTheDistinctLabelsInByteOrder) {
    DatasetPtr d = load("x,label\n1,dog\n2,cat\n3,Bird\n4,dog\n5,cat\n");
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(bp_dataset_size(d.get()), 5); // "x" over "1": the first row is a header
    EXPECT_EQ(names_of(d.get()), (std::vector<std::string>{"Bird", "cat", "dog"}));
    EXPECT_EQ(bp_dataset_classes(d.get()), 3);
    EXPECT_EQ(labels_of(d.get()), (std::vector<int32_t>{2, 1, 0, 2, 1}));
    EXPECT_EQ(features_of(d.get()), (std::vector<float>{1, 2, 3, 4, 5}));
    EXPECT_EQ(bp_dataset_class_name(d.get(), 3), nullptr);
    EXPECT_EQ(bp_dataset_class_name(d.get(), -1), nullptr);
    DatasetPtr reversed = load("x,label\n5,cat\n4,dog\n3,Bird\n2,cat\n1,dog\n");
    ASSERT_NE(reversed, nullptr);
    EXPECT_EQ(names_of(reversed.get()), names_of(d.get()));
}

// A column of names under a first row of numbers and a name is data, not a header.
TEST_F(CsvLabels, AColumnOfNamesIsNotAHeader) {
    DatasetPtr d = load("1.5,2,dog\n3,4,cat\n");
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(bp_dataset_size(d.get()), 2);
    EXPECT_EQ(names_of(d.get()), (std::vector<std::string>{"cat", "dog"}));
    EXPECT_EQ(labels_of(d.get()), (std::vector<int32_t>{1, 0}));
    // A header still is one when one of its names sits over a number.
    d = load("a,b,species\n1.5,2,dog\n3,4,cat\n");
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(bp_dataset_size(d.get()), 2);
    // One row alone with text in it reads as a header (documented); --header 0 reads it.
    fails("1.5,2,dog\n", BP_ERR_CORRUPT_FILE);
    opt.header = 0;
    d = load("1.5,2,dog\n");
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(names_of(d.get()), (std::vector<std::string>{"dog"}));
}

TEST_F(CsvLabels, GivenNamesKeepTheirOrderAndOthersFollowInByteOrder) {
    const char *known[] = {"dog", "cat"};
    opt.class_names = known;
    opt.n_class_names = 2;
    DatasetPtr d = load("x,y\n1,cat\n2,emu\n3,dog\n4,ant\n5,emu\n");
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(names_of(d.get()), (std::vector<std::string>{"dog", "cat", "ant", "emu"}));
    EXPECT_EQ(labels_of(d.get()), (std::vector<int32_t>{1, 3, 0, 2, 3}));
    EXPECT_EQ(bp_dataset_classes(d.get()), 4);
    // Names given but absent from the file still count as classes.
    d = load("x,y\n1,cat\n");
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(names_of(d.get()), (std::vector<std::string>{"dog", "cat"}));
    EXPECT_EQ(labels_of(d.get()), (std::vector<int32_t>{1}));
    const char *twice[] = {"dog", "dog"};
    opt.class_names = twice;
    EXPECT_THAT(fails("x,y\n1,dog\n", BP_ERR_INVALID_ARGUMENT), HasSubstr("'dog' twice"));
    const char *hole[] = {"dog", nullptr};
    opt.class_names = hole;
    EXPECT_THAT(fails("x,y\n1,dog\n", BP_ERR_INVALID_ARGUMENT), HasSubstr("class_names[1]"));
}

// Numbers under BP_CSV_CLASS_AUTO are class indices exactly as BP_CSV_CLASS_INDEX reads them,
// errors included.
TEST_F(CsvLabels, AutoReadsNumbersLikeClassIndex) {
    const std::string text = "a,b,y\n1,2,2\n3,4,0\n5,6,7\n";
    DatasetPtr automatic = load(text);
    opt.target_kind = BP_CSV_CLASS_INDEX;
    DatasetPtr index = load(text);
    ASSERT_NE(automatic, nullptr);
    ASSERT_NE(index, nullptr);
    EXPECT_EQ(labels_of(automatic.get()), labels_of(index.get()));
    EXPECT_EQ(labels_of(automatic.get()), (std::vector<int32_t>{2, 0, 7}));
    EXPECT_EQ(bp_dataset_classes(automatic.get()), 8);
    EXPECT_EQ(bp_dataset_n_class_names(automatic.get()), 0);
    std::string by_index = fails("a,y\n1,0\n2,0.5\n", BP_ERR_CORRUPT_FILE);
    opt.target_kind = BP_CSV_CLASS_AUTO;
    EXPECT_EQ(fails("a,y\n1,0\n2,0.5\n", BP_ERR_CORRUPT_FILE), by_index);
    EXPECT_THAT(by_index, HasSubstr("line 3, column 2"));
}

TEST_F(CsvLabels, AutoRefusesNamesMixedWithNumbersNamingALineOfEach) {
    // Lines count the header: the rows here are lines 2, 3 and 4.
    std::string msg = fails("a,y\n1,0\n2,cat\n3,1\n", BP_ERR_CORRUPT_FILE);
    EXPECT_THAT(msg, HasSubstr("line 3, column 2"));
    EXPECT_THAT(msg, HasSubstr("'cat' is a name"));
    EXPECT_THAT(msg, HasSubstr("line 2 has the number '0'"));
    msg = fails("a,y\n1,cat\n2,dog\n3,4\n", BP_ERR_CORRUPT_FILE);
    EXPECT_THAT(msg, HasSubstr("line 4, column 2"));
    EXPECT_THAT(msg, HasSubstr("'4' is a number"));
    EXPECT_THAT(msg, HasSubstr("line 2 has the name 'cat'"));
    // Read as names, every label is one (so "10" sorts before "2").
    opt.target_kind = BP_CSV_CLASS_NAME;
    DatasetPtr d = load("a,y\n1,10\n2,2\n3,cat\n4,10\n");
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(names_of(d.get()), (std::vector<std::string>{"10", "2", "cat"}));
    EXPECT_EQ(labels_of(d.get()), (std::vector<int32_t>{0, 1, 2, 0}));
}

TEST_F(CsvLabels, QuotedNamesEmptyLabelsAndOneHotColumns) {
    DatasetPtr d = load("x,y\n1,\"a, b\"\n2,\"say \"\"hi\"\"\"\n3, padded \n");
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(names_of(d.get()), (std::vector<std::string>{"a, b", "padded", "say \"hi\""}));
    std::string msg = fails("x,y\n1,cat\n2,\n", BP_ERR_CORRUPT_FILE);
    EXPECT_THAT(msg, HasSubstr("line 3, column 2"));
    EXPECT_THAT(msg, HasSubstr("empty cell"));
    opt.targets = "x,y";
    opt.header = 1;
    EXPECT_THAT(fails("x,y,z\n1,cat,2\n", BP_ERR_INVALID_ARGUMENT), HasSubstr("one target column"));
}

TEST_F(CsvLabels, SplitKeepsTheNames) {
    std::string text = "x,y\n";
    for (int i = 0; i < 40; ++i)
        text += std::to_string(i) + (i % 3 == 0 ? ",owl\n" : i % 3 == 1 ? ",ant\n" : ",bee\n");
    DatasetPtr d = load(text);
    ASSERT_NE(d, nullptr);
    bp_dataset *train = nullptr, *val = nullptr;
    ASSERT_EQ(bp_dataset_split(d.get(), 0.25, 7, &train, &val), BP_OK) << bp_last_error();
    DatasetPtr t(train), v(val);
    EXPECT_EQ(names_of(t.get()), (std::vector<std::string>{"ant", "bee", "owl"}));
    EXPECT_EQ(names_of(v.get()), names_of(t.get()));
    EXPECT_EQ(bp_dataset_classes(v.get()), 3);
    // Each row keeps its name: x = i has the name i % 3 gives.
    const float *x = bp_dataset_features_data(v.get());
    std::vector<int32_t> y = labels_of(v.get());
    const int32_t of[3] = {2, 0, 1}; // owl, ant, bee
    for (int64_t i = 0; i < bp_dataset_size(v.get()); ++i)
        EXPECT_EQ(y[(size_t)i], of[(int)x[i] % 3]) << "x = " << x[i];
}

// ---- features without targets ------------------------------------------------------------

TEST_F(CsvLabels, FeaturesOnlyCsv) {
    opt.target_kind = BP_CSV_NO_TARGETS;
    DatasetPtr d = load("a,b,c\n1,2,3\n4,5,6\n");
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(bp_dataset_target_kind(d.get()), BP_TARGET_NONE);
    EXPECT_EQ(bp_dataset_features(d.get()), 3);
    EXPECT_EQ(bp_dataset_target_width(d.get()), 0);
    EXPECT_EQ(bp_dataset_classes(d.get()), 0);
    EXPECT_EQ(bp_dataset_targets_data(d.get()), nullptr);
    EXPECT_EQ(features_of(d.get()), (std::vector<float>{1, 2, 3, 4, 5, 6}));
    d = load("0.5\n-2\n"); // one column is a feature
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(features_of(d.get()), (std::vector<float>{0.5f, -2.0f}));
    EXPECT_THAT(fails("1,2,3\n1,2,cat\n", BP_ERR_CORRUPT_FILE),
                HasSubstr("line 2, column 3: 'cat' is not a number"));
    opt.targets = "c";
    EXPECT_THAT(fails("a,b,c\n1,2,3\n", BP_ERR_INVALID_ARGUMENT), HasSubstr("targets is 'c'"));
}

void write_npy_f32(const std::string &path, const std::vector<float> &v, int rows, int cols) {
    std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" +
                         std::to_string(rows) + ", " + std::to_string(cols) + "), }";
    size_t total = 10 + header.size() + 1;
    header += std::string((64 - total % 64) % 64, ' ') + "\n";
    std::string bytes = std::string("\x93NUMPY\x01\x00", 8);
    bytes.push_back((char)(header.size() & 0xff));
    bytes.push_back((char)(header.size() >> 8));
    bytes += header;
    bytes.append((const char *)v.data(), v.size() * sizeof(float));
    write_file(path, bytes);
}

TEST(NpyFeatures, FeaturesAloneAndTargetsRefused) {
    Dir dir;
    std::string x = dir.file("x.npy");
    std::vector<float> v = {1, 2, 3, 4, 5, 6};
    write_npy_f32(x, v, 3, 2);
    bp_status st = BP_ERR_DEVICE;
    DatasetPtr d(bp_dataset_load_npy(x.c_str(), nullptr, BP_TARGET_NONE, &st));
    ASSERT_NE(d, nullptr) << bp_last_error();
    EXPECT_EQ(st, BP_OK);
    EXPECT_EQ(bp_dataset_size(d.get()), 3);
    EXPECT_EQ(bp_dataset_features(d.get()), 2);
    EXPECT_EQ(bp_dataset_target_kind(d.get()), BP_TARGET_NONE);
    EXPECT_EQ(features_of(d.get()), v);
    bp_dataset *bad = bp_dataset_load_npy(x.c_str(), x.c_str(), BP_TARGET_NONE, &st);
    EXPECT_EQ(bad, nullptr);
    EXPECT_EQ(st, BP_ERR_INVALID_ARGUMENT);
    EXPECT_THAT(bp_last_error(), HasSubstr("targets_path"));
    bad = bp_dataset_load_npy(x.c_str(), nullptr, BP_TARGET_CLASS, &st);
    EXPECT_EQ(bad, nullptr); // targets are needed for a kind that has them
    EXPECT_EQ(st, BP_ERR_INVALID_ARGUMENT);
}

TEST(DataWithoutTargets, FromMemoryScalingSplitAndLoaders) {
    const float x[6] = {1, 2, 3, 4, 5, 7};
    bp_status st = BP_ERR_DEVICE;
    DatasetPtr d(bp_dataset_from_memory(3, 2, x, BP_TARGET_NONE, 0, nullptr, &st));
    ASSERT_NE(d, nullptr) << bp_last_error();
    EXPECT_EQ(bp_dataset_target_width(d.get()), 0);
    bp_dataset *bad = bp_dataset_from_memory(3, 2, x, BP_TARGET_NONE, 1, nullptr, &st);
    EXPECT_EQ(bad, nullptr);
    EXPECT_EQ(st, BP_ERR_INVALID_ARGUMENT);
    EXPECT_THAT(bp_last_error(), HasSubstr("0 without targets"));
    float offset[2], scale[2];
    ASSERT_EQ(bp_dataset_fit_scaling(d.get(), BP_SCALE_MINMAX, offset, scale), BP_OK);
    ASSERT_EQ(bp_dataset_apply_scaling(d.get(), offset, scale), BP_OK);
    EXPECT_EQ(features_of(d.get()), (std::vector<float>{0, 0, 0.5f, 0.4f, 1, 1}));
    bp_dataset *train = nullptr, *val = nullptr;
    ASSERT_EQ(bp_dataset_split(d.get(), 0.34, 1, &train, &val), BP_OK) << bp_last_error();
    EXPECT_EQ(bp_dataset_size(train) + bp_dataset_size(val), 3);
    EXPECT_EQ(bp_dataset_target_kind(val), BP_TARGET_NONE);
    bp_dataset_free(train);
    bp_dataset_free(val);
    bp_device *dev = bp_device_open("cpu", nullptr);
    ASSERT_NE(dev, nullptr);
    bp_loader *L = bp_loader_create(d.get(), dev, 2, 0, 1, &st);
    EXPECT_EQ(L, nullptr);
    EXPECT_EQ(st, BP_ERR_INVALID_ARGUMENT);
    EXPECT_THAT(bp_last_error(), HasSubstr("no targets"));
    bp_loader_free(L);
    bp_device_close(dev);
}

} // namespace
