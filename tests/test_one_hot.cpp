// one_hot, one_hot_sparse and as_linear: the seeds' claim that an embedding is a bias-free
// Linear applied to one-hot rows, checked as equalities that a regression would break.
//
// The one-hot product is the independent oracle here: it shares no code with the lookup.
#include <emb/embedding.hpp>
#include <emb/linear.hpp>
#include <emb/one_hot.hpp>

#include <doctest/doctest.h>

#include "test_util.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

using emb::Embedding;
using emb::EmbeddingOptions;
using emb::Index;
using emb::Linear;
using emb::Matrix;

using emb_test::message_of;
using emb_test::contains;
using emb_test::bit_identical;

namespace {

// n indices in [0, n_classes), from a small LCG so that the cases are fixed and varied.
std::vector<Index> random_indices(std::size_t n, Index n_classes, std::uint64_t seed) {
  std::vector<Index> idx(n);
  std::uint64_t s = seed * 6364136223846793005ULL + 1442695040888963407ULL;
  for (auto& i : idx) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    i = static_cast<Index>((s >> 33) % static_cast<std::uint64_t>(n_classes));
  }
  return idx;
}

// A fixed matrix with entries in [-1, 1] that are not round numbers.
Matrix<double> pattern(Index rows, Index cols, double phase) {
  Matrix<double> m(rows, cols);
  for (Index i = 0; i < rows; ++i)
    for (Index j = 0; j < cols; ++j)
      m(i, j) = std::sin(phase + 1.7 * static_cast<double>(i) + 0.61 * static_cast<double>(j * j));
  return m;
}

struct Case {
  Index num_embeddings;
  Index dim;
  std::size_t n;
  std::uint64_t seed;
};
const Case cases[] = {{1, 1, 1, 1},   {5, 3, 4, 2},      {10, 3, 40, 3},
                      {37, 16, 9, 4}, {200, 64, 300, 5}, {1000, 7, 50, 6}};

}  // namespace

TEST_CASE("one_hot: a single 1 per row, in the column of the index (hand-worked)") {
  const Matrix<float> x = emb::one_hot({2, 0, 2}, 4);
  Matrix<float> expected(3, 4);
  expected << 0, 0, 1, 0,  //
      1, 0, 0, 0,          //
      0, 0, 1, 0;
  CHECK(bit_identical(x, expected));

  const Matrix<double> d = emb::one_hot<double>({1}, 2);
  CHECK(d(0, 0) == 0.0);
  CHECK(d(0, 1) == 1.0);

  SUBCASE("empty input and zero classes give empty matrices of the right shape") {
    const Matrix<float> none = emb::one_hot(std::vector<Index>{}, 5);
    CHECK(none.rows() == 0);
    CHECK(none.cols() == 5);
    CHECK(emb::one_hot(std::vector<Index>{}, 0).size() == 0);
    CHECK(emb::one_hot_sparse(std::vector<Index>{}, 0).nonZeros() == 0);
  }
}

TEST_CASE("one_hot_sparse: compressed rows 0..n, column indices = the indices, n ones") {
  const std::vector<Index> idx = {3, 0, 3, 9, 1};
  const auto s = emb::one_hot_sparse(idx, 10);
  CHECK(s.rows() == 5);
  CHECK(s.cols() == 10);
  CHECK(s.isCompressed());
  CHECK(s.nonZeros() == 5);
  for (Index i = 0; i <= 5; ++i) CHECK(s.outerIndexPtr()[i] == i);
  for (std::size_t i = 0; i < idx.size(); ++i) {
    CHECK(s.innerIndexPtr()[i] == idx[i]);
    CHECK(s.valuePtr()[i] == 1.0f);
  }
  CHECK(bit_identical(Matrix<float>(s), emb::one_hot(idx, 10)));

  SUBCASE("a huge class count costs nothing: storage is O(n), not O(num_classes)") {
    const Index huge = Index{1} << 40;
    const auto big = emb::one_hot_sparse<double>({huge - 1, 0}, huge);
    CHECK(big.cols() == huge);
    CHECK(big.nonZeros() == 2);
    CHECK(big.coeff(0, huge - 1) == 1.0);
    CHECK(big.coeff(1, 0) == 1.0);
    CHECK(big.coeff(1, 1) == 0.0);
  }
}

TEST_CASE("one_hot: indices outside [0, C) throw out_of_range as Embedding does") {
  auto msg = message_of<std::out_of_range>([] { emb::one_hot({0, 1, 3}, 3); });
  CHECK(contains(msg, "emb::one_hot"));
  CHECK(contains(msg, "index 3"));
  CHECK(contains(msg, "position 2"));
  CHECK(contains(msg, "[0, 3)"));

  msg = message_of<std::out_of_range>([] { emb::one_hot_sparse({-1, 0}, 3); });
  CHECK(contains(msg, "emb::one_hot_sparse"));
  CHECK(contains(msg, "index -1"));
  CHECK(contains(msg, "position 0"));

  CHECK_THROWS_AS(emb::one_hot({std::numeric_limits<Index>::max()}, 3), std::out_of_range);
  CHECK_THROWS_AS(emb::one_hot_sparse({std::numeric_limits<Index>::min()}, 3), std::out_of_range);
  CHECK_THROWS_AS(emb::one_hot({0}, 0), std::out_of_range);

  SUBCASE("the same message as the Embedding lookup, apart from the caller's name") {
    Embedding<float> table(3, 5);
    const auto lookup = message_of<std::out_of_range>([&] { table.forward({0, 1, 3}); });
    const auto dense = message_of<std::out_of_range>([] { emb::one_hot({0, 1, 3}, 3); });
    CHECK(lookup.substr(lookup.find(": ")) == dense.substr(dense.find(": ")));
  }
}

