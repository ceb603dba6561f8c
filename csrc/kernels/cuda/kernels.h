// The CUDA twins of SampleTokens and MaskGitStep (kernels/sampling.h, kernels/mask_git_step.h),
// callable from plain C++: no CUDA or ORT types here, so the ops (csrc/ops/cuda/) compile with
// the C++ compiler. Streams are cudaStream_t passed as void*.
//
// Each call enqueues its kernels on `stream` and waits for them, because an op must return its
// error status: when a kernel finds bad input (a row of logits with NaN, +inf or only -inf; a
// masked conditioning cell; codes out of range; n_masked_start out of range) the call returns
// true and the op copies the inputs to the host and runs the CPU kernel on them, which raises
// the house-format message the CPU op gives for that input (one message text for both devices).
// A CUDA API error throws std::runtime_error naming the call.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "../mask_git_step.h"
#include "../sampling.h"

namespace vampnet::cuda {

// Bytes of device scratch `sample_tokens` needs (0: none).
size_t sample_tokens_scratch_bytes(size_t rows, size_t vocab, const SamplingParams& params);

// tokens[r], logprob[r] for each row of logits [rows, V] (device pointers; float16 as its bits),
// exactly as vampnet::sample_tokens. Returns true when a row holds bad values (nothing useful is
// written then). `params` must have passed check_sampling_params.
bool sample_tokens(const void* logits, bool float16, size_t rows, size_t vocab,
                   const SamplingParams& params, uint64_t offset, uint64_t first_row,
                   int64_t* tokens, float* logprob, void* scratch, void* stream);

// Bytes of device scratch `mask_git_step` needs.
size_t mask_git_step_scratch_bytes(const MaskGitStepShape& shape, const SamplingParams& params);

// vampnet::mask_git_step on device pointers (logits, codes, mask, n_masked_start (or nullptr),
// outputs); `params` must have passed check_mask_git_step_params and its seeds / batch_offsets
// the size and range checks (they live on the host; they are copied to the device here).
// Returns true when the input is bad (see above). B * C * T must be > 0.
bool mask_git_step(const MaskGitStepShape& shape, const void* logits, bool float16,
                   const int64_t* codes, const bool* mask, const int64_t* n_masked_start,
                   const MaskGitStepParams& params, int64_t* codes_out, bool* mask_out,
                   int64_t* model_input, void* scratch, void* stream);

// Device-to-host copy on `stream`, waited for.
void copy_to_host(void* host, const void* device, size_t bytes, void* stream);

// *device_flag = true (one byte) on `stream`: CheckRange's output.
void set_true(bool* device_flag, void* stream);

}  // namespace vampnet::cuda
