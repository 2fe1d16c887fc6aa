// The config loader: defaults, overrides, and every kind of bad input named with the
// key, the file and the line.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "kernels/errors.h"
#include "runtime/config.h"

namespace dtrain {
namespace {

class ConfigTest : public ::testing::Test {
 protected:
  std::string write(const std::string& text) {
    const auto dir = std::filesystem::temp_directory_path() / "dtrain_config_test";
    std::filesystem::create_directories(dir);
    path_ = (dir / (std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + ".yaml")).string();
    std::ofstream(path_) << text;
    return path_;
  }
  // The message of the ConfigError that loading throws, or a failure.
  std::string error_of(const std::string& text, const std::vector<std::string>& sets = {}) {
    try {
      load_config(write(text), sets);
    } catch (const ConfigError& e) {
      return e.what();
    }
    ADD_FAILURE() << "no ConfigError for:\n" << text;
    return "";
  }
  std::string path_;
};

TEST_F(ConfigTest, DefaultsAndValuesAreRead) {
  const Config c = load_config(write("model:\n  name: cnn\n  channels: [8, 16]\ntrain:\n  global_batch: 128\n"
                                     "optimizer:\n  name: adamw\n  lr: 0.001\n  nesterov: false\n"), {});
  EXPECT_EQ(c.model.name, "cnn");
  EXPECT_EQ(c.model.channels, (std::vector<int64_t>{8, 16}));
  EXPECT_EQ(c.train.global_batch, 128);
  EXPECT_EQ(c.train.micro_batch, kAuto);  // default: the batch planner sizes it
  EXPECT_EQ(c.optimizer.name, "adamw");
  EXPECT_DOUBLE_EQ(c.optimizer.lr, 0.001);
  EXPECT_FALSE(c.epochs_given);
  EXPECT_EQ(c.where("train.global_batch"), path_ + ":5");
}

TEST_F(ConfigTest, SetOverridesAreParsedAsYaml) {
  const Config c = load_config(write("train:\n  epochs: 2\n"),
                               {"train.epochs=5", "model.hidden=[64, 32]", "optimizer.nesterov=true", "log.every_steps=7"});
  EXPECT_EQ(c.train.epochs, 5);
  EXPECT_TRUE(c.epochs_given);
  EXPECT_EQ(c.model.hidden, (std::vector<int64_t>{64, 32}));
  EXPECT_TRUE(c.optimizer.nesterov);
  EXPECT_EQ(c.log.every_steps, 7);
  EXPECT_EQ(c.where("train.epochs"), "--set train.epochs=5");
}

TEST_F(ConfigTest, UnknownKeyNamesKeyFileLineAndSuggests) {
  const std::string m = error_of("train:\n  epochs: 1\n  globl_batch: 64\n");
  EXPECT_NE(m.find(path_ + ":3"), std::string::npos) << m;
  EXPECT_NE(m.find("unknown key 'train.globl_batch'"), std::string::npos) << m;
  EXPECT_NE(m.find("did you mean 'train.global_batch'"), std::string::npos) << m;
}

TEST_F(ConfigTest, UnknownSectionIsNamed) {
  const std::string m = error_of("trian:\n  epochs: 1\n");
  EXPECT_NE(m.find("unknown key 'trian'"), std::string::npos) << m;
  EXPECT_NE(m.find(path_ + ":1"), std::string::npos) << m;
}

TEST_F(ConfigTest, WrongTypeNamesKeyAndLine) {
  const std::string m = error_of("model:\n  name: mlp\ntrain:\n  micro_batch: lots\n");
  EXPECT_NE(m.find(path_ + ":4"), std::string::npos) << m;
  EXPECT_NE(m.find("'train.micro_batch' expects an integer or auto, got 'lots'"), std::string::npos) << m;
  EXPECT_NE(error_of("model:\n  hidden: 5\n").find("'model.hidden' expects a list of integers"), std::string::npos);
  EXPECT_NE(error_of("optimizer:\n  nesterov: maybe\n").find("'optimizer.nesterov' expects true or false"), std::string::npos);
  EXPECT_NE(error_of("train: 5\n").find("'train' must be a mapping"), std::string::npos);
}

TEST_F(ConfigTest, OutOfRangeNamesKeyValueAndRange) {
  std::string m = error_of("\noptimizer:\n  lr: -0.1\n");
  EXPECT_NE(m.find(path_ + ":3"), std::string::npos) << m;
  EXPECT_NE(m.find("'optimizer.lr' = -0.1 is out of range"), std::string::npos) << m;
  m = error_of("train:\n  micro_batch: 0\n");
  EXPECT_NE(m.find("'train.micro_batch' = 0 is out of range: must be at least 1"), std::string::npos) << m;
  EXPECT_NE(error_of("optimizer:\n  momentum: 1.0\n").find("optimizer.momentum"), std::string::npos);
  EXPECT_NE(error_of("model:\n  name: resnet\n").find("'model.name' = 'resnet' is not one of: mlp, cnn"), std::string::npos);
  EXPECT_NE(error_of("model:\n  kernel_size: 4\n").find("must be odd"), std::string::npos);
  EXPECT_NE(error_of("model:\n  channels: []\n").find("must not be empty"), std::string::npos);
}

TEST_F(ConfigTest, BadSetValuesNameTheArgument) {
  std::string m = error_of("train:\n  epochs: 1\n", {"train.epochs=zero"});
  EXPECT_NE(m.find("--set train.epochs=zero"), std::string::npos) << m;
  m = error_of("", {"train.epochz=3"});
  EXPECT_NE(m.find("unknown key 'train.epochz'"), std::string::npos) << m;
  EXPECT_NE(m.find("--set train.epochz=3"), std::string::npos) << m;
  EXPECT_NE(error_of("", {"noequals"}).find("expected KEY=VALUE"), std::string::npos);
}

TEST_F(ConfigTest, MissingFileAndInvalidYaml) {
  EXPECT_THROW(load_config("/nonexistent/dtrain.yaml", {}), ConfigError);
  const std::string m = error_of("train:\n  epochs: [1\n");
  EXPECT_NE(m.find("not valid YAML"), std::string::npos) << m;
}

TEST_F(ConfigTest, EffectiveConfigLoadsBackToTheSameValues) {
  const Config a = load_config(write("model:\n  name: cnn\ntrain:\n  max_steps: 20\n"), {"optimizer.lr=0.2"});
  const std::string text = config_to_yaml(a, {"world_size: 2"});
  const Config b = load_config(write(text), {});
  EXPECT_EQ(b.model.name, "cnn");
  EXPECT_EQ(b.train.max_steps, 20);
  EXPECT_FALSE(b.epochs_given);
  EXPECT_DOUBLE_EQ(b.optimizer.lr, 0.2);
  EXPECT_EQ(config_to_yaml(b, {"world_size: 2"}), text);
}

TEST_F(ConfigTest, AKeyThatIsNotAPlainNameIsAConfigError) {
  // A YAML complex key (a list as a key): a regression found by fuzzing, which once
  // escaped as yaml-cpp's own exception.
  const std::string m = error_of("train:\n  ? [a, b]\n  : 1\n");
  EXPECT_NE(m.find("'train' has a key that is not a plain name"), std::string::npos) << m;
  EXPECT_NE(error_of("? {x: 1}\n: 2\n").find("'the config' has a key that is not a plain name"), std::string::npos);
}

TEST_F(ConfigTest, BatchSizesTakeAuto) {
  const Config c = load_config(write("train:\n  global_batch: auto\n  micro_batch: auto\n"), {});
  EXPECT_EQ(c.train.global_batch, kAuto);
  EXPECT_EQ(c.train.micro_batch, kAuto);
  const Config d = load_config(write("train:\n  micro_batch: 8\n"), {"train.global_batch=auto"});
  EXPECT_EQ(d.train.global_batch, kAuto);
  EXPECT_EQ(d.train.micro_batch, 8);
  EXPECT_NE(error_of("train:\n  micro_batch: 0\n").find("must be at least 1, or auto"), std::string::npos);
}

TEST_F(ConfigTest, MemoryKeysTakeSizesWithUnits) {
  const Config c = load_config(write("memory:\n  fraction: 0.8\n  limit: 2GiB\n"),
                               {"memory.limit_per_rank=[64MiB, 32MiB]"});
  EXPECT_DOUBLE_EQ(c.memory.fraction, 0.8);
  EXPECT_EQ(c.memory.limit, int64_t{2} << 30);
  EXPECT_EQ(c.memory.limit_per_rank, (std::vector<int64_t>{int64_t{64} << 20, int64_t{32} << 20}));
  // The per-rank list wins over the common limit, and must match the ranks.
  EXPECT_EQ(c.memory_limit_of(1, 2), int64_t{32} << 20);
  try {
    c.memory_limit_of(0, 4);
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("--set memory.limit_per_rank=[64MiB, 32MiB]: memory.limit_per_rank has 2 entries but the job "
                     "has 4 rank(s)"),
              std::string::npos)
        << m;
  }
  const Config plain = load_config(write("memory:\n  limit: 1000\n"), {});
  EXPECT_EQ(plain.memory_limit_of(3, 4), 1000);
}

TEST_F(ConfigTest, BadMemoryValuesNameKeyAndLine) {
  std::string m = error_of("memory:\n  limit: 12 furlongs\n");
  EXPECT_NE(m.find(path_ + ":2: key 'memory.limit' = '12 furlongs': unknown unit 'furlongs'"), std::string::npos) << m;
  m = error_of("memory:\n  fraction: 1.5\n");
  EXPECT_NE(m.find("'memory.fraction' = 1.5 is out of range"), std::string::npos) << m;
  m = error_of("memory:\n  limit_per_rank: 64MiB\n");
  EXPECT_NE(m.find("expects a list of sizes, one per rank"), std::string::npos) << m;
  m = error_of("memory:\n  limit_per_rank: [64MiB, 0]\n");
  EXPECT_NE(m.find("has a size of 0"), std::string::npos) << m;
}

TEST_F(ConfigTest, LrScalingNeedsItsBaseAndWarmupIsGivenOnce) {
  EXPECT_NE(error_of("optimizer:\n  lr_scaling: sqrt\n").find("optimizer.base_batch is not set"), std::string::npos);
  EXPECT_NE(error_of("optimizer:\n  lr_scaling: cubic\n").find("is not one of: none, linear, sqrt"), std::string::npos);
  EXPECT_NE(error_of("schedule:\n  warmup_steps: 10\n  warmup_epochs: 0.5\n").find("keep one"), std::string::npos);
  const Config c = load_config(write("optimizer:\n  lr_scaling: linear\n  base_batch: 256\n"
                                     "schedule:\n  warmup_epochs: 0.5\n"), {});
  EXPECT_EQ(c.optimizer.lr_scaling, "linear");
  EXPECT_EQ(c.optimizer.base_batch, 256);
  EXPECT_DOUBLE_EQ(c.schedule.warmup_epochs, 0.5);
}

TEST_F(ConfigTest, PlannerKeysSurviveTheEffectiveConfig) {
  const Config a = load_config(write("train:\n  global_batch: auto\nmemory:\n  limit_per_rank: [64MiB, 32MiB]\n"
                                     "optimizer:\n  lr_scaling: sqrt\n  base_batch: 64\nlog:\n  noise_ema: 0.9\n"), {});
  const Config b = load_config(write(config_to_yaml(a)), {});
  EXPECT_EQ(b.train.global_batch, kAuto);
  EXPECT_EQ(b.train.micro_batch, kAuto);
  EXPECT_EQ(b.memory.limit_per_rank, a.memory.limit_per_rank);
  EXPECT_EQ(b.optimizer.lr_scaling, "sqrt");
  EXPECT_EQ(b.optimizer.base_batch, 64);
  EXPECT_DOUBLE_EQ(b.log.noise_ema, 0.9);
  EXPECT_EQ(config_to_yaml(b), config_to_yaml(a));
}

TEST_F(ConfigTest, GptKeysAreReadCheckedAndSurviveTheEffectiveConfig) {
  const Config a = load_config(write("model:\n  name: gpt\n  n_layer: 3\n  n_head: 6\n  n_embd: 192\n"
                                     "  seq_len: 128\n  vocab: 0\n  dropout: 0.1\n"), {});
  EXPECT_EQ(a.model.name, "gpt");
  EXPECT_EQ(a.model.n_layer, 3);
  EXPECT_EQ(a.model.n_head, 6);
  EXPECT_EQ(a.model.n_embd, 192);
  EXPECT_EQ(a.model.seq_len, 128);
  EXPECT_EQ(a.model.vocab, 0);
  EXPECT_DOUBLE_EQ(a.model.dropout, 0.1);
  const Config b = load_config(write(config_to_yaml(a)), {});
  EXPECT_EQ(b.model.n_layer, 3);
  EXPECT_EQ(b.model.n_embd, 192);
  EXPECT_DOUBLE_EQ(b.model.dropout, 0.1);
  EXPECT_EQ(config_to_yaml(b), config_to_yaml(a));

  std::string m = error_of("model:\n  name: gpt\n  n_head: 5\n  n_embd: 64\n");
  EXPECT_NE(m.find("'model.n_embd' = 64 is not a multiple of 'model.n_head' = 5"), std::string::npos) << m;
  EXPECT_NE(m.find(path_ + ":"), std::string::npos) << m;
  m = error_of("model:\n  name: gpt\n", {"model.n_head=3"});
  EXPECT_NE(m.find("--set model.n_head=3"), std::string::npos) << m;
  EXPECT_NE(error_of("model:\n  dropout: 1.0\n").find("'model.dropout' = 1 is out of range"), std::string::npos);
  EXPECT_NE(error_of("model:\n  seq_len: 0\n").find("'model.seq_len' = 0 is out of range"), std::string::npos);
  EXPECT_NE(error_of("model:\n  vocab: -1\n").find("'model.vocab' = -1 is out of range"), std::string::npos);
}

}  // namespace
}  // namespace dtrain
