// Embedding<T, S>::from_mapped and EmbeddingBag<T, S>::from_mapped: tables whose rows are the
// pages of a mapped file. ReadOnly tables refuse every write before anything changes and leave
// the file's bytes as they were; CopyOnWrite tables train in private memory and the file never
// changes. The expected values come from the same file read by load_npy, and the file's bytes
// are compared whole before and after.

#include <emb/embedding.hpp>
#include <emb/embedding_bag.hpp>
#include <emb/io/mapped.hpp>
#include <emb/io/npy.hpp>
#include <emb/optim.hpp>

#include <doctest/doctest.h>

#include "mapping_util.hpp"
#include "test_util.hpp"

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

using emb::BagMode;
using emb::Embedding;
using emb::EmbeddingBag;
using emb::FromPretrainedBagOptions;
using emb::FromPretrainedOptions;
using emb::Index;
using emb::Matrix;
using emb::io::MapMode;
using emb_test::bit_identical;
using emb_test::contains;
using emb_test::message_of;
using emb_test::read_bytes;
using emb_test::same_bits;
using emb_test::TempDir;

namespace {

Matrix<float> table_values(Index rows, Index cols) {
  return emb_test::random_matrix(rows, cols, 17, 2.0);
}

emb::SparseGrad<float> some_grad(Index rows, Index cols) {
  emb::SparseGrad<float> g;
  g.num_embeddings = rows;
  g.rows = {1, 4};
  g.values = Matrix<float>::Constant(2, cols, 0.5f);
  return g;
}

}  // namespace

TEST_CASE("from_mapped: a ReadOnly table reads the file's pages and equals the loaded table") {
  TempDir dir;
  const std::string path = dir.file("t.npy");
  const Matrix<float> w = table_values(50, 12);
  emb::io::save_npy<float>(path, w);

  auto mapped = emb::io::map_npy<float>(path);
  const float* pages = mapped.data();
  const auto table = Embedding<float>::from_mapped(std::move(mapped));
  CHECK(table.weight().data() == pages);  // no copy: the table's rows are the mapping's
  emb_test::require_maps_file_at(table.weight().data(), 50 * 12 * sizeof(float), path,
                                 emb::io::read_npy_header(path).data_offset, true);
  CHECK(table.read_only());
  CHECK(table.frozen());
  const auto loaded = Embedding<float>::from_pretrained(emb::io::load_npy<float>(path));
  const std::vector<Index> ids = {3, 0, 49, 3, 17};
  CHECK(bit_identical(table.forward(ids), loaded.forward(ids)));
  CHECK(bit_identical(table.backward_dense(ids, Matrix<float>::Ones(5, 12)),
                      loaded.backward_dense(ids, Matrix<float>::Ones(5, 12))));

  const auto bag = EmbeddingBag<float>::from_mapped(emb::io::map_npy<float>(path),
                                                    FromPretrainedBagOptions().mode(BagMode::Max));
  const auto loaded_bag = EmbeddingBag<float>::from_pretrained(
      emb::io::load_npy<float>(path), FromPretrainedBagOptions().mode(BagMode::Max));
  CHECK(bit_identical(bag.forward(ids, {0, 2}), loaded_bag.forward(ids, {0, 2})));
}

TEST_CASE("from_mapped: every write to a ReadOnly table throws before anything changes") {
  TempDir dir;
  const std::string path = dir.file("t.npy");
  emb::io::save_npy<float>(path, table_values(8, 4));
  const std::string before = read_bytes(path);

  auto table = Embedding<float>::from_mapped(emb::io::map_npy<float>(path),
                                             FromPretrainedOptions().max_norm(0.5));
  const Matrix<float> rows = table.weight();
  const std::string file = path;
  CHECK(contains(message_of<std::logic_error>([&] { table.forward({1, 2}); }), "read-only"));
  CHECK(contains(message_of<std::logic_error>([&] { (void)table.mutable_weight(); }),
                 "emb::Embedding::mutable_weight"));
  CHECK(contains(message_of<std::logic_error>([&] { table.set_weight(Matrix<float>::Zero(8, 4)); }),
                 "emb::Embedding::set_weight"));
  CHECK(contains(message_of<std::logic_error>([&] { table.freeze(false); }), file));
  emb::optim::SGD<float> sgd(0.1);
  emb::optim::Adagrad<float> adagrad(0.1);
  emb::optim::SparseAdam<float> adam(0.1);
  CHECK(contains(message_of<std::logic_error>([&] { sgd.step(table, some_grad(8, 4)); }),
                 "emb::optim::SGD::step"));
  CHECK(contains(message_of<std::logic_error>([&] { adagrad.step(table, some_grad(8, 4)); }),
                 "read-only"));
  CHECK(contains(message_of<std::logic_error>([&] { adam.step(table, some_grad(8, 4)); }),
                 "read-only"));
  CHECK(adam.tables() == 0);  // refused before any state was made
  CHECK(contains(message_of<std::logic_error>([&] {
                   (void)Embedding<float>::from_mapped(emb::io::map_npy<float>(path),
                                                       FromPretrainedOptions().freeze(false));
                 }),
                 "from_mapped with freeze(false)"));
  // A bad id is still a bad id (std::out_of_range), checked first.
  CHECK_THROWS_AS(table.forward({1, 8}), std::out_of_range);
  CHECK(bit_identical(Matrix<float>(table.weight()), rows));
  CHECK(read_bytes(path) == before);
  // Without max_norm a read-only table is looked up as any other.
  const auto plain = Embedding<float>::from_mapped(emb::io::map_npy<float>(path));
  CHECK(bit_identical(plain.forward({2, 7}), Matrix<float>(rows(std::vector<Index>{2, 7}, Eigen::all))));
}

