// A model back from its checkpoint (runtime/checkpoint_model.h) for dtrain sample:
// which checkpoint a run directory means, the GPT rebuilt from the checkpoint's own
// config with its parameters (the same logits as the model that was saved), and the
// errors for a classifier's checkpoint and for a run without checkpoints. Also the
// config read back from text (load_config_from_string).
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "kernels/context.h"
#include "kernels/errors.h"
#include "models/model.h"
#include "runtime/checkpoint.h"
#include "runtime/checkpoint_model.h"
#include "runtime/config.h"
#include "runtime/text_dataset.h"

namespace dtrain {
namespace {

namespace fs = std::filesystem;

Config tiny_gpt_config() {
  Config c;
  c.model.name = "gpt";
  c.model.n_layer = 1;
  c.model.n_head = 2;
  c.model.n_embd = 8;
  c.model.seq_len = 6;
  c.data.name = "text";
  c.data.path = "/nowhere/corpus.txt";  // never read
  c.train.seed = 5;
  return c;
}

CheckpointState state_of(const Config& config, const Model& model, int64_t step) {
  CheckpointState s;
  s.step = step;
  s.config_yaml = config_to_yaml(config);
  s.plan.micro_batch = {4};
  s.plan.accumulation_steps = 1;
  s.plan.global_batch = 4;
  s.steps_per_epoch = 10;
  std::vector<float> host(static_cast<size_t>(model.param_count()));
  std::copy(model.params(), model.params() + model.param_count(), host.begin());
  s.params = host;
  s.optimizer_state = {};
  return s;
}

class CheckpointModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::temp_directory_path() / ("dtrain_ckpt_model_" + std::to_string(::getpid()))).string();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string dir_;
  std::unique_ptr<Context> ctx_ = Context::make_cpu(1);
};

TEST_F(CheckpointModelTest, AGptComesBackWithTheSameLogits) {
  const Config config = tiny_gpt_config();
  const std::unique_ptr<Model> saved =
      build_model(*ctx_, config.model, token_data_facts(config.data, config.model));
  saved->init(42);
  const std::string path = checkpoint_path(dir_, 12);
  write_checkpoint(path, state_of(config, *saved, 12));

  auto other_ctx = Context::make_cpu(1);
  const CheckpointModel loaded = load_checkpoint_model(*other_ctx, path);
  EXPECT_EQ(loaded.step, 12);
  EXPECT_TRUE(loaded.tokens_are_bytes);
  EXPECT_EQ(loaded.vocab, 256);
  EXPECT_EQ(loaded.config.model.n_embd, 8);
  ASSERT_TRUE(loaded.model->can_generate());
  const std::vector<int32_t> context = {'h', 'e', 'l'};
  EXPECT_EQ(loaded.model->next_token_logits(context), saved->next_token_logits(context));
}

TEST_F(CheckpointModelTest, ATokenShardGptComesBackWithItsVocabularyNotBytes) {
  Config config = tiny_gpt_config();
  config.data.name = "tokens";
  config.data.train_files = "/nowhere/train_*.bin";  // never read
  config.data.val_files = "/nowhere/val_*.bin";
  config.model.vocab = 11;
  const std::unique_ptr<Model> saved = build_model(*ctx_, config.model, token_data_facts(config.data, config.model));
  saved->init(1);
  const std::string path = checkpoint_path(dir_, 3);
  write_checkpoint(path, state_of(config, *saved, 3));
  const CheckpointModel loaded = load_checkpoint_model(*ctx_, path);
  EXPECT_FALSE(loaded.tokens_are_bytes);
  EXPECT_EQ(loaded.vocab, 11);
  EXPECT_EQ(loaded.model->next_token_logits({10, 0, 4}), saved->next_token_logits({10, 0, 4}));
}

TEST(TokenDataFacts, AreWhatTheLoadersGiveWithoutReadingTheData) {
  ModelSpec spec;
  spec.seq_len = 16;
  DataConfig data;
  data.name = "text";
  DataFacts f = token_data_facts(data, spec);
  EXPECT_EQ(f.layout.input, Shape{16});
  EXPECT_EQ(f.layout.input_type, ElementType::kInt32);
  EXPECT_EQ(f.layout.target, Shape{16});
  EXPECT_EQ(f.classes, 256);
  EXPECT_TRUE(f.tokens_are_bytes);
  data.name = "tokens";
  f = token_data_facts(data, spec);
  EXPECT_EQ(f.classes, 50257);  // GPT-2's vocabulary, as load_token_data takes it
  EXPECT_FALSE(f.tokens_are_bytes);
  data.name = "fashion_mnist";
  EXPECT_THROW(token_data_facts(data, spec), ConfigError);
}

