// emb/one_hot.hpp — one-hot rows for indices, dense or sparse: the input on which a bias-free
// Linear computes what an Embedding computes by lookup.
#pragma once

#include <cstddef>

#include <Eigen/Core>
#include <Eigen/SparseCore>

#include "detail/error.hpp"
#include "index_span.hpp"

namespace emb {

namespace detail {

// Both forms accept exactly the indices Embedding accepts, with the same errors.
inline void check_one_hot_input(const char* where, IndexSpan indices, Index num_classes) {
  check_size_option(where, "num_classes", num_classes);
  check_indices(where, indices, num_classes);
}

}  // namespace detail

// (indices.size(), num_classes): row i is zero except a 1 in column indices[i].
// one_hot(idx, N) * table.weight() is table.forward(idx), exactly.
template <class T = float>
Matrix<T> one_hot(IndexSpan indices, Index num_classes) {
  detail::check_one_hot_input("emb::one_hot", indices, num_classes);
  Matrix<T> out = Matrix<T>::Zero(static_cast<Index>(indices.size()), num_classes);
  for (std::size_t i = 0; i < indices.size(); ++i) {
    out(static_cast<Index>(i), indices[i]) = T(1);
  }
  return out;
}

// The same matrix in compressed row storage, built in O(n) whatever num_classes is: row i holds
// one entry, so the row pointers are 0..n and the column indices are `indices` themselves.
// (setFromTriplets would also cost O(num_classes) for its per-column counts.)
template <class T = float>
Eigen::SparseMatrix<T, Eigen::RowMajor, Index> one_hot_sparse(IndexSpan indices,
                                                              Index num_classes) {
  detail::check_one_hot_input("emb::one_hot_sparse", indices, num_classes);
  const auto n = static_cast<Index>(indices.size());
  Eigen::SparseMatrix<T, Eigen::RowMajor, Index> out(n, num_classes);  // compressed, empty
  out.resizeNonZeros(n);
  Index* outer = out.outerIndexPtr();
  Index* inner = out.innerIndexPtr();
  T* values = out.valuePtr();
  for (Index i = 0; i < n; ++i) {
    outer[i] = i;
    inner[i] = indices[static_cast<std::size_t>(i)];
    values[i] = T(1);
  }
  outer[n] = n;
  return out;
}

}  // namespace emb
