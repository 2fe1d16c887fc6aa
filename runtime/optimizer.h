// Optimizers over the flat buffers (DESIGN contract 1): fused update passes over the
// parameters, with state in mirror buffers accounted as Optimizer memory. Weight
// decay (decoupled) applies to the spans optimizer.decay_filter selects: by default
// the weights of two or more dimensions (matrices, convolution kernels, embeddings),
// not biases or LayerNorm gains, as GPT-2's recipe and nanoGPT do, in runs of
// neighbouring tensors with the same decay (DecaySpan), all updated by one call
// (ops::sgd_update_spans, ops::adamw_update_spans: one launch on CUDA).
//
// Sharded (optimizer.shard, Note [Shard ranges]), an optimizer keeps state for its
// rank's range of the flat buffers alone and updates only that range; the trainer
// all-gathers the updated parameters. Unsharded, the range is the whole buffer.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kernels/context.h"
#include "kernels/flat_range.h"
#include "kernels/memory.h"
#include "comm/gradient_reducer.h"
#include "models/model.h"
#include "runtime/config.h"

namespace dtrain {

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  virtual const char* name() const = 0;
  // One update of the shard's parameters: `master` holds the shard().count fp32
  // values of the shard (master[0] is parameter shard().offset; unsharded, the whole
  // buffer), `grads` the whole flat gradient buffer (n floats), both device memory.
  // When params_bf16 (the whole bf16 copy) is not null its shard range receives the
  // updated parameters rounded to bf16 (the model's compute copy, Note [bf16
  // storage]), in the update's own pass where the op can. The update reads each
  // gradient times grad_scale (gradient clipping's coefficient; the gradients are not
  // written): bit for bit scaling them first (SgdHyper, AdamWHyper).
  virtual void step(Context& ctx, float* master, const float* grads, double lr, float grad_scale,
                    bf16* params_bf16 = nullptr) = 0;
  // Bytes of optimizer state per parameter of the shard.
  virtual int64_t state_bytes_per_param() const = 0;
  // The range of the flat buffers this optimizer updates and keeps state for.
  virtual FlatRange shard() const = 0;
  // Bytes of optimizer state this rank holds.
  int64_t state_bytes() const { return shard().count * state_bytes_per_param(); }
  // The state as flat device buffers of shard().count floats each (SGD: momentum;
  // AdamW: m, v), and the number of steps taken (AdamW's bias correction), for checkpoints.
  virtual std::vector<float*> state_buffers() = 0;
  virtual int64_t steps_taken() const { return 0; }
  virtual void set_steps_taken(int64_t) {}
};

// Bytes of state per parameter the optimizer of `config` keeps (SGD: momentum, 4;
// AdamW: m and v, 8), known before it is made (the planner's levers).
int64_t optimizer_state_bytes_per_param(const OptimizerConfig& config);

// The spans of `tensors` (in buffer order, covering [0, n)) for a decay filter:
// "all" decays everything (one span); "matrices" decays tensors of rank >= 2.
std::vector<DecaySpan> decay_spans(const std::vector<ParamTensor>& tensors, int64_t n,
                                   const std::string& filter);

// The parts of `spans` inside `shard`, in the same buffer coordinates.
std::vector<DecaySpan> spans_within(const std::vector<DecaySpan>& spans, const FlatRange& shard);

// An optimizer for the n parameters whose state and updates cover `shard` (the
// whole buffer unless the run is sharded).
std::unique_ptr<Optimizer> make_optimizer(const OptimizerConfig& config, Context& ctx, int64_t n,
                                          std::vector<DecaySpan> spans, FlatRange shard);
// Unsharded: the whole buffer.
inline std::unique_ptr<Optimizer> make_optimizer(const OptimizerConfig& config, Context& ctx, int64_t n,
                                                 std::vector<DecaySpan> spans) {
  return make_optimizer(config, ctx, n, std::move(spans), FlatRange{0, n});
}

}  // namespace dtrain
