// vampnet_onnx_run: runs an ONNX model that uses the vampnet_onnx ops from plain C++, the way an
// app embeds them: register the op library by path, load the model, feed its inputs, run, print
// the outputs. The inputs are looked up by the names the model declares, so the same program runs
// the generation graph (coarse.generate.onnx: codes, mask, n_steps, temperature, top_k, top_p,
// mask_temperature, seed -> codes_out) or any other model; see README.md beside this file.
//
//   vampnet_onnx_run (--library libvampnet_onnx_ops.so | --no-library) --model MODEL.onnx
//                    [--threads N] [--repeat N] [--print NAME]... NAME=VALUE | NAME=@FILE.npy ...
//
// --no-library registers nothing: a graph exported with the ops' standard-op bodies (export's
// default) then runs them in place of our kernels (slower; the same codes on onnxruntime).
//
// NAME=@FILE.npy feeds an array from a .npy file (numpy.save: C order, little endian; float32,
// float16, float64, int64, int32 or bool); NAME=VALUE feeds a scalar of the input's declared
// type (rank 0 or [1], as the model declares it). Each output (or each --print NAME) is printed
// as a line "NAME TYPE [d0, d1, ...]" followed by a line of its values.
#include <onnxruntime_cxx_api.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <iterator>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

constexpr const char* kProgram = "vampnet_onnx_run";

// The house error format: "<where>: <argument> must <constraint>, got <value>".
[[noreturn]] void fail(const std::string& argument, const std::string& constraint,
                       const std::string& got) {
  throw std::invalid_argument(std::string(kProgram) + ": " + argument + " must " + constraint +
                              ", got " + got);
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

struct ElementType {
  ONNXTensorElementDataType onnx;
  const char* name;  // numpy's name
  const char* npy;   // .npy descr
  size_t size;
};

const ElementType kTypes[] = {
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, "float32", "<f4", 4},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16, "float16", "<f2", 2},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE, "float64", "<f8", 8},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64, "int64", "<i8", 8},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32, "int32", "<i4", 4},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL, "bool", "|b1", 1},
};

const ElementType& element_type(ONNXTensorElementDataType onnx, const std::string& what) {
  for (const auto& type : kTypes)
    if (type.onnx == onnx) return type;
  fail(what, "have a float32, float16, float64, int64, int32 or bool type",
       "ONNX element type " + std::to_string(onnx));
}

// An input's bytes, owned here: Ort::Value::CreateTensor only borrows them.
struct Array {
  const ElementType* type = nullptr;
  std::vector<int64_t> shape;
  std::vector<char> data;
};

// Reads a .npy file (format versions 1 to 3).
Array read_npy(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) fail("input file '" + path + "'", "be readable", "an error opening it");
  const std::vector<char> bytes((std::istreambuf_iterator<char>(file)),
                                std::istreambuf_iterator<char>());
  const std::string where = "'" + path + "'";
  if (bytes.size() < 10 || std::memcmp(bytes.data(), "\x93NUMPY", 6) != 0)
    fail(where, "be a .npy file", "no .npy magic");
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(bytes[i]); };
  const int major = byte(6);
  size_t header_len = byte(8) | (byte(9) << 8), start = 10;
  if (major >= 2) {
    if (bytes.size() < 12) fail(where, "be a .npy file", "a truncated header");
    header_len |= (static_cast<size_t>(byte(10)) << 16) | (static_cast<size_t>(byte(11)) << 24);
    start = 12;
  }
  if (start + header_len > bytes.size()) fail(where, "be a .npy file", "a truncated header");
  const std::string header(bytes.data() + start, header_len);
  const auto value_of = [&](const std::string& key) {
    const size_t at = header.find("'" + key + "':");
    if (at == std::string::npos) fail(where, "have '" + key + "' in its header", header);
    return header.substr(at + key.size() + 3);
  };
  const std::string order = value_of("fortran_order");
  if (order.compare(order.find_first_not_of(' '), 5, "False") != 0)
    fail(where, "be in C order", "fortran_order True");
  const std::string descr_text = value_of("descr");
  const size_t q = descr_text.find('\'');
  const std::string descr = descr_text.substr(q + 1, descr_text.find('\'', q + 1) - q - 1);
  Array array;
  for (const auto& type : kTypes)
    if (descr == type.npy) array.type = &type;
  if (array.type == nullptr)
    fail(where, "hold float32, float16, float64, int64, int32 or bool (little endian)",
         "dtype '" + descr + "'");
  const std::string shape_text_in = value_of("shape");
  std::istringstream dims(shape_text_in.substr(
      shape_text_in.find('(') + 1, shape_text_in.find(')') - shape_text_in.find('(') - 1));
  size_t count = 1;
  for (std::string dim; std::getline(dims, dim, ',');) {
    if (dim.find_first_not_of(' ') == std::string::npos) continue;
    array.shape.push_back(std::stoll(dim));
    count *= static_cast<size_t>(array.shape.back());
  }
  const size_t data_start = start + header_len;
  if (bytes.size() - data_start != count * array.type->size)
    fail(where, "hold " + std::to_string(count * array.type->size) + " data bytes",
         std::to_string(bytes.size() - data_start));
  array.data.assign(bytes.begin() + data_start, bytes.end());
  return array;
}

