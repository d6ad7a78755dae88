// emb/quantized.hpp — tables of 8-, 4- and 2-bit rows for inference: QuantizedTable (PyTorch's
// prepacked layouts, byte for byte), QuantizedEmbedding and QuantizedEmbeddingBag.
//
//   auto table = emb::QuantizedTable::quantize(float_weights, emb::QuantBits::Int4);
//   emb::QuantizedEmbeddingBag<float> bag(table);           // Sum, as PyTorch's quantized bag
//   emb::Matrix<float> pooled = bag.forward(ids, offsets);   // (bags, dim)
//
// A table moves to and from PyTorch as its bytes: torch.ops.quantized.embedding_bag_4bit_prepack
// (w).numpy() holds exactly what QuantizedTable::quantize(w, QuantBits::Int4).data() holds, and
// from_packed takes such bytes as they are. The layers read the rows through the same gather
// and pooling kernels as Embedding and EmbeddingBag (detail/quant.hpp is the row codec): every
// call validates its whole input first, reads are const, and many threads may look up one
// table at once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "detail/bag.hpp"
#include "detail/codec.hpp"
#include "detail/error.hpp"
#include "detail/gather.hpp"
#include "detail/huge_pages.hpp"
#include "detail/quant.hpp"
#include "embedding_bag.hpp"
#include "index_span.hpp"

namespace emb {

// Bits per stored value. Int8 rows end in a float32 scale and bias, Int4 and Int2 rows in a
// float16 scale and bias.
enum class QuantBits { Int8 = 8, Int4 = 4, Int2 = 2 };

inline const char* to_string(QuantBits bits) noexcept {
  switch (bits) {
    case QuantBits::Int8: return "Int8";
    case QuantBits::Int4: return "Int4";
    case QuantBits::Int2: return "Int2";
  }
  return "unknown";
}

// A (num_embeddings, embedding_dim) table of quantized rows in PyTorch's (FBGEMM's) fused
// rowwise layout: each row is its codes (Int8: dim bytes; Int4 / Int2: ceil(dim * bits / 8)
// bytes, the first value in the low bits, unused bits of the last byte zero) followed by its
// scale and bias; a value is code * scale + bias. See detail/quant.hpp for the exact rounding.
//
// The bytes never change once made. Copies of a table share them (a copy costs a reference
// count), so several layers, and threads, can read one table.
class QuantizedTable {
 public:
  // An empty (0, 0) Int8 table.
  QuantizedTable() = default;

  // Quantizes every row of `weight` as torch.ops.quantized.embedding_bag_byte_prepack /
  // _4bit_prepack / _2bit_prepack does (the same bytes). Unlike PyTorch, any dim is taken for
  // Int4 and Int2. std::invalid_argument, naming the row, for a NaN or infinite value, an Int8
  // row whose max - min overflows float, or an Int4 / Int2 row whose bias (its minimum) or
  // scale ((max - min) / 15 or / 3) does not fit float16.
  static QuantizedTable quantize(const Eigen::Ref<const Matrix<float>>& weight, QuantBits bits) {
    static constexpr const char* where = "emb::QuantizedTable::quantize";
    const int b = checked_bits(where, bits);
    const Index rows = weight.rows();
    const Index dim = weight.cols();
    const std::size_t row_bytes = detail::quant_row_bytes(b, dim);
    auto bytes = std::make_shared<std::vector<std::uint8_t>>(
        checked_size(where, rows, row_bytes), std::uint8_t{0});
    detail::with_quant_bits(b, [&](auto tag) {
      constexpr int Bits = decltype(tag)::value;
      for (Index r = 0; r < rows; ++r) {
        const float* x = weight.data() + r * weight.outerStride();
        detail::check_quantizable_row<Bits>(where, x, dim, r);
        detail::quantize_row<Bits>(x, dim, bytes->data() + static_cast<std::size_t>(r) * row_bytes);
      }
    });
    return QuantizedTable(std::move(bytes), rows, dim, bits);
  }

