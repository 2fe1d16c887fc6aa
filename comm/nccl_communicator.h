// Collectives over NCCL on the device buffers of a CUDA context. Compiled only in
// builds with the CUDA backend; other code reaches it through make_nccl_communicator
// (comm/device_communicator.h), which exists in every build.
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <memory>
#include <string>
#include <type_traits>

#include "comm/communicator.h"
#include "kernels/context.h"
#include "kernels/memory.h"

namespace dtrain {

class NcclWork;

// Cross-rank contract: every rank calls the same collectives in the same order with
// the same counts, types and roots; NCCL matches them by order alone, and a mismatch
// hangs or corrupts data rather than failing. One GPU per rank: NCCL refuses two ranks
// of one communicator on the same device (ranks sharing a GPU use MPI instead).
//
// Streams (Note [NCCL stream ordering]): the collectives run on this communicator's
// own non-blocking stream. Issuing one records an event on the context's compute
// stream and makes the NCCL stream wait for it, so the collective sees everything
// queued on the compute stream before the call. The host never blocks to issue.
//
// Work: wait() does not block the host either; it makes the compute stream wait for
// the collective's completion event, so anything queued on the compute stream after
// wait() (ops, copy_to_host) sees the result, and the caller may release the buffers
// (the caching allocator reuses memory in compute-stream order). done() asks whether
// the collective has finished on the device. A Work destroyed without wait() still
// orders the compute stream after its collective. The exception is barrier(), whose
// wait() blocks the host until every rank has reached the barrier (and finished the
// device work queued before it).
//
// Buffers: device memory of `ctx`, owned by the collective until wait(). Errors: a
// failed call throws CommError (NCCL) or DeviceError (CUDA); asynchronous NCCL errors
// (a peer that failed) are reported by the next wait() or done(); after any error the
// communicator refuses further collectives and its destructor aborts the NCCL
// communicator instead of finalizing it. Lifetimes: `ctx` outlives the communicator,
// and the communicator outlives its Works. Not thread-safe.
class NcclCommunicator final : public Communicator {
 public:
  // Collective over `bootstrap`'s ranks: NCCL rank and size are bootstrap's. Rank 0
  // makes the NCCL unique id and `bootstrap` broadcasts it, so `bootstrap` must take
  // host buffers (MpiCommunicator, or SelfCommunicator for one rank). The NCCL
  // communicator lives on `ctx`'s device.
  NcclCommunicator(Communicator& bootstrap, Context& ctx);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend_name() const override { return "nccl"; }
  std::unique_ptr<Work> all_reduce(void* buf, size_t count, DataType type, ReduceOp op) override;
  std::unique_ptr<Work> reduce_scatter(const void* send, void* recv, size_t recv_count,
                                       DataType type, ReduceOp op) override;
  std::unique_ptr<Work> all_gather(const void* send, void* recv, size_t send_count,
                                   DataType type) override;
  std::unique_ptr<Work> broadcast(void* buf, size_t count, DataType type, int root) override;
  std::unique_ptr<Work> barrier() override;
  // ncclCommAbort: collectives in flight end, and the communicator is unusable after.
  void abort() override;

  // The stream the collectives run on (for tests and tracing).
  cudaStream_t stream() const { return stream_.get(); }

 private:
  friend class NcclWork;

  struct StreamDeleter {
    void operator()(cudaStream_t s) const;
  };
  struct EventDeleter {
    void operator()(cudaEvent_t e) const;
  };

  // Orders the NCCL stream after the compute stream, runs `enqueue` (one NCCL call on
  // stream_), and returns a Work on the completion event.
  template <class Enqueue>
  std::unique_ptr<Work> launch(const char* collective, bool host_blocking, Enqueue&& enqueue);
  // Throws CommError when NCCL reports an asynchronous error, and remembers it.
  void check_async_error();
  void check_usable(const char* collective) const;

  Context& ctx_;
  int rank_ = 0;
  int size_ = 1;
  int device_ = 0;
  cudaStream_t compute_ = nullptr;  // the context's stream; not owned
  std::unique_ptr<std::remove_pointer_t<cudaStream_t>, StreamDeleter> stream_;
  // Recorded on the compute stream before each collective. One event serves all:
  // cudaStreamWaitEvent captures the record made before it, so re-recording is safe.
  std::unique_ptr<std::remove_pointer_t<cudaEvent_t>, EventDeleter> ready_;
  Buffer barrier_scratch_;  // one float that barrier() all-reduces
  ncclComm_t comm_ = nullptr;
  bool failed_ = false;
};

}  // namespace dtrain
