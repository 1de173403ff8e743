// The planner-score kinds of `confidence` (KERNEL_SPEC §2), shared by the CPU and CUDA glue: one list, one parser.
// The order is that of gtl_kernels.reference.CONFIDENCE_KINDS (a test keeps the two equal), which is also the
// Triton kernels' KIND index.
#pragma once

#include <cstdint>
#include <string_view>

namespace gtl {

enum class ConfidenceKind : int32_t { kMaxProb = 0, kMargin = 1, kNegEntropy = 2 };

inline constexpr std::string_view kConfidenceKinds[] = {"max_prob", "margin", "neg_entropy"};
inline constexpr const char* kConfidenceKindList = "max_prob, margin, neg_entropy";  // for error messages

// The kind named `name`; false (and *kind untouched) when it names none.
inline bool parse_confidence_kind(std::string_view name, ConfidenceKind* kind) {
  for (int32_t i = 0; i < static_cast<int32_t>(sizeof kConfidenceKinds / sizeof kConfidenceKinds[0]); ++i) {
    if (name == kConfidenceKinds[i]) {
      *kind = static_cast<ConfidenceKind>(i);
      return true;
    }
  }
  return false;
}

}  // namespace gtl
