// bench_mpi — the sharded bag table over MPI (performance target D1): a training step's forward
// and backward of a ShardedEmbeddingBag on P ranks against one process doing every rank's batch
// on the whole table, and the bytes each rank sends per step beside the model's count.
//
//   mpirun -np 2 build/release/bench/bench_mpi        (root: add --allow-run-as-root)
//
// The table is PERF.md's Part 2 table: 4e6 rows of 64 floats (1 GiB; each of 2 ranks holds
// half), bags of 20 uniform ids, 205 bags (4100 ids) per rank per step, Sum mode. Each step
// takes the next batch of a pool, so rows come from DRAM. The sharded case runs on every rank
// and is timed on rank 0's wall clock (a step is collective: no rank finishes before the
// others); for the one-process case rank 0 works alone while the other ranks sleep. Both cases
// run a fixed number of iterations, so every rank makes the same collective calls. Bytes
// processed = the rows of every rank's batch (P * 4100 * 64 * 4 bytes per step), items = ids.
#include <emb/dist/mpi.hpp>
#include <emb/embedding_bag.hpp>

#include <benchmark/benchmark.h>
#include <mpi.h>

#include <Eigen/Core>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "bench_report.hpp"

namespace {

using emb::Index;
using emb::Matrix;
using T = float;

constexpr Index kRows = 4'000'000;
constexpr Index kDim = 64;
constexpr std::size_t kBagLength = 20;
constexpr std::size_t kBags = 205;  // 4100 ids per rank per step
constexpr std::size_t kPool = 32;   // batches rotated through
constexpr int kIterations = 200;
constexpr int kRepetitions = 5;
constexpr std::uint64_t kSeed = 1;

int g_rank = 0;
int g_ranks = 1;

struct Batch {
  std::vector<Index> ids;
  std::vector<Index> offsets;
};

// Rank r's k-th batch: bags of kBagLength uniform ids. Every rank can make every rank's.
Batch make_batch(int rank, std::size_t k) {
  std::mt19937_64 gen(static_cast<std::uint64_t>(rank) * 1'000'003u + k);
  Batch b;
  for (std::size_t bag = 0; bag < kBags; ++bag) {
    b.offsets.push_back(static_cast<Index>(b.ids.size()));
    for (std::size_t i = 0; i < kBagLength; ++i) {
      b.ids.push_back(static_cast<Index>(gen() % static_cast<std::uint64_t>(kRows)));
    }
  }
  return b;
}

const auto kOptions = emb::EmbeddingBagOptions(kRows, kDim).mode(emb::BagMode::Sum);

std::unique_ptr<emb::dist::ShardedEmbeddingBag<T>> g_sharded;
emb::dist::TrafficStats g_traffic;  // per step, rank 0's
bool g_traffic_measured = false;

void set_processed(benchmark::State& state) {
  const auto ids = static_cast<std::int64_t>(g_ranks) * static_cast<std::int64_t>(kBags * kBagLength);
  state.SetItemsProcessed(state.iterations() * ids);
  state.SetBytesProcessed(state.iterations() * ids * kDim * static_cast<std::int64_t>(sizeof(T)));
}

// D1, sharded: forward + backward of this rank's batch on every rank.
void sharded_step(benchmark::State& state) {
  auto& table = *g_sharded;
  std::vector<Batch> pool;
  for (std::size_t k = 0; k < kPool; ++k) pool.push_back(make_batch(g_rank, k));
  const Matrix<T> grad = Matrix<T>::Constant(static_cast<Index>(kBags), kDim, 0.5f);
  table.reset_traffic();
  std::size_t k = 0;
  MPI_Barrier(MPI_COMM_WORLD);
  for (auto _ : state) {
    const Batch& b = pool[k++ % kPool];
    const Matrix<T> pooled = table.forward(b.ids, b.offsets);
    benchmark::DoNotOptimize(pooled.data());
    const emb::SparseGrad<T> g = table.backward(b.ids, b.offsets, grad);
    benchmark::DoNotOptimize(g.values.data());
  }
  const auto steps = static_cast<std::uint64_t>(state.iterations());
  const auto& t = table.traffic();
  g_traffic = {t.ids / steps, t.rows / steps, t.grads / steps, t.control / steps, t.calls / steps};
  g_traffic_measured = true;
  state.counters["sent_bytes_per_step"] = static_cast<double>(t.total()) / static_cast<double>(steps);
  set_processed(state);
}

// Sleeps until rank 0 says it is done, without holding a core (MPI's own waits spin).
void wait_for_rank0() {
  int done = 0;
  MPI_Request request;
  MPI_Irecv(&done, 1, MPI_INT, 0, 7, MPI_COMM_WORLD, &request);
  int finished = 0;
  while (!finished) {
    MPI_Test(&request, &finished, MPI_STATUS_IGNORE);
    if (!finished) {
      const timespec pause{0, 200'000};
      nanosleep(&pause, nullptr);
    }
  }
}

std::unique_ptr<emb::EmbeddingBag<T>> g_whole;

// D1, one process: rank 0 does every rank's batch on the whole table, the others sleep.
void one_process_step(benchmark::State& state) {
  MPI_Barrier(MPI_COMM_WORLD);
  if (g_rank != 0) {
    wait_for_rank0();
    for (auto _ : state) {
    }
    return;
  }
  if (!g_whole) g_whole = std::make_unique<emb::EmbeddingBag<T>>(kOptions, kSeed);
  std::vector<Batch> pool;
  for (std::size_t k = 0; k < kPool; ++k) {
    Batch all;
    for (int r = 0; r < g_ranks; ++r) {
      const Batch b = make_batch(r, k);
      const auto shift = static_cast<Index>(all.ids.size());
      for (Index o : b.offsets) all.offsets.push_back(o + shift);
      all.ids.insert(all.ids.end(), b.ids.begin(), b.ids.end());
    }
    pool.push_back(std::move(all));
  }
  const Matrix<T> grad =
      Matrix<T>::Constant(static_cast<Index>(kBags) * g_ranks, kDim, 0.5f);
  std::size_t k = 0;
  for (auto _ : state) {
    const Batch& b = pool[k++ % kPool];
    const Matrix<T> pooled = g_whole->forward(b.ids, b.offsets);
    benchmark::DoNotOptimize(pooled.data());
    const emb::SparseGrad<T> g = g_whole->backward(b.ids, b.offsets, grad);
    benchmark::DoNotOptimize(g.values.data());
  }
  set_processed(state);
  for (int r = 1; r < g_ranks; ++r) {
    int done = 1;
    MPI_Send(&done, 1, MPI_INT, r, 7, MPI_COMM_WORLD);
  }
}

std::string sharded_name() { return "D1/sharded_bag_step/ranks:" + std::to_string(g_ranks); }
const char* const kOneProcess = "D1/one_process_bag_step";

// The model of a step's traffic per rank (README, "Scale"): with P ranks, n = B * L uniform ids
// per rank and q = 1 - (1 - 1/P)^L the chance that a bag has an id on a given other rank,
//   ids out   8 n (P-1)/P + 8 B (P-1) q      (ids, and one length per partial bag)
//   rows back B (P-1) q d s                  (one pooled partial row per (bag, other owner))
//   grads out B (P-1) q d s
// plus 8 bytes of agreement per call and 8 (P-1) bytes of counts per forward.
struct Model {
  double ids, rows, grads, control;
  double total() const { return ids + rows + grads + control; }
};
Model model(int ranks, double bags, double length, double dim, double value_bytes) {
  const double p = ranks;
  const double q = 1.0 - std::pow(1.0 - 1.0 / p, length);
  const double parts = bags * (p - 1.0) * q;
  return {8.0 * bags * length * (p - 1.0) / p + 8.0 * parts, parts * dim * value_bytes,
          parts * dim * value_bytes, 16.0 + 8.0 * (p - 1.0)};
}

void summarise(const std::map<std::string, bench::Result>& r) {
  const auto sharded = bench::find(r, sharded_name());
  const auto single = bench::find(r, kOneProcess);
  std::optional<double> ratio;
  if (sharded && single && single->real_seconds > 0) {
    ratio = sharded->real_seconds / single->real_seconds;
  }
  const auto us = [](std::optional<bench::Result> x) {
    return x ? bench::fixed(x->real_seconds * 1e6, 0, " us") : std::string("-");
  };
  std::printf("\nSharded bag step (forward + backward), %d ranks, table %lld x %lld float, %zu bags "
              "of %zu ids per rank (wall time per step, fastest of %d)\n",
              g_ranks, static_cast<long long>(kRows), static_cast<long long>(kDim), kBags,
              kBagLength, kRepetitions);
  const auto rate = [](std::optional<bench::Result> x) {
    return x && x->real_seconds > 0 ? bench::fixed(x->bytes / x->real_seconds / 1e9, 2)
                                    : std::string("-");
  };
  bench::Table times({"case", "time per step", "GB/s of rows"});
  times.add({sharded_name(), us(sharded), rate(sharded)});
  times.add({kOneProcess, us(single), rate(single)});
  times.print();

  if (g_traffic_measured) {
    const Model m = model(g_ranks, kBags, kBagLength, kDim, sizeof(T));
    std::printf("\nBytes rank 0 sends to other ranks per step, measured and modelled\n");
    bench::Table traffic({"part", "measured", "model"});
    const auto row = [&](const char* what, std::uint64_t measured, double modelled) {
      traffic.add({what, std::to_string(measured), bench::fixed(modelled, 0)});
    };
    row("ids out (with bag lengths)", g_traffic.ids, m.ids);
    row("pooled rows back", g_traffic.rows, m.rows);
    row("gradients out", g_traffic.grads, m.grads);
    row("control (counts, agreement)", g_traffic.control, m.control);
    row("total", g_traffic.ids + g_traffic.rows + g_traffic.grads + g_traffic.control, m.total());
    traffic.print();
  }

  std::printf("\n");
  bench::Table verdict({"target", "measured", "goal", "verdict"});
  verdict.add({"D1 sharded step on 2 ranks / one process doing both batches",
               g_ranks == 2 ? bench::fixed(ratio, 2, "x") : "- (needs 2 ranks)", "<= 1.5",
               g_ranks == 2 ? bench::verdict(ratio, 1.5, false) : "not measured"});
  verdict.print();
}

// Rank 0 reports; the other ranks run the same cases silently.
class Silent : public benchmark::BenchmarkReporter {
 public:
  bool ReportContext(const Context&) override { return true; }
  void ReportRuns(const std::vector<Run>&) override {}
};

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_ranks);
  (void)bench::take_options(argc, argv);
  if (g_rank != 0) {
    // Only rank 0 writes results: the others drop --benchmark_out (the same file otherwise).
    int kept = 1;
    for (int i = 1; i < argc; ++i) {
      if (std::string(argv[i]).rfind("--benchmark_out", 0) != 0) argv[kept++] = argv[i];
    }
    argc = kept;
    argv[argc] = nullptr;
  }
  benchmark::Initialize(&argc, argv);
  int status = 0;
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
    status = 1;
  } else {
    g_sharded = std::make_unique<emb::dist::ShardedEmbeddingBag<T>>(emb::dist::Communicator(),
                                                                    kOptions, kSeed);
    // Fixed iterations and repetitions: every rank runs each case the same number of times.
    bench::best_of(benchmark::RegisterBenchmark(sharded_name().c_str(), sharded_step), kRepetitions)
        ->Iterations(kIterations)
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
    bench::best_of(benchmark::RegisterBenchmark(kOneProcess, one_process_step), kRepetitions)
        ->Iterations(kIterations)
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
    if (g_rank == 0) {
      bench::SummaryReporter reporter(&summarise);
      benchmark::RunSpecifiedBenchmarks(&reporter);
    } else {
      Silent silent;
      benchmark::RunSpecifiedBenchmarks(&silent);
    }
    g_sharded.reset();
    g_whole.reset();
  }
  benchmark::Shutdown();
  MPI_Finalize();
  return status;
}
