// Rank discovery: the launcher's variables cross-checked with MPI's view.
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "launch/launcher_env.h"

namespace dtrain::launch {
namespace {

TEST(LauncherEnv, AgreeingVariablesPass) {
  EXPECT_EQ(check_launcher_view({}, 0, 1), "");
  EXPECT_EQ(check_launcher_view({{"OMPI_COMM_WORLD_RANK", "3"}, {"OMPI_COMM_WORLD_SIZE", "4"}, {"PMIX_RANK", "3"}}, 3, 4), "");
  // srun --mpi=pmix: Slurm's own variables agree too.
  EXPECT_EQ(check_launcher_view({{"PMIX_RANK", "1"}, {"SLURM_PROCID", "1"}, {"SLURM_NTASKS", "2"}, {"SLURM_STEP_ID", "0"}}, 1, 2),
            "");
}

TEST(LauncherEnv, MpirunInsideAnAllocationIgnoresTheBatchStepsSlurmValues) {
  // Ranks of mpirun inherit SLURM_PROCID=0 of the batch script; OMPI_* are the truth.
  EXPECT_EQ(check_launcher_view({{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "2"}, {"SLURM_PROCID", "0"},
                                 {"SLURM_NTASKS", "2"}, {"SLURM_STEP_ID", "0"}},
                                1, 2),
            "");
  // The batch step itself (id 4294967294) is no srun task either.
  EXPECT_EQ(check_launcher_view({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "4"}, {"SLURM_STEP_ID", "4294967294"}}, 0, 1), "");
}

TEST(LauncherEnv, SrunWithoutPmixIsNamed) {
  // srun without --mpi=pmix: every task is a one-rank MPI job.
  const std::string m =
      check_launcher_view({{"SLURM_PROCID", "1"}, {"SLURM_NTASKS", "2"}, {"SLURM_STEP_ID", "0"}}, 0, 1);
  EXPECT_NE(m.find("SLURM_PROCID=1, SLURM_NTASKS=2"), std::string::npos) << m;
  EXPECT_NE(m.find("rank 0 of 1"), std::string::npos) << m;
  EXPECT_NE(m.find("srun --mpi=pmix"), std::string::npos) << m;
}

TEST(LauncherEnv, AnotherMpisLauncherIsNamed) {
  const std::string m = check_launcher_view({{"PMI_RANK", "2"}, {"PMI_SIZE", "4"}}, 0, 1);
  EXPECT_NE(m.find("PMI_RANK=2, PMI_SIZE=4"), std::string::npos) << m;
  EXPECT_NE(check_launcher_view({{"OMPI_COMM_WORLD_SIZE", "x"}}, 0, 1).find("OMPI_COMM_WORLD_SIZE=x"), std::string::npos);
}

}  // namespace
}  // namespace dtrain::launch
