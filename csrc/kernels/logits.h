// The element types logits come in: float32, or float16 stored as its IEEE bits in uint16_t
// (float16.h). The kernels are templates over that storage type; dispatch_logits is the one place
// where a type known only at run time picks the instantiation, for the ORT ops and the Python
// module alike.
#pragma once

#include <cstdint>

namespace vampnet {

enum class LogitsType { kFloat32, kFloat16 };

// Calls body with `logits` as a pointer to its storage type: const float* or const uint16_t*.
template <typename Body>
void dispatch_logits(LogitsType type, const void* logits, Body&& body) {
  if (type == LogitsType::kFloat16)
    body(static_cast<const uint16_t*>(logits));
  else
    body(static_cast<const float*>(logits));
}

}  // namespace vampnet
