// Serving bags from a quantized table: a trained float table quantized to 8, 4 and 2 bits
// (PyTorch's prepacked layouts), the memory and the error of each, Sum bags pooled from four
// threads at once on one shared table, a pruned table, and the packed bytes written to a file
// PyTorch reads with np.fromfile.
#include <emb/embedding_bag.hpp>
#include <emb/io/packed.hpp>
#include <emb/quantized.hpp>

#include <cstdio>
#include <filesystem>
#include <thread>
#include <vector>

int main() {
  using emb::Index;
  using emb::Matrix;
  const Index rows = 10000, dim = 64;

  // The float table a model trained: N(0, 1) rows, as emb::Embedding draws them.
  const emb::EmbeddingBag<float> trained(emb::EmbeddingBagOptions(rows, dim).mode(emb::BagMode::Sum), 7);
  const Matrix<float> w = trained.weight();
  std::printf("float: %zu bytes per row, %.2f MiB\n", static_cast<std::size_t>(dim) * 4,
              static_cast<double>(w.size()) * 4 / (1 << 20));

  // Stored in 16 bits (each value rounded to nearest even), for comparison.
  const Matrix<float> bf16_error = (w.cast<emb::bfloat16>().cast<float>() - w).cwiseAbs();
  const Matrix<float> half_error = (w.cast<emb::half>().cast<float>() - w).cwiseAbs();
  std::printf("bfloat16: %zu bytes per row, max abs error %.4f, mean abs error %.4f\n",
              static_cast<std::size_t>(dim) * 2, bf16_error.maxCoeff(), bf16_error.mean());
  std::printf("half: %zu bytes per row, max abs error %.5f, mean abs error %.5f\n",
              static_cast<std::size_t>(dim) * 2, half_error.maxCoeff(), half_error.mean());

  // Quantized as torch.ops.quantized.embedding_bag_{byte,4bit,2bit}_prepack would: the same
  // bytes. The error of each, measured on these N(0, 1) rows.
  for (emb::QuantBits bits : {emb::QuantBits::Int8, emb::QuantBits::Int4, emb::QuantBits::Int2}) {
    const emb::QuantizedTable q = emb::QuantizedTable::quantize(w, bits);
    const Matrix<float> error = (q.dequantize() - w).cwiseAbs();
    std::printf("%s: %zu bytes per row, %.2f MiB, max abs error %.4f, mean abs error %.4f\n",
                emb::to_string(bits), q.row_bytes(),
                static_cast<double>(q.size_bytes()) / (1 << 20), error.maxCoeff(), error.mean());
  }

  // Serving from Int4: one table, its bytes shared by every thread; forward is const.
  const emb::QuantizedEmbeddingBag<float> bag(emb::QuantizedTable::quantize(w, emb::QuantBits::Int4));
  std::vector<Index> ids, offsets;
  for (Index b = 0; b < 256; ++b) {
    offsets.push_back(static_cast<Index>(ids.size()));
    for (Index i = 0; i < 20; ++i) ids.push_back((b * 7919 + i * 104729) % rows);
  }
  std::vector<Matrix<float>> results(4);
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < results.size(); ++t) {
    threads.emplace_back([&, t] { results[t] = bag.forward(ids, offsets); });
  }
  for (auto& th : threads) th.join();
  const Matrix<float> exact = trained.forward(ids, offsets);
  bool same = true;
  for (const auto& r : results) same = same && r == results[0];
  std::printf("4 threads pooled %zu bags of 20 from one Int4 table: identical results: %s\n",
              offsets.size(), same ? "yes" : "no");
  std::printf("Int4 bag sums vs the float table's: max abs difference %.3f (sums of 20 rows)\n",
              (results[0] - exact).cwiseAbs().maxCoeff());

  // A pruned table: original ids 0..2*rows-1, the odd ones pruned (they contribute nothing),
  // id 2k stored in row k.
  std::vector<Index> mapping(static_cast<std::size_t>(2 * rows));
  for (Index i = 0; i < 2 * rows; ++i) mapping[static_cast<std::size_t>(i)] = i % 2 == 0 ? i / 2 : -1;
  const Matrix<float> pruned = bag.forward({0, 1, 2, 3}, {0}, mapping);
  const Matrix<float> direct = bag.forward({0, 1}, {0});
  std::printf("pruned ids 1 and 3 skipped: %s\n", pruned == direct ? "yes" : "no");

  // The bytes PyTorch reads back: torch.from_numpy(np.fromfile(path, np.uint8).reshape(rows, -1)).
  const std::string path = (std::filesystem::temp_directory_path() / "emb_example_table.q4").string();
  emb::io::save_packed(path, bag.table());
  const emb::QuantizedTable loaded = emb::io::load_packed(path, dim, emb::QuantBits::Int4);
  std::filesystem::remove(path);
  std::printf("saved and loaded %lld rows of %zu bytes: %s\n",
              static_cast<long long>(loaded.num_embeddings()), loaded.row_bytes(),
              emb::QuantizedEmbeddingBag<float>(loaded).forward(ids, offsets) == results[0]
                  ? "same bags"
                  : "different bags");
  return 0;
}
