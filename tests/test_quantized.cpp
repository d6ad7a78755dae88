// QuantizedTable, QuantizedEmbedding and QuantizedEmbeddingBag.
//
// Oracles:
//   - PyTorch itself: tests/data/quant/quantized.txt, written by make_reference.py with Debian's
//     torch 1.13 (its own CPU kernels), holds float tables, the bytes
//     torch.ops.quantized.embedding_bag_{byte,4bit,2bit}_prepack gives for them, the values
//     _unpack gives, and Sum bags from _rowwise_offsets (plain, weighted, include_last_offset,
//     pruned). quantize must give the same bytes, dequantize the same values bit for bit, the
//     bags the same sums to float rounding.
//   - For dims PyTorch refuses (Int4 / Int2 with dim not a multiple of 8 / bits), the bytes
//     PyTorch gives for the table widened by copies of column 0, unused bits masked.
//   - Mean and Max (which PyTorch's quantized bags do not have): emb's EmbeddingBag on the
//     dequantized table.
//   - The kernels (AVX-512 and AVX2 where the CPU has them, the portable loop everywhere): a
//     bag written out here from the layout's definition, and each other, bit for bit.

#include <emb/embedding_bag.hpp>
#include <emb/io/packed.hpp>
#include <emb/quantized.hpp>

#include <doctest/doctest.h>

#include "reference_file.hpp"
#include "test_util.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

using emb::BagMode;
using emb::EmbeddingBag;
using emb::FromPretrainedBagOptions;
using emb::Index;
using emb::Matrix;
using emb::QuantBits;
using emb::QuantizedBagOptions;
using emb::QuantizedEmbedding;
using emb::QuantizedEmbeddingBag;
using emb::QuantizedTable;
using emb::Vector;

using emb_test::bit_identical;
using emb_test::contains;
using emb_test::message_of;
using emb_test::random_ids;
using emb_test::random_matrix;
using emb_test::ReferenceCase;
using emb_test::ReferenceFile;

namespace {

const ReferenceFile& reference() {
  static const ReferenceFile file(std::string(EMB_TEST_DATA_DIR) + "/quant/quantized.txt");
  return file;
}

QuantBits bits_of(Index b) { return static_cast<QuantBits>(b); }

Matrix<float> weight_of(const ReferenceCase& table) {
  return table.f32_matrix("weight", table.integer("rows"), table.integer("dim"));
}

// A packed/... case: the float table it was made from, and its bytes as a table.
Matrix<float> source_of(const ReferenceCase& packed) {
  return weight_of(reference().at("table/" + packed.str("table")));
}
QuantizedTable table_of(const ReferenceCase& packed) {
  const ReferenceCase& table = reference().at("table/" + packed.str("table"));
  return QuantizedTable::from_packed(packed.u8("packed"), table.integer("rows"), table.integer("dim"),
                                     bits_of(packed.integer("bits")));
}

std::uint32_t bits32(float f) {
  std::uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

// Same shape and the same bit patterns (so +0 and -0 differ, and NaN equals NaN).
bool same_bits(const Matrix<float>& a, const Matrix<float>& b) {
  if (a.rows() != b.rows() || a.cols() != b.cols()) return false;
  for (Index i = 0; i < a.size(); ++i) {
    if (bits32(a.data()[i]) != bits32(b.data()[i])) return false;
  }
  return true;
}

// An independent reading of the layout, from its definition: code j of row r, scale, bias.
struct Row {
  std::vector<unsigned> codes;
  float scale = 0;
  float bias = 0;
};
Row read_row(const std::uint8_t* bytes, Index dim, int bits) {
  const std::size_t code_bytes = (static_cast<std::size_t>(dim) * static_cast<std::size_t>(bits) + 7) / 8;
  Row row;
  for (Index j = 0; j < dim; ++j) {
    const auto bit = static_cast<std::size_t>(j) * static_cast<std::size_t>(bits);
    row.codes.push_back((bytes[bit / 8] >> (bit % 8)) & ((1u << bits) - 1));
  }
  const std::uint8_t* p = bytes + code_bytes;
  if (bits == 8) {
    std::uint32_t s = 0, b = 0;
    for (int i = 3; i >= 0; --i) {
      s = s << 8 | p[i];
      b = b << 8 | p[4 + i];
    }
    std::memcpy(&row.scale, &s, 4);
    std::memcpy(&row.bias, &b, 4);
  } else {
    const auto s = static_cast<std::uint16_t>(p[0] | p[1] << 8);
    const auto b = static_cast<std::uint16_t>(p[2] | p[3] << 8);
    row.scale = static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(s));
    row.bias = static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(b));
  }
  return row;
}

// The positions [begin, end) of bag b of n ids, and the number of bags, from the offsets'
// definition.
std::size_t bag_count(const std::vector<Index>& offsets, bool last) {
  return last ? offsets.size() - 1 : offsets.size();
}
std::pair<std::size_t, std::size_t> bag_bounds(const std::vector<Index>& offsets, std::size_t b,
                                               std::size_t n) {
  return {static_cast<std::size_t>(offsets[b]),
          b + 1 < offsets.size() ? static_cast<std::size_t>(offsets[b + 1]) : n};
}

// Sum (or Mean) bags computed from read_row, entry by entry, as the layout's arithmetic says:
// acc = fma(w * scale, code, acc + w * bias). `rows` gives the stored row of each entry (-1:
// contributes nothing).
Matrix<float> oracle_bags(const QuantizedTable& t, const std::vector<Index>& rows,
                          const std::vector<Index>& offsets, bool last, const std::vector<float>* psw,
                          bool mean) {
  const Index dim = t.embedding_dim();
  const std::size_t bags = bag_count(offsets, last);
  Matrix<float> out = Matrix<float>::Zero(static_cast<Index>(bags), dim);
  for (std::size_t b = 0; b < bags; ++b) {
    const auto [begin, end] = bag_bounds(offsets, b, rows.size());
    int count = 0;
    for (std::size_t i = begin; i < end; ++i) {
      if (rows[i] < 0) continue;
      ++count;
      const Row r = read_row(t.data() + static_cast<std::size_t>(rows[i]) * t.row_bytes(), dim,
                             static_cast<int>(t.bits()));
      const float w = psw ? (*psw)[i] : 1.0f;
      const float s = w * r.scale, bias = w * r.bias;
      for (Index j = 0; j < dim; ++j) {
        out(static_cast<Index>(b), j) =
            std::fma(s, static_cast<float>(r.codes[static_cast<std::size_t>(j)]),
                     out(static_cast<Index>(b), j) + bias);
      }
    }
    if (mean && count > 0) out.row(static_cast<Index>(b)) /= static_cast<float>(count);
  }
  return out;
}

