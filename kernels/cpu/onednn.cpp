#include "kernels/cpu/onednn.h"

#include <oneapi/dnnl/dnnl_debug.h>
#include <omp.h>

#include "kernels/check.h"
#include "kernels/errors.h"

namespace dtrain::cpu {

const dnnl::engine& onednn_engine() {
  static const dnnl::engine engine = [] {
    DTRAIN_ONEDNN_CHECK(dnnl::set_primitive_cache_capacity(0), "making the CPU engine");
    return DTRAIN_ONEDNN_CHECK(dnnl::engine(dnnl::engine::kind::cpu, 0), "making the CPU engine");
  }();
  return engine;
}

void throw_onednn_error(const char* statement, const char* file, int line, const dnnl::error& error,
                        const std::string& where) {
  const std::string detail = std::string(dnnl_status2str(error.status)) + ": " + error.what();
  if (error.status == dnnl_out_of_memory) {
    detail::throw_library_error<OutOfMemoryError>("oneDNN", statement, file, line, detail, where);
  }
  detail::throw_library_error<DeviceError>("oneDNN", statement, file, line, detail, where);
}

OmpThreadsScope::OmpThreadsScope(int threads) : saved_(omp_get_max_threads()) {
  omp_set_num_threads(threads);
}

OmpThreadsScope::~OmpThreadsScope() { omp_set_num_threads(saved_); }

}  // namespace dtrain::cpu
