// emb against libtorch itself: the strongest oracle there is for "the same numbers as
// PyTorch's CPU kernels". Built only where CMake finds Torch (Debian: libtorch-dev).
//
// Random tables, indices, bags and gradients go through emb and through libtorch's own
// functions (at::embedding, at::embedding_renorm_, at::embedding_dense_backward,
// at::embedding_backward, at::embedding_bag with autograd, torch::optim). Values must agree to
// float rounding (rtol 1e-5 float, 1e-12 double), rows touched exactly. Where emb differs from
// PyTorch on purpose (README and docs/, "Where emb differs"), the test checks emb's agreed behaviour against an oracle built
// from other libtorch calls and says what PyTorch does:
//   * sparse gradients are coalesced (PyTorch's are not until .coalesce());
//   * sparse gradients support scale_grad_by_freq (PyTorch refuses);
//   * EmbeddingBag's scale_grad_by_freq divides by count(k) of each index k (PyTorch's CPU bag
//     backward indexes its counts wrongly);
//   * bag offsets are validated whole (PyTorch checks only the first and the last).
// libtorch's C++ API has no SparseAdam: its update is written out below with libtorch ops,
// operation for operation as torch.optim.SparseAdam does it in Python.
// libtorch first: Debian's build logs through glog, whose CHECK macros would silently replace
// doctest's (a failed value check would then abort instead of being reported). They are
// dropped here so that doctest's own definitions are the ones in force below.
#include <torch/torch.h>
#undef CHECK
#undef CHECK_EQ
#undef CHECK_NE
#undef CHECK_LE
#undef CHECK_LT
#undef CHECK_GE
#undef CHECK_GT

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
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

using emb::BagMode;
using emb::Embedding;
using emb::EmbeddingBag;
using emb::FromPretrainedBagOptions;
using emb::FromPretrainedOptions;
using emb::Index;
using emb::Matrix;
using emb::SparseGrad;
using emb::Vector;

using emb_test::bit_identical;
using emb_test::contains;
using emb_test::message_of;

#ifndef DOCTEST_CHECK
#error "doctest's CHECK is not in force"
#endif

