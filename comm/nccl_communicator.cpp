#include "comm/nccl_communicator.h"

#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <span>
#include <thread>

#include "comm/completion_wait.h"
#include "comm/device_communicator.h"
#include "comm/nccl_check.h"
#include "comm/typed_collectives.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/errors.h"
#include "kernels/ops.h"

namespace dtrain {
namespace {

ncclDataType_t to_nccl(DataType t) {
  switch (t) {
    case DataType::Float32: return ncclFloat32;
    case DataType::Float64: return ncclFloat64;
    case DataType::Int32: return ncclInt32;
    case DataType::Int64: return ncclInt64;
    case DataType::UInt64: return ncclUint64;
    case DataType::UInt8: return ncclUint8;
    // NCCL rounds each step's bf16 partial sum to bf16 (Note [bf16 sum],
    // comm/bf16_sum.h); the order of the steps is its ring's or tree's.
    case DataType::BFloat16: return ncclBfloat16;
  }
  throw CommError("NCCL backend: unknown data type");
}

ncclRedOp_t to_nccl(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return ncclSum;
  }
  throw CommError("NCCL backend: unknown reduce op");
}

// Makes `device` current for the scope: events must be created on the device of the
// streams they are recorded on, and ncclCommInitRank uses the current device.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) : device_(device) {
    DTRAIN_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device_) DTRAIN_CUDA_CHECK(cudaSetDevice(device_));
  }
  ~DeviceGuard() {
    if (previous_ != device_) DTRAIN_CUDA_REPORT(cudaSetDevice(previous_));
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int device_;
  int previous_ = -1;
};

// Note [NCCL unique id broadcast]: rank 0 makes the id and the bootstrap broadcasts
// it as bytes, with a leading status byte. If rank 0 cannot make an id it still takes
// part in the broadcast (status 0), so the other ranks fail with a message instead of
// waiting forever for an id that never comes.
ncclUniqueId exchange_unique_id(Communicator& bootstrap) {
  static_assert(sizeof(ncclUniqueId) == NCCL_UNIQUE_ID_BYTES, "ncclUniqueId is its bytes");
  std::array<uint8_t, 1 + sizeof(ncclUniqueId)> message{};
  std::exception_ptr root_failure;
  if (bootstrap.rank() == 0) {
    try {
      ncclUniqueId id;
      DTRAIN_NCCL_CHECK(ncclGetUniqueId(&id), 0);
      message[0] = 1;
      std::memcpy(message.data() + 1, &id, sizeof(id));
    } catch (const CommError&) {
      root_failure = std::current_exception();
    }
  }
  broadcast(bootstrap, std::span<uint8_t>(message), 0)->wait();
  if (root_failure) std::rethrow_exception(root_failure);
  if (message[0] != 1) {
    throw CommError("rank " + std::to_string(bootstrap.rank()) +
                    ": rank 0 could not create the NCCL unique id (rank 0's message says why); "
                    "check that NCCL can open a socket on rank 0's host (NCCL_SOCKET_IFNAME)");
  }
  ncclUniqueId id;
  std::memcpy(&id, message.data() + 1, sizeof(id));
  return id;
}

// How often a wait on the nonblocking communicator asks NCCL for its state: often
// enough that a collective being issued is not held up noticeably, rarely enough that
// the polling thread leaves the CPU to NCCL's own threads.
constexpr double kPollPeriodS = 0.001;

double monotonic_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void sleep_seconds(double s) { std::this_thread::sleep_for(std::chrono::duration<double>(s)); }

// Issues `issue_block(block, count, owner)` for every non-empty block of a
// variable-count collective, in rank order, inside one NCCL group (Note [Variable-count
// collectives over NCCL], nccl_communicator.h). Every rank skips the same empty blocks,
// so the calls match across ranks.
template <class IssueBlock>
void issue_grouped_per_block(void* buf, std::span<const size_t> counts, DataType type, int rank,
                             IssueBlock&& issue_block) {
  char* block = static_cast<char*>(buf);
  DTRAIN_NCCL_CHECK(ncclGroupStart(), rank);
  try {
    for (size_t owner = 0; owner < counts.size(); ++owner) {
      if (counts[owner] > 0) issue_block(block, counts[owner], static_cast<int>(owner));
      block += counts[owner] * data_type_size(type);
    }
  } catch (...) {
    // Closes the group the failed call leaves open in this thread; the error thrown is
    // that call's, and the caller aborts the communicator.
    (void)ncclGroupEnd();
    throw;
  }
  DTRAIN_NCCL_ISSUE(ncclGroupEnd(), rank);
}

}  // namespace

