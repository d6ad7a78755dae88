// bench_quant — bags on tables as the field stores them (targets Q1-Q5): the same rows stored as
// float, bfloat16, half, Int8, Int4 and Int2, pooled by Sum bags of 20 ids, 4096 ids per call,
// on a table in L2 (1000 x 64) and a ~1 GiB one (4e6 x 64 floats; uniform and Zipf-skewed ids,
// on 4 KiB pages, then every storage moved to 2 MiB pages), beside a memcpy of the float rows'
// bytes. When CMake finds libtorch, PyTorch's own
// quantized::embedding_bag_{byte,4bit,2bit}_rowwise_offsets run on the same bytes (emb's
// packed table, which is PyTorch's layout), called through the c10 dispatcher, one thread.
//
// items = ids looked up; bytes = ids x the bytes of one stored row (what a lookup moves:
// 256 float, 128 bfloat16 / half, 72 Int8, 36 Int4, 20 Int2), so GB/s is the row traffic.
// The tables are built one storage at a time (the float one stays: it is the source of the
// others), at most ~1.5 GiB at once.
//
//   bench_quant           default: about 30 s
//   bench_quant --full    longer timing per case
#include <emb/embedding.hpp>
#include <emb/embedding_bag.hpp>
#include <emb/quantized.hpp>

#include <benchmark/benchmark.h>

#ifdef EMB_BENCH_TORCH
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#endif

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bench_report.hpp"

