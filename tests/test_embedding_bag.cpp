// EmbeddingBag<T>: PyTorch's nn.EmbeddingBag semantics on CPU.
//
// Expected values come from outside the code under test: PyTorch's documented example
// (W = arange(1, 11) as 5x2), hand-worked bags, Embedding as an independent lookup, and finite
// differences for every gradient.
#include <emb/embedding_bag.hpp>

#include <emb/embedding.hpp>

#include <doctest/doctest.h>

#include "test_util.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

using emb::BagMode;
using emb::Embedding;
using emb::EmbeddingBag;
using emb::EmbeddingBagOptions;
using emb::EmbeddingOptions;
using emb::FromPretrainedBagOptions;
using emb::Index;
using emb::Matrix;
using emb::Vector;

using emb_test::mat;
using emb_test::message_of;
using emb_test::contains;
using emb_test::bit_identical;

namespace {

// PyTorch's documented example: weight = arange(1, 11).view(5, 2).
template <class T>
Matrix<T> arange_table() {
  return mat<T>(5, 2, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10});
}

template <class T>
EmbeddingBag<T> bag_of(BagMode mode, Matrix<T> w, FromPretrainedBagOptions opts = {}) {
  return EmbeddingBag<T>::from_pretrained(std::move(w), opts.mode(mode).freeze(false));
}

const std::vector<Index> kInput = {3, 1, 1, 1, 4, 0};
const std::vector<Index> kOffsets = {0, 0, 3, 3, 6};

template <class T>
Matrix<T> random_matrix(Index rows, Index cols, unsigned seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal;
  Matrix<T> m(rows, cols);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<T>(normal(gen));
  return m;
}

}  // namespace

TEST_CASE("EmbeddingBagOptions: chainable, Mean by default, and carried by from_pretrained") {
  EmbeddingBagOptions defaults(10, 3);
  CHECK(defaults.mode() == BagMode::Mean);
  CHECK_FALSE(defaults.include_last_offset());
  CHECK_FALSE(defaults.padding_idx().has_value());
  CHECK(defaults.norm_type() == 2.0);

  const auto opts = EmbeddingBagOptions(10, 3)
                        .mode(BagMode::Sum)
                        .padding_idx(-1)
                        .include_last_offset(true)
                        .max_norm(2.0)
                        .scale_grad_by_freq(true);
  CHECK(opts.mode() == BagMode::Sum);
  CHECK(opts.include_last_offset());
  EmbeddingBag<float> table(opts, 3);
  CHECK(table.padding_idx() == 9);  // -1 wraps
  CHECK(table.max_norm() == 2.0);
  CHECK(table.scale_grad_by_freq());
  CHECK_FALSE(table.frozen());

  FromPretrainedBagOptions pre;
  CHECK(pre.freeze());
  CHECK(pre.mode() == BagMode::Mean);
  auto frozen = EmbeddingBag<float>::from_pretrained(arange_table<float>());
  CHECK(frozen.frozen());
  CHECK(frozen.mode() == BagMode::Mean);
  CHECK(bit_identical(frozen.weight(), arange_table<float>()));
  auto other =
      EmbeddingBag<float>::from_pretrained(arange_table<float>(), FromPretrainedBagOptions()
                                                                      .freeze(false)
                                                                      .mode(BagMode::Max)
                                                                      .include_last_offset(true)
                                                                      .padding_idx(1));
  CHECK_FALSE(other.frozen());
  CHECK(other.mode() == BagMode::Max);
  CHECK(other.include_last_offset());
  CHECK(other.weight()(1, 0) == 3.0f);  // the padding row is kept as given
}

TEST_CASE("EmbeddingBag: init is Embedding's N(0, 1) with a zero padding row") {
  EmbeddingBag<float> bag(EmbeddingBagOptions(20, 4).padding_idx(3), 11);
  Embedding<float> plain(EmbeddingOptions(20, 4).padding_idx(3), 11);
  CHECK(bit_identical(bag.weight(), plain.weight()));
  CHECK(bag.weight().row(3).isZero(0.0));
  CHECK(EmbeddingBag<float>(7, 2).weight().rows() == 7);

  const auto bad = message_of<std::invalid_argument>(
      [] { EmbeddingBag<float>(EmbeddingBagOptions(4, 2).padding_idx(4)); });
  CHECK(contains(bad, "padding_idx = 4"));
  CHECK(contains(
      message_of<std::invalid_argument>([] { EmbeddingBag<float>(EmbeddingBagOptions(-1, 2)); }),
      "num_embeddings = -1"));
  CHECK(contains(message_of<std::invalid_argument>(
                     [] { EmbeddingBag<float>(EmbeddingBagOptions(4, 2).max_norm(0.0)); }),
                 "max_norm = 0"));
}

