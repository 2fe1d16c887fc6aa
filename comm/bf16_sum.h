// The element-wise sum that a bf16 all-reduce (or reduce-scatter) applies when two
// partial results meet.
//
// Note [bf16 sum]
// A collective SUM over DataType::BFloat16 combines partial results two at a time, and
// every combination is stored back in bf16: a + b becomes float_to_bf16(a + b), the
// sum taken in fp32 (exact widening) and rounded once, to nearest even. fp32 has 24
// significant bits, at least 2 * 8 + 2 for bf16's 8, so rounding the fp32 sum to bf16
// gives the exact sum rounded to bf16 (double rounding is innocuous then, Figueroa
// 1995): each combination is correctly rounded, with relative error at most 2^-8. The
// combination is commutative but not associative, so the result depends on the order
// in which the backend combines the ranks: MPI's algorithm (chosen from the world size
// and the message size) or NCCL's ring or tree (NCCL rounds each step's bf16 sum the
// same way). That order is fixed for a given world size, message size and machine, so
// a run is reproducible, and runs on different world sizes differ by the rounding of
// their sums, as fp32 ones differ by summation order, only more (Note [Narrow gradient
// reduction], comm/gradient_reducer.h).
#pragma once

#include <cstddef>

#include "kernels/dtype.h"

namespace dtrain {

// inout[i] = float_to_bf16(bf16_to_float(in[i]) + bf16_to_float(inout[i])), i < n.
void bf16_sum_into(const bf16* in, bf16* inout, size_t n);

}  // namespace dtrain
