// emb/detail/scatter.hpp — gradient accumulation into table rows, dense and row-sparse.
//
// Both forms add the contributions of one row in input order, starting from zero, through the
// same axpy, so the sparse values are bit-identical to the matching rows of the dense result.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <optional>
#include <vector>

#include <Eigen/Core>

#include "../index_span.hpp"
#include "parallel.hpp"
#include "radix_sort.hpp"

namespace emb::detail {

// dst[0:dim) += alpha * src[0:dim)
template <class T>
inline void axpy_row(T* dst, const T* src, T alpha, Index dim) noexcept {
  using Row = Eigen::Matrix<T, 1, Eigen::Dynamic>;
  Eigen::Map<Row>(dst, dim) += alpha * Eigen::Map<const Row>(src, dim);
}

// dst[0:dim) = 0 + alpha * src[0:dim): what axpy_row gives on a zeroed row, bit for bit (the
// explicit + 0 turns a -0 product into +0 as the zeroed row would), without the zeroing pass.
template <class T>
inline void assign_scaled_row(T* dst, const T* src, T alpha, Index dim) noexcept {
  using Row = Eigen::Array<T, 1, Eigen::Dynamic>;
  Eigen::Map<Row>(dst, dim) = alpha * Eigen::Map<const Row>(src, dim) + T(0);
}

// The scale PyTorch applies under scale_grad_by_freq: 1/count in double, then rounded to T
// (add_ with a double alpha on a T tensor).
template <class T>
inline T inverse_count(Index count) noexcept {
  return static_cast<T>(1.0 / static_cast<double>(count));
}

// The distinct non-padding indices of a call, ascending, and for each the positions where it
// occurs, in input order: positions[starts[r] .. starts[r+1]) hold row rows[r].
struct RowSegments {
  std::vector<Index> rows;
  std::vector<std::size_t> starts;
  std::vector<std::size_t> positions;
  RadixScratch scratch;  // kept so that a reused RowSegments sorts without allocating

  std::size_t count(std::size_t r) const { return starts[r + 1] - starts[r]; }
};

// Groups positions by index with a stable radix sort (see radix_sort.hpp). Indices must
// already be valid. Cost O(n), independent of the table size.
inline void group_by_row(IndexSpan indices, std::optional<Index> padding, RowSegments& out) {
  const Index* idx = indices.data();
  const std::size_t n = indices.size();
  const Index pad = padding.value_or(-1);
  stable_positions_by_index(
      idx, n, [idx, pad](std::size_t i) { return idx[i] != pad; }, out.positions, out.scratch);
  out.rows.clear();
  out.starts.clear();
  out.rows.reserve(out.positions.size());
  out.starts.reserve(out.positions.size() + 1);
  for (std::size_t j = 0; j < out.positions.size(); ++j) {
    const Index k = idx[out.positions[j]];
    if (out.rows.empty() || out.rows.back() != k) {
      out.rows.push_back(k);
      out.starts.push_back(j);
    }
  }
  out.starts.push_back(out.positions.size());
}

// Segments [first, last): row r of `values` = sum over its positions p of s * g[p], with
// s = 1/count under scale_grad_by_freq. The rows of `values` may hold anything: each segment's
// first term is assigned (as 0 + s * g, the bits an add to a zeroed row gives), the rest added.
template <class T>
void sum_segment_range(const RowSegments& segments, const T* g, Index g_stride, Index dim,
                       bool scale_grad_by_freq, T* values, std::size_t first,
                       std::size_t last) noexcept {
  for (std::size_t r = first; r < last; ++r) {
    const T s = scale_grad_by_freq ? inverse_count<T>(static_cast<Index>(segments.count(r)))
                                   : T(1);
    T* dst = values + static_cast<Index>(r) * dim;
    std::size_t j = segments.starts[r];
    assign_scaled_row(dst, g + static_cast<Index>(segments.positions[j]) * g_stride, s, dim);
    for (++j; j < segments.starts[r + 1]; ++j) {
      axpy_row(dst, g + static_cast<Index>(segments.positions[j]) * g_stride, s, dim);
    }
  }
}

// The same over every segment into uninitialised `values` (segments.rows.size() x dim), split
// over `threads`: the sparse backward without a zeroing pass.
template <class T>
void sum_segments_into(const RowSegments& segments, const T* g, Index g_stride, Index dim,
                       bool scale_grad_by_freq, T* values, int threads) {
  parallel_ranges(segments.rows.size(), threads, [&](std::size_t first, std::size_t last) {
    sum_segment_range(segments, g, g_stride, dim, scale_grad_by_freq, values, first, last);
  });
}

// The whole dense backward in one zeroing pass and one scatter pass: grad (rows x dim, any
// content, rows `grad_stride` apart) becomes grad[k] = sum of s * g[i] over the positions i
// with index k other than `padding` (s = 1/count(k) under scale_grad_by_freq). Thread t
// owns the table rows [rows*t/T, rows*(t+1)/T): it zeroes them (first touch, so the pages land
// near it) and adds, in input order, the positions whose index falls there. Every row is summed
// in the serial order whatever the thread count. Indices must already be valid.
template <class T>
void zero_and_scatter_dense(IndexSpan indices, const T* g, Index g_stride, Index dim,
                            std::optional<Index> padding, bool scale_grad_by_freq, T* grad,
                            Index grad_stride, Index rows, int threads) {
  const Index* idx = indices.data();
  const std::size_t n = indices.size();
  const Index pad = padding.value_or(-1);
  std::vector<Index> counts;
  if (scale_grad_by_freq) {
    counts.assign(static_cast<std::size_t>(rows), 0);
    for (std::size_t i = 0; i < n; ++i) ++counts[static_cast<std::size_t>(idx[i])];
  }
  const auto row_bytes = static_cast<std::size_t>(dim) * sizeof(T);
  parallel_ranges(static_cast<std::size_t>(rows), threads, [&](std::size_t lo, std::size_t hi) {
    if (hi == lo || dim == 0) return;
    if (grad_stride == dim) {
      std::memset(grad + static_cast<Index>(lo) * dim, 0, (hi - lo) * row_bytes);
    } else {
      for (std::size_t r = lo; r < hi; ++r) {
        std::memset(grad + static_cast<Index>(r) * grad_stride, 0, row_bytes);
      }
    }
    const auto first = static_cast<Index>(lo);
    const auto last = static_cast<Index>(hi);
    for (std::size_t i = 0; i < n; ++i) {
      const Index k = idx[i];
      if (k < first || k >= last || k == pad) continue;
      const T s =
          scale_grad_by_freq ? inverse_count<T>(counts[static_cast<std::size_t>(k)]) : T(1);
      axpy_row(grad + k * grad_stride, g + static_cast<Index>(i) * g_stride, s, dim);
    }
  });
}

}  // namespace emb::detail
