// Philox words on the GPU (KERNEL_SPEC §3), for the cross-backend generator test. Torch-free: raw pointers and a
// stream, so it compile-checks without a CUDA build of torch (scripts/nvcc_check.sh).
#include <cuda_runtime.h>

#include <cstdint>

#include "gtl/philox.h"

namespace gtl {

__global__ void philox_kernel(const int64_t* __restrict__ key, const int64_t* __restrict__ counter,
                              int64_t* __restrict__ out, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const uint64_t seed = static_cast<uint64_t>(key[i]);
  const Philox4 r = philox4x32_10(static_cast<uint32_t>(counter[4 * i]), static_cast<uint32_t>(counter[4 * i + 1]),
                                  static_cast<uint32_t>(counter[4 * i + 2]), static_cast<uint32_t>(counter[4 * i + 3]),
                                  static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
#pragma unroll
  for (int j = 0; j < 4; ++j) out[4 * i + j] = r.w[j];
}

cudaError_t launch_philox(const int64_t* key, const int64_t* counter, int64_t* out, int64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  constexpr int kThreads = 256;
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  philox_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(key, counter, out, n);
  return cudaGetLastError();
}

}  // namespace gtl
