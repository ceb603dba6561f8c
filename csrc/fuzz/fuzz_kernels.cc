// libFuzzer harness over the pure C++ kernels (csrc/kernels): sample_tokens and mask_git_step on
// arbitrary shapes (including zero-size ones), values (NaN, +-inf, subnormals, ties, float16 bit
// patterns) and settings (temperature 0 / tiny / huge / inf, top_k 0..V+1 and beyond, top_p from
// subnormal to 1 and outside, any step and n_steps). Every input must end in a result that keeps
// the ops' contract (docs/ops.md) or in vampnet::InvalidArgument; the harness predicts which from
// the contract, so an error on valid input or a result on invalid input is a finding too. Any
// other exception, a sanitizer report or a broken invariant aborts. Commands:
// docs/reliability.md.
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <string>
#include <vector>

#include "../kernels/errors.h"
#include "../kernels/float16.h"
#include "../kernels/logits.h"
#include "../kernels/mask_git_step.h"
#include "../kernels/parallel.h"
#include "../kernels/sampling.h"

namespace {

using vampnet::InvalidArgument;
using vampnet::LogitsType;
using vampnet::MaskGitStepParams;
using vampnet::MaskGitStepShape;
using vampnet::ParallelFor;
using vampnet::SamplingParams;
using vampnet::Task;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kMax = std::numeric_limits<float>::max();
constexpr float kDenorm = std::numeric_limits<float>::denorm_min();
constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();
constexpr int64_t kInt64Min = std::numeric_limits<int64_t>::min();
constexpr const char* kWhere = "fuzz";

// Aborts with the broken invariant: libFuzzer then saves the input as a crash.
#define FUZZ_CHECK(condition)                                                                \
  do {                                                                                       \
    if (!(condition)) {                                                                      \
      std::fprintf(stderr, "fuzz_kernels:%d: invariant broken: %s\n", __LINE__, #condition); \
      std::abort();                                                                          \
    }                                                                                        \
  } while (0)

// Two schedules of the same tasks: results must not depend on the order tasks run in.
void forward_order(size_t n_tasks, const Task& task) { vampnet::run_serial(n_tasks, task); }
void reverse_order(size_t n_tasks, const Task& task) {
  for (size_t i = n_tasks; i-- > 0;) task(i);
}

// Cheap deterministic generator for the bulk of large inputs: the fuzzer chooses its seed, so a
// few bytes of input describe a whole vocabulary of logits.
struct SplitMix {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
};

float any_float(FuzzedDataProvider& in) {
  const uint32_t bits = in.ConsumeIntegral<uint32_t>();
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

// Values that sit on the kernels' branches: the exp underflow at -700, float overflow, ties.
const float kSpecialLogits[] = {0.0f,  -0.0f,  1.0f,   -1.0f,   0.5f,     2.0f,   -kInf, kInf,
                                kNaN,  kMax,   -kMax,  kDenorm, -kDenorm, 1e-7f,  88.7f, -103.f,
                                1e30f, -1e30f, 700.0f, -700.0f, 710.0f,   -710.f, 3.0f,  -1e-30f};

std::vector<float> make_logits(FuzzedDataProvider& in, size_t n) {
  std::vector<float> x(n);
  SplitMix rng{in.ConsumeIntegral<uint64_t>()};
  switch (in.ConsumeIntegralInRange(0, 5)) {
    case 0:  // raw bit patterns, as long as the input lasts (zeros after)
      for (auto& v : x) v = any_float(in);
      break;
    case 1:  // special values
      for (auto& v : x) v = in.PickValueInArray(kSpecialLogits);
      break;
    case 2:  // small integers: many ties
      for (auto& v : x) v = static_cast<float>(static_cast<int>(rng.next() % 5) - 2);
      break;
    case 3: {  // smooth values at a chosen scale, a chosen share of them replaced by specials
      const float scale =
          in.PickValueInArray<float>({1e-30f, 1e-3f, 1.0f, 3.0f, 30.0f, 1e4f, 1e37f});
      const double special_rate = in.ConsumeProbability<double>();
      for (auto& v : x) {
        const double sum = rng.uniform() + rng.uniform() + rng.uniform() - 1.5;
        v = rng.uniform() < special_rate
                ? kSpecialLogits[rng.next() % (sizeof kSpecialLogits / sizeof(float))]
                : static_cast<float>(sum * scale);
      }
      break;
    }
    case 4: {  // mostly -inf: few candidates, and rows with none
      const double finite_rate = in.ConsumeProbability<double>();
      for (auto& v : x) v = rng.uniform() < finite_rate ? static_cast<float>(rng.uniform()) : -kInf;
      break;
    }
    default:  // one value everywhere
      std::fill(x.begin(), x.end(), any_float(in));
  }
  return x;
}

// float16 bit patterns: half of them straight from the input, the others finite values.
std::vector<uint16_t> make_half_logits(FuzzedDataProvider& in, size_t n) {
  std::vector<uint16_t> h(n);
  const uint16_t specials[] = {0x0000, 0x8000, 0x3C00, 0xBC00, 0x7C00, 0xFC00,
                               0x7E00, 0x7BFF, 0xFBFF, 0x0001, 0x0400, 0x4000};
  SplitMix rng{in.ConsumeIntegral<uint64_t>()};
  const int pattern = in.ConsumeIntegralInRange(0, 2);
  for (auto& v : h) {
    if (pattern == 0) {
      v = in.ConsumeIntegral<uint16_t>();
    } else if (pattern == 1) {
      v = in.PickValueInArray(specials);
    } else {
      v = static_cast<uint16_t>(rng.next());
      if ((v & 0x7C00u) == 0x7C00u) v &= 0xBFFFu;  // exponent all ones: make it finite
    }
  }
  return h;
}

std::vector<float> to_float(const std::vector<uint16_t>& h) {
  std::vector<float> x(h.size());
  for (size_t i = 0; i < h.size(); ++i) x[i] = vampnet::half_to_float(h[i]);
  return x;
}

SamplingParams make_sampling_params(FuzzedDataProvider& in, size_t vocab) {
  SamplingParams params;
  const auto v = static_cast<int64_t>(vocab);
  params.temperature =
      in.ConsumeBool()
          ? in.PickValueInArray<float>({0.0f, -0.0f, kDenorm, 1e-30f, 1e-3f, 0.5f, 1.0f, 2.0f,
                                        25.0f, 1e30f, kMax, kInf, kNaN, -1.0f, -kDenorm})
          : any_float(in);
  params.top_k =
      in.ConsumeBool()
          ? in.PickValueInArray<int64_t>({0, 1, 2, v - 1, v, v + 1, -1, kInt64Max, kInt64Min})
          : in.ConsumeIntegralInRange<int64_t>(0, v + 2);
  params.top_p = in.ConsumeBool()
                     ? in.PickValueInArray<float>({1.0f, 0.99999994f, 0.9f, 0.5f, 1e-6f,
                                                   std::numeric_limits<float>::min(), kDenorm, 0.0f,
                                                   -0.0f, 1.0000001f, kNaN, kInf, -1.0f})
                     : any_float(in);
  params.seed = in.ConsumeIntegral<uint64_t>();
  return params;
}

bool sampling_params_valid(const SamplingParams& p) {
  return p.temperature >= 0.0f && p.top_k >= 0 && p.top_p > 0.0f && p.top_p <= 1.0f;
}

// A row the contract accepts: no NaN or +inf, at least one value above -inf.
bool row_valid(const float* x, size_t vocab) {
  bool finite = false;
  for (size_t i = 0; i < vocab; ++i) {
    if (std::isnan(x[i]) || x[i] == kInf) return false;
    finite |= x[i] > -kInf;
  }
  return finite;
}

// What the contract says about a token sampled from row x of V values.
void check_token(const float* x, size_t vocab, const SamplingParams& params, int64_t token,
                 float logprob) {
  FUZZ_CHECK(token >= 0 && static_cast<size_t>(token) < vocab);
  FUZZ_CHECK(x[token] > -kInf);  // -inf logits are never sampled
  FUZZ_CHECK(logprob <= 0.0f);   // also rejects NaN
  if (params.temperature == 0.0f) {
    const size_t argmax = std::max_element(x, x + vocab) - x;  // first maximum
    FUZZ_CHECK(static_cast<size_t>(token) == argmax);
  }
  if (params.top_k > 0 && static_cast<size_t>(params.top_k) < vocab) {
    const auto greater = std::count_if(x, x + vocab, [&](float v) { return v > x[token]; });
    FUZZ_CHECK(greater < params.top_k);  // the token is >= the k-th largest
  }
}

struct SampleTokensResult {
  std::vector<int64_t> tokens;
  std::vector<float> logprob;
  std::string error;
  bool operator==(const SampleTokensResult& o) const {
    // Bitwise: NaN or -0 must come back as the same bits.
    return tokens == o.tokens && error == o.error && logprob.size() == o.logprob.size() &&
           (logprob.empty() ||
            std::memcmp(logprob.data(), o.logprob.data(), logprob.size() * sizeof(float)) == 0);
  }
};

template <typename Logit>
SampleTokensResult run_sample_tokens(const std::vector<Logit>& logits, size_t rows, size_t vocab,
                                     const SamplingParams& params, uint64_t offset,
                                     uint64_t first_row, const ParallelFor& order) {
  SampleTokensResult result{std::vector<int64_t>(rows, -1), std::vector<float>(rows, 0.0f), {}};
  try {
    vampnet::sample_tokens(kWhere, logits.data(), rows, vocab, params, offset, first_row,
                           result.tokens.data(), result.logprob.data(), order);
  } catch (const InvalidArgument& error) {
    result.error = error.what();
  }
  return result;
}

void check_error_format(const std::string& error) {
  FUZZ_CHECK(error.rfind(std::string(kWhere) + ": ", 0) == 0);
  FUZZ_CHECK(error.find(" must ") != std::string::npos);
  FUZZ_CHECK(error.find(", got ") != std::string::npos);
}

void fuzz_sample_tokens(FuzzedDataProvider& in, bool half) {
  const size_t rows = in.ConsumeIntegralInRange<size_t>(0, 12);
  // Mostly small vocabularies; sometimes past the nucleus walk's first 256-token block.
  const size_t vocab = in.ConsumeBool() ? in.ConsumeIntegralInRange<size_t>(0, 40)
                                        : in.ConsumeIntegralInRange<size_t>(0, 1100);
  const SamplingParams params = make_sampling_params(in, vocab);
  const uint64_t offset = in.ConsumeIntegral<uint64_t>();
  const uint64_t first_row = in.ConsumeIntegral<uint64_t>();
  std::vector<uint16_t> half_logits;
  std::vector<float> logits;
  if (half) {
    half_logits = make_half_logits(in, rows * vocab);
    logits = to_float(half_logits);
  } else {
    logits = make_logits(in, rows * vocab);
  }

  const SampleTokensResult got =
      run_sample_tokens(logits, rows, vocab, params, offset, first_row, forward_order);
  bool valid = sampling_params_valid(params) && (rows == 0 || vocab > 0);
  for (size_t r = 0; valid && r < rows; ++r) valid = row_valid(&logits[r * vocab], vocab);
  FUZZ_CHECK(got.error.empty() == valid);
  if (!valid) check_error_format(got.error);
  for (size_t r = 0; valid && r < rows; ++r)
    check_token(&logits[r * vocab], vocab, params, got.tokens[r], got.logprob[r]);

  // Same bits whatever order the row tasks run in, and for float16 input as for its floats.
  FUZZ_CHECK(run_sample_tokens(logits, rows, vocab, params, offset, first_row, reverse_order) ==
             got);
  if (half)
    FUZZ_CHECK(run_sample_tokens(half_logits, rows, vocab, params, offset, first_row,
                                 forward_order) == got);

  // Rows split over two calls with first_row give the tokens of one call.
  if (valid && rows >= 2) {
    const size_t split = in.ConsumeIntegralInRange<size_t>(1, rows - 1);
    const std::vector<float> head(logits.begin(), logits.begin() + split * vocab);
    const std::vector<float> tail(logits.begin() + split * vocab, logits.end());
    const SampleTokensResult a =
        run_sample_tokens(head, split, vocab, params, offset, first_row, forward_order);
    const SampleTokensResult b = run_sample_tokens(tail, rows - split, vocab, params, offset,
                                                   first_row + split, forward_order);
    FUZZ_CHECK(a.error.empty() && b.error.empty());
    for (size_t r = 0; r < rows; ++r) {
      const SampleTokensResult& part = r < split ? a : b;
      const size_t i = r < split ? r : r - split;
      FUZZ_CHECK(part.tokens[i] == got.tokens[r]);
      FUZZ_CHECK(std::memcmp(&part.logprob[i], &got.logprob[r], sizeof(float)) == 0);
    }
  }
}

struct MaskGitStepProblem {
  std::vector<int64_t> logits_shape, codes_shape, mask_shape, start_shape;
  bool has_start = false;
  std::vector<float> logits;
  std::vector<uint16_t> half_logits;
  std::vector<int64_t> codes, start;
  std::vector<char> mask;  // bool storage; vector<bool> has no data()
  MaskGitStepParams params;
};

struct MaskGitStepResult {
  std::vector<int64_t> codes_out, model_input;
  std::vector<char> mask_out;
  std::string error;
  bool operator==(const MaskGitStepResult& o) const {
    return codes_out == o.codes_out && model_input == o.model_input && mask_out == o.mask_out &&
           error == o.error;
  }
};

// The ORT op's sequence: settings, then shapes, then the kernel. Items [first, batch) of the
// problem (a part of it, for the independence checks; the part's batch_offset moves by `first`),
// with float or float16 logits.
MaskGitStepResult run_mask_git_step(const MaskGitStepProblem& p, int64_t first, int64_t batch,
                                    bool half, const ParallelFor& order) {
  MaskGitStepResult result;
  try {
    MaskGitStepParams params = p.params;
    params.batch_offset += first;
    vampnet::check_mask_git_step_params(kWhere, params);
    std::vector<int64_t> logits_shape = p.logits_shape, codes_shape = p.codes_shape;
    std::vector<int64_t> mask_shape = p.mask_shape, start_shape = p.start_shape;
    const int64_t dropped = p.codes_shape[0] - batch + first;  // items left out at both ends
    for (auto* shape : {&logits_shape, &codes_shape, &mask_shape, &start_shape})
      (*shape)[0] -= dropped;
    const MaskGitStepShape shape = vampnet::check_mask_git_step_shapes(
        kWhere, logits_shape, codes_shape, mask_shape, p.has_start ? &start_shape : nullptr);
    const size_t n = static_cast<size_t>(shape.batch * shape.codebooks * shape.frames);
    result.codes_out.assign(n, -1);
    result.model_input.assign(n, -1);
    result.mask_out.assign(n, 1);
    // Offsets of item `first` (the check above passed, so the shapes match the data).
    const size_t item_cells = static_cast<size_t>(shape.codebooks * shape.frames);
    const size_t item_logits = static_cast<size_t>(shape.frames * shape.predicted * shape.vocab);
    const size_t f = static_cast<size_t>(first);
    const auto* mask = reinterpret_cast<const bool*>(p.mask.data()) + f * item_cells;
    auto* mask_out = reinterpret_cast<bool*>(result.mask_out.data());
    const int64_t* codes = p.codes.data() + f * item_cells;
    const int64_t* start = p.has_start ? p.start.data() + f : nullptr;
    const LogitsType type = half ? LogitsType::kFloat16 : LogitsType::kFloat32;
    const void* logits = half ? static_cast<const void*>(p.half_logits.data()) : p.logits.data();
    vampnet::dispatch_logits(type, logits, [&](const auto* typed_logits) {
      vampnet::mask_git_step(kWhere, shape, typed_logits + f * item_logits, codes, mask, start,
                             params, result.codes_out.data(), mask_out, result.model_input.data(),
                             order);
    });
  } catch (const InvalidArgument& error) {
    result.error = error.what();
  }
  return result;
}

void fuzz_mask_git_step(FuzzedDataProvider& in, bool half) {
  MaskGitStepProblem p;
  const int64_t codebooks = in.ConsumeIntegralInRange<int64_t>(1, 5);
  int64_t predicted = in.ConsumeIntegralInRange<int64_t>(1, codebooks);
  int64_t frames = in.ConsumeIntegralInRange<int64_t>(0, 10);
  int64_t batch = in.ConsumeIntegralInRange<int64_t>(0, 3);
  const int64_t vocab = in.ConsumeBool() ? in.ConsumeIntegralInRange<int64_t>(0, 40)
                                         : in.ConsumeIntegralInRange<int64_t>(0, 600);
  // Zero-size problems with a huge other dimension: no work, and no memory, may depend on them.
  if (frames == 0 && in.ConsumeBool())
    batch = in.PickValueInArray<int64_t>(
        {int64_t{1} << 20, int64_t{1} << 31, (int64_t{1} << 32) - 1, int64_t{1} << 32});
  if (batch == 0 && in.ConsumeBool())
    frames =
        in.PickValueInArray<int64_t>({int64_t{1} << 31, (int64_t{1} << 32) - 1, int64_t{1} << 32});
  const int64_t cells = batch * codebooks * frames;  // 0 whenever batch or frames is huge
  const int64_t positions = frames * predicted;
  const size_t n_logits = cells == 0 ? 0 : static_cast<size_t>(batch * positions * vocab);

  p.logits_shape = {batch, frames, predicted, vocab};
  p.codes_shape = p.mask_shape = {batch, codebooks, frames};
  // Occasionally a shape the contract rejects, to reach every shape check.
  const int bad_shape = in.ConsumeIntegralInRange(0, 15);
  if (bad_shape == 1) p.logits_shape[1] += 1;
  if (bad_shape == 2) p.mask_shape[2] += 1;
  if (bad_shape == 3) p.logits_shape[2] = codebooks + 1;
  if (bad_shape == 4) p.logits_shape[2] = 0;
  if (bad_shape == 5) p.logits_shape.pop_back();
  if (bad_shape == 6) p.codes_shape.push_back(1);

  const int ncc = static_cast<int>(codebooks - predicted);
  SplitMix rng{in.ConsumeIntegral<uint64_t>()};
  const int mask_mode = in.ConsumeIntegralInRange(0, 4);
  const double mask_rate = in.ConsumeProbability<double>();
  p.mask.assign(static_cast<size_t>(cells), 0);
  p.codes.assign(static_cast<size_t>(cells), 0);
  const int code_mode = in.ConsumeIntegralInRange(0, 3);
  for (int64_t i = 0; i < cells; ++i) {
    const int64_t c = (i / frames) % codebooks;
    bool masked = false;
    if (mask_mode == 0) masked = c >= ncc && rng.uniform() < mask_rate;
    if (mask_mode == 1) masked = c >= ncc;
    if (mask_mode == 3) masked = rng.uniform() < mask_rate;  // conditioning codebooks too
    if (mask_mode == 4) masked = c >= ncc && i == cells - 1;
    p.mask[i] = masked;
    p.codes[i] = vocab > 0 ? static_cast<int64_t>(rng.next() % static_cast<uint64_t>(vocab)) : 0;
    if (code_mode == 1 && rng.uniform() < 0.05)  // out of range: fine under the mask only
      p.codes[i] = in.PickValueInArray<int64_t>({-1, vocab, vocab + 1, kInt64Max, kInt64Min});
  }

  std::vector<int64_t> counts(batch < 4 ? static_cast<size_t>(batch) : 0, 0);
  for (int64_t i = 0; i < cells; ++i) counts[i / (codebooks * frames)] += p.mask[i] ? 1 : 0;
  const int start_mode = batch < 4 ? in.ConsumeIntegralInRange(0, 3) : 0;
  p.has_start = start_mode != 0;
  p.start_shape = {batch};
  if (p.has_start) {
    p.start = counts;
    for (auto& s : p.start) {
      if (start_mode == 2) s = std::min(positions, s + in.ConsumeIntegralInRange<int64_t>(0, 5));
      if (start_mode == 3)
        s = in.PickValueInArray<int64_t>({-1, 0, positions, positions + 1, kInt64Max, kInt64Min});
    }
    if (in.ConsumeIntegralInRange(0, 15) == 0) p.start_shape = {batch + 1};
  }

  p.params.sampling = make_sampling_params(in, static_cast<size_t>(vocab));
  p.params.n_steps = in.ConsumeBool()
                         ? in.PickValueInArray<int64_t>(
                               {1, 2, 3, 5, 36, int64_t{1} << 40, kInt64Max, 0, -1, kInt64Min})
                         : in.ConsumeIntegralInRange<int64_t>(1, 40);
  const int64_t n_steps = p.params.n_steps;
  // n_steps - 1 without signed overflow at INT64_MIN.
  const auto last_step = static_cast<int64_t>(static_cast<uint64_t>(n_steps) - 1);
  p.params.step = in.ConsumeBool()
                      ? in.PickValueInArray<int64_t>({0, last_step, n_steps, -1, kInt64Max})
                      : in.ConsumeIntegralInRange<int64_t>(0, std::max<int64_t>(0, last_step));
  p.params.mask_temperature = in.PickValueInArray<float>(
      {0.0f, 10.5f, 1.0f, kDenorm, 1e30f, kMax, kInf, kNaN, -1.0f, -0.0f});
  p.params.batch_coupled = in.ConsumeBool();

  if (half) {
    p.half_logits = make_half_logits(in, n_logits);
    p.logits = to_float(p.half_logits);
  } else {
    p.logits = make_logits(in, n_logits);
  }
  // Last, so that inputs from before batch_offset existed (the regressions) still mean 0.
  const int64_t max_offset = (int64_t{1} << 32) - batch;
  p.params.batch_offset =
      in.ConsumeBool() ? in.PickValueInArray<int64_t>({max_offset, max_offset + 1, -1, kInt64Max,
                                                       kInt64Min, int64_t{1} << 31})
                       : in.ConsumeIntegralInRange<int64_t>(0, 7);

  const MaskGitStepResult got = run_mask_git_step(p, 0, batch, false, forward_order);

  // The contract's verdict, check by check.
  const MaskGitStepParams& params = p.params;
  bool valid = sampling_params_valid(params.sampling) && params.n_steps >= 1 && params.step >= 0 &&
               params.step < params.n_steps && params.mask_temperature >= 0.0f &&
               params.mask_temperature < kInf;
  valid = valid && (bad_shape == 0 || bad_shape > 6) && vocab >= 1 && batch < (int64_t{1} << 32) &&
          positions < (int64_t{1} << 32) && (!p.has_start || p.start_shape[0] == batch);
  valid = valid && params.batch_offset >= 0 && params.batch_offset <= max_offset;
  for (int64_t i = 0; valid && i < cells; ++i) {
    const int64_t b = i / (codebooks * frames), c = (i / frames) % codebooks, t = i % frames;
    if (p.mask[i])
      valid = c >= ncc && row_valid(&p.logits[((b * frames + t) * predicted + c - ncc) * vocab],
                                    static_cast<size_t>(vocab));
    else
      valid = p.codes[i] >= 0 && p.codes[i] < vocab;
  }
  for (size_t b = 0; valid && p.has_start && b < p.start.size(); ++b)
    valid = p.start[b] >= 0 && p.start[b] <= positions;
  FUZZ_CHECK(got.error.empty() == valid);
  if (!valid) check_error_format(got.error);

  FUZZ_CHECK(run_mask_git_step(p, 0, batch, false, reverse_order) == got);
  if (half) FUZZ_CHECK(run_mask_git_step(p, 0, batch, true, forward_order) == got);
  if (!valid) return;

  const bool last = params.step == params.n_steps - 1;
  for (int64_t b = 0; b < batch && cells > 0; ++b) {
    int64_t before = 0, after = 0;
    for (int64_t c = 0; c < codebooks; ++c) {
      for (int64_t t = 0; t < frames; ++t) {
        const int64_t i = (b * codebooks + c) * frames + t;
        FUZZ_CHECK(got.codes_out[i] >= 0 && got.codes_out[i] < vocab);
        FUZZ_CHECK(!got.mask_out[i] || p.mask[i]);  // mask_out is a subset of mask
        FUZZ_CHECK(got.model_input[i] == (got.mask_out[i] ? vocab : got.codes_out[i]));
        if (!p.mask[i]) FUZZ_CHECK(got.codes_out[i] == p.codes[i]);  // prompt and conditioning
        if (p.mask[i]) {
          const float* row = &p.logits[((b * frames + t) * predicted + c - ncc) * vocab];
          FUZZ_CHECK(row[got.codes_out[i]] > -kInf);
        }
        before += p.mask[i];
        after += got.mask_out[i];
      }
    }
    FUZZ_CHECK(after <= before);
    if (last) FUZZ_CHECK(after == 0);
    int64_t n0 = p.has_start ? p.start[b] : counts[b];
    if (params.batch_coupled) {
      n0 = 0;
      for (int64_t j = 0; j < batch; ++j) n0 += p.has_start ? p.start[j] : counts[j];
    }
    const int64_t k = vampnet::n_to_mask(params.step, params.n_steps, n0, before);
    if (k < before) FUZZ_CHECK(after <= k);  // at most k below the k-th smallest confidence
    // k >= m keeps every masked position masked (the cut is +inf), unless tau * g overflows
    // float32 to +inf, which a mask_temperature near FLT_MAX can do: see docs/reliability.md.
    if (k >= before && params.mask_temperature <= 1e30f) FUZZ_CHECK(after == before);
    if (!last && before >= 2) FUZZ_CHECK(after < before);  // every step but the last reveals
  }

  // Per-item schedule: a batch cut after its first item (the tail with batch_offset + 1) gives
  // the one-call outputs: an item depends on its own inputs and stream index only.
  if (!params.batch_coupled && batch >= 2 && cells > 0) {
    const size_t n = static_cast<size_t>(codebooks * frames);
    const MaskGitStepResult head = run_mask_git_step(p, 0, 1, false, forward_order);
    const MaskGitStepResult tail = run_mask_git_step(p, 1, batch, false, forward_order);
    FUZZ_CHECK(head.error.empty() && tail.error.empty());
    FUZZ_CHECK(head.codes_out.size() == n && tail.codes_out.size() == got.codes_out.size() - n);
    FUZZ_CHECK(std::equal(head.codes_out.begin(), head.codes_out.end(), got.codes_out.begin()));
    FUZZ_CHECK(std::equal(head.mask_out.begin(), head.mask_out.end(), got.mask_out.begin()));
    FUZZ_CHECK(std::equal(tail.codes_out.begin(), tail.codes_out.end(), got.codes_out.begin() + n));
    FUZZ_CHECK(std::equal(tail.mask_out.begin(), tail.mask_out.end(), got.mask_out.begin() + n));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  switch (in.ConsumeIntegralInRange(0, 3)) {
    case 0:
      fuzz_sample_tokens(in, false);
      break;
    case 1:
      fuzz_sample_tokens(in, true);
      break;
    case 2:
      fuzz_mask_git_step(in, false);
      break;
    default:
      fuzz_mask_git_step(in, true);
      break;
  }
  return 0;
}
