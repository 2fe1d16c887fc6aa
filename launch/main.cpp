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

// Note [OpenMP wait policy]: OpenMP's worker threads spin after every parallel loop
// by default, taking the cores OpenBLAS's own threads need for the GEMM that comes
// next; on a 2-core machine that halves training speed. The policy is read once when
// the OpenMP runtime loads, before main, so when the user has not chosen one dtrain
// sets PASSIVE and re-executes itself (same pid, so MPI launchers are unaffected).
void ensure_passive_openmp_wait(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
  execv("/proc/self/exe", argv);
  // exec failed (no /proc): run on with the default policy, only slower.
}

}  // namespace

int main(int argc, char** argv) {
  ensure_passive_openmp_wait(argv);
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
