// The collective watchdog (DESIGN contract 8: no hang).
//
// Note [Collective watchdog]
// A thread per rank wakes a few times per comm.timeout_s. It sends this rank's
// progress (step, collectives issued, whether it is waiting) to every other rank over
// a heartbeat channel of its own, and reads theirs. When this rank has waited in one
// collective longer than the timeout, it names the suspects from what it heard: ranks
// that missed their heartbeats (stopped, or their node is gone) and ranks that have
// not yet issued the collective it waits in (stuck before it), or, where none can be
// named, when it last heard each rank (Note [Naming the silent rank]); it says which
// step, and ends the job through its abort hook (launch/: MPI_Abort, which ends
// every rank and the NCCL kernels in flight with them). A rank killed outright is seen
// by the launcher first (mpirun names it); the watchdog covers the ranks that stop
// making progress while alive. Tests drive it without threads or MPI: check_now()
// runs one pass, the channel and the clock are fakes, and the abort hook records
// instead of ending the process.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace dtrain {

struct Heartbeat {
  int64_t step = 0;      // the optimizer step the rank is in (1-based; 0: not yet training)
  int64_t issued = 0;    // collectives issued so far
  int64_t waiting = 0;   // 1 while blocked in a collective
};

// How heartbeats travel between ranks (comm/mpi_heartbeat.cpp over MPI).
class HeartbeatChannel {
 public:
  virtual ~HeartbeatChannel() = default;
  virtual void send_to_all(const Heartbeat& beat) = 0;
  // Every heartbeat that arrived since the last call, with its sender.
  virtual std::vector<std::pair<int, Heartbeat>> receive() = 0;
};

struct PeerProgress {
  bool heard = false;
  double last_heard_s = 0.0;
  Heartbeat beat;
};

// How often the watchdog sends a heartbeat and checks its wait: a few times per
// timeout, at most twice a second (cheap), at least 20 times a second.
double watchdog_heartbeat_period_s(double timeout_s);

// Pure: how a message names rank `rank`: "rank 2 on node1", with the node from
// `nodes` (element r: rank r's host name), or "rank 2" where the node is not known.
// See Note [Naming the node].
std::string rank_on_node(int rank, const std::vector<std::string>& nodes);

// Pure: the sentence naming the ranks that hold up collective number `waiting_for`
// (1-based) at time now_s, each with its node where `nodes` has it. See Note [Naming
// the silent rank].
std::string describe_suspects(int self, int64_t waiting_for, const std::vector<PeerProgress>& peers, double now_s,
                              double started_s, double period_s, const std::vector<std::string>& nodes = {});

class Watchdog {
 public:
  struct Hooks {
    std::function<void(const std::string& message)> abort;  // ends the job (tests: records)
    std::function<double()> clock;                          // monotonic seconds
  };
  // `channel` may be null (no heartbeats: the message cannot name a rank). `nodes`:
  // every rank's host name (may be empty: ranks are then named without their node).
  // `start_thread` false leaves the passes to check_now() (tests).
  Watchdog(int rank, int size, double timeout_s, std::unique_ptr<HeartbeatChannel> channel, Hooks hooks,
           bool start_thread = true, std::vector<std::string> nodes = {});
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  void set_step(int64_t step) { step_ = step; }
  int64_t step() const { return step_; }
  // The collective about to be issued gets the next number (1-based).
  int64_t next_collective() { return ++issued_; }
  void begin_wait(int64_t collective, const char* what);
  void end_wait();
  // One pass: heartbeat out and in, then the timeout check. Returns true once it fired.
  bool check_now();

 private:
  void run();

  const int rank_;
  const double timeout_s_;
  const double period_s_;
  std::unique_ptr<HeartbeatChannel> channel_;
  Hooks hooks_;
  const double started_s_;
  std::atomic<int64_t> step_{0};
  std::atomic<int64_t> issued_{0};
  std::atomic<int64_t> waiting_for_{0};  // collective number; 0: not waiting
  std::atomic<double> wait_start_s_{0.0};
  std::atomic<const char*> waiting_what_{""};
  std::vector<PeerProgress> peers_;
  const std::vector<std::string> nodes_;
  double last_pass_s_ = -1.0;
  bool fired_ = false;
  std::mutex mu_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace dtrain
