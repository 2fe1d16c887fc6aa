// dtrain's command-line entry point: the one place errors become exit codes.
#include <iostream>
#include <string>
#include <vector>

#include "kernels/errors.h"
#include "launch/cli.h"
#include "launch/train_command.h"

int main(int argc, char** argv) {
  using namespace dtrain;
  using namespace dtrain::launch;
  CliCommand cmd;
  try {
    cmd = parse_cli(std::vector<std::string>(argv + 1, argv + argc));
  } catch (const Error& e) {
    std::cerr << "dtrain: " << e.kind() << ": " << e.what() << std::endl;
    return e.exit_code();
  }
  switch (cmd.kind) {
    case CliCommand::Kind::Help: std::cout << main_help(); return kExitOk;
    case CliCommand::Kind::TrainHelp: std::cout << train_help(); return kExitOk;
    case CliCommand::Kind::Train: return run_train(cmd);
  }
  return kExitInternal;
}