TEST_CASE("EmbeddingBag: PyTorch's documented example gives its printed values") {
  SUBCASE("sum") {
    auto bag = bag_of(BagMode::Sum, arange_table<float>());
    CHECK(bit_identical(bag.forward(kInput, kOffsets),
                        mat<float>(5, 2, {0, 0, 13, 16, 0, 0, 13, 16, 0, 0})));
  }
  SUBCASE("max") {
    auto bag = bag_of(BagMode::Max, arange_table<float>());
    CHECK(bit_identical(bag(kInput, kOffsets), mat<float>(5, 2, {0, 0, 7, 8, 0, 0, 9, 10, 0, 0})));
  }
  SUBCASE("mean") {
    auto bag = bag_of(BagMode::Mean, arange_table<double>());
    const Matrix<double> out = bag.forward(kInput, kOffsets);
    const Matrix<double> expected =
        mat<double>(5, 2, {0, 0, 13.0 / 3, 16.0 / 3, 0, 0, 13.0 / 3, 16.0 / 3, 0, 0});
    CHECK(bit_identical(out, expected));
  }
  SUBCASE("include_last_offset reads the same bags from B+1 offsets") {
    auto bag = bag_of(BagMode::Sum, arange_table<float>(),
                      FromPretrainedBagOptions().include_last_offset(true));
    CHECK(bit_identical(bag.forward(kInput, {0, 0, 3, 3, 6, 6}),
                        mat<float>(5, 2, {0, 0, 13, 16, 0, 0, 13, 16, 0, 0})));
  }
}

TEST_CASE("EmbeddingBag: gradients of the documented example, every mode") {
  const Matrix<double> G = mat<double>(5, 2, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10});
  // grad row k = sum over the entries of k of scale * G[bag]; bags 1 = {3, 1, 1}, 3 = {1, 4, 0}.
  SUBCASE("sum") {
    auto bag = bag_of(BagMode::Sum, arange_table<double>());
    const auto grad = bag.backward(kInput, kOffsets, G);
    CHECK(grad.rows == std::vector<Index>{0, 1, 3, 4});
    CHECK(bit_identical(grad.values, mat<double>(4, 2, {7, 8, 2 * 3 + 7, 2 * 4 + 8, 3, 4, 7, 8})));
    CHECK(bit_identical(bag.backward_dense(kInput, kOffsets, G), grad.to_dense()));
  }
  SUBCASE("mean") {
    auto bag = bag_of(BagMode::Mean, arange_table<double>());
    const auto grad = bag.backward(kInput, kOffsets, G);
    CHECK(grad.rows == std::vector<Index>{0, 1, 3, 4});
    const Matrix<double> expected =
        mat<double>(4, 2,
                    {7.0 / 3, 8.0 / 3, 3.0 / 3 + 3.0 / 3 + 7.0 / 3, 4.0 / 3 + 4.0 / 3 + 8.0 / 3,
                     3.0 / 3, 4.0 / 3, 7.0 / 3, 8.0 / 3});
    for (Index i = 0; i < expected.size(); ++i)
      CHECK(grad.values.data()[i] == doctest::Approx(expected.data()[i]).epsilon(1e-15));
  }
  SUBCASE("max: only the winning rows get the gradient") {
    auto bag = bag_of(BagMode::Max, arange_table<double>());
    const auto grad = bag.backward(kInput, kOffsets, G);
    CHECK(grad.rows == std::vector<Index>{3, 4});
    CHECK(bit_identical(grad.values, mat<double>(2, 2, {3, 4, 7, 8})));
    const Matrix<double> dense = bag.backward_dense(kInput, kOffsets, G);
    CHECK(dense.rows() == 5);
    CHECK(dense.row(1).isZero(0.0));
    CHECK(dense(3, 1) == 4.0);
  }
}

TEST_CASE("EmbeddingBag: Max keeps the first occurrence on ties, element by element") {
  // Rows 0 and 1 are equal; row 2 wins the first column, row 3 the second.
  auto bag = bag_of(BagMode::Max, mat<double>(4, 2, {1, 5, 1, 5, 2, 0, 0, 9}));
  const Matrix<double> G = mat<double>(3, 2, {1, 10, 100, 1000, 7, 70});
  const std::vector<Index> idx = {0, 1, 1, 0, 2, 3};
  const std::vector<Index> off = {0, 2, 4};
  CHECK(bit_identical(bag.forward(idx, off), mat<double>(3, 2, {1, 5, 1, 5, 2, 9})));
  const auto grad = bag.backward(idx, off, G);
  CHECK(grad.rows == std::vector<Index>{0, 1, 2, 3});
  // Bag 0 = {0, 1}: row 0 wins both. Bag 1 = {1, 0}: row 1 wins both.
  CHECK(bit_identical(grad.values, mat<double>(4, 2, {1, 10, 100, 1000, 7, 0, 0, 70})));
}

TEST_CASE("EmbeddingBag: Max ignores scale_grad_by_freq, as PyTorch's max backward does") {
  const auto w = mat<double>(3, 2, {1, 5, 2, 0, 0, 9});
  const std::vector<Index> idx = {0, 1, 0, 2};
  const std::vector<Index> off = {0, 2};
  const Matrix<double> G = mat<double>(2, 2, {1, 10, 100, 1000});
  auto plain = bag_of(BagMode::Max, w);
  auto scaled = bag_of(BagMode::Max, w, FromPretrainedBagOptions().scale_grad_by_freq(true));
  const auto a = plain.backward(idx, off, G);
  const auto b = scaled.backward(idx, off, G);
  // Bag 0 = {0, 1}: row 1 wins column 0, row 0 column 1; bag 1 = {0, 2}: row 0, then row 2.
  CHECK(a.rows == std::vector<Index>{0, 1, 2});
  CHECK(bit_identical(a.values, mat<double>(3, 2, {100, 10, 1, 0, 0, 1000})));
  CHECK(bit_identical(a.values, b.values));
}

