#include "kernels/conv_algorithm.h"

namespace dtrain {

ConvAlgoSelection conv_select_algorithm(std::span<const ConvAlgoCandidate> candidates,
                                        size_t workspace_limit_bytes) {
  ConvAlgoSelection none;
  for (const bool need_deterministic : {true, false}) {
    for (size_t i = 0; i < candidates.size(); ++i) {
      const ConvAlgoCandidate& c = candidates[i];
      if (!c.usable) continue;
      if (need_deterministic && !c.deterministic) continue;
      if (c.workspace_bytes > workspace_limit_bytes) {
        none.workspace_too_large = true;
        continue;
      }
      return {static_cast<int>(i), c.deterministic, false};
    }
  }
  return none;
}

}  // namespace dtrain
