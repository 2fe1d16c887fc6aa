// Text as a stream of byte tokens cut into windows (Note [Text windows]): the split
// by data.val_fraction, window contents against the file's bytes at starts found
// independently, the per-epoch offset, folder and glob concatenation, the config keys,
// and every DataError naming the file and the problem.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <vector>

#include "kernels/errors.h"
#include "runtime/config.h"
#include "runtime/dataset.h"
#include "runtime/text_dataset.h"

namespace dtrain {
namespace {

namespace fs = std::filesystem;

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<uint8_t> out(n);
  for (auto& b : out) b = static_cast<uint8_t>(gen() & 0xff);
  return out;
}

struct Window {
  std::vector<int32_t> inputs, targets;
};

// Every window of `epoch`, gathered in one call in index order.
std::vector<Window> all_windows(const Dataset& d, int64_t epoch) {
  const int64_t n = d.size();
  const int64_t T = d.layout().input.numel();
  std::vector<int64_t> idx(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) idx[static_cast<size_t>(i)] = i;
  std::vector<int32_t> x(static_cast<size_t>(n * T)), y(static_cast<size_t>(n * T));
  d.gather(epoch, idx, x.data(), y.data());
  std::vector<Window> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    out[static_cast<size_t>(i)].inputs.assign(x.begin() + i * T, x.begin() + (i + 1) * T);
    out[static_cast<size_t>(i)].targets.assign(y.begin() + i * T, y.begin() + (i + 1) * T);
  }
  return out;
}

std::vector<int32_t> slice(const std::vector<uint8_t>& s, int64_t begin, int64_t n) {
  return std::vector<int32_t>(s.begin() + begin, s.begin() + begin + n);
}

// The largest n such that n windows of T+1 tokens at o, o+T, ... fit in L tokens for
// every o in [0, T), by trying them all.
int64_t brute_train_count(int64_t L, int64_t T) {
  int64_t best = 0;
  for (int64_t n = 1; n <= L; ++n) {
    bool all = true;
    for (int64_t o = 0; o < T; ++o) all = all && (o + (n - 1) * T + T + 1 <= L);
    if (!all) break;
    best = n;
  }
  return best;
}

class TextDataTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("dtrain_text_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    config_.name = "text";
  }
  std::string write(const std::string& name, const std::vector<uint8_t>& bytes) {
    const fs::path p = dir_ / name;
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                             static_cast<std::streamsize>(bytes.size()));
    return p.string();
  }
  DataSplits load(const std::string& path, int64_t seq_len, double val_fraction = 0.1, uint64_t seed = 1) {
    config_.path = path;
    config_.val_fraction = val_fraction;
    model_.seq_len = seq_len;
    return load_data(config_, model_, seed);
  }
  std::string error_of(const std::string& path, int64_t seq_len, double val_fraction = 0.1) {
    try {
      load(path, seq_len, val_fraction);
    } catch (const DataError& e) {
      return e.what();
    }
    ADD_FAILURE() << "no DataError for " << path;
    return "";
  }
  fs::path dir_;
  DataConfig config_;
  ModelSpec model_;
};

TEST_F(TextDataTest, SplitSizesFollowValFraction) {
  const int64_t N = 1000, T = 8;
  const std::string p = write("a.txt", random_bytes(N, 1));
  for (double f : {0.1, 0.25, 1.0 / 3.0, 0.37}) {
    const DataSplits s = load(p, T, f);
    const int64_t val = static_cast<int64_t>(std::floor(N * f + 0.5));
    const auto& train = dynamic_cast<const TokenStreamDataset<uint8_t>&>(*s.train);
    const auto& test = dynamic_cast<const TokenStreamDataset<uint8_t>&>(*s.test);
    EXPECT_EQ(train.stream_tokens(), N - val) << f;
    EXPECT_EQ(test.stream_tokens(), val) << f;
    EXPECT_EQ(s.train->size(), brute_train_count(N - val, T)) << f;
    EXPECT_EQ(s.train->size(), (N - val) / T - 1) << f;  // the formula of Note [Text windows]
    // Validation: every window at 0, T, 2T, ... whose T+1 tokens fit.
    EXPECT_LE(s.test->size() * T + 1, val) << f;
    EXPECT_GT((s.test->size() + 1) * T + 1, val) << f;
  }
}

TEST_F(TextDataTest, LayoutIsTokensOfSeqLenAndVocabIsBytes) {
  const DataSplits s = load(write("a.txt", random_bytes(500, 2)), 12);
  for (const Dataset* d : {s.train.get(), s.test.get()}) {
    EXPECT_EQ(d->layout().input.dims(), (std::vector<int64_t>{12}));
    EXPECT_EQ(d->layout().target.dims(), (std::vector<int64_t>{12}));
    EXPECT_EQ(d->layout().input_type, ElementType::kInt32);
    EXPECT_EQ(d->num_classes(), 256);
    EXPECT_TRUE(d->tokens_are_bytes());
  }
}

