#include "kernels/block_cache.h"

namespace dtrain {

namespace {

size_t round_up(size_t bytes, size_t granularity) {
  return (bytes + granularity - 1) / granularity * granularity;
}

}  // namespace

size_t BlockCache::rounded_size(size_t bytes) {
  if (bytes < kSmallLimit) return round_up(bytes, kSmallGranularity);
  return round_up(bytes, kLargeGranularity);
}

void* BlockCache::take_cached(size_t size, size_t& block_size) {
  auto it = cache_.lower_bound(size);
  if (it == cache_.end() || it->first - size > size / 8) return nullptr;
  void* ptr = it->second;
  block_size = it->first;
  cached_ -= it->first;
  cache_.erase(it);
  return ptr;
}

void BlockCache::add_reserved(size_t size) {
  stats_.reserved += size;
  if (stats_.reserved > stats_.peak_reserved) stats_.peak_reserved = stats_.reserved;
}

void BlockCache::use(void* ptr, size_t block_size, size_t requested, MemoryCategory category) {
  used_[ptr] = Block{block_size, requested, category};
  const int c = static_cast<int>(category);
  stats_.in_use += requested;
  stats_.in_use_by[c] += requested;
  if (stats_.in_use > stats_.peak) stats_.peak = stats_.in_use;
  if (stats_.in_use_by[c] > stats_.peak_by[c]) stats_.peak_by[c] = stats_.in_use_by[c];
}

bool BlockCache::release(void* ptr) {
  auto it = used_.find(ptr);
  if (it == used_.end()) return false;
  // The accounting uses what was recorded at allocation, the one source of truth.
  const Block block = it->second;
  used_.erase(it);
  const int c = static_cast<int>(block.category);
  stats_.in_use -= block.requested;
  stats_.in_use_by[c] -= block.requested;
  cache_.emplace(block.size, ptr);
  cached_ += block.size;
  return true;
}

bool BlockCache::pop_cached(void*& ptr, size_t& size) {
  if (cache_.empty()) return false;
  size = cache_.begin()->first;
  ptr = cache_.begin()->second;
  cache_.erase(cache_.begin());
  cached_ -= size;
  stats_.reserved -= size;
  return true;
}

void BlockCache::for_each_block(const std::function<void(void* ptr, size_t size)>& f) const {
  for (const auto& [size, ptr] : cache_) f(ptr, size);
  for (const auto& [ptr, block] : used_) f(ptr, block.size);
}

void BlockCache::reset_peak() {
  stats_.peak = stats_.in_use;
  stats_.peak_by = stats_.in_use_by;
  stats_.peak_reserved = stats_.reserved;
}

}  // namespace dtrain
