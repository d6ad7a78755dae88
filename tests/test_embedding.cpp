// Embedding<T>: PyTorch's nn.Embedding semantics on CPU.
//
// Expected values come from outside the code under test: hand-worked cases, the tensors the
// seed notes printed, an independent (Python) implementation of the seeded generator, and
// finite differences for the gradients.
#include <emb/embedding.hpp>

#include <doctest/doctest.h>

#include "test_util.hpp"

#include <array>
#include <cmath>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

using emb::Embedding;
using emb::EmbeddingOptions;
using emb::FromPretrainedOptions;
using emb::Index;
using emb::Matrix;

using emb_test::mat;
using emb_test::message_of;
using emb_test::contains;
using emb_test::bit_identical;

TEST_CASE("EmbeddingOptions: chainable setters and same-name getters with PyTorch's defaults") {
  EmbeddingOptions defaults(10, 3);
  CHECK(defaults.num_embeddings() == 10);
  CHECK(defaults.embedding_dim() == 3);
  CHECK_FALSE(defaults.padding_idx().has_value());
  CHECK_FALSE(defaults.max_norm().has_value());
  CHECK(defaults.norm_type() == 2.0);
  CHECK_FALSE(defaults.scale_grad_by_freq());

  const auto opts =
      EmbeddingOptions(10, 3).padding_idx(1).max_norm(1.5).norm_type(1.0).scale_grad_by_freq(true);
  CHECK(opts.padding_idx() == 1);
  CHECK(opts.max_norm() == 1.5);
  CHECK(opts.norm_type() == 1.0);
  CHECK(opts.scale_grad_by_freq());

  FromPretrainedOptions pre;
  CHECK(pre.freeze());
  CHECK_FALSE(pre.freeze(false).freeze());
  CHECK(FromPretrainedOptions().padding_idx(-1).max_norm(2.0).padding_idx() == -1);
}

TEST_CASE("Embedding: weights are N(0, 1) from a portable seeded generator") {
  SUBCASE("the first values for seeds 0 and 42 match an independent implementation") {
    // A stream per row (xoshiro256** keyed by the seed and the row), 53-bit uniforms,
    // Marsaglia's polar method: the values tests/data/rng_reference.py prints.
    Embedding<float> a(EmbeddingOptions(2, 3), 0);
    const std::array<double, 6> seed0 = {0.5981026483626094,  1.4634599192204392,
                                         -0.8950525532379914, 0.44089207707377615,
                                         -0.6355084620022571, 0.3249410893711516};
    for (Index i = 0; i < 6; ++i)
      CHECK(a.weight()(i / 3, i % 3) == static_cast<float>(seed0[static_cast<std::size_t>(i)]));

    Embedding<double> b(EmbeddingOptions(3, 2), 42);
    const std::array<double, 6> seed42 = {0.4212160199693843,   0.7459730857986392,
                                          -0.15194171316728597, -1.2503338093819083,
                                          -0.5517252965820747,  0.24281040953345828};
    for (Index i = 0; i < 6; ++i)
      CHECK(b.weight()(i / 2, i % 2) == doctest::Approx(seed42[static_cast<std::size_t>(i)]).epsilon(1e-15));
  }

  SUBCASE("a block of rows drawn alone equals those rows of the whole table") {
    // What a process holding one shard of a sharded table draws.
    const Embedding<float> whole(EmbeddingOptions(37, 5), 9);
    Matrix<float> block(11, 5);
    emb::detail::fill_normal_rows(9, 20, 31, 5, block.data());
    CHECK(bit_identical(block, Matrix<float>(whole.weight().middleRows(20, 11))));
  }

  SUBCASE("the same seed gives the same table, another seed another") {
    Embedding<float> a(EmbeddingOptions(50, 8), 7);
    Embedding<float> b(EmbeddingOptions(50, 8), 7);
    Embedding<float> c(EmbeddingOptions(50, 8), 8);
    CHECK(bit_identical(a.weight(), b.weight()));
    CHECK_FALSE(bit_identical(a.weight(), c.weight()));
    Embedding<float> d(50, 8);  // default seed 0
    CHECK(bit_identical(d.weight(), Embedding<float>(EmbeddingOptions(50, 8), 0).weight()));
  }

  SUBCASE("moments of a large table are those of N(0, 1)") {
    Embedding<double> big(EmbeddingOptions(1000, 200), 3);
    const auto& w = big.weight();
    const double n = static_cast<double>(w.size());
    const double mean = w.sum() / n;
    const double var = (w.array() - mean).square().sum() / n;
    const double within_one =
        static_cast<double>((w.array().abs() < 1.0).count()) / n;  // 0.6827 for N(0, 1)
    CHECK(std::abs(mean) < 0.01);
    CHECK(var == doctest::Approx(1.0).epsilon(0.01));
    CHECK(within_one == doctest::Approx(0.6827).epsilon(0.01));
  }
}

