// Loading speed of emb's file readers, as file bytes per second, beside the two floors it can
// be compared with in the same run: reading the same file into a buffer with fread (what the
// kernel and page cache cost) and a memcpy of the table's bytes (what one copy costs).
//
// Targets: word2vec/GloVe text at >= 100 MB/s; .npy in C order near the fread floor.
// The files (a 20000 x 300 table) are written to the temp directory at start and removed at
// the end; they stay in the page cache, so the figures are parse speed, not disk speed.
#include <benchmark/benchmark.h>

#include <charconv>
#include <cstdio>
#include <cstring>
#include <emb/io/npy.hpp>
#include <emb/io/glove.hpp>
#include <emb/io/word2vec.hpp>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
constexpr emb::Index kRows = 20000;
constexpr emb::Index kDim = 300;

struct Files {
  fs::path dir;
  std::string text, binary, glove, npy_f4, npy_f4_fortran, npy_f2, npy_f8;
  emb::Matrix<float> table;
};

Files* files = nullptr;

void write_npy_raw(const std::string& path, const char* descr, bool fortran, emb::Index rows,
                   emb::Index cols, const void* data, std::size_t bytes) {
  std::string header = std::string("{'descr': '") + descr +
                       "', 'fortran_order': " + (fortran ? "True" : "False") + ", 'shape': (" +
                       std::to_string(rows) + ", " + std::to_string(cols) + "), }";
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::ofstream out(path, std::ios::binary);
  out.write("\x93NUMPY\x01\x00", 8);
  const char len[2] = {static_cast<char>(header.size() & 0xff),
                       static_cast<char>(header.size() >> 8)};
  out.write(len, 2);
  out << header;
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
}

std::uint16_t to_half(float f) {
  // Values here are in (-1, 1) and normal in half: round-to-nearest on the top mantissa bits is
  // enough for benchmark data.
  std::uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const std::uint32_t sign = (bits >> 16) & 0x8000u;
  const int exponent = static_cast<int>((bits >> 23) & 0xff) - 127 + 15;
  if (exponent <= 0) return static_cast<std::uint16_t>(sign);
  const std::uint32_t mantissa = (bits >> 13) & 0x3ffu;
  return static_cast<std::uint16_t>(sign | (static_cast<std::uint32_t>(exponent) << 10) | mantissa);
}

Files* make_files() {
  auto* f = new Files;
  f->dir = fs::temp_directory_path() / ("emb-bench-io-" + std::to_string(std::random_device{}()));
  fs::create_directories(f->dir);
  std::mt19937 gen(42);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  f->table.resize(kRows, kDim);
  for (emb::Index i = 0; i < f->table.size(); ++i) f->table.data()[i] = dist(gen);

  emb::Vocabulary vocab;
  for (emb::Index r = 0; r < kRows; ++r) vocab.add("word" + std::to_string(r));
  f->text = (f->dir / "vectors.txt").string();
  f->binary = (f->dir / "vectors.bin").string();
  f->glove = (f->dir / "glove.txt").string();
  emb::io::save_word2vec<float>(f->text, vocab, f->table, false);
  emb::io::save_word2vec<float>(f->binary, vocab, f->table, true);
  {
    // GloVe: the word2vec text without its header line.
    std::ifstream in(f->text, std::ios::binary);
    std::string line;
    std::getline(in, line);
    std::ofstream out(f->glove, std::ios::binary);
    out << in.rdbuf();
  }
  f->npy_f4 = (f->dir / "f4.npy").string();
  f->npy_f8 = (f->dir / "f8.npy").string();
  f->npy_f4_fortran = (f->dir / "f4_fortran.npy").string();
  f->npy_f2 = (f->dir / "f2.npy").string();
  emb::io::save_npy<float>(f->npy_f4, f->table);
  emb::io::save_npy<double>(f->npy_f8, f->table.cast<double>());
  const Eigen::MatrixXf column_major = f->table;
  write_npy_raw(f->npy_f4_fortran, "<f4", true, kRows, kDim, column_major.data(),
                static_cast<std::size_t>(column_major.size()) * 4);
  std::vector<std::uint16_t> half(static_cast<std::size_t>(f->table.size()));
  for (std::size_t i = 0; i < half.size(); ++i) half[i] = to_half(f->table.data()[i]);
  write_npy_raw(f->npy_f2, "<f2", false, kRows, kDim, half.data(), half.size() * 2);
  return f;
}

void account(benchmark::State& state, const std::string& path) {
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(fs::file_size(path)));
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * kRows);
}