TEST_CASE("one_hot: a negative class count throws invalid_argument naming it") {
  for (const auto& msg : {message_of<std::invalid_argument>([] { emb::one_hot({0}, -1); }),
                          message_of<std::invalid_argument>([] { emb::one_hot_sparse({}, -4); })}) {
    CHECK(contains(msg, "num_classes"));
    CHECK((contains(msg, "-1") || contains(msg, "-4")));
  }
}

TEST_CASE("Equivalence: one-hot x weight is exactly the lookup, dense and sparse") {
  for (const auto& c : cases) {
    CAPTURE(c.num_embeddings);
    CAPTURE(c.dim);
    CAPTURE(c.n);
    Embedding<float> table(EmbeddingOptions(c.num_embeddings, c.dim), c.seed);
    const auto idx = random_indices(c.n, c.num_embeddings, c.seed);
    const Matrix<float> lookup = table.forward(idx);

    Matrix<float> dense(static_cast<Index>(c.n), c.dim);
    dense.noalias() = emb::one_hot(idx, c.num_embeddings) * table.weight();
    CHECK(bit_identical(dense, lookup));

    const Matrix<float> sparse = emb::one_hot_sparse(idx, c.num_embeddings) * table.weight();
    CHECK(bit_identical(sparse, lookup));

    const Matrix<double> dense64 =
        emb::one_hot<double>(idx, c.num_embeddings) * table.weight().cast<double>();
    CHECK(bit_identical(dense64, Matrix<double>(lookup.cast<double>())));
  }
}

TEST_CASE("Equivalence: as_linear(E) is Linear(N, dim, bias=false) with W = E^T") {
  Embedding<float> table(EmbeddingOptions(6, 4), 12);
  const Linear<float> lin = emb::as_linear(table);
  CHECK(lin.in_features() == 6);
  CHECK(lin.out_features() == 4);
  CHECK_FALSE(lin.has_bias());
  CHECK(lin.bias().size() == 0);
  CHECK(bit_identical(lin.weight(), Matrix<float>(table.weight().transpose())));

  SUBCASE("the copy is independent of the table") {
    table.mutable_weight()(0, 0) += 1.0f;
    CHECK(lin.weight()(0, 0) != table.weight()(0, 0));
  }
}

TEST_CASE("Equivalence: as_linear(E).forward(one_hot(idx, N)) is the lookup") {
  for (const auto& c : cases) {
    CAPTURE(c.num_embeddings);
    CAPTURE(c.n);
    Embedding<float> table(EmbeddingOptions(c.num_embeddings, c.dim), c.seed + 100);
    const auto idx = random_indices(c.n, c.num_embeddings, c.seed + 100);
    const Linear<float> lin = emb::as_linear(table);
    CHECK(bit_identical(lin.forward(emb::one_hot(idx, c.num_embeddings)), table.forward(idx)));
  }
}

TEST_CASE("Equivalence: the Linear weight gradient, transposed, is Embedding::backward_dense") {
  for (const auto& c : cases) {
    CAPTURE(c.num_embeddings);
    CAPTURE(c.n);
    Embedding<double> table(EmbeddingOptions(c.num_embeddings, c.dim), c.seed + 200);
    const auto idx = random_indices(c.n, c.num_embeddings, c.seed + 200);
    const Matrix<double> g = pattern(static_cast<Index>(c.n), c.dim, 0.7);

    const auto grad =
        emb::as_linear(table).backward(emb::one_hot<double>(idx, c.num_embeddings), g);
    const Matrix<double> dense = table.backward_dense(idx, g);
    const Matrix<double> via_linear = grad.weight.transpose();
    // Repeated indices sum in a different order in the product: equal to rounding.
    CHECK(via_linear.isApprox(dense, 1e-12));
    CHECK(grad.bias.size() == 0);
    // The input gradient is g E^T, one row per position.
    CHECK(grad.input.isApprox(g * table.weight().transpose(), 1e-12));
  }

  SUBCASE("with distinct indices every gradient row is a single term, so equality is exact") {
    Embedding<float> table(EmbeddingOptions(8, 5), 3);
    const std::vector<Index> idx = {6, 1, 0, 7, 3};
    const Matrix<float> g = pattern(5, 5, 1.3).cast<float>();
    const auto grad = emb::as_linear(table).backward(emb::one_hot(idx, 8), g);
    CHECK(bit_identical(Matrix<float>(grad.weight.transpose()), table.backward_dense(idx, g)));
  }
}
