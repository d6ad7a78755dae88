// emb/embedding_bag.hpp — EmbeddingBag<T>: bags of ids pooled (sum, mean or max) into one row
// each, with PyTorch's nn.EmbeddingBag semantics on CPU.
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

// A (num_embeddings, embedding_dim) table whose forward pools each bag of indices into one row.
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
// intermediate is built. Every call validates its whole input before it changes anything.
template <class T = float>
class EmbeddingBag : public detail::Table<T, EmbeddingBagOptions> {
  static_assert(std::is_floating_point_v<T>, "emb::EmbeddingBag<T> needs a floating-point T");
  using Base = detail::Table<T, EmbeddingBagOptions>;

 public:
  // Accessors shared with Embedding (detail/table.hpp): num_embeddings(), embedding_dim(),
  // padding_idx(), max_norm(), norm_type(), scale_grad_by_freq(), options(), weight(),
  // mutable_weight(), frozen(), freeze(), instance_id().
  using Base::embedding_dim;
  using Base::num_embeddings;
  using Base::padding_idx;
  using Base::scale_grad_by_freq;

  // weight ~ N(0, 1) from `seed` (the same values as Embedding with that seed), padding row zero.
  explicit EmbeddingBag(const EmbeddingBagOptions& options, std::uint64_t seed = 0)
      : Base(validated(options, "emb::EmbeddingBag"), seed) {}

  // EmbeddingBag(EmbeddingBagOptions(rows, dim)) with seed 0.
  EmbeddingBag(Index rows, Index dim) : EmbeddingBag(EmbeddingBagOptions(rows, dim)) {}

  // Wraps `weight` as it is (the padding row is not zeroed); an rvalue is moved in, not copied.
  // Frozen unless options.freeze(false).
  static EmbeddingBag from_pretrained(Matrix<T> weight,
                                      const FromPretrainedBagOptions& options = {}) {
    EmbeddingBagOptions opts(weight.rows(), weight.cols());
    opts.mode(options.mode())
        .include_last_offset(options.include_last_offset())
        .padding_idx(options.padding_idx())
        .max_norm(options.max_norm())
        .norm_type(options.norm_type())
        .scale_grad_by_freq(options.scale_grad_by_freq());
    return EmbeddingBag(validated(opts, "emb::EmbeddingBag::from_pretrained"), std::move(weight),
                        options.freeze());
  }

  BagMode mode() const { return this->options_.mode(); }
  bool include_last_offset() const { return this->options_.include_last_offset(); }

  // Same shape or std::invalid_argument (and the table is unchanged).
  void set_weight(Matrix<T> weight) {
    this->replace_weight("emb::EmbeddingBag::set_weight", std::move(weight));
  }

  // ---- indices + offsets -------------------------------------------------------------------

  // (B, embedding_dim): one pooled row per bag. Not const: with max_norm the looked-up rows are
  // renormalised in place first, as in Embedding.
  Matrix<T> forward(IndexSpan indices, IndexSpan offsets) {
    return pool("emb::EmbeddingBag::forward", indices, offsets, include_last_offset(), nullptr, -1);
  }

  // Sum mode only: bag b = sum of per_sample_weights[i] * W[indices[i]] over its entries.
  Matrix<T> forward(IndexSpan indices, IndexSpan offsets, const Vector<T>& per_sample_weights) {
    return pool("emb::EmbeddingBag::forward", indices, offsets, include_last_offset(),
                per_sample_weights.data(), per_sample_weights.size());
  }

  Matrix<T> operator()(IndexSpan indices, IndexSpan offsets) { return forward(indices, offsets); }
  Matrix<T> operator()(IndexSpan indices, IndexSpan offsets, const Vector<T>& per_sample_weights) {
    return forward(indices, offsets, per_sample_weights);
  }

  // Gradient with respect to the table given the gradient of forward's (B, dim) output:
  // row-sparse and coalesced (distinct rows ascending, padding never present). Sum / Mean:
  // every distinct non-padding index of the call. Max: every row that won at least one output
  // element; the winners are recomputed from the current table, so call it before changing
  // the table. Cost independent of num_embeddings.
  SparseGrad<T> backward(IndexSpan indices, IndexSpan offsets,
                         const Eigen::Ref<const Matrix<T>>& grad_output) const {
    return gradient("emb::EmbeddingBag::backward", indices, offsets, include_last_offset(),
                    grad_output, nullptr, -1);
  }
  SparseGrad<T> backward(IndexSpan indices, IndexSpan offsets,
                         const Eigen::Ref<const Matrix<T>>& grad_output,
                         const Vector<T>& per_sample_weights) const {
    return gradient("emb::EmbeddingBag::backward", indices, offsets, include_last_offset(),
                    grad_output, per_sample_weights.data(), per_sample_weights.size());
  }