TEST_CASE("EmbeddingBag: Max backward on a large call equals the element-by-element oracle") {
  // 300 bags of 0-20 ids over 400 rows of dim 7, with padding and repeats: 2100 output
  // elements, enough for the grouping by winner to take its radix path. The oracle finds each
  // element's winner by the strict comparison (first occurrence on ties) and adds the bag's
  // gradient to it in bag order; sparse and dense backwards must give exactly its sums.
  const Index rows = 400, dim = 7;
  const std::size_t bags = 300;
  std::mt19937_64 gen(41);
  Matrix<float> w = random_matrix<float>(rows, dim, 42);
  w.row(5) = w.row(6);  // ties between two rows
  std::vector<Index> idx, off;
  for (std::size_t b = 0; b < bags; ++b) {
    off.push_back(static_cast<Index>(idx.size()));
    const auto len = static_cast<std::size_t>(gen() % 21);
    for (std::size_t i = 0; i < len; ++i) {
      const bool pad = gen() % 12 == 0;
      idx.push_back(pad ? 3 : static_cast<Index>(gen() % static_cast<std::uint64_t>(rows)));
    }
  }
  const Matrix<float> G = random_matrix<float>(static_cast<Index>(bags), dim, 43);
  Matrix<float> expected = Matrix<float>::Zero(rows, dim);
  for (std::size_t b = 0; b < bags; ++b) {
    const auto begin = static_cast<std::size_t>(off[b]);
    const std::size_t end = b + 1 < bags ? static_cast<std::size_t>(off[b + 1]) : idx.size();
    for (Index j = 0; j < dim; ++j) {
      Index winner = -1;
      for (std::size_t i = begin; i < end; ++i) {
        if (idx[i] == 3) continue;  // padding
        if (winner < 0 || w(idx[i], j) > w(winner, j)) winner = idx[i];
      }
      if (winner >= 0) expected(winner, j) += G(static_cast<Index>(b), j);
    }
  }
  auto bag = bag_of(BagMode::Max, w, FromPretrainedBagOptions().padding_idx(3));
  const auto sparse = bag.backward(idx, off, G);
  CHECK(std::is_sorted(sparse.rows.begin(), sparse.rows.end()));
  CHECK(std::adjacent_find(sparse.rows.begin(), sparse.rows.end()) == sparse.rows.end());
  CHECK(bit_identical(sparse.to_dense(), expected));
  CHECK(bit_identical(bag.backward_dense(idx, off, G), expected));
}

TEST_CASE("EmbeddingBag: empty and all-padding bags give zero rows and no gradient") {
  const auto w = mat<double>(4, 2, {1, -2, 3, -4, 5, -6, -7, 8});
  const Matrix<double> G = mat<double>(4, 2, {1, 1, 2, 2, 3, 3, 4, 4});
  // Bags: {} | {2, 2} (all padding) | {2, 1, 2} | {}.
  const std::vector<Index> idx = {2, 2, 2, 1, 2};
  const std::vector<Index> off = {0, 0, 2, 5};
  for (BagMode mode : {BagMode::Sum, BagMode::Mean, BagMode::Max}) {
    CAPTURE(emb::to_string(mode));
    auto bag = bag_of(mode, w, FromPretrainedBagOptions().padding_idx(2));
    const Matrix<double> out = bag.forward(idx, off);
    CHECK(out.row(0).isZero(0.0));
    CHECK(out.row(1).isZero(0.0));
    CHECK(out.row(3).isZero(0.0));
    // Padding entries are skipped, so the mean divides by 1, not 3.
    CHECK(out(2, 0) == 3.0);
    CHECK(out(2, 1) == -4.0);
    const auto grad = bag.backward(idx, off, G);
    CHECK(grad.rows == std::vector<Index>{1});
    CHECK(grad.values(0, 0) == 3.0);
  }
  SUBCASE("no bags at all") {
    auto bag = bag_of(BagMode::Sum, w);
    CHECK(bag.forward(std::vector<Index>{}, std::vector<Index>{}).rows() == 0);
    CHECK(bag.forward(std::vector<Index>{}, {0, 0, 0}).isZero(0.0));
  }
}

