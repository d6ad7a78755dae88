// emb/embedding.hpp — Embedding<T>: an index-to-row lookup table with PyTorch's semantics.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "detail/error.hpp"
#include "detail/gather.hpp"
#include "detail/renorm.hpp"
#include "detail/rng.hpp"
#include "detail/scatter.hpp"
#include "index_span.hpp"
#include "options.hpp"
#include "sparse_grad.hpp"

namespace emb {

// A (num_embeddings, embedding_dim) table of T. forward(indices) returns one row per index;
// backward(indices, grad_output) returns the gradient with respect to the table, row-sparse
// (backward) or dense (backward_dense). The same as torch.nn.Embedding on CPU: N(0, 1) init with
// a zero padding row, padding rows get no gradient, max_norm renormalises the looked-up rows in
// place before the lookup, scale_grad_by_freq divides by the count of each index in the call.
//
// Every call validates its whole input before it changes anything: a call that throws leaves
// the table bit-identical.
template <class T = float>
class Embedding {
  static_assert(std::is_floating_point_v<T>, "emb::Embedding<T> needs a floating-point T");

 public:
  using Scalar = T;

  // weight ~ N(0, 1) from `seed` (the same values on every platform), padding row zero.
  explicit Embedding(const EmbeddingOptions& options, std::uint64_t seed = 0)
      : options_(validated(options, "emb::Embedding")) {
    weight_.resize(options_.num_embeddings(), options_.embedding_dim());
    detail::Rng rng(seed);
    rng.fill_normal(weight_.data(), static_cast<std::size_t>(weight_.size()));
    if (const auto pad = options_.padding_idx()) weight_.row(*pad).setZero();
  }

  Embedding(Index num_embeddings, Index embedding_dim)
      : Embedding(EmbeddingOptions(num_embeddings, embedding_dim)) {}

  // Wraps `weight` as it is (the padding row is not zeroed). Pass an rvalue to avoid a copy:
  // the matrix is moved into the table. Frozen unless options.freeze(false).
  static Embedding from_pretrained(Matrix<T> weight, const FromPretrainedOptions& options = {}) {
    EmbeddingOptions opts(weight.rows(), weight.cols());
    opts.padding_idx(options.padding_idx())
        .max_norm(options.max_norm())
        .norm_type(options.norm_type())
        .scale_grad_by_freq(options.scale_grad_by_freq());
    return Embedding(validated(opts, "emb::Embedding::from_pretrained"), std::move(weight),
                     options.freeze());
  }

  Index num_embeddings() const { return options_.num_embeddings(); }
  Index embedding_dim() const { return options_.embedding_dim(); }
  std::optional<Index> padding_idx() const { return options_.padding_idx(); }
  std::optional<double> max_norm() const { return options_.max_norm(); }
  double norm_type() const { return options_.norm_type(); }
  bool scale_grad_by_freq() const { return options_.scale_grad_by_freq(); }
  // The options in force, padding_idx normalised to [0, num_embeddings).
  const EmbeddingOptions& options() const { return options_; }

  const Matrix<T>& weight() const { return weight_; }

  // Writable view of the table, for optimizers and hand-made updates. It cannot change the
  // shape. Writing through it ignores frozen(): freezing only stops optimizers.
  Eigen::Map<Matrix<T>> mutable_weight() {
    return Eigen::Map<Matrix<T>>(weight_.data(), weight_.rows(), weight_.cols());
  }

  void set_weight(Matrix<T> weight) {
    detail::check_shape("emb::Embedding::set_weight", "weight", num_embeddings(),
                        embedding_dim(), weight.rows(), weight.cols());
    weight_ = std::move(weight);
  }

  bool frozen() const { return frozen_; }
  void freeze(bool on = true) { frozen_ = on; }

  // Rows of the table for `indices`: (indices.size(), embedding_dim). Not const: with max_norm
  // the looked-up rows are renormalised in place first.
  Matrix<T> forward(IndexSpan indices) {
    Matrix<T> out(static_cast<Index>(indices.size()), embedding_dim());
    lookup(indices, out.data(), out.cols());
    return out;
  }

