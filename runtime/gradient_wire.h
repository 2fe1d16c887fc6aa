// comm.reduce_dtype: the type the gradients are all-reduced in. fp32 reduces the flat
// gradient buffer in place; bf16 narrows each bucket into a staging buffer, reduces
// that, and widens the result back (Note [Narrow gradient reduction],
// comm/gradient_reducer.h). The staging buffer is device memory from the context's
// allocator (DESIGN contract 5), allocated with the model and the optimizer state,
// before planning, so the planner's memory model and probe both count it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "comm/gradient_reducer.h"
#include "kernels/context.h"
#include "kernels/memory.h"

namespace dtrain {

// The staging bytes `reduce_dtype` takes for `params` parameters: none for fp32, two
// per parameter for bf16 (a mirror of the gradients in the wire type).
int64_t gradient_wire_staging_bytes(const std::string& reduce_dtype, int64_t params);

// The staging buffer (counted as gradients), empty for fp32.
Buffer allocate_gradient_wire_staging(Context& ctx, const std::string& reduce_dtype, int64_t params);

// The reducer's wire: none for fp32; for bf16 the staging buffer and ops::convert on
// `ctx` (queued on its stream) to narrow and widen. `staging` outlives the reducer.
std::optional<NarrowWire> gradient_wire(Context& ctx, const std::string& reduce_dtype, const Buffer& staging);

}  // namespace dtrain
