// Optimizers over the flat buffers (DESIGN contract 1): fused update passes over the
// parameters, with state in mirror buffers accounted as Optimizer memory. Weight
// decay (decoupled) applies to the spans optimizer.decay_filter selects: by default
// the weights of two or more dimensions (matrices, convolution kernels, embeddings),
// not biases or LayerNorm gains, as GPT-2's recipe and nanoGPT do. One update pass
// per run of neighbouring tensors with the same decay.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/context.h"
#include "kernels/memory.h"
#include "models/model.h"
#include "runtime/config.h"

namespace dtrain {

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  virtual const char* name() const = 0;
  // One update of params (n floats, device) from grads with learning rate lr. When
  // params_bf16 is not null it receives the updated parameters rounded to bf16 (the
  // model's compute copy, Note [bf16 storage]), in the update's own pass where the op
  // can.
  virtual void step(Context& ctx, float* params, const float* grads, double lr, bf16* params_bf16 = nullptr) = 0;
  // Bytes of optimizer state per parameter.
  virtual int64_t state_bytes_per_param() const = 0;
  // The state as flat device buffers of n floats each (SGD: momentum; AdamW: m, v),
  // and the number of steps taken (AdamW's bias correction), for checkpoints.
  virtual std::vector<float*> state_buffers() = 0;
  virtual int64_t steps_taken() const { return 0; }
  virtual void set_steps_taken(int64_t) {}
};

// A contiguous run of parameters that share their weight decay.
struct DecaySpan {
  int64_t offset = 0;
  int64_t count = 0;
  bool decay = true;
};

// The spans of `tensors` (in buffer order, covering [0, n)) for a decay filter:
// "all" decays everything (one span); "matrices" decays tensors of rank >= 2.
std::vector<DecaySpan> decay_spans(const std::vector<ParamTensor>& tensors, int64_t n,
                                   const std::string& filter);

std::unique_ptr<Optimizer> make_optimizer(const OptimizerConfig& config, Context& ctx, int64_t n,
                                          std::vector<DecaySpan> spans);

}  // namespace dtrain
