#include "ops.h"

#include <stdexcept>
#include <vector>

#include "../../kernels/cuda/kernels.h"

namespace vampnet::ort::cuda {

namespace {

// A device tensor's bytes, copied to the host.
std::vector<unsigned char> to_host(const InputView& input, size_t element_bytes, void* stream) {
  std::vector<unsigned char> host(static_cast<size_t>(input.count) * element_bytes);
  if (!host.empty()) vampnet::cuda::copy_to_host(host.data(), input.data, host.size(), stream);
  return host;
}

size_t logit_bytes(LogitsType type) { return type == LogitsType::kFloat16 ? 2 : 4; }

// The kernels flagged bad input: the CPU kernel, run on a host copy of it, raises the message the
// CPU op gives. If it does not, the two kernels disagree, which is a bug to report as such.
[[noreturn]] void disagreement(const char* where) {
  throw std::runtime_error(std::string(where) +
                           ": the CUDA kernel's input checks must agree with the CPU kernel's, "
                           "got bad input that the CPU kernel accepts");
}

}  // namespace

OrtStatusPtr SampleTokensCudaOp::CreateKernelV2(const OrtApi&, const OrtKernelInfo*,
                                                void** kernel) const {
  return guard([&] { *kernel = std::make_unique<SampleTokensCudaKernel>().release(); });
}

OrtStatusPtr SampleTokensCudaKernel::ComputeV2(OrtKernelContext* raw_context) {
  constexpr const char* kWhere = "SampleTokens";
  return guard([&] {
    Ort::KernelContext context(raw_context);
    const SampleTokensInputs in = read_sample_tokens_inputs(context);
    auto tokens = get_output(context, Output::kTokens, in.row_shape);
    auto logprob = get_output(context, Output::kLogprob, in.row_shape);
    if (in.rows == 0) return;
    if (in.vocab == 0) {  // the CPU kernel's message for an empty last axis; it reads nothing
      sample_tokens<float>(kWhere, nullptr, in.rows, 0, in.params, in.offset, in.first_row, nullptr,
                           nullptr, run_serial);
      disagreement(kWhere);
    }
    void* stream = compute_stream(context);
    const DeviceScratch scratch(
        context, context.GetInput(port_index(Input::kLogits)),
        vampnet::cuda::sample_tokens_scratch_bytes(in.rows, in.vocab, in.params));
    const bool bad_input = vampnet::cuda::sample_tokens(
        in.logits.data, in.logits_type == LogitsType::kFloat16, in.rows, in.vocab, in.params,
        in.offset, in.first_row, tokens.GetTensorMutableData<int64_t>(),
        logprob.GetTensorMutableData<float>(), scratch.get(), stream);
    if (!bad_input) return;
    const std::vector<unsigned char> host = to_host(in.logits, logit_bytes(in.logits_type), stream);
    std::vector<int64_t> host_tokens(in.rows);
    std::vector<float> host_logprob(in.rows);
    dispatch_logits(in.logits_type, host.data(), [&](const auto* typed_logits) {
      sample_tokens(kWhere, typed_logits, in.rows, in.vocab, in.params, in.offset, in.first_row,
                    host_tokens.data(), host_logprob.data(), run_serial);
    });
    disagreement(kWhere);
  });
}

OrtStatusPtr MaskGitStepCudaOp::CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info,
                                               void** kernel) const {
  return guard([&] {
    auto created = std::make_unique<MaskGitStepCudaKernel>();
    created->batch_coupled = read_batch_coupled(api, info);
    *kernel = created.release();
  });
}

OrtStatusPtr MaskGitStepCudaKernel::ComputeV2(OrtKernelContext* raw_context) {
  constexpr const char* kWhere = "MaskGitStep";
  return guard([&] {
    Ort::KernelContext context(raw_context);
    const MaskGitStepInputs in = read_mask_git_step_inputs(context, batch_coupled);
    const MaskGitStepShape& shape = in.shape;
    auto codes_out = get_output(context, Output::kCodesOut, in.codes.shape);
    auto mask_out = get_output(context, Output::kMaskOut, in.codes.shape);
    auto model_input = get_output(context, Output::kModelInput, in.codes.shape);
    void* stream = compute_stream(context);
    const auto cells = static_cast<size_t>(in.codes.count);
    // The CPU kernel on host copies of the inputs: it raises the CPU op's message for them, and
    // does the checks that need no device work (the per-item keys' sizes and ranges, and
    // n_masked_start's range in an empty problem) exactly as the CPU op does them.
    const auto run_on_host = [&] {
      const auto logits = to_host(in.logits, logit_bytes(in.logits_type), stream);
      const auto codes = to_host(in.codes, sizeof(int64_t), stream);
      const auto mask = to_host(in.mask, sizeof(bool), stream);
      const auto start = in.n_masked_start.present
                             ? to_host(in.n_masked_start, sizeof(int64_t), stream)
                             : std::vector<unsigned char>();
      std::vector<int64_t> host_codes(cells), host_input(cells);
      const auto host_mask = std::make_unique<bool[]>(cells);
      dispatch_logits(in.logits_type, logits.data(), [&](const auto* typed_logits) {
        mask_git_step(kWhere, shape, typed_logits, reinterpret_cast<const int64_t*>(codes.data()),
                      reinterpret_cast<const bool*>(mask.data()),
                      in.n_masked_start.present ? reinterpret_cast<const int64_t*>(start.data())
                                                : nullptr,
                      in.params, host_codes.data(), host_mask.get(), host_input.data(), run_serial);
      });
    };
    const MaskGitStepParams& params = in.params;
    bool host_checks_fail = !params.seeds.empty() &&
                            static_cast<int64_t>(params.seeds.size()) != shape.batch;
    if (params.batch_offsets.empty())
      host_checks_fail |= params.batch_offset < 0 ||
                          params.batch_offset > (int64_t{1} << 32) - shape.batch;
    for (int64_t offset : params.batch_offsets)
      host_checks_fail |= offset < 0 || offset > (int64_t{1} << 32) - 1;
    if (cells == 0 || host_checks_fail) {
      run_on_host();
      if (host_checks_fail) disagreement(kWhere);
      return;
    }

    const DeviceScratch scratch(
        context, context.GetInput(port_index(Input::kLogits)),
        vampnet::cuda::mask_git_step_scratch_bytes(shape, params.sampling));
    const bool bad_input = vampnet::cuda::mask_git_step(
        shape, in.logits.data, in.logits_type == LogitsType::kFloat16, in.codes.as<int64_t>(),
        in.mask.as<bool>(), in.n_masked_start.present ? in.n_masked_start.as<int64_t>() : nullptr,
        params, codes_out.GetTensorMutableData<int64_t>(), mask_out.GetTensorMutableData<bool>(),
        model_input.GetTensorMutableData<int64_t>(), scratch.get(), stream);
    if (!bad_input) return;
    run_on_host();
    disagreement(kWhere);
  });
}

OrtStatusPtr CheckRangeCudaKernel::ComputeV2(OrtKernelContext* raw_context) {
  return guard([&] {
    Ort::KernelContext context(raw_context);
    vampnet::cuda::set_true(check(context).GetTensorMutableData<bool>(), compute_stream(context));
  });
}

}  // namespace vampnet::ort::cuda
