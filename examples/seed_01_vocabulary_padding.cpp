// Seed 000: a vocabulary {hello: 0, <PAD>: 1, world: 2}, a 4-dimensional table whose <PAD>
// row is zero, and the sentence "hello world <PAD> <PAD>" turned into four vectors.
#include <emb/embedding.hpp>
#include <emb/vocabulary.hpp>

#include <iostream>

int main() {
  const emb::Vocabulary vocab{"hello", "<PAD>", "world"};
  emb::Embedding<float> embeds(
      emb::EmbeddingOptions(vocab.size(), 4).padding_idx(vocab.id("<PAD>")));

  const auto ids = vocab.encode_text("hello world <PAD> <PAD>");
  const emb::Matrix<float> vectors = embeds(ids);

  std::cout << "ids:";
  for (auto id : ids) std::cout << ' ' << id;
  std::cout << "\nshape: (" << vectors.rows() << ", " << vectors.cols() << ")\n";
  std::cout << std::fixed << vectors.format(Eigen::IOFormat(4, 0, ", ", "\n", "[", "]")) << '\n';

  // padding_idx rows start at zero (and never receive a gradient), so padded positions add
  // nothing to whatever is computed from them.
  for (emb::Index i = 0; i < vectors.rows(); ++i) {
    std::cout << "row " << i << " (" << vocab.token(ids[static_cast<std::size_t>(i)])
              << "): " << (vectors.row(i).isZero(0) ? "zero" : "not zero") << '\n';
  }
}
