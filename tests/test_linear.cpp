// Linear<T>: torch.nn.Linear's layout, initialisation range, forward and gradients.
//
// Expected values come from outside the code under test: hand-worked products, an independent
// (Python) implementation of the seeded generator, and central finite differences.
#include <emb/linear.hpp>

#include <doctest/doctest.h>

#include "test_util.hpp"

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <stdexcept>
#include <string>

using emb::Index;
using emb::Linear;
using emb::LinearGrad;
using emb::Matrix;
using emb::Vector;

using emb_test::mat;
using emb_test::vec;
using emb_test::message_of;
using emb_test::contains;
using emb_test::bit_identical;

namespace {

// A deterministic test matrix with entries in [-1, 1) that are not round numbers.
Matrix<double> wobbly(Index rows, Index cols, double phase) {
  Matrix<double> m(rows, cols);
  for (Index i = 0; i < rows; ++i)
    for (Index j = 0; j < cols; ++j)
      m(i, j) = std::sin(phase + 1.7 * static_cast<double>(i) + 0.61 * static_cast<double>(j * j));
  return m;
}

}  // namespace

TEST_CASE("Linear: weight is (out, in) and the bias (out), as in PyTorch") {
  const Linear<float> lin(3, 5);
  CHECK(lin.in_features() == 3);
  CHECK(lin.out_features() == 5);
  CHECK(lin.has_bias());
  CHECK(lin.weight().rows() == 5);
  CHECK(lin.weight().cols() == 3);
  CHECK(lin.bias().size() == 5);

  const Linear<double> empty(0, 0);
  CHECK(empty.weight().size() == 0);
  CHECK(empty.bias().size() == 0);
}

TEST_CASE("Linear: init is U(-1/sqrt(in), 1/sqrt(in)), weight first then bias, from one seed") {
  SUBCASE("the first values for seeds 0 and 42 match an independent implementation") {
    // xoshiro256** seeded by splitmix64, 53-bit uniforms mapped to [-b, b), computed in Python.
    const Linear<double> a(3, 3, true, 0);  // b = 1/sqrt(3); 9 weights, then 3 biases
    CHECK(a.weight()(0, 0) == doctest::Approx(0.11692843994575253).epsilon(1e-15));
    CHECK(a.weight()(0, 1) == doctest::Approx(0.2861048780607284).epsilon(1e-15));
    CHECK(a.weight()(0, 2) == doctest::Approx(-0.4583930319713526).epsilon(1e-15));
    CHECK(a.weight()(1, 0) == doctest::Approx(-0.09631463673681806).epsilon(1e-15));

    const Linear<float> b(2, 2, true, 42);  // b = 1/sqrt(2); 4 weights, then 2 biases
    CHECK(b.weight()(0, 0) == static_cast<float>(-0.5885066301327597));
    CHECK(b.weight()(0, 1) == static_cast<float>(-0.17114777082784638));
    CHECK(b.weight()(1, 0) == static_cast<float>(0.2546198336919083));
    CHECK(b.weight()(1, 1) == static_cast<float>(0.6006065231233384));
    CHECK(b.bias()(0) == static_cast<float>(0.6955157656059248));
    CHECK(b.bias()(1) == static_cast<float>(0.38146920325330647));
  }

  SUBCASE("every weight and bias lies within the bound, and the range is filled") {
    for (Index in : {Index{1}, Index{3}, Index{64}}) {
      const Linear<float> lin(in, 200, true, 5);
      const auto bound = static_cast<float>(1.0 / std::sqrt(static_cast<double>(in)));
      CHECK(lin.weight().cwiseAbs().maxCoeff() <= bound);
      CHECK(lin.bias().cwiseAbs().maxCoeff() <= bound);
      // 200*in draws of U(-b, b): the extremes come close to the bound and the mean is ~0.
      CHECK(lin.weight().maxCoeff() > 0.9f * bound);
      CHECK(lin.weight().minCoeff() < -0.9f * bound);
      CHECK(std::abs(lin.weight().mean()) < 0.1f * bound);
    }
  }

  SUBCASE("the same seed gives the same layer, another seed another") {
    const Linear<float> a(4, 6, true, 7);
    const Linear<float> b(4, 6, true, 7);
    const Linear<float> c(4, 6, true, 8);
    CHECK(bit_identical(a.weight(), b.weight()));
    CHECK(bit_identical(a.bias(), b.bias()));
    CHECK_FALSE(bit_identical(a.weight(), c.weight()));
    CHECK(bit_identical(Linear<float>(4, 6).weight(), Linear<float>(4, 6, true, 0).weight()));
  }

  SUBCASE("the weight is drawn first, so dropping the bias leaves it unchanged") {
    CHECK(bit_identical(Linear<float>(4, 6, true, 3).weight(),
                        Linear<float>(4, 6, false, 3).weight()));
  }

  SUBCASE("no inputs: the bound is zero, as in PyTorch") {
    const Linear<float> lin(0, 3);
    CHECK(lin.weight().rows() == 3);
    CHECK(lin.weight().cols() == 0);
    CHECK(lin.bias().isZero(0));
    CHECK(lin.forward(Matrix<float>(2, 0)).isZero(0));
  }
}

