// exp, log and cos built only from IEEE-754 +, -, *, /, rint and exact power-of-two scaling.
// libm implementations differ in the last bit between glibc, numpy's SIMD loops and CUDA; these
// give the same bits everywhere (numpy twin: vampnet_onnx.reference), which is what lets the C++
// ops and the numpy reference agree token for token. Compile with -ffp-contract=off (no FMA).
// Accuracy: a few ulp of double, far below the float32 precision the results are rounded to.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "host_device.h"

namespace vampnet::det {

constexpr double kLn2Hi = 6.93147180369123816490e-01;  // high bits of ln 2: k * kLn2Hi is exact
constexpr double kLn2Lo = 1.90821492927058770002e-10;
constexpr double kInvLn2 = 1.44269504088896338700e+00;
// Adding and subtracting 1.5 * 2^52 rounds a double of magnitude < 2^51 to the nearest integer
// (ties to even) with two IEEE additions: no libm call, the same in numpy.
constexpr double kRoundShift = 0x1.8p52;
// Below this the softmax weight exp(x) (x = logit - max <= 0) is dropped as 0: e^-700 < 1e-304.
constexpr double kExpUnderflow = -700.0;

namespace detail {
// c[n] = 1 / n!, and 1 / (2n + 1): every n! up to 22! is exact in double, so each coefficient is
// one correctly rounded division, at compile time here and at run time in numpy.
template <size_t N>
constexpr std::array<double, N> inverse_factorials() {
  std::array<double, N> c{};
  double fact = 1.0;
  for (size_t n = 0; n < N; ++n) {
    if (n > 0) fact *= static_cast<double>(n);
    c[n] = 1.0 / fact;
  }
  return c;
}
constexpr std::array<double, 12> inverse_odd() {
  std::array<double, 12> c{};
  for (size_t n = 0; n < 12; ++n) c[n] = 1.0 / static_cast<double>(2 * n + 1);
  return c;
}
}  // namespace detail

// The tables are static constexpr locals of the functions below, not namespace-scope constants:
// nvcc cannot read a host variable from device code, and a function-local constant is one object
// on either side (the same compile-time values, so the same bits).

// exp(x) for x in [kExpUnderflow, 709]: Cody-Waite reduction, Taylor series to r^14 / 14!, exact
// scaling by 2^k. Branch-free so that loops over it vectorize.
VAMPNET_HD inline double exp_in_range(double x) {
  static constexpr std::array<double, 15> kExpCoefficients = detail::inverse_factorials<15>();
  const double k = (x * kInvLn2 + kRoundShift) - kRoundShift;
  const double r = (x - k * kLn2Hi) - k * kLn2Lo;  // |r| <= 0.347
  double p = kExpCoefficients[14];
  for (int n = 13; n >= 0; --n) p = p * r + kExpCoefficients[n];
  // 2^k for k in [-1010, 1023] is a normal double: build its bits; p * 2^k is then exact.
  const uint64_t bits = static_cast<uint64_t>(static_cast<int32_t>(k) + 1023) << 52;
  double scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// exp(x) for the softmax: NaN stays NaN, 0 below kExpUnderflow, +inf above 709.
VAMPNET_HD inline double exp(double x) {
  if (std::isnan(x)) return x;
  if (x < kExpUnderflow) return 0.0;
  if (x > 709.0) return std::numeric_limits<double>::infinity();
  return exp_in_range(x);
}

// Natural log for x >= 0 (0 -> -inf, +inf -> +inf, negative or NaN -> NaN).
VAMPNET_HD inline double log(double x) {
  static constexpr std::array<double, 12> kAtanhCoefficients = detail::inverse_odd();
  if (std::isnan(x) || x < 0.0) return std::numeric_limits<double>::quiet_NaN();
  if (x == 0.0) return -std::numeric_limits<double>::infinity();
  if (std::isinf(x)) return x;
  int e = 0;
  double m = std::frexp(x, &e);  // x = m * 2^e, m in [0.5, 1): exact
  if (m < 0.70710678118654752440) {
    m *= 2.0;
    e -= 1;
  }
  const double f = m - 1.0;  // exact: m is within a factor 2 of 1
  const double s = f / (2.0 + f);
  const double z = s * s;  // z <= 0.0295
  // log(m) = 2 atanh(s) = 2 s (1 + z/3 + z^2/5 + ...), to z^11.
  double t = kAtanhCoefficients[11];
  for (int n = 10; n >= 0; --n) t = t * z + kAtanhCoefficients[n];
  const double log_m = 2.0 * s * t;
  const double k = static_cast<double>(e);
  return k * kLn2Hi + (log_m + k * kLn2Lo);
}

// cos(x) for |x| <= pi/2 (the schedule's argument range): Taylor series to x^22 / 22!.
VAMPNET_HD inline double cos(double x) {
  static constexpr std::array<double, 23> kCosCoefficients = detail::inverse_factorials<23>();
  const double z = x * x;
  double p = kCosCoefficients[22];
  for (int n = 10; n >= 0; --n) p = p * (-z) + kCosCoefficients[2 * n];
  return p;
}

}  // namespace vampnet::det
