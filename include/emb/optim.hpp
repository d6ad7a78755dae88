// emb/optim.hpp — row-sparse optimizer steps for Embedding and EmbeddingBag tables, with the
// arithmetic of PyTorch's torch.optim.SGD, Adagrad and SparseAdam on sparse gradients.
//
//   emb::optim::SparseAdam<float> opt(0.01);
//   auto grad = table.backward(ids, grad_output);
//   opt.step(table, grad);
//
// A step touches only the rows of the gradient (SGD with momentum: the rows whose momentum is
// non-zero, as the dense formula does), so its cost does not depend on the table size. Optimizer
// state (momentum, sums, moments) belongs to a table the way PyTorch's belongs to a parameter: it
// is created at the table's first step and found again by the table's instance_id(): a copied
// table starts afresh, a moved one keeps its state, a new table never inherits another's. A
// frozen table is
// never changed and gets no state.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <unordered_map>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "detail/error.hpp"
#include "detail/scatter.hpp"
#include "embedding.hpp"
#include "embedding_bag.hpp"
#include "index_span.hpp"
#include "sparse_grad.hpp"

namespace emb::optim {

namespace detail {

using emb::detail::concat;

// One contiguous table or gradient row as an Eigen array, for coefficient-wise updates that
// Eigen vectorises.
template <class T>
using RowArrayOf = Eigen::Map<const Eigen::Array<T, 1, Eigen::Dynamic>>;
template <class T>
using MutableRowArrayOf = Eigen::Map<Eigen::Array<T, 1, Eigen::Dynamic>>;

// The negated comparisons reject NaN as well.
inline void check_non_negative(const char* where, const char* option, double value) {
  if (!(value >= 0.0)) {
    emb::detail::throw_bad_option(where, option, concat(value), "it must be >= 0");
  }
}
inline void check_positive(const char* where, const char* option, double value) {
  if (!(value > 0.0)) {
    emb::detail::throw_bad_option(where, option, concat(value), "it must be > 0");
  }
}
inline void check_beta(const char* where, const char* option, double value) {
  if (!(value >= 0.0 && value < 1.0)) {
    emb::detail::throw_bad_option(where, option, concat(value), "it must be in [0, 1)");
  }
}

// The gradient must describe this table: same num_embeddings and dim, one values row per row,
// rows strictly increasing (coalesced) and in range. Checked before anything changes.
template <class T>
void check_grad(const char* where, Index num_embeddings, Index dim, const SparseGrad<T>& grad) {
  if (grad.num_embeddings != num_embeddings) {
    throw std::invalid_argument(concat(where, ": the gradient is for a table of ",
                                       grad.num_embeddings, " rows, the table has ",
                                       num_embeddings));
  }
  emb::detail::check_shape(where, "grad.values", static_cast<Index>(grad.rows.size()), dim,
                           grad.values.rows(), grad.values.cols());
  emb::detail::check_indices(where, IndexSpan(grad.rows), num_embeddings);
  for (std::size_t i = 1; i < grad.rows.size(); ++i) {
    if (grad.rows[i] <= grad.rows[i - 1]) {
      throw std::invalid_argument(concat(where, ": grad.rows[", i, "] = ", grad.rows[i],
                                         " does not follow ", grad.rows[i - 1],
                                         "; rows must be strictly increasing (coalesced)"));
    }
  }
}

// Per-table state: `slots` dense (num_embeddings, dim) buffers created once, at the table's
// first step, and the table's step counter.
template <class T>
struct TableState {
  Index num_embeddings = 0;
  Index dim = 0;
  std::int64_t step = 0;
  std::vector<Matrix<T>> buffers;
  std::vector<Index> active;  // SGD momentum: rows whose buffer may be non-zero
  std::vector<char> is_active;
};

// State of every table an optimizer has stepped, keyed by the table's instance_id().
template <class T>
class StateMap {
 public:
  // The state of the table `key`, created with `slots` buffers filled with `init` on first
  // use. Tables never change shape, so a mismatch means the state is not this table's.
  TableState<T>& get(const char* where, std::uint64_t key, Index num_embeddings, Index dim,
                     std::size_t slots, T init) {
    auto it = states_.find(key);
    if (it == states_.end()) {
      TableState<T> state;
      state.num_embeddings = num_embeddings;
      state.dim = dim;
      state.buffers.assign(slots, Matrix<T>::Constant(num_embeddings, dim, init));
      it = states_.emplace(key, std::move(state)).first;
    } else if (it->second.num_embeddings != num_embeddings || it->second.dim != dim) {
      throw std::invalid_argument(concat(where, ": this optimizer holds state for a (",
                                         it->second.num_embeddings, ", ", it->second.dim,
                                         ") table under this table's id, not (", num_embeddings,
                                         ", ", dim, "); call forget(table) to start afresh"));
    }
    return it->second;
  }
  const TableState<T>* find(std::uint64_t key) const {
    const auto it = states_.find(key);
    return it == states_.end() ? nullptr : &it->second;
  }
  void forget(std::uint64_t key) { states_.erase(key); }
  void clear() { states_.clear(); }

