// vampnet_onnx._kernels: the op library's kernels on numpy arrays, no ORT in between. Used by the
// Python-loop generation mode, by the kernel tests, and by users who drive their own loop.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <optional>
#include <thread>

#include "../kernels/check_range.h"
#include "../kernels/det_math.h"
#include "../kernels/logits.h"
#include "../kernels/mask_git_step.h"
#include "../kernels/rng.h"
#include "../kernels/sampling.h"

namespace py = pybind11;
using namespace vampnet;

namespace {

ParallelFor thread_pool(int threads) {
  if (threads < 1) fail("_kernels", "threads", "be >= 1", to_text(threads));
  return [threads](size_t n_tasks, const Task& task) {
    const size_t n_threads = std::min<size_t>(static_cast<size_t>(threads), n_tasks);
    if (n_threads <= 1) return run_serial(n_tasks, task);
    std::atomic<size_t> next{0};
    auto worker = [&] {
      for (size_t i = next++; i < n_tasks; i = next++) task(i);
    };
    std::vector<std::thread> pool;
    for (size_t t = 1; t < n_threads; ++t) pool.emplace_back(worker);
    worker();
    for (auto& thread : pool) thread.join();
  };
}

std::vector<int64_t> shape_of(const py::array& array) {
  return std::vector<int64_t>(array.shape(), array.shape() + array.ndim());
}

std::string dtype_name(const py::array& array) {
  return py::str(array.dtype()).cast<std::string>();
}

LogitsType logits_type(const py::array& logits) {
  return logits.dtype().is(py::dtype("float16")) ? LogitsType::kFloat16 : LogitsType::kFloat32;
}

// A C-contiguous view of `array` if its dtype is one of `allowed`, else the house-format error.
py::array require(const std::string& where, const std::string& name, const py::array& array,
                  const std::vector<std::string>& allowed) {
  std::string wanted;
  for (const auto& dtype : allowed) {
    if (array.dtype().is(py::dtype(dtype))) return py::array::ensure(array, py::array::c_style);
    wanted += (wanted.empty() ? "" : " or ") + dtype;
  }
  fail(where, name, "be a " + wanted + " array", dtype_name(array));
}

py::tuple sample_tokens_py(const py::array& logits_in, float temperature, int64_t top_k,
                           float top_p, int64_t seed, int64_t offset, int64_t first_row,
                           int threads) {
  const std::string where = "sample_tokens";
  const py::array logits = require(where, "logits", logits_in, {"float32", "float16"});
  if (logits.ndim() < 1) fail(where, "logits", "have rank >= 1 [..., V]", "a scalar");
  if (first_row < 0) fail(where, "first_row", "be >= 0", to_text(first_row));
  SamplingParams params{temperature, top_k, top_p, static_cast<uint64_t>(seed)};
  check_sampling_params(where, params);
  std::vector<int64_t> row_shape = shape_of(logits);
  const auto vocab = static_cast<size_t>(row_shape.back());
  row_shape.pop_back();
  size_t rows = 1;
  for (auto d : row_shape) rows *= static_cast<size_t>(d);
  py::array_t<int64_t> tokens(row_shape);
  py::array_t<float> logprob(row_shape);
  const ParallelFor pool = thread_pool(threads);
  int64_t* tokens_data = tokens.mutable_data();
  float* logprob_data = logprob.mutable_data();
  dispatch_logits(logits_type(logits), logits.data(), [&](const auto* typed_logits) {
    py::gil_scoped_release release;
    sample_tokens(where, typed_logits, rows, vocab, params, static_cast<uint64_t>(offset),
                  static_cast<uint64_t>(first_row), tokens_data, logprob_data, pool);
  });
  return py::make_tuple(tokens, logprob);
}

// A key argument of mask_git_step (seed, batch_offset): a Python int, or int64 values (a numpy
// scalar or array) with one element or one per item (`read_item_keys`).
void item_keys_py(const std::string& where, const std::string& name, const py::object& value,
                  int64_t batch, int64_t* scalar, std::vector<int64_t>* per_item) {
  if (py::isinstance<py::int_>(value) && !py::isinstance<py::bool_>(value)) {
    *scalar = value.cast<int64_t>();
    per_item->clear();
    return;
  }
  // numpy scalars and sequences become arrays; their dtype is checked as an array's.
  const py::array keys = require(where, name, py::array::ensure(value), {"int64"});
  read_item_keys(where, name, shape_of(keys), static_cast<int64_t>(keys.size()),
                 static_cast<const int64_t*>(keys.data()), batch, scalar, per_item);
}

py::tuple mask_git_step_py(const py::array& logits_in, const py::array& codes_in,
                           const py::array& mask_in, int64_t step, int64_t n_steps,
                           float temperature, int64_t top_k, float top_p, float mask_temperature,
                           const py::object& seed, std::optional<py::array> n_masked_start_in,
                           bool batch_coupled, const py::object& batch_offset, int threads) {
  const std::string where = "mask_git_step";
  const py::array logits = require(where, "logits", logits_in, {"float32", "float16"});
  const py::array codes = require(where, "codes", codes_in, {"int64"});
  const py::array mask = require(where, "mask", mask_in, {"bool"});
  MaskGitStepParams params;
  params.step = step;
  params.n_steps = n_steps;
  params.sampling = {temperature, top_k, top_p, 0};
  params.mask_temperature = mask_temperature;
  params.batch_coupled = batch_coupled;
  check_mask_git_step_params(where, params);
  std::optional<py::array> n_masked_start;
  std::vector<int64_t> start_shape;
  if (n_masked_start_in) {
    n_masked_start = require(where, "n_masked_start", *n_masked_start_in, {"int64"});
    start_shape = shape_of(*n_masked_start);
  }
  const MaskGitStepShape shape =
      check_mask_git_step_shapes(where, shape_of(logits), shape_of(codes), shape_of(mask),
                                 n_masked_start ? &start_shape : nullptr);
  int64_t batch_seed = 0;
  item_keys_py(where, "seed", seed, shape.batch, &batch_seed, &params.seeds);
  params.sampling.seed = static_cast<uint64_t>(batch_seed);
  item_keys_py(where, "batch_offset", batch_offset, shape.batch, &params.batch_offset,
               &params.batch_offsets);
  const std::vector<int64_t> out_shape = shape_of(codes);
  py::array_t<int64_t> codes_out(out_shape);
  py::array_t<bool> mask_out(out_shape);
  py::array_t<int64_t> model_input(out_shape);
  const int64_t* start =
      n_masked_start ? static_cast<const int64_t*>(n_masked_start->data()) : nullptr;
  const ParallelFor pool = thread_pool(threads);
  int64_t* codes_out_data = codes_out.mutable_data();
  bool* mask_out_data = mask_out.mutable_data();
  int64_t* model_input_data = model_input.mutable_data();
  const auto* codes_data = static_cast<const int64_t*>(codes.data());
  const auto* mask_data = static_cast<const bool*>(mask.data());
  dispatch_logits(logits_type(logits), logits.data(), [&](const auto* typed_logits) {
    py::gil_scoped_release release;
    mask_git_step(where, shape, typed_logits, codes_data, mask_data, start, params, codes_out_data,
                  mask_out_data, model_input_data, pool);
  });
  return py::make_tuple(codes_out, mask_out, model_input);
}

py::array_t<double> map_double(
    const py::array_t<double, py::array::c_style | py::array::forcecast>& x, double (*fn)(double)) {
  py::array_t<double> out(shape_of(x));
  const double* in = x.data();
  double* dst = out.mutable_data();
  for (py::ssize_t i = 0; i < x.size(); ++i) dst[i] = fn(in[i]);
  return out;
}

}  // namespace

