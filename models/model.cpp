// TEMPORARY (gpt-model branch): the Model base until the lead's port lands; the
// lead resolves the merge with their own version.
#include "models/model.h"

#include <string>

#include "kernels/errors.h"
#include "kernels/ops.h"

namespace dtrain {

Model::Model(Context& ctx, int64_t param_count)
    : ctx_(ctx),
      param_count_(param_count),
      params_(ctx.allocator(), static_cast<size_t>(param_count) * sizeof(float), MemoryCategory::Params),
      grads_(ctx.allocator(), static_cast<size_t>(param_count) * sizeof(float), MemoryCategory::Grads) {
  ops::fill(ctx_, params_.as<float>(), param_count_, 0.0f);
  ops::fill(ctx_, grads_.as<float>(), param_count_, 0.0f);
}

void Model::load_params(const float* host, int64_t count) {
  if (count != param_count_) {
    throw DataError("parameters: got " + std::to_string(count) + " values for a model of " +
                    std::to_string(param_count_) + " parameters");
  }
  ops::copy_from_host(ctx_, params_.as<float>(), host, static_cast<size_t>(count) * sizeof(float));
}

void Model::zero_grads() { ops::fill(ctx_, grads_.as<float>(), param_count_, 0.0f); }

}  // namespace dtrain
