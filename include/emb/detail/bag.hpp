// emb/detail/bag.hpp — the kernels behind EmbeddingBag: offset checks, fused pooling, and the
// bag-aware gradient accumulation. Row copies and row updates go through the shared
// copy_row / axpy_row, except the Sum / Mean pooling of common row sizes, which sums each bag in
// registers (bag_sum_fixed_rows); duplicates are grouped by the shared group_by_row.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include <Eigen/Core>

#include "../index_span.hpp"
#include "error.hpp"
#include "gather.hpp"
#include "scatter.hpp"

namespace emb::detail {

// Validates bag offsets against n indices and returns the number of bags. Unlike PyTorch's CPU
// code (which checks only the first and last offset), every offset is checked, so a decreasing
// offset cannot produce a negative-length bag.
inline std::size_t check_offsets(const char* where, IndexSpan offsets, std::size_t n,
                                 bool include_last_offset) {
  const auto size = static_cast<Index>(n);
  const std::size_t count = offsets.size();
  if (count == 0) {
    if (include_last_offset) {
      throw std::invalid_argument(concat(
          where, ": offsets is empty; with include_last_offset it must hold at least the end ",
          "offset ", size));
    }
    if (n != 0) {
      throw std::invalid_argument(concat(where, ": offsets is empty but there are ", n,
                                         " indices; the first bag must start at offset 0"));
    }
    return 0;
  }
  if (offsets[0] != 0) {
    throw std::invalid_argument(concat(where, ": offset ", offsets[0],
                                       " at position 0 is invalid; the first offset must be 0"));
  }
  for (std::size_t b = 1; b < count; ++b) {
    if (offsets[b] < offsets[b - 1]) {
      throw std::invalid_argument(concat(where, ": offset ", offsets[b], " at position ", b,
                                         " is less than the offset before it (", offsets[b - 1],
                                         "); offsets must be non-decreasing"));
    }
    if (offsets[b] > size) {
      throw std::invalid_argument(concat(where, ": offset ", offsets[b], " at position ", b,
                                         " is past the end of the ", n, " indices"));
    }
  }
  if (include_last_offset && offsets[count - 1] != size) {
    throw std::invalid_argument(concat(where, ": offset ", offsets[count - 1], " at position ",
                                       count - 1, " is invalid; with include_last_offset the ",
                                       "last offset must equal the number of indices, ", n));
  }
  return include_last_offset ? count - 1 : count;
}

// [begin, end) of bag b: the next offset, or n for the last bag without include_last_offset.
inline std::size_t bag_begin(IndexSpan offsets, std::size_t b) noexcept {
  return static_cast<std::size_t>(offsets[b]);
}
inline std::size_t bag_end(IndexSpan offsets, std::size_t b, std::size_t n) noexcept {
  return b + 1 < offsets.size() ? static_cast<std::size_t>(offsets[b + 1]) : n;
}

// How many positions ahead the pooling loops prefetch: the lookup's policy (gather.hpp), so a
// table far larger than the caches has its rows requested before they are summed.
template <class T>
std::size_t bag_prefetch_distance(Index rows, Index dim) noexcept {
  const auto row_bytes = static_cast<std::size_t>(dim) * sizeof(T);
  return static_cast<std::size_t>(rows) * row_bytes >= prefetch_min_table_bytes
             ? prefetch_distance(row_bytes)
             : 0;
}

// Offsets 0, len, 2*len, ... of `bags` fixed-length bags.
inline std::vector<Index> fixed_offsets(std::size_t bags, Index len) {
  std::vector<Index> offsets(bags);
  for (std::size_t b = 0; b < bags; ++b) offsets[b] = static_cast<Index>(b) * len;
  return offsets;
}

// The bag of every position (the inverse of the offsets), and the number of non-padding
// entries of every bag (the divisor of Mean).
inline void bag_layout(IndexSpan indices, IndexSpan offsets, std::size_t bags,
                       std::optional<Index> padding, std::vector<std::size_t>& bag_of,
                       std::vector<Index>& bag_size) {
  const std::size_t n = indices.size();
  const Index pad = padding.value_or(-1);
  bag_of.assign(n, 0);
  bag_size.assign(bags, 0);
  for (std::size_t b = 0; b < bags; ++b) {
    const std::size_t end = bag_end(offsets, b, n);
    for (std::size_t i = bag_begin(offsets, b); i < end; ++i) {
      bag_of[i] = b;
      if (indices[i] != pad) ++bag_size[b];
    }
  }
}

#if defined(__GNUC__) || defined(__clang__)
#define EMB_DETAIL_BAG_FIXED 1

// A vector of Bytes / sizeof(T) values (GCC/clang vector extension).
template <class T, std::size_t Bytes>
struct BagVector {
  typedef T type __attribute__((vector_size(Bytes)));
};

// The widest vector the build targets everywhere; wider ones would be emulated through memory.
#ifdef __AVX__
inline constexpr std::size_t bag_vector_bytes = 32;
#else
inline constexpr std::size_t bag_vector_bytes = 16;
#endif

// Sum (or Mean) pooling of rows of RowBytes bytes, known at compile time: each bag is summed in
// local vectors that stay in registers and is stored once, instead of a load-add-store of the
// output row per index. Every element is still the sum, from +0, of its contributions in input
// order (psw_i * W[idx_i] when weighted; W[idx_i] itself otherwise, which equals 1 * W[idx_i]),
// so the result is bit for bit that of the generic loop. The product and the sum are separate
// statements: clang contracts only within one expression, so it fuses neither loop into an FMA,
// and GCC, in a build that enables FMA itself, fuses both alike. Always inlined so that the AVX2
// entry below compiles this body with AVX2. VectorBytes: the vector width.
template <class T, std::size_t RowBytes, bool Weighted, std::size_t VectorBytes>
__attribute__((always_inline)) inline void bag_sum_fixed_rows(
    const T* table, const Index* idx, std::size_t n, IndexSpan offsets, std::size_t bags,
    Index pad, const T* psw, bool mean, T* out, Index out_stride, std::size_t ahead) noexcept {
  constexpr std::size_t vbytes = RowBytes < VectorBytes ? RowBytes : VectorBytes;
  constexpr std::size_t parts = RowBytes / vbytes;
  using V = typename BagVector<T, vbytes>::type;
  constexpr auto dim = static_cast<Index>(RowBytes / sizeof(T));
  for (std::size_t b = 0; b < bags; ++b) {
    V acc[parts] = {};
    Index count = 0;
    const std::size_t end = bag_end(offsets, b, n);
    for (std::size_t i = bag_begin(offsets, b); i < end; ++i) {
      if (ahead != 0 && i + ahead < n) {
        // prefetch_row's policy, spelled out: GCC finds prefetch_row free of side effects and
        // drops the call before it would be inlined into this always_inline function.
        const char* next = reinterpret_cast<const char*>(table + idx[i + ahead] * dim);
        for (std::size_t c = 0; c < RowBytes; c += cache_line) __builtin_prefetch(next + c, 0, 3);
      }
      const Index k = idx[i];
      if (k == pad) continue;
      ++count;
      const char* src = reinterpret_cast<const char*>(table + k * dim);
      for (std::size_t p = 0; p < parts; ++p) {
        V v;
        std::memcpy(&v, src + p * vbytes, vbytes);
        if constexpr (Weighted) {
          const V product = psw[i] * v;
          acc[p] += product;
        } else {
          acc[p] += v;
        }
      }
    }
    if (mean && count > 0) {
      const auto c = static_cast<T>(count);
      for (std::size_t p = 0; p < parts; ++p) acc[p] /= c;
    }
    char* dst = reinterpret_cast<char*>(out + static_cast<Index>(b) * out_stride);
    for (std::size_t p = 0; p < parts; ++p) std::memcpy(dst + p * vbytes, &acc[p], vbytes);
  }
}

// The default build targets baseline x86-64 (SSE2); on a CPU with AVX2 the same loops run twice
// as wide. Only "avx2" is enabled, never "fma": a fused multiply-add would round differently.
#if defined(__x86_64__) && !defined(__AVX2__)
#define EMB_DETAIL_BAG_AVX2 1
template <class T, std::size_t RowBytes, bool Weighted>
__attribute__((target("avx2"))) void bag_sum_fixed_rows_avx2(
    const T* table, const Index* idx, std::size_t n, IndexSpan offsets, std::size_t bags,
    Index pad, const T* psw, bool mean, T* out, Index out_stride, std::size_t ahead) noexcept {
  bag_sum_fixed_rows<T, RowBytes, Weighted, 32>(table, idx, n, offsets, bags, pad, psw, mean,
                                                out, out_stride, ahead);
}

inline bool cpu_has_avx2() noexcept {
  static const bool has = __builtin_cpu_supports("avx2") != 0;
  return has;
}
#endif

template <class T, std::size_t RowBytes, bool Weighted>
inline void bag_sum_fixed_dispatch(const T* table, const Index* idx, std::size_t n,
                                   IndexSpan offsets, std::size_t bags, Index pad, const T* psw,
                                   bool mean, T* out, Index out_stride,
                                   std::size_t ahead) noexcept {
#ifdef EMB_DETAIL_BAG_AVX2
  if (cpu_has_avx2()) {
    bag_sum_fixed_rows_avx2<T, RowBytes, Weighted>(table, idx, n, offsets, bags, pad, psw, mean,
                                                   out, out_stride, ahead);
    return;
  }
#endif
  bag_sum_fixed_rows<T, RowBytes, Weighted, bag_vector_bytes>(table, idx, n, offsets, bags, pad,
                                                              psw, mean, out, out_stride, ahead);
}
#endif  // __GNUC__ || __clang__

// The register-accumulated pooling for float or double rows of 16 to 512 bytes (a power of
// two); false for other rows, other types and other compilers. Longer rows would not fit in the
// vector registers.
template <class T>
inline bool bag_sum_fixed(const T* table, Index dim, const Index* idx, std::size_t n,
                          IndexSpan offsets, std::size_t bags, Index pad, const T* psw, bool mean,
                          T* out, Index out_stride, std::size_t ahead) noexcept {
#ifdef EMB_DETAIL_BAG_FIXED
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    return with_fixed_row_bytes<512>(static_cast<std::size_t>(dim) * sizeof(T), [&](auto bytes) {
      constexpr std::size_t B = decltype(bytes)::value;
      if (psw != nullptr) {
        bag_sum_fixed_dispatch<T, B, true>(table, idx, n, offsets, bags, pad, psw, mean, out,
                                           out_stride, ahead);
      } else {
        bag_sum_fixed_dispatch<T, B, false>(table, idx, n, offsets, bags, pad, psw, mean, out,
                                            out_stride, ahead);
      }
    });
  }
#endif
  (void)table, (void)dim, (void)idx, (void)n, (void)offsets, (void)bags, (void)pad, (void)psw;
  (void)mean, (void)out, (void)out_stride, (void)ahead;
  return false;
}

