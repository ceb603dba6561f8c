// One step of VampNet's iterative generation (docs/model.md §3.2), fused: sample every masked position,
// write the tokens, choose by VampNet's cosine schedule and Gumbel-noised confidence which
// positions to mask again, and build the next forward pass's input with the MASK token.
// Pure C++, no ORT types; mirrored by vampnet_onnx.reference.mask_git_step.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "det_math.h"
#include "errors.h"
#include "host_device.h"
#include "parallel.h"
#include "rng.h"
#include "sampling.h"

namespace vampnet {

// Shapes: logits [B, T, P, V], codes / mask / outputs [B, C, T], C = n_conditioning + P.
struct MaskGitStepShape {
  int64_t batch = 0, codebooks = 0, frames = 0, predicted = 0, vocab = 0;
  int64_t conditioning() const { return codebooks - predicted; }
};

struct MaskGitStepParams {
  int64_t step = 0, n_steps = 1;
  SamplingParams sampling;
  float mask_temperature = 10.5f;
  bool batch_coupled = false;  // upstream's schedule: N0 counted over the whole batch
  // Index of item 0 in the random streams: item b draws the streams of item batch_offset + b, so
  // a batch cut into calls (or chunks run one by one) gives what one call would.
  int64_t batch_offset = 0;
  // Per-item keys, each empty or of length B (`read_item_keys`): item b draws with key seeds[b]
  // (instead of sampling.seed) from stream item batch_offsets[b] (instead of batch_offset + b),
  // so items of different pieces, each with its own seed and stream, share one batch.
  std::vector<int64_t> seeds, batch_offsets;

