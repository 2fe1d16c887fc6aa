// The CUDA LayerNorm kernels (kernels/cuda/layernorm_kernels.cuh) and the column sums
// that give its parameter gradients (kernels/cuda/column_sum_kernels.cuh, Note [Column
// sum partition]), the very source the GPU runs, executed on the CPU by the SIMT
// emulator (simt_emulator.h) against the CPU ops, the oracle, in fp32 and bf16 and in
// both row forms (packs of kPackElements and one element at a time):
// - forward, and the residual add fused with it (Note [Fused residual LayerNorm]),
//   whose sum is the add's bits and whose output is the plain kernel's bits on it;
// - backward: dx set and accumulated, in place over dy too, and the parameter
//   gradients added into what they held, over enough rows for several chunks, by the
//   fused kernel (Note [Fused LayerNorm backward]) and by the rows kernel and the
//   column sums (the path of rows wider than it takes); in each, the two forms'
//   parameter gradients agree bit for bit.
// Bounds, and why, as tests/gpu/test_transformer_ops.cpp states them for the same ops
// on a GPU (2e-5 forward: the row sums in another order; 1e-4 of the norm backward;
// bf16 one rounding more, tests/gpu/stored_types.h). Grids are smaller than the rows,
// so every grid-stride loop turns.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/context.h"
#include "kernels/dtype.h"
#include "kernels/ops.h"
#include "kernels/rng.h"
#include "tests/gpu/stored_types.h"
// Last: it defines the CUDA names (threadIdx, __global__, ...) as macros.
#include "tests/unit/kernels/simt_emulator.h"
#include "tests/unit/kernels/simt_storage.h"

#include "kernels/cuda/layernorm_kernels.cuh"

