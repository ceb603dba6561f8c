// Shared plumbing of the ORT ops: reading and checking inputs, the thread pool, and the guard
// that turns every exception into an OrtStatus (no C++ exception crosses the C ABI).
#pragma once

#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#undef ORT_API_MANUAL_INIT

#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "../kernels/errors.h"
#include "../kernels/logits.h"
#include "../kernels/parallel.h"

namespace vampnet::ort {

// Each op's kernel names its inputs and outputs by the enum classes Input and Output, which list
// them in the order of the op's schema in python/vampnet_onnx/ops.py and end in kCount: no index
// is a bare number.
template <typename Port>
constexpr size_t port_index(Port port) {
  static_assert(std::is_enum_v<Port>, "ports are named by an op's enum class, not by numbers");
  return static_cast<size_t>(port);
}

template <typename Port>
constexpr size_t port_count() {
  return port_index(Port::kCount);
}

// An input as the op sees it: element type, shape, raw data; `present` is false for an omitted
// optional input.
struct InputView {
  bool present = false;
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  int64_t count = 0;

  template <typename T>
  const T* as() const {
    return static_cast<const T*>(data);
  }
};

namespace detail {
InputView input_at(const Ort::KernelContext& context, size_t index);
}

template <typename Port>
InputView get_input(const Ort::KernelContext& context, Port port) {
  return detail::input_at(context, port_index(port));
}

template <typename Port>
Ort::UnownedValue get_output(const Ort::KernelContext& context, Port port,
                             const std::vector<int64_t>& shape) {
  return context.GetOutput(port_index(port), shape);
}

const char* type_name(ONNXTensorElementDataType type);

// "<where>: <name> must be a <type> tensor, got <actual>" unless the type is one of `allowed`.
void check_type(const std::string& where, const std::string& name, const InputView& input,
                const std::vector<ONNXTensorElementDataType>& allowed);

// The type of float32 or float16 logits; any other type fails as check_type does.
LogitsType check_logits_type(const std::string& where, const InputView& logits);

// A scalar input: a tensor of exactly one element (rank 0 or [1], as Loop counters are rank 0).
float scalar_float(const std::string& where, const std::string& name, const InputView& input);
int64_t scalar_int64(const std::string& where, const std::string& name, const InputView& input);

ParallelFor thread_pool(const Ort::KernelContext& context);

// Runs body; returns nullptr on success, else a status with the exception's message.
template <typename Body>
OrtStatusPtr guard(Body&& body) noexcept {
  try {
    body();
    return nullptr;
  } catch (const InvalidArgument& error) {
    return Ort::GetApi().CreateStatus(ORT_INVALID_ARGUMENT, error.what());
  } catch (const Ort::Exception& error) {
    return Ort::GetApi().CreateStatus(error.GetOrtErrorCode(), error.what());
  } catch (const std::exception& error) {
    return Ort::GetApi().CreateStatus(ORT_FAIL, error.what());
  } catch (...) {
    return Ort::GetApi().CreateStatus(ORT_FAIL, "vampnet_onnx: unknown error");
  }
}

}  // namespace vampnet::ort
