// emb/detail/table.hpp — what every table layer (Embedding, EmbeddingBag) shares: the rows and
// where they live (a storage policy, storage.hpp), the options in force, frozen, the table's
// identity, the view the kernels read, and the max_norm rewrite before a lookup.
//
// A table stores S and computes in T: its rows are read through ValueCodec<S> (a plain copy
// when S is T, a conversion otherwise), written back through the one hook mutable_weight(),
// which read-only storage refuses.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "../index_span.hpp"
#include "codec.hpp"
#include "error.hpp"
#include "gather.hpp"
#include "renorm.hpp"
#include "rng.hpp"
#include "rounding.hpp"
#include "storage.hpp"
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

// The (rows, dim) N(0, 1) table `seed` draws (fill_normal_rows, in T), each value rounded to S
// (to nearest even), the padding row zero. With first_row, rows [first_row, first_row + rows)
// of that table (a shard's block), `padding` numbered within the block.
template <class T, class S>
Matrix<S> initial_weight(Index rows, Index dim, std::optional<Index> padding, std::uint64_t seed,
                         Index first_row = 0) {
  Matrix<S> weight(rows, dim);
  const auto width = static_cast<std::size_t>(dim);
  const auto first = static_cast<std::uint64_t>(first_row);
  if constexpr (std::is_same_v<T, S>) {
    fill_normal_rows(seed, first, first + static_cast<std::uint64_t>(rows), width, weight.data());
  } else {
    std::vector<T> row(width);
    for (Index r = 0; r < rows; ++r) {
      const auto u = first + static_cast<std::uint64_t>(r);
      fill_normal_rows(seed, u, u + 1, width, row.data());
      for (Index j = 0; j < dim; ++j) weight(r, j) = round_nearest<S>(row[static_cast<std::size_t>(j)]);
    }
  }
  if (padding) weight.row(*padding).setZero();
  return weight;
}

