// A SIMT emulator: runs a CUDA kernel's source on the CPU, each CUDA thread as a fiber,
// so that CI executes kernels written for the device (a .cuh that keeps to the names
// defined here) and checks them against the CPU oracle without a GPU.
//
// What it provides: threadIdx, blockIdx, blockDim, gridDim; __syncthreads() and
// __syncwarp(); __shfl_sync, __shfl_xor_sync and __shfl_down_sync over the full warp;
// atomicMin on unsigned long long; __fadd_rn, __fsub_rn, __fmul_rn, __fdiv_rn and
// __fsqrt_rn; __global__, __device__, __forceinline__, __launch_bounds__ and INFINITY;
// expf, logf, log, sqrt and fmaxf come from <cmath>. Shared memory: a kernel's
// __shared__ variables become function statics, one copy for all threads, which is what
// a block's shared memory is here, since the blocks run one at a time on one OS thread
// (and, as on a GPU, a block must not rely on what the one before it left there);
// dynamic shared memory a kernel reaches through a function the includer defines from
// block_shared_memory() (see test_flash_attention_emulated.cpp).
//
// How it runs: the blocks of a grid one after another; the threads of a block as
// fibers (ucontext) on this one OS thread, switched only inside __syncthreads and the
// shuffles, so a run is deterministic and needs no locks. A barrier that can never
// complete (a thread that skips a __syncthreads its block reaches, or a lane that
// skips a shuffle its warp makes: undefined on a GPU, where it may hang or compute
// garbage) fails the launch with an error that names the block, instead of hanging.
// A shuffle with a mask other than all 32 lanes aborts the test binary with a message
// (no exception can leave a fiber).
//
// What it cannot show: timing, memory coalescing, races between threads that a real
// GPU could interleave differently (every thread here runs until it next synchronises),
// and the device's own expf and logf (a few ulps apart from the host's).
#pragma once

#include <ucontext.h>

// AddressSanitizer must be told when the stack changes under it (the sanitized unit
// test build, tests/sanitize/), else it takes the fibers' stacks for overflows.
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define DTRAIN_SIMT_ASAN 1
#else
#define DTRAIN_SIMT_ASAN 0
#endif

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace dtrain::simt {

struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
};

// The state every fiber of the running block sees.
struct Barrier {
  int expected = 0, arrived = 0;
  uint64_t generation = 0;
};

struct Fiber {
  ucontext_t context{};
  std::unique_ptr<char[]> stack;  // not value-initialised: pages are touched only as used
  size_t stack_bytes = 0;
  Dim3 thread_idx;
  bool done = false;
};

struct Warp {
  Barrier barrier;
  unsigned char slots[32][8] = {};
};

struct BlockState {
  Dim3 block_idx, block_dim, grid_dim;
  std::vector<float> shared;
  Barrier barrier;
  std::vector<Warp> warps;
  std::vector<Fiber> fibers;
  ucontext_t scheduler{};
  int current = -1;
  // The scheduler's stack, for AddressSanitizer's fiber switches.
  const void* scheduler_stack = nullptr;
  size_t scheduler_stack_size = 0;
  uint64_t events = 0;  // arrivals and completions: what tells progress from a deadlock
  std::function<void()> body;
};

inline BlockState*& running() {
  static BlockState* state = nullptr;
  return state;
}

inline Fiber& current_fiber() { return running()->fibers[static_cast<size_t>(running()->current)]; }

// Fiber switches, announced to AddressSanitizer where it runs: start before the switch
// (with where the stack goes; no save slot when the leaving fiber is done for good),
// finish on arrival.
inline void start_switch([[maybe_unused]] void** fake_stack, [[maybe_unused]] const void* bottom,
                         [[maybe_unused]] size_t size) {
#if DTRAIN_SIMT_ASAN
  __sanitizer_start_switch_fiber(fake_stack, bottom, size);
#endif
}
inline void finish_switch([[maybe_unused]] void* fake_stack, [[maybe_unused]] const void** bottom_old,
                          [[maybe_unused]] size_t* size_old) {
#if DTRAIN_SIMT_ASAN
  __sanitizer_finish_switch_fiber(fake_stack, bottom_old, size_old);
#endif
}

