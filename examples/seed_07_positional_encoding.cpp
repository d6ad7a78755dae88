// Seed 002: a Transformer's input is the token embedding scaled by sqrt(dim) plus a sinusoidal
// positional encoding, X = E(x) * sqrt(dim) + PE. The encoding values lie in [-1, 1], so the
// embedding is scaled up first to keep the token's own signal from being drowned by position.
//
// The encoding table is itself a frozen embedding: row pos is looked up by position.
#include <emb/embedding.hpp>

#include <cmath>
#include <iomanip>
#include <iostream>
#include <vector>

namespace {

// PE[pos, 2i] = sin(pos / 10000^(2i/dim)), PE[pos, 2i+1] = cos(pos / 10000^(2i/dim)).
emb::Matrix<float> sinusoidal_table(emb::Index max_len, emb::Index dim) {
  emb::Matrix<float> pe(max_len, dim);
  for (emb::Index pos = 0; pos < max_len; ++pos) {
    for (emb::Index i = 0; i < dim; i += 2) {
      const double angle = static_cast<double>(pos) /
                           std::pow(10000.0, static_cast<double>(i) / static_cast<double>(dim));
      pe(pos, i) = static_cast<float>(std::sin(angle));
      if (i + 1 < dim) pe(pos, i + 1) = static_cast<float>(std::cos(angle));
    }
  }
  return pe;
}

void print_rows(const char* name, const emb::Matrix<float>& m) {
  for (emb::Index r = 0; r < m.rows(); ++r) {
    std::cout << "  " << name << '[' << r << "] = [";
    for (emb::Index j = 0; j < m.cols(); ++j) {
      std::cout << (j ? ", " : "") << std::setw(7) << m(r, j);
    }
    std::cout << "]\n";
  }
}

}  // namespace

int main() {
  const emb::Index vocab_size = 10;
  const emb::Index dim = 4;
  const emb::Index max_len = 50;
  emb::Embedding<float> tokens(vocab_size, dim);
  auto positions = emb::Embedding<float>::from_pretrained(sinusoidal_table(max_len, dim));

  const std::vector<emb::Index> ids = {3, 1, 4};    // one sentence of three tokens
  const std::vector<emb::Index> where = {0, 1, 2};  // their positions
  const float scale = std::sqrt(static_cast<float>(dim));
  const emb::Matrix<float> e = tokens(ids);
  const emb::Matrix<float> pe = positions(where);
  const emb::Matrix<float> x = e * scale + pe;

  std::cout << std::fixed << std::setprecision(4);
  std::cout << "PE (" << pe.rows() << ", " << pe.cols() << "), sqrt(dim) = " << scale << '\n';
  print_rows("PE", pe);
  print_rows("E(x)", e);
  print_rows("X", x);
  std::cout << "X shape: (" << x.rows() << ", " << x.cols() << ")\n";

  const emb::Matrix<float> all = sinusoidal_table(max_len, dim);
  std::cout << "every PE value in [-1, 1]: " << (all.cwiseAbs().maxCoeff() <= 1.0f ? "yes" : "no")
            << '\n';
  std::cout << "positional table frozen: " << (positions.frozen() ? "yes" : "no") << '\n';
}
