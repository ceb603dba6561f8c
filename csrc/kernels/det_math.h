// exp, log and cos built only from IEEE-754 +, -, *, /, rint and exact power-of-two scaling.
// libm implementations differ in the last bit between glibc, numpy's SIMD loops and CUDA; these
// give the same bits everywhere (numpy twin: vampnet_onnx.reference), which is what lets the C++
// ops and the numpy reference agree token for token. Compile with -ffp-contract=off (no FMA).
// Accuracy: a few ulp of double, far below the float32 precision the results are rounded to.
#pragma once

#include <cmath>
#include <limits>

namespace vampnet::det {

constexpr double kLn2Hi = 6.93147180369123816490e-01;  // high bits of ln 2: k * kLn2Hi is exact
constexpr double kLn2Lo = 1.90821492927058770002e-10;
constexpr double kInvLn2 = 1.44269504088896338700e+00;
// Below this the softmax weight exp(x) (x = logit - max <= 0) is dropped as 0: e^-700 < 1e-304.
constexpr double kExpUnderflow = -700.0;

// exp(x) for the softmax: x <= ~709; returns 0 below kExpUnderflow.
inline double exp(double x) {
  if (std::isnan(x)) return x;
  if (x < kExpUnderflow) return 0.0;
  if (x > 709.0) return std::numeric_limits<double>::infinity();
  const double k = std::nearbyint(x * kInvLn2);
  const double r = (x - k * kLn2Hi) - k * kLn2Lo;  // |r| <= 0.347
  // Taylor series to r^14 / 14!; every n! here is exact in double.
  double fact = 1.0;
  for (int n = 1; n <= 14; ++n) fact *= n;
  double p = 1.0 / fact;
  for (int n = 13; n >= 1; --n) {
    fact /= (n + 1);
    p = p * r + 1.0 / fact;
  }
  p = p * r + 1.0;
  return std::ldexp(p, static_cast<int>(k));
}

// Natural log for x >= 0 (0 -> -inf, +inf -> +inf, negative or NaN -> NaN).
inline double log(double x) {
  if (std::isnan(x) || x < 0.0) return std::numeric_limits<double>::quiet_NaN();
  if (x == 0.0) return -std::numeric_limits<double>::infinity();
  if (std::isinf(x)) return x;
  int e = 0;
  double m = std::frexp(x, &e);  // x = m * 2^e, m in [0.5, 1)
  if (m < 0.70710678118654752440) {
    m *= 2.0;
    e -= 1;
  }
  const double f = m - 1.0;  // exact: m is within a factor 2 of 1
  const double s = f / (2.0 + f);
  const double z = s * s;  // z <= 0.0295
  // log(m) = 2 atanh(s) = 2 s (1 + z/3 + z^2/5 + ...), to z^11.
  double t = 1.0 / 23.0;
  for (int n = 10; n >= 0; --n) t = t * z + 1.0 / (2 * n + 1);
  const double log_m = 2.0 * s * t;
  const double k = static_cast<double>(e);
  return k * kLn2Hi + (log_m + k * kLn2Lo);
}

// cos(x) for |x| <= pi/2 (the schedule's argument range): Taylor series to x^22 / 22!.
inline double cos(double x) {
  const double z = x * x;
  double fact = 1.0;
  for (int n = 1; n <= 22; ++n) fact *= n;  // 22! = 2^19 * odd < 2^72: exact
  double p = 1.0 / fact;
  for (int n = 10; n >= 0; --n) {
    fact /= (2 * n + 2) * (2 * n + 1);
    p = p * (-z) + 1.0 / fact;
  }
  return p;
}

}  // namespace vampnet::det