TEST_CASE("from_mapped: a CopyOnWrite table trains in memory and the file never changes") {
  TempDir dir;
  const std::string path = dir.file("t.npy");
  const Matrix<float> w = table_values(8, 4);
  emb::io::save_npy<float>(path, w);
  const std::string before = read_bytes(path);

  auto table = Embedding<float>::from_mapped(emb::io::map_npy<float>(path, MapMode::CopyOnWrite),
                                             FromPretrainedOptions().freeze(false).max_norm(1.0));
  CHECK_FALSE(table.read_only());
  emb_test::require_maps_file_at(table.weight().data(), 8 * 4 * sizeof(float), path,
                                 emb::io::read_npy_header(path).data_offset, false);
  emb::optim::SGD<float> sgd(0.1);
  sgd.step(table, some_grad(8, 4));
  Matrix<float> expected = w;
  expected.row(1).array() -= 0.05f;
  expected.row(4).array() -= 0.05f;
  CHECK(bit_identical(Matrix<float>(table.weight()), expected));
  (void)table.forward({5});  // max_norm rewrites row 5 in memory
  CHECK(table.weight().row(5).norm() <= 1.0f + 1e-6f);
  table.mutable_weight()(0, 0) = 42.0f;
  CHECK(table.weight()(0, 0) == 42.0f);
  CHECK(read_bytes(path) == before);
  CHECK(bit_identical(emb::io::load_npy<float>(path), w));

  // A copy owns its rows: writes to one never show in the other.
  auto copy = table;
  CHECK(copy.weight().data() != table.weight().data());
  copy.mutable_weight()(0, 0) = -1.0f;
  CHECK(table.weight()(0, 0) == 42.0f);
}

TEST_CASE("from_mapped: a copy of a ReadOnly table shares the pages; the mapping outlives its maker") {
  TempDir dir;
  const std::string path = dir.file("t.npy");
  emb::io::save_npy<float>(path, table_values(20, 6));
  std::optional<Embedding<float>> table;
  {
    auto mapped = emb::io::map_npy<float>(path);
    table.emplace(Embedding<float>::from_mapped(std::move(mapped)));
  }  // the MappedMatrix object is gone; the table keeps the mapping alive
  const Embedding<float> copy = *table;
  CHECK(copy.weight().data() == table->weight().data());
  CHECK(copy.read_only());
  table.reset();
  CHECK(bit_identical(copy.forward({19, 0}),
                      Matrix<float>(emb::io::load_npy<float>(path)(std::vector<Index>{19, 0}, Eigen::all))));
}

TEST_CASE("from_mapped: half storage read in place, converted exactly in the lookup") {
  TempDir dir;
  const std::string path = dir.file("h.npy");
  const Matrix<float> w = table_values(16, 9);
  emb::io::save_npy<emb::half>(path, w.cast<emb::half>());
  const auto table = Embedding<float, emb::half>::from_mapped(emb::io::map_npy<emb::half>(path));
  const auto loaded = Embedding<float>::from_pretrained(emb::io::load_npy<float>(path));
  const std::vector<Index> ids = {0, 15, 7, 7};
  CHECK(bit_identical(table.forward(ids), loaded.forward(ids)));
  CHECK(same_bits(Matrix<emb::half>(table.weight()), Matrix<emb::half>(emb::io::map_npy<emb::half>(path).view())));
}
