// emb::dist: sharded Embedding and EmbeddingBag over MPI, run by CTest under mpirun with 1, 2, 3
// and 4 ranks. The oracle is one unsharded emb::Embedding / EmbeddingBag: every rank rebuilds
// every rank's batch from a seed, runs the concatenated batch (rank 0's first) through the
// unsharded table, and checks its own part of the result (plain lookups bit for bit, bags and
// gradients to float rounding, integer-valued tables exactly).
//
// Every test case makes the same collective calls on every rank, whatever its checks find, so a
// failed check cannot leave a rank waiting (CHECK, never REQUIRE, before a collective call).
#include <doctest/doctest.h>

#include "test_util.hpp"

#include <emb/dist/mpi.hpp>
#include <emb/embedding.hpp>
#include <emb/embedding_bag.hpp>
#include <emb/io/npy.hpp>
#include <emb/optim.hpp>

#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

using emb::BagMode;
using emb::EmbeddingBagOptions;
using emb::EmbeddingOptions;
using emb::Index;
using emb::Matrix;
using emb::SparseGrad;
using emb::Vector;
using emb::dist::Communicator;
using emb::dist::ShardedEmbedding;
using emb::dist::ShardedEmbeddingBag;
using emb_test::bit_identical;
using emb_test::contains;
using emb_test::message_of;