TEST_CASE("Embedding: padding_idx is zeroed at init, wraps when negative, and is range-checked") {
  Embedding<float> table(EmbeddingOptions(5, 4).padding_idx(2), 1);
  CHECK(table.padding_idx() == 2);
  CHECK(table.weight().row(2).isZero(0));
  CHECK_FALSE(table.weight().row(1).isZero(0));

  Embedding<float> wrapped(EmbeddingOptions(5, 4).padding_idx(-1));
  CHECK(wrapped.padding_idx() == 4);
  CHECK(wrapped.weight().row(4).isZero(0));
  CHECK(Embedding<float>(EmbeddingOptions(5, 4).padding_idx(-5)).padding_idx() == 0);

  for (Index bad : {Index{5}, Index{-6}, Index{100}}) {
    const auto msg = message_of<std::invalid_argument>(
        [&] { Embedding<float>(EmbeddingOptions(5, 4).padding_idx(bad)); });
    CHECK(contains(msg, "padding_idx"));
    CHECK(contains(msg, std::to_string(bad)));
    CHECK(contains(msg, "[-5, 5)"));
  }
  // An empty table has no valid padding index at all.
  CHECK_THROWS_AS(Embedding<float>(EmbeddingOptions(0, 4).padding_idx(0)), std::invalid_argument);
}

TEST_CASE("Embedding: invalid options are rejected with the option and its value") {
  const auto check = [](const EmbeddingOptions& opts, const std::string& option,
                        const std::string& value) {
    const auto msg = message_of<std::invalid_argument>([&] { Embedding<float> e(opts); });
    CHECK(contains(msg, option));
    CHECK(contains(msg, value));
  };
  check(EmbeddingOptions(-1, 3), "num_embeddings", "-1");
  check(EmbeddingOptions(3, -2), "embedding_dim", "-2");
  check(EmbeddingOptions(3, 2).max_norm(0.0), "max_norm", "0");
  check(EmbeddingOptions(3, 2).max_norm(-1.0), "max_norm", "-1");
  check(EmbeddingOptions(3, 2).max_norm(std::nan("")), "max_norm", "nan");
  check(EmbeddingOptions(3, 2).norm_type(0.0), "norm_type", "0");
  check(EmbeddingOptions(3, 2).norm_type(-2.0), "norm_type", "-2");
  check(EmbeddingOptions(3, 2).norm_type(std::nan("")), "norm_type", "nan");
  CHECK_NOTHROW(Embedding<float>(EmbeddingOptions(3, 2).norm_type(
      std::numeric_limits<double>::infinity())));
  CHECK_NOTHROW(Embedding<float>(0, 0));

  Matrix<float> w = Matrix<float>::Ones(3, 2);
  CHECK_THROWS_AS(Embedding<float>::from_pretrained(w, FromPretrainedOptions().padding_idx(3)),
                  std::invalid_argument);
  CHECK_THROWS_AS(Embedding<float>::from_pretrained(w, FromPretrainedOptions().max_norm(0.0)),
                  std::invalid_argument);
}