// |a - b| within a few float roundings of the magnitudes summed: tol = 1e-6 * (sum over the
// bag's entries of |w| * (|scale| * max code + |bias|)), at least the smallest normal float.
void check_close_to_torch(const Matrix<float>& got, const Matrix<float>& expected,
                          const QuantizedTable& t, const std::vector<Index>& rows,
                          const std::vector<Index>& offsets, bool last,
                          const std::vector<float>* psw) {
  REQUIRE(got.rows() == expected.rows());
  REQUIRE(got.cols() == expected.cols());
  const double top = static_cast<double>((1u << static_cast<int>(t.bits())) - 1);
  for (std::size_t b = 0; b < bag_count(offsets, last); ++b) {
    const auto [begin, end] = bag_bounds(offsets, b, rows.size());
    double magnitude = 0;
    for (std::size_t i = begin; i < end; ++i) {
      if (rows[i] < 0) continue;
      const double w = psw ? std::abs((*psw)[i]) : 1.0;
      magnitude += w * (std::abs(t.scale(rows[i])) * top + std::abs(t.bias(rows[i])));
    }
    const double tol = std::max(1e-6 * magnitude, static_cast<double>(std::numeric_limits<float>::min()));
    for (Index j = 0; j < got.cols(); ++j) {
      const auto bi = static_cast<Index>(b);
      INFO("bag " << b << " column " << j << ": " << got(bi, j) << " vs " << expected(bi, j));
      CHECK(std::abs(static_cast<double>(got(bi, j)) - static_cast<double>(expected(bi, j))) <= tol);
    }
  }
}

// A quantized bag against EmbeddingBag on the dequantized table: Max picks the same values, bit
// for bit; Sum and Mean agree to float rounding (the quantized sum fuses its product and add).
void check_like_float_bag(const Matrix<float>& got, const Matrix<float>& want, BagMode mode) {
  REQUIRE(got.rows() == want.rows());
  if (mode == BagMode::Max) {
    CHECK(same_bits(got, want));
  } else {
    CHECK((got - want).cwiseAbs().maxCoeff() <= 1e-5f * (1.0f + want.cwiseAbs().maxCoeff()));
  }
}

// The stored row each entry of a call reads (-1 for pruned and padding entries).
std::vector<Index> stored_rows(const std::vector<Index>& ids, const std::vector<Index>* mapping,
                               std::optional<Index> padding = {}) {
  std::vector<Index> rows;
  for (Index id : ids) {
    const Index r = mapping ? (*mapping)[static_cast<std::size_t>(id)] : id;
    rows.push_back(padding && id == *padding ? -1 : r);
  }
  return rows;
}

const QuantBits kAllBits[] = {QuantBits::Int8, QuantBits::Int4, QuantBits::Int2};

}  // namespace

// ---- the bytes -------------------------------------------------------------------------------

TEST_CASE("QuantizedTable: quantize gives PyTorch's prepacked bytes, row for row") {
  const auto cases = reference().with_prefix("packed/");
  REQUIRE(cases.size() >= 20);
  for (const ReferenceCase* c : cases) {
    INFO(c->name());
    const Matrix<float> w = source_of(*c);
    const QuantizedTable t = QuantizedTable::quantize(w, bits_of(c->integer("bits")));
    const std::vector<std::uint8_t> expected = c->u8("packed");
    REQUIRE(t.num_embeddings() == w.rows());
    REQUIRE(t.embedding_dim() == w.cols());
    REQUIRE(t.size_bytes() == expected.size());
    REQUIRE(t.row_bytes() == expected.size() / static_cast<std::size_t>(w.rows()));
    for (Index r = 0; r < w.rows(); ++r) {
      INFO("row " << r);
      const std::size_t rb = t.row_bytes();
      CHECK(std::equal(t.data() + static_cast<std::size_t>(r) * rb,
                       t.data() + static_cast<std::size_t>(r + 1) * rb,
                       expected.begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(r) * rb)));
    }
  }
}

TEST_CASE("QuantizedTable: dequantize gives PyTorch's unpacked values bit for bit") {
  for (const ReferenceCase* c : reference().with_prefix("packed/")) {
    INFO(c->name());
    const QuantizedTable t = table_of(*c);
    const Matrix<float> w = source_of(*c);
    const QuantBits bits = t.bits();
    CHECK(same_bits(t.dequantize(), c->f32_matrix("unpacked", w.rows(), w.cols())));
    // And value = code * scale + bias, read from the layout's definition.
    const Matrix<float> dq = t.dequantize();
    for (Index r = 0; r < w.rows(); ++r) {
      const Row row = read_row(t.data() + static_cast<std::size_t>(r) * t.row_bytes(), w.cols(), static_cast<int>(bits));
      CHECK(bits32(row.scale) == bits32(t.scale(r)));
      CHECK(bits32(row.bias) == bits32(t.bias(r)));
      for (Index j = 0; j < w.cols(); ++j) {
        const float product = static_cast<float>(row.codes[static_cast<std::size_t>(j)]) * row.scale;
        REQUIRE(bits32(dq(r, j)) == bits32(product + row.bias));
      }
    }
  }
}

