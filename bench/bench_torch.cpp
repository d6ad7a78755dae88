// bench_torch — emb against libtorch's own CPU kernels (optional: built only when CMake finds
// Torch, e.g. Debian's libtorch-dev). The other benchmarks compare emb with re-implementations
// of PyTorch's methods; this one calls the real thing on the same data, one thread each
// (at::set_num_threads(1); emb's default).
//
//   forward    Embedding::forward into a reused buffer, beside torch::embedding (allocates its
//              result, as a module call does) and at::index_select_out into the same kind of
//              reused buffer. N in {1e3, 1e5, 1e6} x dim in {16, 64, 128, 512}, n = 4096
//              uniform indices per call rotating over a pool; torch reads emb's weight memory
//              through at::from_blob (the same bytes, no copy).
//   dense      Embedding::backward_dense (a fresh (N, dim) result, and into a reused buffer) vs
//              at::embedding_dense_backward, N in {1e4, 1e5}, dim 128, n = 4096.
//   sparse     Embedding::backward (coalesced SparseGrad) vs at::embedding_backward(sparse=true)
//              followed by .coalesce(), the same rows and values; N in {1e4, 1e5, 1e6}, dim 128.
//              The uncoalesced torch result is timed too, for reference.
//   bag        EmbeddingBag sum / mean / max forward, 256 bags of 50, dim 64, N in {1e4, 1e6},
//              vs at::embedding_bag (which runs its forward-only kernel: no autograd here).
//
// Bytes processed = n * dim * sizeof(float) (the payload rows), items = n, for every case.
// The summary prints time(torch) / time(emb): above 1, emb is faster.
#include <emb/embedding.hpp>
#include <emb/embedding_bag.hpp>

#include <benchmark/benchmark.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdint>
#include <cstdio>
#include <functional>
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

constexpr std::size_t kLookups = 4096;
constexpr Index kGradDim = 128;
constexpr Index kBagDim = 64;
constexpr Index kBagLength = 50;
constexpr std::size_t kBags = 256;

