// Shared by the GPU tests: the skip rule, the CUDA-against-CPU fixture, inputs and
// device arrays.
//
// Every test that needs a GPU derives its fixture from GpuTest, which skips with the
// reason when this process sees no CUDA device (the development machines and CI), so
// the same binary really runs the tests on a GPU machine (scripts/gpu-check.sh, which
// fails if any of them skips there). A GPU that is present but unusable (an old
// driver) is not "no device": cuda_device_count() throws, and the test fails with the
// reason (Note [No GPU versus a broken GPU], kernels/cuda_device_count.h).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstddef>
#include <limits>
#include <memory>
#include <sstream>
#include <vector>

#include "kernels/context.h"
#include "kernels/memory.h"
#include "kernels/ops.h"
#include "kernels/rng.h"

namespace dtrain::testing {

inline constexpr const char* kNoCudaDevice =
    "no CUDA device visible (no GPU, or no NVIDIA driver): GPU tests run on a GPU machine via "
    "scripts/gpu-check.sh";

class GpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << kNoCudaDevice;
  }
};

// An op on the CUDA context against the same op on the CPU context, the oracle (DESIGN
// contract 6). TF32 is off, so GEMMs are full fp32.
class CudaAgainstCpuTest : public GpuTest {
 protected:
  void SetUp() override {
    GpuTest::SetUp();
    if (IsSkipped()) return;
    gpu_ = Context::make_cuda(CudaOptions{});
    cpu_ = Context::make_cpu(2);
  }
  Context& gpu() { return *gpu_; }
  Context& cpu() { return *cpu_; }

 private:
  std::unique_ptr<Context> gpu_;
  std::unique_ptr<Context> cpu_;
};

// A CUDA context whose attention always takes the unfused path, which keeps the
// probabilities (Note [Fused attention], kernels/cuda/fused_attention.h).
inline std::unique_ptr<Context> make_cuda_unfused_attention() {
  CudaOptions options;
  options.fused_attention = false;
  return Context::make_cuda(options);
}

// A CUDA context with every fused path of CudaFusions off: each op runs the chain of
// kernels its fusion replaced (kernels/context.h).
inline std::unique_ptr<Context> make_cuda_chains() {
  CudaOptions options;
  options.fusions = CudaFusions{false, false, false, false, false};
  return Context::make_cuda(options);
}

// A CUDA context whose bf16 GEMMs time cuBLASLt's candidates on each shape's first call
// (CudaOptions::gemm_autotune; Note [GEMM autotuning], kernels/cuda/linear_lt.h).
inline std::unique_ptr<Context> make_cuda_autotuned() {
  CudaOptions options;
  options.gemm_autotune = true;
  return Context::make_cuda(options);
}

// A CUDA context that takes the libraries' non-deterministic algorithms where faster
// (CudaOptions::deterministic off: cuDNN's attention backward by atomics).
inline std::unique_ptr<Context> make_cuda_nondeterministic() {
  CudaOptions options;
  options.deterministic = false;
  return Context::make_cuda(options);
}

// n seeded normal values: offset + scale * N(0, 1).
inline std::vector<float> random_normal(Rng& rng, int64_t n, double scale = 1.0, double offset = 0.0) {
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = static_cast<float>(offset + scale * rng.normal());
  return v;
}

// The start of an output an op must overwrite: any element it misses shows.
inline std::vector<float> nans(int64_t n) {
  return std::vector<float>(static_cast<size_t>(n), std::numeric_limits<float>::quiet_NaN());
}

// A device copy of a host vector, and back. With an offset, the copy starts that many
// elements into its buffer (the buffer itself is aligned for any access): offset 1
// leaves it misaligned for the kernels' 16-byte packs, so an op takes its scalar form.
template <class T>
class DeviceArray {
 public:
  DeviceArray(Context& ctx, const std::vector<T>& host, size_t offset = 0)
      : ctx_(&ctx), size_(host.size()), offset_(offset),
        buffer_(ctx.allocator(), (offset + host.size()) * sizeof(T), MemoryCategory::Other) {
    ops::copy_from_host(ctx, get(), host.data(), host.size() * sizeof(T));
  }
  T* get() const { return buffer_.as<T>() + offset_; }
  std::vector<T> to_host() const {
    std::vector<T> host(size_);
    ops::copy_to_host(*ctx_, host.data(), get(), size_ * sizeof(T));
    return host;
  }

 private:
  Context* ctx_;
  size_t size_;
  size_t offset_;
  Buffer buffer_;
};

// max |got - want| <= tol * max(1, max |want|): the error measured against the size of
// the result, as suits sums whose order differs between backends (GEMM, convolution).
inline ::testing::AssertionResult norm_close(const std::vector<float>& got,
                                             const std::vector<float>& want, double tol) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure() << "size " << got.size() << " != " << want.size();
  }
  double scale = 1.0, worst = 0.0;
  size_t worst_at = 0;
  for (size_t i = 0; i < want.size(); ++i) scale = std::fmax(scale, std::fabs(want[i]));
  for (size_t i = 0; i < want.size(); ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - want[i]);
    if (std::isnan(err) || err > worst) {
      worst = std::isnan(err) ? std::numeric_limits<double>::infinity() : err;
      worst_at = i;
    }
  }
  if (worst <= tol * scale) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "max error " << worst << " at [" << worst_at << "] (got " << got[worst_at]
         << ", want " << want[worst_at] << ") exceeds " << tol << " * " << scale;
}

// |got - want| <= tol * (1 + |want|) everywhere; tol = 0 asks for equal bits (NaN
// matches NaN).
inline ::testing::AssertionResult all_close(const std::vector<float>& got,
                                            const std::vector<float>& want, double tol) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure() << "size " << got.size() << " != " << want.size();
  }
  std::ostringstream bad;
  size_t failures = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const bool both_nan = std::isnan(got[i]) && std::isnan(want[i]);
    const double err = std::fabs(static_cast<double>(got[i]) - want[i]);
    if (!both_nan && !(err <= tol * (1.0 + std::fabs(want[i])))) {
      if (failures < 5) bad << "\n  [" << i << "] got " << got[i] << ", want " << want[i];
      ++failures;
    }
  }
  if (failures == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << failures << " of " << want.size()
                                       << " elements differ:" << bad.str();
}

}  // namespace dtrain::testing
