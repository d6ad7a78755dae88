// emb/embedding.hpp — Embedding<T, S>: an index-to-row lookup table with PyTorch's semantics,
// stored as S and computed in T.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "detail/error.hpp"
#include "detail/gather.hpp"
#include "detail/parallel.hpp"
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

// Threads emb's kernels may use (forward, backward, backward_dense) on large calls; 1 by
// default. They come from OpenMP, so they exist only when the program is compiled with it
// (g++/clang++ -fopenmp, or CMake's OpenMP::OpenMP_CXX); without it every kernel runs serially
// and the setting is only stored. Results do not depend on the thread count, bit for bit.
// Calls that move less than 256 KiB stay on one thread. n < 1: std::invalid_argument.
inline void set_num_threads(int n) {
  if (n < 1) {
    detail::throw_bad_option("emb::set_num_threads", "n", detail::concat(n), "it must be >= 1");
  }
  detail::thread_setting().store(n, std::memory_order_relaxed);
}
inline int num_threads() noexcept {
  return detail::thread_setting().load(std::memory_order_relaxed);
}
// Whether this program was compiled with OpenMP, i.e. whether set_num_threads(n > 1) has effect.
inline constexpr bool parallel_enabled() noexcept { return detail::openmp_enabled; }

// A (num_embeddings, embedding_dim) table stored as S, looked up and differentiated in T.
// forward(indices) returns one row per index; backward(indices, grad_output) returns the
// gradient with respect to the table, row-sparse (backward) or dense (backward_dense). The same
// as torch.nn.Embedding on CPU: N(0, 1) init with a zero padding row, padding rows get no
// gradient, max_norm renormalises the looked-up rows in place before the lookup,
// scale_grad_by_freq divides by the count of each index in the call.
//
// S is T (the default), or a narrower storage: emb::half, emb::bfloat16 (or float under
// T = double). Every result is T, the stored values converted exactly: the numbers of an
// Embedding<T> holding those values. Writes (max_norm, optimizers) round back to S.
//
// Every call validates its whole input before it changes anything: a call that throws leaves
// the table bit-identical. A table without max_norm is not changed by forward, so a const
// table can be looked up from many threads at once.
template <class T = float, class S = T>
class Embedding : public detail::Table<T, S, EmbeddingOptions> {
  using Base = detail::Table<T, S, EmbeddingOptions>;
  static constexpr const char* name = "emb::Embedding";

 public:
  // Accessors shared with EmbeddingBag (detail/table.hpp): num_embeddings(), embedding_dim(),
  // padding_idx(), max_norm(), norm_type(), scale_grad_by_freq(), options(), weight(),
  // mutable_weight(), read_only(), frozen(), freeze(), instance_id(), use_huge_pages(),
  // uses_huge_pages().
  using Base::embedding_dim;
  using Base::num_embeddings;
  using Base::padding_idx;
  using Base::scale_grad_by_freq;

  // weight ~ N(0, 1) from `seed` (the same values on every platform; with S narrower than T,
  // the values of Embedding<T> rounded to S), padding row zero.
  explicit Embedding(const EmbeddingOptions& options, std::uint64_t seed = 0)
      : Base(name, detail::validated_table_options(options, name), seed) {}

  // Embedding(EmbeddingOptions(rows, dim)) with seed 0.
  Embedding(Index rows, Index dim) : Embedding(EmbeddingOptions(rows, dim)) {}

  // Wraps `weight` as it is (the padding row is not zeroed). Pass an rvalue to avoid a copy:
  // the matrix is moved into the table. Frozen unless options.freeze(false).
  static Embedding from_pretrained(Matrix<S> weight, const FromPretrainedOptions& options = {}) {
    const auto opts = table_options(weight.rows(), weight.cols(), options,
                                    "emb::Embedding::from_pretrained");
    return Embedding(opts, detail::RowStorage<S>(std::move(weight)), options.freeze(),
                     "emb::Embedding::from_pretrained");
  }