// The Work of one NCCL collective: its completion event, recorded on the NCCL stream
// after the collective.
class NcclWork final : public Work {
 public:
  NcclWork(NcclCommunicator& comm, bool host_blocking) : comm_(comm), host_blocking_(host_blocking) {
    DTRAIN_CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming));
  }

  ~NcclWork() override {
    // Note [Stream-ordered reuse] (kernels/cuda/caching_allocator.h): the caller may
    // release the buffers once the Work is gone, so the compute stream must not run
    // ahead of the collective even when nobody waited. Waiting on an event that was
    // never recorded (a launch that failed) is a no-op. Not so once the communicator
    // has been aborted (Note [Abort before unwinding]): the collective then never
    // completes normally, and ncclCommAbort has returned only after freeing the
    // device resources its kernels used, so there is nothing left to order after.
    if (!waited_ && !comm_.aborted()) DTRAIN_CUDA_REPORT(cudaStreamWaitEvent(comm_.compute_, event_, 0));
    // Destroying an event whose record is still pending is allowed: CUDA releases it
    // once the record has completed.
    DTRAIN_CUDA_REPORT(cudaEventDestroy(event_));
  }

  cudaEvent_t event() const { return event_; }

  void wait() override {
    if (waited_) return;
    comm_.check_usable("wait");
    comm_.check_async_error();
    if (host_blocking_) {
      DTRAIN_CUDA_CHECK(cudaEventSynchronize(event_));
      // The collective may have ended because a peer failed; say so now, not later.
      comm_.check_async_error();
    } else {
      DTRAIN_CUDA_CHECK(cudaStreamWaitEvent(comm_.compute_, event_, 0));
    }
    waited_ = true;
  }

  bool done() override {
    comm_.check_usable("done");
    const cudaError_t status = cudaEventQuery(event_);
    if (status == cudaSuccess) return true;
    if (status != cudaErrorNotReady) {
      detail::throw_library_error<DeviceError>("CUDA", "cudaEventQuery(event_)", __FILE__, __LINE__,
                                               cuda_detail::cuda_error_string(status),
                                               cuda_detail::current_device());
    }
    // cudaEventQuery also leaves cudaErrorNotReady as the thread's last error; clear it
    // so that the next kernel launch check (cudaGetLastError) does not report it.
    (void)cudaGetLastError();
    comm_.check_async_error();
    return false;
  }

 private:
  NcclCommunicator& comm_;
  bool host_blocking_;
  cudaEvent_t event_ = nullptr;
  bool waited_ = false;
};

void NcclCommunicator::StreamDeleter::operator()(cudaStream_t s) const {
  DTRAIN_CUDA_REPORT(cudaStreamDestroy(s));
}

void NcclCommunicator::EventDeleter::operator()(cudaEvent_t e) const {
  DTRAIN_CUDA_REPORT(cudaEventDestroy(e));
}

NcclCommunicator::NcclCommunicator(Communicator& bootstrap, Context& ctx, double timeout_s)
    : ctx_(ctx), rank_(bootstrap.rank()), size_(bootstrap.size()), timeout_s_(timeout_s) {
  // Everything that can fail alone comes first, so that a failure here leaves no rank
  // inside a collective; the id exchange and ncclCommInitRank come last. (A rank that
  // fails before them still leaves the others waiting in the bootstrap broadcast or in
  // NCCL's initialisation: the setup agreement cannot cover a step that is itself
  // collective.)
  compute_ = cuda_stream(ctx);
  device_ = cuda_device(ctx);
  DeviceGuard guard(device_);

  cudaStream_t stream = nullptr;
  DTRAIN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  stream_.reset(stream);
  cudaEvent_t ready = nullptr;
  DTRAIN_CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
  ready_.reset(ready);
  barrier_scratch_ = Buffer(ctx.allocator(), sizeof(float), MemoryCategory::Other);
  // Queued on the compute stream, so every barrier (ordered after it) reads a defined
  // value; the sum itself is never used.
  ops::fill(ctx, barrier_scratch_.as<float>(), 1, 0.0f);

  const ncclUniqueId id = exchange_unique_id(bootstrap);
  // The most common cause of a failure at this step is two ranks on one GPU, which
  // NCCL refuses.
  const std::string init_hint = " [CUDA device " + std::to_string(device_) +
                                "]. NCCL needs a GPU of its own for every rank; ranks that share a GPU must "
                                "use comm.backend: mpi";
  // Note [Nonblocking NCCL communicator]: the call returns at once, and the
  // initialisation goes on in NCCL's background until the wait sees it done.
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t comm = nullptr;
  try {
    DTRAIN_NCCL_ISSUE(ncclCommInitRankConfig(&comm, size_, id, rank_, &config), rank_);
  } catch (const CommError& e) {
    if (comm != nullptr) DTRAIN_NCCL_REPORT(ncclCommAbort(comm));
    throw CommError(std::string(e.what()) + " [rank " + std::to_string(rank_) + " of " + std::to_string(size_) +
                    "]" + init_hint);
  }
  comm_ = comm;
  wait_until_complete("NCCL initialisation", timeout_s_, init_hint);
}

