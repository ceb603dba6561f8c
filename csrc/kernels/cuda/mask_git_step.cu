// MaskGitStep on the GPU, four kernels in stream order:
//   check_items    one block per item: the input checks, the masked count of each item;
//   sample_masked  one block per (item, position): sample the masked ones (row_sampler.cuh) and
//                  draw their Gumbel noise, from the same Philox counters as the CPU;
//   choose_cut     one block per item: n_to_mask, then the k-th smallest confidence (sorting
//                  distinct keys, so the value does not depend on the order of work);
//   write_outputs  one thread per cell: codes_out, mask_out, model_input.
// Once the checks or the sampling have flagged bad input, choose_cut and write_outputs do
// nothing: the op then runs the CPU kernel for its message, and a bad n_masked_start would
// otherwise index outside the keys. (sample_masked itself does not read the flag: its blocks
// set it as they go, and a block must take its barriers all together.)
#include "kernels.h"
#include "launch.cuh"

namespace vampnet::cuda {

namespace {

constexpr const char* kWhere = "MaskGitStep";

struct Dims {
  int64_t B, C, T, P, V, ncc, positions;
};

Dims dims_of(const MaskGitStepShape& shape) {
  return {shape.batch,     shape.codebooks, shape.frames,
          shape.predicted, shape.vocab,     shape.conditioning(),
          shape.frames * shape.predicted};
}

// The flat cell [b, ncc + c, t] of codes / mask for position p = t * P + c of item b.
__device__ inline int64_t cell_of(const Dims& d, int64_t b, int64_t p) {
  return (b * d.C + d.ncc + p % d.P) * d.T + p / d.P;
}

__global__ void check_items(Dims d, const int64_t* codes, const bool* mask,
                            const int64_t* n_masked_start, int64_t* n_masked, int* bad_input) {
  __shared__ unsigned long long count;
  const int64_t b = blockIdx.x;
  if (threadIdx.x == 0) count = 0;
  __syncthreads();
  unsigned long long local = 0;
  bool bad = false;
  for (int64_t j = threadIdx.x; j < d.C * d.T; j += blockDim.x) {
    const int64_t c = j / d.T, i = b * d.C * d.T + j;
    if (mask[i]) {
      bad |= c < d.ncc;
      local += c >= d.ncc;
    } else {
      bad |= codes[i] < 0 || codes[i] >= d.V;
    }
  }
  atomicAdd(&count, local);
  if (bad) *bad_input = 1;
  __syncthreads();
  if (threadIdx.x == 0) {
    n_masked[b] = static_cast<int64_t>(count);
    if (n_masked_start && (n_masked_start[b] < 0 || n_masked_start[b] > d.positions))
      *bad_input = 1;
  }
}

template <typename Logit>
__global__ void sample_masked(Dims d, const Logit* logits, const bool* mask, SamplingParams params,
                              int64_t step, const uint64_t* seeds, const uint64_t* streams,
                              int64_t* token, float* logprob, float* noise,
                              unsigned char* row_global, size_t row_bytes, int* bad_input) {
  __shared__ RowShared shared;
  const int64_t row = blockIdx.x, b = row / d.positions, p = row % d.positions;
  if (!mask[cell_of(d, b, p)]) return;
  const size_t vocab = static_cast<size_t>(d.V);
  const RowScratch scratch =
      block_row_scratch(row_global, row_bytes, vocab, filters_on(params, vocab));
  const PhiloxBlock bits = random_block(seeds[b], mask_git_step_row(static_cast<int64_t>(streams[b]), p),
                                        static_cast<uint64_t>(step));
  RowResult result{};
  if (!sample_row(logits + row * d.V, vocab, params, uniform53(bits[0], bits[1]), scratch, shared,
                  &result)) {
    if (threadIdx.x == 0) *bad_input = 1;
    return;
  }
  if (threadIdx.x == 0) {
    token[row] = result.token;
    logprob[row] = result.logprob;
    noise[row] = gumbel(uniform53(bits[2], bits[3]));
  }
}

__global__ void choose_cut(Dims d, const bool* mask, const int64_t* n_masked_start,
                           const int64_t* n_masked, bool batch_coupled, int64_t step,
                           int64_t n_steps, float scale, const float* logprob, const float* noise,
                           uint64_t* keys, size_t n_sort, float* cut, const int* bad_input) {
  const int64_t b = blockIdx.x;
  if (*bad_input) return;
  const auto n0_of = [&](int64_t item) {
    return n_masked_start ? n_masked_start[item] : n_masked[item];
  };
  int64_t n0 = n0_of(b);
  if (batch_coupled) {
    n0 = 0;
    for (int64_t item = 0; item < d.B; ++item) n0 += n0_of(item);
  }
  const int64_t m = n_masked[b];
  const int64_t k = n_to_mask(step, n_steps, n0, m);
  // k < 0 only from an n0 the checks refused (or a coupled sum that overflowed), kept out of
  // the keys' indexes all the same.
  if (k >= m || k < 0 || n0 < 0) {  // nothing is cut: every masked position stays masked
    if (threadIdx.x == 0) cut[b] = std::numeric_limits<float>::infinity();
    return;
  }
  uint64_t* item_keys = keys + b * n_sort;
  const int64_t first_row = b * d.positions;
  for (size_t p = threadIdx.x; p < n_sort; p += blockDim.x) {
    uint64_t key = 0;  // below every real key: padding and unmasked positions sort last
    if (static_cast<int64_t>(p) < d.positions && mask[cell_of(d, b, p)])
      key = order_key(masking_confidence(logprob[first_row + p], noise[first_row + p], scale),
                      static_cast<uint32_t>(p));
    item_keys[p] = key;
  }
  __syncthreads();
  block_sort_descending(item_keys, n_sort);
  // Decreasing order: the k-th smallest (0-based) of the m confidences is at m - 1 - k.
  if (threadIdx.x == 0) {
    const int64_t p = key_index(item_keys[m - 1 - k]);
    cut[b] = masking_confidence(logprob[first_row + p], noise[first_row + p], scale);
  }
}

__global__ void write_outputs(Dims d, const int64_t* codes, const bool* mask, const int64_t* token,
                              const float* logprob, const float* noise, float scale,
                              const float* cut, int64_t* codes_out, bool* mask_out,
                              int64_t* model_input, const int* bad_input) {
  if (*bad_input) return;
  const int64_t cells = d.B * d.C * d.T;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < cells;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / (d.C * d.T), c = (i / d.T) % d.C, t = i % d.T;
    int64_t code = codes[i];
    bool masked_out = false;
    if (mask[i] && c >= d.ncc) {
      const int64_t row = b * d.positions + t * d.P + (c - d.ncc);
      code = token[row];
      masked_out = masking_confidence(logprob[row], noise[row], scale) < cut[b];
    }
    codes_out[i] = code;
    mask_out[i] = masked_out;
    model_input[i] = masked_out ? d.V : code;
  }
}

struct MaskGitStepScratch {
  int* bad_input;
  int64_t* n_masked;
  uint64_t *seeds, *streams;
  int64_t* token;
  float *logprob, *noise, *cut;
  uint64_t* keys;
  size_t n_sort;
  unsigned char* row_global;  // nullptr: rows work in shared memory
  size_t row_bytes;
};

MaskGitStepScratch layout(ScratchCarver& carver, const Dims& d, const SamplingParams& params) {
  const auto B = static_cast<size_t>(d.B), rows = static_cast<size_t>(d.B * d.positions);
  const bool filters = filters_on(params, static_cast<size_t>(d.V));
  MaskGitStepScratch s{};
  s.bad_input = carver.take<int>(1);
  s.n_masked = carver.take<int64_t>(B);
  s.seeds = carver.take<uint64_t>(B);
  s.streams = carver.take<uint64_t>(B);
  s.token = carver.take<int64_t>(rows);
  s.logprob = carver.take<float>(rows);
  s.noise = carver.take<float>(rows);
  s.cut = carver.take<float>(B);
  s.n_sort = sort_size(static_cast<size_t>(d.positions));
  s.keys = carver.take<uint64_t>(B * s.n_sort);
  s.row_bytes = row_scratch_bytes(static_cast<size_t>(d.V), filters);
  if (!row_scratch_in_shared(static_cast<size_t>(d.V), filters))
    s.row_global = carver.take<unsigned char>(rows * s.row_bytes);
  return s;
}

}  // namespace

