// The asynchronous CPU device (device.kind: cpu-async): the CPU op set behind a work
// queue, so the CPU can stand in for a GPU when testing the code above the op set.
// Each op is queued on a worker thread that runs behind the host; "device" memory is
// freed in the order of the queued work and poisoned then (0xff bytes: NaN floats);
// errors of queued ops surface at the next synchronization; workspace is taken when
// an op is queued, so running out of memory is an error of the call; host transfer
// memory and the Uploader follow CUDA's rules (transfer_memory.h, async_uploader.h).
// A missing synchronization, a host read of device memory while work is queued, or a
// transfer buffer reused too early then changes the numbers or fails here, on any
// machine, as it would on a GPU. The numbers are otherwise the CPU backend's, bit for
// bit: the same functions run, in the same order.
//
// Less strict than a GPU: freed memory comes back only once the work queued before
// its release has run, whereas the CUDA caching allocator hands it out at once (safe
// on one stream, not for a side stream's write into a new buffer); and the host can
// read device memory directly once the work is done, where a GPU's would fault.
//
// Made by Context::make_cpu_async (kernels/context.h).
#pragma once

#include <chrono>
#include <future>

#include "kernels/context.h"

namespace dtrain {

// How long a queue's worker waits before each task, on average (work_queue.h): long
// enough that the host runs ahead.
inline constexpr std::chrono::microseconds kCpuAsyncLag{100};

// Holds a cpu-async device while it lives: the work queued after it is made, on the
// compute queue and every Uploader's, waits until it is destroyed. Puts the host ahead
// of the device by a known amount, for tests and debugging. Throws Error for a context
// of another kind.
class CpuAsyncHold {
 public:
  explicit CpuAsyncHold(Context& ctx);
  ~CpuAsyncHold();
  CpuAsyncHold(const CpuAsyncHold&) = delete;
  CpuAsyncHold& operator=(const CpuAsyncHold&) = delete;

 private:
  std::promise<void> gate_;
};

}  // namespace dtrain
