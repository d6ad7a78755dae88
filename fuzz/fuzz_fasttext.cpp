// Fuzzes the fastText model reader through the entry FastText::load itself uses (a ByteSource):
// any input must load or throw emb::io::FileError, with the same outcome for a 1 MiB and a
// 3-byte read buffer; a model that loads must then answer every query without fault, whatever
// its args say (n-gram bounds, buckets, word n-grams, a Huffman tree from arbitrary counts).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <emb/fasttext.hpp>
#include <optional>
#include <stdexcept>
#include <string>

namespace {

std::optional<emb::FastText> load(const std::uint8_t* data, std::size_t size, std::size_t chunk,
                                  std::string& error) {
  try {
    emb::io::detail::MemorySource source(data, size, "fuzz.bin");
    return emb::io::detail::read_fasttext_model(source, emb::FastTextLoadOptions(), chunk);
  } catch (const emb::io::FileError& e) {
    error = e.what();
    return std::nullopt;
  }
}

bool same(const emb::Matrix<float>& a, const emb::Matrix<float>& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() &&
         (a.size() == 0 ||
          std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.size()) * sizeof(float)) == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string big_error, small_error;
  const auto big = load(data, size, std::size_t{1} << 20, big_error);
  const auto small = load(data, size, 3, small_error);
  if (big.has_value() != small.has_value()) std::abort();
  if (!big) {
    if (big_error != small_error) std::abort();
    return 0;
  }
  const emb::FastText& ft = *big;
  if (!same(ft.input().weight(), small->input().weight()) ||
      !same(ft.output().weight(), small->output().weight()) ||
      ft.words().tokens() != small->words().tokens()) {
    std::abort();
  }

  static const char* const words[] = {"", "a", "</s>", "__label__x", "\xe6\x97\xa5\xe6\x9c\xac",
                                      "\xff\xfe\x80", "abcdefghijklmnopqrstuvwxyz0123456789"};
  for (const char* w : words) {
    const auto ids = ft.subword_ids(w);
    for (const emb::Index id : ids) {
      if (id < 0 || id >= ft.input().num_embeddings()) std::abort();
    }
    if (ft.word_vector(w).size() != ft.dim()) std::abort();
    if (ft.subwords(w).size() != ids.size()) std::abort();
  }
  if (ft.sentence_vector("a b\tc \xe6\x97\xa5 </s> __label__x").size() != ft.dim()) std::abort();
  try {
    (void)ft.nearest_neighbors("a", 3);
  } catch (const std::runtime_error&) {  // NaN weights
  }
  if (ft.model() == emb::FastTextModel::supervised) {
    try {
      (void)ft.predict("a b c", -1);
      (void)ft.predict_lines("x\ny z\n\n__label__x w", 2, 0.1f);
      for (const auto& [label, p] : ft.predict("a", 1)) {
        if (label.empty() && ft.nlabels() == 0) std::abort();
        (void)p;
      }
    } catch (const std::runtime_error&) {  // NaN weights: reported, never ranked
    }
  }
  return 0;
}
