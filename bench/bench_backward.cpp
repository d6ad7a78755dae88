// bench_backward — the gradient of a lookup: row-sparse against dense, as the table grows.
//
// For N from 1e3 to 1e6 rows (dim 128, n = 4096 positions per call):
//   sparse           Embedding::backward: radix-sorted positions, one sum per distinct row;
//   dense            Embedding::backward_dense, a fresh (N, dim) matrix per call;
//   dense_into       the same into a buffer reused across calls (no allocation, no page faults);
//   pytorch_method   what PyTorch's CPU embedding_dense_backward does: a freshly allocated,
//                    zero-filled (N, dim) tensor, then index_add of each position's row.
// The summary prints the ratios behind performance target P5 (the sparse cost does not grow with N and
// is >= 100x the dense one at N = 1e6) and P6 (dense >= 3x PyTorch's method at N = 1e5).
#include <emb/embedding.hpp>

#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bench_report.hpp"

namespace {

using emb::Index;
using emb::Matrix;
using T = float;

constexpr std::size_t kPositions = 4096;
constexpr Index kDim = 128;

struct Fixture {
  Index rows = 0;
  std::unique_ptr<emb::Embedding<T>> table;
  std::vector<Index> pool;  // 64 batches of kPositions, uniform over [0, rows)
  Matrix<T> grad_output;
};
Fixture g_fixture;

Fixture& fixture_for(Index rows) {
  if (!g_fixture.table || g_fixture.rows != rows) {
    g_fixture.table.reset();
    Matrix<T> w(rows, kDim);
    w.setConstant(T(0.5));
    g_fixture.table = std::make_unique<emb::Embedding<T>>(
        emb::Embedding<T>::from_pretrained(std::move(w),
                                           emb::FromPretrainedOptions().freeze(false)));
    g_fixture.rows = rows;
    emb::detail::Rng rng(7);
    g_fixture.pool.resize(64 * kPositions);
    for (auto& k : g_fixture.pool) {
      k = static_cast<Index>(rng.next_u64() % static_cast<std::uint64_t>(rows));
    }
    g_fixture.grad_output.resize(static_cast<Index>(kPositions), kDim);
    rng.fill_normal(g_fixture.grad_output.data(),
                    static_cast<std::size_t>(g_fixture.grad_output.size()));
  }
  return g_fixture;
}

void set_counters(benchmark::State& state) {
  const auto items =
      static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(kPositions);
  state.SetItemsProcessed(items);
  state.SetBytesProcessed(items * kDim * static_cast<std::int64_t>(sizeof(T)));
}

// PyTorch's CPU embedding_dense_backward: at::zeros({N, dim}) (a fresh allocation, filled with
// zeros), then grad_weight.index_add_(0, indices, grad) — one row add per position.
__attribute__((noinline)) std::unique_ptr<T[]> pytorch_method(emb::IndexSpan idx, const T* g,
                                                              Index rows, Index dim) {
  const auto size = static_cast<std::size_t>(rows * dim);
  std::unique_ptr<T[]> grad(new T[size]);
  std::memset(grad.get(), 0, size * sizeof(T));
  for (std::size_t i = 0; i < idx.size(); ++i) {
    const Index k = idx[i];
    T* dst = grad.get() + k * dim;
    const T* src = g + static_cast<Index>(i) * dim;
    for (Index j = 0; j < dim; ++j) dst[j] += src[j];
  }
  return grad;
}

std::string group(Index rows) {
  return "backward/N:" + std::to_string(rows) + "/dim:" + std::to_string(kDim);
}

double g_min_time = 0.1;

void add(const std::string& name, std::function<void(benchmark::State&)> fn) {
  benchmark::RegisterBenchmark(name.c_str(), [fn](benchmark::State& s) { fn(s); })
      ->UseRealTime()
      ->MinTime(g_min_time)
      ->Unit(benchmark::kMicrosecond);
}

std::vector<Index> g_rows;

void register_all() {
  g_rows = {1000, 10000, 100000, 1000000};
  for (Index rows : g_rows) {
    const std::string g = group(rows);
    add(g + "/sparse", [rows](benchmark::State& state) {
      Fixture& f = fixture_for(rows);
      bench::Batches batches{f.pool, kPositions};
      for (auto _ : state) {
        emb::SparseGrad<T> grad = f.table->backward(batches(), f.grad_output);
        benchmark::DoNotOptimize(grad.values.data());
      }
      set_counters(state);
    });
    add(g + "/dense", [rows](benchmark::State& state) {
      Fixture& f = fixture_for(rows);
      bench::Batches batches{f.pool, kPositions};
      for (auto _ : state) {
        Matrix<T> grad = f.table->backward_dense(batches(), f.grad_output);
        benchmark::DoNotOptimize(grad.data());
      }
      set_counters(state);
    });
    add(g + "/dense_into", [rows](benchmark::State& state) {
      Fixture& f = fixture_for(rows);
      bench::Batches batches{f.pool, kPositions};
      Matrix<T> grad = Matrix<T>::Zero(rows, kDim);  // reused: its pages are touched once, here
      for (auto _ : state) {
        f.table->backward_dense(batches(), f.grad_output, grad);
        benchmark::DoNotOptimize(grad.data());
      }
      set_counters(state);
    });
    add(g + "/pytorch_method", [rows](benchmark::State& state) {
      Fixture& f = fixture_for(rows);
      bench::Batches batches{f.pool, kPositions};
      for (auto _ : state) {
        auto grad = pytorch_method(batches(), f.grad_output.data(), rows, kDim);
        benchmark::DoNotOptimize(grad.get());
      }
      set_counters(state);
    });
  }
}

void summarise(const std::map<std::string, bench::Result>& r) {
  using bench::find;
  using bench::speedup;
  std::printf("\n=== Summary: embedding backward, n = %zu positions, dim = %lld, float ===\n",
              kPositions, static_cast<long long>(kDim));
  std::printf("Times per call (CPU time of the measuring thread, page faults included); ratios "
              "are of times measured in this run.\n\n");
  bench::Table t({"N", "sparse us", "dense us", "dense_into us",
                  "pytorch_method us", "dense/sparse", "pytorch/dense", "pytorch/dense_into"});
  const auto us = [&](const std::string& name) -> std::string {
    const auto x = find(r, name);
    return x ? bench::fixed(x->seconds * 1e6, 1) : "-";
  };
  for (Index rows : g_rows) {
    const std::string g = group(rows);
    t.add({std::to_string(rows), us(g + "/sparse"), us(g + "/dense"), us(g + "/dense_into"),
           us(g + "/pytorch_method"),
           bench::readable(speedup(r, g + "/sparse", g + "/dense")),
           bench::fixed(speedup(r, g + "/dense", g + "/pytorch_method"), 2, "x"),
           bench::fixed(speedup(r, g + "/dense_into", g + "/pytorch_method"), 2, "x")});
  }
  t.print();

  // From N = 1e4 up, 4096 uniform positions name ~n distinct rows, so the work is the same.
  const std::string small = group(10000);
  const std::string large = group(1000000);
  const std::string mid = group(100000);
  const auto growth = speedup(r, small + "/sparse", large + "/sparse");  // time(1e6)/time(1e3)
  const auto p5 = speedup(r, large + "/sparse", large + "/dense");
  std::optional<double> p6 = speedup(r, mid + "/dense", mid + "/pytorch_method");
  const auto p6_into = speedup(r, mid + "/dense_into", mid + "/pytorch_method");
  std::printf("\nTargets (README.md, Performance)\n");
  bench::Table v({"target", "measured", "goal", "verdict"});
  v.add({"P5 sparse time at N=1e6 / at N=1e4 (independent of N)", bench::fixed(growth),
         "~1 (<= 1.5)", bench::verdict(growth, 1.5, false)});
  v.add({"P5 dense / sparse at N=1e6", bench::readable(p5), ">= 100x",
         bench::verdict(p5, 100.0, true)});
  v.add({"P6 PyTorch's method / emb dense (allocating), N=1e5", bench::fixed(p6), ">= 3",
         bench::verdict(p6, 3.0, true)});
  v.add({"P6 PyTorch's method / emb dense into a reused buffer, N=1e5", bench::fixed(p6_into),
         ">= 3", bench::verdict(p6_into, 3.0, true)});
  v.print();
}

}  // namespace

int main(int argc, char** argv) {
  const bench::Options options = bench::take_options(argc, argv);
  g_min_time = options.full ? 0.3 : 0.1;
  register_all();
  return bench::run(argc, argv, &summarise);
}