  // A table that reads its rows from a mapped file's pages, without copying them (see
  // emb/io/mapped.hpp: io::map_npy, io::SafeTensors::map; include it to call this). A
  // MapMode::ReadOnly mapping makes a read-only table: it stays frozen and refuses every write
  // (optimizer step, max_norm forward, mutable_weight, set_weight, freeze(false)) with
  // std::logic_error before anything changes. A MapMode::CopyOnWrite mapping trains in private
  // memory; the file never changes.
  static Embedding from_mapped(io::MappedMatrix<S> mapped, const FromPretrainedOptions& options = {}) {
    static constexpr const char* where = "emb::Embedding::from_mapped";
    const auto opts = table_options(mapped.rows(), mapped.cols(), options, where);
    return Embedding(opts, detail::mapped_storage<S>(std::move(mapped)), options.freeze(), where);
  }

  // Same shape or std::invalid_argument (and the table is unchanged). A read-only table throws
  // std::logic_error.
  void set_weight(Matrix<S> weight) {
    this->replace_weight("emb::Embedding::set_weight", std::move(weight));
  }

  // Rows of the table for `indices`: (indices.size(), embedding_dim). With max_norm the
  // looked-up rows are renormalised in place first.
  Matrix<T> forward(IndexSpan indices) {
    Matrix<T> out(static_cast<Index>(indices.size()), embedding_dim());
    lookup(indices, out.data(), out.cols());
    return out;
  }

  // The same into a caller-owned (indices.size(), embedding_dim) buffer; no allocation.
  void forward(IndexSpan indices, Eigen::Ref<Matrix<T>> out) {
    check_out(indices, out);
    lookup(indices, out.data(), out.outerStride());
  }

  // On a const table: the same rows, never a write, safe from many threads at once. A table
  // with max_norm cannot be renormalised through a const reference: std::logic_error.
  Matrix<T> forward(IndexSpan indices) const {
    Matrix<T> out(static_cast<Index>(indices.size()), embedding_dim());
    lookup(indices, out.data(), out.cols());
    return out;
  }
  void forward(IndexSpan indices, Eigen::Ref<Matrix<T>> out) const {
    check_out(indices, out);
    lookup(indices, out.data(), out.outerStride());
  }

  Matrix<T> operator()(IndexSpan indices) { return forward(indices); }
  Matrix<T> operator()(IndexSpan indices) const { return forward(indices); }

  // Gradient with respect to the table, given the gradient of forward's output. Row-sparse and
  // coalesced: one row per distinct index other than padding_idx, ascending. Its cost depends
  // on indices.size() and embedding_dim only, never on num_embeddings.
  SparseGrad<T> backward(IndexSpan indices,
                         const Eigen::Ref<const Matrix<T>>& grad_output) const {
    check_backward_input("emb::Embedding::backward", indices, grad_output);
    detail::RowSegments segments;
    detail::group_by_row(indices, skip(), segments);
    SparseGrad<T> grad;
    grad.num_embeddings = num_embeddings();
    const auto nnz = static_cast<Index>(segments.rows.size());
    grad.values.resize(nnz, embedding_dim());  // every row is assigned by its first term
    const std::size_t bytes = segments.positions.size() *
                              static_cast<std::size_t>(embedding_dim()) * sizeof(T);
    detail::sum_segments_into(segments, grad_rows(grad_output), grad_scale(), embedding_dim(),
                              grad.values.data(),
                              detail::threads_for(segments.rows.size(), bytes));
    grad.rows = std::move(segments.rows);
    return grad;
  }

  // The same gradient as a dense (num_embeddings, embedding_dim) matrix.
  Matrix<T> backward_dense(IndexSpan indices,
                           const Eigen::Ref<const Matrix<T>>& grad_output) const {
    check_backward_input("emb::Embedding::backward_dense", indices, grad_output);
    Matrix<T> grad(num_embeddings(), embedding_dim());  // not zeroed: the kernel's first pass does
    dense_gradient(indices, grad_output, grad.data(), grad.outerStride());
    return grad;
  }

