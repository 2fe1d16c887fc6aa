// The collective watchdog (Note [Collective watchdog]) with its hooks: a fake clock,
// an in-memory heartbeat channel and an abort hook that records, so a stalled or
// silent rank is simulated without threads, MPI or a real kill.
#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "comm/self_communicator.h"
#include "comm/watchdog.h"
#include "comm/watched_communicator.h"

namespace dtrain {
namespace {

// What the other ranks would send: the test puts heartbeats in, the watchdog takes them.
struct FakeChannel : HeartbeatChannel {
  std::vector<std::pair<int, Heartbeat>>* inbox;
  std::vector<Heartbeat>* sent;
  void send_to_all(const Heartbeat& beat) override { sent->push_back(beat); }
  std::vector<std::pair<int, Heartbeat>> receive() override {
    auto got = std::move(*inbox);
    inbox->clear();
    return got;
  }
};

struct Rig {
  double now = 100.0;
  std::vector<std::pair<int, Heartbeat>> inbox;
  std::vector<Heartbeat> sent;
  std::vector<std::string> aborts;
  std::unique_ptr<Watchdog> dog;

  explicit Rig(double timeout_s, bool with_channel = true) {
    std::unique_ptr<HeartbeatChannel> channel;
    if (with_channel) {
      auto fake = std::make_unique<FakeChannel>();
      fake->inbox = &inbox;
      fake->sent = &sent;
      channel = std::move(fake);
    }
    Watchdog::Hooks hooks;
    hooks.abort = [this](const std::string& m) { aborts.push_back(m); };
    hooks.clock = [this] { return now; };
    dog = std::make_unique<Watchdog>(/*rank=*/0, /*size=*/4, timeout_s, std::move(channel), hooks, false);
  }
  // Ranks 1..3 report; `skip` does not (it is silent), `behind` has issued one fewer.
  void peers_report(int64_t step, int64_t issued, int skip = -1, int behind = -1) {
    for (int r = 1; r < 4; ++r) {
      if (r == skip) continue;
      inbox.push_back({r, Heartbeat{step, r == behind ? issued - 1 : issued, r == behind ? 0 : 1}});
    }
  }
};

TEST(Watchdog, ASilentRankIsNamedOnceTheWaitPassesTheTimeout) {
  Rig rig(3.0);
  rig.dog->set_step(57);
  const int64_t n = rig.dog->next_collective();
  rig.dog->begin_wait(n, "all-reduce");
  for (int pass = 0; pass < 6; ++pass) {  // 0.5 s apart: 2.5 s, not yet
    rig.peers_report(57, n, /*skip=*/pass >= 1 ? 2 : -1);
    EXPECT_FALSE(rig.dog->check_now()) << "pass " << pass;
    rig.now += 0.5;
  }
  rig.now += 0.5;  // 3.5 s waited; rank 2 last heard 3.5 s ago
  rig.peers_report(57, n, 2);
  EXPECT_TRUE(rig.dog->check_now());
  ASSERT_EQ(rig.aborts.size(), 1u);
  const std::string& m = rig.aborts[0];
  EXPECT_NE(m.find("rank 0: the all-reduce of step 57 (collective 1) has waited 3.5 s"), std::string::npos) << m;
  EXPECT_NE(m.find("rank 2 has not been heard from for 3.5 s (last at step 57)"), std::string::npos) << m;
  EXPECT_EQ(m.find("rank 1"), std::string::npos) << m;
  rig.now += 5;
  rig.dog->check_now();
  EXPECT_EQ(rig.aborts.size(), 1u);  // it fires once
}

TEST(Watchdog, ARankThatHasNotIssuedTheCollectiveIsNamedAsBehind) {
  Rig rig(2.0);
  rig.dog->set_step(9);
  rig.dog->next_collective();
  const int64_t n = rig.dog->next_collective();
  rig.dog->begin_wait(n, "all-reduce");
  for (int pass = 0; pass < 6; ++pass) {  // the sixth, 2.5 s in, is past the timeout
    rig.peers_report(9, n, -1, /*behind=*/3);
    rig.dog->check_now();
    rig.now += 0.5;
  }
  ASSERT_EQ(rig.aborts.size(), 1u);
  EXPECT_NE(rig.aborts[0].find("rank 3 is still at step 9 and has not reached this collective (1 of 2 issued)"),
            std::string::npos)
      << rig.aborts[0];
}

TEST(Watchdog, WaitsThatEndInTimeAndIdleTimeNeverFire) {
  Rig rig(1.0);
  for (int i = 0; i < 20; ++i) {
    const int64_t n = rig.dog->next_collective();
    rig.dog->begin_wait(n, "all-reduce");
    rig.now += 0.9;
    rig.peers_report(1, n);
    rig.dog->check_now();
    rig.dog->end_wait();
    rig.now += 5.0;  // long compute between collectives is not a stall
    rig.peers_report(1, n);
    rig.dog->check_now();
  }
  EXPECT_TRUE(rig.aborts.empty());
  ASSERT_FALSE(rig.sent.empty());
  EXPECT_EQ(rig.sent.back().issued, 20);  // heartbeats carry this rank's progress
}

TEST(Watchdog, APauseOfThisProcessIsNotBlamedOnTheOthers) {
  Rig rig(3.0);
  const int64_t n = rig.dog->next_collective();
  rig.dog->begin_wait(n, "all-reduce");
  rig.peers_report(1, n);
  rig.dog->check_now();
  rig.now += 60.0;  // this process was stopped for a minute
  EXPECT_FALSE(rig.dog->check_now());
  for (int pass = 0; pass < 6; ++pass) {  // then, in passes 0.5 s apart, nobody answers
    rig.now += 0.5;
    EXPECT_FALSE(rig.dog->check_now());
  }
  rig.now += 0.5;  // 3.5 s after the pause: past the timeout
  EXPECT_TRUE(rig.dog->check_now());
  EXPECT_NE(rig.aborts[0].find("has waited 3.5 s"), std::string::npos) << rig.aborts[0];
}

TEST(Watchdog, WithoutHeartbeatsTheMessageSaysWhyNoRankIsNamed) {
  Rig rig(1.0, /*with_channel=*/false);
  rig.dog->begin_wait(rig.dog->next_collective(), "broadcast");
  rig.dog->check_now();
  rig.now += 0.6;
  rig.dog->check_now();
  rig.now += 0.6;
  ASSERT_TRUE(rig.dog->check_now());
  EXPECT_NE(rig.aborts[0].find("no heartbeats name the rank"), std::string::npos) << rig.aborts[0];
}

// A communicator whose all-reduce blocks while being issued (as NCCL's first use of a
// path does while it connects to the peers): the test runs the watchdog's passes from
// inside the call, with the fake clock moving on.
struct BlockingIssue : Communicator {
  SelfCommunicator self;
  std::function<void()> while_issuing;
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend_name() const override { return "blocking"; }
  std::unique_ptr<Work> all_reduce(void* buf, size_t count, DataType type, ReduceOp op) override {
    while_issuing();
    return self.all_reduce(buf, count, type, op);
  }
  std::unique_ptr<Work> reduce_scatter(const void* send, void* recv, size_t n, DataType t, ReduceOp op) override {
    return self.reduce_scatter(send, recv, n, t, op);
  }
  std::unique_ptr<Work> all_gather(const void* send, void* recv, size_t n, DataType t) override {
    return self.all_gather(send, recv, n, t);
  }
  std::unique_ptr<Work> broadcast(void* buf, size_t n, DataType t, int root) override {
    return self.broadcast(buf, n, t, root);
  }
  std::unique_ptr<Work> barrier() override { return self.barrier(); }
};

TEST(WatchedCommunicator, ACollectiveStuckWhileBeingIssuedIsCaught) {
  Rig rig(1.0);
  rig.dog->set_step(3);
  BlockingIssue inner;
  bool fired = false;
  inner.while_issuing = [&] {
    for (int pass = 0; pass < 4 && !fired; ++pass) {
      rig.peers_report(3, 0);  // the others have not issued it: they are behind
      fired = rig.dog->check_now();
      rig.now += 0.4;
    }
  };
  WatchedCommunicator watched(inner, *rig.dog);
  float x = 1.0f;
  watched.all_reduce(&x, 1, DataType::Float32, ReduceOp::Sum)->wait();
  ASSERT_TRUE(fired) << "issuing was not timed";
  ASSERT_EQ(rig.aborts.size(), 1u);
  EXPECT_NE(rig.aborts[0].find("the all-reduce of step 3 (collective 1)"), std::string::npos) << rig.aborts[0];
}

// The control communicator is watched from the first step only: before it, its
// collectives are neither numbered nor timed (set-up lets ranks drift apart); from it,
// they are numbered in the same count as the data communicator's.
TEST(WatchedCommunicator, FromFirstStepLeavesSetUpCollectivesUnwatched) {
  Rig rig(1.0);
  BlockingIssue inner;
  bool fired = false;
  inner.while_issuing = [&] {
    for (int pass = 0; pass < 4 && !fired; ++pass) {
      rig.peers_report(rig.dog->step(), 0);
      fired = rig.dog->check_now();
      rig.now += 0.4;
    }
  };
  WatchedCommunicator control(inner, *rig.dog, /*from_first_step=*/true);
  float x = 1.0f;
  control.all_reduce(&x, 1, DataType::Float32, ReduceOp::Sum)->wait();  // step 0: set-up
  EXPECT_FALSE(fired) << "a set-up collective was timed";
  EXPECT_EQ(rig.dog->next_collective(), 1) << "a set-up collective was numbered";
  rig.dog->set_step(1);
  control.all_reduce(&x, 1, DataType::Float32, ReduceOp::Sum)->wait();
  EXPECT_TRUE(fired) << "a collective of training was not timed";
  ASSERT_EQ(rig.aborts.size(), 1u);
  EXPECT_NE(rig.aborts[0].find("(collective 2)"), std::string::npos) << rig.aborts[0];
}

TEST(WatchdogSuspects, SilentAndBehindRanksAreListed) {
  std::vector<PeerProgress> peers(4);
  peers[1] = {true, 10.0, Heartbeat{5, 40, 1}};
  peers[2] = {true, 19.5, Heartbeat{5, 38, 0}};
  peers[3] = {false, 0.0, {}};
  const std::string m = describe_suspects(0, 40, peers, 20.0, 0.0, 5.0);
  EXPECT_NE(m.find("rank 1 has not been heard from for 10.0 s (last at step 5)"), std::string::npos) << m;
  EXPECT_NE(m.find("rank 2 is still at step 5 and has not reached this collective (38 of 40 issued)"), std::string::npos) << m;
  EXPECT_NE(m.find("rank 3 has not been heard from for 20.0 s (never)"), std::string::npos) << m;
  peers[1].last_heard_s = 19.0;
  peers[2].beat.issued = 40;
  peers[3] = {true, 19.0, Heartbeat{5, 41, 1}};
  EXPECT_NE(describe_suspects(0, 40, peers, 20.0, 0.0, 5.0).find("no rank could be named"), std::string::npos);
}

}  // namespace
}  // namespace dtrain
