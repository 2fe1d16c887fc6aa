// wait_for_completion (comm/completion_wait.h), as NCCL's nonblocking initialisation
// uses it, with a fake library and a fake clock: a rank whose initialisation never
// completes ends, a failure is reported with the library's words, a success returns.
#include <gtest/gtest.h>

#include <string>

#include "comm/completion_wait.h"
#include "kernels/errors.h"

namespace dtrain {
namespace {

// The library completes (or fails) at poll number `finish_at` (1-based; 0: never).
// A wait that goes on for a million polls has ignored its limit: the fake then fails
// the operation itself, so that such a wait ends the test instead of hanging it.
struct FakeOperation {
  static constexpr int kGiveUpAt = 1000000;
  double now = 1000.0;  // fake seconds; sleep() is the only thing that moves it
  int polls = 0;
  int aborts = 0;
  int finish_at = 0;
  bool fails = false;

  CompletionHooks hooks() {
    CompletionHooks h;
    h.poll = [this] {
      ++polls;
      if (polls >= kGiveUpAt) return CompletionState{CompletionState::kFailed, "fake: the wait ignored its limit"};
      if (finish_at == 0 || polls < finish_at) return CompletionState{CompletionState::kInProgress, ""};
      if (fails) return CompletionState{CompletionState::kFailed, "remote process exited or there was a network error"};
      return CompletionState{CompletionState::kDone, ""};
    };
    h.abort = [this] { ++aborts; };
    h.clock = [this] { return now; };
    h.sleep = [this](double s) { now += s; };
    return h;
  }
};

TEST(CompletionWait, AnInitialisationThatNeverCompletesEndsWithinTheTimeoutAndOnePeriod) {
  FakeOperation op;
  const double start = op.now, timeout = 3.0, period = 0.25;
  try {
    wait_for_completion("NCCL initialisation", /*rank=*/2, /*size=*/4, timeout, period, op.hooks());
    FAIL() << "a wait that never completes returned";
  } catch (const CommError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("NCCL initialisation did not complete on rank 2 of 4"), std::string::npos) << m;
    EXPECT_NE(m.find("comm.timeout_s = 3.0 s"), std::string::npos) << m;
    EXPECT_NE(m.find("raise comm.timeout_s"), std::string::npos) << "the message must say what to do: " << m;
  }
  EXPECT_GT(op.now - start, timeout) << "gave up before the timeout";
  EXPECT_LE(op.now - start, timeout + period) << "waited more than one period past the timeout";
  EXPECT_EQ(op.aborts, 1) << "the communicator of a failed initialisation must be aborted, once";
}

TEST(CompletionWait, AFailedInitialisationIsReportedWithTheLibrarysErrorAndAborted) {
  FakeOperation op;
  op.finish_at = 4;
  op.fails = true;
  try {
    wait_for_completion("NCCL initialisation", /*rank=*/1, /*size=*/2, 300.0, 0.001, op.hooks());
    FAIL() << "a failed initialisation returned";
  } catch (const CommError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("NCCL initialisation failed on rank 1 of 2: remote process exited or there was a network error"),
              std::string::npos)
        << m;
  }
  EXPECT_EQ(op.polls, 4);  // it stops at the failure
  EXPECT_EQ(op.aborts, 1);
}

TEST(CompletionWait, ASuccessfulInitialisationReturnsWithoutAborting) {
  FakeOperation op;
  op.finish_at = 5;
  const double start = op.now, period = 0.5;
  wait_for_completion("NCCL initialisation", 0, 2, 300.0, period, op.hooks());
  EXPECT_EQ(op.polls, 5);
  EXPECT_DOUBLE_EQ(op.now - start, 4 * period);  // one sleep between consecutive polls
  EXPECT_EQ(op.aborts, 0);
}

TEST(CompletionWait, ATimeoutOfZeroWaitsWithoutLimit) {
  FakeOperation op;
  op.finish_at = 100000;  // 10^5 s of fake time at 1 s a poll
  wait_for_completion("NCCL initialisation", 0, 2, /*timeout_s=*/0.0, 1.0, op.hooks());
  EXPECT_EQ(op.polls, op.finish_at);
  EXPECT_EQ(op.aborts, 0);
}

}  // namespace
}  // namespace dtrain
