// CUDA launcher of masked_transition: KERNEL_SPEC §2 masked_transition, §3 (stay decision U(0, stream 1) < stay_prob, then the race without mask_id;
// on the candidate path, without the columns whose id is mask_id).
// The kernels live in gtl/cuda_ops.cuh (torch-free); the torch glue is in ops_cuda.cpp.
#include "gtl/cuda_ops.cuh"
#include "launchers.h"

namespace gtl {
namespace cuda {

cudaError_t launch_masked_transition(const Problem& p, int num_sms, cudaStream_t stream) {
  return launch_op<Op::kMaskedTransition>(p, num_sms, stream);
}

}  // namespace cuda
}  // namespace gtl
