// emb/embedding_bag.hpp — EmbeddingBag<T, S>: bags of ids pooled (sum, mean or max) into one
// row each, with PyTorch's nn.EmbeddingBag semantics on CPU, stored as S and computed in T.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "detail/bag.hpp"
#include "detail/error.hpp"
#include "detail/renorm.hpp"
#include "detail/rng.hpp"
#include "detail/scatter.hpp"
#include "detail/table.hpp"
#include "index_span.hpp"
#include "options.hpp"
#include "sparse_grad.hpp"

namespace emb {

namespace io {
template <class S>
class MappedMatrix;  // emb/io/mapped.hpp
}  // namespace io

namespace detail {
// Enables an overload for a caller-owned output matrix of T: a Matrix<T> or a writable block
// or map of one, never an Eigen vector type (a vector argument is per_sample_weights).
template <class Out, class T, class D = std::remove_cv_t<std::remove_reference_t<Out>>>
using if_output_matrix =
    std::enable_if_t<std::is_base_of_v<Eigen::DenseBase<D>, D> &&
                     std::is_same_v<typename D::Scalar, T> && !D::IsVectorAtCompileTime>;
}  // namespace detail

// How a bag's rows are pooled. Mean is the default, as in PyTorch.
enum class BagMode { Sum, Mean, Max };

inline const char* to_string(BagMode mode) noexcept {
  switch (mode) {
    case BagMode::Sum: return "sum";
    case BagMode::Mean: return "mean";
    case BagMode::Max: return "max";
  }
  return "unknown";
}

// EmbeddingOptions plus the pooling mode and the offsets convention.
class EmbeddingBagOptions : public TableOptionsBase<EmbeddingBagOptions> {
 public:
  EmbeddingBagOptions(Index num_embeddings, Index embedding_dim)
      : num_embeddings_(num_embeddings), embedding_dim_(embedding_dim) {}

  EmbeddingBagOptions& num_embeddings(Index value) {
    num_embeddings_ = value;
    return *this;
  }
  Index num_embeddings() const { return num_embeddings_; }

  EmbeddingBagOptions& embedding_dim(Index value) {
    embedding_dim_ = value;
    return *this;
  }
  Index embedding_dim() const { return embedding_dim_; }

  EmbeddingBagOptions& mode(BagMode value) {
    mode_ = value;
    return *this;
  }
  BagMode mode() const { return mode_; }

  // With include_last_offset, offsets has one entry per bag plus the end (== number of
  // indices), the CSR convention; without it, one start per bag.
  EmbeddingBagOptions& include_last_offset(bool value) {
    include_last_offset_ = value;
    return *this;
  }
  bool include_last_offset() const { return include_last_offset_; }

 private:
  Index num_embeddings_;
  Index embedding_dim_;
  BagMode mode_ = BagMode::Mean;
  bool include_last_offset_ = false;
};

// Options of EmbeddingBag::from_pretrained: the shape comes from the matrix. Frozen by default.
class FromPretrainedBagOptions : public TableOptionsBase<FromPretrainedBagOptions> {
 public:
  FromPretrainedBagOptions& freeze(bool value) {
    freeze_ = value;
    return *this;
  }
  bool freeze() const { return freeze_; }

  FromPretrainedBagOptions& mode(BagMode value) {
    mode_ = value;
    return *this;
  }
  BagMode mode() const { return mode_; }

  FromPretrainedBagOptions& include_last_offset(bool value) {
    include_last_offset_ = value;
    return *this;
  }
  bool include_last_offset() const { return include_last_offset_; }

