// emb/sparse_grad.hpp — the row-sparse gradient of a (num_embeddings, dim) table.
#pragma once

#include <cstddef>
#include <vector>

#include "index_span.hpp"

namespace emb {

// Gradient rows for the distinct indices of one call, coalesced: `rows` is strictly increasing,
// `values.row(i)` is the full gradient of table row `rows[i]` (duplicates already summed), and
// the padding row never appears. Its size is O(distinct indices), never O(num_embeddings).
template <class T>
struct SparseGrad {
  Index num_embeddings = 0;
  std::vector<Index> rows;
  Matrix<T> values;

  Index nnz() const { return static_cast<Index>(rows.size()); }
  Index embedding_dim() const { return values.cols(); }

  // The same gradient as a dense (num_embeddings, dim) matrix, zero outside `rows`.
  Matrix<T> to_dense() const {
    Matrix<T> dense = Matrix<T>::Zero(num_embeddings, values.cols());
    for (std::size_t i = 0; i < rows.size(); ++i) {
      dense.row(rows[i]) = values.row(static_cast<Index>(i));
    }
    return dense;
  }
};

}  // namespace emb
