// Token sampling from logits with VampNet's filters: top-k, then top-p (nucleus) on the unscaled
// logits, then temperature; temperature 0 is an exact argmax. Pure C++, no ORT types.
//
// Numerics (mirrored exactly by vampnet_onnx.reference.sample_tokens):
//   x_max = max of the row; weights e_i = det::exp((x_i - x_max) / T) in double for kept tokens,
//   0 for filtered ones; S = sum of e_i in index order; the token is the first index whose running
//   sum exceeds u * S (u from Philox, 53 bits); p = e_token / S; logprob = log(float(p)) rounded
//   to float32, i.e. the float32 probability's log, as VampNet's confidence is.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "det_math.h"
#include "errors.h"
#include "float16.h"
#include "host_device.h"
#include "parallel.h"
#include "rng.h"

namespace vampnet {

struct SamplingParams {
  float temperature = 1.0f;  // 0: argmax; > 0: softmax temperature
  int64_t top_k = 0;         // 0 or >= V: off
  float top_p = 1.0f;        // in (0, 1]; 1: off
  uint64_t seed = 0;
};

inline void check_sampling_params(const std::string& where, const SamplingParams& params) {
  if (!(params.temperature >= 0.0f))  // also rejects NaN
    fail(where, "temperature", "be >= 0", to_text(params.temperature));
  if (params.top_k < 0) fail(where, "top_k", "be >= 0", to_text(params.top_k));
  if (!(params.top_p > 0.0f && params.top_p <= 1.0f))
    fail(where, "top_p", "be in (0, 1]", to_text(params.top_p));
}

// One softmax weight: exp((x - top) / temperature) (divide = false: exp(x - top), the same bits
// as dividing by 1), 0 where that underflows. The CPU loops (sampling.cc) and the CUDA kernels
// (kernels/cuda/) share it.
VAMPNET_HD inline double weight_of(float x, float top, double temperature, bool divide) {
  double d = static_cast<double>(x) - static_cast<double>(top);
  if (divide) d /= temperature;
  // Written as !(d >= ...) so that NaN counts as underflow too: temperature = +inf turns a -inf
  // logit into -inf / inf = NaN, which must get weight 0 like every -inf logit (as the numpy
  // twin gives it) and must never reach exp_in_range's conversion to int (undefined for NaN).
  const bool underflow = !(d >= det::kExpUnderflow);  // also -inf
  const double w = det::exp_in_range(underflow ? det::kExpUnderflow : d);
  return underflow ? 0.0 : w;
}

// weight[i] = keep[i] ? exp((x[i] - top) / temperature) : 0 (temperature 1: no division, the
// same bits), with exp(d) = 0 for d < det::kExpUnderflow. keep == nullptr keeps every token.
// Compiled for several instruction sets (sampling.cc); every variant gives the same bits.
void softmax_weights(const float* x, const char* keep, size_t n, float top, double temperature,
                     double* weight);

// Sum of weight[i] over x[i] > level, in an unspecified order (an estimate: callers leave a
// margin for rounding).
double mass_above(const float* x, const double* weight, size_t n, float level);
// weight[i] = 0 where keep[i] is false.
void zero_removed(const char* keep, size_t n, double* weight);

// Whether any value is NaN or +inf (the values a row of logits must not hold).
bool has_nan_or_pos_inf(const float* x, size_t n);

struct RowResult {
  int64_t token;
  float logprob;
};

// The logprob reported for a token of probability p: float32 probability, then its log.
VAMPNET_HD inline float confidence_logprob(double p) {
  return static_cast<float>(det::log(static_cast<double>(static_cast<float>(p))));
}

// Larger key = earlier in the nucleus order: higher logit, then lower index.
VAMPNET_HD inline uint64_t order_key(float value, uint32_t index) {
  value += 0.0f;  // -0 becomes +0: they tie, as in a float comparison
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  const uint32_t flip = static_cast<uint32_t>(static_cast<int32_t>(bits) >> 31) | 0x80000000u;
  bits ^= flip;  // negative: all bits flipped; positive: sign bit set. Monotonic in value.
  return (static_cast<uint64_t>(bits) << 32) | static_cast<uint32_t>(~index);
}
VAMPNET_HD inline uint32_t key_index(uint64_t key) { return ~static_cast<uint32_t>(key); }

// Samples rows of one vocabulary size; owns the scratch buffers, so use one per thread.
class RowSampler {
 public:
  explicit RowSampler(size_t vocab) : keep_(vocab), weight_(vocab), order_(vocab), kth_(vocab) {}

