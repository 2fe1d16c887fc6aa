#include "launch/job.h"

#include <iostream>
#include <memory>

#include "kernels/context.h"
#include "kernels/errors.h"

namespace dtrain::launch {
namespace {

void report(const Error& e, int rank, int size) {
  std::cerr << "dtrain: " << e.kind();
  if (size > 1) std::cerr << " on rank " << rank << " of " << size;
  std::cerr << ": " << e.what() << std::endl;
}

}  // namespace

int run_job(const CliCommand& cmd, const std::function<void(const Config&, Process&, DeviceSetup&)>& body) {
  // Before MPI is up, only the launcher's rank 0 speaks: every rank reads the same
  // file and would print the same message.
  const int rank_hint = launcher_rank_hint();
  Config config;
  try {
    config = load_config(cmd.config_path, cmd.overrides);
  } catch (const Error& e) {
    if (rank_hint == 0) report(e, 0, 1);
    return e.exit_code();
  }

  std::unique_ptr<Process> process;
  try {
    process = std::make_unique<Process>(config.comm.backend);
  } catch (const Error& e) {
    // An agreed failure is said by the rank that had it; others only by rank 0.
    if (e.agreed() ? e.should_report() : rank_hint == 0) report(e, rank_hint, launcher_size_hint());
    return e.exit_code();
  }

  const int rank = process->rank();
  const int size = process->size();
  try {
    DeviceSetup device = setup_device(config, *process);
    body(config, *process, device);
    return kExitOk;
  } catch (const Error& e) {
    if (e.agreed()) {  // every rank knows (Note [Setup agreement]): end cleanly
      if (e.should_report()) report(e, rank, size);
      return e.exit_code();
    }
    report(e, rank, size);
    process->abort_job(e.exit_code());
    return e.exit_code();
  } catch (const std::exception& e) {
    std::cerr << "dtrain: internal error on rank " << rank << " of " << size << ": " << e.what()
              << "; please report it with the config and command line" << std::endl;
    process->abort_job(kExitInternal);
    return kExitInternal;
  }
}

}  // namespace dtrain::launch
