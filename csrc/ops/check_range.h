#pragma once

#include <string>

#include "op_utils.h"

namespace vampnet::ort {

// CheckRange(x float64 scalar) -> ok bool scalar (always true): fails with
// "<where>: <name> must be in [min, max], got <x>" unless min <= x <= max. Attributes name,
// where (strings), min, max (floats). A graph makes its consumers depend on the check with
// Where(ok, value, 0). Contract: docs/ops.md.
// The enums list the ports in the order of ops.CHECK_RANGE (python/vampnet_onnx/ops.py).
struct CheckRangeKernel {
  enum class Input : size_t { kX, kCount };
  enum class Output : size_t { kOk, kCount };

  std::string name, where;
  double low = 0.0, high = 0.0;
  OrtStatusPtr ComputeV2(OrtKernelContext* context);
};

struct CheckRangeOp : Ort::CustomOpBase<CheckRangeOp, CheckRangeKernel, true> {
  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const;
  const char* GetName() const { return "CheckRange"; }
  size_t GetInputTypeCount() const { return port_count<CheckRangeKernel::Input>(); }
  ONNXTensorElementDataType GetInputType(size_t) const {
    return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  }
  size_t GetOutputTypeCount() const { return port_count<CheckRangeKernel::Output>(); }
  ONNXTensorElementDataType GetOutputType(size_t) const {
    return ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL;
  }
};

}  // namespace vampnet::ort