TEST_CASE("QuantizedTable: the corner rows come out as PyTorch writes them") {
  // Named rows of special_d16 (see make_reference.py), read back through scale() and bias().
  const Matrix<float> w = weight_of(reference().at("table/special_d16"));
  const auto i8 = QuantizedTable::quantize(w, QuantBits::Int8);
  const auto i4 = QuantizedTable::quantize(w, QuantBits::Int4);
  SUBCASE("a constant row: Int8 scale 0, bias the value; Int4 scale 1, codes 0") {
    CHECK(i8.scale(0) == 0.0f);
    CHECK(i8.bias(0) == 5.0f);
    CHECK(i4.scale(0) == 1.0f);
    CHECK(i4.bias(0) == 5.0f);
    CHECK(i4.dequantize().row(0).isConstant(5.0f));
  }
  SUBCASE("signed zeros: the bias is whichever zero comes first") {
    CHECK(std::signbit(i8.bias(3)));
    CHECK(!std::signbit(i8.bias(4)));
    CHECK(std::signbit(i8.bias(5)));
    CHECK(std::signbit(i4.bias(5)));
  }
  SUBCASE("a range no float16 scale holds quantizes to the bias") {
    CHECK(i4.scale(7) == 1.0f);
    CHECK(i4.dequantize().row(7).isZero());
  }
  SUBCASE("a float16 bias above the row's minimum clamps the lowest codes to 0") {
    CHECK(i4.bias(11) > w.row(11).minCoeff());
    CHECK(i4.dequantize().row(11).minCoeff() == i4.bias(11));
  }
}

TEST_CASE("QuantizedTable: any dim for Int4 and Int2, PyTorch's bytes with the unused bits zero") {
  for (Index dim : {1, 3, 7, 13, 127}) {
    const std::string name = "odd_d" + std::to_string(dim);
    const Matrix<float> w = weight_of(reference().at("table/" + name));
    for (int bits : {4, 2}) {
      INFO(name << " Int" << bits);
      const ReferenceCase& c = reference().at("padded/" + name + "/int" + std::to_string(bits));
      const QuantizedTable t = QuantizedTable::quantize(w, bits_of(bits));
      std::vector<std::uint8_t> expected = c.u8("packed");
      REQUIRE(t.size_bytes() == expected.size());
      const std::size_t code_bytes = (static_cast<std::size_t>(dim) * static_cast<std::size_t>(bits) + 7) / 8;
      const std::size_t used = static_cast<std::size_t>(dim) * static_cast<std::size_t>(bits) - 8 * (code_bytes - 1);
      for (Index r = 0; r < w.rows(); ++r) {
        auto& last = expected[static_cast<std::size_t>(r) * t.row_bytes() + code_bytes - 1];
        last = static_cast<std::uint8_t>(last & ((1u << used) - 1));
      }
      CHECK(std::equal(expected.begin(), expected.end(), t.data()));
      // The dequantized values are those of PyTorch's widened table, without the extra columns.
      const QuantizedTable wide = QuantizedTable::from_packed(c.u8("packed"), w.rows(),
                                                              c.integer("padded_dim"), bits_of(bits));
      CHECK(same_bits(t.dequantize(), Matrix<float>(wide.dequantize().leftCols(dim))));
    }
  }
}

TEST_CASE("QuantizedTable: from_packed takes the bytes as they are, without a copy") {
  const ReferenceCase& c = reference().at("packed/normal_d64/int4");
  std::vector<std::uint8_t> bytes = c.u8("packed");
  const std::uint8_t* where = bytes.data();
  const QuantizedTable t = QuantizedTable::from_packed(std::move(bytes), 16, 64, QuantBits::Int4);
  CHECK(t.data() == where);
  CHECK(t.bits() == QuantBits::Int4);
  CHECK(t.row_bytes() == 36);
  CHECK(QuantizedTable::row_bytes(64, QuantBits::Int4) == 36);
  CHECK(QuantizedTable::row_bytes(64, QuantBits::Int8) == 72);
  CHECK(QuantizedTable::row_bytes(64, QuantBits::Int2) == 20);
  CHECK(QuantizedTable::row_bytes(7, QuantBits::Int2) == 6);
  // Copies share the bytes; the layers keep a copy.
  const QuantizedTable copy = t;
  CHECK(copy.data() == where);
  const QuantizedEmbeddingBag<float> bag(t);
  CHECK(bag.table().data() == where);
}

TEST_CASE("QuantizedTable: an empty table, empty rows and the default table") {
  const QuantizedTable none;
  CHECK(none.num_embeddings() == 0);
  CHECK(none.size_bytes() == 0);
  CHECK(none.dequantize().size() == 0);
  for (QuantBits bits : kAllBits) {
    const QuantizedTable empty = QuantizedTable::quantize(Matrix<float>(0, 5), bits);
    CHECK(empty.num_embeddings() == 0);
    CHECK(empty.embedding_dim() == 5);
    const QuantizedTable zero_dim = QuantizedTable::quantize(Matrix<float>(3, 0), bits);
    CHECK(zero_dim.size_bytes() == 3 * zero_dim.row_bytes());
    CHECK(zero_dim.dequantize().rows() == 3);
    const QuantizedEmbeddingBag<float> bag(zero_dim);
    CHECK(bag.forward({0, 2}, {0}).rows() == 1);
    const QuantizedEmbedding<float> lookups(empty);
    CHECK(lookups.forward(std::vector<Index>{}).rows() == 0);
  }
}

TEST_CASE("QuantizedTable: each rounding error stays within half a step of its row") {
  // The property that defines the codes: |x - dequantized x| <= scale / 2 (plus a float
  // rounding), the Int4 / Int2 bias being itself a float16 rounding of the row's minimum.
  const Matrix<float> w = random_matrix(200, 64, 7);
  for (QuantBits bits : kAllBits) {
    const QuantizedTable t = QuantizedTable::quantize(w, bits);
    const Matrix<float> dq = t.dequantize();
    for (Index r = 0; r < w.rows(); ++r) {
      const double bias_error = std::abs(static_cast<double>(t.bias(r)) - w.row(r).minCoeff());
      const double limit = t.scale(r) / 2.0 + bias_error + 1e-6;
      REQUIRE((dq.row(r) - w.row(r)).cwiseAbs().maxCoeff() <= limit);
    }
  }
}

// ---- bags against PyTorch --------------------------------------------------------------------

