#include "runtime/gradient_wire.h"

#include "kernels/dtype.h"
#include "kernels/errors.h"
#include "kernels/ops.h"

namespace dtrain {

int64_t gradient_wire_staging_bytes(const std::string& reduce_dtype, int64_t params) {
  if (reduce_dtype == "fp32") return 0;
  if (reduce_dtype == "bf16") return params * static_cast<int64_t>(sizeof(bf16));
  throw ConfigError("comm.reduce_dtype '" + reduce_dtype + "' is neither fp32 nor bf16");
}

Buffer allocate_gradient_wire_staging(Context& ctx, const std::string& reduce_dtype, int64_t params) {
  const int64_t bytes = gradient_wire_staging_bytes(reduce_dtype, params);
  if (bytes == 0) return Buffer();
  return Buffer(ctx.allocator(), static_cast<size_t>(bytes), MemoryCategory::Grads);
}

std::optional<NarrowWire> gradient_wire(Context& ctx, const std::string& reduce_dtype, const Buffer& staging) {
  if (gradient_wire_staging_bytes(reduce_dtype, 1) == 0) return std::nullopt;
  DTRAIN_ASSERT(staging.data() != nullptr, "comm.reduce_dtype " << reduce_dtype << " needs its staging buffer");
  NarrowWire wire;
  wire.type = DataType::BFloat16;
  wire.staging = staging.data();
  Context* c = &ctx;
  wire.narrow = [c](const float* from, void* to, int64_t count) {
    ops::convert(*c, from, TypedPtr(to, DType::kBF16), count);
  };
  wire.widen = [c](const void* from, float* to, int64_t count) {
    ops::convert(*c, ConstTypedPtr(from, DType::kBF16), to, count);
  };
  return wire;
}

}  // namespace dtrain
