// A small persistent thread pool for splitting one kernel call into a few ranges.
//
// Consumes: a task count and a function of one task index. Produces: the calls, spread over up
// to `threads` threads (the caller's thread takes part), returning when all are done.
#pragma once

#include <cstdint>
#include <functional>
#include <utility>

namespace ep {

// Runs fn(i) for i in [0, tasks) on min(threads, tasks) threads (parallel_run). Exceptions thrown
// by fn are rethrown in the caller (the first one).
void parallel_run(int threads, int64_t tasks, const std::function<void(int64_t)>& fn);

// The same, with a single thread or task run inline here without wrapping fn in a std::function:
// its construction (a heap block for most lambdas) cost about a fifth of a small batch-1 layer
// call.
template <class F>
inline void parallel_for(int threads, int64_t tasks, F&& fn) {
  if (threads <= 1 || tasks <= 1) {
    for (int64_t i = 0; i < tasks; ++i) fn(i);
    return;
  }
  parallel_run(threads, tasks, std::function<void(int64_t)>(std::forward<F>(fn)));
}

// Process-wide counts since start: pool calls that asked for helpers (`calls`), and helpers that
// joined one (`joins`; each call asks for at most threads - 1). A helper may not run at all while
// another process or thread holds its core (a BLAS library's workers spin for about 0.1 s after
// each call), so a caller that times a split can tell whether it measured one.
struct ParallelCounts {
  uint64_t calls = 0, joins = 0;
};
ParallelCounts parallel_counts();

// While one exists (in any thread), the pool's idle workers keep spinning instead of going to
// sleep: a model run that alternates split operators with unsplit ones longer than the workers'
// spin would otherwise pay a wake-up (40-60 us on a VM) at every split operator after such a
// gap. A run holds the pool for its duration only; afterwards idle workers sleep as before.
class ParallelHold {
 public:
  explicit ParallelHold(bool on);
  ~ParallelHold();
  ParallelHold(const ParallelHold&) = delete;
  ParallelHold& operator=(const ParallelHold&) = delete;

 private:
  bool on_;
};

}  // namespace ep