TEST_CASE("QuantizedEmbeddingBag: Sum bags give PyTorch's rowwise bag sums") {
  const auto cases = reference().with_prefix("bag/");
  REQUIRE(cases.size() >= 60);
  for (const ReferenceCase* c : cases) {
    INFO(c->name());
    const QuantizedTable t = table_of(reference().at("packed/" + c->str("packed")));
    const Index dim = t.embedding_dim();
    const bool last = c->integer("include_last_offset") != 0;
    const QuantizedEmbeddingBag<float> bag(t, QuantizedBagOptions().include_last_offset(last));
    const auto ids = c->i64("indices");
    const auto offsets = c->i64("offsets");
    std::optional<std::vector<float>> psw;
    Vector<float> psw_vector;
    if (c->has("psw")) {
      psw = c->f32("psw");
      psw_vector = Eigen::Map<const Vector<float>>(psw->data(), static_cast<Index>(psw->size()));
    }
    std::optional<std::vector<Index>> mapping;
    if (c->has("mapping")) mapping = c->i64("mapping");
    const Matrix<float> expected =
        c->f32_matrix("output", static_cast<Index>(bag_count(offsets, last)), dim);

    Matrix<float> got;
    if (mapping) {
      got = bag.forward(ids, offsets, psw ? &psw_vector : nullptr, *mapping);
    } else if (psw) {
      got = bag.forward(ids, offsets, psw_vector);
    } else {
      got = bag.forward(ids, offsets);
    }
    const auto rows_read = stored_rows(ids, mapping ? &*mapping : nullptr);
    check_close_to_torch(got, expected, t, rows_read, offsets, last, psw ? &*psw : nullptr);
    // The same arithmetic, entry by entry, from the layout's definition: bit for bit.
    CHECK(same_bits(got, oracle_bags(t, rows_read, offsets, last, psw ? &*psw : nullptr, false)));
  }
}

TEST_CASE("QuantizedEmbeddingBag: Mean and Max are EmbeddingBag's on the dequantized table") {
  for (const ReferenceCase* c : reference().with_prefix("bag/")) {
    if (c->has("psw")) continue;
    INFO(c->name());
    const QuantizedTable t = table_of(reference().at("packed/" + c->str("packed")));
    const bool last = c->integer("include_last_offset") != 0;
    auto ids = c->i64("indices");
    const auto offsets = c->i64("offsets");
    std::optional<std::vector<Index>> mapping;
    if (c->has("mapping")) mapping = c->i64("mapping");
    // Pruned ids become padding entries of the float table: nothing summed, not counted.
    std::optional<Index> float_padding;
    std::vector<Index> float_ids = ids;
    if (mapping) {
      const auto rows_read = stored_rows(ids, &*mapping);
      Matrix<float> dq(t.num_embeddings() + 1, t.embedding_dim());
      dq.topRows(t.num_embeddings()) = t.dequantize();
      dq.bottomRows(1).setZero();
      float_padding = t.num_embeddings();
      for (std::size_t i = 0; i < ids.size(); ++i) float_ids[i] = rows_read[i] < 0 ? *float_padding : rows_read[i];
      for (BagMode mode : {BagMode::Mean, BagMode::Max}) {
        const auto reference_bag = EmbeddingBag<float>::from_pretrained(
            dq, FromPretrainedBagOptions().mode(mode).include_last_offset(last).padding_idx(float_padding));
        const QuantizedEmbeddingBag<float> bag(t, QuantizedBagOptions().mode(mode).include_last_offset(last));
        const Matrix<float> got = bag.forward(ids, offsets, *mapping);
        check_like_float_bag(got, reference_bag.forward(float_ids, offsets), mode);
        if (mode == BagMode::Mean) {
          CHECK(same_bits(got, oracle_bags(t, rows_read, offsets, last, nullptr, true)));
        }
      }
      continue;
    }
    for (BagMode mode : {BagMode::Mean, BagMode::Max}) {
      const auto reference_bag = EmbeddingBag<float>::from_pretrained(
          t.dequantize(), FromPretrainedBagOptions().mode(mode).include_last_offset(last));
      const QuantizedEmbeddingBag<float> bag(t, QuantizedBagOptions().mode(mode).include_last_offset(last));
      check_like_float_bag(bag.forward(ids, offsets), reference_bag.forward(ids, offsets), mode);
    }
  }
}

TEST_CASE("QuantizedEmbeddingBag: odd dims pool as EmbeddingBag on the dequantized table") {
  for (Index dim : {1, 3, 7, 13, 127}) {
    const Matrix<float> w = weight_of(reference().at("table/odd_d" + std::to_string(dim)));
    for (QuantBits bits : kAllBits) {
      INFO("dim " << dim << " " << emb::to_string(bits));
      const QuantizedTable t = QuantizedTable::quantize(w, bits);
      const std::vector<Index> ids = {0, 5, 1, 1, 3, 2, 4, 0, 5};
      const std::vector<Index> offsets = {0, 3, 3, 7};
      const std::vector<float> psw = {0.5f, -1.0f, 2.0f, 0.25f, 1.0f, -3.0f, 1.5f, 0.0f, 4.0f};
      const Vector<float> psw_vector = Eigen::Map<const Vector<float>>(psw.data(), 9);
      for (BagMode mode : {BagMode::Sum, BagMode::Mean, BagMode::Max}) {
        const auto reference_bag = EmbeddingBag<float>::from_pretrained(
            t.dequantize(), FromPretrainedBagOptions().mode(mode));
        const QuantizedEmbeddingBag<float> bag(t, QuantizedBagOptions().mode(mode));
        const Matrix<float> got = bag.forward(ids, offsets);
        check_like_float_bag(got, reference_bag.forward(ids, offsets), mode);
        if (mode != BagMode::Max) {
          CHECK(same_bits(got, oracle_bags(t, ids, offsets, false, nullptr, mode == BagMode::Mean)));
        }
      }
      const QuantizedEmbeddingBag<float> sum(t);
      const auto reference_sum = EmbeddingBag<float>::from_pretrained(
          t.dequantize(), FromPretrainedBagOptions().mode(BagMode::Sum));
      const Matrix<float> weighted = sum.forward(ids, offsets, psw_vector);
      check_like_float_bag(weighted, reference_sum.forward(ids, offsets, psw_vector), BagMode::Sum);
      CHECK(same_bits(weighted, oracle_bags(t, ids, offsets, false, &psw, false)));
    }
  }
}

