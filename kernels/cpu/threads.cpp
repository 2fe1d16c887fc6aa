#include <cblas.h>
#include <omp.h>

#include "kernels/cpu/cpu_backend.h"

namespace dtrain::cpu {

void set_num_threads(int n) {
  if (n < 1) n = 1;
  openblas_set_num_threads(n);
  omp_set_num_threads(n);
}

}  // namespace dtrain::cpu
