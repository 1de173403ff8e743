// CUDA launcher of guided_log_softmax: KERNEL_SPEC §2 guided_log_softmax, §4 (invalid rows: NaN; +inf tokens share the mass; T = 0: point mass).
// The kernels live in gtl/cuda_ops.cuh (torch-free); the torch glue is in ops_cuda.cpp.
#include "gtl/cuda_ops.cuh"
#include "launchers.h"

namespace gtl {
namespace cuda {

cudaError_t launch_guided_log_softmax(const Problem& p, int num_sms, cudaStream_t stream) {
  return launch_op<Op::kGuidedLogSoftmax>(p, num_sms, stream);
}

}  // namespace cuda
}  // namespace gtl
