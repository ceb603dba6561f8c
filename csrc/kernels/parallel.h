// How a kernel spreads independent tasks over threads. The ORT ops pass the session's intra-op
// thread pool; the Python module passes plain std::threads. Results never depend on it: every
// task writes its own outputs and draws its own random numbers.
#pragma once

#include <cstddef>
#include <functional>

namespace vampnet {

using Task = std::function<void(size_t task)>;
using ParallelFor = std::function<void(size_t n_tasks, const Task& task)>;

inline void run_serial(size_t n_tasks, const Task& task) {
  for (size_t i = 0; i < n_tasks; ++i) task(i);
}

}  // namespace vampnet

#include <exception>
#include <vector>

namespace vampnet {

// Runs tasks in parallel and rethrows, after all have finished, the exception of the lowest
// failing task: no exception escapes into a thread pool, and the message does not depend on
// scheduling.
inline void parallel_checked(const ParallelFor& parallel_for, size_t n_tasks, const Task& task) {
  std::vector<std::exception_ptr> errors(n_tasks);
  parallel_for(n_tasks, [&](size_t i) {
    try {
      task(i);
    } catch (...) {
      errors[i] = std::current_exception();
    }
  });
  for (const auto& error : errors)
    if (error) std::rethrow_exception(error);
}

}  // namespace vampnet
