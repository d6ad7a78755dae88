// bench_bag — EmbeddingBag's fused pooling against the two-step way (a lookup into an (n, dim)
// buffer, then a sum per bag), beside a memcpy of the same bytes (performance target P8), and the
// Sum and Max sparse backwards. Every case reads n = bags * L table rows of dim 64 floats (the
// Sum backward reads none: its bytes are the gradient rows it sums); bytes processed
// = n * dim * sizeof(float), items = n.
//
// Default: a table of 1e4 rows (2.5 MiB, cache-resident) and bag lengths 20, 50, 100; --full
// adds a DRAM-resident table of 1e6 rows (256 MiB).
#include <emb/embedding.hpp>
#include <emb/embedding_bag.hpp>

#include <benchmark/benchmark.h>

#include <Eigen/Core>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "bench_report.hpp"

namespace {

using emb::Index;
using emb::Matrix;
using T = float;

constexpr Index kDim = 64;
constexpr std::size_t kBags = 256;
constexpr std::size_t kPool = 8;  // index batches rotated through, so the caches see new rows
const std::vector<Index> kLengths = {20, 50, 100};
std::vector<Index> g_rows = {10'000};

struct Batch {
  std::vector<Index> indices;
  std::vector<Index> offsets;
};

// Bags of exactly `len` uniform indices, kPool batches.
std::vector<Batch> make_batches(Index rows, Index len) {
  std::mt19937_64 gen(static_cast<std::uint64_t>(rows * 131 + len));
  std::vector<Batch> pool(kPool);
  for (auto& b : pool) {
    b.indices.resize(kBags * static_cast<std::size_t>(len));
    for (auto& i : b.indices) i = static_cast<Index>(gen() % static_cast<std::uint64_t>(rows));
    for (std::size_t k = 0; k < kBags; ++k) b.offsets.push_back(static_cast<Index>(k) * len);
  }
  return pool;
}

// One table of each kind for the current N, rebuilt when N changes (the largest is 256 MiB).
struct Tables {
  Index rows = 0;
  std::unique_ptr<emb::EmbeddingBag<T>> sum;
  std::unique_ptr<emb::EmbeddingBag<T>> mean;
  std::unique_ptr<emb::EmbeddingBag<T>> max;
  std::unique_ptr<emb::Embedding<T>> plain;
};
Tables g_tables;

Tables& tables(Index rows) {
  if (g_tables.rows != rows) {
    g_tables = Tables{};
    emb::Embedding<T> base(emb::EmbeddingOptions(rows, kDim), 1);
    const Matrix<T>& w = base.weight();
    const auto bag = [&](emb::BagMode mode) {
      return std::make_unique<emb::EmbeddingBag<T>>(
          emb::EmbeddingBag<T>::from_pretrained(w, emb::FromPretrainedBagOptions().mode(mode)));
    };
    g_tables.sum = bag(emb::BagMode::Sum);
    g_tables.mean = bag(emb::BagMode::Mean);
    g_tables.max = bag(emb::BagMode::Max);
    g_tables.plain = std::make_unique<emb::Embedding<T>>(std::move(base));
    g_tables.rows = rows;
  }
  return g_tables;
}

void set_counters(benchmark::State& state, Index len) {
  const auto n = static_cast<std::int64_t>(kBags) * len;
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * n);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * n * kDim *
                          static_cast<std::int64_t>(sizeof(T)));
}

void fused(benchmark::State& state, Index rows, Index len, emb::BagMode mode) {
  Tables& t = tables(rows);
  emb::EmbeddingBag<T>& bag = mode == emb::BagMode::Sum    ? *t.sum
                              : mode == emb::BagMode::Mean ? *t.mean
                                                           : *t.max;
  const auto pool = make_batches(rows, len);
  std::size_t k = 0;
  for (auto _ : state) {
    const Batch& b = pool[k++ % kPool];
    Matrix<T> out = bag.forward(b.indices, b.offsets);
    benchmark::DoNotOptimize(out.data());
  }
  set_counters(state, len);
}

// The sparse backward of a bag table: the row-sparse gradient of one call (for Max, the winners
// of each output element found again from the table, then summed per row).
void backward(benchmark::State& state, Index rows, Index len, emb::BagMode mode) {
  Tables& t = tables(rows);
  emb::EmbeddingBag<T>& bag = mode == emb::BagMode::Sum ? *t.sum : *t.max;
  const auto pool = make_batches(rows, len);
  const Matrix<T> grad_output = Matrix<T>::Constant(static_cast<Index>(kBags), kDim, T(0.5));
  std::size_t k = 0;
  for (auto _ : state) {
    const Batch& b = pool[k++ % kPool];
    emb::SparseGrad<T> g = bag.backward(b.indices, b.offsets, grad_output);
    benchmark::DoNotOptimize(g.values.data());
  }
  set_counters(state, len);
}

