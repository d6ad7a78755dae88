// Embedding<float, S> and EmbeddingBag<float, S> for S = half and bfloat16, against what
// PyTorch printed (tests/data/quant/storage.txt, written by make_reference.py with Debian's
// torch 1.13): a float table converted with .half() / .bfloat16() (ties, overflow to infinity,
// subnormals and signed zeros among its values), F.embedding on the converted table and
// F.embedding_bag sum / mean / max on its values in float.
//
// emb's rounding of float to S must give torch's bits; lookups then equal torch's exactly
// (S -> float is exact) and bags equal torch's float bags to float rounding.

#include <emb/detail/rounding.hpp>
#include <emb/embedding.hpp>
#include <emb/embedding_bag.hpp>

#include <doctest/doctest.h>

#include "reference_file.hpp"
#include "test_util.hpp"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

using emb::BagMode;
using emb::bfloat16;
using emb::Embedding;
using emb::EmbeddingBag;
using emb::FromPretrainedBagOptions;
using emb::half;
using emb::Index;
using emb::Matrix;

namespace {

const emb_test::ReferenceFile& reference() {
  static const emb_test::ReferenceFile file(std::string(EMB_TEST_DATA_DIR) + "/quant/storage.txt");
  return file;
}

template <class S>
const char* name_of() {
  return std::is_same_v<S, half> ? "half" : "bfloat16";
}

// Equal, infinities included, or within float rounding of the bag's magnitude.
bool close(float a, float b, float magnitude) {
  if (std::isinf(a) || std::isinf(b)) return a == b;
  return std::abs(a - b) <= 1e-6f * magnitude + 1e-30f;
}

}  // namespace

TEST_CASE_TEMPLATE("Storage against PyTorch: float rounds to torch's bits, lookups and bags match", S,
                   half, bfloat16) {
  const auto& c = reference().at(std::string("storage/") + name_of<S>());
  const Index rows = c.integer("rows"), dim = c.integer("dim");
  const Matrix<float> w = c.f32_matrix("weight", rows, dim);
  const std::vector<std::uint16_t> torch_bits = c.u16("converted");

  // The conversion: emb's rounding to nearest even, bit for bit torch's.
  Matrix<S> converted(rows, dim);
  for (Index i = 0; i < w.size(); ++i) {
    converted.data()[i] = emb::detail::round_nearest<S>(w.data()[i]);
    INFO("value " << w.data()[i] << " at " << i);
    REQUIRE(emb::detail::bits16(converted.data()[i]) == torch_bits[static_cast<std::size_t>(i)]);
    // Eigen's own conversion, which a user writing w.cast<S>() gets, agrees.
    CHECK(emb::detail::bits16(static_cast<S>(w.data()[i])) == torch_bits[static_cast<std::size_t>(i)]);
  }

  const auto ids = c.i64("indices");
  const auto offsets = c.i64("offsets");
  const Embedding<float, S> table = Embedding<float, S>::from_pretrained(converted);
  CHECK(emb_test::bit_identical(table.forward(ids),
                                c.f32_matrix("lookup", static_cast<Index>(ids.size()), dim)));

  const Matrix<float> values = converted.template cast<float>();
  for (BagMode mode : {BagMode::Sum, BagMode::Mean, BagMode::Max}) {
    INFO(emb::to_string(mode));
    const auto bag = EmbeddingBag<float, S>::from_pretrained(converted, FromPretrainedBagOptions().mode(mode));
    const Matrix<float> got = bag.forward(ids, offsets);
    const Matrix<float> want =
        c.f32_matrix(std::string("bag_") + emb::to_string(mode), static_cast<Index>(offsets.size()), dim);
    REQUIRE(got.rows() == want.rows());
    for (std::size_t b = 0; b < offsets.size(); ++b) {
      const auto begin = static_cast<std::size_t>(offsets[b]);
      const std::size_t end = b + 1 < offsets.size() ? static_cast<std::size_t>(offsets[b + 1]) : ids.size();
      for (Index j = 0; j < dim; ++j) {
        float magnitude = 0;
        for (std::size_t i = begin; i < end; ++i) magnitude += std::abs(values(ids[i], j));
        const auto bi = static_cast<Index>(b);
        INFO("bag " << b << " column " << j << ": " << got(bi, j) << " vs " << want(bi, j));
        if (mode == BagMode::Max) {
          CHECK(got(bi, j) == want(bi, j));
        } else {
          CHECK(close(got(bi, j), want(bi, j), magnitude));
        }
      }
    }
  }
}