// The public accessors of both layers live here, so they are written once.
template <class T, class S, class Options>
class Table {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "emb's tables compute in float or double (T)");
  static_assert(is_storage_type_v<S>,
                "emb's tables store float, double, emb::half or emb::bfloat16 (S)");
  static_assert(converts_exactly_v<T, S>,
                "a table's stored values must convert exactly to T: S = T, half or bfloat16 "
                "(or float with T = double)");

 public:
  using Scalar = T;   // compute, output and gradient type
  using Storage = S;  // stored type

  Index num_embeddings() const { return options_.num_embeddings(); }
  Index embedding_dim() const { return options_.embedding_dim(); }
  std::optional<Index> padding_idx() const { return options_.padding_idx(); }
  std::optional<double> max_norm() const { return options_.max_norm(); }
  double norm_type() const { return options_.norm_type(); }
  bool scale_grad_by_freq() const { return options_.scale_grad_by_freq(); }
  // The options in force, padding_idx normalised to [0, num_embeddings).
  const Options& options() const { return options_; }

  // The stored (num_embeddings, embedding_dim) rows, read-only, wherever they live.
  Eigen::Map<const Matrix<S>> weight() const { return storage_.view(); }

  // Writable view of the table, for optimizers and hand-made updates. It cannot change the
  // shape. Writing through it ignores frozen(): freezing only stops optimizers. A read-only
  // table (mapped with MapMode::ReadOnly) throws std::logic_error.
  Eigen::Map<Matrix<S>> mutable_weight() {
    if (read_only()) storage_.throw_read_only(concat(name_, "::mutable_weight").c_str());
    return Eigen::Map<Matrix<S>>(storage_.mutable_data(""), storage_.rows(), storage_.cols());
  }

  // Whether the rows may be written (false for a table mapped with MapMode::ReadOnly).
  bool read_only() const noexcept { return !storage_.writable(); }
  // std::logic_error naming `where` and the file when the table is read-only.
  void require_writable(const char* where) const {
    if (read_only()) storage_.throw_read_only(where);
  }

  bool frozen() const { return frozen_; }
  // A read-only table stays frozen: freeze(false) throws std::logic_error.
  void freeze(bool on = true) {
    if (!on && read_only()) storage_.throw_read_only(concat(name_, "::freeze(false)").c_str());
    frozen_ = on;
  }

  // Identifies this table object to optimizers, which keep their state per table: a copy is a
  // new table, a moved table keeps its id (and so its optimizer state), ids are never reused.
  std::uint64_t instance_id() const noexcept { return id_.value(); }

  // Moves the table into memory backed by 2 MiB pages (Linux transparent huge pages, enabled
  // as "always" or "madvise"), so that random rows of a table of hundreds of MiB stop missing
  // the TLB on every lookup. The rows are copied once into a fresh buffer advised before it is
  // written (the kernel may compact memory to find the pages, so this call can take a while on
  // a fragmented machine). Returns whether the kernel took the advice: false on other systems,
  // with THP disabled, for tables under 4 MiB and for mapped tables, which are left as they
  // are. set_weight() replaces the buffer; call this again after it.
  bool use_huge_pages() { return storage_.use_huge_pages(); }
  // Whether use_huge_pages() succeeded on the current buffer (a copy of the table gets an
  // ordinary one).
  bool uses_huge_pages() const { return storage_.uses_huge_pages(); }

 protected:
  // weight ~ N(0, 1) from `seed`, rounded to S, padding row zero. `options` must already be
  // validated. `name` is the layer's, for messages ("emb::Embedding").
  Table(const char* name, const Options& options, std::uint64_t seed)
      : name_(name),
        options_(options),
        storage_(initial_weight<T, S>(options.num_embeddings(), options.embedding_dim(),
                                      options.padding_idx(), seed)) {}

  // Wraps `storage` as it is; `options` must already be validated against its shape. A
  // read-only storage is always frozen.
  Table(const char* name, const Options& options, RowStorage<S>&& storage, bool frozen,
        const char* where)
      : name_(name), options_(options), storage_(std::move(storage)), frozen_(frozen) {
    if (!frozen_ && read_only()) {
      storage_.throw_read_only(concat(where, " with freeze(false)").c_str());
    }
  }

  // set_weight: the same shape or std::invalid_argument, and then nothing changes; a
  // read-only table throws std::logic_error.
  void replace_weight(const char* where, Matrix<S>&& weight) {
    if (read_only()) storage_.throw_read_only(where);
    check_shape(where, "weight", num_embeddings(), embedding_dim(), weight.rows(), weight.cols());
    storage_.replace(std::move(weight));
  }

  // What the kernels read.
  TableView<ValueCodec<S>> view() const noexcept {
    return value_view(storage_.data(), num_embeddings(), embedding_dim());
  }

  // The max_norm rewrite of the distinct rows `indices` names, when max_norm is set. The caller
  // has validated every index first, so a bad one never leaves the table half rewritten; a
  // read-only table throws std::logic_error before any row changes.
  void renorm_looked_up(const char* where, IndexSpan indices) {
    if (const auto limit = options_.max_norm()) {
      S* rows = storage_.mutable_data(where);
      renorm_distinct<T>(rows, num_embeddings(), embedding_dim(), indices, *limit, norm_type(),
                         renorm_scratch_);
    }
  }

  // A const lookup cannot renormalise: std::logic_error when max_norm is set.
  void check_const_lookup(const char* where) const {
    if (options_.max_norm()) {
      throw std::logic_error(concat(
          where, ": this table has max_norm = ", *options_.max_norm(),
          ", which rewrites the looked-up rows, so it cannot be looked up through a const "
          "reference; call forward on a non-const table"));
    }
  }

  const char* name_;
  Options options_;

 private:
  RowStorage<S> storage_;
  bool frozen_ = false;
  TableId id_;
  RenormScratch renorm_scratch_;  // reused by max_norm forwards: no allocation per call
};

// An optimizer steps the table optim_table(x) returns, found by argument-dependent lookup; an
// emb table is its own (a sharded table, for one, returns its local shard).
template <class T, class S, class Options>
Table<T, S, Options>& optim_table(Table<T, S, Options>& table) noexcept {
  return table;
}
template <class T, class S, class Options>
const Table<T, S, Options>& optim_table(const Table<T, S, Options>& table) noexcept {
  return table;
}

}  // namespace emb::detail