TEST_CASE("Embedding: from_pretrained keeps the given rows, is frozen by default, and moves") {
  // Seed 004: Embedding.from_pretrained(torch.rand(3, 5)) returns its rows unchanged.
  const Matrix<float> given = mat<float>(3, 5, {0.6004f, 0.6201f, 0.1652f, 0.2628f, 0.6705f,
                                                0.5896f, 0.2873f, 0.3486f, 0.9579f, 0.4075f,
                                                0.7819f, 0.7165f, 0.1768f, 0.0748f, 0.9799f});
  auto emb2 = Embedding<float>::from_pretrained(given);
  CHECK(emb2.frozen());
  CHECK(emb2.num_embeddings() == 3);
  CHECK(emb2.embedding_dim() == 5);
  CHECK(bit_identical(emb2.weight(), given));
  CHECK(bit_identical(emb2.forward({0}), Matrix<float>(given.row(0))));

  SUBCASE("the padding row is kept as given, not zeroed") {
    auto padded =
        Embedding<float>::from_pretrained(given, FromPretrainedOptions().padding_idx(-2));
    CHECK(padded.padding_idx() == 1);
    CHECK(bit_identical(padded.weight(), given));
  }
  SUBCASE("freeze(false) gives a trainable table, freeze() toggles") {
    auto trainable =
        Embedding<float>::from_pretrained(given, FromPretrainedOptions().freeze(false));
    CHECK_FALSE(trainable.frozen());
    trainable.freeze();
    CHECK(trainable.frozen());
    trainable.freeze(false);
    CHECK_FALSE(trainable.frozen());
    CHECK_FALSE(Embedding<float>(3, 5).frozen());
  }
  SUBCASE("a moved-in matrix is not copied") {
    Matrix<float> moved = given;
    const float* storage = moved.data();
    auto table = Embedding<float>::from_pretrained(std::move(moved));
    CHECK(table.weight().data() == storage);
  }
}

TEST_CASE("Embedding: forward returns the indexed rows (the tensors PyTorch printed for the classic batch example)") {
  // nn.Embedding(5, 3) weight and the output for x = [[1, 2, 4, 3], [4, 3, 2, 1]], as printed.
  const Matrix<float> w = mat<float>(5, 3, {1.2475f, 0.2461f, -0.1228f,   //
                                            0.5988f, -2.0277f, -1.4456f,  //
                                            1.2011f, 0.2131f, -0.9624f,   //
                                            1.2717f, 1.7339f, 1.2558f,    //
                                            -0.3740f, 2.0479f, 0.6131f});
  Embedding<float> table(5, 3);
  table.set_weight(w);

  Matrix<Index> x(2, 4);
  x << 1, 2, 4, 3, 4, 3, 2, 1;
  const Matrix<float> y = table.forward(x);
  REQUIRE(y.rows() == 8);
  REQUIRE(y.cols() == 3);
  // Printed output, batch-major: y[b][s] is row b*4 + s.
  const Matrix<float> printed = mat<float>(8, 3, {0.5988f, -2.0277f, -1.4456f,  //
                                                  1.2011f, 0.2131f, -0.9624f,   //
                                                  -0.3740f, 2.0479f, 0.6131f,   //
                                                  1.2717f, 1.7339f, 1.2558f,    //
                                                  -0.3740f, 2.0479f, 0.6131f,   //
                                                  1.2717f, 1.7339f, 1.2558f,    //
                                                  1.2011f, 0.2131f, -0.9624f,   //
                                                  0.5988f, -2.0277f, -1.4456f});
  CHECK(bit_identical(y, printed));
  CHECK(bit_identical(table(x), printed));
}

TEST_CASE("Embedding: forward accepts every contiguous index container") {
  Embedding<double> table(EmbeddingOptions(6, 2), 5);
  const auto& w = table.weight();
  Matrix<double> expected(3, 2);
  expected << w.row(4), w.row(0), w.row(4);

  const std::vector<Index> vec = {4, 0, 4};
  const std::array<Index, 3> arr = {4, 0, 4};
  emb::Vector<Index> col(3);
  col << 4, 0, 4;
  Eigen::Matrix<Index, 1, Eigen::Dynamic> rowvec(3);
  rowvec << 4, 0, 4;
  Eigen::Array<Index, Eigen::Dynamic, 1> array(3);
  array << 4, 0, 4;
  const Index raw[] = {4, 0, 4};
  const Eigen::Map<const emb::Vector<Index>> map(raw, 3);

  CHECK(bit_identical(table.forward(vec), expected));
  CHECK(bit_identical(table.forward({4, 0, 4}), expected));
  CHECK(bit_identical(table.forward(arr), expected));
  CHECK(bit_identical(table.forward(col), expected));
  CHECK(bit_identical(table.forward(rowvec), expected));
  CHECK(bit_identical(table.forward(array), expected));
  CHECK(bit_identical(table.forward(map), expected));
  CHECK(bit_identical(table.forward(emb::IndexSpan(raw, 3)), expected));

  SUBCASE("a column-major index matrix is read in its storage order") {
    Eigen::Matrix<Index, 2, 2> cm;  // storage order: (0,0), (1,0), (0,1), (1,1)
    cm << 1, 3, 2, 5;
    Matrix<double> e(4, 2);
    e << w.row(1), w.row(2), w.row(3), w.row(5);
    CHECK(bit_identical(table.forward(cm), e));
  }
  SUBCASE("empty input gives a (0, dim) result") {
    const Matrix<double> none = table.forward(std::vector<Index>{});
    CHECK(none.rows() == 0);
    CHECK(none.cols() == 2);
    CHECK(table.forward(emb::IndexSpan{}).rows() == 0);
  }
}