 private:
  bool freeze_ = true;
  BagMode mode_ = BagMode::Mean;
  bool include_last_offset_ = false;
};

// Optional per-sample weights of a bag call: one value per index, or none. Converts from
// nullptr (none), a `const Vector<T>*` (none when null) and any Eigen vector of T — a plain
// vector or a contiguous view is read in place, any other expression (Vector<T>::Ones(n), a
// strided view) is evaluated once into the call's own copy.
template <class T>
class PerSampleWeights {
 public:
  PerSampleWeights() = default;
  PerSampleWeights(std::nullptr_t) noexcept {}  // NOLINT: implicit by design
  PerSampleWeights(const Vector<T>* weights) noexcept  // NOLINT
      : data_(weights != nullptr ? weights->data() : nullptr),
        size_(weights != nullptr ? weights->size() : -1) {}
  // A vector handed over: kept for the call.
  PerSampleWeights(Vector<T>&& weights) noexcept  // NOLINT
      : own_(std::move(weights)), owns_(true), data_(own_.data()), size_(own_.size()) {}
  template <class Derived,
            class = std::enable_if_t<std::is_same_v<typename Derived::Scalar, T> &&
                                     Derived::IsVectorAtCompileTime>>
  PerSampleWeights(const Eigen::DenseBase<Derived>& weights) : size_(weights.size()) {  // NOLINT
    if constexpr (has_unit_stride<Derived>()) {
      data_ = weights.derived().data();
    } else {
      own_ = weights;
      owns_ = true;
      data_ = own_.data();
    }
  }

  PerSampleWeights(const PerSampleWeights& other)
      : own_(other.own_), owns_(other.owns_), data_(owns_ ? own_.data() : other.data_),
        size_(other.size_) {}
  PerSampleWeights(PerSampleWeights&& other) noexcept
      : own_(std::move(other.own_)), owns_(other.owns_), data_(owns_ ? own_.data() : other.data_),
        size_(other.size_) {}
  PerSampleWeights& operator=(PerSampleWeights other) noexcept {
    own_.swap(other.own_);
    owns_ = other.owns_;
    data_ = owns_ ? own_.data() : other.data_;
    size_ = other.size_;
    return *this;
  }
  ~PerSampleWeights() = default;

  bool has_value() const noexcept { return size_ >= 0; }
  const T* data() const noexcept { return data_; }
  // The number of weights; -1 without.
  Index size() const noexcept { return size_; }

 private:
  template <class Derived>
  static constexpr bool has_unit_stride() {
    if constexpr (std::is_base_of_v<Eigen::PlainObjectBase<Derived>, Derived>) {
      return true;
    } else if constexpr (std::is_base_of_v<Eigen::MapBase<Derived, Eigen::ReadOnlyAccessors>,
                                           Derived>) {
      return Derived::InnerStrideAtCompileTime == 1;
    } else {
      return false;
    }
  }

  Vector<T> own_;
  bool owns_ = false;
  const T* data_ = nullptr;
  Index size_ = -1;
};

// A (num_embeddings, embedding_dim) table, stored as S and computed in T (see Embedding),
// whose forward pools each bag of indices into one row.
//
// Bags are given in one of two ways:
//   * indices (n) and offsets: bag b is indices[offsets[b] : offsets[b+1]), the last bag ending
//     at n (with include_last_offset, offsets has B+1 entries and the last must equal n);
//   * an emb::Matrix<Index> of shape (B, L) without offsets: B bags of L indices each, like
//     PyTorch's 2-D input. per_sample_weights then has the same (B, L) shape.
//
// Sum = sum of psw_i * W[idx_i]; Mean divides by the number of non-padding entries; Max is
// element-wise, ties keep the first occurrence. Padding entries are skipped; an empty or
// all-padding bag gives a zero row. The pooling reads the table directly: no (n, dim)
// intermediate is built. Every call validates its whole input before it changes anything; a
// table without max_norm is not changed by forward, so a const table can be pooled from many
// threads at once.
template <class T = float, class S = T>
class EmbeddingBag : public detail::Table<T, S, EmbeddingBagOptions> {
  using Base = detail::Table<T, S, EmbeddingBagOptions>;
  static constexpr const char* name = "emb::EmbeddingBag";

 public:
  // Accessors shared with Embedding (detail/table.hpp): num_embeddings(), embedding_dim(),
  // padding_idx(), max_norm(), norm_type(), scale_grad_by_freq(), options(), weight(),
  // mutable_weight(), read_only(), frozen(), freeze(), instance_id(), use_huge_pages(),
  // uses_huge_pages().
  using Base::embedding_dim;
  using Base::num_embeddings;
  using Base::padding_idx;
  using Base::scale_grad_by_freq;

