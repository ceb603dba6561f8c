// SampleTokens on the GPU: one block per row, row_sampler.cuh.
#include "kernels.h"
#include "launch.cuh"

namespace vampnet::cuda {

namespace {

template <typename Logit>
__global__ void sample_tokens_kernel(const Logit* logits, size_t vocab, SamplingParams params,
                                     uint64_t offset, uint64_t first_row, int64_t* tokens,
                                     float* logprob, unsigned char* row_global, size_t row_bytes,
                                     int* bad_input) {
  __shared__ RowShared shared;
  const size_t r = blockIdx.x;
  const bool filters = filters_on(params, vocab);
  const RowScratch scratch = block_row_scratch(row_global, row_bytes, vocab, filters);
  const PhiloxBlock bits = random_block(params.seed, first_row + r, offset);
  RowResult result{};
  if (!sample_row(logits + r * vocab, vocab, params, uniform53(bits[0], bits[1]), scratch, shared,
                  &result)) {
    if (threadIdx.x == 0) *bad_input = 1;
    return;
  }
  if (threadIdx.x == 0) {
    tokens[r] = result.token;
    logprob[r] = result.logprob;
  }
}

struct SampleTokensScratch {
  int* bad_input;
  unsigned char* row_global;  // nullptr: rows work in shared memory
  size_t row_bytes;
};

SampleTokensScratch layout(ScratchCarver& carver, size_t rows, size_t vocab,
                           const SamplingParams& params) {
  const bool filters = filters_on(params, vocab);
  SampleTokensScratch s{};
  s.bad_input = carver.take<int>(1);
  s.row_bytes = row_scratch_bytes(vocab, filters);
  if (!row_scratch_in_shared(vocab, filters)) s.row_global = carver.take<unsigned char>(rows * s.row_bytes);
  return s;
}

}  // namespace

size_t sample_tokens_scratch_bytes(size_t rows, size_t vocab, const SamplingParams& params) {
  ScratchCarver carver;
  layout(carver, rows, vocab, params);
  return carver.used();
}

bool sample_tokens(const void* logits, bool float16, size_t rows, size_t vocab,
                   const SamplingParams& params, uint64_t offset, uint64_t first_row,
                   int64_t* tokens, float* logprob, void* scratch, void* stream) {
  constexpr const char* kWhere = "SampleTokens";
  if (rows == 0) return false;
  check_grid(kWhere, rows);
  ScratchCarver carver(scratch);
  const SampleTokensScratch s = layout(carver, rows, vocab, params);
  const cudaStream_t cuda_stream = as_stream(stream);
  check(cudaMemsetAsync(s.bad_input, 0, sizeof(int), cuda_stream), kWhere, "cudaMemsetAsync");
  const size_t shared_bytes = s.row_global ? 0 : s.row_bytes;
  const auto blocks = static_cast<unsigned>(rows);
  if (float16)
    sample_tokens_kernel<<<blocks, kBlockThreads, shared_bytes, cuda_stream>>>(
        static_cast<const uint16_t*>(logits), vocab, params, offset, first_row, tokens, logprob,
        s.row_global, s.row_bytes, s.bad_input);
  else
    sample_tokens_kernel<<<blocks, kBlockThreads, shared_bytes, cuda_stream>>>(
        static_cast<const float*>(logits), vocab, params, offset, first_row, tokens, logprob,
        s.row_global, s.row_bytes, s.bad_input);
  check(cudaGetLastError(), kWhere, "the sampling kernel's launch");
  int bad_input = 0;
  copy_to_host(&bad_input, s.bad_input, sizeof bad_input, stream);
  return bad_input != 0;
}

}  // namespace vampnet::cuda
