// emb/optim.hpp — row-sparse optimizer steps for any emb table (Embedding, EmbeddingBag, in any
// storage), with the arithmetic of PyTorch's torch.optim.SGD, Adagrad and SparseAdam on sparse
// gradients.
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
// frozen table is never changed and gets no state; a read-only (mapped) table refuses a step.
//
// A table stored narrower than T (half, bfloat16) is updated in T: each new row is computed from
// the stored row converted to T, with the state in T, and rounded back once — to nearest even,
// or stochastically after opt.stochastic_rounding(seed).
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

#include "detail/codec.hpp"
#include "detail/error.hpp"
#include "detail/rounding.hpp"
#include "detail/scatter.hpp"
#include "detail/table.hpp"
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

// Per-table state: the table's shape (a table never changes shape, so a mismatch means the
// state is not this table's), its step counter, and what the optimizer keeps (Slots).
template <class Slots>
struct TableState {
  Index num_embeddings = 0;
  Index dim = 0;
  std::int64_t step = 0;
  Slots slots;
};

// State of every table an optimizer has stepped, keyed by the table's instance_id().
template <class Slots>
class StateMap {
 public:
  // The state of the table `key`, created by make(num_embeddings, dim) on first use.
  template <class Make>
  TableState<Slots>& get(const char* where, std::uint64_t key, Index num_embeddings, Index dim,
                         Make make) {
    auto it = states_.find(key);
    if (it == states_.end()) {
      TableState<Slots> state;
      state.num_embeddings = num_embeddings;
      state.dim = dim;
      state.slots = make(num_embeddings, dim);
      it = states_.emplace(key, std::move(state)).first;
    } else if (it->second.num_embeddings != num_embeddings || it->second.dim != dim) {
      throw std::invalid_argument(concat(where, ": this optimizer holds state for a (",
                                         it->second.num_embeddings, ", ", it->second.dim,
                                         ") table under this table's id, not (", num_embeddings,
                                         ", ", dim, "); call forget(table) to start afresh"));
    }
    return it->second;
  }
  const TableState<Slots>* find(std::uint64_t key) const {
    const auto it = states_.find(key);
    return it == states_.end() ? nullptr : &it->second;
  }
  void forget(std::uint64_t key) { states_.erase(key); }
  void clear() { states_.clear(); }
  std::size_t size() const { return states_.size(); }

 private:
  std::unordered_map<std::uint64_t, TableState<Slots>> states_;
};

// The rows of a table as an optimizer updates them: update(r, f) calls f(T* row) on row r as
// T, in place when the table stores T, otherwise on the row converted to T, which is then
// rounded back to the storage (to nearest, or stochastically: see StorageRounding).
template <class T, class S>
class RowWriter {
 public:
  RowWriter(S* data, Index dim, emb::detail::StorageRounding& rounding)
      : data_(data), dim_(dim), rounding_(rounding), scratch_(std::is_same_v<T, S> ? 0 : static_cast<std::size_t>(dim)) {}

  template <class F>
  void update(Index r, F&& f) {
    S* row = data_ + r * dim_;
    if constexpr (std::is_same_v<T, S>) {
      f(row);
    } else {
      emb::detail::decode_values(row, dim_, scratch_.data());
      f(scratch_.data());
      rounding_.store(scratch_.data(), dim_, row);
    }
  }
  Index dim() const noexcept { return dim_; }

 private:
  S* data_;
  Index dim_;
  emb::detail::StorageRounding& rounding_;
  std::vector<T> scratch_;
};

// CRTP base giving every optimizer the same entry points: step / forget / steps on any emb
// table (Embedding<T, S>, EmbeddingBag<T, S>, whatever the storage), and on any other type for
// which an unqualified optim_table(x), found by argument-dependent lookup, returns the emb table
// to step (a sharded table returns its local shard). Derived implements
// apply(where, key, rows, num_embeddings, grad) for a validated gradient and a writable table
// that is not frozen, and names its per-table Slots and their make(num_embeddings, dim).
template <class Derived, class T, class Slots>
class OptimizerBase {
 public:
  template <class Target>
  void step(Target& target, const SparseGrad<T>& grad) {
    run(optim_table(target), grad);
  }

