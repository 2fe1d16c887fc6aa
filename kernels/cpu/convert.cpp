// Conversion between the stored element types (Note [bf16 storage] in kernels/dtype.h).
#include <cstring>
#include <sstream>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/storage.h"
#include "kernels/errors.h"

namespace dtrain::cpu {

DType common_type(const char* op, std::initializer_list<NamedTensor> tensors) {
  const NamedTensor* first = nullptr;
  for (const NamedTensor& t : tensors) {
    if (t.tensor.data == nullptr) continue;
    if (first == nullptr) {
      first = &t;
    } else if (t.tensor.type != first->tensor.type) {
      std::ostringstream msg;
      msg << op << ": " << first->name << " is " << dtype_name(first->tensor.type) << " but " << t.name << " is "
          << dtype_name(t.tensor.type)
          << "; the tensors of one call are all fp32 or all bf16 (Note [bf16 storage] in kernels/dtype.h)";
      throw Error(msg.str());
    }
  }
  return first == nullptr ? DType::kF32 : first->tensor.type;
}

void convert(Context& ctx, ConstTypedPtr x, TypedPtr y, int64_t n) {
  if (n <= 0) return;
  if (x.type == y.type) {
    std::memcpy(y.data, x.data, static_cast<size_t>(n) * dtype_size(x.type));
  } else if (y.type == DType::kBF16) {
    narrow_team(ctx, x.f32(), n, y.b16());
  } else {
    widen_team(ctx, x.b16(), n, y.f32());
  }
}

}  // namespace dtrain::cpu
