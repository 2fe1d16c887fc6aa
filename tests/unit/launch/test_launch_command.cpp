// dtrain launch: the command line it parses and the mpirun command it builds (pure).
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "kernels/errors.h"
#include "launch/cli.h"
#include "launch/job.h"

namespace dtrain::launch {
namespace {

bool has(const std::vector<std::string>& v, const std::vector<std::string>& run) {
  return std::search(v.begin(), v.end(), run.begin(), run.end()) != v.end();
}

TEST(LaunchCommand, ParsesRanksAndTheCommand) {
  const CliCommand c = parse_cli({"launch", "--nproc", "4", "--", "train", "cfg.yaml", "--set", "train.epochs=1"});
  EXPECT_EQ(c.kind, CliCommand::Kind::Launch);
  EXPECT_EQ(c.nproc, 4);
  EXPECT_EQ(c.launched, (std::vector<std::string>{"train", "cfg.yaml", "--set", "train.epochs=1"}));
  EXPECT_EQ(parse_cli({"launch", "--nproc=auto", "plan", "cfg.yaml"}).nproc, 0);
  EXPECT_EQ(parse_cli({"launch", "--help"}).kind, CliCommand::Kind::LaunchHelp);
}

TEST(LaunchCommand, BadUseSaysWhatWorks) {
  EXPECT_THROW(parse_cli({"launch", "--nproc", "zero", "--", "train", "c.yaml"}), UsageError);
  EXPECT_THROW(parse_cli({"launch", "--nproc", "0", "--", "train", "c.yaml"}), UsageError);
  EXPECT_THROW(parse_cli({"launch", "--", "dance"}), UsageError);
  EXPECT_THROW(parse_cli({"launch", "--", "train"}), UsageError);  // the command's own error: no config
  EXPECT_THROW(parse_cli({"launch", "--ranks", "2"}), UsageError);
}

TEST(LaunchCommand, AutoTakesOneRankPerGpuBoundToItsNumaDomain) {
  const std::vector<std::string> a = launch_arguments(parse_cli({"launch", "--", "train", "c.yaml"}), 8, 64, false, "/bin/dtrain");
  EXPECT_TRUE(has(a, {"mpirun", "-np", "8"}));
  EXPECT_TRUE(has(a, {"--map-by", "numa", "--bind-to", "numa"}));
  EXPECT_TRUE(has(a, {"/bin/dtrain", "train", "c.yaml"}));
  EXPECT_EQ(std::count(a.begin(), a.end(), "--allow-run-as-root"), 0);
}

TEST(LaunchCommand, CpuRanksShareTheCoresOrOversubscribe) {
  const CliCommand two = parse_cli({"launch", "--nproc", "2", "--", "train", "c.yaml"});
  EXPECT_TRUE(has(launch_arguments(two, 0, 16, false, "d"), {"--map-by", "slot:PE=8", "--bind-to", "core"}));
  const CliCommand four = parse_cli({"launch", "--nproc", "4", "--", "train", "c.yaml"});
  const auto over = launch_arguments(four, 0, 2, true, "d");
  EXPECT_TRUE(has(over, {"--oversubscribe", "--bind-to", "none"}));
  EXPECT_TRUE(has(over, {"-np", "4", "--allow-run-as-root"}));
  EXPECT_TRUE(has(launch_arguments(parse_cli({"launch", "--", "train", "c.yaml"}), 0, 2, false, "d"), {"-np", "2"}));
}

}  // namespace
}  // namespace dtrain::launch