TEST_CASE("EmbeddingBag: scale_grad_by_freq counts each index over the whole call") {
  // Index 1 occurs three times in the call (twice in bag 0, once in bag 1): every one of its
  // contributions is divided by 3, not by its count within a bag (PyTorch's CPU bag backward
  // looks the count up at the wrong position).
  const std::vector<Index> idx = {1, 1, 2, 1, 3};
  const std::vector<Index> off = {0, 3};
  const Matrix<double> G = mat<double>(2, 2, {6, 12, 30, 60});
  SUBCASE("sum") {
    auto bag = bag_of(BagMode::Sum, random_matrix<double>(4, 2, 1),
                      FromPretrainedBagOptions().scale_grad_by_freq(true));
    const auto grad = bag.backward(idx, off, G);
    CHECK(grad.rows == std::vector<Index>{1, 2, 3});
    CHECK(grad.values(0, 0) == doctest::Approx(6.0 / 3 + 6.0 / 3 + 30.0 / 3));
    CHECK(grad.values(0, 1) == doctest::Approx(12.0 / 3 + 12.0 / 3 + 60.0 / 3));
    CHECK(grad.values(1, 0) == doctest::Approx(6.0));
    CHECK(grad.values(2, 1) == doctest::Approx(60.0));
  }
  SUBCASE("mean: the count and the bag size both divide") {
    auto bag = bag_of(BagMode::Mean, random_matrix<double>(4, 2, 1),
                      FromPretrainedBagOptions().scale_grad_by_freq(true));
    const auto grad = bag.backward(idx, off, G);
    CHECK(grad.values(0, 0) == doctest::Approx(2 * 6.0 / 3 / 3 + 30.0 / 3 / 2));
    CHECK(grad.values(1, 0) == doctest::Approx(6.0 / 3));
    CHECK(grad.values(2, 0) == doctest::Approx(30.0 / 2));
    CHECK(bit_identical(bag.backward_dense(idx, off, G), grad.to_dense()));
  }
}

TEST_CASE("EmbeddingBag: per_sample_weights scale the rows of a Sum bag") {
  auto bag =
      bag_of(BagMode::Sum, arange_table<double>(), FromPretrainedBagOptions().padding_idx(0));
  Vector<double> psw(6);
  psw << 1, 2, 3, 4, 5, 6;
  // Bag 1 = 1*W3 + 2*W1 + 3*W1 = [7 + 15, 8 + 20]; bag 3 = 4*W1 + 5*W4 (+ padding 0 skipped).
  const Matrix<double> out = bag.forward(kInput, kOffsets, psw);
  CHECK(bit_identical(out, mat<double>(5, 2, {0, 0, 22, 28, 0, 0, 57, 66, 0, 0})));

  const Matrix<double> G = mat<double>(5, 2, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10});
  SUBCASE("the table gradient is weighted") {
    const auto grad = bag.backward(kInput, kOffsets, G, psw);
    CHECK(grad.rows == std::vector<Index>{1, 3, 4});
    CHECK(bit_identical(grad.values,
                        mat<double>(3, 2, {5 * 3 + 4 * 7.0, 5 * 4 + 4 * 8.0, 3, 4, 35, 40})));
    CHECK(bit_identical(bag.backward_dense(kInput, kOffsets, G, psw), grad.to_dense()));
  }
  SUBCASE("the gradient with respect to the weights is <W[idx_i], G[bag(i)]>") {
    const Vector<double> g = bag.backward_per_sample_weights(kInput, kOffsets, G);
    REQUIRE(g.size() == 6);
    CHECK(g(0) == 7 * 3 + 8 * 4);
    CHECK(g(1) == 3 * 3 + 4 * 4);
    CHECK(g(2) == 3 * 3 + 4 * 4);
    CHECK(g(3) == 3 * 7 + 4 * 8);
    CHECK(g(4) == 9 * 7 + 10 * 8);
    CHECK(g(5) == 0.0);  // padding
  }
  SUBCASE("they are rejected outside Sum mode and with the wrong length") {
    auto mean = bag_of(BagMode::Mean, arange_table<double>());
    CHECK(contains(message_of<std::invalid_argument>([&] { mean.forward(kInput, kOffsets, psw); }),
                   "only supported in sum mode, not mode = mean"));
    CHECK(contains(message_of<std::invalid_argument>(
                       [&] { mean.backward_per_sample_weights(kInput, kOffsets, G); }),
                   "mode = mean"));
    const Vector<double> short_psw = Vector<double>::Ones(5);
    CHECK(contains(
        message_of<std::invalid_argument>([&] { bag.forward(kInput, kOffsets, short_psw); }),
        "per_sample_weights has 5 values, expected one per index (6)"));
    CHECK(contains(
        message_of<std::invalid_argument>([&] { bag.forward(kInput, kOffsets, Vector<double>()); }),
        "has 0 values"));
  }
}

