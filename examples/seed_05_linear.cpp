// Seed 004: Linear(3, 5) maps a 3-vector to a 5-vector as y = x W^T + b, with W of shape
// (out, in) = (5, 3) as in PyTorch. The weights are the ones the seed printed, set by hand, and
// the layer's output is printed beside the product written out term by term. (The y the seed
// printed came from the layer's random initial weights, before it printed W and b, so it is not
// the product of these; x W^T + b is what has to match.)
#include <emb/linear.hpp>

#include <cmath>
#include <iomanip>
#include <iostream>

namespace {

void print_row(const char* label, const emb::Matrix<float>& m) {
  std::cout << label << " [";
  for (emb::Index j = 0; j < m.cols(); ++j) {
    std::cout << (j ? ", " : "") << std::setw(7) << m(0, j);
  }
  std::cout << "]\n";
}

}  // namespace

int main() {
  std::cout << std::fixed << std::setprecision(4);

  emb::Linear<float> lin(3, 5);  // in_features 3, out_features 5, with bias, seed 0
  const float bound = 1.0f / std::sqrt(3.0f);
  const bool in_range = lin.weight().cwiseAbs().maxCoeff() <= bound &&
                        lin.bias().cwiseAbs().maxCoeff() <= bound;
  std::cout << "Linear(3, 5): weight (" << lin.weight().rows() << ", " << lin.weight().cols()
            << "), bias (" << lin.bias().size() << ")\n";
  std::cout << "initial |w|, |b| <= 1/sqrt(3) = " << bound << ": " << (in_range ? "yes" : "no")
            << '\n';

  emb::Matrix<float> w(5, 3);
  w <<  0.0301f,  0.3957f,  0.1196f,
        0.1857f,  0.4313f,  0.5475f,
       -0.3831f,  0.0722f,  0.4309f,
        0.4183f,  0.3587f, -0.4178f,
       -0.4158f, -0.3492f,  0.0725f;
  emb::Vector<float> b(5);
  b << 0.3505f, 0.5120f, -0.3236f, -0.0950f, -0.0112f;
  lin.set_weight(w);
  lin.set_bias(b);

  emb::Matrix<float> x(1, 3);  // one sample; a batch is more rows
  x << 0.3937f, 0.7881f, 0.9642f;
  const emb::Matrix<float> y = lin(x);

  emb::Matrix<float> manual(1, 5);
  for (emb::Index o = 0; o < 5; ++o) {
    manual(0, o) = x(0, 0) * w(o, 0) + x(0, 1) * w(o, 1) + x(0, 2) * w(o, 2) + b(o);
  }

  print_row("x           =", x);
  print_row("lin(x)      =", y);
  print_row("x W^T + b   =", manual);
  const float diff = (y - manual).cwiseAbs().maxCoeff();
  std::cout << "shape: (" << y.rows() << ", " << y.cols() << ")\n";
  std::cout << "lin(x) equals x W^T + b (to 1e-6): " << (diff <= 1e-6f ? "yes" : "no") << '\n';
}
