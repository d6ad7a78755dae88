// emb::optim: SGD, Adagrad and SparseAdam steps on row-sparse gradients.
//
// Expected values are worked by hand (small tables, a few steps) or come from the dense update
// formulas of torch.optim written out here independently, applied to grad.to_dense().
#include <emb/optim.hpp>

#include <emb/embedding.hpp>
#include <emb/embedding_bag.hpp>

#include <doctest/doctest.h>

#include "test_util.hpp"

#include <algorithm>
#include <cmath>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

using emb::Embedding;
using emb::EmbeddingBag;
using emb::EmbeddingOptions;
using emb::Index;
using emb::Matrix;
using emb::SparseGrad;
namespace optim = emb::optim;

using emb_test::message_of;
using emb_test::contains;
using emb_test::bit_identical;

namespace {

// A one-column gradient: rows and their values.
template <class T>
SparseGrad<T> grad1(Index n, std::vector<Index> rows, std::vector<T> values) {
  SparseGrad<T> g;
  g.num_embeddings = n;
  g.rows = std::move(rows);
  g.values.resize(static_cast<Index>(values.size()), 1);
  for (std::size_t i = 0; i < values.size(); ++i) g.values(static_cast<Index>(i), 0) = values[i];
  return g;
}

template <class T>
Embedding<T> zeros(Index n, Index dim) {
  return Embedding<T>::from_pretrained(Matrix<T>::Zero(n, dim),
                                       emb::FromPretrainedOptions().freeze(false));
}

// Random coalesced gradients from Embedding::backward on random ids.
template <class T>
std::vector<SparseGrad<T>> random_grads(const Embedding<T>& table, int count, unsigned seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal;
  std::vector<SparseGrad<T>> grads;
  for (int c = 0; c < count; ++c) {
    std::vector<Index> ids(7);
    for (auto& id : ids)
      id = static_cast<Index>(gen() % static_cast<std::uint64_t>(table.num_embeddings()));
    Matrix<T> g(7, table.embedding_dim());
    for (Index i = 0; i < g.size(); ++i) g.data()[i] = static_cast<T>(normal(gen));
    grads.push_back(table.backward(ids, g));
  }
  return grads;
}

}  // namespace

TEST_CASE("SGD: w -= lr * g on the gradient's rows only") {
  auto table = zeros<double>(4, 1);
  table.mutable_weight()(2, 0) = 7.0;
  optim::SGD<double> sgd(0.5);
  sgd.step(table, grad1<double>(4, {0, 3}, {2.0, -4.0}));
  sgd.step(table, grad1<double>(4, {0}, {1.0}));
  CHECK(table.weight()(0, 0) == -1.5);
  CHECK(table.weight()(1, 0) == 0.0);
  CHECK(table.weight()(2, 0) == 7.0);
  CHECK(table.weight()(3, 0) == 2.0);
  CHECK(sgd.steps(table) == 2);
}

TEST_CASE("SGD with momentum: the dense formula, worked by hand over three steps") {
  // g: step 1 row 0 = 1; step 2 row 1 = 2; step 3 row 0 = 1. lr = 1, momentum 0.9.
  const auto run = [](optim::SGD<double> sgd) {
    auto table = zeros<double>(3, 1);
    sgd.step(table, grad1<double>(3, {0}, {1.0}));
    sgd.step(table, grad1<double>(3, {1}, {2.0}));
    sgd.step(table, grad1<double>(3, {0}, {1.0}));
    return Matrix<double>(table.weight());
  };
  SUBCASE("plain: buf0 = 1, 0.9, 1.81; buf1 = 2, 1.8") {
    const auto w = run(optim::SGD<double>(1.0, 0.9));
    CHECK(w(0, 0) == doctest::Approx(-(1 + 0.9 + 1.81)).epsilon(1e-15));
    CHECK(w(1, 0) == doctest::Approx(-(2 + 1.8)).epsilon(1e-15));
    CHECK(w(2, 0) == 0.0);
  }
  SUBCASE("dampening 0.5 (not applied at the first step): buf0 = 1, 0.9, 1.31; buf1 = 1, 0.9") {
    const auto w = run(optim::SGD<double>(1.0, 0.9, 0.5));
    CHECK(w(0, 0) == doctest::Approx(-(1 + 0.9 + 1.31)).epsilon(1e-15));
    CHECK(w(1, 0) == doctest::Approx(-(1 + 0.9)).epsilon(1e-15));
  }
  SUBCASE("nesterov: update = g + 0.9 * buf") {
    const auto w = run(optim::SGD<double>(1.0, 0.9, 0.0, true));
    CHECK(w(0, 0) == doctest::Approx(-(1.9 + 0.81 + 2.629)).epsilon(1e-15));
    CHECK(w(1, 0) == doctest::Approx(-(3.8 + 1.62)).epsilon(1e-15));
    CHECK(w(2, 0) == 0.0);
  }
}

