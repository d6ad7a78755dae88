// emb/detail/scatter.hpp — gradient accumulation into table rows, dense and row-sparse.
//
// Both forms add the contributions of one row in input order, starting from zero, through the
// same axpy, so the sparse values are bit-identical to the matching rows of the dense result.
#pragma once

#include <algorithm>
#include <cstddef>
#include <optional>
#include <vector>

#include <Eigen/Core>

#include "../index_span.hpp"

namespace emb::detail {

// dst[0:dim) += alpha * src[0:dim)
template <class T>
inline void axpy_row(T* dst, const T* src, T alpha, Index dim) noexcept {
  using Row = Eigen::Matrix<T, 1, Eigen::Dynamic>;
  Eigen::Map<Row>(dst, dim) += alpha * Eigen::Map<const Row>(src, dim);
}

// The scale PyTorch applies under scale_grad_by_freq: 1/count in double, then rounded to T
// (add_ with a double alpha on a T tensor).
template <class T>
inline T inverse_count(Index count) noexcept {
  return static_cast<T>(1.0 / static_cast<double>(count));
}

// grad (rows x dim, already zero) gets grad[k] += s * g[i] for each position i with index
// k = indices[i] other than `padding`. Indices must already be valid.
template <class T>
void scatter_add_dense(IndexSpan indices, const T* g, Index g_stride, Index dim,
                       std::optional<Index> padding, bool scale_grad_by_freq, T* grad,
                       Index rows) {
  const Index* idx = indices.data();
  const std::size_t n = indices.size();
  const Index pad = padding.value_or(-1);
  std::vector<Index> counts;
  if (scale_grad_by_freq) {
    counts.assign(static_cast<std::size_t>(rows), 0);
    for (std::size_t i = 0; i < n; ++i) ++counts[static_cast<std::size_t>(idx[i])];
  }
  for (std::size_t i = 0; i < n; ++i) {
    const Index k = idx[i];
    if (k == pad) continue;
    const T s = scale_grad_by_freq ? inverse_count<T>(counts[static_cast<std::size_t>(k)]) : T(1);
    axpy_row(grad + k * dim, g + static_cast<Index>(i) * g_stride, s, dim);
  }
}

// The distinct non-padding indices of a call, ascending, and for each the positions where it
// occurs, in input order: positions[starts[r] .. starts[r+1]) hold row rows[r].
struct RowSegments {
  std::vector<Index> rows;
  std::vector<std::size_t> starts;
  std::vector<std::size_t> positions;

  std::size_t count(std::size_t r) const { return starts[r + 1] - starts[r]; }
};

// Groups positions by index. Indices must already be valid. Cost O(n log n), independent of
// the table size.
inline void group_by_row(IndexSpan indices, std::optional<Index> padding, RowSegments& out) {
  const Index* idx = indices.data();
  const std::size_t n = indices.size();
  const Index pad = padding.value_or(-1);
  out.positions.clear();
  out.positions.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    if (idx[i] != pad) out.positions.push_back(i);
  }
  // Stable, so equal indices keep input order and the sums match the dense backward.
  std::stable_sort(out.positions.begin(), out.positions.end(),
                   [idx](std::size_t a, std::size_t b) { return idx[a] < idx[b]; });
  out.rows.clear();
  out.starts.clear();
  for (std::size_t j = 0; j < out.positions.size(); ++j) {
    const Index k = idx[out.positions[j]];
    if (out.rows.empty() || out.rows.back() != k) {
      out.rows.push_back(k);
      out.starts.push_back(j);
    }
  }
  out.starts.push_back(out.positions.size());
}

// values (segments.rows.size() x dim, already zero): row r = sum over its positions p of
// s * g[p], with s = 1/count under scale_grad_by_freq.
template <class T>
void sum_segments(const RowSegments& segments, const T* g, Index g_stride, Index dim,
                  bool scale_grad_by_freq, T* values) {
  for (std::size_t r = 0; r < segments.rows.size(); ++r) {
    const T s = scale_grad_by_freq ? inverse_count<T>(static_cast<Index>(segments.count(r)))
                                   : T(1);
    T* dst = values + static_cast<Index>(r) * dim;
    for (std::size_t j = segments.starts[r]; j < segments.starts[r + 1]; ++j) {
      axpy_row(dst, g + static_cast<Index>(segments.positions[j]) * g_stride, s, dim);
    }
  }
}

}  // namespace emb::detail
