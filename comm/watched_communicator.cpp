#include "comm/watched_communicator.h"

#include <chrono>
#include <thread>

namespace dtrain {

namespace {

class WatchedWork final : public Work {
 public:
  WatchedWork(std::unique_ptr<Work> inner, Watchdog& watchdog, int64_t number, const char* what)
      : inner_(std::move(inner)), watchdog_(watchdog), number_(number), what_(what) {}
  // Waits on the host until the collective has finished: NCCL's wait() only orders
  // the compute stream after it, and a collective that never finishes would then
  // block later in a device synchronize that nobody times.
  void wait() override {
    watchdog_.begin_wait(number_, what_);
    try {
      inner_->wait();
      while (!inner_->done()) std::this_thread::sleep_for(std::chrono::microseconds(20));
    } catch (...) {
      watchdog_.end_wait();
      throw;
    }
    watchdog_.end_wait();
  }
  bool done() override { return inner_->done(); }

 private:
  std::unique_ptr<Work> inner_;
  Watchdog& watchdog_;
  int64_t number_;
  const char* what_;
};

}  // namespace

// Issuing is timed as a wait too: it may itself wait for the peers (NCCL connects a
// path's channels inside the first collective that uses it).
template <class Issue>
std::unique_ptr<Work> WatchedCommunicator::issue(const char* what, Issue&& start) {
  // Every rank sees the same step at the same collective, so all number alike.
  if (from_first_step_ && watchdog_.step() == 0) return start();
  const int64_t n = watchdog_.next_collective();
  watchdog_.begin_wait(n, what);
  std::unique_ptr<Work> work;
  try {
    work = start();
  } catch (...) {
    watchdog_.end_wait();
    throw;
  }
  watchdog_.end_wait();
  return std::make_unique<WatchedWork>(std::move(work), watchdog_, n, what);
}

std::unique_ptr<Work> WatchedCommunicator::all_reduce(void* buf, size_t count, DataType type, ReduceOp op) {
  return issue("all-reduce", [&] { return inner_.all_reduce(buf, count, type, op); });
}

std::unique_ptr<Work> WatchedCommunicator::reduce_scatter(const void* send, void* recv, size_t recv_count,
                                                          DataType type, ReduceOp op) {
  return issue("reduce-scatter", [&] { return inner_.reduce_scatter(send, recv, recv_count, type, op); });
}

std::unique_ptr<Work> WatchedCommunicator::all_gather(const void* send, void* recv, size_t send_count, DataType type) {
  return issue("all-gather", [&] { return inner_.all_gather(send, recv, send_count, type); });
}

std::unique_ptr<Work> WatchedCommunicator::broadcast(void* buf, size_t count, DataType type, int root) {
  return issue("broadcast", [&] { return inner_.broadcast(buf, count, type, root); });
}

std::unique_ptr<Work> WatchedCommunicator::barrier() {
  return issue("barrier", [&] { return inner_.barrier(); });
}

std::unique_ptr<Work> WatchedCommunicator::reduce_scatter_v(void* buf, std::span<const size_t> counts,
                                                            DataType type, ReduceOp op) {
  return issue("reduce-scatter-v", [&] { return inner_.reduce_scatter_v(buf, counts, type, op); });
}

std::unique_ptr<Work> WatchedCommunicator::all_gather_v(void* buf, std::span<const size_t> counts, DataType type) {
  return issue("all-gather-v", [&] { return inner_.all_gather_v(buf, counts, type); });
}

}  // namespace dtrain