  // weight ~ N(0, 1) from `seed` (the same values as Embedding with that seed), padding row zero.
  explicit EmbeddingBag(const EmbeddingBagOptions& options, std::uint64_t seed = 0)
      : Base(name, validated(options, name), seed) {}

  // EmbeddingBag(EmbeddingBagOptions(rows, dim)) with seed 0.
  EmbeddingBag(Index rows, Index dim) : EmbeddingBag(EmbeddingBagOptions(rows, dim)) {}

  // Wraps `weight` as it is (the padding row is not zeroed); an rvalue is moved in, not copied.
  // Frozen unless options.freeze(false).
  static EmbeddingBag from_pretrained(Matrix<S> weight,
                                      const FromPretrainedBagOptions& options = {}) {
    const auto opts = table_options(weight.rows(), weight.cols(), options,
                                    "emb::EmbeddingBag::from_pretrained");
    return EmbeddingBag(opts, detail::RowStorage<S>(std::move(weight)), options.freeze(),
                        "emb::EmbeddingBag::from_pretrained");
  }

  BagMode mode() const { return this->options_.mode(); }
  bool include_last_offset() const { return this->options_.include_last_offset(); }

  // A table that reads its rows from a mapped file's pages, without copying them (see
  // emb/io/mapped.hpp: io::map_npy, io::SafeTensors::map; include it to call this). A
  // MapMode::ReadOnly mapping makes a read-only table: it stays frozen and refuses every write
  // (optimizer step, max_norm forward, mutable_weight, set_weight, freeze(false)) with
  // std::logic_error before anything changes. A MapMode::CopyOnWrite mapping trains in private
  // memory; the file never changes.
  static EmbeddingBag from_mapped(io::MappedMatrix<S> mapped, const FromPretrainedBagOptions& options = {}) {
    static constexpr const char* where = "emb::EmbeddingBag::from_mapped";
    const auto opts = table_options(mapped.rows(), mapped.cols(), options, where);
    return EmbeddingBag(opts, detail::mapped_storage<S>(std::move(mapped)), options.freeze(), where);
  }

  // Same shape or std::invalid_argument (and the table is unchanged). A read-only table throws
  // std::logic_error.
  void set_weight(Matrix<S> weight) {
    this->replace_weight("emb::EmbeddingBag::set_weight", std::move(weight));
  }

  // ---- indices + offsets -------------------------------------------------------------------

  // (B, embedding_dim): one pooled row per bag. With max_norm the looked-up rows are
  // renormalised in place first, as in Embedding. per_sample_weights (Sum mode only): bag b =
  // sum of per_sample_weights[i] * W[indices[i]] over its entries.
  Matrix<T> forward(IndexSpan indices, IndexSpan offsets, PerSampleWeights<T> psw = {}) {
    return pooled(indices, offsets, include_last_offset(), psw);
  }
  // The same into a caller-owned (B, embedding_dim) buffer (a Matrix<T> or a block of one;
  // never a vector, which would be per_sample_weights); no allocation for Sum and Mean.
  template <class Out, class = detail::if_output_matrix<Out, T>>
  void forward(IndexSpan indices, IndexSpan offsets, Out&& out, PerSampleWeights<T> psw = {}) {
    Eigen::Ref<Matrix<T>> dst(out);
    const std::size_t bags = check_call(forward_where, indices, offsets, include_last_offset(), psw);
    check_out(bags, dst);
    this->renorm_looked_up(forward_where, indices);
    pool(indices, offsets, bags, psw, dst.data(), dst.outerStride());
  }
  // On a const table: never a write, safe from many threads at once; a table with max_norm
  // throws std::logic_error.
  Matrix<T> forward(IndexSpan indices, IndexSpan offsets, PerSampleWeights<T> psw = {}) const {
    return pooled(indices, offsets, include_last_offset(), psw);
  }
  template <class Out, class = detail::if_output_matrix<Out, T>>
  void forward(IndexSpan indices, IndexSpan offsets, Out&& out,
               PerSampleWeights<T> psw = {}) const {
    Eigen::Ref<Matrix<T>> dst(out);
    this->check_const_lookup(forward_where);
    const std::size_t bags = check_call(forward_where, indices, offsets, include_last_offset(), psw);
    check_out(bags, dst);
    pool(indices, offsets, bags, psw, dst.data(), dst.outerStride());
  }