  // A table over packed rows as PyTorch's prepack ops (or data()) give them: `bytes` holds
  // num_embeddings rows of row_bytes(embedding_dim, bits) bytes and is moved in, not copied.
  // The scales and biases are taken as they are. std::invalid_argument for a negative size or
  // a buffer of any other length.
  static QuantizedTable from_packed(std::vector<std::uint8_t> bytes, Index num_embeddings,
                                    Index embedding_dim, QuantBits bits) {
    static constexpr const char* where = "emb::QuantizedTable::from_packed";
    const int b = checked_bits(where, bits);
    detail::check_size_option(where, "num_embeddings", num_embeddings);
    detail::check_size_option(where, "embedding_dim", embedding_dim);
    const std::size_t row_bytes = detail::quant_row_bytes(b, embedding_dim);
    const std::size_t expected = checked_size(where, num_embeddings, row_bytes);
    if (bytes.size() != expected) {
      throw std::invalid_argument(detail::concat(
          where, ": the packed buffer has ", bytes.size(), " bytes; ", num_embeddings,
          " rows of ", to_string(bits), " dim ", embedding_dim, " need ", num_embeddings, " x ",
          row_bytes, " = ", expected, " bytes"));
    }
    return QuantizedTable(std::make_shared<std::vector<std::uint8_t>>(std::move(bytes)),
                          num_embeddings, embedding_dim, bits);
  }

  // Bytes of one packed row: the codes, then 8 (Int8) or 4 (Int4, Int2) bytes of scale and bias.
  static std::size_t row_bytes(Index embedding_dim, QuantBits bits) {
    static constexpr const char* where = "emb::QuantizedTable::row_bytes";
    detail::check_size_option(where, "embedding_dim", embedding_dim);
    return detail::quant_row_bytes(checked_bits(where, bits), embedding_dim);
  }

  // Calls f(view) with the kernels' view of the rows (detail::TableView<detail::QuantCodec<B>>
  // for this table's B); returns what f returns.
  template <class F>
  decltype(auto) visit(F&& f) const {
    return detail::with_quant_bits(static_cast<int>(bits_), [&](auto tag) -> decltype(auto) {
      constexpr int Bits = decltype(tag)::value;
      return f(detail::quant_view<Bits>(data_, rows_, dim_));
    });
  }

  Index num_embeddings() const noexcept { return rows_; }
  Index embedding_dim() const noexcept { return dim_; }
  QuantBits bits() const noexcept { return bits_; }
  std::size_t row_bytes() const noexcept { return detail::quant_row_bytes(static_cast<int>(bits_), dim_); }
  // num_embeddings() * row_bytes() bytes, row after row.
  const std::uint8_t* data() const noexcept { return data_; }
  std::size_t size_bytes() const noexcept { return static_cast<std::size_t>(rows_) * row_bytes(); }

  // The scale and the bias of row r (value = code * scale + bias). r outside [0, N):
  // std::out_of_range.
  float scale(Index r) const { return params("emb::QuantizedTable::scale", r).scale; }
  float bias(Index r) const { return params("emb::QuantizedTable::bias", r).bias; }

  // The (num_embeddings, embedding_dim) values, code * scale + bias: what
  // torch.ops.quantized.embedding_bag_byte_unpack / _4bit_unpack / _2bit_unpack return.
  Matrix<float> dequantize() const {
    Matrix<float> out(rows_, dim_);
    visit([&](const auto& view) {
      for (Index r = 0; r < rows_; ++r) view.codec.decode(view.row(r), dim_, out.data() + r * dim_);
    });
    return out;
  }

  // Moves the bytes into memory backed by 2 MiB pages (as Embedding::use_huge_pages does), so
  // that random rows of a large table stop missing the TLB. Copies made before keep the old
  // bytes. Returns whether the kernel took the advice.
  bool use_huge_pages() {
    const std::size_t bytes = size_bytes();
    if (bytes < detail::huge_page_min_bytes || !detail::huge_pages_available()) return false;
    // new[] of a trivial type leaves the memory unwritten, so the advice comes first.
    std::shared_ptr<std::uint8_t> fresh(new std::uint8_t[bytes], std::default_delete<std::uint8_t[]>());
    if (!detail::advise_huge_pages(fresh.get(), bytes)) return false;
    std::memcpy(fresh.get(), data_, bytes);
    data_ = fresh.get();
    keeper_ = std::move(fresh);
    huge_pages_ = true;
    return true;
  }
  bool uses_huge_pages() const noexcept { return huge_pages_; }

