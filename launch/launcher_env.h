// The launcher's view of the job (OMPI_*, PMI_*, PMIX_RANK, SLURM_*) against MPI's
// own: when they disagree the ranks are not the job the launcher started (srun
// without --mpi=pmix makes N one-rank jobs that would all write one run directory;
// an mpirun of another MPI library does the same).
#pragma once

#include <map>
#include <string>

namespace dtrain::launch {

// "" when every launcher variable present agrees with MPI's rank and size (self
// mode: rank 0 of 1); otherwise the message naming the variables and what to do.
// SLURM_PROCID and SLURM_NTASKS count only in a task that srun started directly
// (SLURM_STEP_ID set, and no mpirun in between), since mpirun inside an allocation
// inherits the batch step's values.
std::string check_launcher_view(const std::map<std::string, std::string>& env, int mpi_rank, int mpi_size);

// The variables check_launcher_view reads, from this process's environment.
std::map<std::string, std::string> launcher_environment();

}  // namespace dtrain::launch
