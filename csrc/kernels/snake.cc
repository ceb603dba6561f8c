#include "snake.h"

#include <cmath>

// Compiled for several instruction sets (multiversion.h), as sampling.cc.
#include "multiversion.h"

namespace vampnet {

namespace {

// pi/2 in three parts whose leading ones have few mantissa bits, so that j * part is exact for
// the quadrant counts |j| < 2^13 that kSnakeFastLimit allows (Cody and Waite's reduction).
constexpr float kTwoOverPi = 0.636619772367581f;
constexpr float kPiOver2Hi = 1.5703125f;
constexpr float kPiOver2Mid = 4.837512969970703125e-4f;
constexpr float kPiOver2Lo = 7.549789954891882e-8f;
// Minimax polynomials of sin and cos on [-pi/4, pi/4] (the classic single-precision ones).
constexpr float kSin1 = -1.6666654611e-1f;
constexpr float kSin2 = 8.3321608736e-3f;
constexpr float kSin3 = -1.9515295891e-4f;
constexpr float kCos1 = 4.166664568298827e-2f;
constexpr float kCos2 = -1.388731625493765e-3f;
constexpr float kCos3 = 2.443315711809948e-5f;

// Rounds to the nearest integer (ties to even) for |v| < 2^22 in the default rounding mode: the
// sum's last bit is the units place. Plain float operations, unlike std::nearbyint, so the loop
// below vectorizes.
constexpr float kRoundingShift = 12582912.0f;  // 1.5 * 2^23
inline float round_to_integer(float v) { return (v + kRoundingShift) - kRoundingShift; }

// sin(t)^2 for |t| <= kSnakeFastLimit, branch-free so the loop vectorizes: t = j pi/2 + r with
// |r| <= pi/4, and sin(t)^2 is sin(r)^2 for even j, cos(r)^2 for odd j (the sign squares away).
inline float sin_squared(float t) {
  const float j = round_to_integer(t * kTwoOverPi);
  const float r = ((t - j * kPiOver2Hi) - j * kPiOver2Mid) - j * kPiOver2Lo;
  const float z = r * r;
  const float sin_r = r + r * z * (kSin1 + z * (kSin2 + z * kSin3));
  const float cos_r = (1.0f - 0.5f * z) + z * z * (kCos1 + z * (kCos2 + z * kCos3));
  const float half = j * 0.5f;  // an integer for even j, one half off for odd j
  const float s = half != round_to_integer(half) ? cos_r : sin_r;
  return s * s;
}

}  // namespace

VAMPNET_MULTIVERSION
void snake(const float* x, float alpha, float inverse, size_t n, float* y) {
  int slow = 0;  // an int count, not a bool, so the loop vectorizes
  for (size_t i = 0; i < n; ++i) {
    const float t = alpha * x[i];
    slow += std::fabs(t) <= kSnakeFastLimit ? 0 : 1;
    y[i] = x[i] + inverse * sin_squared(t);
  }
  if (slow == 0) return;
  // Rare (|alpha x| > 8192, NaN or inf): those elements again, with the library's sine.
  for (size_t i = 0; i < n; ++i) {
    const float t = alpha * x[i];
    if (std::fabs(t) <= kSnakeFastLimit) continue;
    const float s = std::sin(t);
    y[i] = x[i] + inverse * (s * s);
  }
}

}  // namespace vampnet
