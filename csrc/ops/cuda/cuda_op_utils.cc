#include "cuda_op_utils.h"

#include <stdexcept>
#include <string>

namespace vampnet::ort::cuda {

void* compute_stream(const Ort::KernelContext& context) { return context.GetGPUComputeStream(); }

DeviceScratch::DeviceScratch(const Ort::KernelContext& context, const Ort::ConstValue& on,
                             size_t bytes) {
  if (bytes == 0) return;
  allocator_ = context.GetAllocator(*static_cast<const OrtMemoryInfo*>(on.GetTensorMemoryInfo()));
  data_ = allocator_->Alloc(allocator_, bytes);
  if (data_ == nullptr) {
    Ort::GetApi().ReleaseAllocator(allocator_);
    throw std::runtime_error("vampnet_onnx: device scratch of " + std::to_string(bytes) +
                             " bytes must be allocated, got none");
  }
}

DeviceScratch::~DeviceScratch() {
  if (allocator_ == nullptr) return;
  allocator_->Free(allocator_, data_);
  Ort::GetApi().ReleaseAllocator(allocator_);
}

}  // namespace vampnet::ort::cuda
