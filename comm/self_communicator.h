// The one-rank communicator: no MPI, every collective is a copy or nothing.
#pragma once

#include "comm/communicator.h"

namespace dtrain {

class SelfCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend_name() const override { return "self"; }
  std::unique_ptr<Work> all_reduce(void* buf, size_t count, DataType type, ReduceOp op) override;
  std::unique_ptr<Work> reduce_scatter(const void* send, void* recv, size_t recv_count,
                                       DataType type, ReduceOp op) override;
  std::unique_ptr<Work> all_gather(const void* send, void* recv, size_t send_count,
                                   DataType type) override;
  std::unique_ptr<Work> broadcast(void* buf, size_t count, DataType type, int root) override;
  std::unique_ptr<Work> barrier() override;
  // One rank owns the one block, and holds its reduction and every block already: the
  // identity, with nothing to copy.
  std::unique_ptr<Work> reduce_scatter_v(void* buf, std::span<const size_t> counts, DataType type,
                                         ReduceOp op) override;
  std::unique_ptr<Work> all_gather_v(void* buf, std::span<const size_t> counts, DataType type) override;
};

}  // namespace dtrain