inline void yield() {
  BlockState& s = *running();
  void* fake_stack = nullptr;
  start_switch(&fake_stack, s.scheduler_stack, s.scheduler_stack_size);
  swapcontext(&current_fiber().context, &s.scheduler);
  finish_switch(fake_stack, nullptr, nullptr);
}

inline void wait(Barrier& b) {
  BlockState& s = *running();
  const uint64_t generation = b.generation;
  ++s.events;
  if (++b.arrived == b.expected) {
    b.arrived = 0;
    ++b.generation;
    return;
  }
  while (b.generation == generation) yield();
}

inline void syncthreads() { wait(running()->barrier); }

inline int lane_of_current() { return static_cast<int>(current_fiber().thread_idx.x % 32); }
inline Warp& warp_of_current() { return running()->warps[current_fiber().thread_idx.x / 32]; }

// Every lane writes its value, the warp meets, each lane reads its source's, the warp
// meets again (so that no slot is overwritten before every lane has read it).
template <class T>
T shuffle_from(unsigned mask, T value, int source_lane) {
  static_assert(sizeof(T) <= 8, "a shuffle moves at most 8 bytes");
  if (mask != 0xffffffffu) {
    // Inside a fiber no exception can unwind to the launch: say why, and stop the test binary.
    std::fprintf(stderr, "simt emulator: shuffles take the full warp mask only (got %#x)\n", mask);
    std::abort();
  }
  Warp& w = warp_of_current();
  std::memcpy(w.slots[lane_of_current()], &value, sizeof(T));
  wait(w.barrier);
  T got;
  std::memcpy(&got, w.slots[source_lane & 31], sizeof(T));
  wait(w.barrier);
  return got;
}

// __shfl_down_sync: lane + delta's value, or the lane's own where that is past lane 31.
template <class T>
T shuffle_down(unsigned mask, T value, int delta) {
  const int source = lane_of_current() + delta;
  return shuffle_from(mask, value, source < 32 ? source : lane_of_current());
}

inline void syncwarp() { wait(warp_of_current().barrier); }

// Rounded as written, never fused into an FMA (the host compiler could contract a
// product and a sum where the device's intrinsics forbid it).
inline float fmul_rn(float a, float b) {
  volatile float product = a * b;
  return product;
}
inline float fsub_rn(float a, float b) {
  volatile float difference = a - b;
  return difference;
}
inline float fadd_rn(float a, float b) {
  volatile float sum = a + b;
  return sum;
}
inline float fdiv_rn(float a, float b) {
  volatile float quotient = a / b;
  return quotient;
}
inline float fsqrt_rn(float a) { return std::sqrt(a); }  // IEEE: correctly rounded, as the intrinsic

inline void fiber_entry() {
  BlockState& s = *running();
  finish_switch(nullptr, &s.scheduler_stack, &s.scheduler_stack_size);
  s.body();
  s.fibers[static_cast<size_t>(s.current)].done = true;
  ++s.events;
  start_switch(nullptr, s.scheduler_stack, s.scheduler_stack_size);  // this stack is done
  swapcontext(&s.fibers[static_cast<size_t>(s.current)].context, &s.scheduler);
}

// The context switches live in functions of their own: getcontext and swapcontext
// return twice, as setjmp does, and the caller's locals must not be in their frame.
[[gnu::noinline]] inline void prepare(Fiber& f, unsigned thread) {
  f.done = false;
  f.thread_idx = {thread, 0, 0};
  getcontext(&f.context);
  f.context.uc_stack.ss_sp = f.stack.get();
  f.context.uc_stack.ss_size = f.stack_bytes;
  f.context.uc_link = nullptr;
  makecontext(&f.context, fiber_entry, 0);
}
[[gnu::noinline]] inline void resume(BlockState& s, unsigned thread) {
  s.current = static_cast<int>(thread);
  Fiber& f = s.fibers[thread];
  void* fake_stack = nullptr;
  start_switch(&fake_stack, f.stack.get(), f.stack_bytes);
  swapcontext(&s.scheduler, &f.context);
  finish_switch(fake_stack, nullptr, nullptr);
}

// The calling block's dynamic shared memory (the launch's shared_bytes, NaN-filled at
// the start of each block, so a kernel that reads what it never wrote shows it).
inline float* block_shared_memory() { return running()->shared.data(); }