void NcclCommunicator::abort() {
  if (comm_ == nullptr) return;
  DTRAIN_NCCL_REPORT(ncclCommAbort(comm_));
  comm_ = nullptr;
  failed_ = true;
}

void NcclCommunicator::fail_and_abort() {
  failed_ = true;
  abort();
}

void NcclCommunicator::wait_until_complete(const std::string& operation, double timeout_s,
                                           const std::string& failure_hint) {
  CompletionHooks hooks;
  hooks.poll = [&] {
    ncclResult_t state = ncclSuccess;
    const ncclResult_t queried = ncclCommGetAsyncError(comm_, &state);
    if (queried != ncclSuccess) state = queried;
    if (state == ncclSuccess) return CompletionState{CompletionState::kDone, ""};
    if (state == ncclInProgress) return CompletionState{CompletionState::kInProgress, ""};
    return CompletionState{CompletionState::kFailed, detail::nccl_error_string(state) + failure_hint};
  };
  hooks.abort = [this] { fail_and_abort(); };
  hooks.clock = monotonic_seconds;
  hooks.sleep = sleep_seconds;
  wait_for_completion(operation, rank_, size_, timeout_s, kPollPeriodS, hooks);
}

NcclCommunicator::~NcclCommunicator() {
  if (comm_ == nullptr) return;
  // Destructors cannot throw: failures are reported to stderr. NCCL makes the
  // communicator's device current for these calls itself.
  if (failed_) {
    // After an error, peers may never complete the collectives in flight; finalizing
    // would wait for them forever. Abort frees the communicator without waiting.
    DTRAIN_NCCL_REPORT(ncclCommAbort(comm_));
  } else {
    // Note [Nonblocking NCCL communicator]: the way down for a nonblocking communicator
    // is ncclCommFinalize (it completes the collectives already issued, and may return
    // ncclInProgress), a wait until it is done, then ncclCommDestroy. The wait has
    // comm.timeout_s: a finalize that does not finish aborts instead (the wait does so,
    // and clears comm_), so a rank never blocks in its destructor.
    const ncclResult_t finalize = ncclCommFinalize(comm_);
    if (finalize != ncclSuccess && finalize != ncclInProgress) {
      DTRAIN_NCCL_REPORT(finalize);
      fail_and_abort();
      return;
    }
    try {
      wait_until_complete("NCCL finalize", timeout_s_, "");
    } catch (const std::exception& e) {
      std::fprintf(stderr, "dtrain: %s\n", e.what());
      return;  // aborted by the wait
    }
    DTRAIN_NCCL_REPORT(ncclCommDestroy(comm_));
  }
  comm_ = nullptr;
}

void NcclCommunicator::check_usable(const char* collective) const {
  if (failed_) {
    throw CommError(std::string("NCCL ") + collective + " on rank " + std::to_string(rank_) +
                    ": the communicator failed earlier (see the first error); it cannot be used again");
  }
}

void NcclCommunicator::check_async_error() {
  ncclResult_t async = ncclSuccess;
  try {
    DTRAIN_NCCL_CHECK(ncclCommGetAsyncError(comm_, &async), rank_);
  } catch (...) {
    fail_and_abort();
    throw;
  }
  // ncclInProgress: an operation still being issued, which launch() never leaves
  // behind; not an error.
  if (async != ncclSuccess && async != ncclInProgress) {
    // Note [Abort before unwinding]: the collectives in flight will never complete, so
    // the communicator is aborted before the error unwinds past anything that would
    // wait for them.
    const std::string error = detail::nccl_error_string(async);
    fail_and_abort();
    throw CommError("NCCL reported an asynchronous error on rank " + std::to_string(rank_) + ": " + error +
                    ". Another rank may have failed or left the job; its own message names the cause");
  }
}

