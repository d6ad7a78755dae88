// bench_mapped — opening a table by mapping its file against loading it (performance target M1):
// time per open and the resident memory the opened table holds, for a ~1 GiB float table
// (4e6 x 64, as in PERF.md) and a 4 MiB one, as .npy and as safetensors, beside a memcpy of the
// table's bytes (what one copy of it costs). Bytes processed = the table's bytes, items = rows.
//
// Then M2: lookups (n = 4096 uniform ids per call) and Sum bags (bags of 20) on the ~1 GiB table
// built with Embedding::from_mapped / EmbeddingBag::from_mapped once its pages are resident
// (warm()), against the same table owned (from_pretrained of load_npy), in the same run, the
// same id batches, CPU time of the measuring thread. Bytes processed = the rows read.
//
// The files are written to the temp directory at start (about 2 GiB of disk for the two large
// ones) and removed at the end. They stay in the page cache, so a load is a copy from the cache,
// not a disk read: the fairest case for loading. "map + warm" maps the file and makes every page
// resident (MappedMatrix::warm), what a server does before its first request.
//
// Resident memory is the growth of /proc/self/statm's resident count while one opened table is
// alive, measured once per case outside the timed loop (after returning free heap pages to the
// system, so that an owned table counts its own pages).
#include <emb/embedding.hpp>
#include <emb/embedding_bag.hpp>
#include <emb/io/mapped.hpp>
#include <emb/io/npy.hpp>
#ifdef EMB_BENCH_SAFETENSORS
#include <emb/io/safetensors.hpp>
#endif

#include <benchmark/benchmark.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "bench_report.hpp"

namespace {

using emb::Index;
using emb::Matrix;
namespace fs = std::filesystem;

constexpr Index kDim = 64;
struct Size {
  const char* label;
  Index rows;
};
const Size kSizes[] = {{"4MiB", 16'384}, {"1GiB", 4'000'000}};

fs::path g_dir;
std::map<std::string, double> g_resident_mib;  // case -> resident growth of one open table

std::size_t resident_bytes() {
  std::ifstream in("/proc/self/statm");
  std::size_t size = 0, resident = 0;
  in >> size >> resident;
  return resident * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

std::string npy_path(const Size& s) { return (g_dir / (std::string(s.label) + ".npy")).string(); }
#ifdef EMB_BENCH_SAFETENSORS
std::string st_path(const Size& s) {
  return (g_dir / (std::string(s.label) + ".safetensors")).string();
}
#endif

void write_files() {
  g_dir =
      fs::temp_directory_path() / ("emb-bench-mapped-" + std::to_string(std::random_device{}()));
  fs::create_directories(g_dir);
  for (const Size& s : kSizes) {
    Matrix<float> table(s.rows, kDim);
    std::uint64_t x = 0x9e3779b97f4a7c15ull;  // xorshift: fast, and the values do not matter
    for (Index i = 0; i < table.size(); ++i) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      table.data()[i] = static_cast<float>(static_cast<std::int32_t>(x >> 32)) * 1e-9f;
    }
    emb::io::save_npy<float>(npy_path(s), table);
#ifdef EMB_BENCH_SAFETENSORS
    emb::io::save_safetensors<float>(st_path(s), {{"model.embed_tokens.weight", table}});
#endif
  }
}

void account(benchmark::State& state, const Size& s) {
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * s.rows * kDim * 4);
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * s.rows);
}

std::string name(const char* what, const Size& s) { return std::string(what) + "/" + s.label; }

// Runs `open` once untimed to record the resident memory an opened table holds, then times it.
template <class Open>
void measure(benchmark::State& state, const std::string& key, const Size& s, Open open) {
  {
#ifdef __GLIBC__
    // Free heap pages go back to the system first: an owned table must fault its own pages in,
    // not reuse pages an earlier case left resident.
    malloc_trim(0);
#endif
    const std::size_t before = resident_bytes();
    const auto held = open();
    benchmark::DoNotOptimize(&held);
    const std::size_t after = resident_bytes();
    const double mib = after > before ? static_cast<double>(after - before) / (1 << 20) : 0.0;
    g_resident_mib[key] = mib;
    state.counters["resident_MiB"] = mib;
  }
  for (auto _ : state) {
    auto held = open();
    benchmark::DoNotOptimize(&held);
    benchmark::ClobberMemory();
  }
  account(state, s);
}

void BM_MapNpy(benchmark::State& state, Size s) {
  measure(state, name("map_npy", s), s, [&] { return emb::io::map_npy<float>(npy_path(s)); });
}

void BM_MapNpyWarm(benchmark::State& state, Size s) {
  measure(state, name("map_npy+warm", s), s, [&] {
    auto m = emb::io::map_npy<float>(npy_path(s));
    m.warm();
    return m;
  });
}

void BM_LoadNpy(benchmark::State& state, Size s) {
  measure(state, name("load_npy", s), s, [&] { return emb::io::load_npy<float>(npy_path(s)); });
}

#ifdef EMB_BENCH_SAFETENSORS
void BM_SafeTensorsMap(benchmark::State& state, Size s) {
  measure(state, name("safetensors_map", s), s, [&] {
    return emb::io::SafeTensors::open(st_path(s)).map<float>("model.embed_tokens.weight");
  });
}

void BM_SafeTensorsLoad(benchmark::State& state, Size s) {
  measure(state, name("safetensors_load", s), s, [&] {
    return emb::io::SafeTensors::open(st_path(s)).load<float>("model.embed_tokens.weight");
  });
}
#endif

void BM_Memcpy(benchmark::State& state, Size s) {
  const auto bytes = static_cast<std::size_t>(s.rows * kDim) * 4;
  std::vector<char> src(bytes, 1), dst(bytes);
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), bytes);
    benchmark::ClobberMemory();
  }
  account(state, s);
}