// ---- the kernels -----------------------------------------------------------------------------

TEST_CASE_TEMPLATE("Quantized kernels: the dispatched and the portable loops agree bit for bit", Bits,
                   std::integral_constant<int, 8>, std::integral_constant<int, 4>,
                   std::integral_constant<int, 2>) {
  constexpr int B = Bits::value;
  // Every dim up to 136 (the register kernels at 8, 16, 32, 64, 128; tails elsewhere), bags of
  // every shape, weights, Mean, a skip id, a table large enough to prefetch.
  for (Index dim = 1; dim <= 136; dim += (dim < 20 ? 1 : 7)) {
    for (Index rows : {Index{50}, Index{(std::int64_t{9} << 20) / static_cast<Index>(emb::detail::QuantLayout<B>::row_bytes(64))}}) {
      if (rows > 50 && dim != 64) continue;
      INFO("dim " << dim << " rows " << rows);
      const Matrix<float> w = random_matrix(std::min<Index>(rows, 300), dim, static_cast<unsigned>(dim));
      // A large table repeats its first 300 rows, so that it is cheap to make.
      QuantizedTable small = QuantizedTable::quantize(w, static_cast<QuantBits>(B));
      std::vector<std::uint8_t> bytes(static_cast<std::size_t>(rows) * small.row_bytes());
      for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = small.data()[i % small.size_bytes()];
      const QuantizedTable t = QuantizedTable::from_packed(std::move(bytes), rows, dim, static_cast<QuantBits>(B));
      using emb::detail::QuantKernels;
      const auto fast = emb::detail::quant_view<B>(t.data(), rows, dim);
      const auto avx2 = emb::detail::quant_view<B>(t.data(), rows, dim, QuantKernels::Avx2);
      const auto portable = emb::detail::quant_view<B>(t.data(), rows, dim, QuantKernels::Portable);
      const std::vector<Index> ids = random_ids(300, rows, static_cast<unsigned>(dim + 1));
      const std::vector<Index> offsets = {0, 1, 1, 20, 150, 299};
      Vector<float> psw = Vector<float>::LinSpaced(300, -2.0f, 3.0f);
      for (const bool weighted : {false, true}) {
        for (const bool mean : {false, true}) {
          if (weighted && mean) continue;
          for (const Index skip : {Index{-1}, ids[3]}) {
            Matrix<float> a(6, dim), b(6, dim), c(6, dim);
            const float* p = weighted ? psw.data() : nullptr;
            emb::detail::bag_sum(fast, ids, offsets, 6, skip, p, mean, a.data(), dim);
            emb::detail::bag_sum(avx2, ids, offsets, 6, skip, p, mean, b.data(), dim);
            emb::detail::bag_sum(portable, ids, offsets, 6, skip, p, mean, c.data(), dim);
            REQUIRE(same_bits(a, c));
            REQUIRE(same_bits(b, c));
          }
        }
      }
      Matrix<float> a(300, dim), b(300, dim);
      emb::detail::gather_rows_unchecked(fast, ids, a.data(), dim, emb::detail::plan_gather<float>(fast, 300));
      emb::detail::gather_rows_unchecked(portable, ids, b.data(), dim, emb::detail::plan_gather<float>(portable, 300));
      REQUIRE(same_bits(a, b));
      Matrix<float> ma(6, dim), mb(6, dim);
      emb::detail::bag_max(fast, ids, offsets, 6, -1, ma.data(), dim);
      emb::detail::bag_max(portable, ids, offsets, 6, -1, mb.data(), dim);
      REQUIRE(same_bits(ma, mb));
    }
  }
}

// ---- lookups ---------------------------------------------------------------------------------

TEST_CASE("QuantizedEmbedding: lookups return the dequantized rows, in float and in double") {
  const Matrix<float> w = random_matrix(40, 24, 11, 2.0);
  for (QuantBits bits : kAllBits) {
    const QuantizedTable t = QuantizedTable::quantize(w, bits);
    const Matrix<float> dq = t.dequantize();
    const QuantizedEmbedding<float> table(t, 3);
    CHECK(table.padding_idx() == 3);
    CHECK(table.num_embeddings() == 40);
    CHECK(table.embedding_dim() == 24);
    CHECK(table.bits() == bits);
    const std::vector<Index> ids = {5, 0, 39, 5, 3, 17};
    const Matrix<float> rows = table.forward(ids);
    for (std::size_t i = 0; i < ids.size(); ++i) {
      CHECK(same_bits(Matrix<float>(rows.row(static_cast<Index>(i))), Matrix<float>(dq.row(ids[i]))));
    }
    // Into a block of a larger buffer, and as (batch, seq).
    Matrix<float> buffer = Matrix<float>::Constant(8, 30, 7.0f);
    table.forward(ids, buffer.block(1, 2, 6, 24));
    CHECK(same_bits(Matrix<float>(buffer.block(1, 2, 6, 24)), rows));
    CHECK(buffer(0, 0) == 7.0f);
    CHECK(buffer(7, 29) == 7.0f);
    Matrix<Index> batch(2, 3);
    batch << 5, 0, 39, 5, 3, 17;
    CHECK(same_bits(table.forward(batch), rows));
    const QuantizedEmbedding<double> wide(t);
    CHECK(bit_identical(wide.forward(ids), rows.cast<double>()));
  }
}

