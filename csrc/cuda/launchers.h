// Torch-free declarations of the CUDA launchers (defined in launchers.cu), called by the torch glue in *.cpp.
// Each launcher enqueues its kernels on `stream` and returns the first launch error; it never synchronizes.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "gtl/cuda_problem.h"

namespace gtl {

cudaError_t launch_philox(const int64_t* key, const int64_t* counter, int64_t* out, int64_t n, cudaStream_t stream);

namespace cuda {

// `p.workspace` must hold make_plan(op, p, num_sms).workspace_bytes bytes (the same num_sms), 256-byte aligned.
cudaError_t launch_guided_log_softmax(const Problem& p, int num_sms, cudaStream_t stream);
cudaError_t launch_sample(const Problem& p, int num_sms, cudaStream_t stream);
cudaError_t launch_masked_transition(const Problem& p, int num_sms, cudaStream_t stream);
cudaError_t launch_topk_log_softmax(const Problem& p, int num_sms, cudaStream_t stream);
cudaError_t launch_confidence(const Problem& p, int num_sms, cudaStream_t stream);

}  // namespace cuda
}  // namespace gtl
