#pragma once

#include "launch/cli.h"

namespace dtrain::launch {

// Runs `dtrain train`: config, process setup, context, run directory, training.
// Returns the exit code; every error is reported here (DESIGN contract 7).
int run_train(const CliCommand& cmd);

}  // namespace dtrain::launch
