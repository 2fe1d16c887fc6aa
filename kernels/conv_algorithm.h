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
  int index = -1;              // into the candidates; -1: none is usable
  bool deterministic = false;  // of the chosen one
};

// Deterministic before fast, and within the preferred workspace before beyond it:
//  1. the first usable deterministic candidate needing at most preferred_workspace_bytes;
//  2. else the usable deterministic one needing the least workspace (the first of
//     equals), if that is at most deterministic_cap_bytes;
//  3. else the first usable non-deterministic one within the preferred workspace;
//  4. else the usable one needing the least workspace, deterministic first of equals.
// The caller charges the chosen workspace to the memory model, so a choice beyond the
// preferred figure costs micro-batch, never a failure here. The cap keeps a model
// that ran with a non-deterministic algorithm from failing to fit at all for the
// sake of a deterministic one whose workspace would take much of the device.
ConvAlgoSelection conv_select_algorithm(std::span<const ConvAlgoCandidate> candidates,
                                        size_t preferred_workspace_bytes, size_t deterministic_cap_bytes);

// Fast before deterministic, where the user gave up bit-exact runs for speed
// (precision.deterministic: false): the first usable candidate (the heuristics'
// fastest) within preferred_workspace_bytes, whatever its determinism; else the usable
// one needing the least workspace, deterministic first of equals.
ConvAlgoSelection conv_select_fastest(std::span<const ConvAlgoCandidate> candidates,
                                      size_t preferred_workspace_bytes);

}  // namespace dtrain
