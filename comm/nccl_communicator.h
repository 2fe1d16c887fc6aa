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
// (a peer that failed) are reported by the next wait() or done(). Any error aborts the
// NCCL communicator before it is thrown (Note [Abort before unwinding]), so that
// nothing on the way out waits for collectives that will never complete: the Works
// of an aborted communicator no longer order the compute stream after theirs, and the
// communicator refuses further collectives, waits and queries. Lifetimes: `ctx`
// outlives the communicator, and the communicator outlives its Works. Not thread-safe.
//
// Note [Nonblocking NCCL communicator]: the NCCL communicator is made nonblocking
// (ncclConfig_t.blocking = 0), so that its initialisation can be timed: a blocking
// ncclCommInitRank waits for every peer with no limit, before the watchdog exists,
// and a rank that failed there hung all the others. NCCL keeps a communicator's
// blocking mode for life, so every NCCL call on it may return ncclInProgress and
// finish in the background; the kernel of a collective is on its stream only once
// ncclCommGetAsyncError says ncclSuccess. Each call is therefore waited for right
// away (wait_for_completion, comm/completion_wait.h) before anything is ordered after
// it: the collectives behave as they did when blocking, and the initialisation ends
// after `timeout_s` with a message naming the rank. Being nonblocking is also what
// NCCL requires for ncclCommAbort to be safe at any point.
//
// Note [Variable-count collectives over NCCL]: NCCL's reduce-scatter and all-gather
// take equal blocks only. reduce_scatter_v is one NCCL group of ncclReduce calls, one
// per non-empty block, rooted at the block's owner and in place there; all_gather_v is
// one group of ncclBroadcast calls, one per non-empty block, from its owner and in
// place. The alternative, padding every block to the largest and running
// ncclReduceScatter/ncclAllGather, would copy the flat buffer into a padded one and
// back, and send the padding too: every block would travel at the size of the
// largest, and with ranges in proportion to memory one large range makes them all
// large. The grouped calls work on the flat buffer where it is, send each block's
// bytes only, and NCCL issues a group together (aggregated into one launch where it
// can). Empty blocks are skipped on every rank alike, so the calls still match.
class NcclCommunicator final : public Communicator {
 public:
  // Collective over `bootstrap`'s ranks: NCCL rank and size are bootstrap's. Rank 0
  // makes the NCCL unique id and `bootstrap` broadcasts it, so `bootstrap` must take
  // host buffers (MpiCommunicator, or SelfCommunicator for one rank). The NCCL
  // communicator lives on `ctx`'s device. A rank whose NCCL initialisation has not
  // completed after `timeout_s` (comm.timeout_s; 0: no limit) aborts it and throws
  // CommError, as does one whose initialisation fails.
  NcclCommunicator(Communicator& bootstrap, Context& ctx, double timeout_s);
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
  // Note [Variable-count collectives over NCCL].
  std::unique_ptr<Work> reduce_scatter_v(void* buf, std::span<const size_t> counts, DataType type,
                                         ReduceOp op) override;
  std::unique_ptr<Work> all_gather_v(void* buf, std::span<const size_t> counts, DataType type) override;
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
  // Throws CommError when NCCL reports an asynchronous error, after aborting.
  void check_async_error();
  void check_usable(const char* collective) const;
  // Marks the communicator failed and aborts the NCCL communicator (once).
  void fail_and_abort();
  bool aborted() const { return comm_ == nullptr; }
  // Note [Nonblocking NCCL communicator]: returns once NCCL has completed the last call
  // on comm_; on failure or after `timeout_s` (0: no limit), aborts and throws
  // CommError whose message ends with `failure_hint` for a failure.
  void wait_until_complete(const std::string& operation, double timeout_s, const std::string& failure_hint);

  Context& ctx_;
  int rank_ = 0;
  int size_ = 1;
  int device_ = 0;
  double timeout_s_ = 0.0;
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
