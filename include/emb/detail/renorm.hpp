// emb/detail/renorm.hpp — the max_norm rewrite that precedes a lookup.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

#include "../index_span.hpp"

namespace emb::detail {

// p-norm of one row, accumulated in double: sum(|x|^p)^(1/p), max|x| for p = inf.
template <class T>
double row_norm(const T* row, Index dim, double p) noexcept {
  double acc = 0.0;
  if (p == 2.0) {
    for (Index j = 0; j < dim; ++j) acc += static_cast<double>(row[j]) * static_cast<double>(row[j]);
    return std::sqrt(acc);
  }
  if (p == 1.0) {
    for (Index j = 0; j < dim; ++j) acc += std::abs(static_cast<double>(row[j]));
    return acc;
  }
  if (std::isinf(p)) {
    for (Index j = 0; j < dim; ++j) acc = std::max(acc, std::abs(static_cast<double>(row[j])));
    return acc;
  }
  for (Index j = 0; j < dim; ++j) acc += std::pow(std::abs(static_cast<double>(row[j])), p);
  return std::pow(acc, 1.0 / p);
}

// Rescales, in place, every distinct row named in `indices` whose p-norm exceeds max_norm, by
// max_norm / (norm + 1e-7) computed in double, as PyTorch's embedding_renorm_ does. Rows not
// named are untouched. Indices must already be valid: the caller checks them all first, so a
// bad index never leaves the table half rewritten. `scratch` is reused between calls.
template <class T>
void renorm_rows(T* table, Index dim, IndexSpan indices, double max_norm, double p,
                 std::vector<Index>& scratch) {
  scratch.assign(indices.begin(), indices.end());
  std::sort(scratch.begin(), scratch.end());
  const auto last = std::unique(scratch.begin(), scratch.end());
  for (auto it = scratch.begin(); it != last; ++it) {
    T* row = table + *it * dim;
    const double norm = row_norm(row, dim, p);
    if (norm > max_norm) {
      const T scale = static_cast<T>(max_norm / (norm + 1e-7));
      for (Index j = 0; j < dim; ++j) row[j] *= scale;
    }
  }
}

}  // namespace emb::detail
