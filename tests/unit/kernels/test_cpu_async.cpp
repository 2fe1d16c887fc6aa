// The asynchronous CPU device (kernels/cpu_async/): its work queue, and that it keeps
// a GPU's rules. Expected values come from the synchronous CPU backend (the same
// functions must give the same bits) or from the rule itself.
#include <gtest/gtest.h>

#include <chrono>
#include <algorithm>
#include <cstring>
#include <future>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

#include "kernels/context.h"
#include "kernels/cpu_async/cpu_async_backend.h"
#include "kernels/cpu_async/work_queue.h"
#include "kernels/errors.h"
#include "kernels/host_buffer.h"
#include "kernels/memory.h"
#include "kernels/ops.h"
#include "kernels/rng.h"

namespace dtrain {
namespace {

using std::chrono::microseconds;

// ------------------------------------------------------------------------ WorkQueue

TEST(WorkQueue, RunsTasksInOrderAndWaitsByNumber) {
  WorkQueue queue(microseconds{0}, nullptr);
  std::promise<void> first_gate, second_gate;
  std::shared_future<void> first = first_gate.get_future().share();
  std::shared_future<void> second = second_gate.get_future().share();
  std::vector<int> ran;
  ran.reserve(5);
  EXPECT_EQ(queue.last_queued(), 0u);
  EXPECT_EQ(queue.enqueue([first] { first.wait(); }), 1u);
  for (int i = 0; i < 3; ++i) queue.enqueue([&ran, i] { ran.push_back(i); });
  EXPECT_EQ(queue.enqueue([second] { second.wait(); }), 5u);
  for (int i = 3; i < 5; ++i) queue.enqueue([&ran, i] { ran.push_back(i); });
  EXPECT_EQ(queue.last_queued(), 7u);
  EXPECT_TRUE(ran.empty());  // held behind the first task
  first_gate.set_value();
  queue.wait_for(4);  // the gate and pushes 0, 1, 2; the worker now waits at task 5
  EXPECT_EQ(ran, (std::vector<int>{0, 1, 2}));
  second_gate.set_value();
  queue.drain();
  EXPECT_EQ(ran, (std::vector<int>{0, 1, 2, 3, 4}));
}

TEST(WorkQueue, KeepsTheFirstErrorForTheNextSynchronizationAndRunsOn) {
  WorkQueue queue(microseconds{0}, nullptr);
  int after = 0;
  queue.enqueue([] { throw std::runtime_error("first"); });
  queue.enqueue([] { throw std::runtime_error("second"); });
  queue.enqueue([&after] { ++after; });
  queue.drain();
  EXPECT_EQ(after, 1);
  std::exception_ptr error = queue.take_error();
  ASSERT_TRUE(error);
  try {
    std::rethrow_exception(error);
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "first");
  }
  EXPECT_FALSE(queue.take_error());  // taken once
}

TEST(WorkQueue, RunsTheStartHookOnTheWorkerAndFinishesQueuedWorkWhenDestroyed) {
  std::thread::id worker;
  std::thread::id task_thread;
  int ran = 0;
  {
    WorkQueue queue(microseconds{100}, [&worker] { worker = std::this_thread::get_id(); });
    queue.enqueue([&task_thread] { task_thread = std::this_thread::get_id(); });
    for (int i = 0; i < 20; ++i) queue.enqueue([&ran] { ++ran; });
  }
  EXPECT_EQ(ran, 20);
  EXPECT_EQ(worker, task_thread);
  EXPECT_NE(worker, std::this_thread::get_id());
}

// ------------------------------------------------------------------ The device

std::vector<float> random_normal(Rng& rng, size_t n) {
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(rng.normal());
  return v;
}

// A buffer of `n` floats on ctx's device holding `values`.
Buffer upload(Context& ctx, const std::vector<float>& values) {
  Buffer b(ctx.allocator(), values.size() * sizeof(float), MemoryCategory::Other);
  ops::copy_from_host(ctx, b.data(), values.data(), values.size() * sizeof(float));
  return b;
}

std::vector<float> download(Context& ctx, const Buffer& b) {
  std::vector<float> out(b.bytes() / sizeof(float));
  ops::copy_to_host(ctx, out.data(), b.data(), b.bytes());
  return out;
}

TEST(CpuAsync, IsADeviceOfItsOwn) {
  auto ctx = Context::make_cpu_async(2);
  EXPECT_EQ(ctx->device_kind(), DeviceKind::CpuAsync);
  EXPECT_STREQ(ctx->backend().name(), "cpu-async");
  EXPECT_EQ(ctx->device_name(), "cpu-async");
}

// A layer's forward and backward through both backends: the same functions run in
// the same order, so every output must have the same bits.
TEST(CpuAsync, GivesTheCpuBackendsBits) {
  const int64_t batch = 13, in = 37, out = 10;
  Rng rng(7);
  const std::vector<float> x = random_normal(rng, batch * in);
  const std::vector<float> w = random_normal(rng, out * in);
  const std::vector<float> bias = random_normal(rng, out);
  std::vector<int32_t> labels(batch);
  for (int32_t& l : labels) l = static_cast<int32_t>(rng.below(out));

  struct Result {
    std::vector<float> logits, dlogits, dw;
    std::vector<double> stats;
  };
  auto run = [&](Context& ctx) {
    Buffer gx = upload(ctx, x), gw = upload(ctx, w), gb = upload(ctx, bias);
    Buffer logits(ctx.allocator(), batch * out * sizeof(float), MemoryCategory::Other);
    Buffer dlogits(ctx.allocator(), batch * out * sizeof(float), MemoryCategory::Other);
    Buffer dw(ctx.allocator(), out * in * sizeof(float), MemoryCategory::Other);
    Buffer glabels(ctx.allocator(), batch * sizeof(int32_t), MemoryCategory::Other);
    Buffer stats(ctx.allocator(), 2 * sizeof(double), MemoryCategory::Other);
    ops::copy_from_host(ctx, glabels.data(), labels.data(), batch * sizeof(int32_t));
    ops::fill(ctx, stats.as<float>(), 4, 0.0f);
    ops::fill(ctx, dw.as<float>(), out * in, 0.0f);
    ops::gemm(ctx, false, true, batch, out, in, 1.0f, gx.as<float>(), in, gw.as<float>(), in, 0.0f,
              logits.as<float>(), out);
    ops::add_bias(ctx, logits.as<float>(), gb.as<float>(), batch, out, 1);
    ops::relu_forward(ctx, logits.as<float>(), logits.as<float>(), batch * out);
    ops::softmax_cross_entropy(ctx, logits.as<float>(), glabels.as<int32_t>(), batch, out, 0.5f,
                               dlogits.as<float>(), stats.as<double>());
    ops::gemm(ctx, true, false, out, in, batch, 1.0f, dlogits.as<float>(), out, gx.as<float>(), in,
              1.0f, dw.as<float>(), in);
    Result r{download(ctx, logits), download(ctx, dlogits), download(ctx, dw), std::vector<double>(2)};
    ops::copy_to_host(ctx, r.stats.data(), stats.data(), 2 * sizeof(double));
    return r;
  };
  auto cpu = Context::make_cpu(2);
  auto async = Context::make_cpu_async(2);
  const Result a = run(*cpu), b = run(*async);
  EXPECT_EQ(0, std::memcmp(a.logits.data(), b.logits.data(), a.logits.size() * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(a.dlogits.data(), b.dlogits.data(), a.dlogits.size() * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(a.dw.data(), b.dw.data(), a.dw.size() * sizeof(float)));
  EXPECT_EQ(a.stats, b.stats);
  EXPECT_GT(a.stats[0], 0.0);  // a real loss was computed
}

// The host queues and returns; the work happens later (here: once the hold goes).
TEST(CpuAsync, TheHostRunsAheadOfTheWork) {
  auto ctx = Context::make_cpu_async(1);
  Buffer b = upload(*ctx, std::vector<float>(8, 1.0f));
  ctx->synchronize();
  {
    CpuAsyncHold hold(*ctx);
    ops::fill(*ctx, b.as<float>(), 8, 2.0f);
    EXPECT_EQ(b.as<float>()[7], 1.0f) << "the fill ran before the host went on";
  }
  ctx->synchronize();
  EXPECT_EQ(b.as<float>()[7], 2.0f);
}

TEST(CpuAsync, HoldingAnotherKindOfContextIsAnError) {
  auto ctx = Context::make_cpu(1);
  EXPECT_THROW(CpuAsyncHold hold(*ctx), Error);
}

// Convolutions (which take workspace) and pooling, queued while the device is held, so
// the workspace grows, and the old one is released, while the ops that use it still
// wait: each op must use the workspace taken for it, and give the CPU's bits.
TEST(CpuAsync, ConvolutionsGiveTheCpuBackendsBitsWhileTheWorkspaceGrows) {
  Rng rng(11);
  const Conv2dShape small{2, 3, 9, 9, 4, 3, 1, 1}, large{5, 3, 9, 9, 4, 3, 1, 1};
  const Pool2dShape pool{5, 4, 9, 9, 2, 2};
  const std::vector<float> x = random_normal(rng, 5 * 3 * 9 * 9), w = random_normal(rng, 4 * 3 * 3 * 3),
                           bias = random_normal(rng, 4), dy = random_normal(rng, 5 * 4 * 9 * 9);
  auto run = [&](Context& ctx, bool hold_device) {
    Buffer gx = upload(ctx, x), gw = upload(ctx, w), gb = upload(ctx, bias), gdy = upload(ctx, dy);
    const size_t y_bytes = 5 * 4 * 9 * 9 * sizeof(float);
    Buffer y_small = upload(ctx, std::vector<float>(y_bytes / sizeof(float), 0.0f));  // 2 of 5 samples written
    Buffer y_large(ctx.allocator(), y_bytes, MemoryCategory::Other);
    Buffer dx(ctx.allocator(), 5 * 3 * 9 * 9 * sizeof(float), MemoryCategory::Other);
    Buffer dw = upload(ctx, std::vector<float>(w.size(), 0.0f)), db = upload(ctx, std::vector<float>(4, 0.0f));
    Buffer pooled(ctx.allocator(), 5 * 4 * 4 * 4 * sizeof(float), MemoryCategory::Other);
    Buffer argmax(ctx.allocator(), 5 * 4 * 4 * 4 * sizeof(int32_t), MemoryCategory::Other);
    ctx.release_workspace();
    {
      std::unique_ptr<CpuAsyncHold> hold = hold_device ? std::make_unique<CpuAsyncHold>(ctx) : nullptr;
      ops::conv2d_forward(ctx, small, gx.as<float>(), gw.as<float>(), gb.as<float>(), y_small.as<float>());
      ops::conv2d_forward(ctx, large, gx.as<float>(), gw.as<float>(), gb.as<float>(), y_large.as<float>());
      ops::conv2d_backward_data(ctx, large, gdy.as<float>(), gw.as<float>(), dx.as<float>());
      ops::conv2d_backward_filter(ctx, large, gx.as<float>(), gdy.as<float>(), dw.as<float>(), db.as<float>());
      ops::maxpool2d_forward(ctx, pool, y_large.as<float>(), pooled.as<float>(), argmax.as<int32_t>());
    }
    return std::vector<std::vector<float>>{download(ctx, y_small), download(ctx, y_large), download(ctx, dx),
                                           download(ctx, dw), download(ctx, db), download(ctx, pooled)};
  };
  auto cpu = Context::make_cpu(2);
  auto async = Context::make_cpu_async(2);
  ASSERT_LT(ops::conv2d_workspace_bytes(*async, small), ops::conv2d_workspace_bytes(*async, large));
  const auto a = run(*cpu, false), b = run(*async, true);
  for (size_t i = 0; i < a.size(); ++i) {
    SCOPED_TRACE(::testing::Message() << "output " << i);
    ASSERT_EQ(a[i].size(), b[i].size());
    EXPECT_EQ(0, std::memcmp(a[i].data(), b[i].data(), a[i].size() * sizeof(float)));
  }
}

// Released memory is accounted at once but freed after the work queued before the
// release (the sanitizer build would report the fill writing freed memory otherwise).
TEST(CpuAsync, MemoryIsFreedInTheOrderOfTheWork) {
  auto ctx = Context::make_cpu_async(1);
  const size_t n = 1 << 16;
  {
    Buffer b(ctx->allocator(), n * sizeof(float), MemoryCategory::Activations);
    EXPECT_EQ(ctx->allocator().stats().in_use, n * sizeof(float));
    for (int i = 0; i < 50; ++i) ops::fill(*ctx, b.as<float>(), static_cast<int64_t>(n), 3.0f);
  }
  EXPECT_EQ(ctx->allocator().stats().in_use, 0u);
  ctx->synchronize();
}

TEST(CpuAsync, ErrorsOfQueuedOpsSurfaceAtTheNextSynchronization) {
  auto ctx = Context::make_cpu_async(1);
  const int64_t batch = 3, classes = 4;
  Buffer logits = upload(*ctx, std::vector<float>(batch * classes, 0.25f));
  Buffer labels(ctx->allocator(), batch * sizeof(int32_t), MemoryCategory::Other);
  Buffer stats(ctx->allocator(), 2 * sizeof(double), MemoryCategory::Other);
  const std::vector<int32_t> bad{0, 9, 1};
  ops::copy_from_host(*ctx, labels.data(), bad.data(), bad.size() * sizeof(int32_t));
  EXPECT_NO_THROW(ops::softmax_cross_entropy(*ctx, logits.as<float>(), labels.as<int32_t>(), batch,
                                             classes, 1.0f, nullptr, stats.as<double>()));
  EXPECT_THROW(ctx->synchronize(), DataError);
  EXPECT_NO_THROW(ctx->synchronize());  // reported once
}

TEST(CpuAsync, RunningOutOfMemoryIsAnErrorOfTheCall) {
  auto ctx = Context::make_cpu_async(1, 1 << 20);
  const Conv2dShape s{64, 16, 28, 28, 32, 5, 1, 2};
  ASSERT_GT(ops::conv2d_workspace_bytes(*ctx, s), size_t{1} << 20);
  // The op needs its workspace when called; the pointers are never read.
  EXPECT_THROW(ops::conv2d_forward(*ctx, s, nullptr, nullptr, nullptr, nullptr), OutOfMemoryError);
  EXPECT_NO_THROW(ctx->synchronize());
}

// A copy from ordinary host memory reads it before returning, as CUDA does for
// pageable memory; the caller may reuse it at once. A copy from transfer memory
// (alloc_host, pinned on GPUs) reads it when the copy runs.
TEST(CpuAsync, HostMemoryIsReadByCudasRulesForPageableAndPinned) {
  auto ctx = Context::make_cpu_async(1);
  const size_t n = 1000;
  std::vector<float> pageable(n, 5.0f);
  HostBuffer pinned(*ctx, n * sizeof(float));
  std::fill(pinned.as<float>(), pinned.as<float>() + n, 5.0f);
  Buffer from_pageable(ctx->allocator(), n * sizeof(float), MemoryCategory::Other);
  Buffer from_pinned(ctx->allocator(), n * sizeof(float), MemoryCategory::Other);
  {
    CpuAsyncHold hold(*ctx);
    ops::copy_from_host(*ctx, from_pageable.data(), pageable.data(), n * sizeof(float));
    ops::copy_from_host(*ctx, from_pinned.data(), pinned.data(), n * sizeof(float));
    std::fill(pageable.begin(), pageable.end(), -1.0f);
    std::fill(pinned.as<float>(), pinned.as<float>() + n, -1.0f);  // too early: the copy reads this
  }
  EXPECT_EQ(download(*ctx, from_pageable), std::vector<float>(n, 5.0f));
  EXPECT_EQ(download(*ctx, from_pinned), std::vector<float>(n, -1.0f));
}

// The Uploader (Note [Batch prefetch]): an upload waits for the reads queued before
// release(), and the work queued after make_visible() sees it. The two queues run with
// random lags, so an upload that did not wait, or work that did not, would see the
// other order in some of the rounds.
TEST(CpuAsync, UploadsFollowTheReleaseAndBecomeVisible) {
  auto ctx = Context::make_cpu_async(1);
  const int64_t n = 4096;
  const size_t bytes = static_cast<size_t>(n) * sizeof(float);
  auto uploader = ctx->backend().make_uploader(*ctx);
  HostBuffer staging(*ctx, bytes);
  Buffer dst(ctx->allocator(), bytes, MemoryCategory::Other);
  Buffer before(ctx->allocator(), bytes, MemoryCategory::Other);
  Buffer after(ctx->allocator(), bytes, MemoryCategory::Other);
  Buffer one = upload(*ctx, {1.0f});
  // out = 1 x src: a read of src as an op.
  auto read = [&](const Buffer& src, Buffer& out) {
    ops::gemm(*ctx, false, false, 1, n, 1, 1.0f, one.as<float>(), 1, src.as<float>(), n, 0.0f,
              out.as<float>(), n);
  };
  for (int round = 1; round <= 20; ++round) {
    SCOPED_TRACE(::testing::Message() << "round " << round);
    ops::fill(*ctx, dst.as<float>(), n, 0.0f);
    uploader->wait_source_free();
    std::fill(staging.as<float>(), staging.as<float>() + n, static_cast<float>(round));
    {
      CpuAsyncHold hold(*ctx);  // everything below is queued before any of it runs
      read(dst, before);
      uploader->release();
      uploader->upload(dst.data(), staging.data(), bytes);
      uploader->make_visible();
      read(dst, after);
    }
    EXPECT_EQ(download(*ctx, before), std::vector<float>(n, 0.0f));
    EXPECT_EQ(download(*ctx, after), std::vector<float>(n, static_cast<float>(round)));
  }
}

}  // namespace
}  // namespace dtrain

namespace dtrain {
namespace {

// Note [Device timeline]: a mark is reached when the queue gets to it, after the work
// before it; held, the device reaches the marks only after the hold ends, so the host's
// lead is at least as long as the hold. The CPU, whose ops run when called, has none.
TEST(CpuAsyncTimeline, MarksAreReachedInOrderAfterTheWorkQueuedBeforeThem) {
  auto cpu = Context::make_cpu(1);
  EXPECT_EQ(cpu->backend().make_timeline(*cpu), nullptr);
  auto ctx = Context::make_cpu_async(1);
  auto timeline = ctx->backend().make_timeline(*ctx);
  ASSERT_NE(timeline, nullptr);
  std::vector<float> x(1 << 16, 1.0f);
  Buffer device(ctx->allocator(), x.size() * sizeof(float), MemoryCategory::Other);
  constexpr auto kHold = std::chrono::milliseconds(30);
  DeviceTimeline::Clock::time_point released;
  {
    CpuAsyncHold hold(*ctx);
    timeline->mark("first", 1);
    ops::copy_from_host(*ctx, device.data(), x.data(), x.size() * sizeof(float));
    ops::fill(*ctx, device.as<float>(), static_cast<int64_t>(x.size()), 2.0f);
    timeline->mark("second", 1);
    std::this_thread::sleep_for(kHold);
    released = DeviceTimeline::Clock::now();
  }
  ctx->synchronize();
  const auto marks = timeline->collect();
  ASSERT_EQ(marks.size(), 2u);
  EXPECT_STREQ(marks[0].name, "first");
  EXPECT_STREQ(marks[1].name, "second");
  EXPECT_GE(marks[0].reached, released) << "reached while the queue was held";
  EXPECT_GE(marks[1].reached, marks[0].reached);
  EXPECT_GE(marks[1].queued, marks[0].queued);
  EXPECT_GE(marks[0].reached - marks[0].queued, kHold);
  EXPECT_TRUE(timeline->collect().empty()) << "collected once";
}

}  // namespace
}  // namespace dtrain
