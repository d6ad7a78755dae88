// emb/detail/table.hpp — what Embedding and EmbeddingBag share: the weight matrix, the options
// in force, frozen, the table's identity, and the max_norm rewrite before a lookup.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <type_traits>
#include <utility>

#include <Eigen/Core>

#include "../index_span.hpp"
#include "error.hpp"
#include "renorm.hpp"
#include "rng.hpp"
#include "table_id.hpp"

namespace emb::detail {

// Checks the options every table has and normalises padding_idx to [0, num_embeddings).
template <class Options>
Options validated_table_options(Options options, const char* where) {
  check_size_option(where, "num_embeddings", options.num_embeddings());
  check_size_option(where, "embedding_dim", options.embedding_dim());
  options.padding_idx(
      normalise_padding_idx(where, options.padding_idx(), options.num_embeddings()));
  check_norm_options(where, options.max_norm(), options.norm_type());
  return options;
}

// The public accessors of both layers live here, so they are written once.
template <class T, class Options>
class Table {
  static_assert(std::is_floating_point_v<T>, "emb's tables need a floating-point T");

 public:
  using Scalar = T;

  Index num_embeddings() const { return options_.num_embeddings(); }
  Index embedding_dim() const { return options_.embedding_dim(); }
  std::optional<Index> padding_idx() const { return options_.padding_idx(); }
  std::optional<double> max_norm() const { return options_.max_norm(); }
  double norm_type() const { return options_.norm_type(); }
  bool scale_grad_by_freq() const { return options_.scale_grad_by_freq(); }
  // The options in force, padding_idx normalised to [0, num_embeddings).
  const Options& options() const { return options_; }

  const Matrix<T>& weight() const { return weight_; }

  // Writable view of the table, for optimizers and hand-made updates. It cannot change the
  // shape. Writing through it ignores frozen(): freezing only stops optimizers.
  Eigen::Map<Matrix<T>> mutable_weight() {
    return Eigen::Map<Matrix<T>>(weight_.data(), weight_.rows(), weight_.cols());
  }

  bool frozen() const { return frozen_; }
  void freeze(bool on = true) { frozen_ = on; }

  // Identifies this table object to optimizers, which keep their state per table: a copy is a
  // new table, a moved table keeps its id (and so its optimizer state), ids are never reused.
  std::uint64_t instance_id() const noexcept { return id_.value(); }

 protected:
  // weight ~ N(0, 1) from `seed` (the same values on every platform), padding row zero.
  // `options` must already be validated.
  Table(const Options& options, std::uint64_t seed) : options_(options) {
    weight_.resize(options_.num_embeddings(), options_.embedding_dim());
    fill_normal_rows(seed, 0, static_cast<std::uint64_t>(weight_.rows()),
                     static_cast<std::size_t>(weight_.cols()), weight_.data());
    if (const auto pad = options_.padding_idx()) weight_.row(*pad).setZero();
  }

  // Wraps `weight` as it is; `options` must already be validated against its shape.
  Table(const Options& options, Matrix<T>&& weight, bool frozen)
      : options_(options), weight_(std::move(weight)), frozen_(frozen) {}

  // set_weight: the same shape or std::invalid_argument, and then nothing changes.
  void replace_weight(const char* where, Matrix<T>&& weight) {
    check_shape(where, "weight", num_embeddings(), embedding_dim(), weight.rows(),
                weight.cols());
    weight_ = std::move(weight);
  }

  // The max_norm rewrite of the distinct rows `indices` names, when max_norm is set. The caller
  // has validated every index first, so a bad one never leaves the table half rewritten.
  void renorm_looked_up(IndexSpan indices) {
    if (const auto limit = options_.max_norm()) {
      renorm_distinct(weight_.data(), num_embeddings(), embedding_dim(), indices, *limit,
                      norm_type(), renorm_scratch_);
    }
  }

  Options options_;
  Matrix<T> weight_;

 private:
  bool frozen_ = false;
  TableId id_;
  RenormScratch renorm_scratch_;  // reused by max_norm forwards: no allocation per call
};

}  // namespace emb::detail
