// Optimizers over the flat buffers (DESIGN contract 1): one fused update pass over
// all parameters, with state in mirror buffers accounted as Optimizer memory.
#pragma once

#include <cstdint>
#include <memory>

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
};

std::unique_ptr<Optimizer> make_optimizer(const OptimizerConfig& config, Context& ctx, int64_t n);

}  // namespace dtrain