TEST_CASE("EmbeddingBag: every offset error names the offset and its position") {
  auto bag = bag_of(BagMode::Sum, arange_table<float>(), FromPretrainedBagOptions().max_norm(1.0));
  auto last = bag_of(BagMode::Sum, arange_table<float>(),
                     FromPretrainedBagOptions().include_last_offset(true).max_norm(1.0));
  const std::vector<Index> idx = {0, 1, 2, 3};
  const Matrix<float> before = bag.weight();

  CHECK(contains(message_of<std::invalid_argument>([&] {
                   bag.forward(idx, {1, 2});
                 }),
                 "offset 1 at position 0 is invalid; the first offset must be 0"));
  CHECK(contains(message_of<std::invalid_argument>([&] {
                   bag.forward(idx, {0, 3, 2});
                 }),
                 "offset 2 at position 2 is less than the offset before it (3)"));
  CHECK(contains(message_of<std::invalid_argument>([&] {
                   bag.forward(idx, {0, 5});
                 }),
                 "offset 5 at position 1 is past the end of the 4 indices"));
  CHECK(contains(message_of<std::invalid_argument>([&] {
                   bag.forward(idx, {0, -1});
                 }),
                 "offset -1 at position 1"));
  CHECK(contains(message_of<std::invalid_argument>([&] { bag.forward(idx, std::vector<Index>{}); }),
                 "offsets is empty but there are 4 indices"));
  CHECK(contains(message_of<std::invalid_argument>([&] {
                   last.forward(idx, {0, 2, 3});
                 }),
                 "offset 3 at position 2 is invalid; with include_last_offset the last offset "
                 "must equal the number of indices, 4"));
  CHECK(
      contains(message_of<std::invalid_argument>([&] { last.forward(idx, std::vector<Index>{}); }),
               "offsets is empty"));
  CHECK(contains(message_of<std::invalid_argument>([&] {
                   bag.backward(idx, {0, 5}, Matrix<float>::Zero(2, 2));
                 }),
                 "offset 5 at position 1"));
  // Nothing was renormalised by the failing calls.
  CHECK(bit_identical(bag.weight(), before));
  CHECK(bit_identical(last.weight(), before));
  CHECK(last.forward(idx, {0, 4}).rows() == 1);
}

TEST_CASE("EmbeddingBag: bad indices and grad shapes are rejected and change nothing") {
  auto bag = bag_of(BagMode::Mean, arange_table<float>(), FromPretrainedBagOptions().max_norm(1.0));
  const Matrix<float> before = bag.weight();
  const auto msg = message_of<std::out_of_range>([&] { bag.forward({0, 1, 5}, {0, 1}); });
  CHECK(contains(msg, "index 5 at position 2 is out of range; valid indices are [0, 5)"));
  CHECK(contains(message_of<std::out_of_range>([&] { bag.forward({-1}, {0}); }), "index -1"));
  CHECK(bit_identical(bag.weight(), before));
  CHECK(contains(message_of<std::invalid_argument>([&] {
                   bag.backward({0, 1}, {0, 1}, Matrix<float>::Zero(3, 2));
                 }),
                 "grad_output has shape (3, 2), expected (2, 2)"));
  CHECK(contains(message_of<std::invalid_argument>([&] {
                   bag.backward_dense({0, 1}, {0}, Matrix<float>::Zero(1, 3));
                 }),
                 "expected (1, 2)"));
  CHECK(contains(
      message_of<std::invalid_argument>([&] { bag.set_weight(Matrix<float>::Zero(5, 3)); }),
      "weight has shape (5, 3), expected (5, 2)"));
}

TEST_CASE("EmbeddingBag: max_norm renormalises the looked-up rows before pooling") {
  // Row norms: 3 (row 0), 5 (row 1), 0.5 (row 2); rows 0 and 1 exceed 2, row 3 is not used.
  auto bag = bag_of(BagMode::Sum, mat<double>(4, 2, {3, 0, 3, 4, 0.5, 0, 10, 0}),
                    FromPretrainedBagOptions().max_norm(2.0));
  const Matrix<double> out = bag.forward({0, 1, 2}, {0, 2});
  const double s0 = 2.0 / (3.0 + 1e-7);
  const double s1 = 2.0 / (5.0 + 1e-7);
  CHECK(out(0, 0) == doctest::Approx(3 * s0 + 3 * s1).epsilon(1e-15));
  CHECK(out(0, 1) == doctest::Approx(4 * s1).epsilon(1e-15));
  CHECK(out(1, 0) == 0.5);
  CHECK(bag.weight()(0, 0) == doctest::Approx(3 * s0).epsilon(1e-15));
  CHECK(bag.weight()(3, 0) == 10.0);
}