TEST_F(CheckpointModelTest, AClassifiersCheckpointIsRefusedByName) {
  CheckpointState s;
  s.config_yaml = "model:\n  name: cnn\ndata:\n  name: fashion_mnist\n";
  s.plan.micro_batch = {4};
  s.plan.accumulation_steps = 1;
  s.plan.global_batch = 4;
  s.params = {1.0f, 2.0f};
  const std::string path = checkpoint_path(dir_, 1);
  write_checkpoint(path, s);
  try {
    load_checkpoint_model(*ctx_, path);
    FAIL() << "a cnn checkpoint was loaded for sampling";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("'cnn' model"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

TEST_F(CheckpointModelTest, ARunDirectoryMeansItsNewestReadableCheckpoint) {
  const std::string run = dir_ + "/run";
  fs::create_directories(run + "/checkpoints");
  for (const int64_t step : {10, 30, 20}) {
    std::ofstream(checkpoint_path(run + "/checkpoints", step)) << "not a checkpoint";  // named like one, unreadable as one
  }
  // None reads: each is named with its reason.
  try {
    find_checkpoint(run);
    FAIL();
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("no readable checkpoint"), std::string::npos) << e.what();
  }
  const Config config = tiny_gpt_config();
  const std::unique_ptr<Model> m = build_model(*ctx_, config.model, token_data_facts(config.data, config.model));
  write_checkpoint(checkpoint_path(run + "/checkpoints", 20), state_of(config, *m, 20));
  EXPECT_EQ(find_checkpoint(run), checkpoint_path(run + "/checkpoints", 20));  // 30 does not read
  // A file is itself; a checkpoint folder is searched too.
  EXPECT_EQ(find_checkpoint(checkpoint_path(run + "/checkpoints", 10)), checkpoint_path(run + "/checkpoints", 10));
  EXPECT_EQ(find_checkpoint(run + "/checkpoints"), checkpoint_path(run + "/checkpoints", 20));

  // checkpoint.dir of the run's config.yaml wins over RUN_DIR/checkpoints.
  Config elsewhere = config;
  elsewhere.checkpoint.dir = dir_ + "/kept";
  fs::create_directories(elsewhere.checkpoint.dir);
  write_checkpoint(checkpoint_path(elsewhere.checkpoint.dir, 5), state_of(config, *m, 5));
  std::ofstream(run + "/config.yaml") << config_to_yaml(elsewhere, {"world_size: 1"});
  EXPECT_EQ(find_checkpoint(run), checkpoint_path(elsewhere.checkpoint.dir, 5));
}

TEST_F(CheckpointModelTest, ARunWithoutCheckpointsSaysHowToGetOne) {
  fs::create_directories(dir_ + "/empty_run");
  std::ofstream(dir_ + "/empty_run/config.yaml") << config_to_yaml(tiny_gpt_config());
  try {
    find_checkpoint(dir_ + "/empty_run");
    FAIL();
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("no checkpoint in " + dir_ + "/empty_run/checkpoints"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("checkpoint.every_steps"), std::string::npos) << e.what();
  }
  EXPECT_THROW(find_checkpoint(dir_ + "/no_such_run"), DataError);
}

TEST(ConfigFromString, ReadsWhatConfigToYamlWroteAndNamesItsSource) {
  const Config c = tiny_gpt_config();
  const Config back = load_config_from_string(config_to_yaml(c, {"a trailer"}), "ckpt (its config)");
  EXPECT_EQ(back.model.name, "gpt");
  EXPECT_EQ(back.model.seq_len, 6);
  EXPECT_EQ(back.data.name, "text");
  EXPECT_EQ(back.train.seed, 5u);
  try {
    load_config_from_string("model:\n  name: gpt\n  n_lyer: 3\n", "ckpt (its config)");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("ckpt (its config):3"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace dtrain
