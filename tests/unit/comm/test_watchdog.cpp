// The collective watchdog (Note [Collective watchdog]) with its hooks: a fake clock,
// an in-memory heartbeat channel and an abort hook that records, so a stalled or
// silent rank is simulated without threads, MPI or a real kill.
#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <span>
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

  explicit Rig(double timeout_s, bool with_channel = true, std::vector<std::string> nodes = {}) {
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
    dog = std::make_unique<Watchdog>(/*rank=*/0, /*size=*/4, timeout_s, std::move(channel), hooks, false,
                                     std::move(nodes));
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
  EXPECT_NE(m.find("rank 2 has not been heard from for 3.5 s (heartbeats come every 0.5 s; last at step 57, 1 "
                        "collectives issued)"), std::string::npos) << m;
  EXPECT_EQ(m.find("rank 1"), std::string::npos) << m;
  rig.now += 5;
  rig.dog->check_now();
  EXPECT_EQ(rig.aborts.size(), 1u);  // it fires once
}

// A node cut off (Note [Naming the node]): ranks 2 and 3 of node1 fall silent
// together; the message says where this rank runs and where the silent ranks run.
TEST(Watchdog, SilentRanksAreNamedWithTheirNode) {
  Rig rig(3.0, true, {"node0", "node0", "node1", "node1"});
  rig.dog->set_step(8);
  const int64_t n = rig.dog->next_collective();
  rig.dog->begin_wait(n, "all-reduce");
  rig.peers_report(8, n);
  rig.dog->check_now();
  for (int pass = 0; pass < 8; ++pass) {  // 4 s, ranks 2 and 3 silent all along
    rig.now += 0.5;
    rig.inbox.push_back({1, Heartbeat{8, n, 1}});
    rig.dog->check_now();
  }
  ASSERT_EQ(rig.aborts.size(), 1u);
  const std::string& m = rig.aborts[0];
  EXPECT_EQ(m.find("rank 0 on node0: the all-reduce of step 8 (collective 1) has waited 3.5 s"), 0u) << m;
  EXPECT_NE(m.find("rank 2 on node1 has not been heard from for 3.5 s"), std::string::npos) << m;
  EXPECT_NE(m.find("rank 3 on node1 has not been heard from for 3.5 s"), std::string::npos) << m;
  EXPECT_EQ(m.find("rank 1"), std::string::npos) << m;  // heard every period: not a suspect
}

TEST(WatchdogSuspects, ARankIsNamedWithItsNodeWhereTheNodeIsKnown) {
  const std::vector<std::string> nodes = {"node0", "node1", ""};
  EXPECT_EQ(rank_on_node(1, nodes), "rank 1 on node1");
  EXPECT_EQ(rank_on_node(0, nodes), "rank 0 on node0");
  EXPECT_EQ(rank_on_node(2, nodes), "rank 2");  // no name gathered
  EXPECT_EQ(rank_on_node(3, nodes), "rank 3");  // beyond the list
  EXPECT_EQ(rank_on_node(1, {}), "rank 1");     // no list: as on one node before
  std::vector<PeerProgress> peers(3);
  peers[1] = {true, 10.0, Heartbeat{5, 7, 0}};   // silent for 2 s
  peers[2] = {true, 11.9, Heartbeat{5, 6, 0}};   // heard, behind
  const std::string m = describe_suspects(0, 7, peers, 12.0, 0.0, 0.5, nodes);
  EXPECT_NE(m.find("rank 1 on node1 has not been heard from for 2.0 s"), std::string::npos) << m;
  EXPECT_NE(m.find("rank 2 is still at step 5 and has not reached this collective (6 of 7 issued)"),
            std::string::npos)
      << m;
}

// The stop that went unnamed (no_hang_checks, SIGSTOP of rank 3 on 4 ranks): this
// rank waits in collective 75 from the start; rank 3 issued it too, was heard waiting
// in it, and then stopped 1.5 s into the wait; ranks 1 and 2 finished it and wait in
// 76. When the wait passes the 3 s timeout, rank 3 has been silent for 2 s: less than
// the timeout, but four heartbeat periods (0.5 s each) without a beat from a rank
// that sent one every period until then. It must be named.
TEST(Watchdog, ARankSilentForSeveralHeartbeatPeriodsIsNamedBeforeTheTimeout) {
  Rig rig(3.0);
  rig.dog->set_step(12);
  for (int i = 1; i < 75; ++i) rig.dog->next_collective();
  const int64_t n = rig.dog->next_collective();
  rig.dog->begin_wait(n, "all-reduce");
  for (int pass = 0; pass <= 7; ++pass) {  // t = 0.0 .. 3.5 s, 0.5 s apart
    rig.inbox.push_back({1, Heartbeat{12, n + 1, 1}});
    rig.inbox.push_back({2, Heartbeat{12, n + 1, 1}});
    if (rig.now - 100.0 <= 1.5) rig.inbox.push_back({3, Heartbeat{12, n, 1}});
    rig.dog->check_now();
    rig.now += 0.5;
  }
  ASSERT_EQ(rig.aborts.size(), 1u);
  const std::string& m = rig.aborts[0];
  EXPECT_NE(m.find("rank 3 has not been heard from for 2.0 s"), std::string::npos) << m;
  EXPECT_EQ(m.find("rank 1 "), std::string::npos) << m;
  EXPECT_EQ(m.find("rank 2 "), std::string::npos) << m;
}

