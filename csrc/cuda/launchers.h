// Torch-free declarations of the CUDA launchers (defined in csrc/cuda/*.cu), called by the torch glue in *.cpp.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace gtl {

cudaError_t launch_philox(const int64_t* key, const int64_t* counter, int64_t* out, int64_t n, cudaStream_t stream);

}  // namespace gtl