const std::vector<Index> kForwardRows = {1'000, 100'000, 1'000'000};
const std::vector<Index> kForwardDims = {16, 64, 128, 512};
const std::vector<Index> kDenseRows = {10'000, 100'000};
const std::vector<Index> kSparseRows = {10'000, 100'000, 1'000'000};
const std::vector<Index> kBagRows = {10'000, 1'000'000};
const std::vector<emb::BagMode> kBagModes = {emb::BagMode::Sum, emb::BagMode::Mean,
                                            emb::BagMode::Max};

// ---------------------------------------------------------------------------------------------
// Fixtures: one table at a time (the largest, 1e6 x 512 floats, is 2 GiB) and its index pool,
// with the torch views of both made once, so that no case times the wrapping of its inputs.

// A tensor viewing memory emb owns; torch neither copies nor frees it.
at::Tensor view_of(const T* data, Index rows, Index cols) {
  return at::from_blob(const_cast<T*>(data), {rows, cols}, at::kFloat);
}
at::Tensor view_of(emb::IndexSpan span) {
  return at::from_blob(const_cast<Index*>(span.data()),
                          {static_cast<std::int64_t>(span.size())}, at::kLong);
}

// Large enough that a DRAM-sized table is not re-read from cache between iterations.
std::size_t pool_size(Index rows, Index dim) {
  const auto table_bytes = static_cast<std::size_t>(rows * dim) * sizeof(T);
  return table_bytes >= (std::size_t{64} << 20) ? std::size_t{1} << 20 : std::size_t{1} << 16;
}

struct Fixture {
  Index rows = 0;
  Index dim = 0;
  std::unique_ptr<emb::Embedding<T>> table;
  at::Tensor weight;                // torch's view of table->weight()
  std::vector<Index> pool;          // uniform over [0, rows)
  std::vector<at::Tensor> batches;  // torch's views of the pool, kLookups each, in Batches' order
  Matrix<T> grad_output;            // (kLookups, dim), N(0, 1)
  at::Tensor grad_output_t;
};
Fixture g_fixture;

Fixture& fixture_for(Index rows, Index dim) {
  Fixture& f = g_fixture;
  if (f.table && f.rows == rows && f.dim == dim) return f;
  f = Fixture{};  // free the old table before the new one is built
  Matrix<T> w(rows, dim);
  T* p = w.data();
  const auto size = static_cast<std::size_t>(w.size());
  for (std::size_t i = 0; i < size; ++i) p[i] = static_cast<T>(i % 1021) * T(1e-3);
  f.table = std::make_unique<emb::Embedding<T>>(emb::Embedding<T>::from_pretrained(std::move(w)));
  f.rows = rows;
  f.dim = dim;
  f.weight = view_of(f.table->weight().data(), rows, dim);
  emb::detail::Rng rng(42 + static_cast<std::uint64_t>(rows));
  f.pool.resize(pool_size(rows, dim));
  for (auto& k : f.pool) k = static_cast<Index>(rng.next_u64() % static_cast<std::uint64_t>(rows));
  for (std::size_t at = 0; at + kLookups <= f.pool.size(); at += kLookups) {
    f.batches.push_back(view_of(emb::IndexSpan(f.pool.data() + at, kLookups)));
  }
  f.grad_output.resize(static_cast<Index>(kLookups), dim);
  rng.fill_normal(f.grad_output.data(), static_cast<std::size_t>(f.grad_output.size()));
  f.grad_output_t = view_of(f.grad_output.data(), f.grad_output.rows(), dim);
  return f;
}

// The torch counterpart of bench::Batches: the same batches in the same order.
struct TorchBatches {
  const std::vector<at::Tensor>& batches;
  std::size_t next = 0;
  const at::Tensor& operator()() {
    if (next == batches.size()) next = 0;
    return batches[next++];
  }
};

Matrix<T>& out_buffer(std::size_t n, Index dim) {
  static Matrix<T> out;
  if (out.rows() != static_cast<Index>(n) || out.cols() != dim) {
    out.resize(static_cast<Index>(n), dim);
    out.setZero();
  }
  return out;
}

// Bags of exactly kBagLength uniform indices; a few batches rotated through.
struct BagFixture {
  Index rows = 0;
  std::map<emb::BagMode, std::unique_ptr<emb::EmbeddingBag<T>>> tables;
  at::Tensor weight;  // view of the Sum table's weights (all three hold the same values)
  std::vector<std::vector<Index>> indices;
  std::vector<Index> offsets;
  std::vector<at::Tensor> indices_t;
  at::Tensor offsets_t;
};
BagFixture g_bags;

BagFixture& bags_for(Index rows) {
  BagFixture& f = g_bags;
  if (f.rows == rows) return f;
  f = BagFixture{};
  g_fixture = Fixture{};  // at most one large table in memory
  emb::Embedding<T> base(emb::EmbeddingOptions(rows, kBagDim), 1);
  for (emb::BagMode mode : kBagModes) {
    f.tables[mode] = std::make_unique<emb::EmbeddingBag<T>>(emb::EmbeddingBag<T>::from_pretrained(
        base.weight(), emb::FromPretrainedBagOptions().mode(mode)));
  }
  f.weight = view_of(f.tables[emb::BagMode::Sum]->weight().data(), rows, kBagDim);
  std::mt19937_64 gen(static_cast<std::uint64_t>(rows));
  f.indices.resize(8);
  for (auto& batch : f.indices) {
    batch.resize(kBags * static_cast<std::size_t>(kBagLength));
    for (auto& k : batch) k = static_cast<Index>(gen() % static_cast<std::uint64_t>(rows));
    f.indices_t.push_back(view_of(emb::IndexSpan(batch)));
  }
  for (std::size_t b = 0; b < kBags; ++b) f.offsets.push_back(static_cast<Index>(b) * kBagLength);
  f.offsets_t = view_of(emb::IndexSpan(f.offsets));
  f.rows = rows;
  return f;
}

std::int64_t torch_mode(emb::BagMode mode) {
  return mode == emb::BagMode::Sum ? 0 : mode == emb::BagMode::Mean ? 1 : 2;
}

void set_counters(benchmark::State& state, std::size_t n, Index dim) {
  const auto items = static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(n);
  state.SetItemsProcessed(items);
  state.SetBytesProcessed(items * dim * static_cast<std::int64_t>(sizeof(T)));
}

// ---------------------------------------------------------------------------------------------
// Registration. Names: <group>/N:<rows>/dim:<dim>[/<mode>]/<variant>.

std::string group_name(const char* group, Index rows, Index dim) {
  return std::string(group) + "/N:" + std::to_string(rows) + "/dim:" + std::to_string(dim);
}

double g_min_time = 0.1;

void add(const std::string& name, std::function<void(benchmark::State&)> fn) {
  benchmark::RegisterBenchmark(name.c_str(), [fn](benchmark::State& s) { fn(s); })
      ->UseRealTime()
      ->MinTime(g_min_time)
      ->Unit(benchmark::kMicrosecond);
}

void register_forward(Index rows, Index dim) {
  const std::string g = group_name("forward", rows, dim);
  add(g + "/emb", [=](benchmark::State& state) {
    Fixture& f = fixture_for(rows, dim);
    bench::Batches batches{f.pool, kLookups};
    Matrix<T>& out = out_buffer(kLookups, dim);
    for (auto _ : state) {
      f.table->forward(batches(), out);
      benchmark::ClobberMemory();
    }
    set_counters(state, kLookups, dim);
  });
  add(g + "/torch_embedding", [=](benchmark::State& state) {
    Fixture& f = fixture_for(rows, dim);
    TorchBatches batches{f.batches};
    for (auto _ : state) {
      at::Tensor out = at::embedding(f.weight, batches());
      benchmark::DoNotOptimize(out.data_ptr());
    }
    set_counters(state, kLookups, dim);
  });
  add(g + "/torch_index_select_out", [=](benchmark::State& state) {
    Fixture& f = fixture_for(rows, dim);
    TorchBatches batches{f.batches};
    Matrix<T>& out = out_buffer(kLookups, dim);
    at::Tensor out_t = view_of(out.data(), out.rows(), dim);
    for (auto _ : state) {
      at::index_select_out(out_t, f.weight, 0, batches());
      benchmark::ClobberMemory();
    }
    set_counters(state, kLookups, dim);
  });
}

void register_dense(Index rows) {
  const std::string g = group_name("dense_backward", rows, kGradDim);
  add(g + "/emb", [=](benchmark::State& state) {
    Fixture& f = fixture_for(rows, kGradDim);
    bench::Batches batches{f.pool, kLookups};
    for (auto _ : state) {
      Matrix<T> grad = f.table->backward_dense(batches(), f.grad_output);
      benchmark::DoNotOptimize(grad.data());
    }
    set_counters(state, kLookups, kGradDim);
  });
  add(g + "/emb_into", [=](benchmark::State& state) {
    Fixture& f = fixture_for(rows, kGradDim);
    bench::Batches batches{f.pool, kLookups};
    Matrix<T> grad = Matrix<T>::Zero(rows, kGradDim);  // reused: its pages are touched once, here
    for (auto _ : state) {
      f.table->backward_dense(batches(), f.grad_output, grad);
      benchmark::DoNotOptimize(grad.data());
    }
    set_counters(state, kLookups, kGradDim);
  });
  add(g + "/torch", [=](benchmark::State& state) {
    Fixture& f = fixture_for(rows, kGradDim);
    TorchBatches batches{f.batches};
    for (auto _ : state) {
      at::Tensor grad =
          at::embedding_dense_backward(f.grad_output_t, batches(), rows, -1, false);
      benchmark::DoNotOptimize(grad.data_ptr());
    }
    set_counters(state, kLookups, kGradDim);
  });
}

void register_sparse(Index rows) {
  const std::string g = group_name("sparse_backward", rows, kGradDim);
  add(g + "/emb", [=](benchmark::State& state) {
    Fixture& f = fixture_for(rows, kGradDim);
    bench::Batches batches{f.pool, kLookups};
    for (auto _ : state) {
      emb::SparseGrad<T> grad = f.table->backward(batches(), f.grad_output);
      benchmark::DoNotOptimize(grad.values.data());
    }
    set_counters(state, kLookups, kGradDim);
  });
  add(g + "/torch_coalesced", [=](benchmark::State& state) {
    Fixture& f = fixture_for(rows, kGradDim);
    TorchBatches batches{f.batches};
    for (auto _ : state) {
      at::Tensor grad =
          at::embedding_backward(f.grad_output_t, batches(), rows, -1, false, true).coalesce();
      benchmark::DoNotOptimize(grad._values().data_ptr());
    }
    set_counters(state, kLookups, kGradDim);
  });
  add(g + "/torch_uncoalesced", [=](benchmark::State& state) {
    Fixture& f = fixture_for(rows, kGradDim);
    TorchBatches batches{f.batches};
    for (auto _ : state) {
      at::Tensor grad = at::embedding_backward(f.grad_output_t, batches(), rows, -1, false, true);
      benchmark::DoNotOptimize(grad._values().data_ptr());
    }
    set_counters(state, kLookups, kGradDim);
  });
}

void register_bag(Index rows, emb::BagMode mode) {
  const std::string g = group_name("bag", rows, kBagDim) + "/" + emb::to_string(mode);
  const std::size_t n = kBags * static_cast<std::size_t>(kBagLength);
  add(g + "/emb", [=](benchmark::State& state) {
    BagFixture& f = bags_for(rows);
    emb::EmbeddingBag<T>& table = *f.tables[mode];
    std::size_t next = 0;
    for (auto _ : state) {
      Matrix<T> out = table.forward(f.indices[next], f.offsets);
      benchmark::DoNotOptimize(out.data());
      next = (next + 1) % f.indices.size();
    }
    set_counters(state, n, kBagDim);
  });
  add(g + "/torch", [=](benchmark::State& state) {
    BagFixture& f = bags_for(rows);
    TorchBatches batches{f.indices_t};
    const std::int64_t m = torch_mode(mode);
    for (auto _ : state) {
      auto result = at::embedding_bag(f.weight, batches(), f.offsets_t, false, m, false,
                                      c10::nullopt, false, c10::nullopt);
      benchmark::DoNotOptimize(std::get<0>(result).data_ptr());
    }
    set_counters(state, n, kBagDim);
  });
}

void register_all() {
  for (Index rows : kForwardRows) {
    for (Index dim : kForwardDims) register_forward(rows, dim);
  }
  for (Index rows : kDenseRows) register_dense(rows);
  for (Index rows : kSparseRows) register_sparse(rows);
  for (Index rows : kBagRows) {
    for (emb::BagMode mode : kBagModes) register_bag(rows, mode);
  }
}

// ---------------------------------------------------------------------------------------------
// The summary.

std::string us(const std::map<std::string, bench::Result>& r, const std::string& name) {
  const auto x = bench::find(r, name);
  return x ? bench::fixed(x->seconds * 1e6, 1) : "-";
}

void summarise(const std::map<std::string, bench::Result>& r) {
  using bench::speedup;
  std::printf("\n=== Summary: emb vs libtorch, one thread each, float ===\n");
  std::printf("torch/emb = time of libtorch's call / time of emb's: above 1, emb is faster. "
              "Times are the CPU time of the\nmeasuring thread; the ratios are of cases measured "
              "side by side in this run.\n");

  std::printf("\nForward, n = %zu uniform indices per call (emb into a reused buffer)\n",
              kLookups);
  bench::Table fwd({"N", "dim", "emb GB/s", "torch::embedding GB/s", "torch::embedding/emb",
                    "index_select_out/emb"});
  for (Index rows : kForwardRows) {
    for (Index dim : kForwardDims) {
      const std::string g = group_name("forward", rows, dim);
      fwd.add({std::to_string(rows), std::to_string(dim), bench::gbps(bench::find(r, g + "/emb")),
               bench::gbps(bench::find(r, g + "/torch_embedding")),
               bench::fixed(speedup(r, g + "/emb", g + "/torch_embedding"), 2, "x"),
               bench::fixed(speedup(r, g + "/emb", g + "/torch_index_select_out"), 2, "x")});
    }
  }
  fwd.print();

  std::printf("\nDense backward, n = %zu, dim = %lld (a fresh (N, dim) result on both sides; emb "
              "also into a reused buffer)\n",
              kLookups, static_cast<long long>(kGradDim));
  bench::Table dense({"N", "emb us", "emb into buffer us", "embedding_dense_backward us",
                      "torch/emb", "torch/emb into buffer"});
  for (Index rows : kDenseRows) {
    const std::string g = group_name("dense_backward", rows, kGradDim);
    dense.add({std::to_string(rows), us(r, g + "/emb"), us(r, g + "/emb_into"),
               us(r, g + "/torch"), bench::fixed(speedup(r, g + "/emb", g + "/torch"), 2, "x"),
               bench::fixed(speedup(r, g + "/emb_into", g + "/torch"), 2, "x")});
  }
  dense.print();

  std::printf("\nSparse backward, n = %zu, dim = %lld (emb coalesced vs torch + coalesce())\n",
              kLookups, static_cast<long long>(kGradDim));
  bench::Table sparse({"N", "emb us", "torch coalesced us", "torch uncoalesced us",
                       "torch coalesced/emb", "torch uncoalesced/emb"});
  for (Index rows : kSparseRows) {
    const std::string g = group_name("sparse_backward", rows, kGradDim);
    sparse.add({std::to_string(rows), us(r, g + "/emb"), us(r, g + "/torch_coalesced"),
                us(r, g + "/torch_uncoalesced"),
                bench::fixed(speedup(r, g + "/emb", g + "/torch_coalesced"), 2, "x"),
                bench::fixed(speedup(r, g + "/emb", g + "/torch_uncoalesced"), 2, "x")});
  }
  sparse.print();
  std::printf("(torch's uncoalesced gradient wraps grad_output and the indices as a sparse "
              "tensor: nothing is summed or sorted\nuntil coalesce(), which an optimizer step "
              "does first.)\n");

  std::printf("\nEmbeddingBag forward, %zu bags of %lld, dim = %lld\n", kBags,
              static_cast<long long>(kBagLength), static_cast<long long>(kBagDim));
  bench::Table bag({"N", "mode", "emb GB/s", "at::embedding_bag GB/s", "torch/emb"});
  for (Index rows : kBagRows) {
    for (emb::BagMode mode : kBagModes) {
      const std::string g = group_name("bag", rows, kBagDim) + "/" + emb::to_string(mode);
      bag.add({std::to_string(rows), emb::to_string(mode), bench::gbps(bench::find(r, g + "/emb")),
               bench::gbps(bench::find(r, g + "/torch")),
               bench::fixed(speedup(r, g + "/emb", g + "/torch"), 2, "x")});
    }
  }
  bag.print();
}

}  // namespace

int main(int argc, char** argv) {
  const bench::Options options = bench::take_options(argc, argv);
  g_min_time = options.full ? 0.3 : 0.1;
  at::set_num_threads(1);
  emb::set_num_threads(1);
  register_all();
  return bench::run(argc, argv, &summarise);
}
