#include "models/model.h"

#include <sstream>

#include "kernels/check.h"
#include "kernels/errors.h"
#include "kernels/ops.h"

namespace dtrain {

Model::Model(Context& ctx, int64_t param_count, DType compute)
    : ctx_(ctx), param_count_(param_count), compute_(compute) {
  const size_t bytes = static_cast<size_t>(param_count_) * sizeof(float);
  params_ = Buffer(ctx_.allocator(), bytes, MemoryCategory::Params);
  grads_ = Buffer(ctx_.allocator(), bytes, MemoryCategory::Grads);
  if (compute_ == DType::kBF16) {
    param_copy_ = Buffer(ctx_.allocator(), static_cast<size_t>(param_count_) * sizeof(bf16), MemoryCategory::Params);
  }
  // Defined contents before init() or load_params(): a model is never built on garbage.
  ops::fill(ctx_, params(), param_count_, 0.0f);
  params_changed();
  zero_grads();
}

void Model::params_changed() {
  if (compute_ == DType::kBF16) ops::convert(ctx_, params(), param_copy(), param_count_);
}

void Model::load_params(const float* host, int64_t count) {
  if (count != param_count_) {
    std::ostringstream msg;
    msg << "cannot load " << count << " parameters into a model of " << param_count_
        << "; the model config differs from the one that wrote them";
    throw DataError(msg.str());
  }
  ops::copy_from_host(ctx_, params(), host, static_cast<size_t>(count) * sizeof(float));
  params_changed();
}

void Model::set_recompute(Recompute recompute) {
  DTRAIN_ASSERT(recompute == Recompute::kNone, describe() << " has no blocks to recompute");
}

void Model::zero_grads() { ops::fill(ctx_, grads(), param_count_, 0.0f); }

}  // namespace dtrain