// ---- M2: lookups on the mapped table against the owned one -------------------------------

constexpr std::size_t kLookups = 4096;
constexpr Index kBagLength = 20;

// The two tables of each kind (one at a time in memory: about 2 GiB with the page cache).
struct LookupTables {
  std::optional<emb::Embedding<float>> mapped, owned;
  std::optional<emb::EmbeddingBag<float>> mapped_bag, owned_bag;
  std::vector<std::vector<Index>> batches;
  std::vector<Index> offsets;
};
LookupTables g_lookup;

LookupTables& lookup_tables() {
  LookupTables& t = g_lookup;
  if (t.mapped) return t;
  const Size& s = kSizes[1];
  auto m = emb::io::map_npy<float>(npy_path(s));
  m.warm();  // pages resident, as a server makes them before its first request
  t.mapped.emplace(emb::Embedding<float>::from_mapped(std::move(m)));
  t.owned.emplace(emb::Embedding<float>::from_pretrained(emb::io::load_npy<float>(npy_path(s))));
  auto mb = emb::io::map_npy<float>(npy_path(s));
  mb.warm();
  const auto sum = emb::FromPretrainedBagOptions().mode(emb::BagMode::Sum);
  t.mapped_bag.emplace(emb::EmbeddingBag<float>::from_mapped(std::move(mb), sum));
  t.owned_bag.emplace(
      emb::EmbeddingBag<float>::from_pretrained(emb::io::load_npy<float>(npy_path(s)), sum));
  std::mt19937_64 gen(5);
  t.batches.resize(64);  // rotated, so that the rows are not read from cache
  for (auto& b : t.batches) {
    b.resize(kLookups);
    for (auto& k : b) k = static_cast<Index>(gen() % static_cast<std::uint64_t>(s.rows));
  }
  for (std::size_t b = 0; b < kLookups / static_cast<std::size_t>(kBagLength); ++b) {
    t.offsets.push_back(static_cast<Index>(b) * kBagLength);
  }
  return t;
}

void lookup_account(benchmark::State& state) {
  const auto lookups = static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(kLookups);
  state.SetBytesProcessed(lookups * kDim * 4);
  state.SetItemsProcessed(lookups);
}

void BM_Lookup(benchmark::State& state, bool mapped) {
  LookupTables& t = lookup_tables();
  const emb::Embedding<float>& table = mapped ? *t.mapped : *t.owned;
  Matrix<float> out(static_cast<Index>(kLookups), kDim);
  std::size_t next = 0;
  for (auto _ : state) {
    table.forward(t.batches[next], out);
    benchmark::ClobberMemory();
    next = (next + 1) % t.batches.size();
  }
  lookup_account(state);
}

void BM_Bag(benchmark::State& state, bool mapped) {
  LookupTables& t = lookup_tables();
  const emb::EmbeddingBag<float>& bag = mapped ? *t.mapped_bag : *t.owned_bag;
  Matrix<float> out(static_cast<Index>(t.offsets.size()), kDim);
  std::size_t next = 0;
  for (auto _ : state) {
    bag.forward(t.batches[next], t.offsets, out);
    benchmark::ClobberMemory();
    next = (next + 1) % t.batches.size();
  }
  lookup_account(state);
}

void register_all() {
  for (const Size& s : kSizes) {
    const bool large = s.rows > 100'000;
    // Cases that read the whole table: a few iterations of the 1 GiB one are enough.
    const auto slow = [large](benchmark::internal::Benchmark* b) {
      b->Unit(benchmark::kMillisecond);
      if (large) b->Iterations(3);
      return b;
    };
    slow(benchmark::RegisterBenchmark(name("memcpy", s).c_str(), BM_Memcpy, s));
    benchmark::RegisterBenchmark(name("map_npy", s).c_str(), BM_MapNpy, s)
        ->Unit(benchmark::kMicrosecond);
    slow(benchmark::RegisterBenchmark(name("map_npy+warm", s).c_str(), BM_MapNpyWarm, s));
    slow(benchmark::RegisterBenchmark(name("load_npy", s).c_str(), BM_LoadNpy, s));
#ifdef EMB_BENCH_SAFETENSORS
    benchmark::RegisterBenchmark(name("safetensors_map", s).c_str(), BM_SafeTensorsMap, s)
        ->Unit(benchmark::kMicrosecond);
    slow(benchmark::RegisterBenchmark(name("safetensors_load", s).c_str(), BM_SafeTensorsLoad, s));
#endif
  }
  // M2, interleaved so that both sides see the same machine.
  for (int round = 0; round < 2; ++round) {
    const std::string r = "/round:" + std::to_string(round);
    benchmark::RegisterBenchmark(("lookup/mapped" + r).c_str(), BM_Lookup, true)
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("lookup/owned" + r).c_str(), BM_Lookup, false)
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("bag/mapped" + r).c_str(), BM_Bag, true)
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("bag/owned" + r).c_str(), BM_Bag, false)
        ->Unit(benchmark::kMicrosecond);
  }
}

