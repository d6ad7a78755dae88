// bench_optim — a row-sparse optimizer step costs the same on a table of 1e3 rows and one of
// 1e6 rows: it touches the gradient's rows only. Each step updates nnz = 512 distinct rows of
// dim 64 floats; bytes processed = nnz * dim * sizeof(float), items = nnz. Two row
// distributions: "hot" rows drawn from the first 1000 rows (the same work for both N, so any
// difference would be a cost in N) and "uniform" rows over the whole table (on the large table
// they miss the caches, which is the memory system, not the algorithm). A memcpy of the same
// bytes runs beside them.
//
// The optimizer state (Adagrad's sums, SparseAdam's moments) is made at a table's first step,
// before timing starts; SGD without momentum has none.
#include <emb/embedding.hpp>
#include <emb/optim.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "bench_report.hpp"

namespace {

using emb::Index;
using emb::Matrix;
using T = float;

constexpr Index kDim = 64;
constexpr std::size_t kNnz = 512;
constexpr std::size_t kPool = 8;
constexpr Index kHot = 1000;
const std::vector<Index> kRows = {1'000, 1'000'000};

std::vector<emb::SparseGrad<T>> make_grads(Index rows, bool hot) {
  std::mt19937_64 gen(static_cast<std::uint64_t>(rows) * 2 + (hot ? 1 : 0));
  const Index range = hot ? std::min(rows, kHot) : rows;
  std::vector<emb::SparseGrad<T>> grads(kPool);
  for (auto& g : grads) {
    g.num_embeddings = rows;
    std::vector<Index> picked;
    while (picked.size() < kNnz) {
      picked.push_back(static_cast<Index>(gen() % static_cast<std::uint64_t>(range)));
      if (picked.size() == kNnz) {
        std::sort(picked.begin(), picked.end());
        picked.erase(std::unique(picked.begin(), picked.end()), picked.end());
      }
    }
    g.rows = picked;
    g.values = Matrix<T>::Constant(static_cast<Index>(kNnz), kDim, 1e-3f);
  }
  return grads;
}

void set_counters(benchmark::State& state) {
  const auto it = static_cast<std::int64_t>(state.iterations());
  state.SetItemsProcessed(it * static_cast<std::int64_t>(kNnz));
  state.SetBytesProcessed(it * static_cast<std::int64_t>(kNnz) * kDim *
                          static_cast<std::int64_t>(sizeof(T)));
}

template <class Optimizer>
void step(benchmark::State& state, Index rows, bool hot, Optimizer optimizer) {
  auto table = emb::Embedding<T>::from_pretrained(Matrix<T>::Zero(rows, kDim),
                                                  emb::FromPretrainedOptions().freeze(false));
  const auto grads = make_grads(rows, hot);
  optimizer.step(table, grads[0]);  // creates the state outside the timed loop
  std::size_t k = 0;
  for (auto _ : state) {
    optimizer.step(table, grads[k++ % kPool]);
    benchmark::DoNotOptimize(table.weight().data());
    benchmark::ClobberMemory();
  }
  set_counters(state);
}

void memcpy_baseline(benchmark::State& state) {
  const std::size_t bytes = kNnz * static_cast<std::size_t>(kDim) * sizeof(T);
  std::vector<char> src(bytes, 1);
  std::vector<char> dst(bytes);
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), bytes);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  set_counters(state);
}

const std::vector<std::string> kOptimizers = {"sgd", "adagrad", "sparse_adam"};

std::string name(const std::string& opt, Index rows, bool hot) {
  return "optim/" + opt + "/" + (hot ? "hot" : "uniform") + "/N=" + std::to_string(rows);
}

void register_all() {
  benchmark::RegisterBenchmark("optim/memcpy", memcpy_baseline);
  for (bool hot : {true, false}) {
    for (Index rows : kRows) {
      benchmark::RegisterBenchmark(name("sgd", rows, hot).c_str(), step<emb::optim::SGD<T>>, rows,
                                   hot, emb::optim::SGD<T>(0.1));
      benchmark::RegisterBenchmark(name("adagrad", rows, hot).c_str(), step<emb::optim::Adagrad<T>>,
                                   rows, hot, emb::optim::Adagrad<T>(0.1));
      benchmark::RegisterBenchmark(name("sparse_adam", rows, hot).c_str(),
                                   step<emb::optim::SparseAdam<T>>, rows, hot,
                                   emb::optim::SparseAdam<T>(1e-3));
    }
  }
}

void summarise(const std::map<std::string, bench::Result>& r) {
  std::printf("\nOptimizer step, %zu rows of dim %d (GB/s of gradient rows; memcpy %s GB/s)\n",
              kNnz, static_cast<int>(kDim), bench::gbps(bench::find(r, "optim/memcpy")).c_str());
  bench::Table table({"optimizer", "rows", "N=1e3 GB/s", "N=1e6 GB/s", "time N=1e6 / N=1e3"});
  std::optional<double> worst_hot;
  for (bool hot : {true, false}) {
    for (const auto& opt : kOptimizers) {
      const auto small = name(opt, kRows[0], hot);
      const auto large = name(opt, kRows[1], hot);
      const auto ratio = bench::speedup(r, small, large);  // time(large) / time(small)
      if (hot && ratio && (!worst_hot || *ratio > *worst_hot)) worst_hot = ratio;
      table.add({opt, hot ? "hot" : "uniform", bench::gbps(bench::find(r, small)),
                 bench::gbps(bench::find(r, large)), bench::fixed(ratio, 2, "x")});
    }
  }
  table.print();
  std::printf("\n");
  bench::Table verdict({"target", "measured", "goal", "verdict"});
  verdict.add({"step cost independent of N: time(N=1e6) / time(N=1e3), same rows (worst)",
               bench::fixed(worst_hot, 2, "x"), "about 1", bench::verdict(worst_hot, 1.5, false)});
  verdict.print();
}

}  // namespace

int main(int argc, char** argv) {
  bench::take_options(argc, argv);
  register_all();
  return bench::run(argc, argv, &summarise);
}