PYBIND11_MODULE(_kernels, m) {
  m.doc() = "The vampnet_onnx op library's C++ kernels on numpy arrays (no ONNX Runtime).";
  py::register_exception_translator([](std::exception_ptr error) {
    try {
      if (error) std::rethrow_exception(error);
    } catch (const InvalidArgument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });

  m.def("sample_tokens", &sample_tokens_py, py::arg("logits"), py::arg("temperature") = 1.0f,
        py::arg("top_k") = 0, py::arg("top_p") = 1.0f, py::arg("seed") = 0, py::arg("offset") = 0,
        py::arg("first_row") = 0, py::arg("threads") = 1,
        R"(Sample one token per row of logits [..., V] (float32 or float16).

Returns (tokens int64 [...], logprob float32 [...]); same contract as the SampleTokens op
(docs/ops.md). threads: worker threads; results do not depend on it.)");

  m.def(
      "mask_git_step", &mask_git_step_py, py::arg("logits"), py::arg("codes"), py::arg("mask"),
      py::arg("step"), py::arg("n_steps"), py::arg("temperature") = 1.0f, py::arg("top_k") = 0,
      py::arg("top_p") = 1.0f, py::arg("mask_temperature") = 10.5f, py::arg("seed") = 0,
      py::arg("n_masked_start") = py::none(), py::arg("batch_coupled") = false,
      py::arg("batch_offset") = 0, py::arg("threads") = 1,
      R"(One VampNet generation step: logits [B, T, P, V], codes int64 [B, C, T], mask bool [B, C, T].

seed, batch_offset: an int for the batch (item b draws stream item batch_offset + b), or int64
arrays [B] (item b draws with key seed[b] from stream item batch_offset[b]).
Returns (codes_out int64, mask_out bool, model_input int64), each [B, C, T]; same contract as the
MaskGitStep op (docs/ops.md).)");

  m.def(
      "check_range",
      [](double value, const std::string& name, double low, double high, const std::string& where) {
        check_range(where, name, value, low, high);
        return true;
      },
      py::arg("value"), py::arg("name"), py::arg("min"), py::arg("max"), py::arg("where") = "Vamp",
      R"(The CheckRange op's rule: True, or ValueError "<where>: <name> must be in [min, max], got
<value>" (NaN fails; integral values print as integers).)");

  m.def(
      "philox4x32_10",
      [](std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key) {
        return philox4x32_10(counter, key);
      },
      py::arg("counter"), py::arg("key"), "One Philox4x32-10 block (for tests).");
  m.def("det_exp", [](const py::array_t<double, py::array::c_style | py::array::forcecast>& x) {
    return map_double(x, det::exp);
  });
  m.def("det_log", [](const py::array_t<double, py::array::c_style | py::array::forcecast>& x) {
    return map_double(x, det::log);
  });
  m.def("det_cos", [](const py::array_t<double, py::array::c_style | py::array::forcecast>& x) {
    return map_double(x, det::cos);
  });
  m.def("schedule_count", &schedule_count, py::arg("step"), py::arg("n_steps"), py::arg("n0"),
        "floor(gamma(r) * n0) in VampNet's float32 arithmetic, before the clamps.");
}
