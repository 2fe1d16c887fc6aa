// Faults injected where real ones are hard to arrange: a rank that stalls, throws,
// asks to stop, or produces a NaN, at a chosen step. The trainer calls these points;
// the production injector (no_faults()) does nothing at any of them, so no test
// switch sits in the training loop. The tests' injector reads DTRAIN_TEST_* variables
// (launch/environment_faults.h).
#pragma once

#include <cstdint>

#include "kernels/context.h"

namespace dtrain {

class FaultInjector {
 public:
  virtual ~FaultInjector() = default;
  // As optimizer step `step` (1-based) begins on `rank`: may throw, or never return.
  virtual void at_step_start(int64_t step, int rank) {}
  // Whether `rank` asks to stop during `step`, as a signal would.
  virtual bool stop_requested(int64_t step, int rank) { return false; }
  // Before the last micro-step's backward of `step` on `rank`: may poison `grads`
  // (n floats on ctx's device; backward adds into them, so a NaN reaches the
  // reduced gradient).
  virtual void before_last_backward(int64_t step, int rank, Context& ctx, float* grads, int64_t n) {}
  // As `rank` begins to write a checkpoint: may never return (a hung file system).
  virtual void in_checkpoint(int rank) {}
};

// The injector of real runs: no faults.
inline FaultInjector& no_faults() {
  static FaultInjector none;
  return none;
}

}  // namespace dtrain
