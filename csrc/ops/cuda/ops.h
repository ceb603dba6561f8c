// The CUDA execution provider's SampleTokens, MaskGitStep and CheckRange: the same schemas and
// domain as the CPU ops (csrc/ops/), kernels in csrc/kernels/cuda/. Built only with
// VAMPNET_CUDA_OPS=ON, and compiled-only until verified on a GPU (docs/ops.md, "CUDA kernels").
#pragma once

#include "../check_range.h"
#include "../mask_git_step.h"
#include "../sample_tokens.h"
#include "cuda_op_utils.h"

namespace vampnet::ort::cuda {

// logits on the device; the scalars on the host.
struct SampleTokensCudaKernel {
  using Input = SampleTokensKernel::Input;
  using Output = SampleTokensKernel::Output;
  OrtStatusPtr ComputeV2(OrtKernelContext* context);
};
struct SampleTokensDevicePorts {
  bool operator()(size_t index) const {
    return index == port_index(SampleTokensKernel::Input::kLogits);
  }
};
struct SampleTokensCudaOp
    : OnCuda<SampleTokensSchema<SampleTokensCudaOp, SampleTokensCudaKernel>,
             SampleTokensDevicePorts> {
  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const;
};

// logits, codes, mask and n_masked_start on the device (a generation graph computes them there);
// the scalars, seed and batch_offset on the host.
struct MaskGitStepCudaKernel {
  using Input = MaskGitStepKernel::Input;
  using Output = MaskGitStepKernel::Output;
  bool batch_coupled = false;
  OrtStatusPtr ComputeV2(OrtKernelContext* context);
};
struct MaskGitStepDevicePorts {
  bool operator()(size_t index) const {
    using Input = MaskGitStepKernel::Input;
    return index == port_index(Input::kLogits) || index == port_index(Input::kCodes) ||
           index == port_index(Input::kMask) || index == port_index(Input::kNMaskedStart);
  }
};
struct MaskGitStepCudaOp
    : OnCuda<MaskGitStepSchema<MaskGitStepCudaOp, MaskGitStepCudaKernel>, MaskGitStepDevicePorts> {
  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const;
};

// x on the host (the check is a host comparison); ok written on the device.
struct CheckRangeCudaKernel : CheckRangeKernel {
  using CheckRangeKernel::CheckRangeKernel;
  OrtStatusPtr ComputeV2(OrtKernelContext* context);
};
struct CheckRangeDevicePorts {
  bool operator()(size_t) const { return false; }
};
struct CheckRangeCudaOp
    : OnCuda<CheckRangeSchema<CheckRangeCudaOp, CheckRangeCudaKernel>, CheckRangeDevicePorts> {};

}  // namespace vampnet::ort::cuda
