// One row of SampleTokens' semantics (kernels/sampling.h, RowSampler::sample) run by one thread
// block, giving the CPU's bits: the same weight_of / det::exp / det::log (shared host-device
// code), every double sum in index order by one thread (a float sum's order changes its bits, so
// no tree reduction touches a sum), and only order-free work (max, min index, flags, sorting keys
// that are all distinct) spread over the threads.
#pragma once

#include <cstdint>
#include <limits>

#include "../float16.h"
#include "../sampling.h"

namespace vampnet::cuda {

constexpr int kBlockThreads = 256;

// The per-row working memory: shared memory when it fits, else a slice of a global buffer.
struct RowScratch {
  float* x;          // [V] the row as float32
  double* weight;    // [V]
  uint64_t* keys;    // [sort_size] nucleus-order keys (only when a filter is on)
  unsigned char* keep;  // [V]
};

// Whether top-k or top-p is on, as RowSampler::sample decides it.
__host__ __device__ inline bool top_k_on(const SamplingParams& params, size_t vocab) {
  return params.top_k > 0 && static_cast<size_t>(params.top_k) < vocab;
}
__host__ __device__ inline bool filters_on(const SamplingParams& params, size_t vocab) {
  return top_k_on(params, vocab) || params.top_p < 1.0f;
}

// The smallest power of two >= n (n >= 1): the bitonic sort's length.
__host__ __device__ inline size_t sort_size(size_t n) {
  size_t size = 1;
  while (size < n) size <<= 1;
  return size;
}

// Bytes of RowScratch for a row of `vocab`, 16-byte aligned pieces.
__host__ __device__ inline size_t row_scratch_bytes(size_t vocab, bool filters) {
  const auto align = [](size_t bytes) { return (bytes + 15) / 16 * 16; };
  return align(vocab * sizeof(double)) + (filters ? align(sort_size(vocab) * sizeof(uint64_t)) : 0) +
         align(vocab * sizeof(float)) + align(vocab);
}

__device__ inline RowScratch carve_row_scratch(unsigned char* base, size_t vocab, bool filters) {
  const auto align = [](size_t bytes) { return (bytes + 15) / 16 * 16; };
  RowScratch s;
  s.weight = reinterpret_cast<double*>(base);
  base += align(vocab * sizeof(double));
  s.keys = filters ? reinterpret_cast<uint64_t*>(base) : nullptr;
  if (filters) base += align(sort_size(vocab) * sizeof(uint64_t));
  s.x = reinterpret_cast<float*>(base);
  base += align(vocab * sizeof(float));
  s.keep = base;
  return s;
}

__device__ inline float load_logit(const float* row, size_t i) { return row[i]; }
__device__ inline float load_logit(const uint16_t* row, size_t i) { return half_to_float(row[i]); }

// Sorts keys[0, n) (n a power of two) into decreasing order with the whole block; the keys are
// distinct (they hold the index), so the result does not depend on the network.
__device__ inline void block_sort_descending(uint64_t* keys, size_t n) {
  for (size_t k = 2; k <= n; k <<= 1) {
    for (size_t j = k >> 1; j > 0; j >>= 1) {
      for (size_t i = threadIdx.x; i < n; i += blockDim.x) {
        const size_t partner = i ^ j;
        if (partner > i) {
          const uint64_t a = keys[i], b = keys[partner];
          const bool descending = (i & k) == 0;
          if (descending ? a < b : a > b) {
            keys[i] = b;
            keys[partner] = a;
          }
        }
      }
      __syncthreads();
    }
  }
}

// Block-wide max of floats (no NaN: checked before). +0 and -0 may come back either way; every
// use of the max treats them alike (x - max, x == max).
__device__ inline float block_max(float value, float* shared) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float other = __shfl_down_sync(0xffffffffu, value, offset);
    value = other > value ? other : value;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // shared may still be read by a previous reduction
  if (lane == 0) shared[warp] = value;
  __syncthreads();
  if (threadIdx.x == 0) {
    float best = shared[0];
    for (int w = 1; w < static_cast<int>(blockDim.x / 32); ++w) best = shared[w] > best ? shared[w] : best;
    shared[0] = best;
  }
  __syncthreads();
  return shared[0];
}

// Block-wide min of unsigned values.
__device__ inline unsigned long long block_min(unsigned long long value,
                                               unsigned long long* shared) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    const unsigned long long other = __shfl_down_sync(0xffffffffu, value, offset);
    value = other < value ? other : value;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) shared[warp] = value;
  __syncthreads();
  if (threadIdx.x == 0) {
    unsigned long long best = shared[0];
    for (int w = 1; w < static_cast<int>(blockDim.x / 32); ++w) best = shared[w] < best ? shared[w] : best;
    shared[0] = best;
  }
  __syncthreads();
  return shared[0];
}

// Small block-shared state of one row.
struct RowShared {
  float reduce_float[kBlockThreads / 32];
  unsigned long long reduce_index[kBlockThreads / 32];
  double total;
  size_t token;
};

