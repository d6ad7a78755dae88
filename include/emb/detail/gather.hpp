// emb/detail/gather.hpp — the validated row gather behind every lookup, and the prefetch
// policy every kernel that reads random rows shares.
//
// A lookup moves memory and does no arithmetic, so the loop is built around the memory system:
// - rows that already are arrays of T are copied as they are: short rows by inlined vector
//   moves of a compile-time size (a library memcpy per 64-byte row costs as much as the copy),
//   long rows by memcpy; other storage is decoded by its codec straight into the output row;
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
#include "codec.hpp"
#include "error.hpp"
#include "parallel.hpp"

#ifdef __linux__
#include <unistd.h>
#endif

namespace emb::detail {

// Copies one row of `dim` values. Eigen's Map assignment is explicitly vectorised (packets),
// so short rows cost no library call, unlike a per-row memcpy.
template <class T>
inline void copy_row(T* dst, const T* src, Index dim) noexcept {
  using Row = Eigen::Matrix<T, 1, Eigen::Dynamic>;
  Eigen::Map<Row>(dst, dim) = Eigen::Map<const Row>(src, dim);
}

// ---- prefetch policy -----------------------------------------------------------------------

// Tables above this size miss the private caches on random rows, and prefetching their rows
// pays: twice the L2 cache (read once from the system), between 1 and 8 MiB. On a Xeon with
// 2 MiB of L2 per core that is 4 MiB; on an EPYC with 1 MiB, 2 MiB (a 2.5 MiB table read from
// L3 pooled 30% faster with prefetch there).
inline std::size_t prefetch_min_table_bytes() noexcept {
  static const std::size_t bytes = [] {
    std::size_t l2 = 0;
#if defined(__linux__) && defined(_SC_LEVEL2_CACHE_SIZE)
    const long reported = sysconf(_SC_LEVEL2_CACHE_SIZE);
    if (reported > 0) l2 = static_cast<std::size_t>(reported);
#endif
    if (l2 == 0) return std::size_t{8} << 20;  // unknown: assume a large L2
    const std::size_t twice = 2 * l2;
    return twice < (std::size_t{1} << 20) ? std::size_t{1} << 20
           : twice > (std::size_t{8} << 20) ? std::size_t{8} << 20
                                           : twice;
  }();
  return bytes;
}
// Bytes requested ahead of the copy; more evicts the rows being copied (FBGEMM caps it too).
inline constexpr std::size_t prefetch_bytes_in_flight = std::size_t{4} << 10;
inline constexpr std::size_t prefetch_max_rows = 16;
inline constexpr std::size_t cache_line = 64;

// How many positions ahead a kernel reading rows of `row_bytes` from a table of
// `table_bytes` prefetches: none for tables that fit the caches, otherwise as many rows as fit
// in the bytes-in-flight cap (at least one, at most max_rows).
inline std::size_t prefetch_distance(std::size_t table_bytes, std::size_t row_bytes,
                                     std::size_t max_rows = prefetch_max_rows) noexcept {
  if (row_bytes == 0 || table_bytes < prefetch_min_table_bytes()) return 0;
  std::size_t d = prefetch_bytes_in_flight / row_bytes;
  if (d > max_rows) d = max_rows;
  return d == 0 ? 1 : d;
}

// A codec may raise the row cap for its rows (a static constexpr std::size_t member
// prefetch_max_rows): the best distance depends on the kernel that reads them. Quantized rows
// (36 to 136 bytes, not line-aligned) pooled twice as fast from a DRAM table 30 to 64 rows
// ahead as 16; float and 16-bit rows of 128 bytes were slower past ~24.
template <class Codec, class = void>
struct codec_prefetch_rows : std::integral_constant<std::size_t, prefetch_max_rows> {};
template <class Codec>
struct codec_prefetch_rows<Codec, std::void_t<decltype(Codec::prefetch_max_rows)>>
    : std::integral_constant<std::size_t, Codec::prefetch_max_rows> {};

template <class Codec>
inline std::size_t prefetch_distance(const TableView<Codec>& view) noexcept {
  return prefetch_distance(view.table_bytes(), view.row_bytes(), codec_prefetch_rows<Codec>::value);
}

// A helper whose only effect is a prefetch must be inlined: GCC's analysis sees a function of
// __builtin_prefetch calls alone as free of side effects and deletes a call it did not inline
// (it did so in bag_max, which then ran at 0.4 times its speed on DRAM-sized tables).
#if defined(__GNUC__) || defined(__clang__)
#define EMB_DETAIL_PREFETCH_INLINE __attribute__((always_inline)) inline
#else
#define EMB_DETAIL_PREFETCH_INLINE inline
#endif

// Requests every cache line of [row, row + row_bytes). A row rarely starts on a line boundary
// (a heap table is 16-byte aligned), so it spans one line more than row_bytes / 64: the last
// byte is requested too.
EMB_DETAIL_PREFETCH_INLINE void prefetch_row(const void* row, std::size_t row_bytes) noexcept {
#if defined(__GNUC__) || defined(__clang__)
  const char* p = static_cast<const char*>(row);
  for (std::size_t b = 0; b < row_bytes; b += cache_line) __builtin_prefetch(p + b, 0, 3);
  if (row_bytes != 0) __builtin_prefetch(p + row_bytes - 1, 0, 3);
#else
  (void)row;
  (void)row_bytes;
#endif
}

// ---- the gather ----------------------------------------------------------------------------

// How one gather runs: rows prefetched ahead (0 = none) and threads.
struct GatherPlan {
  std::size_t prefetch_rows = 0;
  int threads = 1;
};

// The plan for n lookups into a table of `table_bytes` whose rows read `row_bytes` and
// write `out_row_bytes`.
inline GatherPlan plan_gather(std::size_t table_bytes, std::size_t row_bytes, std::size_t n,
                              std::size_t out_row_bytes) noexcept {
  GatherPlan plan;
  plan.prefetch_rows = prefetch_distance(table_bytes, row_bytes);
  plan.threads = threads_for(n, n * out_row_bytes);
  return plan;
}

template <class T, class Codec>
inline GatherPlan plan_gather(const TableView<Codec>& view, std::size_t n) noexcept {
  GatherPlan plan = plan_gather(view.table_bytes(), view.row_bytes(), n,
                                static_cast<std::size_t>(view.dim) * sizeof(T));
  plan.prefetch_rows = prefetch_distance(view);
  return plan;
}

// Positions [begin, end) of an already validated gather; `copy(dst, src_row)` moves one row.
// The view is taken by value: a local copy cannot alias the rows being written, so its data
// pointer and stride stay in registers across the loop.
template <class T, class Codec, class Copy>
inline void gather_range(const TableView<Codec> view, const Index* idx, std::size_t begin,
                         std::size_t end, T* out, Index out_stride, std::size_t prefetch_rows,
                         Copy copy) noexcept {
  std::size_t i = begin;
  if (prefetch_rows != 0 && end - begin > prefetch_rows) {
    const std::size_t row_bytes = view.row_bytes();
    for (std::size_t j = begin; j < begin + prefetch_rows; ++j) prefetch_row(view.row(idx[j]), row_bytes);
    for (; i + prefetch_rows < end; ++i) {
      prefetch_row(view.row(idx[i + prefetch_rows]), row_bytes);
      copy(out + static_cast<Index>(i) * out_stride, view.row(idx[i]));
    }
  }
  for (; i < end; ++i) copy(out + static_cast<Index>(i) * out_stride, view.row(idx[i]));
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

// Picks the row copy once per call. Rows that are arrays of T: fixed-size moves for the common
// short rows (a fixed-size memcpy, which the compiler turns into a few inlined vector moves),
// Eigen's packet loop for other short rows, glibc's memcpy (the fastest copy there is) for
// long rows. Other storage: the codec decodes each row into the output.
template <class T, class Codec>
inline void gather_range_dispatch(const TableView<Codec>& view, const Index* idx,
                                  std::size_t begin, std::size_t end, T* out, Index out_stride,
                                  std::size_t prefetch_rows) noexcept {
  const Index dim = view.dim;
  if constexpr (Codec::template copies<T>) {
    const std::size_t row_bytes = static_cast<std::size_t>(dim) * sizeof(T);
    const bool fixed = with_fixed_row_bytes<256>(row_bytes, [&](auto bytes) {
      constexpr std::size_t B = decltype(bytes)::value;
      gather_range(view, idx, begin, end, out, out_stride, prefetch_rows,
                   [](T* d, const unsigned char* s) { std::memcpy(d, s, B); });
    });
    if (fixed) return;
    if (row_bytes < 256) {
      gather_range(view, idx, begin, end, out, out_stride, prefetch_rows,
                   [dim](T* d, const unsigned char* s) {
                     copy_row(d, reinterpret_cast<const T*>(s), dim);
                   });
    } else {
      gather_range(view, idx, begin, end, out, out_stride, prefetch_rows,
                   [row_bytes](T* d, const unsigned char* s) { std::memcpy(d, s, row_bytes); });
    }
  } else {
    const Codec& codec = view.codec;
    gather_range(view, idx, begin, end, out, out_stride, prefetch_rows,
                 [&codec, dim](T* d, const unsigned char* s) { codec.decode(s, dim, d); });
  }
}

// The gather itself, indices already validated against the table.
template <class T, class Codec>
inline void gather_rows_unchecked(const TableView<Codec>& view, IndexSpan indices, T* out,
                                  Index out_stride, const GatherPlan& plan) noexcept {
  const Index* idx = indices.data();
  if (view.dim == 0 || indices.empty()) return;
  parallel_ranges(indices.size(), plan.threads, [&](std::size_t begin, std::size_t end) {
    gather_range_dispatch(view, idx, begin, end, out, out_stride, plan.prefetch_rows);
  });
}

// out row i (at out + i*out_stride) = table row indices[i] as T. Every index is checked
// against [0, rows) before anything is written, so a bad index leaves `out` untouched.
template <class T, class Codec>
inline void gather_rows(const char* where, const TableView<Codec>& view, IndexSpan indices,
                        T* out, Index out_stride, const GatherPlan& plan) {
  check_indices(where, indices, view.rows);
  gather_rows_unchecked(view, indices, out, out_stride, plan);
}

// The same on a plain (rows, dim) array of T, with an explicit plan (tests force every path
// with it) or the one chosen for this table and call.
template <class T>
inline void gather_rows(const char* where, const T* table, Index rows, Index dim,
                        IndexSpan indices, T* out, Index out_stride, const GatherPlan& plan) {
  gather_rows(where, value_view(table, rows, dim), indices, out, out_stride, plan);
}
template <class T>
inline void gather_rows(const char* where, const T* table, Index rows, Index dim,
                        IndexSpan indices, T* out, Index out_stride) {
  const auto view = value_view(table, rows, dim);
  gather_rows(where, view, indices, out, out_stride, plan_gather<T>(view, indices.size()));
}

}  // namespace emb::detail