template <class Enqueue>
std::unique_ptr<Work> NcclCommunicator::launch(const char* collective, bool host_blocking,
                                               Enqueue&& enqueue) {
  check_usable(collective);
  DeviceGuard guard(device_);
  try {
    auto work = std::make_unique<NcclWork>(*this, host_blocking);
    // Note [NCCL stream ordering]: see the class comment.
    DTRAIN_CUDA_CHECK(cudaEventRecord(ready_.get(), compute_));
    DTRAIN_CUDA_CHECK(cudaStreamWaitEvent(stream_.get(), ready_.get(), 0));
    enqueue();
    // Note [Nonblocking NCCL communicator]: the kernel is on the stream only once NCCL
    // says the call is complete; the completion event must be recorded after it. No
    // limit of its own: the watchdog times issuing (Note [Collective watchdog]).
    wait_until_complete(std::string("NCCL ") + collective, 0.0, "");
    DTRAIN_CUDA_CHECK(cudaEventRecord(work->event(), stream_.get()));
    return work;
  } catch (...) {
    // A half-issued collective leaves this rank out of step with the others.
    fail_and_abort();
    throw;
  }
}

std::unique_ptr<Work> NcclCommunicator::all_reduce(void* buf, size_t count, DataType type,
                                                   ReduceOp op) {
  return launch("all_reduce", false, [&] {
    DTRAIN_NCCL_ISSUE(ncclAllReduce(buf, buf, count, to_nccl(type), to_nccl(op), comm_, stream_.get()),
                      rank_);
  });
}

std::unique_ptr<Work> NcclCommunicator::reduce_scatter(const void* send, void* recv,
                                                       size_t recv_count, DataType type,
                                                       ReduceOp op) {
  return launch("reduce_scatter", false, [&] {
    DTRAIN_NCCL_ISSUE(ncclReduceScatter(send, recv, recv_count, to_nccl(type), to_nccl(op), comm_,
                                        stream_.get()),
                      rank_);
  });
}

std::unique_ptr<Work> NcclCommunicator::all_gather(const void* send, void* recv, size_t send_count,
                                                   DataType type) {
  return launch("all_gather", false, [&] {
    DTRAIN_NCCL_ISSUE(ncclAllGather(send, recv, send_count, to_nccl(type), comm_, stream_.get()),
                      rank_);
  });
}

std::unique_ptr<Work> NcclCommunicator::broadcast(void* buf, size_t count, DataType type,
                                                  int root) {
  DTRAIN_ASSERT(root >= 0 && root < size_, "broadcast root " << root << " outside [0, " << size_ << ")");
  return launch("broadcast", false, [&] {
    DTRAIN_NCCL_ISSUE(ncclBroadcast(buf, buf, count, to_nccl(type), root, comm_, stream_.get()), rank_);
  });
}

std::unique_ptr<Work> NcclCommunicator::reduce_scatter_v(void* buf, std::span<const size_t> counts,
                                                         DataType type, ReduceOp op) {
  checked_total(counts, "reduce_scatter_v");
  return launch("reduce_scatter_v", false, [&] {
    issue_grouped_per_block(buf, counts, type, rank_, [&](char* block, size_t count, int owner) {
      // In place at the owner; the other ranks' copies of the block are only read.
      DTRAIN_NCCL_ISSUE(ncclReduce(block, block, count, to_nccl(type), to_nccl(op), owner, comm_, stream_.get()),
                        rank_);
    });
  });
}

std::unique_ptr<Work> NcclCommunicator::all_gather_v(void* buf, std::span<const size_t> counts, DataType type) {
  checked_total(counts, "all_gather_v");
  return launch("all_gather_v", false, [&] {
    issue_grouped_per_block(buf, counts, type, rank_, [&](char* block, size_t count, int owner) {
      DTRAIN_NCCL_ISSUE(ncclBroadcast(block, block, count, to_nccl(type), owner, comm_, stream_.get()), rank_);
    });
  });
}

std::unique_ptr<Work> NcclCommunicator::barrier() {
  // NCCL has no barrier: a one-element all-reduce completes on a rank only once every
  // rank has issued it. Its Work blocks the host in wait() (see the class comment).
  float* scratch = barrier_scratch_.as<float>();
  return launch("barrier", true, [&] {
    DTRAIN_NCCL_ISSUE(ncclAllReduce(scratch, scratch, 1, ncclFloat32, ncclSum, comm_, stream_.get()),
                      rank_);
  });
}

std::unique_ptr<Communicator> make_nccl_communicator(Communicator& bootstrap, Context& ctx, double timeout_s) {
  return std::make_unique<NcclCommunicator>(bootstrap, ctx, timeout_s);
}

}  // namespace dtrain
