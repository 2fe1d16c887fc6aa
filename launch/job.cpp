#include "launch/job.h"

#include <iostream>
#include <memory>
#include <optional>

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
  // Outside the try, so that a rank failing alone can abort its communicator before
  // it is destroyed: destroying a healthy NCCL communicator waits for the peers, which
  // may be inside a collective that will never complete.
  std::optional<DeviceSetup> device;
  const auto fail_alone = [&](int code) {
    if (device && device->comm) device->comm->abort();
    process->abort_job(code);
    return code;
  };
  try {
    device.emplace(setup_device(config, *process));
    body(config, *process, *device);
    return kExitOk;
  } catch (const Error& e) {
    if (e.agreed()) {  // every rank knows (Note [Setup agreement]): end cleanly
      if (e.should_report()) report(e, rank, size);
      return e.exit_code();
    }
    report(e, rank, size);  // first: the abort must not swallow the cause
    return fail_alone(e.exit_code());
  } catch (const std::exception& e) {
    std::cerr << "dtrain: internal error on rank " << rank << " of " << size << ": " << e.what()
              << "; please report it with the config and command line" << std::endl;
    return fail_alone(kExitInternal);
  }
}

}  // namespace dtrain::launch
