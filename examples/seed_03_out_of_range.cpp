// Seed 004: the three-token vocabulary {优, 良, 差} gets a (3, 5) table; each token's id selects
// its row, and id 3 — one past the end — is an error, not a wrap-around or a garbage row.
#include <emb/embedding.hpp>
#include <emb/vocabulary.hpp>

#include <iomanip>
#include <iostream>
#include <stdexcept>

int main() {
  const emb::Vocabulary vocab{"优", "良", "差"};
  emb::Embedding<float> table(vocab.size(), 5);
  std::cout << "Embedding(" << table.num_embeddings() << ", " << table.embedding_dim() << ")\n";

  std::cout << std::fixed << std::setprecision(4);
  for (const auto& token : vocab.tokens()) {
    const emb::Index id = vocab.id(token);
    const emb::Matrix<float> row = table.forward({id});
    std::cout << token << " -> id " << id << " -> [";
    for (emb::Index d = 0; d < row.cols(); ++d) {
      std::cout << (d ? ", " : "") << std::setw(7) << row(0, d);
    }
    const bool same = row.row(0) == table.weight().row(id);
    std::cout << "]  weight row " << id << ": " << (same ? "yes" : "no") << '\n';
  }

  try {
    table.forward({3});
    std::cout << "id 3: no error\n";
  } catch (const std::out_of_range& e) {
    std::cout << "id 3: std::out_of_range: " << e.what() << '\n';
  }
}