// Sum (or Mean) pooling straight from the table into out: row b = sum over the bag's
// non-padding entries of psw_i * W[idx_i], divided by their count for Mean. No (n, dim)
// intermediate. Indices and offsets must already be valid; psw is null or has n values.
template <class T>
void bag_sum(const T* table, Index rows, Index dim, IndexSpan indices, IndexSpan offsets,
             std::size_t bags, std::optional<Index> padding, const T* psw, bool mean, T* out,
             Index out_stride) {
  using Row = Eigen::Matrix<T, 1, Eigen::Dynamic>;
  const std::size_t n = indices.size();
  const std::size_t ahead = bag_prefetch_distance<T>(rows, dim);
  const auto row_bytes = static_cast<std::size_t>(dim) * sizeof(T);
  const Index pad = padding.value_or(-1);
  const Index* idx = indices.data();
  if (bag_sum_fixed(table, dim, idx, n, offsets, bags, pad, psw, mean, out, out_stride, ahead)) {
    return;
  }
  for (std::size_t b = 0; b < bags; ++b) {
    T* dst = out + static_cast<Index>(b) * out_stride;
    Eigen::Map<Row>(dst, dim).setZero();
    Index count = 0;
    const std::size_t end = bag_end(offsets, b, n);
    for (std::size_t i = bag_begin(offsets, b); i < end; ++i) {
      // Positions run in order across bags (offsets are non-decreasing).
      if (ahead != 0 && i + ahead < n) prefetch_row(table + idx[i + ahead] * dim, row_bytes);
      if (idx[i] == pad) continue;
      ++count;
      axpy_row(dst, table + idx[i] * dim, psw != nullptr ? psw[i] : T(1), dim);
    }
    if (mean && count > 0) Eigen::Map<Row>(dst, dim) /= static_cast<T>(count);
  }
}