namespace {

int world_rank() { return Communicator().rank(); }
int world_size() { return Communicator().size(); }

// Uniform in [0, 1) from 53 bits of a std::mt19937_64 (whose output the standard fixes).
double unit(std::mt19937_64& gen) { return static_cast<double>(gen() >> 11) * 0x1.0p-53; }

std::mt19937_64 stream(std::uint64_t seed, int rank) {
  return std::mt19937_64(seed * 1000003u + static_cast<std::uint64_t>(rank) * 7919u + 17u);
}

// Rank r's batch of plain lookups for `seed`: a few ids (none on some ranks), repeats likely.
std::vector<Index> ids_of(std::uint64_t seed, int rank, Index rows) {
  auto gen = stream(seed, rank);
  const std::size_t n = (rank % 4 == 1) ? (seed % 2 == 0 ? 0 : 3) : 5 + gen() % 20;
  std::vector<Index> ids(n);
  for (auto& id : ids) id = static_cast<Index>(gen() % static_cast<std::uint64_t>(rows));
  return ids;
}

template <class T>
Matrix<T> values_of(std::uint64_t seed, int rank, Index rows, Index cols) {
  auto gen = stream(seed ^ 0x5bd1e995u, rank);
  Matrix<T> m(rows, cols);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<T>(2.0 * unit(gen) - 1.0);
  return m;
}

// Every rank's batch, and their concatenation in rank order.
struct Batches {
  std::vector<std::vector<Index>> ids;
  std::vector<Index> all;
  std::vector<std::size_t> start;  // rank r's first position in all
};

Batches batches(std::uint64_t seed, Index rows) {
  Batches b;
  for (int r = 0; r < world_size(); ++r) {
    b.ids.push_back(ids_of(seed, r, rows));
    b.start.push_back(b.all.size());
    b.all.insert(b.all.end(), b.ids.back().begin(), b.ids.back().end());
  }
  return b;
}

// Every rank's gradient of its output rows, stacked in rank order.
template <class T>
Matrix<T> stacked_grads(std::uint64_t seed, const std::vector<Index>& rows_per_rank, Index dim,
                        std::vector<Matrix<T>>& each) {
  Index total = 0;
  for (Index n : rows_per_rank) total += n;
  Matrix<T> all(total, dim);
  Index at = 0;
  each.clear();
  for (int r = 0; r < world_size(); ++r) {
    each.push_back(values_of<T>(seed, r, rows_per_rank[static_cast<std::size_t>(r)], dim));
    all.middleRows(at, each.back().rows()) = each.back();
    at += each.back().rows();
  }
  return all;
}

// Bags of rank r: ids, offsets (B or B + 1 entries), psw.
struct Bags {
  std::vector<Index> ids;
  std::vector<Index> offsets;
  Vector<float> psw;
  std::size_t bags = 0;
};

Bags bags_of(std::uint64_t seed, int rank, Index rows, bool include_last) {
  auto gen = stream(seed + 101, rank);
  Bags b;
  b.bags = (rank % 4 == 2 && seed % 3 == 0) ? 0 : 1 + gen() % 6;
  for (std::size_t k = 0; k < b.bags; ++k) {
    b.offsets.push_back(static_cast<Index>(b.ids.size()));
    const std::size_t len = gen() % 6;  // empty bags too
    for (std::size_t i = 0; i < len; ++i) {
      b.ids.push_back(static_cast<Index>(gen() % static_cast<std::uint64_t>(rows)));
    }
  }
  if (include_last) b.offsets.push_back(static_cast<Index>(b.ids.size()));
  b.psw.resize(static_cast<Index>(b.ids.size()));
  for (Index i = 0; i < b.psw.size(); ++i) b.psw[i] = static_cast<float>(2.0 * unit(gen) - 0.5);
  return b;
}

struct AllBags {
  std::vector<Bags> each;
  std::vector<Index> ids, offsets;
  Vector<float> psw;
  std::vector<Index> first_bag;  // rank r's first bag in the concatenation
  std::vector<Index> bag_counts;
};

AllBags all_bags(std::uint64_t seed, Index rows, bool include_last) {
  AllBags a;
  std::vector<float> psw;
  Index bag = 0;
  for (int r = 0; r < world_size(); ++r) {
    a.each.push_back(bags_of(seed, r, rows, include_last));
    const Bags& b = a.each.back();
    const auto shift = static_cast<Index>(a.ids.size());
    for (std::size_t k = 0; k < b.bags; ++k) a.offsets.push_back(b.offsets[k] + shift);
    a.ids.insert(a.ids.end(), b.ids.begin(), b.ids.end());
    psw.insert(psw.end(), b.psw.data(), b.psw.data() + b.psw.size());
    a.first_bag.push_back(bag);
    a.bag_counts.push_back(static_cast<Index>(b.bags));
    bag += static_cast<Index>(b.bags);
  }
  if (include_last) a.offsets.push_back(static_cast<Index>(a.ids.size()));
  a.psw = Eigen::Map<Vector<float>>(psw.data(), static_cast<Index>(psw.size()));
  return a;
}

template <class A, class B>
bool close(const A& a, const B& b, double rtol, double atol) {
  if (a.rows() != b.rows() || a.cols() != b.cols()) return false;
  for (Index i = 0; i < a.rows(); ++i) {
    for (Index j = 0; j < a.cols(); ++j) {
      const double x = static_cast<double>(a(i, j)), y = static_cast<double>(b(i, j));
      if (!(std::abs(x - y) <= atol + rtol * std::abs(y))) return false;
    }
  }
  return true;
}

template <class T>
double rtol() {
  return std::is_same_v<T, float> ? 1e-5 : 1e-12;
}

// The rows of a whole table's gradient that fall in [begin, end), in local numbering.
template <class T>
SparseGrad<T> part_of(const SparseGrad<T>& whole, Index begin, Index end) {
  SparseGrad<T> part;
  part.num_embeddings = end - begin;
  std::vector<Index> keep;
  for (std::size_t i = 0; i < whole.rows.size(); ++i) {
    if (whole.rows[i] >= begin && whole.rows[i] < end) {
      part.rows.push_back(whole.rows[i] - begin);
      keep.push_back(static_cast<Index>(i));
    }
  }
  part.values.resize(static_cast<Index>(keep.size()), whole.values.cols());
  for (std::size_t k = 0; k < keep.size(); ++k) {
    part.values.row(static_cast<Index>(k)) = whole.values.row(keep[k]);
  }
  return part;
}

template <class T>
void check_grad_equal(const SparseGrad<T>& got, const SparseGrad<T>& expected, double rt) {
  CHECK(got.num_embeddings == expected.num_embeddings);
  CHECK(got.rows == expected.rows);
  CHECK(close(got.values, expected.values, rt, rt));
}

// A directory every rank sees (rank 0 makes it and broadcasts its path), removed once every
// rank is done with it.
class SharedDir {
 public:
  SharedDir() {
    std::string path;
    if (world_rank() == 0) {
      owned_ = std::make_unique<emb_test::TempDir>("emb-mpi-test");
      path = owned_->file("");
    }
    int size = static_cast<int>(path.size());
    MPI_Bcast(&size, 1, MPI_INT, 0, MPI_COMM_WORLD);
    path.resize(static_cast<std::size_t>(size));
    MPI_Bcast(path.data(), size, MPI_CHAR, 0, MPI_COMM_WORLD);
    path_ = path;
  }
  ~SharedDir() { MPI_Barrier(MPI_COMM_WORLD); }
  std::string sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::unique_ptr<emb_test::TempDir> owned_;
  std::string path_;
};

// Runs `call` on every rank, requires every rank to throw E, and returns the message.
template <class E, class F>
std::string thrown(F&& call) {
  return message_of<E>(std::forward<F>(call));
}

// The same message on every rank (rank 0's, broadcast, compared).
bool same_everywhere(const std::string& text) {
  std::string root = text;
  int size = static_cast<int>(root.size());
  MPI_Bcast(&size, 1, MPI_INT, 0, MPI_COMM_WORLD);
  root.resize(static_cast<std::size_t>(size));
  MPI_Bcast(root.data(), size, MPI_CHAR, 0, MPI_COMM_WORLD);
  const int mine = root == text ? 1 : 0;
  int all = 0;
  MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return all == 1;
}

std::string rank_of(int rank) {
  return "rank " + std::to_string(rank) + " of " + std::to_string(world_size());
}

}  // namespace

TEST_CASE("Communicator: rank and size are MPI's") {
  const Communicator comm;
  int rank = -1, size = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  CHECK(comm.rank() == rank);
  CHECK(comm.size() == size);
  CHECK(comm.get() == MPI_COMM_WORLD);
  CHECK_THROWS_AS(Communicator(MPI_COMM_NULL), std::invalid_argument);
}

