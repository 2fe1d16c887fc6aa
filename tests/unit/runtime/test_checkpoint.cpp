// The checkpoint file (Note [Checkpoint format]): a round trip keeps every field, and
// every kind of damage is detected and named; --resume auto falls back to the newest
// checkpoint that reads; a write that fails leaves the previous checkpoints intact.
#include <gtest/gtest.h>

#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "kernels/errors.h"
#include "runtime/checkpoint.h"
#include "runtime/crc32c.h"

namespace dtrain {
namespace {

namespace fs = std::filesystem;

TEST(Crc32c, MatchesTheStandardCheckValue) {
  // The check value of CRC-32C (RFC 3720, appendix B.4) for "123456789".
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(crc32c("", 0), 0u);
  // Continuing over two halves equals one pass.
  EXPECT_EQ(crc32c("56789", 5, crc32c("1234", 4)), 0xE3069283u);
}

CheckpointState sample_state(int64_t step) {
  CheckpointState s;
  s.step = step;
  s.samples = step * 64;
  s.seed = 7;
  s.compat = {"model.name: mlp", "global batch: 64"};
  s.config_hash = 0x1234;
  s.config_yaml = "model:\n  name: mlp\n";
  s.plan.micro_batch = {24, 8};
  s.plan.accumulation_steps = 2;
  s.plan.global_batch = 64;
  s.steps_per_epoch = 100;
  s.epoch = step / 100;
  s.batch_in_epoch = step % 100;
  for (int i = 0; i < 1000; ++i) s.params.push_back(0.001f * static_cast<float>(i) - 0.3f);
  // Ramps, unlike each other and the parameters', so a buffer read reversed, shifted,
  // swapped with the other or cut short does not round-trip.
  s.optimizer_state = {std::vector<float>(1000), std::vector<float>(1000)};
  for (int i = 0; i < 1000; ++i) {
    s.optimizer_state[0][static_cast<size_t>(i)] = 0.003f * static_cast<float>(i) + 0.5f;
    s.optimizer_state[1][static_cast<size_t>(i)] = -0.002f * static_cast<float>(i) - 0.25f;
  }
  s.optimizer_steps = step;
  s.noise = {1.5, 30.0, 0.99};
  s.noise_steps = step;
  return s;
}

class CheckpointFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::temp_directory_path() / ("dtrain_ckpt_" + std::to_string(::getpid()))).string();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::vector<char> bytes_of(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::vector<char>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }
  void write_bytes(const std::string& path, const std::vector<char>& bytes) {
    std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  // The DataError message of reading `path`, or "" when it reads.
  std::string error_reading(const std::string& path) {
    try {
      read_checkpoint(path);
      return "";
    } catch (const DataError& e) {
      return e.what();
    }
  }

  std::string dir_;
};

TEST_F(CheckpointFiles, RoundTripKeepsEveryField) {
  const CheckpointState s = sample_state(250);
  const std::string path = checkpoint_path(dir_, 250);
  write_checkpoint(path, s);
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  const CheckpointState r = read_checkpoint(path);
  EXPECT_EQ(r.step, 250);
  EXPECT_EQ(r.samples, 250 * 64);
  EXPECT_EQ(r.seed, 7u);
  EXPECT_EQ(r.compat, s.compat);
  EXPECT_EQ(r.config_hash, 0x1234u);
  EXPECT_EQ(r.config_yaml, s.config_yaml);
  EXPECT_EQ(r.plan.micro_batch, s.plan.micro_batch);
  EXPECT_EQ(r.plan.accumulation_steps, 2);
  EXPECT_EQ(r.plan.global_batch, 64);
  EXPECT_EQ(r.epoch, 2);
  EXPECT_EQ(r.batch_in_epoch, 50);
  EXPECT_EQ(r.steps_per_epoch, 100);
  EXPECT_EQ(r.params, s.params);
  EXPECT_EQ(r.optimizer_state, s.optimizer_state);
  EXPECT_EQ(r.optimizer_steps, 250);
  EXPECT_EQ(r.noise, s.noise);
  EXPECT_EQ(r.noise_steps, 250);
}

// The offsets of each section's payload, from the format: a 24-byte header, then per
// section a 16-byte header (tag, length u64, crc) and the payload.
std::vector<std::pair<std::string, std::pair<size_t, size_t>>> sections_of(const std::vector<char>& b) {
  std::vector<std::pair<std::string, std::pair<size_t, size_t>>> out;
  size_t at = 24;
  while (at + 16 <= b.size()) {
    uint64_t length;
    std::memcpy(&length, b.data() + at + 4, 8);
    out.push_back({std::string(b.data() + at, 4), {at + 16, static_cast<size_t>(length)}});
    at += 16 + length;
  }
  return out;
}

TEST_F(CheckpointFiles, AFlippedBitInAnySectionIsDetectedAndNamed) {
  const std::string path = checkpoint_path(dir_, 1);
  write_checkpoint(path, sample_state(1));
  const std::vector<char> good = bytes_of(path);
  const auto sections = sections_of(good);
  ASSERT_EQ(sections.size(), 7u);
  for (const auto& [tag, where] : sections) {
    SCOPED_TRACE(tag);
    for (size_t offset : {size_t{0}, where.second / 2, where.second - 1}) {
      std::vector<char> bad = good;
      bad[where.first + offset] ^= 0x10;
      write_bytes(path, bad);
      const std::string m = error_reading(path);
      EXPECT_NE(m.find("section " + tag), std::string::npos) << m;
      EXPECT_NE(m.find("fails its checksum"), std::string::npos) << m;
    }
  }
  // A flipped bit in the file header or in a section header is caught too.
  for (size_t offset : {size_t{9}, size_t{13}, size_t{24 + 5}, size_t{24 + 13}}) {
    std::vector<char> bad = good;
    bad[offset] ^= 0x01;
    write_bytes(path, bad);
    EXPECT_NE(error_reading(path), "") << "flip at byte " << offset;
  }
}

TEST_F(CheckpointFiles, TruncationAtAnyLengthIsDetected) {
  const std::string path = checkpoint_path(dir_, 1);
  write_checkpoint(path, sample_state(1));
  const std::vector<char> good = bytes_of(path);
  for (size_t keep = 0; keep < good.size(); keep += 97) {
    write_bytes(path, std::vector<char>(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(keep)));
    const std::string m = error_reading(path);
    EXPECT_NE(m, "") << "a checkpoint cut at " << keep << " bytes was accepted";
  }
  write_bytes(path, std::vector<char>(good.begin(), good.end() - 1));
  EXPECT_NE(error_reading(path).find("truncated"), std::string::npos) << error_reading(path);
  std::vector<char> longer = good;
  longer.push_back(0);
  write_bytes(path, longer);
  EXPECT_NE(error_reading(path).find("after its last section"), std::string::npos);
}

TEST_F(CheckpointFiles, WrongMagicAndNewerVersionAreNamed) {
  const std::string path = checkpoint_path(dir_, 1);
  write_checkpoint(path, sample_state(1));
  std::vector<char> bad = bytes_of(path);
  bad[0] = 'X';
  write_bytes(path, bad);
  EXPECT_NE(error_reading(path).find("is not a dtrain checkpoint (wrong magic)"), std::string::npos);

  bad = bytes_of(path);
  bad[0] = 'D';
  const uint32_t version = kCheckpointVersion + 1;
  std::memcpy(bad.data() + 8, &version, 4);
  const uint32_t crc = crc32c(bad.data(), 20);  // a well-formed header of a newer format
  std::memcpy(bad.data() + 20, &crc, 4);
  write_bytes(path, bad);
  const std::string m = error_reading(path);
  EXPECT_NE(m.find("has format version 2, newer than this dtrain reads (1)"), std::string::npos) << m;
}

TEST_F(CheckpointFiles, ResumeAutoSkipsDamagedCheckpointsForTheNewestValidOne) {
  for (int64_t step : {10, 20, 30}) write_checkpoint(checkpoint_path(dir_, step), sample_state(step));
  // The newest is truncated, the next has a flipped bit: step 10 is the one to use.
  std::vector<char> b = bytes_of(checkpoint_path(dir_, 30));
  b.resize(b.size() / 2);
  write_bytes(checkpoint_path(dir_, 30), b);
  b = bytes_of(checkpoint_path(dir_, 20));
  b[b.size() - 5] ^= 0x40;
  write_bytes(checkpoint_path(dir_, 20), b);
  const ResumeChoice choice = newest_valid_checkpoint(dir_);
  ASSERT_TRUE(choice.path.has_value());
  EXPECT_EQ(*choice.path, checkpoint_path(dir_, 10));
  ASSERT_EQ(choice.rejected.size(), 2u);
  EXPECT_NE(choice.rejected[0].find("ckpt-000000030.dtrain is truncated"), std::string::npos) << choice.rejected[0];
  EXPECT_NE(choice.rejected[1].find("ckpt-000000020.dtrain: section NOIS"), std::string::npos) << choice.rejected[1];
  EXPECT_FALSE(newest_valid_checkpoint(dir_ + "/none").path.has_value());
}

TEST_F(CheckpointFiles, RotationKeepsTheNewest) {
  for (int64_t step = 1; step <= 5; ++step) write_checkpoint(checkpoint_path(dir_, step), sample_state(step));
  std::ofstream(checkpoint_path(dir_, 6) + ".tmp") << "a write that died";
  rotate_checkpoints(dir_, 2);
  EXPECT_EQ(list_checkpoints(dir_), (std::vector<std::string>{checkpoint_path(dir_, 5), checkpoint_path(dir_, 4)}));
  EXPECT_FALSE(fs::exists(checkpoint_path(dir_, 6) + ".tmp"));
}

TEST_F(CheckpointFiles, AnUnwritableDirectoryIsAStorageErrorAndKeepsThePrevious) {
  write_checkpoint(checkpoint_path(dir_, 1), sample_state(1));
  const std::string not_a_dir = dir_ + "/plain_file";
  std::ofstream(not_a_dir) << "x";
  try {
    write_checkpoint(checkpoint_path(not_a_dir, 2), sample_state(2));
    FAIL() << "expected StorageError";
  } catch (const StorageError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("cannot write checkpoint " + checkpoint_path(not_a_dir, 2)), std::string::npos) << m;
    EXPECT_NE(m.find("the previous checkpoints are kept"), std::string::npos) << m;
  }
  EXPECT_EQ(read_checkpoint(checkpoint_path(dir_, 1)).step, 1);
}

