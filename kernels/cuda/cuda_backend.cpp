#include "kernels/cuda/cuda_backend.h"

#include <sstream>

#include "kernels/context.h"
#include "kernels/cuda/conv2d_plan.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/errors.h"

namespace dtrain {

namespace cuda_detail {

void StreamDeleter::operator()(cudaStream_t s) const {
  DTRAIN_CUDA_REPORT(cudaStreamDestroy(s));
}
void CublasDeleter::operator()(cublasHandle_t h) const {
  DTRAIN_CUBLAS_REPORT(cublasDestroy(h));
}
void CudnnDeleter::operator()(cudnnHandle_t h) const {
  DTRAIN_CUDNN_REPORT(cudnnDestroy(h));
}
void PinnedDeleter::operator()(void* p) const { DTRAIN_CUDA_REPORT(cudaFreeHost(p)); }

}  // namespace cuda_detail

namespace {

// The cuBLAS workspace sizes NVIDIA recommends: Hopper and later use more for their
// larger GEMM kernels.
size_t cublas_workspace_bytes(int compute_major) {
  return compute_major >= 9 ? size_t{32} << 20 : size_t{4} << 20;
}

// Two bad-index records (labels, then tokens) of four words each: {position << 32 |
// value, bound, number of the launch that recorded, row length} (kernels/cuda/index_check.cuh).
constexpr int kRecordWords = 4;
constexpr size_t kLabelErrorBytes = 2 * kRecordWords * sizeof(unsigned long long);

CudaBackend& cuda_backend_of(Context& ctx, const char* what) {
  auto* backend = dynamic_cast<CudaBackend*>(&ctx.backend());
  if (ctx.device_kind() != DeviceKind::Cuda || backend == nullptr) {
    throw DeviceError(std::string(what) + ": the context on " + ctx.device_name() +
                      " is not a CUDA context; this path needs device.kind: cuda");
  }
  return *backend;
}

}  // namespace

cudaStream_t cuda_stream(Context& ctx) { return cuda_backend_of(ctx, "cuda_stream").stream(); }

int cuda_device(Context& ctx) { return cuda_backend_of(ctx, "cuda_device").device(); }

CudaBackend::CudaBackend(CudaCachingAllocator& allocator, const CudaOptions& options)
    : allocator_(allocator), device_(options.device), tf32_(options.tf32), fusions_(options.fusions) {
  const int device = options.device;
  const bool tf32 = options.tf32, fused_attention = options.fused_attention;
  int major = 0;
  DTRAIN_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count_, cudaDevAttrMultiProcessorCount, device));
  DTRAIN_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));

  cudaStream_t stream = nullptr;
  DTRAIN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  stream_.reset(stream);

  cublasHandle_t blas = nullptr;
  DTRAIN_CUBLAS_CHECK(cublasCreate(&blas));
  cublas_.reset(blas);
  DTRAIN_CUBLAS_CHECK(cublasSetStream(blas, stream));
  // Setting the stream resets the workspace to cuBLAS's own, so this comes after it.
  // A workspace from our allocator keeps cuBLAS from allocating behind its back.
  cublas_workspace_ = Buffer(allocator_, cublas_workspace_bytes(major), MemoryCategory::Workspace);
  DTRAIN_CUBLAS_CHECK(
      cublasSetWorkspace(blas, cublas_workspace_.data(), cublas_workspace_.bytes()));
  // cuBLASLt's GEMMs share it: they run on the same stream as cuBLAS's.
  linear_lt_ = std::make_unique<LinearLt>(cublas_workspace_.data(), cublas_workspace_.bytes(), &allocator_,
                                          options.gemm_autotune);
  // The default math mode computes SGEMM in full FP32 (as PyTorch's default matmul);
  // CUBLAS_PEDANTIC_MATH would also forbid what only environment variables can enable
  // (BF16x9 emulation), at a documented speed cost. With tf32 the user opted into
  // TF32 tensor cores. A GEMM with a bf16 C keeps any split-K reduction in fp32 (the
  // compute type) rather than bf16, so C is rounded once (Note [bf16 storage]); fp32
  // GEMMs have no narrower output type, and the flag changes nothing for them.
  const auto base_math = tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH;
  DTRAIN_CUBLAS_CHECK(cublasSetMathMode(
      blas, static_cast<cublasMath_t>(base_math | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)));

  cudnnHandle_t dnn = nullptr;
  DTRAIN_CUDNN_CHECK(cudnnCreate(&dnn));
  cudnn_.reset(dnn);
  DTRAIN_CUDNN_CHECK(cudnnSetStream(dnn, stream));
  fused_attention_ = std::make_unique<FusedAttention>(dnn, fused_attention, options.deterministic);
  flash_attention_ = std::make_unique<FlashAttention>(device, fused_attention);

  label_error_ = Buffer(allocator_, kLabelErrorBytes, MemoryCategory::Other);
  DTRAIN_CUDA_CHECK(cudaMemsetAsync(label_error_.data(), 0xff, kLabelErrorBytes, stream));
  void* host = nullptr;
  DTRAIN_CUDA_CHECK(cudaMallocHost(&host, kLabelErrorBytes));
  label_error_host_.reset(static_cast<unsigned long long*>(host));

  // A deterministic convolution may take up to a quarter of what this rank may use: the
  // allocator's limit where one is set, else the device (Note [cuDNN algorithm choice]).
  const MemoryCapacity memory = allocator_.capacity();
  conv_plans_ =
      std::make_unique<ConvPlanCache>((memory.limit != 0 ? memory.limit : memory.total) / 4, options.deterministic);
  DTRAIN_CUDA_CHECK(cudaStreamSynchronize(stream));
}

