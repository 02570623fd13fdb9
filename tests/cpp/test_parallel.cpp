// parallel_for: runs every task exactly once for any thread count, and rethrows a task's error.
#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <vector>

#include "layers/parallel.h"

TEST(Parallel, EveryTaskOnce) {
  for (int threads : {1, 2, 3, 8})
    for (int64_t tasks : {0, 1, 2, 7, 100}) {
      std::vector<std::atomic<int>> hits(tasks);
      ep::parallel_for(threads, tasks, [&](int64_t i) { hits[i]++; });
      for (auto& h : hits) EXPECT_EQ(h.load(), 1) << threads << " threads, " << tasks << " tasks";
    }
}

TEST(Parallel, RethrowsTaskError) {
  EXPECT_THROW(ep::parallel_for(2, 10, [](int64_t i) {
                 if (i == 5) throw std::runtime_error("task 5");
               }),
               std::runtime_error);
  std::atomic<int> n{0};
  ep::parallel_for(2, 4, [&](int64_t) { n++; });  // the pool still works afterwards
  EXPECT_EQ(n.load(), 4);
}

#include <chrono>
#include <thread>

// Two tasks that each wait for the other to have started can only both finish if the pool runs
// them at the same time (a serial pool would leave the first one waiting until the deadline).
TEST(Parallel, TasksRunConcurrently) {
  std::atomic<int> started{0};
  std::atomic<int> met{0};
  ep::parallel_for(2, 2, [&](int64_t) {
    started++;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (started.load() < 2 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
    if (started.load() == 2) met++;
  });
  EXPECT_EQ(met.load(), 2);
}