TEST_CASE("Embedding: forward into a caller-owned buffer, including a block of a wider one") {
  Embedding<float> table(EmbeddingOptions(4, 3), 9);
  Matrix<float> out(2, 3);
  table.forward({3, 1}, out);
  CHECK(bit_identical(out, table.forward({3, 1})));

  Matrix<float> wide = Matrix<float>::Constant(2, 5, -7.0f);
  table.forward({0, 2}, wide.middleCols(1, 3));
  CHECK(bit_identical(Matrix<float>(wide.middleCols(1, 3)), table.forward({0, 2})));
  CHECK((wide.col(0).array() == -7.0f).all());
  CHECK((wide.col(4).array() == -7.0f).all());

  Matrix<float> wrong(3, 3);
  const auto msg = message_of<std::invalid_argument>([&] { table.forward({0, 1}, wrong); });
  CHECK(contains(msg, "(3, 3)"));
  CHECK(contains(msg, "(2, 3)"));
}

TEST_CASE("Embedding: an index outside [0, N) throws out_of_range naming value, position, range") {
  // Seed 004: a 3-row table ({优, 良, 差}) looked up at id 3.
  Embedding<float> table(3, 5);
  const Matrix<float> before = table.weight();

  auto msg = message_of<std::out_of_range>([&] { table.forward({0, 1, 3}); });
  CHECK(contains(msg, "index 3"));
  CHECK(contains(msg, "position 2"));
  CHECK(contains(msg, "[0, 3)"));

  msg = message_of<std::out_of_range>([&] { table.forward({-1}); });
  CHECK(contains(msg, "index -1"));
  CHECK(contains(msg, "position 0"));

  // No wrap-around for negative indices, unlike padding_idx.
  CHECK_THROWS_AS(table.forward({-3}), std::out_of_range);
  CHECK_THROWS_AS(table.forward({std::numeric_limits<Index>::min()}), std::out_of_range);
  CHECK_THROWS_AS(table.forward({std::numeric_limits<Index>::max()}), std::out_of_range);
  CHECK_THROWS_AS(Embedding<float>(0, 2).forward({0}), std::out_of_range);

  Matrix<float> out = Matrix<float>::Constant(2, 5, 42.0f);
  CHECK_THROWS_AS(table.forward({1, 3}, out), std::out_of_range);
  CHECK((out.array() == 42.0f).all());  // nothing written before the check
  CHECK(bit_identical(table.weight(), before));
}

