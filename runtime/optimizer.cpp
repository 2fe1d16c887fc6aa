#include "runtime/optimizer.h"

#include <algorithm>
#include <utility>

#include "kernels/check.h"
#include "kernels/ops.h"
#include "runtime/optimizer_shards.h"

namespace dtrain {
namespace {

// A state buffer for the shard; at least one float, so an empty shard (a rank with
// tiny memory, Note [Shard ranges]) still has a valid pointer.
size_t bytes_of(const FlatRange& shard) { return static_cast<size_t>(std::max<int64_t>(1, shard.count)) * sizeof(float); }

// The spans counted from the shard's start (the optimizers' state holds the shard alone).
std::vector<DecaySpan> from_shard_start(std::vector<DecaySpan> spans, const FlatRange& shard) {
  for (DecaySpan& s : spans) s.offset -= shard.offset;
  return spans;
}

class Sgd final : public Optimizer {
 public:
  Sgd(const OptimizerConfig& c, Context& ctx, std::vector<DecaySpan> spans, FlatRange shard)
      : config_(c), shard_(shard), shard_spans_(from_shard_start(std::move(spans), shard)),
        momentum_(ctx.allocator(), bytes_of(shard), MemoryCategory::Optimizer) {
    ops::fill(ctx, momentum_.as<float>(), shard.count, 0.0f);
  }
  const char* name() const override { return "sgd"; }
  int64_t state_bytes_per_param() const override { return optimizer_state_bytes_per_param(config_); }
  FlatRange shard() const override { return shard_; }
  std::vector<float*> state_buffers() override { return {momentum_.as<float>()}; }
  // One call over the shard's spans (Note [Optimizers over spans]): master and the
  // momentum hold the shard alone, grads and params_bf16 the whole buffer.
  void step(Context& ctx, float* master, const float* grads, double lr, float grad_scale, bf16* params_bf16) override {
    const SgdHyper h{static_cast<float>(lr), static_cast<float>(config_.momentum),
                     static_cast<float>(config_.weight_decay), config_.nesterov, grad_scale};
    ops::sgd_update_spans(ctx, master, grads + shard_.offset, momentum_.as<float>(), shard_spans_, h);
    if (params_bf16 != nullptr && shard_.count > 0) ops::convert(ctx, master, params_bf16 + shard_.offset, shard_.count);
  }

 private:
  OptimizerConfig config_;
  FlatRange shard_;
  std::vector<DecaySpan> shard_spans_;
  Buffer momentum_;
};

class AdamW final : public Optimizer {
 public:
  AdamW(const OptimizerConfig& c, Context& ctx, std::vector<DecaySpan> spans, FlatRange shard)
      : config_(c), shard_(shard), shard_spans_(from_shard_start(std::move(spans), shard)),
        m_(ctx.allocator(), bytes_of(shard), MemoryCategory::Optimizer),
        v_(ctx.allocator(), bytes_of(shard), MemoryCategory::Optimizer) {
    ops::fill(ctx, m_.as<float>(), shard.count, 0.0f);
    ops::fill(ctx, v_.as<float>(), shard.count, 0.0f);
  }
  const char* name() const override { return "adamw"; }
  int64_t state_bytes_per_param() const override { return optimizer_state_bytes_per_param(config_); }
  FlatRange shard() const override { return shard_; }
  std::vector<float*> state_buffers() override { return {m_.as<float>(), v_.as<float>()}; }
  int64_t steps_taken() const override { return t_; }
  void set_steps_taken(int64_t t) override { t_ = t; }
  // One call over the shard's spans (Note [Optimizers over spans]): master, m and v hold the
  // shard alone, grads and params_bf16 the whole buffer.
  void step(Context& ctx, float* master, const float* grads, double lr, float grad_scale, bf16* params_bf16) override {
    ++t_;
    const AdamWHyper h{static_cast<float>(lr),
                       static_cast<float>(config_.beta1),
                       static_cast<float>(config_.beta2),
                       static_cast<float>(config_.eps),
                       static_cast<float>(config_.weight_decay),
                       t_,
                       grad_scale};
    ops::adamw_update_spans(ctx, master, grads + shard_.offset, m_.as<float>(), v_.as<float>(), shard_spans_, h,
                            params_bf16 ? params_bf16 + shard_.offset : nullptr);
  }

 private:
  OptimizerConfig config_;
  FlatRange shard_;
  std::vector<DecaySpan> shard_spans_;
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

int64_t optimizer_state_bytes_per_param(const OptimizerConfig& config) {
  return (config.name == "adamw" ? 2 : 1) * static_cast<int64_t>(sizeof(float));
}

std::vector<DecaySpan> spans_within(const std::vector<DecaySpan>& spans, const FlatRange& shard) {
  std::vector<DecaySpan> out;
  for (const DecaySpan& s : spans) {
    const FlatRange part = intersect(FlatRange{s.offset, s.count}, shard);
    if (part.count > 0) out.push_back(DecaySpan{part.offset, part.count, s.decay});
  }
  return out;
}

std::unique_ptr<Optimizer> make_optimizer(const OptimizerConfig& config, Context& ctx, int64_t n,
                                          std::vector<DecaySpan> spans, FlatRange shard) {
  DTRAIN_ASSERT(shard.offset >= 0 && shard.count >= 0 && shard.offset + shard.count <= n,
                "optimizer shard [" << shard.offset << ", +" << shard.count << ") outside " << n << " parameters");
  std::vector<DecaySpan> mine = spans_within(spans, shard);
  if (config.name == "adamw") return std::make_unique<AdamW>(config, ctx, std::move(mine), shard);
  return std::make_unique<Sgd>(config, ctx, std::move(mine), shard);
}

}  // namespace dtrain
