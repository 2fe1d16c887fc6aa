// The variable-count collectives (reduce_scatter_v, all_gather_v) under 1, 2, 3 and 4
// ranks, over every implementation that runs without a GPU: MpiCommunicator's
// non-blocking and blocking forms, the base class's defaults, the CPU device
// communicator, and StagingCommunicator on a CPU and on an asynchronous CPU context.
// Every rank fills its buffer by a formula in (rank, element index); the expected
// values are closed forms of the same formula, and the block offsets are summed here.
#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "comm/device_communicator.h"
#include "comm/mpi_communicator.h"
#include "comm/staging_communicator.h"
#include "comm/typed_collectives.h"
#include "kernels/dtype.h"
#include "kernels/errors.h"
#include "tests/mpi/device_array.h"
#include "tests/mpi/mpi_env.h"

namespace dtrain {
namespace {

using testing_mpi::DeviceArray;
using testing_mpi::world;

// The mandatory collectives forwarded to MPI; the v-forms are the base class's.
class DefaultVForms : public Communicator {
 public:
  explicit DefaultVForms(MpiCommunicator& mpi) : mpi_(mpi) {}
  int rank() const override { return mpi_.rank(); }
  int size() const override { return mpi_.size(); }
  std::string backend_name() const override { return "mpi with the default v-forms"; }
  std::unique_ptr<Work> all_reduce(void* buf, size_t count, DataType type, ReduceOp op) override {
    return mpi_.all_reduce(buf, count, type, op);
  }
  std::unique_ptr<Work> reduce_scatter(const void* send, void* recv, size_t recv_count, DataType type,
                                       ReduceOp op) override {
    return mpi_.reduce_scatter(send, recv, recv_count, type, op);
  }
  std::unique_ptr<Work> all_gather(const void* send, void* recv, size_t send_count, DataType type) override {
    return mpi_.all_gather(send, recv, send_count, type);
  }
  std::unique_ptr<Work> broadcast(void* buf, size_t count, DataType type, int root) override {
    return mpi_.broadcast(buf, count, type, root);
  }
  std::unique_ptr<Work> barrier() override { return mpi_.barrier(); }

