// A program outside emb's tree: it only links emb::emb and includes <emb/emb.hpp>.
#include <emb/emb.hpp>

#include <iostream>

int main() {
  emb::Embedding<float> table(emb::EmbeddingOptions(3, 4).padding_idx(1));
  const emb::Matrix<float> rows = table.forward({0, 1, 2});
  if (rows.rows() != 3 || rows.cols() != 4 || !rows.row(1).isZero()) {
    std::cerr << "unexpected lookup result\n";
    return 1;
  }
  std::cout << "consumer ok\n";
  return 0;
}