TEST_CASE("QuantizedEmbeddingBag: double accumulates in double, close to the float sums") {
  const Matrix<float> w = random_matrix(30, 16, 12);
  const QuantizedTable t = QuantizedTable::quantize(w, QuantBits::Int8);
  const std::vector<Index> ids = random_ids(50, 30, 13);
  const std::vector<Index> offsets = {0, 10, 10, 35};
  for (BagMode mode : {BagMode::Sum, BagMode::Mean, BagMode::Max}) {
    const Matrix<double> d = QuantizedEmbeddingBag<double>(t, QuantizedBagOptions().mode(mode)).forward(ids, offsets);
    const Matrix<float> f = QuantizedEmbeddingBag<float>(t, QuantizedBagOptions().mode(mode)).forward(ids, offsets);
    CHECK(d.cast<float>().isApprox(f, 1e-5f));
    if (mode == BagMode::Max) CHECK(bit_identical(d, f.cast<double>()));
  }
}

TEST_CASE("QuantizedEmbeddingBag: padding entries and pruned ids contribute nothing") {
  const Matrix<float> w = random_matrix(10, 8, 14);
  for (QuantBits bits : kAllBits) {
    const QuantizedTable t = QuantizedTable::quantize(w, bits);
    const Matrix<float> dq = t.dequantize();
    const std::vector<Index> ids = {2, 4, 2, 4, 4, 7};
    const std::vector<Index> offsets = {0, 2, 3, 5};
    SUBCASE("padding_idx without a mapping: a stored row") {
      const QuantizedEmbeddingBag<float> mean(t, QuantizedBagOptions().mode(BagMode::Mean).padding_idx(-6));
      CHECK(mean.padding_idx() == 4);
      const Matrix<float> got = mean.forward(ids, offsets);
      // A bag of one contributing row is that row (to float rounding: the bag's arithmetic
      // fuses the product and the sum, the dequantized value rounds the product first).
      CHECK(got.row(0).isApprox(dq.row(2), 1e-6f));  // {2, 4}: 4 not counted
      CHECK(got.row(1).isApprox(dq.row(2), 1e-6f));
      CHECK(got.row(2).isZero());                    // all padding
      CHECK(got.row(3).isApprox(dq.row(7), 1e-6f));
      const QuantizedEmbeddingBag<float> max(t, QuantizedBagOptions().mode(BagMode::Max).padding_idx(4));
      CHECK(max.forward(ids, offsets).row(2).isZero());
    }
    SUBCASE("with a mapping: pruned ids and the padding id (an original id)") {
      // Original ids 0..14; 3, 8 and 12 pruned.
      std::vector<Index> mapping(15);
      for (Index i = 0; i < 15; ++i) mapping[static_cast<std::size_t>(i)] = (i == 3 || i == 8 || i == 12) ? -1 : i % 10;
      const std::vector<Index> original = {3, 14, 8, 12, 5, 1, 6};
      const std::vector<Index> bag_offsets = {0, 2, 4};
      const QuantizedEmbeddingBag<float> mean(t, QuantizedBagOptions().mode(BagMode::Mean).padding_idx(5));
      const Matrix<float> got = mean.forward(original, bag_offsets, mapping);
      CHECK(got.row(0).isApprox(dq.row(4), 1e-6f));  // 3 pruned, 14 -> 4
      CHECK(got.row(1).isZero());                                            // both pruned
      Matrix<float> expected = (dq.row(1) + dq.row(6)) / 2.0f;                // 5 is padding
      CHECK(got.row(2).isApprox(expected.row(0), 1e-6f));
      // A padding id past the stored rows: an original id of the pruned table (14 -> row 4).
      const QuantizedEmbeddingBag<float> sum(t, QuantizedBagOptions().padding_idx(14));
      CHECK(sum.padding_idx() == 14);
      CHECK(sum.forward(original, bag_offsets, mapping).row(0).isZero());  // 3 pruned, 14 padding
      CHECK(sum.forward({4}, {0}).isApprox(QuantizedEmbeddingBag<float>(t).forward({4}, {0})));
      // The same through the weighted form with no weights, and into a buffer.
      CHECK(same_bits(mean.forward(original, bag_offsets, nullptr, mapping), got));
      Matrix<float> out(3, 8);
      mean.forward(original, bag_offsets, out, nullptr, mapping);
      CHECK(same_bits(out, got));
    }
  }
}

TEST_CASE("QuantizedEmbeddingBag: fixed-length bags, buffers and operator()") {
  const Matrix<float> w = random_matrix(20, 16, 15);
  const QuantizedTable t = QuantizedTable::quantize(w, QuantBits::Int4);
  const QuantizedEmbeddingBag<float> bag(t);
  CHECK(bag.mode() == BagMode::Sum);
  CHECK(!bag.include_last_offset());
  Matrix<Index> input(3, 4);
  input << 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 19, 19;
  const std::vector<Index> flat = {1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 19, 19};
  const std::vector<Index> offsets = {0, 4, 8};
  CHECK(same_bits(bag.forward(input), bag.forward(flat, offsets)));
  CHECK(same_bits(bag(input), bag(flat, offsets)));
  const Matrix<float> psw = Matrix<float>::Constant(3, 4, 0.5f);
  const Vector<float> flat_psw = Vector<float>::Constant(12, 0.5f);
  CHECK(same_bits(bag.forward(input, psw), bag.forward(flat, offsets, flat_psw)));
  Matrix<float> out = Matrix<float>::Constant(5, 20, -1.0f);
  bag.forward(flat, offsets, out.block(1, 1, 3, 16), flat_psw);
  CHECK(same_bits(Matrix<float>(out.block(1, 1, 3, 16)), bag.forward(flat, offsets, flat_psw)));
  CHECK(out(0, 0) == -1.0f);
  // Empty calls.
  CHECK(bag.forward(std::vector<Index>{}, std::vector<Index>{}).rows() == 0);
  CHECK(bag.forward(std::vector<Index>{}, {0, 0}).isZero());
}

// ---- bad input -------------------------------------------------------------------------------