TEST_CASE("EmbeddingBag: a (B, L) index matrix means B bags of L indices") {
  const auto w = random_matrix<double>(6, 3, 4);
  Matrix<Index> input(2, 3);
  input << 1, 2, 4, 4, 3, 0;
  const std::vector<Index> flat = {1, 2, 4, 4, 3, 0};
  const Matrix<double> G = random_matrix<double>(2, 3, 5);
  for (BagMode mode : {BagMode::Sum, BagMode::Mean, BagMode::Max}) {
    CAPTURE(emb::to_string(mode));
    auto bag = bag_of(mode, w);
    CHECK(bit_identical(bag.forward(input), bag.forward(flat, {0, 3})));
    CHECK(bit_identical(bag(input), bag.forward(flat, {0, 3})));
    const auto a = bag.backward(input, G);
    const auto b = bag.backward(flat, {0, 3}, G);
    CHECK(a.rows == b.rows);
    CHECK(bit_identical(a.values, b.values));
    CHECK(bit_identical(bag.backward_dense(input, G), bag.backward_dense(flat, {0, 3}, G)));
  }
  SUBCASE("per_sample_weights of the same shape") {
    auto bag = bag_of(BagMode::Sum, w);
    Matrix<double> psw(2, 3);
    psw << 0.5, -1, 2, 3, 0.25, 1;
    Vector<double> psw_flat(6);
    psw_flat << 0.5, -1, 2, 3, 0.25, 1;
    CHECK(bit_identical(bag.forward(input, psw), bag.forward(flat, {0, 3}, psw_flat)));
    CHECK(bit_identical(bag.backward(input, G, psw).values,
                        bag.backward(flat, {0, 3}, G, psw_flat).values));
    CHECK(bit_identical(bag.backward_dense(input, G, psw),
                        bag.backward_dense(flat, {0, 3}, G, psw_flat)));
    const Matrix<double> gpsw = bag.backward_per_sample_weights(input, G);
    const Vector<double> gflat = bag.backward_per_sample_weights(flat, {0, 3}, G);
    CHECK(gpsw.rows() == 2);
    CHECK(gpsw(1, 0) == gflat(3));
    CHECK(contains(
        message_of<std::invalid_argument>([&] { bag.forward(input, Matrix<double>::Ones(3, 2)); }),
        "per_sample_weights has shape (3, 2), expected (2, 3)"));
  }
  SUBCASE("an index matrix with an offsets vector is still read as indices + offsets") {
    auto bag = bag_of(BagMode::Sum, w);
    Eigen::Matrix<Index, Eigen::Dynamic, 1> offsets(2);
    offsets << 0, 2;
    CHECK(bit_identical(bag.forward(input, offsets), bag.forward(flat, {0, 2})));
  }
  SUBCASE("zero-length bags") {
    auto bag = bag_of(BagMode::Mean, w);
    const Matrix<double> out = bag.forward(Matrix<Index>(4, 0));
    CHECK(out.rows() == 4);
    CHECK(out.isZero(0.0));
  }
}

TEST_CASE("EmbeddingBag: Sum/Mean pooling equals Embedding's lookup summed by hand") {
  const auto w = random_matrix<float>(50, 8, 6);
  std::mt19937_64 gen(9);
  std::vector<Index> idx(200);
  for (auto& i : idx) i = static_cast<Index>(gen() % 50);
  std::vector<Index> off = {0, 7, 7, 60, 61, 150};
  auto lookup = Embedding<float>::from_pretrained(w, emb::FromPretrainedOptions().padding_idx(5));
  const Matrix<float> rows = lookup.forward(idx);
  auto sum = bag_of(BagMode::Sum, w, FromPretrainedBagOptions().padding_idx(5));
  auto mean = bag_of(BagMode::Mean, w, FromPretrainedBagOptions().padding_idx(5));
  const Matrix<float> s = sum.forward(idx, off);
  const Matrix<float> m = mean.forward(idx, off);
  for (std::size_t b = 0; b < off.size(); ++b) {
    const auto begin = static_cast<std::size_t>(off[b]);
    const std::size_t end = b + 1 < off.size() ? static_cast<std::size_t>(off[b + 1]) : idx.size();
    Eigen::RowVectorXf acc = Eigen::RowVectorXf::Zero(8);
    int count = 0;
    for (std::size_t i = begin; i < end; ++i) {
      if (idx[i] == 5) continue;
      acc += rows.row(static_cast<Index>(i));
      ++count;
    }
    CAPTURE(b);
    CHECK((s.row(static_cast<Index>(b)) - acc).cwiseAbs().maxCoeff() == 0.0f);
    if (count > 0) acc /= static_cast<float>(count);
    CHECK((m.row(static_cast<Index>(b)) - acc).cwiseAbs().maxCoeff() == 0.0f);
  }
}

// The Sum / Mean pooling of rows of 16 to 512 bytes is compiled per row size and sums in
// registers; any other width takes the generic loop. A table of width d + 1 whose first d
// columns are the d-wide table forces the generic loop on the same numbers.
template <class T>
void check_fixed_rows_against_generic(Index dim, Index rows) {
  CAPTURE(dim);
  CAPTURE(rows);
  const Matrix<T> wide = random_matrix<T>(rows, dim + 1, static_cast<unsigned>(dim) + 3);
  const Matrix<T> narrow = wide.leftCols(dim);
  std::mt19937_64 gen(static_cast<unsigned>(dim));
  std::vector<Index> idx(300);
  for (auto& i : idx) i = static_cast<Index>(gen() % static_cast<std::uint64_t>(rows));
  idx[5] = idx[17] = 1;  // padding entries
  const std::vector<Index> off = {0, 0, 20, 21, 120, 200};
  Vector<T> psw(300);
  for (Index i = 0; i < psw.size(); ++i) psw(i) = static_cast<T>(0.25 * static_cast<double>(i % 7) - 0.5);
  for (BagMode mode : {BagMode::Sum, BagMode::Mean}) {
    const auto opts = FromPretrainedBagOptions().padding_idx(1);
    auto fixed = bag_of(mode, narrow, opts);
    auto generic = bag_of(mode, wide, opts);
    CHECK(bit_identical(fixed.forward(idx, off), Matrix<T>(generic.forward(idx, off).leftCols(dim))));
    if (mode == BagMode::Sum) {
      CHECK(bit_identical(fixed.forward(idx, off, psw),
                          Matrix<T>(generic.forward(idx, off, psw).leftCols(dim))));
    }
  }
}

