#pragma once

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

struct SampleTokensOp : Ort::CustomOpBase<SampleTokensOp, SampleTokensKernel, true> {
  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const;
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

}  // namespace vampnet::ort
