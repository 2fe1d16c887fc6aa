// llm.c token shards: written here with the header format (256 int32: magic 20240520,
// version 1, count; then uint16 tokens), read back in sorted order, windowed like
// text, and every bad shard named with the file and what is wrong.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <vector>

#include "kernels/errors.h"
#include "runtime/dataset.h"
#include "runtime/text_dataset.h"
#include "runtime/token_shards.h"

namespace dtrain {
namespace {

namespace fs = std::filesystem;

std::vector<uint16_t> random_tokens(size_t n, uint32_t seed, uint16_t below = 50257) {
  std::mt19937 gen(seed);
  std::vector<uint16_t> out(n);
  for (auto& t : out) t = static_cast<uint16_t>(gen() % below);
  return out;
}

struct ShardHeader {
  int32_t magic = 20240520;
  int32_t version = 1;
  int64_t count = -1;  // -1: the number of tokens written
};

class TokenShardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("dtrain_shards_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    config_.name = "tokens";
  }
  // The layout of llm.c's write_datafile, built byte by byte (little-endian).
  std::string write_shard(const std::string& name, const std::vector<uint16_t>& tokens, ShardHeader h = {},
                          size_t trailing = 0) {
    std::vector<uint8_t> bytes(1024, 0);
    const auto put32 = [&](size_t at, int64_t v) {
      for (int k = 0; k < 4; ++k) bytes[at + k] = static_cast<uint8_t>(static_cast<uint32_t>(v) >> (8 * k));
    };
    put32(0, h.magic);
    put32(4, h.version);
    put32(8, h.count < 0 ? static_cast<int64_t>(tokens.size()) : h.count);
    for (uint16_t t : tokens) {
      bytes.push_back(static_cast<uint8_t>(t & 0xff));
      bytes.push_back(static_cast<uint8_t>(t >> 8));
    }
    bytes.insert(bytes.end(), trailing, 0x5a);
    const std::string p = (dir_ / name).string();
    std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                             static_cast<std::streamsize>(bytes.size()));
    return p;
  }
  std::string write_raw(const std::string& name, size_t n) {
    const std::string p = (dir_ / name).string();
    std::ofstream(p, std::ios::binary) << std::string(n, 'x');
    return p;
  }
  std::string error_of(const std::string& path, int64_t vocab = 50257) {
    try {
      read_token_shards(path, "data.train_files", vocab);
    } catch (const DataError& e) {
      return e.what();
    }
    ADD_FAILURE() << "no DataError for " << path;
    return "";
  }
  DataSplits load(const std::string& train, const std::string& val, int64_t seq_len, int64_t vocab = 0) {
    config_.train_files = train;
    config_.val_files = val;
    model_.seq_len = seq_len;
    model_.vocab = vocab;
    return load_data(config_, model_, 3);
  }
  std::string load_error(const std::string& train, const std::string& val, int64_t seq_len, int64_t vocab = 0) {
    try {
      load(train, val, seq_len, vocab);
    } catch (const DataError& e) {
      return e.what();
    }
    ADD_FAILURE() << "no DataError";
    return "";
  }
  fs::path dir_;
  DataConfig config_;
  ModelSpec model_;
};

TEST_F(TokenShardTest, ShardsAreReadBackConcatenatedInSortedOrder) {
  const auto a = random_tokens(300, 1), b = random_tokens(17, 2), c = random_tokens(450, 3);
  write_shard("train_002.bin", c);
  write_shard("train_000.bin", a);
  write_shard("train_001.bin", b);
  std::vector<uint16_t> expected = a;
  expected.insert(expected.end(), b.begin(), b.end());
  expected.insert(expected.end(), c.begin(), c.end());
  EXPECT_EQ(read_token_shards((dir_ / "train_*.bin").string(), "data.train_files", 50257), expected);
  EXPECT_EQ(read_token_shards(dir_.string(), "data.train_files", 50257), expected);  // a folder
  EXPECT_EQ(read_token_shards((dir_ / "train_001.bin").string(), "data.train_files", 50257), b);
}

