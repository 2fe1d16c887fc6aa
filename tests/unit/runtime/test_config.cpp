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

}  // namespace
}  // namespace dtrain