size_t mask_git_step_scratch_bytes(const MaskGitStepShape& shape, const SamplingParams& params) {
  ScratchCarver carver;
  layout(carver, dims_of(shape), params);
  return carver.used();
}

bool mask_git_step(const MaskGitStepShape& shape, const void* logits, bool float16,
                   const int64_t* codes, const bool* mask, const int64_t* n_masked_start,
                   const MaskGitStepParams& params, int64_t* codes_out, bool* mask_out,
                   int64_t* model_input, void* scratch, void* stream) {
  const Dims d = dims_of(shape);
  const size_t rows = static_cast<size_t>(d.B * d.positions);
  check_grid(kWhere, rows);
  ScratchCarver carver(scratch);
  const MaskGitStepScratch s = layout(carver, d, params.sampling);
  const cudaStream_t cuda_stream = as_stream(stream);

  // Each item's key and stream, resolved on the host as the CPU kernel resolves them. The
  // vectors outlive the copies: copy_to_host below waits for the stream.
  std::vector<uint64_t> seeds(static_cast<size_t>(d.B)), streams(static_cast<size_t>(d.B));
  for (int64_t b = 0; b < d.B; ++b) {
    seeds[b] = params.item_seed(b);
    streams[b] = static_cast<uint64_t>(params.item_stream(b));
  }
  const size_t key_bytes = seeds.size() * sizeof(uint64_t);
  check(cudaMemcpyAsync(s.seeds, seeds.data(), key_bytes, cudaMemcpyHostToDevice, cuda_stream),
        kWhere, "cudaMemcpyAsync");
  check(cudaMemcpyAsync(s.streams, streams.data(), key_bytes, cudaMemcpyHostToDevice, cuda_stream),
        kWhere, "cudaMemcpyAsync");
  check(cudaMemsetAsync(s.bad_input, 0, sizeof(int), cuda_stream), kWhere, "cudaMemsetAsync");

  const auto items = static_cast<unsigned>(d.B);
  check_items<<<items, kBlockThreads, 0, cuda_stream>>>(d, codes, mask, n_masked_start, s.n_masked,
                                                       s.bad_input);
  check(cudaGetLastError(), kWhere, "the check kernel's launch");
  const size_t shared_bytes = s.row_global ? 0 : s.row_bytes;
  const auto blocks = static_cast<unsigned>(rows);
  if (float16)
    sample_masked<<<blocks, kBlockThreads, shared_bytes, cuda_stream>>>(
        d, static_cast<const uint16_t*>(logits), mask, params.sampling, params.step, s.seeds,
        s.streams, s.token, s.logprob, s.noise, s.row_global, s.row_bytes, s.bad_input);
  else
    sample_masked<<<blocks, kBlockThreads, shared_bytes, cuda_stream>>>(
        d, static_cast<const float*>(logits), mask, params.sampling, params.step, s.seeds,
        s.streams, s.token, s.logprob, s.noise, s.row_global, s.row_bytes, s.bad_input);
  check(cudaGetLastError(), kWhere, "the sampling kernel's launch");
  const float scale = noise_scale(params.mask_temperature, params.step, params.n_steps);
  choose_cut<<<items, kBlockThreads, 0, cuda_stream>>>(
      d, mask, n_masked_start, s.n_masked, params.batch_coupled, params.step, params.n_steps, scale,
      s.logprob, s.noise, s.keys, s.n_sort, s.cut, s.bad_input);
  check(cudaGetLastError(), kWhere, "the cut kernel's launch");
  const int64_t cells = d.B * d.C * d.T;
  const auto cell_blocks = static_cast<unsigned>(std::min<int64_t>((cells + 255) / 256, 65535));
  write_outputs<<<cell_blocks, 256, 0, cuda_stream>>>(d, codes, mask, s.token, s.logprob, s.noise,
                                                      scale, s.cut, codes_out, mask_out,
                                                      model_input, s.bad_input);
  check(cudaGetLastError(), kWhere, "the output kernel's launch");
  int bad_input = 0;
  copy_to_host(&bad_input, s.bad_input, sizeof bad_input, stream);
  return bad_input != 0;
}

}  // namespace vampnet::cuda
