#include "kernels/gemm_autotune.h"

#include <cstddef>

#include "kernels/check.h"

namespace dtrain {

int choose_gemm_candidate(std::span<const double> ms, double margin) {
  DTRAIN_ASSERT(margin >= 0.0 && margin < 1.0, "choose_gemm_candidate: margin " << margin << " is not in [0, 1)");
  int best = -1;
  for (size_t i = 0; i < ms.size(); ++i) {
    if (ms[i] < 0.0) continue;
    if (best < 0 || ms[i] < ms[static_cast<size_t>(best)]) best = static_cast<int>(i);
  }
  if (best <= 0 || ms.empty() || ms[0] < 0.0) return best;
  return ms[static_cast<size_t>(best)] < (1.0 - margin) * ms[0] ? best : 0;
}

}  // namespace dtrain
