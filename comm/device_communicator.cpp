#include "comm/device_communicator.h"

#include <mpi.h>

#include <string>
#include <utility>

#include "comm/staging_communicator.h"
#include "kernels/errors.h"

// Note [CUDA-aware MPI query]: Open MPI declares MPIX_Query_cuda_support in mpi-ext.h
// whenever it was built with its CUDA extension, and defines MPIX_CUDA_AWARE_SUPPORT
// to what the build-time library could do. The run-time query is what counts: the
// library loaded at run time (for instance a CUDA-enabled Open MPI on the GPU machine)
// may differ from the headers of the build. Other MPI libraries have no such query,
// and are treated as not CUDA-aware (staging is always correct, only slower).
#if __has_include(<mpi-ext.h>)
#include <mpi-ext.h>
#endif

namespace dtrain {
namespace {

// Collectives on the buffers of a context whose memory the host communicator can
// address directly (host memory, or device memory under CUDA-aware MPI). MPI reads
// the buffers as soon as a collective is issued, without knowing the device's queue,
// so each collective first waits for the work queued on the context (a no-op on the
// CPU). The results are in place when the MPI request completes. Device buffers go
// through MPI's blocking collectives (MpiCommunicator::*_blocking): CUDA-aware Open MPI
// handles device memory in those, not in its non-blocking ones.
// A bf16 SUM's op runs on the host (comm/mpi_communicator.h): CUDA-aware Open MPI
// stages the device buffers of a reduction through host memory before it applies one.
class DirectDeviceCommunicator final : public Communicator {
 public:
  DirectDeviceCommunicator(MpiCommunicator& host, Context& ctx, std::string name, bool blocking)
      : host_(host), ctx_(ctx), name_(std::move(name)), blocking_(blocking) {}

  int rank() const override { return host_.rank(); }
  int size() const override { return host_.size(); }
  std::string backend_name() const override { return name_; }
  std::unique_ptr<Work> all_reduce(void* buf, size_t count, DataType type, ReduceOp op) override {
    ctx_.synchronize();
    if (!blocking_) return host_.all_reduce(buf, count, type, op);
    host_.all_reduce_blocking(buf, count, type, op);
    return std::make_unique<CompletedWork>();
  }
  std::unique_ptr<Work> reduce_scatter(const void* send, void* recv, size_t recv_count,
                                       DataType type, ReduceOp op) override {
    ctx_.synchronize();
    if (!blocking_) return host_.reduce_scatter(send, recv, recv_count, type, op);
    host_.reduce_scatter_blocking(send, recv, recv_count, type, op);
    return std::make_unique<CompletedWork>();
  }
  std::unique_ptr<Work> all_gather(const void* send, void* recv, size_t send_count,
                                   DataType type) override {
    ctx_.synchronize();
    if (!blocking_) return host_.all_gather(send, recv, send_count, type);
    host_.all_gather_blocking(send, recv, send_count, type);
    return std::make_unique<CompletedWork>();
  }
  std::unique_ptr<Work> broadcast(void* buf, size_t count, DataType type, int root) override {
    ctx_.synchronize();
    if (!blocking_) return host_.broadcast(buf, count, type, root);
    host_.broadcast_blocking(buf, count, type, root);
    return std::make_unique<CompletedWork>();
  }
  // MPI's own v-forms, as for the other collectives: the non-blocking ones for host
  // buffers, the blocking ones (which never move data on the host) for device buffers.
  std::unique_ptr<Work> reduce_scatter_v(void* buf, std::span<const size_t> counts, DataType type,
                                         ReduceOp op) override {
    ctx_.synchronize();
    if (!blocking_) return host_.reduce_scatter_v(buf, counts, type, op);
    host_.reduce_scatter_v_blocking(buf, counts, type, op);
    return std::make_unique<CompletedWork>();
  }
  std::unique_ptr<Work> all_gather_v(void* buf, std::span<const size_t> counts, DataType type) override {
    ctx_.synchronize();
    if (!blocking_) return host_.all_gather_v(buf, counts, type);
    host_.all_gather_v_blocking(buf, counts, type);
    return std::make_unique<CompletedWork>();
  }
  std::unique_ptr<Work> barrier() override {
    ctx_.synchronize();
    return host_.barrier();
  }

 private:
  MpiCommunicator& host_;
  Context& ctx_;
  std::string name_;
  bool blocking_;  // device buffers: MPI's blocking collectives only
};

}  // namespace

bool mpi_accepts_cuda_buffers() {
  // See Note [CUDA-aware MPI query].
#if defined(MPIX_CUDA_AWARE_SUPPORT)
  return MPIX_Query_cuda_support() == 1;
#else
  return false;
#endif
}

std::unique_ptr<Communicator> make_mpi_device_communicator(MpiCommunicator& mpi, Context& ctx,
                                                          bool cuda_aware_on_every_rank) {
  switch (ctx.device_kind()) {
    case DeviceKind::Cpu:
      return std::make_unique<DirectDeviceCommunicator>(mpi, ctx, mpi.backend_name(), false);
    case DeviceKind::CpuAsync:  // stands in for a GPU without CUDA-aware MPI
      return std::make_unique<StagingCommunicator>(mpi, ctx);
    case DeviceKind::Cuda:
      if (cuda_aware_on_every_rank) {
        return std::make_unique<DirectDeviceCommunicator>(mpi, ctx, mpi.backend_name() + "+cuda-aware", true);
      }
      return std::make_unique<StagingCommunicator>(mpi, ctx);
  }
  throw CommError("make_mpi_device_communicator: unknown device kind");
}

}  // namespace dtrain
