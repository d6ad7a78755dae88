// Seed 000's GraphEmbedding (from a pointer network for the travelling-salesman problem): the
// inputs are continuous — each city a 2-D point — not ids, laid out (batch, input_size, seq).
// Every position is multiplied by one (input_size, dim) matrix M with entries U(±1/sqrt(dim)):
// "in essence a matrix product". It is a bias-free Linear(input_size, dim) with W = M^T, applied
// at each position; with one-hot inputs that Linear would be an embedding lookup.
#include <emb/linear.hpp>

#include <cmath>
#include <iomanip>
#include <iostream>
#include <random>
#include <string>
#include <vector>

namespace {

// The seed's module, written out: embedded[b][i] = inputs[b][:, i]^T M, position by position.
struct GraphEmbedding {
  emb::Matrix<float> m;  // (input_size, dim)

  GraphEmbedding(emb::Index input_size, emb::Index dim) : m(input_size, dim) {
    std::mt19937 gen;  // default seed; the output sequence is fixed by the C++ standard
    const double bound = 1.0 / std::sqrt(static_cast<double>(dim));
    for (emb::Index i = 0; i < m.size(); ++i) {
      const double u = static_cast<double>(gen()) / 4294967296.0;  // [0, 1)
      m.data()[i] = static_cast<float>(-bound + 2.0 * bound * u);
    }
  }

  // inputs: batch matrices of (input_size, seq). Result: (batch*seq, dim), row b*seq + i.
  emb::Matrix<float> forward(const std::vector<emb::Matrix<float>>& inputs) const {
    const auto batch = static_cast<emb::Index>(inputs.size());
    const emb::Index seq = inputs.front().cols();
    emb::Matrix<float> out(batch * seq, m.cols());
    for (emb::Index b = 0; b < batch; ++b) {
      for (emb::Index i = 0; i < seq; ++i) {
        out.row(b * seq + i) = inputs[static_cast<std::size_t>(b)].col(i).transpose() * m;
      }
    }
    return out;
  }
};

void print_row(const std::string& label, const Eigen::Ref<const emb::Matrix<float>>& row) {
  std::cout << "  " << label << " = [";
  for (emb::Index j = 0; j < row.cols(); ++j) {
    std::cout << (j ? ", " : "") << std::setw(7) << row(0, j);
  }
  std::cout << "]\n";
}

}  // namespace

int main() {
  const emb::Index input_size = 2;  // (x, y) of a city
  const emb::Index dim = 4;
  const emb::Index seq = 3;         // cities per tour

  // Two tours of three cities: (batch, input_size, seq) = (2, 2, 3).
  std::vector<emb::Matrix<float>> inputs(2, emb::Matrix<float>(input_size, seq));
  inputs[0] << 0.10f, 0.50f, 0.90f,   // x of cities 0, 1, 2
               0.20f, 0.80f, 0.40f;   // y
  inputs[1] << 0.70f, 0.30f, 0.00f,
               0.60f, 0.10f, 1.00f;

  const GraphEmbedding graph(input_size, dim);
  const emb::Matrix<float> embedded = graph.forward(inputs);

  // The same with emb: one row per (tour, city), times a bias-free Linear whose W is M^T.
  emb::Linear<float> linear(input_size, dim, /*bias=*/false);
  linear.set_weight(graph.m.transpose());
  emb::Matrix<float> points(2 * seq, input_size);
  for (emb::Index b = 0; b < 2; ++b) {
    points.middleRows(b * seq, seq) = inputs[static_cast<std::size_t>(b)].transpose();
  }
  const emb::Matrix<float> via_linear = linear(points);

  std::cout << std::fixed << std::setprecision(4);
  const float bound = 1.0f / std::sqrt(static_cast<float>(dim));
  const bool in_range = graph.m.cwiseAbs().maxCoeff() <= bound;
  std::cout << "M: (" << graph.m.rows() << ", " << graph.m.cols()
            << "), every |m| <= 1/sqrt(dim) = " << bound << ": " << (in_range ? "yes" : "no")
            << '\n';
  for (emb::Index r = 0; r < graph.m.rows(); ++r) {
    print_row("M[" + std::to_string(r) + "]", graph.m.row(r));
  }
  std::cout << "input (batch, input_size, seq): (2, " << input_size << ", " << seq << ")\n";
  std::cout << "embedded (batch, seq, dim): (2, " << seq << ", " << embedded.cols() << ")\n";
  for (emb::Index r = 0; r < embedded.rows(); ++r) {
    print_row("tour " + std::to_string(r / seq) + " city " + std::to_string(r % seq),
              embedded.row(r));
  }
  // City (0, 1) selects the second row of M: a one-hot input turns the product into a lookup.
  std::cout << "tour 1 city 2 is the point (0, 1), and its vector is row 1 of M: "
            << (embedded.row(1 * seq + 2) == graph.m.row(1) ? "yes" : "no") << '\n';
  std::cout << "Linear(" << linear.in_features() << ", " << linear.out_features()
            << ", bias=false) with W = M^T, per position, gives the same (to 1e-6): "
            << ((embedded - via_linear).cwiseAbs().maxCoeff() <= 1e-6f ? "yes" : "no") << '\n';
}