  // The same gradient written into a caller-owned (num_embeddings, embedding_dim) buffer, which
  // is overwritten whole: no allocation, and no page faults on a buffer reused across steps.
  void backward_dense(IndexSpan indices, const Eigen::Ref<const Matrix<T>>& grad_output,
                      Eigen::Ref<Matrix<T>> grad) const {
    static constexpr const char* where = "emb::Embedding::backward_dense";
    detail::check_shape(where, "grad", num_embeddings(), embedding_dim(), grad.rows(),
                        grad.cols());
    check_backward_input(where, indices, grad_output);
    dense_gradient(indices, grad_output, grad.data(), grad.outerStride());
  }

 protected:
  // The options of a table built over given rows (from_pretrained, from_mapped), validated.
  static EmbeddingOptions table_options(Index rows, Index cols, const FromPretrainedOptions& o,
                                        const char* where) {
    EmbeddingOptions opts(rows, cols);
    opts.padding_idx(o.padding_idx())
        .max_norm(o.max_norm())
        .norm_type(o.norm_type())
        .scale_grad_by_freq(o.scale_grad_by_freq());
    return detail::validated_table_options(opts, where);
  }

  Embedding(const EmbeddingOptions& options, detail::RowStorage<S>&& storage, bool frozen,
            const char* where)
      : Base(name, options, std::move(storage), frozen, where) {}

 private:
  static constexpr const char* forward_where = "emb::Embedding::forward";

  Index skip() const { return padding_idx().value_or(-1); }

  void check_out(IndexSpan indices, const Eigen::Ref<Matrix<T>>& out) const {
    detail::check_shape(forward_where, "out", static_cast<Index>(indices.size()),
                        embedding_dim(), out.rows(), out.cols());
  }

  void lookup(IndexSpan indices, T* out, Index out_stride) {
    // Validate everything before the max_norm rewrite and the copy (strong guarantee).
    detail::check_indices(forward_where, indices, num_embeddings());
    this->renorm_looked_up(forward_where, indices);
    gather(indices, out, out_stride);
  }
  void lookup(IndexSpan indices, T* out, Index out_stride) const {
    this->check_const_lookup(forward_where);
    detail::check_indices(forward_where, indices, num_embeddings());
    gather(indices, out, out_stride);
  }
  void gather(IndexSpan indices, T* out, Index out_stride) const {
    const auto view = this->view();
    detail::gather_rows_unchecked(view, indices, out, out_stride,
                                  detail::plan_gather<T>(view, indices.size()));
  }

  detail::GradRows<T> grad_rows(const Eigen::Ref<const Matrix<T>>& grad_output) const {
    return {grad_output.data(), grad_output.outerStride(), nullptr};
  }
  detail::GradScale<T> grad_scale() const {
    detail::GradScale<T> scale;
    scale.by_freq = scale_grad_by_freq();
    return scale;
  }

  void dense_gradient(IndexSpan indices, const Eigen::Ref<const Matrix<T>>& grad_output, T* grad,
                      Index grad_stride) const {
    const auto bytes = static_cast<std::size_t>(num_embeddings()) *
                       static_cast<std::size_t>(embedding_dim()) * sizeof(T);
    detail::zero_and_scatter_dense(
        indices, grad_rows(grad_output), grad_scale(), embedding_dim(), skip(), grad,
        grad_stride, num_embeddings(),
        detail::threads_for(static_cast<std::size_t>(num_embeddings()), bytes));
  }

  void check_backward_input(const char* where, IndexSpan indices,
                            const Eigen::Ref<const Matrix<T>>& grad_output) const {
    detail::check_shape(where, "grad_output", static_cast<Index>(indices.size()),
                        embedding_dim(), grad_output.rows(), grad_output.cols());
    detail::check_indices(where, indices, num_embeddings());
  }
};

}  // namespace emb
