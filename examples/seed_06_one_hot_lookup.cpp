// Seeds 001 and 004: an embedding is a bias-free Linear applied to one-hot rows. Multiplying the
// one-hot matrix by the table picks out rows — which is exactly what the lookup does directly,
// without the (n x N) matrix and its n*N*dim multiply-adds.
#include <emb/embedding.hpp>
#include <emb/linear.hpp>
#include <emb/one_hot.hpp>

#include <iostream>
#include <vector>

namespace {

const char* verdict(bool same) { return same ? "yes" : "no"; }

}  // namespace

int main() {
  emb::Embedding<float> table(5, 3);
  const std::vector<emb::Index> ids = {1, 2, 4, 3};
  const Eigen::IOFormat fmt(4, 0, ", ", "\n", "[", "]");
  std::cout << std::fixed;

  const emb::Index n_rows = table.num_embeddings();
  const emb::Matrix<float> lookup = table(ids);
  const emb::Matrix<float> x = emb::one_hot(ids, n_rows);  // (4, 5)
  std::cout << "one_hot({1, 2, 4, 3}, 5):\n" << x.cast<int>().format(fmt) << '\n';
  std::cout << "lookup table({1, 2, 4, 3}):\n" << lookup.format(fmt) << '\n';

  // 1. The product with the table: each row has a single 1, so each result is one table row.
  const emb::Matrix<float> product = x * table.weight();
  std::cout << "one_hot x W:\n" << product.format(fmt) << '\n';
  std::cout << "one_hot x W equals the lookup exactly: " << verdict(product == lookup) << '\n';

  // 2. The same with a sparse one-hot matrix (n stored ones instead of n*N entries).
  const emb::Matrix<float> sparse_product = emb::one_hot_sparse(ids, n_rows) * table.weight();
  std::cout << "sparse one_hot x W equals the lookup exactly: "
            << verdict(sparse_product == lookup) << '\n';

  // 3. As a layer: Linear(5, 3, bias=false) whose weight is the table transposed.
  const emb::Linear<float> linear = emb::as_linear(table);
  std::cout << "as_linear: Linear(" << linear.in_features() << ", " << linear.out_features()
            << ", bias=" << (linear.has_bias() ? "true" : "false") << "), weight ("
            << linear.weight().rows() << ", " << linear.weight().cols() << ") = W^T\n";
  std::cout << "Linear on one-hot equals the lookup exactly: " << verdict(linear(x) == lookup)
            << '\n';

  // 4. Training sees the same gradient: the Linear's weight gradient is the table's, transposed.
  const emb::Matrix<float> g = emb::Matrix<float>::Ones(4, 3);
  const emb::Matrix<float> grad_linear = linear.backward(x, g).weight.transpose();
  std::cout << "Linear weight gradient^T equals Embedding::backward_dense: "
            << verdict(grad_linear == table.backward_dense(ids, g)) << '\n';

  std::cout << "cost: the lookup copies " << ids.size() << " rows; the product does "
            << static_cast<emb::Index>(ids.size()) * n_rows * table.embedding_dim()
            << " multiply-adds\n";
}
