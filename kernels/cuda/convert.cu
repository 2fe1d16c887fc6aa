// Conversion between the stored element types (Note [bf16 storage], kernels/dtype.h):
// fp32 to bf16 rounds to nearest even (__float2bfloat16_rn, float_to_bf16's rounding),
// bf16 to fp32 is exact, and the same type is a device-to-device copy on the stream.
#include <cstdint>

#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/storage.cuh"

namespace dtrain {

namespace {

using cuda::kBlockThreads;

struct Identity {
  __device__ float operator()(int64_t /*i*/, float v) const { return v; }
};

template <class In, class Out>
__global__ void convert_kernel(const In* x, Out* y, int64_t n, int64_t packs) {
  cuda::map_elements(x, y, n, packs, Identity{});
}

template <class In, class Out>
void launch_convert(cudaStream_t stream, unsigned blocks, ConstTypedPtr x, TypedPtr y, int64_t n) {
  const In* in = cuda::typed<In>(x, "convert");
  Out* out = cuda::typed<Out>(y, "convert");
  convert_kernel<<<blocks, kBlockThreads, 0, stream>>>(in, out, n, cuda::pack_count(n, in, out));
  DTRAIN_CUDA_LAUNCH_CHECK();
}

}  // namespace

void CudaBackend::convert(Context& /*ctx*/, ConstTypedPtr x, TypedPtr y, int64_t n) {
  if (n <= 0) return;
  if (x.type == y.type) {
    DTRAIN_CUDA_CHECK(cudaMemcpyAsync(y.data, x.data, static_cast<size_t>(n) * dtype_size(x.type),
                                      cudaMemcpyDeviceToDevice, stream()));
    return;
  }
  const unsigned blocks = blocks_for(n, kBlockThreads);
  if (y.type == DType::kBF16) {
    launch_convert<float, __nv_bfloat16>(stream(), blocks, x, y, n);
  } else {
    launch_convert<__nv_bfloat16, float>(stream(), blocks, x, y, n);
  }
}

}  // namespace dtrain