// Runs kernel(args...) over grid x block with `shared_bytes` of dynamic shared memory.
// Throws std::runtime_error on a barrier that cannot complete.
template <class Kernel, class... Args>
void launch(Dim3 grid, Dim3 block, size_t shared_bytes, Kernel kernel, Args... args) {
  if (block.y != 1 || block.z != 1 || block.x % 32 != 0) {
    throw std::logic_error("simt emulator: blocks are one-dimensional whole warps");
  }
  constexpr size_t kStackBytes = 256 * 1024;
  BlockState s;
  s.block_dim = block;
  s.grid_dim = grid;
  s.fibers.resize(block.x);
  for (Fiber& f : s.fibers) {
    f.stack.reset(new char[kStackBytes]);
    f.stack_bytes = kStackBytes;
  }
  s.body = [&] { kernel(args...); };
  running() = &s;
  struct Reset {
    ~Reset() { running() = nullptr; }
  } reset;
  for (unsigned bz = 0; bz < grid.z; ++bz) {
    for (unsigned by = 0; by < grid.y; ++by) {
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        s.block_idx = {bx, by, bz};
        s.shared.assign((shared_bytes + sizeof(float) - 1) / sizeof(float), std::nanf(""));
        // A GPU's dynamic shared memory is at least 16-byte aligned, and kernels read it
        // 16 bytes at a time (Note [Own attention's shared rows]); malloc's is too.
        if (!s.shared.empty() && reinterpret_cast<std::uintptr_t>(s.shared.data()) % 16 != 0) {
          throw std::runtime_error("simt: the block's shared memory is not 16-byte aligned");
        }
        s.barrier = Barrier{static_cast<int>(block.x)};
        s.warps.assign(block.x / 32, Warp{});
        for (Warp& w : s.warps) w.barrier.expected = 32;
        for (unsigned t = 0; t < block.x; ++t) prepare(s.fibers[t], t);
        for (;;) {
          bool all_done = true;
          const uint64_t before = s.events;
          for (unsigned t = 0; t < block.x; ++t) {
            if (s.fibers[t].done) continue;
            all_done = false;
            resume(s, t);
          }
          if (all_done) break;
          if (s.events == before) {
            throw std::runtime_error("simt emulator: block (" + std::to_string(bx) + ", " + std::to_string(by) +
                                     ", " + std::to_string(bz) +
                                     ") is stuck: a thread skipped a __syncthreads or a lane skipped a shuffle "
                                     "that the rest of its block or warp reached");
          }
        }
      }
    }
  }
}

}  // namespace dtrain::simt

// The CUDA names a kernel source uses, for the host compiler.
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define threadIdx (::dtrain::simt::current_fiber().thread_idx)
#define blockIdx (::dtrain::simt::running()->block_idx)
#define blockDim (::dtrain::simt::running()->block_dim)
#define gridDim (::dtrain::simt::running()->grid_dim)
#define __launch_bounds__(...)
#define __shared__ static
#define __syncthreads() ::dtrain::simt::syncthreads()
#define __syncwarp(...) ::dtrain::simt::syncwarp()
#define __fmul_rn(a, b) ::dtrain::simt::fmul_rn((a), (b))
#define __fsub_rn(a, b) ::dtrain::simt::fsub_rn((a), (b))
#define __fadd_rn(a, b) ::dtrain::simt::fadd_rn((a), (b))
#define __fdiv_rn(a, b) ::dtrain::simt::fdiv_rn((a), (b))
#define __fsqrt_rn(a) ::dtrain::simt::fsqrt_rn(a)
#define __shfl_down_sync(mask, value, delta) ::dtrain::simt::shuffle_down((mask), (value), (delta))
#define __shfl_sync(mask, value, lane) ::dtrain::simt::shuffle_from((mask), (value), (lane))
#define __shfl_xor_sync(mask, value, lane_mask) \
  ::dtrain::simt::shuffle_from((mask), (value), ::dtrain::simt::lane_of_current() ^ (lane_mask))

// One thread at a time runs, so the read-modify-write needs no atomic instruction.
inline unsigned long long atomicMin(unsigned long long* address, unsigned long long value) {
  const unsigned long long old = *address;
  if (value < old) *address = value;
  return old;
}
