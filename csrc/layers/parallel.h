// A small persistent thread pool for splitting one kernel call into a few ranges.
//
// Consumes: a task count and a function of one task index. Produces: the calls, spread over up
// to `threads` threads (the caller's thread takes part), returning when all are done.
#pragma once

#include <cstdint>
#include <functional>

namespace ep {

// Runs fn(i) for i in [0, tasks) on min(threads, tasks) threads. Exceptions thrown by fn are
// rethrown in the caller (the first one). threads <= 1 runs inline.
void parallel_for(int threads, int64_t tasks, const std::function<void(int64_t)>& fn);

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
