// A FIFO of tasks that one worker thread runs in order: the CPU stand-in for a CUDA
// stream, used by the asynchronous CPU device (cpu_async_backend.h). Each task gets a
// number (1, 2, ...) when queued; waiting for a number waits until that task and every
// task queued before it has run, which is what recording and waiting on a CUDA event
// does. The worker sleeps before each task, `lag` on average (uniform in [0, 2 lag],
// from a seeded generator), so the host that queues runs ahead of the work, as it does
// ahead of a GPU, and two queues overtake each other now and then.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

#include "kernels/rng.h"

namespace dtrain {

class WorkQueue {
 public:
  // `on_start` runs first on the worker thread (per-thread settings such as OpenMP's
  // thread count).
  WorkQueue(std::chrono::microseconds lag, const std::function<void()>& on_start, uint64_t seed = 1);
  // Runs every queued task, then joins the worker.
  ~WorkQueue();
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;

  // Queues `task`; returns its number.
  uint64_t enqueue(std::function<void()> task);
  // The number of the last task queued (0 before the first).
  uint64_t last_queued() const;
  // Blocks until task `number` and all before it have run.
  void wait_for(uint64_t number);
  // Blocks until every task queued so far has run.
  void drain() { wait_for(last_queued()); }
  // The first exception a task threw since the last call (null if none), and clears it:
  // errors of queued work surface at the next synchronization, as on a GPU.
  std::exception_ptr take_error();

 private:
  void run(const std::function<void()>& on_start);
  std::chrono::microseconds next_lag();  // worker thread only

  const std::chrono::microseconds lag_;
  Rng rng_;
  mutable std::mutex mu_;
  std::condition_variable changed_;
  std::deque<std::function<void()>> tasks_;
  uint64_t queued_ = 0;
  uint64_t done_ = 0;
  bool stopping_ = false;
  std::exception_ptr error_;
  std::thread worker_;  // last: starts once the members above exist
};

}  // namespace dtrain
