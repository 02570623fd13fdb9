// Thread pool behind parallel_for (parallel.h). Workers are created on first use and kept;
// calls from different user threads are serialised by a mutex (the pool serves one
// parallel_for at a time).
//
// Waking a sleeping thread costs 40-60 us on a virtual machine (measured here: the futex wake
// and the host rescheduling the idle vCPU), as long as a whole 0.1 ms kernel call. So both
// sides spin before they sleep: a worker spins for kWorkerSpin after its last task, which
// covers the gap to the next layer's call, and the caller spins while the helpers that joined
// finish (a helper not yet running when the caller has claimed every task is not waited for). Only
// a pool idle for longer pays the wake-up, once. While a ParallelHold exists (a model run),
// workers spin past kWorkerSpin, since a run's gaps between split operators can be longer.
//
// Each call's tasks are cut into one contiguous range per thread, in order (the caller takes the
// first): a thread works through its own range, then takes what is left of the others'. Since
// operators split their rows in order, a thread then mostly reads rows it wrote one operator
// earlier, still in its own caches. Handed out first come, first served, every layer's rows were
// scattered over both cores. On the 2-vCPU VM of docs/runtime.md, in spells of minutes (the
// host's placement of the vCPUs, as far as we can tell: each alone ran at full speed), that made
// MobileNetV2 int8 on 2 threads 2.5 ms against 2.1 ms on one (1.6 ms with own ranges), while
// LiteRT, whose threads keep their ranges, stayed near 0.8 ms.
//
// Consumes: tasks. Produces: their side effects, and the first exception.
#include "layers/parallel.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace ep {

namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kWorkerSpin = std::chrono::microseconds(300);
// ParallelHold objects alive: while above 0, idle workers spin past kWorkerSpin
std::atomic<int> g_holds{0};
constexpr auto kCallerSpin = std::chrono::milliseconds(5);
std::atomic<uint64_t> g_calls{0}, g_joins{0};  // parallel_counts

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Spins until done() or the time is up; true if done() became true. With `yield`, each round
// also offers the core to any other runnable thread (an idle worker's spin must not take a core
// from the caller or another process on a loaded host; with nothing else to run it returns at
// once).
template <class Done>
bool spin_until(Done done, Clock::duration limit, bool yield = false) {
  const auto until = Clock::now() + limit;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (done()) return true;
      cpu_relax();
    }
    if (Clock::now() >= until) return done();
    if (yield) std::this_thread::yield();
  }
}

class Pool {
 public:
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_.store(true);
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

  void run(int threads, int64_t tasks, const std::function<void(int64_t)>& fn) {
    std::lock_guard<std::mutex> serial(call_mu_);
    const int helpers = int(std::min<int64_t>(threads, tasks)) - 1;
    g_calls.fetch_add(1, std::memory_order_relaxed);
    while (int(workers_.size()) < helpers) workers_.emplace_back([this] { loop(); });
    if (int(ranges_.size()) < helpers + 1) ranges_ = std::vector<Range>(size_t(helpers) + 1);
    {
      std::lock_guard<std::mutex> lock(mu_);
      fn_ = &fn;
      parts_ = helpers + 1;
      for (int t = 0; t < parts_; ++t) {
        ranges_[size_t(t)].next.store(tasks * t / parts_, std::memory_order_relaxed);
        ranges_[size_t(t)].end = tasks * (t + 1) / parts_;
      }
      active_.store(0);
      wanted_ = helpers;
      open_ = true;
      error_ = nullptr;
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    work(0);
    {
      // Every task has been claimed (work takes the other ranges' leftovers too), so only the
      // helpers that joined can still be running one. A helper that has not joined by now is not
      // waited for: on a loaded host it may not run for a whole scheduler slice (milliseconds),
      // and waiting for each one made a 2-thread model run 60x slower than one thread while
      // another process kept a core busy.
      std::lock_guard<std::mutex> lock(mu_);
      open_ = false;
    }
    if (!spin_until([this] { return active_.load(std::memory_order_acquire) == 0; }, kCallerSpin)) {
      std::unique_lock<std::mutex> lock(mu_);
      done_cv_.wait(lock, [this] { return active_.load() == 0; });
    }
    std::lock_guard<std::mutex> lock(mu_);
    fn_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  // thread `self`'s own range first, then the others' leftovers
  void work(int self) {
    for (int k = 0; k < parts_; ++k) {
      Range& r = ranges_[size_t((self + k) % parts_)];
      for (int64_t i; (i = r.next.fetch_add(1)) < r.end;) {
        try {
          (*fn_)(i);
        } catch (...) {
          std::lock_guard<std::mutex> lock(mu_);
          if (!error_) error_ = std::current_exception();
        }
      }
    }
  }

  void loop() {
    uint64_t seen = 0;
    int self = 0;
    for (;;) {
      const auto called = [&] {
        return generation_.load(std::memory_order_acquire) != seen || stop_.load();
      };
      while (!spin_until(called, kWorkerSpin, true) &&
             g_holds.load(std::memory_order_relaxed) > 0) {
      }
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_.load() || generation_.load() != seen; });
        if (stop_.load()) return;
        seen = generation_.load();
        // enough helpers, or the caller has claimed every task: wait for the next call
        if (wanted_ == 0 || !open_) continue;
        self = parts_ - wanted_;  // helpers take ranges 1, 2, ... in the order they join
        --wanted_;
        active_.fetch_add(1, std::memory_order_relaxed);
        g_joins.fetch_add(1, std::memory_order_relaxed);
      }
      work(self);
      {
        // under the lock: a caller that gave up spinning checks active_ under it before sleeping
        std::lock_guard<std::mutex> lock(mu_);
        active_.fetch_sub(1, std::memory_order_acq_rel);
      }
      done_cv_.notify_all();
    }
  }

  std::mutex call_mu_, mu_;
  std::condition_variable cv_, done_cv_;
  std::vector<std::thread> workers_;
  // one thread's tasks [next, end): each on its own cache line, so claiming one does not
  // disturb the other threads' counters
  struct alignas(64) Range {
    std::atomic<int64_t> next{0};
    int64_t end = 0;
  };
  const std::function<void(int64_t)>* fn_ = nullptr;
  std::vector<Range> ranges_;  // grown (never while a call runs) to the most threads asked
  int parts_ = 0;
  std::atomic<int> active_{0};  // helpers that joined the current call and have not left it
  int wanted_ = 0;
  bool open_ = false;  // helpers may still join the current call (under mu_)
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stop_{false};
  std::exception_ptr error_;
};

Pool& pool() {
  static Pool p;
  return p;
}

}  // namespace

ParallelCounts parallel_counts() {
  return {g_calls.load(std::memory_order_relaxed), g_joins.load(std::memory_order_relaxed)};
}

ParallelHold::ParallelHold(bool on) : on_(on) {
  if (on_) g_holds.fetch_add(1, std::memory_order_relaxed);
}
ParallelHold::~ParallelHold() {
  if (on_) g_holds.fetch_sub(1, std::memory_order_relaxed);
}

void parallel_run(int threads, int64_t tasks, const std::function<void(int64_t)>& fn) {
  if (tasks <= 0) return;
  if (threads <= 1 || tasks == 1) {
    for (int64_t i = 0; i < tasks; ++i) fn(i);
    return;
  }
  pool().run(threads, tasks, fn);
}

}  // namespace ep
