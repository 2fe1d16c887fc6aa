// The device context every op runs in: which device, its allocator, the op backend,
// the CPU thread budget, and a growing workspace for ops that need scratch memory.
// One Context per rank; it is not shared between threads.
#pragma once

#include <memory>
#include <string>

#include "kernels/memory.h"

namespace dtrain {

class OpsBackend;

enum class DeviceKind { Cpu, Cuda };

class Context {
 public:
  // CPU context: ops use `num_threads` threads (BLAS and OpenMP both).
  static std::unique_ptr<Context> make_cpu(int num_threads, size_t memory_limit_bytes = 0);

  Context(DeviceKind kind, std::unique_ptr<Allocator> allocator, OpsBackend& backend,
          int num_threads);

  DeviceKind device_kind() const { return kind_; }
  std::string device_name() const { return allocator_->device_name(); }
  Allocator& allocator() { return *allocator_; }
  OpsBackend& backend() { return backend_; }
  int num_threads() const { return num_threads_; }

  // Scratch memory of at least `bytes`, valid until the next call; accounted as
  // Workspace. Ops call it; nothing else holds on to the pointer.
  void* workspace(size_t bytes);

 private:
  DeviceKind kind_;
  std::unique_ptr<Allocator> allocator_;
  OpsBackend& backend_;
  int num_threads_;
  Buffer workspace_;
};

}  // namespace dtrain