// The start of each window is found by searching the split for its inputs (random
// bytes make the match unique), not taken from the dataset.
TEST_F(TextDataTest, TrainWindowsAreTheBytesAtAShiftedGridThatMovesEachEpoch) {
  const int64_t N = 5000, T = 16;
  const auto bytes = random_bytes(N, 3);
  const DataSplits s = load(write("a.txt", bytes), T, 0.1, 7);
  const int64_t train_len = N - 500;
  const std::vector<uint8_t> train(bytes.begin(), bytes.begin() + train_len);
  std::set<int64_t> offsets;
  for (int64_t epoch = 0; epoch < 8; ++epoch) {
    const auto windows = all_windows(*s.train, epoch);
    int64_t offset = -1;
    std::vector<int64_t> starts;
    for (size_t i = 0; i < windows.size(); ++i) {
      const Window& w = windows[i];
      std::vector<int64_t> found;
      for (int64_t at = 0; at + T <= train_len; ++at) {
        if (std::equal(w.inputs.begin(), w.inputs.end(), train.begin() + at)) found.push_back(at);
      }
      ASSERT_EQ(found.size(), 1u) << "epoch " << epoch << " window " << i;
      const int64_t start = found[0];
      if (i == 0) offset = start;
      EXPECT_EQ(start, offset + static_cast<int64_t>(i) * T) << "epoch " << epoch << " window " << i;
      ASSERT_LE(start + T + 1, train_len) << "the window runs past the train split";
      EXPECT_EQ(w.targets, slice(train, start + 1, T));
      for (int64_t j = 0; j + 1 < T; ++j) EXPECT_EQ(w.targets[j], w.inputs[j + 1]);
      starts.push_back(start);
    }
    EXPECT_GE(offset, 0);
    EXPECT_LT(offset, T);
    offsets.insert(offset);
    // The windows of an epoch do not overlap: their inputs are disjoint ranges.
    std::sort(starts.begin(), starts.end());
    for (size_t k = 1; k < starts.size(); ++k) EXPECT_GE(starts[k], starts[k - 1] + T);
    const auto& td = dynamic_cast<const TokenStreamDataset<uint8_t>&>(*s.train);
    EXPECT_EQ(td.window_start(epoch, 0), offset);
  }
  EXPECT_GT(offsets.size(), 1u) << "the grid's offset never moved in 8 epochs";
}

TEST_F(TextDataTest, ValidationWindowsTileTheTailFromZeroInEveryEpoch) {
  const int64_t N = 3000, T = 10;
  const auto bytes = random_bytes(N, 4);
  const DataSplits s = load(write("a.txt", bytes), T, 0.2);
  const int64_t begin = N - 600;
  const std::vector<uint8_t> val(bytes.begin() + begin, bytes.end());
  const auto first = all_windows(*s.test, 0);
  ASSERT_EQ(static_cast<int64_t>(first.size()), (600 - 1) / T);
  for (size_t i = 0; i < first.size(); ++i) {
    EXPECT_EQ(first[i].inputs, slice(val, static_cast<int64_t>(i) * T, T));
    EXPECT_EQ(first[i].targets, slice(val, static_cast<int64_t>(i) * T + 1, T));
  }
  for (int64_t epoch : {1, 5, 17}) {
    const auto later = all_windows(*s.test, epoch);
    for (size_t i = 0; i < first.size(); ++i) EXPECT_EQ(later[i].inputs, first[i].inputs);
  }
}

// DESIGN contract 3: what index i of epoch e holds depends on (seed, epoch) only, not
// on how the indices are grouped into gathers, the load, or the stream's length.
TEST_F(TextDataTest, WindowsDependOnSeedAndEpochOnly) {
  const int64_t T = 8;
  const auto bytes = random_bytes(4000, 5);
  const std::string p = write("a.txt", bytes);
  const DataSplits a = load(p, T, 0.1, 11);
  const DataSplits b = load(p, T, 0.1, 11);
  const DataSplits shorter = load(p, T, 0.5, 11);
  const DataSplits other_seed = load(p, T, 0.1, 12);
  bool seed_matters = false;
  const auto& ta = dynamic_cast<const TokenStreamDataset<uint8_t>&>(*a.train);
  const auto& ts = dynamic_cast<const TokenStreamDataset<uint8_t>&>(*shorter.train);
  const auto& to = dynamic_cast<const TokenStreamDataset<uint8_t>&>(*other_seed.train);
  for (int64_t epoch = 0; epoch < 6; ++epoch) {
    const auto wa = all_windows(*a.train, epoch);
    const auto wb = all_windows(*b.train, epoch);
    // One index at a time, in reverse.
    for (int64_t i = a.train->size() - 1; i >= 0; --i) {
      std::vector<int32_t> x(T), y(T);
      const int64_t idx[] = {i};
      a.train->gather(epoch, idx, x.data(), y.data());
      EXPECT_EQ(x, wa[static_cast<size_t>(i)].inputs);
      EXPECT_EQ(y, wa[static_cast<size_t>(i)].targets);
      EXPECT_EQ(wb[static_cast<size_t>(i)].inputs, wa[static_cast<size_t>(i)].inputs);
    }
    EXPECT_EQ(ts.window_start(epoch, 3), ta.window_start(epoch, 3));
    seed_matters = seed_matters || to.window_start(epoch, 0) != ta.window_start(epoch, 0);
  }
  EXPECT_TRUE(seed_matters) << "the offsets of seeds 11 and 12 agree in 6 epochs";
}

