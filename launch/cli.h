// The dtrain command line:
//   dtrain --help
//   dtrain train CONFIG.yaml [--set key=value]... [--run-dir DIR]
#pragma once

#include <string>
#include <vector>

namespace dtrain::launch {

struct CliCommand {
  enum class Kind { Help, TrainHelp, Train } kind = Kind::Help;
  std::string config_path;
  std::vector<std::string> overrides;  // "key=value", in order
  std::string run_dir;                 // empty: runs/<config stem>-<time>
};

// Throws UsageError for anything it does not understand, with the usage line.
CliCommand parse_cli(const std::vector<std::string>& args);

const char* main_help();
const char* train_help();

}  // namespace dtrain::launch
