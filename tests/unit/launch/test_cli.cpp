#include <gtest/gtest.h>

#include "kernels/errors.h"
#include "launch/cli.h"

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

TEST(Cli, MistakesAreUsageErrors) {
  EXPECT_THROW(parse_cli({"trian", "cfg.yaml"}), UsageError);
  EXPECT_THROW(parse_cli({"train"}), UsageError);
  EXPECT_THROW(parse_cli({"train", "a.yaml", "b.yaml"}), UsageError);
  EXPECT_THROW(parse_cli({"train", "a.yaml", "--set"}), UsageError);
  EXPECT_THROW(parse_cli({"train", "a.yaml", "--bogus"}), UsageError);
}

}  // namespace
}  // namespace dtrain::launch
