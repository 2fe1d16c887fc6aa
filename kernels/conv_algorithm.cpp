#include "kernels/conv_algorithm.h"

namespace dtrain {

namespace {

// Among the usable candidates of the given determinism: the first within the limit,
// else the one needing the least workspace (the first of equals); -1 when none.
int pick(std::span<const ConvAlgoCandidate> candidates, bool deterministic, size_t limit) {
  int least = -1;
  for (size_t i = 0; i < candidates.size(); ++i) {
    const ConvAlgoCandidate& c = candidates[i];
    if (!c.usable || c.deterministic != deterministic) continue;
    if (c.workspace_bytes <= limit) return static_cast<int>(i);
    if (least < 0 || c.workspace_bytes < candidates[static_cast<size_t>(least)].workspace_bytes) {
      least = static_cast<int>(i);
    }
  }
  return least;
}

}  // namespace

ConvAlgoSelection conv_select_algorithm(std::span<const ConvAlgoCandidate> candidates,
                                        size_t preferred_workspace_bytes) {
  for (const bool deterministic : {true, false}) {
    const int i = pick(candidates, deterministic, preferred_workspace_bytes);
    if (i >= 0) return {i, deterministic};
  }
  return {};
}

}  // namespace dtrain
