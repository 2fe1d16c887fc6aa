#include "kernels/cpu_async/work_queue.h"

#include <utility>

namespace dtrain {

WorkQueue::WorkQueue(std::chrono::microseconds lag, const std::function<void()>& on_start, uint64_t seed)
    : lag_(lag), rng_(seed), worker_([this, on_start] { run(on_start); }) {}

WorkQueue::~WorkQueue() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  changed_.notify_all();
  worker_.join();
}

uint64_t WorkQueue::enqueue(std::function<void()> task) {
  uint64_t number = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    tasks_.push_back(std::move(task));
    number = ++queued_;
  }
  changed_.notify_all();
  return number;
}

uint64_t WorkQueue::last_queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queued_;
}

void WorkQueue::wait_for(uint64_t number) {
  std::unique_lock<std::mutex> lock(mu_);
  changed_.wait(lock, [&] { return done_ >= number; });
}

std::exception_ptr WorkQueue::take_error() {
  std::lock_guard<std::mutex> lock(mu_);
  return std::exchange(error_, nullptr);
}

std::chrono::microseconds WorkQueue::next_lag() {
  // Uniform in [0, 2 lag]: sometimes this queue is behind another, sometimes ahead, so
  // over many tasks both orders of two unordered pieces of work happen.
  return std::chrono::microseconds(static_cast<int64_t>(rng_.below(2 * static_cast<uint64_t>(lag_.count()) + 1)));
}

void WorkQueue::run(const std::function<void()>& on_start) {
  if (on_start) on_start();
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    changed_.wait(lock, [&] { return stopping_ || !tasks_.empty(); });
    // Stopping still runs what is queued: it may free memory or finish copies.
    if (tasks_.empty()) return;
    std::function<void()> task = std::move(tasks_.front());
    tasks_.pop_front();
    lock.unlock();
    if (lag_.count() > 0) std::this_thread::sleep_for(next_lag());
    std::exception_ptr error;
    try {
      task();
    } catch (...) {
      error = std::current_exception();
    }
    // What the task captured goes before the lock is taken again: releasing it may
    // queue work here or wait for another queue.
    task = nullptr;
    lock.lock();
    if (error && !error_) error_ = error;
    ++done_;
    changed_.notify_all();
  }
}

}  // namespace dtrain
