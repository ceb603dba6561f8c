// Plumbing of the CUDA ops: ORT's compute stream and device scratch from ORT's allocator. Plain
// C++ against the public C/C++ API only (no ORT CUDA-provider headers, no CUDA headers).
#pragma once

#include <memory>

#include "../op_utils.h"

namespace vampnet::ort::cuda {

constexpr const char* kCudaExecutionProvider = "CUDAExecutionProvider";

// The cudaStream_t ORT runs this node on (KernelContext_GetGPUComputeStream).
void* compute_stream(const Ort::KernelContext& context);

// Device memory for one call, from the allocator of the device `on` lives on (ORT's arena), freed
// when it goes out of scope. Every call waits for its kernels before returning, so the memory is
// no longer in use by then.
class DeviceScratch {
 public:
  DeviceScratch(const Ort::KernelContext& context, const Ort::ConstValue& on, size_t bytes);
  ~DeviceScratch();
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;
  void* get() const { return data_; }

 private:
  OrtAllocator* allocator_ = nullptr;
  void* data_ = nullptr;
};

// The CUDA twin of an op schema: the same name, ports and domain, run by the CUDA execution
// provider, with the ports for which IsDevicePort is false taken in host memory (scalars and
// keys that the host reads to launch the kernels: no Memcpy node for them).
template <typename Schema, typename IsDevicePort>
struct OnCuda : Schema {
  const char* GetExecutionProviderType() const { return kCudaExecutionProvider; }
  OrtMemType GetInputMemoryType(size_t index) const {
    return IsDevicePort{}(index) ? OrtMemTypeDefault : OrtMemTypeCPUInput;
  }
};

}  // namespace vampnet::ort::cuda
