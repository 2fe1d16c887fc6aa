#include "runtime/optimizer.h"

#include "kernels/ops.h"

namespace dtrain {
namespace {

class Sgd final : public Optimizer {
 public:
  Sgd(const OptimizerConfig& c, Context& ctx, int64_t n)
      : config_(c), n_(n), momentum_(ctx.allocator(), static_cast<size_t>(n) * sizeof(float), MemoryCategory::Optimizer) {
    ops::fill(ctx, momentum_.as<float>(), n, 0.0f);
  }
  const char* name() const override { return "sgd"; }
  int64_t state_bytes_per_param() const override { return sizeof(float); }
  std::vector<float*> state_buffers() override { return {momentum_.as<float>()}; }
  void step(Context& ctx, float* params, const float* grads, double lr) override {
    const SgdHyper h{static_cast<float>(lr), static_cast<float>(config_.momentum),
                     static_cast<float>(config_.weight_decay), config_.nesterov};
    ops::sgd_update(ctx, params, grads, momentum_.as<float>(), n_, h);
  }

 private:
  OptimizerConfig config_;
  int64_t n_;
  Buffer momentum_;
};

class AdamW final : public Optimizer {
 public:
  AdamW(const OptimizerConfig& c, Context& ctx, int64_t n)
      : config_(c), n_(n),
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
  void step(Context& ctx, float* params, const float* grads, double lr) override {
    ++t_;
    const AdamWHyper h{static_cast<float>(lr), static_cast<float>(config_.beta1),
                       static_cast<float>(config_.beta2), static_cast<float>(config_.eps),
                       static_cast<float>(config_.weight_decay), t_};
    ops::adamw_update(ctx, params, grads, m_.as<float>(), v_.as<float>(), n_, h);
  }

 private:
  OptimizerConfig config_;
  int64_t n_;
  Buffer m_, v_;
  int64_t t_ = 0;
};

}  // namespace

std::unique_ptr<Optimizer> make_optimizer(const OptimizerConfig& config, Context& ctx, int64_t n) {
  if (config.name == "adamw") return std::make_unique<AdamW>(config, ctx, n);
  return std::make_unique<Sgd>(config, ctx, n);
}

}  // namespace dtrain
