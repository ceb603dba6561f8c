#pragma once

#include <vector>

#include "../kernels/sampling.h"
#include "op_utils.h"

namespace vampnet::ort {

// SampleTokens(logits [..., V] float32|float16, temperature, top_k, top_p, seed, offset,
//              first_row?) -> tokens [...] int64, logprob [...] float32. Contract: docs/ops.md.
// The enums list the ports in the order of ops.SAMPLE_TOKENS (python/vampnet_onnx/ops.py).
struct SampleTokensKernel {
  enum class Input : size_t {
    kLogits,
    kTemperature,
    kTopK,
    kTopP,
    kSeed,
    kOffset,
    kFirstRow,
    kCount
  };
  enum class Output : size_t { kTokens, kLogprob, kCount };

  OrtStatusPtr ComputeV2(OrtKernelContext* context);
};

// The inputs of one call, read and checked on the host (the CUDA op reads its scalars there too).
struct SampleTokensInputs {
  InputView logits;
  LogitsType logits_type = LogitsType::kFloat32;
  SamplingParams params;
  uint64_t offset = 0, first_row = 0;
  std::vector<int64_t> row_shape;  // logits' shape without V
  size_t rows = 0, vocab = 0;
};
SampleTokensInputs read_sample_tokens_inputs(const Ort::KernelContext& context);

// The op's schema, shared by the CPU op and the CUDA op (ops/cuda/sample_tokens.h).
template <typename Op, typename Kernel>
struct SampleTokensSchema : Ort::CustomOpBase<Op, Kernel, true> {
  const char* GetName() const { return "SampleTokens"; }
  size_t GetInputTypeCount() const { return port_count<SampleTokensKernel::Input>(); }
  // Untyped here so that a wrong dtype reaches the op and gets the house-format error.
  ONNXTensorElementDataType GetInputType(size_t) const {
    return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const {
    return index == port_index(SampleTokensKernel::Input::kFirstRow) ? INPUT_OUTPUT_OPTIONAL
                                                                     : INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return port_count<SampleTokensKernel::Output>(); }
  ONNXTensorElementDataType GetOutputType(size_t index) const {
    return index == port_index(SampleTokensKernel::Output::kTokens)
               ? ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64
               : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
};

struct SampleTokensOp : SampleTokensSchema<SampleTokensOp, SampleTokensKernel> {
  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const;
};

}  // namespace vampnet::ort
