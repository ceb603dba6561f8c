#include "op_utils.h"

namespace vampnet::ort {

const char* type_name(ONNXTensorElementDataType type) {
  switch (type) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT:
      return "float32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16:
      return "float16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE:
      return "float64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16:
      return "bfloat16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8:
      return "int8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16:
      return "int16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32:
      return "int32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64:
      return "int64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8:
      return "uint8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16:
      return "uint16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32:
      return "uint32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64:
      return "uint64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL:
      return "bool";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING:
      return "string";
    default:
      return "unsupported type";
  }
}

namespace detail {
InputView input_at(const Ort::KernelContext& context, size_t index) {
  InputView input;
  if (index >= context.GetInputCount()) return input;
  Ort::ConstValue value = context.GetInput(index);
  if (static_cast<const OrtValue*>(value) == nullptr) return input;
  if (!value.IsTensor()) return input;
  const auto info = value.GetTensorTypeAndShapeInfo();
  input.present = true;
  input.type = info.GetElementType();
  input.shape = info.GetShape();
  input.count = static_cast<int64_t>(info.GetElementCount());
  input.data = value.GetTensorRawData();
  return input;
}
}  // namespace detail

void check_type(const std::string& where, const std::string& name, const InputView& input,
                const std::vector<ONNXTensorElementDataType>& allowed) {
  for (auto type : allowed)
    if (input.type == type) return;
  std::string wanted;
  for (size_t i = 0; i < allowed.size(); ++i)
    wanted += std::string(i ? " or " : "") + type_name(allowed[i]);
  fail(where, name, "be a " + wanted + " tensor", type_name(input.type));
}

LogitsType check_logits_type(const std::string& where, const InputView& logits) {
  check_type(where, "logits", logits,
             {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16});
  return logits.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16 ? LogitsType::kFloat16
                                                              : LogitsType::kFloat32;
}

namespace {
void check_scalar(const std::string& where, const std::string& name, const InputView& input,
                  ONNXTensorElementDataType type) {
  check_type(where, name, input, {type});
  if (input.count != 1)
    fail(where, name, "be a scalar (one element)", "shape " + shape_text(input.shape));
}
}  // namespace

float scalar_float(const std::string& where, const std::string& name, const InputView& input) {
  check_scalar(where, name, input, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
  return input.as<float>()[0];
}

int64_t scalar_int64(const std::string& where, const std::string& name, const InputView& input) {
  check_scalar(where, name, input, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64);
  return input.as<int64_t>()[0];
}

ParallelFor thread_pool(const Ort::KernelContext& context) {
  return [&context](size_t n_tasks, const Task& task) {
    if (n_tasks == 0) return;
    context.ParallelFor([](void* data, size_t i) { (*static_cast<const Task*>(data))(i); }, n_tasks,
                        0, const_cast<Task*>(&task));
  };
}

}  // namespace vampnet::ort
