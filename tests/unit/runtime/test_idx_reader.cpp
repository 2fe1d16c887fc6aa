// The IDX reader on good, truncated and corrupt files, plain and gzip-compressed.
#include <gtest/gtest.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <vector>

#include "kernels/errors.h"
#include "runtime/dataset.h"
#include "runtime/idx_reader.h"
#include "runtime/image_dataset.h"

namespace dtrain {
namespace {

namespace fs = std::filesystem;

std::vector<uint8_t> idx_bytes(const std::vector<uint32_t>& dims, uint8_t type = 0x08) {
  std::vector<uint8_t> out = {0, 0, type, static_cast<uint8_t>(dims.size())};
  size_t total = 1;
  for (uint32_t d : dims) {
    for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<uint8_t>(d >> s));
    total *= d;
  }
  for (size_t i = 0; i < total; ++i) out.push_back(static_cast<uint8_t>(i * 7 % 10));
  return out;
}

class IdxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("dtrain_idx_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  std::string plain(const std::string& name, const std::vector<uint8_t>& bytes) {
    const std::string p = (dir_ / name).string();
    std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    return p;
  }
  std::string gz(const std::string& name, const std::vector<uint8_t>& bytes) {
    const std::string p = (dir_ / name).string();
    gzFile f = gzopen(p.c_str(), "wb");
    gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
    gzclose(f);
    return p;
  }
  std::string error_of(const std::string& path, int rank) {
    try {
      read_idx(path, rank);
    } catch (const DataError& e) {
      return e.what();
    }
    ADD_FAILURE() << "no DataError for " << path;
    return "";
  }
  fs::path dir_;
};

TEST_F(IdxTest, ReadsPlainAndGzipFiles) {
  const auto bytes = idx_bytes({3, 2, 5});
  for (const std::string& p : {plain("a.idx", bytes), gz("a.idx.gz", bytes)}) {
    const IdxArray a = read_idx(p, 3);
    EXPECT_EQ(a.dims, (std::vector<int64_t>{3, 2, 5}));
    ASSERT_EQ(a.data.size(), 30u);
    for (size_t i = 0; i < 30; ++i) EXPECT_EQ(a.data[i], i * 7 % 10);
  }
}

TEST_F(IdxTest, TruncatedFilesAreNamed) {
  auto bytes = idx_bytes({4, 28, 28});
  bytes.resize(bytes.size() - 100);
  for (const std::string& p : {plain("t.idx", bytes), gz("t.idx.gz", bytes)}) {
    const std::string m = error_of(p, 3);
    EXPECT_NE(m.find(p), std::string::npos) << m;
    EXPECT_NE(m.find("truncated"), std::string::npos) << m;
  }
  const std::string header_only = plain("h.idx", {0, 0, 8});
  EXPECT_NE(error_of(header_only, 1).find("truncated"), std::string::npos);
}

TEST_F(IdxTest, AHugeAnnouncedSizeInASmallFileIsTruncatedNotAnAllocation) {
  // 4 GiB announced (65536 x 65536), 8 bytes present: a regression found by fuzzing,
  // which once allocated the announced size before reading.
  const std::vector<uint8_t> bytes = {0, 0, 8, 2, 0, 1, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8};
  for (const std::string& p : {plain("huge.idx", bytes), gz("huge.idx.gz", bytes)}) {
    const std::string m = error_of(p, 2);
    EXPECT_NE(m.find("truncated: the data needs 4294967296 bytes but the file ends after 8"), std::string::npos) << m;
  }
}

TEST_F(IdxTest, WrongMagicTypeRankAndZeroDimension) {
  auto bytes = idx_bytes({10});
  bytes[0] = 0x1f;
  EXPECT_NE(error_of(plain("m.idx", bytes), 1).find("not an IDX file"), std::string::npos);
  EXPECT_NE(error_of(plain("ty.idx", idx_bytes({10}, 0x0d)), 1).find("unsupported IDX data type"), std::string::npos);
  EXPECT_NE(error_of(plain("r.idx", idx_bytes({10})), 3).find("has 1 dimensions, expected 3"), std::string::npos);
  EXPECT_NE(error_of(plain("z.idx", idx_bytes({0, 4}) ), 2).find("dimension 0 is 0"), std::string::npos);
}

TEST_F(IdxTest, TrailingBytesAreCorruption) {
  auto bytes = idx_bytes({5});
  bytes.push_back(1);
  EXPECT_NE(error_of(plain("x.idx", bytes), 1).find("bytes after"), std::string::npos);
}

