// The communicator the MPI tests share: built once over MPI_COMM_WORLD after
// MPI_Init (in mpi_test_main.cpp) and released before MPI_Finalize.
#pragma once

#include <memory>

#include "comm/mpi_communicator.h"

namespace dtrain::testing_mpi {

inline std::unique_ptr<MpiCommunicator>& world_slot() {
  static std::unique_ptr<MpiCommunicator> world;
  return world;
}

inline MpiCommunicator& world() {
  auto& w = world_slot();
  if (!w) w = std::make_unique<MpiCommunicator>(MPI_COMM_WORLD);
  return *w;
}

inline void release_world() { world_slot().reset(); }

}  // namespace dtrain::testing_mpi
