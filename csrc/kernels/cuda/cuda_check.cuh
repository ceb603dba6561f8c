// CUDA API errors as C++ exceptions, which the ops' guard turns into an OrtStatus.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace vampnet::cuda {

// Throws "<where>: <call> must succeed, got <CUDA error name>: <text>" unless status is success.
inline void check(cudaError_t status, const char* where, const char* call) {
  if (status != cudaSuccess)
    throw std::runtime_error(std::string(where) + ": " + call + " must succeed, got " +
                             cudaGetErrorName(status) + ": " + cudaGetErrorString(status));
}

inline cudaStream_t as_stream(void* stream) { return static_cast<cudaStream_t>(stream); }

// 16-byte aligned slices of one scratch buffer, in the order they are taken. Without a base it
// only counts: one layout function gives both the size to allocate and the slices.
class ScratchCarver {
 public:
  explicit ScratchCarver(void* base = nullptr) : base_(static_cast<unsigned char*>(base)) {}
  template <typename T>
  T* take(size_t count) {
    unsigned char* slice = base_ ? base_ + used_ : nullptr;
    used_ += (count * sizeof(T) + 15) / 16 * 16;
    return reinterpret_cast<T*>(slice);
  }
  size_t used() const { return used_; }

 private:
  unsigned char* base_;
  size_t used_ = 0;
};

}  // namespace vampnet::cuda
