// One CHECK family for every library the runtime calls (DESIGN contract 7).
// DTRAIN_CHECK_LIB(ErrorType, library, statement, ok, error_string) evaluates the
// statement once, and when `ok(status)` is false throws ErrorType naming the
// statement, file:line and the library's own error string. Backends define their
// short forms (DTRAIN_MPI_CHECK in comm/, DTRAIN_CUDA_CHECK in kernels/cuda/) on it.
#pragma once

#include <sstream>
#include <string>

#include "kernels/errors.h"

namespace dtrain::detail {

template <class ErrorT>
[[noreturn]] void throw_library_error(const char* library, const char* statement,
                                      const char* file, int line, const std::string& detail,
                                      const std::string& where) {
  std::ostringstream msg;
  msg << library << " call failed: " << statement << " at " << file << ":" << line;
  if (!where.empty()) msg << " (" << where << ")";
  msg << ": " << detail;
  throw ErrorT(msg.str());
}

}  // namespace dtrain::detail

#define DTRAIN_CHECK_LIB(ErrorT, library, statement, ok, error_string, where)              \
  do {                                                                                      \
    auto dtrain_status_ = (statement);                                                      \
    if (!(ok(dtrain_status_))) {                                                            \
      ::dtrain::detail::throw_library_error<ErrorT>(library, #statement, __FILE__, __LINE__, \
                                                    error_string(dtrain_status_), where);   \
    }                                                                                       \
  } while (0)

// Internal invariant: a violation is a bug in dtrain, not bad input.
#define DTRAIN_ASSERT(cond, message)                                                   \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      std::ostringstream dtrain_msg_;                                                  \
      dtrain_msg_ << "internal check failed: " #cond " at " << __FILE__ << ":" << __LINE__ \
                  << ": " << message;                                                  \
      throw ::dtrain::Error(dtrain_msg_.str());                                        \
    }                                                                                  \
  } while (0)
