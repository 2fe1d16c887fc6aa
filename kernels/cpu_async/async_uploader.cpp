#include "kernels/cpu_async/async_uploader.h"

#include <chrono>
#include <cstring>
#include <thread>
#include <utility>

#include "kernels/cpu_async/cpu_async_backend.h"
#include "kernels/rng.h"

namespace dtrain {
namespace {

class AsyncUploader final : public Uploader {
 public:
  AsyncUploader(std::shared_ptr<WorkQueue> compute, std::shared_ptr<WorkQueue> side,
                std::shared_ptr<const TransferMemory> transfer)
      : compute_(std::move(compute)), side_(std::move(side)), transfer_(std::move(transfer)) {}
  ~AsyncUploader() override { side_->wait_for(done_); }
  AsyncUploader(const AsyncUploader&) = delete;
  AsyncUploader& operator=(const AsyncUploader&) = delete;

  void release() override {
    ready_ = compute_->last_queued();
    released_ = true;
  }
  void upload(void* dst, const void* src, size_t bytes) override {
    if (bytes == 0) return;
    if (!released_) ready_ = compute_->last_queued();
    std::shared_ptr<const void> source = transfer_->source_for_copy(src, bytes);
    // The copy takes its time once its inputs are ready (the queue itself has no lag):
    // work that reads dst without waiting for it then runs first in about half the cases.
    const std::chrono::microseconds duration = next_duration();
    done_ = side_->enqueue([compute = compute_, ready = ready_, dst, source, bytes, duration] {
      compute->wait_for(ready);
      std::this_thread::sleep_for(duration);
      std::memcpy(dst, source.get(), bytes);
    });
  }
  void make_visible() override {
    if (done_ != 0) compute_->enqueue([side = side_, done = done_] { side->wait_for(done); });
    released_ = false;
  }
  void wait_source_free() override { side_->wait_for(done_); }

 private:
  std::shared_ptr<WorkQueue> compute_;
  std::shared_ptr<WorkQueue> side_;
  std::chrono::microseconds next_duration() {
    return std::chrono::microseconds(static_cast<int64_t>(rng_.below(2 * static_cast<uint64_t>(kCpuAsyncLag.count()) + 1)));
  }

  std::shared_ptr<const TransferMemory> transfer_;
  Rng rng_{0x5eed};
  uint64_t ready_ = 0;  // the compute task that last reads the destinations
  uint64_t done_ = 0;   // the side task of the last upload (0: none yet)
  bool released_ = false;
};

}  // namespace

std::unique_ptr<Uploader> make_async_uploader(std::shared_ptr<WorkQueue> compute,
                                              std::shared_ptr<WorkQueue> side,
                                              std::shared_ptr<const TransferMemory> transfer) {
  return std::make_unique<AsyncUploader>(std::move(compute), std::move(side), std::move(transfer));
}

}  // namespace dtrain
