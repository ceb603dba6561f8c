// The library's one exported entry point. ORT calls it from OrtSessionOptions with its own API
// table, which is why the headers are used with ORT_API_MANUAL_INIT: no link against
// libonnxruntime, and one build loads into every runtime whose API version is >= the headers'.
#include <mutex>

#include "ops/check_range.h"
#include "ops/mask_git_step.h"
#include "ops/op_utils.h"
#include "ops/sample_tokens.h"
#include "ops/snake.h"
#if defined(VAMPNET_CUDA_OPS)
#include "ops/cuda/ops.h"
#endif

// ORT_EXPORT is empty on Linux: with hidden visibility the entry point needs its own attribute
// (the linker's export list, exports.map or exports.darwin.txt, then keeps it alone). On Windows,
// as in ORT itself, a .def file (exports.def) exports it.
#if defined(_WIN32)
#define VAMPNET_EXPORT
#else
#define VAMPNET_EXPORT __attribute__((visibility("default")))
#endif

#define VAMPNET_STR_(x) #x
#define VAMPNET_STR(x) VAMPNET_STR_(x)

namespace {

constexpr const char* kDomain = "vampnet_onnx";

// The op objects and the domain must outlive every session that uses them, so they live for the
// whole process. They are built once and never modified afterwards.
struct Registry {
  vampnet::ort::SampleTokensOp sample_tokens;
  vampnet::ort::MaskGitStepOp mask_git_step;
  vampnet::ort::CheckRangeOp check_range;
  vampnet::ort::SnakeOp snake;
#if defined(VAMPNET_CUDA_OPS)
  // The CUDA execution provider's twins, in the same domain: a session with the CUDA provider
  // runs these, a CPU session the ops above (docs/ops.md, "CUDA kernels").
  vampnet::ort::cuda::SampleTokensCudaOp sample_tokens_cuda;
  vampnet::ort::cuda::MaskGitStepCudaOp mask_git_step_cuda;
  vampnet::ort::cuda::CheckRangeCudaOp check_range_cuda;
#endif
  Ort::CustomOpDomain domain{kDomain};

  Registry() {
    domain.Add(&sample_tokens);
    domain.Add(&mask_git_step);
    domain.Add(&check_range);
    domain.Add(&snake);
#if defined(VAMPNET_CUDA_OPS)
    domain.Add(&sample_tokens_cuda);
    domain.Add(&mask_git_step_cuda);
    domain.Add(&check_range_cuda);
#endif
  }
};

}  // namespace

extern "C" VAMPNET_EXPORT OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (api == nullptr) {
    // Returning nullptr would mean success without ops: report the version problem instead.
    return api_base->GetApi(1)->CreateStatus(
        ORT_FAIL, "vampnet_onnx: onnxruntime must provide ORT API version " VAMPNET_STR(ORT_API_VERSION)
                  " (onnxruntime >= 1." VAMPNET_STR(ORT_API_VERSION) "), got an older runtime");
  }
  static std::once_flag init_once;
  std::call_once(init_once, [api] { Ort::InitApi(api); });
  return vampnet::ort::guard([&] {
    static Registry registry;
    Ort::UnownedSessionOptions(options).Add(registry.domain);
  });
}
