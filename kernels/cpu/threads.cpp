#include <cblas.h>
#include <omp.h>

#include "kernels/cpu/cpu_backend.h"

namespace dtrain::cpu {

void set_num_threads(int n) {
  if (n < 1) n = 1;
  // OpenBLAS stays on the calling thread; gemm() splits large products over the
  // OpenMP team instead (Note [One thread pool] in gemm.cpp).
  openblas_set_num_threads(1);
  omp_set_num_threads(n);
}

}  // namespace dtrain::cpu
