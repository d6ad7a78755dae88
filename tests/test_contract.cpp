// The public API contract, used the way code written against the documented API alone uses it: one
// include, the documented names and signatures, the implicit conversions a caller relies on
// (braced lists, int literals, `{}` options, default template arguments), the error table and
// the strong guarantee.
//
// Expected values are worked out by hand in the comments next to them (or follow from the
// formulas the API documents, evaluated here in double); none is read back from the library.
#include <emb/emb.hpp>

#include <doctest/doctest.h>

#include "test_util.hpp"

#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

using emb::Index;
using emb::Matrix;
using emb::Vector;
using emb_test::bit_identical;
using emb_test::message_of;

namespace {

// The documented tolerance: 1e-5 in float, 1e-12 in double.
template <class T>
doctest::Approx near(double value) {
  return doctest::Approx(value).epsilon(std::is_same_v<T, float> ? 1e-5 : 1e-12);
}

template <class T>
Matrix<T> mat(Index rows, Index cols, std::initializer_list<double> values) {
  REQUIRE(static_cast<Index>(values.size()) == rows * cols);
  Matrix<T> m(rows, cols);
  Index i = 0;
  for (double v : values) {
    m(i / cols, i % cols) = static_cast<T>(v);
    ++i;
  }
  return m;
}

template <class T>
Vector<T> vec(std::initializer_list<double> values) {
  Vector<T> v(static_cast<Index>(values.size()));
  Index i = 0;
  for (double x : values) v(i++) = static_cast<T>(x);
  return v;
}

// Every element of `m` is close to the row-major `expected`.
template <class M>
void check_near(const M& m, Index rows, Index cols, std::initializer_list<double> expected) {
  using T = typename M::Scalar;
  REQUIRE(m.rows() == rows);
  REQUIRE(m.cols() == cols);
  Index i = 0;
  for (double v : expected) {
    INFO("element (" << i / cols << ", " << i % cols << ")");
    CHECK(static_cast<double>(m(i / cols, i % cols)) == near<T>(v));
    ++i;
  }
}

bool contains_all(const std::string& text, std::initializer_list<const char*> parts) {
  for (const char* part : parts) {
    if (text.find(part) == std::string::npos) return false;
  }
  return true;
}

// Row k of this (5, 2) table is (k, 10k): a looked-up row tells which index it came from.
template <class T>
Matrix<T> identity_table() {
  return mat<T>(5, 2, {0, 0, 1, 10, 2, 20, 3, 30, 4, 40});
}

Index sum_of(emb::IndexSpan s) {
  Index total = 0;
  for (Index v : s) total += v;
  return total;
}

// A fresh directory per run for the file tests, removed when the program ends.
std::filesystem::path scratch_dir() {
  struct Dir {
    std::filesystem::path path;
    Dir() {
      const auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
      path = std::filesystem::temp_directory_path() / ("emb_contract_" + std::to_string(stamp));
      std::filesystem::create_directories(path);
    }
    ~Dir() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  };
  static const Dir dir;
  return dir.path;
}

std::string write_file(const std::string& name, const std::string& bytes) {
  const auto path = (scratch_dir() / name).string();
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return path;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// IndexSpan
// ---------------------------------------------------------------------------------------------

TEST_CASE("IndexSpan: converts implicitly from every container the API lists") {
  const std::vector<Index> v{1, 2, 3};
  const std::array<Index, 3> a{4, 5, 6};
  emb::Vector<Index> ev(3);
  ev << 7, 8, 9;
  Eigen::Matrix<Index, 1, Eigen::Dynamic> row(2);
  row << 10, 11;

  emb::IndexSpan from_vector = v;  // copy-initialisation: implicit
  CHECK(from_vector.size() == 3);
  CHECK(from_vector.data() == v.data());
  CHECK(sum_of(v) == 6);
  CHECK(sum_of({1, 2, 3, 4}) == 10);  // braced list of int literals
  CHECK(sum_of(a) == 15);
  CHECK(sum_of(ev) == 24);
  CHECK(sum_of(row) == 21);

  // Column-major Eigen storage is read column by column.
  Eigen::Matrix<Index, 2, 2> col_major;
  col_major << 1, 2,  //
      3, 4;
  const emb::IndexSpan cm = col_major;
  CHECK(cm[1] == 3);

  // Contiguous views: a Map, a Ref to a vector, a segment, a row of a row-major matrix.
  const Eigen::Map<const emb::Vector<Index>> map(v.data(), 2);
  CHECK(sum_of(map) == 3);
  const Eigen::Ref<const emb::Vector<Index>> ref(ev);
  CHECK(sum_of(ref) == 24);
  CHECK(sum_of(ev.head(2)) == 15);
  CHECK(sum_of(ev.segment(1, 2)) == 17);
  emb::Matrix<Index> batch(2, 2);
  batch << 1, 2,  //
      3, 4;
  CHECK(sum_of(batch.row(1)) == 7);

  const emb::IndexSpan explicit_span(v.data() + 1, 2);
  CHECK(explicit_span.size() == 2);
  CHECK(sum_of(explicit_span) == 5);
  CHECK(emb::IndexSpan().size() == 0);
}

TEST_CASE("IndexSpan: a (batch, seq) emb::Matrix<Index> is read row-major") {
  emb::Matrix<Index> batch(2, 3);
  batch << 1, 2, 4,  //
      4, 3, 0;
  const emb::IndexSpan s = batch;
  REQUIRE(s.size() == 6);
  const std::array<Index, 6> order{1, 2, 4, 4, 3, 0};
  for (std::size_t i = 0; i < order.size(); ++i) CHECK(s[i] == order[i]);

  // Seed example 2: the (batch*seq, dim) result is the (batch, seq, dim) tensor, flattened.
  auto table = emb::Embedding<float>::from_pretrained(identity_table<float>());
  const Matrix<float> out = table.forward(batch);
  check_near(out, 6, 2, {1, 10, 2, 20, 4, 40, 4, 40, 3, 30, 0, 0});
}

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

TEST_CASE("EmbeddingOptions: chainable setters, same-name getters, PyTorch defaults") {
  const emb::EmbeddingOptions defaults(10, 3);
  CHECK(defaults.num_embeddings() == 10);
  CHECK(defaults.embedding_dim() == 3);
  CHECK(defaults.padding_idx() == std::nullopt);
  CHECK(defaults.max_norm() == std::nullopt);
  CHECK(defaults.norm_type() == 2.0);
  CHECK_FALSE(defaults.scale_grad_by_freq());

  // int literals where the API takes std::optional<Index> / std::optional<double>.
  auto opts =
      emb::EmbeddingOptions(10, 3).padding_idx(1).max_norm(2).norm_type(1).scale_grad_by_freq(true);
  static_assert(std::is_same_v<decltype(opts), emb::EmbeddingOptions>);
  CHECK(opts.padding_idx() == std::optional<Index>(1));
  CHECK(opts.max_norm() == std::optional<double>(2.0));
  CHECK(opts.norm_type() == 1.0);
  CHECK(opts.scale_grad_by_freq());
  opts.padding_idx(std::nullopt).max_norm(std::nullopt);
  CHECK_FALSE(opts.padding_idx().has_value());
  CHECK_FALSE(opts.max_norm().has_value());
  opts.padding_idx(std::optional<Index>(-1)).max_norm(std::optional<double>(0.5));
  CHECK(*opts.padding_idx() == -1);  // stored as given; the table normalises it
  CHECK(*opts.max_norm() == 0.5);
}

TEST_CASE("FromPretrainedOptions: frozen by default, the table options chain") {
  emb::FromPretrainedOptions opts;
  CHECK(opts.freeze());
  CHECK(opts.padding_idx() == std::nullopt);
  CHECK(opts.max_norm() == std::nullopt);
  CHECK(opts.norm_type() == 2.0);
  CHECK_FALSE(opts.scale_grad_by_freq());
  opts.freeze(false).padding_idx(2).max_norm(1.5).norm_type(3.0).scale_grad_by_freq(true);
  CHECK_FALSE(opts.freeze());
  CHECK(opts.padding_idx() == std::optional<Index>(2));
  CHECK(opts.max_norm() == std::optional<double>(1.5));
  CHECK(opts.norm_type() == 3.0);
  CHECK(opts.scale_grad_by_freq());
}

// ---------------------------------------------------------------------------------------------
// SparseGrad
// ---------------------------------------------------------------------------------------------

TEST_CASE_TEMPLATE("SparseGrad: fields and to_dense", T, float, double) {
  emb::SparseGrad<T> g{4, {1, 3}, mat<T>(2, 2, {1, 2, 3, 4})};
  CHECK(g.num_embeddings == 4);
  CHECK(g.rows == std::vector<Index>{1, 3});
  check_near(g.to_dense(), 4, 2, {0, 0, 1, 2, 0, 0, 3, 4});

  emb::SparseGrad<T> empty;
  CHECK(empty.num_embeddings == 0);
  CHECK(empty.rows.empty());
}

// ---------------------------------------------------------------------------------------------
// Embedding
// ---------------------------------------------------------------------------------------------

TEST_CASE_TEMPLATE("Embedding: both constructors, shape, seeded N(0, 1) init, zero padding row", T,
                   float, double) {
  emb::Embedding<T> plain(10, 3);
  CHECK(plain.num_embeddings() == 10);
  CHECK(plain.embedding_dim() == 3);
  CHECK(plain.padding_idx() == std::nullopt);
  CHECK_FALSE(plain.frozen());
  CHECK(plain.weight().rows() == 10);
  CHECK(plain.weight().cols() == 3);

  emb::Embedding<T> seeded(emb::EmbeddingOptions(1000, 4), 42);
  emb::Embedding<T> again(emb::EmbeddingOptions(1000, 4), 42);
  emb::Embedding<T> other(emb::EmbeddingOptions(1000, 4), 43);
  CHECK(bit_identical(seeded.weight(), again.weight()));
  CHECK_FALSE(bit_identical(seeded.weight(), other.weight()));
  // 4000 draws of N(0, 1): the sample mean is within 5 standard errors of 0, the variance near 1.
  const double mean = static_cast<double>(seeded.weight().sum()) / 4000.0;
  const double var =
      static_cast<double>(seeded.weight().array().square().sum()) / 4000.0 - mean * mean;
  CHECK(std::abs(mean) < 5.0 / std::sqrt(4000.0));
  CHECK(var == doctest::Approx(1.0).epsilon(0.1));

  // A negative padding_idx wraps, is reported normalised, and its row starts at zero.
  emb::Embedding<T> padded(emb::EmbeddingOptions(5, 3).padding_idx(-1), 7);
  CHECK(padded.padding_idx() == std::optional<Index>(4));
  CHECK(padded.weight().row(4).isZero(0));
  CHECK_FALSE(padded.weight().row(3).isZero(0));

  emb::Embedding<> default_float(4, 2);
  // weight() reads the stored matrix of float (an owned matrix or a view of it).
  static_assert(std::is_same_v<typename std::decay_t<decltype(default_float.weight())>::Scalar, float>);
  emb::Embedding<T> empty(0, 3);
  CHECK(empty.forward(std::vector<Index>{}).rows() == 0);
  CHECK_THROWS_AS(empty.forward({0}), std::out_of_range);
  emb::Embedding<T> no_columns(3, 0);
  const Matrix<T> thin = no_columns.forward({2, 1});
  CHECK(thin.rows() == 2);
  CHECK(thin.cols() == 0);
}

TEST_CASE_TEMPLATE(
    "Embedding: from_pretrained keeps every row, padding row included, and is frozen", T, float,
    double) {
  const Matrix<T> w = mat<T>(3, 2, {1, 2, 3, 4, 5, 6});

  auto frozen = emb::Embedding<T>::from_pretrained(w);
  CHECK(frozen.frozen());
  CHECK(bit_identical(frozen.weight(), w));
  auto braces = emb::Embedding<T>::from_pretrained(w, {});
  CHECK(braces.frozen());

  auto padded = emb::Embedding<T>::from_pretrained(
      w, emb::FromPretrainedOptions().padding_idx(-2).freeze(false));
  CHECK_FALSE(padded.frozen());
  CHECK(padded.padding_idx() == std::optional<Index>(1));
  CHECK(bit_identical(padded.weight(), w));  // row 1 is not zeroed
  // Forward returns what is stored, padding row included.
  check_near(padded.forward({1, 0}), 2, 2, {3, 4, 1, 2});

  // A column-major Eigen matrix converts to the by-value parameter.
  Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> col_major(2, 2);
  col_major << 1, 2, 3, 4;
  auto from_col = emb::Embedding<T>::from_pretrained(col_major);
  check_near(from_col.weight(), 2, 2, {1, 2, 3, 4});

  // Frozen tables still give gradients on request.
  CHECK(frozen.backward({2, 2}, Matrix<T>::Ones(2, 2)).rows == std::vector<Index>{2});

  // Taken by value: a moved-in matrix is not copied.
  Matrix<T> moved = w;
  const T* storage = moved.data();
  auto owner = emb::Embedding<T>::from_pretrained(std::move(moved), {});
  CHECK(owner.weight().data() == storage);

  frozen.freeze(false);
  CHECK_FALSE(frozen.frozen());
  frozen.freeze();
  CHECK(frozen.frozen());
}

TEST_CASE_TEMPLATE("Embedding: set_weight takes the same shape only", T, float, double) {
  emb::Embedding<T> table(3, 2);
  table.set_weight(mat<T>(3, 2, {1, 2, 3, 4, 5, 6}));
  check_near(table.weight(), 3, 2, {1, 2, 3, 4, 5, 6});

  const Matrix<T> before = table.weight();
  const auto msg =
      message_of<std::invalid_argument>([&] { table.set_weight(Matrix<T>::Zero(2, 3)); });
  CHECK(contains_all(msg, {"2", "3"}));
  CHECK(bit_identical(table.weight(), before));
}

TEST_CASE_TEMPLATE("Embedding: forward, the out-parameter overload and operator() agree", T, float,
                   double) {
  auto table = emb::Embedding<T>::from_pretrained(identity_table<T>());

  check_near(table.forward({3, 1, 3}), 3, 2, {3, 30, 1, 10, 3, 30});
  check_near(table({4}), 1, 2, {4, 40});
  const std::vector<Index> ids{2, 0};
  check_near(table(ids), 2, 2, {2, 20, 0, 0});

  SUBCASE("into a caller-owned matrix") {
    Matrix<T> out(2, 2);
    table.forward(ids, out);
    check_near(out, 2, 2, {2, 20, 0, 0});
  }
  SUBCASE("into a strided block of a bigger matrix") {
    Matrix<T> big = Matrix<T>::Constant(2, 4, T(-1));
    table.forward({1, 4}, big.leftCols(2));
    check_near(big, 2, 4, {1, 10, -1, -1, 4, 40, -1, -1});
  }
  SUBCASE("empty input gives (0, dim)") {
    const Matrix<T> none = table.forward(emb::IndexSpan());
    CHECK(none.rows() == 0);
    CHECK(none.cols() == 2);
  }
  SUBCASE("out of the wrong shape") {
    Matrix<T> out(3, 2);
    const auto msg = message_of<std::invalid_argument>([&] { table.forward({1, 2}, out); });
    CHECK(contains_all(msg, {"2", "3"}));
  }
}

TEST_CASE_TEMPLATE("Embedding: bad indices throw std::out_of_range naming value, position, range",
                   T, float, double) {
  emb::Embedding<T> table(emb::EmbeddingOptions(3, 2).max_norm(1.0));
  table.set_weight(mat<T>(3, 2, {3, 4, 6, 8, 0, 5}));
  const Matrix<T> before = table.weight();
  const Matrix<T> g = Matrix<T>::Ones(3, 2);

  SUBCASE("too large") {
    const auto msg = message_of<std::out_of_range>([&] { table.forward({0, 1, 7}); });
    INFO(msg);
    CHECK(contains_all(msg, {"7", "2", "3"}));
  }
  SUBCASE("negative: no wrap-around") {
    const auto msg = message_of<std::out_of_range>([&] { table.forward({-1}); });
    INFO(msg);
    CHECK(contains_all(msg, {"-1", "0", "3"}));
  }
  SUBCASE("equal to N, and the extreme values") {
    CHECK_THROWS_AS(table.forward({3}), std::out_of_range);
    CHECK_THROWS_AS(table.forward({std::numeric_limits<Index>::min()}), std::out_of_range);
    CHECK_THROWS_AS(table.forward({std::numeric_limits<Index>::max()}), std::out_of_range);
  }
  SUBCASE("in backward and backward_dense") {
    CHECK_THROWS_AS(table.backward({0, 1, 9}, g), std::out_of_range);
    CHECK_THROWS_AS(table.backward_dense({0, -2, 1}, g), std::out_of_range);
  }
  // Strong guarantee: rows 0 and 1 would have been renormalised had the call gone ahead.
  CHECK(bit_identical(table.weight(), before));
}

TEST_CASE_TEMPLATE("Embedding: invalid options throw std::invalid_argument naming option and value",
                   T, float, double) {
  const auto check = [](const emb::EmbeddingOptions& opts, const char* option, const char* value) {
    const auto msg = message_of<std::invalid_argument>([&] { emb::Embedding<T> bad(opts); });
    INFO(msg);
    CHECK(contains_all(msg, {option, value}));
  };
  const double nan = std::numeric_limits<double>::quiet_NaN();
  check(emb::EmbeddingOptions(-1, 3), "num_embeddings", "-1");
  check(emb::EmbeddingOptions(4, -2), "embedding_dim", "-2");
  check(emb::EmbeddingOptions(4, 3).padding_idx(4), "padding_idx", "4");
  check(emb::EmbeddingOptions(4, 3).padding_idx(-5), "padding_idx", "-5");
  check(emb::EmbeddingOptions(4, 3).max_norm(0.0), "max_norm", "0");
  check(emb::EmbeddingOptions(4, 3).max_norm(-1.5), "max_norm", "-1.5");
  check(emb::EmbeddingOptions(4, 3).max_norm(nan), "max_norm", "nan");
  check(emb::EmbeddingOptions(4, 3).norm_type(0.0), "norm_type", "0");
  check(emb::EmbeddingOptions(4, 3).norm_type(nan), "norm_type", "nan");
  CHECK_THROWS_AS(emb::Embedding<T>(-1, 2), std::invalid_argument);
  CHECK_THROWS_AS(emb::Embedding<T>::from_pretrained(Matrix<T>::Zero(3, 2),
                                                     emb::FromPretrainedOptions().padding_idx(3)),
                  std::invalid_argument);
  CHECK_THROWS_AS(emb::Embedding<T>::from_pretrained(Matrix<T>::Zero(3, 2),
                                                     emb::FromPretrainedOptions().max_norm(0.0)),
                  std::invalid_argument);
  // Edge values that are valid.
  CHECK_NOTHROW(emb::Embedding<T>(emb::EmbeddingOptions(4, 3).padding_idx(-4)));
  CHECK_NOTHROW(emb::Embedding<T>(emb::EmbeddingOptions(4, 3).padding_idx(3)));
  CHECK_NOTHROW(emb::Embedding<T>(
      emb::EmbeddingOptions(4, 3).norm_type(std::numeric_limits<double>::infinity())));
}

TEST_CASE_TEMPLATE(
    "Embedding: max_norm rescales distinct looked-up rows whose norm is strictly over", T, float,
    double) {
  // Rows: (3, 4) has L2 5, L1 7, Linf 4; (1, 0) has norm exactly 1 under every p; (6, 8) is
  // never looked up.
  const Matrix<T> w = mat<T>(3, 2, {3, 4, 1, 0, 6, 8});

  SUBCASE("p = 2") {
    auto table = emb::Embedding<T>::from_pretrained(w, emb::FromPretrainedOptions().max_norm(1.0));
    const double s = 1.0 / (5.0 + 1e-7);
    // Index 0 twice: rescaled once, both output rows see the rescaled row.
    const Matrix<T> out = table.forward({0, 1, 0});
    check_near(out, 3, 2, {3 * s, 4 * s, 1, 0, 3 * s, 4 * s});
    check_near(table.weight(), 3, 2, {3 * s, 4 * s, 1, 0, 6, 8});
    CHECK(table.weight()(1, 0) == T(1));  // norm == max_norm: strictly not over, untouched
    CHECK(table.weight()(2, 1) == T(8));  // not referenced: untouched
  }
  SUBCASE("p = 1") {
    auto table = emb::Embedding<T>::from_pretrained(
        w, emb::FromPretrainedOptions().max_norm(2.0).norm_type(1.0));
    const double s = 2.0 / (7.0 + 1e-7);
    check_near(table.forward({0, 1}), 2, 2, {3 * s, 4 * s, 1, 0});
  }
  SUBCASE("p = infinity") {
    auto table =
        emb::Embedding<T>::from_pretrained(w, emb::FromPretrainedOptions().max_norm(2.0).norm_type(
                                                  std::numeric_limits<double>::infinity()));
    const double s = 2.0 / (4.0 + 1e-7);
    check_near(table.forward({0}), 1, 2, {3 * s, 4 * s});
  }
  SUBCASE("the padding row is not excluded") {
    auto table = emb::Embedding<T>::from_pretrained(
        w, emb::FromPretrainedOptions().max_norm(1.0).padding_idx(2));
    const double s = 1.0 / (10.0 + 1e-7);
    check_near(table.forward({2}), 1, 2, {6 * s, 8 * s});
  }
  SUBCASE("a table built from options renormalises too") {
    emb::Embedding<T> table(emb::EmbeddingOptions(3, 2).max_norm(1.0));
    table.set_weight(w);
    table.forward({2});
    const double s = 1.0 / (10.0 + 1e-7);
    check_near(table.weight(), 3, 2, {3, 4, 1, 0, 6 * s, 8 * s});
  }
}

TEST_CASE_TEMPLATE("Embedding: backward_dense and backward on a hand-worked case", T, float,
                   double) {
  // indices (2, 0, 2), grad_output rows g0 = (1, 2), g1 = (3, 4), g2 = (5, 6):
  //   row 0 = g1 = (3, 4); row 2 = g0 + g2 = (6, 8); rows 1, 3 zero.
  const Matrix<T> g = mat<T>(3, 2, {1, 2, 3, 4, 5, 6});
  const std::vector<Index> idx{2, 0, 2};

  SUBCASE("plain") {
    emb::Embedding<T> table(4, 2);
    check_near(table.backward_dense(idx, g), 4, 2, {3, 4, 0, 0, 6, 8, 0, 0});
    const emb::SparseGrad<T> sg = table.backward(idx, g);
    CHECK(sg.num_embeddings == 4);
    CHECK(sg.rows == std::vector<Index>{0, 2});
    check_near(sg.values, 2, 2, {3, 4, 6, 8});
    CHECK(bit_identical(sg.to_dense(), table.backward_dense(idx, g)));
  }
  SUBCASE("padding row gets exactly zero and is absent from the sparse rows") {
    emb::Embedding<T> table(emb::EmbeddingOptions(4, 2).padding_idx(-4));  // = 0
    check_near(table.backward_dense(idx, g), 4, 2, {0, 0, 0, 0, 6, 8, 0, 0});
    const auto sg = table.backward(idx, g);
    CHECK(sg.rows == std::vector<Index>{2});
    check_near(sg.values, 1, 2, {6, 8});
  }
  SUBCASE("scale_grad_by_freq divides by the count over the whole call") {
    emb::Embedding<T> table(emb::EmbeddingOptions(4, 2).scale_grad_by_freq(true));
    // row 2 appears twice: (6, 8) / 2; row 0 once.
    check_near(table.backward_dense(idx, g), 4, 2, {3, 4, 0, 0, 3, 4, 0, 0});
    const auto sg = table.backward(idx, g);
    CHECK(sg.rows == std::vector<Index>{0, 2});
    check_near(sg.values, 2, 2, {3, 4, 3, 4});
  }
  SUBCASE("rows strictly increasing whatever the input order") {
    emb::Embedding<T> table(10, 2);
    const std::vector<Index> shuffled{9, 3, 7, 3, 0, 9, 5};
    const Matrix<T> ones = Matrix<T>::Ones(7, 2);
    const auto sg = table.backward(shuffled, ones);
    CHECK(sg.rows == std::vector<Index>{0, 3, 5, 7, 9});
    check_near(sg.values, 5, 2, {1, 1, 2, 2, 1, 1, 1, 1, 2, 2});
  }
  SUBCASE("an expression as grad_output, empty input") {
    emb::Embedding<T> table(4, 2);
    check_near(table.backward_dense({1}, Matrix<T>::Constant(1, 2, T(2))), 4, 2,
               {0, 0, 2, 2, 0, 0, 0, 0});
    const auto none = table.backward(emb::IndexSpan(), Matrix<T>(0, 2));
    CHECK(none.rows.empty());
    CHECK(none.values.rows() == 0);
    CHECK(none.num_embeddings == 4);
  }
  SUBCASE("grad_output of the wrong shape") {
    emb::Embedding<T> table(4, 2);
    const Matrix<T> wrong = Matrix<T>::Zero(2, 3);
    const auto msg = message_of<std::invalid_argument>([&] { table.backward(idx, wrong); });
    INFO(msg);
    CHECK(contains_all(msg, {"3", "2"}));
    CHECK_THROWS_AS(table.backward_dense(idx, wrong), std::invalid_argument);
  }
}

TEST_CASE("Embedding: the seeds' examples 1, 3 and 4") {
  emb::Vocabulary vocab;
  vocab.add("hello");
  vocab.add("<PAD>");
  vocab.add("world");
  emb::Embedding<float> table(emb::EmbeddingOptions(3, 4).padding_idx(1));
  const auto ids = vocab.encode({"hello", "world", "<PAD>", "<PAD>"});
  CHECK(ids == std::vector<Index>{0, 2, 1, 1});
  const Matrix<float> out = table.forward(ids);
  CHECK(out.rows() == 4);
  CHECK(out.row(2).isZero(0));
  CHECK(out.row(3).isZero(0));
  CHECK_FALSE(out.row(0).isZero(0));

  emb::Vocabulary grades;
  for (const char* t : {"优", "良", "差"}) grades.add(t);
  emb::Embedding<float> graded(grades.size(), 5);
  CHECK_THROWS_AS(graded.forward({3}), std::out_of_range);

  auto pre = emb::Embedding<float>::from_pretrained(
      mat<float>(3, 5, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}));
  CHECK(pre.frozen());
  check_near(pre.forward({2, 0}), 2, 5, {11, 12, 13, 14, 15, 1, 2, 3, 4, 5});
}

// ---------------------------------------------------------------------------------------------
// Linear and the one-hot path
// ---------------------------------------------------------------------------------------------

TEST_CASE_TEMPLATE("Linear: shapes, default init range, hand-set forward and backward", T, float,
                   double) {
  emb::Linear<T> layer(3, 2);
  CHECK(layer.has_bias());
  REQUIRE(layer.weight().rows() == 2);
  REQUIRE(layer.weight().cols() == 3);
  REQUIRE(layer.bias().size() == 2);
  const double bound = 1.0 / std::sqrt(3.0);
  CHECK(static_cast<double>(layer.weight().cwiseAbs().maxCoeff()) <= bound);
  CHECK(static_cast<double>(layer.bias().cwiseAbs().maxCoeff()) <= bound);
  emb::Linear<T> same_seed(3, 2, true, 0);
  CHECK(bit_identical(layer.weight(), same_seed.weight()));

  // W = [[1, 2, 3], [4, 5, 6]], b = (0.5, -1), x = [[1, 0, -1], [2, 1, 0]]:
  //   y0 = (1 - 3 + 0.5, 4 - 6 - 1) = (-1.5, -3); y1 = (2 + 2 + 0.5, 8 + 5 - 1) = (4.5, 12).
  layer.set_weight(mat<T>(2, 3, {1, 2, 3, 4, 5, 6}));
  layer.set_bias(vec<T>({0.5, -1}));
  const Matrix<T> x = mat<T>(2, 3, {1, 0, -1, 2, 1, 0});
  check_near(layer.forward(x), 2, 2, {-1.5, -3, 4.5, 12});

  // g = [[1, 0], [0, 1]]: grad_input = g W = W; grad_weight = g^T x = x; grad_bias = (1, 1).
  const emb::LinearGrad<T> grad = layer.backward(x, Matrix<T>::Identity(2, 2));
  check_near(grad.input, 2, 3, {1, 2, 3, 4, 5, 6});
  check_near(grad.weight, 2, 3, {1, 0, -1, 2, 1, 0});
  check_near(grad.bias, 2, 1, {1, 1});

  // g = [[1, 2], [3, -1]]: grad_bias = column sums (4, 1);
  //   grad_weight = g^T x = [[1*1 + 3*2, 0 + 3, -1 + 0], [2 - 2, 0 - 1, -2 - 0]] = [[7, 3, -1], [0,
  //   -1, -2]].
  const auto grad2 = layer.backward(x, mat<T>(2, 2, {1, 2, 3, -1}));
  check_near(grad2.weight, 2, 3, {7, 3, -1, 0, -1, -2});
  check_near(grad2.bias, 2, 1, {4, 1});
  // grad_input = g W = [[1 + 8, 2 + 10, 3 + 12], [3 - 4, 6 - 5, 9 - 6]].
  check_near(grad2.input, 2, 3, {9, 12, 15, -1, 1, 3});

  SUBCASE("without bias") {
    emb::Linear<T> plain(3, 2, false);
    CHECK_FALSE(plain.has_bias());
    CHECK(plain.bias().size() == 0);
    plain.set_weight(mat<T>(2, 3, {1, 2, 3, 4, 5, 6}));
    check_near(plain.forward(x), 2, 2, {-2, -2, 4, 13});
    CHECK(plain.backward(x, Matrix<T>::Ones(2, 2)).bias.size() == 0);
  }
  SUBCASE("wrong shapes are rejected and change nothing") {
    const Matrix<T> w = layer.weight();
    CHECK_THROWS_AS(layer.set_weight(Matrix<T>::Zero(3, 2)), std::invalid_argument);
    CHECK_THROWS_AS(layer.set_bias(Vector<T>::Zero(3)), std::invalid_argument);
    CHECK_THROWS_AS(layer.forward(Matrix<T>::Zero(2, 2)), std::invalid_argument);
    CHECK_THROWS_AS(layer.backward(x, Matrix<T>::Zero(2, 3)), std::invalid_argument);
    CHECK(bit_identical(layer.weight(), w));
  }
  emb::Linear<> default_float(2, 2);
  // weight() reads the stored matrix of float (an owned matrix or a view of it).
  static_assert(std::is_same_v<typename std::decay_t<decltype(default_float.weight())>::Scalar, float>);
}

TEST_CASE_TEMPLATE("one_hot: one 1 per row, dense and sparse, and it checks indices", T, float,
                   double) {
  check_near(emb::one_hot<T>({2, 0, 2}, 3), 3, 3, {0, 0, 1, 1, 0, 0, 0, 0, 1});
  const Matrix<float> default_type = emb::one_hot({1}, 2);
  check_near(default_type, 1, 2, {0, 1});

  const auto sparse = emb::one_hot_sparse<T>({2, 0, 2}, 3);
  static_assert(std::is_same_v<std::decay_t<decltype(sparse)>,
                               Eigen::SparseMatrix<T, Eigen::RowMajor, Index>>);
  CHECK(sparse.nonZeros() == 3);
  CHECK(sparse.coeff(0, 2) == T(1));
  CHECK(sparse.coeff(1, 0) == T(1));
  CHECK(sparse.coeff(2, 2) == T(1));
  CHECK(sparse.coeff(0, 0) == T(0));
  static_assert(std::is_same_v<decltype(emb::one_hot_sparse({0}, 1)),
                               Eigen::SparseMatrix<float, Eigen::RowMajor, Index>>);

  const auto msg = message_of<std::out_of_range>([] { emb::one_hot<T>({0, 5}, 3); });
  CHECK(contains_all(msg, {"5", "1", "3"}));
  CHECK_THROWS_AS(emb::one_hot_sparse<T>({-1}, 3), std::out_of_range);
  CHECK(emb::one_hot<T>(emb::IndexSpan(), 4).rows() == 0);
}

TEST_CASE_TEMPLATE("one_hot x weight == lookup == as_linear, and their gradients agree", T, float,
                   double) {
  emb::Embedding<T> table(emb::EmbeddingOptions(6, 3), 5);
  const std::vector<Index> idx{4, 0, 4, 2, 5};

  const Matrix<T> looked_up = table.forward(idx);
  const Matrix<T> product = emb::one_hot<T>(idx, 6) * table.weight();
  CHECK(bit_identical(product, looked_up));  // exactly: each output is 1 * w plus zeros
  const Matrix<T> sparse_product = emb::one_hot_sparse<T>(idx, 6) * table.weight();
  CHECK(bit_identical(sparse_product, looked_up));

  const emb::Linear<T> linear = emb::as_linear(table);
  CHECK_FALSE(linear.has_bias());
  CHECK(bit_identical(linear.weight(), table.weight().transpose()));
  CHECK(bit_identical(linear.forward(emb::one_hot<T>(idx, 6)), looked_up));

  Matrix<T> g(5, 3);
  for (Index i = 0; i < g.size(); ++i) g.data()[i] = static_cast<T>(i % 7) - T(3);
  const auto lg = linear.backward(emb::one_hot<T>(idx, 6), g);
  const Matrix<T> dense = table.backward_dense(idx, g);
  const Matrix<T> from_linear = lg.weight.transpose();
  REQUIRE(from_linear.rows() == 6);
  for (Index r = 0; r < 6; ++r) {
    for (Index c = 0; c < 3; ++c) {
      CHECK(static_cast<double>(from_linear(r, c)) == near<T>(static_cast<double>(dense(r, c))));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// EmbeddingBag
// ---------------------------------------------------------------------------------------------

// Rows: 0 = (1, 2), 1 = (3, 4), 2 = (5, -6), 3 = (0, 10). Bags (0, 1) | (2, 3).
template <class T>
Matrix<T> bag_table() {
  return mat<T>(4, 2, {1, 2, 3, 4, 5, -6, 0, 10});
}

TEST_CASE("EmbeddingBagOptions and FromPretrainedBagOptions: Mean by default, chainable") {
  const emb::EmbeddingBagOptions defaults(10, 3);
  CHECK(defaults.mode() == emb::BagMode::Mean);
  CHECK_FALSE(defaults.include_last_offset());
  CHECK(defaults.padding_idx() == std::nullopt);
  CHECK(defaults.norm_type() == 2.0);
  auto opts = emb::EmbeddingBagOptions(10, 3)
                  .mode(emb::BagMode::Max)
                  .include_last_offset(true)
                  .padding_idx(0)
                  .max_norm(1)
                  .scale_grad_by_freq(true);
  CHECK(opts.mode() == emb::BagMode::Max);
  CHECK(opts.include_last_offset());
  CHECK(opts.padding_idx() == std::optional<Index>(0));
  CHECK(opts.num_embeddings() == 10);
  CHECK(opts.embedding_dim() == 3);

  emb::FromPretrainedBagOptions pre;
  CHECK(pre.freeze());
  CHECK(pre.mode() == emb::BagMode::Mean);
  CHECK_FALSE(pre.include_last_offset());
  pre.freeze(false)
      .mode(emb::BagMode::Sum)
      .include_last_offset(true)
      .padding_idx(1)
      .max_norm(2.0)
      .norm_type(1.0)
      .scale_grad_by_freq(true);
  CHECK_FALSE(pre.freeze());
  CHECK(pre.mode() == emb::BagMode::Sum);
  CHECK(pre.include_last_offset());
  CHECK(pre.padding_idx() == std::optional<Index>(1));
  CHECK(pre.max_norm() == std::optional<double>(2.0));
  CHECK(pre.norm_type() == 1.0);
  CHECK(pre.scale_grad_by_freq());
}

TEST_CASE_TEMPLATE("EmbeddingBag: sum, mean and max forward on a hand-worked case", T, float,
                   double) {
  const std::vector<Index> idx{0, 1, 2, 3};
  const std::vector<Index> off{0, 2};
  using Opts = emb::FromPretrainedBagOptions;

  SUBCASE("constructors") {
    emb::EmbeddingBag<T> bag(10, 3);
    CHECK(bag.num_embeddings() == 10);
    CHECK(bag.embedding_dim() == 3);
    CHECK_FALSE(bag.frozen());
    emb::EmbeddingBag<T> seeded(emb::EmbeddingBagOptions(5, 2).padding_idx(-1), 3);
    CHECK(seeded.padding_idx() == std::optional<Index>(4));
    CHECK(seeded.weight().row(4).isZero(0));
    auto pre = emb::EmbeddingBag<T>::from_pretrained(bag_table<T>(), {});
    CHECK(pre.frozen());
    CHECK(bit_identical(pre.weight(), bag_table<T>()));
    auto kept = emb::EmbeddingBag<T>::from_pretrained(bag_table<T>(), Opts().padding_idx(-4));
    CHECK(kept.padding_idx() == std::optional<Index>(0));
    CHECK(bit_identical(kept.weight(), bag_table<T>()));  // the padding row is not zeroed
    pre.set_weight(Matrix<T>::Zero(4, 2));
    CHECK(pre.weight().isZero(0));
    CHECK_THROWS_AS(pre.set_weight(Matrix<T>::Zero(2, 4)), std::invalid_argument);
  }
  SUBCASE("mean is the default") {
    auto bag = emb::EmbeddingBag<T>::from_pretrained(bag_table<T>());
    // ((1+3)/2, (2+4)/2), ((5+0)/2, (-6+10)/2)
    check_near(bag.forward(idx, off), 2, 2, {2, 3, 2.5, 2});
  }
  SUBCASE("sum") {
    auto bag =
        emb::EmbeddingBag<T>::from_pretrained(bag_table<T>(), Opts().mode(emb::BagMode::Sum));
    check_near(bag.forward(idx, off), 2, 2, {4, 6, 5, 4});
    // per_sample_weights (2, 1, 0.5, -1): 2*(1,2) + (3,4) = (5, 8); 0.5*(5,-6) - (0,10) = (2.5,
    // -13)
    check_near(bag.forward(idx, off, vec<T>({2, 1, 0.5, -1})), 2, 2, {5, 8, 2.5, -13});
  }
  SUBCASE("max: element-wise") {
    auto bag =
        emb::EmbeddingBag<T>::from_pretrained(bag_table<T>(), Opts().mode(emb::BagMode::Max));
    check_near(bag.forward(idx, off), 2, 2, {3, 4, 5, 10});
  }
  SUBCASE("braced lists for indices and offsets") {
    auto bag =
        emb::EmbeddingBag<T>::from_pretrained(bag_table<T>(), Opts().mode(emb::BagMode::Sum));
    check_near(bag.forward({0, 1, 2, 3}, {0, 2}), 2, 2, {4, 6, 5, 4});
    check_near(bag.forward({3}, {0}), 1, 2, {0, 10});
  }
  SUBCASE("include_last_offset: B = len(offsets) - 1") {
    auto bag = emb::EmbeddingBag<T>::from_pretrained(
        bag_table<T>(), Opts().mode(emb::BagMode::Sum).include_last_offset(true));
    check_near(bag.forward(idx, {0, 2, 4}), 2, 2, {4, 6, 5, 4});
    const auto msg = message_of<std::invalid_argument>([&] { bag.forward(idx, {0, 2, 3}); });
    INFO(msg);
    CHECK(contains_all(msg, {"3"}));
  }
  SUBCASE("padding entries are skipped; mean divides by the non-padding count") {
    auto mean = emb::EmbeddingBag<T>::from_pretrained(bag_table<T>(), Opts().padding_idx(1));
    // bag 0 = (0, 1) with 1 padding: (1, 2) / 1
    check_near(mean.forward(idx, off), 2, 2, {1, 2, 2.5, 2});
    auto sum = emb::EmbeddingBag<T>::from_pretrained(bag_table<T>(),
                                                     Opts().padding_idx(1).mode(emb::BagMode::Sum));
    check_near(sum.forward(idx, off), 2, 2, {1, 2, 5, 4});
    auto max = emb::EmbeddingBag<T>::from_pretrained(bag_table<T>(),
                                                     Opts().padding_idx(1).mode(emb::BagMode::Max));
    check_near(max.forward(idx, off), 2, 2, {1, 2, 5, 10});
  }
  SUBCASE("max_norm renormalises the looked-up rows first") {
    auto bag = emb::EmbeddingBag<T>::from_pretrained(mat<T>(2, 2, {3, 4, 0, 0.5}),
                                                     Opts().mode(emb::BagMode::Sum).max_norm(1.0));
    const double s = 1.0 / (5.0 + 1e-7);
    check_near(bag.forward({0, 1}, {0}), 1, 2, {3 * s, 4 * s + 0.5});
    check_near(bag.weight(), 2, 2, {3 * s, 4 * s, 0, 0.5});
  }
  SUBCASE("empty and all-padding bags give zeros in every mode") {
    for (auto mode : {emb::BagMode::Sum, emb::BagMode::Mean, emb::BagMode::Max}) {
      auto bag =
          emb::EmbeddingBag<T>::from_pretrained(bag_table<T>(), Opts().mode(mode).padding_idx(2));
      // bags: [] | (2, 2) all padding | (3)
      check_near(bag.forward({2, 2, 3}, {0, 0, 2}), 3, 2, {0, 0, 0, 0, 0, 10});
    }
  }
}

TEST_CASE_TEMPLATE("EmbeddingBag: backward on hand-worked cases", T, float, double) {
  const std::vector<Index> idx{0, 1, 2, 3};
  const std::vector<Index> off{0, 2};
  const Matrix<T> g = mat<T>(2, 2, {1, 1, 2, 3});
  using Opts = emb::FromPretrainedBagOptions;

  SUBCASE("sum: every entry gets its bag's gradient") {
    auto bag =
        emb::EmbeddingBag<T>::from_pretrained(bag_table<T>(), Opts().mode(emb::BagMode::Sum));
    const auto sg = bag.backward(idx, off, g);
    CHECK(sg.num_embeddings == 4);
    CHECK(sg.rows == std::vector<Index>{0, 1, 2, 3});
    check_near(sg.values, 4, 2, {1, 1, 1, 1, 2, 3, 2, 3});
    CHECK(bit_identical(bag.backward_dense(idx, off, g), sg.to_dense()));
  }
  SUBCASE("sum with per_sample_weights: psw_i * g[bag(i)]") {
    auto bag =
        emb::EmbeddingBag<T>::from_pretrained(bag_table<T>(), Opts().mode(emb::BagMode::Sum));
    const Vector<T> psw = vec<T>({2, 1, 0.5, -1});
    const auto sg = bag.backward(idx, off, g, psw);
    CHECK(sg.rows == std::vector<Index>{0, 1, 2, 3});
    check_near(sg.values, 4, 2, {2, 2, 1, 1, 1, 1.5, -2, -3});
    check_near(bag.backward_dense(idx, off, g, psw), 4, 2, {2, 2, 1, 1, 1, 1.5, -2, -3});
  }
  SUBCASE("mean: divided by the bag's non-padding count") {
    auto bag = emb::EmbeddingBag<T>::from_pretrained(bag_table<T>(), Opts().padding_idx(1));
    const auto sg = bag.backward(idx, off, g);
    // row 0 is alone in bag 0 (row 1 is padding): (1, 1); rows 2, 3: (2, 3) / 2.
    CHECK(sg.rows == std::vector<Index>{0, 2, 3});
    check_near(sg.values, 3, 2, {1, 1, 1, 1.5, 1, 1.5});
    check_near(bag.backward_dense(idx, off, g), 4, 2, {1, 1, 0, 0, 1, 1.5, 1, 1.5});
  }
  SUBCASE("max: the gradient goes to the winning rows") {
    auto bag =
        emb::EmbeddingBag<T>::from_pretrained(bag_table<T>(), Opts().mode(emb::BagMode::Max));
    // bag 0: row 1 wins both columns; bag 1: row 2 wins column 0, row 3 column 1.
    check_near(bag.backward_dense(idx, off, g), 4, 2, {0, 0, 1, 1, 2, 0, 0, 3});
    CHECK(bit_identical(bag.backward(idx, off, g).to_dense(), bag.backward_dense(idx, off, g)));
  }
  SUBCASE("max: ties keep the first occurrence") {
    auto bag = emb::EmbeddingBag<T>::from_pretrained(mat<T>(2, 2, {1, 1, 1, 1}),
                                                     Opts().mode(emb::BagMode::Max));
    check_near(bag.backward_dense({1, 0}, {0}, mat<T>(1, 2, {1, 2})), 2, 2, {0, 0, 1, 2});
  }
  SUBCASE("scale_grad_by_freq counts each index over the whole call") {
    // bags (0, 0) | (1), g = (1, 2) | (3, 4)
    const Matrix<T> g2 = mat<T>(2, 2, {1, 2, 3, 4});
    auto sum = emb::EmbeddingBag<T>::from_pretrained(
        bag_table<T>(), Opts().mode(emb::BagMode::Sum).scale_grad_by_freq(true));
    // row 0: ((1, 2) + (1, 2)) / 2
    check_near(sum.backward_dense({0, 0, 1}, {0, 2}, g2), 4, 2, {1, 2, 3, 4, 0, 0, 0, 0});
    auto mean =
        emb::EmbeddingBag<T>::from_pretrained(bag_table<T>(), Opts().scale_grad_by_freq(true));
    // row 0: 2 entries of (1, 2) / 2, then / count 2
    check_near(mean.backward_dense({0, 0, 1}, {0, 2}, g2), 4, 2, {0.5, 1, 3, 4, 0, 0, 0, 0});
  }
}

TEST_CASE_TEMPLATE("EmbeddingBag: bad offsets, indices and shapes throw and change nothing", T,
                   float, double) {
  emb::EmbeddingBag<T> bag(emb::EmbeddingBagOptions(4, 2).max_norm(1.0).mode(emb::BagMode::Sum));
  bag.set_weight(bag_table<T>());
  const Matrix<T> before = bag.weight();
  const std::vector<Index> idx{0, 1, 2};

  const auto offset_error = [&](std::vector<Index> off, const char* offending) {
    const auto msg = message_of<std::invalid_argument>([&] { bag.forward(idx, off); });
    INFO(msg);
    CHECK(contains_all(msg, {offending}));
  };
  offset_error({1, 2}, "1");     // not starting at 0
  offset_error({0, 2, 1}, "1");  // decreasing
  offset_error({0, 5}, "5");     // past the end

  const auto msg = message_of<std::out_of_range>([&] { bag.forward({0, 9, 1}, {0}); });
  INFO(msg);
  CHECK(contains_all(msg, {"9", "1", "4"}));
  CHECK_THROWS_AS(bag.forward({-1}, {0}), std::out_of_range);
  CHECK_THROWS_AS(bag.backward({0, 4}, {0}, Matrix<T>::Zero(1, 2)), std::out_of_range);
  CHECK_THROWS_AS(bag.backward(idx, {0}, Matrix<T>::Zero(2, 2)), std::invalid_argument);
  CHECK_THROWS_AS(bag.forward(idx, {0}, vec<T>({1, 2})), std::invalid_argument);

  auto mean = emb::EmbeddingBag<T>::from_pretrained(bag_table<T>());
  CHECK_THROWS_AS(mean.forward(idx, {0}, vec<T>({1, 1, 1})), std::invalid_argument);
  CHECK_THROWS_AS(emb::EmbeddingBag<T>(emb::EmbeddingBagOptions(4, 2).padding_idx(4)),
                  std::invalid_argument);
  CHECK(bit_identical(bag.weight(), before));
}

// ---------------------------------------------------------------------------------------------
// Optimizers
// ---------------------------------------------------------------------------------------------

TEST_CASE_TEMPLATE("optim::SGD: the sparse step is the dense step w -= lr * g", T, float, double) {
  auto table = emb::Embedding<T>::from_pretrained(identity_table<T>(), {});
  table.freeze(false);
  emb::optim::SGD<T> sgd(0.5);
  const Matrix<T> g = mat<T>(3, 2, {2, 4, 6, 8, -2, 2});
  const std::vector<Index> idx{3, 1, 3};
  // dense gradient: row 1 = (6, 8), row 3 = (2, 4) + (-2, 2) = (0, 6)
  sgd.step(table, table.backward(idx, g));
  check_near(table.weight(), 5, 2, {0, 0, 1 - 3, 10 - 4, 2, 20, 3, 30 - 3, 4, 40});

  SUBCASE("a frozen table never moves") {
    const Matrix<T> before = table.weight();
    table.freeze();
    sgd.step(table, table.backward(idx, g));
    CHECK(bit_identical(table.weight(), before));
  }
  SUBCASE("a hand-made gradient for an EmbeddingBag") {
    auto bag = emb::EmbeddingBag<T>::from_pretrained(bag_table<T>(),
                                                     emb::FromPretrainedBagOptions().freeze(false));
    const emb::SparseGrad<T> hand{4, {0, 2}, mat<T>(2, 2, {2, 2, -4, 4})};
    sgd.step(bag, hand);
    check_near(bag.weight(), 4, 2, {0, 1, 3, 4, 7, -8, 0, 10});
  }
  SUBCASE("a gradient that does not fit the table is rejected and changes nothing") {
    const Matrix<T> before = table.weight();
    const emb::SparseGrad<T> wrong{7, {0}, mat<T>(1, 2, {1, 1})};
    CHECK_THROWS_AS(sgd.step(table, wrong), std::invalid_argument);
    const emb::SparseGrad<T> wrong_dim{5, {0}, mat<T>(1, 3, {1, 1, 1})};
    CHECK_THROWS_AS(sgd.step(table, wrong_dim), std::invalid_argument);
    // Rows out of range or not strictly increasing break SparseGrad's invariant.
    const emb::SparseGrad<T> bad_row{5, {1, 5}, mat<T>(2, 2, {1, 1, 1, 1})};
    CHECK_THROWS(sgd.step(table, bad_row));
    const emb::SparseGrad<T> unsorted{5, {3, 1}, mat<T>(2, 2, {1, 1, 1, 1})};
    CHECK_THROWS(sgd.step(table, unsorted));
    emb::optim::SparseAdam<T> adam;
    CHECK_THROWS(adam.step(table, unsorted));
    emb::optim::Adagrad<T> adagrad(0.1);
    CHECK_THROWS(adagrad.step(table, bad_row));
    CHECK(bit_identical(table.weight(), before));
  }
}

TEST_CASE_TEMPLATE("optim::Adagrad: defaults and the dense formula", T, float, double) {
  // Row 1 = (1, 10). g = (2, -3): sum = (4, 9), w -= lr * g / (sqrt(sum) + eps) = 0.5 * (1, -1).
  auto table = emb::Embedding<T>::from_pretrained(identity_table<T>(),
                                                  emb::FromPretrainedOptions().freeze(false));
  emb::optim::Adagrad<T> adagrad(0.5);  // lr_decay 0, eps 1e-10, initial 0
  const emb::SparseGrad<T> g{5, {1}, mat<T>(1, 2, {2, -3})};
  adagrad.step(table, g);
  const double e = 1e-10;
  const double u = 0.5 * 2 / (2 + e), u2 = 0.5 * 3 / (3 + e);
  check_near(table.weight(), 5, 2, {0, 0, 1 - u, 10 + u2, 2, 20, 3, 30, 4, 40});
  // Again: sum = (8, 18): 0.5 * 2 / sqrt(8) = 0.5 * 3 / sqrt(18) = 1 / sqrt(8), up to eps.
  adagrad.step(table, g);
  const double d = 0.5 * 2 / (std::sqrt(8.0) + e), d2 = 0.5 * 3 / (std::sqrt(18.0) + e);
  check_near(table.weight().row(1), 1, 2, {1 - u - d, 10 + u2 + d2});

  SUBCASE("lr_decay, eps and initial_accumulator_value") {
    auto t2 = emb::Embedding<T>::from_pretrained(identity_table<T>(),
                                                 emb::FromPretrainedOptions().freeze(false));
    emb::optim::Adagrad<T> decayed(1.0, 1.0, 0.5, 5.0);
    const emb::SparseGrad<T> g2{5, {2}, mat<T>(1, 2, {2, 0})};
    // step 1: clr = 1, sum = (9, 5): w -= (2 / (3 + 0.5), 0)
    decayed.step(t2, g2);
    check_near(t2.weight().row(2), 1, 2, {2 - 2 / 3.5, 20});
    // step 2: clr = 1 / (1 + 1) = 0.5, sum = (13, 5): w -= 0.5 * 2 / (sqrt(13) + 0.5)
    decayed.step(t2, g2);
    check_near(t2.weight().row(2), 1, 2, {2 - 2 / 3.5 - 1 / (std::sqrt(13.0) + 0.5), 20});
    check_near(t2.weight().row(0), 1, 2, {0, 0});
  }
  SUBCASE("sparse equals the dense formula over every row") {
    emb::Embedding<T> t3(emb::EmbeddingOptions(6, 3), 11);
    const Matrix<T> w0 = t3.weight();
    emb::optim::Adagrad<T> opt(0.1);
    const std::vector<Index> idx{5, 0, 5, 2};
    Matrix<T> grad_out(4, 3);
    for (Index i = 0; i < grad_out.size(); ++i)
      grad_out.data()[i] = static_cast<T>(i) * T(0.25) - T(1);
    const Matrix<double> dense = t3.backward_dense(idx, grad_out).template cast<double>();
    opt.step(t3, t3.backward(idx, grad_out));
    const Matrix<double> sum = dense.array().square();
    const Matrix<double> expected =
        w0.template cast<double>().array() - 0.1 * dense.array() / (sum.array().sqrt() + 1e-10);
    for (Index i = 0; i < expected.size(); ++i) {
      CHECK(static_cast<double>(t3.weight().data()[i]) == near<T>(expected.data()[i]));
    }
  }
}

TEST_CASE_TEMPLATE("optim::SparseAdam: defaults, lazy rows, one step counter per table", T, float,
                   double) {
  const double lr = 1e-3, b1 = 0.9, b2 = 0.999, eps = 1e-8;
  const auto step_size = [&](int t) {
    return lr * std::sqrt(1.0 - std::pow(b2, t)) / (1.0 - std::pow(b1, t));
  };
  auto table = emb::Embedding<T>::from_pretrained(identity_table<T>(),
                                                  emb::FromPretrainedOptions().freeze(false));
  emb::optim::SparseAdam<T> adam;
  const double g = 2.0;
  const emb::SparseGrad<T> on_row1{5, {1}, mat<T>(1, 2, {g, -g})};
  const emb::SparseGrad<T> on_row3{5, {3}, mat<T>(1, 2, {g, g})};

  // t = 1, row 1: m = 0.1 g, v = 0.001 g^2
  adam.step(table, on_row1);
  double m = (1 - b1) * g, v = (1 - b2) * g * g;
  const double u1 = step_size(1) * m / (std::sqrt(v) + eps);
  double w1 = 1 - u1;
  check_near(table.weight().row(1), 1, 2, {w1, 10 + u1});

  // t = 2, row 3 only: its moments start from zero, but the step size uses t = 2. Row 1 is left
  // alone: weights and moments.
  adam.step(table, on_row3);
  const double m3 = (1 - b1) * g, v3 = (1 - b2) * g * g;
  const double w3 = 3 - step_size(2) * m3 / (std::sqrt(v3) + eps);
  check_near(table.weight().row(3), 1, 2, {w3, 30 - step_size(2) * m3 / (std::sqrt(v3) + eps)});
  CHECK(static_cast<double>(table.weight()(1, 0)) == near<T>(w1));

  // t = 3, row 1 again: m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2
  adam.step(table, on_row1);
  m = b1 * m + (1 - b1) * g;
  v = b2 * v + (1 - b2) * g * g;
  w1 -= step_size(3) * m / (std::sqrt(v) + eps);
  CHECK(static_cast<double>(table.weight()(1, 0)) == near<T>(w1));
  CHECK(static_cast<double>(table.weight()(3, 0)) == near<T>(w3));
  check_near(table.weight().row(0), 1, 2, {0, 0});

  SUBCASE("on an EmbeddingBag, and never on a frozen table") {
    auto bag = emb::EmbeddingBag<T>::from_pretrained(bag_table<T>(),
                                                     emb::FromPretrainedBagOptions().freeze(false));
    emb::optim::SparseAdam<T> opt(0.5, 0.5, 0.75, 1e-8);
    opt.step(bag, emb::SparseGrad<T>{4, {2}, mat<T>(1, 2, {1, -1})});
    // t = 1: m = 0.5 g, v = 0.25 g^2, step = 0.5 * sqrt(0.25) / 0.5 = 0.5,
    // m / (sqrt(v) + eps) = sign(g) * 0.5 / (0.5 + 1e-8)
    const double u = 0.5 * 0.5 / (0.5 + 1e-8);
    check_near(bag.weight().row(2), 1, 2, {5 - u, -6 + u});
    bag.freeze();
    const Matrix<T> before = bag.weight();
    opt.step(bag, emb::SparseGrad<T>{4, {2}, mat<T>(1, 2, {1, -1})});
    CHECK(bit_identical(bag.weight(), before));

    // Steps refused by a frozen table do not count: after unfreezing, the first real step is t = 1.
    auto later = emb::EmbeddingBag<T>::from_pretrained(bag_table<T>());
    emb::optim::SparseAdam<T> fresh(0.5, 0.5, 0.75, 1e-8);
    fresh.step(later, emb::SparseGrad<T>{4, {2}, mat<T>(1, 2, {1, -1})});
    CHECK(bit_identical(later.weight(), bag_table<T>()));
    later.freeze(false);
    fresh.step(later, emb::SparseGrad<T>{4, {2}, mat<T>(1, 2, {1, -1})});
    check_near(later.weight().row(2), 1, 2, {5 - u, -6 + u});
  }
}

TEST_CASE("optim: SGD(lr) and the defaulted constructors compile as the API writes them") {
  emb::optim::SGD<float> sgd(0.1);
  emb::optim::Adagrad<float> adagrad(0.1);
  emb::optim::Adagrad<double> adagrad_full(0.1, 0.0, 1e-10, 0.1);
  emb::optim::SparseAdam<float> adam;
  emb::optim::SparseAdam<double> adam_full(1e-3, 0.9, 0.999, 1e-8);
  emb::Embedding<float> table(4, 2);
  const Matrix<float> before = table.weight();
  sgd.step(table, table.backward({1}, Matrix<float>::Ones(1, 2)));
  adagrad.step(table, table.backward({1}, Matrix<float>::Ones(1, 2)));
  adam.step(table, table.backward({1}, Matrix<float>::Ones(1, 2)));
  CHECK(table.weight().row(1).array().sum() < before.row(1).array().sum());
  CHECK(bit_identical(table.weight().row(0), before.row(0)));
  emb::Embedding<double> dtable(4, 2);
  adagrad_full.step(dtable, dtable.backward({0}, Matrix<double>::Ones(1, 2)));
  adam_full.step(dtable, dtable.backward({0}, Matrix<double>::Ones(1, 2)));
  CHECK(dtable.weight()(0, 0) < emb::Embedding<double>(4, 2).weight()(0, 0));
}

// ---------------------------------------------------------------------------------------------
// Vocabulary
// ---------------------------------------------------------------------------------------------

TEST_CASE("Vocabulary: dense ids in insertion order, unk, UTF-8 tokens") {
  emb::Vocabulary vocab;
  CHECK(vocab.size() == 0);
  CHECK(vocab.add("优") == 0);
  CHECK(vocab.add("良") == 1);
  CHECK(vocab.add("差") == 2);
  CHECK(vocab.add("良") == 1);  // already there
  CHECK(vocab.size() == 3);
  CHECK(vocab.contains("差"));
  CHECK_FALSE(vocab.contains("中"));
  CHECK(vocab.find("良") == std::optional<Index>(1));
  CHECK(vocab.find("中") == std::nullopt);
  CHECK(vocab.id("差") == 2);
  CHECK(vocab.token(0) == "优");

  const auto msg = message_of<std::out_of_range>([&] { (void)vocab.id("中"); });
  CHECK_FALSE(msg.empty());
  CHECK_THROWS_AS((void)vocab.token(3), std::out_of_range);
  CHECK_THROWS_AS((void)vocab.token(-1), std::out_of_range);
  CHECK_THROWS_AS(vocab.encode({"优", "中"}), std::out_of_range);

  vocab.set_unk("<unk>");
  CHECK(vocab.size() == 4);
  CHECK(vocab.id("中") == 3);
  CHECK(vocab.encode({"差", "中", "优"}) == std::vector<Index>{2, 3, 0});
  vocab.set_unk("优");  // already present: no new entry
  CHECK(vocab.size() == 4);
  CHECK(vocab.id("中") == 0);

  const std::string owned = "良";
  CHECK(vocab.id(owned) == 1);
}

// ---------------------------------------------------------------------------------------------
// File I/O
// ---------------------------------------------------------------------------------------------

namespace {

// A version 1.0 .npy file, header padded to 64 bytes as NumPy does.
std::string npy_bytes(const std::string& dict, const std::string& data) {
  std::string header = dict;
  const std::size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::string out = "\x93NUMPY";
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>(header.size() >> 8);
  return out + header + data;
}

template <class T>
std::string raw(std::initializer_list<T> values) {
  std::string out;
  for (T v : values) {
    char b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    out.append(b, sizeof(T));  // little-endian hosts only, as every target of emb's CI
  }
  return out;
}

}  // namespace

TEST_CASE("io::load_npy: NumPy's files, hand-made files, float by default") {
  const std::string dir = EMB_TEST_DATA_DIR;
  // NumPy wrote this 3x4 table (tests/data/make_data.py).
  const Matrix<float> t = emb::io::load_npy(dir + "/f4_c_v1.npy");
  check_near(t, 3, 4, {0.1, -2.5, 3.0, 0.001, 1.5, 0.25, -0.125, 7.0, -0.3, 2.0, 1e-5, -4.75});
  const Matrix<double> f = emb::io::load_npy<double>(dir + "/f8_fortran_v1.npy");
  check_near(f, 3, 4, {0.1, -2.5, 3.0, 0.001, 1.5, 0.25, -0.125, 7.0, -0.3, 2.0, 1e-5, -4.75});

  // binary16, converted: row 0 of NumPy's half table is (0, -0, 1, -2), row 2 starts with inf.
  const Matrix<float> half = emb::io::load_npy(dir + "/f2_c_v1.npy");
  REQUIRE(half.rows() == 3);
  CHECK(half(0, 1) == 0.0f);
  CHECK(std::signbit(half(0, 1)));
  CHECK(half(0, 3) == -2.0f);
  CHECK(half(1, 0) == 65504.0f);
  CHECK(half(1, 2) == std::ldexp(1.0f, -24));
  CHECK(std::isinf(half(2, 0)));
  CHECK(std::isnan(half(2, 2)));

  // [[1, 2, 3], [4, 5, 6]] stored column by column.
  const auto fortran = write_file(
      "fortran.npy", npy_bytes("{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3), }",
                               raw<double>({1, 4, 2, 5, 3, 6})));
  check_near(emb::io::load_npy<double>(fortran), 2, 3, {1, 2, 3, 4, 5, 6});
  check_near(emb::io::load_npy(fortran), 2, 3, {1, 2, 3, 4, 5, 6});
}

TEST_CASE_TEMPLATE("io::save_npy then load_npy round-trips bit for bit", T, float, double) {
  Matrix<T> m(2, 3);
  m << T(0.1), T(-2.5), T(1e-7), T(3), std::numeric_limits<T>::max(), T(-0.0);
  const auto path =
      (scratch_dir() / (std::string("round_") + (sizeof(T) == 4 ? "f4" : "f8") + ".npy")).string();
  emb::io::save_npy<T>(path, m);
  CHECK(bit_identical(emb::io::load_npy<T>(path), m));
  // Read back as the other type: converted.
  using Other = std::conditional_t<std::is_same_v<T, float>, double, float>;
  const Matrix<Other> other = emb::io::load_npy<Other>(path);
  CHECK(other(0, 1) == Other(-2.5));
  CHECK(other(1, 0) == Other(3));
  // A block of a bigger matrix goes through the Ref parameter.
  Matrix<T> big = Matrix<T>::Zero(4, 4);
  big(1, 2) = T(7);
  emb::io::save_npy<T>(path, big.block(1, 1, 2, 2));
  check_near(emb::io::load_npy<T>(path), 2, 2, {0, 7, 0, 0});
}

TEST_CASE("io::load_npy: malformed files throw std::runtime_error naming the file") {
  const std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }";
  const auto check_bad = [](const std::string& name, const std::string& bytes) {
    const auto path = write_file(name, bytes);
    const auto msg = message_of<std::runtime_error>([&] { (void)emb::io::load_npy(path); });
    INFO(msg);
    CHECK(contains_all(msg, {name.c_str()}));
  };
  check_bad("truncated.npy", npy_bytes(dict, raw<float>({1, 2, 3})));
  check_bad("magic.npy", "\x93NUMPX" + npy_bytes(dict, raw<float>({1, 2, 3, 4})).substr(6));
  check_bad("object.npy", npy_bytes("{'descr': '|O', 'fortran_order': False, 'shape': (2, 2), }",
                                    raw<float>({1, 2, 3, 4})));
  check_bad("three_d.npy",
            npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 2), }",
                      raw<float>({1, 2, 3, 4})));
  check_bad("garbage.npy", npy_bytes("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (2, 2), }",
                                     raw<float>({1, 2, 3, 4})));
  check_bad("short.npy", std::string("\x93NUMPY\x01", 7));
  check_bad("empty.npy", "");
  CHECK_THROWS_AS(emb::io::load_npy((scratch_dir() / "missing.npy").string()), std::runtime_error);
  CHECK_THROWS_AS(emb::io::load_npy("emb-contract-no-such-file.npy"), std::runtime_error);
  CHECK_THROWS_AS(emb::io::load_word2vec("emb-contract-no-such-file.txt"), std::runtime_error);
}