TEST_CASE("QuantizedTable: quantize refuses what the layout cannot hold, naming the row") {
  Matrix<float> w = random_matrix(4, 6, 16);
  SUBCASE("NaN and infinity") {
    for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                      -std::numeric_limits<float>::infinity()}) {
      w(2, 3) = bad;
      for (QuantBits bits : kAllBits) {
        const std::string msg = message_of<std::invalid_argument>([&] { (void)QuantizedTable::quantize(w, bits); });
        CHECK(contains(msg, "emb::QuantizedTable::quantize"));
        CHECK(contains(msg, "row 2"));
        CHECK(contains(msg, "column 3"));
        CHECK(contains(msg, "finite"));
      }
    }
  }
  SUBCASE("an Int8 row whose range overflows float") {
    w.row(1) << -3e38f, 3e38f, 0, 0, 0, 0;
    const std::string msg = message_of<std::invalid_argument>([&] { (void)QuantizedTable::quantize(w, QuantBits::Int8); });
    CHECK(contains(msg, "row 1"));
    CHECK(contains(msg, "overflows"));
  }
  SUBCASE("an Int4 / Int2 bias or scale outside float16") {
    w.row(3) << -70000.0f, 0, 0, 0, 0, 1;
    for (QuantBits bits : {QuantBits::Int4, QuantBits::Int2}) {
      const std::string msg = message_of<std::invalid_argument>([&] { (void)QuantizedTable::quantize(w, bits); });
      CHECK(contains(msg, "row 3"));
      CHECK(contains(msg, "bias"));
      CHECK(contains(msg, "float16"));
    }
    CHECK(QuantizedTable::quantize(w, QuantBits::Int8).bias(3) == -70000.0f);
    w.row(3) << 0, 0, 0, 1e6f, 0, 0;  // scale 1e6 / 15 > 65504
    const std::string msg = message_of<std::invalid_argument>([&] { (void)QuantizedTable::quantize(w, QuantBits::Int4); });
    CHECK(contains(msg, "row 3"));
    CHECK(contains(msg, "scale"));
    // Int2's scale 1e6 / 3 overflows too; 65504 * 15 does not for Int4.
    CHECK_THROWS_AS((void)QuantizedTable::quantize(w, QuantBits::Int2), std::invalid_argument);
    w.row(3) << 0, 0, 0, 65504.0f * 15, 0, 0;
    CHECK(QuantizedTable::quantize(w, QuantBits::Int4).scale(3) == 65504.0f);
  }
  SUBCASE("bits that are not a QuantBits") {
    const std::string msg = message_of<std::invalid_argument>([&] { (void)QuantizedTable::quantize(w, static_cast<QuantBits>(3)); });
    CHECK(contains(msg, "bits = 3"));
  }
}

TEST_CASE("QuantizedTable: from_packed refuses a buffer of the wrong size, naming both sizes") {
  std::vector<std::uint8_t> bytes(10 * 36 + 1);
  const std::string msg = message_of<std::invalid_argument>(
      [&] { (void)QuantizedTable::from_packed(bytes, 10, 64, QuantBits::Int4); });
  CHECK(contains(msg, "emb::QuantizedTable::from_packed"));
  CHECK(contains(msg, "361 bytes"));
  CHECK(contains(msg, "10 x 36 = 360"));
  CHECK_THROWS_AS((void)QuantizedTable::from_packed(std::vector<std::uint8_t>(72), 1, 64, QuantBits::Int4),
                  std::invalid_argument);
  CHECK(contains(message_of<std::invalid_argument>([] {
          (void)QuantizedTable::from_packed({}, -1, 4, QuantBits::Int8);
        }),
        "num_embeddings = -1"));
  CHECK(contains(message_of<std::invalid_argument>([] {
          (void)QuantizedTable::from_packed({}, 0, -2, QuantBits::Int8);
        }),
        "embedding_dim = -2"));
  CHECK(contains(message_of<std::invalid_argument>([] {
          (void)QuantizedTable::from_packed({}, std::numeric_limits<Index>::max(), 64, QuantBits::Int8);
        }),
        "do not fit"));
  CHECK(QuantizedTable::from_packed(std::vector<std::uint8_t>(72 * 3), 3, 64, QuantBits::Int8).num_embeddings() == 3);
  CHECK(contains(message_of<std::out_of_range>([] { (void)QuantizedTable().scale(0); }), "row 0"));
}

