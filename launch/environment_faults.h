// The tests' fault injector (runtime/fault_injector.h), set by variables:
//   DTRAIN_TEST_NAN_AT_STEP=N (and DTRAIN_TEST_NAN_RANK=R) put a NaN into rank R's
//     gradient at step N, for the tests of train.on_nonfinite;
//   DTRAIN_TEST_STOP_AT_STEP=N asks (rank 0) to stop at step N as a signal would,
//     for exact resume tests;
//   DTRAIN_TEST_STALL_AT_STEP=N or DTRAIN_TEST_THROW_AT_STEP=N make rank
//     DTRAIN_TEST_FAULT_RANK stop making progress or fail there, and
//     DTRAIN_TEST_STALL_IN_CHECKPOINT=1 makes it stop inside its first checkpoint (as
//     on a hung file system), for the no-hang tests.
#pragma once

#include <cstdint>
#include <memory>

#include "runtime/fault_injector.h"

namespace dtrain {

class EnvironmentFaults final : public FaultInjector {
 public:
  void at_step_start(int64_t step, int rank) override;
  bool stop_requested(int64_t step, int rank) override;
  void before_last_backward(int64_t step, int rank, Context& ctx, float* grads, int64_t n) override;
  void in_checkpoint(int rank) override;

  int64_t nan_at_step = 0;  // 0: none
  int nan_rank = 0;
  int64_t stop_at_step = 0;
  int64_t stall_at_step = 0;
  bool stall_in_checkpoint = false;
  int64_t throw_at_step = 0;
  int fault_rank = 0;
};

// The injector the DTRAIN_TEST_* variables describe, or null when none is set.
std::unique_ptr<FaultInjector> faults_from_environment();

}  // namespace dtrain
