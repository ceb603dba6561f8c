#include "sample_tokens.h"

#include "../kernels/sampling.h"

namespace vampnet::ort {

namespace {
constexpr const char* kWhere = "SampleTokens";
}

OrtStatusPtr SampleTokensOp::CreateKernelV2(const OrtApi&, const OrtKernelInfo*,
                                            void** kernel) const {
  return guard([&] { *kernel = std::make_unique<SampleTokensKernel>().release(); });
}

OrtStatusPtr SampleTokensKernel::ComputeV2(OrtKernelContext* raw_context) {
  return guard([&] {
    Ort::KernelContext context(raw_context);
    const InputView logits = get_input(context, Input::kLogits);
    const LogitsType logits_type = check_logits_type(kWhere, logits);
    if (logits.shape.empty()) fail(kWhere, "logits", "have rank >= 1 [..., V]", "a scalar");
    SamplingParams params;
    params.temperature =
        scalar_float(kWhere, "temperature", get_input(context, Input::kTemperature));
    params.top_k = scalar_int64(kWhere, "top_k", get_input(context, Input::kTopK));
    params.top_p = scalar_float(kWhere, "top_p", get_input(context, Input::kTopP));
    params.seed =
        static_cast<uint64_t>(scalar_int64(kWhere, "seed", get_input(context, Input::kSeed)));
    const auto offset =
        static_cast<uint64_t>(scalar_int64(kWhere, "offset", get_input(context, Input::kOffset)));
    const InputView first_row_input = get_input(context, Input::kFirstRow);
    int64_t first_row = 0;
    if (first_row_input.present) {
      first_row = scalar_int64(kWhere, "first_row", first_row_input);
      if (first_row < 0) fail(kWhere, "first_row", "be >= 0", to_text(first_row));
    }
    check_sampling_params(kWhere, params);

    const std::vector<int64_t> row_shape(logits.shape.begin(), logits.shape.end() - 1);
    const auto vocab = static_cast<size_t>(logits.shape.back());
    auto tokens = get_output(context, Output::kTokens, row_shape);
    auto logprob = get_output(context, Output::kLogprob, row_shape);
    size_t rows = 1;
    for (auto d : row_shape) rows *= static_cast<size_t>(d);
    const ParallelFor pool = thread_pool(context);
    dispatch_logits(logits_type, logits.data, [&](const auto* typed_logits) {
      sample_tokens(kWhere, typed_logits, rows, vocab, params, offset,
                    static_cast<uint64_t>(first_row), tokens.GetTensorMutableData<int64_t>(),
                    logprob.GetTensorMutableData<float>(), pool);
    });
  });
}

}  // namespace vampnet::ort
