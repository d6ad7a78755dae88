// emb/detail/gather.hpp — the validated row gather behind every lookup.
#pragma once

#include <cstddef>

#include <Eigen/Core>

#include "../index_span.hpp"
#include "error.hpp"

namespace emb::detail {

// Copies one row of `dim` values. Eigen's Map assignment is explicitly vectorised (packets),
// so short rows cost no library call, unlike a per-row memcpy.
template <class T>
inline void copy_row(T* dst, const T* src, Index dim) noexcept {
  using Row = Eigen::Matrix<T, 1, Eigen::Dynamic>;
  Eigen::Map<Row>(dst, dim) = Eigen::Map<const Row>(src, dim);
}

// out row i (at out + i*out_stride) = table row indices[i]. Every index is checked against
// [0, rows) before anything is written, so a bad index leaves `out` untouched.
template <class T>
inline void gather_rows(const char* where, const T* table, Index rows, Index dim,
                        IndexSpan indices, T* out, Index out_stride) {
  check_indices(where, indices, rows);
  const Index* idx = indices.data();
  const std::size_t n = indices.size();
  for (std::size_t i = 0; i < n; ++i) {
    copy_row(out + static_cast<Index>(i) * out_stride, table + idx[i] * dim, dim);
  }
}

}  // namespace emb::detail
