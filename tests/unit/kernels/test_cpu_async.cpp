// The asynchronous CPU device (kernels/cpu_async/): its work queue, and that it keeps
// a GPU's rules. Expected values come from the synchronous CPU backend (the same
// functions must give the same bits) or from the rule itself.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <future>
#include <memory>
#include <stdexcept>
#include <vector>

#include "kernels/context.h"
#include "kernels/cpu_async/work_queue.h"
#include "kernels/errors.h"
#include "kernels/host_buffer.h"
#include "kernels/ops.h"
#include "kernels/rng.h"

namespace dtrain {
namespace {

using std::chrono::microseconds;

// ------------------------------------------------------------------------ WorkQueue

TEST(WorkQueue, RunsTasksInOrderAndWaitsByNumber) {
  WorkQueue queue(microseconds{0}, nullptr);
  std::promise<void> gate;
  std::shared_future<void> open = gate.get_future().share();
  std::vector<int> ran;
  EXPECT_EQ(queue.last_queued(), 0u);
  EXPECT_EQ(queue.enqueue([open] { open.wait(); }), 1u);
  for (int i = 0; i < 5; ++i) queue.enqueue([&ran, i] { ran.push_back(i); });
  EXPECT_EQ(queue.last_queued(), 6u);
  EXPECT_TRUE(ran.empty());  // held behind the first task
  gate.set_value();
  queue.wait_for(4);  // tasks 1..4: the gate and pushes 0, 1, 2
  ASSERT_GE(ran.size(), 3u);
  EXPECT_EQ(ran[0], 0);
  EXPECT_EQ(ran[1], 1);
  EXPECT_EQ(ran[2], 2);
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

// The host queues and returns; the work happens later. 2000 queued fills take at least
// 200 ms of worker lag, so the raw memory does not yet hold the last fill's value when
// the host reads it right after queuing (unless this thread stalls for that long).
TEST(CpuAsync, TheHostRunsAheadOfTheWork) {
  auto ctx = Context::make_cpu_async(1);
  Buffer b = upload(*ctx, std::vector<float>(8, 0.0f));
  ctx->synchronize();
  const int fills = 2000;
  for (int i = 1; i <= fills; ++i) ops::fill(*ctx, b.as<float>(), 8, static_cast<float>(i));
  EXPECT_LT(b.as<float>()[7], static_cast<float>(fills)) << "the fills ran before the host went on";
  ctx->synchronize();
  EXPECT_EQ(b.as<float>()[7], static_cast<float>(fills));
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
// pageable memory; the caller may reuse it at once.
TEST(CpuAsync, OrdinaryHostMemoryIsReadWhenTheCopyIsQueued) {
  auto ctx = Context::make_cpu_async(1);
  std::vector<float> source(1000, 5.0f);
  Buffer b(ctx->allocator(), source.size() * sizeof(float), MemoryCategory::Other);
  for (int i = 0; i < 20; ++i) ops::fill(*ctx, b.as<float>(), 1000, 0.0f);  // lag
  ops::copy_from_host(*ctx, b.data(), source.data(), source.size() * sizeof(float));
  std::fill(source.begin(), source.end(), -1.0f);
  EXPECT_EQ(download(*ctx, b), std::vector<float>(1000, 5.0f));
}

// The Uploader (Note [Batch prefetch]): an upload waits for the reads queued before
// release(), and the compute work queued after make_visible() sees it.
TEST(CpuAsync, UploadsFollowTheReleaseAndBecomeVisible) {
  auto ctx = Context::make_cpu_async(1);
  const size_t n = 4096;
  Buffer dst = upload(*ctx, std::vector<float>(n, 1.0f));
  Buffer copy(ctx->allocator(), n * sizeof(float), MemoryCategory::Other);
  HostBuffer staging(*ctx, n * sizeof(float));
  std::fill(staging.as<float>(), staging.as<float>() + n, 7.0f);
  auto uploader = ctx->backend().make_uploader(*ctx);
  // The last reader of dst before the upload: copies the old values.
  for (int i = 0; i < 20; ++i) ops::fill(*ctx, copy.as<float>(), static_cast<int64_t>(n), 0.0f);  // lag
  ops::gemm(*ctx, false, false, 1, static_cast<int64_t>(n), 1, 1.0f, dst.as<float>(), 1, dst.as<float>(),
            static_cast<int64_t>(n), 0.0f, copy.as<float>(), static_cast<int64_t>(n));
  uploader->release();
  uploader->upload(dst.data(), staging.data(), n * sizeof(float));
  uploader->wait_source_free();
  std::fill(staging.as<float>(), staging.as<float>() + n, -3.0f);  // the upload has read it
  uploader->make_visible();
  EXPECT_EQ(download(*ctx, copy), std::vector<float>(n, 1.0f));  // read before the upload
  EXPECT_EQ(download(*ctx, dst), std::vector<float>(n, 7.0f));
}

}  // namespace
}  // namespace dtrain