  // Rounds the rows written to a table stored narrower than T stochastically (unbiased: up
  // with probability equal to the fraction of the spacing), from a stream seeded with `seed`,
  // instead of to nearest even. Updates smaller than half a spacing then still move the table
  // on average. No effect on tables that store T.
  Derived& stochastic_rounding(std::uint64_t seed) {
    rounding_.stochastic(seed);
    return static_cast<Derived&>(*this);
  }
  bool stochastic_rounding() const noexcept { return rounding_.is_stochastic(); }

  // Drops the state of `table` (its next step starts afresh, as with a new optimizer).
  template <class Target>
  void forget(const Target& target) {
    states_.forget(optim_table(target).instance_id());
  }
  // The same by the table's instance_id(), for a table that no longer exists.
  void forget_id(std::uint64_t instance_id) { states_.forget(instance_id); }
  void reset() { states_.clear(); }
  // How many tables this optimizer holds state for.
  std::size_t tables() const { return states_.size(); }

  // How many steps `table` has taken with this optimizer (0 before its first).
  template <class Target>
  std::int64_t steps(const Target& target) const {
    const auto* s = states_.find(optim_table(target).instance_id());
    return s == nullptr ? 0 : s->step;
  }

 protected:
  StateMap<Slots> states_;

 private:
  template <class S, class Options>
  void run(emb::detail::Table<T, S, Options>& table, const SparseGrad<T>& grad) {
    const char* where = Derived::name();
    check_grad(where, table.num_embeddings(), table.embedding_dim(), grad);
    table.require_writable(where);
    if (table.frozen()) return;
    auto w = table.mutable_weight();
    RowWriter<T, S> rows(w.data(), w.cols(), rounding_);
    static_cast<Derived&>(*this).apply(where, table.instance_id(), rows, w.rows(), grad);
  }

  emb::detail::StorageRounding rounding_;
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
// SGD's state: with momentum, the momentum buffer and the rows whose buffer may be non-zero.
template <class T>
struct SgdSlots {
  Matrix<T> buffer;
  std::vector<Index> active;
  std::vector<char> is_active;
};

template <class T = float>
class SGD : public detail::OptimizerBase<SGD<T>, T, SgdSlots<T>> {
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
  friend class detail::OptimizerBase<SGD<T>, T, SgdSlots<T>>;