TEST_CASE("QuantizedEmbeddingBag: bad calls throw, naming the value, and write nothing") {
  const Matrix<float> w = random_matrix(10, 8, 17);
  const QuantizedTable t = QuantizedTable::quantize(w, QuantBits::Int8);
  const std::vector<std::uint8_t> before(t.data(), t.data() + t.size_bytes());
  const QuantizedEmbeddingBag<float> bag(t);
  const QuantizedEmbeddingBag<float> mean(t, QuantizedBagOptions().mode(BagMode::Mean));
  const std::vector<Index> ids = {1, 2, 3, 4};
  Matrix<float> out = Matrix<float>::Constant(2, 8, 9.0f);
  const auto unchanged = [&] {
    CHECK(std::equal(before.begin(), before.end(), bag.table().data()));
    CHECK(out.isConstant(9.0f));
  };
  SUBCASE("an id out of range") {
    const std::string msg = message_of<std::out_of_range>([&] { bag.forward({1, 10, 3, 4}, {0, 2}, out); });
    CHECK(contains(msg, "index 10 at position 1"));
    CHECK(contains(msg, "[0, 10)"));
    CHECK_THROWS_AS(bag.forward({1, -1}, {0}), std::out_of_range);
  }
  SUBCASE("every offsets error") {
    CHECK(contains(message_of<std::invalid_argument>([&] { bag.forward(ids, {1, 2}, out); }), "offset 1 at position 0"));
    CHECK(contains(message_of<std::invalid_argument>([&] { bag.forward(ids, {0, 3, 2}); }), "offset 2 at position 2"));
    CHECK(contains(message_of<std::invalid_argument>([&] { bag.forward(ids, {0, 5}); }), "offset 5 at position 1 is past the end"));
    CHECK(contains(message_of<std::invalid_argument>([&] { bag.forward(ids, std::vector<Index>{}); }), "offsets is empty"));
    const QuantizedEmbeddingBag<float> last(t, QuantizedBagOptions().include_last_offset(true));
    CHECK(contains(message_of<std::invalid_argument>([&] { last.forward(ids, {0, 2, 3}, out); }),
                   "last offset must equal the number of indices, 4"));
    CHECK(contains(message_of<std::invalid_argument>([&] { last.forward(ids, std::vector<Index>{}); }), "offsets is empty"));
  }
  SUBCASE("per_sample_weights of the wrong size or outside Sum") {
    const Vector<float> three = Vector<float>::Ones(3);
    CHECK(contains(message_of<std::invalid_argument>([&] { bag.forward(ids, {0, 2}, out, three); }),
                   "per_sample_weights has 3 values, expected one per index (4)"));
    const Vector<float> four = Vector<float>::Ones(4);
    CHECK(contains(message_of<std::invalid_argument>([&] { mean.forward(ids, {0, 2}, four); }), "sum mode"));
  }
  SUBCASE("a mapping: ids against its length, entries against [-1, N)") {
    const std::vector<Index> mapping = {0, 1, -1, 9, 10, -2};
    CHECK(contains(message_of<std::out_of_range>([&] { bag.forward({0, 6}, {0}, out, nullptr, mapping); }),
                   "index 6 at position 1 is out of range; valid indices are [0, 6)"));
    const std::string msg = message_of<std::invalid_argument>([&] { bag.forward({0, 3, 4}, {0}, mapping); });
    CHECK(contains(msg, "compressed_indices_mapping[4] = 10"));
    CHECK(contains(msg, "[0, 10)"));
    CHECK(contains(message_of<std::invalid_argument>([&] { bag.forward({5}, {0}, mapping); }),
                   "compressed_indices_mapping[5] = -2"));
    CHECK(bag.forward({0, 1, 2, 3}, {0, 2}, mapping).rows() == 2);  // the valid entries are fine
  }
  SUBCASE("an output buffer of the wrong shape") {
    Matrix<float> small(1, 8);
    CHECK(contains(message_of<std::invalid_argument>([&] { bag.forward(ids, {0, 2}, small); }),
                   "out has shape (1, 8), expected (2, 8)"));
  }
  SUBCASE("options") {
    CHECK(contains(message_of<std::invalid_argument>([&] { (void)QuantizedEmbeddingBag<float>(t, QuantizedBagOptions().padding_idx(-11)); }),
                   "padding_idx = -11"));
    CHECK(contains(message_of<std::invalid_argument>([&] { (void)QuantizedEmbedding<float>(t, 10); }), "padding_idx = 10"));
    CHECK(contains(message_of<std::invalid_argument>([&] { (void)QuantizedEmbedding<float>(t, -11); }), "padding_idx = -11"));
    CHECK(contains(message_of<std::invalid_argument>(
                       [&] { (void)QuantizedEmbeddingBag<float>(t, QuantizedBagOptions().mode(static_cast<BagMode>(7))); }),
                   "mode = 7"));
  }
  unchanged();
}

TEST_CASE("QuantizedEmbedding: bad lookups throw and write nothing") {
  const QuantizedTable t = QuantizedTable::quantize(random_matrix(5, 4, 18), QuantBits::Int2);
  const QuantizedEmbedding<float> table(t);
  Matrix<float> out = Matrix<float>::Constant(2, 4, 3.0f);
  CHECK(contains(message_of<std::out_of_range>([&] { table.forward({0, 5}, out); }), "index 5 at position 1"));
  CHECK(contains(message_of<std::invalid_argument>([&] { table.forward({0, 1, 2}, out); }), "out has shape (2, 4), expected (3, 4)"));
  CHECK(out.isConstant(3.0f));
}

TEST_CASE("QuantizedTable: a table on 2 MiB pages reads the same") {
  const Matrix<float> w = random_matrix(70000, 64, 19);
  QuantizedTable t = QuantizedTable::quantize(w, QuantBits::Int8);  // 5 MiB
  const QuantizedTable before = t;
  const bool moved = t.use_huge_pages();
  CHECK(t.uses_huge_pages() == moved);
  if (moved) CHECK(t.data() != before.data());
  CHECK(std::equal(before.data(), before.data() + before.size_bytes(), t.data()));
  const std::vector<Index> ids = random_ids(1000, 70000, 20);
  CHECK(same_bits(QuantizedEmbedding<float>(t).forward(ids), QuantizedEmbedding<float>(before).forward(ids)));
}

TEST_CASE("io::load_packed / save_packed: a table's bytes as NumPy's tofile writes them") {
  const emb_test::TempDir dir;
  const ReferenceCase& c = reference().at("packed/normal_d20/int2");
  const std::vector<std::uint8_t> torch_bytes = c.u8("packed");
  // What packed.numpy().tofile(path) writes: the bytes, row after row.
  const std::string path = dir.write("table.q2", std::string(torch_bytes.begin(), torch_bytes.end()));
  const QuantizedTable t = emb::io::load_packed(path, 20, QuantBits::Int2);
  CHECK(t.num_embeddings() == 6);
  CHECK(t.embedding_dim() == 20);
  CHECK(std::equal(torch_bytes.begin(), torch_bytes.end(), t.data()));
  emb::io::save_packed(dir.file("copy.q2"), t);
  CHECK(emb_test::read_bytes(dir.file("copy.q2")) == std::string(torch_bytes.begin(), torch_bytes.end()));
  CHECK(emb::io::load_packed(dir.file("copy.q2"), 20, QuantBits::Int2).size_bytes() == t.size_bytes());
  // A size that is not a whole number of rows, and no file at all.
  const std::string bad = dir.write("bad.q2", std::string(torch_bytes.begin(), torch_bytes.end() - 1));
  const std::string msg = message_of<emb::io::FileError>([&] { (void)emb::io::load_packed(bad, 20, QuantBits::Int2); });
  CHECK(contains(msg, "emb::io::load_packed"));
  CHECK(contains(msg, "bad.q2"));
  CHECK(contains(msg, "53 bytes are not a whole number of Int2 rows of dim 20 (9 bytes each)"));
  CHECK_THROWS_AS((void)emb::io::load_packed(dir.file("missing"), 20, QuantBits::Int2), emb::io::FileError);
  CHECK(emb::io::load_packed(dir.write("empty", ""), 8, QuantBits::Int8).num_embeddings() == 0);
}
