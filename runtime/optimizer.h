// Optimizers over the flat buffers (DESIGN contract 1): one fused update pass over
// all parameters, with state in mirror buffers accounted as Optimizer memory.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/context.h"
#include "kernels/memory.h"
#include "runtime/config.h"

namespace dtrain {

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  virtual const char* name() const = 0;
  // One update of params (n floats, device) from grads with learning rate lr.
  virtual void step(Context& ctx, float* params, const float* grads, double lr) = 0;
  // Bytes of optimizer state per parameter.
  virtual int64_t state_bytes_per_param() const = 0;
  // The state as flat device buffers of n floats each (SGD: momentum; AdamW: m, v),
  // and the number of steps taken (AdamW's bias correction), for checkpoints.
  virtual std::vector<float*> state_buffers() = 0;
  virtual int64_t steps_taken() const { return 0; }
  virtual void set_steps_taken(int64_t) {}
};

std::unique_ptr<Optimizer> make_optimizer(const OptimizerConfig& config, Context& ctx, int64_t n);

}  // namespace dtrain