TEST_CASE("ShardedEmbedding: each rank draws its block of Embedding(options, seed), no more") {
  const Communicator comm;
  for (const Index rows : {Index{1}, Index{3}, Index{10}, Index{103}}) {
    for (const std::optional<Index> pad :
         {std::optional<Index>{}, std::optional<Index>{0}, std::optional<Index>{rows - 1},
          std::optional<Index>{-1}, std::optional<Index>{rows / 2}}) {
      CAPTURE(rows);
      CAPTURE(pad.value_or(-99));
      const auto options = EmbeddingOptions(rows, 5).padding_idx(pad);
      const ShardedEmbedding<float> sharded(comm, options, 42);
      const emb::Embedding<float> whole(options, 42);
      const emb::dist::detail::RowBlocks blocks(rows, comm.size());
      CHECK(sharded.local_row_begin() == blocks.begin(comm.rank()));
      CHECK(sharded.local_row_end() == blocks.end(comm.rank()));
      CHECK(sharded.local_weight().rows() == sharded.local_rows());
      CHECK(bit_identical(sharded.local_weight(),
                          whole.weight().middleRows(sharded.local_row_begin(), sharded.local_rows())));
      CHECK(sharded.padding_idx() == whole.padding_idx());
      const auto local_pad = sharded.shard().padding_idx();
      if (whole.padding_idx() && *whole.padding_idx() >= sharded.local_row_begin() &&
          *whole.padding_idx() < sharded.local_row_end()) {
        CHECK(local_pad == *whole.padding_idx() - sharded.local_row_begin());
      } else {
        CHECK_FALSE(local_pad);
      }
      const int last = comm.size() - 1;
      const Matrix<float> gathered = sharded.gather_weight(last);
      if (comm.rank() == last) {
        CHECK(bit_identical(gathered, whole.weight()));
      } else {
        CHECK(gathered.rows() == 0);
      }
    }
  }
  SUBCASE("10 rows on 3 ranks: blocks [0, 4), [4, 7), [7, 10)") {
    const ShardedEmbedding<double> sharded(comm, EmbeddingOptions(10, 2), 1);
    if (comm.size() == 3) {
      const Index begins[3] = {0, 4, 7}, ends[3] = {4, 7, 10};
      CHECK(sharded.local_row_begin() == begins[comm.rank()]);
      CHECK(sharded.local_row_end() == ends[comm.rank()]);
      CHECK(sharded.owner(6) == 1);
      CHECK(sharded.owner(7) == 2);
    }
    CHECK(sharded.row_begin(0) == 0);
    CHECK(sharded.row_end(comm.size() - 1) == 10);
  }
}

TEST_CASE_TEMPLATE("ShardedEmbedding: forward gives every rank the unsharded rows, bit for bit", T,
                   float, double) {
  const Communicator comm;
  const Index rows = 103, dim = 6;
  const EmbeddingOptions variants[] = {
      EmbeddingOptions(rows, dim),
      EmbeddingOptions(rows, dim).padding_idx(57),
      EmbeddingOptions(rows, dim).max_norm(1.25),
      EmbeddingOptions(rows, dim).max_norm(0.5).norm_type(std::numeric_limits<double>::infinity()),
      EmbeddingOptions(3, dim).padding_idx(1).max_norm(1.0),  // fewer rows than 4 ranks
  };
  for (const auto& options : variants) {
    CAPTURE(options.num_embeddings());
    CAPTURE(options.max_norm().value_or(0));
    ShardedEmbedding<T> sharded(comm, options, 7);
    emb::Embedding<T> whole(options, 7);
    for (std::uint64_t call = 1; call <= 3; ++call) {
      const Batches b = batches(call, options.num_embeddings());
      const auto& mine = b.ids[static_cast<std::size_t>(comm.rank())];
      const Matrix<T> got = sharded.forward(mine);
      const Matrix<T> expected = whole.forward(b.all);
      CHECK(bit_identical(
          got, expected.middleRows(static_cast<Index>(b.start[static_cast<std::size_t>(comm.rank())]),
                                   static_cast<Index>(mine.size()))));
      // max_norm rewrote, on the owners, exactly the rows one call over every batch rewrites.
      CHECK(bit_identical(sharded.local_weight(),
                          whole.weight().middleRows(sharded.local_row_begin(), sharded.local_rows())));
    }
  }
}

TEST_CASE_TEMPLATE("ShardedEmbedding: backward is the shard's part of the whole batch's gradient",
                   T, float, double) {
  const Communicator comm;
  const Index rows = 41, dim = 4;
  const EmbeddingOptions variants[] = {
      EmbeddingOptions(rows, dim),
      EmbeddingOptions(rows, dim).padding_idx(20),
      EmbeddingOptions(rows, dim).scale_grad_by_freq(true),
      EmbeddingOptions(rows, dim).scale_grad_by_freq(true).padding_idx(0),
  };
  for (const auto& options : variants) {
    CAPTURE(options.scale_grad_by_freq());
    CAPTURE(options.padding_idx().value_or(-1));
    ShardedEmbedding<T> sharded(comm, options, 3);
    const emb::Embedding<T> whole(options, 3);
    for (const bool after_forward : {true, false}) {
      CAPTURE(after_forward);
      const Batches b = batches(after_forward ? 11 : 12, rows);
      std::vector<Index> lengths;
      for (const auto& ids : b.ids) lengths.push_back(static_cast<Index>(ids.size()));
      std::vector<Matrix<T>> each;
      const Matrix<T> all_grads = stacked_grads<T>(5, lengths, dim, each);
      const auto& mine = b.ids[static_cast<std::size_t>(comm.rank())];
      // The ids travel once when backward follows a forward of the same batch; otherwise
      // backward routes them itself (the last forward here saw another batch).
      (void)sharded.forward(after_forward ? mine : ids_of(99, comm.rank(), rows));
      sharded.reset_traffic();
      const SparseGrad<T> got = sharded.backward(mine, each[static_cast<std::size_t>(comm.rank())]);
      CHECK((sharded.traffic().ids == 0) == (after_forward || comm.size() == 1 || mine.empty()));
      const SparseGrad<T> expected =
          part_of(whole.backward(b.all, all_grads), sharded.local_row_begin(), sharded.local_row_end());
      check_grad_equal(got, expected, rtol<T>());
    }
  }
}

