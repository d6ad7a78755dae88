// Embedding<T, S> and EmbeddingBag<T, S> with a storage S narrower than T (half, bfloat16, or
// float under T = double): init, lookups and every bag mode, max_norm, gradients, optimizers,
// rounding to nearest even and stochastic rounding, const tables.
//
// The oracle for every rounding is this file's own: all 65,536 bit patterns of half and of
// bfloat16 decoded from their definition (sign, exponent, significand) into doubles, sorted,
// and a value rounded by searching that list (ties to the even significand). The oracle for
// lookups, bags and gradients is an Embedding<T> holding the stored values converted to T.

#include <emb/embedding.hpp>
#include <emb/embedding_bag.hpp>
#include <emb/optim.hpp>

#include <doctest/doctest.h>

#include "test_util.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

using emb::BagMode;
using emb::bfloat16;
using emb::Embedding;
using emb::EmbeddingBag;
using emb::EmbeddingBagOptions;
using emb::EmbeddingOptions;
using emb::FromPretrainedBagOptions;
using emb::FromPretrainedOptions;
using emb::half;
using emb::Index;
using emb::Matrix;
using emb::Vector;

using emb_test::bit_identical;
using emb_test::contains;
using emb_test::message_of;
using emb_test::random_ids;
using emb_test::random_matrix;

namespace {

// ---- an independent model of the two 16-bit formats ---------------------------------------

template <class S>
struct Format;
template <>
struct Format<half> {
  static constexpr int exponent_bits = 5;
  static constexpr int significand_bits = 10;
};
template <>
struct Format<bfloat16> {
  static constexpr int exponent_bits = 8;
  static constexpr int significand_bits = 7;
};

template <class S>
std::uint16_t bits_of(S v) {
  std::uint16_t b;
  std::memcpy(&b, &v, 2);
  return b;
}
template <class S>
S from_bits(std::uint16_t b) {
  S v;
  std::memcpy(static_cast<void*>(&v), &b, 2);
  return v;
}

// The value of a 16-bit pattern from the format's definition (infinity and NaN as such).
template <class S>
double decode(std::uint16_t b) {
  constexpr int e_bits = Format<S>::exponent_bits;
  constexpr int m_bits = Format<S>::significand_bits;
  constexpr int bias = (1 << (e_bits - 1)) - 1;
  const int sign = b >> 15;
  const int e = (b >> m_bits) & ((1 << e_bits) - 1);
  const int m = b & ((1 << m_bits) - 1);
  double v = 0;
  if (e == (1 << e_bits) - 1) {
    v = m == 0 ? std::numeric_limits<double>::infinity() : std::numeric_limits<double>::quiet_NaN();
  } else if (e == 0) {
    v = std::ldexp(static_cast<double>(m), 1 - bias - m_bits);
  } else {
    v = std::ldexp(static_cast<double>(m + (1 << m_bits)), e - bias - m_bits);
  }
  return sign != 0 ? -v : v;
}

// Every finite non-negative value of S, ascending, with its bit pattern.
template <class S>
const std::vector<std::pair<double, std::uint16_t>>& finite_values() {
  static const auto values = [] {
    std::vector<std::pair<double, std::uint16_t>> v;
    for (std::uint32_t b = 0; b < 0x8000u; ++b) {
      const double x = decode<S>(static_cast<std::uint16_t>(b));
      if (std::isfinite(x)) v.emplace_back(x, static_cast<std::uint16_t>(b));
    }
    std::sort(v.begin(), v.end());
    return v;
  }();
  return values;
}

// x rounded to nearest S, ties to the even significand; beyond the largest finite value by at
// least half a spacing, infinity (IEEE's rule).
template <class S>
std::uint16_t round_oracle(double x) {
  const std::uint16_t sign = std::signbit(x) ? 0x8000u : 0u;
  const double a = std::abs(x);
  const auto& v = finite_values<S>();
  const auto it = std::lower_bound(v.begin(), v.end(), std::make_pair(a, std::uint16_t{0}));
  if (it != v.end() && it->first == a) return static_cast<std::uint16_t>(sign | it->second);
  if (it == v.end()) {
    const double top = v.back().first;
    const double spacing = top - v[v.size() - 2].first;
    if (a >= top + spacing / 2) return static_cast<std::uint16_t>(sign | (v.back().second + 1));
    return static_cast<std::uint16_t>(sign | v.back().second);
  }
  const auto lo = *(it - 1);
  const auto hi = *it;
  const double dlo = a - lo.first;
  const double dhi = hi.first - a;
  const bool up = dhi < dlo || (dhi == dlo && (hi.second & 1u) == 0);
  return static_cast<std::uint16_t>(sign | (up ? hi.second : lo.second));
}

template <class S>
Matrix<S> round_matrix(const Matrix<float>& m) {
  Matrix<S> out(m.rows(), m.cols());
  for (Index i = 0; i < m.size(); ++i) out.data()[i] = from_bits<S>(round_oracle<S>(m.data()[i]));
  return out;
}
template <class S>
Matrix<float> widen(const Eigen::Ref<const Matrix<S>>& m) {
  Matrix<float> out(m.rows(), m.cols());
  for (Index i = 0; i < m.rows(); ++i) {
    for (Index j = 0; j < m.cols(); ++j) out(i, j) = static_cast<float>(decode<S>(bits_of(m(i, j))));
  }
  return out;
}

}  // namespace

