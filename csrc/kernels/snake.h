// The Snake activation of the LAC codec (docs/model.md §5.2), fused:
// y = x + inverse * sin(alpha * x)^2 over one channel's samples, with alpha and
// inverse = 1 / (alpha + 1e-9) that channel's values.
// Pure C++, no ORT types.
//
// Numerics: the same float32 operations in the same order as the ONNX chain it replaces
// (Mul, Sin, Pow 2, Mul, Add), except sin itself: a float32 polynomial (below) within a few ulp
// of the correctly rounded sine, as onnxruntime's and torch's vectorized sines are; what that
// costs against the chain is measured in tests/test_snake.py and docs/precision.md.
#pragma once

#include <cstddef>

namespace vampnet {

// |alpha * x| up to this goes through the vector polynomial; beyond it (or NaN / inf) through
// std::sin, where the 3-part reduction modulo pi/2 would lose bits.
constexpr float kSnakeFastLimit = 8192.0f;

// y[i] = x[i] + inverse * s * s, s = sin(alpha * x[i]), for i < n; y must not overlap x.
void snake(const float* x, float alpha, float inverse, size_t n, float* y);

}  // namespace vampnet