TEST_CASE("ShardedEmbedding: optimizer steps on the shards equal those on one table") {
  const Communicator comm;
  const Index rows = 29, dim = 3;
  const auto options = EmbeddingOptions(rows, dim).padding_idx(4).max_norm(1.5);
  ShardedEmbedding<float> sharded(comm, options, 8);
  emb::Embedding<float> whole(options, 8);
  emb::optim::SGD<float> sgd(0.3), sgd_whole(0.3);
  emb::optim::Adagrad<float> adagrad(0.2), adagrad_whole(0.2);
  emb::optim::SparseAdam<float> adam(0.05), adam_whole(0.05);
  for (std::uint64_t step = 0; step < 6; ++step) {
    const Batches b = batches(20 + step, rows);
    const auto& mine = b.ids[static_cast<std::size_t>(comm.rank())];
    const Matrix<float> out = sharded.forward(mine);
    const Matrix<float> out_whole = whole.forward(b.all);
    // d(0.5 |out|^2)/d out = out: each rank's gradient is its own output.
    const SparseGrad<float> g = sharded.backward(mine, out);
    const SparseGrad<float> g_whole = whole.backward(b.all, out_whole);
    switch (step % 3) {
      case 0:
        sgd.step(sharded.shard(), g);
        sgd_whole.step(whole, g_whole);
        break;
      case 1:
        adagrad.step(sharded.shard(), g);
        adagrad_whole.step(whole, g_whole);
        break;
      default:
        adam.step(sharded, g);  // through emb::dist::optim_table: the shard
        adam_whole.step(whole, g_whole);
        break;
    }
    CHECK(close(sharded.local_weight(),
                whole.weight().middleRows(sharded.local_row_begin(), sharded.local_rows()), 1e-5,
                1e-6));
  }
  CHECK(&emb::dist::optim_table(sharded) == &sharded.shard());
  CHECK(adam.steps(sharded) == 2);
  CHECK(adam.steps(sharded) == adam.steps(sharded.shard()));
  adam.forget(sharded);
  CHECK(adam.steps(sharded) == 0);
  const Matrix<float> gathered = sharded.gather_weight();
  if (comm.rank() == 0) CHECK(close(gathered, whole.weight(), 1e-5, 1e-6));
}

TEST_CASE("ShardedEmbeddingBag: forward and backward of every mode equal EmbeddingBag's") {
  const Communicator comm;
  const Index rows = 37, dim = 5;
  for (const BagMode mode : {BagMode::Sum, BagMode::Mean, BagMode::Max}) {
    for (const bool include_last : {false, true}) {
      for (int variant = 0; variant < 4; ++variant) {
        auto options = EmbeddingBagOptions(rows, dim).mode(mode).include_last_offset(include_last);
        if (variant == 1) options.padding_idx(rows / 2);
        if (variant == 2) options.max_norm(1.0).padding_idx(3);
        if (variant == 3) options.scale_grad_by_freq(true).padding_idx(rows - 1);
        const bool weighted = mode == BagMode::Sum && variant != 2;
        CAPTURE(emb::to_string(mode));
        CAPTURE(include_last);
        CAPTURE(variant);
        ShardedEmbeddingBag<float> sharded(comm, options, 13);
        emb::EmbeddingBag<float> whole(options, 13);
        for (std::uint64_t call = 0; call < 3; ++call) {
          const AllBags a = all_bags(call, rows, include_last);
          const Bags& mine = a.each[static_cast<std::size_t>(comm.rank())];
          const Matrix<float> got = weighted ? sharded.forward(mine.ids, mine.offsets, mine.psw)
                                             : sharded.forward(mine.ids, mine.offsets);
          const Matrix<float> expected = weighted ? whole.forward(a.ids, a.offsets, a.psw)
                                                  : whole.forward(a.ids, a.offsets);
          const Index first = a.first_bag[static_cast<std::size_t>(comm.rank())];
          CHECK(close(got, expected.middleRows(first, static_cast<Index>(mine.bags)), 1e-5, 1e-6));
          CHECK(bit_identical(sharded.local_weight(), whole.weight().middleRows(
                                                          sharded.local_row_begin(),
                                                          sharded.local_rows())));

          std::vector<Matrix<float>> each;
          const Matrix<float> all_grads = stacked_grads<float>(call + 40, a.bag_counts, dim, each);
          const auto& g_mine = each[static_cast<std::size_t>(comm.rank())];
          const SparseGrad<float> g = weighted
                                          ? sharded.backward(mine.ids, mine.offsets, g_mine, mine.psw)
                                          : sharded.backward(mine.ids, mine.offsets, g_mine);
          const SparseGrad<float> g_whole =
              weighted ? whole.backward(a.ids, a.offsets, all_grads, a.psw)
                       : whole.backward(a.ids, a.offsets, all_grads);
          check_grad_equal(g, part_of(g_whole, sharded.local_row_begin(), sharded.local_row_end()),
                           1e-5);
        }
      }
    }
  }
}