TEST_CASE("Embedding: max_norm rescales only the looked-up rows whose norm exceeds it") {
  const Matrix<double> w = mat<double>(4, 2, {3.0, 4.0,     // 2-norm 5
                                              0.3, 0.4,     // 2-norm 0.5
                                              6.0, -8.0,    // 2-norm 10
                                              -1.0, 0.0});  // 2-norm 1, exactly max_norm
  auto table = Embedding<double>::from_pretrained(w, FromPretrainedOptions().max_norm(1.0));
  const Matrix<double> y = table.forward({0, 1, 0, 3});

  // Hand-worked: scale = max_norm / (norm + 1e-7).
  const double s0 = 1.0 / (5.0 + 1e-7);
  CHECK(table.weight()(0, 0) == doctest::Approx(3.0 * s0).epsilon(1e-15));
  CHECK(table.weight()(0, 1) == doctest::Approx(4.0 * s0).epsilon(1e-15));
  CHECK(table.weight().row(1) == w.row(1));  // under the limit
  CHECK(table.weight().row(2) == w.row(2));  // over the limit but not looked up
  CHECK(table.weight().row(3) == w.row(3));  // norm == max_norm: strict comparison
  // The output is taken after the rewrite, and duplicates see the same row.
  CHECK(y.row(0) == table.weight().row(0));
  CHECK(y.row(2) == table.weight().row(0));
  CHECK(y.row(1) == w.row(1));

  SUBCASE("a duplicated index is rescaled once") {
    auto t = Embedding<double>::from_pretrained(w, FromPretrainedOptions().max_norm(2.0));
    t.forward({2, 2, 2});
    const double s = 2.0 / (10.0 + 1e-7);
    CHECK(t.weight()(2, 0) == doctest::Approx(6.0 * s).epsilon(1e-15));
    CHECK(t.weight()(2, 1) == doctest::Approx(-8.0 * s).epsilon(1e-15));
  }
  SUBCASE("float tables take the double scale rounded to float, as PyTorch does") {
    auto f = Embedding<float>::from_pretrained(w.cast<float>(), FromPretrainedOptions().max_norm(1.0));
    f.forward({0});
    const auto scale = static_cast<float>(1.0 / (5.0 + 1e-7));
    CHECK(f.weight()(0, 0) == 3.0f * scale);
    CHECK(f.weight()(0, 1) == 4.0f * scale);
  }
  SUBCASE("the padding row is not excluded") {
    auto p = Embedding<double>::from_pretrained(
        w, FromPretrainedOptions().max_norm(1.0).padding_idx(2));
    p.forward({2});
    CHECK(p.weight().row(2).norm() == doctest::Approx(1.0).epsilon(1e-6));
  }
  SUBCASE("every norm_type: 1, 3 and infinity") {
    const Matrix<double> v = mat<double>(1, 3, {1.0, -2.0, 2.0});
    auto l1 = Embedding<double>::from_pretrained(v, FromPretrainedOptions().max_norm(1.0).norm_type(1.0));
    l1.forward({0});  // |1| + |-2| + |2| = 5
    CHECK(l1.weight()(0, 1) == doctest::Approx(-2.0 / (5.0 + 1e-7)).epsilon(1e-15));

    auto l3 = Embedding<double>::from_pretrained(v, FromPretrainedOptions().max_norm(1.0).norm_type(3.0));
    l3.forward({0});  // (1 + 8 + 8)^(1/3)
    const double n3 = std::cbrt(17.0);
    CHECK(l3.weight()(0, 2) == doctest::Approx(2.0 / (n3 + 1e-7)).epsilon(1e-14));

    auto linf = Embedding<double>::from_pretrained(
        v, FromPretrainedOptions().max_norm(1.0).norm_type(std::numeric_limits<double>::infinity()));
    linf.forward({0});  // max |x| = 2
    CHECK(linf.weight()(0, 0) == doctest::Approx(1.0 / (2.0 + 1e-7)).epsilon(1e-15));
    CHECK(linf.weight().cwiseAbs().maxCoeff() == doctest::Approx(1.0).epsilon(1e-6));
  }
  SUBCASE("a frozen table is still renormalised by forward, as in PyTorch") {
    auto frozen = Embedding<double>::from_pretrained(w, FromPretrainedOptions().max_norm(1.0));
    REQUIRE(frozen.frozen());
    frozen.forward({2});
    CHECK(frozen.weight().row(2).norm() == doctest::Approx(1.0).epsilon(1e-6));
  }
  SUBCASE("forward into a buffer renormalises too") {
    auto t = Embedding<double>::from_pretrained(w, FromPretrainedOptions().max_norm(1.0));
    Matrix<double> out(1, 2);
    t.forward({2}, out);
    CHECK(out.row(0).norm() == doctest::Approx(1.0).epsilon(1e-6));
  }
}

TEST_CASE("Embedding: a failing max_norm forward leaves the table bit-identical") {
  Embedding<float> table(EmbeddingOptions(10, 4).max_norm(0.5), 11);
  const Matrix<float> before = table.weight();
  // Rows 1 and 2 would be rescaled; the bad index comes last.
  CHECK_THROWS_AS(table.forward({1, 2, 10}), std::out_of_range);
  CHECK(bit_identical(table.weight(), before));
  Matrix<float> wrong(2, 4);
  CHECK_THROWS_AS(table.forward({1, 2, 3}, wrong), std::invalid_argument);
  CHECK(bit_identical(table.weight(), before));
}