namespace {

// ---- conversions: every tensor handed to libtorch is a copy, so torch cannot touch emb's data

template <class T>
at::ScalarType dtype_of() {
  return std::is_same_v<T, float> ? at::kFloat : at::kDouble;
}

template <class T>
double rtol() {
  return std::is_same_v<T, float> ? 1e-5 : 1e-12;
}

template <class T>
at::Tensor tensor_of(const Matrix<T>& m) {
  at::Tensor t = at::empty({m.rows(), m.cols()}, dtype_of<T>());
  if (m.size() > 0) {
    std::memcpy(t.data_ptr<T>(), m.data(), static_cast<std::size_t>(m.size()) * sizeof(T));
  }
  return t;
}

template <class T>
at::Tensor tensor_of(const Vector<T>& v) {
  at::Tensor t = at::empty({v.size()}, dtype_of<T>());
  if (v.size() > 0) {
    std::memcpy(t.data_ptr<T>(), v.data(), static_cast<std::size_t>(v.size()) * sizeof(T));
  }
  return t;
}

at::Tensor tensor_of(const std::vector<Index>& v) {
  at::Tensor t = at::empty({static_cast<std::int64_t>(v.size())}, at::kLong);
  if (!v.empty()) std::memcpy(t.data_ptr<std::int64_t>(), v.data(), v.size() * sizeof(Index));
  return t;
}

template <class T>
Matrix<T> matrix_of(const at::Tensor& tensor) {
  const at::Tensor t = tensor.to(dtype_of<T>()).contiguous();
  REQUIRE(t.dim() == 2);
  Matrix<T> m(t.size(0), t.size(1));
  if (m.size() > 0) {
    std::memcpy(m.data(), t.data_ptr<T>(), static_cast<std::size_t>(m.size()) * sizeof(T));
  }
  return m;
}

template <class T>
Vector<T> vector_of(const at::Tensor& tensor) {
  const at::Tensor t = tensor.to(dtype_of<T>()).contiguous();
  REQUIRE(t.dim() == 1);
  Vector<T> v(t.size(0));
  if (v.size() > 0) {
    std::memcpy(v.data(), t.data_ptr<T>(), static_cast<std::size_t>(v.size()) * sizeof(T));
  }
  return v;
}

std::vector<Index> index_vector_of(const at::Tensor& tensor) {
  const at::Tensor t = tensor.to(at::kLong).contiguous().view({-1});
  const auto* p = t.data_ptr<std::int64_t>();
  return std::vector<Index>(p, p + t.numel());
}

// ---- comparison: empty when a and b agree to rtol (relative to max(1, |b|)), else where not

template <class A, class B>
std::string mismatch(const A& a, const B& b, double tol) {
  std::ostringstream out;
  out.precision(17);
  if (a.rows() != b.rows() || a.cols() != b.cols()) {
    out << "shape (" << a.rows() << ", " << a.cols() << ") vs (" << b.rows() << ", " << b.cols()
        << ")";
    return out.str();
  }
  for (Index i = 0; i < a.rows(); ++i) {
    for (Index j = 0; j < a.cols(); ++j) {
      const double x = static_cast<double>(a(i, j));
      const double y = static_cast<double>(b(i, j));
      if (!(std::abs(x - y) <= tol * std::max(1.0, std::abs(y)))) {
        out << "at (" << i << ", " << j << "): emb " << x << ", torch " << y;
        return out.str();
      }
    }
  }
  return {};
}

// ---- random inputs

template <class T>
Matrix<T> random_matrix(std::mt19937_64& gen, Index rows, Index cols) {
  std::normal_distribution<double> normal;
  Matrix<T> m(rows, cols);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<T>(normal(gen));
  return m;
}

template <class T>
Vector<T> random_vector(std::mt19937_64& gen, Index size) {
  std::uniform_real_distribution<double> uniform(-2.0, 2.0);
  Vector<T> v(size);
  for (Index i = 0; i < size; ++i) v[i] = static_cast<T>(uniform(gen));
  return v;
}

// Uniform over [0, rows), so a call has duplicates when n is large against rows.
std::vector<Index> random_indices(std::mt19937_64& gen, std::size_t n, Index rows) {
  std::uniform_int_distribution<Index> pick(0, rows - 1);
  std::vector<Index> idx(n);
  for (auto& k : idx) k = pick(gen);
  return idx;
}

// Bags of 0..max_len entries (empty bags included): the offsets, one start per bag.
std::vector<Index> random_offsets(std::mt19937_64& gen, std::size_t bags, Index max_len,
                                  Index& total) {
  std::uniform_int_distribution<Index> len(0, max_len);
  std::vector<Index> offsets;
  total = 0;
  for (std::size_t b = 0; b < bags; ++b) {
    offsets.push_back(total);
    total += len(gen);
  }
  return offsets;
}

// The distinct values of idx other than `skip`, ascending: the rows a coalesced gradient names.
std::vector<Index> distinct_except(const std::vector<Index>& idx, std::optional<Index> skip) {
  std::set<Index> rows(idx.begin(), idx.end());
  if (skip) rows.erase(*skip);
  return std::vector<Index>(rows.begin(), rows.end());
}

// libtorch's sparse gradient, coalesced, as (rows, values).
template <class T>
std::pair<std::vector<Index>, Matrix<T>> coalesced(const at::Tensor& sparse) {
  REQUIRE(sparse.is_sparse());
  const at::Tensor c = sparse.coalesce();
  return {index_vector_of(c.indices()), matrix_of<T>(c.values())};
}

template <class T>
Embedding<T> table_of(const Matrix<T>& w, FromPretrainedOptions options = {}) {
  return Embedding<T>::from_pretrained(w, options.freeze(false));
}

template <class T>
EmbeddingBag<T> bag_table_of(const Matrix<T>& w, FromPretrainedBagOptions options) {
  return EmbeddingBag<T>::from_pretrained(w, options.freeze(false));
}

std::int64_t torch_mode(BagMode mode) {
  return mode == BagMode::Sum ? 0 : mode == BagMode::Mean ? 1 : 2;
}

struct Shape {
  Index rows;
  Index dim;
  std::size_t n;
};
const Shape kShapes[] = {{1, 1, 5}, {7, 3, 20}, {100, 16, 300}, {1000, 33, 257}, {50, 8, 0}};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Embedding

TEST_CASE_TEMPLATE("Embedding forward returns exactly the rows torch::embedding returns", T, float,
                   double) {
  std::mt19937_64 gen(1);
  for (const Shape& s : kShapes) {
    CAPTURE(s.rows);
    CAPTURE(s.dim);
    const Matrix<T> w = random_matrix<T>(gen, s.rows, s.dim);
    const std::vector<Index> idx = random_indices(gen, s.n, s.rows);
    Embedding<T> table = table_of(w);
    const Matrix<T> expected = matrix_of<T>(at::embedding(tensor_of(w), tensor_of(idx)));
    CHECK(bit_identical(table.forward(idx), expected));
  }

  SUBCASE("a (batch, seq) input gives torch's (batch, seq, dim) result read row by row") {
    const Matrix<T> w = random_matrix<T>(gen, 10, 3);
    Matrix<Index> batch(2, 4);
    batch << 1, 2, 4, 3, 4, 3, 2, 9;
    Embedding<T> table = table_of(w);
    const at::Tensor idx_t = tensor_of(std::vector<Index>(batch.data(), batch.data() + 8));
    const at::Tensor out = at::embedding(tensor_of(w), idx_t.view({2, 4}));
    REQUIRE(out.dim() == 3);
    CHECK(bit_identical(table.forward(batch), matrix_of<T>(out.reshape({8, 3}))));
  }

  SUBCASE("an index out of range is an error in both, and emb's table is unchanged") {
    const Matrix<T> w = random_matrix<T>(gen, 5, 2);
    Embedding<T> table = table_of(w, FromPretrainedOptions().max_norm(0.5));
    const std::vector<Index> idx = {0, 1, 5};
    CHECK_THROWS_AS(at::embedding(tensor_of(w), tensor_of(idx)), c10::Error);
    const std::string msg = message_of<std::out_of_range>([&] { table.forward(idx); });
    CHECK(contains(msg, "5"));
    CHECK(bit_identical(table.weight(), w));
  }
}

TEST_CASE_TEMPLATE("Embedding's dense gradient equals at::embedding_dense_backward", T, float,
                   double) {
  std::mt19937_64 gen(2);
  for (const Shape& s : kShapes) {
    for (const bool scale : {false, true}) {
      // None, the first row, the last row given as -1 (normalised to rows - 1 for torch).
      for (const std::optional<Index> pad :
           {std::optional<Index>{}, std::optional<Index>{0}, std::optional<Index>{-1}}) {
        CAPTURE(s.rows);
        CAPTURE(s.dim);
        CAPTURE(scale);
        CAPTURE(pad.value_or(-100));
        const Matrix<T> w = random_matrix<T>(gen, s.rows, s.dim);
        const std::vector<Index> idx = random_indices(gen, s.n, s.rows);
        const Matrix<T> g = random_matrix<T>(gen, static_cast<Index>(s.n), s.dim);
        const Embedding<T> table =
            table_of(w, FromPretrainedOptions().padding_idx(pad).scale_grad_by_freq(scale));
        const Index torch_pad = pad ? (*pad < 0 ? *pad + s.rows : *pad) : -1;
        const Matrix<T> expected = matrix_of<T>(
            at::embedding_dense_backward(tensor_of(g), tensor_of(idx), s.rows, torch_pad, scale));
        CHECK(mismatch(table.backward_dense(idx, g), expected, rtol<T>()) == "");
      }
    }
  }
}

TEST_CASE_TEMPLATE("Embedding's sparse gradient is torch's sparse gradient, coalesced", T, float,
                   double) {
  std::mt19937_64 gen(3);
  for (const Shape& s : kShapes) {
    for (const std::optional<Index> pad :
         {std::optional<Index>{}, std::optional<Index>{0}, std::optional<Index>{-1}}) {
      CAPTURE(s.rows);
      CAPTURE(s.dim);
      CAPTURE(pad.value_or(-100));
      const Matrix<T> w = random_matrix<T>(gen, s.rows, s.dim);
      const std::vector<Index> idx = random_indices(gen, s.n, s.rows);
      const Matrix<T> g = random_matrix<T>(gen, static_cast<Index>(s.n), s.dim);
      const Embedding<T> table = table_of(w, FromPretrainedOptions().padding_idx(pad));
      const Index torch_pad = pad ? (*pad < 0 ? *pad + s.rows : *pad) : -1;
      // torch returns one entry per non-padding position; coalesce() sorts and sums them.
      const at::Tensor raw =
          at::embedding_backward(tensor_of(g), tensor_of(idx), s.rows, torch_pad, false, true);
      const auto [rows, values] = coalesced<T>(raw);
      const SparseGrad<T> grad = table.backward(idx, g);
      CHECK(grad.num_embeddings == s.rows);
      CHECK(grad.rows == rows);
      CHECK(mismatch(grad.values, values, rtol<T>()) == "");
      CHECK(grad.rows == distinct_except(idx, table.padding_idx()));
    }
  }

  SUBCASE("with scale_grad_by_freq: torch refuses, emb gives the scaled dense gradient's rows") {
    const Matrix<T> w = random_matrix<T>(gen, 40, 6);
    const std::vector<Index> idx = random_indices(gen, 120, 40);
    const Matrix<T> g = random_matrix<T>(gen, 120, 6);
    const Embedding<T> table =
        table_of(w, FromPretrainedOptions().padding_idx(3).scale_grad_by_freq(true));
    const std::string msg = message_of<c10::Error>(
        [&] { at::embedding_backward(tensor_of(g), tensor_of(idx), 40, 3, true, true); });
    CHECK(contains(msg, "scale_grad_by_freq"));
    const Matrix<T> dense =
        matrix_of<T>(at::embedding_dense_backward(tensor_of(g), tensor_of(idx), 40, 3, true));
    const SparseGrad<T> grad = table.backward(idx, g);
    CHECK(grad.rows == distinct_except(idx, Index{3}));
    CHECK(mismatch(grad.to_dense(), dense, rtol<T>()) == "");
  }
}

TEST_CASE_TEMPLATE("max_norm renormalises the same rows to the same values as embedding_renorm_",
                   T, float, double) {
  std::mt19937_64 gen(4);
  const double inf = std::numeric_limits<double>::infinity();
  for (const double p : {2.0, 1.0, 3.0, inf}) {
    for (const double max_norm : {0.5, 1.0, 2.5}) {
      CAPTURE(p);
      CAPTURE(max_norm);
      // Rows of every size, so that some are above max_norm and some below.
      Matrix<T> w = random_matrix<T>(gen, 60, 8);
      std::uniform_real_distribution<double> size(0.02, 1.5);
      for (Index r = 0; r < w.rows(); ++r) w.row(r) *= static_cast<T>(size(gen));
      Embedding<T> table =
          table_of(w, FromPretrainedOptions().max_norm(max_norm).norm_type(p).padding_idx(5));
      at::Tensor w_t = tensor_of(w);
      std::set<Index> touched;
      for (int call = 0; call < 3; ++call) {
        CAPTURE(call);
        std::vector<Index> idx = random_indices(gen, 20, 60);
        idx.push_back(5);  // the padding row is renormalised too
        touched.insert(idx.begin(), idx.end());
        const at::Tensor idx_t = tensor_of(idx);
        // What torch.nn.functional.embedding does with max_norm: renorm in place, then look up.
        at::embedding_renorm_(w_t, idx_t, max_norm, p);
        const Matrix<T> expected = matrix_of<T>(at::embedding(w_t, idx_t));
        CHECK(mismatch(table.forward(idx), expected, rtol<T>()) == "");
        CHECK(mismatch(table.weight(), matrix_of<T>(w_t), rtol<T>()) == "");
      }
      // Rows no call looked up are untouched, bit for bit.
      for (Index r = 0; r < w.rows(); ++r) {
        if (touched.count(r) == 0) CHECK(bit_identical(table.weight().row(r), w.row(r)));
      }
    }
  }
}

TEST_CASE_TEMPLATE("EmbeddingBag's max_norm renormalises as embedding_renorm_ before the bag", T,
                   float, double) {
  // torch.nn.functional.embedding_bag renormalises the looked-up rows, then pools.
  std::mt19937_64 gen(10);
  for (const double p : {2.0, 1.0, std::numeric_limits<double>::infinity()}) {
    CAPTURE(p);
    Matrix<T> w = random_matrix<T>(gen, 30, 6);
    std::uniform_real_distribution<double> size(0.05, 1.5);
    for (Index r = 0; r < w.rows(); ++r) w.row(r) *= static_cast<T>(size(gen));
    EmbeddingBag<T> table = bag_table_of(
        w, FromPretrainedBagOptions().mode(BagMode::Mean).max_norm(1.0).norm_type(p));
    at::Tensor w_t = tensor_of(w);
    Index n = 0;
    const std::vector<Index> offsets = random_offsets(gen, 8, 6, n);
    const std::vector<Index> idx = random_indices(gen, static_cast<std::size_t>(n), 30);
    const at::Tensor idx_t = tensor_of(idx);
    at::embedding_renorm_(w_t, idx_t, 1.0, p);
    const at::Tensor out = std::get<0>(at::embedding_bag(w_t, idx_t, tensor_of(offsets), false, 1));
    CHECK(mismatch(table.forward(idx, offsets), matrix_of<T>(out), rtol<T>()) == "");
    CHECK(mismatch(table.weight(), matrix_of<T>(w_t), rtol<T>()) == "");
  }
}

// ---------------------------------------------------------------------------------------------
// EmbeddingBag

namespace {

struct BagCase {
  BagMode mode;
  bool psw;
  bool include_last;
  std::optional<Index> pad;
};

template <class T>
void check_bag_against_torch(std::mt19937_64& gen, const BagCase& c, Index rows, Index dim,
                             std::size_t bags, Index max_len) {
  const std::string mode_name = emb::to_string(c.mode);
  CAPTURE(mode_name);
  CAPTURE(c.psw);
  CAPTURE(c.include_last);
  CAPTURE(c.pad.value_or(-100));
  CAPTURE(rows);
  Index n = 0;
  std::vector<Index> offsets = random_offsets(gen, bags, max_len, n);
  if (c.include_last) offsets.push_back(n);
  std::vector<Index> idx = random_indices(gen, static_cast<std::size_t>(n), rows);
  if (c.pad && n > 2) {
    // Make some entries padding, and one bag all padding when there is one with entries.
    const Index pad = *c.pad < 0 ? *c.pad + rows : *c.pad;
    for (std::size_t i = 0; i < idx.size(); i += 3) idx[i] = pad;
    const std::size_t b = bags / 2;
    const auto end = b + 1 < offsets.size() ? static_cast<std::size_t>(offsets[b + 1])
                                            : static_cast<std::size_t>(n);
    for (auto i = static_cast<std::size_t>(offsets[b]); i < end; ++i) idx[i] = pad;
  }
  const Matrix<T> w = random_matrix<T>(gen, rows, dim);
  const Vector<T> psw = random_vector<T>(gen, n);
  const Matrix<T> g = random_matrix<T>(gen, static_cast<Index>(bags), dim);

  EmbeddingBag<T> table = bag_table_of(
      w, FromPretrainedBagOptions().mode(c.mode).include_last_offset(c.include_last).padding_idx(
             c.pad));
  const std::optional<std::int64_t> torch_pad =
      c.pad ? std::optional<std::int64_t>(*c.pad < 0 ? *c.pad + rows : *c.pad) : std::nullopt;

  // Forward and dense backward through autograd, as a module call would run them.
  at::Tensor w_t = tensor_of(w).requires_grad_(true);
  at::Tensor psw_t = tensor_of(psw).requires_grad_(true);
  const c10::optional<at::Tensor> psw_opt =
      c.psw ? c10::optional<at::Tensor>(psw_t) : c10::nullopt;
  const c10::optional<std::int64_t> pad_opt =
      torch_pad ? c10::optional<std::int64_t>(*torch_pad) : c10::nullopt;
  at::Tensor out = std::get<0>(at::embedding_bag(w_t, tensor_of(idx), tensor_of(offsets), false,
                                                 torch_mode(c.mode), false, psw_opt,
                                                 c.include_last, pad_opt));
  out.backward(tensor_of(g));

  const Matrix<T> fwd = c.psw ? table.forward(idx, offsets, psw) : table.forward(idx, offsets);
  CHECK(mismatch(fwd, matrix_of<T>(out.detach()), rtol<T>()) == "");
  const Matrix<T> dense =
      c.psw ? table.backward_dense(idx, offsets, g, psw) : table.backward_dense(idx, offsets, g);
  CHECK(mismatch(dense, matrix_of<T>(w_t.grad()), rtol<T>()) == "");
  if (c.psw) {
    const Vector<T> psw_grad = table.backward_per_sample_weights(idx, offsets, g);
    CHECK(mismatch(psw_grad, vector_of<T>(psw_t.grad()), rtol<T>()) == "");
  }

  // Sparse gradients (torch refuses them in max mode): the same values, and emb names exactly
  // the distinct non-padding indices.
  if (c.mode != BagMode::Max) {
    at::Tensor w2 = tensor_of(w).requires_grad_(true);
    at::Tensor out2 = std::get<0>(at::embedding_bag(
        w2, tensor_of(idx), tensor_of(offsets), false, torch_mode(c.mode), true,
        c.psw ? c10::optional<at::Tensor>(tensor_of(psw)) : c10::nullopt, c.include_last,
        pad_opt));
    out2.backward(tensor_of(g));
    const auto [rows_t, values_t] = coalesced<T>(w2.grad());
    (void)rows_t;  // torch may list the padding row with zero values; compare as dense
    const SparseGrad<T> grad =
        c.psw ? table.backward(idx, offsets, g, psw) : table.backward(idx, offsets, g);
    CHECK(grad.rows == distinct_except(idx, table.padding_idx()));
    CHECK(mismatch(grad.to_dense(), matrix_of<T>(w2.grad().to_dense()), rtol<T>()) == "");
  }
}

}  // namespace

TEST_CASE_TEMPLATE("EmbeddingBag forward and backward equal at::embedding_bag's with autograd", T,
                   float, double) {
  std::mt19937_64 gen(5);
  std::vector<BagCase> cases;
  for (const BagMode mode : {BagMode::Sum, BagMode::Mean, BagMode::Max}) {
    for (const bool include_last : {false, true}) {
      for (const std::optional<Index> pad :
           {std::optional<Index>{}, std::optional<Index>{2}, std::optional<Index>{-1}}) {
        cases.push_back({mode, false, include_last, pad});
        if (mode == BagMode::Sum) cases.push_back({mode, true, include_last, pad});
      }
    }
  }
  for (const BagCase& c : cases) {
    check_bag_against_torch<T>(gen, c, 30, 5, 9, 6);    // many duplicates, empty bags
    check_bag_against_torch<T>(gen, c, 1000, 16, 40, 50);
  }
}

TEST_CASE_TEMPLATE("EmbeddingBag's scale_grad_by_freq divides by the count of each index", T, float,
                   double) {
  // The agreed semantics: the gradient of entry i (index k, bag b) is psw_i * grad_output[b]
  // (divided by the bag's size in Mean), times 1/count(k) over the whole call. That is
  // at::embedding_dense_backward with scale_grad_by_freq applied to those per-entry rows.
  // PyTorch 1.13's CPU bag backward looks its counts up at the wrong position, so the bag
  // kernel itself is not the oracle here (the difference is reported, not required).
  std::mt19937_64 gen(6);
  for (const BagMode mode : {BagMode::Sum, BagMode::Mean}) {
    for (const bool with_psw : {false, true}) {
      if (with_psw && mode != BagMode::Sum) continue;
      const std::string mode_name = emb::to_string(mode);
      CAPTURE(mode_name);
      CAPTURE(with_psw);
      const Index rows = 12;
      const Index dim = 4;
      const std::size_t bags = 10;
      Index n = 0;
      const std::vector<Index> offsets = random_offsets(gen, bags, 7, n);
      std::vector<Index> idx = random_indices(gen, static_cast<std::size_t>(n), rows);
      for (std::size_t i = 0; i < idx.size(); i += 4) idx[i] = 0;  // padding entries
      const Matrix<T> w = random_matrix<T>(gen, rows, dim);
      const Vector<T> psw = random_vector<T>(gen, n);
      const Matrix<T> g = random_matrix<T>(gen, static_cast<Index>(bags), dim);
      const EmbeddingBag<T> table = bag_table_of(
          w, FromPretrainedBagOptions().mode(mode).padding_idx(0).scale_grad_by_freq(true));

      // Per-entry gradient rows, from the bag layout alone.
      Matrix<T> per_entry(n, dim);
      for (std::size_t b = 0; b < bags; ++b) {
        const Index begin = offsets[b];
        const Index end = b + 1 < bags ? offsets[b + 1] : n;
        Index size = 0;
        for (Index i = begin; i < end; ++i) size += idx[static_cast<std::size_t>(i)] != 0;
        for (Index i = begin; i < end; ++i) {
          T s = with_psw ? psw[i] : T(1);
          if (mode == BagMode::Mean) s /= static_cast<T>(std::max<Index>(size, 1));
          per_entry.row(i) = s * g.row(static_cast<Index>(b));
        }
      }
      const Matrix<T> expected = matrix_of<T>(
          at::embedding_dense_backward(tensor_of(per_entry), tensor_of(idx), rows, 0, true));
      const Matrix<T> dense = with_psw ? table.backward_dense(idx, offsets, g, psw)
                                       : table.backward_dense(idx, offsets, g);
      CHECK(mismatch(dense, expected, rtol<T>()) == "");
      const SparseGrad<T> sparse =
          with_psw ? table.backward(idx, offsets, g, psw) : table.backward(idx, offsets, g);
      CHECK(mismatch(sparse.to_dense(), expected, rtol<T>()) == "");

      at::Tensor w_t = tensor_of(w).requires_grad_(true);
      at::Tensor out = std::get<0>(at::embedding_bag(
          w_t, tensor_of(idx), tensor_of(offsets), true, torch_mode(mode), false,
          with_psw ? c10::optional<at::Tensor>(tensor_of(psw)) : c10::nullopt, false,
          c10::optional<std::int64_t>(0)));
      out.backward(tensor_of(g));
      const bool torch_agrees = mismatch(matrix_of<T>(w_t.grad()), expected, rtol<T>()).empty();
      const std::string note = std::string("libtorch's own bag kernel (") +
                               emb::to_string(mode) + (with_psw ? ", psw" : "") + ") " +
                               (torch_agrees ? "agrees" : "differs") + " with count(k) scaling";
      MESSAGE(note);
    }
  }
}

TEST_CASE("EmbeddingBag validates every offset; libtorch checks the first and the last") {
  const Matrix<float> w = Matrix<float>::Ones(5, 2);
  EmbeddingBag<float> table = bag_table_of(w, FromPretrainedBagOptions().mode(BagMode::Sum));
  const std::vector<Index> idx = {0, 1, 2, 3};
  const auto torch_bag = [&](const std::vector<Index>& offsets) {
    return at::embedding_bag(tensor_of(w), tensor_of(idx), tensor_of(offsets), false, 0);
  };

  SUBCASE("a first offset other than 0: both refuse") {
    const std::vector<Index> offsets = {1, 2};
    CHECK_THROWS_AS(torch_bag(offsets), c10::Error);
    CHECK(contains(message_of<std::invalid_argument>([&] { table.forward(idx, offsets); }),
                   "offset 1"));
  }
  SUBCASE("an offset past the end: both refuse") {
    const std::vector<Index> offsets = {0, 5};
    CHECK_THROWS_AS(torch_bag(offsets), c10::Error);
    CHECK(contains(message_of<std::invalid_argument>([&] { table.forward(idx, offsets); }),
                   "offset 5"));
  }
  SUBCASE("per_sample_weights outside sum mode: both refuse") {
    EmbeddingBag<float> mean = bag_table_of(w, FromPretrainedBagOptions().mode(BagMode::Mean));
    const std::vector<Index> offsets = {0, 2};
    const Vector<float> psw = Vector<float>::Ones(4);
    CHECK_THROWS_AS(at::embedding_bag(tensor_of(w), tensor_of(idx), tensor_of(offsets), false, 1,
                                      false, tensor_of(psw)),
                    c10::Error);
    CHECK(contains(message_of<std::invalid_argument>([&] { mean.forward(idx, offsets, psw); }),
                   "per_sample_weights"));
  }
  SUBCASE("decreasing offsets: emb refuses (libtorch does not check them, so it is not called)") {
    const std::vector<Index> offsets = {0, 3, 1};
    CHECK(contains(message_of<std::invalid_argument>([&] { table.forward(idx, offsets); }),
                   "offset 1"));
  }
}

// ---------------------------------------------------------------------------------------------
// Optimizers on sparse gradients

namespace {

// A few steps on the same random calls: emb's table and optimizer on one side, a tensor with
// libtorch's sparse gradient (uncoalesced, as autograd hands it to torch.optim) on the other.
template <class T, class EmbStep, class TorchStep>
void check_steps(std::mt19937_64& gen, EmbStep&& emb_step, TorchStep&& torch_step) {
  const Index rows = 40;
  const Index dim = 6;
  const Matrix<T> w0 = random_matrix<T>(gen, rows, dim);
  Embedding<T> table = table_of(w0, FromPretrainedOptions().padding_idx(7));
  at::Tensor w_t = tensor_of(w0).requires_grad_(true);
  for (int step = 0; step < 5; ++step) {
    CAPTURE(step);
    // Later steps touch a different subset; some rows appear in one step only.
    const std::vector<Index> idx = random_indices(gen, 25, step % 2 == 0 ? rows : rows / 2);
    const Matrix<T> g = random_matrix<T>(gen, 25, dim);
    emb_step(table, table.backward(idx, g));
    w_t.mutable_grad() = at::embedding_backward(tensor_of(g), tensor_of(idx), rows, 7, false, true);
    torch_step(w_t);
    CHECK(mismatch(table.weight(), matrix_of<T>(w_t.detach()), 10 * rtol<T>()) == "");
  }
}

}  // namespace

TEST_CASE_TEMPLATE("SGD steps on sparse gradients equal torch::optim::SGD's", T, float, double) {
  std::mt19937_64 gen(7);
  struct Config {
    double lr, momentum, dampening;
    bool nesterov;
  };
  for (const Config& c : {Config{0.1, 0.0, 0.0, false}, Config{0.05, 0.9, 0.0, false},
                          Config{0.05, 0.9, 0.3, false}, Config{0.05, 0.8, 0.0, true}}) {
    CAPTURE(c.momentum);
    CAPTURE(c.dampening);
    CAPTURE(c.nesterov);
    emb::optim::SGD<T> sgd(c.lr, c.momentum, c.dampening, c.nesterov);
    std::unique_ptr<torch::optim::SGD> torch_sgd;
    check_steps<T>(
        gen, [&](Embedding<T>& table, const SparseGrad<T>& grad) { sgd.step(table, grad); },
        [&](at::Tensor& w) {
          if (!torch_sgd) {
            torch_sgd = std::make_unique<torch::optim::SGD>(
                std::vector<at::Tensor>{w}, torch::optim::SGDOptions(c.lr)
                                                .momentum(c.momentum)
                                                .dampening(c.dampening)
                                                .nesterov(c.nesterov));
          }
          torch_sgd->step();
        });
  }
}

TEST_CASE_TEMPLATE("Adagrad steps on sparse gradients equal torch::optim::Adagrad's", T, float,
                   double) {
  std::mt19937_64 gen(8);
  struct Config {
    double lr, lr_decay, eps, initial;
  };
  for (const Config& c : {Config{0.1, 0.0, 1e-10, 0.0}, Config{0.5, 0.1, 1e-6, 0.3}}) {
    CAPTURE(c.lr_decay);
    CAPTURE(c.initial);
    emb::optim::Adagrad<T> adagrad(c.lr, c.lr_decay, c.eps, c.initial);
    std::unique_ptr<torch::optim::Adagrad> torch_adagrad;
    check_steps<T>(
        gen, [&](Embedding<T>& table, const SparseGrad<T>& grad) { adagrad.step(table, grad); },
        [&](at::Tensor& w) {
          if (!torch_adagrad) {
            torch_adagrad = std::make_unique<torch::optim::Adagrad>(
                std::vector<at::Tensor>{w}, torch::optim::AdagradOptions(c.lr)
                                                .lr_decay(c.lr_decay)
                                                .eps(c.eps)
                                                .initial_accumulator_value(c.initial));
          }
          torch_adagrad->step();
        });
  }
}

TEST_CASE_TEMPLATE("SparseAdam steps equal torch.optim.SparseAdam's update in libtorch ops", T,
                   float, double) {
  // libtorch's C++ API has no SparseAdam; this is torch/optim/_functional.py's sparse_adam,
  // operation for operation, on libtorch tensors.
  std::mt19937_64 gen(9);
  const double lr = 0.05;
  const double beta1 = 0.8;
  const double beta2 = 0.95;
  const double eps = 1e-6;
  emb::optim::SparseAdam<T> adam(lr, beta1, beta2, eps);
  at::Tensor exp_avg;
  at::Tensor exp_avg_sq;
  std::int64_t step = 0;
  check_steps<T>(
      gen, [&](Embedding<T>& table, const SparseGrad<T>& grad) { adam.step(table, grad); },
      [&](at::Tensor& w) {
        at::NoGradGuard no_grad;
        at::Tensor p = w.detach();
        if (!exp_avg.defined()) {
          exp_avg = at::zeros_like(p);
          exp_avg_sq = at::zeros_like(p);
        }
        ++step;
        const at::Tensor grad = w.grad().coalesce();
        const at::Tensor grad_indices = grad._indices();
        const at::Tensor grad_values = grad._values();
        const auto make_sparse = [&](const at::Tensor& values) {
          return at::sparse_coo_tensor(grad_indices, values, p.sizes());
        };
        const at::Tensor old_exp_avg_values = exp_avg.sparse_mask(grad)._values();
        at::Tensor exp_avg_update_values = grad_values.sub(old_exp_avg_values).mul_(1 - beta1);
        exp_avg.add_(make_sparse(exp_avg_update_values));
        const at::Tensor old_exp_avg_sq_values = exp_avg_sq.sparse_mask(grad)._values();
        at::Tensor exp_avg_sq_update_values =
            grad_values.pow(2).sub_(old_exp_avg_sq_values).mul_(1 - beta2);
        exp_avg_sq.add_(make_sparse(exp_avg_sq_update_values));
        at::Tensor numer = exp_avg_update_values.add_(old_exp_avg_values);
        exp_avg_sq_update_values.add_(old_exp_avg_sq_values);
        const at::Tensor denom = exp_avg_sq_update_values.sqrt_().add_(eps);
        const double bias_correction1 = 1 - std::pow(beta1, static_cast<double>(step));
        const double bias_correction2 = 1 - std::pow(beta2, static_cast<double>(step));
        const double step_size = lr * std::sqrt(bias_correction2) / bias_correction1;
        p.add_(make_sparse(-step_size * numer.div_(denom)));
      });
}
