// Collectives over an MPI communicator with host buffers, as non-blocking MPI
// collectives (MPI_Iallreduce and friends) so callers can overlap them with compute.
// The caller owns MPI's lifetime (launch/); this class only duplicates the given
// communicator so its traffic never mixes with anyone else's.
//
// MPI has no bf16 type: DataType::BFloat16 travels as MPI_UINT16_T (the bit patterns),
// and its SUM is a user-defined, commutative MPI_Op that adds in fp32 and rounds each
// combination to bf16 (Note [bf16 sum], comm/bf16_sum.h). The combination order is the
// MPI library's, fixed for a given world size and message size, so runs are
// reproducible. The op runs on the host: under CUDA-aware Open MPI its coll/cuda
// component stages device buffers of reductions through host memory before any op
// sees them.
//
// The variable-count collectives are MPI's own v-forms, reduce-scatter with recvcounts
// and all-gather with displacements, so each block travels as the MPI library plans it
// for the whole buffer, with no padding to equal blocks. Note [In-place reduce_scatter_v]
// says how its result reaches the rank's block.
#pragma once

#include <mpi.h>

#include "comm/communicator.h"

namespace dtrain {

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(MPI_Comm comm);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend_name() const override { return "mpi"; }
  std::unique_ptr<Work> all_reduce(void* buf, size_t count, DataType type, ReduceOp op) override;
  std::unique_ptr<Work> reduce_scatter(const void* send, void* recv, size_t recv_count,
                                       DataType type, ReduceOp op) override;
  std::unique_ptr<Work> all_gather(const void* send, void* recv, size_t send_count,
                                   DataType type) override;
  std::unique_ptr<Work> broadcast(void* buf, size_t count, DataType type, int root) override;
  std::unique_ptr<Work> barrier() override;
  std::unique_ptr<Work> reduce_scatter_v(void* buf, std::span<const size_t> counts, DataType type,
                                         ReduceOp op) override;
  std::unique_ptr<Work> all_gather_v(void* buf, std::span<const size_t> counts, DataType type) override;

  // The blocking forms (complete on return). For device buffers under CUDA-aware Open
  // MPI, which handles device memory only in its blocking collectives (its non-blocking
  // ones, for instance, run reductions on the host). A blocking collective never
  // matches a non-blocking one: every rank must use the same form for a collective.
  void all_reduce_blocking(void* buf, size_t count, DataType type, ReduceOp op);
  void reduce_scatter_blocking(const void* send, void* recv, size_t recv_count, DataType type,
                               ReduceOp op);
  void all_gather_blocking(const void* send, void* recv, size_t send_count, DataType type);
  void broadcast_blocking(void* buf, size_t count, DataType type, int root);
  // One MPI_Reduce per non-empty block, rooted at its owner and in place there: the
  // result lands in the block itself, where MPI_Reduce_scatter's in-place result would
  // need moving, which this class cannot do in device memory.
  void reduce_scatter_v_blocking(void* buf, std::span<const size_t> counts, DataType type, ReduceOp op);
  void all_gather_v_blocking(void* buf, std::span<const size_t> counts, DataType type);

 private:
  MPI_Op op_for(ReduceOp op, DataType type) const;

  MPI_Comm comm_ = MPI_COMM_NULL;
  MPI_Op bf16_sum_ = MPI_OP_NULL;  // Note [bf16 sum]
  int rank_ = 0;
  int size_ = 1;
};

}  // namespace dtrain