TEST_CASE("SGD: sparse steps equal the dense formula exactly, with and without momentum") {
  for (const double momentum : {0.0, 0.9}) {
    for (const bool nesterov : {false, true}) {
      if (nesterov && momentum == 0.0) continue;
      CAPTURE(momentum);
      CAPTURE(nesterov);
      const double dampening = nesterov ? 0.0 : 0.25;
      Embedding<float> table(EmbeddingOptions(30, 5), 2);
      Matrix<float> w = table.weight();
      Matrix<float> buf = Matrix<float>::Zero(30, 5);
      optim::SGD<float> sgd(0.05, momentum, dampening, nesterov);
      const auto grads = random_grads(table, 6, 3);
      for (std::size_t s = 0; s < grads.size(); ++s) {
        sgd.step(table, grads[s]);
        // torch.optim.SGD on a dense gradient, written out.
        Matrix<float> g = grads[s].to_dense();
        if (momentum != 0.0) {
          if (s == 0) {
            buf = g;
          } else {
            buf = (buf * static_cast<float>(momentum)).eval();
            buf += static_cast<float>(1.0 - dampening) * g;
          }
          if (nesterov) {
            g = g + static_cast<float>(momentum) * buf;
          } else {
            g = buf;
          }
        }
        w += static_cast<float>(-0.05) * g;
        CAPTURE(s);
        CHECK(table.weight() == w);
      }
    }
  }
}

TEST_CASE("Adagrad: hand-worked steps with lr_decay and an initial accumulator") {
  SUBCASE("lr 0.1, lr_decay 0.5") {
    auto table = zeros<double>(2, 1);
    table.mutable_weight()(0, 0) = 1.0;
    optim::Adagrad<double> opt(0.1, 0.5);
    opt.step(table, grad1<double>(2, {0}, {3.0}));  // sum 9, clr 0.1
    CHECK(table.weight()(0, 0) == doctest::Approx(1.0 - 0.1 * 3 / (3 + 1e-10)).epsilon(1e-15));
    opt.step(table, grad1<double>(2, {0}, {4.0}));  // sum 25, clr 0.1 / 1.5
    CHECK(
        table.weight()(0, 0) ==
        doctest::Approx(1.0 - 0.1 * 3 / (3 + 1e-10) - 0.1 / 1.5 * 4 / (5 + 1e-10)).epsilon(1e-15));
    CHECK(table.weight()(1, 0) == 0.0);
  }
  SUBCASE("initial_accumulator_value 7: the first sum is 7 + g^2") {
    auto table = zeros<double>(2, 1);
    optim::Adagrad<double> opt(1.0, 0.0, 0.0, 7.0);
    opt.step(table, grad1<double>(2, {1}, {3.0}));
    CHECK(table.weight()(1, 0) == doctest::Approx(-3.0 / 4.0).epsilon(1e-15));
    opt.step(table, grad1<double>(2, {1}, {0.0}));  // sum stays 16, w stays
    CHECK(table.weight()(1, 0) == doctest::Approx(-3.0 / 4.0).epsilon(1e-15));
  }
}

