#include "launch/process.h"

#include <mpi.h>
#include <sched.h>
#include <unistd.h>

#include <cstdlib>
#include <thread>

#include "comm/gather_strings.h"
#include "comm/mpi_check.h"
#include "comm/mpi_communicator.h"
#include "comm/self_communicator.h"
#include "kernels/errors.h"
#include "launch/launcher_env.h"
#include "runtime/setup_agreement.h"

namespace dtrain::launch {
namespace {

int env_int(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::atoi(v) : -1;
}

}  // namespace

int launcher_rank_hint() {
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"}) {
    const int r = env_int(name);
    if (r >= 0) return r;
  }
  return 0;
}

int launcher_size_hint() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"}) {
    const int n = env_int(name);
    if (n > 0) return n;
  }
  return std::getenv("PMIX_RANK") != nullptr ? 1 : 0;
}

Process::Process(const std::string& backend) {
  const int launched = launcher_size_hint();
  if (backend == "self" && launched > 1) {
    throw ConfigError("comm.backend is 'self' (one rank) but the launcher started " +
                      std::to_string(launched) + " ranks; use comm.backend: mpi or auto");
  }
  // NCCL needs MPI too: to exchange its unique id, for the control collectives, and to
  // know the ranks at all.
  mpi_ = backend == "mpi" || ((backend == "auto" || backend == "nccl") && launched > 0);
  if (!mpi_) {
    const std::string wrong = check_launcher_view(launcher_environment(), 0, 1);
    if (!wrong.empty()) throw UsageError(wrong);
    comm_ = std::make_unique<SelfCommunicator>();
    return;
  }
  int provided = 0;
  // The collective watchdog's heartbeats (comm/watchdog.h) come from a thread of
  // their own while the main thread runs collectives.
  DTRAIN_MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided));
  thread_multiple_ = provided >= MPI_THREAD_MULTIPLE;
  try {
    DTRAIN_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    DTRAIN_MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local_));
    DTRAIN_MPI_CHECK(MPI_Comm_set_errhandler(local_, MPI_ERRORS_RETURN));
    DTRAIN_MPI_CHECK(MPI_Comm_rank(local_, &local_rank_));
    DTRAIN_MPI_CHECK(MPI_Comm_size(local_, &local_size_));
    auto mpi = std::make_unique<MpiCommunicator>(MPI_COMM_WORLD);
    mpi_comm_ = mpi.get();
    comm_ = std::move(mpi);
    // Every rank checks its own variables, and all learn the outcome together.
    std::exception_ptr error;
    const std::string wrong = check_launcher_view(launcher_environment(), comm_->rank(), comm_->size());
    if (!wrong.empty()) error = std::make_exception_ptr(UsageError(wrong));
    agree_on_setup(*comm_, error);
  } catch (...) {
    // The destructor does not run for a constructor that throws: end MPI here.
    comm_.reset();
    mpi_comm_ = nullptr;
    if (local_ != MPI_COMM_NULL) MPI_Comm_free(&local_);
    MPI_Finalize();
    throw;
  }
}

std::string Process::node_name() const {
  char name[256] = {0};
  if (gethostname(name, sizeof(name) - 1) != 0) return "unknown";
  return name;
}

std::vector<std::string> Process::node_names() const {
  if (!mpi_) return {node_name()};
  return all_gather_strings(MPI_COMM_WORLD, node_name());
}

std::vector<std::string> Process::gather_on_node(const std::string& mine) const {
  if (!mpi_) return {mine};
  return all_gather_strings(local_, mine);
}

Process::~Process() {
  comm_.reset();
  if (mpi_) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) {
      MPI_Comm_free(&local_);
      MPI_Finalize();
    }
  }
}

int Process::cpu_threads(int requested) const {
  if (requested > 0) return requested;
  cpu_set_t set;
  int allowed = static_cast<int>(std::thread::hardware_concurrency());
  if (sched_getaffinity(0, sizeof(set), &set) == 0) allowed = CPU_COUNT(&set);
  const int node = static_cast<int>(std::thread::hardware_concurrency());
  const int share = node / (local_size_ > 0 ? local_size_ : 1);
  const int threads = std::min(allowed, share);
  return threads > 0 ? threads : 1;
}

void Process::abort_job(int code) {
  if (mpi_ && size() > 1) MPI_Abort(MPI_COMM_WORLD, code);
}

}  // namespace dtrain::launch
