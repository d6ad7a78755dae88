// bench_mapped — opening a table by mapping its file against loading it (performance target M1):
// time per open and the resident memory the opened table holds, for a ~1 GiB float table
// (4e6 x 64, as in PERF.md) and a 4 MiB one, as .npy and as safetensors, beside a memcpy of the
// table's bytes (what one copy of it costs). Bytes processed = the table's bytes, items = rows.
//
// The files are written to the temp directory at start (about 2 GiB of disk for the two large
// ones) and removed at the end. They stay in the page cache, so a load is a copy from the cache,
// not a disk read: the fairest case for loading. "map + warm" maps the file and makes every page
// resident (MappedMatrix::warm), what a server does before its first request.
//
// Resident memory is the growth of /proc/self/statm's resident count while one opened table is
// alive, measured once per case outside the timed loop (after returning free heap pages to the
// system, so that an owned table counts its own pages).
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

  std::printf("\n");
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