// Samples one row with the whole block (blockDim.x == kBlockThreads). Returns false (on every
// thread) when the row holds NaN or +inf, or only -inf: the caller raises the flag and the host
// rebuilds the CPU's message (kernels/cuda/kernels.h). On success thread 0 holds the result.
template <typename Logit>
__device__ bool sample_row(const Logit* row, size_t vocab, const SamplingParams& params, double u,
                           RowScratch s, RowShared& sh, RowResult* result) {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  unsigned long long bad = 0;
  float local_max = -kInf;
  for (size_t i = threadIdx.x; i < vocab; i += blockDim.x) {
    const float x = load_logit(row, i);
    s.x[i] = x;
    bad |= (x != x) | (x == kInf);
    local_max = x > local_max ? x : local_max;
  }
  // A max over NaN is meaningless: the flag is reduced first (as min of the negation).
  if (block_min(bad ? 0ull : 1ull, sh.reduce_index) == 0ull) return false;
  const float x_max = block_max(local_max, sh.reduce_float);
  if (x_max == -kInf) return false;

  const bool top_p_on = params.top_p < 1.0f;
  const bool filters = filters_on(params, vocab);
  if (filters) {
    const size_t n_sort = sort_size(vocab);
    for (size_t i = threadIdx.x; i < n_sort; i += blockDim.x) {
      // Padding keys are 0, below every real key (the -inf key is 0x007fffff...): they sort last.
      s.keys[i] = i < vocab ? order_key(s.x[i], static_cast<uint32_t>(i)) : 0;
      if (i < vocab) s.keep[i] = s.x[i] > -kInf;
    }
    __syncthreads();
    block_sort_descending(s.keys, n_sort);
    if (top_k_on(params, vocab)) {
      // The k-th key in nucleus order holds the k-th largest value: nth_element's threshold.
      const float threshold = s.x[key_index(s.keys[params.top_k - 1])];
      for (size_t i = threadIdx.x; i < vocab; i += blockDim.x)
        s.keep[i] = s.keep[i] && s.x[i] >= threshold;
      __syncthreads();
    }
    if (top_p_on) {
      for (size_t i = threadIdx.x; i < vocab; i += blockDim.x)
        s.weight[i] = s.keep[i] ? weight_of(s.x[i], x_max, 1.0, false) : 0.0;
      __syncthreads();
      if (threadIdx.x == 0) {
        double total = 0.0;
        for (size_t i = 0; i < vocab; ++i) total += s.weight[i];
        // The walk over every kept token in nucleus order. The CPU walks only the tokens above a
        // cheap mass floor whose tail holds > top_p + 1e-6 of the mass: those are a prefix of
        // this order and the walk stops inside them (or right after them), so both keep the
        // same tokens (docs/ops.md, "CUDA kernels").
        const double threshold = static_cast<double>(params.top_p);
        double mass = 0.0;
        size_t walked = 0;
        bool cut = false;
        for (size_t j = 0; j < vocab; ++j) {
          const uint32_t index = key_index(s.keys[j]);
          if (!s.keep[index]) continue;
          if (cut || (walked > 0 && mass > threshold)) {
            cut = true;
            s.keep[index] = 0;
            continue;
          }
          mass += s.weight[index] / total;
          ++walked;
        }
      }
      __syncthreads();
    }
  }

  const bool unit_scale = params.temperature == 0.0f || params.temperature == 1.0f;
  const double temperature = unit_scale ? 1.0 : static_cast<double>(params.temperature);
  for (size_t i = threadIdx.x; i < vocab; i += blockDim.x) {
    const bool kept = !filters || s.keep[i];
    // With top-p at unit scale the CPU reuses the top-p weights: the same function of the same
    // inputs, so recomputing gives the same bits.
    s.weight[i] = kept ? weight_of(s.x[i], x_max, temperature, !unit_scale) : 0.0;
  }
  __syncthreads();

  if (params.temperature > 0.0f) {
    if (threadIdx.x == 0) {
      double total = 0.0;
      for (size_t i = 0; i < vocab; ++i) total += s.weight[i];
      // inverse_cdf: the first index whose running sum exceeds u * total, else the last kept.
      const double target = u * total;
      double running = 0.0;
      size_t last_positive = 0, token = vocab;
      for (size_t i = 0; i < vocab && token == vocab; ++i) {
        running += s.weight[i];
        if (running > target) token = i;
        else if (s.weight[i] > 0.0) last_positive = i;
      }
      sh.total = total;
      sh.token = token == vocab ? last_positive : token;
    }
  } else {
    // The argmax, lowest index on ties: an order-free min over the indices holding the max.
    unsigned long long first = ~0ull;
    for (size_t i = threadIdx.x; i < vocab; i += blockDim.x)
      if (s.x[i] == x_max && i < first) first = i;
    first = block_min(first, sh.reduce_index);
    if (threadIdx.x == 0) {
      double total = 0.0;
      for (size_t i = 0; i < vocab; ++i) total += s.weight[i];
      sh.total = total;
      sh.token = static_cast<size_t>(first);
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    result->token = static_cast<int64_t>(sh.token);
    result->logprob = confidence_logprob(s.weight[sh.token] / sh.total);
  }
  return true;
}

}  // namespace vampnet::cuda
