#include <unistd.h>

#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <memory>

#include "comm/mpi_heartbeat.h"
#include "comm/watchdog.h"
#include "comm/watched_communicator.h"
#include "launch/environment_faults.h"
#include "launch/job.h"
#include "launch/process.h"
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

// Note [Progress mode]: a bar when rank 0 writes to a terminal. Under mpirun that
// cannot be told from the rank (Open MPI gives ranks a pseudo-terminal even when
// mpirun's output goes to a file), so a launched rank draws the bar only when
// DTRAIN_PROGRESS=bar says so (dtrain launch and scripts/run.sh set it from their own
// output); DTRAIN_PROGRESS=lines forces lines anywhere.
bool progress_bar_wanted() {
  const char* mode = std::getenv("DTRAIN_PROGRESS");
  if (mode != nullptr && std::string(mode) == "bar") return true;
  if (mode != nullptr && std::string(mode) == "lines") return false;
  return launcher_size_hint() == 0 && ::isatty(STDOUT_FILENO) != 0;
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
    const std::unique_ptr<FaultInjector> faults = faults_from_environment();
    options.faults = faults.get();
    options.terminal = progress_bar_wanted();
    // Every collective of training is watched (Note [Collective watchdog]).
    std::unique_ptr<Watchdog> watchdog;
    std::unique_ptr<Communicator> watched;
    std::unique_ptr<Communicator> watched_control;
    Communicator* data = device.comm.get();
    Communicator* control = &process.comm();
    if (process.size() > 1 && config.comm.timeout_s > 0) {
      std::unique_ptr<HeartbeatChannel> channel;
      if (process.thread_multiple()) channel = std::make_unique<MpiHeartbeatChannel>(MPI_COMM_WORLD);
      Watchdog::Hooks hooks;
      // MPI_Abort alone: it ends every rank, and their NCCL kernels with them. The
      // communicator is not aborted from this thread, which would free it while the
      // main thread may still be polling it.
      hooks.abort = [&process](const std::string& message) {
        std::cerr << "dtrain: no progress: " << message << std::endl;
        process.abort_job(kExitRuntime);
      };
      watchdog = std::make_unique<Watchdog>(process.rank(), process.size(), config.comm.timeout_s, std::move(channel),
                                            std::move(hooks));
      watched = std::make_unique<WatchedCommunicator>(*device.comm, *watchdog);
      data = watched.get();
      // The control collectives of training too (a checkpoint's agreement waits for the
      // writer, whose file system may hang), once the first step has begun.
      watched_control = std::make_unique<WatchedCommunicator>(process.comm(), *watchdog, /*from_first_step=*/true);
      control = watched_control.get();
      options.on_step = [w = watchdog.get()](int64_t step) { w->set_step(step); };
    }
    const TrainResult result = train(config, *device.ctx, *data, *control, run_dir, std::cout, options);
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
