#include "check_range.h"

#include "../kernels/check_range.h"

namespace vampnet::ort {

namespace {
constexpr const char* kWhere = "CheckRange";

std::string string_attribute(const Ort::ConstKernelInfo& info, const char* name) {
  try {
    return info.GetAttribute<std::string>(name);
  } catch (const Ort::Exception&) {
    fail(kWhere, std::string("attribute ") + name, "be a string", "none");
  }
}

float float_attribute(const Ort::ConstKernelInfo& info, const char* name) {
  try {
    return info.GetAttribute<float>(name);
  } catch (const Ort::Exception&) {
    fail(kWhere, std::string("attribute ") + name, "be a float", "none");
  }
}
}  // namespace

CheckRangeKernel::CheckRangeKernel(const OrtKernelInfo* info) {
  const Ort::ConstKernelInfo attributes(info);
  name = string_attribute(attributes, "name");
  where = string_attribute(attributes, "where");
  low = float_attribute(attributes, "min");
  high = float_attribute(attributes, "max");
  if (!(low <= high))
    fail(kWhere, "attribute min", "be <= max = " + range_text(high), range_text(low));
}

Ort::UnownedValue CheckRangeKernel::check(const Ort::KernelContext& context) const {
  const InputView x = get_input(context, Input::kX);
  check_type(where, name, x, {ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE});
  if (x.count != 1) fail(where, name, "be a scalar (one element)", "shape " + shape_text(x.shape));
  check_range(where, name, x.as<double>()[0], low, high);
  return get_output(context, Output::kOk, {});
}

OrtStatusPtr CheckRangeKernel::ComputeV2(OrtKernelContext* raw_context) {
  return guard([&] {
    Ort::KernelContext context(raw_context);
    *check(context).GetTensorMutableData<bool>() = true;
  });
}

}  // namespace vampnet::ort