 protected:
  MpiCommunicator& mpi_;
};

// MpiCommunicator's blocking v-forms (those for device buffers under CUDA-aware MPI),
// here on host buffers.
class BlockingVForms final : public DefaultVForms {
 public:
  using DefaultVForms::DefaultVForms;
  std::unique_ptr<Work> reduce_scatter_v(void* buf, std::span<const size_t> counts, DataType type,
                                         ReduceOp op) override {
    mpi_.reduce_scatter_v_blocking(buf, counts, type, op);
    return std::make_unique<CompletedWork>();
  }
  std::unique_ptr<Work> all_gather_v(void* buf, std::span<const size_t> counts, DataType type) override {
    mpi_.all_gather_v_blocking(buf, counts, type);
    return std::make_unique<CompletedWork>();
  }
};

enum class Backend { Mpi, MpiBlocking, BaseDefaults, CpuDevice, StagingCpu, StagingCpuAsync };

std::string backend_label(const ::testing::TestParamInfo<Backend>& info) {
  switch (info.param) {
    case Backend::Mpi: return "Mpi";
    case Backend::MpiBlocking: return "MpiBlocking";
    case Backend::BaseDefaults: return "BaseDefaults";
    case Backend::CpuDevice: return "CpuDevice";
    case Backend::StagingCpu: return "StagingCpu";
    case Backend::StagingCpuAsync: return "StagingCpuAsync";
  }
  return "unknown";
}

struct Layout {
  const char* name;
  std::vector<size_t> counts;
};

std::vector<size_t> counts_by_rank(int n, const std::function<size_t(int)>& count_of) {
  std::vector<size_t> counts;
  for (int q = 0; q < n; ++q) counts.push_back(count_of(q));
  return counts;
}

// Block sizes for a world of n ranks. With one or two ranks some coincide (the middle
// rank is the last of two; with one rank, "first rank empty" is an empty buffer).
std::vector<Layout> layouts(int n) {
  return {
      {"uneven", counts_by_rank(n, [](int q) { return size_t(5 + 7 * q); })},
      {"first rank empty", counts_by_rank(n, [](int q) { return q == 0 ? size_t(0) : size_t(3 + q); })},
      {"middle rank empty", counts_by_rank(n, [n](int q) { return q == n / 2 ? size_t(0) : size_t(11 - q); })},
      {"last rank empty", counts_by_rank(n, [n](int q) { return q == n - 1 ? size_t(0) : size_t(2 * q + 1); })},
      {"all equal", counts_by_rank(n, [](int) { return size_t(16); })},
      {"one rank owns all", counts_by_rank(n, [n](int q) { return q == n / 2 ? size_t(97) : size_t(0); })},
      {"every rank empty", counts_by_rank(n, [](int) { return size_t(0); })},
      // Large enough that MPI picks its algorithms for long messages.
      {"large and uneven", counts_by_rank(n, [](int q) { return size_t(40000 + 3001 * q); })},
  };
}

// Element values: small integers, so that every sum is exact in every type up to 4
// ranks (uint8 holds 255, bf16 every integer to 256; Note [bf16 sum] then rounds
// nothing). The period 31 divides none of the block offsets above, so a block found
// at the wrong offset shows.
int reduce_input(int q, size_t i) { return q + static_cast<int>(i % 31); }     // rank q, element i
int reduced(int n, size_t i) { return n * (n - 1) / 2 + n * static_cast<int>(i % 31); }  // sum over q < n
int gather_input(int q, size_t i) { return 1 + 32 * q + static_cast<int>(i % 31); }  // at most 127
constexpr int kSentinel = 200;  // neither a gathered value nor a sum
constexpr size_t kGuard = 3;    // sentinel elements after the buffer, which no collective may touch

template <class T>
T element(int v) {
  if constexpr (std::is_same_v<T, bf16>) {
    return float_to_bf16(static_cast<float>(v));
  } else {
    return static_cast<T>(v);
  }
}

template <class T>
bool same(T a, T b) {
  if constexpr (std::is_same_v<T, bf16>) {
    return a.bits == b.bits;
  } else {
    return a == b;
  }
}

enum class Kind { ReduceScatterV, AllGatherV };

const char* kind_name(Kind k) { return k == Kind::ReduceScatterV ? "reduce_scatter_v" : "all_gather_v"; }

// One variable-count collective on a buffer of the context: the inputs by formula, and
// the check of what the contract defines afterwards (this rank's block for
// reduce_scatter_v, every block for all_gather_v) and of the guard after the buffer.
template <class T>
class VariableCase {
 public:
  VariableCase(Context& ctx, Kind kind, std::vector<size_t> counts)
      : kind_(kind), counts_(std::move(counts)), buf_(ctx, total() + kGuard) {
    std::vector<T> host(buf_.size(), element<T>(kSentinel));
    for (int q = 0; q < n_; ++q) {
      for (size_t i = begin(q), e = end(q); i < e; ++i) {
        if (kind_ == Kind::ReduceScatterV) host[i] = element<T>(reduce_input(r_, i));
        if (kind_ == Kind::AllGatherV && q == r_) host[i] = element<T>(gather_input(r_, i));
      }
    }
    buf_.upload(host);
  }

  std::unique_ptr<Work> issue(Communicator& comm) {
    const std::span<T> flat(buf_.data(), total());
    if (kind_ == Kind::ReduceScatterV) return reduce_scatter_v(comm, flat, std::span<const size_t>(counts_));
    return all_gather_v(comm, flat, std::span<const size_t>(counts_));
  }