TEST_CASE("Adagrad: sparse steps equal the dense formula exactly") {
  Embedding<float> table(EmbeddingOptions(25, 4), 5);
  Matrix<float> w = table.weight();
  const double lr = 0.2;
  const double lr_decay = 0.1;
  const double eps = 1e-10;
  Matrix<float> sum = Matrix<float>::Constant(25, 4, 0.5f);
  optim::Adagrad<float> opt(lr, lr_decay, eps, 0.5);
  const auto grads = random_grads(table, 8, 7);
  for (std::size_t s = 0; s < grads.size(); ++s) {
    opt.step(table, grads[s]);
    // torch.optim.Adagrad on a dense gradient: sum.addcmul_(g, g); w.addcdiv_(g, sqrt(sum) + eps,
    // -clr).
    const Matrix<float> g = grads[s].to_dense();
    const double clr = lr / (1 + static_cast<double>(s) * lr_decay);
    sum.array() += g.array() * g.array();
    w.array() +=
        static_cast<float>(-clr) * (g.array() / (sum.array().sqrt() + static_cast<float>(eps)));
    CAPTURE(s);
    CHECK(bit_identical(Matrix<float>(table.weight()), w));
  }
}

TEST_CASE("SparseAdam: lazy moments and one step counter per table, worked by hand") {
  const double lr = 0.1;
  const double b1 = 0.9;
  const double b2 = 0.999;
  const double eps = 1e-8;
  auto table = zeros<double>(3, 1);
  optim::SparseAdam<double> adam(lr, b1, b2, eps);
  const auto step_size = [&](int t) {
    return lr * std::sqrt(1 - std::pow(b2, t)) / (1 - std::pow(b1, t));
  };

  // t = 1: rows 0 (g = 1) and 1 (g = -2).
  adam.step(table, grad1<double>(3, {0, 1}, {1.0, -2.0}));
  double w0 = -step_size(1) * 0.1 / (std::sqrt(0.001) + eps);
  double w1 = -step_size(1) * -0.2 / (std::sqrt(0.004) + eps);
  CHECK(table.weight()(0, 0) == doctest::Approx(w0).epsilon(1e-14));
  CHECK(table.weight()(1, 0) == doctest::Approx(w1).epsilon(1e-14));
  CHECK(w0 == doctest::Approx(-0.1).epsilon(1e-6));  // Adam's first step is about lr

  // t = 2: only row 0. m0 = 0.1 + 0.1 * (1 - 0.1) = 0.19, v0 = 0.001 + 0.001 * (1 - 0.001).
  adam.step(table, grad1<double>(3, {0}, {1.0}));
  w0 -= step_size(2) * 0.19 / (std::sqrt(0.001999) + eps);
  CHECK(table.weight()(0, 0) == doctest::Approx(w0).epsilon(1e-14));
  CHECK(table.weight()(1, 0) == doctest::Approx(w1).epsilon(1e-14));  // absent: unchanged

  // t = 3: row 1 again. Its moments were not decayed at t = 2 (lazy):
  // m1 = -0.2 + 0.1 * (-2 + 0.2) = -0.38, v1 = 0.004 + 0.001 * (4 - 0.004) = 0.007996.
  adam.step(table, grad1<double>(3, {1}, {-2.0}));
  w1 -= step_size(3) * -0.38 / (std::sqrt(0.007996) + eps);
  CHECK(table.weight()(1, 0) == doctest::Approx(w1).epsilon(1e-14));
  // A non-lazy Adam would have decayed m1 to -0.18 at t = 2 and reached -0.362 here.
  const double dense_w1 = -step_size(1) * -0.2 / (std::sqrt(0.004) + eps) -
                          step_size(2) * -0.18 / (std::sqrt(0.003996) + eps) -
                          step_size(3) * -0.362 / (std::sqrt(0.003996 * 0.999 + 0.004) + eps);
  CHECK(table.weight()(1, 0) != doctest::Approx(dense_w1).epsilon(1e-6));
  CHECK(table.weight()(2, 0) == 0.0);
  CHECK(adam.steps(table) == 3);

  // An empty gradient counts a step and changes nothing.
  const Matrix<double> before = table.weight();
  SparseGrad<double> empty;
  empty.num_embeddings = 3;
  empty.values.resize(0, 1);
  adam.step(table, empty);
  CHECK(adam.steps(table) == 4);
  CHECK(bit_identical(Matrix<double>(table.weight()), before));
}