  // x: V logits. u: uniform [0, 1) draw (ignored at temperature 0). row: for error messages.
  RowResult sample(const float* x, const SamplingParams& params, double u, const std::string& where,
                   size_t row) {
    const size_t vocab = weight_.size();
    if (has_nan_or_pos_inf(x, vocab)) report_bad_value(x, where, row);
    float x_max = -std::numeric_limits<float>::infinity();
    for (size_t i = 0; i < vocab; ++i) x_max = std::max(x_max, x[i]);
    if (x_max == -std::numeric_limits<float>::infinity())
      fail(where, "logits", "have a finite value in every row",
           "row " + std::to_string(row) + " all -inf");

    // Filters mark kept tokens in keep_; without filters every token is kept (-inf ones get
    // weight 0 from the exp's underflow).
    const bool top_k_on = params.top_k > 0 && static_cast<size_t>(params.top_k) < vocab;
    const bool top_p_on = params.top_p < 1.0f;
    const char* keep = nullptr;
    if (top_k_on || top_p_on) {
      for (size_t i = 0; i < vocab; ++i) keep_[i] = x[i] > -std::numeric_limits<float>::infinity();
      if (top_k_on) apply_top_k(x, params.top_k);
      if (top_p_on) {
        softmax_weights(x, keep_.data(), vocab, x_max, 1.0, weight_.data());
        apply_top_p(x, x_max, params.top_p);
      }
      keep = keep_.data();
    }
    const bool unit_scale = params.temperature == 0.0f || params.temperature == 1.0f;
    if (top_p_on && unit_scale)  // weight_ holds these weights already: drop the removed ones
      zero_removed(keep, vocab, weight_.data());
    else
      softmax_weights(x, keep, vocab, x_max,
                      unit_scale ? 1.0 : static_cast<double>(params.temperature), weight_.data());

    double total = 0.0;
    for (size_t i = 0; i < vocab; ++i) total += weight_[i];

    size_t token = 0;
    if (params.temperature > 0.0f) {
      token = inverse_cdf(u * total);
    } else {
      while (x[token] != x_max) ++token;  // the argmax, lowest index on ties
    }
    return {static_cast<int64_t>(token), confidence_logprob(weight_[token] / total)};
  }

 private:
  // Keeps every logit >= the k-th largest (ties at the threshold are kept, as upstream does).
  void apply_top_k(const float* x, int64_t top_k) {
    std::copy(x, x + kth_.size(), kth_.begin());
    auto kth = kth_.begin() + (top_k - 1);
    std::nth_element(kth_.begin(), kth, kth_.end(), std::greater<float>());
    const float threshold = *kth;
    for (size_t i = 0; i < keep_.size(); ++i) keep_[i] = keep_[i] && x[i] >= threshold;
  }

  // Nucleus on the unscaled softmax (weight_ holds it, unnormalised): in order of decreasing
  // logit (ties: lower index first), a token is kept while the probability mass before it is
  // <= top_p, so the first token crossing the threshold stays. Tokens are ordered by one 64-bit
  // key (value, then index) and only as far as the walk needs: select the next block with
  // nth_element, sort just that block.
  void apply_top_p(const float* x, float x_max, float top_p) {
    const size_t vocab = keep_.size();
    double total = 0.0;
    for (size_t i = 0; i < vocab; ++i) total += weight_[i];
    // Every token at or below a logit threshold whose upper tail already holds more than top_p
    // of the mass comes after the cut: only the tokens above it need ordering. The 1e-6 margin
    // dwarfs the rounding difference between this sum and the walk's.
    const float floor_value = mass_threshold(x, x_max, total, static_cast<double>(top_p) + 1e-6);
    size_t n_kept = 0;
    for (size_t i = 0; i < vocab; ++i) {  // branch-free compaction
      const bool candidate = keep_[i] && x[i] > floor_value;
      keep_[i] = candidate;
      order_[n_kept] = order_key(x[i], static_cast<uint32_t>(i));
      n_kept += candidate;
    }
    const auto first = order_.begin(), kept_end = order_.begin() + n_kept;
    const double threshold = static_cast<double>(top_p);
    double mass = 0.0;
    size_t walked = 0;
    size_t block = 256;  // usually every candidate: one sort
    while (walked < n_kept) {
      const auto block_end = first + std::min(n_kept, walked + block);
      if (block_end < kept_end)
        std::nth_element(first + walked, block_end - 1, kept_end, std::greater<uint64_t>());
      std::sort(first + walked, block_end, std::greater<uint64_t>());
      for (; first + walked < block_end; ++walked) {
        if (walked > 0 && mass > threshold) {
          for (auto it = first + walked; it < kept_end; ++it) keep_[key_index(*it)] = false;
          return;
        }
        mass += weight_[key_index(order_[walked])] / total;
      }
      block *= 4;
    }
  }

