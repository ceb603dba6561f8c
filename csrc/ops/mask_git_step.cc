#include "mask_git_step.h"

#include "../kernels/mask_git_step.h"

namespace vampnet::ort {

namespace {
constexpr const char* kWhere = "MaskGitStep";
}

OrtStatusPtr MaskGitStepOp::CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info,
                                           void** kernel) const {
  return guard([&] {
    auto created = std::make_unique<MaskGitStepKernel>();
    int64_t coupled = 0;
    // An absent attribute comes back as an error status: keep the default then.
    if (OrtStatus* status = api.KernelInfoGetAttribute_int64(info, "batch_coupled", &coupled))
      api.ReleaseStatus(status);
    if (coupled != 0 && coupled != 1) fail(kWhere, "batch_coupled", "be 0 or 1", to_text(coupled));
    created->batch_coupled = coupled == 1;
    *kernel = created.release();
  });
}

OrtStatusPtr MaskGitStepKernel::ComputeV2(OrtKernelContext* raw_context) {
  return guard([&] {
    Ort::KernelContext context(raw_context);
    const InputView logits = get_input(context, Input::kLogits);
    const InputView codes = get_input(context, Input::kCodes);
    const InputView mask = get_input(context, Input::kMask);
    const LogitsType logits_type = check_logits_type(kWhere, logits);
    check_type(kWhere, "codes", codes, {ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64});
    check_type(kWhere, "mask", mask, {ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL});

    MaskGitStepParams params;
    params.step = scalar_int64(kWhere, "step", get_input(context, Input::kStep));
    params.n_steps = scalar_int64(kWhere, "n_steps", get_input(context, Input::kNSteps));
    params.sampling.temperature =
        scalar_float(kWhere, "temperature", get_input(context, Input::kTemperature));
    params.sampling.top_k = scalar_int64(kWhere, "top_k", get_input(context, Input::kTopK));
    params.sampling.top_p = scalar_float(kWhere, "top_p", get_input(context, Input::kTopP));
    params.mask_temperature =
        scalar_float(kWhere, "mask_temperature", get_input(context, Input::kMaskTemperature));
    params.batch_coupled = batch_coupled;
    check_mask_git_step_params(kWhere, params);

    const InputView n_masked_start = get_input(context, Input::kNMaskedStart);
    if (n_masked_start.present)
      check_type(kWhere, "n_masked_start", n_masked_start, {ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64});
    const MaskGitStepShape shape =
        check_mask_git_step_shapes(kWhere, logits.shape, codes.shape, mask.shape,
                                   n_masked_start.present ? &n_masked_start.shape : nullptr);
    // seed and batch_offset: one value for the batch, or one per item (shape [B]).
    const InputView seed = get_input(context, Input::kSeed);
    check_type(kWhere, "seed", seed, {ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64});
    int64_t batch_seed = 0;
    read_item_keys(kWhere, "seed", seed.shape, seed.count, seed.as<int64_t>(), shape.batch,
                   &batch_seed, &params.seeds);
    params.sampling.seed = static_cast<uint64_t>(batch_seed);
    const InputView batch_offset = get_input(context, Input::kBatchOffset);
    if (batch_offset.present) {
      check_type(kWhere, "batch_offset", batch_offset, {ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64});
      read_item_keys(kWhere, "batch_offset", batch_offset.shape, batch_offset.count,
                     batch_offset.as<int64_t>(), shape.batch, &params.batch_offset,
                     &params.batch_offsets);
    }

    auto codes_out = get_output(context, Output::kCodesOut, codes.shape);
    auto mask_out = get_output(context, Output::kMaskOut, codes.shape);
    auto model_input = get_output(context, Output::kModelInput, codes.shape);
    const int64_t* start = n_masked_start.present ? n_masked_start.as<int64_t>() : nullptr;
    const ParallelFor pool = thread_pool(context);
    dispatch_logits(logits_type, logits.data, [&](const auto* typed_logits) {
      mask_git_step(kWhere, shape, typed_logits, codes.as<int64_t>(), mask.as<bool>(), start,
                    params, codes_out.GetTensorMutableData<int64_t>(),
                    mask_out.GetTensorMutableData<bool>(),
                    model_input.GetTensorMutableData<int64_t>(), pool);
    });
  });
}

}  // namespace vampnet::ort