TEST_CASE("ShardedEmbeddingBag: backward without a forward of the same bags routes them itself") {
  const Communicator comm;
  const Index rows = 23, dim = 3;
  for (const BagMode mode : {BagMode::Mean, BagMode::Max}) {
    const auto options = EmbeddingBagOptions(rows, dim).mode(mode);
    ShardedEmbeddingBag<double> sharded(comm, options, 2);
    const emb::EmbeddingBag<double> whole(options, 2);
    const AllBags other = all_bags(7, rows, false);
    const Bags& o = other.each[static_cast<std::size_t>(comm.rank())];
    (void)sharded.forward(o.ids, o.offsets);
    const AllBags a = all_bags(8, rows, false);
    const Bags& mine = a.each[static_cast<std::size_t>(comm.rank())];
    std::vector<Matrix<double>> each;
    const Matrix<double> all_grads = stacked_grads<double>(9, a.bag_counts, dim, each);
    const SparseGrad<double> g =
        sharded.backward(mine.ids, mine.offsets, each[static_cast<std::size_t>(comm.rank())]);
    check_grad_equal(g,
                     part_of(whole.backward(a.ids, a.offsets, all_grads), sharded.local_row_begin(),
                             sharded.local_row_end()),
                     1e-12);
  }
}

TEST_CASE("ShardedEmbeddingBag: Max ties between ranks go to the bag's earliest entry") {
  // Values in {-1, 0, 1}: most elements tie between rows held by different ranks, so a wrong
  // tie-break would move gradient to another row. Integer values and gradients: exact sums.
  const Communicator comm;
  const Index rows = 12, dim = 4;
  Matrix<float> table(rows, dim);
  for (Index i = 0; i < rows; ++i) {
    for (Index j = 0; j < dim; ++j) table(i, j) = static_cast<float>((i * 7 + j * 3) % 3 - 1);
  }
  for (const BagMode mode : {BagMode::Max, BagMode::Sum}) {
    const auto options = EmbeddingBagOptions(rows, dim).mode(mode).padding_idx(5);
    ShardedEmbeddingBag<float> sharded(comm, options, 0);
    sharded.shard().set_weight(table.middleRows(sharded.local_row_begin(), sharded.local_rows()));
    auto whole = emb::EmbeddingBag<float>::from_pretrained(
        table, emb::FromPretrainedBagOptions().mode(mode).padding_idx(5).freeze(false));
    for (std::uint64_t call = 0; call < 4; ++call) {
      const AllBags a = all_bags(call + 60, rows, false);
      const Bags& mine = a.each[static_cast<std::size_t>(comm.rank())];
      const Index first = a.first_bag[static_cast<std::size_t>(comm.rank())];
      const Matrix<float> got = sharded.forward(mine.ids, mine.offsets);
      CHECK(bit_identical(got, whole.forward(a.ids, a.offsets)
                                   .middleRows(first, static_cast<Index>(mine.bags))));
      Matrix<float> grads(static_cast<Index>(a.offsets.size()), dim);
      for (Index i = 0; i < grads.size(); ++i) grads.data()[i] = static_cast<float>(i % 5 + 1);
      const Matrix<float> g_mine = grads.middleRows(first, static_cast<Index>(mine.bags));
      const SparseGrad<float> g = sharded.backward(mine.ids, mine.offsets, g_mine);
      const SparseGrad<float> expected = part_of(whole.backward(a.ids, a.offsets, grads),
                                                 sharded.local_row_begin(), sharded.local_row_end());
      CHECK(g.rows == expected.rows);
      CHECK(bit_identical(g.values, expected.values));
    }
  }
}

TEST_CASE("ShardedEmbeddingBag: fixed-length bags and a training step with SparseAdam") {
  const Communicator comm;
  const Index rows = 50, dim = 8;
  const auto options = EmbeddingBagOptions(rows, dim).mode(BagMode::Mean);
  ShardedEmbeddingBag<float> sharded(comm, options, 21);
  emb::EmbeddingBag<float> whole(options, 21);
  emb::optim::SparseAdam<float> adam(0.01), adam_whole(0.01);
  const Index bags_per_rank = 3, len = 4;
  for (std::uint64_t step = 0; step < 3; ++step) {
    Matrix<Index> all(bags_per_rank * comm.size(), len);
    for (int r = 0; r < comm.size(); ++r) {
      auto gen = stream(step + 300, r);
      for (Index i = 0; i < bags_per_rank * len; ++i) {
        all.data()[r * bags_per_rank * len + i] = static_cast<Index>(gen() % 50);
      }
    }
    const Matrix<Index> mine = all.middleRows(comm.rank() * bags_per_rank, bags_per_rank);
    const Matrix<float> out = sharded.forward(mine);
    const Matrix<float> out_whole = whole.forward(all);
    CHECK(close(out, out_whole.middleRows(comm.rank() * bags_per_rank, bags_per_rank), 1e-5, 1e-6));
    adam.step(sharded, sharded.backward(mine, out));
    adam_whole.step(whole, whole.backward(all, out_whole));
    CHECK(close(sharded.local_weight(),
                whole.weight().middleRows(sharded.local_row_begin(), sharded.local_rows()), 1e-5,
                1e-6));
  }
}

