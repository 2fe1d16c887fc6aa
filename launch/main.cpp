// dtrain's command-line entry point: the one place errors become exit codes.
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "kernels/errors.h"
#include "launch/cli.h"
#include "launch/job.h"

namespace {

// Note [OpenMP wait policy]
// Between two parallel loops of a step the OpenMP team's workers wait for the next.
// Asleep (OMP_WAIT_POLICY=PASSIVE) they cost a futex wake-up at every loop, about 60 us
// on a 2-core VM, which a 1-rank MLP step of 1 to 2 ms pays a dozen times; spinning
// until the next loop (ACTIVE) takes cores from the rank's other threads (the data
// loader, cpu-async's queue) and from other processes for as long as the rank waits.
// So dtrain's workers spin for a bounded time, kSpinCount turns of libgomp's wait loop
// (by libgomp's own estimate of 100000 turns a millisecond, about 0.3 ms; a few times
// more or less with the CPU), and then sleep: enough to bridge the host's work between
// a step's loops, not a wait for another rank or the next file. Measured against
// PASSIVE with 2 threads on a 2-core machine, medians of 8 runs: MLP 1.54x, CNN 1.14x,
// GPT 1.39x (bench/RESULTS.md, "The OpenMP workers' wait"). libgomp (the GCC build's
// OpenMP runtime) reads GOMP_SPINCOUNT once, as it loads, before main; so when the user
// has set neither it nor OMP_WAIT_POLICY, dtrain sets it and re-executes itself (same
// pid, so MPI launchers are unaffected). One OpenMP team serves the whole rank (OpenBLAS runs
// single-threaded inside it: Note [One thread pool], kernels/cpu/gemm.cpp), so no
// other pool's threads compete with the spinning ones.
constexpr const char* kSpinCount = "30000";

void ensure_bounded_openmp_spin(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr || std::getenv("GOMP_SPINCOUNT") != nullptr) return;
  setenv("GOMP_SPINCOUNT", kSpinCount, 1);
  execv("/proc/self/exe", argv);
  // exec failed (no /proc): run on with libgomp's default wait, only less well bounded.
}

}  // namespace

int main(int argc, char** argv) {
  ensure_bounded_openmp_spin(argv);
  // A write to a peer that died (a rank's TCP link to a killed node, inside MPI) must
  // fail with EPIPE, which the communicator reports naming the peer, rather than end
  // this rank at once by SIGPIPE with nothing said: a killed node's survivors did so
  // once in tests/cluster's fault trials.
  std::signal(SIGPIPE, SIG_IGN);
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
    case CliCommand::Kind::PlanHelp: std::cout << plan_help(); return kExitOk;
    case CliCommand::Kind::Plan: return run_plan(cmd);
    case CliCommand::Kind::LaunchHelp: std::cout << launch_help(); return kExitOk;
    case CliCommand::Kind::Launch: return run_launch(cmd);
    case CliCommand::Kind::PlotHelp: std::cout << plot_help(); return kExitOk;
    case CliCommand::Kind::Plot: return run_plot(cmd);
    case CliCommand::Kind::TraceHelp: std::cout << trace_help(); return kExitOk;
    case CliCommand::Kind::TraceMerge: return run_trace_merge(cmd);
    case CliCommand::Kind::SampleHelp: std::cout << sample_help(); return kExitOk;
    case CliCommand::Kind::Sample: return run_sample(cmd);
    case CliCommand::Kind::SweepHelp: std::cout << sweep_help(); return kExitOk;
    case CliCommand::Kind::Sweep: return run_sweep(cmd);
  }
  return kExitInternal;
}