// Element-wise max pooling. An empty (or all-padding) bag gives a zero row. The strict
// comparison keeps the first occurrence on ties, as PyTorch's CPU loop does. When `winners` is
// given, it receives (bags x dim) the table row each output element came from, or -1 for an
// empty bag; the forward pass does without, so that its loop is a vectorised max.
template <class T>
void bag_max(const T* table, Index rows, Index dim, IndexSpan indices, IndexSpan offsets,
             std::size_t bags, std::optional<Index> padding, T* out, Index out_stride,
             std::vector<Index>* winners) {
  using Row = Eigen::Matrix<T, 1, Eigen::Dynamic>;
  const std::size_t n = indices.size();
  const std::size_t ahead = bag_prefetch_distance<T>(rows, dim);
  const auto row_bytes = static_cast<std::size_t>(dim) * sizeof(T);
  const Index pad = padding.value_or(-1);
  const Index* idx = indices.data();
  if (winners != nullptr) winners->assign(bags * static_cast<std::size_t>(dim), -1);
  for (std::size_t b = 0; b < bags; ++b) {
    T* dst = out + static_cast<Index>(b) * out_stride;
    Index* win = winners != nullptr ? winners->data() + b * static_cast<std::size_t>(dim) : nullptr;
    bool first = true;
    const std::size_t end = bag_end(offsets, b, n);
    for (std::size_t i = bag_begin(offsets, b); i < end; ++i) {
      if (ahead != 0 && i + ahead < n) prefetch_row(table + idx[i + ahead] * dim, row_bytes);
      const Index k = idx[i];
      if (k == pad) continue;
      const T* src = table + k * dim;
      if (first) {
        copy_row(dst, src, dim);
        if (win != nullptr) std::fill(win, win + dim, k);
        first = false;
      } else if (win == nullptr) {
        // Eigen's max is std::max(dst, src) = (dst < src ? src : dst), packet by packet: the
        // same element as the strict comparison below, ties keeping dst.
        Eigen::Map<Row>(dst, dim) =
            Eigen::Map<Row>(dst, dim).cwiseMax(Eigen::Map<const Row>(src, dim));
      } else {
        for (Index j = 0; j < dim; ++j) {
          if (src[j] > dst[j]) {
            dst[j] = src[j];
            win[j] = k;
          }
        }
      }
    }
    if (first) Eigen::Map<Row>(dst, dim).setZero();
  }
}

