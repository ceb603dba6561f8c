// The house error format, shared by the ORT ops and the Python kernels module:
//   "<where>: <argument> must <constraint>, got <value>"
#pragma once

#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace vampnet {

// Raised for invalid input; the ORT entry points turn it into ORT_INVALID_ARGUMENT and the
// Python module into ValueError.
class InvalidArgument : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

template <typename T>
std::string to_text(const T& value) {
  // glibc writes a NaN with its sign bit set as "-nan"; Python (the numpy twin's messages) and
  // the contract say "nan" for every NaN.
  if constexpr (std::is_floating_point_v<T>)
    if (std::isnan(value)) return "nan";
  std::ostringstream out;
  out << value;
  return out.str();
}

inline std::string shape_text(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

[[noreturn]] inline void fail(const std::string& where, const std::string& argument,
                              const std::string& constraint, const std::string& got) {
  throw InvalidArgument(where + ": " + argument + " must " + constraint + ", got " + got);
}

}  // namespace vampnet
