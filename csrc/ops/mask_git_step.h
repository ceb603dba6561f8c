#pragma once

#include "../kernels/mask_git_step.h"
#include "op_utils.h"

namespace vampnet::ort {

// MaskGitStep(logits [B, T, P, V], codes [B, C, T], mask [B, C, T], step, n_steps, temperature,
//             top_k, top_p, mask_temperature, seed, n_masked_start? [B], batch_offset?)
//   -> codes_out, mask_out, model_input [B, C, T]. Attribute batch_coupled (int, default 0).
// Contract: docs/ops.md.
// The enums list the ports in the order of ops.MASK_GIT_STEP (python/vampnet_onnx/ops.py).
struct MaskGitStepKernel {
  enum class Input : size_t {
    kLogits,
    kCodes,
    kMask,
    kStep,
    kNSteps,
    kTemperature,
    kTopK,
    kTopP,
    kMaskTemperature,
    kSeed,
    kNMaskedStart,
    kBatchOffset,
    kCount
  };
  enum class Output : size_t { kCodesOut, kMaskOut, kModelInput, kCount };

  bool batch_coupled = false;
  OrtStatusPtr ComputeV2(OrtKernelContext* context);
};

// The inputs of one call: everything but the device-side data is read and checked on the host.
struct MaskGitStepInputs {
  InputView logits, codes, mask, n_masked_start;
  LogitsType logits_type = LogitsType::kFloat32;
  MaskGitStepParams params;
  MaskGitStepShape shape;
};
MaskGitStepInputs read_mask_git_step_inputs(const Ort::KernelContext& context,
                                            bool batch_coupled);
// The batch_coupled attribute (0 or 1, default 0).
bool read_batch_coupled(const OrtApi& api, const OrtKernelInfo* info);

// The op's schema, shared by the CPU op and the CUDA op (ops/cuda/mask_git_step.h).
template <typename Op, typename Kernel>
struct MaskGitStepSchema : Ort::CustomOpBase<Op, Kernel, true> {
  const char* GetName() const { return "MaskGitStep"; }
  size_t GetInputTypeCount() const { return port_count<MaskGitStepKernel::Input>(); }
  ONNXTensorElementDataType GetInputType(size_t) const {
    return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const {
    return index >= port_index(MaskGitStepKernel::Input::kNMaskedStart) ? INPUT_OUTPUT_OPTIONAL
                                                                        : INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return port_count<MaskGitStepKernel::Output>(); }
  ONNXTensorElementDataType GetOutputType(size_t index) const {
    return index == port_index(MaskGitStepKernel::Output::kMaskOut)
               ? ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL
               : ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64;
  }
};

struct MaskGitStepOp : MaskGitStepSchema<MaskGitStepOp, MaskGitStepKernel> {
  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const;
};

}  // namespace vampnet::ort
