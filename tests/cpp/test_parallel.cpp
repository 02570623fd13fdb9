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