  // A logit level above which the tokens hold more than `mass` of the normalised weight, as high
  // as a few cheap passes find (doubling the gap below x_max, then bisecting), or -inf if none.
  float mass_threshold(const float* x, float x_max, double total, double mass) const {
    const size_t vocab = keep_.size();
    const auto enough = [&](float gap) {
      return mass_above(x, weight_.data(), vocab, x_max - gap) / total > mass;
    };
    float gap = 1.0f;
    while (!enough(gap)) {
      gap *= 2.0f;
      if (gap > 1e30f) return -std::numeric_limits<float>::infinity();
    }
    float low = gap / 2.0f;  // not enough (or the first try)
    for (int i = 0; i < 4 && gap > 1.0f; ++i) {
      const float mid = 0.5f * (low + gap);
      if (enough(mid))
        gap = mid;
      else
        low = mid;
    }
    return x_max - gap;
  }

  [[noreturn]] static void report_bad_value(const float* x, const std::string& where, size_t row) {
    size_t i = 0;
    while (!std::isnan(x[i]) && x[i] != std::numeric_limits<float>::infinity()) ++i;
    fail(where, "logits", "be finite or -inf",
         to_text(x[i]) + " at row " + std::to_string(row) + ", index " + std::to_string(i));
  }

  // First index whose running sum exceeds target; if rounding leaves none, the last kept token.
  size_t inverse_cdf(double target) const {
    double running = 0.0;
    size_t last_positive = 0;
    for (size_t i = 0; i < weight_.size(); ++i) {
      running += weight_[i];
      if (running > target) return i;
      if (weight_[i] > 0.0) last_positive = i;
    }
    return last_positive;
  }

  std::vector<char> keep_;
  std::vector<double> weight_;
  std::vector<uint64_t> order_;
  std::vector<float> kth_;
};

// Reads row `row` of a [rows, V] buffer as float32 (a copy for float16, the row itself for float).
template <typename Logit>
const float* load_row(const Logit* logits, size_t row, size_t vocab, std::vector<float>& buffer) {
  if constexpr (std::is_same_v<Logit, float>) {
    return logits + row * vocab;
  } else {
    buffer.resize(vocab);
    const Logit* src = logits + row * vocab;
    for (size_t i = 0; i < vocab; ++i) buffer[i] = half_to_float(src[i]);
    return buffer.data();
  }
}

constexpr size_t kRowsPerTask = 16;

// tokens[r], logprob[r] for each row r of logits [rows, V]. The random stream of row r is
// (seed, first_row + r, offset), so a split into several calls with matching first_row gives
// the same tokens as one call.
template <typename Logit>
void sample_tokens(const std::string& where, const Logit* logits, size_t rows, size_t vocab,
                   const SamplingParams& params, uint64_t offset, uint64_t first_row,
                   int64_t* tokens, float* logprob, const ParallelFor& parallel_for) {
  check_sampling_params(where, params);
  if (rows == 0) return;
  if (vocab == 0) fail(where, "logits", "have a non-empty last axis", "V = 0");
  const size_t n_tasks = (rows + kRowsPerTask - 1) / kRowsPerTask;
  parallel_checked(parallel_for, n_tasks, [&](size_t task) {
    RowSampler sampler(vocab);
    std::vector<float> buffer;
    const size_t end = std::min(rows, (task + 1) * kRowsPerTask);
    for (size_t r = task * kRowsPerTask; r < end; ++r) {
      const PhiloxBlock bits = random_block(params.seed, first_row + r, offset);
      const RowResult result = sampler.sample(load_row(logits, r, vocab, buffer), params,
                                              uniform53(bits[0], bits[1]), where, r);
      tokens[r] = result.token;
      logprob[r] = result.logprob;
    }
  });
}

}  // namespace vampnet
