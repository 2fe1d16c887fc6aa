// Collectives on device buffers through a host communicator, by staging: each
// collective copies its device input into a host transfer buffer (pinned on GPUs),
// runs the host collective (MPI) on it, and copies the result back into the device
// buffer when its Work is waited on. The fallback for device buffers when MPI is not
// CUDA-aware and NCCL is not used (for instance several ranks sharing one GPU).
#pragma once

#include <memory>
#include <string>

#include "comm/communicator.h"
#include "comm/host_buffer_pool.h"
#include "kernels/context.h"

namespace dtrain {

// Cross-rank contract: as every Communicator, all ranks call the same collectives in
// the same order with the same counts and types (the host communicator matches them
// by order).
//
// Buffers: every pointer passed in is memory of `ctx`'s device, and belongs to the
// collective until its Work's wait() returns (or done() says true). Inputs are read
// when the collective is issued: the call copies them to the host after the work
// already queued on the context (stream order) and waits for that copy, so the host
// blocks for the device-to-host copy but not for the collective itself. wait() waits
// for the host collective and queues the copy back on the context: work queued on the
// context afterwards (ops, copy_to_host) sees the result; the host sees it through
// copy_to_host as usual. barrier() first waits for the device work queued before it.
//
// Lifetimes: `host` and `ctx` outlive this communicator, and every Work it returned
// is finished or destroyed before it is. A Work destroyed without wait() still
// completes its host collective but leaves the device buffer as it was.
// Not thread-safe: one thread issues the collectives, as everywhere in dtrain.
class StagingCommunicator final : public Communicator {
 public:
  StagingCommunicator(Communicator& host, Context& ctx);

  int rank() const override { return host_.rank(); }
  int size() const override { return host_.size(); }
  std::string backend_name() const override { return host_.backend_name() + "+staging"; }
  std::unique_ptr<Work> all_reduce(void* buf, size_t count, DataType type, ReduceOp op) override;
  std::unique_ptr<Work> reduce_scatter(const void* send, void* recv, size_t recv_count,
                                       DataType type, ReduceOp op) override;
  std::unique_ptr<Work> all_gather(const void* send, void* recv, size_t send_count,
                                   DataType type) override;
  std::unique_ptr<Work> broadcast(void* buf, size_t count, DataType type, int root) override;
  std::unique_ptr<Work> barrier() override;
  // The host communicator's v-forms on a staged copy of the buffer: the whole buffer
  // goes to the host for reduce_scatter_v and only this rank's block comes back; only
  // this rank's block goes for all_gather_v and the whole buffer comes back.
  std::unique_ptr<Work> reduce_scatter_v(void* buf, std::span<const size_t> counts, DataType type,
                                         ReduceOp op) override;
  std::unique_ptr<Work> all_gather_v(void* buf, std::span<const size_t> counts, DataType type) override;
  void abort() override { host_.abort(); }

  // Host transfer memory kept for reuse (tests and memory reports).
  const HostBufferPool& pool() const { return pool_; }

 private:
  Communicator& host_;
  Context& ctx_;
  HostBufferPool pool_;
};

}  // namespace dtrain
