// Compiles the CPU row kernels once per instruction set, each in its own namespace:
//   gtl::cpu::generic (SSE2, 4 lanes), gtl::cpu::avx2 (AVX2+FMA+F16C, 8 lanes), gtl::cpu::avx512 (AVX-512, 16 lanes).
// Include it once per translation unit after defining GTL_CPU_OP_BODY to the header of that op's batch function.
// `#pragma GCC target` (not -march) keeps the default build portable; active_isa() picks the version at run time.
// GTL_ISA is a plain macro because g++ does not define __AVX2__ etc. inside a target pragma region of a C++ file.
//
// The per-ISA headers below have no include guards on purpose: they are compiled again in each namespace.
#include "gtl/cpu_common.h"
#include "gtl/cpu_select.h"

#ifndef GTL_CPU_OP_BODY
#error "define GTL_CPU_OP_BODY before including gtl/cpu_multiversion.h"
#endif

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"  // vector arguments of always-inline helpers never cross an ABI boundary

#define GTL_ISA 1
namespace gtl::cpu::generic {
#include "gtl/cpu_vec.h"
#include "gtl/cpu_scan.h"
#include "gtl/cpu_race.h"
#include "gtl/cpu_dist.h"
#include "gtl/cpu_driver.h"
#include GTL_CPU_OP_BODY
}  // namespace gtl::cpu::generic
#undef GTL_ISA

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,bmi,bmi2,popcnt")
#define GTL_ISA 2
namespace gtl::cpu::avx2 {
#include "gtl/cpu_vec.h"
#include "gtl/cpu_scan.h"
#include "gtl/cpu_race.h"
#include "gtl/cpu_dist.h"
#include "gtl/cpu_driver.h"
#include GTL_CPU_OP_BODY
}  // namespace gtl::cpu::avx2
#undef GTL_ISA
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma,f16c,bmi,bmi2,popcnt")
#define GTL_ISA 3
namespace gtl::cpu::avx512 {
#include "gtl/cpu_vec.h"
#include "gtl/cpu_scan.h"
#include "gtl/cpu_race.h"
#include "gtl/cpu_dist.h"
#include "gtl/cpu_driver.h"
#include GTL_CPU_OP_BODY
}  // namespace gtl::cpu::avx512
#undef GTL_ISA
#pragma GCC pop_options

#pragma GCC diagnostic pop

// Calls `fn` of the active instruction set's namespace, e.g. GTL_CPU_DISPATCH(sample_batch, args).
#define GTL_CPU_DISPATCH(fn, ...)                                     \
  do {                                                                \
    switch (::gtl::cpu::active_isa()) {                               \
      case ::gtl::cpu::Isa::kAvx512:                                  \
        ::gtl::cpu::avx512::fn(__VA_ARGS__);                          \
        break;                                                        \
      case ::gtl::cpu::Isa::kAvx2:                                    \
        ::gtl::cpu::avx2::fn(__VA_ARGS__);                            \
        break;                                                        \
      default:                                                        \
        ::gtl::cpu::generic::fn(__VA_ARGS__);                         \
    }                                                                 \
  } while (0)
