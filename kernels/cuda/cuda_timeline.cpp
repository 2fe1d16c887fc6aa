// Note [Device timeline] (kernels/device_timeline.h) on a GPU: each mark is a CUDA
// event recorded on the compute stream; its `reached` is a reference event's host time
// plus the GPU's elapsed time from that event to it. The reference is recorded when
// the stream is idle (at construction, after a synchronisation, and at each collect(),
// which follows one), so the device passes it as soon as it is recorded. Events are
// pooled: a step records a few.
#include <cuda_runtime.h>

#include <memory>
#include <vector>

#include "kernels/check.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"

namespace dtrain {

namespace {

class CudaTimeline : public DeviceTimeline {
 public:
  explicit CudaTimeline(cudaStream_t stream) : stream_(stream) {
    DTRAIN_CUDA_CHECK(cudaStreamSynchronize(stream_));
    reference_ = take();
    rebase();
  }
  ~CudaTimeline() override {
    // Destructors must not throw: the events are released whatever the device's state.
    for (const Pending& p : pending_) cudaEventDestroy(p.event);
    for (cudaEvent_t e : pool_) cudaEventDestroy(e);
    cudaEventDestroy(reference_);
  }
  CudaTimeline(const CudaTimeline&) = delete;
  CudaTimeline& operator=(const CudaTimeline&) = delete;

  void mark(const char* name, int64_t step) override {
    const cudaEvent_t e = take();
    DTRAIN_CUDA_CHECK(cudaEventRecord(e, stream_));
    pending_.push_back({name, step, Clock::now(), e});
  }

  std::vector<Mark> collect() override {
    std::vector<Mark> marks;
    for (const Pending& p : pending_) {
      float ms = 0.0f;
      const cudaError_t status = cudaEventElapsedTime(&ms, reference_, p.event);
      DTRAIN_ASSERT(status == cudaSuccess, "device timeline: mark '" << p.name << "' not yet reached ("
                                               << cudaGetErrorString(status)
                                               << "): collect() must follow a synchronisation");
      const auto since = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double, std::milli>(ms));
      marks.push_back({p.name, p.step, p.queued, reference_time_ + since});
      pool_.push_back(p.event);
    }
    pending_.clear();
    rebase();
    return marks;
  }

 private:
  struct Pending {
    const char* name;
    int64_t step;
    Clock::time_point queued;
    cudaEvent_t event;
  };

  cudaEvent_t take() {
    if (!pool_.empty()) {
      const cudaEvent_t e = pool_.back();
      pool_.pop_back();
      return e;
    }
    cudaEvent_t e = nullptr;
    DTRAIN_CUDA_CHECK(cudaEventCreate(&e));  // with timing, unlike the ordering events
    return e;
  }
  // The stream is idle: the device reaches the reference a launch latency after now.
  void rebase() {
    DTRAIN_CUDA_CHECK(cudaEventRecord(reference_, stream_));
    reference_time_ = Clock::now();
  }

  cudaStream_t stream_;
  cudaEvent_t reference_ = nullptr;
  Clock::time_point reference_time_;
  std::vector<Pending> pending_;
  std::vector<cudaEvent_t> pool_;
};

}  // namespace

std::unique_ptr<DeviceTimeline> CudaBackend::make_timeline(Context& /*ctx*/) {
  return std::make_unique<CudaTimeline>(stream());
}

}  // namespace dtrain
