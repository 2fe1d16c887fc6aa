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

JobTrainer::JobTrainer(const Config& config, Process& process, DeviceSetup& device)
    : process_(process), device_(device), faults_(faults_from_environment()) {
  options_.ranks_sharing_device = device.ranks_sharing_device;
  options_.stop_requested = install_stop_signal_handlers();
  options_.faults = faults_.get();
  options_.terminal = progress_bar_wanted();
  data_ = device.comm.get();
  control_ = &process.comm();
  // Every collective of training is watched (Note [Collective watchdog]).
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
    // Gathered now, while every rank answers (Note [Naming the node]).
    watchdog_ = std::make_unique<Watchdog>(process.rank(), process.size(), config.comm.timeout_s, std::move(channel),
                                           std::move(hooks), /*start_thread=*/true, process.node_names());
    watched_ = std::make_unique<WatchedCommunicator>(*device.comm, *watchdog_);
    data_ = watched_.get();
    // The control collectives of training too (a checkpoint's agreement waits for the
    // writer, whose file system may hang), once the first step has begun.
    watched_control_ = std::make_unique<WatchedCommunicator>(process.comm(), *watchdog_, /*from_first_step=*/true);
    control_ = watched_control_.get();
    options_.on_step = [w = watchdog_.get()](int64_t step) { w->set_step(step); };
  }
}

JobTrainer::~JobTrainer() = default;

TrainResult JobTrainer::train(const Config& config, const std::string& run_dir, const std::string& resume,
                              const EvalTarget* target) {
  TrainOptions options = options_;
  options.resume = resume;
  options.target = target;
  return dtrain::train(config, *device_.ctx, *data_, *control_, run_dir, std::cout, options);
}

int run_train(const CliCommand& cmd) {
  bool stopped = false, leader = false;
  const int code = run_job(cmd, [&](const Config& config, Process& process, DeviceSetup& device) {
    const std::string run_dir = cmd.run_dir.empty() ? default_run_dir(cmd.config_path) : cmd.run_dir;
    JobTrainer trainer(config, process, device);
    const TrainResult result = trainer.train(config, run_dir, cmd.resume, nullptr);
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
