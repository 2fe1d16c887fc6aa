#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <iostream>

#include "launch/job.h"
#include "launch/stop_signals.h"
#include "runtime/trainer.h"

namespace dtrain::launch {
namespace {

std::string default_run_dir(const std::string& config_path) {
  const std::time_t now = std::time(nullptr);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", std::localtime(&now));
  return "runs/" + std::filesystem::path(config_path).stem().string() + "-" + stamp;
}

// DTRAIN_TEST_NAN_AT_STEP=N (and DTRAIN_TEST_NAN_RANK=R) put a NaN into rank R's
// gradient at step N, for the tests of train.on_nonfinite; DTRAIN_TEST_STOP_AT_STEP=N
// asks to stop at step N as a signal would, for exact resume tests.
FaultHooks fault_hooks_from_environment() {
  FaultHooks hooks;
  if (const char* step = std::getenv("DTRAIN_TEST_NAN_AT_STEP")) hooks.nan_at_step = std::atoll(step);
  if (const char* rank = std::getenv("DTRAIN_TEST_NAN_RANK")) hooks.nan_rank = std::atoi(rank);
  if (const char* step = std::getenv("DTRAIN_TEST_STOP_AT_STEP")) hooks.stop_at_step = std::atoll(step);
  return hooks;
}

}  // namespace

int run_train(const CliCommand& cmd) {
  bool stopped = false, leader = false;
  const int code = run_job(cmd, [&](const Config& config, Process& process, DeviceSetup& device) {
    const std::string run_dir = cmd.run_dir.empty() ? default_run_dir(cmd.config_path) : cmd.run_dir;
    TrainOptions options;
    options.ranks_sharing_device = device.ranks_sharing_device;
    options.resume = cmd.resume;
    options.stop_requested = install_stop_signal_handlers();
    options.hooks = fault_hooks_from_environment();
    const TrainResult result = train(config, *device.ctx, *device.comm, process.comm(), run_dir, std::cout, options);
    stopped = result.stopped;
    leader = process.rank() == 0;
  });
  if (code == kExitOk && stopped) {
    if (leader) {
      std::cout << "dtrain: stopped after a checkpoint (exit code " << kExitStopped
                << "); continue with: dtrain train ... --resume auto" << std::endl;
    }
    return kExitStopped;
  }
  return code;
}

}  // namespace dtrain::launch