  template <class S>
  void apply(const char* where, std::uint64_t key, detail::RowWriter<T, S>& w, Index rows,
             const SparseGrad<T>& grad) {
    const Index dim = w.dim();
    const T neg_lr = static_cast<T>(-lr_);
    const bool with_momentum = momentum_ != 0.0;
    auto& state = this->states_.get(where, key, rows, dim, [with_momentum](Index n, Index d) {
      SgdSlots<T> slots;
      if (with_momentum) {
        slots.buffer = Matrix<T>::Zero(n, d);
        slots.is_active.assign(static_cast<std::size_t>(n), 0);
      }
      return slots;
    });
    if (!with_momentum) {
      ++state.step;
      for (std::size_t i = 0; i < grad.rows.size(); ++i) {
        const T* g = &grad.values(static_cast<Index>(i), 0);
        w.update(grad.rows[i], [&](T* row) { emb::detail::axpy_row(row, g, neg_lr, dim); });
      }
      return;
    }
    auto& slots = state.slots;
    Matrix<T>& buf = slots.buffer;
    const bool first = state.step == 0;
    ++state.step;
    const T m = static_cast<T>(momentum_);
    const T one_minus_d = static_cast<T>(1.0 - dampening_);
    // buf = m * buf + (1 - d) * g, computed as PyTorch does: scale first, then add.
    for (Index r : slots.active) buf.row(r) *= m;
    for (std::size_t i = 0; i < grad.rows.size(); ++i) {
      const Index r = grad.rows[i];
      const auto g = grad.values.row(static_cast<Index>(i));
      if (first) {
        buf.row(r) = g;
      } else {
        emb::detail::axpy_row(&buf(r, 0), g.data(), one_minus_d, dim);
      }
      if (!slots.is_active[static_cast<std::size_t>(r)]) {
        slots.is_active[static_cast<std::size_t>(r)] = 1;
        slots.active.push_back(r);
      }
    }
    if (!nesterov_) {
      for (Index r : slots.active) {
        w.update(r, [&](T* row) { emb::detail::axpy_row(row, &buf(r, 0), neg_lr, dim); });
      }
      return;
    }
    // Nesterov: w -= lr * (g + m * buf); rows absent from grad have g = 0.
    Vector<T> update(dim);
    for (Index r : slots.active) {
      const auto it = std::lower_bound(grad.rows.begin(), grad.rows.end(), r);
      if (it != grad.rows.end() && *it == r) {
        const auto i = static_cast<Index>(it - grad.rows.begin());
        update = grad.values.row(i).transpose() + m * buf.row(r).transpose();
      } else {
        update = m * buf.row(r).transpose();
      }
      w.update(r, [&](T* row) { emb::detail::axpy_row(row, update.data(), neg_lr, dim); });
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
template <class T>
struct AdagradSlots {
  Matrix<T> sum;
};

template <class T = float>
class Adagrad : public detail::OptimizerBase<Adagrad<T>, T, AdagradSlots<T>> {
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
  friend class detail::OptimizerBase<Adagrad<T>, T, AdagradSlots<T>>;

  template <class S>
  void apply(const char* where, std::uint64_t key, detail::RowWriter<T, S>& w, Index rows,
             const SparseGrad<T>& grad) {
    const Index dim = w.dim();
    const T initial = static_cast<T>(initial_);
    auto& state = this->states_.get(where, key, rows, dim, [initial](Index n, Index d) {
      return AdagradSlots<T>{Matrix<T>::Constant(n, d, initial)};
    });
    ++state.step;
    const double clr = lr_ / (1.0 + static_cast<double>(state.step - 1) * lr_decay_);
    const T neg_clr = static_cast<T>(-clr);
    const T eps = static_cast<T>(eps_);
    Matrix<T>& sum = state.slots.sum;
    for (std::size_t i = 0; i < grad.rows.size(); ++i) {
      const Index r = grad.rows[i];
      const auto g = RowArray(&grad.values(static_cast<Index>(i), 0), dim);
      auto s = MutableRowArray(&sum(r, 0), dim);
      s += g * g;
      w.update(r, [&](T* row) { MutableRowArray(row, dim) += neg_clr * (g / (s.sqrt() + eps)); });
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
template <class T>
struct SparseAdamSlots {
  Matrix<T> m;
  Matrix<T> v;
};

template <class T = float>
class SparseAdam : public detail::OptimizerBase<SparseAdam<T>, T, SparseAdamSlots<T>> {
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
  friend class detail::OptimizerBase<SparseAdam<T>, T, SparseAdamSlots<T>>;

  template <class S>
  void apply(const char* where, std::uint64_t key, detail::RowWriter<T, S>& w, Index rows,
             const SparseGrad<T>& grad) {
    const Index dim = w.dim();
    auto& state = this->states_.get(where, key, rows, dim, [](Index n, Index d) {
      return SparseAdamSlots<T>{Matrix<T>::Zero(n, d), Matrix<T>::Zero(n, d)};
    });
    ++state.step;
    if (grad.rows.empty()) return;
    const auto t = static_cast<double>(state.step);
    const double bias1 = 1.0 - std::pow(beta1_, t);
    const double bias2 = 1.0 - std::pow(beta2_, t);
    const T neg_step = static_cast<T>(-(lr_ * std::sqrt(bias2) / bias1));
    const T one_minus_b1 = static_cast<T>(1.0 - beta1_);
    const T one_minus_b2 = static_cast<T>(1.0 - beta2_);
    const T eps = static_cast<T>(eps_);
    Matrix<T>& m = state.slots.m;
    Matrix<T>& v = state.slots.v;
    for (std::size_t i = 0; i < grad.rows.size(); ++i) {
      const Index r = grad.rows[i];
      const auto g = RowArray(&grad.values(static_cast<Index>(i), 0), dim);
      auto mr = MutableRowArray(&m(r, 0), dim);
      auto vr = MutableRowArray(&v(r, 0), dim);
      // m + (1 - b1) * (g - m), in PyTorch's order: the update is formed, then added; the
      // numerator PyTorch forms as update + old m is the same sum.
      mr += (g - mr) * one_minus_b1;
      vr += (g * g - vr) * one_minus_b2;
      w.update(r, [&](T* row) { MutableRowArray(row, dim) += neg_step * (mr / (vr.sqrt() + eps)); });
    }
  }

  double lr_;
  double beta1_;
  double beta2_;
  double eps_;
};

}  // namespace emb::optim
