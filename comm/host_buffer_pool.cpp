#include "comm/host_buffer_pool.h"

#include <algorithm>
#include <utility>

namespace dtrain {
namespace {

// Sizes are rounded up to whole pages so that buffers of nearby sizes (a last bucket
// a few elements shorter) reuse one allocation.
constexpr size_t kGranule = 4096;

size_t round_up(size_t bytes) { return (bytes + kGranule - 1) / kGranule * kGranule; }

}  // namespace

HostBufferPool::~HostBufferPool() {
  // See Note [Staging buffer reuse]: a copy-back may still read one of these buffers.
  // A destructor cannot report a failure, and a failed device has nothing left to
  // protect, so an error here only skips the wait.
  if (free_.empty()) return;
  try {
    ctx_.synchronize();
  } catch (...) {
  }
}

HostBuffer HostBufferPool::acquire(size_t bytes) {
  if (bytes == 0) return HostBuffer();
  auto best = free_.end();
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    if (it->bytes() >= bytes && (best == free_.end() || it->bytes() < best->bytes())) best = it;
  }
  if (best != free_.end()) {
    HostBuffer found = std::move(*best);
    free_.erase(best);
    return found;
  }
  if (!free_.empty()) {
    // Every free buffer is too small: free the largest (it is replaced by the new one)
    // once no queued copy can still read it.
    auto largest = std::max_element(free_.begin(), free_.end(),
                                    [](const HostBuffer& a, const HostBuffer& b) { return a.bytes() < b.bytes(); });
    ctx_.synchronize();
    free_.erase(largest);
  }
  return HostBuffer(ctx_, round_up(bytes));
}

void HostBufferPool::release(HostBuffer buffer) {
  if (buffer.data() != nullptr) free_.push_back(std::move(buffer));
}

size_t HostBufferPool::free_bytes() const {
  size_t total = 0;
  for (const HostBuffer& b : free_) total += b.bytes();
  return total;
}

}  // namespace dtrain