void BM_Fread(benchmark::State& state, const std::string* path) {
  std::vector<char> buffer(fs::file_size(*path));
  for (auto _ : state) {
    std::FILE* f = std::fopen(path->c_str(), "rb");
    std::setvbuf(f, nullptr, _IONBF, 0);
    benchmark::DoNotOptimize(std::fread(buffer.data(), 1, buffer.size(), f));
    std::fclose(f);
    benchmark::ClobberMemory();
  }
  account(state, *path);
}

void BM_MemcpyTable(benchmark::State& state) {
  const emb::Matrix<float>& src = files->table;
  emb::Matrix<float> dst(src.rows(), src.cols());
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), static_cast<std::size_t>(src.size()) * sizeof(float));
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * src.size() * 4);
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * kRows);
}

template <class T>
void BM_LoadNpy(benchmark::State& state, const std::string* path) {
  for (auto _ : state) benchmark::DoNotOptimize(emb::io::load_npy<T>(*path).data());
  account(state, *path);
}

void BM_LoadWord2Vec(benchmark::State& state, const std::string* path) {
  for (auto _ : state) benchmark::DoNotOptimize(emb::io::load_word2vec<float>(*path).weight.data());
  account(state, *path);
}

void BM_LoadGlove(benchmark::State& state) {
  for (auto _ : state)
    benchmark::DoNotOptimize(emb::io::load_glove<float>(files->glove).weight.data());
  account(state, files->glove);
}

void BM_SaveNpy(benchmark::State& state) {
  const std::string path = (files->dir / "out.npy").string();
  for (auto _ : state) emb::io::save_npy<float>(path, files->table);
  account(state, path);
}

void BM_SaveWord2VecText(benchmark::State& state) {
  const std::string path = (files->dir / "out.txt").string();
  emb::Vocabulary vocab;
  for (emb::Index r = 0; r < kRows; ++r) vocab.add("word" + std::to_string(r));
  for (auto _ : state) emb::io::save_word2vec<float>(path, vocab, files->table, false);
  account(state, path);
}

// Keeps MB/s per benchmark for the summary printed after the run.
class Reporter : public benchmark::ConsoleReporter {
 public:
  std::map<std::string, double> mbps;
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      const auto it = run.counters.find("bytes_per_second");
      if (run.run_type == Run::RT_Iteration && !run.error_occurred && it != run.counters.end()) {
        mbps[run.benchmark_name()] = it->second.value / 1e6;
      }
    }
  }
};

}  // namespace

int main(int argc, char** argv) {
  files = make_files();
  benchmark::RegisterBenchmark("fread/npy_f4", BM_Fread, &files->npy_f4)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("fread/word2vec_text", BM_Fread, &files->text)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("memcpy/table", BM_MemcpyTable)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("load_npy/f4_c", BM_LoadNpy<float>, &files->npy_f4)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("load_npy/f4_fortran", BM_LoadNpy<float>, &files->npy_f4_fortran)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("load_npy/f2_c", BM_LoadNpy<float>, &files->npy_f2)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("load_npy/f8_as_float", BM_LoadNpy<float>, &files->npy_f8)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("load_word2vec/text", BM_LoadWord2Vec, &files->text)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("load_word2vec/binary", BM_LoadWord2Vec, &files->binary)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("load_glove/text", BM_LoadGlove)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("save_npy/f4", BM_SaveNpy)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("save_word2vec/text", BM_SaveWord2VecText)
      ->Unit(benchmark::kMillisecond);

  benchmark::Initialize(&argc, argv);
  Reporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);

  const auto& m = reporter.mbps;
  const auto get = [&](const char* name) {
    const auto it = m.find(name);
    return it == m.end() ? 0.0 : it->second;
  };
  std::printf("\nsummary (file MB/s; ratio to the fread of the same kind of file)\n");
  const double fread_npy = get("fread/npy_f4"), fread_text = get("fread/word2vec_text");
  for (const char* name : {"load_npy/f4_c", "load_npy/f4_fortran", "load_npy/f2_c",
                           "load_npy/f8_as_float", "load_word2vec/binary"}) {
    if (get(name) > 0)
      std::printf("  %-22s %8.0f MB/s  %.2fx fread\n", name, get(name),
                  fread_npy > 0 ? get(name) / fread_npy : 0.0);
  }
  for (const char* name : {"load_word2vec/text", "load_glove/text"}) {
    if (get(name) > 0) {
      std::printf("  %-22s %8.0f MB/s  %.2fx fread  (target >= 100 MB/s: %s)\n", name, get(name),
                  fread_text > 0 ? get(name) / fread_text : 0.0,
                  get(name) >= 100 ? "met" : "MISSED");
    }
  }
  if (get("memcpy/table") > 0)
    std::printf("  %-22s %8.0f MB/s\n", "memcpy/table", get("memcpy/table"));

  std::error_code ec;
  fs::remove_all(files->dir, ec);
  delete files;
  benchmark::Shutdown();
}
