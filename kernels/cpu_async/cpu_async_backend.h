// The asynchronous CPU device (device.kind: cpu-async): the CPU op set behind a work
// queue, so the CPU can stand in for a GPU when testing the code above the op set.
// Each op is queued on a worker thread that runs behind the host; "device" memory is
// freed in the order of the queued work (as the CUDA caching allocator reuses it),
// and poisoned with NaN bytes then; errors of queued ops surface at the next
// synchronization; host transfer memory and the Uploader follow CUDA's rules
// (transfer_memory.h, async_uploader.h). A missing synchronization, a host read of
// device memory, or a transfer buffer reused too early then changes the numbers or
// fails here, on any machine, as it would on a GPU. The numbers are otherwise the
// CPU backend's, bit for bit: the same functions run, in the same order.
//
// Made by Context::make_cpu_async (kernels/context.h).
#pragma once

#include <chrono>

namespace dtrain {

// How long the worker waits before each op: long enough that the host runs ahead.
inline constexpr std::chrono::microseconds kCpuAsyncLag{100};

}  // namespace dtrain
