// The CPU kernels' entry points, torch-free: each runs its op on every row of the normalized arguments
// (gtl/cpu_common.h) with the instruction set the CPU has (gtl/cpu_multiversion.h). Defined in csrc/cpu/<op>.cpp
// (draw.cpp for sample and masked_transition), called by the torch glue in register.cpp. The kernel files include no
// torch header, so that torch's headers are compiled once per build (register.cpp), not once per op.
#pragma once

#include "gtl/cpu_common.h"

namespace gtl::cpu {

void run_draw(const DrawArgs& a);                // sample, masked_transition (gtl/cpu_draw.h)
void run_guided_log_softmax(const GlsmArgs& a);  // gtl/cpu_guided_log_softmax.h
void run_topk_log_softmax(const TopkArgs& a);    // gtl/cpu_topk_log_softmax.h
void run_confidence(const ConfidenceArgs& a);    // gtl/cpu_confidence.h

}  // namespace gtl::cpu
