// What every command that runs on the job's ranks shares (dtrain train, dtrain plan):
// the config, the process (MPI when launched by a launcher), the device and the
// communicators, and the one place where errors become messages and exit codes
// (DESIGN contract 7).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "launch/cli.h"
#include "launch/device_setup.h"
#include "launch/process.h"
#include "runtime/config.h"

namespace dtrain::launch {

// Loads the config, starts the process and the device, and runs `body` on every rank.
// Returns the exit code; every error is reported here, once when all ranks agreed.
int run_job(const CliCommand& cmd, const std::function<void(const Config&, Process&, DeviceSetup&)>& body);

// `dtrain train`: the run directory, then training.
int run_train(const CliCommand& cmd);
// `dtrain plan`: the batch plan, printed by rank 0 (text or --json).
int run_plan(const CliCommand& cmd);
// `dtrain trace merge`: the ranks' timelines of a run in one file.
int run_trace_merge(const CliCommand& cmd);
// `dtrain plot`: the runs' metrics drawn by gnuplot into one image.
int run_plot(const CliCommand& cmd);
// `dtrain sample`: text from a trained GPT's checkpoint, on this machine's CPU.
int run_sample(const CliCommand& cmd);
// `dtrain launch`: the command on N ranks of this machine through mpirun.
int run_launch(const CliCommand& cmd);
// The mpirun command line of `dtrain launch` (pure, for tests).
std::vector<std::string> launch_arguments(const CliCommand& cmd, int gpus, int cores, bool root,
                                          const std::string& dtrain);

}  // namespace dtrain::launch
