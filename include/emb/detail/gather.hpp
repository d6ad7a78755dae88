// emb/detail/gather.hpp — the validated row gather behind every lookup.
//
// A lookup moves memory and does no arithmetic, so the loop is built around the memory system:
// - short rows are copied by inlined vector moves of a compile-time size (a library memcpy
//   per 64-byte row costs as much as the copy);
// - tables far larger than the caches prefetch the rows a few positions ahead, with the bytes
//   in flight capped so that long rows do not evict what is about to be copied;
// - large calls split the positions over the opt-in threads (see parallel.hpp).
// Every index is checked before anything is written, on every path.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include <Eigen/Core>

#include "../index_span.hpp"
#include "error.hpp"
#include "parallel.hpp"

namespace emb::detail {

// Copies one row of `dim` values. Eigen's Map assignment is explicitly vectorised (packets),
// so short rows cost no library call, unlike a per-row memcpy.
template <class T>
inline void copy_row(T* dst, const T* src, Index dim) noexcept {
  using Row = Eigen::Matrix<T, 1, Eigen::Dynamic>;
  Eigen::Map<Row>(dst, dim) = Eigen::Map<const Row>(src, dim);
}

// Whether every index is in [0, size): a branch-free pass the compiler vectorises. For k and
// size in [0, 2^63) the top bit of (k - size) mod 2^64 is set exactly when k < size, and the
// top bit of ~k is set exactly when k >= 0; the AND over all indices keeps it only if every
// index passes both.
inline bool all_indices_valid(IndexSpan indices, Index size) noexcept {
  const auto bound = static_cast<std::uint64_t>(size);
  const Index* p = indices.data();
  std::uint64_t acc = ~std::uint64_t{0};
  for (std::size_t i = 0; i < indices.size(); ++i) {
    const auto u = static_cast<std::uint64_t>(p[i]);
    acc &= (u - bound) & ~u;
  }
  return indices.empty() || (acc >> 63) != 0;
}

// check_indices with the common case (all valid) on the fast pass; the slow pass finds the
// first bad index for the message.
inline void check_gather_indices(const char* where, IndexSpan indices, Index size) {
  if (!all_indices_valid(indices, size)) check_indices(where, indices, size);
}

// Tables above this size miss the caches on random rows (latency jumps past ~6 MiB).
inline constexpr std::size_t prefetch_min_table_bytes = std::size_t{8} << 20;
// Bytes requested ahead of the copy; more evicts the rows being copied (FBGEMM caps it too).
inline constexpr std::size_t prefetch_bytes_in_flight = std::size_t{4} << 10;
inline constexpr std::size_t prefetch_max_rows = 16;
inline constexpr std::size_t cache_line = 64;

// How one gather runs: rows prefetched ahead (0 = none) and threads.
struct GatherPlan {
  std::size_t prefetch_rows = 0;
  int threads = 1;
};

inline std::size_t prefetch_distance(std::size_t row_bytes) noexcept {
  if (row_bytes == 0) return 0;
  std::size_t d = prefetch_bytes_in_flight / row_bytes;
  if (d > prefetch_max_rows) d = prefetch_max_rows;
  return d == 0 ? 1 : d;
}

// The plan gather_rows uses for a table of rows x dim values of `value_bytes` and n lookups.
inline GatherPlan plan_gather(Index rows, Index dim, std::size_t n,
                              std::size_t value_bytes) noexcept {
  const std::size_t row_bytes = static_cast<std::size_t>(dim) * value_bytes;
  GatherPlan plan;
  if (static_cast<std::size_t>(rows) * row_bytes >= prefetch_min_table_bytes) {
    plan.prefetch_rows = prefetch_distance(row_bytes);
  }
  plan.threads = threads_for(n, n * row_bytes);
  return plan;
}

inline void prefetch_row(const void* row, std::size_t row_bytes) noexcept {
#if defined(__GNUC__) || defined(__clang__)
  const char* p = static_cast<const char*>(row);
  for (std::size_t b = 0; b < row_bytes; b += cache_line) __builtin_prefetch(p + b, 0, 3);
#else
  (void)row;
  (void)row_bytes;
#endif
}

// Positions [begin, end) of an already validated gather; `copy(dst, src)` moves one row.
template <class T, class Copy>
inline void gather_range(const T* table, Index dim, const Index* idx, std::size_t begin,
                         std::size_t end, T* out, Index out_stride, std::size_t prefetch_rows,
                         Copy copy) noexcept {
  std::size_t i = begin;
  if (prefetch_rows != 0 && end - begin > prefetch_rows) {
    const std::size_t row_bytes = static_cast<std::size_t>(dim) * sizeof(T);
    for (std::size_t j = begin; j < begin + prefetch_rows; ++j) {
      prefetch_row(table + idx[j] * dim, row_bytes);
    }
    for (; i + prefetch_rows < end; ++i) {
      prefetch_row(table + idx[i + prefetch_rows] * dim, row_bytes);
      copy(out + static_cast<Index>(i) * out_stride, table + idx[i] * dim);
    }
  }
  for (; i < end; ++i) copy(out + static_cast<Index>(i) * out_stride, table + idx[i] * dim);
}

// Calls f(std::integral_constant<std::size_t, B>{}) when `bytes` is a power of two B from 16
// to MaxBytes, so that a kernel can be compiled for that row size, and returns true; returns
// false for any other size. Shared by the kernels that specialise on short rows.
template <std::size_t MaxBytes, class F>
inline bool with_fixed_row_bytes(std::size_t bytes, F&& f) {
  const auto call = [&](auto b) {
    if constexpr (decltype(b)::value <= MaxBytes) {
      f(b);
      return true;
    } else {
      return false;
    }
  };
  switch (bytes) {
    case 16: return call(std::integral_constant<std::size_t, 16>{});
    case 32: return call(std::integral_constant<std::size_t, 32>{});
    case 64: return call(std::integral_constant<std::size_t, 64>{});
    case 128: return call(std::integral_constant<std::size_t, 128>{});
    case 256: return call(std::integral_constant<std::size_t, 256>{});
    case 512: return call(std::integral_constant<std::size_t, 512>{});
    default: return false;
  }
}

// Rows of 16 to 256 bytes are copied by a fixed-size memcpy, which the compiler turns into a
// few inlined vector moves: a library call per short row would cost as much as the copy.
// Returns false for other sizes.
template <class T>
inline bool gather_range_fixed(const T* table, Index dim, const Index* idx, std::size_t begin,
                               std::size_t end, T* out, Index out_stride,
                               std::size_t prefetch_rows) noexcept {
  return with_fixed_row_bytes<256>(static_cast<std::size_t>(dim) * sizeof(T), [&](auto bytes) {
    constexpr std::size_t B = decltype(bytes)::value;
    gather_range(table, dim, idx, begin, end, out, out_stride, prefetch_rows,
                 [](T* d, const T* s) { std::memcpy(d, s, B); });
  });
}

// Picks the row copy once per call: fixed-size moves for the common short rows, Eigen's packet
// loop for other short rows, glibc's memcpy (the fastest copy there is) for long rows.
template <class T>
inline void gather_range_dispatch(const T* table, Index dim, const Index* idx, std::size_t begin,
                                  std::size_t end, T* out, Index out_stride,
                                  std::size_t prefetch_rows) noexcept {
  if (gather_range_fixed(table, dim, idx, begin, end, out, out_stride, prefetch_rows)) return;
  const std::size_t row_bytes = static_cast<std::size_t>(dim) * sizeof(T);
  if (row_bytes < 256) {
    gather_range(table, dim, idx, begin, end, out, out_stride, prefetch_rows,
                 [dim](T* d, const T* s) { copy_row(d, s, dim); });
  } else {
    gather_range(table, dim, idx, begin, end, out, out_stride, prefetch_rows,
                 [row_bytes](T* d, const T* s) { std::memcpy(d, s, row_bytes); });
  }
}

// The gather itself, indices already validated against the table.
template <class T>
inline void gather_rows_unchecked(const T* table, Index dim, IndexSpan indices, T* out,
                                  Index out_stride, const GatherPlan& plan) noexcept {
  const Index* idx = indices.data();
  if (dim == 0 || indices.empty()) return;
  parallel_ranges(indices.size(), plan.threads, [&](std::size_t begin, std::size_t end) {
    gather_range_dispatch(table, dim, idx, begin, end, out, out_stride, plan.prefetch_rows);
  });
}

// out row i (at out + i*out_stride) = table row indices[i], with an explicit plan (tests force
// every path with it). Every index is checked against [0, rows) before anything is written, so
// a bad index leaves `out` untouched.
template <class T>
inline void gather_rows(const char* where, const T* table, Index rows, Index dim,
                        IndexSpan indices, T* out, Index out_stride, const GatherPlan& plan) {
  check_gather_indices(where, indices, rows);
  gather_rows_unchecked(table, dim, indices, out, out_stride, plan);
}

// The same with the plan chosen for this table and call.
template <class T>
inline void gather_rows(const char* where, const T* table, Index rows, Index dim,
                        IndexSpan indices, T* out, Index out_stride) {
  gather_rows(where, table, rows, dim, indices, out, out_stride,
              plan_gather(rows, dim, indices.size(), sizeof(T)));
}

}  // namespace emb::detail
