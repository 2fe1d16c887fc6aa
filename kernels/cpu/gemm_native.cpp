// Note [Native bf16 GEMM]
// On a CPU with bf16 dot products (AVX512-BF16 on Zen 4 and Cooper Lake and later, AMX
// on Sapphire Rapids), a GEMM on bf16 A and B runs as oneDNN's matmul on the bf16
// operands with fp32 accumulation (its brgemm kernels), alpha as the primitive's output
// scale and beta * C as its sum post-op, so a bf16 C is rounded once, after beta * C is
// added, as in the emulated GEMM. The products of two bf16 values are exact in fp32 in
// both; only the order of the fp32 additions differs (and VDPBF16PS treats denormal
// inputs as zero), so the native C is within the tolerance of test_cpu_gemm_native.cpp
// of the emulated oracle, not equal to it bit for bit.
//
// Selection: DTRAIN_CPU_BF16=native|emulated, read once when the backend is made;
// unset means native where oneDNN's effective ISA has bf16 dot products
// (cpu_has_native_bf16), emulated elsewhere. "emulated" forces the oracle everywhere.
//
// Determinism, as Note [oneDNN convolutions]: C is split into slabs along its longer
// dimension (gemm_native_slabs: a power of two up to kGemmNativeMaxSlabs, with at
// least kGemmNativeSlabMacs multiply-adds each, so the slabs divide evenly among 1, 2,
// 4, ... threads), each computed by a primitive made for one thread and run on one
// thread of the team with OpenMP's thread count set to one. The slabs are a function of
// the shape alone, and every element of C belongs to one slab, so C is the same bits on
// any number of threads and on every run. (oneDNN's own threading would split the
// reduction over k between threads for some shapes.)
//
// Workspace: one scratch area per slab (the primitive's scratchpad, scratchpad mode
// "user"), each of GemmPlanCache::slab_area_bytes, the largest scratchpad over the
// shape's slab shapes, the four transposes and beta 0 or 1 with packed leading
// dimensions: a function of (m, n, k, C type), which is all gemm_workspace_bytes is
// told. A call whose own primitive would need more (oneDNN sizes its copies from the
// blocks, not the leading dimensions, so none is known) takes that more.
#include "kernels/cpu/gemm_native.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <optional>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "kernels/check.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/onednn.h"
#include "kernels/cpu/storage.h"
#include "kernels/errors.h"

