// CUDA launcher of confidence: KERNEL_SPEC §2 confidence (max_prob, margin, neg_entropy of the guided distribution).
// The kernels live in gtl/cuda_ops.cuh (torch-free); the torch glue is in ops_cuda.cpp.
#include "gtl/cuda_ops.cuh"
#include "launchers.h"

namespace gtl {
namespace cuda {

cudaError_t launch_confidence(const Problem& p, int num_sms, cudaStream_t stream) {
  return launch_op<Op::kConfidence>(p, num_sms, stream);
}

}  // namespace cuda
}  // namespace gtl
