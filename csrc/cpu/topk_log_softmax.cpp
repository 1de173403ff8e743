// gtl::topk_log_softmax on the CPU (KERNEL_SPEC §2 `topk_log_softmax`): the k most probable tokens of the guided
// distribution and their log-probabilities, in one read of each row (gtl/cpu_topk_log_softmax.h). Torch-free; the
// glue is in register.cpp.
#include "kernels.h"

#define GTL_CPU_OP_BODY "gtl/cpu_topk_log_softmax.h"
#include "gtl/cpu_multiversion.h"

void gtl::cpu::run_topk_log_softmax(const TopkArgs& a) { GTL_CPU_DISPATCH(topk_log_softmax_batch, a); }