namespace dtrain::cpu {

namespace {

constexpr size_t kAlignBytes = 64;
size_t aligned(size_t bytes) { return (bytes + kAlignBytes - 1) / kAlignBytes * kAlignBytes; }

int64_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

std::string describe(const GemmNativeKey& k) {
  std::ostringstream out;
  out << "a native bf16 GEMM slab of " << k.rows << "x" << k.cols << "x" << k.k << " trans_a=" << k.trans_a
      << " trans_b=" << k.trans_b << " lda=" << k.lda << " ldb=" << k.ldb << " ldc=" << k.ldc
      << " C=" << (k.c_bf16 ? "bf16" : "fp32") << " alpha=" << k.alpha << " beta=" << k.beta;
  return out.str();
}

}  // namespace

bool cpu_has_native_bf16() {
  const auto isa = static_cast<unsigned>(dnnl::get_effective_cpu_isa());
  const auto bf16 = static_cast<unsigned>(dnnl::cpu_isa::avx512_core_bf16);
  return (isa & bf16) == bf16;  // oneDNN's ISAs are nested bit sets; AMX's holds this one's
}

Bf16Gemm bf16_gemm_choice(const char* env_value, bool supported) {
  if (env_value == nullptr || *env_value == '\0') return supported ? Bf16Gemm::kNative : Bf16Gemm::kEmulated;
  const std::string v = env_value;
  if (v == "emulated") return Bf16Gemm::kEmulated;
  if (v == "native") {
    if (!supported) {
      throw Error("DTRAIN_CPU_BF16=native: this CPU has no bf16 dot products (AVX512-BF16 or AMX) that oneDNN "
                  "can use; unset DTRAIN_CPU_BF16 or set it to emulated");
    }
    return Bf16Gemm::kNative;
  }
  throw Error("DTRAIN_CPU_BF16='" + v + "' is not a bf16 GEMM choice: set native, emulated, or leave it unset");
}

Bf16Gemm bf16_gemm_from_environment() {
  return bf16_gemm_choice(std::getenv("DTRAIN_CPU_BF16"), cpu_has_native_bf16());
}

int64_t GemmSlabs::lo(int64_t s) const {
  const int64_t units = (extent + kGemmNativeSlabAlign - 1) / kGemmNativeSlabAlign;
  return std::min(extent, units * s / count * kGemmNativeSlabAlign);
}
int64_t GemmSlabs::hi(int64_t s) const { return s + 1 == count ? extent : lo(s + 1); }

GemmSlabs gemm_native_slabs(int64_t m, int64_t n, int64_t k) {
  GemmSlabs s;
  s.columns = n > m;
  s.extent = s.columns ? n : m;
  const int64_t by_work = m * n * k / kGemmNativeSlabMacs;
  const int64_t by_extent = s.extent / kGemmNativeSlabAlign;
  const int64_t most = std::min({kGemmNativeMaxSlabs, by_work, by_extent});
  while (s.count * 2 <= most) s.count *= 2;
  return s;
}

std::array<int64_t, 11> GemmNativeKey::packed() const {
  return {rows, cols, k, lda, ldb, ldc, trans_a, trans_b, c_bf16, float_bits(alpha), float_bits(beta)};
}

namespace {

struct MatmulDescs {
  dnnl::memory::desc a, b, c;
};

// op(A) (rows, k) and op(B) (k, cols) as strided views of A and B as stored.
MatmulDescs matmul_descs(const GemmNativeKey& key) {
  using dt = dnnl::memory::data_type;
  return {dnnl::memory::desc({key.rows, key.k}, dt::bf16,
                             key.trans_a ? dnnl::memory::dims{1, key.lda} : dnnl::memory::dims{key.lda, 1}),
          dnnl::memory::desc({key.k, key.cols}, dt::bf16,
                             key.trans_b ? dnnl::memory::dims{1, key.ldb} : dnnl::memory::dims{key.ldb, 1}),
          dnnl::memory::desc({key.rows, key.cols}, key.c_bf16 ? dt::bf16 : dt::f32, dnnl::memory::dims{key.ldc, 1})};
}

// Made for one thread: gemm_native runs each slab on one thread of its team. The
// caller holds an OmpThreadsScope(1).
dnnl::matmul::primitive_desc matmul_pd(const GemmNativeKey& key, const MatmulDescs& d, const std::string& where) {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (key.alpha != 1.0f) attr.set_output_scales(0, {key.alpha});
  if (key.beta != 0.0f) {
    dnnl::post_ops sum;
    sum.append_sum(key.beta);
    attr.set_post_ops(sum);
  }
  return DTRAIN_ONEDNN_CHECK(dnnl::matmul::primitive_desc(dnnl::matmul::desc(d.a, d.b, d.c), attr, onednn_engine()),
                             where);
}

// The scratchpad a slab's primitive would take, from its descriptor alone (no JIT).
size_t scratchpad_bytes_of(const GemmNativeKey& key) {
  const OmpThreadsScope one_thread(1);
  return matmul_pd(key, matmul_descs(key), "sizing " + describe(key)).scratchpad_desc().get_size();
}

}  // namespace

GemmNativePlan::GemmNativePlan(const GemmNativeKey& key) {
  const std::string where = "planning " + describe(key);
  const OmpThreadsScope one_thread(1);
  const MatmulDescs d = matmul_descs(key);
  a = d.a;
  b = d.b;
  c = d.c;
  const auto pd = matmul_pd(key, d, where);
  primitive = DTRAIN_ONEDNN_CHECK(dnnl::matmul(pd), where);
  scratchpad = pd.scratchpad_desc();
  scratchpad_bytes = scratchpad.get_size();
}

std::shared_ptr<const GemmNativePlan> GemmPlanCache::get(const GemmNativeKey& key) {
  const auto packed = key.packed();
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    if (auto it = plans_.find(packed); it != plans_.end()) return it->second;
  }
  auto plan = std::make_shared<const GemmNativePlan>(key);  // outside the lock: JIT takes a while
  const std::lock_guard<std::mutex> lock(mutex_);
  return plans_.emplace(packed, std::move(plan)).first->second;
}

