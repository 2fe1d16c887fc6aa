// DTRAIN_NCCL_CHECK: the NCCL member of the CHECK family (kernels/check.h). Throws
// CommError naming the statement, file:line, the rank, NCCL's error string and NCCL's
// last message, and says how to get NCCL's own diagnostics. DTRAIN_NCCL_ISSUE is the
// same for calls that may go on in the background; DTRAIN_NCCL_REPORT is the
// non-throwing form for destructors (writes the same message to stderr).
#pragma once

#include <nccl.h>

#include <string>

#include "comm/nccl_version.h"
#include "kernels/check.h"
#include "kernels/cuda/cuda_check.h"

namespace dtrain::detail {

inline bool nccl_ok(ncclResult_t status) { return status == ncclSuccess; }
// A call on a nonblocking communicator that NCCL goes on with in the background
// (Note [Nonblocking NCCL communicator], nccl_communicator.h).
inline bool nccl_issued(ncclResult_t status) { return status == ncclSuccess || status == ncclInProgress; }

inline std::string nccl_error_string(ncclResult_t status) {
  std::string text = ncclGetErrorString(status);
  // The last message is process-wide and may belong to an earlier asynchronous
  // failure; it is still the best lead NCCL gives, so it is shown as such.
  const char* last = ncclGetLastError(nullptr);
  if (last != nullptr && last[0] != '\0') text += std::string(" (NCCL's last message: ") + last + ")";
  return text + "; rerun with NCCL_DEBUG=WARN (or INFO) for NCCL's own diagnostics";
}

inline std::string nccl_where(int rank) { return "rank " + std::to_string(rank); }

}  // namespace dtrain::detail

#define DTRAIN_NCCL_CHECK(statement, rank)                                                  \
  DTRAIN_CHECK_LIB(::dtrain::CommError, "NCCL", statement, ::dtrain::detail::nccl_ok,        \
                   ::dtrain::detail::nccl_error_string, ::dtrain::detail::nccl_where(rank))

// DTRAIN_NCCL_CHECK for the calls on a nonblocking communicator, which also accepts
// ncclInProgress: the caller then waits for the call to complete.
#define DTRAIN_NCCL_ISSUE(statement, rank)                                                  \
  DTRAIN_CHECK_LIB(::dtrain::CommError, "NCCL", statement, ::dtrain::detail::nccl_issued,    \
                   ::dtrain::detail::nccl_error_string, ::dtrain::detail::nccl_where(rank))

#define DTRAIN_NCCL_REPORT(statement)                                                         \
  do {                                                                                        \
    const ncclResult_t dtrain_status_ = (statement);                                          \
    if (dtrain_status_ != ncclSuccess) {                                                      \
      ::dtrain::cuda_detail::report("NCCL", #statement, __FILE__, __LINE__,                   \
                                    ::dtrain::detail::nccl_error_string(dtrain_status_));     \
    }                                                                                         \
  } while (0)