  Matrix<T> operator()(IndexSpan indices, IndexSpan offsets, PerSampleWeights<T> psw = {}) {
    return forward(indices, offsets, psw);
  }
  Matrix<T> operator()(IndexSpan indices, IndexSpan offsets, PerSampleWeights<T> psw = {}) const {
    return forward(indices, offsets, psw);
  }

  // Gradient with respect to the table given the gradient of forward's (B, dim) output:
  // row-sparse and coalesced (distinct rows ascending, padding never present). Sum / Mean:
  // every distinct non-padding index of the call. Max: every row that won at least one output
  // element; the winners are found from the current table, so call it before changing the
  // table. Cost independent of num_embeddings.
  SparseGrad<T> backward(IndexSpan indices, IndexSpan offsets,
                         const Eigen::Ref<const Matrix<T>>& grad_output,
                         PerSampleWeights<T> psw = {}) const {
    return sparse_gradient("emb::EmbeddingBag::backward", indices, offsets, include_last_offset(),
                           grad_output, psw);
  }

  // The same gradient as a dense (num_embeddings, embedding_dim) matrix, scattered straight
  // into it.
  Matrix<T> backward_dense(IndexSpan indices, IndexSpan offsets,
                           const Eigen::Ref<const Matrix<T>>& grad_output,
                           PerSampleWeights<T> psw = {}) const {
    Matrix<T> grad(num_embeddings(), embedding_dim());  // every row is written by the kernel
    dense_gradient("emb::EmbeddingBag::backward_dense", indices, offsets, include_last_offset(),
                   grad_output, psw, grad.data(), grad.outerStride());
    return grad;
  }
  // The same into a caller-owned (num_embeddings, embedding_dim) buffer, overwritten whole.
  template <class Out, class = detail::if_output_matrix<Out, T>>
  void backward_dense(IndexSpan indices, IndexSpan offsets,
                      const Eigen::Ref<const Matrix<T>>& grad_output, Out&& grad,
                      PerSampleWeights<T> psw = {}) const {
    static constexpr const char* where = "emb::EmbeddingBag::backward_dense";
    Eigen::Ref<Matrix<T>> dst(grad);
    detail::check_shape(where, "grad", num_embeddings(), embedding_dim(), dst.rows(), dst.cols());
    dense_gradient(where, indices, offsets, include_last_offset(), grad_output, psw, dst.data(),
                   dst.outerStride());
  }

  // Sum mode only: the gradient with respect to per_sample_weights, entry i =
  // <W[indices[i]], grad_output[bag(i)]>, and 0 for padding entries (as PyTorch gives it).
  Vector<T> backward_per_sample_weights(IndexSpan indices, IndexSpan offsets,
                                        const Eigen::Ref<const Matrix<T>>& grad_output) const {
    return psw_gradient("emb::EmbeddingBag::backward_per_sample_weights", indices, offsets,
                        include_last_offset(), grad_output);
  }

  // ---- fixed-length bags: a (B, L) matrix, one bag per row ----------------------------------
  // per_sample_weights, where given, has the shape of input (Sum mode only).

  Matrix<T> forward(const Matrix<Index>& input) {
    return pooled(input, fixed_offsets(input), false, {});
  }
  Matrix<T> forward(const Matrix<Index>& input,
                    const Eigen::Ref<const Matrix<T>>& per_sample_weights) {
    return pooled(input, fixed_offsets(input), false, fixed_weights(forward_where, input, per_sample_weights));
  }
  Matrix<T> forward(const Matrix<Index>& input) const {
    return pooled(input, fixed_offsets(input), false, {});
  }
  Matrix<T> forward(const Matrix<Index>& input,
                    const Eigen::Ref<const Matrix<T>>& per_sample_weights) const {
    return pooled(input, fixed_offsets(input), false, fixed_weights(forward_where, input, per_sample_weights));
  }
  Matrix<T> operator()(const Matrix<Index>& input) { return forward(input); }
  Matrix<T> operator()(const Matrix<Index>& input) const { return forward(input); }

