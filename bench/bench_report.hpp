// bench/bench_report.hpp — what emb's benchmark programs share: their command line, a console
// reporter that keeps every result, and the helpers that turn results into the summary table
// printed after the run (ratios between cases measured side by side in the same process).
#pragma once

#include <benchmark/benchmark.h>

#include <emb/detail/rng.hpp>
#include <emb/index_span.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace bench {

// Flags of emb's own, taken out of argv before Google Benchmark sees the rest.
struct Options {
  bool full = false;         // --full: every case instead of the two-minute default set
  std::string plot_dir;      // --plot_dir=DIR: write the plot data and gnuplot script there
};

inline Options take_options(int& argc, char** argv) {
  Options options;
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--full") {
      options.full = true;
    } else if (arg.rfind("--plot_dir=", 0) == 0) {
      options.plot_dir = arg.substr(11);
    } else {
      argv[kept++] = argv[i];
    }
  }
  argc = kept;
  argv[argc] = nullptr;
  return options;
}

// One case. `seconds` is what the ratios use: the CPU time of the measuring thread, which
// leaves out the time the process waited for a core on a busy machine (memory stalls and page
// faults are still counted), except for cases named "...threads:N", which run on several
// threads and use the wall clock.
struct Result {
  double seconds = 0.0;
  double real_seconds = 0.0;
  double cpu_seconds = 0.0;
  double bytes = 0.0;  // payload bytes per iteration
  double bytes_per_second() const { return seconds > 0.0 ? bytes / seconds : 0.0; }
};

// The console reporter Google Benchmark would use, plus a copy of every per-iteration result
// and a hook that prints the summary once the run is over.
class SummaryReporter : public benchmark::ConsoleReporter {
 public:
  using Summary = void (*)(const std::map<std::string, Result>&);
  explicit SummaryReporter(Summary summary) : summary_(summary) {}

  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      if (run.error_occurred || run.iterations == 0) continue;
      const std::string& name = run.run_name.function_name;
      const auto iterations = static_cast<double>(run.iterations);
      const bool threaded = name.find("threads:") != std::string::npos;
      if (run.run_type == Run::RT_Aggregate) {
        // Cases repeated for a "min" statistic (see best_of) keep their fastest repetition:
        // the one least disturbed by other work on the machine.
        if (run.aggregate_name != "min") continue;
        Result& r = results_[name];
        r.real_seconds = run.real_accumulated_time / iterations;
        r.cpu_seconds = run.cpu_accumulated_time / iterations;
        r.seconds = threaded ? r.real_seconds : r.cpu_seconds;
        continue;
      }
      Result r;
      r.real_seconds = run.real_accumulated_time / iterations;
      r.cpu_seconds = run.cpu_accumulated_time / iterations;
      r.seconds = threaded ? r.real_seconds : r.cpu_seconds;
      // Google Benchmark's rate is per second of the clock the case was timed with (real).
      const auto it = run.counters.find("bytes_per_second");
      if (it != run.counters.end()) r.bytes = it->second.value * r.real_seconds;
      results_[name] = r;
    }
  }

  void Finalize() override {
    ConsoleReporter::Finalize();
    summary_(results_);
    std::fflush(stdout);
  }

 private:
  Summary summary_;
  std::map<std::string, Result> results_;
};

// Runs the registered cases with the summary reporter: the main() of every benchmark program
// once its own flags are taken and its cases registered.
inline int run(int argc, char** argv, SummaryReporter::Summary summary) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  SummaryReporter reporter(summary);
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}

// `count` ids over [0, rows): uniform, or Zipf(s = 1) by inverting its continuous
// approximation, P(rank k) ~ 1/(k+1), the ranks then spread over the table by a bijection (a
// multiplier coprime with every N used here) so that the hot rows are not neighbours.
inline std::vector<emb::Index> index_pool(emb::Index rows, bool zipf, std::size_t count,
                                          std::uint64_t seed) {
  emb::detail::Rng rng(seed);
  std::vector<emb::Index> pool(count);
  const auto n = static_cast<std::uint64_t>(rows);
  for (auto& k : pool) {
    if (!zipf) {
      k = static_cast<emb::Index>(rng.next_u64() % n);
    } else {
      const double x = std::pow(static_cast<double>(rows), rng.uniform());
      auto rank = static_cast<std::uint64_t>(x) - 1;
      if (rank >= n) rank = n - 1;
      k = static_cast<emb::Index>((rank * 2654435761ULL) % n);
    }
  }
  return pool;
}