TEST_CASE("Linear: forward is x W^T + b (hand-worked)") {
  Linear<double> lin(3, 2);
  lin.set_weight(mat<double>(2, 3, {1, 2, 3,  //
                                    4, 5, 6}));
  lin.set_bias(vec<double>({0.5, -1}));
  const Matrix<double> x = mat<double>(2, 3, {1, 0, -1,  //
                                              2, 1, 0});
  // Row 0: [1 - 3 + 0.5, 4 - 6 - 1]; row 1: [2 + 2 + 0.5, 8 + 5 - 1].
  const Matrix<double> expected = mat<double>(2, 2, {-1.5, -3,  //
                                                     4.5, 12});
  CHECK(lin.forward(x) == expected);
  CHECK(lin(x) == expected);

  SUBCASE("blocks and rows of larger matrices are accepted as input") {
    Matrix<double> wide = Matrix<double>::Zero(2, 5);
    wide.middleCols(1, 3) = x;
    CHECK(lin.forward(wide.middleCols(1, 3)) == expected);
    CHECK(lin.forward(x.row(1)) == expected.row(1));
  }
  SUBCASE("empty input gives a (0, out) result") {
    const Matrix<double> none = lin.forward(Matrix<double>(0, 3));
    CHECK(none.rows() == 0);
    CHECK(none.cols() == 2);
  }
}

TEST_CASE("Linear: backward gives g W, g^T x and the column sums of g (hand-worked)") {
  Linear<double> lin(3, 2);
  lin.set_weight(mat<double>(2, 3, {1, 2, 3,  //
                                    4, 5, 6}));
  lin.set_bias(vec<double>({0.5, -1}));
  const Matrix<double> x = mat<double>(2, 3, {1, 0, -1,  //
                                              2, 1, 0});
  const Matrix<double> g = mat<double>(2, 2, {1, 0,  //
                                              0, 2});
  const LinearGrad<double> grad = lin.backward(x, g);
  CHECK(grad.input == mat<double>(2, 3, {1, 2, 3,  //
                                         8, 10, 12}));
  CHECK(grad.weight == mat<double>(2, 3, {1, 0, -1,  //
                                          4, 2, 0}));
  CHECK(grad.bias == vec<double>({1, 2}));

  SUBCASE("with no rows the gradients are zero, of the right shapes") {
    const auto none = lin.backward(Matrix<double>(0, 3), Matrix<double>(0, 2));
    CHECK(none.input.rows() == 0);
    CHECK(none.weight.rows() == 2);
    CHECK(none.weight.cols() == 3);
    CHECK(none.weight.isZero(0));
    CHECK(none.bias.size() == 2);
    CHECK(none.bias.isZero(0));
  }
}

