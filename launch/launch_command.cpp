// `dtrain launch [--nproc N|auto] [--] COMMAND ARGS...`: starts COMMAND (train, plan, sweep)
// on N ranks of this machine through mpirun, one per GPU (or 2 on a machine without
// GPUs) with `auto`, and returns the job's exit code.
//
// Mapping and binding: ranks on GPUs are bound to their NUMA domain, CPU ranks to
// cores / N cores each; with more ranks than cores they are not bound and mpirun may
// oversubscribe. As root, Open MPI's root check is passed only then. SIGINT, SIGTERM,
// SIGUSR1 and SIGUSR2 sent to dtrain launch go to mpirun, which forwards them to the
// ranks (a stop request: Note in launch/stop_signals.h).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "kernels/context.h"
#include "kernels/errors.h"
#include "launch/job.h"

namespace dtrain::launch {

namespace {

volatile sig_atomic_t child_pid = 0;

void forward_signal(int signal) {
  if (child_pid > 0) ::kill(child_pid, signal);
}

std::string self_path() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return "dtrain";
  buf[n] = 0;
  return buf;
}

}  // namespace

std::vector<std::string> launch_arguments(const CliCommand& cmd, int gpus, int cores, bool root,
                                          const std::string& dtrain) {
  const int np = cmd.nproc > 0 ? cmd.nproc : (gpus > 0 ? gpus : 2);
  const char* mpiexec = std::getenv("DTRAIN_MPIEXEC");
  std::vector<std::string> args = {mpiexec != nullptr ? mpiexec : "mpirun", "-np", std::to_string(np)};
  if (root) args.push_back("--allow-run-as-root");
  if (gpus > 0 && np <= gpus) {
    args.insert(args.end(), {"--map-by", "numa", "--bind-to", "numa"});
  } else if (np <= cores) {
    args.insert(args.end(), {"--map-by", "slot:PE=" + std::to_string(cores / np), "--bind-to", "core"});
  } else {
    args.insert(args.end(), {"--oversubscribe", "--bind-to", "none"});
  }
  args.push_back(dtrain);
  args.insert(args.end(), cmd.launched.begin(), cmd.launched.end());
  return args;
}

int run_launch(const CliCommand& cmd) {
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  int gpus = 0;
  try {
    gpus = cuda_device_count();
  } catch (const DeviceError& e) {
    // A GPU that cannot be used: with --nproc N the ranks need not count GPUs here, and
    // each one that wants a GPU (device.kind: auto or cuda) fails with this message
    // itself; without it the number of ranks would silently become the CPU's.
    if (cmd.nproc <= 0) {
      std::cerr << "dtrain launch: " << e.kind() << ": " << e.what()
                << " (dtrain launch counts the GPUs to choose the number of ranks: with --nproc N it does not)"
                << std::endl;
      return e.exit_code();
    }
  }
  const std::vector<std::string> args =
      launch_arguments(cmd, gpus, cores > 0 ? cores : 1, ::geteuid() == 0, self_path());
  std::cerr << "dtrain launch:";
  for (const auto& a : args) std::cerr << " " << a;
  std::cerr << std::endl;

  for (int s : {SIGINT, SIGTERM, SIGUSR1, SIGUSR2}) {
    struct sigaction action {};
    action.sa_handler = forward_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    sigaction(s, &action, nullptr);
  }
  // The ranks cannot see whether this output is a terminal (Note [Progress mode]).
  ::setenv("DTRAIN_PROGRESS", ::isatty(STDOUT_FILENO) ? "bar" : "lines", 0);
  const pid_t pid = ::fork();
  if (pid < 0) {
    std::cerr << "dtrain launch: cannot start mpirun: " << std::strerror(errno) << std::endl;
    return kExitRuntime;
  }
  if (pid == 0) {
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execvp(argv[0], argv.data());
    std::cerr << "dtrain launch: cannot run '" << args[0] << "': " << std::strerror(errno)
              << "; install Open MPI (Debian: apt-get install openmpi-bin) or set DTRAIN_MPIEXEC" << std::endl;
    ::_exit(kExitRuntime);
  }
  child_pid = pid;
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return kExitInternal;
}

}  // namespace dtrain::launch
