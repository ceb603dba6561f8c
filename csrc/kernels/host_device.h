// VAMPNET_HD marks the math that the CPU kernels and the CUDA kernels (csrc/kernels/cuda/) share
// as one source: __host__ __device__ under nvcc, nothing for the C++ compilers, whose code is
// unchanged by it. Sharing the source is what makes both devices draw the same Philox streams and
// compute the same bits (docs/ops.md, "CUDA kernels").
#pragma once

#if defined(__CUDACC__)
#define VAMPNET_HD __host__ __device__
#else
#define VAMPNET_HD
#endif
