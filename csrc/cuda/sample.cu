// CUDA launcher of sample: KERNEL_SPEC §2 sample, §3 (two-level exponential race, top-k restriction, candidate index).
// The kernels live in gtl/cuda_ops.cuh (torch-free); the torch glue is in ops_cuda.cpp.
#include "gtl/cuda_ops.cuh"
#include "launchers.h"

namespace gtl {
namespace cuda {

cudaError_t launch_sample(const Problem& p, int num_sms, cudaStream_t stream) {
  return launch_op<Op::kSample>(p, num_sms, stream);
}

}  // namespace cuda
}  // namespace gtl