TEST_CASE("io::load_word2vec and load_glove: text and binary, hand-written files") {
  const auto text = write_file("w2v.txt", "3 2\nhello 1 2\nworld -0.5 4 \nhello 9 9\n");
  const emb::io::Vectors<float> v = emb::io::load_word2vec(text);
  CHECK(v.vocab.size() == 2);  // the duplicate keeps the first vector
  CHECK(v.vocab.token(0) == "hello");
  CHECK(v.vocab.id("world") == 1);
  check_near(v.weight, 2, 2, {1, 2, -0.5, 4});

  std::string binary = "2 2\n";
  binary += "a " + raw<float>({1.5f, -2.0f}) + "\n";
  binary += "b " + raw<float>({0.25f, 8.0f});  // no trailing newline on the last row
  const auto bin = write_file("w2v.bin", binary);
  const emb::io::Vectors<double> vb = emb::io::load_word2vec<double>(bin);
  CHECK(vb.vocab.token(1) == "b");
  check_near(vb.weight, 2, 2, {1.5, -2, 0.25, 8});

  const auto glove = write_file("glove.txt", "new york 1 2\r\nparis 3 -4\r\n");
  const auto g = emb::io::load_glove(glove);
  static_assert(std::is_same_v<std::decay_t<decltype(g.weight)>, Matrix<float>>);
  CHECK(g.vocab.token(0) == "new york");
  check_near(g.weight, 2, 2, {1, 2, 3, -4});
  check_near(emb::io::load_glove<double>(glove).weight, 2, 2, {1, 2, 3, -4});

  const auto bad = write_file("bad.txt", "2 2\nhello 1 x\n");
  const auto msg = message_of<std::runtime_error>([&] { (void)emb::io::load_word2vec(bad); });
  INFO(msg);
  CHECK(contains_all(msg, {"bad.txt"}));
  CHECK_THROWS_AS(emb::io::load_word2vec(write_file("short.txt", "3 2\nhello 1 2\n")),
                  std::runtime_error);
  CHECK_THROWS_AS(emb::io::load_glove(write_file("ragged.txt", "a 1 2\nb 3\n")),
                  std::runtime_error);
}

