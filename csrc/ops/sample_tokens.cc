#include "sample_tokens.h"

namespace vampnet::ort {

namespace {
constexpr const char* kWhere = "SampleTokens";
}

OrtStatusPtr SampleTokensOp::CreateKernelV2(const OrtApi&, const OrtKernelInfo*,
                                            void** kernel) const {
  return guard([&] { *kernel = std::make_unique<SampleTokensKernel>().release(); });
}

SampleTokensInputs read_sample_tokens_inputs(const Ort::KernelContext& context) {
  using Input = SampleTokensKernel::Input;
  SampleTokensInputs in;
  in.logits = get_input(context, Input::kLogits);
  in.logits_type = check_logits_type(kWhere, in.logits);
  if (in.logits.shape.empty()) fail(kWhere, "logits", "have rank >= 1 [..., V]", "a scalar");
  SamplingParams& params = in.params;
  params.temperature = scalar_float(kWhere, "temperature", get_input(context, Input::kTemperature));
  params.top_k = scalar_int64(kWhere, "top_k", get_input(context, Input::kTopK));
  params.top_p = scalar_float(kWhere, "top_p", get_input(context, Input::kTopP));
  params.seed =
      static_cast<uint64_t>(scalar_int64(kWhere, "seed", get_input(context, Input::kSeed)));
  in.offset =
      static_cast<uint64_t>(scalar_int64(kWhere, "offset", get_input(context, Input::kOffset)));
  const InputView first_row_input = get_input(context, Input::kFirstRow);
  if (first_row_input.present) {
    const int64_t first_row = scalar_int64(kWhere, "first_row", first_row_input);
    if (first_row < 0) fail(kWhere, "first_row", "be >= 0", to_text(first_row));
    in.first_row = static_cast<uint64_t>(first_row);
  }
  check_sampling_params(kWhere, params);
  in.row_shape.assign(in.logits.shape.begin(), in.logits.shape.end() - 1);
  in.vocab = static_cast<size_t>(in.logits.shape.back());
  in.rows = 1;
  for (auto d : in.row_shape) in.rows *= static_cast<size_t>(d);
  return in;
}

OrtStatusPtr SampleTokensKernel::ComputeV2(OrtKernelContext* raw_context) {
  return guard([&] {
    Ort::KernelContext context(raw_context);
    const SampleTokensInputs in = read_sample_tokens_inputs(context);
    auto tokens = get_output(context, Output::kTokens, in.row_shape);
    auto logprob = get_output(context, Output::kLogprob, in.row_shape);
    const ParallelFor pool = thread_pool(context);
    dispatch_logits(in.logits_type, in.logits.data, [&](const auto* typed_logits) {
      sample_tokens(kWhere, typed_logits, in.rows, in.vocab, in.params, in.offset, in.first_row,
                    tokens.GetTensorMutableData<int64_t>(), logprob.GetTensorMutableData<float>(),
                    pool);
    });
  });
}

}  // namespace vampnet::ort
