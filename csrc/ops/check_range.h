#pragma once

#include <memory>
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
  // Reads the attributes; fails as the op does on a missing one or min > max.
  explicit CheckRangeKernel(const OrtKernelInfo* info);
  // Checks x (on the host: the CUDA op takes it as a CPU input too) and allocates ok.
  Ort::UnownedValue check(const Ort::KernelContext& context) const;
  OrtStatusPtr ComputeV2(OrtKernelContext* context);
};

// The op's schema, shared by the CPU op and the CUDA op (ops/cuda/check_range.h).
template <typename Op, typename Kernel>
struct CheckRangeSchema : Ort::CustomOpBase<Op, Kernel, true> {
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const {
    return guard([&] { *kernel = std::make_unique<Kernel>(info).release(); });
  }
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

struct CheckRangeOp : CheckRangeSchema<CheckRangeOp, CheckRangeKernel> {};

}  // namespace vampnet::ort
