// Where the device was, set against where the host was (log.trace's device track).
//
// Note [Device timeline]
// A mark is recorded on ctx's compute queue among the ops: `queued` is when the host
// recorded it, `reached` when the device had done all the work queued before it. On a
// GPU the host only queues ops, so the host's trace spans say when work was queued,
// not when it ran; the marks say when it ran. reached - queued is the host's lead at
// the mark: while it stays positive the device still had queued work when the host got
// there, so the host never kept the device waiting up to that mark (the one wait a
// step should have is its read-back of the loss). A GPU measures `reached` with CUDA
// events against a reference event recorded while the queue was idle (the device
// reaches it a launch latency after the host records it, a few microseconds); cpu-async
// with a task on its worker queue. The CPU backend has no timeline: its ops run when
// called, so a mark would be reached when queued.
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

namespace dtrain {

class DeviceTimeline {
 public:
  using Clock = std::chrono::steady_clock;
  struct Mark {
    const char* name;  // a string literal: the span it opens or closes
    int64_t step;
    Clock::time_point queued, reached;
  };

  virtual ~DeviceTimeline() = default;
  // Records a mark after the work queued so far.
  virtual void mark(const char* name, int64_t step) = 0;
  // The marks recorded since the last call, in order. Call it only right after a
  // synchronisation with nothing queued since (the device has passed every mark, and
  // the next interval's reference is taken while the queue is idle).
  virtual std::vector<Mark> collect() = 0;
};

}  // namespace dtrain