 private:
  std::unordered_map<std::uint64_t, TableState<T>> states_;
};

// CRTP base giving every optimizer the same step / forget / steps entry points for both table
// types; Derived implements apply(where, key, weight, grad) for a validated gradient and a
// table that is not frozen.
template <class Derived, class T>
class OptimizerBase {
 public:
  void step(Embedding<T>& table, const SparseGrad<T>& grad) { run(table, grad); }
  void step(EmbeddingBag<T>& table, const SparseGrad<T>& grad) { run(table, grad); }

  // Drops the state of `table` (its next step starts afresh, as with a new optimizer).
  template <class Table>
  void forget(const Table& table) {
    states_.forget(table.instance_id());
  }
  void reset() { states_.clear(); }

  // How many steps `table` has taken with this optimizer (0 before its first).
  template <class Table>
  std::int64_t steps(const Table& table) const {
    const auto* s = states_.find(table.instance_id());
    return s == nullptr ? 0 : s->step;
  }

 protected:
  StateMap<T> states_;

 private:
  template <class Table>
  void run(Table& table, const SparseGrad<T>& grad) {
    const char* where = Derived::name();
    check_grad(where, table.num_embeddings(), table.embedding_dim(), grad);
    if (table.frozen()) return;
    auto w = table.mutable_weight();
    static_cast<Derived&>(*this).apply(where, table.instance_id(), w, grad);
  }
};

}  // namespace detail

// Stochastic gradient descent, torch.optim.SGD(lr, momentum, dampening, nesterov):
// w -= lr * g without momentum; with it, buf = g at the table's first step and
// buf = momentum * buf + (1 - dampening) * g afterwards, then w -= lr * buf (nesterov:
// w -= lr * (g + momentum * buf)). The result equals the dense formula exactly. Weight decay is
// not offered: PyTorch rejects it for sparse gradients.
//
// Without momentum a step costs O(nnz * dim) and keeps only a step count. With momentum every row
// whose buffer is non-zero keeps moving, as in the dense formula, so a step costs O(rows touched so
// far * dim); the buffer is one dense (N, dim) matrix made at the first step.
template <class T = float>
class SGD : public detail::OptimizerBase<SGD<T>, T> {
 public:
  explicit SGD(double lr, double momentum = 0.0, double dampening = 0.0, bool nesterov = false)
      : lr_(lr), momentum_(momentum), dampening_(dampening), nesterov_(nesterov) {
    detail::check_non_negative(name(), "lr", lr);
    detail::check_non_negative(name(), "momentum", momentum);
    if (!std::isfinite(dampening)) {
      emb::detail::throw_bad_option(name(), "dampening", detail::concat(dampening),
                                    "it must be finite");
    }
    if (nesterov && (momentum <= 0.0 || dampening != 0.0)) {
      emb::detail::throw_bad_option(name(), "nesterov", "true",
                                    "Nesterov momentum needs momentum > 0 and dampening = 0");
    }
  }

  double lr() const { return lr_; }
  double momentum() const { return momentum_; }
  double dampening() const { return dampening_; }
  bool nesterov() const { return nesterov_; }

  static const char* name() { return "emb::optim::SGD::step"; }

 private:
  // Only the base calls apply(), after validating the gradient.
  friend class detail::OptimizerBase<SGD<T>, T>;

