#include "comm/completion_wait.h"

#include <cstdio>

#include "kernels/errors.h"

namespace dtrain {
namespace {

std::string seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f s", s);
  return buf;
}

std::string where(int rank, int size) { return "rank " + std::to_string(rank) + " of " + std::to_string(size); }

}  // namespace

void wait_for_completion(const std::string& operation, int rank, int size, double timeout_s, double period_s,
                         const CompletionHooks& hooks) {
  const double start = hooks.clock();
  for (;;) {
    const CompletionState state = hooks.poll();
    if (state.kind == CompletionState::kDone) return;
    if (state.kind == CompletionState::kFailed) {
      hooks.abort();
      throw CommError(operation + " failed on " + where(rank, size) + ": " + state.error);
    }
    const double waited = hooks.clock() - start;
    if (timeout_s > 0 && waited > timeout_s) {
      hooks.abort();
      throw CommError(operation + " did not complete on " + where(rank, size) + " within comm.timeout_s = " +
                      seconds(timeout_s) + " (waited " + seconds(waited) +
                      "). Another rank probably failed before or during it (its own message names the cause) "
                      "or cannot reach this one over the network (check NCCL_SOCKET_IFNAME and firewalls; "
                      "rerun with NCCL_DEBUG=INFO to see where NCCL waits). If it is only slow at this scale, "
                      "raise comm.timeout_s");
    }
    hooks.sleep(period_s);
  }
}

}  // namespace dtrain