size_t GemmPlanCache::slab_area_bytes(int64_t m, int64_t n, int64_t k, bool c_bf16) {
  const std::array<int64_t, 4> shape{m, n, k, c_bf16};
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    if (auto it = areas_.find(shape); it != areas_.end()) return it->second;
  }
  const GemmSlabs slabs = gemm_native_slabs(m, n, k);
  size_t most = 0;
  for (int64_t s = 0; s < slabs.count; ++s) {
    const int64_t extent = slabs.hi(s) - slabs.lo(s);
    const int64_t rows = slabs.columns ? m : extent, cols = slabs.columns ? extent : n;
    if (s > 0 && extent == slabs.hi(s - 1) - slabs.lo(s - 1)) continue;  // a shape already seen
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        for (float beta : {0.0f, 1.0f}) {
          // Packed leading dimensions of the whole product's A, B and C.
          const GemmNativeKey key{rows, cols, k, ta ? m : k, tb ? k : n, n, ta, tb, c_bf16, 1.0f, beta};
          most = std::max(most, aligned(scratchpad_bytes_of(key)));
        }
      }
    }
  }
  const std::lock_guard<std::mutex> lock(mutex_);
  areas_.emplace(shape, most);
  return most;
}

void GemmPlanCache::clear() {
  const std::lock_guard<std::mutex> lock(mutex_);
  plans_.clear();
  areas_.clear();
}

size_t GemmPlanCache::size() const {
  const std::lock_guard<std::mutex> lock(mutex_);
  return plans_.size();
}

size_t gemm_native_workspace_bytes(GemmPlanCache& plans, int64_t m, int64_t n, int64_t k, DType c) {
  if (m <= 0 || n <= 0 || k <= 0) return 0;
  return static_cast<size_t>(gemm_native_slabs(m, n, k).count) *
         plans.slab_area_bytes(m, n, k, c == DType::kBF16);
}