namespace {

using emb::Index;
using emb::Matrix;

constexpr Index kDim = 64;
constexpr std::size_t kIds = 4096;   // ids per call
constexpr Index kBagLength = 20;     // 204 bags of 20 and one of 16
constexpr Index kL2Rows = 1000;      // 256 KiB of float rows: in L2 on any recent core
constexpr Index kDramRows = 4'000'000;  // 1.024e9 bytes of float rows

enum class Dist { Uniform, Zipf };
const char* name_of(Dist d) { return d == Dist::Uniform ? "uniform" : "zipf"; }

enum class Storage { Float, BFloat16, Half, Int8, Int4, Int2 };
const Storage kStorages[] = {Storage::Float, Storage::BFloat16, Storage::Half,
                             Storage::Int8,  Storage::Int4,     Storage::Int2};
const char* name_of(Storage s) {
  switch (s) {
    case Storage::Float: return "float";
    case Storage::BFloat16: return "bfloat16";
    case Storage::Half: return "half";
    case Storage::Int8: return "int8";
    case Storage::Int4: return "int4";
    case Storage::Int2: return "int2";
  }
  return "?";
}
bool quantized(Storage s) { return s == Storage::Int8 || s == Storage::Int4 || s == Storage::Int2; }
emb::QuantBits bits_of(Storage s) {
  return s == Storage::Int8 ? emb::QuantBits::Int8
                            : s == Storage::Int4 ? emb::QuantBits::Int4 : emb::QuantBits::Int2;
}
std::size_t row_bytes(Storage s) {
  switch (s) {
    case Storage::Float: return kDim * 4;
    case Storage::BFloat16:
    case Storage::Half: return kDim * 2;
    default: return emb::QuantizedTable::row_bytes(kDim, bits_of(s));
  }
}

// ---------------------------------------------------------------------------------------------
// Fixtures: the float table of the current size (the source of every other storage) and one
// other storage at a time.

// Where a DRAM table's rows live: ordinary 4 KiB pages, or 2 MiB pages (use_huge_pages()).
enum class Pages { Small, Huge };

struct Tables {
  Index rows = 0;
  bool source_huge = false;
  bool current_huge = false;
  std::unique_ptr<emb::EmbeddingBag<float>> source;
  Storage current = Storage::Float;
  std::unique_ptr<emb::EmbeddingBag<float, emb::bfloat16>> bf16;
  std::unique_ptr<emb::EmbeddingBag<float, emb::half>> f16;
  std::unique_ptr<emb::QuantizedEmbeddingBag<float>> quant;
};
Tables g_tables;

// Uniform in [-1, 1), cheap to draw for 256M values.
Matrix<float> source_weights(Index rows) {
  Matrix<float> w(rows, kDim);
  emb::detail::Rng rng(7 + static_cast<std::uint64_t>(rows));
  float* p = w.data();
  const auto size = static_cast<std::size_t>(w.size());
  for (std::size_t i = 0; i < size; ++i) {
    p[i] = static_cast<float>(static_cast<double>(rng.next_u64() >> 40) * 0x1.0p-23 - 1.0);
  }
  return w;
}

// Whether every table the cases on 2 MiB pages used got them (false once one did not).
bool g_huge_ok = true;

Tables& tables_for(Index rows, Storage storage, Pages pages = Pages::Small) {
  Tables& t = g_tables;
  const bool huge = pages == Pages::Huge;
  if (t.rows != rows || (t.source_huge && !huge)) {
    t = Tables{};  // free everything of the other size first
    t.source = std::make_unique<emb::EmbeddingBag<float>>(emb::EmbeddingBag<float>::from_pretrained(
        source_weights(rows), emb::FromPretrainedBagOptions().mode(emb::BagMode::Sum)));
    t.rows = rows;
  }
  if (huge && !t.source_huge) {
    g_huge_ok = t.source->use_huge_pages() && g_huge_ok;
    t.source_huge = true;
  }
  if (storage != Storage::Float &&
      (t.current != storage || t.current_huge != huge || (!t.bf16 && !t.f16 && !t.quant))) {
    t.bf16.reset();
    t.f16.reset();
    t.quant.reset();
    const auto opts = emb::FromPretrainedBagOptions().mode(emb::BagMode::Sum);
    const auto w = t.source->weight();
    if (storage == Storage::BFloat16) {
      Matrix<emb::bfloat16> m = w.cast<emb::bfloat16>();
      t.bf16 = std::make_unique<emb::EmbeddingBag<float, emb::bfloat16>>(
          emb::EmbeddingBag<float, emb::bfloat16>::from_pretrained(std::move(m), opts));
    } else if (storage == Storage::Half) {
      Matrix<emb::half> m = w.cast<emb::half>();
      t.f16 = std::make_unique<emb::EmbeddingBag<float, emb::half>>(
          emb::EmbeddingBag<float, emb::half>::from_pretrained(std::move(m), opts));
    } else {
      emb::QuantizedTable q = emb::QuantizedTable::quantize(w, bits_of(storage));
      if (huge) g_huge_ok = q.use_huge_pages() && g_huge_ok;
      t.quant = std::make_unique<emb::QuantizedEmbeddingBag<float>>(std::move(q));
    }
    if (huge && t.bf16) g_huge_ok = t.bf16->use_huge_pages() && g_huge_ok;
    if (huge && t.f16) g_huge_ok = t.f16->use_huge_pages() && g_huge_ok;
  }
  t.current = storage;
  t.current_huge = huge;
  return t;
}

// 1M ids for the large table (so consecutive calls miss the caches), 64K for the small one.
const std::vector<Index>& pool_for(Index rows, Dist dist) {
  static std::map<std::pair<Index, int>, std::vector<Index>> pools;
  const auto key = std::make_pair(rows, static_cast<int>(dist));
  auto it = pools.find(key);
  if (it == pools.end()) {
    const std::size_t count = rows >= 1'000'000 ? std::size_t{1} << 20 : std::size_t{1} << 16;
    it = pools.emplace(key, bench::index_pool(rows, dist == Dist::Zipf, count,
                                                  42 + static_cast<std::uint64_t>(rows)))
             .first;
  }
  return it->second;
}

const std::vector<Index>& offsets() {
  static const std::vector<Index> o = [] {
    std::vector<Index> v;
    for (Index at = 0; at < static_cast<Index>(kIds); at += kBagLength) v.push_back(at);
    return v;
  }();
  return o;
}
std::size_t bag_count() { return offsets().size(); }

void set_counters(benchmark::State& state, std::size_t bytes_per_id) {
  const auto items = static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(kIds);
  state.SetItemsProcessed(items);
  state.SetBytesProcessed(items * static_cast<std::int64_t>(bytes_per_id));
}

// ---------------------------------------------------------------------------------------------
// PyTorch's quantized bag ops on emb's bytes (optional).

#ifdef EMB_BENCH_TORCH
using RowwiseOffsets = at::Tensor(const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&,
                                  bool, int64_t, bool, const c10::optional<at::Tensor>&,
                                  const c10::optional<at::Tensor>&, bool);

c10::TypedOperatorHandle<RowwiseOffsets> torch_op(Storage s) {
  const char* name = s == Storage::Int8   ? "quantized::embedding_bag_byte_rowwise_offsets"
                     : s == Storage::Int4 ? "quantized::embedding_bag_4bit_rowwise_offsets"
                                          : "quantized::embedding_bag_2bit_rowwise_offsets";
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<RowwiseOffsets>();
}

at::Tensor torch_ids(emb::IndexSpan span) {
  return at::from_blob(const_cast<Index*>(span.data()), {static_cast<std::int64_t>(span.size())},
                       at::kLong);
}
#endif

// ---------------------------------------------------------------------------------------------
// Registration. Names: bag/<table>/<dist>/<case>, table L2 or DRAM.

double g_min_time = 0.1;
bool g_have_torch = false;

void add(const std::string& name, std::function<void(benchmark::State&)> fn) {
  benchmark::RegisterBenchmark(name.c_str(), [fn](benchmark::State& s) { fn(s); })
      ->UseRealTime()
      ->MinTime(g_min_time)
      ->Unit(benchmark::kMicrosecond);
}

const char* table_name(Index rows, Pages pages = Pages::Small) {
  return rows == kL2Rows ? "L2" : pages == Pages::Small ? "DRAM" : "DRAM_2M";
}
std::string group(Index rows, Dist dist, Pages pages = Pages::Small) {
  return std::string("bag/") + table_name(rows, pages) + "/" + name_of(dist);
}

void register_memcpy(Index rows) {
  add(group(rows, Dist::Uniform) + "/memcpy", [](benchmark::State& state) {
    const std::size_t bytes = kIds * row_bytes(Storage::Float);
    std::vector<char> src(bytes, 1), dst(bytes);
    for (auto _ : state) {
      std::memcpy(dst.data(), src.data(), bytes);
      benchmark::DoNotOptimize(dst.data());
      benchmark::ClobberMemory();
    }
    set_counters(state, row_bytes(Storage::Float));
  });
}

void register_emb(Index rows, Dist dist, Storage storage, Pages pages) {
  add(group(rows, dist, pages) + "/" + name_of(storage), [=](benchmark::State& state) {
    Tables& t = tables_for(rows, storage, pages);
    bench::Batches batches{pool_for(rows, dist), kIds};
    const std::vector<Index>& offs = offsets();
    for (auto _ : state) {
      Matrix<float> out;
      switch (storage) {
        case Storage::Float: out = std::as_const(*t.source).forward(batches(), offs); break;
        case Storage::BFloat16: out = std::as_const(*t.bf16).forward(batches(), offs); break;
        case Storage::Half: out = std::as_const(*t.f16).forward(batches(), offs); break;
        default: out = t.quant->forward(batches(), offs); break;
      }
      benchmark::DoNotOptimize(out.data());
    }
    set_counters(state, row_bytes(storage));
  });
}

void register_torch(Index rows, Dist dist, Storage storage, Pages pages) {
#ifdef EMB_BENCH_TORCH
  add(group(rows, dist, pages) + "/torch_" + name_of(storage), [=](benchmark::State& state) {
    Tables& t = tables_for(rows, storage, pages);
    const emb::QuantizedTable& table = t.quant->table();
    const at::Tensor weight = at::from_blob(const_cast<std::uint8_t*>(table.data()),
                                            {table.num_embeddings(), static_cast<std::int64_t>(table.row_bytes())},
                                            at::kByte);
    const std::vector<Index>& offs = offsets();
    const c10::optional<at::Tensor> offsets_t =
        at::from_blob(const_cast<Index*>(offs.data()), {static_cast<std::int64_t>(offs.size())}, at::kLong);
    const auto op = torch_op(storage);
    bench::Batches batches{pool_for(rows, dist), kIds};
    for (auto _ : state) {
      at::Tensor out = op.call(weight, torch_ids(batches()), offsets_t, false, 0, false, c10::nullopt,
                               c10::nullopt, false);
      benchmark::DoNotOptimize(out.data_ptr());
    }
    set_counters(state, row_bytes(storage));
  });
#else
  (void)rows, (void)dist, (void)storage, (void)pages;
#endif
}

void register_all() {
  for (Index rows : {kL2Rows, kDramRows}) {
    register_memcpy(rows);
    for (Pages pages : {Pages::Small, Pages::Huge}) {
      if (rows == kL2Rows && pages == Pages::Huge) continue;  // 256 KiB: no TLB pressure
      for (Storage s : kStorages) {
        for (Dist dist : {Dist::Uniform, Dist::Zipf}) {
          if (rows == kL2Rows && dist == Dist::Zipf) continue;  // every row is cached anyway
          register_emb(rows, dist, s, pages);
          if (g_have_torch && quantized(s)) register_torch(rows, dist, s, pages);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The summary.

std::optional<double> lookups_per_second(const std::map<std::string, bench::Result>& r,
                                         const std::string& name) {
  const auto x = bench::find(r, name);
  if (!x || x->seconds <= 0) return std::nullopt;
  return static_cast<double>(kIds) / x->seconds;
}

void summarise(const std::map<std::string, bench::Result>& r) {
  using bench::speedup;
  std::printf("\n=== Summary: bag sums by storage, dim %lld, %zu bags of %lld ids per call "
              "(%zu ids) ===\n",
              static_cast<long long>(kDim), bag_count(), static_cast<long long>(kBagLength), kIds);
  std::printf("M lookups/s = ids pooled per second; GB/s = stored row bytes read per second; "
              "x float = lookups/s over the float\nbag's on the same table and ids. Times are the "
              "CPU time of the measuring thread, all from this run. torch_*: PyTorch's\n"
              "quantized rowwise bag op on the same bytes, one thread%s.\n",
              g_have_torch ? "" : " (not built: libtorch not found)");
  bench::Table table({"table", "ids", "storage", "bytes/row", "M lookups/s", "GB/s", "x float",
                      "emb / torch"});
  const auto memcpy_row = [&](Index rows) {
    const std::string m = group(rows, Dist::Uniform) + "/memcpy";
    const auto lps = lookups_per_second(r, m);
    table.add({table_name(rows), "-", "memcpy of the float rows",
               std::to_string(row_bytes(Storage::Float)),
               bench::fixed(lps ? std::optional<double>(*lps / 1e6) : std::nullopt, 1),
               bench::gbps(bench::find(r, m)),
               bench::fixed(speedup(r, m, group(rows, Dist::Uniform) + "/float"), 2, "x"), "-"});
  };
  for (Index rows : {kL2Rows, kDramRows}) {
    for (Pages pages : {Pages::Small, Pages::Huge}) {
      if (rows == kL2Rows && pages == Pages::Huge) continue;
      for (Dist dist : {Dist::Uniform, Dist::Zipf}) {
        const std::string g = group(rows, dist, pages);
        if (!bench::find(r, g + "/float")) continue;
        for (Storage s : kStorages) {
          const std::string name = g + "/" + name_of(s);
          const auto lps = lookups_per_second(r, name);
          const auto vs_torch =
              quantized(s) ? speedup(r, name, g + "/torch_" + name_of(s)) : std::nullopt;
          table.add({table_name(rows, pages), name_of(dist), name_of(s),
                     std::to_string(row_bytes(s)),
                     bench::fixed(lps ? std::optional<double>(*lps / 1e6) : std::nullopt, 1),
                     bench::gbps(bench::find(r, name)),
                     bench::fixed(speedup(r, name, g + "/float"), 2, "x"),
                     bench::fixed(vs_torch, 2, "x")});
        }
      }
    }
    memcpy_row(rows);
  }
  table.print();
  if (bench::find(r, group(kDramRows, Dist::Uniform, Pages::Huge) + "/float")) {
    std::printf("DRAM_2M: the same tables moved to 2 MiB pages (%s).\n",
                g_huge_ok ? "every table got them" : "NOT every table got them: THP unavailable?");
  }

  std::printf("\nTargets (README.md, Performance): ~1 GiB table, uniform ids, on 4 KiB pages / "
              "on 2 MiB pages\n");
  bench::Table t({"target", "4 KiB pages", "2 MiB pages", "goal", "verdict (4 KiB / 2 MiB)"});
  const auto both = [&](const char* what, Storage fast, const char* slow, double goal) {
    std::optional<double> v[2];
    int k = 0;
    for (Pages pages : {Pages::Small, Pages::Huge}) {
      const std::string g = group(kDramRows, Dist::Uniform, pages);
      v[k++] = speedup(r, g + "/" + name_of(fast), g + "/" + slow);
    }
    t.add({what, bench::fixed(v[0], 2, "x"), bench::fixed(v[1], 2, "x"),
           ">= " + bench::fixed(goal, 1),
           std::string(bench::verdict(v[0], goal, true)) + " / " + bench::verdict(v[1], goal, true)});
  };
  both("Q1 Int8 bag sum / float bag sum, lookups/s", Storage::Int8, "float", 1.8);
  both("Q2 Int4 bag sum / float bag sum", Storage::Int4, "float", 2.5);
  both("Q3 bfloat16 bag sum / float bag sum", Storage::BFloat16, "float", 1.4);
  both("Q4 Int8 bag / PyTorch's byte_rowwise_offsets, same bytes", Storage::Int8, "torch_int8", 1.2);
  both("Q4 Int4 bag / PyTorch's 4bit_rowwise_offsets, same bytes", Storage::Int4, "torch_int4", 1.2);
  const std::string l2 = group(kL2Rows, Dist::Uniform);
  const auto q5 = speedup(r, l2 + "/int8", l2 + "/float");
  t.add({"Q5 Int8 bag / float bag, table in L2 (1000 x 64)", bench::fixed(q5, 2, "x"), "-",
         ">= 1.0", bench::verdict(q5, 1.0, true)});
  t.print();
}

}  // namespace

int main(int argc, char** argv) {
  const bench::Options options = bench::take_options(argc, argv);
  g_min_time = options.full ? 0.3 : 0.1;
  emb::set_num_threads(1);
#ifdef EMB_BENCH_TORCH
  at::set_num_threads(1);
  g_have_torch = true;
#endif
  register_all();
  return bench::run(argc, argv, &summarise);
}
