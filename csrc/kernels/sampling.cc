#include "sampling.h"

// The hot loops, compiled for several instruction sets (multiversion.h).
#include "multiversion.h"

namespace vampnet {

VAMPNET_MULTIVERSION
void softmax_weights(const float* x, const char* keep, size_t n, float top, double temperature,
                     double* weight) {
  // Every weight first, then the filter: two loops that vectorize, where one with a
  // conditional exp would not.
  if (temperature != 1.0) {
    for (size_t i = 0; i < n; ++i) weight[i] = weight_of(x[i], top, temperature, true);
  } else {
    for (size_t i = 0; i < n; ++i) weight[i] = weight_of(x[i], top, 1.0, false);
  }
  if (keep != nullptr) zero_removed(keep, n, weight);
}

VAMPNET_MULTIVERSION
void zero_removed(const char* keep, size_t n, double* weight) {
  for (size_t i = 0; i < n; ++i) weight[i] = keep[i] ? weight[i] : 0.0;
}

VAMPNET_MULTIVERSION
double mass_above(const float* x, const double* weight, size_t n, float level) {
  constexpr size_t kLanes = 8;  // independent partial sums, so the loop vectorizes
  double lanes[kLanes] = {};
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (size_t l = 0; l < kLanes; ++l) lanes[l] += x[i + l] > level ? weight[i + l] : 0.0;
  double sum = 0.0;
  for (; i < n; ++i) sum += x[i] > level ? weight[i] : 0.0;
  for (double lane : lanes) sum += lane;
  return sum;
}

VAMPNET_MULTIVERSION
bool has_nan_or_pos_inf(const float* x, size_t n) {
  bool bad = false;
  for (size_t i = 0; i < n; ++i)
    bad |= (x[i] != x[i]) | (x[i] == std::numeric_limits<float>::infinity());
  return bad;
}

}  // namespace vampnet