TEST_CASE("Embedding: backward_dense accumulates rows, skips padding, scales by frequency") {
  const Matrix<double> g = mat<double>(5, 2, {1.0, 2.0,     // index 0
                                              10.0, 20.0,   // index 2
                                              3.0, 4.0,     // index 0
                                              7.0, 7.0,     // index 1 (padding)
                                              0.5, 0.25});  // index 0
  const std::vector<Index> idx = {0, 2, 0, 1, 0};

  SUBCASE("plain sum") {
    Embedding<double> table(EmbeddingOptions(4, 2).padding_idx(1));
    const Matrix<double> grad = table.backward_dense(idx, g);
    const Matrix<double> expected = mat<double>(4, 2, {4.5, 6.25, 0.0, 0.0, 10.0, 20.0, 0.0, 0.0});
    CHECK(grad == expected);
  }
  SUBCASE("scale_grad_by_freq divides each row's sum by its count in the call") {
    Embedding<double> table(EmbeddingOptions(4, 2).padding_idx(1).scale_grad_by_freq(true));
    const Matrix<double> grad = table.backward_dense(idx, g);
    CHECK(grad(0, 0) == doctest::Approx(4.5 / 3.0));
    CHECK(grad(0, 1) == doctest::Approx(6.25 / 3.0));
    CHECK(grad(2, 0) == 10.0);
    CHECK(grad.row(1).isZero(0));
    CHECK(grad.row(3).isZero(0));
  }
  SUBCASE("without padding the padding-free row gets its gradient") {
    Embedding<double> table(4, 2);
    const Matrix<double> grad = table.backward_dense(idx, g);
    CHECK(grad(1, 0) == 7.0);
    CHECK(grad(1, 1) == 7.0);
  }
}

TEST_CASE("Embedding: sparse backward equals the dense one on the distinct non-padding rows") {
  std::mt19937_64 gen(123);
  std::uniform_int_distribution<Index> pick(0, 29);
  std::normal_distribution<float> normal;
  for (bool scale : {false, true}) {
    for (int pad : {-1, 7}) {
      CAPTURE(scale);
      CAPTURE(pad);
      auto opts = EmbeddingOptions(30, 5).scale_grad_by_freq(scale);
      if (pad >= 0) opts.padding_idx(pad);
      Embedding<float> table(opts, 2);
      std::vector<Index> idx(200);
      for (auto& i : idx) i = pick(gen);
      idx[3] = 7;
      idx[50] = 7;
      Matrix<float> g(200, 5);
      for (Index i = 0; i < g.size(); ++i) g.data()[i] = normal(gen);

      const emb::SparseGrad<float> sparse = table.backward(idx, g);
      const Matrix<float> dense = table.backward_dense(idx, g);
      CHECK(sparse.num_embeddings == 30);
      REQUIRE(sparse.values.rows() == static_cast<Index>(sparse.rows.size()));
      CHECK(sparse.values.cols() == 5);
      CHECK(std::is_sorted(sparse.rows.begin(), sparse.rows.end()));
      CHECK(std::adjacent_find(sparse.rows.begin(), sparse.rows.end()) == sparse.rows.end());
      const bool has_pad =
          std::find(sparse.rows.begin(), sparse.rows.end(), 7) != sparse.rows.end();
      CHECK(has_pad == (pad < 0));
      // Every distinct non-padding index appears, and nothing else.
      std::vector<Index> distinct(idx);
      std::sort(distinct.begin(), distinct.end());
      distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
      if (pad >= 0) distinct.erase(std::find(distinct.begin(), distinct.end(), pad));
      CHECK(sparse.rows == distinct);
      CHECK(bit_identical(sparse.to_dense(), dense));
    }
  }
}

TEST_CASE("Embedding: sparse backward hand-worked, with frequency scaling PyTorch lacks") {
  Embedding<double> table(EmbeddingOptions(100, 1).padding_idx(0).scale_grad_by_freq(true));
  const Matrix<double> g = mat<double>(5, 1, {1.0, 2.0, 4.0, 8.0, 16.0});
  const auto grad = table.backward({42, 0, 42, 7, 42}, g);
  CHECK(grad.rows == std::vector<Index>{7, 42});
  CHECK(grad.values(0, 0) == 8.0);
  CHECK(grad.values(1, 0) == doctest::Approx((1.0 + 4.0 + 16.0) / 3.0));
  const auto empty = table.backward(std::vector<Index>{}, Matrix<double>(0, 1));
  CHECK(empty.rows.empty());
  CHECK(empty.values.rows() == 0);
  CHECK(empty.to_dense().rows() == 100);
}