  SparseGrad<T> backward(const Matrix<Index>& input,
                         const Eigen::Ref<const Matrix<T>>& grad_output) const {
    return sparse_gradient("emb::EmbeddingBag::backward", input, fixed_offsets(input), false,
                           grad_output, {});
  }
  SparseGrad<T> backward(const Matrix<Index>& input, const Eigen::Ref<const Matrix<T>>& grad_output,
                         const Eigen::Ref<const Matrix<T>>& per_sample_weights) const {
    static constexpr const char* where = "emb::EmbeddingBag::backward";
    return sparse_gradient(where, input, fixed_offsets(input), false, grad_output,
                           fixed_weights(where, input, per_sample_weights));
  }
  Matrix<T> backward_dense(const Matrix<Index>& input,
                           const Eigen::Ref<const Matrix<T>>& grad_output) const {
    Matrix<T> grad(num_embeddings(), embedding_dim());
    dense_gradient("emb::EmbeddingBag::backward_dense", input, fixed_offsets(input), false,
                   grad_output, {}, grad.data(), grad.outerStride());
    return grad;
  }
  Matrix<T> backward_dense(const Matrix<Index>& input,
                           const Eigen::Ref<const Matrix<T>>& grad_output,
                           const Eigen::Ref<const Matrix<T>>& per_sample_weights) const {
    static constexpr const char* where = "emb::EmbeddingBag::backward_dense";
    Matrix<T> grad(num_embeddings(), embedding_dim());
    dense_gradient(where, input, fixed_offsets(input), false, grad_output,
                   fixed_weights(where, input, per_sample_weights), grad.data(), grad.outerStride());
    return grad;
  }
  // (B, L): the gradient with respect to a (B, L) per_sample_weights (Sum mode only).
  Matrix<T> backward_per_sample_weights(const Matrix<Index>& input,
                                        const Eigen::Ref<const Matrix<T>>& grad_output) const {
    const Vector<T> flat = psw_gradient("emb::EmbeddingBag::backward_per_sample_weights", input,
                                        fixed_offsets(input), false, grad_output);
    return Eigen::Map<const Matrix<T>>(flat.data(), input.rows(), input.cols());
  }

 protected:
  // The options of a table built over given rows (from_pretrained, from_mapped), validated.
  static EmbeddingBagOptions table_options(Index rows, Index cols,
                                           const FromPretrainedBagOptions& o, const char* where) {
    EmbeddingBagOptions opts(rows, cols);
    opts.mode(o.mode())
        .include_last_offset(o.include_last_offset())
        .padding_idx(o.padding_idx())
        .max_norm(o.max_norm())
        .norm_type(o.norm_type())
        .scale_grad_by_freq(o.scale_grad_by_freq());
    return validated(opts, where);
  }

  EmbeddingBag(const EmbeddingBagOptions& options, detail::RowStorage<S>&& storage, bool frozen,
               const char* where)
      : Base(name, options, std::move(storage), frozen, where) {}

 private:
  static constexpr const char* forward_where = "emb::EmbeddingBag::forward";

  static EmbeddingBagOptions validated(EmbeddingBagOptions options, const char* where) {
    options = detail::validated_table_options(std::move(options), where);
    const auto m = options.mode();
    if (m != BagMode::Sum && m != BagMode::Mean && m != BagMode::Max) {
      detail::throw_bad_option(where, "mode", detail::concat(static_cast<int>(m)),
                               "it must be BagMode::Sum, Mean or Max");
    }
    return options;
  }

  Index skip() const { return padding_idx().value_or(-1); }

  static std::vector<Index> fixed_offsets(const Matrix<Index>& input) {
    return detail::fixed_offsets(static_cast<std::size_t>(input.rows()), input.cols());
  }