 private:
  QuantizedTable(std::shared_ptr<std::vector<std::uint8_t>> bytes, Index rows, Index dim,
                 QuantBits bits)
      : data_(bytes->data()), rows_(rows), dim_(dim), bits_(bits), keeper_(std::move(bytes)) {}

  static int checked_bits(const char* where, QuantBits bits) {
    const int b = static_cast<int>(bits);
    if (b != 8 && b != 4 && b != 2) {
      detail::throw_bad_option(where, "bits", detail::concat(b),
                               "it must be QuantBits::Int8, Int4 or Int2");
    }
    return b;
  }

  // rows * row_bytes, or std::invalid_argument when it overflows.
  static std::size_t checked_size(const char* where, Index rows, std::size_t row_bytes) {
    if (rows > 0 && row_bytes > std::numeric_limits<std::size_t>::max() / static_cast<std::size_t>(rows)) {
      throw std::invalid_argument(detail::concat(where, ": ", rows, " rows of ", row_bytes,
                                                 " bytes do not fit in memory"));
    }
    return static_cast<std::size_t>(rows) * row_bytes;
  }

  detail::QuantParams params(const char* where, Index r) const {
    if (r < 0 || r >= rows_) {
      throw std::out_of_range(detail::concat(where, ": row ", r,
                                             " is out of range; valid rows are [0, ", rows_, ")"));
    }
    return detail::with_quant_bits(static_cast<int>(bits_), [&](auto tag) {
      constexpr int Bits = decltype(tag)::value;
      return detail::read_quant_params<Bits>(data_ + static_cast<std::size_t>(r) * row_bytes(), dim_);
    });
  }

  const std::uint8_t* data_ = nullptr;
  Index rows_ = 0;
  Index dim_ = 0;
  QuantBits bits_ = QuantBits::Int8;
  std::shared_ptr<const void> keeper_;  // owns the bytes data_ points into
  bool huge_pages_ = false;
};

// Options of QuantizedEmbeddingBag, chainable as EmbeddingBagOptions: the pooling mode (Sum
// by default, as torch.ao.nn.quantized.EmbeddingBag), the offsets convention and the padding id.
class QuantizedBagOptions {
 public:
  QuantizedBagOptions& mode(BagMode value) {
    mode_ = value;
    return *this;
  }
  BagMode mode() const { return mode_; }

  // With include_last_offset, offsets has one entry per bag plus the end (== number of
  // indices); without it, one start per bag.
  QuantizedBagOptions& include_last_offset(bool value) {
    include_last_offset_ = value;
    return *this;
  }
  bool include_last_offset() const { return include_last_offset_; }

  // An id whose entries are skipped (not summed, not counted by Mean). With a
  // compressed_indices_mapping it names an original id, so it may be N or more (a pruned
  // table's original ids outnumber its rows); without one such an id matches no valid index.
  // Negative values wrap as in EmbeddingBag (-1 is N - 1); below -N is std::invalid_argument.
  QuantizedBagOptions& padding_idx(std::optional<Index> value) {
    padding_idx_ = value;
    return *this;
  }
  std::optional<Index> padding_idx() const { return padding_idx_; }

 private:
  BagMode mode_ = BagMode::Sum;
  bool include_last_offset_ = false;
  std::optional<Index> padding_idx_;
};

// Lookups on a quantized table: row i of the result is the dequantized row indices[i]
// (code * scale + bias, as QuantizedTable::dequantize gives it, converted to T), computed
// straight into the output. Read-only: no gradient, no optimizer. padding_idx is kept as in
// Embedding, whose forward returns the stored row for it (the row of a zero float row
// dequantizes to exact zeros).
template <class T = float>
class QuantizedEmbedding {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "emb::QuantizedEmbedding computes in float or double (T)");
  static constexpr const char* name = "emb::QuantizedEmbedding";
  static constexpr const char* forward_where = "emb::QuantizedEmbedding::forward";

