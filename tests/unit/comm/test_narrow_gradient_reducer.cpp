// The gradient reducer with a bf16 wire (Note [Narrow gradient reduction]) on host
// memory, with the conversions given as plain loops over float_to_bf16 and
// bf16_to_float: on one rank the gradients come back as round_bf16 of the fp32 ones;
// each bucket is narrowed after the before-launch hook and before its collective, and
// widened only after its collective's wait().
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "comm/gradient_reducer.h"
#include "comm/self_communicator.h"
#include "kernels/dtype.h"

namespace dtrain {
namespace {

NarrowWire host_bf16_wire(std::vector<bf16>& staging) {
  NarrowWire wire;
  wire.type = DataType::BFloat16;
  wire.staging = staging.data();
  wire.narrow = [](const float* from, void* to, int64_t count) {
    for (int64_t i = 0; i < count; ++i) static_cast<bf16*>(to)[i] = float_to_bf16(from[i]);
  };
  wire.widen = [](const void* from, float* to, int64_t count) {
    for (int64_t i = 0; i < count; ++i) to[i] = bf16_to_float(static_cast<const bf16*>(from)[i]);
  };
  return wire;
}

// Values with more than bf16's 8 significant bits, ties between two bf16 values among them.
std::vector<float> fine_gradients(size_t n) {
  std::vector<float> g(n);
  for (size_t i = 0; i < n; ++i) {
    g[i] = (i % 3 == 0 ? -1.0f : 1.0f) * (1.0f + static_cast<float>(i) * std::ldexp(1.0f, -11)) *
           std::ldexp(1.0f, static_cast<int>(i % 7) - 3);
  }
  return g;
}

const std::vector<FlatRange> kLayers = {{0, 100}, {100, 0}, {100, 50}, {150, 300}, {450, 7}};

TEST(NarrowGradientReducer, OneRankGivesTheRoundedGradients) {
  SelfCommunicator self;
  for (int64_t cap : {1, 60, 1000}) {
    std::vector<float> grads = fine_gradients(457);
    const std::vector<float> fp32 = grads;
    std::vector<bf16> staging(grads.size());
    GradientReducer reducer(self, grads.data(), kLayers, cap, host_bf16_wire(staging));
    for (int layer = 4; layer >= 0; --layer) reducer.on_layer_done(layer);
    reducer.finish();
    int wrong = 0, rounded = 0;
    for (size_t i = 0; i < grads.size(); ++i) {
      wrong += grads[i] != round_bf16(fp32[i]);
      rounded += grads[i] != fp32[i];
    }
    EXPECT_EQ(wrong, 0) << "cap " << cap;
    EXPECT_GT(rounded, 400) << "the test's gradients should need rounding";
  }
}

// A one-rank communicator that records what each all-reduce was given, and whose
// result appears only in wait(): it doubles the buffer, as two ranks holding the same
// gradients would sum them (exact in bf16).
class DelayedDoublingCommunicator final : public Communicator {
 public:
  struct Call {
    const void* buf;
    size_t count;
    DataType type;
    std::vector<uint16_t> seen;  // the buffer's bits when the collective was issued
  };
  int rank() const override { return 0; }
  int size() const override { return 2; }
  std::string backend_name() const override { return "fake"; }
  std::unique_ptr<Work> all_reduce(void* buf, size_t count, DataType type, ReduceOp) override {
    Call call{buf, count, type, {}};
    if (type == DataType::BFloat16) {
      const auto* bits = static_cast<const uint16_t*>(buf);
      call.seen.assign(bits, bits + count);
    }
    calls.push_back(call);
    events.push_back("all_reduce");
    return std::make_unique<DoublingWork>(static_cast<bf16*>(buf), count, events);
  }
  std::unique_ptr<Work> reduce_scatter(const void*, void*, size_t, DataType, ReduceOp) override { return nullptr; }
  std::unique_ptr<Work> all_gather(const void*, void*, size_t, DataType) override { return nullptr; }
  std::unique_ptr<Work> broadcast(void*, size_t, DataType, int) override { return nullptr; }
  std::unique_ptr<Work> barrier() override { return std::make_unique<CompletedWork>(); }

