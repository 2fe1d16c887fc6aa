// Note [Abort before unwinding] (runtime/trainer.cpp): when the gradient all-reduce
// fails because a peer died, the rank aborts its communicator before anything on the
// way out waits for the device. Run on cpu-async, the CPU standing in for a GPU, with
// a communicator that fails as NCCL does: its collective is device work that never
// completes until the communicator is aborted, so any device wait before the abort
// (the batch's pinned memory being freed, a Work ordering the stream after its
// collective) blocks, and the test sees train() still unwinding at its bound.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "comm/self_communicator.h"
#include "kernels/context.h"
#include "kernels/cpu_async/cpu_async_backend.h"
#include "kernels/errors.h"
#include "runtime/config.h"
#include "runtime/trainer.h"

namespace dtrain {
namespace {

// One rank whose gradient all-reduce never completes: issuing it holds the cpu-async
// device (everything queued after it waits, as a GPU's work waits for an NCCL kernel
// whose peer is gone), waiting for it reports an asynchronous error as
// NcclWork::wait() does, and only abort() (ncclCommAbort) releases the device. Other
// collectives (none before the failure) go to a SelfCommunicator.
class PeerDiesInGradientAllReduce final : public Communicator {
 public:
  explicit PeerDiesInGradientAllReduce(Context& ctx) : ctx_(ctx) {}
  ~PeerDiesInGradientAllReduce() override { release_device(); }

  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend_name() const override { return "peer-dies"; }
  std::unique_ptr<Work> all_reduce(void* buf, size_t count, DataType type, ReduceOp op) override {
    if (type != DataType::Float32) return self_.all_reduce(buf, count, type, op);
    std::lock_guard<std::mutex> lock(mu_);
    if (abort_calls_ == 0) held_.push_back(std::make_unique<CpuAsyncHold>(ctx_));
    return std::make_unique<FailingWork>();
  }
  std::unique_ptr<Work> reduce_scatter(const void* s, void* r, size_t n, DataType t, ReduceOp op) override {
    return self_.reduce_scatter(s, r, n, t, op);
  }
  std::unique_ptr<Work> all_gather(const void* s, void* r, size_t n, DataType t) override {
    return self_.all_gather(s, r, n, t);
  }
  std::unique_ptr<Work> broadcast(void* b, size_t n, DataType t, int root) override {
    return self_.broadcast(b, n, t, root);
  }
  std::unique_ptr<Work> barrier() override { return self_.barrier(); }
  void abort() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++abort_calls_;
    }
    release_device();
  }

  // Lets the held device work run (the test's way out when the rank is stuck).
  void release_device() {
    std::lock_guard<std::mutex> lock(mu_);
    held_.clear();
  }
  int abort_calls() {
    std::lock_guard<std::mutex> lock(mu_);
    return abort_calls_;
  }

 private:
  class FailingWork final : public Work {
   public:
    void wait() override { fail(); }
    bool done() override { fail(); }

   private:
    [[noreturn]] static void fail() {
      throw CommError("NCCL reported an asynchronous error on rank 0: remote process exited (injected)");
    }
  };

  Context& ctx_;
  SelfCommunicator self_;
  std::mutex mu_;
  std::vector<std::unique_ptr<CpuAsyncHold>> held_;
  int abort_calls_ = 0;
};

Config two_step_config(const std::string& dir) {
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/in.yaml";
  std::ofstream(path) << "model:\n  name: mlp\n  hidden: [16]\n"
                         "data:\n  name: synthetic\n  train_samples: 64\n  test_samples: 16\n"
                         "train:\n  global_batch: 8\n  micro_batch: 8\n  max_steps: 2\n";
  return load_config(path, {});
}

TEST(TrainerAbort, AFailedGradientAllReduceAbortsTheCommunicatorBeforeAnyDeviceWait) {
  const std::string dir = (std::filesystem::temp_directory_path() / "dtrain_trainer_abort").string();
  const Config config = two_step_config(dir);
  auto ctx = Context::make_cpu_async(1);
  PeerDiesInGradientAllReduce comm(*ctx);  // after ctx: it releases the device before ctx goes
  SelfCommunicator control;
  std::ostringstream log;

  auto run = std::async(std::launch::async, [&]() -> std::string {
    try {
      train(config, *ctx, comm, control, dir + "/run", log);
      return "train() returned normally";
    } catch (const CommError& e) {
      return e.what();
    }
  });
  // Far above what the step and the unwinding take (milliseconds); a device wait
  // before the abort lasts until the test releases the device.
  const auto bound = std::chrono::seconds(10);
  const bool ended_in_bound = run.wait_for(bound) == std::future_status::ready;
  if (!ended_in_bound) comm.release_device();  // the rank is stuck: let it finish, so the test ends
  const std::string what = run.get();

  EXPECT_TRUE(ended_in_bound) << "train() was still unwinding " << bound.count()
                              << " s after the all-reduce failed: it waited on the device before aborting "
                                 "the communicator";
  EXPECT_NE(what.find("remote process exited (injected)"), std::string::npos) << what;
  EXPECT_EQ(comm.abort_calls(), 1) << "the communicator was not aborted on the way out of train()";
}

}  // namespace
}  // namespace dtrain
