// CUDA launcher of topk_log_softmax: KERNEL_SPEC §2 topk_log_softmax (radix select + bitonic sort, ties toward the lower id; k <= kTopkMax).
// The kernels live in gtl/cuda_ops.cuh (torch-free); the torch glue is in ops_cuda.cpp.
#include "gtl/cuda_ops.cuh"
#include "launchers.h"

namespace gtl {
namespace cuda {

cudaError_t launch_topk_log_softmax(const Problem& p, int num_sms, cudaStream_t stream) {
  return launch_op<Op::kTopkLogSoftmax>(p, num_sms, stream);
}

}  // namespace cuda
}  // namespace gtl
