#pragma once

#include <memory>

#include "op_utils.h"

namespace vampnet::ort {

// Snake(x float32 [B, C, T], alpha [1, C, 1], inverse [1, C, 1]) -> y [B, C, T]:
// y = x + inverse * sin(alpha * x)^2, the LAC codec's activation as one pass over x instead of
// five elementwise ops (a CPU op for the int8 folders' codec graphs). Contract: docs/ops.md.
// The enums list the ports in the order of ops.SNAKE (python/vampnet_onnx/ops.py).
struct SnakeKernel {
  enum class Input : size_t { kX, kAlpha, kInverse, kCount };
  enum class Output : size_t { kY, kCount };

  explicit SnakeKernel(const OrtKernelInfo*) {}
  OrtStatusPtr ComputeV2(OrtKernelContext* context);
};

struct SnakeOp : Ort::CustomOpBase<SnakeOp, SnakeKernel, true> {
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const {
    return guard([&] { *kernel = std::make_unique<SnakeKernel>(info).release(); });
  }
  const char* GetName() const { return "Snake"; }
  size_t GetInputTypeCount() const { return port_count<SnakeKernel::Input>(); }
  ONNXTensorElementDataType GetInputType(size_t) const {
    return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
  size_t GetOutputTypeCount() const { return port_count<SnakeKernel::Output>(); }
  ONNXTensorElementDataType GetOutputType(size_t) const {
    return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
};

}  // namespace vampnet::ort
