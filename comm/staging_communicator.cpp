#include "comm/staging_communicator.h"

#include <utility>

#include "kernels/errors.h"
#include "kernels/ops.h"

namespace dtrain {
namespace {

// A collective whose output is a separate buffer stages it after the input, at an
// offset aligned for any element type.
constexpr size_t kRegionAlign = 64;

size_t align_region(size_t bytes) { return (bytes + kRegionAlign - 1) / kRegionAlign * kRegionAlign; }

char* at(const HostBuffer& b, size_t offset) { return b.as<char>() + offset; }

// The extents, in bytes, of a variable-count collective's buffer and of one rank's
// block in it.
struct BlockBytes {
  size_t total = 0;
  size_t own_offset = 0;
  size_t own = 0;
};

BlockBytes block_bytes(std::span<const size_t> counts, size_t total_count, int rank, DataType type) {
  const size_t element = data_type_size(type);
  return {total_count * element, block_offset(counts, rank) * element, counts[static_cast<size_t>(rank)] * element};
}

// Copies device input to the host and waits for it. The wait is what makes staging
// correct on an asynchronous device: the copy is queued after the compute that wrote
// the input, and the host collective may only read (or, for a broadcast, write) the
// staging buffer once every copy queued before it, including a previous collective's
// copy-back from the same pooled buffer, has run (Note [Staging buffer reuse],
// comm/host_buffer_pool.h).
void stage_in(Context& ctx, void* host, const void* device, size_t bytes) {
  if (bytes > 0) ops::copy_to_host(ctx, host, device, bytes);
  ctx.synchronize();
}

// Owns the staging buffer until the host collective has finished, then queues the copy
// back to the device and returns the buffer to the pool.
class StagingWork final : public Work {
 public:
  // `result` (`bytes` long, inside `staging`) is copied to `device_result` on finish.
  StagingWork(Context& ctx, HostBufferPool& pool, HostBuffer staging, std::unique_ptr<Work> host_work,
              const void* result, void* device_result, size_t bytes)
      : ctx_(ctx), pool_(pool), staging_(std::move(staging)), host_work_(std::move(host_work)),
        result_(result), device_result_(device_result), bytes_(bytes) {}

  void wait() override {
    if (finished_) return;
    check_not_failed();
    try {
      host_work_->wait();
    } catch (...) {
      failed_ = true;
      throw;
    }
    finish();
  }

  bool done() override {
    if (finished_) return true;
    check_not_failed();
    bool host_done = false;
    try {
      host_done = host_work_->done();
    } catch (...) {
      failed_ = true;
      throw;
    }
    if (!host_done) return false;
    // The interface promises that the buffers are released once done() says true, so
    // the result must be on its way to the device before we say so.
    finish();
    return true;
  }

 private:
  void check_not_failed() const {
    if (failed_) throw CommError("a staged collective that already failed was waited on again");
  }

  void finish() {
    if (bytes_ > 0) ops::copy_from_host(ctx_, device_result_, result_, bytes_);
    finished_ = true;
    pool_.release(std::move(staging_));
  }