TEST_CASE("Sharded tables: traffic counts the bytes sent to other ranks, ids only once a step") {
  const Communicator comm;
  const Index rows = 31, dim = 4;
  ShardedEmbedding<float> sharded(comm, EmbeddingOptions(rows, dim), 1);
  const emb::dist::detail::RowBlocks blocks(rows, comm.size());
  const Batches b = batches(70, rows);
  std::uint64_t mine_away = 0, others_here = 0;
  for (int r = 0; r < comm.size(); ++r) {
    for (Index id : b.ids[static_cast<std::size_t>(r)]) {
      const int owner = blocks.owner(id);
      if (r == comm.rank() && owner != r) ++mine_away;
      if (r != comm.rank() && owner == comm.rank()) ++others_here;
    }
  }
  const auto& mine = b.ids[static_cast<std::size_t>(comm.rank())];
  const Matrix<float> out = sharded.forward(mine);
  (void)sharded.backward(mine, out);
  const auto& t = sharded.traffic();
  CHECK(t.calls == 2);
  CHECK(t.ids == mine_away * sizeof(Index));
  CHECK(t.rows == others_here * dim * sizeof(float));
  CHECK(t.grads == mine_away * dim * sizeof(float));
  CHECK(t.control == 2 * 8 + static_cast<std::uint64_t>(comm.size() - 1) * sizeof(int));
}

TEST_CASE("Sharded tables: a checkpoint of P ranks loads on 1 to P ranks, rows where they belong") {
  const Communicator comm;
  const SharedDir dir;
  const Index rows = 19, dim = 3;
  const auto options = EmbeddingOptions(rows, dim).padding_idx(2);
  ShardedEmbedding<float> sharded(comm, options, 5);
  emb::Embedding<float> whole(options, 5);
  emb::optim::SGD<float> sgd(0.5), sgd_whole(0.5);
  const Batches b = batches(80, rows);
  const auto& mine = b.ids[static_cast<std::size_t>(comm.rank())];
  sgd.step(sharded.shard(), sharded.backward(mine, sharded.forward(mine)));
  sgd_whole.step(whole, whole.backward(b.all, whole.forward(b.all)));
  const std::string path = dir.sub("ckpt");
  sharded.save(path);
  const Matrix<float> expected = sharded.gather_weight();
  if (comm.rank() == 0) {
    // One .npy per rank that load_npy reads, and the manifest naming them.
    const emb::dist::detail::Manifest m =
        emb::dist::detail::read_manifest(path + "/manifest.txt");
    CHECK(m.num_embeddings == rows);
    CHECK(m.padding_idx == Index{2});
    CHECK(m.shards.size() == static_cast<std::size_t>(comm.size()));
    for (const auto& s : m.shards) {
      const Matrix<float> part = emb::io::load_npy<float>(path + "/" + s.file);
      CHECK(bit_identical(part, expected.middleRows(s.row_begin, s.row_end - s.row_begin)));
    }
  }
  for (int ranks = 1; ranks <= comm.size(); ++ranks) {
    CAPTURE(ranks);
    MPI_Comm sub = MPI_COMM_NULL;
    MPI_Comm_split(MPI_COMM_WORLD, comm.rank() < ranks ? 0 : MPI_UNDEFINED, comm.rank(), &sub);
    if (sub != MPI_COMM_NULL) {
      const Communicator part(sub);
      ShardedEmbedding<float> loaded(part, options, 999);  // other weights until load
      loaded.load(path);
      CHECK(bit_identical(loaded.local_weight(),
                          whole.weight().middleRows(loaded.local_row_begin(), loaded.local_rows())));
      const Matrix<float> all = loaded.gather_weight();
      if (part.rank() == 0) CHECK(bit_identical(all, expected));
      MPI_Comm_free(&sub);
    }
  }

  SUBCASE("bags too, and into double tables") {
    const auto bag_options = EmbeddingBagOptions(rows, dim).mode(BagMode::Max);
    const ShardedEmbeddingBag<float> bag(comm, bag_options, 6);
    bag.save(dir.sub("bag"));
    ShardedEmbeddingBag<double> back(comm, bag_options, 0);
    back.load(dir.sub("bag"));
    CHECK(bit_identical(back.local_weight(), bag.local_weight().cast<double>()));
  }
}