  uint64_t item_seed(int64_t b) const {
    return seeds.empty() ? sampling.seed : static_cast<uint64_t>(seeds[b]);
  }
  int64_t item_stream(int64_t b) const {
    return batch_offsets.empty() ? batch_offset + b : batch_offsets[b];
  }
};

// A key input of MaskGitStep (seed, batch_offset) of `shape` holding `count` values at `data`:
// one element (rank 0 or [1]) is the batch's scalar, returned in `scalar`; shape [B] gives each
// item its own value, returned in `per_item`. Anything else is an error.
inline void read_item_keys(const std::string& where, const std::string& name,
                           const std::vector<int64_t>& shape, int64_t count, const int64_t* data,
                           int64_t batch, int64_t* scalar, std::vector<int64_t>* per_item) {
  if (count == 1) {
    *scalar = data[0];
    per_item->clear();
  } else if (shape == std::vector<int64_t>{batch}) {
    per_item->assign(data, data + batch);
  } else {
    fail(where, name, "have one element or shape [B] = [" + to_text(batch) + "]",
         "shape " + shape_text(shape));
  }
}

// Schedule value floor(gamma(r) * n0) before the clamps, in VampNet's float32 arithmetic:
// r = float32((step + 1) / n_steps), gamma = clamp(cos(r * pi / 2), 1e-10, 1).
VAMPNET_HD inline int64_t schedule_count(int64_t step, int64_t n_steps, int64_t n0) {
  const float r = static_cast<float>(static_cast<double>(step + 1) / static_cast<double>(n_steps));
  const float angle = (r * static_cast<float>(3.14159265358979323846)) / 2.0f;
  float gamma = static_cast<float>(det::cos(static_cast<double>(angle)));
  gamma = std::min(std::max(gamma, static_cast<float>(1e-10)), 1.0f);
  const float product = gamma * static_cast<float>(n0);
  return static_cast<int64_t>(std::floor(product));
}

// How many masked positions stay masked after `step`: the schedule, and on all but the last step
// at least 1 and at most (currently masked - 1).
VAMPNET_HD inline int64_t n_to_mask(int64_t step, int64_t n_steps, int64_t n0, int64_t n_masked) {
  int64_t k = schedule_count(step, n_steps, n0);
  if (step != n_steps - 1) k = std::max<int64_t>(1, std::min(n_masked - 1, k));
  return k;
}

// Scale of the Gumbel noise added to the confidences: mask_temperature * (1 - r), float32.
VAMPNET_HD inline float noise_scale(float mask_temperature, int64_t step, int64_t n_steps) {
  const float r = static_cast<float>(static_cast<double>(step + 1) / static_cast<double>(n_steps));
  return mask_temperature * (1.0f - r);
}

// Standard Gumbel noise -log(-log(U)), U in [1e-20, 1), as float32.
VAMPNET_HD inline float gumbel(double u) {
  return static_cast<float>(-det::log(-det::log(std::max(u, 1e-20))));
}

// The confidence that decides which positions stay masked: the token's logprob plus the scaled
// Gumbel noise, two float32 roundings.
VAMPNET_HD inline float masking_confidence(float logprob, float noise, float scale) {
  const float scaled_noise = scale * noise;
  return logprob + scaled_noise;
}

// Random stream of position p = t * P + c of stream item b (shared with SampleTokens' row ids);
// b = batch_offset + the item's index in the batch, or the item's own batch_offset.
VAMPNET_HD inline uint64_t mask_git_step_row(int64_t b, int64_t position) {
  return (static_cast<uint64_t>(b) << 32) | static_cast<uint64_t>(position);
}

inline void check_mask_git_step_params(const std::string& where, const MaskGitStepParams& params) {
  check_sampling_params(where, params.sampling);
  if (params.n_steps < 1) fail(where, "n_steps", "be >= 1", to_text(params.n_steps));
  if (params.step < 0 || params.step >= params.n_steps)
    fail(where, "step", "be in [0, n_steps = " + to_text(params.n_steps) + ")",
         to_text(params.step));
  if (!(params.mask_temperature >= 0.0f) || std::isinf(params.mask_temperature))
    fail(where, "mask_temperature", "be finite and >= 0", to_text(params.mask_temperature));
}

// Checks the shapes of logits [B, T, P, V], codes and mask [B, C, T] and n_masked_start [B]
// (empty vector: absent) and returns the problem's dimensions.
inline MaskGitStepShape check_mask_git_step_shapes(const std::string& where,
                                                   const std::vector<int64_t>& logits,
                                                   const std::vector<int64_t>& codes,
                                                   const std::vector<int64_t>& mask,
                                                   const std::vector<int64_t>* n_masked_start) {
  if (logits.size() != 4)
    fail(where, "logits", "have rank 4 [B, T, P, V]", "shape " + shape_text(logits));
  if (codes.size() != 3)
    fail(where, "codes", "have rank 3 [B, C, T]", "shape " + shape_text(codes));
  if (mask != codes)
    fail(where, "mask", "have the shape of codes " + shape_text(codes), shape_text(mask));
  MaskGitStepShape shape{codes[0], codes[1], codes[2], logits[2], logits[3]};
  if (logits[0] != shape.batch || logits[1] != shape.frames)
    fail(where, "logits", "have shape [B, T, P, V] with B, T of codes " + shape_text(codes),
         shape_text(logits));
  if (shape.predicted < 1 || shape.predicted > shape.codebooks)
    fail(where, "logits", "have P in [1, C = " + to_text(shape.codebooks) + "] predicted codebooks",
         "P = " + to_text(shape.predicted));
  if (shape.vocab < 1) fail(where, "logits", "have V >= 1", "V = 0");
  if (shape.frames * shape.predicted >= (int64_t{1} << 32) || shape.batch >= (int64_t{1} << 32))
    fail(where, "codes", "have B < 2^32 and T * P < 2^32", shape_text(codes));
  if (n_masked_start && *n_masked_start != std::vector<int64_t>{shape.batch})
    fail(where, "n_masked_start", "have shape [B] = [" + to_text(shape.batch) + "]",
         shape_text(*n_masked_start));
  return shape;
}

// Outputs: codes_out (sampled tokens at masked positions), mask_out (positions to generate in the
// next step), model_input (codes_out with the MASK token V where mask_out). The MASK token id is
// V, the vocabulary size (1024 for VampNet). n_masked_start [B]: masked positions per item before
// step 0 (N0 of the schedule); nullptr means "count the current mask", which is right at step 0.
template <typename Logit>
void mask_git_step(const std::string& where, const MaskGitStepShape& shape, const Logit* logits,
                   const int64_t* codes, const bool* mask, const int64_t* n_masked_start,
                   const MaskGitStepParams& params, int64_t* codes_out, bool* mask_out,
                   int64_t* model_input, const ParallelFor& parallel_for) {
  check_mask_git_step_params(where, params);
  const int64_t B = shape.batch, C = shape.codebooks, T = shape.frames, P = shape.predicted,
                V = shape.vocab, ncc = shape.conditioning();
  if (!params.seeds.empty() && static_cast<int64_t>(params.seeds.size()) != B)
    fail(where, "seed", "have one element or shape [B] = [" + to_text(B) + "]",
         "shape [" + to_text(params.seeds.size()) + "]");
  if (params.batch_offsets.empty()) {
    if (params.batch_offset < 0 || params.batch_offset > (int64_t{1} << 32) - B)
      fail(where, "batch_offset", "be in [0, 2^32 - B = " + to_text((int64_t{1} << 32) - B) + "]",
           to_text(params.batch_offset));
  } else {
    if (static_cast<int64_t>(params.batch_offsets.size()) != B)
      fail(where, "batch_offset", "have one element or shape [B] = [" + to_text(B) + "]",
           "shape [" + to_text(params.batch_offsets.size()) + "]");
    for (int64_t b = 0; b < B; ++b)
      if (params.batch_offsets[b] < 0 || params.batch_offsets[b] > (int64_t{1} << 32) - 1)
        fail(where, "batch_offset", "be in [0, 2^32 - 1]",
             to_text(params.batch_offsets[b]) + " for item " + to_text(b));
  }
  const int64_t positions = T * P;
  const auto check_start = [&](int64_t b, int64_t n) {
    if (n < 0 || n > positions)
      fail(where, "n_masked_start", "be in [0, T * P = " + to_text(positions) + "]",
           to_text(n) + " for item " + to_text(b));
  };
  // No cells (B = 0 or T = 0): nothing to sample or write. Return before the per-item scratch:
  // B can be 2^32 - 1 in a zero-size tensor, and memory must stay bounded by the inputs' sizes.
  if (B * C * T == 0) {
    for (int64_t b = 0; n_masked_start && b < B; ++b) check_start(b, n_masked_start[b]);
    return;
  }

  // Masked positions of each item in the flat order p = t * P + c, and the checks on the codes.
  std::vector<std::vector<uint32_t>> masked(B);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t c = 0; c < C; ++c) {
        const int64_t i = (b * C + c) * T + t;
        if (mask[i]) {
          if (c < ncc)
            fail(where, "mask", "be false in the " + to_text(ncc) + " conditioning codebooks",
                 "true at [" + to_text(b) + ", " + to_text(c) + ", " + to_text(t) + "]");
          masked[b].push_back(static_cast<uint32_t>(t * P + (c - ncc)));
        } else if (codes[i] < 0 || codes[i] >= V) {
          fail(where, "codes", "be in [0, " + to_text(V) + ") where mask is false",
               to_text(codes[i]) + " at [" + to_text(b) + ", " + to_text(c) + ", " + to_text(t) +
                   "]");
        }
      }
    }
  }
  std::vector<int64_t> n0(B);
  for (int64_t b = 0; b < B; ++b) {
    n0[b] = n_masked_start ? n_masked_start[b] : static_cast<int64_t>(masked[b].size());
    check_start(b, n0[b]);
  }
  if (params.batch_coupled) {
    int64_t total = 0;
    for (int64_t b = 0; b < B; ++b) total += n0[b];
    std::fill(n0.begin(), n0.end(), total);
  }

  // Sample all masked positions of all items in parallel.
  std::vector<size_t> first(B + 1, 0);
  for (int64_t b = 0; b < B; ++b) first[b + 1] = first[b] + masked[b].size();
  const size_t n_rows = first[B];
  std::vector<int64_t> token(n_rows);
  std::vector<float> logprob(n_rows), noise(n_rows);
  const size_t n_tasks = (n_rows + kRowsPerTask - 1) / kRowsPerTask;
  parallel_checked(parallel_for, n_tasks, [&](size_t task) {
    RowSampler sampler(static_cast<size_t>(V));
    std::vector<float> buffer;
    const size_t end = std::min(n_rows, (task + 1) * kRowsPerTask);
    size_t b =
        std::upper_bound(first.begin(), first.end(), task * kRowsPerTask) - first.begin() - 1;
    for (size_t j = task * kRowsPerTask; j < end; ++j) {
      while (j >= first[b + 1]) ++b;
      const uint32_t p = masked[b][j - first[b]];
      const auto item = static_cast<int64_t>(b);
      const PhiloxBlock bits =
          random_block(params.item_seed(item), mask_git_step_row(params.item_stream(item), p),
                       static_cast<uint64_t>(params.step));
      const size_t row = static_cast<size_t>(b) * positions + p;
      const RowResult result = sampler.sample(load_row(logits, row, V, buffer), params.sampling,
                                              uniform53(bits[0], bits[1]), where, row);
      token[j] = result.token;
      logprob[j] = result.logprob;
      noise[j] = gumbel(uniform53(bits[2], bits[3]));
    }
  });

  std::copy(codes, codes + B * C * T, codes_out);
  std::fill(mask_out, mask_out + B * C * T, false);
  const float scale = noise_scale(params.mask_temperature, params.step, params.n_steps);
  std::vector<float> confidence, sorted;
  for (int64_t b = 0; b < B; ++b) {
    const size_t m = masked[b].size();
    confidence.resize(m);
    for (size_t j = 0; j < m; ++j)
      confidence[j] = masking_confidence(logprob[first[b] + j], noise[first[b] + j], scale);
    const int64_t k = n_to_mask(params.step, params.n_steps, n0[b], static_cast<int64_t>(m));
    // Upstream keeps masked every position whose confidence is strictly below the k-th smallest
    // (0-based) of all positions; unmasked positions count as +inf.
    float cut = std::numeric_limits<float>::infinity();
    if (k < static_cast<int64_t>(m)) {
      sorted = confidence;
      std::nth_element(sorted.begin(), sorted.begin() + k, sorted.end());
      cut = sorted[k];
    }
    for (size_t j = 0; j < m; ++j) {
      const int64_t p = masked[b][j];
      const int64_t i = (b * C + ncc + p % P) * T + p / P;
      codes_out[i] = token[first[b] + j];
      mask_out[i] = confidence[j] < cut;
    }
  }
  for (int64_t i = 0; i < B * C * T; ++i) model_input[i] = mask_out[i] ? V : codes_out[i];
}

}  // namespace vampnet
