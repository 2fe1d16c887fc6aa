#include "runtime/optimizer.h"

#include <utility>

#include "kernels/check.h"
#include "kernels/ops.h"

namespace dtrain {
namespace {

class Sgd final : public Optimizer {
 public:
  Sgd(const OptimizerConfig& c, Context& ctx, int64_t n, std::vector<DecaySpan> spans)
      : config_(c), n_(n), spans_(std::move(spans)), momentum_(ctx.allocator(), static_cast<size_t>(n) * sizeof(float), MemoryCategory::Optimizer) {
    ops::fill(ctx, momentum_.as<float>(), n, 0.0f);
  }
  const char* name() const override { return "sgd"; }
  int64_t state_bytes_per_param() const override { return sizeof(float); }
  std::vector<float*> state_buffers() override { return {momentum_.as<float>()}; }
  void step(Context& ctx, float* params, const float* grads, double lr, bf16* params_bf16) override {
    for (const DecaySpan& s : spans_) {
      const SgdHyper h{static_cast<float>(lr), static_cast<float>(config_.momentum),
                       s.decay ? static_cast<float>(config_.weight_decay) : 0.0f, config_.nesterov};
      ops::sgd_update(ctx, params + s.offset, grads + s.offset, momentum_.as<float>() + s.offset, s.count, h);
    }
    if (params_bf16 != nullptr) ops::convert(ctx, params, params_bf16, n_);
  }

 private:
  OptimizerConfig config_;
  int64_t n_;
  std::vector<DecaySpan> spans_;
  Buffer momentum_;
};

class AdamW final : public Optimizer {
 public:
  AdamW(const OptimizerConfig& c, Context& ctx, int64_t n, std::vector<DecaySpan> spans)
      : config_(c), n_(n), spans_(std::move(spans)),
        m_(ctx.allocator(), static_cast<size_t>(n) * sizeof(float), MemoryCategory::Optimizer),
        v_(ctx.allocator(), static_cast<size_t>(n) * sizeof(float), MemoryCategory::Optimizer) {
    ops::fill(ctx, m_.as<float>(), n, 0.0f);
    ops::fill(ctx, v_.as<float>(), n, 0.0f);
  }
  const char* name() const override { return "adamw"; }
  int64_t state_bytes_per_param() const override { return 2 * sizeof(float); }
  std::vector<float*> state_buffers() override { return {m_.as<float>(), v_.as<float>()}; }
  int64_t steps_taken() const override { return t_; }
  void set_steps_taken(int64_t t) override { t_ = t; }
  void step(Context& ctx, float* params, const float* grads, double lr, bf16* params_bf16) override {
    ++t_;
    for (const DecaySpan& s : spans_) {
      const AdamWHyper h{static_cast<float>(lr), static_cast<float>(config_.beta1),
                         static_cast<float>(config_.beta2), static_cast<float>(config_.eps),
                         s.decay ? static_cast<float>(config_.weight_decay) : 0.0f, t_};
      ops::adamw_update(ctx, params + s.offset, grads + s.offset, m_.as<float>() + s.offset,
                        v_.as<float>() + s.offset, s.count, h, params_bf16 ? params_bf16 + s.offset : nullptr);
    }
  }

 private:
  OptimizerConfig config_;
  int64_t n_;
  std::vector<DecaySpan> spans_;
  Buffer m_, v_;
  int64_t t_ = 0;
};

}  // namespace

std::vector<DecaySpan> decay_spans(const std::vector<ParamTensor>& tensors, int64_t n, const std::string& filter) {
  if (filter == "all" || tensors.empty()) return {DecaySpan{0, n, true}};
  std::vector<DecaySpan> spans;
  int64_t at = 0;
  for (const ParamTensor& t : tensors) {
    DTRAIN_ASSERT(t.offset == at, "parameter " << t.name << " at " << t.offset << " leaves a gap after " << at);
    const bool decay = t.shape.rank() >= 2;
    if (!spans.empty() && spans.back().decay == decay) {
      spans.back().count += t.count();
    } else {
      spans.push_back(DecaySpan{t.offset, t.count(), decay});
    }
    at += t.count();
  }
  DTRAIN_ASSERT(at == n, "the parameter tensors cover " << at << " of " << n << " parameters");
  return spans;
}

std::unique_ptr<Optimizer> make_optimizer(const OptimizerConfig& config, Context& ctx, int64_t n,
                                          std::vector<DecaySpan> spans) {
  if (config.name == "adamw") return std::make_unique<AdamW>(config, ctx, n, std::move(spans));
  return std::make_unique<Sgd>(config, ctx, n, std::move(spans));
}

}  // namespace dtrain