  // The (B, L) weights of a fixed-length call, checked against input's shape and read in
  // row-major order (copied only when their rows are not contiguous).
  static PerSampleWeights<T> fixed_weights(const char* where, const Matrix<Index>& input,
                                           const Eigen::Ref<const Matrix<T>>& psw) {
    detail::check_shape(where, "per_sample_weights", input.rows(), input.cols(), psw.rows(),
                        psw.cols());
    if (psw.outerStride() == psw.cols() || psw.rows() <= 1) {
      return PerSampleWeights<T>(Eigen::Map<const Vector<T>>(psw.data(), psw.size()));
    }
    Vector<T> flat(psw.size());
    Eigen::Map<Matrix<T>>(flat.data(), psw.rows(), psw.cols()) = psw;
    return PerSampleWeights<T>(std::move(flat));
  }

  // Checks everything a call depends on and returns the number of bags.
  std::size_t check_call(const char* where, IndexSpan indices, IndexSpan offsets,
                         bool include_last, const PerSampleWeights<T>& psw) const {
    if (psw.has_value()) {
      if (mode() != BagMode::Sum) {
        throw std::invalid_argument(detail::concat(
            where,
            ": per_sample_weights is only supported in sum mode, not mode = ", to_string(mode())));
      }
      if (psw.size() != static_cast<Index>(indices.size())) {
        throw std::invalid_argument(detail::concat(where, ": per_sample_weights has ", psw.size(),
                                                   " values, expected one per index (",
                                                   indices.size(), ")"));
      }
    }
    const std::size_t bags = detail::check_offsets(where, offsets, indices.size(), include_last);
    detail::check_indices(where, indices, num_embeddings());
    return bags;
  }

  void check_out(std::size_t bags, const Eigen::Ref<Matrix<T>>& out) const {
    detail::check_shape(forward_where, "out", static_cast<Index>(bags), embedding_dim(),
                        out.rows(), out.cols());
  }

  Matrix<T> pooled(IndexSpan indices, IndexSpan offsets, bool include_last,
                   const PerSampleWeights<T>& psw) {
    const std::size_t bags = check_call(forward_where, indices, offsets, include_last, psw);
    this->renorm_looked_up(forward_where, indices);
    Matrix<T> out(static_cast<Index>(bags), embedding_dim());
    pool(indices, offsets, bags, psw, out.data(), out.cols());
    return out;
  }
  Matrix<T> pooled(IndexSpan indices, IndexSpan offsets, bool include_last,
                   const PerSampleWeights<T>& psw) const {
    this->check_const_lookup(forward_where);
    const std::size_t bags = check_call(forward_where, indices, offsets, include_last, psw);
    Matrix<T> out(static_cast<Index>(bags), embedding_dim());
    pool(indices, offsets, bags, psw, out.data(), out.cols());
    return out;
  }

  void pool(IndexSpan indices, IndexSpan offsets, std::size_t bags,
            const PerSampleWeights<T>& psw, T* out, Index out_stride) const {
    if (mode() == BagMode::Max) {
      detail::bag_max(this->view(), indices, offsets, bags, skip(), out, out_stride);
    } else {
      detail::bag_sum(this->view(), indices, offsets, bags, skip(), psw.data(),
                      mode() == BagMode::Mean, out, out_stride);
    }
  }

  // What a Sum / Mean gradient needs: where each position's gradient row is, and its scale.
  struct SumLayout {
    std::vector<std::size_t> bag_of;
    std::vector<Index> bag_size;
  };
  void sum_layout(IndexSpan indices, IndexSpan offsets, std::size_t bags, SumLayout& layout) const {
    detail::bag_layout(indices, offsets, bags, skip(), layout.bag_of, layout.bag_size);
  }
  detail::GradScale<T> grad_scale(const SumLayout& layout, const PerSampleWeights<T>& psw) const {
    detail::GradScale<T> scale;
    scale.psw = psw.data();
    scale.by_freq = scale_grad_by_freq();
    if (mode() == BagMode::Mean) {
      scale.bag_of = &layout.bag_of;
      scale.bag_size = &layout.bag_size;
    }
    return scale;
  }

