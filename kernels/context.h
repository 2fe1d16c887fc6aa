// The device context every op runs in: which device, its allocator, the op backend,
// the CPU thread budget, and a growing workspace for ops that need scratch memory.
// One Context per rank; it is not shared between threads.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "kernels/memory.h"

namespace dtrain {

class OpsBackend;

// CpuAsync: the CPU op set run as a device, behind a queue that lags the host
// (kernels/cpu_async/cpu_async_backend.h), to test device code paths without a GPU.
enum class DeviceKind { Cpu, CpuAsync, Cuda };

// The CUDA backend's fused paths that replace a chain of kernels in the GPT's step,
// each on by default; off, the op runs the chain it replaced (the path measured before
// it). They change no result beyond each op's stated bound, so they are not settings a
// run chooses: bench/fusion_ablation.cpp switches them off one at a time to measure
// what each buys on a GPU, and the GPU tests check that off means the chain.
struct CudaFusions {
  bool gelu_epilogue = true;        // bf16 c_fc: GELU in the GEMM (Note [cuBLASLt GELU])
  bool gelu_backward = true;        // bf16 c_proj's dx through GELU (Note [Fused GELU backward])
  bool bias_gradient = true;        // bf16 db in dW's GEMM (Note [Fused bias gradient])
  bool layernorm_backward = true;   // dx and the parameter partials in one kernel
                                    // (Note [Fused LayerNorm backward])
  bool optimizer_spans = true;      // all decay spans in one launch (Note [Optimizers over spans])
};

struct CudaOptions {
  int device = 0;                 // index among the devices this process sees
  bool tf32 = false;              // allow TF32 tensor-core math in GEMM and convolution
  size_t memory_limit_bytes = 0;  // 0: the device's memory
  int num_threads = 1;            // host threads for the few host-side loops
  // Fused attention: cuDNN's where it takes the shape (Note [Fused attention],
  // kernels/cuda/fused_attention.h), else dtrain's own (Note [Own fused attention],
  // kernels/cuda/flash_attention.h); false: always the unfused path.
  bool fused_attention = true;
  CudaFusions fusions;
  // Time cuBLASLt's candidate algorithms for each bf16 GEMM shape on its first call and
  // keep the fastest (Note [GEMM autotuning], kernels/cuda/linear_lt.h); off: the
  // heuristic's first choice, as cuBLAS takes. Off by default: runs with it are not
  // repeated bit for bit (precision.gemm_autotune turns it on).
  bool gemm_autotune = false;
  // false: where a library's faster algorithm is not deterministic, take it: cuDNN's
  // attention backward then sums dQ by atomics (Note [Fused attention]), and each
  // convolution takes cuDNN's fastest algorithm (Note [cuDNN algorithm choice]). Runs
  // then repeat each other only to the last bits (precision.deterministic: false).
  bool deterministic = true;
};

// Number of CUDA devices this process sees (CUDA_VISIBLE_DEVICES applies); 0 in a
// build without CUDA, and where there is no GPU or no NVIDIA driver at all. A GPU
// that is there but unusable (a driver older than this build's CUDA runtime, a stub
// libcuda, ...) throws DeviceError saying what to do (Note [No GPU versus a broken
// GPU], kernels/cuda_device_count.h), so device.kind: auto never falls back to the
// CPU in silence.
int cuda_device_count();
// The UUID of each of those devices, in this process's order ("GPU-" and 32 hex
// digits, as nvidia-smi -L writes them): what tells ranks whether they see the same
// GPU under different indices. Empty where cuda_device_count() is 0; throws where it
// throws.
std::vector<std::string> cuda_device_ids();

class Context {
 public:
  // CPU context: ops use `num_threads` threads (BLAS and OpenMP both).
  static std::unique_ptr<Context> make_cpu(int num_threads, size_t memory_limit_bytes = 0);
  // The CPU as an asynchronous device (DeviceKind::CpuAsync): the same ops and numbers,
  // queued on a worker thread, with a GPU's rules for memory, transfers and errors.
  static std::unique_ptr<Context> make_cpu_async(int num_threads, size_t memory_limit_bytes = 0);
  // CUDA context on one device: its own stream, cuBLAS and cuDNN handles, and caching
  // allocator. Throws DeviceError naming the device when it cannot be used, and in
  // builds without CUDA (kernels/cuda_unavailable.cpp).
  static std::unique_ptr<Context> make_cuda(const CudaOptions& options);

  // A context on a process-wide backend (the CPU's).
  Context(DeviceKind kind, std::unique_ptr<Allocator> allocator, OpsBackend& backend,
          int num_threads);
  // A context that owns its backend (a device's stream and library handles).
  Context(DeviceKind kind, std::unique_ptr<Allocator> allocator,
          std::unique_ptr<OpsBackend> backend, int num_threads);
  ~Context();

  DeviceKind device_kind() const { return kind_; }
  std::string device_name() const { return allocator_->device_name(); }
  Allocator& allocator() { return *allocator_; }
  OpsBackend& backend() { return *backend_; }
  int num_threads() const { return num_threads_; }

  // Scratch memory of at least `bytes`, valid until the next call; accounted as
  // Workspace. Ops call it; nothing else holds on to the pointer.
  void* workspace(size_t bytes);
  // Frees the workspace (after an out-of-memory probe); the next op allocates anew.
  // Waits for the device first: queued work may still use it.
  void release_workspace();
  // Waits until the work queued on this context's device has finished.
  void synchronize();

 private:
  // Declaration order is destruction order in reverse: buffers, then the backend's
  // handles, then the allocator that owns the memory.
  DeviceKind kind_;
  std::unique_ptr<Allocator> allocator_;
  std::unique_ptr<OpsBackend> owned_backend_;
  OpsBackend* backend_;
  int num_threads_;
  Buffer workspace_;
};

}  // namespace dtrain