TEST_CASE_TEMPLATE("io::save_word2vec: text and binary round-trip through load_word2vec", T, float,
                   double) {
  emb::Vocabulary vocab;
  vocab.add("优");
  vocab.add("差");
  const Matrix<T> w = mat<T>(2, 3, {0.5, -1.25, 3, 1e-3, 2, -7});
  for (bool binary : {false, true}) {
    const auto path = (scratch_dir() / (std::string("saved_") + (binary ? "bin" : "txt"))).string();
    emb::io::save_word2vec<T>(path, vocab, w, binary);
    const emb::io::Vectors<T> back = emb::io::load_word2vec<T>(path);
    CHECK(back.vocab.token(0) == "优");
    CHECK(back.vocab.token(1) == "差");
    // Binary rows are float32 whatever T is; text keeps every digit T needs.
    const Matrix<T> expected = binary ? Matrix<T>(w.template cast<float>().template cast<T>()) : w;
    CHECK(bit_identical(back.weight, expected));
  }
  // Vectors is the documented aggregate.
  emb::io::Vectors<T> made{vocab, w};
  CHECK(made.vocab.size() == 2);
  CHECK_THROWS_AS(emb::io::save_word2vec<T>((scratch_dir() / "x").string(), vocab,
                                            Matrix<T>::Zero(3, 3), false),
                  std::invalid_argument);
}
