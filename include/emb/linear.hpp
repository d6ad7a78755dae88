// emb/linear.hpp — Linear<T>: y = x W^T + b, torch.nn.Linear's layout and initialisation, and
// as_linear(), which turns an Embedding into the bias-free Linear it is equivalent to.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <type_traits>
#include <utility>

#include <Eigen/Core>

#include "detail/error.hpp"
#include "detail/rng.hpp"
#include "embedding.hpp"
#include "index_span.hpp"

namespace emb {

// Gradients of a Linear, given the gradient of its output: with respect to its input (n, in),
// its weight (out, in) and its bias (out; empty when the layer has none).
template <class T>
struct LinearGrad {
  Matrix<T> input;
  Matrix<T> weight;
  Vector<T> bias;
};

template <class T = float>
class Linear;

template <class T>
Linear<T> as_linear(const Embedding<T>& embedding);

// A fully connected layer with PyTorch's conventions: weight is (out_features, in_features),
// forward maps (n, in_features) to (n, out_features) as x W^T + b. Weight and bias start as
// U(-1/sqrt(in_features), 1/sqrt(in_features)), the range torch.nn.Linear's default init
// produces, drawn from `seed` (weight row by row, then bias) with the same values everywhere.
template <class T>
class Linear {
  static_assert(std::is_floating_point_v<T>, "emb::Linear<T> needs a floating-point T");

 public:
  using Scalar = T;

  Linear(Index in_features, Index out_features, bool bias = true, std::uint64_t seed = 0)
      : has_bias_(bias) {
    static constexpr const char* where = "emb::Linear";
    detail::check_size_option(where, "in_features", in_features);
    detail::check_size_option(where, "out_features", out_features);
    weight_.resize(out_features, in_features);
    if (bias) bias_.resize(out_features);
    // PyTorch uses a zero bound when there are no inputs instead of dividing by zero.
    const double bound =
        in_features > 0 ? 1.0 / std::sqrt(static_cast<double>(in_features)) : 0.0;
    detail::Rng rng(seed);
    rng.fill_uniform(weight_.data(), static_cast<std::size_t>(weight_.size()), -bound, bound);
    rng.fill_uniform(bias_.data(), static_cast<std::size_t>(bias_.size()), -bound, bound);
  }

  // A layer with these parameters as they are, moved in (no initial weight is drawn): weight
  // (out_features, in_features), without a bias, or with a bias of out_features values (or
  // std::invalid_argument naming both shapes).
  static Linear from_pretrained(Matrix<T> weight) {
    return Linear(std::move(weight), Vector<T>(), false);
  }
  static Linear from_pretrained(Matrix<T> weight, Vector<T> bias) {
    if (bias.size() != weight.rows()) {
      throw std::invalid_argument(detail::concat(
          "emb::Linear::from_pretrained: bias has shape (", bias.size(), "), expected (",
          weight.rows(), ") for a weight of shape (", weight.rows(), ", ", weight.cols(), ")"));
    }
    return Linear(std::move(weight), std::move(bias), true);
  }

  Index in_features() const { return weight_.cols(); }
  Index out_features() const { return weight_.rows(); }
  bool has_bias() const { return has_bias_; }

  const Matrix<T>& weight() const { return weight_; }
  // (out_features) with a bias, empty without.
  const Vector<T>& bias() const { return bias_; }

  // Writable views for optimizers and hand-made updates; they cannot change the shapes.
  Eigen::Map<Matrix<T>> mutable_weight() {
    return Eigen::Map<Matrix<T>>(weight_.data(), weight_.rows(), weight_.cols());
  }
  Eigen::Map<Vector<T>> mutable_bias() { return Eigen::Map<Vector<T>>(bias_.data(), bias_.size()); }

  // Same (out_features, in_features) shape or std::invalid_argument.
  void set_weight(Matrix<T> weight) {
    detail::check_shape("emb::Linear::set_weight", "weight", out_features(), in_features(),
                        weight.rows(), weight.cols());
    weight_ = std::move(weight);
  }

  // (out_features) for a layer with a bias. A layer built without one keeps none: only an empty
  // vector is accepted, so a bias cannot be switched on behind the caller's back.
  void set_bias(Vector<T> bias) {
    const Index expected = has_bias_ ? out_features() : 0;
    if (bias.size() != expected) {
      throw std::invalid_argument(detail::concat(
          "emb::Linear::set_bias: bias has shape (", bias.size(), "), expected (", expected, ")",
          has_bias_ ? "" : " because the layer was built with bias = false"));
    }
    bias_ = std::move(bias);
  }

  // (n, in_features) -> (n, out_features): x W^T + b.
  Matrix<T> forward(const Eigen::Ref<const Matrix<T>>& input) const {
    check_input("emb::Linear::forward", input);
    Matrix<T> out(input.rows(), out_features());
    out.noalias() = input * weight_.transpose();
    if (has_bias_) out.rowwise() += bias_.transpose();
    return out;
  }

  Matrix<T> operator()(const Eigen::Ref<const Matrix<T>>& input) const { return forward(input); }

  // Gradients for the `input` forward was called with, given g = d loss / d output
  // (n, out_features): input g W, weight g^T x, bias the column sums of g.
  LinearGrad<T> backward(const Eigen::Ref<const Matrix<T>>& input,
                         const Eigen::Ref<const Matrix<T>>& grad_output) const {
    static constexpr const char* where = "emb::Linear::backward";
    check_input(where, input);
    detail::check_shape(where, "grad_output", input.rows(), out_features(), grad_output.rows(),
                        grad_output.cols());
    LinearGrad<T> grad;
    grad.input.resize(input.rows(), in_features());
    grad.input.noalias() = grad_output * weight_;
    grad.weight.resize(out_features(), in_features());
    grad.weight.noalias() = grad_output.transpose() * input;
    if (has_bias_) grad.bias = grad_output.colwise().sum().transpose();
    return grad;
  }

 private:
  friend Linear<T> as_linear<T>(const Embedding<T>& embedding);

  // Takes the parameters as they are, without drawing an initial weight first.
  Linear(Matrix<T>&& weight, Vector<T>&& bias, bool has_bias)
      : weight_(std::move(weight)), bias_(std::move(bias)), has_bias_(has_bias) {}

  void check_input(const char* where, const Eigen::Ref<const Matrix<T>>& input) const {
    detail::check_shape(where, "input", input.rows(), in_features(), input.rows(), input.cols());
  }

  Matrix<T> weight_;
  Vector<T> bias_;
  bool has_bias_ = true;
};

// The Linear(num_embeddings, embedding_dim, bias = false) whose weight is the table transposed:
// on one-hot rows it computes exactly what embedding.forward computes by lookup, and its weight
// gradient is embedding.backward_dense's transposed (without padding_idx or scale_grad_by_freq,
// which a Linear does not know). The weights are copied; the two layers are independent after.
template <class T>
Linear<T> as_linear(const Embedding<T>& embedding) {
  Matrix<T> weight = embedding.weight().transpose();
  return Linear<T>(std::move(weight), Vector<T>(), false);
}

}  // namespace emb
