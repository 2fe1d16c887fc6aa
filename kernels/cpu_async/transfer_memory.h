// Host transfer memory of the asynchronous CPU device, modelled on CUDA's: memory from
// alloc_host ("pinned") is read by a host-to-device copy when the copy runs, so the
// host must leave it alone until then (cudaMemcpyAsync from page-locked memory); any
// other source is read before the call returns (CUDA stages pageable memory). Keeping
// the two apart is what lets the CPU catch a pinned buffer reused too early.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>

namespace dtrain {

class TransferMemory {
 public:
  void* allocate(size_t bytes);
  void release(void* ptr);

  // The source of a copy as the copy will read it: `src` itself when it lies in
  // transfer memory, else a snapshot of it taken now.
  std::shared_ptr<const void> source_for_copy(const void* src, size_t bytes) const;

 private:
  bool holds(const void* src, size_t bytes) const;

  mutable std::mutex mu_;
  std::map<uintptr_t, size_t> blocks_;  // start -> bytes
};

}  // namespace dtrain