TEST_CASE("Sharded tables: a bad checkpoint throws on every rank and changes no table") {
  const Communicator comm;
  const SharedDir dir;
  const Index rows = 17, dim = 2;
  ShardedEmbedding<float> table(comm, EmbeddingOptions(rows, dim), 1);
  const Matrix<float> before = table.local_weight();
  SUBCASE("no checkpoint there") {
    const std::string msg =
        thrown<emb::io::FileError>([&] { table.load(dir.sub("missing")); });
    CHECK(contains(msg, "emb::dist::ShardedEmbedding::load: rank 0 of"));
    CHECK(contains(msg, "manifest.txt"));
    CHECK(same_everywhere(msg));
  }
  SUBCASE("a table of another shape") {
    ShardedEmbedding<float>(comm, EmbeddingOptions(rows + 1, dim), 1).save(dir.sub("other"));
    const std::string msg = thrown<std::invalid_argument>([&] { table.load(dir.sub("other")); });
    CHECK(contains(msg, "holds a (18, 2) table; this table is (17, 2)"));
    CHECK(same_everywhere(msg));
  }
  SUBCASE("the last rank's shard file cut short") {
    table.save(dir.sub("cut"));
    const int last = comm.size() - 1;
    const std::string file =
        dir.sub("cut") + "/" + emb::dist::detail::shard_file_name(last, comm.size());
    if (comm.rank() == 0) {
      const std::string bytes = emb_test::read_bytes(file);
      std::ofstream(file, std::ios::binary | std::ios::trunc) << bytes.substr(0, bytes.size() - 3);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    const std::string msg = thrown<emb::io::FileError>([&] { table.load(dir.sub("cut")); });
    CHECK(contains(msg, rank_of(last)));
    CHECK(contains(msg, "truncated"));
    CHECK(same_everywhere(msg));
  }
  CHECK(bit_identical(table.local_weight(), before));
}

TEST_CASE("Sharded tables: a bad id on one rank makes every rank throw, and nothing changes") {
  const Communicator comm;
  const Index rows = 20, dim = 3;
  const auto options = EmbeddingOptions(rows, dim).max_norm(0.5);
  ShardedEmbedding<float> sharded(comm, options, 4);
  for (int bad = 0; bad < comm.size(); ++bad) {
    for (const Index value : {rows, Index{-3}}) {
      CAPTURE(bad);
      CAPTURE(value);
      const Matrix<float> before = sharded.local_weight();
      std::vector<Index> ids = {1, 2, 3, 19};
      if (comm.rank() == bad) ids[2] = value;
      const std::string msg = thrown<std::out_of_range>([&] { (void)sharded.forward(ids); });
      CHECK(contains(msg, "emb::dist::ShardedEmbedding::forward: " + rank_of(bad)));
      CHECK(contains(msg, "index " + std::to_string(value) + " at position 2 is out of range"));
      CHECK(same_everywhere(msg));
      CHECK(bit_identical(sharded.local_weight(), before));  // max_norm did not run
    }
  }
  // Two bad ranks: the lower one is named.
  if (comm.size() >= 3) {
    std::vector<Index> ids = {0, 1};
    if (comm.rank() == 1 || comm.rank() == 2) ids[0] = rows + comm.rank();
    const std::string msg = thrown<std::out_of_range>([&] { (void)sharded.forward(ids); });
    CHECK(contains(msg, rank_of(1)));
    CHECK(contains(msg, "index 21"));
  }
  // A gradient of the wrong shape on one rank.
  {
    const std::vector<Index> ids = {4, 5};
    (void)sharded.forward(ids);
    const Index n = comm.rank() == comm.size() - 1 ? 3 : 2;
    const Matrix<float> g = Matrix<float>::Ones(n, dim);
    const std::string msg = thrown<std::invalid_argument>([&] { (void)sharded.backward(ids, g); });
    CHECK(contains(msg, rank_of(comm.size() - 1)));
    CHECK(contains(msg, "grad_output has shape (3, 3), expected (2, 3)"));
  }
  // The next calls work, and give the unsharded results.
  ShardedEmbedding<float> fresh(comm, options, 4);
  emb::Embedding<float> fresh_whole(options, 4);
  const Batches b = batches(90, rows);
  const auto& mine = b.ids[static_cast<std::size_t>(comm.rank())];
  (void)fresh.forward({});
  CHECK_THROWS_AS((void)fresh.forward(comm.rank() == 0 ? std::vector<Index>{rows} : mine),
                  std::out_of_range);
  CHECK(bit_identical(fresh.forward(mine),
                      fresh_whole.forward(b.all).middleRows(
                          static_cast<Index>(b.start[static_cast<std::size_t>(comm.rank())]),
                          static_cast<Index>(mine.size()))));
}

TEST_CASE("Sharded bags: bad offsets, weights or gradients on one rank: every rank throws") {
  const Communicator comm;
  const int bad = comm.size() - 1;
  const bool here = comm.rank() == bad;
  const Index rows = 15, dim = 2;
  ShardedEmbeddingBag<float> mean(comm, EmbeddingBagOptions(rows, dim), 3);
  ShardedEmbeddingBag<float> sum(
      comm, EmbeddingBagOptions(rows, dim).mode(BagMode::Sum).include_last_offset(true), 3);
  const std::vector<Index> ids = {1, 2, 3, 4};
  const std::vector<Index> good = {0, 2, 3};
  const std::vector<Index> good_last = {0, 2, 4};
  struct Case {
    const char* name;
    std::vector<Index> offsets;
    const char* expected;
  };
  const Case cases[] = {
      {"first offset not 0", {1, 2, 3}, "offset 1 at position 0 is invalid; the first offset must be 0"},
      {"decreasing", {0, 3, 2}, "offset 2 at position 2 is less than the offset before it (3)"},
      {"past the end", {0, 2, 9}, "offset 9 at position 2 is past the end of the 4 indices"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    const std::string msg = thrown<std::invalid_argument>(
        [&] { (void)mean.forward(ids, here ? c.offsets : good); });
    CHECK(contains(msg, "emb::dist::ShardedEmbeddingBag::forward: " + rank_of(bad)));
    CHECK(contains(msg, c.expected));
    CHECK(same_everywhere(msg));
  }
  {
    const std::string msg = thrown<std::invalid_argument>(
        [&] { (void)sum.forward(ids, here ? std::vector<Index>{0, 2, 3} : good_last); });
    CHECK(contains(msg, rank_of(bad)));
    CHECK(contains(msg, "the last offset must equal the number of indices, 4"));
  }
  {
    const std::vector<Index> bad_ids = {1, 2, here ? Index{15} : Index{3}, 4};
    const std::string msg =
        thrown<std::out_of_range>([&] { (void)sum.forward(bad_ids, good_last); });
    CHECK(contains(msg, rank_of(bad)));
    CHECK(contains(msg, "index 15 at position 2"));
  }
  {
    const Vector<float> psw = Vector<float>::Ones(here ? 3 : 4);
    const std::string msg =
        thrown<std::invalid_argument>([&] { (void)sum.forward(ids, good_last, psw); });
    CHECK(contains(msg, rank_of(bad)));
    CHECK(contains(msg, "per_sample_weights has 3 values, expected one per index (4)"));
  }
  {
    const Vector<float> psw = Vector<float>::Ones(4);
    const std::string msg = thrown<std::invalid_argument>([&] {
      if (here) {
        (void)mean.forward(ids, good, psw);
      } else {
        (void)mean.forward(ids, good);
      }
    });
    CHECK(contains(msg, rank_of(bad)));
    CHECK(contains(msg, "only supported in sum mode"));
  }
  {
    const Matrix<float> out = mean.forward(ids, good);
    const Matrix<float> g = Matrix<float>::Ones(here ? 2 : 3, dim);
    const std::string msg =
        thrown<std::invalid_argument>([&] { (void)mean.backward(ids, good, g); });
    CHECK(contains(msg, rank_of(bad)));
    CHECK(contains(msg, "grad_output has shape (2, 2), expected (3, 2)"));
    // The forward's routing survives the failed call: the next backward reuses it.
    mean.reset_traffic();
    const SparseGrad<float> grad = mean.backward(ids, good, out);
    CHECK(mean.traffic().ids == 0);
    CHECK(grad.num_embeddings == mean.local_rows());
  }
}

TEST_CASE("Sharded tables: ranks passing different options or roots all throw") {
  const Communicator comm;
  if (comm.size() > 1) {
    const Index dim = comm.rank() == 1 ? 4 : 3;
    const std::string msg = thrown<std::invalid_argument>(
        [&] { ShardedEmbedding<float> t(comm, EmbeddingOptions(10, dim), 0); });
    CHECK(contains(msg, "different values of embedding_dim (from 3 to 4)"));
    CHECK(same_everywhere(msg));
    const std::string seed = thrown<std::invalid_argument>([&] {
      ShardedEmbeddingBag<float> t(comm, EmbeddingBagOptions(10, 3),
                                   static_cast<std::uint64_t>(comm.rank() == 0));
    });
    CHECK(contains(seed, "different values of seed"));
  }
  const std::string bad_option = thrown<std::invalid_argument>(
      [&] { ShardedEmbedding<float> t(comm, EmbeddingOptions(10, 3).padding_idx(10), 0); });
  CHECK(contains(bad_option, "padding_idx = 10 is invalid"));
  const ShardedEmbedding<float> t(comm, EmbeddingOptions(10, 3), 0);
  const std::string root =
      thrown<std::invalid_argument>([&] { (void)t.gather_weight(comm.size()); });
  CHECK(contains(root, "root " + std::to_string(comm.size()) + " is not a rank"));
  CHECK_THROWS_AS((void)t.owner(10), std::out_of_range);
}

TEST_CASE("Sharded tables: empty tables, zero-width rows and empty batches on every rank") {
  const Communicator comm;
  ShardedEmbedding<float> none(comm, EmbeddingOptions(0, 3), 0);
  CHECK(none.local_rows() == 0);
  CHECK(none.forward({}).rows() == 0);
  CHECK_THROWS_AS((void)none.forward({0}), std::out_of_range);
  CHECK(none.backward({}, Matrix<float>(0, 3)).rows.empty());

  ShardedEmbedding<float> flat(comm, EmbeddingOptions(9, 0), 0);
  const std::vector<Index> ids = {8, 0, 4};
  const Matrix<float> out = flat.forward(ids);
  CHECK(out.rows() == 3);
  CHECK(out.cols() == 0);
  const SparseGrad<float> g = flat.backward(ids, Matrix<float>(3, 0));
  CHECK(g.values.cols() == 0);

  ShardedEmbeddingBag<float> bags(comm, EmbeddingBagOptions(9, 0).mode(BagMode::Sum), 0);
  const std::vector<Index> offsets = {0, 1};
  CHECK(bags.forward(ids, offsets).rows() == 2);
  CHECK(bags.backward(ids, offsets, Matrix<float>(2, 0)).values.cols() == 0);
  for (const BagMode mode : {BagMode::Sum, BagMode::Max}) {
    ShardedEmbeddingBag<float> wide(comm, EmbeddingBagOptions(9, 2).mode(mode), 0);
    CHECK(wide.forward({}, {}).rows() == 0);
    CHECK(wide.backward({}, {}, Matrix<float>(0, 2)).rows.empty());
  }
}