// Where no rank can be named, the message says what this rank knows: when it last
// heard from each rank and what that rank was doing, so a reader can still tell
// a collective that every rank is inside (the network, the library) from the rest.
TEST(Watchdog, WhenNoRankCanBeNamedTheMessageSaysWhenEachWasLastHeard) {
  Rig rig(2.0);
  rig.dog->set_step(4);
  const int64_t n = rig.dog->next_collective();
  rig.dog->begin_wait(n, "all-reduce");
  for (int pass = 0; pass <= 5; ++pass) {  // t = 0.0 .. 2.5 s: everyone waits in it
    rig.peers_report(4, n);
    rig.dog->check_now();
    rig.now += 0.5;
  }
  ASSERT_EQ(rig.aborts.size(), 1u);
  const std::string& m = rig.aborts[0];
  EXPECT_NE(m.find("no rank could be named"), std::string::npos) << m;
  for (int r = 1; r < 4; ++r) {
    EXPECT_NE(m.find("rank " + std::to_string(r) + " heard 0.0 s ago (step 4, 1 collectives issued, waiting in one)"),
              std::string::npos)
        << m;
  }
  EXPECT_NE(m.find("every rank has issued collective 1 and waits in it"), std::string::npos) << m;
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

// Records the variable-count collectives that reach it as such.
struct RecordsVariableCount : BlockingIssue {
  std::vector<std::string> calls;
  RecordsVariableCount() { while_issuing = [] {}; }
  std::unique_ptr<Work> reduce_scatter_v(void*, std::span<const size_t>, DataType, ReduceOp) override {
    calls.push_back("reduce_scatter_v");
    return std::make_unique<CompletedWork>();
  }
  std::unique_ptr<Work> all_gather_v(void*, std::span<const size_t>, DataType) override {
    calls.push_back("all_gather_v");
    return std::make_unique<CompletedWork>();
  }
};

// Forwarded whole: the inner communicator's own v-forms run (not the defaults, made
// of all-reduces and broadcasts), and each is one numbered collective.
TEST(WatchedCommunicator, VariableCountCollectivesReachTheInnerOnesAndCountOnce) {
  Rig rig(1.0);
  rig.dog->set_step(1);
  RecordsVariableCount inner;
  WatchedCommunicator watched(inner, *rig.dog);
  float buf[3] = {};
  const std::vector<size_t> counts = {3};
  watched.reduce_scatter_v(buf, counts, DataType::Float32, ReduceOp::Sum)->wait();
  watched.all_gather_v(buf, counts, DataType::Float32)->wait();
  EXPECT_EQ(inner.calls, (std::vector<std::string>{"reduce_scatter_v", "all_gather_v"}));
  EXPECT_EQ(rig.dog->next_collective(), 3) << "each v-form was numbered once";
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
  const double period = 0.5;  // silent after 3 periods: 1.5 s
  std::vector<PeerProgress> peers(4);
  peers[1] = {true, 18.4, Heartbeat{5, 40, 1}};
  peers[2] = {true, 19.5, Heartbeat{5, 38, 0}};
  peers[3] = {false, 0.0, {}};
  const std::string m = describe_suspects(0, 40, peers, 20.0, 0.0, period);
  EXPECT_NE(m.find("rank 1 has not been heard from for 1.6 s (heartbeats come every 0.5 s; last at step 5, 40 "
                   "collectives issued)"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("rank 2 is still at step 5 and has not reached this collective (38 of 40 issued)"), std::string::npos) << m;
  EXPECT_NE(m.find("rank 3 has not been heard from for 20.0 s (heartbeats come every 0.5 s; never heard)"),
            std::string::npos)
      << m;
  EXPECT_EQ(m.find("no rank could be named"), std::string::npos) << m;
  // A rank that waits in an earlier collective is held up in turn: named last.
  peers[2].beat.waiting = 1;
  const std::string held = describe_suspects(0, 40, peers, 20.0, 0.0, period);
  const size_t at = held.find("rank 2 is still at step 5 and has not reached this collective (38 of 40 issued; it "
                              "waits in collective 38, held up in turn)");
  EXPECT_NE(at, std::string::npos) << held;
  EXPECT_LT(held.find("rank 3 has not been heard"), at) << held;
  peers[2].beat.waiting = 0;
  peers[1].last_heard_s = 18.6;  // 1.4 s: within three periods
  peers[2].beat.issued = 40;
  peers[3] = {true, 19.0, Heartbeat{5, 41, 0}};
  const std::string none = describe_suspects(0, 40, peers, 20.0, 0.0, period);
  EXPECT_NE(none.find("no rank could be named: rank 1 heard 1.4 s ago (step 5, 40 collectives issued, waiting in "
                      "one); rank 2 heard 0.5 s ago (step 5, 40 collectives issued, not waiting); rank 3 heard "
                      "1.0 s ago (step 5, 41 collectives issued, not waiting)"),
            std::string::npos)
      << none;
  EXPECT_EQ(none.find("every rank has issued"), std::string::npos) << none;  // ranks 2 and 3 are not inside it
}

TEST(WatchdogSuspects, ARankNotYetHeardFromIsCountedFromWhenListeningStarted) {
  std::vector<PeerProgress> peers(2);
  EXPECT_NE(describe_suspects(0, 1, peers, 11.0, 10.0, 0.5).find("rank 1 not heard yet (1.0 s since"),
            std::string::npos);
  EXPECT_NE(describe_suspects(0, 1, peers, 11.6, 10.0, 0.5).find("rank 1 has not been heard from for 1.6 s"),
            std::string::npos);
}

TEST(WatchdogSuspects, HeartbeatPeriodIsAFewPerTimeoutWithinBounds) {
  EXPECT_DOUBLE_EQ(watchdog_heartbeat_period_s(3.0), 0.5);
  EXPECT_DOUBLE_EQ(watchdog_heartbeat_period_s(1.0), 0.25);
  EXPECT_DOUBLE_EQ(watchdog_heartbeat_period_s(0.1), 0.05);
}

}  // namespace
}  // namespace dtrain
