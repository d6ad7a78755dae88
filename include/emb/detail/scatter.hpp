// emb/detail/scatter.hpp — gradient accumulation into table rows, dense and row-sparse, for
// lookups and bags alike.
//
// Both forms add the contributions of one row in input order, starting from zero, through the
// same axpy and the same scale, so the sparse values are bit-identical to the matching rows of
// the dense result. A lookup's position p contributes grad_output row p; a bag's contributes
// the row of its bag, scaled by its per-sample weight and its bag's size under Mean.
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

// The distinct indices of a call other than a skipped one (padding), ascending, and for each the positions where it
// occurs, in input order: positions[starts[r] .. starts[r+1]) hold row rows[r].
struct RowSegments {
  std::vector<Index> rows;
  std::vector<std::size_t> starts;
  std::vector<std::size_t> positions;
  RadixScratch scratch;  // kept so that a reused RowSegments sorts without allocating

  std::size_t count(std::size_t r) const { return starts[r + 1] - starts[r]; }
};

// Groups positions by index with a stable radix sort (see radix_sort.hpp), leaving out the
// positions whose index is `skip` (padding_idx, or -1). Indices must already be valid. Cost
// O(n), independent of the table size.
inline void group_by_row(IndexSpan indices, Index skip, RowSegments& out) {
  const Index* idx = indices.data();
  const std::size_t n = indices.size();
  const Index pad = skip;
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

// The scale PyTorch gives position p's contribution to a table row: psw_p (1 without
// per-sample weights), divided by count(k) under scale_grad_by_freq and by the size of p's bag
// for Mean, formed in double and rounded once to T (as PyTorch's add_ with a double alpha on a
// T tensor). A plain lookup is the case of one position per bag: 1 / count(k) or 1.
template <class T>
struct GradScale {
  const T* psw = nullptr;                              // n values, or null
  bool by_freq = false;                                // scale_grad_by_freq
  const std::vector<std::size_t>* bag_of = nullptr;    // Mean: the bag of each position...
  const std::vector<Index>* bag_size = nullptr;        // ...and the size of each bag

  bool trivial() const noexcept { return psw == nullptr && !by_freq && bag_size == nullptr; }
  T operator()(std::size_t p, std::size_t count) const noexcept {
    double scale = psw != nullptr ? static_cast<double>(psw[p]) : 1.0;
    if (by_freq) scale /= static_cast<double>(count);
    if (bag_size != nullptr) scale /= static_cast<double>((*bag_size)[(*bag_of)[p]]);
    return static_cast<T>(scale);
  }
};

// Where position p's gradient row is: row p of grad_output for a lookup, row bag(p) for a bag.
template <class T>
struct GradRows {
  const T* g = nullptr;
  Index stride = 0;
  const std::vector<std::size_t>* bag_of = nullptr;  // null: one row per position

  const T* operator()(std::size_t p) const noexcept {
    const std::size_t r = bag_of != nullptr ? (*bag_of)[p] : p;
    return g + static_cast<Index>(r) * stride;
  }
};

// Segments [first, last): row r of `values` = sum over its positions p, in input order, of
// scale(p) * rows(p). The rows of `values` may hold anything: each segment's first term is
// assigned (as 0 + s * g, the bits an add to a zeroed row gives), the rest added.
template <class T>
void sum_segment_range(const RowSegments& segments, const GradRows<T>& rows,
                       const GradScale<T>& scale, Index dim, T* values, std::size_t first,
                       std::size_t last) noexcept {
  for (std::size_t r = first; r < last; ++r) {
    const std::size_t count = segments.count(r);
    T* dst = values + static_cast<Index>(r) * dim;
    std::size_t j = segments.starts[r];
    std::size_t p = segments.positions[j];
    assign_scaled_row(dst, rows(p), scale.trivial() ? T(1) : scale(p, count), dim);
    for (++j; j < segments.starts[r + 1]; ++j) {
      p = segments.positions[j];
      axpy_row(dst, rows(p), scale.trivial() ? T(1) : scale(p, count), dim);
    }
  }
}

// The same over every segment into uninitialised `values` (segments.rows.size() x dim), split
// over `threads`: every sparse backward, without a zeroing pass.
template <class T>
void sum_segments_into(const RowSegments& segments, const GradRows<T>& rows,
                       const GradScale<T>& scale, Index dim, T* values, int threads) {
  parallel_ranges(segments.rows.size(), threads, [&](std::size_t first, std::size_t last) {
    sum_segment_range(segments, rows, scale, dim, values, first, last);
  });
}

// Zeroes rows [lo, hi) of a (rows x dim) buffer whose rows are `stride` apart.
template <class T>
inline void zero_rows(T* grad, Index stride, Index dim, std::size_t lo, std::size_t hi) noexcept {
  const auto row_bytes = static_cast<std::size_t>(dim) * sizeof(T);
  if (hi == lo || dim == 0) return;
  if (stride == dim) {
    std::memset(grad + static_cast<Index>(lo) * dim, 0, (hi - lo) * row_bytes);
    return;
  }
  for (std::size_t r = lo; r < hi; ++r) std::memset(grad + static_cast<Index>(r) * stride, 0, row_bytes);
}

// Every dense backward in one zeroing pass and one scatter pass: grad (num_rows x dim, any
// content, rows `grad_stride` apart) becomes grad[k] = sum of scale(i) * rows(i) over the
// positions i with index k other than `skip`, in input order. Thread t owns the table rows
// [num_rows*t/T, num_rows*(t+1)/T): it zeroes them (first touch, so the pages land near it) and
// adds the positions whose index falls there. Every row is summed in the serial order whatever
// the thread count. Indices must already be valid.
template <class T>
void zero_and_scatter_dense(IndexSpan indices, const GradRows<T>& rows, GradScale<T> scale,
                            Index dim, Index skip, T* grad, Index grad_stride, Index num_rows,
                            int threads) {
  const Index* idx = indices.data();
  const std::size_t n = indices.size();
  std::vector<Index> counts;
  if (scale.by_freq) {
    counts.assign(static_cast<std::size_t>(num_rows), 0);
    for (std::size_t i = 0; i < n; ++i) ++counts[static_cast<std::size_t>(idx[i])];
  }
  parallel_ranges(static_cast<std::size_t>(num_rows), threads, [&](std::size_t lo, std::size_t hi) {
    zero_rows(grad, grad_stride, dim, lo, hi);
    if (hi == lo || dim == 0) return;
    const auto first = static_cast<Index>(lo);
    const auto last = static_cast<Index>(hi);
    for (std::size_t i = 0; i < n; ++i) {
      const Index k = idx[i];
      if (k < first || k >= last || k == skip) continue;
      const std::size_t count = scale.by_freq ? static_cast<std::size_t>(counts[static_cast<std::size_t>(k)]) : 1;
      axpy_row(grad + k * grad_stride, rows(i), scale.trivial() ? T(1) : scale(i, count), dim);
    }
  });
}

// Max bags: every output element's gradient goes to the row that won it. rows receives the
// distinct winning rows, ascending; values (rows.size() x dim) the sums, in bag order. The
// elements are grouped by winner as a backward groups positions by row (group_by_row: winners
// of -1, empty bags, left out), so that each (row, column) receives its bags' gradients in bag
// order, the order of the dense form below.
template <class T>
void max_winners_sparse(const std::vector<Index>& winners, std::size_t bags, const T* g,
                        Index g_stride, Index dim, std::vector<Index>& rows, Matrix<T>& values) {
  const auto width = static_cast<std::size_t>(dim);
  RowSegments segments;
  group_by_row(IndexSpan(winners.data(), bags * width), -1, segments);
  rows = std::move(segments.rows);
  values = Matrix<T>::Zero(static_cast<Index>(rows.size()), dim);
  for (std::size_t r = 0; r < rows.size(); ++r) {
    for (std::size_t s = segments.starts[r]; s < segments.starts[r + 1]; ++s) {
      const std::size_t p = segments.positions[s];
      const auto b = static_cast<Index>(p / width);
      const auto j = static_cast<Index>(p % width);
      values(static_cast<Index>(r), j) += g[b * g_stride + j];
    }
  }
}

// The same into a dense (num_rows x dim) buffer of any content, rows `grad_stride` apart.
template <class T>
void max_winners_dense(const std::vector<Index>& winners, std::size_t bags, const T* g,
                       Index g_stride, Index dim, T* grad, Index grad_stride, Index num_rows) {
  zero_rows(grad, grad_stride, dim, 0, static_cast<std::size_t>(num_rows));
  for (std::size_t b = 0; b < bags; ++b) {
    const Index* win = winners.data() + b * static_cast<std::size_t>(dim);
    const T* src = g + static_cast<Index>(b) * g_stride;
    for (Index j = 0; j < dim; ++j) {
      if (win[j] >= 0) grad[win[j] * grad_stride + j] += src[j];
    }
  }
}

}  // namespace emb::detail
