// All-reduce of the flat gradient buffer in buckets, overlapped with backward.
//
// Buckets are contiguous ranges of the flat buffer, assigned in reverse layer order
// (the order backward finishes them) by a pure function. The reducer launches a
// bucket as soon as backward reports its lowest layer done, always in bucket order,
// so every rank issues the same collectives in the same order (DESIGN contract 4).
// It runs only on the last micro-step of an optimizer step; finish() waits for all.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "comm/communicator.h"

namespace dtrain {

struct FlatRange {
  int64_t offset = 0;  // elements
  int64_t count = 0;
};

struct GradientBucket {
  int64_t offset = 0;   // elements into the flat gradient buffer
  int64_t count = 0;
  int first_layer = 0;  // lowest layer index with parameters in the bucket
  int last_layer = 0;   // highest
};

// Pure: walks layers from last to first and closes a bucket once it holds at least
// `cap_elements`; a single layer larger than the cap gets a bucket of its own. The
// layers' ranges must be contiguous and in layer order (contract 1). Layers without
// parameters are skipped. Buckets come out in launch order (highest layers first).
std::vector<GradientBucket> assign_gradient_buckets(const std::vector<FlatRange>& layers,
                                                    int64_t cap_elements);

class GradientReducer {
 public:
  GradientReducer(Communicator& comm, float* grads, const std::vector<FlatRange>& layers,
                  int64_t cap_elements);

  const std::vector<GradientBucket>& buckets() const { return buckets_; }
  // Runs `hook` on each bucket just before its all-reduce is launched, while it still
  // holds this rank's own gradients (the trainer measures their norm there, Note
  // [Gradient noise scale]). Work it queues on the device is ordered before the
  // collective. An empty function removes the hook.
  void set_before_launch(std::function<void(const GradientBucket&)> hook) { before_launch_ = std::move(hook); }
  // Runs `hook(bucket, launched, done)` in finish() as each bucket's all-reduce is
  // seen complete, with the host times it was launched and found done (the timeline).
  using Clock = std::chrono::steady_clock;
  void set_on_reduced(std::function<void(size_t, Clock::time_point, Clock::time_point)> hook) {
    on_reduced_ = std::move(hook);
  }
  // Backward calls this once layer `layer`'s gradients are final.
  void on_layer_done(int layer);
  // Launches every bucket not yet launched, waits for all, and re-arms for next step.
  void finish();

 private:
  void launch_next();

  Communicator& comm_;
  float* grads_;
  std::vector<GradientBucket> buckets_;
  std::vector<std::unique_ptr<Work>> in_flight_;
  size_t next_ = 0;
  std::function<void(const GradientBucket&)> before_launch_;
  std::function<void(size_t, Clock::time_point, Clock::time_point)> on_reduced_;
  std::vector<Clock::time_point> launched_;
};

}  // namespace dtrain
