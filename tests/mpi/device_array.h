// A buffer in a context's memory for the MPI tests, filled from and read back to host
// vectors only through the context's copies (so a staging or asynchronous device sees
// every byte go the way it would on a GPU).
#pragma once

#include <gtest/gtest.h>

#include <vector>

#include "kernels/context.h"
#include "kernels/memory.h"
#include "kernels/ops.h"

namespace dtrain::testing_mpi {

template <class T>
class DeviceArray {
 public:
  DeviceArray(Context& ctx, size_t n)
      : ctx_(ctx), n_(n), buf_(ctx.allocator(), n * sizeof(T), MemoryCategory::Other) {}
  void upload(const std::vector<T>& host) {
    EXPECT_EQ(host.size(), n_);
    ops::copy_from_host(ctx_, buf_.data(), host.data(), n_ * sizeof(T));
  }
  std::vector<T> download() {
    std::vector<T> host(n_);
    ops::copy_to_host(ctx_, host.data(), buf_.data(), n_ * sizeof(T));
    ctx_.synchronize();
    return host;
  }
  T* data() { return buf_.as<T>(); }
  size_t size() const { return n_; }

 private:
  Context& ctx_;
  size_t n_;
  Buffer buf_;
};

}  // namespace dtrain::testing_mpi
