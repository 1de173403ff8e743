// gtl::confidence on the CPU (KERNEL_SPEC §2 `confidence`): the argmax and a planner score (max_prob, margin or
// neg_entropy) of the guided distribution, in one read of each row (gtl/cpu_confidence.h). Torch-free; the glue is in
// register.cpp.
#include "kernels.h"

#define GTL_CPU_OP_BODY "gtl/cpu_confidence.h"
#include "gtl/cpu_multiversion.h"

void gtl::cpu::run_confidence(const ConfidenceArgs& a) { GTL_CPU_DISPATCH(confidence_batch, a); }
