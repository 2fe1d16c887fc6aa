// The communicator of one process without MPI on a device (launch/device_setup.cpp).
// With one rank an all-reduce or a broadcast leaves its buffer as it is, so they cost
// nothing here: no copies to the host and no wait for the device, which keeps a
// one-process run's queue full (the trainer counts the host's waits per step,
// OpsBackend::host_syncs). The collectives with a separate output buffer
// (all_gather, reduce_scatter) still need their copy, and go through `staged`. The
// variable-count ones are in place, so they too leave the buffer as it is.
#pragma once

#include <memory>
#include <string>

#include "comm/communicator.h"

namespace dtrain {

class SingleRankCommunicator final : public Communicator {
 public:
  // `staged` must have one rank and outlive this.
  explicit SingleRankCommunicator(Communicator& staged) : staged_(staged) {}
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend_name() const override { return staged_.backend_name(); }
  std::unique_ptr<Work> all_reduce(void*, size_t, DataType, ReduceOp) override {
    return std::make_unique<CompletedWork>();
  }
  std::unique_ptr<Work> reduce_scatter(const void* send, void* recv, size_t recv_count, DataType type,
                                       ReduceOp op) override {
    return staged_.reduce_scatter(send, recv, recv_count, type, op);
  }
  std::unique_ptr<Work> all_gather(const void* send, void* recv, size_t send_count, DataType type) override {
    return staged_.all_gather(send, recv, send_count, type);
  }
  std::unique_ptr<Work> broadcast(void*, size_t, DataType, int) override { return std::make_unique<CompletedWork>(); }
  std::unique_ptr<Work> barrier() override { return std::make_unique<CompletedWork>(); }
  std::unique_ptr<Work> reduce_scatter_v(void*, std::span<const size_t> counts, DataType, ReduceOp) override {
    checked_total(counts, "reduce_scatter_v");
    return std::make_unique<CompletedWork>();
  }
  std::unique_ptr<Work> all_gather_v(void*, std::span<const size_t> counts, DataType) override {
    checked_total(counts, "all_gather_v");
    return std::make_unique<CompletedWork>();
  }
  void abort() override { staged_.abort(); }

 private:
  Communicator& staged_;
};

}  // namespace dtrain