  // Elements that differ from the formula, among those the contract defines and the
  // guard.
  size_t wrong() {
    const std::vector<T> out = buf_.download();
    size_t wrong = 0;
    for (int q = 0; q < n_; ++q) {
      if (kind_ == Kind::ReduceScatterV && q != r_) continue;  // unspecified afterwards
      for (size_t i = begin(q), e = end(q); i < e; ++i) {
        const int expected = kind_ == Kind::ReduceScatterV ? reduced(n_, i) : gather_input(q, i);
        wrong += !same(out[i], element<T>(expected));
      }
    }
    for (size_t i = total(); i < out.size(); ++i) wrong += !same(out[i], element<T>(kSentinel));
    return wrong;
  }

  const char* kind_name() const { return ::dtrain::kind_name(kind_); }

 private:
  size_t begin(int q) const {
    size_t offset = 0;
    for (int p = 0; p < q; ++p) offset += counts_[static_cast<size_t>(p)];
    return offset;
  }
  size_t end(int q) const { return begin(q + 1); }
  size_t total() const { return begin(n_); }

  const int n_ = world().size();
  const int r_ = world().rank();
  Kind kind_;
  std::vector<size_t> counts_;
  DeviceArray<T> buf_;
};

class VariableCount : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    ctx = GetParam() == Backend::StagingCpuAsync ? Context::make_cpu_async(1) : Context::make_cpu(1);
    switch (GetParam()) {
      case Backend::Mpi: break;
      case Backend::MpiBlocking: owned = std::make_unique<BlockingVForms>(world()); break;
      case Backend::BaseDefaults: owned = std::make_unique<DefaultVForms>(world()); break;
      case Backend::CpuDevice: owned = make_mpi_device_communicator(world(), *ctx, false); break;
      case Backend::StagingCpu:
      case Backend::StagingCpuAsync: owned = std::make_unique<StagingCommunicator>(world(), *ctx); break;
    }
    comm = owned ? owned.get() : &world();
  }

  // Issues the collective, waits for it, and returns the wrong elements. Failures are
  // EXPECTs: a rank that left a loop early would leave the others waiting in the
  // next collective.
  template <class T>
  size_t wrong_after(Kind kind, const std::vector<size_t>& counts) {
    VariableCase<T> c(*ctx, kind, counts);
    c.issue(*comm)->wait();
    return c.wrong();
  }

  template <class T>
  void expect_every_layout_right() {
    for (const Layout& layout : layouts(n)) {
      for (Kind kind : {Kind::ReduceScatterV, Kind::AllGatherV}) {
        EXPECT_EQ(wrong_after<T>(kind, layout.counts), 0u) << kind_name(kind) << ", " << layout.name;
      }
    }
  }

  std::unique_ptr<Context> ctx;
  std::unique_ptr<Communicator> owned;  // destroyed before the context it uses
  Communicator* comm = nullptr;
  const int n = world().size();
  const int r = world().rank();
};

TEST_P(VariableCount, Float32EveryLayoutGivesTheFormula) { expect_every_layout_right<float>(); }

TEST_P(VariableCount, BFloat16EveryLayoutGivesTheExactSums) { expect_every_layout_right<bf16>(); }

TEST_P(VariableCount, EveryOtherDataTypeMovesWholeElements) {
  for (const Layout& layout : layouts(n)) {
    if (std::string(layout.name) != "uneven" && std::string(layout.name) != "middle rank empty") continue;
    for (Kind kind : {Kind::ReduceScatterV, Kind::AllGatherV}) {
      EXPECT_EQ(wrong_after<double>(kind, layout.counts), 0u) << "float64, " << kind_name(kind) << ", " << layout.name;
      EXPECT_EQ(wrong_after<int32_t>(kind, layout.counts), 0u) << "int32, " << kind_name(kind) << ", " << layout.name;
      EXPECT_EQ(wrong_after<int64_t>(kind, layout.counts), 0u) << "int64, " << kind_name(kind) << ", " << layout.name;
      EXPECT_EQ(wrong_after<uint64_t>(kind, layout.counts), 0u) << "uint64, " << kind_name(kind) << ", " << layout.name;
      EXPECT_EQ(wrong_after<uint8_t>(kind, layout.counts), 0u) << "uint8, " << kind_name(kind) << ", " << layout.name;
    }
  }
}