  void apply(const char* where, std::uint64_t key, Eigen::Map<Matrix<T>>& w,
             const SparseGrad<T>& grad) {
    const Index dim = w.cols();
    const T neg_lr = static_cast<T>(-lr_);
    if (momentum_ == 0.0) {
      ++this->states_.get(where, key, w.rows(), dim, 0, T(0)).step;
      for (std::size_t i = 0; i < grad.rows.size(); ++i) {
        emb::detail::axpy_row(&w(grad.rows[i], 0), &grad.values(static_cast<Index>(i), 0), neg_lr,
                              dim);
      }
      return;
    }
    auto& state = this->states_.get(where, key, w.rows(), dim, 1, T(0));
    if (state.is_active.empty()) state.is_active.assign(static_cast<std::size_t>(w.rows()), 0);
    Matrix<T>& buf = state.buffers[0];
    const bool first = state.step == 0;
    ++state.step;
    const T m = static_cast<T>(momentum_);
    const T one_minus_d = static_cast<T>(1.0 - dampening_);
    // buf = m * buf + (1 - d) * g, computed as PyTorch does: scale first, then add.
    for (Index r : state.active) buf.row(r) *= m;
    for (std::size_t i = 0; i < grad.rows.size(); ++i) {
      const Index r = grad.rows[i];
      const auto g = grad.values.row(static_cast<Index>(i));
      if (first) {
        buf.row(r) = g;
      } else {
        emb::detail::axpy_row(&buf(r, 0), g.data(), one_minus_d, dim);
      }
      if (!state.is_active[static_cast<std::size_t>(r)]) {
        state.is_active[static_cast<std::size_t>(r)] = 1;
        state.active.push_back(r);
      }
    }
    if (!nesterov_) {
      for (Index r : state.active) emb::detail::axpy_row(&w(r, 0), &buf(r, 0), neg_lr, dim);
      return;
    }
    // Nesterov: w -= lr * (g + m * buf); rows absent from grad have g = 0.
    Vector<T> update(dim);
    for (Index r : state.active) {
      const auto it = std::lower_bound(grad.rows.begin(), grad.rows.end(), r);
      if (it != grad.rows.end() && *it == r) {
        const auto i = static_cast<Index>(it - grad.rows.begin());
        update = grad.values.row(i).transpose() + m * buf.row(r).transpose();
      } else {
        update = m * buf.row(r).transpose();
      }
      emb::detail::axpy_row(&w(r, 0), update.data(), neg_lr, dim);
    }
  }

  double lr_;
  double momentum_;
  double dampening_;
  bool nesterov_;
};

// torch.optim.Adagrad on a sparse gradient: at the table's t-th step
// clr = lr / (1 + (t - 1) * lr_decay); for each row of the gradient
// sum += g^2, w -= clr * g / (sqrt(sum) + eps). Equal, bit for bit, to the dense formula (rows
// outside the gradient get g = 0 there and do not change). The state sum is one dense
// (N, dim) matrix filled with initial_accumulator_value at the table's first step: O(N * dim)
// memory and time once, O(nnz * dim) per step after. Weight decay is not offered: PyTorch
// rejects it for sparse gradients.
template <class T = float>
class Adagrad : public detail::OptimizerBase<Adagrad<T>, T> {
 public:
  explicit Adagrad(double lr = 1e-2, double lr_decay = 0.0, double eps = 1e-10,
                   double initial_accumulator_value = 0.0)
      : lr_(lr), lr_decay_(lr_decay), eps_(eps), initial_(initial_accumulator_value) {
    detail::check_non_negative(name(), "lr", lr);
    detail::check_non_negative(name(), "lr_decay", lr_decay);
    detail::check_non_negative(name(), "eps", eps);
    detail::check_non_negative(name(), "initial_accumulator_value", initial_accumulator_value);
  }

  double lr() const { return lr_; }
  double lr_decay() const { return lr_decay_; }
  double eps() const { return eps_; }
  double initial_accumulator_value() const { return initial_; }

  static const char* name() { return "emb::optim::Adagrad::step"; }
  using RowArray = detail::RowArrayOf<T>;
  using MutableRowArray = detail::MutableRowArrayOf<T>;

 private:
  // Only the base calls apply(), after validating the gradient.
  friend class detail::OptimizerBase<Adagrad<T>, T>;

