// CheckRange's rule and message, shared by the ORT op and the Python kernels module.
#pragma once

#include <cmath>
#include <string>

#include "errors.h"

namespace vampnet {

// Integral values print as integers ("1000001", not "1e+06"), others as C++ streams print them.
inline std::string range_text(double value) {
  if (std::isfinite(value) && std::floor(value) == value && std::fabs(value) < 1e15)
    return std::to_string(static_cast<long long>(value));
  return to_text(value);
}

// "<where>: <name> must be in [low, high], got <value>" unless low <= value <= high (NaN fails).
inline void check_range(const std::string& where, const std::string& name, double value, double low,
                        double high) {
  if (!(low <= value && value <= high))
    fail(where, name, "be in [" + range_text(low) + ", " + range_text(high) + "]",
         range_text(value));
}

}  // namespace vampnet
