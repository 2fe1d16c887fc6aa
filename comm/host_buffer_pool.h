// A small pool of host transfer buffers (pinned on GPUs) for communicators that stage
// device buffers through host memory. Pinned allocations are slow (a cudaHostAlloc
// costs far more than the copy of a gradient bucket), so buffers are kept and reused:
// after the first optimizer step every collective finds a buffer that fits.
//
// Invariant (Note [Staging buffer reuse]): a released buffer may still be the source
// of a device copy queued on the context's stream (the copy-back of a finished
// collective). Whoever acquires it orders its own use after that copy: device copies
// by stream order, host access by synchronizing the context first. The pool itself
// synchronizes before it frees a buffer, so no queued copy reads freed memory.
#pragma once

#include <cstddef>
#include <vector>

#include "kernels/context.h"
#include "kernels/host_buffer.h"

namespace dtrain {

class HostBufferPool {
 public:
  explicit HostBufferPool(Context& ctx) : ctx_(ctx) {}
  ~HostBufferPool();
  HostBufferPool(const HostBufferPool&) = delete;
  HostBufferPool& operator=(const HostBufferPool&) = delete;

  // A buffer of at least `bytes` (an empty one for 0): the smallest free one that
  // fits, or a new one. When none fits, the largest free buffer is freed first, so the
  // pool holds at most as many buffers as were ever in use at once.
  HostBuffer acquire(size_t bytes);
  // Gives a buffer back for reuse; empty buffers are dropped.
  void release(HostBuffer buffer);

  size_t free_buffers() const { return free_.size(); }
  size_t free_bytes() const;

 private:
  Context& ctx_;
  std::vector<HostBuffer> free_;
};

}  // namespace dtrain
