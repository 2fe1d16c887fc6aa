// The config loader: defaults, overrides, and every kind of bad input named with the
// key, the file and the line.
#include <gtest/gtest.h>

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <algorithm>
#include <map>

#include "kernels/errors.h"
#include "runtime/config.h"
#include "runtime/config_schema.h"

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
  // A section the file does not have is blamed on the --set that made it, not the file.
  m = error_of("train:\n  epochs: 1\n", {"trian.epochs=3"});
  EXPECT_NE(m.find("--set trian.epochs=3: unknown key 'trian'"), std::string::npos) << m;
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

TEST_F(ConfigTest, Bf16ComputeIsTheGptsAndNamesWhereItWasSet) {
  const std::string m = error_of("model:\n  name: cnn\nprecision:\n  compute: bf16\n");
  EXPECT_NE(m.find(path_ + ":4: precision.compute is 'bf16' but the cnn computes in fp32 only"), std::string::npos) << m;
  EXPECT_NE(error_of("precision:\n  compute: fp16\n").find("is not one of: fp32, bf16"), std::string::npos);
  EXPECT_NE(error_of("comm:\n  reduce_dtype: fp8\n").find("is not one of: fp32, bf16"), std::string::npos);
}

TEST_F(ConfigTest, RecomputeIsTheGptsAndNamesWhereItWasSet) {
  const Config gpt = load_config(write("model:\n  name: gpt\nmemory:\n  recompute: blocks\n"), {});
  EXPECT_EQ(gpt.memory.recompute, "blocks");
  // The planner decides unless told (Note [Memory levers]); auto is not an error on a
  // model without blocks, where it means none.
  EXPECT_EQ(load_config(write(""), {}).memory.recompute, "auto");
  EXPECT_EQ(load_config(write("model:\n  name: mlp\nmemory:\n  recompute: auto\n"), {}).memory.recompute, "auto");
  std::string m = error_of("model:\n  name: mlp\nmemory:\n  recompute: blocks\n");
  EXPECT_NE(m.find(path_ + ":4: memory.recompute is 'blocks' but the mlp has no blocks to recompute"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("set memory.recompute: none"), std::string::npos) << m;
  m = error_of("model:\n  name: cnn\n", {"memory.recompute=blocks"});
  EXPECT_NE(m.find("--set memory.recompute=blocks: memory.recompute is 'blocks' but the cnn"), std::string::npos) << m;
  for (const char* bad : {"layers", "true"}) {
    m = error_of(std::string("model:\n  name: gpt\nmemory:\n  recompute: ") + bad + "\n");
    EXPECT_NE(m.find(path_ + ":4: key 'memory.recompute' = '" + bad + "' is not one of: auto, none, blocks"),
              std::string::npos)
        << m;
  }
}

TEST_F(ConfigTest, ShardIsAutoTrueOrFalseAndNamesTheKey) {
  EXPECT_EQ(load_config(write(""), {}).optimizer.shard, "auto");
  EXPECT_EQ(load_config(write("optimizer:\n  shard: false\n"), {}).optimizer.shard, "false");
  EXPECT_EQ(load_config(write(""), {"optimizer.shard=true"}).optimizer.shard, "true");
  const std::string m = error_of("optimizer:\n  shard: zero1\n");
  EXPECT_NE(m.find(path_ + ":2: key 'optimizer.shard' = 'zero1' is not one of: auto, true, false"), std::string::npos)
      << m;
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

// Every key of the table with a value other than its default (config.h); schedule's
// two warmups cannot both be set, so warmup_epochs keeps its default here and
// EveryKeySurvivesTheEffectiveConfig sets it by --set.
const char* const kEveryKey = R"(model:
  name: gpt
  hidden: [64, 32, 16]
  channels: [4, 8, 12]
  kernel_size: 3
  cnn_hidden: [32, 16]
  n_layer: 2
  n_head: 3
  n_embd: 96
  seq_len: 32
  vocab: 300
  dropout: 0.25
data:
  name: tokens
  path: /srv/corpus
  train_samples: 1000
  test_samples: 100
  features: 7
  noise: 0.5
  val_fraction: 0.25
  train_files: shards/train_*.bin
  val_files: shards/val_*.bin
train:
  global_batch: 96
  micro_batch: 12
  epochs: 7
  max_steps: 500
  seed: 1234567890123
  on_nonfinite: skip
optimizer:
  name: adamw
  lr: 0.003
  momentum: 0.5
  nesterov: true
  weight_decay: 0.1
  beta1: 0.8
  beta2: 0.95
  eps: 1.0e-6
  lr_scaling: sqrt
  base_batch: 32
  max_lr: 0.002
  decay_filter: all
  clip_grad_norm: 1.5
  shard: true
schedule:
  warmup_steps: 20
  warmup_epochs: 0
  decay: step
  min_lr: 0.0001
  step_size: 50
  gamma: 0.5
eval:
  every_steps: 25
  batch: 64
log:
  every_steps: 10
  noise_scale: false
  noise_ema: 0.5
  noise_end_samples: 2048
  trace: true
checkpoint:
  dir: /srv/checkpoints
  every_steps: 100
  keep: 5
  on_error: continue
memory:
  fraction: 0.75
  limit: 3GiB
  limit_per_rank: [1GiB, 512MiB]
  recompute: blocks
comm:
  backend: nccl
  bucket_mb: 12.5
  timeout_s: 60
  reduce_dtype: bf16
device:
  kind: cpu-async
  share: true
  threads: 3
precision:
  tf32: true
  compute: bf16
  gemm_autotune: true
  deterministic: false
)";

// The values of kEveryKey, written out again by hand.
void expect_every_key_of_the_fixture(const Config& c) {
  EXPECT_EQ(c.model.name, "gpt");
  EXPECT_EQ(c.model.hidden, (std::vector<int64_t>{64, 32, 16}));
  EXPECT_EQ(c.model.channels, (std::vector<int64_t>{4, 8, 12}));
  EXPECT_EQ(c.model.kernel_size, 3);
  EXPECT_EQ(c.model.cnn_hidden, (std::vector<int64_t>{32, 16}));
  EXPECT_EQ(c.model.n_layer, 2);
  EXPECT_EQ(c.model.n_head, 3);
  EXPECT_EQ(c.model.n_embd, 96);
  EXPECT_EQ(c.model.seq_len, 32);
  EXPECT_EQ(c.model.vocab, 300);
  EXPECT_DOUBLE_EQ(c.model.dropout, 0.25);
  EXPECT_EQ(c.data.name, "tokens");
  EXPECT_EQ(c.data.path, "/srv/corpus");
  EXPECT_EQ(c.data.train_samples, 1000);
  EXPECT_EQ(c.data.test_samples, 100);
  EXPECT_EQ(c.data.features, 7);
  EXPECT_DOUBLE_EQ(c.data.noise, 0.5);
  EXPECT_DOUBLE_EQ(c.data.val_fraction, 0.25);
  EXPECT_EQ(c.data.train_files, "shards/train_*.bin");
  EXPECT_EQ(c.data.val_files, "shards/val_*.bin");
  EXPECT_EQ(c.train.global_batch, 96);
  EXPECT_EQ(c.train.micro_batch, 12);
  EXPECT_EQ(c.train.epochs, 7);
  EXPECT_TRUE(c.epochs_given);
  EXPECT_EQ(c.train.max_steps, 500);
  EXPECT_EQ(c.train.seed, uint64_t{1234567890123});
  EXPECT_EQ(c.train.on_nonfinite, "skip");
  EXPECT_EQ(c.optimizer.name, "adamw");
  EXPECT_DOUBLE_EQ(c.optimizer.lr, 0.003);
  EXPECT_DOUBLE_EQ(c.optimizer.momentum, 0.5);
  EXPECT_TRUE(c.optimizer.nesterov);
  EXPECT_DOUBLE_EQ(c.optimizer.weight_decay, 0.1);
  EXPECT_DOUBLE_EQ(c.optimizer.beta1, 0.8);
  EXPECT_DOUBLE_EQ(c.optimizer.beta2, 0.95);
  EXPECT_DOUBLE_EQ(c.optimizer.eps, 1.0e-6);
  EXPECT_EQ(c.optimizer.lr_scaling, "sqrt");
  EXPECT_EQ(c.optimizer.base_batch, 32);
  EXPECT_DOUBLE_EQ(c.optimizer.max_lr, 0.002);
  EXPECT_EQ(c.optimizer.decay_filter, "all");
  EXPECT_DOUBLE_EQ(c.optimizer.clip_grad_norm, 1.5);
  EXPECT_EQ(c.optimizer.shard, "true");
  EXPECT_EQ(c.schedule.decay, "step");
  EXPECT_DOUBLE_EQ(c.schedule.min_lr, 0.0001);
  EXPECT_EQ(c.schedule.step_size, 50);
  EXPECT_DOUBLE_EQ(c.schedule.gamma, 0.5);
  EXPECT_EQ(c.eval.every_steps, 25);
  EXPECT_EQ(c.eval.batch, 64);
  EXPECT_EQ(c.log.every_steps, 10);
  EXPECT_FALSE(c.log.noise_scale);
  EXPECT_DOUBLE_EQ(c.log.noise_ema, 0.5);
  EXPECT_EQ(c.log.noise_end_samples, 2048);
  EXPECT_TRUE(c.log.trace);
  EXPECT_EQ(c.checkpoint.dir, "/srv/checkpoints");
  EXPECT_EQ(c.checkpoint.every_steps, 100);
  EXPECT_EQ(c.checkpoint.keep, 5);
  EXPECT_EQ(c.checkpoint.on_error, "continue");
  EXPECT_DOUBLE_EQ(c.memory.fraction, 0.75);
  EXPECT_EQ(c.memory.limit, int64_t{3} << 30);
  EXPECT_EQ(c.memory.limit_per_rank, (std::vector<int64_t>{int64_t{1} << 30, int64_t{512} << 20}));
  EXPECT_EQ(c.memory.recompute, "blocks");
  EXPECT_EQ(c.comm.backend, "nccl");
  EXPECT_DOUBLE_EQ(c.comm.bucket_mb, 12.5);
  EXPECT_DOUBLE_EQ(c.comm.timeout_s, 60.0);
  EXPECT_EQ(c.comm.reduce_dtype, "bf16");
  EXPECT_EQ(c.device.kind, "cpu-async");
  EXPECT_TRUE(c.device.share);
  EXPECT_EQ(c.device.threads, 3);
  EXPECT_TRUE(c.precision.tf32);
  EXPECT_EQ(c.precision.compute, "bf16");
  EXPECT_TRUE(c.precision.gemm_autotune);
  EXPECT_FALSE(c.precision.deterministic);
}

// "section.key" of every key in a YAML text of sections, in the text's order.
std::vector<std::string> keys_written_in(const std::string& yaml) {
  std::vector<std::string> keys;
  for (const auto& section : YAML::Load(yaml)) {
    for (const auto& key : section.second) {
      keys.push_back(section.first.as<std::string>() + "." + key.first.as<std::string>());
    }
  }
  return keys;
}

// What `got` lacks and what it has too many of, against `want`, for a failure message.
std::string key_difference(const std::vector<std::string>& got, const std::vector<std::string>& want) {
  std::string out;
  for (const auto& k : want) {
    if (std::find(got.begin(), got.end(), k) == got.end()) out += " missing " + k + ";";
  }
  for (const auto& k : got) {
    if (std::find(want.begin(), want.end(), k) == want.end()) out += " extra " + k + ";";
  }
  return out.empty() ? " same keys, another order" : out;
}

std::vector<std::string> keys_of_the_table() {
  std::vector<std::string> keys;
  for (const ConfigSection& section : config_schema()) {
    for (const ConfigKey& key : section.keys) keys.push_back(section.name + "." + key.name);
  }
  return keys;
}

TEST_F(ConfigTest, TheEveryKeyFixtureSetsEveryKeyOfTheTable) {
  // A key added to the table and not to kEveryKey fails here, so the round trip
  // below covers it.
  EXPECT_EQ(keys_written_in(kEveryKey), keys_of_the_table())
      << key_difference(keys_written_in(kEveryKey), keys_of_the_table());
}

TEST_F(ConfigTest, EveryKeySurvivesTheEffectiveConfig) {
  const Config a = load_config(write(kEveryKey), {});
  expect_every_key_of_the_fixture(a);
  EXPECT_EQ(a.schedule.warmup_steps, 20);
  const std::string text = config_to_yaml(a);
  const Config b = load_config(write(text), {});
  expect_every_key_of_the_fixture(b);
  EXPECT_EQ(b.schedule.warmup_steps, 20);
  EXPECT_EQ(config_to_yaml(b), text);

  const Config e = load_config(write(kEveryKey), {"schedule.warmup_steps=0", "schedule.warmup_epochs=1.5"});
  const Config f = load_config(write(config_to_yaml(e)), {});
  expect_every_key_of_the_fixture(f);
  EXPECT_EQ(f.schedule.warmup_steps, 0);
  EXPECT_DOUBLE_EQ(f.schedule.warmup_epochs, 1.5);
}

TEST_F(ConfigTest, TheWriterWritesEveryKeyOfTheTableInItsOrder) {
  const Config c = load_config(write(kEveryKey), {});
  const std::vector<std::string> written = keys_written_in(config_to_yaml(c));
  EXPECT_EQ(written, keys_of_the_table()) << key_difference(written, keys_of_the_table());
}

TEST_F(ConfigTest, ADefaultConfigIsWrittenWithoutItsUnsetOptionalKeys) {
  // The writer leaves out a key whose value the reader would refuse and whose default
  // the reader restores: base_batch 0 (not given) and an empty limit_per_rank.
  std::vector<std::string> expected = keys_of_the_table();
  std::erase(expected, "optimizer.base_batch");
  std::erase(expected, "memory.limit_per_rank");
  const std::vector<std::string> written = keys_written_in(config_to_yaml(Config{}));
  EXPECT_EQ(written, expected) << key_difference(written, expected);

  // train.epochs is left out when max_steps ends the run and epochs was not written,
  // and loading that back leaves it not given.
  const Config steps = load_config(write("train:\n  max_steps: 20\n"), {});
  std::erase(expected, "train.epochs");
  const std::string text = config_to_yaml(steps);
  EXPECT_EQ(keys_written_in(text), expected) << key_difference(keys_written_in(text), expected);
  EXPECT_FALSE(load_config(write(text), {}).epochs_given);
}

TEST_F(ConfigTest, UnknownKeyListsTheKnownKeysOfItsSection) {
  const std::string m = error_of("eval:\n  batches: 10\n");
  EXPECT_NE(m.find(path_ + ":2: unknown key 'eval.batches'; did you mean 'eval.batch'? Known keys in 'eval': "
                   "every_steps, batch"),
            std::string::npos)
      << m;
  EXPECT_NE(error_of("precision:\n  fp8: true\n").find("Known keys in 'precision': tf32"), std::string::npos);
}

// The number of members of the aggregate S: the most initializers S{...} accepts,
// each AnyMember converting to whatever its member is.
struct AnyMember {
  template <class T>
  operator T() const;
};
template <class S, class... Members>
constexpr size_t member_count() {
  if constexpr (requires { S{Members{}..., AnyMember{}}; }) {
    return member_count<S, Members..., AnyMember>();
  } else {
    return sizeof...(Members);
  }
}

TEST_F(ConfigTest, EveryFieldOfTheConfigStructsHasAKeyInTheTable) {
  struct ThreeMembers {
    int64_t a = 1;
    std::string b;
    std::vector<int64_t> c;
  };
  ASSERT_EQ(member_count<ThreeMembers>(), 3u);  // the counter itself

  std::map<std::string, size_t> keys;
  for (const ConfigSection& section : config_schema()) keys[section.name] = section.keys.size();
  const char* kHint = ": a field without its entry in runtime/config_schema.cpp, or an entry without its field";
  // ModelSpec::seed, ::compute and ::recompute are not keys: the runtime copies
  // train.seed, precision.compute and memory.recompute into them.
  EXPECT_EQ(member_count<ModelSpec>(), keys["model"] + 3) << "ModelSpec" << kHint;
  EXPECT_EQ(member_count<DataConfig>(), keys["data"]) << "DataConfig" << kHint;
  EXPECT_EQ(member_count<TrainConfig>(), keys["train"]) << "TrainConfig" << kHint;
  EXPECT_EQ(member_count<OptimizerConfig>(), keys["optimizer"]) << "OptimizerConfig" << kHint;
  EXPECT_EQ(member_count<ScheduleConfig>(), keys["schedule"]) << "ScheduleConfig" << kHint;
  EXPECT_EQ(member_count<EvalConfig>(), keys["eval"]) << "EvalConfig" << kHint;
  EXPECT_EQ(member_count<LogConfig>(), keys["log"]) << "LogConfig" << kHint;
  EXPECT_EQ(member_count<CheckpointConfig>(), keys["checkpoint"]) << "CheckpointConfig" << kHint;
  EXPECT_EQ(member_count<MemoryConfig>(), keys["memory"]) << "MemoryConfig" << kHint;
  EXPECT_EQ(member_count<CommConfig>(), keys["comm"]) << "CommConfig" << kHint;
  EXPECT_EQ(member_count<DeviceConfig>(), keys["device"]) << "DeviceConfig" << kHint;
  EXPECT_EQ(member_count<PrecisionConfig>(), keys["precision"]) << "PrecisionConfig" << kHint;
  // Config: one member per section, then source, origins and epochs_given.
  EXPECT_EQ(member_count<Config>(), keys.size() + 3);
}

}  // namespace
}  // namespace dtrain