  Context& ctx_;
  HostBufferPool& pool_;
  // Declared before host_work_ so it is destroyed after it: an abandoned host
  // collective completes in host_work_'s destructor while its buffer still exists.
  HostBuffer staging_;
  std::unique_ptr<Work> host_work_;
  const void* result_;
  void* device_result_;
  size_t bytes_;
  bool finished_ = false;
  bool failed_ = false;
};

}  // namespace

StagingCommunicator::StagingCommunicator(Communicator& host, Context& ctx)
    : host_(host), ctx_(ctx), pool_(ctx) {}

std::unique_ptr<Work> StagingCommunicator::all_reduce(void* buf, size_t count, DataType type,
                                                      ReduceOp op) {
  const size_t bytes = count * data_type_size(type);
  HostBuffer staging = pool_.acquire(bytes);
  void* host = staging.data();
  stage_in(ctx_, host, buf, bytes);
  auto host_work = host_.all_reduce(host, count, type, op);
  return std::make_unique<StagingWork>(ctx_, pool_, std::move(staging), std::move(host_work), host,
                                       buf, bytes);
}

std::unique_ptr<Work> StagingCommunicator::reduce_scatter(const void* send, void* recv,
                                                          size_t recv_count, DataType type,
                                                          ReduceOp op) {
  const size_t out_bytes = recv_count * data_type_size(type);
  const size_t in_bytes = out_bytes * static_cast<size_t>(size());
  const size_t out_offset = align_region(in_bytes);
  HostBuffer staging = pool_.acquire(out_offset + out_bytes);
  stage_in(ctx_, staging.data(), send, in_bytes);
  char* host_out = at(staging, out_offset);
  auto host_work = host_.reduce_scatter(staging.data(), host_out, recv_count, type, op);
  return std::make_unique<StagingWork>(ctx_, pool_, std::move(staging), std::move(host_work),
                                       host_out, recv, out_bytes);
}

std::unique_ptr<Work> StagingCommunicator::all_gather(const void* send, void* recv,
                                                      size_t send_count, DataType type) {
  const size_t in_bytes = send_count * data_type_size(type);
  const size_t out_bytes = in_bytes * static_cast<size_t>(size());
  const size_t out_offset = align_region(in_bytes);
  HostBuffer staging = pool_.acquire(out_offset + out_bytes);
  stage_in(ctx_, staging.data(), send, in_bytes);
  char* host_out = at(staging, out_offset);
  auto host_work = host_.all_gather(staging.data(), host_out, send_count, type);
  return std::make_unique<StagingWork>(ctx_, pool_, std::move(staging), std::move(host_work),
                                       host_out, recv, out_bytes);
}

std::unique_ptr<Work> StagingCommunicator::broadcast(void* buf, size_t count, DataType type,
                                                     int root) {
  const size_t bytes = count * data_type_size(type);
  const bool is_root = rank() == root;
  HostBuffer staging = pool_.acquire(bytes);
  void* host = staging.data();
  // Only the root's data travels; the others' staging buffer is overwritten. The root's
  // device buffer already holds the result, so it gets no copy back.
  stage_in(ctx_, host, buf, is_root ? bytes : 0);
  auto host_work = host_.broadcast(host, count, type, root);
  return std::make_unique<StagingWork>(ctx_, pool_, std::move(staging), std::move(host_work), host,
                                       buf, is_root ? 0 : bytes);
}

std::unique_ptr<Work> StagingCommunicator::reduce_scatter_v(void* buf, std::span<const size_t> counts,
                                                            DataType type, ReduceOp op) {
  const BlockBytes b = block_bytes(counts, checked_total(counts, "reduce_scatter_v"), rank(), type);
  HostBuffer staging = pool_.acquire(b.total);
  stage_in(ctx_, staging.data(), buf, b.total);
  char* host_block = at(staging, b.own_offset);
  auto host_work = host_.reduce_scatter_v(staging.data(), counts, type, op);
  return std::make_unique<StagingWork>(ctx_, pool_, std::move(staging), std::move(host_work), host_block,
                                       static_cast<char*>(buf) + b.own_offset, b.own);
}

std::unique_ptr<Work> StagingCommunicator::all_gather_v(void* buf, std::span<const size_t> counts,
                                                        DataType type) {
  const BlockBytes b = block_bytes(counts, checked_total(counts, "all_gather_v"), rank(), type);
  HostBuffer staging = pool_.acquire(b.total);
  stage_in(ctx_, at(staging, b.own_offset), static_cast<const char*>(buf) + b.own_offset, b.own);
  void* host = staging.data();
  auto host_work = host_.all_gather_v(host, counts, type);
  return std::make_unique<StagingWork>(ctx_, pool_, std::move(staging), std::move(host_work), host, buf,
                                       b.total);
}

std::unique_ptr<Work> StagingCommunicator::barrier() {
  // A barrier on a device communicator also covers the device work queued before it,
  // as the NCCL barrier does (its all-reduce is ordered after the compute stream).
  ctx_.synchronize();
  return host_.barrier();
}

}  // namespace dtrain