TEST_F(TextDataTest, FolderAndGlobConcatenateInSortedPathOrder) {
  const auto a = random_bytes(37, 6), b = random_bytes(50, 7), c = random_bytes(23, 8), d = random_bytes(40, 9);
  write("set/b.txt", b);
  write("set/a.txt", a);
  write("set/c.dat", c);
  write("set/sub/d.txt", d);  // a subfolder is not read
  const auto check = [&](const std::string& path, const std::vector<uint8_t>& expected) {
    const int64_t T = 4;
    const DataSplits s = load(path, T, 0.25);
    const int64_t N = static_cast<int64_t>(expected.size());
    const int64_t val = static_cast<int64_t>(std::floor(N * 0.25 + 0.5));
    const auto& train = dynamic_cast<const TokenStreamDataset<uint8_t>&>(*s.train);
    ASSERT_EQ(train.stream_tokens(), N - val) << path;
    for (int64_t epoch = 0; epoch < 4; ++epoch) {
      const auto w = all_windows(*s.train, epoch);
      for (size_t i = 0; i < w.size(); ++i) {
        const int64_t start = train.window_start(epoch, static_cast<int64_t>(i));
        EXPECT_EQ(w[i].inputs, slice(expected, start, T)) << path;
        EXPECT_EQ(w[i].targets, slice(expected, start + 1, T)) << path;
      }
    }
    const auto v = all_windows(*s.test, 0);
    for (size_t i = 0; i < v.size(); ++i) {
      EXPECT_EQ(v[i].inputs, slice(expected, N - val + static_cast<int64_t>(i) * T, T)) << path;
    }
  };
  std::vector<uint8_t> folder = a;
  folder.insert(folder.end(), b.begin(), b.end());
  std::vector<uint8_t> glob = folder;
  folder.insert(folder.end(), c.begin(), c.end());
  check((dir_ / "set").string(), folder);
  check((dir_ / "set" / "*.txt").string(), glob);
}

TEST_F(TextDataTest, MissingPathIsNamed) {
  const std::string p = (dir_ / "nothing.txt").string();
  const std::string m = error_of(p, 8);
  EXPECT_NE(m.find(p), std::string::npos) << m;
  EXPECT_NE(m.find("does not exist"), std::string::npos) << m;
}

TEST_F(TextDataTest, GlobThatMatchesNothingIsNamed) {
  write("a.txt", random_bytes(100, 1));
  const std::string p = (dir_ / "*.md").string();
  const std::string m = error_of(p, 8);
  EXPECT_NE(m.find(p), std::string::npos) << m;
  EXPECT_NE(m.find("no files match"), std::string::npos) << m;
}

TEST_F(TextDataTest, EmptyFolderIsNamed) {
  fs::create_directories(dir_ / "empty");
  const std::string p = (dir_ / "empty").string();
  const std::string m = error_of(p, 8);
  EXPECT_NE(m.find(p), std::string::npos) << m;
  EXPECT_NE(m.find("holds no files"), std::string::npos) << m;
}

TEST_F(TextDataTest, EmptyFileIsNamed) {
  const std::string p = write("zero.txt", {});
  const std::string m = error_of(p, 8);
  EXPECT_NE(m.find(p), std::string::npos) << m;
  EXPECT_NE(m.find("empty (0 bytes)"), std::string::npos) << m;
}

TEST_F(TextDataTest, TrainSplitShorterThanTwoSeqLensIsNamed) {
  // 40 bytes at val_fraction 0.5: the train split has 20 tokens; seq_len 16 needs 32.
  const std::string p = write("short.txt", random_bytes(40, 1));
  const std::string m = error_of(p, 16, 0.5);
  EXPECT_NE(m.find(p), std::string::npos) << m;
  EXPECT_NE(m.find("train split"), std::string::npos) << m;
  EXPECT_NE(m.find("has 20 tokens"), std::string::npos) << m;
  EXPECT_NE(m.find("model.seq_len = 16"), std::string::npos) << m;
  EXPECT_NE(m.find("at least 32"), std::string::npos) << m;
}