// Sum / Mean gradient, row-sparse: values row r (already zero) = sum over the positions p of
// segments.rows[r] of scale_p * grad_output[bag(p)], scale_p = psw_p / count(k) / bag_size.
// count(k) is the number of occurrences of k in the whole call; the scale is formed in double
// and rounded once, as PyTorch's dense bag backward does.
template <class T>
void bag_sum_backward(const RowSegments& segments, const std::vector<std::size_t>& bag_of,
                      const std::vector<Index>& bag_size, const T* psw, bool mean,
                      bool scale_grad_by_freq, const T* g, Index g_stride, Index dim, T* values) {
  for (std::size_t r = 0; r < segments.rows.size(); ++r) {
    T* dst = values + static_cast<Index>(r) * dim;
    const auto count = static_cast<double>(segments.count(r));
    for (std::size_t j = segments.starts[r]; j < segments.starts[r + 1]; ++j) {
      const std::size_t p = segments.positions[j];
      const std::size_t b = bag_of[p];
      double scale = psw != nullptr ? static_cast<double>(psw[p]) : 1.0;
      if (scale_grad_by_freq) scale /= count;
      if (mean) scale /= static_cast<double>(bag_size[b]);  // >= 1: p itself is in the bag
      axpy_row(dst, g + static_cast<Index>(b) * g_stride, static_cast<T>(scale), dim);
    }
  }
}

// Max gradient, row-sparse: every output element's gradient goes to the row that won it.
// rows receives the distinct winning rows, ascending; values (rows.size() x dim) the sums,
// accumulated in bag order.
template <class T>
void bag_max_backward(const std::vector<Index>& winners, std::size_t bags, const T* g,
                      Index g_stride, Index dim, std::vector<Index>& rows, Matrix<T>& values) {
  rows.clear();
  for (Index k : winners) {
    if (k >= 0) rows.push_back(k);
  }
  std::sort(rows.begin(), rows.end());
  rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
  values = Matrix<T>::Zero(static_cast<Index>(rows.size()), dim);
  for (std::size_t b = 0; b < bags; ++b) {
    const Index* win = winners.data() + b * static_cast<std::size_t>(dim);
    const T* src = g + static_cast<Index>(b) * g_stride;
    for (Index j = 0; j < dim; ++j) {
      if (win[j] < 0) continue;
      const auto slot = std::lower_bound(rows.begin(), rows.end(), win[j]) - rows.begin();
      values(static_cast<Index>(slot), j) += src[j];
    }
  }
}

// d out / d psw_i = <W[idx_i], grad_output[bag(i)]> (Sum mode); 0 for padding entries.
template <class T>
void bag_psw_backward(const T* table, Index dim, IndexSpan indices,
                      const std::vector<std::size_t>& bag_of, std::optional<Index> padding,
                      const T* g, Index g_stride, T* out) {
  using Row = Eigen::Matrix<T, 1, Eigen::Dynamic>;
  const Index pad = padding.value_or(-1);
  for (std::size_t i = 0; i < indices.size(); ++i) {
    const Index k = indices[i];
    out[i] =
        k == pad
            ? T(0)
            : Eigen::Map<const Row>(table + k * dim, dim)
                  .dot(Eigen::Map<const Row>(g + static_cast<Index>(bag_of[i]) * g_stride, dim));
  }
}

}  // namespace emb::detail