namespace dtrain {
namespace {

using testing::all_close;
using testing::close_relative;
using testing::close_to_norm;
using testing::nans;
using testing::norm_close;
using testing::random_normal;
using testing::same_bits;
using testing::stored;
using testing::stored_nans;
namespace ln = cuda::layernorm;

constexpr simt::Dim3 kBlock{cuda::kBlockThreads, 1, 1};
// Two blocks of kRowsPerBlock warps: fewer than the rows of every case but the first.
constexpr simt::Dim3 kRowGrid{2, 1, 1};

struct Shape {
  int64_t rows, channels;
};
// Below, at and above a warp's width; widths of packs (40, 96) and not (5, 33, 100);
// 300 and 520 rows make 5 and 9 chunks of the column sums (64 rows each at least).
// The fused kernel's instances (runs of V channels a lane holds): packs 1 (up to 256
// channels), 2 (264), 3 (GPT-2's 768) and 4 (1024, its widest row); single channels 8
// (up to 256), 16 (300), 24 (768) and 32 (1024).
const Shape kShapes[] = {{3, 5},    {17, 32},  {40, 33},  {21, 96},   {300, 40},
                         {520, 100}, {33, 264}, {45, 300}, {70, 768}, {70, 1024}};

// The forms a shape allows: packs need whole packs per row (rows_packable; the
// vectors here are aligned to a pack).
std::vector<int> forms_of(const Shape& s) {
  if (s.channels % cuda::kPackElements == 0) return {cuda::kPackElements, 1};
  return {1};
}

template <class F>
void with_form(int v, F&& f) {
  if (v == cuda::kPackElements) {
    f(std::integral_constant<int, cuda::kPackElements>{});
  } else {
    f(std::integral_constant<int, 1>{});
  }
}

template <class T>
struct Forward {
  std::vector<T> y;
  std::vector<float> mean, rstd;
};

template <class T>
Forward<T> emulated_forward(int v, const std::vector<T>& x, const std::vector<T>& w, const std::vector<T>& b,
                            const Shape& s) {
  Forward<T> out{stored_nans<T>(s.rows * s.channels), nans(s.rows), nans(s.rows)};
  with_form(v, [&](auto form) {
    simt::launch(kRowGrid, kBlock, 0, ln::layernorm_forward_rows<decltype(form)::value, T>, x.data(), w.data(),
                 b.data(), out.y.data(), out.mean.data(), out.rstd.data(), s.rows, s.channels);
  });
  return out;
}

template <class T>
class LayerNormEmulated : public ::testing::Test {};
TYPED_TEST_SUITE(LayerNormEmulated, testing::StoredTypes, testing::StoredTypeNames);

TYPED_TEST(LayerNormEmulated, ForwardMatchesTheCpuInEitherForm) {
  using T = TypeParam;
  auto cpu = Context::make_cpu(1);
  Rng rng(1);
  for (const Shape& s : kShapes) {
    const int64_t n = s.rows * s.channels;
    // A mean far from 0, so a one-pass variance would lose digits.
    const auto x = stored<T>(random_normal(rng, n, 2.0, 3.0));
    const auto w = stored<T>(random_normal(rng, s.channels, 0.5, 1.0));
    const auto b = stored<T>(random_normal(rng, s.channels, 0.5));
    std::vector<T> y(static_cast<size_t>(n));
    std::vector<float> mean(static_cast<size_t>(s.rows)), rstd(mean.size());
    ops::layernorm_forward(*cpu, x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), s.rows,
                           s.channels);
    for (const int v : forms_of(s)) {
      SCOPED_TRACE(::testing::Message() << "rows=" << s.rows << " channels=" << s.channels << " form V=" << v);
      const Forward<T> got = emulated_forward(v, x, w, b, s);
      EXPECT_TRUE(close_relative(got.y, y, 2e-5));
      EXPECT_TRUE(all_close(got.mean, mean, 2e-5));
      EXPECT_TRUE(all_close(got.rstd, rstd, 2e-5));
    }
  }
}

// The fused kernel's residual is ops::add's (one rounded float sum per element), and
// its output and statistics are the plain kernel's bits on that residual, in the form
// layernorm_forward would take for it; a and b are read in packs or not (ab_packed),
// and the residual may be written over a.
TYPED_TEST(LayerNormEmulated, ResidualAddIsTheChainBitForBit) {
  using T = TypeParam;
  auto cpu = Context::make_cpu(1);
  Rng rng(3);
  for (const Shape& s : kShapes) {
    const int64_t n = s.rows * s.channels;
    const auto a = stored<T>(random_normal(rng, n, 2.0, 1.0));
    const auto b = stored<T>(random_normal(rng, n));
    const auto w = stored<T>(random_normal(rng, s.channels, 0.5, 1.0));
    const auto bias = stored<T>(random_normal(rng, s.channels, 0.5));
    std::vector<T> sum(static_cast<size_t>(n));
    ops::add(*cpu, a.data(), b.data(), sum.data(), n);
    for (const int v : forms_of(s)) {
      const Forward<T> chain = emulated_forward(v, sum, w, bias, s);
      for (const bool ab_packed : {v == cuda::kPackElements, false}) {
        for (const bool over_a : {false, true}) {
          SCOPED_TRACE(::testing::Message() << "rows=" << s.rows << " channels=" << s.channels << " form V=" << v
                                            << " ab_packed=" << ab_packed << " residual over a=" << over_a);
          auto a_in = a;
          std::vector<T> residual_apart = stored_nans<T>(n);
          T* residual = over_a ? a_in.data() : residual_apart.data();
          Forward<T> got{stored_nans<T>(n), nans(s.rows), nans(s.rows)};
          with_form(v, [&](auto form) {
            simt::launch(kRowGrid, kBlock, 0, ln::add_layernorm_forward_rows<decltype(form)::value, T>,
                         static_cast<const T*>(a_in.data()), b.data(), residual, w.data(), bias.data(), got.y.data(),
                         got.mean.data(), got.rstd.data(), s.rows, s.channels, ab_packed);
          });
          EXPECT_TRUE(same_bits(over_a ? a_in : residual_apart, sum));
          EXPECT_TRUE(same_bits(got.y, chain.y));
          EXPECT_TRUE(same_bits(got.mean, chain.mean));
          EXPECT_TRUE(same_bits(got.rstd, chain.rstd));
        }
      }
    }
  }
}

template <class T>
struct Backward {
  std::vector<T> dx;
  std::vector<float> dw, db;
};

// The host half of kernels/cuda/layernorm.cu's layernorm_backward, on the emulator:
// fused, the fused kernel then column_totals; else the column sums (as
// kernels/cuda/column_sums.cuh queues them) then the rows kernel. dx_over_dy: dx is
// written over dy (`dx` is ignored then).
template <class T>
void emulated_backward(bool fused, int v, std::vector<T>& dy, const std::vector<T>& x, const std::vector<T>& w,
                       const std::vector<float>& mean, const std::vector<float>& rstd, Backward<T>& out, const Shape& s,
                       bool accumulate, bool dx_over_dy) {
  using Terms = ln::LayerNormParamTerms<T>;
  const cuda::ColumnSumPlan plan = cuda::column_sum_plan(s.rows, s.channels);
  std::vector<double> partials(cuda::column_sum_workspace_bytes(s.rows, s.channels, Terms::kOutputs) / sizeof(double),
                               std::nan(""));
  const Terms terms{dy.data(), x.data(), mean.data(), rstd.data()};
  T* dx = dx_over_dy ? dy.data() : out.dx.data();
  const auto groups = static_cast<unsigned>((s.channels + cuda::kTotalLanes - 1) / cuda::kTotalLanes);
  if (fused) {
    with_form(v, [&](auto form) {
      constexpr int V = decltype(form)::value;
      ln::with_lane_runs<V>(s.channels, [&](auto runs) {
        simt::launch({static_cast<unsigned>(plan.chunks), 1, 1}, kBlock, 0,
                     ln::layernorm_backward_fused<V, decltype(runs)::value, T>, static_cast<const T*>(dy.data()),
                     x.data(), w.data(), mean.data(), rstd.data(), dx, s.rows, s.channels, plan, partials.data(),
                     accumulate);
      });
    });
    simt::launch({groups, Terms::kOutputs, 1}, kBlock, 0, cuda::column_totals<Terms::kOutputs>,
                 static_cast<const double*>(partials.data()), plan.chunks, s.channels,
                 cuda::ColumnOutputs<2>{{out.dw.data(), out.db.data()}});
    return;
  }
  with_form(v, [&](auto form) {
    constexpr int V = decltype(form)::value;
    const auto tiles = static_cast<unsigned>((s.channels + cuda::kColumnLanes * V - 1) / (cuda::kColumnLanes * V));
    simt::launch({tiles, static_cast<unsigned>(plan.chunks), 1}, kBlock, 0, cuda::column_partials<V, Terms>, terms,
                 s.rows, s.channels, plan, partials.data());
    simt::launch({groups, Terms::kOutputs, 1}, kBlock, 0, cuda::column_totals<Terms::kOutputs>,
                 static_cast<const double*>(partials.data()), plan.chunks, s.channels,
                 cuda::ColumnOutputs<2>{{out.dw.data(), out.db.data()}});
    simt::launch(kRowGrid, kBlock, 0, ln::layernorm_backward_rows<V, T>, static_cast<const T*>(dy.data()), x.data(),
                 w.data(), mean.data(), rstd.data(), dx, s.rows, s.channels, accumulate);
  });
}

TYPED_TEST(LayerNormEmulated, BackwardMatchesTheCpuAndTheFormsAgreeOnTheParameterGradients) {
  using T = TypeParam;
  auto cpu = Context::make_cpu(1);
  Rng rng(2);
  for (const Shape& s : kShapes) {
    const int64_t n = s.rows * s.channels;
    const auto x = stored<T>(random_normal(rng, n, 2.0, -1.0));
    const auto w = stored<T>(random_normal(rng, s.channels, 0.5, 1.0));
    const auto bias = stored<T>(random_normal(rng, s.channels, 0.5));
    const auto dy = stored<T>(random_normal(rng, n));
    // The row statistics from the CPU forward: only backward is compared.
    std::vector<T> y(static_cast<size_t>(n));
    std::vector<float> mean(static_cast<size_t>(s.rows)), rstd(mean.size());
    ops::layernorm_forward(*cpu, x.data(), w.data(), bias.data(), y.data(), mean.data(), rstd.data(), s.rows,
                           s.channels);
    for (const bool accumulate : {false, true}) {
      for (const bool dx_over_dy : {false, true}) {
        // The gradients the op adds into start random (+= is checked); a dx it must
        // overwrite starts as NaN.
        const auto dx_before = accumulate ? stored<T>(random_normal(rng, n)) : stored_nans<T>(n);
        const auto dw_before = random_normal(rng, s.channels);
        const auto db_before = random_normal(rng, s.channels);
        // The CPU, doing the same (in place over dy where the kernel is: with
        // accumulate, the residual stream's dx = dy + the input gradient).
        auto cpu_dy = dy;
        Backward<T> want{accumulate ? dx_before : stored<T>(std::vector<float>(static_cast<size_t>(n), 0.0f)),
                         dw_before, db_before};
        T* cpu_dx = dx_over_dy ? cpu_dy.data() : want.dx.data();
        ops::layernorm_backward(*cpu, cpu_dy.data(), x.data(), w.data(), mean.data(), rstd.data(), cpu_dx,
                                want.dw.data(), want.db.data(), s.rows, s.channels, accumulate);
        if (dx_over_dy) want.dx = cpu_dy;
        for (const bool fused : {true, false}) {
          std::vector<Backward<T>> by_form;
          for (const int v : forms_of(s)) {
            SCOPED_TRACE(::testing::Message() << "rows=" << s.rows << " channels=" << s.channels << " form V=" << v
                                              << (fused ? " fused" : " unfused") << " accumulate=" << accumulate
                                              << " dx over dy=" << dx_over_dy);
            auto emulated_dy = dy;
            Backward<T> got{dx_before, dw_before, db_before};
            emulated_backward(fused, v, emulated_dy, x, w, mean, rstd, got, s, accumulate, dx_over_dy);
            if (dx_over_dy) got.dx = emulated_dy;
            EXPECT_TRUE(close_to_norm(got.dx, want.dx, 1e-4));
            EXPECT_TRUE(norm_close(got.dw, want.dw, 1e-4));
            EXPECT_TRUE(norm_close(got.db, want.db, 1e-4));
            by_form.push_back(got);
          }
          if (by_form.size() == 2) {
            EXPECT_TRUE(same_bits(by_form[0].dw, by_form[1].dw));
            EXPECT_TRUE(same_bits(by_form[0].db, by_form[1].db));
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace dtrain