TEST_CASE("EmbeddingBag: the register-accumulated rows equal the generic loop at every width") {
  for (Index dim : {2, 4, 8, 16, 32, 64, 128}) {
    if (dim * 4 >= 16 && dim * 4 <= 512) check_fixed_rows_against_generic<float>(dim, 50);
    if (dim * 8 >= 16 && dim * 8 <= 512) check_fixed_rows_against_generic<double>(dim, 50);
  }
  // A table past the prefetch threshold (8 MiB), so the prefetching variant runs too.
  check_fixed_rows_against_generic<float>(16, 140000);
}

TEST_CASE("EmbeddingBag: a zero-width table pools every mode into zero-width rows") {
  for (BagMode mode : {BagMode::Sum, BagMode::Mean, BagMode::Max}) {
    auto bag = bag_of(mode, Matrix<float>(4, 0));
    const Matrix<float> out = bag.forward({1, 3, 0}, {0, 1});
    CHECK(out.rows() == 2);
    CHECK(out.cols() == 0);
    CHECK(bag.backward({1, 3, 0}, {0, 1}, Matrix<float>(2, 0)).values.cols() == 0);
  }
}

TEST_CASE("EmbeddingBag: every gradient agrees with finite differences") {
  // L = sum(forward(idx, off) * G); dL/dW and dL/dpsw by central differences.
  const std::vector<Index> idx = {3, 1, 3, 0, 4, 3, 2, 1};
  const std::vector<Index> off = {0, 3, 3, 6};
  const Matrix<double> G = random_matrix<double>(4, 3, 12);
  const Matrix<double> w0 = random_matrix<double>(6, 3, 13);
  Vector<double> psw(8);
  psw << 0.5, -1.5, 2, 1, 0.25, -0.75, 3, 1.25;
  const double h = 1e-6;
  for (BagMode mode : {BagMode::Sum, BagMode::Mean, BagMode::Max}) {
    for (bool weighted : {false, true}) {
      if (weighted && mode != BagMode::Sum) continue;
      CAPTURE(emb::to_string(mode));
      CAPTURE(weighted);
      const auto opts = FromPretrainedBagOptions().padding_idx(4);
      const auto loss = [&](const Matrix<double>& w, const Vector<double>& p) {
        auto probe = bag_of(mode, w, opts);
        const Matrix<double> out = weighted ? probe.forward(idx, off, p) : probe.forward(idx, off);
        return (out.array() * G.array()).sum();
      };
      auto bag = bag_of(mode, w0, opts);
      const Matrix<double> dense =
          weighted ? bag.backward_dense(idx, off, G, psw) : bag.backward_dense(idx, off, G);
      const Matrix<double> sparse =
          (weighted ? bag.backward(idx, off, G, psw) : bag.backward(idx, off, G)).to_dense();
      CHECK(bit_identical(dense, sparse));
      for (Index k = 0; k < w0.rows(); ++k) {
        for (Index j = 0; j < w0.cols(); ++j) {
          Matrix<double> plus = w0;
          Matrix<double> minus = w0;
          plus(k, j) += h;
          minus(k, j) -= h;
          const double numeric = (loss(plus, psw) - loss(minus, psw)) / (2 * h);
          CAPTURE(k);
          CAPTURE(j);
          if (k == 4) {
            CHECK(dense(k, j) == 0.0);  // padding: skipped, so no gradient
          } else {
            CHECK(dense(k, j) == doctest::Approx(numeric).epsilon(1e-7));
          }
        }
      }
      if (weighted) {
        const Vector<double> gp = bag.backward_per_sample_weights(idx, off, G);
        for (Index i = 0; i < psw.size(); ++i) {
          Vector<double> plus = psw;
          Vector<double> minus = psw;
          plus(i) += h;
          minus(i) -= h;
          const double numeric = (loss(w0, plus) - loss(w0, minus)) / (2 * h);
          CAPTURE(i);
          CHECK(gp(i) == doctest::Approx(numeric).epsilon(1e-7));
        }
      }
    }
  }
}

TEST_CASE("EmbeddingBag: weight access mirrors Embedding") {
  auto bag = EmbeddingBag<double>(EmbeddingBagOptions(3, 2).mode(BagMode::Sum), 1);
  bag.mutable_weight().row(2).setConstant(4.0);
  CHECK(bag.weight()(2, 1) == 4.0);
  bag.set_weight(arange_table<double>().topRows(3));
  CHECK(bag.weight()(2, 1) == 6.0);
  bag.freeze();
  CHECK(bag.frozen());
  bag.freeze(false);
  CHECK_FALSE(bag.frozen());
  CHECK(bag.num_embeddings() == 3);
  CHECK(bag.embedding_dim() == 2);
}

