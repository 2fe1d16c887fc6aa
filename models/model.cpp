#include "models/model.h"

#include <algorithm>
#include <sstream>
#include <utility>
#include <vector>

#include "kernels/check.h"
#include "kernels/errors.h"
#include "kernels/ops.h"

namespace dtrain {

Model::Model(Context& ctx, int64_t param_count, DType compute)
    : ctx_(ctx), param_count_(param_count), compute_(compute), master_range_{0, param_count} {
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

float* Model::whole_params() {
  DTRAIN_ASSERT(!master_is_sharded(), "the fp32 parameters of " << describe() << " are sharded (Note [Sharded "
                                                                      "master weights]): only master() is held");
  return params_.as<float>();
}

void Model::params_changed() {
  if (compute_ == DType::kBF16) ops::convert(ctx_, params(), param_copy(), param_count_);
}

void Model::keep_master_range(FlatRange range) {
  DTRAIN_ASSERT(compute_ == DType::kBF16, describe() << " computes with its fp32 parameters: they cannot be sharded");
  DTRAIN_ASSERT(!master_is_sharded() && range.offset >= 0 && range.count >= 0 &&
                    range.offset + range.count <= param_count_,
                "master range [" << range.offset << ", +" << range.count << ") of " << param_count_);
  // At least one float, so an empty range still has a valid pointer.
  Buffer kept(ctx_.allocator(), static_cast<size_t>(std::max<int64_t>(1, range.count)) * sizeof(float),
              MemoryCategory::Params);
  if (range.count > 0) {  // once, at set-up: through the host
    std::vector<float> values(static_cast<size_t>(range.count));
    ops::copy_to_host(ctx_, values.data(), params_.as<float>() + range.offset, values.size() * sizeof(float));
    ops::copy_from_host(ctx_, kept.as<float>(), values.data(), values.size() * sizeof(float));
    ctx_.synchronize();
  }
  params_ = std::move(kept);
  master_range_ = range;
}

void Model::load_params(const float* host, int64_t count) {
  if (count != param_count_) {
    std::ostringstream msg;
    msg << "cannot load " << count << " parameters into a model of " << param_count_
        << "; the model config differs from the one that wrote them";
    throw DataError(msg.str());
  }
  if (!master_is_sharded()) {
    ops::copy_from_host(ctx_, params(), host, static_cast<size_t>(count) * sizeof(float));
    params_changed();
    return;
  }
  // Note [Sharded master weights]: the range, and the whole copy rounded on the host
  // (round to nearest even, as ops::convert does).
  ops::copy_from_host(ctx_, master(), host + master_range_.offset,
                      static_cast<size_t>(master_range_.count) * sizeof(float));
  std::vector<bf16> rounded(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) rounded[static_cast<size_t>(i)] = float_to_bf16(host[i]);
  ops::copy_from_host(ctx_, param_copy(), rounded.data(), rounded.size() * sizeof(bf16));
  ctx_.synchronize();  // `rounded` goes out of scope
}

void Model::set_recompute(Recompute recompute) {
  DTRAIN_ASSERT(recompute == Recompute::kNone, describe() << " has no blocks to recompute");
}

void Model::zero_grads() { ops::fill(ctx_, grads(), param_count_, 0.0f); }

}  // namespace dtrain
