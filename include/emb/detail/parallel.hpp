// emb/detail/parallel.hpp — the opt-in thread count and the static split the kernels share.
//
// Threads come from OpenMP when the program is compiled with it (-fopenmp); otherwise every
// kernel runs serially and the setting is only remembered. Work is split into contiguous,
// equal, deterministic ranges and each output element is written by exactly one thread in the
// same order as the serial loop, so results do not depend on the thread count.
#pragma once

#include <atomic>
#include <cstddef>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace emb::detail {

#ifdef _OPENMP
inline constexpr bool openmp_enabled = true;
#else
inline constexpr bool openmp_enabled = false;
#endif

// One setting per program (an inline function's static is shared by every translation unit).
// Default 1: threads are opt-in.
inline std::atomic<int>& thread_setting() noexcept {
  static std::atomic<int> threads{1};
  return threads;
}

// Below this much memory traffic a parallel region costs more than it saves.
inline constexpr std::size_t parallel_min_bytes = std::size_t{256} << 10;

// Threads for a job that moves `bytes` over `items` independent pieces of work.
inline int threads_for(std::size_t items, std::size_t bytes) noexcept {
  if (!openmp_enabled) return 1;
  const int wanted = thread_setting().load(std::memory_order_relaxed);
  if (wanted <= 1 || bytes < parallel_min_bytes || items < 2) return 1;
  return items < static_cast<std::size_t>(wanted) ? static_cast<int>(items) : wanted;
}

// Calls f(begin, end) on `threads` contiguous ranges covering [0, n); thread t gets
// [n*t/T, n*(t+1)/T). f must not throw. With one thread (or without OpenMP) f(0, n) runs here.
template <class F>
void parallel_ranges(std::size_t n, int threads, F&& f) {
#ifdef _OPENMP
  if (threads > 1 && n > 1) {
#pragma omp parallel num_threads(threads)
    {
      const auto t = static_cast<std::size_t>(omp_get_thread_num());
      const auto team = static_cast<std::size_t>(omp_get_num_threads());
      f(n * t / team, n * (t + 1) / team);
    }
    return;
  }
#else
  (void)threads;
#endif
  f(std::size_t{0}, n);
}

}  // namespace emb::detail