  void apply(const char* where, std::uint64_t key, Eigen::Map<Matrix<T>>& w,
             const SparseGrad<T>& grad) {
    auto& state = this->states_.get(where, key, w.rows(), w.cols(), 1, static_cast<T>(initial_));
    ++state.step;
    const double clr = lr_ / (1.0 + static_cast<double>(state.step - 1) * lr_decay_);
    const T neg_clr = static_cast<T>(-clr);
    const T eps = static_cast<T>(eps_);
    Matrix<T>& sum = state.buffers[0];
    const Index dim = w.cols();
    for (std::size_t i = 0; i < grad.rows.size(); ++i) {
      const Index r = grad.rows[i];
      const auto g = RowArray(&grad.values(static_cast<Index>(i), 0), dim);
      auto s = MutableRowArray(&sum(r, 0), dim);
      s += g * g;
      MutableRowArray(&w(r, 0), dim) += neg_clr * (g / (s.sqrt() + eps));
    }
  }

  double lr_;
  double lr_decay_;
  double eps_;
  double initial_;
};

// torch.optim.SparseAdam: lazy Adam. One step counter t per table; for each row of the
// gradient m += (1 - b1) * (g - m), v += (1 - b2) * (g^2 - v),
// w -= step_size * m / (sqrt(v) + eps) with step_size = lr * sqrt(1 - b2^t) / (1 - b1^t).
// Rows absent from the gradient keep their weights and moments. The moments are two dense
// (N, dim) matrices made at the table's first step (as PyTorch's zeros_like): O(N * dim) memory
// and time once, O(nnz * dim) per step after. A step with an empty gradient counts towards t
// and changes nothing else, as in PyTorch.
template <class T = float>
class SparseAdam : public detail::OptimizerBase<SparseAdam<T>, T> {
 public:
  explicit SparseAdam(double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8)
      : lr_(lr), beta1_(beta1), beta2_(beta2), eps_(eps) {
    detail::check_positive(name(), "lr", lr);
    detail::check_beta(name(), "beta1", beta1);
    detail::check_beta(name(), "beta2", beta2);
    detail::check_positive(name(), "eps", eps);
  }

  double lr() const { return lr_; }
  double beta1() const { return beta1_; }
  double beta2() const { return beta2_; }
  double eps() const { return eps_; }

  static const char* name() { return "emb::optim::SparseAdam::step"; }
  using RowArray = detail::RowArrayOf<T>;
  using MutableRowArray = detail::MutableRowArrayOf<T>;

 private:
  // Only the base calls apply(), after validating the gradient.
  friend class detail::OptimizerBase<SparseAdam<T>, T>;

  void apply(const char* where, std::uint64_t key, Eigen::Map<Matrix<T>>& w,
             const SparseGrad<T>& grad) {
    auto& state = this->states_.get(where, key, w.rows(), w.cols(), 2, T(0));
    ++state.step;
    if (grad.rows.empty()) return;
    const auto t = static_cast<double>(state.step);
    const double bias1 = 1.0 - std::pow(beta1_, t);
    const double bias2 = 1.0 - std::pow(beta2_, t);
    const T neg_step = static_cast<T>(-(lr_ * std::sqrt(bias2) / bias1));
    const T one_minus_b1 = static_cast<T>(1.0 - beta1_);
    const T one_minus_b2 = static_cast<T>(1.0 - beta2_);
    const T eps = static_cast<T>(eps_);
    Matrix<T>& m = state.buffers[0];
    Matrix<T>& v = state.buffers[1];
    const Index dim = w.cols();
    for (std::size_t i = 0; i < grad.rows.size(); ++i) {
      const Index r = grad.rows[i];
      const auto g = RowArray(&grad.values(static_cast<Index>(i), 0), dim);
      auto mr = MutableRowArray(&m(r, 0), dim);
      auto vr = MutableRowArray(&v(r, 0), dim);
      // m + (1 - b1) * (g - m), in PyTorch's order: the update is formed, then added; the
      // numerator PyTorch forms as update + old m is the same sum.
      mr += (g - mr) * one_minus_b1;
      vr += (g * g - vr) * one_minus_b2;
      MutableRowArray(&w(r, 0), dim) += neg_step * (mr / (vr.sqrt() + eps));
    }
  }

  double lr_;
  double beta1_;
  double beta2_;
  double eps_;
};

}  // namespace emb::optim