TEST_CASE("Storage: the rounding oracle agrees with the formats' known values") {
  CHECK(decode<half>(0x3C00) == 1.0);
  CHECK(decode<half>(0x7BFF) == 65504.0);
  CHECK(decode<half>(0x0001) == std::ldexp(1.0, -24));
  CHECK(decode<bfloat16>(0x3F80) == 1.0);
  CHECK(decode<bfloat16>(0x7F7F) == std::ldexp(255.0, 120));
  CHECK(round_oracle<half>(1.0 + std::ldexp(1.0, -11)) == 0x3C00);  // tie: to even (1.0)
  CHECK(round_oracle<bfloat16>(-3.0) == 0xC040);
}

TEST_CASE_TEMPLATE("Storage: to nearest, ties to even, at the exact halfway points", S, half, bfloat16) {
  constexpr int m = Format<S>::significand_bits;
  const double spacing = std::ldexp(1.0, -m);  // the spacing just above 1
  // 1 + spacing/2 lies halfway between 1 (even significand) and 1 + spacing (odd): down.
  // 1 + 3 spacing/2 lies between 1 + spacing (odd) and 1 + 2 spacing (even): up.
  for (const double sign : {1.0, -1.0}) {
    const float down = static_cast<float>(sign * (1.0 + spacing / 2));
    const float up = static_cast<float>(sign * (1.0 + 1.5 * spacing));
    CHECK(bits_of(emb::detail::round_nearest<S>(down)) == bits_of(static_cast<S>(sign * 1.0f)));
    CHECK(decode<S>(bits_of(emb::detail::round_nearest<S>(up))) == sign * (1.0 + 2 * spacing));
    CHECK(bits_of(emb::detail::round_nearest<S>(down)) == round_oracle<S>(down));
    CHECK(bits_of(emb::detail::round_nearest<S>(up)) == round_oracle<S>(up));
  }
  // From double, just above a halfway point: a detour through float would land on the tie and
  // round down; the correct result is up.
  const double above = 1.0 + spacing / 2 + std::ldexp(1.0, -40);
  CHECK(decode<S>(bits_of(emb::detail::round_nearest<S>(above))) == 1.0 + spacing);
  CHECK(bits_of(emb::detail::round_nearest<S>(above)) == round_oracle<S>(above));
  // Many values of every magnitude, float and double.
  std::mt19937_64 gen(3);
  for (int i = 0; i < 20000; ++i) {
    const double x = std::ldexp(std::uniform_real_distribution<double>(-1, 1)(gen),
                                static_cast<int>(gen() % 40) - 30);
    const auto f = static_cast<float>(x);
    REQUIRE(bits_of(emb::detail::round_nearest<S>(f)) == round_oracle<S>(f));
    REQUIRE(bits_of(emb::detail::round_nearest<S>(x)) == round_oracle<S>(x));
  }
}