CudaBackend::~CudaBackend() {
  // Queued work may still use the handles and the buffers about to go back.
  DTRAIN_CUDA_REPORT(cudaStreamSynchronize(stream_.get()));
}

unsigned CudaBackend::blocks_for(int64_t n, int64_t items_per_block) const {
  const int64_t needed = (n + items_per_block - 1) / items_per_block;
  // A grid-stride loop needs only enough blocks to fill every SM a few times.
  const int64_t cap = static_cast<int64_t>(sm_count_) * 8;
  return static_cast<unsigned>(needed < 1 ? 1 : (needed < cap ? needed : cap));
}

void CudaBackend::copy_from_host(Context& /*ctx*/, void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  DTRAIN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_.get()));
}

void CudaBackend::copy_to_host(Context& /*ctx*/, void* dst, const void* src, size_t bytes) {
  if (bytes != 0) {
    DTRAIN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_.get()));
    DTRAIN_CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
    ++host_syncs_;
  }
  check_device_errors();
}

void CudaBackend::synchronize(Context& /*ctx*/) {
  DTRAIN_CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
  ++host_syncs_;
  check_device_errors();
}

void* CudaBackend::alloc_host(size_t bytes) {
  void* p = nullptr;
  const cudaError_t status = cudaMallocHost(&p, bytes);
  if (status == cudaErrorMemoryAllocation) {
    // Out of pinned host memory is out of memory to the batch planner too (it backs
    // off); clear the error, or the next launch check would blame an innocent kernel.
    (void)cudaGetLastError();
    throw OutOfMemoryError("cannot pin " + std::to_string(bytes) + " bytes of host memory for " +
                           allocator_.device_name() + " transfers (cudaMallocHost); use a smaller "
                           "train.micro_batch or eval.batch, or free host memory");
  }
  DTRAIN_CUDA_CHECK(status);
  return p;
}

void CudaBackend::free_host(void* p) {
  // Called from HostBuffer's destructor: report, never throw.
  DTRAIN_CUDA_REPORT(cudaFreeHost(p));
}

void CudaBackend::check_device_errors() {
  static_assert(kTokenRecord == kRecordWords, "the token record follows the label record");
  if (label_launches_ == 0 && token_launches_ == 0) return;
  const unsigned long long label_launches = label_launches_;
  const unsigned long long token_launches = token_launches_;
  unsigned long long* host = label_error_host_.get();
  DTRAIN_CUDA_CHECK(cudaMemcpyAsync(host, label_error_.data(), kLabelErrorBytes,
                                    cudaMemcpyDeviceToHost, stream_.get()));
  DTRAIN_CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
  label_launches_ = 0;
  token_launches_ = 0;
  const unsigned long long* labels = host;
  const unsigned long long* tokens = host + kTokenRecord;
  if (labels[0] == ~0ULL && tokens[0] == ~0ULL) return;
  unsigned long long record[kRecordWords];
  // A bad token comes first in a step (the embedding runs before the loss), and a
  // language model's labels are its tokens shifted, so its report is the useful one.
  const bool token_bad = tokens[0] != ~0ULL;
  for (int i = 0; i < kRecordWords; ++i) record[i] = token_bad ? tokens[i] : labels[i];
  // Re-arm before throwing, so a caller that handles the error starts clean.
  DTRAIN_CUDA_CHECK(cudaMemsetAsync(label_error_.data(), 0xff, kLabelErrorBytes, stream_.get()));
  DTRAIN_CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
  const unsigned long long position = record[0] >> 32;
  const auto value = static_cast<int32_t>(static_cast<uint32_t>(record[0] & 0xffffffffULL));
  const unsigned long long bound = record[1];
  const unsigned long long launch = record[2];
  const unsigned long long launches = token_bad ? token_launches : label_launches;
  std::ostringstream msg;
  if (token_bad) {
    const unsigned long long seq = record[3];
    msg << "embedding: token " << value << " at position " << position % seq << " of sample "
        << position / seq << " of the batch is outside [0, " << bound << ") (found on "
        << allocator_.device_name() << " at the next synchronization";
    if (launches > 1) msg << ", in embedding call " << launch + 1 << " of the " << launches << " since the last one";
    msg << "); check that the dataset's tokenizer matches the model's vocab_size";
  } else {
    msg << "softmax_cross_entropy: label " << value << " at row " << position
        << " of the batch is outside [0, " << bound << ") (found on " << allocator_.device_name()
        << " at the next synchronization";
    if (launches > 1) msg << ", in batch " << launch + 1 << " of the " << launches << " since the last one";
    msg << "); check that the dataset's labels match the model's number of classes";
  }
  throw DataError(msg.str());
}

double CudaBackend::peak_flops() const {
  int major = 0, minor = 0, sms = 0, khz = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device_) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device_) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device_) != cudaSuccess ||
      cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, device_) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0.0;
  }
  // FP32 lanes per SM: 64 on the data-centre Volta and Ampere (7.0, 8.0), 128 on the
  // others since Maxwell (8.6, 8.9, 9.0 Hopper, 10.x and 12.x Blackwell).
  const int lanes = (major == 7 || (major == 8 && minor == 0)) ? 64 : 128;
  return 2.0 * lanes * sms * static_cast<double>(khz) * 1e3;
}

}  // namespace dtrain
