#include "launch/launcher_env.h"

#include <cstdlib>
#include <sstream>
#include <vector>

namespace dtrain::launch {

namespace {

const char* const kNames[] = {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMI_SIZE", "PMIX_RANK",
                              "SLURM_PROCID", "SLURM_NTASKS", "SLURM_STEP_ID"};

const std::string* find(const std::map<std::string, std::string>& env, const std::string& name) {
  auto it = env.find(name);
  return it == env.end() ? nullptr : &it->second;
}

}  // namespace

std::map<std::string, std::string> launcher_environment() {
  std::map<std::string, std::string> env;
  for (const char* name : kNames) {
    if (const char* v = std::getenv(name)) env[name] = v;
  }
  return env;
}

std::string check_launcher_view(const std::map<std::string, std::string>& env, int mpi_rank, int mpi_size) {
  std::vector<std::pair<std::string, int>> expected = {{"OMPI_COMM_WORLD_RANK", mpi_rank},
                                                       {"OMPI_COMM_WORLD_SIZE", mpi_size},
                                                       {"PMI_RANK", mpi_rank},
                                                       {"PMI_SIZE", mpi_size},
                                                       {"PMIX_RANK", mpi_rank}};
  // A task srun started itself (not through mpirun, not the batch script: Slurm's
  // batch and extern steps have ids near 2^32).
  const std::string* step = find(env, "SLURM_STEP_ID");
  if (step != nullptr && find(env, "OMPI_COMM_WORLD_RANK") == nullptr && std::strtoll(step->c_str(), nullptr, 10) < 4294967290LL) {
    expected.push_back({"SLURM_PROCID", mpi_rank});
    expected.push_back({"SLURM_NTASKS", mpi_size});
  }
  std::ostringstream wrong;
  int count = 0;
  for (const auto& [name, want] : expected) {
    const std::string* value = find(env, name);
    if (value == nullptr) continue;
    char* end = nullptr;
    const long got = std::strtol(value->c_str(), &end, 10);
    if (end == value->c_str() || got != want) wrong << (count++ ? ", " : "") << name << "=" << *value;
  }
  if (count == 0) return "";
  std::ostringstream msg;
  msg << "the launcher's variables (" << wrong.str() << ") disagree with MPI, which sees this process as rank "
      << mpi_rank << " of " << mpi_size << ": the launcher and the MPI library do not know each other. Under Slurm "
      << "use srun --mpi=pmix (or mpirun inside the allocation); otherwise use the mpirun of the MPI dtrain was "
      << "built with (Debian's Open MPI)";
  return msg.str();
}

}  // namespace dtrain::launch
