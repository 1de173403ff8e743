// The CUDA launchers of launchers.h, the only source nvcc compiles: each op's kernels are instantiated from the
// torch-free headers (gtl/cuda_ops.cuh) here, so the torch glue (csrc/cuda/<op>.cpp) is built by the host compiler
// alone and scripts/nvcc_check.sh compiles every kernel without a CUDA build of torch.
#include <cuda_runtime.h>

#include <cstdint>

#include "gtl/cuda_ops.cuh"
#include "gtl/philox.h"
#include "launchers.h"

namespace gtl {

// The generator op's arithmetic is gtl/philox.h's, shared with the CPU: this kernel only maps one thread to a key.
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

namespace cuda {

cudaError_t launch_guided_log_softmax(const Problem& p, int num_sms, cudaStream_t stream) {
  return launch_op<Op::kGuidedLogSoftmax>(p, num_sms, stream);
}

cudaError_t launch_sample(const Problem& p, int num_sms, cudaStream_t stream) {
  return launch_op<Op::kSample>(p, num_sms, stream);
}

cudaError_t launch_masked_transition(const Problem& p, int num_sms, cudaStream_t stream) {
  return launch_op<Op::kMaskedTransition>(p, num_sms, stream);
}

cudaError_t launch_topk_log_softmax(const Problem& p, int num_sms, cudaStream_t stream) {
  return launch_op<Op::kTopkLogSoftmax>(p, num_sms, stream);
}

cudaError_t launch_confidence(const Problem& p, int num_sms, cudaStream_t stream) {
  return launch_op<Op::kConfidence>(p, num_sms, stream);
}

}  // namespace cuda
}  // namespace gtl
