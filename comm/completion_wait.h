// Waiting, with a time limit, for an operation that a library completes in the
// background: a nonblocking NCCL communicator's initialisation, or a collective that
// NCCL is still issuing (Note [Nonblocking NCCL communicator], nccl_communicator.h).
// The library, the clock and the sleep are hooks, so the tests drive the wait with a
// fake library and a fake clock: no NCCL, no GPU, no real time.
#pragma once

#include <functional>
#include <string>

namespace dtrain {

struct CompletionState {
  enum Kind { kInProgress, kDone, kFailed };
  Kind kind = kInProgress;
  std::string error;  // kFailed: the library's own account of the failure
};

struct CompletionHooks {
  std::function<CompletionState()> poll;  // the operation's state now
  std::function<void()> abort;            // ends the operation and frees it (NCCL: ncclCommAbort)
  std::function<double()> clock;          // monotonic seconds
  std::function<void(double)> sleep;      // seconds
};

// Polls every `period_s` until the operation is done, and returns then. When it fails,
// or is still in progress once `timeout_s` has passed since the call (timeout_s 0: no
// limit), calls `abort` and throws CommError naming `operation`, the rank and, for a
// timeout, the limit; so a rank ends at most one period after the limit. `rank` and
// `size` are for the message only.
void wait_for_completion(const std::string& operation, int rank, int size, double timeout_s, double period_s,
                         const CompletionHooks& hooks);

}  // namespace dtrain