// What a bag call should do, worked out apart from the library: the exception it must throw
// (and a part of its message), or the pooled rows of the 7-row table w with padding 2.
struct BagOracle {
  enum Outcome { ok, bad_offset, bad_index } outcome = ok;
  std::string message_part;
  Matrix<float> pooled;
};

BagOracle bag_oracle(const Matrix<float>& w, const std::vector<Index>& idx,
                     const std::vector<Index>& off, bool last, BagMode mode) {
  BagOracle o;
  const auto n = static_cast<Index>(idx.size());
  // Offsets first (the layer checks them before the ids).
  if (off.empty()) {
    if (last || n != 0) {
      o.outcome = BagOracle::bad_offset;
      o.message_part = "offsets is empty";
      return o;
    }
  } else if (off[0] != 0) {
    o.outcome = BagOracle::bad_offset;
    o.message_part = "offset " + std::to_string(off[0]) + " at position 0";
    return o;
  } else {
    for (std::size_t b = 1; b < off.size(); ++b) {
      if (off[b] < off[b - 1] || off[b] > n) {
        o.outcome = BagOracle::bad_offset;
        o.message_part = "offset " + std::to_string(off[b]) + " at position " + std::to_string(b);
        return o;
      }
    }
    if (last && off.back() != n) {
      o.outcome = BagOracle::bad_offset;
      o.message_part = "offset " + std::to_string(off.back()) + " at position " +
                       std::to_string(off.size() - 1);
      return o;
    }
  }
  for (std::size_t i = 0; i < idx.size(); ++i) {
    if (idx[i] < 0 || idx[i] >= 7) {
      o.outcome = BagOracle::bad_index;
      o.message_part = "index " + std::to_string(idx[i]) + " at position " + std::to_string(i);
      return o;
    }
  }
  const std::size_t bags = off.empty() ? 0 : (last ? off.size() - 1 : off.size());
  o.pooled = Matrix<float>::Zero(static_cast<Index>(bags), 3);
  for (std::size_t b = 0; b < bags; ++b) {
    const auto begin = static_cast<std::size_t>(off[b]);
    const auto end = b + 1 < off.size() ? static_cast<std::size_t>(off[b + 1]) : idx.size();
    int count = 0;
    for (std::size_t i = begin; i < end; ++i) {
      if (idx[i] == 2) continue;
      for (Index j = 0; j < 3; ++j) {
        float& out = o.pooled(static_cast<Index>(b), j);
        const float v = w(idx[i], j);
        out = mode == BagMode::Max ? (count == 0 ? v : std::max(out, v)) : out + v;
      }
      ++count;
    }
    if (mode == BagMode::Mean && count > 0) o.pooled.row(static_cast<Index>(b)) /= static_cast<float>(count);
  }
  return o;
}

TEST_CASE("EmbeddingBag: random, often malformed, inputs give the right rows or the right error") {
  std::mt19937_64 gen(77);
  const auto w = random_matrix<float>(7, 3, 8);
  int accepted = 0;
  int rejected = 0;
  for (int trial = 0; trial < 400; ++trial) {
    const std::size_t n = gen() % 6;
    std::vector<Index> idx(n);
    for (auto& i : idx) i = static_cast<Index>(gen() % 9) - 1;  // -1 .. 7, 7 is out of range
    std::vector<Index> off(gen() % 4);
    for (auto& o : off) o = static_cast<Index>(gen() % (n + 2)) - (gen() % 8 == 0 ? 1 : 0);
    std::sort(off.begin(), off.end());
    if (gen() % 5 == 0 && off.size() > 1) std::swap(off.front(), off.back());
    const bool last = gen() % 2 == 0;
    for (BagMode mode : {BagMode::Sum, BagMode::Mean, BagMode::Max}) {
      CAPTURE(trial);
      CAPTURE(static_cast<int>(mode));
      auto bag =
          bag_of(mode, w, FromPretrainedBagOptions().include_last_offset(last).padding_idx(2));
      const BagOracle expected = bag_oracle(w, idx, off, last, mode);
      if (expected.outcome == BagOracle::bad_offset) {
        CHECK(contains(message_of<std::invalid_argument>([&] { bag.forward(idx, off); }),
                       expected.message_part));
        ++rejected;
      } else if (expected.outcome == BagOracle::bad_index) {
        CHECK(contains(message_of<std::out_of_range>([&] { bag.forward(idx, off); }),
                       expected.message_part));
        ++rejected;
      } else {
        const Matrix<float> out = bag.forward(idx, off);
        REQUIRE(out.rows() == expected.pooled.rows());
        CHECK((out.size() == 0 || (out - expected.pooled).cwiseAbs().maxCoeff() <= 1e-6f));
        const auto grad = bag.backward(idx, off, Matrix<float>::Ones(out.rows(), 3));
        CHECK(grad.to_dense().rows() == 7);
        ++accepted;
      }
      CHECK(bit_identical(bag.weight(), w));  // nothing changed, whatever the outcome
    }
  }
  CHECK(accepted > 100);  // both kinds of input were exercised
  CHECK(rejected > 100);
}