TEST_CASE("Linear: backward matches central finite differences of sum(forward(x) * r)") {
  // loss(W, b, x) = sum_ij forward(x)_ij * r_ij, so d loss / d output = r.
  Linear<double> lin(4, 3, true, 11);
  const Matrix<double> x = wobbly(5, 4, 0.3);
  const Matrix<double> r = wobbly(5, 3, 2.1);
  const auto loss = [&](const Linear<double>& l, const Matrix<double>& in) {
    return l.forward(in).cwiseProduct(r).sum();
  };
  const LinearGrad<double> grad = lin.backward(x, r);
  const double h = 1e-6;

  for (Index i = 0; i < 3; ++i) {
    for (Index j = 0; j < 4; ++j) {
      Linear<double> plus = lin;
      Linear<double> minus = lin;
      plus.mutable_weight()(i, j) += h;
      minus.mutable_weight()(i, j) -= h;
      const double numeric = (loss(plus, x) - loss(minus, x)) / (2 * h);
      CHECK(grad.weight(i, j) == doctest::Approx(numeric).epsilon(1e-7));
    }
    Linear<double> plus = lin;
    Linear<double> minus = lin;
    plus.mutable_bias()(i) += h;
    minus.mutable_bias()(i) -= h;
    const double numeric = (loss(plus, x) - loss(minus, x)) / (2 * h);
    CHECK(grad.bias(i) == doctest::Approx(numeric).epsilon(1e-7));
  }
  for (Index i = 0; i < 5; ++i) {
    for (Index j = 0; j < 4; ++j) {
      Matrix<double> xp = x;
      Matrix<double> xm = x;
      xp(i, j) += h;
      xm(i, j) -= h;
      const double numeric = (loss(lin, xp) - loss(lin, xm)) / (2 * h);
      CHECK(grad.input(i, j) == doctest::Approx(numeric).epsilon(1e-7));
    }
  }
}

TEST_CASE("Linear: without a bias, bias() and the bias gradient are empty") {
  Linear<float> lin(3, 2, false, 4);
  CHECK_FALSE(lin.has_bias());
  CHECK(lin.bias().size() == 0);

  const Matrix<float> x = mat<float>(1, 3, {1.0f, -2.0f, 0.5f});
  const Matrix<float> y = lin.forward(x);
  const auto& w = lin.weight();
  for (Index o = 0; o < 2; ++o) {
    const float manual = w(o, 0) * 1.0f + w(o, 1) * -2.0f + w(o, 2) * 0.5f;
    CHECK(y(0, o) == doctest::Approx(manual).epsilon(1e-6));
  }
  const auto grad = lin.backward(x, Matrix<float>::Ones(1, 2));
  CHECK(grad.bias.size() == 0);
  CHECK(grad.weight.rows() == 2);

  CHECK_NOTHROW(lin.set_bias(Vector<float>()));
  const auto msg = message_of<std::invalid_argument>([&] { lin.set_bias(Vector<float>::Ones(2)); });
  CHECK(contains(msg, "(2)"));
  CHECK(contains(msg, "expected (0)"));
  CHECK(contains(msg, "bias = false"));
  CHECK(lin.bias().size() == 0);
}

TEST_CASE("Linear: set_weight and set_bias take the given values and check their shapes") {
  Linear<float> lin(3, 5, true, 1);
  const Matrix<float> w_before = lin.weight();
  const Vector<float> b_before = lin.bias();

  SUBCASE("a weight of the wrong shape names both shapes and changes nothing") {
    auto msg =
        message_of<std::invalid_argument>([&] { lin.set_weight(Matrix<float>::Zero(3, 5)); });
    CHECK(contains(msg, "weight"));
    CHECK(contains(msg, "(3, 5)"));
    CHECK(contains(msg, "expected (5, 3)"));
    msg = message_of<std::invalid_argument>([&] { lin.set_weight(Matrix<float>::Zero(5, 4)); });
    CHECK(contains(msg, "(5, 4)"));
    CHECK(bit_identical(lin.weight(), w_before));
  }
  SUBCASE("a bias of the wrong length names both lengths and changes nothing") {
    const auto msg =
        message_of<std::invalid_argument>([&] { lin.set_bias(Vector<float>::Zero(3)); });
    CHECK(contains(msg, "bias has shape (3)"));
    CHECK(contains(msg, "expected (5)"));
    CHECK_THROWS_AS(lin.set_bias(Vector<float>()), std::invalid_argument);
    CHECK(bit_identical(lin.bias(), b_before));
  }
  SUBCASE("values of the right shape are stored as given") {
    const Matrix<float> w = Matrix<float>::Constant(5, 3, 0.25f);
    lin.set_weight(w);
    lin.set_bias(Vector<float>::Constant(5, -1.0f));
    CHECK(bit_identical(lin.weight(), w));
    CHECK((lin.bias().array() == -1.0f).all());
  }
}