TEST_CASE("Embedding: both backwards agree with finite differences of <forward(idx), G>") {
  // L(W) = sum_ij forward(idx)_ij * G_ij; dL/dW_kj is estimated by central differences.
  const std::vector<Index> idx = {3, 1, 3, 0, 4, 3};
  Embedding<double> table(EmbeddingOptions(6, 3).padding_idx(4), 21);
  std::mt19937_64 gen(5);
  std::normal_distribution<double> normal;
  Matrix<double> G(6, 3);
  for (Index i = 0; i < G.size(); ++i) G.data()[i] = normal(gen);

  const auto loss = [&](const Matrix<double>& w) {
    Embedding<double> probe = Embedding<double>::from_pretrained(w);
    return (probe.forward(idx).array() * G.array()).sum();
  };
  const Matrix<double> dense = table.backward_dense(idx, G);
  const Matrix<double> sparse = table.backward(idx, G).to_dense();
  const double h = 1e-6;
  for (Index k = 0; k < 6; ++k) {
    for (Index j = 0; j < 3; ++j) {
      Matrix<double> plus = table.weight();
      Matrix<double> minus = table.weight();
      plus(k, j) += h;
      minus(k, j) -= h;
      const double numeric = (loss(plus) - loss(minus)) / (2 * h);
      CAPTURE(k);
      CAPTURE(j);
      if (k == 4) {
        CHECK(numeric != doctest::Approx(0.0));  // the function does depend on it...
        CHECK(dense(k, j) == 0.0);               // ...but padding gets no gradient
        CHECK(sparse(k, j) == 0.0);
      } else {
        CHECK(dense(k, j) == doctest::Approx(numeric).epsilon(1e-7));
        CHECK(sparse(k, j) == doctest::Approx(numeric).epsilon(1e-7));
      }
    }
  }
}

TEST_CASE("Embedding: backward rejects a wrong grad shape and bad indices, naming them") {
  Embedding<float> table(5, 3);
  const Matrix<float> g(2, 4);
  auto msg = message_of<std::invalid_argument>([&] { table.backward({0, 1}, g); });
  CHECK(contains(msg, "grad_output"));
  CHECK(contains(msg, "(2, 4)"));
  CHECK(contains(msg, "(2, 3)"));
  CHECK_THROWS_AS(table.backward_dense({0, 1, 2}, Matrix<float>(2, 3)), std::invalid_argument);
  msg = message_of<std::out_of_range>([&] { table.backward_dense({0, 5}, Matrix<float>::Zero(2, 3)); });
  CHECK(contains(msg, "index 5"));
  CHECK(contains(msg, "position 1"));
  CHECK_THROWS_AS(table.backward({-1}, Matrix<float>::Zero(1, 3)), std::out_of_range);
}

TEST_CASE("Embedding: set_weight takes a same-shaped matrix, otherwise throws and keeps the old") {
  Embedding<float> table(3, 2);
  const Matrix<float> before = table.weight();
  const auto msg =
      message_of<std::invalid_argument>([&] { table.set_weight(Matrix<float>::Ones(2, 3)); });
  CHECK(contains(msg, "(2, 3)"));
  CHECK(contains(msg, "(3, 2)"));
  CHECK(bit_identical(table.weight(), before));
  table.set_weight(Matrix<float>::Ones(3, 2));
  CHECK((table.weight().array() == 1.0f).all());
  table.mutable_weight()(1, 1) = 5.0f;
  CHECK(table.weight()(1, 1) == 5.0f);
}

TEST_CASE("Embedding: the classic hello/<PAD>/world example gives zero rows for <PAD>") {
  // word_to_id = {hello: 0, <PAD>: 1, world: 2}; "hello world <PAD> <PAD>".
  Embedding<float> embeds(EmbeddingOptions(3, 4).padding_idx(1));
  const Matrix<float> y = embeds.forward({0, 2, 1, 1});
  CHECK(y.rows() == 4);
  CHECK(y.cols() == 4);
  CHECK_FALSE(y.row(0).isZero(0));
  CHECK_FALSE(y.row(1).isZero(0));
  CHECK(y.row(2).isZero(0));
  CHECK(y.row(3).isZero(0));
}