// The two-step way: lookup into a preallocated (n, dim) buffer, then each bag's rows summed.
void lookup_then_sum(benchmark::State& state, Index rows, Index len) {
  Tables& t = tables(rows);
  const auto pool = make_batches(rows, len);
  Matrix<T> gathered(static_cast<Index>(kBags) * len, kDim);
  std::size_t k = 0;
  for (auto _ : state) {
    const Batch& b = pool[k++ % kPool];
    t.plain->forward(b.indices, gathered);
    Matrix<T> out(static_cast<Index>(kBags), kDim);
    for (std::size_t bag = 0; bag < kBags; ++bag) {
      out.row(static_cast<Index>(bag)) =
          gathered.middleRows(static_cast<Index>(bag) * len, len).colwise().sum();
    }
    benchmark::DoNotOptimize(out.data());
  }
  set_counters(state, len);
}

void memcpy_baseline(benchmark::State& state, Index len) {
  const std::size_t bytes = kBags * static_cast<std::size_t>(len * kDim) * sizeof(T);
  std::vector<char> src(bytes, 1);
  std::vector<char> dst(bytes);
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), bytes);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, len);
}

std::string group(Index rows, Index len) {
  return "bag/N=" + std::to_string(rows) + "/L=" + std::to_string(len);
}

void register_all() {
  for (Index rows : g_rows) {
    for (Index len : kLengths) {
      const std::string g = group(rows, len);
      benchmark::RegisterBenchmark((g + "/memcpy").c_str(), memcpy_baseline, len);
      benchmark::RegisterBenchmark((g + "/fused_sum").c_str(), fused, rows, len, emb::BagMode::Sum);
      benchmark::RegisterBenchmark((g + "/lookup_then_sum").c_str(), lookup_then_sum, rows, len);
      benchmark::RegisterBenchmark((g + "/fused_mean").c_str(), fused, rows, len,
                                   emb::BagMode::Mean);
      benchmark::RegisterBenchmark((g + "/fused_max").c_str(), fused, rows, len, emb::BagMode::Max);
      benchmark::RegisterBenchmark((g + "/backward_sum").c_str(), backward, rows, len,
                                   emb::BagMode::Sum);
      benchmark::RegisterBenchmark((g + "/backward_max").c_str(), backward, rows, len,
                                   emb::BagMode::Max);
    }
  }
}

void summarise(const std::map<std::string, bench::Result>& r) {
  using bench::find;
  std::printf("\nEmbeddingBag, dim %d, %zu bags per call (GB/s of rows read)\n",
              static_cast<int>(kDim), kBags);
  bench::Table table({"case", "memcpy", "fused sum", "lookup+sum", "fused/lookup+sum",
                      "fused/memcpy", "mean", "max", "sum backward", "max backward"});
  std::optional<double> worst;
  for (Index rows : g_rows) {
    for (Index len : kLengths) {
      const std::string g = group(rows, len);
      const auto speed = bench::speedup(r, g + "/fused_sum", g + "/lookup_then_sum");
      const auto vs_memcpy = bench::speedup(r, g + "/memcpy", g + "/fused_sum");
      if (speed && (!worst || *speed < *worst)) worst = speed;
      table.add({g, bench::gbps(find(r, g + "/memcpy")), bench::gbps(find(r, g + "/fused_sum")),
                 bench::gbps(find(r, g + "/lookup_then_sum")), bench::fixed(speed, 2, "x"),
                 bench::fixed(vs_memcpy ? std::optional<double>(1.0 / *vs_memcpy) : std::nullopt),
                 bench::gbps(find(r, g + "/fused_mean")), bench::gbps(find(r, g + "/fused_max")),
                 bench::gbps(find(r, g + "/backward_sum")), bench::gbps(find(r, g + "/backward_max"))});
    }
  }
  table.print();
  std::printf("\n");
  bench::Table verdict({"target", "measured", "goal", "verdict"});
  verdict.add({"P8 bag sum / (lookup + sum), L 20-100, dim 64 (worst case)",
               bench::fixed(worst, 2, "x"), ">= 1.0", bench::verdict(worst, 1.0, true)});
  verdict.print();
}

}  // namespace

int main(int argc, char** argv) {
  const bench::Options options = bench::take_options(argc, argv);
  if (options.full) g_rows.push_back(1'000'000);
  register_all();
  return bench::run(argc, argv, &summarise);
}
