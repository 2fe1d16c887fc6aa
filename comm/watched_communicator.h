// A Communicator that reports every collective to a Watchdog (Note [Collective
// watchdog]): each one gets the next number when it is issued; issuing it and its
// wait() are timed, and wait() is made to block the host until the collective has
// finished. The collectives themselves are the wrapped communicator's.
#pragma once

#include <memory>
#include <string>

#include "comm/communicator.h"
#include "comm/watchdog.h"

namespace dtrain {

class WatchedCommunicator final : public Communicator {
 public:
  // `from_first_step`: collectives before training's first step (the watchdog's step
  // is still 0) pass unwatched, for a communicator that set-up also uses, where ranks
  // legitimately drift apart (data loading, the batch planner's probe steps).
  WatchedCommunicator(Communicator& inner, Watchdog& watchdog, bool from_first_step = false)
      : inner_(inner), watchdog_(watchdog), from_first_step_(from_first_step) {}

  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  std::string backend_name() const override { return inner_.backend_name(); }
  std::unique_ptr<Work> all_reduce(void* buf, size_t count, DataType type, ReduceOp op) override;
  std::unique_ptr<Work> reduce_scatter(const void* send, void* recv, size_t recv_count, DataType type,
                                       ReduceOp op) override;
  std::unique_ptr<Work> all_gather(const void* send, void* recv, size_t send_count, DataType type) override;
  std::unique_ptr<Work> broadcast(void* buf, size_t count, DataType type, int root) override;
  std::unique_ptr<Work> barrier() override;
  // Forwarded whole, so that the inner communicator's own v-forms run (the defaults
  // would go through this class's all_reduce and broadcasts) and the watchdog counts
  // and times each as one collective.
  std::unique_ptr<Work> reduce_scatter_v(void* buf, std::span<const size_t> counts, DataType type,
                                         ReduceOp op) override;
  std::unique_ptr<Work> all_gather_v(void* buf, std::span<const size_t> counts, DataType type) override;
  void abort() override { inner_.abort(); }

 private:
  template <class Issue>
  std::unique_ptr<Work> issue(const char* what, Issue&& start);

  Communicator& inner_;
  Watchdog& watchdog_;
  const bool from_first_step_;
};

}  // namespace dtrain