  // The same into a caller-owned (indices.size(), embedding_dim) buffer; no allocation.
  void forward(IndexSpan indices, Eigen::Ref<Matrix<T>> out) {
    detail::check_shape("emb::Embedding::forward", "out", static_cast<Index>(indices.size()),
                        embedding_dim(), out.rows(), out.cols());
    lookup(indices, out.data(), out.outerStride());
  }

  Matrix<T> operator()(IndexSpan indices) { return forward(indices); }

  // Gradient with respect to the table, given the gradient of forward's output. Row-sparse and
  // coalesced: one row per distinct index other than padding_idx, ascending. Its cost depends
  // on indices.size() and embedding_dim only, never on num_embeddings.
  SparseGrad<T> backward(IndexSpan indices,
                         const Eigen::Ref<const Matrix<T>>& grad_output) const {
    check_backward_input("emb::Embedding::backward", indices, grad_output);
    detail::RowSegments segments;
    detail::group_by_row(indices, padding_idx(), segments);
    SparseGrad<T> grad;
    grad.num_embeddings = num_embeddings();
    grad.values = Matrix<T>::Zero(static_cast<Index>(segments.rows.size()), embedding_dim());
    detail::sum_segments(segments, grad_output.data(), grad_output.outerStride(),
                         embedding_dim(), scale_grad_by_freq(), grad.values.data());
    grad.rows = std::move(segments.rows);
    return grad;
  }

  // The same gradient as a dense (num_embeddings, embedding_dim) matrix.
  Matrix<T> backward_dense(IndexSpan indices,
                           const Eigen::Ref<const Matrix<T>>& grad_output) const {
    check_backward_input("emb::Embedding::backward_dense", indices, grad_output);
    Matrix<T> grad = Matrix<T>::Zero(num_embeddings(), embedding_dim());
    detail::scatter_add_dense(indices, grad_output.data(), grad_output.outerStride(),
                              embedding_dim(), padding_idx(), scale_grad_by_freq(), grad.data(),
                              num_embeddings());
    return grad;
  }

 private:
  Embedding(const EmbeddingOptions& options, Matrix<T>&& weight, bool frozen)
      : options_(options), weight_(std::move(weight)), frozen_(frozen) {}

  static EmbeddingOptions validated(EmbeddingOptions options, const char* where) {
    detail::check_size_option(where, "num_embeddings", options.num_embeddings());
    detail::check_size_option(where, "embedding_dim", options.embedding_dim());
    options.padding_idx(
        detail::normalise_padding_idx(where, options.padding_idx(), options.num_embeddings()));
    detail::check_norm_options(where, options.max_norm(), options.norm_type());
    return options;
  }

  void lookup(IndexSpan indices, T* out, Index out_stride) {
    static constexpr const char* where = "emb::Embedding::forward";
    if (const auto max_norm = options_.max_norm()) {
      // Validate everything before the in-place rewrite (strong guarantee).
      detail::check_indices(where, indices, num_embeddings());
      detail::renorm_rows(weight_.data(), embedding_dim(), indices, *max_norm, norm_type(),
                          renorm_scratch_);
    }
    detail::gather_rows(where, weight_.data(), num_embeddings(), embedding_dim(), indices, out,
                        out_stride);
  }

  void check_backward_input(const char* where, IndexSpan indices,
                            const Eigen::Ref<const Matrix<T>>& grad_output) const {
    detail::check_shape(where, "grad_output", static_cast<Index>(indices.size()),
                        embedding_dim(), grad_output.rows(), grad_output.cols());
    detail::check_indices(where, indices, num_embeddings());
  }

  EmbeddingOptions options_;
  Matrix<T> weight_;
  bool frozen_ = false;
  std::vector<Index> renorm_scratch_;  // reused by max_norm forwards: no allocation per call
};

}  // namespace emb
