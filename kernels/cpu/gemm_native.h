// The native bf16 GEMM: oneDNN's matmul on bf16 A and B, accumulating in fp32, on CPUs
// with bf16 dot-product instructions (AVX512-BF16, AMX). The emulated GEMM (widen, fp32
// OpenBLAS; Note [bf16 GEMM] in gemm.cpp) stays the oracle and the fallback. See Note
// [Native bf16 GEMM] in gemm_native.cpp. Private to kernels/cpu/ and its tests.
#pragma once

#include <oneapi/dnnl/dnnl.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/ops.h"

namespace dtrain::cpu {

// Which bf16 GEMM the CPU backend runs.
enum class Bf16Gemm { kEmulated, kNative };

// Whether oneDNN's effective ISA on this CPU has bf16 dot products (AVX512-BF16 or AMX).
bool cpu_has_native_bf16();

// The choice of DTRAIN_CPU_BF16 (`env_value`, null when unset): "native" or "emulated";
// unset means native where `supported`, else emulated. Throws Error for another value,
// and for "native" on a CPU without support. Pure, for the tests.
Bf16Gemm bf16_gemm_choice(const char* env_value, bool supported);
// The same, read from the environment once by the CPU backend.
Bf16Gemm bf16_gemm_from_environment();

// At most this many slabs of C per native GEMM, and below this many multiply-adds per
// slab a GEMM takes fewer (Note [Native bf16 GEMM]).
inline constexpr int64_t kGemmNativeMaxSlabs = 16;
inline constexpr int64_t kGemmNativeSlabMacs = int64_t{1} << 21;
// Slabs start at multiples of this many rows (or columns) of C.
inline constexpr int64_t kGemmNativeSlabAlign = 16;

// C split into `count` slabs along its rows (or its columns): a pure function of the
// shape, never of the threads (Note [Native bf16 GEMM]).
struct GemmSlabs {
  bool columns = false;
  int64_t count = 1, extent = 0;
  int64_t lo(int64_t s) const;
  int64_t hi(int64_t s) const;
};
GemmSlabs gemm_native_slabs(int64_t m, int64_t n, int64_t k);

// One slab's primitive: shapes, transposes, leading dimensions, C's type, alpha and
// beta are all fixed in it.
struct GemmNativeKey {
  int64_t rows, cols, k, lda, ldb, ldc;
  bool trans_a, trans_b, c_bf16;
  float alpha, beta;
  std::array<int64_t, 11> packed() const;
};
struct GemmNativePlan {
  explicit GemmNativePlan(const GemmNativeKey& key);
  dnnl::memory::desc a, b, c;
  dnnl::matmul primitive;
  dnnl::memory::desc scratchpad;
  size_t scratchpad_bytes = 0;
};

// The native GEMM's primitives, made for one thread on first use and kept until
// clear() (OpsBackend::release_plans), and the workspace of each (m, n, k, C type).
// Safe to use from several threads, as ConvPlanCache.
class GemmPlanCache {
 public:
  std::shared_ptr<const GemmNativePlan> get(const GemmNativeKey& key);
  // The bytes of one slab's scratch area for (m, n, k, C): the largest scratchpad of
  // its slab shapes over the four transposes and beta 0 or 1, packed leading dimensions.
  size_t slab_area_bytes(int64_t m, int64_t n, int64_t k, bool c_bf16);
  void clear();
  size_t size() const;

 private:
  mutable std::mutex mutex_;
  std::map<std::array<int64_t, 11>, std::shared_ptr<const GemmNativePlan>> plans_;
  std::map<std::array<int64_t, 4>, size_t> areas_;
};

// The workspace gemm_native takes: one scratch area per slab.
size_t gemm_native_workspace_bytes(GemmPlanCache& plans, int64_t m, int64_t n, int64_t k, DType c);

// ops::gemm on bf16 A and B (C bf16 or fp32), natively. Other types go to gemm().
void gemm_native(Context& ctx, GemmPlanCache& plans, bool trans_a, bool trans_b, int64_t m, int64_t n,
                 int64_t k, float alpha, ConstTypedPtr a, int64_t lda, ConstTypedPtr b, int64_t ldb,
                 float beta, TypedPtr c, int64_t ldc);

// ops::linear_forward on bf16 operands, natively (Note [Native linear forward] in
// gemm_native.cpp): the product of each band of rows into fp32, then the epilogue.
// Other types, and no input columns, go to linear_forward(). The budget bounds the
// fp32 block (a parameter for the tests that force several bands).
void linear_forward_native(Context& ctx, GemmPlanCache& plans, ConstTypedPtr x, ConstTypedPtr w, ConstTypedPtr bias,
                           TypedPtr pre, TypedPtr y, int64_t rows, int64_t in, int64_t out, LinearEpilogue epilogue,
                           size_t budget_bytes = kGemmWorkspaceBudget);
// The workspace it takes: the fp32 block of a band and the band GEMMs' scratch areas.
size_t linear_forward_native_workspace_bytes(GemmPlanCache& plans, int64_t rows, int64_t in, int64_t out,
                                             size_t budget_bytes = kGemmWorkspaceBudget);
// The rows of a band: as many as fit the budget in fp32 (whole kGemmNativeSlabAlign
// units, at least one), all of them when they fit. Pure.
int64_t linear_native_band_rows(int64_t rows, int64_t out, size_t budget_bytes);

}  // namespace dtrain::cpu
