// Seeds 002 and 003: a (batch, seq) matrix of ids gives a (batch, seq, dim) tensor. emb returns
// it flattened to (batch*seq, dim), batch-major, so sentence b, word s is row b*seq + s.
#include <emb/embedding.hpp>

#include <iomanip>
#include <iostream>

namespace {

// Prints a (batch*seq, dim) lookup result as the (batch, seq, dim) tensor it stands for.
void print_batches(const emb::Matrix<emb::Index>& ids, const emb::Matrix<float>& y) {
  const emb::Index batch = ids.rows();
  const emb::Index seq = ids.cols();
  std::cout << "shape (batch, seq, dim): (" << batch << ", " << seq << ", " << y.cols() << ")\n";
  for (emb::Index b = 0; b < batch; ++b) {
    for (emb::Index s = 0; s < seq; ++s) {
      std::cout << "  y[" << b << "][" << s << "] = row " << ids(b, s) << ": [";
      for (emb::Index d = 0; d < y.cols(); ++d) {
        std::cout << (d ? ", " : "") << std::setw(7) << y(b * seq + s, d);
      }
      std::cout << "]\n";
    }
  }
}

}  // namespace

int main() {
  std::cout << std::fixed << std::setprecision(4);

  // Embedding(10, 3) looked up with a batch of two 2-word sentences.
  emb::Embedding<float> embedding(10, 3);
  emb::Matrix<emb::Index> x(2, 2);  // row-major (batch, seq): read sentence by sentence
  x << 1, 2,
       4, 3;
  const emb::Matrix<float> y = embedding(x);
  std::cout << "Embedding(10, 3), ids [[1, 2], [4, 3]]\n";
  print_batches(x, y);
  bool all_rows = true;
  for (emb::Index i = 0; i < x.size(); ++i) {
    all_rows = all_rows && y.row(i) == embedding.weight().row(x.data()[i]);
  }
  std::cout << "every y[b][s] is weight row ids[b][s]: " << (all_rows ? "yes" : "no") << "\n\n";

  // Seed 002: the (5, 3) weight it printed, and the ids whose output it printed.
  emb::Matrix<float> weight(5, 3);
  weight << 1.2475f,  0.2461f, -0.1228f,
            0.5988f, -2.0277f, -1.4456f,
            1.2011f,  0.2131f, -0.9624f,
            1.2717f,  1.7339f,  1.2558f,
           -0.3740f,  2.0479f,  0.6131f;
  emb::Embedding<float> printed_example(5, 3);
  printed_example.set_weight(weight);
  emb::Matrix<emb::Index> words(2, 4);
  words << 1, 2, 4, 3,
           4, 3, 2, 1;
  std::cout << "Embedding(5, 3) with the weight PyTorch printed, ids [[1, 2, 4, 3], [4, 3, 2, 1]]\n";
  print_batches(words, printed_example(words));
}