TEST_F(TokenShardTest, TrainAndValidationWindowsAreTheShardTokens) {
  const int64_t T = 32;
  const auto train0 = random_tokens(1000, 4), train1 = random_tokens(700, 5), val = random_tokens(333, 6);
  write_shard("t_0.bin", train0);
  write_shard("t_1.bin", train1);
  write_shard("v_0.bin", val);
  std::vector<uint16_t> train = train0;
  train.insert(train.end(), train1.begin(), train1.end());
  const DataSplits s = load((dir_ / "t_*.bin").string(), (dir_ / "v_*.bin").string(), T);
  EXPECT_EQ(s.train->size(), 1700 / T - 1);
  EXPECT_EQ(s.test->size(), (333 - 1) / T);
  EXPECT_EQ(s.train->num_classes(), 50257);  // GPT-2's, model.vocab not given
  EXPECT_FALSE(s.train->tokens_are_bytes());
  EXPECT_EQ(s.train->layout().input.dims(), (std::vector<int64_t>{T}));
  EXPECT_EQ(s.train->layout().input_type, ElementType::kInt32);
  const auto& td = dynamic_cast<const TokenStreamDataset<uint16_t>&>(*s.train);
  for (int64_t epoch : {0, 1, 2}) {
    const int64_t n = s.train->size();
    std::vector<int64_t> idx(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) idx[static_cast<size_t>(i)] = n - 1 - i;  // any order
    std::vector<int32_t> x(static_cast<size_t>(n * T)), y(x.size());
    s.train->gather(epoch, idx, x.data(), y.data());
    const int64_t offset = td.window_start(epoch, 0);
    EXPECT_GE(offset, 0);
    EXPECT_LT(offset, T);
    for (int64_t k = 0; k < n; ++k) {
      const int64_t start = offset + idx[static_cast<size_t>(k)] * T;
      ASSERT_LE(start + T + 1, 1700);
      for (int64_t j = 0; j < T; ++j) {
        EXPECT_EQ(x[static_cast<size_t>(k * T + j)], train[static_cast<size_t>(start + j)]);
        EXPECT_EQ(y[static_cast<size_t>(k * T + j)], train[static_cast<size_t>(start + j + 1)]);
      }
    }
  }
  std::vector<int64_t> vi = {0, s.test->size() - 1};
  std::vector<int32_t> x(2 * T), y(2 * T);
  s.test->gather(9, vi, x.data(), y.data());
  for (int64_t j = 0; j < T; ++j) {
    EXPECT_EQ(x[static_cast<size_t>(j)], val[static_cast<size_t>(j)]);
    EXPECT_EQ(x[static_cast<size_t>(T + j)], val[static_cast<size_t>(vi[1] * T + j)]);
    EXPECT_EQ(y[static_cast<size_t>(T + j)], val[static_cast<size_t>(vi[1] * T + j + 1)]);
  }
}

TEST_F(TokenShardTest, VocabIsModelVocabWhenGiven) {
  const auto small = random_tokens(500, 7, 100);
  const std::string t = write_shard("t.bin", small), v = write_shard("v.bin", small);
  EXPECT_EQ(load(t, v, 8, 100).train->num_classes(), 100);
  EXPECT_EQ(load(t, v, 8, 100).test->num_classes(), 100);
  // A token past GPT-2's vocabulary loads when model.vocab covers it.
  auto big = small;
  big[10] = 60000;
  const std::string tb = write_shard("tb.bin", big);
  EXPECT_EQ(load(tb, v, 8, 65536).train->num_classes(), 65536);
}

TEST_F(TokenShardTest, TokenAtOrPastVocabNamesFilePositionAndValue) {
  auto tokens = random_tokens(200, 8, 1000);
  tokens[77] = 1000;
  const std::string p = write_shard("bad.bin", tokens);
  const std::string m = error_of(p, 1000);
  EXPECT_NE(m.find(p), std::string::npos) << m;
  EXPECT_NE(m.find("token 77"), std::string::npos) << m;
  EXPECT_NE(m.find("value 1000"), std::string::npos) << m;
  EXPECT_NE(m.find("vocabulary size 1000"), std::string::npos) << m;
  // The default vocabulary (GPT-2's 50257) is checked too.
  tokens[77] = 50257;
  const std::string q = write_shard("bad2.bin", tokens);
  const std::string v = write_shard("v.bin", random_tokens(200, 9));
  const std::string n = load_error(q, v, 8);
  EXPECT_NE(n.find(q), std::string::npos) << n;
  EXPECT_NE(n.find("value 50257"), std::string::npos) << n;
}

