// gtl::guided_log_softmax on the CPU (KERNEL_SPEC §2 `guided_log_softmax`): fp32 log_softmax((logits + gamma * bias)
// / T) with one read of the input (gtl/cpu_guided_log_softmax.h). Torch-free; the glue is in register.cpp.
#include "kernels.h"

#define GTL_CPU_OP_BODY "gtl/cpu_guided_log_softmax.h"
#include "gtl/cpu_multiversion.h"

void gtl::cpu::run_guided_log_softmax(const GlsmArgs& a) { GTL_CPU_DISPATCH(guided_log_softmax_batch, a); }