template <typename T>
void put(Array& array, T value) {
  array.data.resize(sizeof value);
  std::memcpy(array.data.data(), &value, sizeof value);
}

// A scalar of the model's declared type and rank (0 or 1) from its text.
Array scalar(const std::string& name, const std::string& text, const ElementType& type,
             const std::vector<int64_t>& declared_shape) {
  if (declared_shape.size() > 1)
    fail("input '" + name + "'",
         "be given as @FILE.npy (its rank is " + std::to_string(declared_shape.size()) + ")",
         "the scalar " + text);
  Array array;
  array.type = &type;
  array.shape.assign(declared_shape.size(), 1);
  size_t used = 0;
  try {
    switch (type.onnx) {
      case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT:
        put(array, std::stof(text, &used));
        break;
      case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE:
        put(array, std::stod(text, &used));
        break;
      case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64:
        put(array, static_cast<int64_t>(std::stoll(text, &used)));
        break;
      case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32:
        put(array, static_cast<int32_t>(std::stol(text, &used)));
        break;
      case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL:
        if (text != "true" && text != "false" && text != "1" && text != "0") break;
        put(array, text == "true" || text == "1");
        used = text.size();
        break;
      default:
        break;
    }
  } catch (const std::logic_error&) {  // stof & co: no number, or out of range
    used = 0;
  }
  if (used == 0 || used != text.size())
    fail("input '" + name + "'", std::string("be a ") + type.name + " scalar", "'" + text + "'");
  return array;
}

void print_output(const std::string& name, const Ort::Value& value) {
  const auto info = value.GetTensorTypeAndShapeInfo();
  const ElementType& type = element_type(info.GetElementType(), "output '" + name + "'");
  const std::vector<int64_t> shape = info.GetShape();
  const size_t count = info.GetElementCount();
  std::cout << name << ' ' << type.name << ' ' << shape_text(shape) << '\n';
  // Enough digits for floats to read back as the same value.
  std::cout << std::setprecision(type.onnx == ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE ? 17 : 9);
  for (size_t i = 0; i < count; ++i) {
    if (i) std::cout << ' ';
    switch (type.onnx) {
      case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT:
        std::cout << value.GetTensorData<float>()[i];
        break;
      case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE:
        std::cout << value.GetTensorData<double>()[i];
        break;
      case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64:
        std::cout << value.GetTensorData<int64_t>()[i];
        break;
      case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32:
        std::cout << value.GetTensorData<int32_t>()[i];
        break;
      case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL:
        std::cout << value.GetTensorData<bool>()[i];
        break;
      default:
        fail("output '" + name + "'", "have a printable type (not float16)", type.name);
    }
  }
  std::cout << '\n';
}

int integer(const std::string& option, const std::string& text) {
  size_t used = 0;
  int value = 0;
  try {
    value = std::stoi(text, &used);
  } catch (const std::logic_error&) {
    used = 0;
  }
  if (used == 0 || used != text.size()) fail(option, "be an integer", "'" + text + "'");
  return value;
}

struct Arguments {
  std::string library, model;
  bool no_library = false;
  int threads = 0;  // 0: onnxruntime's default
  int repeat = 1;
  std::vector<std::string> print;
  std::map<std::string, std::string> inputs;  // name -> VALUE or @FILE
};