 public:
  using Scalar = T;

  // padding_idx in [-N, N) (negative values wrap), else std::invalid_argument.
  explicit QuantizedEmbedding(QuantizedTable table, std::optional<Index> padding_idx = {})
      : table_(std::move(table)),
        padding_idx_(detail::normalise_padding_idx(name, padding_idx, table_.num_embeddings())) {}

  Index num_embeddings() const noexcept { return table_.num_embeddings(); }
  Index embedding_dim() const noexcept { return table_.embedding_dim(); }
  QuantBits bits() const noexcept { return table_.bits(); }
  std::optional<Index> padding_idx() const noexcept { return padding_idx_; }
  const QuantizedTable& table() const noexcept { return table_; }

  // (indices.size(), embedding_dim). Any index outside [0, N): std::out_of_range, as Embedding.
  Matrix<T> forward(IndexSpan indices) const {
    Matrix<T> out(static_cast<Index>(indices.size()), embedding_dim());
    lookup(indices, out.data(), out.cols());
    return out;
  }
  // The same into a caller-owned (indices.size(), embedding_dim) buffer; no allocation.
  void forward(IndexSpan indices, Eigen::Ref<Matrix<T>> out) const {
    detail::check_shape(forward_where, "out", static_cast<Index>(indices.size()), embedding_dim(),
                        out.rows(), out.cols());
    lookup(indices, out.data(), out.outerStride());
  }
  Matrix<T> operator()(IndexSpan indices) const { return forward(indices); }

 private:
  void lookup(IndexSpan indices, T* out, Index out_stride) const {
    detail::check_indices(forward_where, indices, num_embeddings());
    table_.visit([&](const auto& view) {
      detail::gather_rows_unchecked(view, indices, out, out_stride,
                                    detail::plan_gather<T>(view, indices.size()));
    });
  }

  QuantizedTable table_;
  std::optional<Index> padding_idx_;
};

