// The CUDA Uploader (Note [Batch prefetch] in kernels/ops.h): host-to-device copies on
// a side stream, ordered against the compute stream with two events: ready_ (compute
// -> copy: the destinations' last reader, recorded by release()) and done_ (copy ->
// compute).
#include <cuda_runtime.h>

#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"

namespace dtrain {
namespace {

class CudaUploader final : public Uploader {
 public:
  explicit CudaUploader(cudaStream_t compute) : compute_(compute) {
    DTRAIN_CUDA_CHECK(cudaStreamCreateWithFlags(&side_, cudaStreamNonBlocking));
    DTRAIN_CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
    DTRAIN_CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
  }
  ~CudaUploader() override {
    DTRAIN_CUDA_REPORT(cudaStreamSynchronize(side_));
    DTRAIN_CUDA_REPORT(cudaEventDestroy(done_));
    DTRAIN_CUDA_REPORT(cudaEventDestroy(ready_));
    DTRAIN_CUDA_REPORT(cudaStreamDestroy(side_));
  }
  CudaUploader(const CudaUploader&) = delete;
  CudaUploader& operator=(const CudaUploader&) = delete;

  void release() override {
    DTRAIN_CUDA_CHECK(cudaEventRecord(ready_, compute_));
    released_ = true;
  }
  void upload(void* dst, const void* src, size_t bytes) override {
    if (bytes == 0) return;
    // dst may still be read by work queued on the compute stream: before the last
    // release(), or, without one, any work queued so far.
    if (!released_) DTRAIN_CUDA_CHECK(cudaEventRecord(ready_, compute_));
    DTRAIN_CUDA_CHECK(cudaStreamWaitEvent(side_, ready_, 0));
    DTRAIN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, side_));
    DTRAIN_CUDA_CHECK(cudaEventRecord(done_, side_));
    pending_ = true;
  }
  void make_visible() override {
    if (pending_) DTRAIN_CUDA_CHECK(cudaStreamWaitEvent(compute_, done_, 0));
    // The destinations are in use again from here: until the next release(), an upload
    // waits for everything queued.
    released_ = false;
  }
  void wait_source_free() override {
    if (pending_) DTRAIN_CUDA_CHECK(cudaEventSynchronize(done_));
  }

 private:
  cudaStream_t compute_;
  cudaStream_t side_ = nullptr;
  cudaEvent_t ready_ = nullptr;
  cudaEvent_t done_ = nullptr;
  bool pending_ = false;   // an upload was queued, so the events have been recorded
  bool released_ = false;  // ready_ marks the last reader of the destinations
};

}  // namespace

std::unique_ptr<Uploader> CudaBackend::make_uploader(Context&) {
  return std::make_unique<CudaUploader>(stream_.get());
}

}  // namespace dtrain
