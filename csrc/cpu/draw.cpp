// The draw kernels of gtl::sample and gtl::masked_transition on the CPU (KERNEL_SPEC §2, §3): one draw per row by the
// two-level exponential race, in one read of each row (gtl/cpu_draw.h); masked_transition's unmasked and staying
// rows are decided before their logits are read. Torch-free; the glue is in register.cpp.
#include "kernels.h"

#define GTL_CPU_OP_BODY "gtl/cpu_draw.h"
#include "gtl/cpu_multiversion.h"

void gtl::cpu::run_draw(const DrawArgs& a) { GTL_CPU_DISPATCH(draw_batch, a); }