  // The same gradient as a dense (num_embeddings, embedding_dim) matrix.
  Matrix<T> backward_dense(IndexSpan indices, IndexSpan offsets,
                           const Eigen::Ref<const Matrix<T>>& grad_output) const {
    return gradient("emb::EmbeddingBag::backward_dense", indices, offsets, include_last_offset(),
                    grad_output, nullptr, -1)
        .to_dense();
  }
  Matrix<T> backward_dense(IndexSpan indices, IndexSpan offsets,
                           const Eigen::Ref<const Matrix<T>>& grad_output,
                           const Vector<T>& per_sample_weights) const {
    return gradient("emb::EmbeddingBag::backward_dense", indices, offsets, include_last_offset(),
                    grad_output, per_sample_weights.data(), per_sample_weights.size())
        .to_dense();
  }

  // Sum mode only: the gradient with respect to per_sample_weights, entry i =
  // <W[indices[i]], grad_output[bag(i)]>, and 0 for padding entries (as PyTorch gives it).
  Vector<T> backward_per_sample_weights(IndexSpan indices, IndexSpan offsets,
                                        const Eigen::Ref<const Matrix<T>>& grad_output) const {
    return psw_gradient("emb::EmbeddingBag::backward_per_sample_weights", indices, offsets,
                        include_last_offset(), grad_output);
  }

  // ---- fixed-length bags: a (B, L) matrix, one bag per row ----------------------------------

  Matrix<T> forward(const Matrix<Index>& input) {
    const auto offsets = fixed_offsets(input);
    return pool("emb::EmbeddingBag::forward", input, offsets, false, nullptr, -1);
  }
  // per_sample_weights has the shape of input (Sum mode only).
  Matrix<T> forward(const Matrix<Index>& input,
                    const Eigen::Ref<const Matrix<T>>& per_sample_weights) {
    static constexpr const char* where = "emb::EmbeddingBag::forward";
    detail::check_shape(where, "per_sample_weights", input.rows(), input.cols(),
                        per_sample_weights.rows(), per_sample_weights.cols());
    const Matrix<T> psw = per_sample_weights;  // contiguous, row-major like input
    const auto offsets = fixed_offsets(input);
    return pool(where, input, offsets, false, psw.data(), psw.size());
  }
  Matrix<T> operator()(const Matrix<Index>& input) { return forward(input); }

  SparseGrad<T> backward(const Matrix<Index>& input,
                         const Eigen::Ref<const Matrix<T>>& grad_output) const {
    const auto offsets = fixed_offsets(input);
    return gradient("emb::EmbeddingBag::backward", input, offsets, false, grad_output, nullptr, -1);
  }
  SparseGrad<T> backward(const Matrix<Index>& input, const Eigen::Ref<const Matrix<T>>& grad_output,
                         const Eigen::Ref<const Matrix<T>>& per_sample_weights) const {
    static constexpr const char* where = "emb::EmbeddingBag::backward";
    detail::check_shape(where, "per_sample_weights", input.rows(), input.cols(),
                        per_sample_weights.rows(), per_sample_weights.cols());
    const Matrix<T> psw = per_sample_weights;
    const auto offsets = fixed_offsets(input);
    return gradient(where, input, offsets, false, grad_output, psw.data(), psw.size());
  }
  Matrix<T> backward_dense(const Matrix<Index>& input,
                           const Eigen::Ref<const Matrix<T>>& grad_output) const {
    const auto offsets = fixed_offsets(input);
    return gradient("emb::EmbeddingBag::backward_dense", input, offsets, false, grad_output,
                    nullptr, -1)
        .to_dense();
  }
  Matrix<T> backward_dense(const Matrix<Index>& input,
                           const Eigen::Ref<const Matrix<T>>& grad_output,
                           const Eigen::Ref<const Matrix<T>>& per_sample_weights) const {
    static constexpr const char* where = "emb::EmbeddingBag::backward_dense";
    detail::check_shape(where, "per_sample_weights", input.rows(), input.cols(),
                        per_sample_weights.rows(), per_sample_weights.cols());
    const Matrix<T> psw = per_sample_weights;
    const auto offsets = fixed_offsets(input);
    return gradient(where, input, offsets, false, grad_output, psw.data(), psw.size()).to_dense();
  }
  // (B, L): the gradient with respect to a (B, L) per_sample_weights (Sum mode only).
  Matrix<T> backward_per_sample_weights(const Matrix<Index>& input,
                                        const Eigen::Ref<const Matrix<T>>& grad_output) const {
    const auto offsets = fixed_offsets(input);
    const Vector<T> flat = psw_gradient("emb::EmbeddingBag::backward_per_sample_weights", input,
                                        offsets, false, grad_output);
    return Eigen::Map<const Matrix<T>>(flat.data(), input.rows(), input.cols());
  }

 private:
  using Base::weight_;

  EmbeddingBag(const EmbeddingBagOptions& options, Matrix<T>&& weight, bool frozen)
      : Base(options, std::move(weight), frozen) {}

  static EmbeddingBagOptions validated(EmbeddingBagOptions options, const char* where) {
    options = detail::validated_table_options(std::move(options), where);
    const auto m = options.mode();
    if (m != BagMode::Sum && m != BagMode::Mean && m != BagMode::Max) {
      detail::throw_bad_option(where, "mode", detail::concat(static_cast<int>(m)),
                               "it must be BagMode::Sum, Mean or Max");
    }
    return options;
  }