TEST_F(IdxTest, CorruptCompressedDataIsNamed) {
  const std::string p = gz("c.idx.gz", idx_bytes({64, 28, 28}));
  std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(40);
  const char junk[16] = {'\x55', '\x12', '\x7f', '\x00', '\x33', '\x44', '\x01', '\x02', '\x03', '\x04', '\x05', '\x06', '\x07', '\x08', '\x09', '\x0a'};
  f.write(junk, sizeof(junk));
  f.close();
  const std::string m = error_of(p, 3);
  EXPECT_NE(m.find(p), std::string::npos) << m;
  EXPECT_TRUE(m.find("corrupt") != std::string::npos || m.find("truncated") != std::string::npos) << m;
}

TEST_F(IdxTest, MissingFileSaysWhatToInstall) {
  const std::string m = error_of((dir_ / "nope.idx.gz").string(), 1);
  EXPECT_NE(m.find("cannot open"), std::string::npos) << m;
  EXPECT_NE(m.find("dataset-fashion-mnist"), std::string::npos) << m;
}

TEST_F(IdxTest, FashionMnistLoaderChecksCountsAndLabels) {
  // 3 images but 4 labels: the files do not belong together.
  plain("train-images-idx3-ubyte", idx_bytes({3, 28, 28}));
  auto labels = idx_bytes({4});
  plain("train-labels-idx1-ubyte", labels);
  try {
    load_fashion_mnist(dir_.string(), true);
    FAIL() << "count mismatch not detected";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("holds 3 images but"), std::string::npos) << e.what();
  }
  labels = idx_bytes({3});
  labels.back() = 12;  // not a class
  plain("train-labels-idx1-ubyte", labels);
  EXPECT_THROW(load_fashion_mnist(dir_.string(), true), DataError);
  labels.back() = 9;
  plain("train-labels-idx1-ubyte", labels);
  auto data = load_fashion_mnist(dir_.string(), true);
  EXPECT_EQ(data->size(), 3);
  std::vector<float> image(784);
  int32_t label = -1;
  const int64_t idx = 2;
  data->gather(0, std::span<const int64_t>(&idx, 1), image.data(), &label);
  EXPECT_EQ(label, 9);
  // Pixel 0 of image 2 is byte (2*784 + 0)*7 % 10 of the body: normalised by formula.
  const float byte = static_cast<float>((2 * 784) * 7 % 10);
  EXPECT_NEAR(image[0], (byte / 255.0f - 0.2860f) / 0.3530f, 1e-6f);
}

// A batch of rows from all over the file, one of them twice, in no order: every pixel
// normalised by the formula and every label the row's own.
TEST_F(IdxTest, FashionMnistGatherNormalisesEveryPixelOfAScatteredBatch) {
  constexpr int64_t kImages = 5, kPixels = 28 * 28, kHeader = 16;  // magic + 3 dimensions
  auto pixel = [](int64_t image, int64_t j) { return static_cast<uint8_t>((image * 31 + j * 13) % 256); };
  auto images = idx_bytes({kImages, 28, 28});
  for (int64_t i = 0; i < kImages; ++i) {
    for (int64_t j = 0; j < kPixels; ++j) images[static_cast<size_t>(kHeader + i * kPixels + j)] = pixel(i, j);
  }
  plain("train-images-idx3-ubyte", images);
  plain("train-labels-idx1-ubyte", idx_bytes({kImages}));  // label of row i: i * 7 % 10
  auto data = load_fashion_mnist(dir_.string(), true);
  const std::vector<int64_t> rows = {4, 0, 3, 3, 1};
  std::vector<float> batch(rows.size() * kPixels, -99.0f);
  std::vector<int32_t> labels(rows.size(), -1);
  data->gather(0, rows, batch.data(), labels.data());
  for (size_t r = 0; r < rows.size(); ++r) {
    EXPECT_EQ(labels[r], rows[r] * 7 % 10) << "batch row " << r;
    for (int64_t j = 0; j < kPixels; ++j) {
      const float expected = (static_cast<float>(pixel(rows[r], j)) / 255.0f - 0.2860f) / 0.3530f;
      ASSERT_NEAR(batch[r * kPixels + static_cast<size_t>(j)], expected, 1e-6f) << "batch row " << r << ", pixel " << j;
    }
  }
}

TEST(FashionMnist, ShippedDatasetHasTheDocumentedShape) {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  if (!fs::exists(dir)) GTEST_SKIP() << dir << " is missing: install Debian's dataset-fashion-mnist (scripts/install-deps.sh does)";
  auto train = load_fashion_mnist(dir, true);
  auto test = load_fashion_mnist(dir, false);
  EXPECT_EQ(train->size(), 60000);
  EXPECT_EQ(test->size(), 10000);
  const SampleLayout layout = train->layout();
  EXPECT_EQ(layout.input, (Shape{1, 28, 28}));
  EXPECT_EQ(layout.input_type, ElementType::kFloat32);
  EXPECT_EQ(layout.target, Shape{});  // one label per image
  EXPECT_EQ(train->num_classes(), 10);
}

}  // namespace
}  // namespace dtrain
