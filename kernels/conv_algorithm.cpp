#include "kernels/conv_algorithm.h"

namespace dtrain {

namespace {

// The first usable candidate of the given determinism within the limit; -1 when none.
int first_within(std::span<const ConvAlgoCandidate> candidates, bool deterministic, size_t limit) {
  for (size_t i = 0; i < candidates.size(); ++i) {
    const ConvAlgoCandidate& c = candidates[i];
    if (c.usable && c.deterministic == deterministic && c.workspace_bytes <= limit) return static_cast<int>(i);
  }
  return -1;
}

// The usable candidate needing the least workspace, among those whose determinism is
// `deterministic` (or among all, when `any`); deterministic, then the first, of equals.
int least_workspace(std::span<const ConvAlgoCandidate> candidates, bool deterministic, bool any) {
  int least = -1;
  for (size_t i = 0; i < candidates.size(); ++i) {
    const ConvAlgoCandidate& c = candidates[i];
    if (!c.usable || (!any && c.deterministic != deterministic)) continue;
    if (least < 0) {
      least = static_cast<int>(i);
      continue;
    }
    const ConvAlgoCandidate& l = candidates[static_cast<size_t>(least)];
    if (c.workspace_bytes < l.workspace_bytes ||
        (c.workspace_bytes == l.workspace_bytes && c.deterministic && !l.deterministic)) {
      least = static_cast<int>(i);
    }
  }
  return least;
}

ConvAlgoSelection selection(std::span<const ConvAlgoCandidate> candidates, int i) {
  if (i < 0) return {};
  return {i, candidates[static_cast<size_t>(i)].deterministic};
}

}  // namespace

ConvAlgoSelection conv_select_algorithm(std::span<const ConvAlgoCandidate> candidates,
                                        size_t preferred_workspace_bytes, size_t deterministic_cap_bytes) {
  if (const int i = first_within(candidates, true, preferred_workspace_bytes); i >= 0) return selection(candidates, i);
  if (const int i = least_workspace(candidates, true, false);
      i >= 0 && candidates[static_cast<size_t>(i)].workspace_bytes <= deterministic_cap_bytes) {
    return selection(candidates, i);
  }
  if (const int i = first_within(candidates, false, preferred_workspace_bytes); i >= 0) return selection(candidates, i);
  return selection(candidates, least_workspace(candidates, false, true));
}

ConvAlgoSelection conv_select_fastest(std::span<const ConvAlgoCandidate> candidates,
                                      size_t preferred_workspace_bytes) {
  for (size_t i = 0; i < candidates.size(); ++i) {
    const ConvAlgoCandidate& c = candidates[i];
    if (c.usable && c.workspace_bytes <= preferred_workspace_bytes) return selection(candidates, static_cast<int>(i));
  }
  return selection(candidates, least_workspace(candidates, false, true));
}

}  // namespace dtrain