TEST_CASE("Optimizers: a frozen table never changes and gets no state") {
  auto table = Embedding<float>::from_pretrained(Matrix<float>::Ones(4, 2));
  REQUIRE(table.frozen());
  SparseGrad<float> g;
  g.num_embeddings = 4;
  g.rows = {1, 2};
  g.values = Matrix<float>::Ones(2, 2);
  optim::SGD<float> sgd(1.0, 0.9);
  optim::Adagrad<float> ada(1.0);
  optim::SparseAdam<float> adam(1.0);
  sgd.step(table, g);
  ada.step(table, g);
  adam.step(table, g);
  CHECK(table.weight() == Matrix<float>::Ones(4, 2));
  CHECK(adam.steps(table) == 0);
  table.freeze(false);
  adam.step(table, g);
  CHECK(table.weight()(1, 0) != 1.0f);
  CHECK(table.weight()(0, 0) == 1.0f);
}

TEST_CASE("Optimizers: EmbeddingBag tables step from their sparse gradients") {
  auto bag = EmbeddingBag<double>::from_pretrained(
      Matrix<double>::Zero(5, 2),
      emb::FromPretrainedBagOptions().freeze(false).mode(emb::BagMode::Sum));
  const Matrix<double> G = Matrix<double>::Ones(2, 2);
  const auto grad = bag.backward({1, 1, 3}, {0, 2}, G);  // row 1: 2, row 3: 1
  optim::SGD<double> sgd(0.5);
  sgd.step(bag, grad);
  CHECK(bag.weight()(1, 0) == -1.0);
  CHECK(bag.weight()(3, 1) == -0.5);
  CHECK(bag.weight()(0, 0) == 0.0);
  optim::Adagrad<double> ada(1.0, 0.0, 0.0);
  ada.step(bag, grad);
  CHECK(bag.weight()(1, 0) == -2.0);  // -1 - 2 / sqrt(4)
  optim::SparseAdam<double> adam;
  adam.step(bag, grad);
  CHECK(adam.steps(bag) == 1);
  bag.freeze();
  const Matrix<double> before = bag.weight();
  adam.step(bag, grad);
  CHECK(bit_identical(Matrix<double>(bag.weight()), before));
}

TEST_CASE("Optimizers: state belongs to each table") {
  auto a = zeros<double>(3, 1);
  auto b = zeros<double>(3, 1);
  optim::SparseAdam<double> adam(0.1);
  adam.step(a, grad1<double>(3, {0}, {1.0}));
  adam.step(a, grad1<double>(3, {0}, {1.0}));
  adam.step(b, grad1<double>(3, {0}, {1.0}));
  CHECK(adam.steps(a) == 2);
  CHECK(adam.steps(b) == 1);
  // b's first step is a's first step.
  auto c = zeros<double>(3, 1);
  optim::SparseAdam<double> fresh(0.1);
  fresh.step(c, grad1<double>(3, {0}, {1.0}));
  CHECK(b.weight()(0, 0) == c.weight()(0, 0));
  adam.forget(a);
  CHECK(adam.steps(a) == 0);

  SUBCASE("a moved table keeps its state; a copy, a replacement or a rebuilt table starts afresh") {
    adam.step(a, grad1<double>(3, {0}, {1.0}));
    adam.step(a, grad1<double>(3, {0}, {1.0}));
    REQUIRE(adam.steps(a) == 2);
    auto moved = std::move(a);
    CHECK(adam.steps(moved) == 2);
    const auto copy = moved;
    CHECK(adam.steps(copy) == 0);
    a = zeros<double>(4, 1);  // the same object now holds a new table of another shape
    CHECK(adam.steps(a) == 0);
    adam.step(a, grad1<double>(4, {0}, {1.0}));
    CHECK(adam.steps(a) == 1);
    // A table built in the storage of a destroyed one must not inherit its moments.
    std::optional<emb::Embedding<double>> slot(zeros<double>(3, 1));
    adam.step(*slot, grad1<double>(3, {0}, {1.0}));
    const void* storage = &*slot;
    slot.reset();
    slot.emplace(zeros<double>(3, 1));
    REQUIRE(&*slot == storage);
    CHECK(adam.steps(*slot) == 0);
  }
}