  std::vector<Call> calls;
  std::vector<std::string> events;

 private:
  class DoublingWork final : public Work {
   public:
    DoublingWork(bf16* buf, size_t count, std::vector<std::string>& events)
        : buf_(buf), count_(count), events_(events) {}
    void wait() override {
      if (done_) return;
      for (size_t i = 0; i < count_; ++i) buf_[i] = float_to_bf16(2.0f * bf16_to_float(buf_[i]));
      done_ = true;
      events_.push_back("wait");
    }
    bool done() override { return done_; }

   private:
    bf16* buf_;
    size_t count_;
    std::vector<std::string>& events_;
    bool done_ = false;
  };
};

TEST(NarrowGradientReducer, NarrowsAfterTheHookBeforeTheCollectiveAndWidensAfterTheWait) {
  DelayedDoublingCommunicator comm;
  std::vector<float> grads = fine_gradients(457);
  const std::vector<float> fp32 = grads;
  std::vector<bf16> staging(grads.size());
  NarrowWire wire = host_bf16_wire(staging);
  auto narrow = wire.narrow;
  auto widen = wire.widen;
  wire.narrow = [&](const float* from, void* to, int64_t count) {
    comm.events.push_back("narrow");
    narrow(from, to, count);
  };
  wire.widen = [&](const void* from, float* to, int64_t count) {
    comm.events.push_back("widen");
    widen(from, to, count);
  };
  GradientReducer reducer(comm, grads.data(), kLayers, 200, std::move(wire));
  ASSERT_EQ(reducer.buckets().size(), 2u);  // elements [150, 457) and [0, 150)
  reducer.set_before_launch([&](const GradientBucket& b) {
    comm.events.push_back("hook");
    // The hook sees this rank's own fp32 gradients, unrounded.
    for (auto i = static_cast<size_t>(b.offset); i < static_cast<size_t>(b.offset + b.count); ++i) {
      ASSERT_EQ(grads[i], fp32[i]);
    }
  });
  for (int layer = 4; layer >= 0; --layer) reducer.on_layer_done(layer);
  reducer.finish();

  const std::vector<std::string> expected = {"hook", "narrow", "all_reduce", "hook", "narrow",
                                             "all_reduce", "wait", "widen", "wait", "widen"};
  EXPECT_EQ(comm.events, expected);
  ASSERT_EQ(comm.calls.size(), reducer.buckets().size());
  for (size_t c = 0; c < comm.calls.size(); ++c) {
    const GradientBucket& b = reducer.buckets()[c];
    const auto& call = comm.calls[c];
    // Each bucket travels as bf16 from its own region of the staging buffer (offsets kept).
    EXPECT_EQ(call.type, DataType::BFloat16);
    EXPECT_EQ(call.buf, staging.data() + b.offset);
    EXPECT_EQ(call.count, static_cast<size_t>(b.count));
    for (int64_t i = 0; i < b.count; ++i) {
      ASSERT_EQ(call.seen[static_cast<size_t>(i)], float_to_bf16(fp32[static_cast<size_t>(b.offset + i)]).bits)
          << "bucket " << c << " element " << i << " was not narrowed before its collective";
    }
  }
  // The widened result is the collective's (twice the rounded gradient), not the input.
  for (size_t i = 0; i < grads.size(); ++i) ASSERT_EQ(grads[i], 2.0f * round_bf16(fp32[i])) << "element " << i;
}

TEST(NarrowGradientReducer, RefusesAWireWithoutItsParts) {
  SelfCommunicator self;
  std::vector<float> grads(8);
  NarrowWire wire;  // no staging, no conversions
  EXPECT_ANY_THROW(GradientReducer(self, grads.data(), {{0, 8}}, 4, wire));
}

}  // namespace
}  // namespace dtrain