// Rotates over a pool of indices, one batch of `n` per call, so that consecutive iterations
// look up different rows (a large pool keeps a DRAM-sized table from being read from cache).
struct Batches {
  const std::vector<emb::Index>& pool;
  std::size_t n;
  std::size_t next = 0;
  emb::IndexSpan operator()() {
    if (next + n > pool.size()) next = 0;
    emb::IndexSpan span(pool.data() + next, n);
    next += n;
    return span;
  }
};

// Repeats a case `n` times and adds a "min" statistic, which the summary uses.
inline benchmark::internal::Benchmark* best_of(benchmark::internal::Benchmark* b, int n) {
  return b->Repetitions(n)->ComputeStatistics("min", [](const std::vector<double>& v) {
    double m = v.empty() ? 0.0 : v.front();
    for (double x : v) m = x < m ? x : m;
    return m;
  });
}

// Results are keyed by the name given at registration, without Google Benchmark's suffixes.
inline std::optional<Result> find(const std::map<std::string, Result>& results,
                                  const std::string& name) {
  const auto it = results.find(name);
  if (it == results.end()) return std::nullopt;
  return it->second;
}

// time(slow) / time(fast), when both ran.
inline std::optional<double> speedup(const std::map<std::string, Result>& results,
                                     const std::string& fast, const std::string& slow) {
  const auto f = find(results, fast);
  const auto s = find(results, slow);
  if (!f || !s || f->seconds <= 0.0) return std::nullopt;
  return s->seconds / f->seconds;
}

inline std::string fixed(std::optional<double> value, int decimals = 2, const char* suffix = "") {
  if (!value) return "-";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f%s", decimals, *value, suffix);
  return buf;
}

// Rounds to a readable number of significant digits (speed-ups range from 1 to 10^5).
inline std::string readable(std::optional<double> value, const char* suffix = "x") {
  if (!value) return "-";
  const double v = *value;
  const int decimals = v >= 100.0 ? 0 : v >= 10.0 ? 1 : 2;
  return fixed(value, decimals, suffix);
}

inline std::string gbps(std::optional<Result> r) {
  if (!r) return "-";
  return fixed(r->bytes_per_second() / 1e9, 2);
}

// A plain-text table whose columns fit their widest cell.
class Table {
 public:
  explicit Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  void print() const {
    std::vector<std::size_t> width;
    for (const auto& row : rows_) {
      if (width.size() < row.size()) width.resize(row.size(), 0);
      for (std::size_t c = 0; c < row.size(); ++c) {
        if (row[c].size() > width[c]) width[c] = row[c].size();
      }
    }
    for (std::size_t r = 0; r < rows_.size(); ++r) {
      std::string line;
      for (std::size_t c = 0; c < rows_[r].size(); ++c) {
        const std::string& cell = rows_[r][c];
        const std::string pad(width[c] - cell.size(), ' ');
        line += c == 0 ? cell + pad : "  " + pad + cell;  // first column left, numbers right
      }
      std::printf("%s\n", line.c_str());
      if (r == 0) {
        std::size_t total = 0;
        for (auto w : width) total += w + 2;
        std::printf("%s\n", std::string(total - 2, '-').c_str());
      }
    }
  }

 private:
  std::vector<std::vector<std::string>> rows_;
};

// "met" / "NOT met" / "not measured" for a figure against its target.
inline const char* verdict(std::optional<double> value, double target, bool at_least) {
  if (!value) return "not measured";
  return (at_least ? *value >= target : *value <= target) ? "met" : "NOT met";
}

}  // namespace bench
