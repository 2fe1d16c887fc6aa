// oneDNN on the CPU (the convolutions, conv2d.cpp): its engine, its member of the CHECK
// family, and the thread count it makes primitives for. Private to kernels/cpu/.
#pragma once

#include <oneapi/dnnl/dnnl.hpp>
#include <oneapi/dnnl/dnnl_version.h>

#include <string>

// The version gate: the convolutions use oneDNN 2's operation descriptors
// (convolution_forward::desc and its kin), which oneDNN 3 removed.
static_assert(DNNL_VERSION_MAJOR == 2, "dtrain's CPU convolutions need oneDNN 2.x (Debian's libdnnl-dev)");

namespace dtrain::cpu {

// The process's oneDNN CPU engine. oneDNN's own primitive cache is off (capacity 0,
// set when the engine is made): the backend's plan cache (conv2d_plan.h) is the only
// one, so that release_plans() frees what it held.
const dnnl::engine& onednn_engine();

// Throws OutOfMemoryError where oneDNN ran out of memory, else DeviceError, naming the
// statement, file:line, `where` and oneDNN's status and message.
[[noreturn]] void throw_onednn_error(const char* statement, const char* file, int line,
                                     const dnnl::error& error, const std::string& where);

// Sets the calling thread's OpenMP thread count for the scope's life. oneDNN sizes a
// primitive's work split for omp_get_max_threads() when it is made.
class OmpThreadsScope {
 public:
  explicit OmpThreadsScope(int threads);
  ~OmpThreadsScope();
  OmpThreadsScope(const OmpThreadsScope&) = delete;
  OmpThreadsScope& operator=(const OmpThreadsScope&) = delete;

 private:
  int saved_;
};

}  // namespace dtrain::cpu

// The oneDNN member of the CHECK family (kernels/check.h), for its C++ API, which
// throws dnnl::error: evaluates to the statement's value, and turns the error into
// throw_onednn_error's. `where` says what was being done (the op and its shape).
#define DTRAIN_ONEDNN_CHECK(statement, where)                                             \
  [&]() -> decltype(auto) {                                                               \
    try {                                                                                 \
      return statement;                                                                   \
    } catch (const dnnl::error& dtrain_onednn_error_) {                                   \
      ::dtrain::cpu::throw_onednn_error(#statement, __FILE__, __LINE__, dtrain_onednn_error_, \
                                        where);                                           \
    }                                                                                     \
  }()
