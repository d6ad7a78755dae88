// emb/detail/renorm.hpp — the max_norm rewrite that precedes a lookup. Norms are taken of the
// stored values in double, whatever the storage.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "../index_span.hpp"
#include "rounding.hpp"

namespace emb::detail {

// Sum of squares of one row in double. The sum runs in interleaved partial sums added pairwise
// at the end, which breaks the chain of dependent additions that would otherwise dominate
// max_norm's cost; the order is fixed, so the result is the same for every call and thread
// count.
template <class T>
double squared_norm(const T* row, Index dim) noexcept {
  // 8 partial sums: enough independent chains to hide the latency of the additions.
  constexpr Index kParts = 8;
  double part[kParts] = {};
  Index j = 0;
  for (; j + kParts <= dim; j += kParts) {
    for (Index l = 0; l < kParts; ++l) {
      const auto x = static_cast<double>(row[j + l]);
      part[l] += x * x;
    }
  }
  double tail = 0.0;  // a separate sum, so that `part` stays in registers
  for (Index l = 0; l < dim - j; ++l) {
    const auto x = static_cast<double>(row[j + l]);
    tail += x * x;
  }
  // Pairwise, in a fixed order, written out so that `part` never leaves the registers.
  return (((part[0] + part[4]) + (part[2] + part[6])) +
          ((part[1] + part[5]) + (part[3] + part[7]))) +
         tail;
}

// p-norm of one row, accumulated in double: sum(|x|^p)^(1/p), max|x| for p = inf (p = 1 in four
// partial sums, for the same reason as squared_norm).
template <class T>
double row_norm(const T* row, Index dim, double p) noexcept {
  double acc = 0.0;
  if (p == 2.0) return std::sqrt(squared_norm(row, dim));
  if (p == 1.0) {
    double part[4] = {0.0, 0.0, 0.0, 0.0};
    Index j = 0;
    for (; j + 4 <= dim; j += 4) {
      for (Index l = 0; l < 4; ++l) part[l] += std::abs(static_cast<double>(row[j + l]));
    }
    for (Index l = 0; l < dim - j; ++l) part[l & 3] += std::abs(static_cast<double>(row[j + l]));
    return (part[0] + part[1]) + (part[2] + part[3]);
  }
  if (std::isinf(p)) {
    for (Index j = 0; j < dim; ++j) acc = std::max(acc, std::abs(static_cast<double>(row[j])));
    return acc;
  }
  for (Index j = 0; j < dim; ++j) acc += std::pow(std::abs(static_cast<double>(row[j])), p);
  return std::pow(acc, 1.0 / p);
}

// Rescales one row by max_norm / (norm + 1e-7), the scale computed in double and rounded to T,
// when its p-norm exceeds max_norm, as PyTorch's embedding_renorm_ does. Each value is scaled
// in T and rounded back to the storage S (nothing to round when S is T). The row is measured
// once.
template <class T, class S>
inline void renorm_row(S* row, Index dim, double max_norm, double p) noexcept {
  double norm = 0.0;
  if (p == 2.0) {
    // Most rows of a table trained with max_norm sit just under it. Their square root is not
    // needed: a sum of squares below max_norm^2 (1 - 1e-12), a bound that survives the rounding
    // of max_norm^2, has a correctly rounded root <= max_norm, which is the same decision.
    const double sum = squared_norm(row, dim);
    if (sum <= max_norm * max_norm * (1.0 - 1e-12)) return;
    norm = std::sqrt(sum);
  } else {
    norm = row_norm(row, dim, p);
  }
  if (!(norm > max_norm)) return;
  const T scale = static_cast<T>(max_norm / (norm + 1e-7));
  for (Index j = 0; j < dim; ++j) row[j] = round_nearest<S>(static_cast<T>(row[j]) * scale);
}

// Reused state of renorm_distinct: one byte per table row (allocated at the first call; 1/64
// of a float table of width 16) and the distinct rows of the current call. After the first
// call on a table no call allocates.
struct RenormScratch {
  std::vector<unsigned char> seen;
  std::vector<Index> distinct;
};

// Rescales, in place, every distinct row named in `indices` whose p-norm exceeds max_norm (see
// renorm_row); rows not named are untouched. O(n + distinct·dim): the distinct rows are found
// with a byte map, not a sort, and each is measured once. Rows are independent, so visiting
// them in first-occurrence order gives the same table. Indices must already be valid in
// [0, rows).
template <class T, class S>
void renorm_distinct(S* table, Index rows, Index dim, IndexSpan indices, double max_norm,
                     double p, RenormScratch& scratch) {
  auto& seen = scratch.seen;
  auto& distinct = scratch.distinct;
  if (seen.size() != static_cast<std::size_t>(rows)) seen.assign(static_cast<std::size_t>(rows), 0);
  if (distinct.size() < indices.size()) distinct.resize(indices.size());
  // Branch-free: whether an index was seen before is a coin toss the predictor cannot learn.
  unsigned char* mark = seen.data();
  Index* out = distinct.data();
  std::size_t count = 0;
  for (const Index k : indices) {
    const auto u = static_cast<std::size_t>(k);
    out[count] = k;
    count += mark[u] ^ 1u;
    mark[u] = 1;
  }
  for (std::size_t i = 0; i < count; ++i) {
    renorm_row<T>(table + out[i] * dim, dim, max_norm, p);
    mark[static_cast<std::size_t>(out[i])] = 0;  // leave the map clear for the next call
  }
}

}  // namespace emb::detail
