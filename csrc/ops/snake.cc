#include "snake.h"

#include "../kernels/snake.h"

namespace vampnet::ort {

namespace {
constexpr const char* kWhere = "Snake";

// A per-channel input: C values shaped [1, C, 1] (as the codec's parameters are stored).
const float* channel_values(const InputView& input, const char* name, int64_t channels) {
  check_type(kWhere, name, input, {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT});
  const std::vector<int64_t> expected{1, channels, 1};
  if (input.shape != expected)
    fail(kWhere, name, "have shape [1, " + std::to_string(channels) + ", 1] (C of x)",
         "shape " + shape_text(input.shape));
  return input.as<float>();
}
}  // namespace

OrtStatusPtr SnakeKernel::ComputeV2(OrtKernelContext* raw_context) {
  return guard([&] {
    Ort::KernelContext context(raw_context);
    const InputView x = get_input(context, Input::kX);
    check_type(kWhere, "x", x, {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT});
    if (x.shape.size() != 3)
      fail(kWhere, "x", "have rank 3 [B, C, T]", "shape " + shape_text(x.shape));
    const int64_t channels = x.shape[1], length = x.shape[2];
    const float* alpha = channel_values(get_input(context, Input::kAlpha), "alpha", channels);
    const float* inverse = channel_values(get_input(context, Input::kInverse), "inverse", channels);
    float* y = get_output(context, Output::kY, x.shape).GetTensorMutableData<float>();
    const float* in = x.as<float>();
    const size_t rows = static_cast<size_t>(x.shape[0] * channels);
    // One task per (item, channel) row: each writes its own samples, so any split gives the same
    // bits.
    thread_pool(context)(rows, [&](size_t row) {
      const size_t channel = row % static_cast<size_t>(channels);
      const size_t start = row * static_cast<size_t>(length);
      snake(in + start, alpha[channel], inverse[channel], static_cast<size_t>(length), y + start);
    });
  });
}

}  // namespace vampnet::ort