TEST_F(TokenShardTest, WrongMagicIsNamed) {
  const std::string p = write_shard("m.bin", random_tokens(10, 1), ShardHeader{20240521, 1, -1});
  const std::string m = error_of(p);
  EXPECT_NE(m.find(p), std::string::npos) << m;
  EXPECT_NE(m.find("wrong magic number 20240521"), std::string::npos) << m;
}

TEST_F(TokenShardTest, WrongVersionIsNamed) {
  const std::string p = write_shard("v.bin", random_tokens(10, 1), ShardHeader{20240520, 2, -1});
  const std::string m = error_of(p);
  EXPECT_NE(m.find(p), std::string::npos) << m;
  EXPECT_NE(m.find("version 2"), std::string::npos) << m;
}

TEST_F(TokenShardTest, CountPastTheFileIsNamedTruncated) {
  const std::string p = write_shard("t.bin", random_tokens(10, 1), ShardHeader{20240520, 1, 11});
  const std::string m = error_of(p);
  EXPECT_NE(m.find(p), std::string::npos) << m;
  EXPECT_NE(m.find("says 11 tokens"), std::string::npos) << m;
  EXPECT_NE(m.find("truncated"), std::string::npos) << m;
}

TEST_F(TokenShardTest, TrailingBytesAfterTheCountAreNamed) {
  for (size_t extra : {size_t{1}, size_t{6}}) {
    const std::string p = write_shard("x" + std::to_string(extra) + ".bin", random_tokens(10, 1), {}, extra);
    const std::string m = error_of(p);
    EXPECT_NE(m.find(p), std::string::npos) << m;
    EXPECT_NE(m.find("has " + std::to_string(extra) + " bytes after the 10 tokens"), std::string::npos) << m;
  }
}

TEST_F(TokenShardTest, FilesShorterThanTheHeaderAreNamed) {
  const std::string zero = write_raw("zero.bin", 0);
  std::string m = error_of(zero);
  EXPECT_NE(m.find(zero), std::string::npos) << m;
  EXPECT_NE(m.find("empty (0 bytes)"), std::string::npos) << m;
  const std::string tiny = write_raw("tiny.bin", 100);
  m = error_of(tiny);
  EXPECT_NE(m.find(tiny), std::string::npos) << m;
  EXPECT_NE(m.find("shorter than the 1024-byte header"), std::string::npos) << m;
}

TEST_F(TokenShardTest, NoMatchingShardsAreNamed) {
  const std::string p = (dir_ / "fineweb_train_*.bin").string();
  const std::string m = error_of(p);
  EXPECT_NE(m.find(p), std::string::npos) << m;
  EXPECT_NE(m.find("data.train_files"), std::string::npos) << m;
  EXPECT_NE(m.find("no files match"), std::string::npos) << m;
}

TEST_F(TokenShardTest, ShardsWithoutTokensAreAnEmptyStream) {
  write_shard("e_0.bin", {});
  write_shard("e_1.bin", {});
  const std::string p = (dir_ / "e_*.bin").string();
  const std::string m = error_of(p);
  EXPECT_NE(m.find(p), std::string::npos) << m;
  EXPECT_NE(m.find("hold no tokens"), std::string::npos) << m;
}

TEST_F(TokenShardTest, StreamsTooShortForSeqLenAreNamed) {
  const std::string t = write_shard("t.bin", random_tokens(100, 1));
  const std::string v = write_shard("v.bin", random_tokens(20, 2));
  // Train: 100 tokens, seq_len 64 needs 128.
  std::string m = load_error(t, t, 64);
  EXPECT_NE(m.find(t), std::string::npos) << m;
  EXPECT_NE(m.find("data.train_files"), std::string::npos) << m;
  EXPECT_NE(m.find("has 100 tokens"), std::string::npos) << m;
  EXPECT_NE(m.find("at least 128"), std::string::npos) << m;
  // Validation: 20 tokens, seq_len 20 needs 21.
  m = load_error(t, v, 20);
  EXPECT_NE(m.find(v), std::string::npos) << m;
  EXPECT_NE(m.find("data.val_files"), std::string::npos) << m;
  EXPECT_NE(m.find("has 20 tokens"), std::string::npos) << m;
  EXPECT_NE(m.find("at least 21"), std::string::npos) << m;
}

}  // namespace
}  // namespace dtrain