  std::size_t check_gradient_call(const char* where, IndexSpan indices, IndexSpan offsets,
                                  bool include_last, const Eigen::Ref<const Matrix<T>>& grad_output,
                                  const PerSampleWeights<T>& psw) const {
    const std::size_t bags = check_call(where, indices, offsets, include_last, psw);
    detail::check_shape(where, "grad_output", static_cast<Index>(bags), embedding_dim(),
                        grad_output.rows(), grad_output.cols());
    return bags;
  }

  SparseGrad<T> sparse_gradient(const char* where, IndexSpan indices, IndexSpan offsets,
                                bool include_last, const Eigen::Ref<const Matrix<T>>& grad_output,
                                const PerSampleWeights<T>& psw) const {
    const std::size_t bags =
        check_gradient_call(where, indices, offsets, include_last, grad_output, psw);
    SparseGrad<T> grad;
    grad.num_embeddings = num_embeddings();
    if (mode() == BagMode::Max) {
      std::vector<Index> winners;
      detail::bag_max_winners<T>(this->view(), indices, offsets, bags, skip(), winners);
      detail::max_winners_sparse(winners, bags, grad_output.data(), grad_output.outerStride(),
                                 embedding_dim(), grad.rows, grad.values);
      return grad;
    }
    SumLayout layout;
    sum_layout(indices, offsets, bags, layout);
    detail::RowSegments segments;
    detail::group_by_row(indices, skip(), segments);
    grad.values.resize(static_cast<Index>(segments.rows.size()), embedding_dim());
    const std::size_t bytes = segments.positions.size() *
                              static_cast<std::size_t>(embedding_dim()) * sizeof(T);
    detail::sum_segments_into(
        segments, {grad_output.data(), grad_output.outerStride(), &layout.bag_of},
        grad_scale(layout, psw), embedding_dim(), grad.values.data(),
        detail::threads_for(segments.rows.size(), bytes));
    grad.rows = std::move(segments.rows);
    return grad;
  }

  void dense_gradient(const char* where, IndexSpan indices, IndexSpan offsets, bool include_last,
                      const Eigen::Ref<const Matrix<T>>& grad_output,
                      const PerSampleWeights<T>& psw, T* grad, Index grad_stride) const {
    const std::size_t bags =
        check_gradient_call(where, indices, offsets, include_last, grad_output, psw);
    if (mode() == BagMode::Max) {
      std::vector<Index> winners;
      detail::bag_max_winners<T>(this->view(), indices, offsets, bags, skip(), winners);
      detail::max_winners_dense(winners, bags, grad_output.data(), grad_output.outerStride(),
                                embedding_dim(), grad, grad_stride, num_embeddings());
      return;
    }
    SumLayout layout;
    sum_layout(indices, offsets, bags, layout);
    const auto bytes = static_cast<std::size_t>(num_embeddings()) *
                       static_cast<std::size_t>(embedding_dim()) * sizeof(T);
    detail::zero_and_scatter_dense(
        indices, {grad_output.data(), grad_output.outerStride(), &layout.bag_of},
        grad_scale(layout, psw), embedding_dim(), skip(), grad, grad_stride, num_embeddings(),
        detail::threads_for(static_cast<std::size_t>(num_embeddings()), bytes));
  }

  Vector<T> psw_gradient(const char* where, IndexSpan indices, IndexSpan offsets, bool include_last,
                         const Eigen::Ref<const Matrix<T>>& grad_output) const {
    if (mode() != BagMode::Sum) {
      throw std::invalid_argument(detail::concat(
          where,
          ": per_sample_weights is only supported in sum mode, not mode = ", to_string(mode())));
    }
    const std::size_t bags = check_gradient_call(where, indices, offsets, include_last, grad_output, {});
    SumLayout layout;
    sum_layout(indices, offsets, bags, layout);
    Vector<T> out(static_cast<Index>(indices.size()));
    detail::bag_psw_backward(this->view(), indices, layout.bag_of, skip(), grad_output.data(),
                             grad_output.outerStride(), out.data());
    return out;
  }
};

}  // namespace emb
