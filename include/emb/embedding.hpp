// emb/embedding.hpp — Embedding<T>: an index-to-row lookup table with PyTorch's semantics.
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
#include "detail/huge_pages.hpp"
#include "detail/parallel.hpp"
#include "detail/renorm.hpp"
#include "detail/rng.hpp"
#include "detail/scatter.hpp"
#include "detail/table.hpp"
#include "index_span.hpp"
#include "options.hpp"
#include "sparse_grad.hpp"

namespace emb {

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

// A (num_embeddings, embedding_dim) table of T. forward(indices) returns one row per index;
// backward(indices, grad_output) returns the gradient with respect to the table, row-sparse
// (backward) or dense (backward_dense). The same as torch.nn.Embedding on CPU: N(0, 1) init with
// a zero padding row, padding rows get no gradient, max_norm renormalises the looked-up rows in
// place before the lookup, scale_grad_by_freq divides by the count of each index in the call.
//
// Every call validates its whole input before it changes anything: a call that throws leaves
// the table bit-identical.
template <class T = float>
class Embedding : public detail::Table<T, EmbeddingOptions> {
  static_assert(std::is_floating_point_v<T>, "emb::Embedding<T> needs a floating-point T");
  using Base = detail::Table<T, EmbeddingOptions>;

 public:
  // Accessors shared with EmbeddingBag (detail/table.hpp): num_embeddings(), embedding_dim(),
  // padding_idx(), max_norm(), norm_type(), scale_grad_by_freq(), options(), weight(),
  // mutable_weight(), frozen(), freeze(), instance_id().
  using Base::embedding_dim;
  using Base::num_embeddings;
  using Base::padding_idx;
  using Base::scale_grad_by_freq;

  // weight ~ N(0, 1) from `seed` (the same values on every platform), padding row zero.
  explicit Embedding(const EmbeddingOptions& options, std::uint64_t seed = 0)
      : Base(detail::validated_table_options(options, "emb::Embedding"), seed) {}

  // Embedding(EmbeddingOptions(rows, dim)) with seed 0.
  Embedding(Index rows, Index dim) : Embedding(EmbeddingOptions(rows, dim)) {}

  // Wraps `weight` as it is (the padding row is not zeroed). Pass an rvalue to avoid a copy:
  // the matrix is moved into the table. Frozen unless options.freeze(false).
  static Embedding from_pretrained(Matrix<T> weight, const FromPretrainedOptions& options = {}) {
    EmbeddingOptions opts(weight.rows(), weight.cols());
    opts.padding_idx(options.padding_idx())
        .max_norm(options.max_norm())
        .norm_type(options.norm_type())
        .scale_grad_by_freq(options.scale_grad_by_freq());
    return Embedding(detail::validated_table_options(opts, "emb::Embedding::from_pretrained"),
                     std::move(weight), options.freeze());
  }

  // Same shape or std::invalid_argument (and the table is unchanged).
  void set_weight(Matrix<T> weight) {
    this->replace_weight("emb::Embedding::set_weight", std::move(weight));
    huge_pages_.on = false;
  }

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
    const auto nnz = static_cast<Index>(segments.rows.size());
    grad.values.resize(nnz, embedding_dim());  // every row is assigned by its first term
    const std::size_t bytes = segments.positions.size() *
                              static_cast<std::size_t>(embedding_dim()) * sizeof(T);
    detail::sum_segments_into(segments, grad_output.data(), grad_output.outerStride(),
                              embedding_dim(), scale_grad_by_freq(), grad.values.data(),
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

  // Moves the table into memory backed by 2 MiB pages (Linux transparent huge pages, enabled
  // as "always" or "madvise"), so that random rows of a table of hundreds of MiB stop missing
  // the TLB on every lookup. The weights are copied once into a fresh buffer advised before it
  // is written (the kernel may compact memory to find the pages, so this call can take a while
  // on a fragmented machine). Returns whether the kernel took the advice: false on other
  // systems, with THP disabled, or for tables under 4 MiB, which are left as they are.
  // set_weight() replaces the buffer; call this again after it.
  bool use_huge_pages() {
    const auto bytes = static_cast<std::size_t>(weight_.size()) * sizeof(T);
    if (bytes < detail::huge_page_min_bytes || !detail::huge_pages_available()) return false;
    Matrix<T> fresh(weight_.rows(), weight_.cols());  // Eigen leaves it unwritten
    if (!detail::advise_huge_pages(fresh.data(), bytes)) return false;
    std::memcpy(fresh.data(), weight_.data(), bytes);
    weight_.swap(fresh);
    huge_pages_.on = true;
    return true;
  }

  // Whether use_huge_pages() succeeded on the current buffer.
  bool uses_huge_pages() const { return huge_pages_.on; }

 private:
  using Base::weight_;

  Embedding(const EmbeddingOptions& options, Matrix<T>&& weight, bool frozen)
      : Base(options, std::move(weight), frozen) {}

  void lookup(IndexSpan indices, T* out, Index out_stride) {
    // Validate everything before the max_norm rewrite and the copy (strong guarantee).
    detail::check_gather_indices("emb::Embedding::forward", indices, num_embeddings());
    this->renorm_looked_up(indices);
    detail::gather_rows_unchecked(
        weight_.data(), embedding_dim(), indices, out, out_stride,
        detail::plan_gather(num_embeddings(), embedding_dim(), indices.size(), sizeof(T)));
  }

  void dense_gradient(IndexSpan indices, const Eigen::Ref<const Matrix<T>>& grad_output, T* grad,
                      Index grad_stride) const {
    const auto bytes = static_cast<std::size_t>(num_embeddings()) *
                       static_cast<std::size_t>(embedding_dim()) * sizeof(T);
    detail::zero_and_scatter_dense(
        indices, grad_output.data(), grad_output.outerStride(), embedding_dim(), padding_idx(),
        scale_grad_by_freq(), grad, grad_stride, num_embeddings(),
        detail::threads_for(static_cast<std::size_t>(num_embeddings()), bytes));
  }

  void check_backward_input(const char* where, IndexSpan indices,
                            const Eigen::Ref<const Matrix<T>>& grad_output) const {
    detail::check_shape(where, "grad_output", static_cast<Index>(indices.size()),
                        embedding_dim(), grad_output.rows(), grad_output.cols());
    detail::check_indices(where, indices, num_embeddings());
  }

  detail::BufferFlag huge_pages_;  // a copy of the table gets an ordinary buffer
};

}  // namespace emb
