#include "kernels/cpu_async/transfer_memory.h"

#include <cstdlib>
#include <cstring>
#include <vector>

#include "kernels/errors.h"

namespace dtrain {

void* TransferMemory::allocate(size_t bytes) {
  void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
  if (p == nullptr) return nullptr;
  std::lock_guard<std::mutex> lock(mu_);
  blocks_[reinterpret_cast<uintptr_t>(p)] = bytes;
  return p;
}

void TransferMemory::release(void* ptr) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    blocks_.erase(reinterpret_cast<uintptr_t>(ptr));
  }
  std::free(ptr);
}

bool TransferMemory::holds(const void* src, size_t bytes) const {
  const auto at = reinterpret_cast<uintptr_t>(src);
  std::lock_guard<std::mutex> lock(mu_);
  auto it = blocks_.upper_bound(at);
  if (it == blocks_.begin()) return false;
  --it;
  return at + bytes <= it->first + it->second;
}

std::shared_ptr<const void> TransferMemory::source_for_copy(const void* src, size_t bytes) const {
  if (holds(src, bytes)) return std::shared_ptr<const void>(src, [](const void*) {});
  auto copy = std::make_shared<std::vector<char>>(bytes);
  std::memcpy(copy->data(), src, bytes);
  return std::shared_ptr<const void>(copy, copy->data());
}

}  // namespace dtrain