TEST_CASE_TEMPLATE("Storage: init is Embedding<float>'s draw rounded to S, padding row zero", S, half,
                   bfloat16) {
  const auto opts = EmbeddingOptions(40, 7).padding_idx(3);
  const Embedding<float> reference(opts, 11);
  const Embedding<float, S> table(opts, 11);
  CHECK(bit_identical(Matrix<S>(table.weight()), round_matrix<S>(Matrix<float>(reference.weight()))));
  CHECK(widen<S>(table.weight()).row(3).isZero(0));
  const EmbeddingBag<float, S> bag(EmbeddingBagOptions(40, 7).padding_idx(3), 11);
  CHECK(bit_identical(Matrix<S>(bag.weight()), Matrix<S>(table.weight())));
}

TEST_CASE_TEMPLATE("Storage: lookups give the stored values converted exactly, at every width", S,
                   half, bfloat16) {
  // Widths around the 8-wide conversion of half (F16C) and the tails after it.
  for (Index dim : {1, 3, 7, 8, 9, 16, 33, 64, 130}) {
    CAPTURE(dim);
    const Matrix<S> stored = round_matrix<S>(random_matrix(60, dim, static_cast<unsigned>(dim)));
    const auto table = Embedding<float, S>::from_pretrained(stored);
    const auto plain = Embedding<float>::from_pretrained(widen<S>(stored));
    const auto ids = random_ids(200, 60, 5);
    CHECK(bit_identical(table.forward(ids), plain.forward(ids)));
    Matrix<float> out(200, dim);
    table.forward(ids, out);
    CHECK(bit_identical(out, plain.forward(ids)));
    // Double as the compute type: the same values again.
    const auto wide = Embedding<double, S>::from_pretrained(stored);
    CHECK(bit_identical(wide.forward(ids), Matrix<double>(plain.forward(ids).template cast<double>())));
  }
}

TEST_CASE_TEMPLATE("Storage: every bag mode pools the converted values in T", S, half, bfloat16) {
  // 8 to 128 take the register-accumulated 16-bit kernel where the CPU has AVX2 and F16C; the
  // others, and every width elsewhere, the generic loop: both must give the float table's bits.
  for (Index dim : {3, 8, 16, 24, 32, 64, 128}) {
    CAPTURE(dim);
    const Matrix<S> stored = round_matrix<S>(random_matrix(30, dim, 7));
    const auto ids = random_ids(90, 30, 8);
    const std::vector<Index> off = {0, 0, 10, 11, 50};
    Vector<float> psw(90);
    for (Index i = 0; i < 90; ++i) psw(i) = 0.1f * static_cast<float>(i % 9) - 0.3f;
    for (BagMode mode : {BagMode::Sum, BagMode::Mean, BagMode::Max}) {
      CAPTURE(static_cast<int>(mode));
      const auto opts = FromPretrainedBagOptions().mode(mode).padding_idx(4).freeze(false);
      const auto bag = EmbeddingBag<float, S>::from_pretrained(stored, opts);
      const auto plain = EmbeddingBag<float>::from_pretrained(widen<S>(stored), opts);
      CHECK(bit_identical(bag.forward(ids, off), plain.forward(ids, off)));
      const Matrix<float> g = random_matrix(5, dim, 9);
      CHECK(bit_identical(bag.backward_dense(ids, off, g), plain.backward_dense(ids, off, g)));
      const auto sparse = bag.backward(ids, off, g);
      const auto plain_sparse = plain.backward(ids, off, g);
      CHECK(sparse.rows == plain_sparse.rows);
      CHECK(bit_identical(sparse.values, plain_sparse.values));
      if (mode == BagMode::Sum) {
        CHECK(bit_identical(bag.forward(ids, off, psw), plain.forward(ids, off, psw)));
        CHECK(bit_identical(bag.backward_per_sample_weights(ids, off, g),
                            plain.backward_per_sample_weights(ids, off, g)));
      }
    }
  }
}

TEST_CASE_TEMPLATE("Storage: gradients of a narrow table are those of its values in T", S, half,
                   bfloat16) {
  const Matrix<S> stored = round_matrix<S>(random_matrix(25, 6, 12));
  const auto ids = random_ids(40, 25, 13);
  const Matrix<float> g = random_matrix(40, 6, 14);
  for (bool by_freq : {false, true}) {
    const auto opts = FromPretrainedOptions().padding_idx(2).scale_grad_by_freq(by_freq);
    const auto table = Embedding<float, S>::from_pretrained(stored, opts);
    const auto plain = Embedding<float>::from_pretrained(widen<S>(stored), opts);
    CHECK(bit_identical(table.backward_dense(ids, g), plain.backward_dense(ids, g)));
    CHECK(bit_identical(table.backward(ids, g).values, plain.backward(ids, g).values));
  }
}