TEST_CASE("Linear: from_pretrained takes the parameters as they are, without a bias unless given") {
  const Matrix<float> w = mat<float>(2, 3, {1, 2, 3, -1, 0, 4});
  const Matrix<float> x = mat<float>(1, 3, {1, 0.5f, 2});

  const auto plain = Linear<float>::from_pretrained(w);
  CHECK(plain.in_features() == 3);
  CHECK(plain.out_features() == 2);
  CHECK_FALSE(plain.has_bias());
  CHECK(plain.bias().size() == 0);
  CHECK(bit_identical(plain.weight(), w));
  CHECK(bit_identical(plain(x), mat<float>(1, 2, {8, 7})));  // 1 + 1 + 6, -1 + 0 + 8

  const auto biased = Linear<float>::from_pretrained(w, vec<float>({0.5f, -2}));
  CHECK(biased.has_bias());
  CHECK(bit_identical(biased(x), mat<float>(1, 2, {8.5f, 5})));

  const Matrix<float> big = Matrix<float>::Constant(4, 2, 1.0f);
  const float* storage = big.data();
  Matrix<float> moved = big;
  const float* moved_storage = moved.data();
  const auto taken = Linear<float>::from_pretrained(std::move(moved));
  CHECK(taken.weight().data() == moved_storage);  // moved in, not copied
  CHECK(storage != moved_storage);

  const auto msg = message_of<std::invalid_argument>(
      [&] { (void)Linear<float>::from_pretrained(w, vec<float>({1, 2, 3})); });
  CHECK(contains(msg, "bias has shape (3), expected (2)"));
}

TEST_CASE("Linear: inputs and gradients of the wrong shape throw invalid_argument") {
  const Linear<float> lin(3, 2, true, 2);
  SUBCASE("forward with the wrong input width") {
    const auto msg =
        message_of<std::invalid_argument>([&] { lin.forward(Matrix<float>::Zero(4, 5)); });
    CHECK(contains(msg, "emb::Linear::forward"));
    CHECK(contains(msg, "input has shape (4, 5)"));
    CHECK(contains(msg, "expected (4, 3)"));
  }
  SUBCASE("backward with the wrong input width") {
    const auto msg = message_of<std::invalid_argument>(
        [&] { lin.backward(Matrix<float>::Zero(4, 2), Matrix<float>::Zero(4, 2)); });
    CHECK(contains(msg, "input has shape (4, 2)"));
    CHECK(contains(msg, "expected (4, 3)"));
  }
  SUBCASE("backward with a gradient of the wrong shape") {
    auto msg = message_of<std::invalid_argument>(
        [&] { lin.backward(Matrix<float>::Zero(4, 3), Matrix<float>::Zero(4, 3)); });
    CHECK(contains(msg, "grad_output has shape (4, 3)"));
    CHECK(contains(msg, "expected (4, 2)"));
    msg = message_of<std::invalid_argument>(
        [&] { lin.backward(Matrix<float>::Zero(4, 3), Matrix<float>::Zero(3, 2)); });
    CHECK(contains(msg, "grad_output has shape (3, 2)"));
    CHECK(contains(msg, "expected (4, 2)"));
  }
  SUBCASE("negative sizes name the option and its value") {
    auto msg = message_of<std::invalid_argument>([] { Linear<float>(-1, 2); });
    CHECK(contains(msg, "in_features"));
    CHECK(contains(msg, "-1"));
    msg = message_of<std::invalid_argument>([] { Linear<float>(2, -3); });
    CHECK(contains(msg, "out_features"));
    CHECK(contains(msg, "-3"));
  }
}