TEST_CASE("Optimizers: a gradient that does not fit the table is rejected, nothing changes") {
  auto table = zeros<float>(4, 2);
  optim::SparseAdam<float> adam;
  optim::Adagrad<float> ada;
  optim::SGD<float> sgd(0.1, 0.9);
  SparseGrad<float> g;
  g.num_embeddings = 4;
  g.rows = {0, 2};
  g.values = Matrix<float>::Ones(2, 2);

  auto wrong_n = g;
  wrong_n.num_embeddings = 5;
  CHECK(contains(message_of<std::invalid_argument>([&] { adam.step(table, wrong_n); }),
                 "the gradient is for a table of 5 rows, the table has 4"));
  auto wrong_dim = g;
  wrong_dim.values = Matrix<float>::Ones(2, 3);
  CHECK(contains(message_of<std::invalid_argument>([&] { ada.step(table, wrong_dim); }),
                 "grad.values has shape (2, 3), expected (2, 2)"));
  auto wrong_count = g;
  wrong_count.rows = {0};
  CHECK(contains(message_of<std::invalid_argument>([&] { sgd.step(table, wrong_count); }),
                 "expected (1, 2)"));
  auto out_of_range = g;
  out_of_range.rows = {0, 4};
  CHECK(contains(message_of<std::out_of_range>([&] { adam.step(table, out_of_range); }),
                 "index 4 at position 1 is out of range; valid indices are [0, 4)"));
  auto unsorted = g;
  unsorted.rows = {2, 0};
  CHECK(contains(message_of<std::invalid_argument>([&] { ada.step(table, unsorted); }),
                 "grad.rows[1] = 0 does not follow 2"));
  auto duplicate = g;
  duplicate.rows = {2, 2};
  CHECK_THROWS_AS(sgd.step(table, duplicate), std::invalid_argument);

  CHECK(table.weight().isZero(0.0));
  CHECK(adam.steps(table) == 0);
  CHECK(ada.steps(table) == 0);
  CHECK(sgd.steps(table) == 0);
}

TEST_CASE("Optimizers: invalid hyperparameters name the option and its value") {
  CHECK(contains(message_of<std::invalid_argument>([] { optim::SGD<float>(-0.1); }), "lr = -0.1"));
  CHECK(contains(message_of<std::invalid_argument>([] { optim::SGD<float>(0.1, -1.0); }),
                 "momentum = -1"));
  CHECK(contains(message_of<std::invalid_argument>([] { optim::SGD<float>(0.1, 0.0, 0.0, true); }),
                 "nesterov"));
  CHECK(contains(message_of<std::invalid_argument>([] { optim::SGD<float>(std::nan("")); }),
                 "lr = nan"));
  CHECK(contains(message_of<std::invalid_argument>([] { optim::Adagrad<float>(0.1, -1.0); }),
                 "lr_decay = -1"));
  CHECK(contains(
      message_of<std::invalid_argument>([] { optim::Adagrad<float>(0.1, 0.0, 1e-10, -2.0); }),
      "initial_accumulator_value = -2"));
  CHECK(
      contains(message_of<std::invalid_argument>([] { optim::SparseAdam<float>(0.0); }), "lr = 0"));
  CHECK(contains(message_of<std::invalid_argument>([] { optim::SparseAdam<float>(1e-3, 1.0); }),
                 "beta1 = 1"));
  CHECK(
      contains(message_of<std::invalid_argument>([] { optim::SparseAdam<float>(1e-3, 0.9, -0.5); }),
               "beta2 = -0.5"));
  CHECK(contains(
      message_of<std::invalid_argument>([] { optim::SparseAdam<float>(1e-3, 0.9, 0.999, 0.0); }),
      "eps = 0"));
  const optim::SparseAdam<float> defaults;
  CHECK(defaults.lr() == 1e-3);
  CHECK(defaults.beta1() == 0.9);
  CHECK(defaults.beta2() == 0.999);
  CHECK(defaults.eps() == 1e-8);
  const optim::Adagrad<float> ada(0.5);
  CHECK(ada.lr_decay() == 0.0);
  CHECK(ada.eps() == 1e-10);
  CHECK(ada.initial_accumulator_value() == 0.0);
}