TEST_P(VariableCount, SeveralInFlightCompleteWhenWaitedInReverse) {
  std::vector<std::unique_ptr<VariableCase<float>>> floats;
  std::vector<std::unique_ptr<VariableCase<bf16>>> halves;
  std::vector<std::unique_ptr<Work>> works;
  const std::vector<Layout> all = layouts(n);
  for (size_t l = 0; l < all.size(); ++l) {
    // Both kinds and both types, interleaved.
    const Kind kind = l % 2 == 0 ? Kind::ReduceScatterV : Kind::AllGatherV;
    const Kind other = l % 2 == 0 ? Kind::AllGatherV : Kind::ReduceScatterV;
    floats.push_back(std::make_unique<VariableCase<float>>(*ctx, kind, all[l].counts));
    works.push_back(floats.back()->issue(*comm));
    halves.push_back(std::make_unique<VariableCase<bf16>>(*ctx, other, all[l].counts));
    works.push_back(halves.back()->issue(*comm));
  }
  for (size_t w = works.size(); w-- > 0;) works[w]->wait();
  for (size_t l = 0; l < all.size(); ++l) {
    EXPECT_EQ(floats[l]->wrong(), 0u) << "float32 " << floats[l]->kind_name() << ", " << all[l].name;
    EXPECT_EQ(halves[l]->wrong(), 0u) << "bf16 " << halves[l]->kind_name() << ", " << all[l].name;
  }
}

TEST_P(VariableCount, DonePollingUntilTrueDeliversTheResultWithoutWait) {
  for (const Layout& layout : layouts(n)) {
    if (std::string(layout.name) != "uneven" && std::string(layout.name) != "large and uneven") continue;
    for (Kind kind : {Kind::ReduceScatterV, Kind::AllGatherV}) {
      VariableCase<float> c(*ctx, kind, layout.counts);
      auto work = c.issue(*comm);
      while (!work->done()) {
      }
      // done() said true: the result must be in place (moved into this rank's block,
      // copied back from the staging buffer) before any wait().
      EXPECT_EQ(c.wrong(), 0u) << kind_name(kind) << " after done(), " << layout.name;
      EXPECT_TRUE(work->done());
      work->wait();  // already finished: nothing moves again
      EXPECT_EQ(c.wrong(), 0u) << kind_name(kind) << " after done() and wait(), " << layout.name;
    }
  }
}

TEST_P(VariableCount, CountsForAnotherWorldSizeAreRefusedOnEveryRank) {
  // Refused before anything is sent, on every rank alike, so no rank is left waiting.
  DeviceArray<float> dev(*ctx, 8);
  const std::vector<size_t> one_too_many(static_cast<size_t>(n) + 1, 1);
  EXPECT_THROW(comm->reduce_scatter_v(dev.data(), one_too_many, DataType::Float32, ReduceOp::Sum), CommError);
  EXPECT_THROW(comm->all_gather_v(dev.data(), one_too_many, DataType::Float32), CommError);
  // The communicator is still in step on every rank.
  EXPECT_EQ(wrong_after<float>(Kind::ReduceScatterV, layouts(n)[0].counts), 0u);
}

INSTANTIATE_TEST_SUITE_P(Backends, VariableCount,
                         ::testing::Values(Backend::Mpi, Backend::MpiBlocking, Backend::BaseDefaults,
                                           Backend::CpuDevice, Backend::StagingCpu, Backend::StagingCpuAsync),
                         backend_label);

}  // namespace
}  // namespace dtrain
