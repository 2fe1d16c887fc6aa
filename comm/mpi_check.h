// DTRAIN_MPI_CHECK: the MPI member of the CHECK family (kernels/check.h). Throws
// CommError naming the statement, file:line, this process's rank and MPI's error
// string. MPI must be set to return errors (launch/ sets MPI_ERRORS_RETURN).
#pragma once

#include <mpi.h>

#include <string>

#include "kernels/check.h"

namespace dtrain::detail {

inline bool mpi_ok(int status) { return status == MPI_SUCCESS; }

inline std::string mpi_error_string(int status) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(status, text, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(status);
  return std::string(text, static_cast<size_t>(len));
}

inline std::string mpi_where() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  int rank = -1;
  if (initialized) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return "rank " + std::to_string(rank);
}

}  // namespace dtrain::detail

#define DTRAIN_MPI_CHECK(statement)                                                     \
  DTRAIN_CHECK_LIB(::dtrain::CommError, "MPI", statement, ::dtrain::detail::mpi_ok,     \
                   ::dtrain::detail::mpi_error_string, ::dtrain::detail::mpi_where())
