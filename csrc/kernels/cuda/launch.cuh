// Where a row's working memory lives, shared between the two ops' launches.
#pragma once

#include <climits>

#include "cuda_check.cuh"
#include "row_sampler.cuh"

namespace vampnet::cuda {

// Dynamic shared memory a block may use without opting in (every GPU since Kepler).
constexpr size_t kSharedBytes = 48 * 1024;

// A row's RowScratch: in dynamic shared memory when it fits (row_global == nullptr), else the
// block's slice of a global buffer of row_bytes per row.
__device__ inline RowScratch block_row_scratch(unsigned char* row_global, size_t row_bytes,
                                               size_t vocab, bool filters) {
  extern __shared__ __align__(16) unsigned char dynamic_shared[];
  unsigned char* base = row_global ? row_global + row_bytes * blockIdx.x : dynamic_shared;
  return carve_row_scratch(base, vocab, filters);
}

// The sampling kernels' static RowShared counts against the same 48 KiB as the dynamic part.
inline bool row_scratch_in_shared(size_t vocab, bool filters) {
  return row_scratch_bytes(vocab, filters) + sizeof(RowShared) <= kSharedBytes;
}

// One block per row: the grid's x dimension bounds the rows of one call.
inline void check_grid(const char* where, size_t blocks) {
  if (blocks > static_cast<size_t>(INT_MAX))
    throw std::runtime_error(std::string(where) + ": rows must be < 2^31 for the CUDA kernels, got " +
                             std::to_string(blocks));
}

}  // namespace vampnet::cuda
