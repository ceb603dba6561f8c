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
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "det_math.h"
#include "errors.h"
#include "float16.h"
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

struct RowResult {
  int64_t token;
  float logprob;
};

// The logprob reported for a token of probability p: float32 probability, then its log.
inline float confidence_logprob(double p) {
  return static_cast<float>(det::log(static_cast<double>(static_cast<float>(p))));
}

// Samples rows of one vocabulary size; owns the scratch buffers, so use one per thread.
class RowSampler {
 public:
  explicit RowSampler(size_t vocab) : keep_(vocab), weight_(vocab), order_(vocab), kth_(vocab) {}

  // x: V logits. u: uniform [0, 1) draw (ignored at temperature 0). row: for error messages.
  RowResult sample(const float* x, const SamplingParams& params, double u, const std::string& where,
                   size_t row) {
    const size_t vocab = keep_.size();
    size_t arg_max = 0;
    float x_max = -std::numeric_limits<float>::infinity();
    for (size_t i = 0; i < vocab; ++i) {
      const float v = x[i];
      if (std::isnan(v) || v == std::numeric_limits<float>::infinity())
        fail(where, "logits", "be finite or -inf",
             to_text(v) + " at row " + std::to_string(row) + ", index " + std::to_string(i));
      if (v > x_max) {
        x_max = v;
        arg_max = i;
      }
    }
    if (x_max == -std::numeric_limits<float>::infinity())
      fail(where, "logits", "have a finite value in every row",
           "row " + std::to_string(row) + " all -inf");

    for (size_t i = 0; i < vocab; ++i)
      keep_[i] = x[i] > -std::numeric_limits<float>::infinity();
    if (params.top_k > 0 && static_cast<size_t>(params.top_k) < vocab) apply_top_k(x, params.top_k);

    const bool unit_scale = params.temperature == 0.0f || params.temperature == 1.0f;
    bool have_unit_weights = false;
    if (params.top_p < 1.0f) {
      fill_weights(x, x_max, 1.0);
      apply_top_p(x, params.top_p);
      have_unit_weights = true;
    }
    if (have_unit_weights && unit_scale) {
      for (size_t i = 0; i < vocab; ++i)
        if (!keep_[i]) weight_[i] = 0.0;
    } else {
      fill_weights(x, x_max, unit_scale ? 1.0 : static_cast<double>(params.temperature));
    }

    double total = 0.0;
    for (size_t i = 0; i < vocab; ++i) total += weight_[i];

    size_t token = arg_max;
    if (params.temperature > 0.0f) token = inverse_cdf(u * total);
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
  // <= top_p, so the first token crossing the threshold stays. Sorts only as much as needed.
  void apply_top_p(const float* x, float top_p) {
    double total = 0.0;
    for (size_t i = 0; i < keep_.size(); ++i) total += weight_[i];
    size_t n_kept = 0;
    for (size_t i = 0; i < keep_.size(); ++i)
      if (keep_[i]) order_[n_kept++] = static_cast<uint32_t>(i);
    const auto before = [x](uint32_t a, uint32_t b) { return x[a] > x[b] || (x[a] == x[b] && a < b); };
    const double threshold = static_cast<double>(top_p);
    double mass = 0.0;
    size_t walked = 0;
    size_t sorted = std::min<size_t>(n_kept, 32);
    while (true) {
      std::partial_sort(order_.begin(), order_.begin() + sorted, order_.begin() + n_kept, before);
      for (; walked < sorted; ++walked) {
        if (walked > 0 && mass > threshold) {
          for (size_t j = walked; j < n_kept; ++j) keep_[order_[j]] = false;
          return;
        }
        mass += weight_[order_[walked]] / total;
      }
      if (sorted == n_kept) return;
      sorted = std::min(n_kept, sorted * 4);
    }
  }

  void fill_weights(const float* x, float x_max, double temperature) {
    const double top = static_cast<double>(x_max);
    for (size_t i = 0; i < keep_.size(); ++i)
      weight_[i] = keep_[i] ? det::exp((static_cast<double>(x[i]) - top) / temperature) : 0.0;
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
  std::vector<uint32_t> order_;
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
