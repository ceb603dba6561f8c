// The small host-side CUDA calls the ops need, kept here so that the ops stay plain C++.
#include "cuda_check.cuh"
#include "kernels.h"

namespace vampnet::cuda {

void copy_to_host(void* host, const void* device, size_t bytes, void* stream) {
  check(cudaMemcpyAsync(host, device, bytes, cudaMemcpyDeviceToHost, as_stream(stream)),
        "vampnet_onnx", "cudaMemcpyAsync");
  check(cudaStreamSynchronize(as_stream(stream)), "vampnet_onnx", "cudaStreamSynchronize");
}

void set_true(bool* device_flag, void* stream) {
  check(cudaMemsetAsync(device_flag, 1, 1, as_stream(stream)), "CheckRange", "cudaMemsetAsync");
}

}  // namespace vampnet::cuda