TEST_F(CheckpointFiles, AFullDiskIsAStorageErrorAndLeavesNoPartialFile) {
  const std::string small = dir_ + "/small";
  fs::create_directories(small);
  if (::mount("tmpfs", small.c_str(), "tmpfs", 0, "size=64k") != 0) {
    GTEST_SKIP() << "cannot mount a small tmpfs here (" << std::strerror(errno)
                 << "): the full-disk case needs root and a mount namespace that allows it";
  }
  CheckpointState tiny = sample_state(1);
  tiny.params.resize(100);
  tiny.optimizer_state = {std::vector<float>(100, 0.f)};
  write_checkpoint(checkpoint_path(small, 1), tiny);
  CheckpointState big = sample_state(2);
  big.params.assign(40000, 1.0f);  // 160 KB: more than the filesystem holds
  EXPECT_THROW(write_checkpoint(checkpoint_path(small, 2), big), StorageError);
  EXPECT_FALSE(fs::exists(checkpoint_path(small, 2) + ".tmp"));
  EXPECT_FALSE(fs::exists(checkpoint_path(small, 2)));
  EXPECT_EQ(read_checkpoint(checkpoint_path(small, 1)).step, 1);
  ::umount(small.c_str());
}

}  // namespace
}  // namespace dtrain
