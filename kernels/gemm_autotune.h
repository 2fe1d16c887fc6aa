// Which of a GEMM library's candidate algorithms to keep, from their measured times, as
// a pure function, so that the rule is tested on the CPU without a GPU (Note [GEMM
// autotuning], kernels/cuda/linear_lt.h, says where the times come from and why the
// heuristic's first choice is kept unless another beats it clearly).
#pragma once

#include <span>

namespace dtrain {

// `ms`: each candidate's time per call in the heuristic's order (its first choice at
// index 0); a negative time marks one that refused the call. Returns the index to keep:
//  - the first choice, unless another usable candidate takes less than (1 - margin) of
//    its time: then the fastest of those, the earliest of equals;
//  - where the first choice refused, the fastest usable one, the earliest of equals;
//  - -1 where none is usable.
// `margin` (a fraction in [0, 1)) keeps timing noise from trading the heuristic's
// choice for another that is no faster, and from changing the choice between runs.
int choose_gemm_candidate(std::span<const double> ms, double margin);

}  // namespace dtrain