  static std::vector<Index> fixed_offsets(const Matrix<Index>& input) {
    return detail::fixed_offsets(static_cast<std::size_t>(input.rows()), input.cols());
  }

  // Checks everything a call depends on and returns the number of bags. psw_size < 0 means no
  // per_sample_weights (an empty vector is a vector of the wrong size, not an absent one).
  std::size_t check_call(const char* where, IndexSpan indices, IndexSpan offsets, bool include_last,
                         Index psw_size) const {
    if (psw_size >= 0) {
      if (mode() != BagMode::Sum) {
        throw std::invalid_argument(detail::concat(
            where,
            ": per_sample_weights is only supported in sum mode, not mode = ", to_string(mode())));
      }
      if (psw_size != static_cast<Index>(indices.size())) {
        throw std::invalid_argument(detail::concat(where, ": per_sample_weights has ", psw_size,
                                                   " values, expected one per index (",
                                                   indices.size(), ")"));
      }
    }
    const std::size_t bags = detail::check_offsets(where, offsets, indices.size(), include_last);
    detail::check_indices(where, indices, num_embeddings());
    return bags;
  }

  Matrix<T> pool(const char* where, IndexSpan indices, IndexSpan offsets, bool include_last,
                 const T* psw, Index psw_size) {
    const std::size_t bags = check_call(where, indices, offsets, include_last, psw_size);
    this->renorm_looked_up(indices);
    Matrix<T> out(static_cast<Index>(bags), embedding_dim());
    if (mode() == BagMode::Max) {
      detail::bag_max(weight_.data(), num_embeddings(), embedding_dim(), indices, offsets, bags,
                      padding_idx(), out.data(), out.cols(), nullptr);
    } else {
      detail::bag_sum(weight_.data(), num_embeddings(), embedding_dim(), indices, offsets, bags,
                      padding_idx(), psw, mode() == BagMode::Mean, out.data(), out.cols());
    }
    return out;
  }

  SparseGrad<T> gradient(const char* where, IndexSpan indices, IndexSpan offsets, bool include_last,
                         const Eigen::Ref<const Matrix<T>>& grad_output, const T* psw,
                         Index psw_size) const {
    const std::size_t bags = check_call(where, indices, offsets, include_last, psw_size);
    detail::check_shape(where, "grad_output", static_cast<Index>(bags), embedding_dim(),
                        grad_output.rows(), grad_output.cols());
    SparseGrad<T> grad;
    grad.num_embeddings = num_embeddings();
    if (mode() == BagMode::Max) {
      // The forward pass is recomputed only for its winners; the pooled values are discarded.
      Matrix<T> pooled(static_cast<Index>(bags), embedding_dim());
      std::vector<Index> winners;
      detail::bag_max(weight_.data(), num_embeddings(), embedding_dim(), indices, offsets, bags,
                      padding_idx(), pooled.data(), pooled.cols(), &winners);
      detail::bag_max_backward(winners, bags, grad_output.data(), grad_output.outerStride(),
                               embedding_dim(), grad.rows, grad.values);
      return grad;
    }
    std::vector<std::size_t> bag_of;
    std::vector<Index> bag_size;
    detail::bag_layout(indices, offsets, bags, padding_idx(), bag_of, bag_size);
    detail::RowSegments segments;
    detail::group_by_row(indices, padding_idx(), segments);
    grad.values = Matrix<T>::Zero(static_cast<Index>(segments.rows.size()), embedding_dim());
    detail::bag_sum_backward(segments, bag_of, bag_size, psw, mode() == BagMode::Mean,
                             scale_grad_by_freq(), grad_output.data(), grad_output.outerStride(),
                             embedding_dim(), grad.values.data());
    grad.rows = std::move(segments.rows);
    return grad;
  }

  Vector<T> psw_gradient(const char* where, IndexSpan indices, IndexSpan offsets, bool include_last,
                         const Eigen::Ref<const Matrix<T>>& grad_output) const {
    if (mode() != BagMode::Sum) {
      throw std::invalid_argument(detail::concat(
          where,
          ": per_sample_weights is only supported in sum mode, not mode = ", to_string(mode())));
    }
    const std::size_t bags = check_call(where, indices, offsets, include_last, -1);
    detail::check_shape(where, "grad_output", static_cast<Index>(bags), embedding_dim(),
                        grad_output.rows(), grad_output.cols());
    std::vector<std::size_t> bag_of;
    std::vector<Index> bag_size;
    detail::bag_layout(indices, offsets, bags, padding_idx(), bag_of, bag_size);
    Vector<T> out(static_cast<Index>(indices.size()));
    detail::bag_psw_backward(weight_.data(), embedding_dim(), indices, bag_of, padding_idx(),
                             grad_output.data(), grad_output.outerStride(), out.data());
    return out;
  }

};

}  // namespace emb
