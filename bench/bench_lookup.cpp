// bench_lookup — emb's main benchmark: why a lookup beats a one-hot product, and how close the
// lookup runs to the memory system's limit. Every ratio in the summary printed at the end
// comes from cases measured side by side in this one process:
//
//   forward    emb's lookup beside a memcpy of the same bytes and a plain per-row-memcpy
//              gather with bounds checks (PyTorch's index_select method), for tables from
//              cache-resident to ~1 GiB, uniform and Zipf-skewed indices; emb without
//              prefetch, with 2 MiB pages, and max_norm beside the plain lookup;
//   threads    one thread against two on a DRAM-resident table;
//   one-hot    lookup vs dense one-hot GEMM vs sparse one-hot product (the seeds' comparison),
//              with the one-hot build counted and not.
//
// Default mode takes about a minute; --full runs every case (see scripts/bench.sh).
// --plot_dir=DIR writes lookup_vs_onehot.dat and .gp (speed-up against N, one line per dim).
#include <emb/embedding.hpp>
#include <emb/one_hot.hpp>

#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <Eigen/SparseCore>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "bench_report.hpp"

namespace {

using emb::Index;
using emb::Matrix;
using T = float;

constexpr std::size_t kLookups = 4096;          // n per iteration
constexpr std::size_t kThreadLookups = 65536;   // n per iteration of the thread cases
constexpr std::size_t kGiB = std::size_t{1} << 30;

enum class Dist { Uniform, Zipf };
const char* name_of(Dist d) { return d == Dist::Uniform ? "uniform" : "zipf"; }

// ---------------------------------------------------------------------------------------------
// Fixtures kept between cases: one table at a time (the largest is 1 GiB), index pools, buffers.

struct TableSlot {
  Index rows = 0;
  Index dim = 0;
  std::unique_ptr<emb::Embedding<T>> table;
  bool huge_tried = false;
  bool huge = false;
  std::size_t huge_bytes = 0;
};
TableSlot g_slot;
std::map<std::string, std::pair<bool, std::size_t>> g_huge_report;  // name -> (advised, bytes)

emb::Embedding<T>& table_for(Index rows, Index dim) {
  if (!g_slot.table || g_slot.rows != rows || g_slot.dim != dim) {
    g_slot.table.reset();  // free the old table before the new one is built
    Matrix<T> w(rows, dim);
    T* p = w.data();
    const auto size = static_cast<std::size_t>(w.size());
    for (std::size_t i = 0; i < size; ++i) p[i] = static_cast<T>(i % 1021) * T(1e-3);
    g_slot = TableSlot{};
    g_slot.rows = rows;
    g_slot.dim = dim;
    g_slot.table = std::make_unique<emb::Embedding<T>>(
        emb::Embedding<T>::from_pretrained(std::move(w)));
  }
  return *g_slot.table;
}

emb::Embedding<T>& huge_table_for(Index rows, Index dim, const std::string& group) {
  emb::Embedding<T>& table = table_for(rows, dim);
  if (!g_slot.huge_tried) {
    g_slot.huge_tried = true;
    g_slot.huge = table.use_huge_pages();
    const auto bytes = static_cast<std::size_t>(table.weight().size()) * sizeof(T);
    g_slot.huge_bytes = emb::detail::huge_page_bytes(table.weight().data(), bytes);
    g_huge_report[group] = {g_slot.huge, g_slot.huge_bytes};
  }
  return table;
}

std::vector<Index> make_pool(Index rows, Dist dist, std::size_t count, std::uint64_t seed) {
  return bench::index_pool(rows, dist == Dist::Zipf, count, seed);
}

// Large enough that a DRAM-sized table is not re-read from cache between iterations.
std::size_t pool_size(Index rows, Index dim) {
  const auto table_bytes = static_cast<std::size_t>(rows * dim) * sizeof(T);
  return table_bytes >= (std::size_t{64} << 20) ? std::size_t{1} << 20 : std::size_t{1} << 16;
}

const std::vector<Index>& pool_for(Index rows, Dist dist, std::size_t size) {
  static std::map<std::tuple<Index, int, std::size_t>, std::vector<Index>> pools;
  auto key = std::make_tuple(rows, static_cast<int>(dist), size);
  auto it = pools.find(key);
  if (it == pools.end()) {
    if (pools.size() > 4) pools.clear();
    it = pools.emplace(key, make_pool(rows, dist, size, 42 + static_cast<std::uint64_t>(rows)))
             .first;
  }
  return it->second;
}

Matrix<T>& out_buffer(std::size_t n, Index dim) {
  static Matrix<T> out;
  if (out.rows() != static_cast<Index>(n) || out.cols() != dim) {
    out.resize(static_cast<Index>(n), dim);
    out.setZero();
  }
  return out;
}

void set_counters(benchmark::State& state, std::size_t n, Index dim) {
  const auto items = static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(n);
  state.SetItemsProcessed(items);
  state.SetBytesProcessed(items * dim * static_cast<std::int64_t>(sizeof(T)));
}

// PyTorch's index_select on a contiguous 2-D tensor: check each index, then one memcpy call of
// the row's bytes. noinline keeps the row size a run-time value, as it is there.
__attribute__((noinline)) void per_row_memcpy_gather(const T* table, Index rows, Index dim,
                                                     emb::IndexSpan idx, T* out) {
  const std::size_t row_bytes = static_cast<std::size_t>(dim) * sizeof(T);
  for (std::size_t i = 0; i < idx.size(); ++i) {
    const Index k = idx[i];
    if (k < 0 || k >= rows) throw std::out_of_range("index out of range in self");
    std::memcpy(out + static_cast<Index>(i) * dim, table + k * dim, row_bytes);
  }
}

// ---------------------------------------------------------------------------------------------
// Registration. Names: <group>/<dist>/N:<rows>/dim:<dim>/<variant>.

std::string group_name(const char* group, Dist dist, Index rows, Index dim) {
  return std::string(group) + "/" + name_of(dist) + "/N:" + std::to_string(rows) +
         "/dim:" + std::to_string(dim);
}

double g_min_time = 0.1;

benchmark::internal::Benchmark* add(const std::string& name,
                                    std::function<void(benchmark::State&)> fn) {
  return benchmark::RegisterBenchmark(name.c_str(), [fn](benchmark::State& s) { fn(s); })
      ->UseRealTime()
      ->MinTime(g_min_time)
      ->Unit(benchmark::kMicrosecond);
}

void register_forward(Dist dist, Index rows, Index dim, bool full) {
  const std::string g = group_name("forward", dist, rows, dim);
  const std::size_t n = kLookups;
  const auto table_bytes = static_cast<std::size_t>(rows * dim) * sizeof(T);
  const bool dram = table_bytes >= emb::detail::prefetch_min_table_bytes();

  add(g + "/memcpy", [=](benchmark::State& state) {
    const std::size_t bytes = n * static_cast<std::size_t>(dim) * sizeof(T);
    static std::vector<char> src;
    src.assign(bytes, 1);
    Matrix<T>& out = out_buffer(n, dim);
    for (auto _ : state) {
      std::memcpy(out.data(), src.data(), bytes);
      benchmark::ClobberMemory();
    }
    set_counters(state, n, dim);
  });
  add(g + "/per_row_memcpy", [=](benchmark::State& state) {
    emb::Embedding<T>& table = table_for(rows, dim);
    bench::Batches batches{pool_for(rows, dist, pool_size(rows, dim)), n};
    Matrix<T>& out = out_buffer(n, dim);
    for (auto _ : state) {
      per_row_memcpy_gather(table.weight().data(), rows, dim, batches(), out.data());
      benchmark::ClobberMemory();
    }
    set_counters(state, n, dim);
  });
  add(g + "/emb", [=](benchmark::State& state) {
    emb::Embedding<T>& table = table_for(rows, dim);
    bench::Batches batches{pool_for(rows, dist, pool_size(rows, dim)), n};
    Matrix<T>& out = out_buffer(n, dim);
    for (auto _ : state) {
      table.forward(batches(), out);
      benchmark::ClobberMemory();
    }
    set_counters(state, n, dim);
  });
  if (dram) {
    // The same checked gather with prefetch switched off: what the prefetch alone adds.
    add(g + "/emb_no_prefetch", [=](benchmark::State& state) {
      emb::Embedding<T>& table = table_for(rows, dim);
      bench::Batches batches{pool_for(rows, dist, pool_size(rows, dim)), n};
      Matrix<T>& out = out_buffer(n, dim);
      for (auto _ : state) {
        emb::detail::gather_rows("bench", table.weight().data(), rows, dim, batches(), out.data(),
                                 dim, emb::detail::GatherPlan{0, 1});
        benchmark::ClobberMemory();
      }
      set_counters(state, n, dim);
    });
  }
  if (table_bytes <= (std::size_t{64} << 20) && (full || rows <= 1000)) {
    // max_norm rewrites looked-up rows at the first calls; afterwards each call measures every
    // distinct row and rescales few, the steady state of training with max_norm.
    add(g + "/emb_max_norm", [=](benchmark::State& state) {
      emb::Embedding<T>& table = table_for(rows, dim);
      bench::Batches batches{pool_for(rows, dist, pool_size(rows, dim)), n};
      Matrix<T>& out = out_buffer(n, dim);
      auto renorm = emb::Embedding<T>::from_pretrained(
          table.weight(), emb::FromPretrainedOptions().max_norm(1.0));
      for (auto _ : state) {
        renorm.forward(batches(), out);
        benchmark::ClobberMemory();
      }
      set_counters(state, n, dim);
    });
  }
  if (table_bytes >= kGiB / 2 && dist == Dist::Uniform) {
    // Threads on the same DRAM table, with a call large enough to split.
    // Best of five: a parallel region waits for its slowest thread, so one thread delayed by
    // other work on the machine spoils a whole measurement.
    for (int threads : {1, 2}) {
      bench::best_of(add(g + "/emb_threads:" + std::to_string(threads), [=](benchmark::State& state) {
        emb::Embedding<T>& table = table_for(rows, dim);
        bench::Batches batches{pool_for(rows, dist, pool_size(rows, dim)), kThreadLookups};
        Matrix<T>& out = out_buffer(kThreadLookups, dim);
        emb::set_num_threads(threads);
        for (auto _ : state) {
          table.forward(batches(), out);
          benchmark::ClobberMemory();
        }
        emb::set_num_threads(1);
        set_counters(state, kThreadLookups, dim);
      }), 5);
    }
  }
}

// Registered after every other case on the same table: moves it to 2 MiB pages for good.
void register_huge_pages(Dist dist, Index rows, Index dim) {
  const std::string g = group_name("forward", dist, rows, dim);
  const std::size_t n = kLookups;
  add(g + "/emb_huge_pages", [=](benchmark::State& state) {
    emb::Embedding<T>& table = huge_table_for(rows, dim, g);
    bench::Batches batches{pool_for(rows, dist, pool_size(rows, dim)), n};
    Matrix<T>& out = out_buffer(n, dim);
    for (auto _ : state) {
      table.forward(batches(), out);
      benchmark::ClobberMemory();
    }
    set_counters(state, n, dim);
  });
}

// The seeds' comparison on one fixed batch: lookup, one-hot (n, N) times the (N, dim) table
// dense and sparse, with the one-hot matrix built inside the timed loop or before it.
void register_one_hot(Index rows, Index dim) {
  const std::string g = group_name("onehot", Dist::Uniform, rows, dim);
  const std::size_t n = kLookups;
  const auto batch = [=] {
    const auto& pool = pool_for(rows, Dist::Uniform, std::size_t{1} << 16);
    return std::vector<Index>(pool.begin(), pool.begin() + static_cast<std::ptrdiff_t>(n));
  };
  add(g + "/lookup", [=](benchmark::State& state) {
    emb::Embedding<T>& table = table_for(rows, dim);
    const std::vector<Index> idx = batch();
    Matrix<T>& out = out_buffer(n, dim);
    for (auto _ : state) {
      table.forward(idx, out);
      benchmark::ClobberMemory();
    }
    set_counters(state, n, dim);
  });
  add(g + "/dense_gemm", [=](benchmark::State& state) {
    emb::Embedding<T>& table = table_for(rows, dim);
    const Matrix<T> one_hot = emb::one_hot<T>(batch(), rows);
    Matrix<T>& out = out_buffer(n, dim);
    for (auto _ : state) {
      out.noalias() = one_hot * table.weight();
      benchmark::ClobberMemory();
    }
    set_counters(state, n, dim);
  });
  add(g + "/dense_gemm_with_build", [=](benchmark::State& state) {
    emb::Embedding<T>& table = table_for(rows, dim);
    const std::vector<Index> idx = batch();
    Matrix<T>& out = out_buffer(n, dim);
    for (auto _ : state) {
      const Matrix<T> one_hot = emb::one_hot<T>(idx, rows);
      out.noalias() = one_hot * table.weight();
      benchmark::ClobberMemory();
    }
    set_counters(state, n, dim);
  });
  add(g + "/sparse", [=](benchmark::State& state) {
    emb::Embedding<T>& table = table_for(rows, dim);
    const auto one_hot = emb::one_hot_sparse<T>(batch(), rows);
    Matrix<T>& out = out_buffer(n, dim);
    for (auto _ : state) {
      out.noalias() = one_hot * table.weight();
      benchmark::ClobberMemory();
    }
    set_counters(state, n, dim);
  });
  add(g + "/sparse_with_build", [=](benchmark::State& state) {
    emb::Embedding<T>& table = table_for(rows, dim);
    const std::vector<Index> idx = batch();
    Matrix<T>& out = out_buffer(n, dim);
    for (auto _ : state) {
      const auto one_hot = emb::one_hot_sparse<T>(idx, rows);
      out.noalias() = one_hot * table.weight();
      benchmark::ClobberMemory();
    }
    set_counters(state, n, dim);
  });
}

// Rows of a ~1 GiB table of this width.
Index gib_rows(Index dim) {
  return static_cast<Index>(kGiB / (static_cast<std::size_t>(dim) * sizeof(T)));
}

struct Plan {
  std::vector<Index> forward_rows;
  std::vector<Index> forward_dims;
  std::vector<Dist> dists;
  std::vector<Index> onehot_rows;
  std::vector<Index> onehot_dims;
};
Plan g_plan;

void register_all(bool full) {
  g_plan.forward_dims = {16, 64, 128, 512};
  g_plan.onehot_rows = {100, 1000, 10000};
  g_plan.onehot_dims = {16, 64, 256};
  if (full) {
    g_plan.forward_rows = {100, 1000, 10000, 100000, 1000000, 0};  // 0: ~1 GiB
    g_plan.dists = {Dist::Uniform, Dist::Zipf};
  } else {
    g_plan.forward_rows = {1000, 100000, 0};
    g_plan.dists = {Dist::Uniform, Dist::Zipf};
  }
  for (Index dim : g_plan.forward_dims) {
    for (Index rows : g_plan.forward_rows) {
      for (Dist dist : g_plan.dists) {
        // Default mode keeps Zipf for the DRAM-sized tables, where skew changes the picture.
        if (!full && dist == Dist::Zipf && rows != 0) continue;
        register_forward(dist, rows == 0 ? gib_rows(dim) : rows, dim, full);
      }
    }
    for (Dist dist : g_plan.dists) register_huge_pages(dist, gib_rows(dim), dim);
  }
  for (Index dim : g_plan.onehot_dims) {
    for (Index rows : g_plan.onehot_rows) register_one_hot(rows, dim);
  }
}

// ---------------------------------------------------------------------------------------------
// The summary.

std::string g_plot_dir;

std::string mib(Index rows, Index dim) {
  const double m = static_cast<double>(rows * dim) * sizeof(T) / (1024.0 * 1024.0);
  return bench::fixed(m, m < 1.0 ? 2 : 0);
}

void summarise(const std::map<std::string, bench::Result>& r) {
  using bench::find;
  using bench::speedup;
  std::printf("\n=== Summary: emb lookup, n = %zu per call, float ===\n", kLookups);
  std::printf("GB/s = payload n*dim*4 bytes per second. Ratios are of times measured in this run:\n"
              "CPU time of the measuring thread, wall time for the thread cases.\n\n");

  bench::Table fwd({"case", "table MiB", "emb GB/s", "emb/memcpy", "emb/per-row",
                    "no-prefetch/per-row", "huge-pages/per-row", "max_norm time"});
  std::optional<double> p1_min, p2, p3_min, p7_max;
  for (Dist dist : g_plan.dists) {
    for (Index dim : g_plan.forward_dims) {
      for (Index rows0 : g_plan.forward_rows) {
        const Index rows = rows0 == 0 ? gib_rows(dim) : rows0;
        const std::string g = group_name("forward", dist, rows, dim);
        if (!find(r, g + "/emb")) continue;
        const auto vs_memcpy = speedup(r, g + "/emb", g + "/memcpy");
        const auto vs_row = speedup(r, g + "/emb", g + "/per_row_memcpy");
        const auto nopf = speedup(r, g + "/emb_no_prefetch", g + "/per_row_memcpy");
        const auto huge = speedup(r, g + "/emb_huge_pages", g + "/per_row_memcpy");
        const auto maxn = speedup(r, g + "/emb", g + "/emb_max_norm");
        fwd.add({std::string(name_of(dist)) + " N=" + std::to_string(rows) + " dim=" +
                     std::to_string(dim),
                 mib(rows, dim), bench::gbps(find(r, g + "/emb")), bench::fixed(vs_memcpy),
                 bench::fixed(vs_row), bench::fixed(nopf), bench::fixed(huge),
                 bench::fixed(maxn, 2, "x")});
        if (dist != Dist::Uniform) continue;
        if (rows == 1000 && dim >= 64 && vs_memcpy) {
          p1_min = std::min(p1_min.value_or(1e9), *vs_memcpy);
        }
        if (rows == 1000 && dim == 16) p2 = vs_memcpy;
        if (rows0 == 0 && dim <= 128 && vs_row) {
          const double best = std::max(*vs_row, huge.value_or(0.0));
          p3_min = std::min(p3_min.value_or(1e9), best);
        }
        if (rows == 1000 && maxn) p7_max = std::max(p7_max.value_or(0.0), *maxn);
      }
    }
  }
  std::printf("Forward (emb/X = how many times faster emb's lookup is than X; max_norm time = "
              "max_norm forward / plain forward)\n");
  fwd.print();
  for (const auto& [group, advice] : g_huge_report) {
    std::printf("  huge pages %s: advised=%s, AnonHugePages in the table's mappings %zu MiB\n",
                group.c_str(), advice.first ? "yes" : "no", advice.second >> 20);
  }

  std::printf("\nThreads (n = %zu per call, ~1 GiB table, uniform, best of 5; OpenMP %s)\n",
              kThreadLookups,
              emb::parallel_enabled() ? "on" : "OFF: compiled without -fopenmp");
  bench::Table thr({"case", "1 thread GB/s", "2 threads GB/s", "2 threads / 1"});
  std::optional<double> p4_min;
  for (Index dim : g_plan.forward_dims) {
    const std::string g = group_name("forward", Dist::Uniform, gib_rows(dim), dim);
    const auto ratio = speedup(r, g + "/emb_threads:2", g + "/emb_threads:1");
    if (!ratio) continue;
    thr.add({"dim=" + std::to_string(dim), bench::gbps(find(r, g + "/emb_threads:1")),
             bench::gbps(find(r, g + "/emb_threads:2")), bench::fixed(ratio, 2, "x")});
    if (dim <= 128 && emb::parallel_enabled()) p4_min = std::min(p4_min.value_or(1e9), *ratio);
  }
  thr.print();
  if (!emb::parallel_enabled()) {
    std::printf("(built without OpenMP: both cases ran on one thread; P4 is not measured)\n");
  } else if (!p4_min) {
    std::printf("(no thread case in this run)\n");
  }

  std::printf("\nLookup vs one-hot product (uniform, one batch; speed-up = time of the product / "
              "time of the lookup)\n");
  bench::Table oh({"N", "dim", "lookup GB/s", "vs dense GEMM", "dense+build", "vs sparse",
                   "sparse+build"});
  std::string dat = "# N dim dense dense_with_build sparse sparse_with_build\n";
  for (Index dim : g_plan.onehot_dims) {
    for (Index rows : g_plan.onehot_rows) {
      const std::string g = group_name("onehot", Dist::Uniform, rows, dim);
      if (!find(r, g + "/lookup")) continue;
      const auto d = speedup(r, g + "/lookup", g + "/dense_gemm");
      const auto db = speedup(r, g + "/lookup", g + "/dense_gemm_with_build");
      const auto s = speedup(r, g + "/lookup", g + "/sparse");
      const auto sb = speedup(r, g + "/lookup", g + "/sparse_with_build");
      oh.add({std::to_string(rows), std::to_string(dim), bench::gbps(find(r, g + "/lookup")),
              bench::readable(d), bench::readable(db), bench::readable(s), bench::readable(sb)});
      dat += std::to_string(rows) + " " + std::to_string(dim) + " " + bench::fixed(d, 3) + " " +
             bench::fixed(db, 3) + " " + bench::fixed(s, 3) + " " + bench::fixed(sb, 3) + "\n";
    }
    dat += "\n\n";  // one gnuplot data block per dim
  }
  oh.print();

  std::printf("\nTargets (README.md, Performance)\n");
  bench::Table t({"target", "measured", "goal", "verdict"});
  t.add({"P1 forward, L2 table, dim 64-512: emb/memcpy (worst dim)", bench::fixed(p1_min),
         ">= 1.0", bench::verdict(p1_min, 1.0, true)});
  t.add({"P2 forward, L2 table, dim 16: emb/memcpy", bench::fixed(p2), ">= 0.8",
         bench::verdict(p2, 0.8, true)});
  t.add({"P3 forward, ~1 GiB table, dim 16-128: emb/per-row (worst dim, best of 4K/2M pages)",
         bench::fixed(p3_min), ">= 1.3", bench::verdict(p3_min, 1.3, true)});
  t.add({"P4 forward, 2 threads / 1, DRAM table (worst dim 16-128)", bench::fixed(p4_min),
         ">= 1.6", bench::verdict(p4_min, 1.6, true)});
  t.add({"P7 max_norm forward / plain forward, N=1000 (worst dim)", bench::fixed(p7_max),
         "<= 1.5", bench::verdict(p7_max, 1.5, false)});
  t.print();
  std::printf("(P5, P6: bench_backward; P8: bench_bag.)\n");

  if (!g_plot_dir.empty()) {
    std::ofstream(g_plot_dir + "/lookup_vs_onehot.dat") << dat;
    std::ofstream gp(g_plot_dir + "/lookup_vs_onehot.gp");
    gp << "set terminal svg size 900,560 dynamic\n"
       << "set output '" << g_plot_dir << "/lookup_vs_onehot.svg'\n"
       << "set title 'emb: speed-up of the lookup over the dense one-hot GEMM (n = "
       << kLookups << ")'\n"
       << "set datafile missing '-'\nset logscale xy\nset xlabel 'N (rows of the table)'\n"
       << "set ylabel 'time of one-hot GEMM / time of lookup'\nset key left top\nset grid\n"
       << "plot ";
    for (std::size_t i = 0; i < g_plan.onehot_dims.size(); ++i) {
      gp << (i ? ", " : "") << "'" << g_plot_dir << "/lookup_vs_onehot.dat' index " << i
         << " using 1:3 with linespoints title 'dim " << g_plan.onehot_dims[i] << "'";
    }
    gp << "\n";
    std::printf("\nPlot data: %s/lookup_vs_onehot.dat (gnuplot script lookup_vs_onehot.gp)\n",
                g_plot_dir.c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  const bench::Options options = bench::take_options(argc, argv);
  g_plot_dir = options.plot_dir;
  g_min_time = options.full ? 0.3 : 0.1;
  Eigen::setNbThreads(1);  // the products run on one thread, like the lookup they are compared to
  register_all(options.full);
  return bench::run(argc, argv, &summarise);
}
