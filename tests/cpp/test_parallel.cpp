// parallel_for: runs every task exactly once for any thread count, and rethrows a task's error.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <stdexcept>
#include <thread>
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
  EXPECT_THROW(ep::parallel_for(2, 10,
                                [](int64_t i) {
                                  if (i == 5) throw std::runtime_error("task 5");
                                }),
               std::runtime_error);
  std::atomic<int> n{0};
  ep::parallel_for(2, 4, [&](int64_t) { n++; });  // the pool still works afterwards
  EXPECT_EQ(n.load(), 4);
}

#include <chrono>
#include <thread>

namespace {

// Two tasks on 2 threads, each waiting (up to 30 s) for the other to have started: how many saw
// the other. Both can only if the pool ran them at the same time (a serial pool leaves the first
// one waiting until the deadline).
int tasks_that_met() {
  std::atomic<int> started{0};
  std::atomic<int> met{0};
  ep::parallel_for(2, 2, [&](int64_t) {
    started++;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (started.load() < 2 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::yield();
    if (started.load() == 2) met++;
  });
  return met.load();
}

}  // namespace

TEST(Parallel, TasksRunConcurrently) { EXPECT_EQ(tasks_that_met(), 2); }

// Each thread starts on its own contiguous range of the tasks (the caller on the first): the
// caller's first task is 0, and the helper's first lies in the second half (its start, unless the
// helper was late and the caller took it).
TEST(Parallel, ThreadsStartOnTheirOwnRanges) {
  const auto caller = std::this_thread::get_id();
  std::vector<std::thread::id> who(8);
  std::vector<int64_t> order;
  std::mutex mu;
  ep::parallel_for(2, 8, [&](int64_t i) {
    {
      std::lock_guard<std::mutex> lock(mu);
      who[size_t(i)] = std::this_thread::get_id();
      order.push_back(i);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  });
  ASSERT_EQ(order.size(), 8u);
  int64_t first_caller = -1, first_helper = -1;
  for (int64_t i : order) {
    if (who[size_t(i)] == caller && first_caller < 0) first_caller = i;
    if (who[size_t(i)] != caller && first_helper < 0) first_helper = i;
  }
  EXPECT_EQ(first_caller, 0);
  ASSERT_GE(first_helper, 0) << "the helper ran nothing in 160 ms of tasks";
  EXPECT_GE(first_helper, 4);
}

// Calls back to back, each short enough that the caller often claims every task before a helper
// has joined: the caller then returns without waiting for that helper, which must not run a task
// of a call that has returned (its function is gone: ASan's use-after-scope) and must join a
// later call correctly. Every task of every call runs exactly once.
TEST(Parallel, BackToBackCallsWithLateHelpers) {
  for (int round = 0; round < 2000; ++round) {
    const int64_t tasks = 1 + round % 5;
    std::vector<int> hits(size_t(tasks), 0);
    std::atomic<int> total{0};
    ep::parallel_for(2 + round % 2, tasks, [&hits, &total](int64_t i) {
      hits[size_t(i)] += 1;
      total.fetch_add(1, std::memory_order_relaxed);
    });
    ASSERT_EQ(total.load(), tasks) << "round " << round;
    for (int h : hits) ASSERT_EQ(h, 1) << "round " << round;
  }
}

#include "layers/layers.h"

// Layers use one thread per min_macs_per_thread() multiply-adds, at most the threads asked for;
// 0 splits every call (the other tests run that way: test_util.h).
TEST(Parallel, ThreadsForCapsSmallCalls) {
  const double unit = ep::kMinMacsPerThread;
  EXPECT_EQ(ep::threads_for(2, 0.0, unit), 1);
  EXPECT_EQ(ep::threads_for(2, unit * 1.9, unit), 1);
  EXPECT_EQ(ep::threads_for(2, unit * 2.0, unit), 2);
  EXPECT_EQ(ep::threads_for(8, unit * 3.5, unit), 3);
  EXPECT_EQ(ep::threads_for(4, unit * 1e6, unit), 4);
  EXPECT_EQ(ep::threads_for(0, unit * 1e6, unit), 1);
  EXPECT_EQ(ep::threads_for(-3, unit * 1e6, unit), 1);
  EXPECT_EQ(ep::threads_for(3, 1.0, 0.0), 3);
  const double before = ep::min_macs_per_thread();
  ep::set_min_macs_per_thread(100.0);
  EXPECT_EQ(ep::threads_for(4, 250.0), 2);
  ep::set_min_macs_per_thread(before);
}

// A held pool (a model run) keeps its helpers spinning across gaps longer than their own spin;
// calls made under nested holds, across such gaps and after the holds end must still run every
// task once on more than one thread.
TEST(Parallel, HeldPoolRunsCallsAcrossGaps) {
  auto concurrent_call = [] {
    std::atomic<int> inside{0}, most{0};
    std::vector<std::atomic<int>> hits(64);
    ep::parallel_for(2, 64, [&](int64_t i) {
      const int now = ++inside;
      for (int seen = most.load(); now > seen && !most.compare_exchange_weak(seen, now);) {
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      hits[i]++;
      --inside;
    });
    for (auto& h : hits) EXPECT_EQ(h.load(), 1);
    return most.load();
  };
  {
    const ep::ParallelHold outer(true);
    for (int call = 0; call < 3; ++call) {
      const ep::ParallelHold inner(call % 2 == 0);
      EXPECT_EQ(concurrent_call(), 2) << "call " << call;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));  // past the workers' own spin
    }
  }
  const ep::ParallelHold off(false);
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  EXPECT_EQ(concurrent_call(), 2);
}

// parallel_counts: a pool call that asks for helpers counts once in `calls`, and each helper that
// joins it once in `joins`; two tasks that wait for each other have both run at the same time,
// so the helper joined. One thread or one task never reaches the pool.
TEST(Parallel, CountsCallsAndTheHelpersThatJoined) {
  const ep::ParallelCounts before = ep::parallel_counts();
  ASSERT_EQ(tasks_that_met(), 2);
  const ep::ParallelCounts after = ep::parallel_counts();
  EXPECT_EQ(after.calls - before.calls, 1u);
  EXPECT_EQ(after.joins - before.joins, 1u);
  ep::parallel_for(1, 10, [](int64_t) {});
  ep::parallel_for(4, 1, [](int64_t) {});
  const ep::ParallelCounts last = ep::parallel_counts();
  EXPECT_EQ(last.calls, after.calls);
  EXPECT_EQ(last.joins, after.joins);
}
