// What every command that runs on the job's ranks shares (dtrain train, dtrain plan):
// the config, the process (MPI when launched by a launcher), the device and the
// communicators, and the one place where errors become messages and exit codes
// (DESIGN contract 7).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "comm/watchdog.h"

#include "launch/cli.h"
#include "launch/device_setup.h"
#include "launch/process.h"
#include "runtime/config.h"
#include "runtime/eval_target.h"
#include "runtime/fault_injector.h"
#include "runtime/trainer.h"

namespace dtrain::launch {

// Loads the config, starts the process and the device, and runs `body` on every rank.
// Returns the exit code; every error is reported here, once when all ranks agreed.
int run_job(const CliCommand& cmd, const std::function<void(const Config&, Process&, DeviceSetup&)>& body);

// Training on the job's ranks, with the stop signals, the test faults of the
// environment and, on several ranks, the watchdog over every collective (Note
// [Collective watchdog]). One per job: it serves one run (dtrain train) or one run
// after another (dtrain sweep), every rank calling train() in the same order.
class JobTrainer {
 public:
  JobTrainer(const Config& config, Process& process, DeviceSetup& device);
  ~JobTrainer();
  JobTrainer(const JobTrainer&) = delete;
  JobTrainer& operator=(const JobTrainer&) = delete;
  TrainResult train(const Config& config, const std::string& run_dir, const std::string& resume,
                    const EvalTarget* target);

 private:
  Process& process_;
  DeviceSetup& device_;
  std::unique_ptr<FaultInjector> faults_;
  std::unique_ptr<Watchdog> watchdog_;
  std::unique_ptr<Communicator> watched_, watched_control_;
  Communicator* data_ = nullptr;
  Communicator* control_ = nullptr;
  TrainOptions options_;
};

// `dtrain train`: the run directory, then training.
int run_train(const CliCommand& cmd);
// `dtrain sweep`: one run per global batch (and seed) to a target, the fit and the
// verdict (launch/sweep_command.cpp).
int run_sweep(const CliCommand& cmd);
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