std::optional<double> wall_ms(const std::map<std::string, bench::Result>& r, const std::string& n) {
  const auto found = bench::find(r, n);
  if (!found) return std::nullopt;
  return found->real_seconds * 1e3;
}

std::optional<double> resident(const std::string& n) {
  const auto it = g_resident_mib.find(n);
  if (it == g_resident_mib.end()) return std::nullopt;
  return it->second;
}

void summarise(const std::map<std::string, bench::Result>& r) {
  std::printf(
      "\nOpening a float table of %d columns: wall time per open, resident memory of one "
      "opened table\n",
      static_cast<int>(kDim));
  bench::Table table({"case", "4 MiB: ms", "4 MiB: MiB resident", "1 GiB: ms",
                      "1 GiB: MiB resident", "1 GiB: load time / this"});
  const char* cases[] = {"map_npy",  "safetensors_map",  "map_npy+warm",
                         "load_npy", "safetensors_load", "memcpy"};
  for (const char* c : cases) {
    const std::string small = name(c, kSizes[0]), large = name(c, kSizes[1]);
    if (!bench::find(r, large) && !bench::find(r, small)) continue;
    const std::string kind = std::string(c).find("safetensors") == 0 ? "safetensors" : "npy";
    std::optional<double> ratio;  // for the ways that map: how many times faster than loading
    if (std::string(c).find("map") != std::string::npos) {
      const auto load =
          wall_ms(r, name(kind == "npy" ? "load_npy" : "safetensors_load", kSizes[1]));
      const auto map = wall_ms(r, large);
      if (load && map && *map > 0) ratio = *load / *map;
    }
    table.add({c, bench::fixed(wall_ms(r, small), 3), bench::fixed(resident(small), 1),
               bench::fixed(wall_ms(r, large), 3), bench::fixed(resident(large), 1),
               ratio ? bench::readable(ratio) : "-"});
  }
  table.print();

  bench::Table verdict({"target", "measured", "goal", "verdict"});
  for (const char* c : {"map_npy", "safetensors_map"}) {
    const std::string large = name(c, kSizes[1]);
    if (!bench::find(r, large)) continue;
    const auto ms = wall_ms(r, large);
    const auto mib = resident(large);
    verdict.add({std::string("M1 ") + c + " of a ~1 GiB table: time", bench::fixed(ms, 3, " ms"),
                 "< 50 ms", bench::verdict(ms, 50.0, false)});
    verdict.add({std::string("M1 ") + c + " of a ~1 GiB table: resident memory",
                 bench::fixed(mib, 1, " MiB"), "< 64 MiB", bench::verdict(mib, 64.0, false)});
  }

  // M2: the mapped table's throughput over the owned one's (CPU time; the better round of each).
  const auto best = [&](const std::string& what) -> std::optional<double> {
    std::optional<double> t;
    for (int round = 0; round < 2; ++round) {
      const auto found = bench::find(r, what + "/round:" + std::to_string(round));
      if (found && (!t || found->cpu_seconds < *t)) t = found->cpu_seconds;
    }
    return t;
  };
  bench::Table m2({"case (1 GiB table, pages resident)", "mapped GB/s", "owned GB/s",
                   "mapped / owned"});
  const double bytes = static_cast<double>(kLookups) * kDim * 4;
  for (const char* what : {"lookup", "bag"}) {
    const auto mapped = best(std::string(what) + "/mapped");
    const auto owned = best(std::string(what) + "/owned");
    if (!mapped || !owned) continue;
    const double ratio = *owned / *mapped;
    m2.add({std::string(what) + (std::string(what) == "bag" ? " sum, bags of 20" : ", n = 4096"),
            bench::fixed(bytes / *mapped / 1e9), bench::fixed(bytes / *owned / 1e9),
            bench::fixed(ratio)});
    verdict.add({std::string("M2 ") + what + " on the mapped table / owned", bench::fixed(ratio),
                 ">= 0.95", bench::verdict(ratio, 0.95, true)});
  }
  std::printf("\n");
  m2.print();
  std::printf("\n");
  verdict.print();
}

}  // namespace

int main(int argc, char** argv) {
  bench::take_options(argc, argv);
  write_files();
  register_all();
  const int rc = bench::run(argc, argv, &summarise);
  std::error_code ec;
  fs::remove_all(g_dir, ec);
  return rc;
}
