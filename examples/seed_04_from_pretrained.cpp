// Seed 004: a table built from a given matrix (the 3x5 torch.rand the seed printed). It keeps the
// values exactly, is frozen by default (optimizers leave it alone), and looks up its own rows.
#include <emb/embedding.hpp>

#include <iostream>

int main() {
  emb::Matrix<float> given(3, 5);
  given << 0.6004f, 0.6201f, 0.1652f, 0.2628f, 0.6705f,
           0.5896f, 0.2873f, 0.3486f, 0.9579f, 0.4075f,
           0.7819f, 0.7165f, 0.1768f, 0.0748f, 0.9799f;

  auto emb2 = emb::Embedding<float>::from_pretrained(given);
  const Eigen::IOFormat fmt(4, 0, ", ", "\n", "[", "]");
  std::cout << std::fixed;
  std::cout << "weight:\n" << emb2.weight().format(fmt) << '\n';
  std::cout << "frozen: " << (emb2.frozen() ? "yes" : "no") << '\n';
  std::cout << "weight is the given matrix: " << (emb2.weight() == given ? "yes" : "no") << '\n';

  const emb::Matrix<float> first = emb2.forward({0});
  std::cout << "emb2(0) = " << first.format(fmt) << '\n';

  // Trainable variant, the seed's requires_grad=True.
  auto trainable = emb::Embedding<float>::from_pretrained(
      given, emb::FromPretrainedOptions().freeze(false));
  std::cout << "with freeze(false), frozen: " << (trainable.frozen() ? "yes" : "no") << '\n';
}
