#include "mask_git_step.h"

namespace vampnet::ort {

namespace {
constexpr const char* kWhere = "MaskGitStep";
}

bool read_batch_coupled(const OrtApi& api, const OrtKernelInfo* info) {
  int64_t coupled = 0;
  // An absent attribute comes back as an error status: keep the default then.
  if (OrtStatus* status = api.KernelInfoGetAttribute_int64(info, "batch_coupled", &coupled))
    api.ReleaseStatus(status);
  if (coupled != 0 && coupled != 1) fail(kWhere, "batch_coupled", "be 0 or 1", to_text(coupled));
  return coupled == 1;
}

OrtStatusPtr MaskGitStepOp::CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info,
                                           void** kernel) const {
  return guard([&] {
    auto created = std::make_unique<MaskGitStepKernel>();
    created->batch_coupled = read_batch_coupled(api, info);
    *kernel = created.release();
  });
}

MaskGitStepInputs read_mask_git_step_inputs(const Ort::KernelContext& context,
                                            bool batch_coupled) {
  using Input = MaskGitStepKernel::Input;
  MaskGitStepInputs in;
  in.logits = get_input(context, Input::kLogits);
  in.codes = get_input(context, Input::kCodes);
  in.mask = get_input(context, Input::kMask);
  in.logits_type = check_logits_type(kWhere, in.logits);
  check_type(kWhere, "codes", in.codes, {ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64});
  check_type(kWhere, "mask", in.mask, {ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL});

  MaskGitStepParams& params = in.params;
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

  in.n_masked_start = get_input(context, Input::kNMaskedStart);
  if (in.n_masked_start.present)
    check_type(kWhere, "n_masked_start", in.n_masked_start, {ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64});
  in.shape = check_mask_git_step_shapes(
      kWhere, in.logits.shape, in.codes.shape, in.mask.shape,
      in.n_masked_start.present ? &in.n_masked_start.shape : nullptr);
  // seed and batch_offset: one value for the batch, or one per item (shape [B]).
  const InputView seed = get_input(context, Input::kSeed);
  check_type(kWhere, "seed", seed, {ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64});
  int64_t batch_seed = 0;
  read_item_keys(kWhere, "seed", seed.shape, seed.count, seed.as<int64_t>(), in.shape.batch,
                 &batch_seed, &params.seeds);
  params.sampling.seed = static_cast<uint64_t>(batch_seed);
  const InputView batch_offset = get_input(context, Input::kBatchOffset);
  if (batch_offset.present) {
    check_type(kWhere, "batch_offset", batch_offset, {ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64});
    read_item_keys(kWhere, "batch_offset", batch_offset.shape, batch_offset.count,
                   batch_offset.as<int64_t>(), in.shape.batch, &params.batch_offset,
                   &params.batch_offsets);
  }
  return in;
}

OrtStatusPtr MaskGitStepKernel::ComputeV2(OrtKernelContext* raw_context) {
  return guard([&] {
    Ort::KernelContext context(raw_context);
    const MaskGitStepInputs in = read_mask_git_step_inputs(context, batch_coupled);
    auto codes_out = get_output(context, Output::kCodesOut, in.codes.shape);
    auto mask_out = get_output(context, Output::kMaskOut, in.codes.shape);
    auto model_input = get_output(context, Output::kModelInput, in.codes.shape);
    const int64_t* start =
        in.n_masked_start.present ? in.n_masked_start.as<int64_t>() : nullptr;
    const ParallelFor pool = thread_pool(context);
    dispatch_logits(in.logits_type, in.logits.data, [&](const auto* typed_logits) {
      mask_git_step(kWhere, in.shape, typed_logits, in.codes.as<int64_t>(), in.mask.as<bool>(),
                    start, in.params, codes_out.GetTensorMutableData<int64_t>(),
                    mask_out.GetTensorMutableData<bool>(),
                    model_input.GetTensorMutableData<int64_t>(), pool);
    });
  });
}

}  // namespace vampnet::ort
