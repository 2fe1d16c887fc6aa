#include <gtest/gtest.h>

#include <sstream>
#include <string>

#include "kernels/errors.h"
#include "launch/cli.h"
#include "runtime/config_schema.h"

namespace dtrain::launch {
namespace {

TEST(Cli, TrainWithOverridesAndRunDir) {
  const CliCommand c = parse_cli({"train", "cfg.yaml", "--set", "train.epochs=3", "--set=optimizer.lr=0.1",
                                  "--run-dir", "/tmp/x"});
  EXPECT_EQ(c.kind, CliCommand::Kind::Train);
  EXPECT_EQ(c.config_path, "cfg.yaml");
  EXPECT_EQ(c.overrides, (std::vector<std::string>{"train.epochs=3", "optimizer.lr=0.1"}));
  EXPECT_EQ(c.run_dir, "/tmp/x");
}

TEST(Cli, Help) {
  EXPECT_EQ(parse_cli({}).kind, CliCommand::Kind::Help);
  EXPECT_EQ(parse_cli({"--help"}).kind, CliCommand::Kind::Help);
  EXPECT_EQ(parse_cli({"train", "--help"}).kind, CliCommand::Kind::TrainHelp);
}

// Every section and key of the schema, each choice key with its values, within the
// help's 88 columns.
TEST(Cli, TrainHelpListsEveryConfigKey) {
  const std::string help = train_help();
  for (const ConfigSection& section : config_schema()) {
    EXPECT_NE(help.find("  " + section.name + ": "), std::string::npos) << section.name;
    for (const ConfigKey& key : section.keys) {
      const std::string word = " " + key.name;
      const size_t at = help.find(word, help.find("  " + section.name + ": "));
      EXPECT_NE(at, std::string::npos) << section.name << "." << key.name;
    }
  }
  EXPECT_NE(help.find("reduce_dtype (fp32|bf16)"), std::string::npos);
  EXPECT_NE(help.find("global_batch (N|auto)"), std::string::npos);
  std::istringstream lines(help);
  for (std::string line; std::getline(lines, line);) EXPECT_LE(line.size(), 90u) << line;
}

TEST(Cli, MistakesAreUsageErrors) {
  EXPECT_THROW(parse_cli({"trian", "cfg.yaml"}), UsageError);
  EXPECT_THROW(parse_cli({"train"}), UsageError);
  EXPECT_THROW(parse_cli({"train", "a.yaml", "b.yaml"}), UsageError);
  EXPECT_THROW(parse_cli({"train", "a.yaml", "--set"}), UsageError);
  EXPECT_THROW(parse_cli({"train", "a.yaml", "--bogus"}), UsageError);
}

TEST(Cli, SampleDefaultsAreANewline200TokensTemperature1NoTopKSeed1) {
  const CliCommand c = parse_cli({"sample", "runs/x"});
  EXPECT_EQ(c.kind, CliCommand::Kind::Sample);
  EXPECT_EQ(c.sample_from, "runs/x");
  EXPECT_FALSE(c.prompt.has_value());  // the command picks a newline or a token id by the model
  EXPECT_EQ(c.sample_tokens, 200);
  EXPECT_EQ(c.temperature, 1.0);
  EXPECT_EQ(c.top_k, 0);
  EXPECT_EQ(c.sample_seed, 1u);
  EXPECT_EQ(parse_cli({"sample", "--help"}).kind, CliCommand::Kind::SampleHelp);
}

TEST(Cli, SampleOptionsInBothForms) {
  const CliCommand c = parse_cli({"sample", "ckpt.dtrain", "--prompt", "Q: ", "--tokens=50", "--temperature", "0",
                                  "--top-k=40", "--seed", "18446744073709551615"});
  EXPECT_EQ(c.sample_from, "ckpt.dtrain");
  EXPECT_EQ(c.prompt.value_or(""), "Q: ");
  EXPECT_EQ(c.sample_tokens, 50);
  EXPECT_EQ(c.temperature, 0.0);
  EXPECT_EQ(c.top_k, 40);
  EXPECT_EQ(c.sample_seed, 18446744073709551615ull);
  EXPECT_EQ(parse_cli({"sample", "r", "--prompt="}).prompt.value_or("unset"), "");
}

TEST(Cli, SampleBadValuesAreUsageErrors) {
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"sample"},
           {"sample", "a", "b"},
           {"sample", "r", "--tokens", "-1"},
           {"sample", "r", "--tokens", "1000001"},
           {"sample", "r", "--tokens", "10x"},
           {"sample", "r", "--temperature", "-0.5"},
           {"sample", "r", "--temperature", "nan"},
           {"sample", "r", "--temperature", "inf"},
           {"sample", "r", "--temperature", ""},
           {"sample", "r", "--top-k", "-3"},
           {"sample", "r", "--top-k", "1.5"},
           {"sample", "r", "--seed", "-1"},
           {"sample", "r", "--seed", "18446744073709551616"},
           {"sample", "r", "--seed"},
           {"sample", "r", "--bogus"}}) {
    EXPECT_THROW(parse_cli(args), UsageError) << args.back();
  }
}

TEST(Cli, SweepOptionsInBothForms) {
  const CliCommand c = parse_cli({"sweep", "cfg.yaml", "--target", "eval_accuracy=0.88", "--batches=32,64",
                                  "--seeds", "3", "--lr-scaling=sqrt", "--max-epochs", "5", "--dir", "/tmp/s",
                                  "--set", "train.seed=2"});
  EXPECT_EQ(c.kind, CliCommand::Kind::Sweep);
  EXPECT_EQ(c.config_path, "cfg.yaml");
  EXPECT_EQ(c.sweep.target, "eval_accuracy=0.88");
  EXPECT_EQ(c.sweep.batches, "32,64");
  EXPECT_EQ(c.sweep.seeds, 3);
  EXPECT_EQ(c.sweep.lr_scaling, "sqrt");
  EXPECT_EQ(c.sweep.max_epochs, 5);
  EXPECT_EQ(c.sweep.dir, "/tmp/s");
  EXPECT_EQ(c.overrides, (std::vector<std::string>{"train.seed=2"}));
  EXPECT_EQ(parse_cli({"sweep", "cfg.yaml", "--target", "eval_loss=1"}).sweep.batches, "auto");
  EXPECT_EQ(parse_cli({"sweep", "--help"}).kind, CliCommand::Kind::SweepHelp);
  // dtrain launch takes it as it takes train.
  EXPECT_EQ(parse_cli({"launch", "--", "sweep", "cfg.yaml", "--target", "eval_loss=1"}).kind, CliCommand::Kind::Launch);
}

TEST(Cli, SweepMistakesAreUsageErrors) {
  EXPECT_THROW(parse_cli({"sweep", "cfg.yaml"}), UsageError);  // no --target
  EXPECT_THROW(parse_cli({"sweep", "--target", "eval_loss=1"}), UsageError);  // no config
  EXPECT_THROW(parse_cli({"sweep", "cfg.yaml", "--target", "eval_loss=1", "--seeds", "0"}), UsageError);
  EXPECT_THROW(parse_cli({"sweep", "cfg.yaml", "--target", "eval_loss=1", "--lr-scaling", "cube"}), UsageError);
  EXPECT_THROW(parse_cli({"sweep", "cfg.yaml", "--target", "eval_loss=1", "--max-epochs", "x"}), UsageError);
  EXPECT_THROW(parse_cli({"sweep", "cfg.yaml", "--target", "eval_loss=1", "--bogus"}), UsageError);
}

}  // namespace
}  // namespace dtrain::launch