Arguments parse(int argc, char** argv) {
  Arguments args;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const auto next = [&]() -> std::string {
      if (i + 1 >= argc) fail(arg, "be followed by a value", "nothing");
      return argv[++i];
    };
    if (arg == "--library") {
      args.library = next();
    } else if (arg == "--no-library") {
      args.no_library = true;
    } else if (arg == "--model") {
      args.model = next();
    } else if (arg == "--threads") {
      args.threads = integer(arg, next());
    } else if (arg == "--repeat") {
      args.repeat = integer(arg, next());
    } else if (arg == "--print") {
      args.print.push_back(next());
    } else if (arg.find('=') != std::string::npos && arg.rfind("--", 0) != 0) {
      args.inputs[arg.substr(0, arg.find('='))] = arg.substr(arg.find('=') + 1);
    } else {
      fail("argument '" + arg + "'",
           "be --library, --no-library, --model, --threads, --repeat, --print or NAME=VALUE",
           "'" + arg + "'");
    }
  }
  if (args.no_library && !args.library.empty())
    fail("--library", "not come with --no-library", "both");
  if (!args.no_library && args.library.empty())
    fail("--library", "name the op library (or --no-library)", "nothing");
  if (args.model.empty()) fail("--model", "name an .onnx file", "nothing");
  if (args.threads < 0) fail("--threads", "be >= 0", std::to_string(args.threads));
  if (args.repeat < 1) fail("--repeat", "be >= 1", std::to_string(args.repeat));
  return args;
}

int run(const Arguments& args) {
  // Errors reach main as exceptions and are printed there; the log would only repeat them.
  Ort::Env env(ORT_LOGGING_LEVEL_FATAL, kProgram);
  Ort::SessionOptions options;
  if (args.threads > 0) options.SetIntraOpNumThreads(args.threads);
  // The one call that makes the vampnet_onnx ops available to every model of this session.
  if (!args.no_library) options.RegisterCustomOpsLibrary(args.library.c_str());
  Ort::Session session(env, args.model.c_str(), options);
  Ort::AllocatorWithDefaultOptions allocator;

  std::vector<std::string> input_names;
  std::vector<Array> arrays;
  for (size_t i = 0; i < session.GetInputCount(); ++i) {
    const std::string name = session.GetInputNameAllocated(i, allocator).get();
    const Ort::TypeInfo type_info = session.GetInputTypeInfo(i);  // owns what info views
    const auto info = type_info.GetTensorTypeAndShapeInfo();
    const ElementType& type = element_type(info.GetElementType(), "input '" + name + "'");
    const auto given = args.inputs.find(name);
    if (given == args.inputs.end())
      fail("input '" + name + "'", "be given as " + name + "=VALUE or " + name + "=@FILE.npy",
           "nothing");
    Array array = given->second.rfind('@', 0) == 0
                      ? read_npy(given->second.substr(1))
                      : scalar(name, given->second, type, info.GetShape());
    if (array.type != &type)
      fail("input '" + name + "'", std::string("have the model's type ") + type.name,
           array.type->name);
    input_names.push_back(name);
    arrays.push_back(std::move(array));
  }
  for (const auto& given : args.inputs) {
    bool known = false;
    for (const auto& name : input_names) known |= name == given.first;
    if (!known) fail("input '" + given.first + "'", "be an input of the model", "no such input");
  }

  const auto memory = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  std::vector<Ort::Value> values;
  for (auto& array : arrays)
    values.push_back(Ort::Value::CreateTensor(memory, array.data.data(), array.data.size(),
                                              array.shape.data(), array.shape.size(),
                                              array.type->onnx));
  std::vector<std::string> output_names = args.print;
  if (output_names.empty())
    for (size_t i = 0; i < session.GetOutputCount(); ++i)
      output_names.push_back(session.GetOutputNameAllocated(i, allocator).get());
  std::vector<const char*> input_ptrs, output_ptrs;
  for (const auto& name : input_names) input_ptrs.push_back(name.c_str());
  for (const auto& name : output_names) output_ptrs.push_back(name.c_str());

  // --repeat runs the same feed again (for timing and leak checks); the last run is printed.
  std::vector<Ort::Value> outputs;
  for (int r = 0; r < args.repeat; ++r)
    outputs = session.Run(Ort::RunOptions{nullptr}, input_ptrs.data(), values.data(), values.size(),
                          output_ptrs.data(), output_ptrs.size());
  for (size_t i = 0; i < outputs.size(); ++i) print_output(output_names[i], outputs[i]);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse(argc, argv));
  } catch (const Ort::Exception& error) {  // the op errors come this way, in house format
    std::cerr << kProgram << ": onnxruntime: " << error.what() << '\n';
    return 1;
  } catch (const std::exception& error) {
    std::cerr << error.what() << '\n';
    return 1;
  }
}
