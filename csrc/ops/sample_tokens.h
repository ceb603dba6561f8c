#pragma once

#include "op_utils.h"

namespace vampnet::ort {

// SampleTokens(logits [..., V] float32|float16, temperature, top_k, top_p, seed, offset,
//              first_row?) -> tokens [...] int64, logprob [...] float32. Contract: docs/ops.md.
struct SampleTokensKernel {
  OrtStatusPtr ComputeV2(OrtKernelContext* context);
};

struct SampleTokensOp : Ort::CustomOpBase<SampleTokensOp, SampleTokensKernel, true> {
  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const;
  const char* GetName() const { return "SampleTokens"; }
  size_t GetInputTypeCount() const { return 7; }
  // Untyped here so that a wrong dtype reaches the op and gets the house-format error.
  ONNXTensorElementDataType GetInputType(size_t) const {
    return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const {
    return index == 6 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return 2; }
  ONNXTensorElementDataType GetOutputType(size_t index) const {
    return index == 0 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
};

}  // namespace vampnet::ort