TEST_F(TextDataTest, ValidationSplitShorterThanOneWindowIsNamed) {
  // 200 bytes at val_fraction 0.05: the validation split has 10 tokens; seq_len 16 needs 17.
  const std::string p = write("short.txt", random_bytes(200, 1));
  const std::string m = error_of(p, 16, 0.05);
  EXPECT_NE(m.find(p), std::string::npos) << m;
  EXPECT_NE(m.find("validation split"), std::string::npos) << m;
  EXPECT_NE(m.find("has 10 tokens"), std::string::npos) << m;
  EXPECT_NE(m.find("at least 17"), std::string::npos) << m;
}

TEST_F(TextDataTest, ByteAtOrPastASmallerVocabIsNamedWithItsPosition) {
  // The bad byte is in the folder's second file, at position 123 of that file.
  std::vector<uint8_t> bytes(300, 'a');
  bytes[123] = 200;
  const std::string clean = write("mixed/a.txt", std::vector<uint8_t>(300, 'b'));
  const std::string bad = write("mixed/b.txt", bytes);
  model_.vocab = 128;
  const std::string m = error_of((dir_ / "mixed").string(), 8);
  EXPECT_NE(m.find(bad), std::string::npos) << m;
  EXPECT_NE(m.find("byte 123"), std::string::npos) << m;
  EXPECT_NE(m.find("value 200"), std::string::npos) << m;
  EXPECT_NE(m.find("model.vocab = 128"), std::string::npos) << m;
  const DataSplits ok = load(clean, 8);
  EXPECT_EQ(ok.train->num_classes(), 128);
}

TEST(TextWindowsTest, OffsetIsInRangeForEverySeqLen) {
  for (int64_t T : {1, 2, 7, 64, 1024}) {
    for (int64_t e = 0; e < 50; ++e) {
      const int64_t o = window_offset(3, e, T);
      EXPECT_GE(o, 0);
      EXPECT_LT(o, T);
    }
  }
}

TEST(TextConfigTest, DataKeysOfTheTokenStreamsAreReadAndWritten) {
  const auto dir = fs::temp_directory_path() / "dtrain_text_config";
  fs::create_directories(dir);
  const std::string file = (dir / "c.yaml").string();
  std::ofstream(file) << "data:\n  name: tokens\n  train_files: d/train_*.bin\n  val_files: d/val_*.bin\n"
                         "  val_fraction: 0.2\n";
  const Config c = load_config(file, {});
  EXPECT_EQ(c.data.name, "tokens");
  EXPECT_EQ(c.data.train_files, "d/train_*.bin");
  EXPECT_EQ(c.data.val_files, "d/val_*.bin");
  EXPECT_DOUBLE_EQ(c.data.val_fraction, 0.2);
  const std::string again = (dir / "again.yaml").string();
  std::ofstream(again) << config_to_yaml(c);
  const Config d = load_config(again, {});
  EXPECT_EQ(d.data.train_files, c.data.train_files);
  EXPECT_EQ(d.data.val_files, c.data.val_files);
  EXPECT_DOUBLE_EQ(d.data.val_fraction, 0.2);
  EXPECT_EQ(load_config(file, {"data.name=text", "data.path=corpus.txt"}).data.name, "text");
  // Without a path, text would read data.path's default, the Fashion-MNIST folder: refused.
  EXPECT_THROW(load_config(file, {"data.name=text"}), ConfigError);
}

TEST(TextConfigTest, BadDataKeysAreNamed) {
  const auto dir = fs::temp_directory_path() / "dtrain_text_config";
  fs::create_directories(dir);
  const std::string file = (dir / "bad.yaml").string();
  std::ofstream(file) << "data:\n  name: text\n  path: a.txt\n";
  const auto error_of = [&](const std::vector<std::string>& sets) -> std::string {
    try {
      load_config(file, sets);
    } catch (const ConfigError& e) {
      return e.what();
    }
    ADD_FAILURE() << "no ConfigError";
    return "";
  };
  for (const char* v : {"0", "1", "1.5", "-0.1"}) {
    const std::string m = error_of({std::string("data.val_fraction=") + v});
    EXPECT_NE(m.find("data.val_fraction"), std::string::npos) << m;
    EXPECT_NE(m.find("(0, 1)"), std::string::npos) << m;
  }
  std::string m = error_of({"data.name=tokens", "data.val_files=v.bin"});
  EXPECT_NE(m.find("data.train_files"), std::string::npos) << m;
  m = error_of({"data.name=tokens", "data.train_files=t.bin"});
  EXPECT_NE(m.find("data.val_files"), std::string::npos) << m;
  m = error_of({"data.name=words"});
  EXPECT_NE(m.find("text, tokens"), std::string::npos) << m;
}

}  // namespace
}  // namespace dtrain
