#include "comm/self_communicator.h"

#include <cstring>

#include "kernels/check.h"

namespace dtrain {

std::unique_ptr<Work> SelfCommunicator::all_reduce(void*, size_t, DataType, ReduceOp) {
  return std::make_unique<CompletedWork>();
}

std::unique_ptr<Work> SelfCommunicator::reduce_scatter(const void* send, void* recv,
                                                       size_t recv_count, DataType type,
                                                       ReduceOp) {
  if (send != recv) std::memmove(recv, send, recv_count * data_type_size(type));
  return std::make_unique<CompletedWork>();
}

std::unique_ptr<Work> SelfCommunicator::all_gather(const void* send, void* recv,
                                                   size_t send_count, DataType type) {
  if (send != recv) std::memmove(recv, send, send_count * data_type_size(type));
  return std::make_unique<CompletedWork>();
}

std::unique_ptr<Work> SelfCommunicator::broadcast(void*, size_t, DataType, int root) {
  DTRAIN_ASSERT(root == 0, "broadcast root " << root << " on a one-rank communicator");
  return std::make_unique<CompletedWork>();
}

std::unique_ptr<Work> SelfCommunicator::barrier() { return std::make_unique<CompletedWork>(); }

std::unique_ptr<Work> SelfCommunicator::reduce_scatter_v(void*, std::span<const size_t> counts, DataType,
                                                         ReduceOp) {
  checked_total(counts, "reduce_scatter_v");
  return std::make_unique<CompletedWork>();
}

std::unique_ptr<Work> SelfCommunicator::all_gather_v(void*, std::span<const size_t> counts, DataType) {
  checked_total(counts, "all_gather_v");
  return std::make_unique<CompletedWork>();
}

}  // namespace dtrain