TEST_CASE_TEMPLATE("Storage: max_norm measures the stored row and rounds the rescaled row to S", S,
                   half, bfloat16) {
  const Matrix<float> w = random_matrix(10, 5, 21, 2.0);
  const Matrix<S> stored = round_matrix<S>(w);
  auto table = Embedding<float, S>::from_pretrained(stored, FromPretrainedOptions().max_norm(1.0));
  const std::vector<Index> ids = {1, 4, 4, 7};
  const Matrix<float> out = table.forward(ids);
  for (Index r = 0; r < 10; ++r) {
    CAPTURE(r);
    const bool looked_up = r == 1 || r == 4 || r == 7;
    double norm = 0;
    for (Index j = 0; j < 5; ++j) norm += std::pow(decode<S>(bits_of(stored(r, j))), 2);
    norm = std::sqrt(norm);
    for (Index j = 0; j < 5; ++j) {
      const double before = decode<S>(bits_of(stored(r, j)));
      std::uint16_t expected = bits_of(stored(r, j));
      if (looked_up && norm > 1.0) {
        const auto scale = static_cast<float>(1.0 / (norm + 1e-7));
        expected = round_oracle<S>(static_cast<float>(static_cast<float>(before) * scale));
      }
      CHECK(bits_of(table.weight()(r, j)) == expected);
    }
  }
  CHECK(bit_identical(out, widen<S>(Matrix<S>(table.weight())) (ids, Eigen::all)));
  const auto& const_table = table;
  CHECK(contains(message_of<std::logic_error>([&] { (void)const_table.forward(ids); }),
                 "max_norm"));
}

// One optimizer step on a narrow table computes in T and rounds once: the same as the step on
// the table's values in T, then rounded to nearest even.
template <class S, class Opt>
void check_steps_round_once(Opt make) {
  const Matrix<S> stored = round_matrix<S>(random_matrix(20, 6, 31));
  auto table = Embedding<float, S>::from_pretrained(stored, FromPretrainedOptions().freeze(false));
  auto plain = Embedding<float>::from_pretrained(widen<S>(stored), FromPretrainedOptions().freeze(false));
  auto opt = make();
  auto plain_opt = make();
  for (unsigned step = 0; step < 4; ++step) {
    CAPTURE(step);
    const auto ids = random_ids(15, 20, 40 + step);
    const Matrix<float> g = random_matrix(15, 6, 50 + step);
    opt.step(table, table.backward(ids, g));
    plain_opt.step(plain, plain.backward(ids, g));
    // The oracle's table holds what the narrow table holds: its own step, rounded.
    const Matrix<S> rounded = round_matrix<S>(Matrix<float>(plain.weight()));
    REQUIRE(bit_identical(Matrix<S>(table.weight()), rounded));
    plain.set_weight(widen<S>(rounded));
  }
}

TEST_CASE_TEMPLATE("Storage: SGD, Adagrad and SparseAdam step a narrow table in T, rounding once",
                   S, half, bfloat16) {
  check_steps_round_once<S>([] { return emb::optim::SGD<float>(0.1); });
  check_steps_round_once<S>([] { return emb::optim::SGD<float>(0.1, 0.9, 0.0, true); });
  check_steps_round_once<S>([] { return emb::optim::Adagrad<float>(0.5); });
  check_steps_round_once<S>([] { return emb::optim::SparseAdam<float>(0.05); });
}

TEST_CASE("Storage: a double table stored as half rounds the double result directly") {
  // w = 1, lr * g = -(spacing/2 + 2^-40): the new value 1 + spacing/2 + 2^-40 must round up to
  // 1 + 2^-10; through float it would be a tie and stay 1.
  Matrix<half> stored(1, 1);
  stored(0, 0) = half(1.0f);
  auto table = Embedding<double, half>::from_pretrained(stored, FromPretrainedOptions().freeze(false));
  emb::optim::SGD<double> sgd(1.0);
  emb::SparseGrad<double> grad;
  grad.num_embeddings = 1;
  grad.rows = {0};
  grad.values = Matrix<double>::Constant(1, 1, -(std::ldexp(1.0, -11) + std::ldexp(1.0, -40)));
  sgd.step(table, grad);
  CHECK(decode<half>(bits_of(table.weight()(0, 0))) == 1.0 + std::ldexp(1.0, -10));
}

