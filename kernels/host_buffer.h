// Host memory for device transfers (pinned on GPUs), from the context's backend.
#pragma once

#include <cstddef>

#include "kernels/errors.h"
#include "kernels/ops.h"

namespace dtrain {

class HostBuffer {
 public:
  HostBuffer() = default;
  HostBuffer(Context& ctx, size_t bytes) : backend_(&ctx.backend()), bytes_(bytes) {
    if (bytes == 0) return;
    ptr_ = backend_->alloc_host(bytes);
    if (ptr_ == nullptr) throw DeviceError("cannot allocate " + std::to_string(bytes) + " bytes of host transfer memory");
  }
  ~HostBuffer() { reset(); }
  HostBuffer(HostBuffer&& o) noexcept { *this = std::move(o); }
  HostBuffer& operator=(HostBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      backend_ = o.backend_;
      ptr_ = o.ptr_;
      bytes_ = o.bytes_;
      o.ptr_ = nullptr;
      o.bytes_ = 0;
    }
    return *this;
  }
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;

  void reset() {
    if (ptr_ != nullptr) backend_->free_host(ptr_);
    ptr_ = nullptr;
    bytes_ = 0;
  }
  void* data() const { return ptr_; }
  template <class T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }

 private:
  OpsBackend* backend_ = nullptr;
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace dtrain