namespace {

// A native GEMM's slabs and their plans, made (or found) before it runs, outside the
// parallel region, and the scratch area each slab gets: the shape's slab_area_bytes,
// or more where a slab's own primitive asks for more.
struct SlabRun {
  GemmSlabs slabs;
  std::vector<std::shared_ptr<const GemmNativePlan>> plans;
  size_t area_bytes = 0;
  size_t workspace_bytes() const { return area_bytes * static_cast<size_t>(slabs.count); }
};

SlabRun plan_slab_run(GemmPlanCache& plans, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                      int64_t lda, int64_t ldb, int64_t ldc, bool c_bf16, float alpha, float beta) {
  SlabRun run;
  run.slabs = gemm_native_slabs(m, n, k);
  run.plans.resize(static_cast<size_t>(run.slabs.count));
  run.area_bytes = plans.slab_area_bytes(m, n, k, c_bf16);
  for (int64_t s = 0; s < run.slabs.count; ++s) {
    const int64_t extent = run.slabs.hi(s) - run.slabs.lo(s);
    if (s > 0 && extent == run.slabs.hi(s - 1) - run.slabs.lo(s - 1)) {
      run.plans[s] = run.plans[s - 1];
      continue;
    }
    const GemmNativeKey key{run.slabs.columns ? m : extent, run.slabs.columns ? extent : n, k, lda, ldb, ldc,
                            trans_a, trans_b, c_bf16, alpha, beta};
    run.plans[s] = plans.get(key);
    run.area_bytes = std::max(run.area_bytes, aligned(run.plans[s]->scratchpad_bytes));
  }
  return run;
}

// Runs the slabs, each on one thread of the team; c holds elements of c_size bytes;
// areas: run.workspace_bytes() of scratch (may be null when that is 0).
void run_slabs(Context& ctx, const SlabRun& run, bool trans_a, bool trans_b, int64_t lda, int64_t ldb, int64_t ldc,
               const bf16* a16, const bf16* b16, void* c, size_t c_size, char* areas) {
  const GemmSlabs& slabs = run.slabs;
  auto run_slab = [&](dnnl::stream& stream, int64_t s) {
    const GemmNativePlan& p = *run.plans[s];
    const int64_t lo = slabs.lo(s);
    const bf16* a_at = a16;
    const bf16* b_at = b16;
    size_t c_offset = 0;
    if (slabs.columns) {
      b_at += trans_b ? lo * ldb : lo;
      c_offset = static_cast<size_t>(lo);
    } else {
      a_at += trans_a ? lo : lo * lda;
      c_offset = static_cast<size_t>(lo * ldc);
    }
    const dnnl::engine& engine = onednn_engine();
    std::unordered_map<int, dnnl::memory> args{
        {DNNL_ARG_SRC, dnnl::memory(p.a, engine, const_cast<bf16*>(a_at))},
        {DNNL_ARG_WEIGHTS, dnnl::memory(p.b, engine, const_cast<bf16*>(b_at))},
        {DNNL_ARG_DST, dnnl::memory(p.c, engine, static_cast<char*>(c) + c_offset * c_size)}};
    if (p.scratchpad_bytes > 0) {
      args.emplace(DNNL_ARG_SCRATCHPAD,
                   dnnl::memory(p.scratchpad, engine, areas + static_cast<size_t>(s) * run.area_bytes));
    }
    DTRAIN_ONEDNN_CHECK(p.primitive.execute(stream, args), "running a native bf16 GEMM");
  };
  const int team = static_cast<int>(std::min<int64_t>(ctx.num_threads(), slabs.count));
  std::exception_ptr error;
  std::atomic<bool> failed{false};
#pragma omp parallel num_threads(team)
  {
    omp_set_num_threads(1);  // this thread's count, for oneDNN inside; the caller's is untouched
    std::optional<dnnl::stream> stream;
#pragma omp for schedule(static)
    for (int64_t s = 0; s < slabs.count; ++s) {
      if (failed) continue;
      try {
        if (!stream) stream.emplace(onednn_engine());
        run_slab(*stream, s);
      } catch (...) {
        failed = true;
#pragma omp critical(dtrain_gemm_native_error)
        if (!error) error = std::current_exception();
      }
    }
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace

void gemm_native(Context& ctx, GemmPlanCache& plans, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                 float alpha, ConstTypedPtr a, int64_t lda, ConstTypedPtr b, int64_t ldb, float beta, TypedPtr c,
                 int64_t ldc) {
  const DType ab = common_type("gemm", {{"A", a}, {"B", b}});
  if (ab != DType::kBF16 || m == 0 || n == 0 || k == 0 || alpha == 0.0f) {
    gemm(ctx, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);  // its checks, its trivial cases
    return;
  }
  DTRAIN_ASSERT(m > 0 && n > 0 && k > 0 && lda > 0 && ldb > 0 && ldc > 0, "gemm: negative dimension");
  const bool c_bf16 = c.type == DType::kBF16;
  const SlabRun run = plan_slab_run(plans, trans_a, trans_b, m, n, k, lda, ldb, ldc, c_bf16, alpha, beta);
  const size_t bytes = run.workspace_bytes();
  char* areas = bytes == 0 ? nullptr : static_cast<char*>(ctx.workspace(bytes));
  run_slabs(ctx, run, trans_a, trans_b, lda, ldb, ldc, static_cast<const bf16*>(a.data),
            static_cast<const bf16*>(b.data), c.data, dtype_size(c.type), areas);
}

// Note [Native linear forward]
// The bf16 linear (Note [Fused linear epilogue], kernels/ops.h) on the native GEMM: the
// product x W^T of a band of rows goes to an fp32 block in the workspace (the native
// GEMM with an fp32 C, its slabs as any native GEMM's), and linear_epilogue_rows adds
// the bias, applies GELU and stores each value once, as the emulated linear does with
// its own blocks. The bands bound that block to the budget: as many rows as fit (whole
// slab units), all of them when the product fits. Bands and slabs are functions of the
// shape alone, so the result is the same bits on any number of threads. Against the
// emulated linear, only the order of the fp32 sums in the product differs, so the
// native GEMM's bound (test_cpu_gemm_native.cpp) holds for v before its one rounding.
int64_t linear_native_band_rows(int64_t rows, int64_t out, size_t budget_bytes) {
  const auto per_row = static_cast<size_t>(out) * sizeof(float);
  const auto fitting = static_cast<int64_t>(budget_bytes / per_row) / kGemmNativeSlabAlign * kGemmNativeSlabAlign;
  return std::min(rows, std::max(fitting, kGemmNativeSlabAlign));
}

namespace {

// The native GEMM of one band of a linear's rows: x W^T into a packed fp32 block.
SlabRun plan_band(GemmPlanCache& plans, int64_t band_rows, int64_t in, int64_t out) {
  return plan_slab_run(plans, false, true, band_rows, out, in, in, in, out, /*c_bf16=*/false, 1.0f, 0.0f);
}

}  // namespace

size_t linear_forward_native_workspace_bytes(GemmPlanCache& plans, int64_t rows, int64_t in, int64_t out,
                                             size_t budget_bytes) {
  if (rows <= 0 || in <= 0 || out <= 0) return 0;
  const int64_t band = linear_native_band_rows(rows, out, budget_bytes);
  const int64_t rest = rows % band;
  size_t areas = gemm_native_workspace_bytes(plans, band, out, in, DType::kF32);
  if (rest > 0) areas = std::max(areas, gemm_native_workspace_bytes(plans, rest, out, in, DType::kF32));
  return aligned(static_cast<size_t>(band * out) * sizeof(float)) + areas;
}

void linear_forward_native(Context& ctx, GemmPlanCache& plans, ConstTypedPtr x, ConstTypedPtr w, ConstTypedPtr bias,
                           TypedPtr pre, TypedPtr y, int64_t rows, int64_t in, int64_t out, LinearEpilogue epilogue,
                           size_t budget_bytes) {
  const bool gelu = epilogue == LinearEpilogue::kBiasGelu;
  const DType type = common_type("linear_forward", {{"x", x}, {"w", w}, {"bias", bias}, {"pre", pre}, {"y", y}});
  if (type != DType::kBF16 || rows == 0 || in == 0 || out == 0) {
    linear_forward(ctx, x, w, bias, pre, y, rows, in, out, epilogue);  // its checks, its trivial cases
    return;
  }
  if (gelu && pre.data == nullptr) throw Error("linear_forward: the GELU epilogue needs pre, to keep for backward");
  DTRAIN_ASSERT(rows > 0 && in > 0 && out > 0, "linear_forward: negative dimension");
  const int64_t band = linear_native_band_rows(rows, out, budget_bytes);
  const int64_t rest = rows % band;
  const SlabRun full = plan_band(plans, band, in, out);
  const SlabRun last = rest > 0 ? plan_band(plans, rest, in, out) : SlabRun{};
  const size_t product_bytes = aligned(static_cast<size_t>(band * out) * sizeof(float));
  auto* ws = static_cast<char*>(
      ctx.workspace(product_bytes + std::max(full.workspace_bytes(), rest > 0 ? last.workspace_bytes() : 0)));
  auto* product = reinterpret_cast<float*>(ws);
  char* areas = ws + product_bytes;
  const auto* x16 = static_cast<const bf16*>(x.data);
  const auto* w16 = static_cast<const bf16*>(w.data);
  for (int64_t r0 = 0; r0 < rows; r0 += band) {
    const int64_t here = std::min(band, rows - r0);
    run_slabs(ctx, here == band ? full : last, false, true, in, in, out, x16 + r0 * in, w16, product,
              sizeof(float), areas);
    linear_epilogue_rows(ctx, product, r0, here, out, static_cast<const bf16*>(bias.data),
                         gelu ? static_cast<bf16*>(pre.data) : nullptr, static_cast<bf16*>(y.data), epilogue);
  }
}

}  // namespace dtrain::cpu