TEST_CASE_TEMPLATE("Storage: stochastic rounding is unbiased", S, half, bfloat16) {
  const double spacing = std::ldexp(1.0, -Format<S>::significand_bits);
  emb::detail::Rng rng(5);
  for (const double fraction : {0.1, 0.3, 0.5, 0.9}) {
    for (const double sign : {1.0, -1.0}) {
      CAPTURE(fraction);
      CAPTURE(sign);
      const auto x = static_cast<float>(sign * (1.0 + fraction * spacing));
      const int draws = 100000;
      int up = 0;
      for (int i = 0; i < draws; ++i) {
        const double v = decode<S>(bits_of(emb::detail::round_stochastic<S>(x, rng)));
        REQUIRE((v == sign * 1.0 || v == sign * (1.0 + spacing)));
        if (v != sign * 1.0) ++up;
      }
      // The share rounded away from 1 estimates the fraction: its standard error is
      // sqrt(f(1-f)/n) <= 0.0016, so 0.008 is five of them.
      CHECK(std::abs(static_cast<double>(up) / draws - fraction) < 0.008);
    }
  }
  // Values S holds exactly never move.
  const float exact = static_cast<float>(1.0 + 3 * spacing);
  for (int i = 0; i < 100; ++i) CHECK(decode<S>(bits_of(emb::detail::round_stochastic<S>(exact, rng))) == exact);
}

TEST_CASE("Storage: with stochastic rounding a bfloat16 table keeps training where nearest stalls") {
  // Rows of ones; every step moves each value by lr * g = 2^-10, a quarter of bfloat16's spacing
  // at 1 (2^-7 above 1, 2^-8 below): rounded to nearest, nothing ever changes.
  const Matrix<bfloat16> ones = Matrix<bfloat16>::Constant(64, 16, bfloat16(1.0f));
  auto nearest = Embedding<float, bfloat16>::from_pretrained(ones, FromPretrainedOptions().freeze(false));
  auto stochastic = nearest;
  emb::optim::SGD<float> sgd_nearest(1.0);
  auto sgd_stochastic = emb::optim::SGD<float>(1.0).stochastic_rounding(42);
  CHECK(sgd_stochastic.stochastic_rounding());
  std::vector<Index> all(64);
  for (Index i = 0; i < 64; ++i) all[static_cast<std::size_t>(i)] = i;
  const Matrix<float> g = Matrix<float>::Constant(64, 16, std::ldexp(1.0f, -10));
  for (int step = 0; step < 100; ++step) {
    sgd_nearest.step(nearest, nearest.backward(all, g));
    sgd_stochastic.step(stochastic, stochastic.backward(all, g));
  }
  CHECK(bit_identical(Matrix<bfloat16>(nearest.weight()), ones));
  // Expected: 1 - 100 * 2^-10 = 0.902 on average over the 1024 values.
  const double mean = widen<bfloat16>(Matrix<bfloat16>(stochastic.weight())).cast<double>().mean();
  CHECK(mean == doctest::Approx(1.0 - 100 * std::ldexp(1.0, -10)).epsilon(0.01));
}

TEST_CASE("Storage: a storage that does not convert exactly to T is refused at compile time") {
  // Embedding<float, double> would round every stored value: not a valid combination.
  CHECK_FALSE(emb::detail::converts_exactly_v<float, double>);
  CHECK(emb::detail::converts_exactly_v<double, float>);
  CHECK(emb::detail::converts_exactly_v<float, half>);
  CHECK(emb::detail::converts_exactly_v<double, bfloat16>);
  const Embedding<double, float> wide(EmbeddingOptions(4, 3), 1);
  const Embedding<double> reference(EmbeddingOptions(4, 3), 1);
  // The double draw rounded to float: the float table's own values.
  CHECK(bit_identical(Matrix<float>(wide.weight()), Matrix<float>(Embedding<float>(EmbeddingOptions(4, 3), 1).weight())));
  CHECK(bit_identical(wide.forward({0, 3}), Matrix<double>(reference.weight().template cast<float>().template cast<double>()(std::vector<Index>{0, 3}, Eigen::all))));
}