// Bags on a quantized table, pooled straight from the packed rows (no dequantized copy):
//   Sum   bag b = sum of psw_i * row(idx_i), computed as PyTorch's rowwise bag ops compute it
//         (torch.ops.quantized.embedding_bag_byte_rowwise_offsets / _4bit_ / _2bit_): per
//         entry, acc = fma(psw_i * scale, code, acc + psw_i * bias);
//   Mean  that sum divided by the number of entries that contribute (PyTorch's CPU op ignores
//         the mode and returns the sum; emb does what EmbeddingBag does on the dequantized table);
//   Max   element-wise over the dequantized rows, ties keeping the first (PyTorch has none).
// Offsets follow EmbeddingBag's rules and are all validated; per_sample_weights is Sum only;
// padding entries are skipped; an empty bag gives zeros.
//
// Pruned tables (PyTorch's pruned_weights = True): compressed_indices_mapping[i] is the stored
// row of original id i, or -1 for a pruned id, which contributes nothing. Ids are checked
// against the mapping's length (std::out_of_range), and every mapping entry a call reads
// against [-1, N) (std::invalid_argument); padding_idx then names an original id. (PyTorch
// reads a mapping of the single entry 0 as "not pruned"; emb reads every mapping as given:
// pass none for an unpruned table.)
template <class T = float>
class QuantizedEmbeddingBag {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "emb::QuantizedEmbeddingBag computes in float or double (T)");
  static constexpr const char* name = "emb::QuantizedEmbeddingBag";
  static constexpr const char* forward_where = "emb::QuantizedEmbeddingBag::forward";

 public:
  using Scalar = T;

  QuantizedEmbeddingBag(QuantizedTable table, const QuantizedBagOptions& options = {})
      : table_(std::move(table)), options_(validated(options, table_.num_embeddings())) {}

  Index num_embeddings() const noexcept { return table_.num_embeddings(); }
  Index embedding_dim() const noexcept { return table_.embedding_dim(); }
  QuantBits bits() const noexcept { return table_.bits(); }
  BagMode mode() const noexcept { return options_.mode(); }
  bool include_last_offset() const noexcept { return options_.include_last_offset(); }
  std::optional<Index> padding_idx() const noexcept { return options_.padding_idx(); }
  // The options in force, a negative padding_idx wrapped to [0, N).
  const QuantizedBagOptions& options() const noexcept { return options_; }
  const QuantizedTable& table() const noexcept { return table_; }

  // (B, embedding_dim): one pooled row per bag. per_sample_weights: none, a Vector<T> (one
  // weight per index), or a `const Vector<T>*` (none when null).
  Matrix<T> forward(IndexSpan indices, IndexSpan offsets, PerSampleWeights<T> psw = {}) const {
    return pooled(indices, offsets, include_last_offset(), psw, nullptr);
  }
  // A pruned table's bags: ids are original ids, translated through the mapping.
  Matrix<T> forward(IndexSpan indices, IndexSpan offsets, PerSampleWeights<T> psw,
                    IndexSpan compressed_indices_mapping) const {
    return pooled(indices, offsets, include_last_offset(), psw, &compressed_indices_mapping);
  }
  Matrix<T> forward(IndexSpan indices, IndexSpan offsets, IndexSpan compressed_indices_mapping) const {
    return pooled(indices, offsets, include_last_offset(), {}, &compressed_indices_mapping);
  }

  // The same into a caller-owned (B, embedding_dim) buffer (a Matrix<T> or a block of one);
  // no allocation without a mapping.
  template <class Out, class = detail::if_output_matrix<Out, T>>
  void forward(IndexSpan indices, IndexSpan offsets, Out&& out, PerSampleWeights<T> psw = {}) const {
    Eigen::Ref<Matrix<T>> dst(out);
    pool_into(indices, offsets, include_last_offset(), psw, nullptr, dst);
  }
  template <class Out, class = detail::if_output_matrix<Out, T>>
  void forward(IndexSpan indices, IndexSpan offsets, Out&& out, PerSampleWeights<T> psw,
               IndexSpan compressed_indices_mapping) const {
    Eigen::Ref<Matrix<T>> dst(out);
    pool_into(indices, offsets, include_last_offset(), psw, &compressed_indices_mapping, dst);
  }

  // Fixed-length bags: a (B, L) matrix of ids, one bag per row, like PyTorch's 2-D input;
  // per_sample_weights (Sum only) has the same shape.
  Matrix<T> forward(const Matrix<Index>& input) const {
    const auto offsets = detail::fixed_offsets(static_cast<std::size_t>(input.rows()), input.cols());
    return pooled(input, offsets, false, {}, nullptr);
  }
  Matrix<T> forward(const Matrix<Index>& input,
                    const Eigen::Ref<const Matrix<T>>& per_sample_weights) const {
    detail::check_shape(forward_where, "per_sample_weights", input.rows(), input.cols(),
                        per_sample_weights.rows(), per_sample_weights.cols());
    Vector<T> flat(per_sample_weights.size());
    Eigen::Map<Matrix<T>>(flat.data(), input.rows(), input.cols()) = per_sample_weights;
    const auto offsets = detail::fixed_offsets(static_cast<std::size_t>(input.rows()), input.cols());
    return pooled(input, offsets, false, PerSampleWeights<T>(std::move(flat)), nullptr);
  }

  Matrix<T> operator()(IndexSpan indices, IndexSpan offsets, PerSampleWeights<T> psw = {}) const {
    return forward(indices, offsets, std::move(psw));
  }
  Matrix<T> operator()(const Matrix<Index>& input) const { return forward(input); }

 private:
  static QuantizedBagOptions validated(QuantizedBagOptions options, Index rows) {
    if (const auto p = options.padding_idx(); p && *p >= rows) {
      options.padding_idx(p);  // an original id of a pruned table: kept as it is
    } else {
      options.padding_idx(detail::normalise_padding_idx(name, p, rows));
    }
    const auto m = options.mode();
    if (m != BagMode::Sum && m != BagMode::Mean && m != BagMode::Max) {
      detail::throw_bad_option(name, "mode", detail::concat(static_cast<int>(m)),
                               "it must be BagMode::Sum, Mean or Max");
    }
    return options;
  }

  // The ids the kernels read: the call's own, or their mapped rows; `skip` marks the entries
  // that contribute nothing.
  struct Ids {
    IndexSpan span;
    Index skip = -1;
    std::vector<Index> mapped;
  };

  // Checks everything a call depends on, in order (weights, offsets, ids, mapping entries), and
  // returns the number of bags; `ids` receives what the kernels read.
  std::size_t check_call(IndexSpan indices, IndexSpan offsets, bool include_last,
                         const PerSampleWeights<T>& psw, const IndexSpan* mapping, Ids& ids) const {
    if (psw.has_value()) {
      if (mode() != BagMode::Sum) {
        throw std::invalid_argument(detail::concat(
            forward_where, ": per_sample_weights is only supported in sum mode, not mode = ",
            to_string(mode())));
      }
      if (psw.size() != static_cast<Index>(indices.size())) {
        throw std::invalid_argument(detail::concat(forward_where, ": per_sample_weights has ",
                                                   psw.size(), " values, expected one per index (",
                                                   indices.size(), ")"));
      }
    }
    const std::size_t bags = detail::check_offsets(forward_where, offsets, indices.size(), include_last);
    if (mapping == nullptr) {
      detail::check_indices(forward_where, indices, num_embeddings());
      ids.span = indices;
      ids.skip = padding_idx().value_or(-1);
      return bags;
    }
    detail::check_indices(forward_where, indices, static_cast<Index>(mapping->size()));
    const Index rows = num_embeddings();
    const std::optional<Index> padding = padding_idx();
    ids.mapped.resize(indices.size());
    for (std::size_t i = 0; i < indices.size(); ++i) {
      const Index id = indices[i];
      const Index row = (*mapping)[static_cast<std::size_t>(id)];
      if (row < -1 || row >= rows) {
        throw std::invalid_argument(detail::concat(
            forward_where, ": compressed_indices_mapping[", id, "] = ", row, " (for index ", id,
            " at position ", i, ") is invalid; an entry must be a row in [0, ", rows,
            ") or -1 for a pruned id"));
      }
      ids.mapped[i] = padding && id == *padding ? -1 : row;
    }
    ids.span = IndexSpan(ids.mapped);
    ids.skip = -1;
    return bags;
  }

  Matrix<T> pooled(IndexSpan indices, IndexSpan offsets, bool include_last,
                   const PerSampleWeights<T>& psw, const IndexSpan* mapping) const {
    Ids ids;
    const std::size_t bags = check_call(indices, offsets, include_last, psw, mapping, ids);
    Matrix<T> out(static_cast<Index>(bags), embedding_dim());
    pool(ids, offsets, bags, psw, out.data(), out.cols());
    return out;
  }

  void pool_into(IndexSpan indices, IndexSpan offsets, bool include_last,
                 const PerSampleWeights<T>& psw, const IndexSpan* mapping,
                 Eigen::Ref<Matrix<T>>& out) const {
    Ids ids;
    const std::size_t bags = check_call(indices, offsets, include_last, psw, mapping, ids);
    detail::check_shape(forward_where, "out", static_cast<Index>(bags), embedding_dim(), out.rows(),
                        out.cols());
    pool(ids, offsets, bags, psw, out.data(), out.outerStride());
  }

  void pool(const Ids& ids, IndexSpan offsets, std::size_t bags, const PerSampleWeights<T>& psw,
            T* out, Index out_stride) const {
    table_.visit([&](const auto& view) {
      if (mode() == BagMode::Max) {
        detail::bag_max(view, ids.span, offsets, bags, ids.skip, out, out_stride);
      } else {
        detail::bag_sum(view, ids.span, offsets, bags, ids.skip, psw.data(),
                        mode() == BagMode::Mean, out, out_stride);
      }
    });
  }

  QuantizedTable table_;
  QuantizedBagOptions options_;
};

}  // namespace emb
