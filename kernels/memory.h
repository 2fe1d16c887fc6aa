// The device allocator (DESIGN contract 5): one per device, with accounting of the
// bytes in use and at peak, in total and by category, and of the bytes it reserves
// from the device. The planner and every memory report read it; nothing allocates
// device memory behind its back.
#pragma once

#include <array>
#include <cstddef>
#include <functional>
#include <mutex>
#include <string>
#include <utility>

namespace dtrain {

enum class MemoryCategory : int { Params = 0, Grads, Optimizer, Activations, Workspace, Other };
inline constexpr int kMemoryCategories = 6;
const char* memory_category_name(MemoryCategory c);

// in_use counts the bytes the live buffers asked for (by category too); reserved the
// bytes the allocator holds from the device for them and its cache, as the device
// gave them (the CUDA allocator's rounded blocks, kernels/block_cache.h). reserved >=
// in_use always; the CPU allocators hold exactly what was asked, so there they are
// equal. Budgets and limits are about reserved: it is what the device lacks.
struct MemoryStats {
  size_t in_use = 0;
  size_t peak = 0;
  size_t reserved = 0;
  size_t peak_reserved = 0;
  std::array<size_t, kMemoryCategories> in_use_by{};
  std::array<size_t, kMemoryCategories> peak_by{};
};

// What a device can hold, for the batch planner and the plan report.
struct MemoryCapacity {
  size_t total = 0;      // the device's memory (CPU: the machine's RAM)
  size_t free = 0;       // what the device could still give now (CPU: MemAvailable)
  size_t limit = 0;      // the allocator's own byte limit; 0: none
  size_t available = 0;  // what this allocator could still hand out: free memory plus
                         // its own cache, capped by the limit
};

// The machine's RAM as /proc/meminfo reports it (MemTotal, MemAvailable); the
// sysconf page counts where that file is missing.
MemoryCapacity host_memory();

class Allocator {
 public:
  virtual ~Allocator() = default;
  // Returns memory aligned to at least 64 bytes, or throws DeviceError naming the
  // request and the bytes in use.
  virtual void* allocate(size_t bytes, MemoryCategory category) = 0;
  virtual void release(void* ptr, size_t bytes, MemoryCategory category) = 0;
  virtual std::string device_name() const = 0;
  virtual MemoryStats stats() const = 0;
  // Peaks (in use and reserved) start again from the present figures.
  virtual void reset_peak() = 0;
  virtual MemoryCapacity capacity() const = 0;
  // Gives cached memory back to the device, so reserved is what the live buffers
  // hold. Nothing to do for an allocator without a cache.
  virtual void empty_cache() {}
};

// Host memory with accounting. `limit_bytes` (0 = none) makes allocations above it
// fail like a device out of memory, so memory planning is testable on the CPU. It
// keeps no cache and counts what was asked, so reserved equals in use (the C
// library's own rounding of a malloc is not memory this allocator holds).
class CpuAllocator final : public Allocator {
 public:
  // Frees released memory: `dispose(ptr, bytes)` takes it over and must std::free it.
  using Dispose = std::function<void(void* ptr, size_t bytes)>;

  explicit CpuAllocator(size_t limit_bytes = 0) : limit_(limit_bytes) {}
  // A device whose work runs after the host queues it (kernels/cpu_async/) frees
  // memory in the order of its work: `dispose` does; the accounting is at release.
  CpuAllocator(size_t limit_bytes, std::string name, Dispose dispose)
      : limit_(limit_bytes), name_(std::move(name)), dispose_(std::move(dispose)) {}
  void* allocate(size_t bytes, MemoryCategory category) override;
  void release(void* ptr, size_t bytes, MemoryCategory category) override;
  std::string device_name() const override { return name_; }
  MemoryStats stats() const override;
  void reset_peak() override;
  MemoryCapacity capacity() const override;
  size_t limit() const { return limit_; }

 private:
  mutable std::mutex mu_;
  MemoryStats stats_;
  size_t limit_;
  std::string name_ = "cpu";
  Dispose dispose_;
};

// An owning, move-only allocation from an Allocator.
class Buffer {
 public:
  Buffer() = default;
  Buffer(Allocator& alloc, size_t bytes, MemoryCategory category);
  ~Buffer() { reset(); }
  Buffer(Buffer&& o) noexcept { *this = std::move(o); }
  Buffer& operator=(Buffer&& o) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void reset();
  void* data() const { return ptr_; }
  template <class T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }

 private:
  Allocator* alloc_ = nullptr;
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
  MemoryCategory category_ = MemoryCategory::Other;
};

}  // namespace dtrain
