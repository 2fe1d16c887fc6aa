// The choice of a convolution algorithm from a library's ranked candidates, as a pure
// function, so that the rule is tested on the CPU without cuDNN (Note [cuDNN algorithm
// choice], kernels/cuda/conv2d_plan.h, says why it is this rule).
#pragma once

#include <cstddef>
#include <span>

namespace dtrain {

// One candidate as the library's heuristics describe it, in their order (fastest first).
struct ConvAlgoCandidate {
  int algo = 0;                // the library's id for it (a cuDNN enum value)
  bool usable = false;         // supported for this shape, with an allowed math type,
                               // and its workspace size known
  bool deterministic = false;  // the same inputs give the same bits every run
  size_t workspace_bytes = 0;  // with the math type it would run with
};

struct ConvAlgoSelection {
  int index = -1;                    // into the candidates; -1: none was chosen
  bool deterministic = false;        // of the chosen one
  bool workspace_too_large = false;  // a usable candidate was refused for its workspace alone
};

// The first usable candidate that is deterministic and needs at most
// `workspace_limit_bytes`; else the first usable one within the limit.
ConvAlgoSelection conv_select_algorithm(std::span<const ConvAlgoCandidate> candidates,
                                        size_t workspace_limit_bytes);

}  // namespace dtrain
