#include "launch/environment_faults.h"

#include <chrono>
#include <cstdlib>
#include <limits>
#include <string>
#include <thread>
#include <type_traits>

#include "kernels/errors.h"
#include "kernels/ops.h"

namespace dtrain {
namespace {

[[noreturn]] void stall() {
  for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
}

}  // namespace

void EnvironmentFaults::at_step_start(int64_t step, int rank) {
  if (rank != fault_rank) return;
  if (step == throw_at_step) {
    throw CommError("injected failure at step " + std::to_string(step) + " (test hook DTRAIN_TEST_THROW_AT_STEP)");
  }
  if (step == stall_at_step) stall();
}

bool EnvironmentFaults::stop_requested(int64_t step, int rank) { return rank == 0 && step == stop_at_step; }

void EnvironmentFaults::before_last_backward(int64_t step, int rank, Context& ctx, float* grads, int64_t n) {
  if (step != nan_at_step || rank != nan_rank || n == 0) return;
  ops::fill(ctx, grads, 1, std::numeric_limits<float>::quiet_NaN());
}

void EnvironmentFaults::in_checkpoint(int rank) {
  if (stall_in_checkpoint && rank == fault_rank) stall();
}

std::unique_ptr<FaultInjector> faults_from_environment() {
  auto f = std::make_unique<EnvironmentFaults>();
  bool any = false;
  auto integer = [&any](const char* name, auto& field) {
    if (const char* v = std::getenv(name)) {
      field = static_cast<std::remove_reference_t<decltype(field)>>(std::atoll(v));
      any = true;
    }
  };
  integer("DTRAIN_TEST_NAN_AT_STEP", f->nan_at_step);
  integer("DTRAIN_TEST_NAN_RANK", f->nan_rank);
  integer("DTRAIN_TEST_STOP_AT_STEP", f->stop_at_step);
  integer("DTRAIN_TEST_STALL_AT_STEP", f->stall_at_step);
  integer("DTRAIN_TEST_THROW_AT_STEP", f->throw_at_step);
  integer("DTRAIN_TEST_FAULT_RANK", f->fault_rank);
  if (const char* on = std::getenv("DTRAIN_TEST_STALL_IN_CHECKPOINT")) {
    f->stall_in_checkpoint = std::atoi(on) != 0;
    any = true;
  }
  if (!any) return nullptr;
  return f;
}

}  // namespace dtrain
