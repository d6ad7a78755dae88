// emb/similarity.hpp — cosine similarity between table rows and nearest-neighbour queries.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "detail/error.hpp"
#include "index_span.hpp"

namespace emb {

// cos(a, b) = a.b / (|a| |b|), accumulated in double; 0 when either vector is zero.
template <class DerivedA, class DerivedB>
double cosine_similarity(const Eigen::MatrixBase<DerivedA>& a,
                         const Eigen::MatrixBase<DerivedB>& b) {
  const auto ad = a.template cast<double>();
  const auto bd = b.template cast<double>();
  const double na = ad.norm();
  const double nb = bd.norm();
  if (na == 0.0 || nb == 0.0) return 0.0;
  return ad.cwiseProduct(bd).sum() / (na * nb);
}

struct Neighbour {
  Index id;
  double similarity;
};

// The k rows of `table` most cosine-similar to row `id` (itself excluded), most similar first;
// ties go to the lower id. Throws std::out_of_range for a bad id. `table` is any matrix
// expression whose rows are the vectors: a Matrix, a table's weight() view.
template <class Derived>
std::vector<Neighbour> most_similar(const Eigen::MatrixBase<Derived>& table, Index id,
                                    std::size_t k) {
  detail::check_indices("emb::most_similar", IndexSpan(&id, 1), table.rows());
  std::vector<Neighbour> all;
  all.reserve(static_cast<std::size_t>(table.rows()));
  for (Index r = 0; r < table.rows(); ++r) {
    if (r != id) all.push_back({r, cosine_similarity(table.row(id), table.row(r))});
  }
  const auto better = [](const Neighbour& x, const Neighbour& y) {
    return x.similarity > y.similarity || (x.similarity == y.similarity && x.id < y.id);
  };
  const std::size_t keep = std::min(k, all.size());
  std::partial_sort(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(keep), all.end(), better);
  all.resize(keep);
  return all;
}

}  // namespace emb
